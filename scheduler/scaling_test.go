package scheduler

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Run: go test -run '^$' -bench PickScaling -benchtime 200ms -count 5 ./scheduler/
//
// BenchmarkPickScaling runs every scheduler at 256 servers with one worker
// and then with two, in rounds of the same run, and reports ratio: two
// workers' pick throughput over one's, the median over the rounds (the
// target is 1.7 or more; 2 is perfect). Each round brackets the picks with
// "machine", a pick that does register work only, run the same way: its
// ratio is what the machine itself gave two threads at that time.
//
// On a shared virtual machine the host may not run both vCPUs at once
// (its steal time), at times for seconds, and no code scales then: machine shows it. Only rounds in which machine is at
// least 1.8 count ("clean"; the figure logged says how many of 15). The
// workers' own CPU time does not include steal, so cpu-ratio (2 × one
// worker's CPU time per pick / two workers' CPU time per pick, from the
// round in which the two ran together the most, busy = that fraction)
// measures what two workers cost each other (false sharing, contended
// atomics) even in rounds that are not clean, as long as busy is near 1.
// Each benchmark logs "pass" when ratio ≥ 1.7 over at least 3 clean
// rounds, else "short" or "unjudged" with these figures (the
// framework's short probing runs log nothing).
//
// Each phase is timed from a barrier the workers spin at to the last
// worker's end. Timed from their release, the wake-up of the second
// parked thread (an idle vCPU: a VM exit) counted as pick time and gave
// ratios of 1.0 to 1.6 that moved from run to run with the same code;
// from the barrier they are 1.86 to 2.02.
//
// It is how rr's and wrr's 0.6 was found: cpu-ratio 0.6 at busy 0.95
// while machine was 1.9, so two workers cost each other CPU; the same
// atomic add on the same addresses scaled when the code reaching them
// did not first load the start of the cursors block (see cursors).
func BenchmarkPickScaling(b *testing.B) {
	if runtime.NumCPU() < 2 {
		b.Skip("needs 2 CPUs")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0))))
	setIndexMin(b, defaultIndexMin)
	flows := benchFlows()
	opts := Options{SHFallback: true, MHFallback: true}
	for _, name := range Names() {
		b.Run(name, func(b *testing.B) {
			s, err := New(name, opts, benchDests(256))
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			r := scaleRounds(b, s, flows, 1)
			// The same scheduler behind one mutex, as the baseline that
			// does not scale; a sixteenth of the picks, it is slower.
			m := scaleRounds(b, &mutexSched{s: s}, flows, 16)
			b.StopTimer()
			b.ReportMetric(r.ratio, "ratio")
			b.ReportMetric(m.ratio, "mutex-ratio")
			b.ReportMetric(r.cpuRatio, "cpu-ratio")
			b.ReportMetric(r.busy, "busy")
			b.ReportMetric(r.machine, "machine")
			b.ReportMetric(r.ns1, "ns/pick-1")
			b.ReportMetric(r.ns2, "ns/pick-2")
			b.ReportMetric(float64(r.clean), "clean")
			if b.N >= 1<<20 && r.total >= 50*time.Millisecond { // not the framework's short probing runs
				b.Log(r.verdict(name) + fmt.Sprintf("; behind a mutex: ratio %.2f", m.ratio))
			}
		})
	}
}

// spinPicker is the machine's reference: work in registers only, about
// as long as a pick, nothing written to memory. Four independent chains
// of multiplies keep the core's multiplier busy, so that two threads
// sharing one core (hyperthreads) show as a ratio near 1, as they would
// for picks; one dependent chain would leave room for the other thread.
type spinPicker struct{}

//go:noinline
func (spinPicker) Pick(f *Flow) int {
	a, b := uint64(f.SrcPort)|1, uint64(f.DstPort)|1
	c, d := uint64(f.Proto)|1, uint64(f.Shard)|1
	for range 8 {
		a = a*0x9e3779b97f4a7c15 + 1
		b = b*0xbf58476d1ce4e5b9 + 1
		c = c*0x94d049bb133111eb + 1
		d = d*0xc2b2ae3d27d4eb4f + 1
	}
	return int((a ^ b ^ c ^ d) >> 63)
}

type scaleResult struct {
	ratio, cpuRatio, busy, machine float64
	ns1, ns2                       float64 // best ns per pick, 1 worker and 2 together
	clean                          int     // rounds in which the machine scaled
	total                          time.Duration
}

