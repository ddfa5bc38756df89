package scheduler

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func mk(ws ...int32) []Dest {
	ds := make([]Dest, len(ws))
	for i, w := range ws {
		ds[i] = Dest{Weight: w, Up: true, Conns: new(ConnCounts)}
		ds[i].Addr = v4(198, 51, 100, byte(i+1))
		ds[i].Port = 80
	}
	return ds
}

func v4(a, b, c, d byte) [16]byte {
	return [16]byte{10: 0xff, 11: 0xff, 12: a, 13: b, 14: c, 15: d}
}

// setActive sets the dests' Active counts through ConnCounts.Set, as the
// dataplane changes them, so the schedulers' indexes see them at once.
func setActive(ds []Dest, act ...int32) {
	for i, a := range act {
		ds[i].Conns.Set(a, ds[i].Conns.Inactive.Load())
	}
}

func mustNew(t testing.TB, name string, o Options, ds []Dest) Scheduler {
	t.Helper()
	s, err := New(name, o, ds)
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	return s
}

func flowN(i uint32) *Flow {
	f := &Flow{Proto: protoTCP, SrcPort: uint16(1024 + i%50000), DstPort: 80}
	f.Src = v4(198, 18, byte(i>>8), byte(i))
	f.Dst = v4(203, 0, 113, byte(i))
	return f
}

// randDests builds a random service: weights 0..5, some down, random
// counts, sometimes thresholds.
func randDests(r *rand.Rand, thresholds bool) []Dest {
	n := 1 + r.IntN(12)
	ds := make([]Dest, n)
	for i := range ds {
		ds[i] = Dest{Weight: int32(r.IntN(6)), Up: r.IntN(5) != 0, Conns: new(ConnCounts)}
		ds[i].Conns.Active.Store(int32(r.IntN(7)))
		ds[i].Conns.Inactive.Store(int32(r.IntN(11)))
		ds[i].Addr = v4(198, 51, 100, byte(i+1))
		if thresholds && r.IntN(3) == 0 {
			ds[i].Upper = int32(1 + r.IntN(15))
			ds[i].Lower = int32(r.IntN(int(ds[i].Upper)))
		}
	}
	return ds
}

func TestNames(t *testing.T) {
	want := []string{"dh", "fo", "lblc", "lblcr", "lc", "mh", "nq", "ovf", "rr", "sed", "sh", "twos", "wlc", "wrr"}
	if got := Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	for _, n := range want {
		s := mustNew(t, n, Options{}, mk(1, 2))
		if s.Name() != n {
			t.Errorf("New(%q).Name() = %q", n, s.Name())
		}
		if got := mustNew(t, n, Options{}, nil).Pick(flowN(1)); got != -1 {
			t.Errorf("%s over no dests: Pick = %d, want -1", n, got)
		}
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name  string
		sched string
		opts  Options
		dests []Dest
		is    error
	}{
		{"unknown", "random", Options{}, mk(1), ErrUnknown},
		{"nil conns", "rr", Options{}, []Dest{{Weight: 1, Up: true}}, nil},
		{"negative weight", "wlc", Options{}, []Dest{{Weight: -1, Up: true, Conns: new(ConnCounts)}}, nil},
		{"negative threshold", "wlc", Options{}, []Dest{{Weight: 1, Upper: -1, Conns: new(ConnCounts)}}, nil},
		{"mh size not prime", "mh", Options{MHTableSize: 65536}, mk(1), nil},
		{"mh size below servers", "mh", Options{MHTableSize: 2}, mk(1, 1, 1), nil},
		{"cache too small", "lblc", Options{CacheSize: 2}, mk(1), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.sched, tt.opts, tt.dests)
			if err == nil {
				t.Fatal("New: no error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("New: %v, want %v", err, tt.is)
			}
		})
	}
}

