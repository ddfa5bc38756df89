package dataplane

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"

	"github.com/xvs-lb/xvs/scheduler"
)

// portInfo is what the packet path knows about one interface the dataplane
// serves (a "port"; workers and real servers name it by index).
type portInfo struct {
	mac  [6]byte
	src4 [4]byte // the interface's primary IPv4 address (TUN outer source)
	has4 bool
	src6 [16]byte // its first global IPv6 address (TUN outer source)
	has6 bool
	mtu  int
}

// txOut says where a processed frame goes: bytes [off, off+n) of the UMEM
// frame buffer, out of port.
type txOut struct {
	off, n int
	port   int
}

// forwarder is one worker's packet-path state. Owned by its worker
// goroutine; the counters are atomics so the control plane can read them.
type forwarder struct {
	table *ConnTable
	port  int        // the port this worker receives on
	ports []portInfo // every port, by index; immutable
	neigh *neighCache
	ipID  uint16         // IPv4 ID of the outer headers this worker writes
	flow  scheduler.Flow // scratch: Pick takes a pointer through an interface
	q     *QueueStats
	dst   []DestStats // indexed by dest ID
	// Per-packet counts gather here, plain, and flush into dst once per
	// batch: an atomic add per packet costs more than the rest of the
	// established-flow path's arithmetic.
	pend  []pendStat // indexed by dest ID
	dirty []uint16   // IDs with pend != 0
	// scratch keeps processBatch's per-frame parse results.
	scratch *batchScratch
	// natFwd: see natMemo; entries start at out -1 (none).
	natFwd *[natFwdMemo]natMemo
	// hint is the conn-table slot processBatch saw the current packet's
	// tag in (-1: none): the lookup tries it first. Without one,
	// hintUsable is the first bucket's usable mask it saw, for the insert
	// (0: none seen, or none usable: the insert looks itself).
	hint       int
	hintUsable uint32
	// now is the table clock of the packet or batch in hand; icmpAt and
	// icmpLeft the ICMP error budget of second icmpAt.
	now      uint32
	icmpAt   uint32
	icmpLeft int
	// slowReplies makes every NAT reply move its forward entry, as if
	// replyUnchanged never held: the reference its tests compare against.
	slowReplies bool
}

// MaxBatch bounds Config.BatchSize.
const MaxBatch = 256

type pendStat struct{ conns, pkts, bytes uint64 }

// DestStats are per-real-server traffic counters (one set per worker;
// Dataplane.DestStats sums them).
type DestStats struct {
	Conns   atomic.Uint64
	Packets atomic.Uint64
	Bytes   atomic.Uint64
}

func newForwarder(t *ConnTable, ports []portInfo, port int, neigh *neighCache, q *QueueStats) *forwarder {
	return &forwarder{table: t, ports: ports, port: port, neigh: neigh, q: q, dst: make([]DestStats, MaxDests),
		pend: make([]pendStat, MaxDests), dirty: make([]uint16, 0, maxDirty), ipID: uint16(port) << 12,
		scratch: new(batchScratch), hint: -1, natFwd: newNATMemo()}
}

const maxDirty = 256

func newNATMemo() *[natFwdMemo]natMemo {
	m := new([natFwdMemo]natMemo)
	for i := range m {
		m[i].out = -1
	}
	return m
}

// pending returns dest id's pending counts, listing it for the next flush.
func (f *forwarder) pending(id uint16) *pendStat {
	ps := &f.pend[id]
	if *ps == (pendStat{}) {
		if len(f.dirty) == maxDirty {
			f.flush()
		}
		f.dirty = append(f.dirty, id)
	}
	return ps
}

// flush publishes the pending per-real-server counts.
func (f *forwarder) flush() {
	for _, id := range f.dirty {
		ps := &f.pend[id]
		ds := &f.dst[id]
		if ps.conns != 0 {
			ds.Conns.Add(ps.conns)
		}
		ds.Packets.Add(ps.pkts)
		ds.Bytes.Add(ps.bytes)
		*ps = pendStat{}
	}
	f.dirty = f.dirty[:0]
}

// process is processAt for a frame without headroom (tests): DropNone
// means "transmit".
func (f *forwarder) process(frame []byte, snap *Snapshot, now uint32) DropReason {
	_, r := f.processAt(frame, 0, len(frame), snap, now)
	return r
}

