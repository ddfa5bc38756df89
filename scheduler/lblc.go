package scheduler

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Expiry of lblc/lblcr entries runs on a one-second coarse clock: reading
// the time on every pick would cost more than the rest of the pick. The
// clock goroutine starts with the first lblc/lblcr scheduler and owns
// coarse.sec.
var (
	clockOnce sync.Once
	// Alone on its lines: every lblc/lblcr pick reads it, and the linker
	// would place it among other packages' variables, any of which might
	// be written as often (it sat on one line with testing's and three of
	// this package's).
	coarse struct {
		_   [2 * lineSize]byte
		sec atomic.Int64
		_   [2 * lineSize]byte
	}
)

func startClock() {
	coarse.sec.Store(time.Now().Unix())
	go func() {
		for now := range time.Tick(time.Second) {
			coarse.sec.Store(now.Unix())
		}
	}()
}

func coarseNow() int64 { return coarse.sec.Load() }

const (
	defaultExpiration = 24 * 60 * 60 // IPVS's DEFAULT_EXPIRATION, seconds
	defaultCacheSize  = 16384        // IPVS's lblc/lblcr max_size (1024 buckets * 16)
	cacheWays         = 4            // entries per set; a new key evicts the least recently used
)

func cacheSets(size int) (int, error) {
	if size == 0 {
		size = defaultCacheSize
	}
	if size < cacheWays || size > 1<<24 {
		return 0, fmt.Errorf("cache size %d: want %d..%d", size, cacheWays, 1<<24)
	}
	sets := 1
	for sets*2*cacheWays <= size {
		sets *= 2
	}
	return sets, nil
}

func addrKey(a *[16]byte) (uint64, uint64) {
	return binary.LittleEndian.Uint64(a[0:8]), binary.LittleEndian.Uint64(a[8:16])
}

// keySet is the cache set of address k0, k1 among 1<<(64-shift) sets:
// the top bits of a multiplicative hash, which depend on every bit of
// the address. Two multiplies: the set's address is on the path of every
// pick, ahead of the cache line it names.
func keySet(k0, k1 uint64, shift uint8) uint32 {
	return uint32(((k0*mhKey2 ^ k1) * mhKey1) >> shift)
}

// setShift is keySet's shift for sets (a power of two) sets.
func setShift(sets int) uint8 {
	return uint8(64 - bits.TrailingZeros(uint(sets)))
}

// isOverloaded is lblc/lblcr's own rule for live position p: more active
// connections than its weight while some server has fewer than half its
// weight. The index counts the latter; without one, the list is walked.
// The first test is inline; the rest, anyUnder, is a call.
func isOverloaded(b *base, sl *slot) bool {
	return sl.c.Active.Load() > sl.w && b.anyUnder()
}

// anyUnder reports whether some live server has Active*2 < weight.
func (b *base) anyUnder() bool {
	if under, ok := b.ix.anyUnder(); ok {
		return under
	}
	for i := range b.slots {
		if int64(b.slots[i].c.Active.Load())*2 < int64(b.slots[i].w) {
			return true
		}
	}
	return false
}

// lblcEntry maps a destination address to a live position. seq is even
// when the entry is stable and odd while one writer fills it; 0 means
// never written. Readers check seq before and after; writers take the odd
// value by compare-and-swap and give up (no caching) if someone else holds
// it, so no one ever waits.
type lblcEntry struct {
	seq    atomic.Uint32
	dest   atomic.Int32
	k0, k1 atomic.Uint64
	used   atomic.Int64 // coarse seconds of the last pick through it
}

func (e *lblcEntry) read(k0, k1 uint64) (dest int32, used int64, ok bool) {
	s1 := e.seq.Load()
	if s1 == 0 || s1&1 != 0 || e.k0.Load() != k0 || e.k1.Load() != k1 {
		return 0, 0, false
	}
	dest, used = e.dest.Load(), e.used.Load()
	return dest, used, e.seq.Load() == s1
}

func (e *lblcEntry) write(k0, k1 uint64, dest int32, now int64) {
	s1 := e.seq.Load()
	if s1&1 != 0 || !e.seq.CompareAndSwap(s1, s1+1) {
		return
	}
	e.k0.Store(k0)
	e.k1.Store(k1)
	e.dest.Store(dest)
	e.used.Store(now)
	e.seq.Store(s1 + 2)
}

// victim picks the entry of a set a new mapping goes to: the key's own,
// else a never-used one, else the least recently used.
func victim[E any, P interface {
	*E
	usedAt() (uint32, int64, uint64, uint64)
}](set []E, k0, k1 uint64) int {
	best, bestUsed := 0, int64(1<<62)
	for i := range set {
		seq, used, e0, e1 := P(&set[i]).usedAt()
		if seq != 0 && e0 == k0 && e1 == k1 {
			return i
		}
		if seq == 0 {
			used = -1 << 62
		}
		if used < bestUsed {
			best, bestUsed = i, used
		}
	}
	return best
}