func TestNeverPicksQuiescedOrDown(t *testing.T) {
	for _, n := range Names() {
		ds := mk(0, 3, 0, 2)
		ds[1].Up = false
		s := mustNew(t, n, Options{SHFallback: true, MHFallback: true}, ds)
		for i := range uint32(2000) {
			if got := s.Pick(flowN(i)); got != -1 && got != 3 {
				t.Fatalf("%s: Pick = %d, want 3 or -1", n, got)
			}
		}
		ds[3].Up = false
		s2, err := s.Rebuild(ds)
		if err != nil {
			t.Fatal(err)
		}
		for i := range uint32(300) {
			if got := s2.Pick(flowN(i)); got != -1 {
				t.Fatalf("%s with none available: Pick = %d, want -1", n, got)
			}
		}
	}
}

func TestWRRInterleave(t *testing.T) {
	s := mustNew(t, "wrr", Options{}, mk(4, 3, 2))
	var got []int
	for range 18 {
		got = append(got, s.Pick(&Flow{}))
	}
	// a, a b, a b c, a b c: IPVS's passes cw = 4, 3, 2, 1.
	want := []int{0, 0, 1, 0, 1, 2, 0, 1, 2, 0, 0, 1, 0, 1, 2, 0, 1, 2}
	if !slices.Equal(got, want) {
		t.Fatalf("wrr 4,3,2 = %v, want %v", got, want)
	}
}

func TestWRRGCD(t *testing.T) {
	// gcd 2, max 6: passes cw = 5, 3, 1.
	s := mustNew(t, "wrr", Options{}, mk(6, 2, 4))
	var got []int
	for range 6 {
		got = append(got, s.Pick(&Flow{}))
	}
	if want := []int{0, 0, 2, 0, 1, 2}; !slices.Equal(got, want) {
		t.Fatalf("wrr 6,2,4 = %v, want %v", got, want)
	}
}

// stateful schedulers against the reference, many picks per service.
func TestRRWRRDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 400 {
		ds := randDests(r, trial%2 == 0)
		for i := range ds {
			ds[i].Weight = int32(r.IntN(9))
		}
		rr := mustNew(t, "rr", Options{}, ds)
		wrr := mustNew(t, "wrr", Options{}, ds)
		old := maxWRRSeq
		maxWRRSeq = 0
		walk := mustNew(t, "wrr", Options{}, ds)
		maxWRRSeq = old
		if walk.(*wrrSched).seq != nil {
			t.Fatal("maxWRRSeq=0 still built a sequence")
		}
		refr, refw, refk := &refRR{last: -1}, newRefWRR(ds), newRefWRR(ds)
		for k := range 60 {
			if got, want := rr.Pick(&Flow{}), refr.pick(ds); got != want {
				t.Fatalf("trial %d rr pick %d = %d, want %d (%+v)", trial, k, got, want, ds)
			}
			if got, want := wrr.Pick(&Flow{}), refw.pick(ds); got != want {
				t.Fatalf("trial %d wrr pick %d = %d, want %d", trial, k, got, want)
			}
			if got, want := walk.Pick(&Flow{}), refk.pick(ds); got != want {
				for _, d := range ds {
					t.Logf("w=%d up=%v a=%d i=%d u=%d l=%d", d.Weight, d.Up, d.Conns.Active.Load(), d.Conns.Inactive.Load(), d.Upper, d.Lower)
				}
				t.Fatalf("trial %d wrr walk pick %d = %d, want %d", trial, k, got, want)
			}
		}
	}
}

func TestShardsAreIndependent(t *testing.T) {
	s := mustNew(t, "rr", Options{}, mk(1, 1, 1))
	a := []int{s.Pick(&Flow{Shard: 0}), s.Pick(&Flow{Shard: 1}), s.Pick(&Flow{Shard: 0}), s.Pick(&Flow{Shard: 1})}
	if want := []int{0, 0, 1, 1}; !slices.Equal(a, want) {
		t.Fatalf("two shards = %v, want %v", a, want)
	}
}

