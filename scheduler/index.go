package scheduler

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// The least-connection index. lc, wlc, sed, nq, lblc and lblcr keep a
// tournament tree over their live servers whose root is the server IPVS's
// list walk would pick, so Pick reads one word instead of every server's
// counts. The tree is kept current by the count updates themselves: the
// ConnCounts methods (Add, AddActive, AddInactive, Set) replay the
// server's path to the root. Nothing is locked; the tree converges to the
// exact answer once counts stop changing (see refresh).
//
// Each node is one word: the key the kind compares (overhead, or
// Active+1) above the winner's live position, so a node is compared
// without looking anywhere else. Nodes have ixArity children, one cache
// line of words: a change costs one store per level, and a level costs a
// store with a full fence (atomic stores are sequentially consistent),
// which is what an update pays for.
//
// Direct writes to the Active/Inactive atomics do not reach the tree at
// once. Pick checks the winner's counts against the root (and repairs its
// path if they differ), and each pick re-checks one other server chosen by
// the flow's source on one pick in auditEvery, so a direct write shows
// after about auditEvery*n picks.

// Index kinds: which key the tree orders servers by.
const (
	ixNone = iota
	ixLC   // overhead
	ixWLC  // overhead/weight
	ixSED  // (active+1)/weight
	ixNQ   // idle first, else (active+1)/weight
)

// indexKinds maps the schedulers that use an index to its kind.
var indexKinds = map[string]uint8{
	"lc": ixLC, "wlc": ixWLC, "sed": ixSED, "nq": ixNQ, "lblc": ixWLC, "lblcr": ixWLC,
}

const (
	lineSize = 64           // bytes of a cache line
	ixArity  = lineSize / 8 // children per node: one line of words
	posBits  = 24           // live positions: newBase allows at most 1<<24 dests
	posMask  = 1<<posBits - 1
	keyMax   = 1<<(64-posBits) - 2 // saturated key; one below "empty"
	ixEmpty  = ^uint64(0)          // no server of the subtree may take a flow
	nqIdle   = 0                   // nq's key of a server with no active conn
)

func wordPos(v uint64) int32  { return int32(v & posMask) }
func wordKey(v uint64) uint64 { return v >> posBits }

// indexMin is the fewest live servers for which a scheduler keeps an
// index. Below it the list walk costs less than what the index adds to
// every count update (a fenced store per changed tree level, on lines
// that parallel workers share), counting a pick and three updates per
// connection: in BenchmarkConnLife the two meet near 64 servers with one
// worker and between 128 and 256 with two. A variable so tests can index
// small services.
var indexMin = defaultIndexMin

const defaultIndexMin = 128

// leafRef is what a ConnCounts points to while an index tracks it.
type leafRef struct {
	ix  *index
	pos int32
}

type index struct {
	kind  uint8
	under bool
	n     int // leaves in use (live servers)
	elig  int // leaves of weight > 0
	leaf0 int // node of leaf 0

	// node is the tree: node[0] the root, the children of node x at
	// ixArity*x+1 ... ixArity*x+ixArity (node[1] starts a line, so every
	// child block is one line), the leaves on the last level.
	node  []atomic.Uint64
	w     []int64 // weights, by live position
	slots []slot
	live  []Dest

	// lblc/lblcr's is_overloaded asks whether any server has
	// Active*2 < weight: underOf marks those, nUnder (at the end, off the
	// line every pick reads) counts them.
	underOf []atomic.Bool

	refs []leafRef
	// lost: some server's updates now go elsewhere (a scheduler that
	// claimed the same counts later, or the same counts listed twice);
	// Pick walks the list from then on.
	lost  atomic.Bool
	state atomic.Uint32 // unclaimed, claiming, claimed
	gen   uint64        // build order (indexGen)
	all   []Dest        // the scheduler's dests: claim hooks the Up ones
	prev  []*leafRef    // by dest: the hook claim replaced

	_      [lineSize]byte
	nUnder atomic.Int32
}

// attach gives b an index of kind when it has enough live servers. Other
// schedulers (and small services) release any index's hold on their
// counts at once, so that a scheduler replaced by one of another kind
// stops costing count updates anything.
func (b *base) attach(kind uint8, under bool) {
	if kind != ixNone && len(b.slots) >= indexMin {
		b.ix = newIndex(kind, under, b)
		return
	}
	for i := range b.all {
		if old := b.all[i].Conns.hook.Swap(nil); old != nil {
			old.ix.lost.Store(true)
		}
	}
}