func (e *lblcEntry) usedAt() (uint32, int64, uint64, uint64) {
	return e.seq.Load(), e.used.Load(), e.k0.Load(), e.k1.Load()
}

// lblc: ip_vs_lblc.c.
type lblcSched struct {
	base
	ents  []lblcEntry
	shift uint8 // keySet's
	exp   int64
	clock func() int64 // coarse seconds when set (tests); nil = coarseNow
}

func buildLBLC(b base, prev Scheduler) (Scheduler, error) {
	sets, err := cacheSets(b.opts.CacheSize)
	if err != nil {
		return nil, err
	}
	clockOnce.Do(startClock)
	s := &lblcSched{base: b, ents: make([]lblcEntry, sets*cacheWays), shift: setShift(sets),
		exp: int64(b.opts.LBLCExpiration)}
	if s.exp <= 0 {
		s.exp = defaultExpiration
	}
	if p, ok := prev.(*lblcSched); ok {
		s.clock = p.clock
		pos := s.livePos()
		for i := range p.ents {
			e := &p.ents[i]
			k0, k1 := e.k0.Load(), e.k1.Load()
			d, used, ok := e.read(k0, k1)
			if !ok || int(d) >= len(p.live) {
				continue
			}
			if nd, ok := pos[p.live[d].Conns]; ok {
				set := s.set(k0, k1)
				set[victim(set, k0, k1)].write(k0, k1, nd, used)
			}
		}
	}
	return s, nil
}

func (s *lblcSched) set(k0, k1 uint64) []lblcEntry {
	i := keySet(k0, k1, s.shift) * cacheWays
	return s.ents[i : i+cacheWays : i+cacheWays]
}

func (s *lblcSched) Rebuild(dests []Dest) (Scheduler, error) {
	return build(s.name, s.opts, dests, s)
}

func (s *lblcSched) Pick(f *Flow) int {
	k0, k1 := addrKey(&f.Dst)
	now := coarseNow()
	if s.clock != nil {
		now = s.clock()
	}
	// The commonest case, written out: the destination is in its set's
	// first entry, current, and its server may take the flow.
	i := int(keySet(k0, k1, s.shift)) * cacheWays
	if i < len(s.ents) {
		e := &s.ents[i]
		if d, used, ok := e.read(k0, k1); ok && now-used <= s.exp && uint(d) < uint(len(s.slots)) {
			if sl := &s.slots[d]; sl.w > 0 && !isOverloaded(&s.base, sl) {
				if used != now {
					e.used.Store(now)
				}
				return int(s.idx[d])
			}
		}
	}
	set := s.set(k0, k1)
	for i := range set {
		e := &set[i]
		d, used, ok := e.read(k0, k1)
		if !ok {
			continue
		}
		if now-used > s.exp || int(d) >= len(s.live) {
			break // expired: IPVS's garbage collection would have dropped it
		}
		if used != now {
			e.used.Store(now) // at most once a second, to keep the line shared
		}
		if sl := &s.slots[d]; sl.w > 0 && !isOverloaded(&s.base, sl) {
			return int(s.idx[d])
		}
		break
	}
	p := wlcPick(&s.base, f)
	if p < 0 {
		return -1
	}
	// As IPVS's ip_vs_lblc_new, leave an entry that already says so
	// alone: a write is a locked instruction on a line every worker
	// reads.
	v := &set[victim(set, k0, k1)]
	if d, used, ok := v.read(k0, k1); !ok || d != int32(p) || used != now {
		v.write(k0, k1, int32(p), now)
	}
	return int(s.idx[p])
}

// lblcrSetMax bounds a destination's server set (IPVS's is unbounded; it
// grows by one server per overload event). When full, the oldest member
// makes room.
const lblcrSetMax = 6

// lblcrEntry is lblcEntry with a server set, newest member first (IPVS
// adds at the head of the list), and the set's last change.
type lblcrEntry struct {
	seq     atomic.Uint32
	n       atomic.Int32
	k0, k1  atomic.Uint64
	used    atomic.Int64
	lastmod atomic.Int64
	set     [lblcrSetMax]atomic.Int32
}

func (e *lblcrEntry) usedAt() (uint32, int64, uint64, uint64) {
	return e.seq.Load(), e.used.Load(), e.k0.Load(), e.k1.Load()
}

// lblcrSnap is a consistent copy of an entry, read without locking.
type lblcrSnap struct {
	seq     uint32
	n       int
	used    int64
	lastmod int64
	set     [lblcrSetMax]int32
}

