package scheduler

import (
	"fmt"
	"math/rand/v2"
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

func runPick(b *testing.B, pick func(*Flow) int, flows []Flow) {
	b.ReportAllocs()
	var shards atomic.Uint32
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := uint16(shards.Add(1) - 1)
		// Each goroutine's Flow on lines of its own: written every pick,
		// two Flows sharing a line would measure false sharing.
		fp := new(struct {
			_ [lineSize]byte
			f Flow
			_ [2 * lineSize]byte
		})
		f := &fp.f
		sum, i := 0, 0
		for pb.Next() {
			*f = flows[i&1023]
			f.Shard = id
			sum += pick(f)
			i++
		}
		benchSink.Add(int64(sum))
	})
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
				runPick(b, mk(b).Pick, flows)
			})
			b.Run(fmt.Sprintf("%s/n=%d/mutex", name, n), func(b *testing.B) {
				m := &mutexSched{s: mk(b)}
				runPick(b, m.Pick, flows)
			})
			if indexKinds[name] != ixNone {
				b.Run(fmt.Sprintf("%s/n=%d/scan", name, n), func(b *testing.B) {
					s := mk(b)
					if ix := ixOf(s); ix != nil {
						ix.lost.Store(true)
					}
					runPick(b, s.Pick, flows)
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
						i := 0
						for pb.Next() {
							f := &flows[i&1023]
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
