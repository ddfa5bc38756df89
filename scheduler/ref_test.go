package scheduler

// Straightforward transcriptions of the IPVS schedulers (ip_vs_*.c) over
// the dests as given, used as the oracle in differential tests. They walk
// the list the way the kernel does, with no precomputed tables. Every
// function returns an index into dests or -1.

// refList is IPVS's destination list: the dests that are Up.
func refList(dests []Dest) []int {
	var l []int
	for i := range dests {
		if dests[i].Up {
			l = append(l, i)
		}
	}
	return l
}

func refOver(d *Dest) bool { return d.Overloaded() }

func refOH(d *Dest) int64 {
	return int64(d.Conns.Active.Load())*256 + int64(d.Conns.Inactive.Load())
}

// refRR is ip_vs_rr_schedule; last is the list position of the last pick
// (-1 = head).
type refRR struct{ last int }

func (r *refRR) pick(dests []Dest) int {
	l := refList(dests)
	n := len(l)
	for k := 1; k <= n; k++ {
		p := (r.last + k) % n
		if r.last < 0 {
			p = k - 1
		}
		d := &dests[l[p]]
		if !refOver(d) && d.Weight > 0 {
			r.last = p
			return l[p]
		}
	}
	return -1
}

// refWRR is ip_vs_wrr_schedule with its mark (cl, cw, mw, di).
type refWRR struct {
	cl         int // list position, -1 = head
	cw, mw, di int32
}

func newRefWRR(dests []Dest) *refWRR {
	l := refList(dests)
	var g, mx int32
	for _, i := range l {
		w := dests[i].Weight
		if w > 0 {
			if g > 0 {
				g = gcd(w, g)
			} else {
				g = w
			}
		}
		mx = max(mx, w)
	}
	if g == 0 {
		g = 1
	}
	r := &refWRR{cl: -1, di: g, mw: mx - (g - 1)}
	r.cw = r.mw
	return r
}

func (r *refWRR) pick(dests []Dest) int {
	l := refList(dests)
	n := len(l)
	dest := r.cl
	if r.mw == 0 {
		return -1
	}
	last := dest
	stop := -2
	lastPass, restarted := false, false
	for {
		for dest = dest + 1; dest < n; dest++ {
			d := &dests[l[dest]]
			if !refOver(d) && d.Weight >= r.cw {
				r.cl = dest
				return l[dest]
			}
			if dest == stop {
				r.cl = dest
				return -1
			}
		}
		dest = -1
		r.cw -= r.di
		if r.cw <= 0 {
			r.cw = r.mw
			if lastPass || last == -1 {
				r.cl = dest
				return -1
			}
			restarted = true
		}
		lastPass = r.cw <= r.di
		if lastPass && restarted && last != -1 {
			stop = last
		}
	}
}

func refLC(dests []Dest) int {
	least := -1
	var loh int64
	for _, i := range refList(dests) {
		d := &dests[i]
		if refOver(d) || d.Weight == 0 {
			continue
		}
		doh := refOH(d)
		if least < 0 || doh < loh {
			least, loh = i, doh
		}
	}
	return least
}

// refWeighted is the shape shared by wlc and sed: the first available,
// then product comparisons skipping only overloaded dests.
func refWeighted(dests []Dest, oh func(*Dest) int64) int {
	l := refList(dests)
	least := -1
	var loh int64
	k := 0
	for ; k < len(l); k++ {
		d := &dests[l[k]]
		if !refOver(d) && d.Weight > 0 {
			least, loh = l[k], oh(d)
			break
		}
	}
	if least < 0 {
		return -1
	}
	for k++; k < len(l); k++ {
		d := &dests[l[k]]
		if refOver(d) {
			continue
		}
		doh := oh(d)
		if loh*int64(d.Weight) > doh*int64(dests[least].Weight) {
			least, loh = l[k], doh
		}
	}
	return least
}

func refWLC(dests []Dest) int { return refWeighted(dests, refOH) }

func refSEDOH(d *Dest) int64 { return int64(d.Conns.Active.Load()) + 1 }

func refSED(dests []Dest) int { return refWeighted(dests, refSEDOH) }