func TestRRRebuildContinues(t *testing.T) {
	ds := mk(1, 1, 1)
	s := mustNew(t, "rr", Options{}, ds)
	s.Pick(&Flow{})
	s.Pick(&Flow{}) // last picked: 1
	nd := append(mk(1), ds...)
	s2, err := s.Rebuild(nd)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for range 4 {
		got = append(got, s2.Pick(&Flow{}))
	}
	// After old 1 (now 2): old 2 (now 3), then around from the head.
	if want := []int{3, 0, 1, 2}; !slices.Equal(got, want) {
		t.Fatalf("after rebuild = %v, want %v", got, want)
	}
	// The last picked (2) quiesced: continue after its place.
	nd[2].Weight = 0
	s3, err := s2.Rebuild(nd)
	if err != nil {
		t.Fatal(err)
	}
	if got := s3.Pick(&Flow{}); got != 3 {
		t.Fatalf("after quiescing the last picked: Pick = %d, want 3", got)
	}
}

func TestWRRRebuildKeepsPass(t *testing.T) {
	for _, seq := range []bool{true, false} {
		old := maxWRRSeq
		if !seq {
			maxWRRSeq = 0
		}
		ds := mk(4, 3, 2)
		s := mustNew(t, "wrr", Options{}, ds)
		for range 4 { // a, a b, a: now in pass cw=2
			s.Pick(&Flow{})
		}
		s2, err := s.Rebuild(ds)
		maxWRRSeq = old
		if err != nil {
			t.Fatal(err)
		}
		var got []int
		for range 6 {
			got = append(got, s2.Pick(&Flow{}))
		}
		// ip_vs_wrr_dest_changed: back to the head, same cw.
		if want := []int{0, 1, 2, 0, 1, 2}; !slices.Equal(got, want) {
			t.Fatalf("seq=%v: after rebuild = %v, want %v", seq, got, want)
		}
	}
}

func TestLeastConnTies(t *testing.T) {
	tests := []struct {
		sched  string
		w      []int32
		act    []int32
		inact  []int32
		want   int
		reason string
	}{
		{"lc", []int32{1, 1, 1}, []int32{1, 0, 0}, []int32{0, 0, 0}, 1, "tie goes to the first"},
		{"lc", []int32{1, 1}, []int32{1, 0}, []int32{0, 300}, 0, "256 inactive outweigh one active"},
		{"lc", []int32{1, 1}, []int32{1, 0}, []int32{0, 255}, 1, "255 inactive do not"},
		{"lc", []int32{1, 5}, []int32{0, 1}, []int32{0, 0}, 0, "lc ignores weight"},
		{"wlc", []int32{1, 5}, []int32{1, 4}, []int32{0, 0}, 1, "4/5 < 1/1"},
		{"wlc", []int32{1, 2}, []int32{1, 2}, []int32{0, 0}, 0, "256*2 == 512*1: first wins"},
		{"wlc", []int32{0, 1, 1}, []int32{0, 0, 0}, []int32{0, 0, 0}, 1, "quiesced first skipped"},
		{"wlc", []int32{2, 1}, []int32{0, 0}, []int32{3, 1}, 1, "3*1 > 1*2: the second"},
		{"sed", []int32{1, 3}, []int32{0, 2}, []int32{0, 0}, 0, "1/1 vs 3/3: tie → first"},
		{"sed", []int32{1, 4}, []int32{0, 2}, []int32{0, 0}, 1, "3/4 < 1/1"},
		{"sed", []int32{1, 1}, []int32{0, 0}, []int32{0, 9}, 0, "sed ignores inactive"},
		{"nq", []int32{1, 10}, []int32{1, 0}, []int32{0, 0}, 1, "idle server first"},
		{"nq", []int32{1, 10, 1}, []int32{1, 1, 0}, []int32{0, 0, 0}, 2, "idle beats better ratio"},
		{"nq", []int32{1, 10}, []int32{1, 2}, []int32{0, 0}, 1, "else sed: 3/10 < 2/1"},
		{"fo", []int32{3, 5, 5, 1}, []int32{0, 9, 0, 0}, []int32{0, 0, 0, 0}, 1, "highest weight, first of ties, counts ignored"},
		{"ovf", []int32{3, 5, 5}, []int32{0, 6, 0}, []int32{0, 0, 0}, 2, "5 active > 5? no, 6 > 5: next of weight 5"},
		{"ovf", []int32{3, 5}, []int32{3, 5}, []int32{0, 0}, 1, "active == weight still takes"},
		{"ovf", []int32{3, 5}, []int32{4, 6}, []int32{0, 0}, -1, "all overflowing"},
	}
	for _, tt := range tests {
		ds := mk(tt.w...)
		setActive(ds, tt.act...)
		for i, n := range tt.inact {
			ds[i].Conns.Inactive.Store(n)
		}
		if got := mustNew(t, tt.sched, Options{}, ds).Pick(&Flow{}); got != tt.want {
			t.Errorf("%s w=%v act=%v inact=%v: Pick = %d, want %d (%s)", tt.sched, tt.w, tt.act, tt.inact, got, tt.want, tt.reason)
		}
	}
}

