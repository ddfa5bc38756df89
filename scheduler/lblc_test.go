package scheduler

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// fakeClock is a settable coarse clock for lblc/lblcr tests.
type fakeClock struct{ now int64 }

func (c *fakeClock) read() int64 { return c.now }

func dstFlow(last byte) *Flow {
	return &Flow{Dst: v4(203, 0, 113, last), Proto: protoTCP}
}

func TestLBLC(t *testing.T) {
	ds := mk(1, 1, 1)
	clk := &fakeClock{now: 1000}
	s := mustNew(t, "lblc", Options{LBLCExpiration: 60}, ds).(*lblcSched)
	s.clock = clk.read
	a, b := dstFlow(1), dstFlow(2)

	steps := []struct {
		what string
		act  []int32
		f    *Flow
		want int
	}{
		{"first pick: wlc, first of equals", []int32{0, 0, 0}, a, 0},
		{"cached although no longer least", []int32{1, 0, 0}, a, 0},
		{"another destination: wlc", []int32{1, 0, 0}, b, 1},
		{"active > weight but nobody below half: kept", []int32{5, 1, 1}, a, 0},
		{"active > weight and server 2 idle: rescheduled", []int32{5, 1, 0}, a, 2},
		{"the new mapping sticks", []int32{0, 0, 1}, a, 2},
	}
	for _, st := range steps {
		setActive(ds, st.act...)
		if got := s.Pick(st.f); got != st.want {
			t.Fatalf("%s: Pick = %d, want %d", st.what, got, st.want)
		}
	}

	// Quiesce the cached server: rescheduled by wlc (server 1: 0 active).
	setActive(ds, 0, 0, 0)
	ds[2].Weight = 0
	s2, err := s.Rebuild(ds)
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.Pick(a); got != 0 {
		t.Fatalf("cached server quiesced: Pick = %d, want 0", got)
	}
	// A new server at the front shifts indices; cached mappings follow the
	// servers, not the indices.
	nd := append(mk(1), ds...)
	setActive(nd, 1, 9, 9, 9) // nobody below half its weight: no lblc overload
	s3, err := s2.Rebuild(nd)
	if err != nil {
		t.Fatal(err)
	}
	if got := s3.Pick(a); got != 1 {
		t.Fatalf("after inserting a server: a → %d, want 1 (old 0)", got)
	}
	if got := s3.Pick(b); got != 2 {
		t.Fatalf("after inserting a server: b → %d, want 2 (old 1)", got)
	}
	// Down: rescheduled.
	nd[1].Up = false
	s4, err := s3.Rebuild(nd)
	if err != nil {
		t.Fatal(err)
	}
	if got := s4.Pick(a); got != 0 {
		t.Fatalf("cached server down: Pick = %d, want 0", got)
	}
	// Expiry: unused for longer than LBLCExpiration, b is forgotten and
	// wlc places it anew (server 0 is now least).
	clk.now += 61
	if got := s4.Pick(b); got != 0 {
		t.Fatalf("expired entry: Pick = %d, want 0", got)
	}
}

func TestLBLCEviction(t *testing.T) {
	// A cache of one set: the fifth destination evicts the least
	// recently used one, the others stay cached.
	ds := mk(1, 1, 1, 1, 1)
	clk := &fakeClock{now: 1}
	s := mustNew(t, "lblc", Options{CacheSize: cacheWays}, ds).(*lblcSched)
	s.clock = clk.read
	for i := range 4 {
		setActive(ds, 0, 0, 0, 0, 0)
		for j := range i {
			ds[j].Conns.Set(1, 0)
		}
		if got := s.Pick(dstFlow(byte(i))); got != i {
			t.Fatalf("dst %d → %d, want %d", i, got, i)
		}
		clk.now++
	}
	setActive(ds, 1, 1, 1, 1, 0)
	if got := s.Pick(dstFlow(9)); got != 4 {
		t.Fatalf("fifth dst → %d, want 4", got)
	}
	setActive(ds, 1, 1, 1, 1, 1) // nothing overloaded in lblc's sense
	for i := 1; i < 4; i++ {
		if got := s.Pick(dstFlow(byte(i))); got != i {
			t.Fatalf("dst %d after eviction → %d, want %d (still cached)", i, got, i)
		}
	}
	setActive(ds, 1, 1, 1, 1, 0)
	if got := s.Pick(dstFlow(0)); got != 4 {
		t.Fatalf("evicted dst 0 → %d, want a new wlc pick (4)", got)
	}
}

func lblcrSet(t *testing.T, s *lblcrSched, f *Flow) []int {
	t.Helper()
	k0, k1 := addrKey(&f.Dst)
	var snap lblcrSnap
	set := s.set(k0, k1)
	for i := range set {
		if set[i].read(k0, k1, &snap) {
			var out []int
			for _, p := range snap.set[:snap.n] {
				out = append(out, int(s.idx[p]))
			}
			return out
		}
	}
	return nil
}

