package dataplane

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/xvs-lb/xvs/scheduler"
)

// The conn table maps a flow (protocol, client addr:port, VIP:port) to the
// real server that serves it, and persistence templates (masked client, VIP,
// port) to the real server their client sticks to.
//
// Layout: buckets of 8 slots; a flow lives in one of two buckets chosen by
// its hash. Per slot, one control word (seqlock sequence, state, 16-bit hash
// tag, expiry) in ctl[] and five key/value words in ent[]. The 8 control
// words of a bucket share one cache line, so a lookup reads one line of
// control words and then one entry. 48 bytes per slot, no Go pointers:
// the GC never scans the table.
//
// Concurrency without locks: every word is read and written atomically.
// A slot's key words change only while its sequence is odd (a writer owns
// it, won by CAS); readers check the sequence before and after reading the
// key. State changes and expiry refreshes are a single CAS on the control
// word, and only the CAS winner adjusts the real server's ConnCounts, so the
// counts stay exact.
type ConnTable struct {
	bk       []bucket
	nbuckets uint64
	seeds    [8]uint64
	start    time.Time
	timeouts [numStates]atomic.Uint32
	dests    []DestCounts // indexed by dest ID; shared with the schedulers
	full     atomic.Uint64
	fullAt   atomic.Uint32 // table clock of the last failed insert (+1)
}

// DestCounts are one real server's conn-table counts.
type DestCounts struct {
	scheduler.ConnCounts
	Persist atomic.Int32 // live persistence templates
}

// bucket keeps a bucket's control words and entries in one 384-byte block:
// a lookup's two memory accesses (control line, then entry) fall in the
// same DRAM page and the adjacent-line prefetcher's reach.
type bucket struct {
	ctl [bucketSlots]atomic.Uint64
	ent [bucketSlots]entry
}

func (t *ConnTable) ctlw(i int) *atomic.Uint64 { return &t.bk[i/bucketSlots].ctl[i%bucketSlots] }
func (t *ConnTable) entp(i int) *entry         { return &t.bk[i/bucketSlots].ent[i%bucketSlots] }

type entry struct {
	// w[0]: proto | kind<<8 | cport<<16 | vport<<32 | dest<<48
	// w[1..2]: client address, w[3..4]: virtual address (little-endian words)
	w [5]uint64
}

// load reads key word j atomically (a plain load on amd64 and arm64).
func (e *entry) load(j int) uint64 { return atomic.LoadUint64(&e.w[j]) }

// store writes key word j of a slot its writer owns (sequence odd). The
// control word's CAS before and release store after order it for readers,
// so it need not be a locked instruction itself: see storeRelaxed.
func (e *entry) store(j int, v uint64) { storeRelaxed(&e.w[j], v) }

const (
	bucketSlots = 8
	keyMask     = 1<<48 - 1
	kindConn    = 0
	kindTmpl    = 1
	kindOut     = 2 // NAT reply index: client addr:port, real server addr:port

	// MaxDests bounds dest IDs (uint16, 0 unused).
	MaxDests = 1 << 16
)

// ctl word: seq 0-7 | state 8-15 | tag 16-31 | expiry 32-63.
func ctlSeq(c uint64) uint8     { return uint8(c) }
func ctlState(c uint64) uint8   { return uint8(c >> 8) }
func ctlTag(c uint64) uint16    { return uint16(c >> 16) }
func ctlExpiry(c uint64) uint32 { return uint32(c >> 32) }
func mkCtl(seq, state uint8, tag uint16, exp uint32) uint64 {
	return uint64(seq) | uint64(state)<<8 | uint64(tag)<<16 | uint64(exp)<<32
}

// connKey is a flow or template key as the table stores it.
type connKey struct {
	w0             uint64 // proto | kind<<8 | cport<<16 | vport<<32
	c0, c1, v0, v1 uint64
}

func makeKey(proto, kind uint8, c0, c1 uint64, cport uint16, v0, v1 uint64, vport uint16) connKey {
	var k connKey
	k.set(proto, kind, c0, c1, cport, v0, v1, vport)
	return k
}