// Claim states: an index takes over its servers' counts on its first
// pick, not when it is built, so that a scheduler built but never
// published (a reload that failed further on) does not take them from the
// one still serving.
const (
	unclaimed = iota
	claiming
	claimed
)

// ready reports whether the index can answer, claiming the counts on the
// first call. While one caller claims, the others walk the list.
func (ix *index) ready() bool {
	if ix == nil || ix.lost.Load() {
		return false
	}
	if st := ix.state.Load(); st != claimed {
		if st != unclaimed || !ix.state.CompareAndSwap(unclaimed, claiming) {
			return false
		}
		if !ix.claim() {
			ix.lost.Store(true)
			return false
		}
		ix.state.Store(claimed)
	}
	return true
}

// indexGen orders indexes by build: a claim never takes counts from an
// index built later (a worker still picking from an old snapshot must not
// take them from the new one).
var indexGen atomic.Uint64

// claim points the servers' ConnCounts at ix (and every other dest's at
// nothing), then reads the counts into the tree. The indexes holding them
// before lose their index: their picks fall back to the list walk, still
// exact. If a newer index holds any of them, claim gives back what it
// took and fails.
func (ix *index) claim() bool {
	live := 0
	for i := range ix.all {
		c := ix.all[i].Conns
		var ref *leafRef
		if ix.all[i].Up {
			ref = &ix.refs[live]
			live++
		}
		for {
			old := c.hook.Load()
			if old != nil && old.ix.gen > ix.gen {
				ix.giveBack(i)
				return false
			}
			if c.hook.CompareAndSwap(old, ref) {
				ix.prev[i] = old
				break
			}
		}
	}
	for i, old := range ix.prev {
		if old != nil {
			old.ix.lost.Store(true) // also ix itself if the counts repeat
			ix.prev[i] = nil        // keep no chain of old schedulers alive
		}
	}
	// Hooks first, then the counts: an update racing with the claim
	// either happened before the reads below or refreshes the tree.
	for p := range ix.n {
		ix.refreshLeaf(p)
	}
	for x := ix.leaf0 - 1; x >= 0; x-- {
		ix.refreshNode(x)
	}
	return true
}

// giveBack undoes a claim's first k hook swaps. Updates that came to ix
// meanwhile are replayed into their owner's tree.
func (ix *index) giveBack(k int) {
	live := 0
	for i := range k {
		c := ix.all[i].Conns
		var ref *leafRef
		if ix.all[i].Up {
			ref = &ix.refs[live]
			live++
		}
		// A failed swap: someone newer took it since; theirs now.
		if old := ix.prev[i]; c.hook.CompareAndSwap(ref, old) && old != nil {
			old.ix.refresh(int(old.pos))
		}
	}
}

func newIndex(kind uint8, under bool, b *base) *index {
	n := len(b.slots)
	// Level l+1 starts at ixArity*(start of level l) + 1.
	start, width := 0, 1
	for width < n {
		start, width = ixArity*start+1, width*ixArity
	}
	ix := &index{
		kind: kind, n: n, under: under, leaf0: start,
		node:  alignedWords(start + width),
		w:     make([]int64, n),
		slots: b.slots, live: b.live, all: b.all,
		gen:  indexGen.Add(1),
		prev: make([]*leafRef, len(b.all)),
		refs: make([]leafRef, n),
	}
	if under {
		ix.underOf = make([]atomic.Bool, n)
	}
	for i := range ix.node {
		ix.node[i].Store(ixEmpty)
	}
	for i := range n {
		ix.refs[i] = leafRef{ix: ix, pos: int32(i)}
		ix.w[i] = int64(b.slots[i].w)
		if b.slots[i].w > 0 {
			ix.elig++
		}
	}
	return ix
}

// alignedWords returns n words whose index 1 starts a cache line, so that
// each child block (ixArity words from a multiple of ixArity, plus one) is
// one line.
// The root's line holds only words of s, none of another object's.
func alignedWords(n int) []atomic.Uint64 {
	s := make([]atomic.Uint64, n+2*ixArity)
	off := ixArity - 1
	for uintptr(unsafe.Pointer(&s[off+1]))%lineSize != 0 {
		off++
	}
	return s[off : off+n : off+n]
}