// processAt decides the fate of the frame at buf[off:off+n] and rewrites it
// in place for transmission; the bytes before off are headroom it may grow
// the frame into (TUN's outer header, ICMP errors). DropNone means
// "transmit out.n bytes at out.off on port out.port".
func (f *forwarder) processAt(buf []byte, off, n int, snap *Snapshot, now uint32) (txOut, DropReason) {
	f.now = now
	frame := buf[off : off+n : off+n]
	var p Packet
	var k connKey
	if r := f.parse(frame, &p, &k); r != DropNone {
		return txOut{}, r
	}
	if p.Proto == ProtoICMP || p.Proto == ProtoICMPv6 {
		return f.natICMP(frame, off, &p, snap, now)
	}
	if snap != nil && snap.isNATReal(k.c0, k.c1) {
		var rk connKey
		natReplyKey(&rk, &p, &k)
		if out, r, ok := f.natReply(frame, off, &p, &k, &rk, f.table.hash(&rk), -1, snap, now); ok {
			return out, r
		}
	}
	return f.forward(buf, off, n, &p, &k, f.table.hash(&k), snap, now)
}

// batchPkt is one frame of a batch: buf[off:off+n], the bytes before off
// headroom; out and r are processBatch's verdict, as processAt returns it.
type batchPkt struct {
	buf    []byte
	off, n int
	out    txOut
	r      DropReason
}

// batchScratch holds a batch's parse results between processBatch's passes.
type batchScratch struct {
	p [MaxBatch]Packet
	k [MaxBatch]connKey
	// rk: the reply index key of a packet from a NAT real server
	rk [MaxBatch]connKey
	// h: the hash of the key the packet looks up first (rk if nat, else k)
	h   [MaxBatch]uint64
	r   [MaxBatch]DropReason
	nat [MaxBatch]bool
	// slot: the slot whose tag matched in the prefetch pass, -1 if none;
	// usable: when none did, the first bucket's slots an insert may take
	slot   [MaxBatch]int32
	usable [MaxBatch]uint32
	// addr: cache lines to prefetch, at most three per frame
	addr [3 * MaxBatch]uintptr
}