func TestStatelessDifferential(t *testing.T) {
	refs := map[string]func([]Dest) int{
		"lc": refLC, "wlc": refWLC, "sed": refSED, "nq": refNQ, "fo": refFO, "ovf": refOVF,
	}
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 3000 {
		ds := randDests(r, trial%2 == 1)
		for name, ref := range refs {
			s := mustNew(t, name, Options{}, ds)
			got := s.Pick(&Flow{})
			if want := ref(ds); got != want {
				t.Fatalf("trial %d %s = %d, want %d", trial, name, got, want)
			}
			// The list walk, which Pick falls back to without an index.
			if ix := ixOf(s); ix != nil {
				ix.lost.Store(true)
				if got, want := s.Pick(&Flow{}), ref(ds); got != want {
					t.Fatalf("trial %d %s (list walk) = %d, want %d", trial, name, got, want)
				}
			}
		}
	}
}

// seqRand replays fixed random numbers.
type seqRand struct {
	vals []uint32
	i    int
}

func (s *seqRand) next() uint32 { v := s.vals[s.i%len(s.vals)]; s.i++; return v }

func TestTWOSDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for trial := range 3000 {
		ds := randDests(r, trial%2 == 1)
		if trial%3 == 0 { // past twosTableMax: the search path
			for i := range ds {
				ds[i].Weight *= 20000
			}
		}
		u1, u2 := r.Uint32(), r.Uint32()
		if trial%7 == 0 {
			u1, u2 = 0, ^uint32(0)
		}
		s := mustNew(t, "twos", Options{}, ds).(*twosSched)
		sr := &seqRand{vals: []uint32{u1, u2}}
		s.rnd = sr.next
		if got, want := s.Pick(&Flow{}), refTWOS(ds, u1, u2); got != want {
			t.Fatalf("trial %d twos(%d,%d) = %d, want %d", trial, u1, u2, got, want)
		}
	}
}

func TestTWOSSpread(t *testing.T) {
	// Idle servers: the first choice always wins ties, so picks follow
	// IPVS's draw from [0, total]: 0 and 1 land on the first server.
	s := mustNew(t, "twos", Options{}, mk(1, 3))
	var n [2]int
	for range 40000 {
		n[s.Pick(&Flow{})]++
	}
	if share := float64(n[1]) / 40000; share < 0.58 || share > 0.62 {
		t.Fatalf("twos weights 1,3: share of the second = %.3f, want ~3/5", share)
	}
}

