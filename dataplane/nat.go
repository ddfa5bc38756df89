package dataplane

import (
	"encoding/binary"
	"math"
	"sync/atomic"
)

// NAT forwarding (lb_kind NAT, LVS masquerading).
//
// Requests: the destination VIP:port becomes RIP:rport, checksums are
// updated incrementally (RFC 1624), and the frame leaves by the real
// server's port. Each NAT flow has, besides its entry keyed (client, VIP),
// an index entry keyed (client, real server) in the same conn table — IPVS's
// out table — so that a reply, which may arrive on any queue of any port,
// finds its flow. Replies move the flow's TCP state by IPVS's OUTPUT table,
// requests by its INPUT table.
//
// Replies are sent back to the MAC and port the client's requests came from
// (learned per client address in neighCache): the next hop toward the
// client, whether the client itself or its router.

// natPort is the port a real server is reached on for a packet to vport.
func natPort(d *Dest, vport uint16) uint16 {
	if d.Port != 0 {
		return d.Port
	}
	return vport
}

// natOutKey sets rk to the reply index key of a flow: client address and
// port, real server address and port.
func natOutKey(rk *connKey, proto uint8, c0, c1 uint64, cport uint16, d *Dest, rport uint16) {
	rk.set(proto, kindOut, c0, c1, cport, d.a0, d.a1, rport)
}

// natReplyKey sets rk to the reply index key a packet from a NAT real
// server looks up; k is the packet's key built as if it were a request
// (c = the real server, v = the client).
func natReplyKey(rk *connKey, p *Packet, k *connKey) {
	rk.set(p.Proto, kindOut, k.v0, k.v1, p.DstPort, k.c0, k.c1, p.SrcPort)
}

// natIndex creates (fresh: a new flow) or updates the reply index entry of
// flow k, whose forward entry is now in state ns expiring at exp.
func (f *forwarder) natIndex(k *connKey, d *Dest, ns uint8, exp, now uint32, fresh bool) {
	var rk connKey
	natOutKey(&rk, uint8(k.w0), k.c0, k.c1, uint16(k.w0>>16), d, natPort(d, uint16(k.w0>>32)))
	if i, c, id := f.table.lookup(&rk, now); i >= 0 {
		if !fresh && id == d.ID {
			f.table.set(i, c, id, natOutState(ns), exp)
			return
		}
		f.table.reap(i, c)
	}
	if !f.table.insert(&rk, d.ID, natOutState(ns), exp, now) {
		f.q.TableFull.Add(1)
	}
}

// l4CsumOff returns the offset of the TCP/UDP checksum from the L4 header,
// or -1 for a UDP/IPv4 datagram without one.
func l4CsumOff(proto uint8, l4 []byte, ipv6 bool) int {
	switch proto {
	case ProtoTCP:
		return 16
	case ProtoUDP:
		if !ipv6 && l4[6] == 0 && l4[7] == 0 {
			return -1
		}
		return 6
	}
	return -1
}

// putL4Csum stores an updated TCP/UDP checksum; UDP transmits a computed 0
// as 0xFFFF (RFC 768), since 0 means "none".
func putL4Csum(b []byte, proto uint8, c uint16) {
	if c == 0 && proto == ProtoUDP {
		c = 0xFFFF
	}
	binary.BigEndian.PutUint16(b, c)
}

// natRewriteDst turns a request to VIP:vport into one to d's address and
// port, and takes one off the TTL (hop limit); false, changing nothing,
// when the packet arrived with 1 or 0 left.
func natRewriteDst(frame []byte, p *Packet, d *Dest) bool {
	if !p.IPv6 {
		return natRewrite4(frame, p, 16, 2, binary.BigEndian.Uint32(d.ip[12:]), natPort(d, p.DstPort))
	}
	return natRewrite6(frame, p, 24, 2, d.ip[:], natPort(d, p.DstPort))
}

