package scheduler

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// Run: go test -run '^$' -bench . -cpu 1,2 ./scheduler/
// Each algorithm and size has a lock-free run and a run of the same
// scheduler behind a sync.Mutex (the IPVS-style sched_lock), so the ratio
// between -cpu 1 and -cpu 2 shows what the lock costs. The
// least-connection schedulers also have a "scan" run: the same scheduler
// with its index given up, walking every server as IPVS does.

var benchSizes = []int{2, 16, 256, 4096}

var connLifeSizes = []int{2, 16, 32, 64, 128, 256, 4096}

func benchDests(n int) []Dest {
	r := rand.New(rand.NewPCG(uint64(n), 99))
	ds := make([]Dest, n)
	for i := range ds {
		ds[i] = Dest{Weight: int32(1 + r.IntN(10)), Up: true, Conns: new(ConnCounts)}
		ds[i].Conns.Active.Store(int32(1 + r.IntN(50)))
		ds[i].Conns.Inactive.Store(int32(r.IntN(100)))
		ds[i].Addr = v4(198, 51, byte(i>>8), byte(i))
		ds[i].Port = 80
	}
	return ds
}

func benchFlows() []Flow {
	fs := make([]Flow, 1024)
	for i := range fs {
		fs[i] = *flowN(uint32(i * 7919))
		fs[i].Dst = v4(203, 0, byte(i>>8), byte(i))
	}
	return fs
}

// picker is what runPick calls: a Scheduler, or the mutex wrapper.
type picker interface{ Pick(*Flow) int }

type mutexSched struct {
	mu sync.Mutex
	s  Scheduler
}

func (m *mutexSched) Pick(f *Flow) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.s.Pick(f)
}

var benchSink atomic.Int64

// runPick runs s.Pick over flows in b.RunParallel and reports, beside
// the wall-clock ns/op, cpu-ns/op: the workers' own CPU time per pick,
// which leaves out the time a virtual machine's host took the CPU away
// (steal), the main noise on shared CI machines.
//
// Pick is called through the interface, as the dataplane calls it (a
// method value, as this once used, adds a wrapper call: 5 ns a pick on
// the CI VM, more than some schedulers' own cost).
func runPick(b *testing.B, s picker, flows []Flow) {
	b.ReportAllocs()
	var shards atomic.Uint32
	var cpuNs, picks atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := uint16(shards.Add(1) - 1)
		// Each worker's Flow and loop state on lines of its own: the
		// Flow is written every pick, and so is the PB's counter, which
		// the testing package allocates as a 32-byte object: two workers'
		// PBs can share a line (or a 128-byte prefetch pair) and then
		// every pick is a cache miss on the other core. The copy is
		// safe: a PB is a pointer to the shared count plus local counts.
		w := new(struct {
			_  [2 * lineSize]byte
			f  Flow
			pb testing.PB
			_  [2 * lineSize]byte
		})
		w.pb = *pb
		f := &w.f
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		c0 := threadCPU()
		sum, i := 0, 0
		for w.pb.Next() {
			*f = flows[i&1023]
			f.Shard = id
			sum += s.Pick(f)
			i++
		}
		if c0 >= 0 {
			cpuNs.Add(int64(threadCPU() - c0))
		}
		picks.Add(int64(i))
		benchSink.Add(int64(sum))
	})
	if n := picks.Load(); n > 0 && cpuNs.Load() > 0 {
		b.ReportMetric(float64(cpuNs.Load())/float64(n), "cpu-ns/op")
	}
}

// setIndexMin sets indexMin for a benchmark (TestMain lowers it for the
// tests) and restores it after.
func setIndexMin(b *testing.B, v int) {
	old := indexMin
	indexMin = v
	b.Cleanup(func() { indexMin = old })
}

func BenchmarkPick(b *testing.B) {
	setIndexMin(b, defaultIndexMin)
	flows := benchFlows()
	opts := Options{SHFallback: true, MHFallback: true}
	for _, name := range Names() {
		for _, n := range benchSizes {
			// Built inside each b.Run, so filtered-out runs cost nothing.
			mk := func(b *testing.B) Scheduler {
				s, err := New(name, opts, benchDests(n))
				if err != nil {
					b.Fatal(err)
				}
				return s
			}
			b.Run(fmt.Sprintf("%s/n=%d/lockfree", name, n), func(b *testing.B) {
				runPick(b, mk(b), flows)
			})
			b.Run(fmt.Sprintf("%s/n=%d/mutex", name, n), func(b *testing.B) {
				runPick(b, &mutexSched{s: mk(b)}, flows)
			})
			if indexKinds[name] != ixNone {
				b.Run(fmt.Sprintf("%s/n=%d/scan", name, n), func(b *testing.B) {
					s := mk(b)
					if ix := ixOf(s); ix != nil {
						ix.lost.Store(true)
					}
					runPick(b, s, flows)
				})
			}
		}
	}
}

func BenchmarkMaglevBuild(b *testing.B) {
	ds := benchDests(1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New("mh", Options{}, ds); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRebuild256(b *testing.B) {
	ds := benchDests(256)
	for _, name := range Names() {
		s, err := New(name, Options{}, ds)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Rebuild(ds); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkConnLife is a connection's whole cost to the least-connection
// schedulers: the pick, then the conn table's updates as the conn opens
// (Inactive+1), is established (Active+1, Inactive-1) and closes
// (Active-1), with about 4n conns open. "index" changes the counts through
// the ConnCounts methods, which keep the index current; "scan" is the list
// walk with the atomics written directly, as before the index.
func BenchmarkConnLife(b *testing.B) {
	setIndexMin(b, 1) // index every size, to compare
	flows := benchFlows()
	for _, name := range []string{"lc", "wlc", "sed", "nq"} {
		for _, n := range connLifeSizes {
			for _, mode := range []string{"index", "scan"} {
				b.Run(fmt.Sprintf("%s/n=%d/%s", name, n, mode), func(b *testing.B) {
					ds := benchDests(n)
					for i := range ds {
						ds[i].Conns.Set(0, 0)
					}
					s, err := New(name, Options{}, ds)
					if err != nil {
						b.Fatal(err)
					}
					if mode == "scan" {
						ixOf(s).lost.Store(true)
					}
					var shards atomic.Uint32
					b.ReportAllocs()
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						id := uint16(shards.Add(1) - 1)
						ring := make([]int32, 4*n) // open conns: dest+1, 0 = none
						// The worker's own Flow: writing Shard into the
						// shared flows would be a race between workers
						// and a line they both write.
						w := new(struct {
							_ [2 * lineSize]byte
							f Flow
							_ [2 * lineSize]byte
						})
						f := &w.f
						i := 0
						for pb.Next() {
							*f = flows[i&1023]
							f.Shard = id
							p := s.Pick(f)
							slot := &ring[i%len(ring)]
							i++
							if old := int(*slot) - 1; old >= 0 { // the oldest closes
								c := ds[old].Conns
								if mode == "index" {
									c.AddActive(-1)
								} else {
									c.Active.Add(-1)
								}
							}
							*slot = 0
							if p < 0 {
								continue
							}
							c := ds[p].Conns
							if mode == "index" {
								c.AddInactive(1)
								c.Add(1, -1)
							} else {
								c.Inactive.Add(1)
								c.Active.Add(1)
								c.Inactive.Add(-1)
							}
							*slot = int32(p) + 1
						}
					})
				})
			}
		}
	}
}