func refNQ(dests []Dest) int {
	least := -1
	var loh int64
	for _, i := range refList(dests) {
		d := &dests[i]
		if refOver(d) || d.Weight == 0 {
			continue
		}
		doh := refSEDOH(d)
		if d.Conns.Active.Load() == 0 {
			return i
		}
		if least < 0 || loh*int64(d.Weight) > doh*int64(dests[least].Weight) {
			least, loh = i, doh
		}
	}
	return least
}

func refFO(dests []Dest) int {
	h := -1
	var hw int32
	for _, i := range refList(dests) {
		d := &dests[i]
		if !refOver(d) && d.Weight > hw {
			h, hw = i, d.Weight
		}
	}
	return h
}

func refOVF(dests []Dest) int {
	h := -1
	var hw int32
	for _, i := range refList(dests) {
		d := &dests[i]
		w := d.Weight
		if refOver(d) || d.Conns.Active.Load() > w || w == 0 {
			continue
		}
		if h < 0 || w > hw {
			h, hw = i, w
		}
	}
	return h
}

// refTWOS is ip_vs_twos_schedule with the two random numbers given.
// Totals stay below 2^32 here.
func refTWOS(dests []Dest, u1, u2 uint32) int {
	l := refList(dests)
	var total int64
	c1 := -1
	for _, i := range l {
		d := &dests[i]
		if !refOver(d) && d.Weight > 0 {
			total += int64(d.Weight)
			c1 = i
		}
	}
	if c1 < 0 {
		return -1
	}
	total++
	// IPVS reduces with %; xvs with a multiply and shift (same evenness).
	r1 := int64(uint64(u1) * uint64(total) >> 32)
	r2 := int64(uint64(u2) * uint64(total) >> 32)
	c2 := -1
	var w1, w2 int64 = -1, -1
	var o1, o2 int64
	for _, i := range l {
		d := &dests[i]
		if refOver(d) || d.Weight <= 0 {
			continue
		}
		w := int64(d.Weight)
		r1 -= w
		r2 -= w
		if r1 <= 0 && w1 == -1 {
			c1, w1, o1 = i, w, refOH(d)
		}
		if r2 <= 0 && w2 == -1 {
			c2, w2, o2 = i, w, refOH(d)
		}
		if w1 != -1 && w2 != -1 {
			break
		}
	}
	if c2 >= 0 && w2*o1 > w1*o2 {
		return c2
	}
	return c1
}

// refHashTable is ip_vs_sh_reassign (weighted) or ip_vs_dh_reassign
// (weighted=false): 256 buckets of dests indices, -1 when empty.
func refHashTable(dests []Dest, weighted bool) [256]int {
	var tab [256]int
	l := refList(dests)
	p, count := 0, int32(0)
	for i := range tab {
		if len(l) == 0 {
			tab[i] = -1
			continue
		}
		tab[i] = l[p]
		count++
		if !weighted || count >= dests[l[p]].Weight {
			p = (p + 1) % len(l)
			count = 0
		}
	}
	return tab
}

func refAvail(d *Dest) bool { return d.Weight > 0 && !refOver(d) }

// refSH is ip_vs_sh_schedule with its get/get_fallback.
func refSH(dests []Dest, f *Flow, port, fallback bool) int {
	tab := refHashTable(dests, true)
	v := fold(&f.Src)
	if port && (f.Proto == 6 || f.Proto == 17 || f.Proto == 132) {
		v += uint32(f.SrcPort)
	}
	h := func(off uint32) uint32 { return (off + (v*0x61C88647)>>24) & 255 }
	ih := h(0)
	d := tab[ih]
	if d < 0 {
		return -1
	}
	if refAvail(&dests[d]) {
		return d
	}
	if !fallback {
		return -1
	}
	for off := uint32(0); off < 256; off++ {
		d = tab[h((off+ih)%256)]
		if refAvail(&dests[d]) {
			return d
		}
	}
	return -1
}

func refDH(dests []Dest, f *Flow) int {
	tab := refHashTable(dests, false)
	d := tab[(fold(&f.Dst)*0x61C88647)>>24]
	if d < 0 || !refAvail(&dests[d]) {
		return -1
	}
	return d
}