// natRewriteSrc turns a reply from a real server's address and port into
// one from VIP:vport, and takes one off the TTL (hop limit); false,
// changing nothing, when the packet arrived with 1 or 0 left.
func natRewriteSrc(frame []byte, p *Packet, svc *Service, vport uint16) bool {
	if !p.IPv6 {
		return natRewrite4(frame, p, 12, 0, binary.BigEndian.Uint32(svc.vip[12:]), vport)
	}
	return natRewrite6(frame, p, 8, 0, svc.vip[:], vport)
}

// natRewrite4 sets an IPv4 packet's address at IP header offset ao to addr
// and its port at L4 offset po to port, decrementing the TTL. Each
// checksum gets one incremental update (RFC 1624 eqn. 3) for all of its
// changed words: the IP header's for TTL and address, the TCP/UDP one's
// for address (pseudo-header) and port.
func natRewrite4(frame []byte, p *Packet, ao, po int, addr uint32, port uint16) bool {
	ip := frame[p.L3:]
	_ = ip[19]
	ttl := ip[8]
	if ttl <= 1 {
		return false
	}
	l4 := frame[p.L4:]
	oldA := binary.BigEndian.Uint32(ip[ao:])
	// The address's contribution to either sum: ~old + new, by halves.
	da := uint32(^uint16(oldA>>16)) + uint32(^uint16(oldA)) + addr>>16 + addr&0xFFFF
	tw := uint16(ttl)<<8 | uint16(ip[9])
	ip[8] = ttl - 1
	binary.BigEndian.PutUint32(ip[ao:], addr)
	binary.BigEndian.PutUint16(ip[10:], ^fold(uint32(^binary.BigEndian.Uint16(ip[10:]))+uint32(^tw)+uint32(tw-0x100)+da))
	oldP := binary.BigEndian.Uint16(l4[po:])
	binary.BigEndian.PutUint16(l4[po:], port)
	if co := l4CsumOff(p.Proto, l4, false); co >= 0 {
		putL4Csum(l4[co:], p.Proto, ^fold(uint32(^binary.BigEndian.Uint16(l4[co:]))+da+uint32(^oldP)+uint32(port)))
	}
	return true
}

// natRewrite6 is natRewrite4 for IPv6 (no header checksum; the address at
// ao is 16 bytes).
func natRewrite6(frame []byte, p *Packet, ao, po int, addr []byte, port uint16) bool {
	ip := frame[p.L3:]
	_ = ip[39]
	if ip[7] <= 1 {
		return false
	}
	ip[7]--
	l4 := frame[p.L4:]
	co := l4CsumOff(p.Proto, l4, true)
	cs := binary.BigEndian.Uint16(l4[co:])
	cs = ChecksumUpdateBytes(cs, ip[ao:ao+16], addr)
	copy(ip[ao:ao+16], addr)
	oldP := binary.BigEndian.Uint16(l4[po:])
	binary.BigEndian.PutUint16(l4[po:], port)
	putL4Csum(l4[co:], p.Proto, ChecksumUpdate16(cs, oldP, port))
	return true
}

