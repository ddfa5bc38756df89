package scheduler

import (
	"cmp"
	"math/rand/v2"
	"slices"
)

// The least-connection schedulers. Pick reads the answer off the index
// (index.go); the list walks below, IPVS's own loops, are the fallback
// when the index cannot answer and the reference it is tested against.

type lcSched struct{ base }

func buildLC(b base, _ Scheduler) (Scheduler, error) { return &lcSched{b}, nil }

func (s *lcSched) Rebuild(dests []Dest) (Scheduler, error) {
	return build(s.name, s.opts, dests, s)
}

func (s *lcSched) Pick(f *Flow) int {
	if p, ok := s.ix.pick(f); ok {
		return s.pos(p)
	}
	return s.scan()
}

// pos maps a live position (or -1) to an index into all.
func (b *base) pos(p int32) int {
	if p < 0 {
		return -1
	}
	return int(b.idx[p])
}

// scan is ip_vs_lc_schedule: least overhead, first on ties.
func (s *lcSched) scan() int {
	least := -1
	var loh int64
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.w <= 0 || (sl.upper > 0 && s.over(i)) {
			continue
		}
		c := sl.c
		if doh := int64(c.Active.Load())<<8 + int64(c.Inactive.Load()); least < 0 || doh < loh {
			least, loh = i, doh
		}
	}
	if least < 0 {
		return -1
	}
	return int(s.idx[least])
}

// wlcPick is wlc's choice (and lblc/lblcr's __schedule) as a live
// position or -1.
func wlcPick(b *base, f *Flow) int {
	if p, ok := b.ix.pick(f); ok {
		return int(p)
	}
	return wlcScan(b)
}

// wlcScan is ip_vs_wlc_schedule: the first available dest, then any with
// a smaller overhead/weight, compared as products.
func wlcScan(b *base) int {
	least := -1
	var loh, lw int64
	for i := range b.slots {
		sl := &b.slots[i]
		if sl.w <= 0 || (sl.upper > 0 && b.over(i)) {
			continue
		}
		doh := int64(sl.c.Active.Load())<<8 + int64(sl.c.Inactive.Load())
		if least < 0 || loh*int64(sl.w) > doh*lw {
			least, loh, lw = i, doh, int64(sl.w)
		}
	}
	return least
}

type wlcSched struct{ base }

func buildWLC(b base, _ Scheduler) (Scheduler, error) { return &wlcSched{b}, nil }

func (s *wlcSched) Rebuild(dests []Dest) (Scheduler, error) {
	return build(s.name, s.opts, dests, s)
}

// Pick is wlcPick written out: wlcPick is too big for the inliner, and the
// call is a tenth of a pick.
func (s *wlcSched) Pick(f *Flow) int {
	if p, ok := s.ix.pick(f); ok {
		return s.pos(p)
	}
	return s.pos(int32(wlcScan(&s.base)))
}

type sedSched struct{ base }

func buildSED(b base, _ Scheduler) (Scheduler, error) { return &sedSched{b}, nil }

func (s *sedSched) Rebuild(dests []Dest) (Scheduler, error) {
	return build(s.name, s.opts, dests, s)
}

func (s *sedSched) Pick(f *Flow) int {
	if p, ok := s.ix.pick(f); ok {
		return s.pos(p)
	}
	return s.scan()
}

// scan is ip_vs_sed_schedule: least (Active+1)/weight.
func (s *sedSched) scan() int {
	least := -1
	var loh, lw int64
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.w <= 0 || (sl.upper > 0 && s.over(i)) {
			continue
		}
		doh := int64(sl.c.Active.Load()) + 1
		if least < 0 || loh*int64(sl.w) > doh*lw {
			least, loh, lw = i, doh, int64(sl.w)
		}
	}
	if least < 0 {
		return -1
	}
	return int(s.idx[least])
}

type nqSched struct{ base }

func buildNQ(b base, _ Scheduler) (Scheduler, error) { return &nqSched{b}, nil }

func (s *nqSched) Rebuild(dests []Dest) (Scheduler, error) {
	return build(s.name, s.opts, dests, s)
}

func (s *nqSched) Pick(f *Flow) int {
	if p, ok := s.ix.pick(f); ok {
		return s.pos(p)
	}
	return s.scan()
}

