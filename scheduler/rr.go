package scheduler

import (
	"slices"
	"sync/atomic"
)

// nShards is how many per-worker cursors rr and wrr keep.
const nShards = 64

// cursor is one shard's position, alone on a 128-byte block (a cache
// line and its prefetch pair) so that workers advancing different shards
// do not slow each other down.
type cursor struct {
	v atomic.Uint64
	_ [120]byte
}

// cursors are the per-shard cursors. They start with a block nobody
// writes: Go checks a *cursors for nil by loading its first byte, so
// with the cursors at the start every pick, whatever its shard, would
// read shard 0's line, the one shard 0 writes on each of its picks. That
// line then moved between the cores on every pick: two workers picked
// at 0.6 times one worker's rate.
type cursors struct {
	_ [128]byte
	c [nShards]cursor
}

func (c *cursors) at(shard uint16) *atomic.Uint64 { return &c.c[shard%nShards].v }

// advance moves a cursor that wraps at n one step and returns the position
// it held. Wrapping by compare-and-swap avoids a division per pick; the
// cursor is per shard, so the swap rarely fails.
func advance(cur *atomic.Uint64, n uint64) uint64 {
	for {
		c := cur.Load()
		p := c
		if p >= n { // carried over from a longer list
			p %= n
		}
		nx := p + 1
		if nx == n {
			nx = 0
		}
		if cur.CompareAndSwap(c, nx) {
			return p
		}
	}
}

// skipTo moves the cursor past an overloaded stretch, from just after p to
// just after p+k, unless another pick moved it meanwhile.
func skipTo(cur *atomic.Uint64, p, k, n uint64) {
	cur.CompareAndSwap((p+1)%n, (p+k+1)%n)
}

// rr: IPVS ip_vs_rr.c. elig are the live positions of weight > 0; the
// cursor is the position in elig of the next pick (just after the last).
type rrSched struct {
	base
	elig    []int32
	eligIdx []int32 // idx[elig[i]]: one load fewer after the cursor's
	cur     *cursors
}

func buildRR(b base, prev Scheduler) (Scheduler, error) {
	s := &rrSched{base: b, cur: new(cursors)}
	for i := range b.live {
		if b.live[i].Weight > 0 {
			s.elig = append(s.elig, int32(i))
			s.eligIdx = append(s.eligIdx, b.idx[i])
		}
	}
	if p, ok := prev.(*rrSched); ok && len(s.elig) > 0 && len(p.elig) > 0 {
		// Continue after the server each shard picked last, as IPVS keeps
		// pointing at the last dest across list changes (even if that one
		// is now quiesced; gone from the list, the shard restarts).
		pos := s.livePos()
		for k := range p.cur.c {
			c := p.cur.c[k].v.Load() % uint64(len(p.elig))
			if c == 0 {
				continue // fresh, or the last pick was the list's end
			}
			lp, ok := pos[p.live[p.elig[c-1]].Conns]
			if !ok {
				continue
			}
			j, _ := slices.BinarySearch(s.elig, lp+1) // first eligible after it
			s.cur.c[k].v.Store(uint64(j) % uint64(len(s.elig)))
		}
	}
	return s, nil
}

func (s *rrSched) Rebuild(dests []Dest) (Scheduler, error) {
	return build(s.name, s.opts, dests, s)
}

func (s *rrSched) Pick(f *Flow) int {
	n := uint64(len(s.elig))
	if n == 0 {
		return -1
	}
	cur := s.cur.at(f.Shard)
	c := advance(cur, n)
	if !s.thresh && c < uint64(len(s.eligIdx)) {
		return int(s.eligIdx[c])
	}
	for k := range n {
		p := s.elig[(c+k)%n]
		if !s.live[p].Overloaded() {
			if k > 0 {
				// The next pick starts after this one, as IPVS's
				// cursor would; losing this race is harmless.
				skipTo(cur, c, k, n)
			}
			return int(s.idx[p])
		}
	}
	return -1
}

// maxWRRSeq bounds the precomputed wrr sequence (entries); longer cycles
// (huge, coprime weights) walk IPVS's state machine instead. A variable so
// tests can force the walk.
var maxWRRSeq = 1 << 16

// wrr: IPVS ip_vs_wrr.c. One cycle of IPVS's sequence is precomputed in
// seq (live positions) with passStart[k] the offset of pass k (cw =
// mw-k*di); Pick is an atomic add and an index. Cycles longer than
// maxWRRSeq use walk, IPVS's own scan, over a packed (cw, position)
// state updated by compare-and-swap.
type wrrSched struct {
	base
	mw, di    int32
	seq       []int32
	seqIdx    []int32 // idx[seq[i]]
	passStart []int32
	cur       *cursors
}