// processBatch is processAt for a batch of at most MaxBatch frames, in
// three passes so that the conn table's cache misses overlap instead of
// following one another: parse and hash every frame and load its first
// candidate bucket's control line; then load the entry line each lookup
// (or insert) will use, and after a miss in the first bucket the second's
// control line; then process. A table larger than the caches costs
// one memory latency per batch pass rather than two or three per packet.
func (f *forwarder) processBatch(pk []batchPkt, snap *Snapshot, now uint32) {
	f.now = now
	sc := f.scratch
	pk = pk[:min(len(pk), MaxBatch)]
	t := f.table
	// NAT services' real servers' packets are replies, mostly: they look up
	// the reply index first. A snapshot without NAT pays one test a frame.
	hasNAT := snap != nil && snap.natReals != nil
	na := 0
	for i := range pk {
		b := &pk[i]
		p, k := &sc.p[i], &sc.k[i]
		if parseFastV4(b.buf[b.off:b.off+b.n:b.off+b.n], p, k) {
			sc.r[i] = DropNone
		} else {
			sc.r[i] = parseKey(b.buf[b.off:b.off+b.n:b.off+b.n], p, k)
		}
		if sc.r[i] != DropNone || (p.Proto != ProtoTCP && p.Proto != ProtoUDP) {
			if hasNAT {
				sc.nat[i] = false
			}
			continue
		}
		var h uint64
		if hasNAT {
			sc.nat[i] = snap.isNATReal(k.c0, k.c1)
		}
		if hasNAT && sc.nat[i] {
			natReplyKey(&sc.rk[i], p, k)
			h = t.hash(&sc.rk[i])
		} else {
			h = t.hash(k)
		}
		sc.h[i] = h
		b1, _, _ := t.buckets(h)
		sc.addr[na] = uintptr(unsafe.Pointer(&t.bk[b1/bucketSlots]))
		na++
	}
	prefetch(sc.addr[:na])
	na = 0
	for i := range pk {
		sc.slot[i] = -1
		if sc.r[i] != DropNone || (sc.p[i].Proto != ProtoTCP && sc.p[i].Proto != ProtoUDP) {
			continue
		}
		hit, free, usable, second := t.slotFor(sc.h[i], now)
		sc.slot[i] = int32(hit)
		sc.usable[i] = usable
		if hit < 0 {
			hit = free
		}
		if hit >= 0 {
			sc.addr[na] = uintptr(unsafe.Pointer(t.entp(hit)))
			na++
		}
		if second >= 0 {
			sc.addr[na] = uintptr(unsafe.Pointer(&t.bk[second/bucketSlots]))
			na++
		}
		if hasNAT && sc.nat[i] && sc.slot[i] >= 0 {
			// The forward entry, if the memo knows its slot.
			if m := f.natFwd[sc.slot[i]&(natFwdMemo-1)]; m.out == sc.slot[i] && int(m.fwd) < len(t.bk)*bucketSlots {
				sc.addr[na] = uintptr(unsafe.Pointer(t.entp(int(m.fwd))))
				na++
			}
		}
	}
	prefetch(sc.addr[:na])
	for i := range pk {
		b := &pk[i]
		if sc.r[i] != DropNone {
			b.out, b.r = txOut{}, sc.r[i]
			continue
		}
		p, k := &sc.p[i], &sc.k[i]
		if hasNAT && sc.nat[i] {
			frame := b.buf[b.off : b.off+b.n : b.off+b.n]
			var ok bool
			if b.out, b.r, ok = f.natReply(frame, b.off, p, k, &sc.rk[i], sc.h[i], int(sc.slot[i]), snap, now); ok {
				continue
			}
			// Not a reply: a real server that is also a client of a VIP.
			b.out, b.r = f.forward(b.buf, b.off, b.n, p, k, t.hash(k), snap, now)
			continue
		}
		// The common packet, an established DR flow's, without the calls
		// of the general path: probe the slot the prefetch pass found.
		// (forward's first lines again, on purpose: routing this through
		// a shared helper with forward's arguments measured 6-10 ns a
		// packet more. forward then tries the same slot through f.hint.)
		if s := int(sc.slot[i]); s >= 0 && snap != nil {
			if j, c, id, found := t.probe(s, k, now); found && j >= 0 && f.unchanged(p, c, now) && int(id) < len(snap.fast) {
				fd := snap.fast[id]
				if fd.flags&fastDR != 0 && int(fd.port) < len(f.ports) {
					b.out, b.r = f.fastDR(b.buf, b.off, b.n, p, fd, id)
					continue
				}
				if fd.flags&fastActive != 0 { // TUN, NAT: no second probe in forward
					b.out, b.r = f.emit(b.buf, b.off, b.n, p, k, snap.byID[id])
					continue
				}
			}
		}
		if p.Proto == ProtoICMP || p.Proto == ProtoICMPv6 {
			b.out, b.r = f.natICMP(b.buf[b.off:b.off+b.n:b.off+b.n], b.off, p, snap, now)
			continue
		}
		f.hint, f.hintUsable = int(sc.slot[i]), sc.usable[i]
		b.out, b.r = f.forward(b.buf, b.off, b.n, p, k, sc.h[i], snap, now)
		f.hint, f.hintUsable = -1, 0
	}
}

// parse runs the validity gate and builds the conn key.
func (f *forwarder) parse(frame []byte, p *Packet, k *connKey) DropReason {
	if parseFastV4(frame, p, k) {
		return DropNone
	}
	return parseKey(frame, p, k)
}

