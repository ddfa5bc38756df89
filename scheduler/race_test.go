package scheduler

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// TestConcurrentRebuild runs readers picking from the published snapshot
// while a writer rebuilds it (weights, health, thresholds) and another
// goroutine churns the connection counts. Run it under -race.
func TestConcurrentRebuild(t *testing.T) {
	rebuilds := 150
	if testing.Short() {
		rebuilds = 30
	}
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			conns := make([]*ConnCounts, 8)
			for i := range conns {
				conns[i] = new(ConnCounts)
			}
			gen := func(r *rand.Rand) []Dest {
				ds := make([]Dest, 0, len(conns))
				for i, c := range conns {
					if r.IntN(6) == 0 {
						continue // removed from the service
					}
					d := Dest{Weight: int32(r.IntN(5)), Up: r.IntN(4) != 0, Conns: c, Addr: v4(198, 51, 100, byte(i+1))}
					if r.IntN(4) == 0 {
						d.Upper = int32(5 + r.IntN(20))
					}
					ds = append(ds, d)
				}
				return ds
			}
			type snap struct {
				s     Scheduler
				dests []Dest
			}
			r := rand.New(rand.NewPCG(11, 12))
			opts := Options{SHFallback: true, MHFallback: true, MHTableSize: 1021, CacheSize: 256}
			ds := gen(r)
			first, err := New(name, opts, ds)
			if err != nil {
				t.Fatal(err)
			}
			var cur atomic.Pointer[snap]
			cur.Store(&snap{first, ds})
			var stop atomic.Bool
			var wg sync.WaitGroup
			for g := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					f := Flow{Shard: uint16(g), Proto: protoTCP}
					for i := uint32(0); !stop.Load(); i++ {
						f.Src = v4(198, 18, byte(i>>8), byte(i))
						f.Dst = v4(203, 0, 113, byte(i%37))
						sn := cur.Load()
						p := sn.s.Pick(&f)
						if p == -1 {
							continue
						}
						if p < 0 || p >= len(sn.dests) || !sn.dests[p].Up || sn.dests[p].Weight == 0 {
							t.Errorf("%s: Pick = %d over %d dests (up/weight wrong)", name, p, len(sn.dests))
							return
						}
					}
				}()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(13, 14))
				for !stop.Load() {
					c := conns[r.IntN(len(conns))]
					if r.IntN(2) == 0 {
						c.Set(int32(r.IntN(30)), int32(r.IntN(30)))
					} else { // written directly, as the index allows
						c.Active.Store(int32(r.IntN(30)))
						c.Inactive.Store(int32(r.IntN(30)))
					}
				}
			}()
			for range rebuilds {
				ds := gen(r)
				n, err := cur.Load().s.Rebuild(ds)
				if err != nil {
					t.Error(err)
					break
				}
				cur.Store(&snap{n, ds})
			}
			stop.Store(true)
			wg.Wait()
		})
	}
}