// set fills k field by field. The packet path builds keys with it, not
// with a returned literal: the compiler assembles a literal on the stack
// with 8-byte stores and copies it with 16-byte loads, which the CPU cannot
// forward from those stores (a stall of about 12 cycles, twice per key).
func (k *connKey) set(proto, kind uint8, c0, c1 uint64, cport uint16, v0, v1 uint64, vport uint16) {
	k.w0 = uint64(proto) | uint64(kind)<<8 | uint64(cport)<<16 | uint64(vport)<<32
	k.c0, k.c1, k.v0, k.v1 = c0, c1, v0, v1
}

// NewConnTable returns a table for up to capacity flows and templates. It
// reserves 1/8 more slots than asked so that two-choice placement rarely
// fails near capacity.
func NewConnTable(capacity int) *ConnTable {
	if capacity < bucketSlots {
		capacity = bucketSlots
	}
	nb := (capacity + capacity/8 + bucketSlots - 1) / bucketSlots
	bk, mem := allocBuckets(nb)
	t := &ConnTable{
		bk:       bk,
		nbuckets: uint64(nb),
		start:    time.Now(),
		dests:    make([]DestCounts, MaxDests),
	}
	for i := range t.seeds {
		t.seeds[i] = rand.Uint64() | 1
	}
	for i, v := range defaultTimeouts {
		t.timeouts[i].Store(v)
	}
	if mem != nil {
		runtime.AddCleanup(t, func(m []byte) { _ = unix.Munmap(m) }, mem)
	}
	return t
}

// allocBuckets maps the buckets outside the Go heap, asking for
// transparent huge pages: a lookup touches random cache lines of a table
// that can span gigabytes, and with 4 KiB pages each would also be a TLB
// miss. The mapping is released when the table becomes unreachable. Falls
// back to the Go heap if mmap fails.
func allocBuckets(n int) ([]bucket, []byte) {
	size := n * int(unsafe.Sizeof(bucket{}))
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]bucket, n), nil
	}
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE) // best effort
	return unsafe.Slice((*bucket)(unsafe.Pointer(&mem[0])), n), mem
}

// Slots returns the number of slots; BytesPerSlot their size.
func (t *ConnTable) Slots() int { return len(t.bk) * bucketSlots }

// BytesPerSlot is the memory one slot takes (control word + entry).
const BytesPerSlot = 8 + 40

// Now returns the table clock in seconds. Workers read it once per batch.
func (t *ConnTable) Now() uint32 { return uint32(time.Since(t.start)/time.Second) + 1 }

// Counts returns the counters of dest ID id.
func (t *ConnTable) Counts(id uint16) *DestCounts { return &t.dests[id] }

// FullDrops returns how many inserts failed because both buckets were full.
func (t *ConnTable) FullDrops() uint64 { return t.full.Load() }

// recentlyFull reports whether an insert failed in the last 60 s: then TCP
// packets without an entry are scheduled per packet rather than dropped,
// since their flow may simply not have found room.
func (t *ConnTable) recentlyFull(now uint32) bool {
	f := t.fullAt.Load()
	return f != 0 && now-f < 60
}

// SetTimeouts changes the timeouts of new transitions (ipvsadm --set).
func (t *ConnTable) SetTimeouts(to Timeouts) {
	if to.TCP > 0 {
		t.timeouts[StateEstablished].Store(durSeconds(to.TCP))
	}
	if to.TCPFin > 0 {
		t.timeouts[StateFinWait].Store(durSeconds(to.TCPFin))
	}
	if to.UDP > 0 {
		t.timeouts[StateUDP].Store(durSeconds(to.UDP))
	}
}

// Timeouts returns the current ipvsadm --set timeouts.
func (t *ConnTable) Timeouts() Timeouts {
	return Timeouts{
		TCP:    time.Duration(t.timeouts[StateEstablished].Load()) * time.Second,
		TCPFin: time.Duration(t.timeouts[StateFinWait].Load()) * time.Second,
		UDP:    time.Duration(t.timeouts[StateUDP].Load()) * time.Second,
	}
}

