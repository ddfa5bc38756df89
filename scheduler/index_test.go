package scheduler

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
)

var indexRefs = map[string]func([]Dest) int{
	"lc": refLC, "wlc": refWLC, "sed": refSED, "nq": refNQ,
}

var indexNames = []string{"lc", "nq", "sed", "wlc"}

// TestMain indexes every service, however small, so that the tests
// written with a handful of servers exercise the index.
func TestMain(m *testing.M) {
	indexMin = 1
	os.Exit(m.Run())
}

// ixOf returns the index a scheduler reads, or nil.
func ixOf(s Scheduler) *index {
	return s.(interface{ baseOf() *base }).baseOf().ix
}

// rootOf is the tree's answer as an index into dests, without the repairs
// Pick makes on the way.
func rootOf(s Scheduler) int {
	b := s.(interface{ baseOf() *base }).baseOf()
	b.ix.ready()
	v := b.ix.node[0].Load()
	if v == ixEmpty {
		return -1
	}
	return b.pos(wordPos(v))
}

// cloneDests gives ds fresh ConnCounts with the same counts, so that two
// schedulers can track the same numbers without sharing (and stealing)
// their counts.
func cloneDests(ds []Dest) []Dest {
	out := make([]Dest, len(ds))
	for i, d := range ds {
		out[i] = d
		out[i].Conns = new(ConnCounts)
		out[i].Conns.Set(d.Conns.Active.Load(), d.Conns.Inactive.Load())
	}
	return out
}

// TestIndexDifferential changes counts through the ConnCounts methods, in
// random steps, with rebuilds in between, and after every step checks the
// index's pick (and its root before any repair) against IPVS's list walk.
func TestIndexDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	trials := 400
	if testing.Short() {
		trials = 100
	}
	for _, name := range indexNames {
		ref := indexRefs[name]
		for trial := range trials {
			thresh := trial%3 == 0
			ds := randDests(r, thresh)
			if trial%4 == 1 { // a bigger service: a deeper tree
				for len(ds) < 70 {
					ds = append(ds, randDests(r, thresh)...)
				}
			}
			s := mustNew(t, name, Options{}, ds)
			for step := range 60 {
				d := &ds[r.IntN(len(ds))]
				switch op := r.IntN(10); {
				// Counts never go below zero, as the conn table's never do.
				case op < 4:
					d.Conns.AddActive(max(int32(r.IntN(3))-1, -d.Conns.Active.Load()))
				case op < 7:
					d.Conns.AddInactive(max(int32(r.IntN(5))-2, -d.Conns.Inactive.Load()))
				case op < 8:
					if d.Conns.Inactive.Load() > 0 {
						d.Conns.Add(1, -1) // a conn established
					}
				case op < 9:
					d.Conns.Set(int32(r.IntN(4)), int32(r.IntN(300)))
				default:
					d.Weight = int32(r.IntN(4))
					d.Up = r.IntN(6) != 0
					var err error
					if s, err = s.Rebuild(ds); err != nil {
						t.Fatal(err)
					}
				}
				want := ref(ds)
				switch ix := ixOf(s); {
				case ix == nil:
					if len(refList(ds)) > 0 {
						t.Fatalf("%s: no index over %d live servers", name, len(refList(ds)))
					}
				case ix.lost.Load():
					t.Fatalf("%s: index lost with one scheduler over the counts", name)
				default:
					// With thresholds the root may be -1 (all overloaded):
					// Pick then walks the list, which is the reference.
					if root := rootOf(s); root != want && !(thresh && root < 0) {
						t.Fatalf("%s trial %d step %d: root = %d, want %d", name, trial, step, root, want)
					}
				}
				if got := s.Pick(&Flow{}); got != want {
					t.Fatalf("%s trial %d step %d: Pick = %d, want %d", name, trial, step, got, want)
				}
			}
		}
	}
}

