package dataplane

import "encoding/binary"

// IP-in-IP forwarding (lb_kind TUN) and the ICMP "too big" answers it needs.

const (
	protoIPIP = 4  // IPv4 in IPv4 (RFC 2003)
	protoIPv6 = 41 // IPv6 in IPv4 (RFC 4213)
	tunTTL    = 64
)

// tunnel wraps the packet in an outer IPv4 header written into the headroom
// before it: protocol 4 (41 for an IPv6 inner packet), source the egress
// interface's address, destination the real server, TTL 64, DF copied from
// the inner packet (always set for IPv6, which routers never fragment), a
// fresh ID. A real server with an IPv6 address gets an outer IPv6 header
// instead (tunnel6). The Ethernet header moves in front of it with the real
// server's MAC. A packet that would exceed the egress MTU is answered
// instead: with DF, ICMP fragmentation-needed (ICMPv6 packet-too-big) to
// the client, out of the receiving port (icmp true); without DF it is
// dropped as too_big (IPVS would fragment the outer packet; xvs does not
// fragment).
func (f *forwarder) tunnel(buf []byte, off int, p *Packet, d *Dest) (out txOut, icmp bool, r DropReason) {
	frame := buf[off:]
	l3 := int(p.L3)
	inner := int(p.End) - l3
	pi := &f.ports[d.port]
	mtu := d.mtu
	if mtu == 0 {
		mtu = pi.mtu
	}
	ip := frame[l3:]
	df := true
	var tos byte
	proto := byte(protoIPv6)
	if !p.IPv6 {
		df = ip[6]&0x40 != 0
		tos = ip[1]
		proto = protoIPIP
	} else {
		tos = byte(binary.BigEndian.Uint16(ip[0:2]) >> 4)
	}
	outer := ipv4MinHeader
	if d.tun6 {
		outer = ipv6HeaderLen
	}
	if inner+outer > mtu {
		if !df {
			return txOut{}, false, DropTooBig
		}
		out, r = f.tooBig(buf, off, p, mtu-outer)
		return out, r == DropNone, r
	}
	if off < outer {
		return txOut{}, false, DropHeadroom
	}
	if !decTTL(frame, p) { // the inner packet's: see emit
		out, r = f.timeExceeded(buf, off, p)
		return out, r == DropNone, r
	}
	if d.tun6 {
		out, r = f.tunnel6(buf, off, l3, inner, tos, proto, pi, d)
		return out, false, r
	}
	src := pi.src4
	if d.hasSrc {
		src = d.src4
	} else if !pi.has4 {
		return txOut{}, false, DropMethod // no IPv4 address to tunnel from
	}
	start := off - ipv4MinHeader
	nb := buf[start : start+l3+ipv4MinHeader+inner]
	if l3 == ethHeaderLen {
		// Untagged: a fresh Ethernet header; the old one's bytes lie
		// under the outer IP header.
		_ = nb[ethHeaderLen+ipv4MinHeader-1]
		copy(nb[ethDst:ethDst+6], d.MAC[:])
		copy(nb[ethSrc:ethSrc+6], pi.mac[:])
		nb[12], nb[13] = 0x08, 0x00
	} else {
		copy(nb[:l3], frame[:l3]) // Ethernet and VLAN tag move to the front
		binary.BigEndian.PutUint16(nb[l3-2:], etherTypeIPv4)
		copy(nb[ethDst:ethDst+6], d.MAC[:])
		copy(nb[ethSrc:ethSrc+6], pi.mac[:])
	}
	f.ipID++
	var flags uint32
	if df {
		flags = 0x4000
	}
	// The header is written in three wide stores and its checksum summed
	// from the values, not read back: narrow stores followed by the
	// checksum's wide loads would stall store forwarding.
	tot := uint32(inner + ipv4MinHeader)
	sa := binary.BigEndian.Uint32(src[:])
	da := binary.BigEndian.Uint32(d.ip[12:16])
	sum := (0x4500 | uint32(tos)) + tot + uint32(f.ipID) + flags + (tunTTL<<8 | uint32(proto)) +
		sa>>16 + sa&0xFFFF + da>>16 + da&0xFFFF
	sum = sum&0xFFFF + sum>>16
	sum = sum&0xFFFF + sum>>16
	cs := uint64(^uint16(sum))
	oh := nb[l3 : l3+ipv4MinHeader]
	binary.BigEndian.PutUint64(oh[0:], 0x45<<56|uint64(tos)<<48|uint64(tot)<<32|uint64(f.ipID)<<16|uint64(flags))
	binary.BigEndian.PutUint64(oh[8:], tunTTL<<56|uint64(proto)<<48|cs<<32|uint64(sa))
	binary.BigEndian.PutUint32(oh[16:], da)
	return txOut{off: start, n: len(nb), port: d.port}, false, DropNone
}