func durSeconds(d time.Duration) uint32 {
	s := (d + time.Second - 1) / time.Second
	if s > 1<<31 {
		s = 1 << 31
	}
	return uint32(s)
}

func (t *ConnTable) timeout(state uint8) uint32 { return t.timeouts[state].Load() }

// hash mixes the key words (seeded per table against hash flooding).
//
// Three independent 64×64→128-bit multiplies folded (wyhash's "mum") and one
// more to combine them: the first three run in parallel, so the hash costs
// about two multiply latencies instead of five chained ones.
func (t *ConnTable) hash(k *connKey) uint64 {
	s := &t.seeds
	a := mum(k.w0^s[0], k.c0^s[1])
	b := mum(k.c1^s[2], k.v0^s[3])
	c := mum(k.v1^s[4], s[5])
	return mum(a^s[6], b^c^s[7])
}

func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// buckets returns the two candidate buckets' first slot and the tag.
func (t *ConnTable) buckets(h uint64) (b1, b2 int, tag uint16) {
	b1 = int(((h & 0xFFFFFFFF) * t.nbuckets) >> 32)
	b2 = int(((h >> 32) * t.nbuckets) >> 32)
	if b2 == b1 {
		b2++
		if uint64(b2) == t.nbuckets {
			b2 = 0
		}
	}
	tag = uint16((h*0xFF51AFD7ED558CCD)>>48) | 1 // never 0: a zeroed slot never matches
	return b1 * bucketSlots, b2 * bucketSlots, tag
}

// lookup returns the slot index and control word of k's live entry, or -1.
// An entry found expired is reaped on the way (lazy expiry).
func (t *ConnTable) lookup(k *connKey, now uint32) (int, uint64, uint16) {
	return t.lookupHashed(k, t.hash(k), now)
}

// lookupHashed is lookup with the key's hash already computed.
func (t *ConnTable) lookupHashed(k *connKey, h uint64, now uint32) (int, uint64, uint16) {
	b1, b2, tag := t.buckets(h)
	// Touch the second bucket's control line now: an entry lives in either
	// bucket (inserts pick the emptier), so starting both cache misses
	// together saves a serial miss on half the hits and on every miss.
	_ = t.bk[b2/bucketSlots].ctl[0].Load()
	if i, c, d := t.scan(b1, k, tag, now); i >= 0 {
		return i, c, d
	}
	return t.scan(b2, k, tag, now)
}

// slotFor looks at the first candidate bucket of hash h only (its control
// line is the one processBatch prefetched): the slot whose tag matches, or
// none (hit -1) and then the slots there an insert at now may take (free
// or expired, as usable computes them), and the second bucket's first
// slot, whose control line the caller prefetches for the lookup (and
// insert) that will need it. Inserts fill the first bucket while it is at
// least half free, so in a table run below capacity most entries are found
// there.
func (t *ConnTable) slotFor(h uint64, now uint32) (hit, free int, usable uint32, second int) {
	b1, b2, tag := t.buckets(h)
	ctl := &t.bk[b1/bucketSlots].ctl
	for j := range ctl {
		if ctlTag(ctl[j].Load()) == tag {
			return b1 + j, -1, 0, -1
		}
	}
	free = -1
	if usable = t.usable(b1, now); usable != 0 {
		free = b1 + bits.TrailingZeros32(usable)
	}
	return -1, free, usable, b2
}