func (e *lblcrEntry) read(k0, k1 uint64, out *lblcrSnap) bool {
	s1 := e.seq.Load()
	if s1 == 0 || s1&1 != 0 || e.k0.Load() != k0 || e.k1.Load() != k1 {
		return false
	}
	n := int(e.n.Load())
	if n < 0 || n > lblcrSetMax {
		return false
	}
	out.seq, out.n, out.used, out.lastmod = s1, n, e.used.Load(), e.lastmod.Load()
	for i := range n {
		out.set[i] = e.set[i].Load()
	}
	return e.seq.Load() == s1
}

// write stores snap's set if the entry is still at snap.seq (0 = take it
// over whatever it holds), and advances snap.seq on success.
func (e *lblcrEntry) write(k0, k1 uint64, snap *lblcrSnap, takeOver bool) bool {
	s1 := e.seq.Load()
	if s1&1 != 0 || (!takeOver && s1 != snap.seq) || !e.seq.CompareAndSwap(s1, s1+1) {
		return false
	}
	e.k0.Store(k0)
	e.k1.Store(k1)
	e.n.Store(int32(snap.n))
	for i := range snap.n {
		e.set[i].Store(snap.set[i])
	}
	e.used.Store(snap.used)
	e.lastmod.Store(snap.lastmod)
	e.seq.Store(s1 + 2)
	snap.seq = s1 + 2
	return true
}

// lblcr: ip_vs_lblcr.c.
type lblcrSched struct {
	base
	ents  []lblcrEntry
	shift uint8
	exp   int64
	clock func() int64 // as lblcSched's
}

func buildLBLCR(b base, prev Scheduler) (Scheduler, error) {
	sets, err := cacheSets(b.opts.CacheSize)
	if err != nil {
		return nil, err
	}
	clockOnce.Do(startClock)
	s := &lblcrSched{base: b, ents: make([]lblcrEntry, sets*cacheWays), shift: setShift(sets),
		exp: int64(b.opts.LBLCRExpiration)}
	if s.exp <= 0 {
		s.exp = defaultExpiration
	}
	if p, ok := prev.(*lblcrSched); ok {
		s.clock = p.clock
		pos := s.livePos()
		var snap lblcrSnap
		for i := range p.ents {
			e := &p.ents[i]
			k0, k1 := e.k0.Load(), e.k1.Load()
			if !e.read(k0, k1, &snap) {
				continue
			}
			// Servers gone from the list leave the set, as IPVS's
			// set_min skips dests that are no longer available.
			n := 0
			for _, d := range snap.set[:snap.n] {
				if int(d) < len(p.live) {
					if nd, ok := pos[p.live[d].Conns]; ok {
						snap.set[n] = nd
						n++
					}
				}
			}
			if n == 0 {
				continue
			}
			snap.n = n
			set := s.set(k0, k1)
			set[victim(set, k0, k1)].write(k0, k1, &snap, true)
		}
	}
	return s, nil
}

func (s *lblcrSched) set(k0, k1 uint64) []lblcrEntry {
	i := keySet(k0, k1, s.shift) * cacheWays
	return s.ents[i : i+cacheWays : i+cacheWays]
}

func (s *lblcrSched) Rebuild(dests []Dest) (Scheduler, error) {
	return build(s.name, s.opts, dests, s)
}

// setMin is ip_vs_dest_set_min: the set's weighted least-connection
// member that may take flows, or -1.
func (s *lblcrSched) setMin(snap *lblcrSnap) int32 {
	least := int32(-1)
	var loh, lw int64
	for _, p := range snap.set[:snap.n] {
		sl := &s.slots[p] // packed: fewer lines than the Dests
		if sl.w <= 0 || (sl.upper > 0 && s.over(int(p))) {
			continue
		}
		doh := int64(sl.c.Active.Load())<<8 + int64(sl.c.Inactive.Load())
		if least < 0 || loh*int64(sl.w) > doh*lw {
			least, loh, lw = p, doh, int64(sl.w)
		}
	}
	return least
}

// setMax is ip_vs_dest_set_max: the weighted most-connection member (of
// weight > 0), as an index into snap.set, or -1.
func (s *lblcrSched) setMax(snap *lblcrSnap) int {
	most := -1
	var moh, mw int64
	for i, p := range snap.set[:snap.n] {
		d := &s.live[p]
		if d.Weight <= 0 {
			continue
		}
		doh := d.overhead()
		if most < 0 || moh*int64(d.Weight) < doh*mw {
			most, moh, mw = i, doh, int64(d.Weight)
		}
	}
	return most
}