func TestOverloadHysteresis(t *testing.T) {
	steps := []struct {
		upper, lower int32
		total        int32
		want         bool
	}{
		{10, 5, 9, false},
		{10, 5, 10, true},
		{10, 5, 7, true}, // between: keeps the mark
		{10, 5, 5, true},
		{10, 5, 4, false},
		{10, 5, 7, false}, // between, unmarked: stays unmarked
		{8, 0, 8, true},
		{8, 0, 6, true}, // 6*4 == 8*3: not below 3/4
		{8, 0, 5, false},
		{0, 3, 100, false}, // no upper threshold: never
	}
	d := Dest{Weight: 1, Up: true, Conns: new(ConnCounts)}
	for i, st := range steps {
		d.Upper, d.Lower = st.upper, st.lower
		d.Conns.Active.Store(st.total / 2)
		d.Conns.Inactive.Store(st.total - st.total/2)
		if got := d.Overloaded(); got != st.want {
			t.Fatalf("step %d (u=%d l=%d total=%d): Overloaded = %v, want %v", i, st.upper, st.lower, st.total, got, st.want)
		}
	}
}

func TestOverloadSkipped(t *testing.T) {
	for _, n := range Names() {
		ds := mk(5, 5)
		ds[0].Upper = 4
		ds[0].Conns.Inactive.Store(4)
		ds[1].Conns.Inactive.Store(1)
		s := mustNew(t, n, Options{SHFallback: true, MHFallback: true}, ds)
		for i := range uint32(500) {
			if got := s.Pick(flowN(i)); got == 0 {
				t.Fatalf("%s picked the overloaded server", n)
			}
		}
	}
}

func TestHashDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for trial := range 600 {
		ds := randDests(r, trial%2 == 1)
		o := Options{SHPort: trial%3 == 0, SHFallback: trial%4 < 2}
		sh := mustNew(t, "sh", o, ds)
		dh := mustNew(t, "dh", o, ds)
		for k := range 50 {
			f := flowN(r.Uint32())
			f.Proto = []uint8{protoTCP, protoUDP, 1}[k%3]
			if k%5 == 0 {
				f.Src = [16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(k)}
				f.Dst = [16]byte{0x20, 0x01, 0x0d, 0xb8, 14: 1, 15: byte(k)}
			}
			if got, want := sh.Pick(f), refSH(ds, f, o.SHPort, o.SHFallback); got != want {
				t.Fatalf("trial %d sh %+v = %d, want %d", trial, o, got, want)
			}
			if got, want := dh.Pick(f), refDH(ds, f); got != want {
				t.Fatalf("trial %d dh = %d, want %d", trial, got, want)
			}
		}
	}
}

// spread counts picks per server over 65536 consecutive source (sh) or
// destination (dh) addresses: the multiplicative hash spreads them evenly
// over the 256 buckets.
func spread(t *testing.T, s Scheduler, n int, byDst bool) []float64 {
	t.Helper()
	cnt := make([]float64, n)
	for i := range uint32(65536) {
		f := &Flow{Proto: protoTCP}
		a := v4(198, 18, byte(i>>8), byte(i))
		if byDst {
			f.Dst = a
		} else {
			f.Src = a
		}
		p := s.Pick(f)
		if p < 0 {
			t.Fatalf("%s: no pick for %v", s.Name(), a)
		}
		if p2 := s.Pick(f); p2 != p {
			t.Fatalf("%s: same key gave %d then %d", s.Name(), p, p2)
		}
		cnt[p]++
	}
	for i := range cnt {
		cnt[i] /= 65536
	}
	return cnt
}