// scan is ip_vs_nq_schedule: the first available dest with no active
// connection, else least (Active+1)/weight.
func (s *nqSched) scan() int {
	least := -1
	var loh, lw int64
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.w <= 0 || (sl.upper > 0 && s.over(i)) {
			continue
		}
		a := int64(sl.c.Active.Load())
		if a == 0 {
			return int(s.idx[i])
		}
		doh := a + 1
		if least < 0 || loh*int64(sl.w) > doh*lw {
			least, loh, lw = i, doh, int64(sl.w)
		}
	}
	if least < 0 {
		return -1
	}
	return int(s.idx[least])
}

// byWeight lists the live positions of weight > 0 by weight, highest
// first, list order among equals: fo and ovf want the first of these that
// qualifies, which is what their IPVS list walks (strictly greater weight
// wins) find.
func byWeight(b *base) []int32 {
	var o []int32
	for i := range b.live {
		if b.live[i].Weight > 0 {
			o = append(o, int32(i))
		}
	}
	slices.SortStableFunc(o, func(x, y int32) int {
		return cmp.Compare(b.live[y].Weight, b.live[x].Weight)
	})
	return o
}

// ordered is a walk order of live positions packed for the walk: the
// slots themselves (a Dest is four times a slot's size), the live
// positions for the threshold check, and the indexes Pick returns.
type ordered struct {
	slots []slot
	pos   []int32
	idx   []int32
}

func orderOf(b *base, order []int32) ordered {
	o := ordered{pos: order, slots: make([]slot, len(order)), idx: make([]int32, len(order))}
	for i, p := range order {
		o.slots[i], o.idx[i] = b.slots[p], b.idx[p]
	}
	return o
}

type foSched struct {
	base
	ord ordered
}

func buildFO(b base, _ Scheduler) (Scheduler, error) {
	return &foSched{b, orderOf(&b, byWeight(&b))}, nil
}

func (s *foSched) Rebuild(dests []Dest) (Scheduler, error) {
	return build(s.name, s.opts, dests, s)
}

// Pick is ip_vs_fo_schedule: the highest weight not overloaded, first on
// ties.
func (s *foSched) Pick(*Flow) int {
	o := &s.ord
	for i := range o.slots {
		if o.slots[i].upper <= 0 || !s.over(int(o.pos[i])) {
			return int(o.idx[i])
		}
	}
	return -1
}

type ovfSched struct {
	base
	ord ordered
}

func buildOVF(b base, _ Scheduler) (Scheduler, error) {
	return &ovfSched{b, orderOf(&b, byWeight(&b))}, nil
}

func (s *ovfSched) Rebuild(dests []Dest) (Scheduler, error) {
	return build(s.name, s.opts, dests, s)
}

// Pick is ip_vs_ovf_schedule: the highest weight among dests whose active
// connections do not exceed their weight, first on ties.
func (s *ovfSched) Pick(*Flow) int {
	o := &s.ord
	for i := range o.slots {
		sl := &o.slots[i]
		if int64(sl.c.Active.Load()) <= int64(sl.w) && (sl.upper <= 0 || !s.over(int(o.pos[i]))) {
			return int(o.idx[i])
		}
	}
	return -1
}

// twos's per-draw lookup tables: entries up to twosEntMax total weight
// (256 KiB), live positions up to twosTableMax (256 KiB), beyond that a
// binary search (about 10 times slower a pick, at 4096 servers).
const (
	twosEntMax   = 1 << 14
	twosTableMax = 1 << 16
)

// twosEnt is a draw's dest as Pick reads it: no further table between the
// draw and the dest's counts (one dependent load fewer: 4 ns a pick).
type twosEnt struct {
	c   *ConnCounts
	w   int32
	idx int32 // into all
}

// twos: ip_vs_twos.c. Without thresholds the weights are fixed per
// snapshot, so each draw is precomputed: a table from draw to dest when the
// total weight is small, else a search of the cumulative weights. With
// thresholds Pick walks the list as IPVS does.
type twosSched struct {
	base
	elig  []int32   // live positions with weight > 0
	cum   []int64   // cum[i] = sum of weights of elig[0..i]
	table []twosEnt // table[r] is elig[search(r)], r in [0, total]
	ptab  []int32   // without table, ptab[r] is elig[search(r)]
	total int64
	rnd   func() uint32 // when set (tests), the random source
}