// tunnel6 writes the outer IPv6 header of a packet to an IPv6 real server
// (RFC 2473, as IPVS's ip6_tnl tunnels): traffic class copied from the
// inner packet, flow label 0, next header 4 (IPv4 inner) or 41 (IPv6
// inner), hop limit 64, source the route's preferred source or else the
// egress interface's address, destination the real server; no extension
// headers. The caller has checked MTU, headroom and TTL.
func (f *forwarder) tunnel6(buf []byte, off, l3, inner int, tc, proto byte, pi *portInfo, d *Dest) (txOut, DropReason) {
	frame := buf[off:]
	src := &pi.src6
	if d.hasSrc6 {
		src = &d.src6
	} else if !pi.has6 {
		return txOut{}, DropMethod // no IPv6 address to tunnel from
	}
	start := off - ipv6HeaderLen
	nb := buf[start : start+l3+ipv6HeaderLen+inner]
	if l3 != ethHeaderLen {
		copy(nb[:l3], frame[:l3]) // Ethernet and VLAN tag move to the front
	}
	copy(nb[ethDst:ethDst+6], d.MAC[:])
	copy(nb[ethSrc:ethSrc+6], pi.mac[:])
	binary.BigEndian.PutUint16(nb[l3-2:], etherTypeIPv6)
	oh := nb[l3 : l3+ipv6HeaderLen]
	binary.BigEndian.PutUint64(oh[0:], uint64(6<<28|uint32(tc)<<20)<<32|uint64(inner)<<16|uint64(proto)<<8|tunTTL)
	copy(oh[8:24], src[:])
	copy(oh[24:40], d.ip[:])
	return txOut{off: start, n: len(nb), port: d.port}, DropNone
}

// ICMP quoting limits: RFC 1812 §4.3.2.3 (576-byte IPv4 error datagrams)
// and RFC 4443 §2.4 (an ICMPv6 error fits the IPv6 minimum MTU).
const (
	icmpMaxLen        = 576
	icmp6MaxLen       = 1280
	icmpTooBig        = 3<<8 | 4 // destination unreachable, fragmentation needed
	icmpTimeExceeded  = 11 << 8  // time exceeded in transit
	icmp6TooBig       = 2        // packet too big
	icmp6TimeExceeded = 3        // hop limit exceeded in transit (code 0)
	icmpHdrLen        = 8
	icmpOutTTL        = 64
	icmpTOSCtrl       = 0xC0 // internetwork control, as Linux sends ICMP errors
	icmpRoomV4        = ipv4MinHeader + icmpHdrLen
	icmpRoomV6        = ipv6HeaderLen + icmpHdrLen
	// icmpPerSecond bounds the ICMP errors one worker sends per second,
	// as the kernel's icmp_msgs_per_sec (1000) bounds its own: a flood of
	// TTL-1 or oversized packets must not turn the director into an
	// ICMP generator at line rate.
	icmpPerSecond = 1000
)

// tooBig answers a packet too big for the tunnel: ICMP fragmentation-needed
// (IPv4) or packet-too-big (IPv6) announcing mtu.
func (f *forwarder) tooBig(buf []byte, off int, p *Packet, mtu int) (txOut, DropReason) {
	out, r := f.icmpError(buf, off, p, icmpTooBig, icmp6TooBig, uint32(mtu), DropTooBig)
	if r == DropNone {
		f.q.TooBig.Add(1)
	}
	return out, r
}

