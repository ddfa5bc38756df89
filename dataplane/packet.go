package dataplane

import "encoding/binary"

// DropReason says why a packet was dropped. Every drop on the packet path is
// counted under exactly one reason.
type DropReason uint8

// Drop reasons. The parse reasons come first; the forwarding ones after.
const (
	DropNone      DropReason = iota
	DropShort                // frame shorter than an Ethernet header
	DropVLAN                 // more than one 802.1Q tag, or a truncated tag
	DropNotIP                // EtherType is neither IPv4 nor IPv6
	DropIPHeader             // bad IP version, IHL or truncated IP header
	DropIPLength             // IP total/payload length disagrees with the frame
	DropFragment             // IPv4 fragment: no L4 ports to balance on
	DropIPv6Ext              // IPv6 extension header (not supported)
	DropL4Header             // truncated or malformed TCP/UDP/ICMP header
	DropL4Proto              // L4 protocol the balancer does not serve
	DropNoService            // no service for (VIP, proto, port)
	DropInactive             // service not active on this director (VRRP backup)
	DropNoConn               // non-SYN TCP packet without a conn entry
	DropNoDest               // the scheduler found no real server
	DropDestGone             // conn entry's real server was removed (expire_nodest_conn)
	DropMethod               // forwarding method not implemented or not possible (TUN without an IPv4 source)
	DropTxFull               // TX ring full after retries
	DropTooBig               // TUN: too big for the tunnel and DF clear (xvs does not fragment)
	DropHeadroom             // no headroom left for a header to prepend
	DropNoNeigh              // NAT reply: the client's next hop is not known (no request seen)
	DropTxError              // sending on another port's socket failed
	DropTTL                  // TTL (hop limit) would reach 0 here, as at any router
	numDropReasons
)

var dropNames = [numDropReasons]string{
	"none", "short", "vlan", "not_ip", "ip_header", "ip_length", "fragment",
	"ipv6_ext", "l4_header", "l4_proto", "no_service", "inactive", "no_conn",
	"no_dest", "dest_gone", "method", "tx_full", "too_big", "headroom", "no_neigh",
	"tx_error", "ttl_exceeded",
}

// String names the reason as the metrics label uses it.
func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// NumDropReasons is the number of defined drop reasons (for counter arrays).
const NumDropReasons = int(numDropReasons)

// EtherTypes and IP protocol numbers the parser knows.
const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86DD
	etherTypeVLAN = 0x8100

	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// TCP flag bits as they sit in byte 13 of the TCP header.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPAck = 0x10
)

// Packet is the result of the validity gate: offsets into the frame and the
// few fields the balancer decides on. It holds no slice, so it lives on the
// stack and costs nothing to the GC. Offsets are valid only for the frame
// that was parsed.
type Packet struct {
	L3       uint16 // offset of the IP header
	L4       uint16 // offset of the TCP/UDP/ICMP header
	End      uint16 // end of the IP datagram (frame padding excluded)
	EthType  uint16 // EtherType after the optional VLAN tag
	VLAN     bool   // one 802.1Q tag present
	IPv6     bool
	Proto    uint8 // L4 protocol
	TCPFlags uint8
	SrcPort  uint16 // ICMP: 0
	DstPort  uint16 // ICMP: type<<8 | code
}

// Frame layout constants (RFC 791, RFC 8200, RFC 793, RFC 768).
const (
	ethHeaderLen  = 14
	vlanTagLen    = 4
	ipv4MinHeader = 20
	ipv6HeaderLen = 40
	tcpMinHeader  = 20
	udpHeaderLen  = 8
	icmpMinHeader = 8
)