// probe checks whether slot i holds k: found reports a definite answer
// (k's live entry, or k's entry found expired and reaped: i < 0); !found
// means the slot holds something else and a full lookup must decide.
func (t *ConnTable) probe(i int, k *connKey, now uint32) (int, uint64, uint16, bool) {
	ctl := t.ctlw(i)
	c := ctl.Load()
	if ctlState(c) == stFree || ctlSeq(c)&1 != 0 {
		return -1, 0, 0, false
	}
	e := t.entp(i)
	w0 := e.load(0)
	if w0&keyMask != k.w0 || e.load(1) != k.c0 || e.load(2) != k.c1 ||
		e.load(3) != k.v0 || e.load(4) != k.v1 {
		return -1, 0, 0, false
	}
	c2 := ctl.Load()
	if ctlSeq(c2) != ctlSeq(c) || ctlState(c2) == stFree {
		return -1, 0, 0, false
	}
	if int32(ctlExpiry(c2)-now) < 0 {
		t.reap(i, c2)
		return -1, 0, 0, true
	}
	return i, c2, uint16(w0 >> 48), true
}

func (t *ConnTable) destOf(i int) uint16 { return uint16(t.entp(i).load(0) >> 48) }

func (t *ConnTable) scan(b int, k *connKey, tag uint16, now uint32) (int, uint64, uint16) {
	bk := &t.bk[b/bucketSlots]
	ctl := &bk.ctl
	// A loop that stops at the first match, not a branchless scan of all
	// eight words: tables run far below capacity, so a flow's entry is
	// nearly always in its bucket's first slot or two, and this loop's
	// branches then predict well.
	for j := range ctl {
		c := ctl[j].Load()
		if ctlTag(c) != tag || ctlState(c) == stFree || ctlSeq(c)&1 != 0 {
			continue
		}
		e := &bk.ent[j]
		w0 := e.load(0)
		if w0&keyMask != k.w0 || e.load(1) != k.c0 || e.load(2) != k.c1 ||
			e.load(3) != k.v0 || e.load(4) != k.v1 {
			continue
		}
		c2 := ctl[j].Load()
		if ctlSeq(c2) != ctlSeq(c) || ctlState(c2) == stFree {
			continue // rewritten while we read it
		}
		if int32(ctlExpiry(c2)-now) < 0 {
			t.reap(b+j, c2)
			return -1, 0, 0
		}
		return b + j, c2, uint16(w0 >> 48)
	}
	return -1, 0, 0
}

// count adds delta to the count that state s of a conn to dest d is part
// of, through ConnCounts' methods so a least-connection scheduler's index
// follows.
func (t *ConnTable) count(d uint16, s uint8, delta int32) {
	dc := &t.dests[d]
	switch s {
	case StateEstablished:
		dc.AddActive(delta)
	case StateTemplate:
		dc.Persist.Add(delta)
	case stNATOut, stNATOutEst:
		// An index entry: its flow is counted by the forward entry.
	default:
		dc.AddInactive(delta)
	}
}

// move accounts a conn of dest d going from state os to ns.
func (t *ConnTable) move(d uint16, os, ns uint8) {
	wasActive, isActive := os == StateEstablished, ns == StateEstablished
	switch {
	case wasActive && !isActive:
		t.dests[d].Add(-1, 1)
	case !wasActive && isActive:
		t.dests[d].Add(1, -1)
	}
}

// reap frees slot i if its control word is still c. It reports whether this
// call freed it.
func (t *ConnTable) reap(i int, c uint64) bool {
	locked := mkCtl(ctlSeq(c)+1, ctlState(c), 0, 0)
	if !t.ctlw(i).CompareAndSwap(c, locked) {
		return false
	}
	d := t.destOf(i)
	t.count(d, ctlState(c), -1)
	storeRelease(t.ctlw(i), mkCtl(ctlSeq(c)+2, stFree, 0, 0))
	return true
}

// touch moves the entry at slot i (control word c) to state ns and pushes its
// expiry to now + timeout(ns); it reports whether it changed the entry (at
// most about once a second per flow when only the expiry moves). Losing a
// race to another worker is harmless: that worker applied its own packet.
func (t *ConnTable) touch(i int, c uint64, d uint16, ns uint8, now uint32) bool {
	return t.set(i, c, d, ns, now+t.timeout(ns))
}