// TestIndexDirectWrites writes the atomics directly, bypassing the index:
// the winner is re-checked on every pick and one server chosen by the flow,
// so after enough picks the answer is exact again.
func TestIndexDirectWrites(t *testing.T) {
	r := rand.New(rand.NewPCG(43, 44))
	for _, name := range indexNames {
		ref := indexRefs[name]
		for trial := range 100 {
			ds := randDests(r, trial%2 == 0)
			for len(ds) < 40 {
				ds = append(ds, randDests(r, trial%2 == 0)...)
			}
			s := mustNew(t, name, Options{}, ds)
			for range 1 + r.IntN(5) {
				d := &ds[r.IntN(len(ds))]
				d.Conns.Active.Store(int32(r.IntN(4)))
				d.Conns.Inactive.Store(int32(r.IntN(20)))
			}
			// One pick in auditEvery checks one server chosen by its
			// flow: within 30*auditEvery*n picks every server has been
			// checked but with probability about n*e^-30.
			want, i := ref(ds), 0
			for ; i < 30*auditEvery*len(ds) && s.Pick(flowN(r.Uint32())) != want; i++ {
			}
			if got := s.Pick(flowN(1)); got != want {
				t.Fatalf("%s trial %d: after %d picks Pick = %d, want %d", name, trial, i, got, want)
			}
		}
	}
	// The winner itself is re-checked at once.
	ds := mk(1, 1, 1)
	s := mustNew(t, "lc", Options{}, ds)
	ds[0].Conns.Active.Store(1)
	if got := s.Pick(&Flow{}); got != 1 {
		t.Fatalf("winner written directly: Pick = %d, want 1", got)
	}
}

// TestIndexOwnership: the scheduler that picked first after being built
// owns the counts' updates; the ones that held them before walk the list
// (and stay exact). A scheduler built but never used takes nothing.
func TestIndexOwnership(t *testing.T) {
	ds := mk(1, 1, 1)
	a := mustNew(t, "wlc", Options{}, ds)
	a.Pick(&Flow{})
	b := mustNew(t, "lc", Options{}, ds)
	if ixOf(a).lost.Load() || ds[0].Conns.hook.Load().ix != ixOf(a) {
		t.Fatal("building a second scheduler took the counts before its first pick")
	}
	b.Pick(&Flow{})
	if !ixOf(a).lost.Load() || ixOf(b).lost.Load() {
		t.Fatalf("after both picked, lost: first %v, second %v; want true, false", ixOf(a).lost.Load(), ixOf(b).lost.Load())
	}
	setActive(ds, 1, 0, 1)
	if ga, gb := a.Pick(&Flow{}), b.Pick(&Flow{}); ga != 1 || gb != 1 {
		t.Fatalf("Pick = %d, %d; want 1, 1", ga, gb)
	}
	// A scheduler without an index releases the counts when built.
	mustNew(t, "rr", Options{}, ds)
	if !ixOf(b).lost.Load() {
		t.Fatal("lc still owns the counts after rr was built over them")
	}
	for i := range ds {
		if ds[i].Conns.hook.Load() != nil {
			t.Fatalf("dest %d still hooked after rr", i)
		}
	}
	// The same counts listed twice: only the list walk is right.
	dup := []Dest{ds[0], ds[1], ds[0]}
	setActive(ds, 1, 1)
	c := mustNew(t, "lc", Options{}, dup)
	c.Pick(&Flow{})
	if !ixOf(c).lost.Load() {
		t.Fatal("counts listed twice: index not given up")
	}
	ds[0].Conns.Set(0, 0)
	if got := c.Pick(&Flow{}); got != 0 {
		t.Fatalf("duplicate counts: Pick = %d, want 0", got)
	}

	// Rebuild: the new scheduler takes the counts when it first picks; a
	// dest down in it is released.
	ds = mk(1, 1, 1)
	s := mustNew(t, "lc", Options{}, ds)
	s.Pick(&Flow{})
	ds[1].Up = false
	s2, err := s.Rebuild(ds)
	if err != nil {
		t.Fatal(err)
	}
	// A reload that fails after this rebuild keeps s published: s2 never
	// picks, s keeps its index.
	if ixOf(s).lost.Load() {
		t.Fatal("an unused rebuild took the counts")
	}
	s2.Pick(&Flow{})
	if !ixOf(s).lost.Load() || ixOf(s2).lost.Load() || ds[1].Conns.hook.Load() != nil {
		t.Fatal("the rebuilt scheduler's first pick did not move the counts to it")
	}
	setActive(ds, 1, 0, 0)
	if got := s2.Pick(&Flow{}); got != 2 {
		t.Fatalf("after rebuild: Pick = %d, want 2", got)
	}
	if got := s.Pick(&Flow{}); got != 1 {
		t.Fatalf("old scheduler after rebuild: Pick = %d, want 1 (list walk)", got)
	}

	// An older scheduler's first pick after a newer one claimed: it must
	// not take the counts, and gives back those it took before noticing.
	ds = mk(1, 1, 1)
	old := mustNew(t, "wlc", Options{}, ds)
	newer := mustNew(t, "wlc", Options{}, ds[1:])
	newer.Pick(&Flow{})
	setActive(ds, 0, 2, 1)
	if got := old.Pick(&Flow{}); got != 0 {
		t.Fatalf("old scheduler's first pick = %d, want 0", got)
	}
	if !ixOf(old).lost.Load() || ixOf(newer).lost.Load() || ds[0].Conns.hook.Load() != nil {
		t.Fatalf("old scheduler's claim: lost old %v newer %v, dest 0 hooked %v; want true, false, false",
			ixOf(old).lost.Load(), ixOf(newer).lost.Load(), ds[0].Conns.hook.Load() != nil)
	}
	setActive(ds, 0, 3, 1)
	if got := newer.Pick(&Flow{}); got != 1 {
		t.Fatalf("newer scheduler after the old one's claim: Pick = %d, want 1", got)
	}
}

