// Package scheduler owns the LVS scheduling algorithms: given the real
// servers of one virtual service, pick the one that takes a new flow.
//
// The packet path calls Pick once per new flow. Everything Pick reads is
// either immutable (built by New/Rebuild off the packet path) or an atomic,
// so Pick takes no lock and allocates nothing. Rebuild returns a new
// scheduler for changed weights, health or membership and carries runtime
// state (cursors, caches) over; the caller publishes it with an
// atomic.Pointer swap.
//
// # Rules
//
// Names are spelled as ipvsadm (-s) and keepalived (lb_algo/lvs_sched) spell
// them. The rules follow Linux IPVS (net/netfilter/ipvs/ip_vs_*.c). In all
// of them a server that is not Up (failed health check) is treated as
// removed from the service, as keepalived removes it from IPVS; a server of
// Weight 0 stays in the list (and in hash tables) but is quiesced: never
// picked for a new flow. "Overhead" is IPVS's (Active<<8)+Inactive. Ties go
// to the server listed first, as IPVS's list walks give them. Pick returns
// -1 when no server may take the flow.
//
//   - rr: the next server after the last one picked, in list order.
//   - wrr: IPVS's interleaved sequence: with di the gcd of the weights and
//     mw the largest weight, pass cw = mw-(di-1), mw-(di-1)-di, ... down to
//     >0 takes, in list order, every server with weight >= cw. Weights 4,3,2
//     give a, a b, a b c, a b c: interleaved, not bursts.
//   - lc: least overhead.
//   - wlc: least overhead/weight, compared as products overhead1*weight2 >
//     overhead2*weight1 (no division), starting from the first available.
//   - sed: as wlc with overhead Active+1 (shortest expected delay).
//   - nq: the first available server with no active connection, else sed.
//   - lblc: a destination-IP cache; the cached server is kept unless it is
//     quiesced or "overloaded" in lblc's sense (Active > weight while some
//     server has Active*2 < weight); otherwise wlc picks and is cached.
//     Entries unused for LBLCExpiration are forgotten. The cache holds
//     CacheSize entries (IPVS's table grows instead, collecting entries
//     unused for 6 minutes once past that size); a new destination takes
//     the least recently used entry of its 4-entry set.
//   - lblcr: as lblc with a set of servers per destination IP: the set's
//     weighted least-connection member is used; on lblc overload wlc picks a
//     server that joins the set; once the set has not changed for
//     LBLCRExpiration, its most loaded member is dropped (size > 1). A set
//     holds at most 6 servers (IPVS's is unbounded), the oldest making room.
//   - dh: destination-IP hash over a 256-bucket table filled with the
//     servers in turn (IPVS's dh ignores weights, except that a quiesced or
//     overloaded server's buckets get no flows).
//   - sh: source-IP hash (plus source port with sh-port) over a 256-bucket
//     table in which each server fills weight consecutive buckets in turn
//     (so, as in IPVS, weights summing past 256 leave the last servers
//     without buckets); with sh-fallback an unavailable bucket's flow probes
//     the following hashes, as IPVS does.
//   - mh: Maglev hashing of the source IP (plus port with mh-port) over a
//     prime lookup table (MHTableSize, default 65537; the kernel's build
//     default is 4093) populated by per-server permutations seeded by
//     Addr/Port, each server taking turns in proportion to its weight
//     (weight/gcd, scaled so a round fills at most 1/64 of the table, where
//     IPVS shifts to at most 63 turns); a
//     quiesced server keeps its entries (its last weight, as IPVS's
//     last_weight) so quiescing does not reshuffle other flows; mh-fallback
//     as sh-fallback.
//   - fo: the available server of highest weight (weighted failover).
//   - ovf: the highest-weight server whose Active does not exceed its
//     weight (overflow).
//   - twos: two servers drawn at random in proportion to weight; the one
//     with less overhead/weight wins (power of two choices).
//
// # Overload thresholds
//
// IPVS marks a server overloaded (IP_VS_DEST_F_OVERLOAD) when
// Active+Inactive reaches its upper threshold, and clears the mark when the
// count falls below the lower threshold, or below 3/4 of the upper one when
// no lower threshold is set; every scheduler above skips an overloaded
// server. IPVS updates the mark when a connection binds or unbinds. Here
// the mark lives in the server's ConnCounts (so it survives rebuilds) and
// is evaluated on each count change made through ConnCounts.Add and
// friends while a least-connection index tracks the server (as IPVS
// does), and otherwise lazily, when a scheduler looks at the server: a
// count that crosses the upper threshold and falls back between two picks
// then leaves no mark, where IPVS would keep one until the count fell
// below the lower threshold.
//
// # Least-connection index
//
// IPVS's lc, wlc, sed, nq, lblc and lblcr walk every server's counts on
// each pick, which costs microseconds with hundreds of servers. With at
// least 128 live servers (indexMin) these schedulers keep an index instead: a
// tournament tree of eight-way nodes whose root is the server the walk
// would pick (same ties), plus, for lblc and lblcr, a count of the
// servers below half their weight. Count changes made through
// ConnCounts.Add, AddActive, AddInactive or Set update the server's path
// in the tree; Pick reads the root. The tree is updated without locks:
// each node is stored and its children re-read, so when counts stop
// changing the root is exactly the walk's answer, and while they change
// it is some recent state, as the walk's unlocked reads of the counts are
// in IPVS. Counts written directly (Active.Add and the like) reach the
// tree later: Pick re-checks the root's server on every pick and one
// other server on one pick in 16, so a direct write is seen at once for
// the current choice and after about 16n picks otherwise. An index takes
// over its servers' ConnCounts on its scheduler's first pick (so a rebuild
// that is never published takes nothing), unless a scheduler built later
// already holds them; a scheduler whose counts were taken (the one a
// rebuild replaced, still serving until the new one is published) walks
// the list from then on, exact but slow. Building a scheduler of another
// kind over the counts releases them at once.
//
// # Concurrency
//
// rr and wrr keep one cursor per Flow.Shard (the worker's index) so that
// workers never write the same cache line; each shard follows IPVS's order
// on its own, and one shard gives exactly IPVS's sequence. Nor may a
// worker read a line another writes on every pick: the cursors sit behind
// a padding block because Go checks the pointer to them for nil by
// loading their first byte, which was shard 0's cursor; every other
// shard's pick then read the line shard 0 wrote, and rr and wrr made
// picks at 0.6 times one worker's rate with two workers
// (BenchmarkPickScaling shows it). twos draws its random numbers from the
// runtime's per-thread generator.
//
// lblc and lblcr keep their cache in fixed-size arrays of entries updated
// with a per-entry sequence number (a writer that finds an entry busy
// skips caching, a reader that sees it change treats it as a miss; an
// entry that already says what a pick decided is not written again);
// time for their expiry is a one-second coarse clock. So the only writes
// a pick makes to memory another worker uses are the lblc/lblcr cache
// updates IPVS makes too, and count changes reaching a least-connection
// index.
//
// # Cost
//
// BenchmarkPick (bench_test.go) measures every scheduler at 2 to 4096
// servers. At 256 servers, one worker on the CI VM (best of several runs;
// the host's load can double any of them): 6-15 ns a pick for rr, wrr,
// dh, sh, fo, ovf, lc, wlc, sed, nq and mh, about 15 for lblc, 20 for
// lblcr and twos, of which about 6 ns is the benchmark's own loop. lblc
// and lblcr fetch a line of their table for each pick, rr and wrr make
// one locked add. BenchmarkPickScaling (scaling_test.go) shows two
// workers picking at about twice one worker's rate for every scheduler.
package scheduler