// parseFastV4 handles the common frame, untagged IPv4 without options
// carrying a whole TCP or UDP segment, with one bounds check and no
// re-slicing. It accepts only frames Parse accepts with the same result
// (FuzzParse checks that); anything else returns false for the general path.
func parseFastV4(frame []byte, p *Packet, k *connKey) bool {
	const l4 = ethHeaderLen + ipv4MinHeader // 34
	if len(frame) < l4+tcpMinHeader || len(frame) > 0xFFFF {
		return false
	}
	b := frame[:l4+tcpMinHeader]
	if b[12] != 0x08 || b[13] != 0x00 || b[14] != 0x45 ||
		(b[20]&0x3F != 0 || b[21] != 0) { // MF or fragment offset
		return false
	}
	total := int(b[16])<<8 | int(b[17])
	end := ethHeaderLen + total
	if total < ipv4MinHeader || end > len(frame) {
		return false
	}
	proto := b[23]
	switch proto {
	case ProtoTCP:
		doff := int(b[l4+12]>>4) * 4
		if doff < tcpMinHeader || l4+doff > end {
			return false
		}
		p.TCPFlags = b[l4+13]
	case ProtoUDP:
		ulen := int(b[l4+4])<<8 | int(b[l4+5])
		if end-l4 < udpHeaderLen || ulen < udpHeaderLen || ulen > end-l4 {
			return false
		}
		p.TCPFlags = 0
	default:
		return false
	}
	sport := uint16(b[l4])<<8 | uint16(b[l4+1])
	dport := uint16(b[l4+2])<<8 | uint16(b[l4+3])
	// Field by field, not a composite literal: the compiler builds a
	// literal on the stack with narrow stores and copies it with one wide
	// load, which the CPU cannot forward from them (a ~12-cycle stall).
	p.L3, p.L4, p.End, p.EthType = ethHeaderLen, l4, uint16(end), etherTypeIPv4
	p.VLAN, p.IPv6, p.Proto = false, false, proto
	p.SrcPort, p.DstPort = sport, dport
	*k = connKey{
		w0: uint64(proto) | uint64(kindConn)<<8 | uint64(sport)<<16 | uint64(dport)<<32,
		c1: v4Mapped | uint64(binary.LittleEndian.Uint32(b[26:]))<<32,
		v1: v4Mapped | uint64(binary.LittleEndian.Uint32(b[30:]))<<32,
	}
	return true
}

// parseKey is the general path: the full validity gate, then the key.
func parseKey(frame []byte, p *Packet, k *connKey) DropReason {
	if r := Parse(frame, p); r != DropNone {
		return r
	}
	if p.Proto == ProtoICMP || p.Proto == ProtoICMPv6 {
		return DropNone // no key: only NAT ICMP errors are handled
	}
	if p.Proto != ProtoTCP && p.Proto != ProtoUDP {
		return DropL4Proto
	}
	c0, c1, v0, v1 := p.addrWords(frame)
	*k = connKey{
		w0: uint64(p.Proto) | uint64(kindConn)<<8 | uint64(p.SrcPort)<<16 | uint64(p.DstPort)<<32,
		c0: c0, c1: c1, v0: v0, v1: v1,
	}
	return DropNone
}

// forward handles one parsed TCP/UDP packet to a service, whose key hashes
// to h; the frame is buf[off:off+n], the bytes before it headroom.
func (f *forwarder) forward(buf []byte, off, n int, p *Packet, k *connKey, h uint64, snap *Snapshot, now uint32) (txOut, DropReason) {
	var d *Dest
	i, c, id, found := -1, uint64(0), uint16(0), false
	if f.hint >= 0 {
		i, c, id, found = f.table.probe(f.hint, k, now)
	}
	if !found {
		i, c, id = f.table.lookupHashed(k, h, now)
	}
	if i >= 0 && f.unchanged(p, c, now) && int(id) < len(snap.fast) {
		// Most packets: an established flow whose state and expiry this
		// packet leaves as they are. For DR nothing but the MACs changes.
		if fd := snap.fast[id]; fd.flags&fastDR != 0 && int(fd.port) < len(f.ports) {
			return f.fastDR(buf, off, n, p, fd, id)
		} else if fd.flags&fastActive != 0 {
			return f.emit(buf, off, n, p, k, snap.byID[id])
		}
	}
	if i >= 0 {
		if int(id) < len(snap.byID) {
			d = snap.byID[id]
		}
		if d == nil {
			// expire_nodest_conn=1: the real server was removed.
			f.table.reap(i, c)
			return txOut{}, DropDestGone
		}
		st := ctlState(c)
		changed := false
		ns := StateUDP
		if p.Proto == ProtoTCP {
			// A new SYN on a closing entry starts a new connection
			// (IPVS conn_reuse_mode): schedule it afresh.
			if p.TCPFlags&(TCPSyn|TCPAck|TCPRst) == TCPSyn && (st == StateTimeWait || st == StateClose) {
				f.table.reap(i, c)
				d = nil
			} else {
				tb := tcpInputOnly
				if d.Method == NAT {
					tb = tcpInput
				}
				ns = nextTCPStateIn(tb, st, p.TCPFlags)
				changed = f.table.touch(i, c, id, ns, now)
			}
		} else {
			changed = f.table.touch(i, c, id, StateUDP, now)
		}
		if changed && d != nil {
			if d.svc.persist > 0 {
				f.keepTemplate(d, k, now)
			}
			if d.Method == NAT {
				f.natIndex(k, d, ns, now+f.table.timeout(ns), now, false)
			}
		}
	}
	if d == nil {
		var r DropReason
		if d, r = f.schedule(p, k, h, snap, now); r != DropNone {
			return txOut{}, r
		}
	}
	if !d.svc.Active {
		return txOut{}, DropInactive
	}
	return f.emit(buf, off, n, p, k, d)
}