// timeExceeded answers a packet that arrived with a TTL (hop limit) of 1
// or 0: ICMP time-exceeded, as IPVS sends when it would forward it with 0.
func (f *forwarder) timeExceeded(buf []byte, off int, p *Packet) (txOut, DropReason) {
	out, r := f.icmpError(buf, off, p, icmpTimeExceeded, icmp6TimeExceeded, 0, DropTTL)
	if r == DropNone {
		f.q.TimeExceeded.Add(1)
	}
	return out, r
}

// icmpError turns the frame into an ICMP error about the packet, to its
// source, from its destination (the VIP, as IPVS answers: the kernel sends
// a locally delivered packet's errors from the address it was sent to):
// type and code t4 (IPv4) or type t6 code 0 (IPv6), the header's last four
// bytes info, quoting the start of the packet. The new headers go into the
// headroom in front of the original datagram, which stays where it is and
// is cut to the quote; the frame leaves by the port it came in on, back to
// the MAC it came from. Over the rate limit it is dropped as limited.
func (f *forwarder) icmpError(buf []byte, off int, p *Packet, t4 uint16, t6 uint8, info uint32, limited DropReason) (txOut, DropReason) {
	frame := buf[off:]
	l3 := int(p.L3)
	room, maxLen := icmpRoomV4, icmpMaxLen
	if p.IPv6 {
		room, maxLen = icmpRoomV6, icmp6MaxLen
	}
	if off < room {
		return txOut{}, DropHeadroom
	}
	if f.icmpAt != f.now {
		f.icmpAt, f.icmpLeft = f.now, icmpPerSecond
	}
	if f.icmpLeft == 0 {
		f.q.ICMPLimited.Add(1)
		return txOut{}, limited
	}
	f.icmpLeft--
	quote := min(int(p.End)-l3, maxLen-room)
	start := off - room
	nb := buf[start : start+l3+room+quote]
	copy(nb[:l3], frame[:l3])
	// Back to where it came from: its source MAC, our MAC as source.
	copy(nb[ethDst:ethDst+6], frame[ethSrc:ethSrc+6])
	copy(nb[ethSrc:ethSrc+6], f.ports[f.port].mac[:])
	orig := frame[l3:]
	ip := nb[l3:]
	if !p.IPv6 {
		ip[0], ip[1] = 0x45, icmpTOSCtrl
		binary.BigEndian.PutUint16(ip[2:], uint16(room+quote))
		f.ipID++
		binary.BigEndian.PutUint16(ip[4:], f.ipID)
		ip[6], ip[7], ip[8], ip[9] = 0, 0, icmpOutTTL, ProtoICMP
		ip[10], ip[11] = 0, 0
		copy(ip[12:16], orig[16:20]) // from the VIP
		copy(ip[16:20], orig[12:16]) // to the client
		binary.BigEndian.PutUint16(ip[10:], Checksum(ip[:ipv4MinHeader], 0))
		ic := ip[ipv4MinHeader : room+quote]
		binary.BigEndian.PutUint16(ic[0:], t4)
		ic[2], ic[3] = 0, 0
		binary.BigEndian.PutUint32(ic[4:], info)
		binary.BigEndian.PutUint16(ic[2:], Checksum(ic, 0))
	} else {
		var src, dst [16]byte
		copy(src[:], orig[24:40])
		copy(dst[:], orig[8:24])
		binary.BigEndian.PutUint32(ip[0:], 6<<28)
		binary.BigEndian.PutUint16(ip[4:], uint16(icmpHdrLen+quote))
		ip[6], ip[7] = ProtoICMPv6, icmpOutTTL
		copy(ip[8:24], src[:])
		copy(ip[24:40], dst[:])
		ic := ip[ipv6HeaderLen : room+quote]
		ic[0], ic[1], ic[2], ic[3] = t6, 0, 0, 0
		binary.BigEndian.PutUint32(ic[4:], info)
		binary.BigEndian.PutUint16(ic[2:], Checksum(ic, PseudoHeaderSum(src[:], dst[:], ProtoICMPv6, len(ic))))
	}
	return txOut{off: start, n: len(nb), port: f.port}, DropNone
}