// refIsOverloaded is lblc/lblcr's is_overloaded over the list.
func refIsOverloaded(d *Dest, dests []Dest) bool {
	if d.Conns.Active.Load() <= d.Weight {
		return false
	}
	for _, i := range refList(dests) {
		if dests[i].Conns.Active.Load()*2 < dests[i].Weight {
			return true
		}
	}
	return false
}

// refLBLC is ip_vs_lblc_schedule over an unbounded map, entries dropped
// once unused for exp seconds (what IPVS's full expiration check does).
type refLBLC struct {
	m   map[[16]byte]refLBLCEnt
	exp int64

	moves int // cached entries rescheduled
}

type refLBLCEnt struct {
	dest int
	used int64
}

func (r *refLBLC) pick(dests []Dest, dst [16]byte, now int64) int {
	if e, ok := r.m[dst]; ok && now-e.used <= r.exp {
		e.used = now
		r.m[dst] = e
		d := &dests[e.dest]
		if d.Up && d.Weight > 0 && !refIsOverloaded(d, dests) {
			return e.dest
		}
		r.moves++
	}
	p := refWLC(dests)
	if p < 0 {
		return -1
	}
	r.m[dst] = refLBLCEnt{dest: p, used: now}
	return p
}

// refLBLCR is ip_vs_lblcr_schedule over an unbounded map; the set, newest
// first, is capped at lblcrSetMax as xvs caps it.
type refLBLCR struct {
	m   map[[16]byte]*refSetEnt
	exp int64

	grows, shrinks int // events, so tests can check they were exercised
}

type refSetEnt struct {
	set           []int
	used, lastmod int64
}

func refSetMin(dests []Dest, set []int) int {
	least := -1
	var loh int64
	k := 0
	for ; k < len(set); k++ {
		d := &dests[set[k]]
		if refOver(d) {
			continue
		}
		if d.Weight > 0 && d.Up {
			least, loh = set[k], refOH(d)
			break
		}
	}
	if least < 0 {
		return -1
	}
	for k++; k < len(set); k++ {
		d := &dests[set[k]]
		if refOver(d) {
			continue
		}
		doh := refOH(d)
		if loh*int64(d.Weight) > doh*int64(dests[least].Weight) && d.Up {
			least, loh = set[k], doh
		}
	}
	return least
}

func refSetMax(dests []Dest, set []int) int {
	most := -1
	var moh int64
	k := 0
	for ; k < len(set); k++ {
		if dests[set[k]].Weight > 0 {
			most, moh = k, refOH(&dests[set[k]])
			break
		}
	}
	if most < 0 {
		return -1
	}
	for k++; k < len(set); k++ {
		d := &dests[set[k]]
		doh := refOH(d)
		if moh*int64(d.Weight) < doh*int64(dests[set[most]].Weight) && d.Weight > 0 {
			most, moh = k, doh
		}
	}
	return most
}

func (r *refLBLCR) pick(dests []Dest, dst [16]byte, now int64) int {
	e, ok := r.m[dst]
	if ok && now-e.used > r.exp {
		ok = false
	}
	if !ok {
		p := refWLC(dests)
		if p < 0 {
			return -1
		}
		r.m[dst] = &refSetEnt{set: []int{p}, used: now, lastmod: now}
		return p
	}
	e.used = now
	dest := refSetMin(dests, e.set)
	if len(e.set) > 1 && now-e.lastmod > r.exp {
		if m := refSetMax(dests, e.set); m >= 0 {
			e.set = append(e.set[:m:m], e.set[m+1:]...)
			e.lastmod = now
			r.shrinks++
		}
	}
	if dest >= 0 && !refIsOverloaded(&dests[dest], dests) {
		return dest
	}
	p := refWLC(dests)
	if p < 0 {
		return -1
	}
	for _, q := range e.set {
		if q == p {
			return p
		}
	}
	e.set = append([]int{p}, e.set...)
	r.grows++
	if len(e.set) > lblcrSetMax {
		e.set = e.set[:lblcrSetMax]
	}
	e.lastmod = now
	return p
}