import "sync/atomic"

// Flow is what a scheduler may look at when it places a new connection.
// Addresses are 16 bytes; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d) so one
// hash covers both families.
type Flow struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Proto            uint8
	// Shard is the calling worker's index. rr and wrr keep their cursor
	// per shard (64, modulo) so parallel workers do not contend on one
	// cache line.
	Shard uint16
}

// ConnCounts are a real server's live connection counts, kept exact by the
// dataplane's conn table and read by the least-connection schedulers. One
// ConnCounts lives as long as the real server does, across rebuilds.
// Change them with Add (or AddActive, AddInactive, Set), which also keep
// the least-connection index current; the atomics may be read at any time.
type ConnCounts struct {
	Active   atomic.Int32 // ESTABLISHED TCP flows
	Inactive atomic.Int32 // every other state, and UDP

	// overload is IPVS's IP_VS_DEST_F_OVERLOAD hysteresis state. Owned by
	// the schedulers (see Dest.Overloaded); the dataplane never writes it.
	overload atomic.Bool
	// hook is the least-connection index that tracks these counts (the
	// newest scheduler that picked over them), nil when none does.
	hook atomic.Pointer[leafRef]
}

// Add changes the counts by the given deltas and brings the tracking
// scheduler's index up to date: the way the dataplane should change them
// (a conn moving from inactive to established is Add(1, -1)). Writing the
// atomics directly also works, but a least-connection scheduler sees such a
// write only after a number of picks (see the package doc).
func (c *ConnCounts) Add(active, inactive int32) {
	if active != 0 {
		c.Active.Add(active)
	}
	if inactive != 0 {
		c.Inactive.Add(inactive)
	}
	c.notify()
}