func buildTWOS(b base, _ Scheduler) (Scheduler, error) {
	s := &twosSched{base: b}
	for i := range b.live {
		if w := b.live[i].Weight; w > 0 {
			s.total += int64(w)
			s.elig = append(s.elig, int32(i))
			s.cum = append(s.cum, s.total)
		}
	}
	switch {
	case len(s.elig) == 0:
	case s.total < twosEntMax:
		s.table = make([]twosEnt, s.total+1)
		for r := range s.table {
			s.table[r] = s.entOf(s.elig[s.search(int64(r))])
		}
	case s.total < twosTableMax:
		s.ptab = make([]int32, s.total+1)
		for r := range s.ptab {
			s.ptab[r] = s.elig[s.search(int64(r))]
		}
	}
	return s, nil
}

func (s *twosSched) Rebuild(dests []Dest) (Scheduler, error) {
	n, err := build(s.name, s.opts, dests, s)
	if err == nil {
		n.(*twosSched).rnd = s.rnd
	}
	return n, err
}

func (s *twosSched) Pick(f *Flow) int {
	if len(s.elig) == 0 {
		return -1
	}
	// The runtime's generator keeps its state per thread: nothing shared
	// is written. (A generator per shard, as rr's cursors, costs a locked
	// add a pick: 5 ns more.)
	var u1, u2 uint32
	if s.rnd == nil {
		x := rand.Uint64()
		u1, u2 = uint32(x), uint32(x>>32)
	} else {
		u1, u2 = s.rnd(), s.rnd()
	}
	if s.thresh {
		return s.walk(u1, u2)
	}
	// IPVS draws from [0, total] and takes the first dest whose running
	// sum of weights reaches the draw (so the first dest gets one extra
	// chance in total+1).
	t := s.total + 1
	r1, r2 := reduce(u1, t), reduce(u2, t)
	var e1, e2 twosEnt
	if s.table != nil {
		e1, e2 = s.table[r1], s.table[r2]
	} else if s.ptab != nil {
		e1, e2 = s.entOf(s.ptab[r1]), s.entOf(s.ptab[r2])
	} else {
		e1, e2 = s.entOf(s.elig[s.search(r1)]), s.entOf(s.elig[s.search(r2)])
	}
	o1 := int64(e1.c.Active.Load())<<8 + int64(e1.c.Inactive.Load())
	o2 := int64(e2.c.Active.Load())<<8 + int64(e2.c.Inactive.Load())
	// Which one wins is a coin toss to the branch predictor: select
	// without a branch (the compiler emits a conditional move).
	i1 := e1.idx
	if int64(e2.w)*o1 > int64(e1.w)*o2 {
		i1 = e2.idx
	}
	return int(i1)
}

func (s *twosSched) entOf(p int32) twosEnt {
	return twosEnt{c: s.slots[p].c, w: s.slots[p].w, idx: s.idx[p]}
}

// reduce maps a 32-bit random number onto [0, t) by multiply and shift:
// as even as IPVS's prandom_u32() % t, without a division.
func reduce(u uint32, t int64) int64 {
	if t <= 1<<32 {
		return int64((uint64(u) * uint64(t)) >> 32)
	}
	return int64(u) % t // t past 32 bits: every u is already below it
}

// search is the first i with cum[i] >= r (r <= total), written without
// data-dependent branches so random draws do not mispredict.
func (s *twosSched) search(r int64) int {
	base, n := 0, len(s.cum)
	for n > 1 {
		half := n / 2
		if s.cum[base+half-1] < r {
			base += half
		}
		n -= half
	}
	return base
}

// walk is ip_vs_twos_schedule verbatim (over live), used when overload
// marks make the available weight change between picks.
func (s *twosSched) walk(u1, u2 uint32) int {
	var total int64
	for i := range s.live {
		if avail(&s.live[i]) {
			total += int64(s.live[i].Weight)
		}
	}
	if total == 0 {
		return -1
	}
	total++
	r1, r2 := reduce(u1, total), reduce(u2, total)
	c1, c2 := -1, -1
	var w1, w2, o1, o2 int64
	for i := range s.live {
		d := &s.live[i]
		if !avail(d) {
			continue
		}
		w := int64(d.Weight)
		r1 -= w
		r2 -= w
		if r1 <= 0 && c1 < 0 {
			c1, w1, o1 = i, w, d.overhead()
		}
		if r2 <= 0 && c2 < 0 {
			c2, w2, o2 = i, w, d.overhead()
		}
		if c1 >= 0 && c2 >= 0 {
			break
		}
	}
	if c1 < 0 {
		return -1 // every mark changed under us; IPVS would return the last dest
	}
	if c2 >= 0 && w2*o1 > w1*o2 {
		c1 = c2
	}
	return int(s.idx[c1])
}