// emit rewrites a packet of flow k for real server d of an active service
// by its forwarding method and counts it.
func (f *forwarder) emit(buf []byte, off, n int, p *Packet, k *connKey, d *Dest) (txOut, DropReason) {
	frame := buf[off : off+n : off+n]
	out := txOut{off: off, n: n, port: d.port}
	// The director is a hop, in every method, as IPVS is since Linux 4.2:
	// the TTL goes down by one, and a packet that would leave with TTL 0
	// is answered with ICMP time-exceeded (timeExceeded). TUN does it
	// after its MTU check, so that an ICMP error quotes the packet as the
	// client sent it.
	switch d.Method {
	case DR:
		if !decTTL(frame, p) {
			return f.timeExceeded(buf, off, p)
		}
		// The real server's MAC, the egress interface's as source.
		copy(frame[ethDst:ethDst+6], d.MAC[:])
		copy(frame[ethSrc:ethSrc+6], f.ports[d.port].mac[:])
	case NAT:
		if !natRewriteDst(frame, p, d) { // TTL included
			return f.timeExceeded(buf, off, p)
		}
		f.neigh.learn(k.c0, k.c1, frame[ethSrc:ethSrc+6], f.port)
		copy(frame[ethDst:ethDst+6], d.MAC[:])
		copy(frame[ethSrc:ethSrc+6], f.ports[d.port].mac[:])
	case TUN:
		var r DropReason
		var icmp bool
		if out, icmp, r = f.tunnel(buf, off, p, d); r != DropNone {
			return txOut{}, r
		}
		if icmp {
			return out, DropNone // an ICMP error to the client, not traffic
		}
	default:
		return txOut{}, DropMethod
	}
	ps := f.pending(d.ID)
	ps.pkts++
	ps.bytes += uint64(n)
	return out, DropNone
}

// fastDR forwards a packet of an established DR flow to real server fd
// (dest ID id) that leaves its conn entry unchanged: TTL, MACs, counts.
func (f *forwarder) fastDR(buf []byte, off, n int, p *Packet, fd destFast, id uint16) (txOut, DropReason) {
	frame := buf[off : off+n : off+n]
	if !decTTL(frame, p) {
		return f.timeExceeded(buf, off, p)
	}
	copy(frame[ethDst:ethDst+6], fd.mac[:])
	copy(frame[ethSrc:ethSrc+6], f.ports[fd.port].mac[:])
	ps := f.pending(id)
	ps.pkts++
	ps.bytes += uint64(len(frame))
	return txOut{off: off, n: len(frame), port: int(fd.port)}, DropNone
}

// unchanged reports whether a packet leaves its conn entry (control word c)
// as it is: an ESTABLISHED TCP segment without SYN, FIN or RST, or a UDP
// datagram, while the table clock has not moved the entry's expiry. Such a
// packet needs no state transition, no touch and no persistence upkeep.
func (f *forwarder) unchanged(p *Packet, c uint64, now uint32) bool {
	st := ctlState(c)
	if p.Proto == ProtoTCP {
		if st != StateEstablished || p.TCPFlags&(TCPSyn|TCPFin|TCPRst) != 0 {
			return false
		}
	} else if st != StateUDP {
		return false
	}
	return ctlExpiry(c) == now+f.table.timeout(st)
}