// AddActive is Add(d, 0).
func (c *ConnCounts) AddActive(d int32) {
	c.Active.Add(d)
	c.notify()
}

// AddInactive is Add(0, d).
func (c *ConnCounts) AddInactive(d int32) {
	c.Inactive.Add(d)
	c.notify()
}

// Set stores both counts and updates the tracking index, as Add does.
func (c *ConnCounts) Set(active, inactive int32) {
	c.Active.Store(active)
	c.Inactive.Store(inactive)
	c.notify()
}

func (c *ConnCounts) notify() {
	if h := c.hook.Load(); h != nil {
		h.ix.refresh(int(h.pos))
	}
}

// Dest is one real server as a scheduler sees it.
type Dest struct {
	Weight int32       // 0 = quiesced: keeps its flows, takes no new ones
	Up     bool        // false = failed health check: never picked
	Upper  int32       // upper connection threshold (ipvsadm -x), 0 = none
	Lower  int32       // lower connection threshold (ipvsadm -y), 0 = none
	Conns  *ConnCounts // must be non-nil; also the server's identity across Rebuild

	// Addr and Port name the real server (IPv4-mapped for IPv4). mh seeds
	// each server's permutation from them, so a server keeps its table
	// entries when others come and go. When both are zero the server's
	// index in the dests slice is used instead.
	Addr [16]byte
	Port uint16
}

// Options carry the per-service scheduler flags (ipvsadm -b) and tunables.
type Options struct {
	SHFallback, SHPort bool // sh-fallback, sh-port
	MHFallback, MHPort bool // mh-fallback, mh-port
	MHTableSize        int  // 0 = default 65537; must be prime
	LBLCRExpiration    int  // seconds; 0 = IPVS default (24 h)
	LBLCExpiration     int  // seconds; 0 = IPVS default (24 h)
	CacheSize          int  // lblc/lblcr cache entries; 0 = 16384 (IPVS's table max_size)
}

// Scheduler places new flows. Pick returns an index into the dests the
// scheduler was built with, or -1 when no real server may take the flow.
type Scheduler interface {
	Name() string
	Pick(f *Flow) int
	// Rebuild returns a scheduler over new dests (weights, health or the
	// server list changed) that carries over runtime state such as the rr
	// cursor or lblc cache. The receiver stays valid for readers still
	// holding it.
	Rebuild(dests []Dest) (Scheduler, error)
}

// Overloaded reports whether IPVS would consider d overloaded by its
// connection thresholds, updating the hysteresis mark kept in d.Conns.
func (d *Dest) Overloaded() bool {
	return d.Upper > 0 && d.overloadSlow()
}

func (d *Dest) overloadSlow() bool {
	c := d.Conns
	total := int64(c.Active.Load()) + int64(c.Inactive.Load())
	if total >= int64(d.Upper) {
		if !c.overload.Load() {
			c.overload.Store(true)
		}
		return true
	}
	if !c.overload.Load() {
		return false
	}
	var clear bool
	if d.Lower > 0 {
		clear = total < int64(d.Lower)
	} else {
		clear = total*4 < int64(d.Upper)*3
	}
	if clear {
		c.overload.Store(false)
		return false
	}
	return true
}

// overhead is IPVS's ip_vs_dest_conn_overhead: active connections weigh
// 256 times an inactive one.
func (d *Dest) overhead() int64 {
	return int64(d.Conns.Active.Load())<<8 + int64(d.Conns.Inactive.Load())
}