// natReply handles a TCP/UDP packet from a NAT real server: ok false when it
// belongs to no NAT flow (it then takes the ordinary path: a real server
// may also be a client of a VIP). k is the packet's key built as if it were
// a request (c = real server, v = client), rk its reply index key
// (natReplyKey), rh rk's hash and hint the slot to try first (-1: none).
func (f *forwarder) natReply(frame []byte, off int, p *Packet, k, rk *connKey, rh uint64, hint int, snap *Snapshot, now uint32) (txOut, DropReason, bool) {
	cport, rport := p.DstPort, p.SrcPort
	ri, rc, id, found := -1, uint64(0), uint16(0), false
	if hint >= 0 {
		ri, rc, id, found = f.table.probe(hint, rk, now)
	}
	if !found {
		ri, rc, id = f.table.lookupHashed(rk, rh, now)
	}
	if ri < 0 {
		return txOut{}, DropNone, false
	}
	d := snap.DestByID(id)
	if d == nil || d.Method != NAT || d.a0 != k.c0 || d.a1 != k.c1 {
		f.table.reap(ri, rc)
		return txOut{}, DropDestGone, true
	}
	svc := d.svc
	if !svc.Active {
		return txOut{}, DropInactive, true
	}
	vport := svc.Key.Port
	if vport == 0 {
		vport = rport
	}
	if f.slowReplies || !f.replyUnchanged(p, rc, now) {
		if r := f.natReplyState(p, k, ri, rc, d, cport, vport, now); r != DropNone {
			return txOut{}, r, true
		}
	}
	mac, port, ok := f.neigh.lookup(k.v0, k.v1)
	if !ok {
		return txOut{}, DropNoNeigh, true
	}
	if !natRewriteSrc(frame, p, svc, vport) {
		return txOut{}, DropTTL, true
	}
	putMAC(frame[ethDst:], mac)
	copy(frame[ethSrc:ethSrc+6], f.ports[port].mac[:])
	ps := f.pending(d.ID)
	ps.pkts++
	ps.bytes += uint64(len(frame))
	return txOut{off: off, n: len(frame), port: port}, DropNone, true
}

// replyUnchanged reports whether a reply leaves its NAT flow as it is,
// judged from the flow's reply index entry (control word rc), which
// mirrors the forward entry's expiry and whether it is ESTABLISHED: an ACK
// without SYN, FIN or RST to an ESTABLISHED flow, or a UDP datagram, while
// the table clock has not moved the expiry. Most replies are; they skip
// the forward entry (unchanged does the same for requests).
func (f *forwarder) replyUnchanged(p *Packet, rc uint64, now uint32) bool {
	st := StateUDP
	if p.Proto == ProtoTCP {
		if ctlState(rc) != stNATOutEst || p.TCPFlags&(TCPSyn|TCPFin|TCPRst) != 0 {
			return false
		}
		st = StateEstablished
	}
	return ctlExpiry(rc) == now+f.table.timeout(st)
}

// natReplyState moves NAT flow k's forward entry by a reply from real
// server d (IPVS's OUTPUT table) and its reply index entry (slot ri,
// control word rc) with it.
func (f *forwarder) natReplyState(p *Packet, k *connKey, ri int, rc uint64, d *Dest, cport, vport uint16, now uint32) DropReason {
	svc := d.svc
	var fk connKey
	fk.set(p.Proto, kindConn, k.v0, k.v1, cport, svc.v0, svc.v1, vport)
	// The forward entry's slot, remembered per reply-index slot: a probe of
	// one slot instead of a second hash and bucket scan per reply.
	fi, fc, fid, found := -1, uint64(0), uint16(0), false
	memo := &f.natFwd[ri&(natFwdMemo-1)]
	if memo.out == int32(ri) {
		fi, fc, fid, found = f.table.probe(int(memo.fwd), &fk, now)
	}
	if !found {
		fi, fc, fid = f.table.lookup(&fk, now)
		if fi >= 0 && ri <= math.MaxInt32 && fi <= math.MaxInt32 {
			*memo = natMemo{out: int32(ri), fwd: int32(fi)}
		}
	}
	if fi < 0 || fid != d.ID {
		return DropNoConn
	}
	ns := StateUDP
	if p.Proto == ProtoTCP {
		ns = nextTCPStateIn(tcpOutput, ctlState(fc), p.TCPFlags)
	}
	if f.table.touch(fi, fc, fid, ns, now) {
		f.table.set(ri, rc, d.ID, natOutState(ns), now+f.table.timeout(ns))
	}
	return DropNone
}

// natFwdMemo is the size of a worker's reply-slot → forward-slot memo.
const natFwdMemo = 4096

// natMemo remembers that the NAT flow whose reply index is in slot out has
// its forward entry in slot fwd; probe checks the key, so a stale memo only
// costs the lookup it would have saved.
type natMemo struct{ out, fwd int32 }