// set moves the entry at slot i (control word c, dest d) to state ns
// expiring at exp, keeping d's counts exact; false if nothing changed or
// another writer changed the slot first.
func (t *ConnTable) set(i int, c uint64, d uint16, ns uint8, exp uint32) bool {
	if ns == ctlState(c) && exp == ctlExpiry(c) {
		return false
	}
	nc := mkCtl(ctlSeq(c), ns, ctlTag(c), exp)
	if !t.ctlw(i).CompareAndSwap(c, nc) {
		return false
	}
	if os := ctlState(c); os != ns {
		t.move(d, os, ns)
	}
	return true
}

// refresh pushes a template's expiry to now+ttl.
func (t *ConnTable) refresh(i int, c uint64, ttl uint32, now uint32) {
	exp := now + ttl
	if exp == ctlExpiry(c) {
		return
	}
	t.ctlw(i).CompareAndSwap(c, mkCtl(ctlSeq(c), ctlState(c), ctlTag(c), exp))
}

// insert adds k → dest in state s expiring at exp. It fails (counted) when
// both candidate buckets hold only live entries.
func (t *ConnTable) insert(k *connKey, dest uint16, s uint8, exp, now uint32) bool {
	return t.insertHashed(k, t.hash(k), dest, s, exp, now)
}

// insertHashed is insert with the key's hash already computed.
func (t *ConnTable) insertHashed(k *connKey, h uint64, dest uint16, s uint8, exp, now uint32) bool {
	b1, _, _ := t.buckets(h)
	return t.insertUsable(k, h, t.usable(b1, now), dest, s, exp, now)
}

// insertUsable is insertHashed with the first bucket's usable mask m1
// already computed (slotFor's; place checks each slot again, so a mask
// gone stale costs a retry, not a wrong insert).
func (t *ConnTable) insertUsable(k *connKey, h uint64, m1 uint32, dest uint16, s uint8, exp, now uint32) bool {
	b1, b2, tag := t.buckets(h)
	// Two choices: the emptier bucket first, which keeps buckets even and
	// lets the table fill close to its slot count. A first bucket at least
	// half free is taken without looking at the second: a table far below
	// capacity (the usual case) then pays for one scan, not two, and its
	// entries sit in the bucket lookups try first.
	if bits.OnesCount32(m1) >= bucketSlots/2 && t.place(b1, m1, k, dest, s, tag, exp, now) {
		return true
	}
	m1, m2 := t.usable(b1, now), t.usable(b2, now)
	if bits.OnesCount32(m2) > bits.OnesCount32(m1) {
		b1, b2, m1, m2 = b2, b1, m2, m1
	}
	if t.place(b1, m1, k, dest, s, tag, exp, now) || t.place(b2, m2, k, dest, s, tag, exp, now) {
		return true
	}
	t.full.Add(1)
	t.fullAt.Store(now)
	return false
}

// usable returns a bit per slot of the bucket at slot b that an insert may
// take: free, or expired, and not being written. It is computed without a
// branch per slot: whether a slot is free is random, so branches on it
// mispredict about half the time, which cost more than the whole scan.
func (t *ConnTable) usable(b int, now uint32) uint32 {
	ctl := &t.bk[b/bucketSlots].ctl
	var m uint32
	for j := range ctl {
		c := ctl[j].Load()
		even := uint32(^c) & 1
		free := (uint32(ctlState(c)) - 1) >> 31 // state 0 (stFree)
		expired := uint32(int32(ctlExpiry(c)-now)) >> 31
		m |= (even & (free | expired)) << j
	}
	return m
}