func TestSHDHSpread(t *testing.T) {
	for _, ws := range [][]int32{{1, 1}, {1, 2, 3, 4}, {5, 1, 10}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, {3, 3, 3, 3, 3, 3, 3}} {
		ds := mk(ws...)
		var sum int32
		for _, w := range ws {
			sum += w
		}
		got := spread(t, mustNew(t, "sh", Options{}, ds), len(ds), false)
		for i, w := range ws {
			if want := float64(w) / float64(sum); got[i] < want-0.03 || got[i] > want+0.03 {
				t.Errorf("sh weights %v: server %d share %.3f, want %.3f±0.03", ws, i, got[i], want)
			}
		}
		// IPVS's dh ignores weights: equal shares.
		got = spread(t, mustNew(t, "dh", Options{}, ds), len(ds), true)
		for i := range ws {
			if want := 1 / float64(len(ws)); got[i] < want-0.03 || got[i] > want+0.03 {
				t.Errorf("dh %d servers: server %d share %.3f, want %.3f±0.03", len(ws), i, got[i], want)
			}
		}
	}
}

func TestSHPortAndFallback(t *testing.T) {
	ds := mk(1, 1, 1, 1)
	plain := mustNew(t, "sh", Options{}, ds)
	port := mustNew(t, "sh", Options{SHPort: true}, ds)
	f := flowN(7)
	seenPlain, seenPort := map[int]bool{}, map[int]bool{}
	for p := range uint16(64) {
		f.SrcPort = 1000 + p
		seenPlain[plain.Pick(f)] = true
		seenPort[port.Pick(f)] = true
	}
	if len(seenPlain) != 1 || len(seenPort) < 3 {
		t.Fatalf("one source over 64 ports: plain sh used %d servers (want 1), sh-port %d (want >= 3)", len(seenPlain), len(seenPort))
	}
	// Quiesce server 2: without fallback its flows have no server; with
	// fallback they move and nobody else's flows do.
	before := make([]int, 5000)
	for i := range before {
		before[i] = plain.Pick(flowN(uint32(i)))
	}
	ds[2].Weight = 0
	nofb := mustNew(t, "sh", Options{}, ds)
	fb := mustNew(t, "sh", Options{SHFallback: true}, ds)
	for i, b := range before {
		f := flowN(uint32(i))
		g1, g2 := nofb.Pick(f), fb.Pick(f)
		switch {
		case b == 2 && (g1 != -1 || g2 < 0 || g2 == 2):
			t.Fatalf("key %d of the quiesced server: no-fallback %d (want -1), fallback %d (want another)", i, g1, g2)
		case b != 2 && (g1 != b || g2 != b):
			t.Fatalf("key %d moved from %d to %d/%d", i, b, g1, g2)
		}
	}
}

func mhShares(s *mhSched) []float64 {
	sh := make([]float64, len(s.all))
	for _, p := range s.tab {
		if p >= 0 {
			sh[s.idx[p]]++
		}
	}
	for i := range sh {
		sh[i] /= float64(len(s.tab))
	}
	return sh
}

func TestMHShares(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	sets := [][]int32{{1, 1}, {1, 2, 3, 4}, {100, 101, 1}, {7, 7, 7, 1, 1, 1, 20}}
	for range 6 {
		n := 2 + r.IntN(60)
		ws := make([]int32, n)
		for i := range ws {
			ws[i] = int32(1 + r.IntN(100))
		}
		sets = append(sets, ws)
	}
	for _, size := range []int{0, 4093} {
		for _, ws := range sets {
			s := mustNew(t, "mh", Options{MHTableSize: size}, mk(ws...)).(*mhSched)
			var sum int32
			for _, w := range ws {
				sum += w
			}
			tol := 0.01
			if size == 4093 {
				tol = 0.02
			}
			worst := 0.0
			for i, got := range mhShares(s) {
				want := float64(ws[i]) / float64(sum)
				if got < want-tol || got > want+tol {
					t.Errorf("mh M=%d weights %v: server %d share %.4f, want %.4f±%.2f", len(s.tab), ws, i, got, want, tol)
				}
				worst = max(worst, got-want, want-got)
			}
			t.Logf("mh M=%d, %d servers: worst share error %.5f", len(s.tab), len(ws), worst)
		}
	}
}

