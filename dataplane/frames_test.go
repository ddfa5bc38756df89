package dataplane

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

var (
	macClient = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	macDir    = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	macRS1    = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}
	macRS2    = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x12}
	vip4      = netip.MustParseAddr("198.18.0.100")
	client4   = netip.MustParseAddr("198.18.0.10")
	macDirRS  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x22}
	dir4      = netip.MustParseAddr("198.18.0.2")
	dirRS4    = netip.MustParseAddr("198.19.0.1")
	vip6      = netip.MustParseAddr("2001:db8::100")
	client6   = netip.MustParseAddr("2001:db8::10")
)

// frameSpec describes a test frame; gopacket builds it with real checksums.
type frameSpec struct {
	vlan     uint16 // 0 = untagged
	src, dst netip.Addr
	proto    uint8
	sport    uint16
	dport    uint16
	flags    uint8 // TCP flags
	payload  int
}

func buildFrame(tb testing.TB, s frameSpec) []byte {
	tb.Helper()
	eth := &layers.Ethernet{SrcMAC: macClient, DstMAC: macDir, EthernetType: layers.EthernetTypeIPv4}
	var ls []gopacket.SerializableLayer
	ls = append(ls, eth)
	if s.vlan != 0 {
		eth.EthernetType = layers.EthernetTypeDot1Q
		et := layers.EthernetTypeIPv4
		if s.src.Is6() {
			et = layers.EthernetTypeIPv6
		}
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: s.vlan, Type: et})
	} else if s.src.Is6() {
		eth.EthernetType = layers.EthernetTypeIPv6
	}
	var netl gopacket.NetworkLayer
	if s.src.Is4() {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Flags: layers.IPv4DontFragment,
			Protocol: layers.IPProtocol(s.proto), SrcIP: s.src.AsSlice(), DstIP: s.dst.AsSlice()}
		netl = ip
		ls = append(ls, ip)
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocol(s.proto),
			SrcIP: s.src.AsSlice(), DstIP: s.dst.AsSlice()}
		netl = ip
		ls = append(ls, ip)
	}
	switch s.proto {
	case ProtoTCP:
		t := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport), Seq: 1000, Window: 64240,
			SYN: s.flags&TCPSyn != 0, ACK: s.flags&TCPAck != 0, FIN: s.flags&TCPFin != 0, RST: s.flags&TCPRst != 0}
		if s.flags&TCPAck != 0 {
			t.Ack = 2000
		}
		_ = t.SetNetworkLayerForChecksum(netl)
		ls = append(ls, t)
	case ProtoUDP:
		u := &layers.UDP{SrcPort: layers.UDPPort(s.sport), DstPort: layers.UDPPort(s.dport)}
		_ = u.SetNetworkLayerForChecksum(netl)
		ls = append(ls, u)
	case ProtoICMP:
		ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 1})
	case ProtoICMPv6:
		ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}
		_ = ic.SetNetworkLayerForChecksum(netl)
		ls = append(ls, ic, &layers.ICMPv6Echo{Identifier: 1, SeqNumber: 1})
	}
	ls = append(ls, gopacket.Payload(make([]byte, s.payload)))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatalf("serialize %+v: %v", s, err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func tcp4(sport uint16, flags uint8) frameSpec {
	return frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: sport, dport: 80, flags: flags}
}