func gcd(a, b int32) int32 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func buildWRR(b base, prev Scheduler) (Scheduler, error) {
	s := &wrrSched{base: b, cur: new(cursors)}
	var g, maxw int32
	var total int64
	for i := range b.live {
		w := b.live[i].Weight
		if w > 0 {
			if g == 0 {
				g = w
			} else {
				g = gcd(w, g)
			}
			maxw = max(maxw, w)
		}
	}
	if g == 0 {
		g = 1
	}
	s.di = g
	s.mw = maxw - (g - 1)
	if s.mw > 0 {
		for i := range b.live {
			total += int64((b.live[i].Weight + g - 1) / g)
		}
		if total <= int64(maxWRRSeq) {
			s.seq = make([]int32, 0, total)
			s.seqIdx = make([]int32, 0, total)
			for cw := s.mw; cw > 0; cw -= s.di {
				s.passStart = append(s.passStart, int32(len(s.seq)))
				for i := range b.live {
					if b.live[i].Weight >= cw {
						s.seq = append(s.seq, int32(i))
						s.seqIdx = append(s.seqIdx, b.idx[i])
					}
				}
			}
		}
	}
	if p, ok := prev.(*wrrSched); ok && s.mw > 0 {
		// IPVS's ip_vs_wrr_dest_changed: restart the list walk at the
		// head, keeping the current weight pass (rounded as IPVS does).
		for k := range p.cur.c {
			st := p.cur.c[k].v.Load()
			if st == 0 {
				continue
			}
			cw := p.stateCW(st)
			if cw > s.mw || cw <= 0 {
				cw = s.mw
			} else if s.di > 1 {
				cw = (cw/s.di)*s.di + 1
			}
			s.cur.c[k].v.Store(s.stateAt(cw))
		}
	}
	return s, nil
}

// The cursor state: with a sequence, the position in seq of the next pick;
// without, cw<<32 | (list position + 1), 0 meaning the initial state.

func (s *wrrSched) stateCW(st uint64) int32 {
	if s.seq != nil {
		pos := int32((st - 1) % uint64(len(s.seq))) // the last pick (st > 0)
		k := 0
		for k+1 < len(s.passStart) && s.passStart[k+1] <= pos {
			k++
		}
		return s.mw - int32(k)*s.di
	}
	if st == 0 {
		return s.mw
	}
	return int32(st >> 32)
}

func (s *wrrSched) stateAt(cw int32) uint64 {
	if s.seq != nil {
		k := int((s.mw - cw) / s.di)
		if k < 0 || k >= len(s.passStart) {
			return 0
		}
		return uint64(s.passStart[k])
	}
	return uint64(cw) << 32
}

func (s *wrrSched) Rebuild(dests []Dest) (Scheduler, error) {
	return build(s.name, s.opts, dests, s)
}

func (s *wrrSched) Pick(f *Flow) int {
	if s.mw <= 0 {
		return -1
	}
	cur := s.cur.at(f.Shard)
	if s.seq == nil {
		return s.walk(cur)
	}
	n := uint64(len(s.seq))
	c := advance(cur, n)
	if !s.thresh && c < uint64(len(s.seqIdx)) {
		return int(s.seqIdx[c])
	}
	// Walking the sequence and skipping overloaded servers is what IPVS's
	// scan does; it gives up after one full cycle.
	for k := range n {
		p := s.seq[(c+k)%n]
		if !s.live[p].Overloaded() {
			if k > 0 {
				skipTo(cur, c, k, n)
			}
			return int(s.idx[p])
		}
	}
	return -1
}

// walk is ip_vs_wrr_schedule over immutable weights: from the last
// position, the next dest (list order) with weight >= cw that is not
// overloaded, lowering cw by di at the end of the list and wrapping to mw.
func (s *wrrSched) walk(cur *atomic.Uint64) int {
	n := int64(len(s.live))
	passes := int64(s.mw+s.di-1) / int64(s.di)
	limit := (n + 1) * (passes + 2) // every position of every pass, wraps included
	for {
		st := cur.Load()
		cw := s.mw
		pos := int64(-1)
		if st != 0 {
			cw = int32(st >> 32)
			pos = int64(uint32(st)) - 1
		}
		found := int64(-1)
		for range limit {
			pos++
			if pos >= n {
				pos = -1
				cw -= s.di
				if cw <= 0 {
					cw = s.mw
				}
				continue
			}
			d := &s.live[pos]
			if d.Weight >= cw && !d.Overloaded() {
				found = pos
				break
			}
		}
		if found < 0 {
			return -1
		}
		if cur.CompareAndSwap(st, uint64(cw)<<32|uint64(found+1)) {
			return int(s.idx[found])
		}
	}
}