// TestIndexConcurrentConverges churns counts from several goroutines while
// others pick, then checks that the tree, untouched by any repair, holds
// the exact answer once the updates stop. Run it under -race.
func TestIndexConcurrentConverges(t *testing.T) {
	rounds := 10
	if testing.Short() {
		rounds = 4
	}
	for _, name := range []string{"lc", "wlc", "sed", "nq", "lblc"} {
		t.Run(name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(45, 46))
			for round := range rounds {
				n := 2 + r.IntN(300)
				if round%3 == 0 { // few servers: the same nodes contended
					n = 2 + r.IntN(6)
				}
				ds := make([]Dest, n)
				for i := range ds {
					ds[i] = Dest{Weight: int32(r.IntN(5)), Up: true, Conns: new(ConnCounts)}
					if round%2 == 1 && r.IntN(4) == 0 {
						ds[i].Upper = int32(3 + r.IntN(10))
					}
				}
				s := mustNew(t, name, Options{CacheSize: 64}, ds)
				// The index claims the counts on the first pick: before
				// the churn, so that the churn goes through the tree.
				if !ixOf(s).ready() {
					t.Fatal("index not ready after build")
				}
				var stop atomic.Bool
				var workers, pickers sync.WaitGroup
				for g := range 3 {
					workers.Add(1)
					go func() { // conns open, establish, close
						defer workers.Done()
						r := rand.New(rand.NewPCG(uint64(round), uint64(g)))
						type conn struct {
							d           int
							established bool
						}
						var open []conn // this worker's own: counts never go negative
						for range 2000 {
							switch op := r.IntN(3); {
							case op == 0 || len(open) == 0:
								d := r.IntN(n)
								ds[d].Conns.AddInactive(1)
								open = append(open, conn{d: d})
							case op == 1:
								c := &open[r.IntN(len(open))]
								if !c.established {
									ds[c.d].Conns.Add(1, -1)
									c.established = true
								}
							default:
								i := r.IntN(len(open))
								if c := open[i]; c.established {
									ds[c.d].Conns.AddActive(-1)
								} else {
									ds[c.d].Conns.AddInactive(-1)
								}
								open[i] = open[len(open)-1]
								open = open[:len(open)-1]
							}
						}
					}()
					pickers.Add(1)
					go func() {
						defer pickers.Done()
						f := Flow{Shard: uint16(g)}
						for i := 0; !stop.Load(); i++ {
							f.Dst = v4(203, 0, 113, byte(i))
							if p := s.Pick(&f); p >= n {
								t.Errorf("Pick = %d of %d", p, n)
								return
							}
						}
					}()
				}
				workers.Wait()
				stop.Store(true)
				pickers.Wait()
				ref := refWLC
				if f, ok := indexRefs[name]; ok {
					ref = f
				}
				// Marks settle as IPVS's would: evaluated on each change.
				if bad := ixOf(s).inconsistent(); bad != "" {
					t.Errorf("round %d (n=%d): %s", round, n, bad)
				}
				if got, want := rootOf(s), ref(ds); got != want && !(got < 0 && round%2 == 1) {
					t.Fatalf("round %d (n=%d): root = %d, want %d", round, n, got, want)
				}
				if ix := ixOf(s); ix.under {
					var under int32
					for i := range ds {
						if int64(ds[i].Conns.Active.Load())*2 < int64(ds[i].Weight) {
							under++
						}
					}
					if got := ix.nUnder.Load(); got != under {
						t.Fatalf("round %d: %d servers under half their weight, index says %d", round, under, got)
					}
				}
			}
		})
	}
}