func (s *lblcrSched) Pick(f *Flow) int {
	k0, k1 := addrKey(&f.Dst)
	now := coarseNow()
	if s.clock != nil {
		now = s.clock()
	}
	// The commonest case of all, written out: the destination is in its
	// set's first entry, with one server, which may take the flow.
	i := int(keySet(k0, k1, s.shift)) * cacheWays
	if i < len(s.ents) {
		e := &s.ents[i]
		s1 := e.seq.Load()
		if s1&1 == 0 && s1 != 0 && e.k0.Load() == k0 && e.k1.Load() == k1 && e.n.Load() == 1 {
			used := e.used.Load()
			if p := e.set[0].Load(); now-used <= s.exp && uint(p) < uint(len(s.slots)) {
				sl := &s.slots[p]
				if sl.w > 0 && sl.upper <= 0 && e.seq.Load() == s1 && !isOverloaded(&s.base, sl) {
					if used != now {
						e.used.Store(now)
					}
					return int(s.idx[p])
				}
			}
		}
	}
	set := s.set(k0, k1)
	if d := s.hit(set, k0, k1, now); d >= 0 {
		return int(s.idx[d])
	}
	return s.pickSet(f, set, k0, k1, now)
}

// hit is Pick's common case, read in place: the destination's entry is
// current, needs no shrinking, and its least loaded member may take the
// flow. It returns that member's live position, or -1 for pickSet to
// decide (which reads the entry again and does everything IPVS does).
func (s *lblcrSched) hit(set []lblcrEntry, k0, k1 uint64, now int64) int32 {
	for i := range set {
		e := &set[i]
		s1 := e.seq.Load()
		if s1 == 0 || s1&1 != 0 || e.k0.Load() != k0 || e.k1.Load() != k1 {
			continue
		}
		n, used := int(e.n.Load()), e.used.Load()
		if n < 1 || n > lblcrSetMax || now-used > s.exp || (n > 1 && now-e.lastmod.Load() > s.exp) {
			return -1
		}
		// setMin over the entry's members, keeping the winner's Active
		// for isOverloaded's test.
		least := int32(-1)
		var loh, lw, la int64
		for j := range n {
			p := e.set[j].Load()
			if uint(p) >= uint(len(s.slots)) {
				return -1
			}
			sl := &s.slots[p]
			if sl.w <= 0 || (sl.upper > 0 && s.over(int(p))) {
				continue
			}
			a := int64(sl.c.Active.Load())
			doh := a<<8 + int64(sl.c.Inactive.Load())
			if least < 0 || loh*int64(sl.w) > doh*lw {
				least, loh, lw, la = p, doh, int64(sl.w), a
			}
		}
		if least < 0 || e.seq.Load() != s1 || (la > lw && s.anyUnder()) {
			return -1
		}
		if used != now {
			e.used.Store(now)
		}
		return least
	}
	return -1
}

// pickSet is the rest of ip_vs_lblcr_schedule: a miss, an expired or
// shrinking entry, or an overloaded set.
func (s *lblcrSched) pickSet(f *Flow, set []lblcrEntry, k0, k1 uint64, now int64) int {
	var snap lblcrSnap
	for i := range set {
		e := &set[i]
		if !e.read(k0, k1, &snap) {
			continue
		}
		if now-snap.used > s.exp {
			break // expired: IPVS's garbage collection would have dropped it
		}
		for _, p := range snap.set[:snap.n] {
			if int(p) >= len(s.live) {
				return s.miss(f, set, k0, k1, now) // cannot happen: positions are remapped on Rebuild
			}
		}
		if snap.used != now {
			e.used.Store(now)
			snap.used = now
		}
		dest := s.setMin(&snap)
		if snap.n > 1 && now-snap.lastmod > s.exp {
			// The set has not changed for a while: drop its most loaded
			// member.
			if m := s.setMax(&snap); m >= 0 {
				copy(snap.set[m:snap.n], snap.set[m+1:snap.n])
				snap.n--
				snap.lastmod = now
				e.write(k0, k1, &snap, false)
			}
		}
		if dest >= 0 && !isOverloaded(&s.base, &s.slots[dest]) {
			return int(s.idx[dest])
		}
		p := wlcPick(&s.base, f)
		if p < 0 {
			return -1
		}
		present := false
		for _, q := range snap.set[:snap.n] {
			present = present || q == int32(p)
		}
		if !present {
			n := min(snap.n, lblcrSetMax-1)
			copy(snap.set[1:n+1], snap.set[:n])
			snap.set[0] = int32(p)
			snap.n = n + 1
			snap.lastmod = now
			e.write(k0, k1, &snap, false)
		}
		return int(s.idx[p])
	}
	return s.miss(f, set, k0, k1, now)
}

func (s *lblcrSched) miss(f *Flow, set []lblcrEntry, k0, k1 uint64, now int64) int {
	p := wlcPick(&s.base, f)
	if p < 0 {
		return -1
	}
	snap := lblcrSnap{n: 1, used: now, lastmod: now}
	snap.set[0] = int32(p)
	set[victim(set, k0, k1)].write(k0, k1, &snap, true)
	return int(s.idx[p])
}