// keyOf is the part of the counts a and i the kind compares, saturated
// into the key's bits (negative counts, which the conn table never
// produces, read as zero).
func (ix *index) keyOf(a, i int32) uint64 {
	a, i = max(a, 0), max(i, 0)
	switch ix.kind {
	case ixSED:
		return uint64(a) + 1
	case ixNQ:
		if a == 0 {
			return nqIdle
		}
		return uint64(a) + 1
	}
	return min(uint64(a)<<8+uint64(i), keyMax)
}

// beats reports whether node word r, later in the list, wins over l:
// it must be strictly better.
func (ix *index) beats(r, l uint64) bool {
	if r == ixEmpty {
		return false
	}
	if l == ixEmpty {
		return true
	}
	kl, kr := wordKey(l), wordKey(r)
	switch ix.kind {
	case ixLC:
		return kr < kl
	case ixNQ:
		if kl == nqIdle { // the first idle server wins
			return false
		}
		if kr == nqIdle {
			return true
		}
	}
	// IPVS: loh * weight(dest) > doh * weight(least), unsigned 64-bit.
	return kl*uint64(ix.w[wordPos(r)]) > kr*uint64(ix.w[wordPos(l)])
}

// best is the winner among a node's children, in list order.
func (ix *index) best(kids *[ixArity]uint64) uint64 {
	w := ixEmpty
	switch ix.kind {
	case ixLC:
		// Key, then position: the least word is lc's answer.
		for _, v := range kids {
			w = min(w, v)
		}
	case ixNQ:
		for _, v := range kids {
			if ix.beats(v, w) {
				w = v
			}
		}
	default:
		// wlc, sed: IPVS's loh*weight(dest) > doh*weight(least). The
		// empty word loses: its key times any weight is compared as if
		// infinite by the first test.
		var kw, ww uint64
		for _, v := range kids {
			if v == ixEmpty {
				continue
			}
			kv, wv := wordKey(v), uint64(ix.w[wordPos(v)])
			if w == ixEmpty || kw*wv > kv*ww {
				w, kw, ww = v, kv, wv
			}
		}
	}
	return w
}

// leafWord is leaf p's node for counts a, i: its key and position, or
// ixEmpty when the server may not take flows (quiesced, or overloaded by
// its thresholds, whose mark this evaluates as IPVS does on each change).
func (ix *index) leafWord(p int, a, i int32) uint64 {
	sl := &ix.slots[p]
	if sl.w <= 0 || (sl.upper > 0 && ix.live[p].overloadSlow()) {
		return ixEmpty
	}
	return ix.keyOf(a, i)<<posBits | uint64(p)
}

// refreshLeaf reads server p's counts into its leaf and reports whether
// the leaf changed. Store, then re-read: a concurrent update whose value
// this call overwrote is seen and redone.
func (ix *index) refreshLeaf(p int) bool {
	c := ix.slots[p].c
	leaf := &ix.node[ix.leaf0+p]
	changed := false
	for {
		a, i := c.Active.Load(), c.Inactive.Load()
		if v := ix.leafWord(p, a, i); leaf.Load() != v {
			leaf.Store(v)
			changed = true
		}
		if ix.under {
			u := int64(a)*2 < ix.w[p]
			if f := &ix.underOf[p]; f.Load() != u && f.CompareAndSwap(!u, u) {
				if u {
					ix.nUnder.Add(1)
				} else {
					ix.nUnder.Add(-1)
				}
			}
		}
		if c.Active.Load() == a && c.Inactive.Load() == i {
			return changed
		}
	}
}

// refreshNode recomputes node x from its children, storing only a change
// (the upper nodes are read by every pick; even an unchanged store would
// take their cache line away), and reports whether it changed the node.
func (ix *index) refreshNode(x int) bool {
	kids := (*[ixArity]atomic.Uint64)(ix.node[ixArity*x+1:])
	nd := &ix.node[x]
	changed := false
	for {
		var seen [ixArity]uint64
		for j := range kids {
			seen[j] = kids[j].Load()
		}
		w := ix.best(&seen)
		if nd.Load() != w {
			nd.Store(w)
			changed = true
		}
		// Re-read what w was computed from; if any of it moved, a
		// concurrent update may have been overwritten: compute again.
		same := true
		for j := range kids {
			same = same && kids[j].Load() == seen[j]
		}
		if same {
			return changed
		}
	}
}