// place puts k into one of the bucket's slots in mask m (from usable),
// lowest first; it fails when another writer took them all meanwhile.
func (t *ConnTable) place(b int, m uint32, k *connKey, dest uint16, s uint8, tag uint16, exp, now uint32) bool {
	for ; m != 0; m &= m - 1 {
		i := b + bits.TrailingZeros32(m)
		c := t.ctlw(i).Load()
		st := ctlState(c)
		if ctlSeq(c)&1 != 0 || (st != stFree && int32(ctlExpiry(c)-now) >= 0) {
			continue // changed since usable looked
		}
		if !t.ctlw(i).CompareAndSwap(c, mkCtl(ctlSeq(c)+1, st, 0, 0)) {
			continue
		}
		if st != stFree { // an expired entry nobody reaped yet
			t.count(t.destOf(i), st, -1)
		}
		e := t.entp(i)
		e.store(0, k.w0|uint64(dest)<<48)
		e.store(1, k.c0)
		e.store(2, k.c1)
		e.store(3, k.v0)
		e.store(4, k.v1)
		t.count(dest, s, 1)
		storeRelease(t.ctlw(i), mkCtl(ctlSeq(c)+2, s, tag, exp))
		return true
	}
	return false
}

// Sweep reaps expired entries, and entries whose real server is gone
// (gone(dest) true), in slots [from, from+n); it returns where to continue.
// The sweeper goroutine calls it a slice at a time, so expiry never walks
// the whole table at once and takes no lock.
func (t *ConnTable) Sweep(from, n int, now uint32, gone func(uint16) bool) (next, reaped int) {
	slots := t.Slots()
	if from >= slots {
		from = 0
	}
	end := min(from+n, slots)
	for i := from; i < end; i++ {
		c := t.ctlw(i).Load()
		if ctlState(c) == stFree || ctlSeq(c)&1 != 0 {
			continue
		}
		if int32(ctlExpiry(c)-now) < 0 || (gone != nil && gone(t.destOf(i))) {
			if t.reap(i, c) {
				reaped++
			}
		}
	}
	if end == slots {
		end = 0
	}
	return end, reaped
}

// ConnInfo is one conn-table entry as xvsadm -Lnc and the sync daemon see it.
type ConnInfo struct {
	Proto    uint8
	Template bool
	Client   netip.AddrPort
	Virtual  netip.AddrPort
	DestID   uint16
	State    uint8
	Expires  time.Duration // from now
}

// StateName returns the entry's state as ipvsadm prints it.
func (c ConnInfo) StateName() string { return StateName(c.State) }

// Conns calls f for each live entry until f returns false. It reads the
// table like a worker does (no lock) and may miss or repeat entries that
// change while it walks.
func (t *ConnTable) Conns(f func(ConnInfo) bool) {
	now := t.Now()
	for i := range t.Slots() {
		c := t.ctlw(i).Load()
		if ctlState(c) == stFree || ctlSeq(c)&1 != 0 || int32(ctlExpiry(c)-now) < 0 {
			continue
		}
		e := t.entp(i)
		w0 := e.load(0)
		k := connKey{w0: w0 & keyMask, c0: e.load(1), c1: e.load(2), v0: e.load(3), v1: e.load(4)}
		c2 := t.ctlw(i).Load()
		if ctlSeq(c2) != ctlSeq(c) || ctlState(c2) == stFree {
			continue
		}
		if uint8(w0>>8) == kindOut {
			continue // NAT reply index, listed through its forward entry
		}
		ci := ConnInfo{
			Proto:    uint8(w0),
			Template: uint8(w0>>8) == kindTmpl,
			Client:   netip.AddrPortFrom(wordsAddr(k.c0, k.c1), uint16(w0>>16)),
			Virtual:  netip.AddrPortFrom(wordsAddr(k.v0, k.v1), uint16(w0>>32)),
			DestID:   uint16(w0 >> 48),
			State:    ctlState(c2),
			Expires:  time.Duration(ctlExpiry(c2)-now) * time.Second,
		}
		if !f(ci) {
			return
		}
	}
}

// addrWords converts an address to the table's two key words.
func addrWords(a netip.Addr) (uint64, uint64) {
	b := a.As16()
	return binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])
}

func wordsAddr(w0, w1 uint64) netip.Addr {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], w0)
	binary.LittleEndian.PutUint64(b[8:], w1)
	return netip.AddrFrom16(b).Unmap()
}