// Parse is the one validity gate of the packet path: it checks every length
// the forwarders rely on, so that after it returns DropNone they may index the
// frame at the returned offsets without bound checks failing. It reads only
// the bytes it needs and copies nothing.
func Parse(frame []byte, p *Packet) DropReason {
	if len(frame) < ethHeaderLen {
		return DropShort
	}
	if len(frame) > 0xFFFF {
		return DropIPLength
	}
	off := 12
	et := binary.BigEndian.Uint16(frame[off:])
	p.VLAN = false
	if et == etherTypeVLAN {
		if len(frame) < ethHeaderLen+vlanTagLen {
			return DropVLAN
		}
		off += vlanTagLen
		et = binary.BigEndian.Uint16(frame[off:])
		if et == etherTypeVLAN || et == 0x88A8 {
			return DropVLAN
		}
		p.VLAN = true
	}
	off += 2
	p.EthType = et
	p.L3 = uint16(off)
	p.TCPFlags = 0
	var l4 int
	var end int
	switch et {
	case etherTypeIPv4:
		ip := frame[off:]
		if len(ip) < ipv4MinHeader || ip[0]>>4 != 4 {
			return DropIPHeader
		}
		ihl := int(ip[0]&0x0F) * 4
		if ihl < ipv4MinHeader || len(ip) < ihl {
			return DropIPHeader
		}
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if total < ihl || total > len(ip) {
			return DropIPLength
		}
		// MF set or a fragment offset: only whole datagrams carry ports.
		if binary.BigEndian.Uint16(ip[6:])&0x3FFF != 0 {
			return DropFragment
		}
		p.IPv6 = false
		p.Proto = ip[9]
		l4 = off + ihl
		end = off + total
	case etherTypeIPv6:
		ip := frame[off:]
		if len(ip) < ipv6HeaderLen || ip[0]>>4 != 6 {
			return DropIPHeader
		}
		payload := int(binary.BigEndian.Uint16(ip[4:]))
		if ipv6HeaderLen+payload > len(ip) {
			return DropIPLength
		}
		p.IPv6 = true
		p.Proto = ip[6]
		l4 = off + ipv6HeaderLen
		end = l4 + payload
	default:
		return DropNotIP
	}
	seg := frame[l4:end]
	switch p.Proto {
	case ProtoTCP:
		if len(seg) < tcpMinHeader {
			return DropL4Header
		}
		doff := int(seg[12]>>4) * 4
		if doff < tcpMinHeader || doff > len(seg) {
			return DropL4Header
		}
		p.SrcPort = binary.BigEndian.Uint16(seg)
		p.DstPort = binary.BigEndian.Uint16(seg[2:])
		p.TCPFlags = seg[13]
	case ProtoUDP:
		if len(seg) < udpHeaderLen {
			return DropL4Header
		}
		ulen := int(binary.BigEndian.Uint16(seg[4:]))
		if ulen < udpHeaderLen || ulen > len(seg) {
			return DropL4Header
		}
		p.SrcPort = binary.BigEndian.Uint16(seg)
		p.DstPort = binary.BigEndian.Uint16(seg[2:])
	case ProtoICMP, ProtoICMPv6:
		if p.IPv6 != (p.Proto == ProtoICMPv6) {
			return DropL4Proto
		}
		if len(seg) < icmpMinHeader {
			return DropL4Header
		}
		p.SrcPort = 0
		p.DstPort = uint16(seg[0])<<8 | uint16(seg[1])
	case 0, 43, 44, 50, 51, 60, 135, 139, 140: // IPv6 extension headers
		if p.IPv6 {
			return DropIPv6Ext
		}
		return DropL4Proto
	default:
		return DropL4Proto
	}
	p.L4 = uint16(l4)
	p.End = uint16(end)
	return DropNone
}

// addrWords returns the packet's source and destination addresses as the
// conn table's key words: IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d), loaded
// little-endian from the frame. Call only after Parse returned DropNone.
func (p *Packet) addrWords(frame []byte) (s0, s1, d0, d1 uint64) {
	ip := frame[p.L3:]
	if p.IPv6 {
		_ = ip[39]
		return binary.LittleEndian.Uint64(ip[8:]), binary.LittleEndian.Uint64(ip[16:]),
			binary.LittleEndian.Uint64(ip[24:]), binary.LittleEndian.Uint64(ip[32:])
	}
	_ = ip[19]
	s1 = v4Mapped | uint64(binary.LittleEndian.Uint32(ip[12:]))<<32
	d1 = v4Mapped | uint64(binary.LittleEndian.Uint32(ip[16:]))<<32
	return 0, s1, 0, d1
}

// v4Mapped is bytes 8..11 of ::ffff:0:0 loaded little-endian.
const v4Mapped = 0xFFFF << 16

// SrcMAC and DstMAC offsets in the Ethernet header.
const (
	ethDst = 0
	ethSrc = 6
)
