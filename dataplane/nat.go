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

// natOutKey is the reply index key of a flow: client address and port, real
// server address and port.
func natOutKey(proto uint8, c0, c1 uint64, cport uint16, d *Dest, rport uint16) connKey {
	return makeKey(proto, kindOut, c0, c1, cport, d.a0, d.a1, rport)
}

// natIndex creates (fresh: a new flow) or refreshes the reply index entry of
// flow k to expire at exp.
func (f *forwarder) natIndex(k *connKey, d *Dest, exp, now uint32, fresh bool) {
	rk := natOutKey(uint8(k.w0), k.c0, k.c1, uint16(k.w0>>16), d, natPort(d, uint16(k.w0>>32)))
	if i, c, id := f.table.lookup(&rk, now); i >= 0 {
		if !fresh && id == d.ID {
			f.table.refresh(i, c, exp-now, now)
			return
		}
		f.table.reap(i, c)
	}
	if !f.table.insert(&rk, d.ID, stNATOut, exp, now) {
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
// port, updating the IPv4 header checksum and the TCP/UDP checksum
// (pseudo-header address and port) incrementally.
func natRewriteDst(frame []byte, p *Packet, d *Dest) {
	ip := frame[p.L3:]
	l4 := frame[p.L4:]
	vport := p.DstPort
	rport := natPort(d, vport)
	co := l4CsumOff(p.Proto, l4, p.IPv6)
	var cs uint16
	if co >= 0 {
		cs = binary.BigEndian.Uint16(l4[co:])
	}
	if !p.IPv6 {
		old := binary.BigEndian.Uint32(ip[16:])
		nw := binary.BigEndian.Uint32(d.ip[12:])
		binary.BigEndian.PutUint32(ip[16:], nw)
		binary.BigEndian.PutUint16(ip[10:], ChecksumUpdate32(binary.BigEndian.Uint16(ip[10:]), old, nw))
		cs = ChecksumUpdate32(cs, old, nw)
	} else {
		cs = ChecksumUpdateBytes(cs, ip[24:40], d.ip[:])
		copy(ip[24:40], d.ip[:])
	}
	binary.BigEndian.PutUint16(l4[2:], rport)
	if co >= 0 {
		putL4Csum(l4[co:], p.Proto, ChecksumUpdate16(cs, vport, rport))
	}
}

// natRewriteSrc turns a reply from d's address and port rport into one
// from VIP:vport.
func natRewriteSrc(frame []byte, p *Packet, svc *Service, rport, vport uint16) {
	ip := frame[p.L3:]
	l4 := frame[p.L4:]
	co := l4CsumOff(p.Proto, l4, p.IPv6)
	var cs uint16
	if co >= 0 {
		cs = binary.BigEndian.Uint16(l4[co:])
	}
	if !p.IPv6 {
		old := binary.BigEndian.Uint32(ip[12:])
		nw := binary.BigEndian.Uint32(svc.vip[12:])
		binary.BigEndian.PutUint32(ip[12:], nw)
		binary.BigEndian.PutUint16(ip[10:], ChecksumUpdate32(binary.BigEndian.Uint16(ip[10:]), old, nw))
		cs = ChecksumUpdate32(cs, old, nw)
	} else {
		cs = ChecksumUpdateBytes(cs, ip[8:24], svc.vip[:])
		copy(ip[8:24], svc.vip[:])
	}
	binary.BigEndian.PutUint16(l4[0:], vport)
	if co >= 0 {
		putL4Csum(l4[co:], p.Proto, ChecksumUpdate16(cs, rport, vport))
	}
}

// natReply handles a TCP/UDP packet from a NAT real server: ok false when it
// belongs to no NAT flow (it then takes the ordinary path: a real server
// may also be a client of a VIP).
func (f *forwarder) natReply(frame []byte, off int, p *Packet, k *connKey, snap *Snapshot, now uint32) (txOut, DropReason, bool) {
	// k is keyed as if the packet were a request: c = real server, v = client.
	cport, rport := p.DstPort, p.SrcPort
	rk := makeKey(p.Proto, kindOut, k.v0, k.v1, cport, k.c0, k.c1, rport)
	ri, rc, id := f.table.lookup(&rk, now)
	if ri < 0 {
		return txOut{}, DropNone, false
	}
	d := snap.DestByID(id)
	if d == nil || d.svc.Method != NAT || d.a0 != k.c0 || d.a1 != k.c1 {
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
	fk := makeKey(p.Proto, kindConn, k.v0, k.v1, cport, svc.v0, svc.v1, vport)
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
		return txOut{}, DropNoConn, true
	}
	ns := StateUDP
	if p.Proto == ProtoTCP {
		ns = nextTCPStateIn(tcpOutput, ctlState(fc), p.TCPFlags)
	}
	if f.table.touch(fi, fc, fid, ns, now) {
		f.table.refresh(ri, rc, f.table.timeout(ns), now)
	}
	mac, port, ok := f.neigh.lookup(k.v0, k.v1)
	if !ok {
		return txOut{}, DropNoNeigh, true
	}
	if !decTTL(frame, p) {
		return txOut{}, DropTTL, true
	}
	natRewriteSrc(frame, p, svc, rport, vport)
	putMAC(frame[ethDst:], mac)
	copy(frame[ethSrc:ethSrc+6], f.ports[port].mac[:])
	ps := f.pending(d.ID)
	ps.pkts++
	ps.bytes += uint64(len(frame))
	return txOut{off: off, n: len(frame), port: port}, DropNone, true
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
	rk := makeKey(q.Proto, kindOut, c0, c1, cport, r0, r1, rport)
	ri, _, id := f.table.lookup(&rk, now)
	if ri < 0 {
		return txOut{}, DropNoConn
	}
	d := snap.DestByID(id)
	if d == nil || d.svc.Method != NAT {
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