// keepTemplate keeps a persistence template alive while a connection it
// placed carries traffic (LVS keeps it while it controls connections). It
// runs when the connection's own expiry moved, about once a second per flow,
// not per packet. A template that expired meanwhile is recreated.
func (f *forwarder) keepTemplate(d *Dest, k *connKey, now uint32) {
	svc := d.svc
	var tk connKey
	templateKey(&tk, svc, k)
	if ti, tc, tid := f.table.lookup(&tk, now); ti >= 0 {
		if tid == d.ID {
			f.table.refresh(ti, tc, svc.persist, now)
		}
		return
	}
	f.table.insert(&tk, d.ID, StateTemplate, now+svc.persist, now)
}

// templateKey is the persistence template key of flow k in svc: the client
// address masked by persistence_granularity, no client port, the service's
// port (0 for a port-less service).
func templateKey(tk *connKey, svc *Service, k *connKey) {
	tk.w0 = k.w0&0xFF | uint64(kindTmpl)<<8 | uint64(svc.Key.Port)<<32
	tk.c0, tk.c1, tk.v0, tk.v1 = k.c0&svc.maskHi, k.c1&svc.maskLo, k.v0, k.v1
}

// schedule places a flow without a conn entry: service lookup, persistence
// template, scheduler, insert.
func (f *forwarder) schedule(p *Packet, k *connKey, h uint64, snap *Snapshot, now uint32) (*Dest, DropReason) {
	if snap == nil {
		return nil, DropNoService
	}
	svc := snap.lookupSvc(k.v0, k.v1, p.DstPort, p.Proto)
	if svc == nil {
		svc = snap.lookupSvc(k.v0, k.v1, 0, p.Proto)
		if svc == nil {
			return nil, DropNoService
		}
	}
	if !svc.Active {
		return nil, DropInactive
	}
	state := StateUDP
	if p.Proto == ProtoTCP {
		// Only a SYN opens a connection (IPVS without sloppy_tcp), unless
		// the table overflowed lately and this flow may have found no room.
		if p.TCPFlags&(TCPSyn|TCPRst) != TCPSyn && !f.table.recentlyFull(now) {
			return nil, DropNoConn
		}
		state = nextTCPState(StateNone, p.TCPFlags)
	}
	var d *Dest
	var tk connKey
	if svc.persist > 0 {
		templateKey(&tk, svc, k)
		if ti, tc, tid := f.table.lookup(&tk, now); ti >= 0 {
			// A template outlives weight 0 (expire_quiescent_template=0)
			// but not a real server that is down, unknown or removed.
			if td := snap.DestByID(tid); td != nil && td.svc == svc && td.Up && td.HasMAC {
				d = td
				f.table.refresh(ti, tc, svc.persist, now)
			} else {
				f.table.reap(ti, tc)
			}
		}
	}
	if d == nil {
		fl := &f.flow
		binary.LittleEndian.PutUint64(fl.Src[:8], k.c0)
		binary.LittleEndian.PutUint64(fl.Src[8:], k.c1)
		binary.LittleEndian.PutUint64(fl.Dst[:8], k.v0)
		binary.LittleEndian.PutUint64(fl.Dst[8:], k.v1)
		fl.SrcPort, fl.DstPort, fl.Proto = p.SrcPort, p.DstPort, p.Proto
		idx := svc.sched.Pick(fl)
		if idx < 0 || idx >= len(svc.dests) {
			return nil, DropNoDest
		}
		d = svc.dests[idx]
		if svc.persist > 0 {
			f.table.insert(&tk, d.ID, StateTemplate, now+svc.persist, now)
		}
	}
	exp := now + f.table.timeout(state)
	inserted := false
	if f.hint < 0 && f.hintUsable != 0 {
		inserted = f.table.insertUsable(k, h, f.hintUsable, d.ID, state, exp, now)
	} else {
		inserted = f.table.insertHashed(k, h, d.ID, state, exp, now)
	}
	if !inserted {
		f.q.TableFull.Add(1)
	}
	if d.Method == NAT {
		f.natIndex(k, d, state, exp, now, true)
	}
	f.pending(d.ID).conns++
	return d, DropNone
}