func TestMHRemoval(t *testing.T) {
	for _, n := range []int{3, 10, 50, 200} {
		ws := make([]int32, n)
		for i := range ws {
			ws[i] = 1
		}
		ds := mk(ws...)
		for i := range ds {
			ds[i].Addr = v4(198, 51, byte(i>>8), byte(i))
		}
		s := mustNew(t, "mh", Options{}, ds).(*mhSched)
		for _, gone := range []int{0, n / 2, n - 1} {
			nd := slices.Clone(ds)
			nd[gone].Up = false
			s2, err := s.Rebuild(nd)
			if err != nil {
				t.Fatal(err)
			}
			t2 := s2.(*mhSched)
			moved := 0
			for i, p := range s.tab {
				if s.idx[p] != t2.idx[t2.tab[i]] {
					moved++
				}
			}
			frac := float64(moved) / float64(len(s.tab))
			t.Logf("mh %d servers, server %d down: %.4f of the table moved (1/N = %.4f)", n, gone, frac, 1/float64(n))
			if limit := 1/float64(n) + 0.01; frac > limit {
				t.Errorf("mh %d servers, server %d down: %.4f of keys moved, want <= %.4f", n, gone, frac, limit)
			}
			// Also through Pick: a key moves only if it was on the gone
			// server or its table entry changed.
			for k := range uint32(2000) {
				f := flowN(k * 7919)
				a, b := s.Pick(f), s2.Pick(f)
				h := mhHash(fold(&f.Src), mhKey1) % uint32(len(s.tab))
				if a != gone && a != b && s.idx[s.tab[h]] == t2.idx[t2.tab[h]] {
					t.Fatalf("key moved %d→%d with an unchanged entry", a, b)
				}
			}
		}
	}
}

func TestMHQuiesceAndFallback(t *testing.T) {
	ds := mk(1, 1, 1)
	s := mustNew(t, "mh", Options{}, ds)
	before := make([]int, 3000)
	for i := range before {
		before[i] = s.Pick(flowN(uint32(i)))
	}
	ds[1].Weight = 0
	q, err := s.Rebuild(ds)
	if err != nil {
		t.Fatal(err)
	}
	d2 := mk(1, 1, 1)
	fbs, err := New("mh", Options{MHFallback: true}, d2)
	if err != nil {
		t.Fatal(err)
	}
	d2[1].Weight = 0
	fb, err := fbs.Rebuild(d2)
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for i, b := range before {
		f := flowN(uint32(i))
		g, h := q.Pick(f), fb.Pick(f)
		if b == 1 {
			if g != -1 || h < 0 || h == 1 {
				t.Fatalf("key %d of the quiesced server: %d (want -1), fallback %d (want another)", i, g, h)
			}
			moved++
		} else if g != b || h != b {
			t.Fatalf("key %d on %d moved to %d/%d when another server was quiesced", i, b, g, h)
		}
	}
	if moved == 0 {
		t.Fatal("no key was on server 1")
	}
}

func TestMHPort(t *testing.T) {
	ds := mk(1, 1, 1, 1)
	s := mustNew(t, "mh", Options{MHPort: true}, ds)
	f := flowN(3)
	seen := map[int]bool{}
	for p := range uint16(64) {
		f.SrcPort = 2000 + p
		seen[s.Pick(f)] = true
	}
	f.Proto = 1 // ICMP: no ports, IPVS hashes port 0
	icmp := map[int]bool{}
	for p := range uint16(64) {
		f.SrcPort = 2000 + p
		icmp[s.Pick(f)] = true
	}
	if len(seen) < 3 || len(icmp) != 1 {
		t.Fatalf("mh-port: TCP over 64 ports used %d servers (want >= 3), ICMP %d (want 1)", len(seen), len(icmp))
	}
}