// isICMPError reports whether an ICMP (ICMPv6) type/code word is an error
// that quotes the offending packet.
func isICMPError(p *Packet) bool {
	t := uint8(p.DstPort >> 8)
	if p.IPv6 {
		return t >= 1 && t <= 4
	}
	return t == 3 || t == 11 || t == 12
}

// natICMP translates an ICMP error a NAT real server sends about a flow
// (the quoted packet is client → real server): outer source and quoted
// destination become VIP:vport, as IPVS's ip_vs_nat_icmp does; the quoted
// IPv4 header checksum and TCP/UDP checksum (when quoted) are updated
// incrementally and the ICMP checksum recomputed. Anything else ICMP the XDP
// program hands over is dropped (l4_proto).
func (f *forwarder) natICMP(frame []byte, off int, p *Packet, snap *Snapshot, now uint32) (txOut, DropReason) {
	if snap == nil || snap.natReals == nil || !isICMPError(p) {
		return txOut{}, DropL4Proto
	}
	end := int(p.End)
	icmp := frame[p.L4:end]
	in := icmp[icmpHdrLen:]
	var q Packet // the quoted packet's offsets, relative to in
	var c0, c1, r0, r1 uint64
	if !p.IPv6 {
		if len(in) < ipv4MinHeader || in[0]>>4 != 4 {
			return txOut{}, DropL4Header
		}
		ihl := int(in[0]&0x0F) * 4
		if ihl < ipv4MinHeader || len(in) < ihl+8 {
			return txOut{}, DropL4Header
		}
		q.L4, q.Proto = uint16(ihl), in[9]
		c1 = v4Mapped | uint64(binary.LittleEndian.Uint32(in[12:]))<<32
		r1 = v4Mapped | uint64(binary.LittleEndian.Uint32(in[16:]))<<32
	} else {
		if len(in) < ipv6HeaderLen+8 || in[0]>>4 != 6 {
			return txOut{}, DropL4Header
		}
		q.L4, q.Proto, q.IPv6 = ipv6HeaderLen, in[6], true
		c0, c1 = binary.LittleEndian.Uint64(in[8:]), binary.LittleEndian.Uint64(in[16:])
		r0, r1 = binary.LittleEndian.Uint64(in[24:]), binary.LittleEndian.Uint64(in[32:])
	}
	if q.Proto != ProtoTCP && q.Proto != ProtoUDP {
		return txOut{}, DropL4Proto
	}
	ql4 := in[q.L4:]
	cport, rport := binary.BigEndian.Uint16(ql4[0:]), binary.BigEndian.Uint16(ql4[2:])
	var rk connKey
	rk.set(q.Proto, kindOut, c0, c1, cport, r0, r1, rport)
	ri, _, id := f.table.lookup(&rk, now)
	if ri < 0 {
		return txOut{}, DropNoConn
	}
	d := snap.DestByID(id)
	if d == nil || d.Method != NAT {
		return txOut{}, DropDestGone
	}
	svc := d.svc
	if !svc.Active {
		return txOut{}, DropInactive
	}
	vport := svc.Key.Port
	if vport == 0 {
		vport = rport
	}
	mac, port, ok := f.neigh.lookup(c0, c1)
	if !ok {
		return txOut{}, DropNoNeigh
	}
	if !decTTL(frame, p) {
		return txOut{}, DropTTL
	}
	// The quoted packet: destination real server → VIP:vport.
	co := -1
	if len(ql4) >= 18 || (q.Proto == ProtoUDP && len(ql4) >= 8) {
		co = l4CsumOff(q.Proto, ql4, q.IPv6)
	}
	var cs uint16
	if co >= 0 {
		cs = binary.BigEndian.Uint16(ql4[co:])
	}
	ip := frame[p.L3:]
	if !q.IPv6 {
		old := binary.BigEndian.Uint32(in[16:])
		nw := binary.BigEndian.Uint32(svc.vip[12:])
		binary.BigEndian.PutUint32(in[16:], nw)
		binary.BigEndian.PutUint16(in[10:], ChecksumUpdate32(binary.BigEndian.Uint16(in[10:]), old, nw))
		cs = ChecksumUpdate32(cs, old, nw)
		// Outer source: the VIP.
		copy(ip[12:16], svc.vip[12:])
		ip[10], ip[11] = 0, 0
		binary.BigEndian.PutUint16(ip[10:], Checksum(ip[:p.L4-p.L3], 0))
	} else {
		cs = ChecksumUpdateBytes(cs, in[24:40], svc.vip[:])
		copy(in[24:40], svc.vip[:])
		copy(ip[8:24], svc.vip[:])
	}
	binary.BigEndian.PutUint16(ql4[2:], vport)
	if co >= 0 {
		putL4Csum(ql4[co:], q.Proto, ChecksumUpdate16(cs, rport, vport))
	}
	icmp[2], icmp[3] = 0, 0
	var ps uint32
	if p.IPv6 {
		ps = PseudoHeaderSum(ip[8:24], ip[24:40], ProtoICMPv6, len(icmp))
	}
	binary.BigEndian.PutUint16(icmp[2:], Checksum(icmp, ps))
	putMAC(frame[ethDst:], mac)
	copy(frame[ethSrc:ethSrc+6], f.ports[port].mac[:])
	return txOut{off: off, n: len(frame), port: port}, DropNone
}