// refresh brings leaf p and its path up to date after p's counts changed.
//
// Why this converges without locks: every node's value is recomputed from
// its inputs (its children's words), stored, and the inputs re-read; a
// change seen there is recomputed. Whoever changes a node refreshes its
// parent afterwards, so the last store to every node was computed from
// its children's final words. The walk stops at a node it did not change:
// the parent's inputs are then as they were.
func (ix *index) refresh(p int) {
	if ix.lost.Load() || !ix.refreshLeaf(p) {
		return
	}
	for x := ix.leaf0 + p; x > 0; {
		x = (x - 1) / ixArity
		if !ix.refreshNode(x) {
			return
		}
	}
}

// pick returns the index's choice as a live position (-1 = none may take
// the flow), or ok = false when the caller must walk the list: the index
// was lost, or no server is available by its thresholds (the walk then
// re-evaluates them as IPVS would).
//
// The common case (claimed, and the root's server still has the counts the
// root says) is written out here without calls; pickSlow has the rest.
func (ix *index) pick(f *Flow) (pos int32, ok bool) {
	if ix == nil || ix.lost.Load() || ix.state.Load() != claimed {
		return ix.pickSlow(f)
	}
	v := ix.node[0].Load()
	p := wordPos(v)
	if v == ixEmpty || int(p) >= len(ix.slots) {
		return ix.pickSlow(f)
	}
	sl := &ix.slots[p]
	if sl.upper > 0 || ix.keyOf(sl.c.Active.Load(), sl.c.Inactive.Load()) != wordKey(v) {
		return ix.pickSlow(f)
	}
	if x := auditHash(f); x>>(64-auditBits) == 0 {
		ix.audit(x)
	}
	return p, true
}

func (ix *index) pickSlow(f *Flow) (pos int32, ok bool) {
	if !ix.ready() {
		return 0, false
	}
	if ix.elig == 0 {
		return -1, true
	}
	v := ix.node[0].Load()
	if v == ixEmpty {
		return 0, false
	}
	if p := int(wordPos(v)); ix.stale(p, v) {
		// Counts written directly, or an update still on its way up:
		// bring the winner's path up to date and read the root again.
		ix.refresh(p)
		if v = ix.node[0].Load(); v == ixEmpty {
			return 0, false
		}
	}
	ix.check(f)
	return wordPos(v), true
}

// stale reports whether word v no longer says what server p's counts do.
// A threshold also depends on counts the key leaves out (Inactive, under
// sed and nq), so such a server is always re-evaluated.
func (ix *index) stale(p int, v uint64) bool {
	sl := &ix.slots[p]
	return sl.upper > 0 || ix.keyOf(sl.c.Active.Load(), sl.c.Inactive.Load()) != wordKey(v)
}

// check compares one more server's counts with the tree on one pick in
// auditEvery, so that counts written directly reach it. Which picks and
// which server come from the flow's source: a check writes nothing (a
// cursor would be one more contended store per pick), and reading a
// random server's counts is a likely cache miss, too dear for every pick.
// A given server is checked once in about auditEvery*n picks.
func (ix *index) check(f *Flow) {
	if x := auditHash(f); x>>(64-auditBits) == 0 {
		ix.audit(x)
	}
}

// auditHash mixes the flow's source into the word check draws from.
func auditHash(f *Flow) uint64 {
	return (uint64(binary.LittleEndian.Uint32(f.Src[12:])) | uint64(f.SrcPort)<<32 | uint64(f.Shard)<<48) * 0x9e3779b97f4a7c15
}

// audit re-checks the server that check's draw x names.
func (ix *index) audit(x uint64) {
	p := int(uint64(uint32(x>>16)) * uint64(ix.n) >> 32)
	if v := ix.node[ix.leaf0+p].Load(); v != ixEmpty || ix.slots[p].upper > 0 {
		if ix.stale(p, v) {
			ix.refresh(p)
		}
	}
}

const (
	auditBits  = 4
	auditEvery = 1 << auditBits
)

// anyUnder reports whether some server has fewer active connections than
// half its weight (lblc/lblcr's is_overloaded asks), ok = false when the
// index cannot tell.
func (ix *index) anyUnder() (under, ok bool) {
	if !ix.ready() {
		return false, false
	}
	return ix.nUnder.Load() > 0, true
}