// inconsistent describes the first node or leaf that does not hold what
// its inputs say, or "".
func (ix *index) inconsistent() string {
	for p := range ix.n {
		c := ix.slots[p].c
		if got, want := ix.node[ix.leaf0+p].Load(), ix.leafWord(p, c.Active.Load(), c.Inactive.Load()); got != want {
			return fmt.Sprintf("leaf %d: %#x, counts %d+%d say %#x", p, got, c.Active.Load(), c.Inactive.Load(), want)
		}
	}
	for x := ix.leaf0 - 1; x >= 0; x-- {
		w := ixEmpty
		for j := range ixArity {
			if c := ix.node[ixArity*x+1+j].Load(); ix.beats(c, w) {
				w = c
			}
		}
		if got := ix.node[x].Load(); got != w {
			return fmt.Sprintf("node %d (leaves from %d): %#x, children say %#x", x, ix.leaf0, got, w)
		}
	}
	return ""
}

// TestIndexClaimRace: pickers use schedulers of several generations over
// the same counts at once, as workers still holding older snapshots do,
// while the counts churn. In the end every count must notify the newest
// scheduler that picked, and its tree must be exact.
func TestIndexClaimRace(t *testing.T) {
	for round := range 20 {
		r := rand.New(rand.NewPCG(47, uint64(round)))
		ds := make([]Dest, 3+r.IntN(40))
		for i := range ds {
			ds[i] = Dest{Weight: int32(1 + r.IntN(4)), Up: true, Conns: new(ConnCounts)}
		}
		gens := make([]Scheduler, 4)
		for i := range gens {
			gens[i] = mustNew(t, "wlc", Options{}, ds)
		}
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(round), uint64(g)))
				for range 300 {
					gens[r.IntN(len(gens))].Pick(&Flow{Shard: uint16(g)})
					c := ds[r.IntN(len(ds))].Conns
					if c.Inactive.Load() > 0 && r.IntN(2) == 0 {
						c.AddInactive(-1)
					} else {
						c.AddInactive(1)
					}
				}
			}()
		}
		wg.Wait()
		var owner *index
		for i := len(gens) - 1; i >= 0 && owner == nil; i-- {
			if ix := ixOf(gens[i]); ix.state.Load() == claimed && !ix.lost.Load() {
				owner = ix
			}
		}
		if owner == nil {
			t.Fatalf("round %d: no scheduler kept its index", round)
		}
		for i, ix := range gens {
			if st := ixOf(ix).state.Load(); ixOf(ix).gen > owner.gen && st != unclaimed {
				t.Fatalf("round %d: generation %d claimed (state %d) yet lost to an older one", round, i, st)
			}
		}
		for i := range ds {
			if h := ds[i].Conns.hook.Load(); h == nil || h.ix != owner {
				t.Fatalf("round %d: dest %d notifies %v, want the newest owner", round, i, h)
			}
		}
		if bad := owner.inconsistent(); bad != "" {
			t.Fatalf("round %d: %s", round, bad)
		}
	}
}