func (r scaleResult) verdict(name string) string {
	v := "pass"
	switch {
	case r.clean < 3:
		v = fmt.Sprintf("unjudged: the machine gave two threads %.1f or more in only %d rounds; cpu-ratio %.2f at busy %.2f is the pick's own scaling",
			cleanMachine, r.clean, r.cpuRatio, r.busy)
	case r.ratio < 1.7:
		v = "short"
	}
	return fmt.Sprintf("%s: ratio %.2f over %d clean rounds (1 worker %.1f ns/pick, 2 workers %.1f), cpu-ratio %.2f, busy %.2f, machine %.2f: %s",
		name, r.ratio, r.clean, r.ns1, r.ns2, r.cpuRatio, r.busy, r.machine, v)
}

// phase is one timed run of g workers, each making n picks.
type phase struct {
	// span runs from the first worker's start to the last one's end.
	// The workers start at a barrier they spin at, not when the phase
	// starts them: waking a parked thread on an idle vCPU can take
	// longer than a short phase and is not the picks' cost.
	span time.Duration
	cpu  time.Duration // summed over the workers; <0 when unknown
	rate float64       // all the workers' picks per nanosecond of span
}

func runPhase(s picker, flows []Flow, g, n int) phase {
	var done sync.WaitGroup
	var ready atomic.Int32 // the barrier
	cpus := make([]time.Duration, g)
	t0s, t1s := make([]time.Time, g), make([]time.Time, g)
	for k := range g {
		done.Add(1)
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			w := new(struct {
				_ [2 * lineSize]byte
				f Flow
				_ [2 * lineSize]byte
			})
			f := &w.f
			ready.Add(1)
			for ready.Load() < int32(g) {
			}
			c0 := threadCPU()
			t0s[k] = time.Now()
			sum := 0
			for i := range n {
				*f = flows[i&1023]
				f.Shard = uint16(k)
				sum += s.Pick(f)
			}
			t1s[k] = time.Now()
			if c0 >= 0 {
				cpus[k] = threadCPU() - c0
			} else {
				cpus[k] = -1
			}
			benchSink.Add(int64(sum))
		}()
	}
	done.Wait()
	var p phase
	first, last := t0s[0], t1s[0]
	for k := range g {
		if t0s[k].Before(first) {
			first = t0s[k]
		}
		if t1s[k].After(last) {
			last = t1s[k]
		}
	}
	p.span = max(last.Sub(first), 1)
	p.rate = float64(g*n) / float64(p.span)
	for _, c := range cpus {
		if c < 0 {
			p.cpu = -1
			break
		}
		p.cpu += c
	}
	return p
}

// scaleRounds runs rounds of one worker and two workers over s, each
// bracketed by the same for spinPicker (machine before and after, so the
// machine's ratio covers the pick's time), and reports the median of the
// rounds' ratios. A round counts ("clean") only when the machine gave two
// threads at least cleanMachine in it (see BenchmarkPickScaling). Without a clean round, the median of all rounds is
// reported and clean is 0.
func scaleRounds(b *testing.B, s picker, flows []Flow, div int) scaleResult {
	const rounds = 15
	n := max(b.N/rounds/div, 1)
	var r scaleResult
	var all, clean, cleanM, allM []float64
	var c1 time.Duration
	t0 := time.Now()
	for range rounds {
		q1 := runPhase(spinPicker{}, flows, 1, n)
		p1 := runPhase(s, flows, 1, n)
		p2 := runPhase(s, flows, 2, n)
		q2 := runPhase(spinPicker{}, flows, 2, n)
		ratio, machine := p2.rate/p1.rate, q2.rate/q1.rate
		all, allM = append(all, ratio), append(allM, machine)
		if machine >= cleanMachine {
			clean, cleanM = append(clean, ratio), append(cleanM, machine)
		}
		if r.ns1 == 0 || 1/p1.rate < r.ns1 {
			r.ns1 = 1 / p1.rate
		}
		if r.ns2 == 0 || 1/p2.rate < r.ns2 {
			r.ns2 = 1 / p2.rate
		}
		if p1.cpu > 0 && (c1 == 0 || p1.cpu < c1) {
			c1 = p1.cpu
		}
		// cpu-ratio is from the round whose two workers overlapped the most.
		if busy := float64(p2.cpu) / float64(2*p2.span); p2.cpu > 0 && busy > r.busy && c1 > 0 {
			r.busy = busy
			// Per pick: c1/n for one worker, p2.cpu/2n for two.
			r.cpuRatio = 2 * (float64(c1) / float64(n)) / (float64(p2.cpu) / float64(2*n))
		}
	}
	r.total = time.Since(t0)
	r.clean = len(clean)
	if r.clean > 0 {
		r.ratio, r.machine = median(clean), median(cleanM)
	} else {
		r.ratio, r.machine = median(all), median(allM)
	}
	return r
}

// cleanMachine is the machine ratio a round needs to count.
const cleanMachine = 1.8

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
