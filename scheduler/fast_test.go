package scheduler

import (
	"math/rand/v2"
	"testing"
	"unsafe"
)

// Tests of the shortcuts Pick takes for speed: each against the slow
// operation it replaces.

func TestFastmod(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	divs := []uint32{2, 3, 7, 251, 4093, mhDefaultSize, 1<<24 - 3, 1<<31 - 1, ^uint32(0)}
	for range 20 {
		divs = append(divs, 2+r.Uint32N(1<<31))
	}
	for _, d := range divs {
		m := fastmodM(d)
		xs := []uint32{0, 1, d - 1, d, d + 1, ^uint32(0), ^uint32(0) - 1}
		for range 2000 {
			xs = append(xs, r.Uint32())
		}
		for _, x := range xs {
			if got, want := fastmod(x, m, d), x%d; got != want {
				t.Fatalf("fastmod(%d, %d) = %d, want %d", x, d, got, want)
			}
		}
	}
}

// keySet must spread addresses that differ only in their low bytes (a
// subnet's hosts) and in any word of an IPv6 address.
func TestKeySetSpread(t *testing.T) {
	const sets = 1024
	shift := setShift(sets)
	for _, tc := range []struct {
		name string
		addr func(i int) [16]byte
	}{
		{"v4 hosts", func(i int) [16]byte { return v4(203, 0, byte(i>>8), byte(i)) }},
		{"v6 low", func(i int) [16]byte {
			return [16]byte{0: 0x20, 1: 0x01, 2: 0x0d, 3: 0xb8, 14: byte(i >> 8), 15: byte(i)}
		}},
		{"v6 high", func(i int) [16]byte { return [16]byte{0: 0x20, 1: 0x01, 2: 0x0d, 3: 0xb8, 4: byte(i >> 8), 5: byte(i)} }},
	} {
		var n [sets]int
		const keys = 64 * sets
		for i := range keys {
			a := tc.addr(i)
			k0, k1 := addrKey(&a)
			s := keySet(k0, k1, shift)
			if s >= sets {
				t.Fatalf("%s: set %d of %d", tc.name, s, sets)
			}
			n[s]++
		}
		for s, c := range n {
			// 64 expected per set; a fair hash stays well inside ±50%.
			if c < 32 || c > 96 {
				t.Fatalf("%s: set %d holds %d of %d keys, want about 64", tc.name, s, c, keys)
			}
		}
	}
	if got := keySet(^uint64(0), ^uint64(0), setShift(1)); got != 0 {
		t.Fatalf("one set: keySet = %d, want 0", got)
	}
}

// An lblc pick that reschedules to the server already cached leaves the
// entry alone (no write on a line every worker reads), as IPVS's
// ip_vs_lblc_new does.
func TestLBLCSameDestNoWrite(t *testing.T) {
	ds := mk(4, 10)
	// Dest 0: Active 5 > weight 4, overloaded in lblc's sense because
	// dest 1 has Active*2 < weight; yet wlc still prefers dest 0
	// (1280/4 < (1024+5000)/10).
	ds[0].Conns.Set(5, 0)
	ds[1].Conns.Set(4, 5000)
	clk := &fakeClock{now: 100}
	s := mustNew(t, "lblc", Options{CacheSize: 64}, ds).(*lblcSched)
	s.clock = clk.read
	f := dstFlow(7)
	if got := s.Pick(f); got != 0 {
		t.Fatalf("first pick = %d, want 0", got)
	}
	k0, k1 := addrKey(&f.Dst)
	seqs := func() (out [cacheWays]uint32) {
		set := s.set(k0, k1)
		for i := range set {
			out[i] = set[i].seq.Load()
		}
		return out
	}
	before := seqs()
	for range 10 {
		if got := s.Pick(f); got != 0 {
			t.Fatalf("pick = %d, want 0", got)
		}
	}
	if after := seqs(); after != before {
		t.Fatalf("entry sequence numbers %v → %v: rewritten with the same server", before, after)
	}
	// A different answer is still written.
	ds[0].Conns.Set(5, 3000)
	if got := s.Pick(f); got != 1 {
		t.Fatalf("pick after dest 0 got busier = %d, want 1", got)
	}
	if after := seqs(); after == before {
		t.Fatal("entry not rewritten for a new server")
	}
}

// twos looks draws up in a table of dests, or of positions, or searches
// the cumulative weights, by total weight: each path against IPVS's walk.
func TestTWOSPaths(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		name  string
		scale int32 // weights 1..5 times scale, for 1..12 servers
		path  func(s *twosSched) bool
	}{
		{"entries", 1, func(s *twosSched) bool { return s.table != nil }},
		{"positions", 1500, func(s *twosSched) bool { return s.table == nil && s.ptab != nil }},
		{"search", 20000, func(s *twosSched) bool { return s.table == nil && s.ptab == nil }},
	} {
		seen := 0
		for range 300 {
			ds := randDests(r, false)
			for i := range ds {
				ds[i].Weight = (1 + ds[i].Weight%5) * tc.scale
			}
			s := mustNew(t, "twos", Options{}, ds).(*twosSched)
			if len(s.elig) == 0 || !tc.path(s) {
				continue
			}
			seen++
			for range 20 {
				u1, u2 := r.Uint32(), r.Uint32()
				sr := &seqRand{vals: []uint32{u1, u2}}
				s.rnd = sr.next
				if got, want := s.Pick(&Flow{}), refTWOS(ds, u1, u2); got != want {
					t.Fatalf("%s: total %d: twos(%d,%d) = %d, want %d", tc.name, s.total, u1, u2, got, want)
				}
			}
		}
		if seen < 20 {
			t.Fatalf("%s: only %d services took this path", tc.name, seen)
		}
	}
}

// A pick through a *cursors first checks the pointer for nil by loading
// its first byte; that byte must not share a 128-byte block with any
// shard's cursor (shard 0's was there, and every other shard's pick then
// read the line shard 0 writes: two workers scaled to 0.6x of one), and
// no two cursors may share one.
func TestCursorsLayout(t *testing.T) {
	var c cursors
	start := uintptr(unsafe.Pointer(&c))
	blocks := map[uintptr]int{0: -1} // 128-byte block → shard (-1: the nil check's)
	for k := range c.c {
		off := uintptr(unsafe.Pointer(c.at(uint16(k)))) - start
		if other, ok := blocks[off/128]; ok {
			t.Fatalf("shard %d's cursor at offset %d shares its 128-byte block with %d (-1 = the nil check's load)", k, off, other)
		}
		blocks[off/128] = k
	}
	if c.at(nShards) != c.at(0) || c.at(nShards+1) != c.at(1) {
		t.Fatal("shards past nShards do not wrap")
	}
}