// neighCache maps a client address to the MAC and port its requests came
// from, so that NAT replies go back the same way. Direct-mapped, shared by
// all workers, lock-free: a slot is written under a per-slot sequence (odd
// while written, won by CAS; a writer that loses skips, the next packet
// writes), readers retry nothing and treat a torn read as a miss. Two
// clients hashing to one slot evict each other: replies to the evicted one
// are dropped (no_neigh) until its next request; 64K slots make that rare.
type neighCache struct {
	slots []neighSlot
	mask  uint64
}

type neighSlot struct {
	seq    atomic.Uint32
	port   atomic.Uint32
	a0, a1 atomic.Uint64
	mac    atomic.Uint64 // MAC in the low 48 bits, bit 63 = valid
}

const neighSlots = 1 << 16

func newNeighCache() *neighCache {
	return &neighCache{slots: make([]neighSlot, neighSlots), mask: neighSlots - 1}
}

func (n *neighCache) slot(a0, a1 uint64) *neighSlot {
	h := (a0 ^ a1*0x9E3779B97F4A7C15) * 0xFF51AFD7ED558CCD
	return &n.slots[(h>>40)&n.mask]
}

func macWord(b []byte) uint64 {
	_ = b[5]
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}

func putMAC(b []byte, m uint64) {
	_ = b[5]
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(m>>40), byte(m>>32), byte(m>>24), byte(m>>16), byte(m>>8), byte(m)
}

// learn records that client (a0, a1) is reached through mac on port. The
// common case — nothing changed — is four loads.
func (n *neighCache) learn(a0, a1 uint64, mac []byte, port int) {
	s := n.slot(a0, a1)
	m := macWord(mac) | 1<<63
	if s.mac.Load() == m && s.a1.Load() == a1 && s.a0.Load() == a0 && s.port.Load() == uint32(port) {
		return
	}
	q := s.seq.Load()
	if q&1 != 0 || !s.seq.CompareAndSwap(q, q+1) {
		return
	}
	s.a0.Store(a0)
	s.a1.Store(a1)
	s.port.Store(uint32(port))
	s.mac.Store(m)
	s.seq.Store(q + 2)
}

// lookup returns the MAC (low 48 bits) and port client (a0, a1) is reached
// through.
func (n *neighCache) lookup(a0, a1 uint64) (mac uint64, port int, ok bool) {
	s := n.slot(a0, a1)
	q := s.seq.Load()
	if q&1 != 0 {
		return 0, 0, false
	}
	m, x0, x1, pt := s.mac.Load(), s.a0.Load(), s.a1.Load(), s.port.Load()
	if s.seq.Load() != q || m>>63 == 0 || x0 != a0 || x1 != a1 {
		return 0, 0, false
	}
	return m & (1<<48 - 1), int(pt), true
}