func TestLBLCR(t *testing.T) {
	ds := mk(1, 1, 2)
	clk := &fakeClock{now: 1000}
	s := mustNew(t, "lblcr", Options{LBLCRExpiration: 10}, ds).(*lblcrSched)
	s.clock = clk.read
	a := dstFlow(1)

	if got := s.Pick(a); got != 0 {
		t.Fatalf("first pick = %d, want 0", got)
	}
	// Server 0 overloaded in lblc's sense (2 active > weight 1 while
	// server 1 is idle): wlc picks among all (1 and 2 tie at zero
	// overhead: the first) and the pick joins the set.
	setActive(ds, 2, 0, 0)
	if got := s.Pick(a); got != 1 {
		t.Fatalf("overloaded member: Pick = %d, want 1", got)
	}
	if got, want := lblcrSet(t, s, a), []int{1, 0}; !slices.Equal(got, want) {
		t.Fatalf("set = %v, want %v (newest first)", got, want)
	}
	// The set's least loaded member is used while it is not overloaded.
	setActive(ds, 1, 1, 0)
	if got := s.Pick(a); got != 1 {
		t.Fatalf("set {1,0} with 1,1 active: Pick = %d, want 1 (first of equals)", got)
	}
	setActive(ds, 0, 1, 0)
	if got := s.Pick(a); got != 0 {
		t.Fatalf("set {1,0}, server 0 idle: Pick = %d, want 0", got)
	}
	// Unchanged for longer than the expiration (while in use): the most
	// loaded member leaves.
	clk.now += 6
	setActive(ds, 0, 1, 3) // nothing overloaded: 0 ≤ 1, 1 ≤ 1
	s.Pick(a)
	clk.now += 6
	if got := s.Pick(a); got != 0 {
		t.Fatalf("after expiration: Pick = %d, want 0", got)
	}
	if got, want := lblcrSet(t, s, a), []int{0}; !slices.Equal(got, want) {
		t.Fatalf("after expiration set = %v, want %v", got, want)
	}
	// Rebuild: server 0 down, its set loses it; the entry is then empty
	// and a wlc pick recreates it.
	ds[0].Up = false
	s2, err := s.Rebuild(ds)
	if err != nil {
		t.Fatal(err)
	}
	setActive(ds, 0, 1, 0)
	if got := s2.Pick(a); got != 2 {
		t.Fatalf("member down: Pick = %d, want 2", got)
	}
	// Entries unused for the expiration are forgotten.
	clk.now += 11
	setActive(ds, 0, 0, 5)
	if got := s2.Pick(a); got != 1 {
		t.Fatalf("expired entry: Pick = %d, want 1", got)
	}
}

func TestLBLCDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	var moves, grows, shrinks int
	defer func() {
		t.Logf("lblc reschedules %d, lblcr set grows %d, shrinks %d", moves, grows, shrinks)
		if !t.Failed() && (moves == 0 || grows == 0 || shrinks == 0) {
			t.Error("the random walk missed a rule")
		}
	}()
	for trial := range 300 {
		ds := randDests(r, trial%2 == 1)
		for i := range ds {
			ds[i].Conns.Active.Store(int32(r.IntN(4)))
		}
		clk := &fakeClock{now: 100}
		o := Options{LBLCExpiration: 10, LBLCRExpiration: 10}
		// Each scheduler over counts of its own, so both keep their
		// index (the scheduler built last over a set of counts owns it).
		dsr := cloneDests(ds)
		lc := mustNew(t, "lblc", o, ds).(*lblcSched)
		lcr := mustNew(t, "lblcr", o, dsr).(*lblcrSched)
		lc.clock, lcr.clock = clk.read, clk.read
		refc := &refLBLC{m: map[[16]byte]refLBLCEnt{}, exp: 10}
		refr := &refLBLCR{m: map[[16]byte]*refSetEnt{}, exp: 10}
		for step := range 200 {
			i, a, in := r.IntN(len(ds)), int32(r.IntN(5)), int32(r.IntN(5))
			ds[i].Conns.Set(a, in)
			dsr[i].Conns.Set(a, in)
			clk.now += int64(r.IntN(4))
			dst := dstFlow(byte(r.IntN(8)))
			if got, want := lc.Pick(dst), refc.pick(ds, dst.Dst, clk.now); got != want {
				t.Fatalf("trial %d step %d: lblc = %d, want %d", trial, step, got, want)
			}
			if got, want := lcr.Pick(dst), refr.pick(dsr, dst.Dst, clk.now); got != want {
				t.Fatalf("trial %d step %d: lblcr = %d, want %d", trial, step, got, want)
			}
		}
		if lc.ix != nil && (lc.ix.lost.Load() || lcr.ix.lost.Load()) {
			t.Fatalf("trial %d: an index was lost", trial)
		}
		moves, grows, shrinks = moves+refc.moves, grows+refr.grows, shrinks+refr.shrinks
	}
}