func TestParseSchedFlags(t *testing.T) {
	tests := []struct {
		sched, flags string
		want         Options
		bad          bool
	}{
		{"sh", "sh-fallback,sh-port", Options{SHFallback: true, SHPort: true}, false},
		{"sh", "sh-port", Options{SHPort: true}, false},
		{"mh", "mh-fallback", Options{MHFallback: true}, false},
		{"mh", "mh-port,mh-fallback", Options{MHFallback: true, MHPort: true}, false},
		{"rr", "flag-1", Options{SHFallback: true, MHFallback: true}, false},
		{"", "flag-2,flag-3", Options{SHPort: true, MHPort: true}, false},
		{"sh", "", Options{}, false},
		{"mh", "sh-port", Options{}, true},
		{"", "sh-port", Options{}, true},
		{"sh", "sh-fast", Options{}, true},
		{"sh", "flag-4", Options{}, true},
	}
	for _, tt := range tests {
		got, err := ParseSchedFlags(tt.sched, tt.flags)
		if tt.bad {
			if !errors.Is(err, ErrBadFlag) {
				t.Errorf("ParseSchedFlags(%q, %q) error = %v, want ErrBadFlag", tt.sched, tt.flags, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSchedFlags(%q, %q) = %+v, %v; want %+v", tt.sched, tt.flags, got, err, tt.want)
		}
	}
	if got := FormatSchedFlags("sh", Options{SHFallback: true, SHPort: true}); got != "sh-fallback,sh-port" {
		t.Errorf("FormatSchedFlags = %q", got)
	}
}

func FuzzParseSchedFlags(f *testing.F) {
	for _, s := range []string{"sh-fallback,sh-port", "mh-fallback,mh-port", "flag-1,flag-2,flag-3", "", ",", "sh-", "flag-1,,"} {
		f.Add("sh", s)
		f.Add("mh", s)
	}
	f.Fuzz(func(t *testing.T, sched, flags string) {
		o, err := ParseSchedFlags(sched, flags)
		if err != nil {
			return
		}
		// Round trip for the scheduler's own flags.
		if sched == "sh" || sched == "mh" {
			back, err := ParseSchedFlags(sched, FormatSchedFlags(sched, o))
			if err != nil {
				t.Fatalf("reparse %q: %v", FormatSchedFlags(sched, o), err)
			}
			if sched == "sh" && (back.SHFallback != o.SHFallback || back.SHPort != o.SHPort) {
				t.Fatalf("sh round trip %+v → %+v", o, back)
			}
			if sched == "mh" && (back.MHFallback != o.MHFallback || back.MHPort != o.MHPort) {
				t.Fatalf("mh round trip %+v → %+v", o, back)
			}
		}
	})
}

func TestZeroAlloc(t *testing.T) {
	for _, n := range Names() {
		for _, thresh := range []bool{false, true} {
			ds := mk(3, 1, 2, 5, 4)
			if thresh {
				ds[1].Upper = 100
			}
			s := mustNew(t, n, Options{SHFallback: true, MHFallback: true, CacheSize: 64}, ds)
			var i uint32
			allocs := testing.AllocsPerRun(2000, func() {
				i++
				s.Pick(flowN(i % 300))
			})
			// flowN allocates its Flow; measure it alone and subtract.
			base := testing.AllocsPerRun(2000, func() { i++; _ = flowN(i) })
			if allocs-base > 0 {
				t.Errorf("%s (thresholds %v): %.1f allocs per Pick", n, thresh, allocs-base)
			}
		}
	}
}

func Example() {
	dests := []Dest{
		{Weight: 4, Up: true, Conns: new(ConnCounts)},
		{Weight: 3, Up: true, Conns: new(ConnCounts)},
		{Weight: 2, Up: true, Conns: new(ConnCounts)},
	}
	s, err := New("wrr", Options{}, dests)
	if err != nil {
		panic(err)
	}
	var f Flow
	for range 9 {
		fmt.Print(s.Pick(&f), " ")
	}
	fmt.Println()
	// Output: 0 0 1 0 1 2 0 1 2
}
