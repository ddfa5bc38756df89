package bpf

import (
	"net"
	"net/netip"
	"testing"

	"github.com/asavie/xdp"
	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/xvs-lb/xvs/internal/netlab"
)

// XDP verdicts (enum xdp_action).
const (
	xdpPass     = 2
	xdpRedirect = 4
)

var (
	clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	dirMAC    = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	vip4      = netip.MustParseAddr("198.18.0.100")
	vip6      = netip.MustParseAddr("2001:db8::100")
	client4   = netip.MustParseAddr("198.18.0.10")
	client6   = netip.MustParseAddr("2001:db8::10")
	real4     = netip.MustParseAddr("198.19.0.11")
	other4    = netip.MustParseAddr("198.18.0.2")
	dirAddr4  = netip.MustParseAddr("198.19.0.1")
)

// frame serializes layers with correct lengths and checksums.
func frame(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	for _, l := range ls {
		switch l := l.(type) {
		case *layers.TCP:
			for _, n := range ls {
				if nl, ok := n.(gopacket.NetworkLayer); ok {
					_ = l.SetNetworkLayerForChecksum(nl)
				}
			}
		case *layers.UDP:
			for _, n := range ls {
				if nl, ok := n.(gopacket.NetworkLayer); ok {
					_ = l.SetNetworkLayerForChecksum(nl)
				}
			}
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return buf.Bytes()
}

func eth(typ layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: clientMAC, DstMAC: dirMAC, EthernetType: typ}
}

func ip4(src, dst netip.Addr, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
}

func ip6(src, dst netip.Addr, next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
}

func tcp(sport, dport uint16) *layers.TCP {
	return &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), SYN: true, Window: 64240, Seq: 1}
}

func udp(sport, dport uint16) *layers.UDP {
	return &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
}

// xskOnLoopback binds an AF_XDP socket to lo in a fresh namespace so the
// XSKMAP has a live entry for queue 0, as the dataplane's would.
func xskOnLoopback(t *testing.T) *xdp.Socket {
	t.Helper()
	lab := netlab.New(t)
	h := lab.Host("xsk")
	var s *xdp.Socket
	err := h.Do(func() error {
		lo, err := net.InterfaceByName("lo")
		if err != nil {
			return err
		}
		s, err = xdp.NewSocket(lo.Index, 0, nil)
		return err
	})
	if err != nil {
		t.Fatalf("AF_XDP socket on lo: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestDirectorVerdicts(t *testing.T) {
	netlab.Require(t)
	d, err := LoadDirector()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.SetServices([]ServiceKey{
		{Addr: vip4, Proto: 6, Port: 80},
		{Addr: vip4, Proto: 17, Port: 53},
		{Addr: vip6, Proto: 6, Port: 443},
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetNATReals([]RealKey{{Addr: real4, Proto: 6, Port: 8080}, {Addr: real4, Proto: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetLocalAddrs([]netip.Addr{dirAddr4, vip4}); err != nil {
		t.Fatal(err)
	}
	s := xskOnLoopback(t)
	if err := d.RegisterSocket(0, s.FD()); err != nil {
		t.Fatal(err)
	}

	vrrpPayload := gopacket.Payload([]byte{0x21, 1, 100, 1, 0, 1, 0, 0, 198, 18, 0, 100})
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: clientMAC, SourceProtAddress: client4.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: vip4.AsSlice()}
	tcpToVIP := frame(t, eth(layers.EthernetTypeIPv4), ip4(client4, vip4, layers.IPProtocolTCP), tcp(40000, 80))

	tests := []struct {
		name  string
		frame []byte
		want  uint32
	}{
		{"tcp to VIP:80", tcpToVIP, xdpRedirect},
		{"udp to VIP:53", frame(t, eth(layers.EthernetTypeIPv4), ip4(client4, vip4, layers.IPProtocolUDP), udp(40000, 53), gopacket.Payload("q")), xdpRedirect},
		{"tcp to VIP on another port", frame(t, eth(layers.EthernetTypeIPv4), ip4(client4, vip4, layers.IPProtocolTCP), tcp(40000, 22)), xdpPass},
		{"udp to VIP:80 (wrong protocol)", frame(t, eth(layers.EthernetTypeIPv4), ip4(client4, vip4, layers.IPProtocolUDP), udp(40000, 80)), xdpPass},
		{"tcp to another address", frame(t, eth(layers.EthernetTypeIPv4), ip4(client4, other4, layers.IPProtocolTCP), tcp(40000, 80)), xdpPass},
		{"ICMP echo to VIP", frame(t, eth(layers.EthernetTypeIPv4), ip4(client4, vip4, layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}), xdpPass},
		{"ARP who-has VIP", frame(t, &layers.Ethernet{SrcMAC: clientMAC, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP}, arp), xdpPass},
		{"VRRP advert", frame(t, &layers.Ethernet{SrcMAC: clientMAC, DstMAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 0x12}, EthernetType: layers.EthernetTypeIPv4},
			&layers.IPv4{Version: 4, IHL: 5, TTL: 255, Protocol: 112, SrcIP: other4.AsSlice(), DstIP: net.IPv4(224, 0, 0, 18)}, vrrpPayload), xdpPass},
		{"IPv6 tcp to VIP6:443", frame(t, eth(layers.EthernetTypeIPv6), ip6(client6, vip6, layers.IPProtocolTCP), tcp(40000, 443)), xdpRedirect},
		{"IPv6 tcp to VIP6:80", frame(t, eth(layers.EthernetTypeIPv6), ip6(client6, vip6, layers.IPProtocolTCP), tcp(40000, 80)), xdpPass},
		{"802.1Q tcp to VIP:80", frame(t, eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4},
			ip4(client4, vip4, layers.IPProtocolTCP), tcp(40000, 80)), xdpRedirect},
		{"NAT reply from real server", frame(t, eth(layers.EthernetTypeIPv4), ip4(real4, client4, layers.IPProtocolTCP), tcp(8080, 40000)), xdpRedirect},
		{"from real server, other port", frame(t, eth(layers.EthernetTypeIPv4), ip4(real4, client4, layers.IPProtocolTCP), tcp(22, 40000)), xdpPass},
		{"health-check reply from real server to the director", frame(t, eth(layers.EthernetTypeIPv4), ip4(real4, dirAddr4, layers.IPProtocolTCP), tcp(8080, 40000)), xdpPass},
		{"ICMP error from NAT real server", frame(t, eth(layers.EthernetTypeIPv4), ip4(real4, client4, layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort)}, gopacket.Payload(make([]byte, 28))), xdpRedirect},
		{"ICMP echo reply from NAT real server", frame(t, eth(layers.EthernetTypeIPv4), ip4(real4, client4, layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoReply, 0), Id: 1, Seq: 1}), xdpPass},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := d.Program().Run(&ebpf.RunOptions{Data: tc.frame})
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("verdict = %d, want %d", got, tc.want)
			}
		})
	}

	// The any-port entry claims every port of the VIP.
	before, _ := d.Counters()
	otherPort := frame(t, eth(layers.EthernetTypeIPv4), ip4(client4, vip4, layers.IPProtocolTCP), tcp(40000, 22))
	if got, _ := d.Program().Run(&ebpf.RunOptions{Data: otherPort}); got != xdpPass {
		t.Fatalf("VIP:22 without any-port entry: verdict %d, want XDP_PASS", got)
	}
	if err := d.SetServices([]ServiceKey{{Addr: vip4, Proto: 6, Port: 0}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.Program().Run(&ebpf.RunOptions{Data: otherPort}); got != xdpRedirect {
		t.Fatalf("VIP:22 with any-port entry: verdict %d, want XDP_REDIRECT", got)
	}
	after, _ := d.Counters()
	if after.Redirected != before.Redirected+1 || after.Passed != before.Passed+1 {
		t.Fatalf("counters moved %+v -> %+v, want one pass and one redirect", before, after)
	}

	// Without a socket on the queue the packet goes to the kernel, counted.
	if err := d.UnregisterSocket(0); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.Program().Run(&ebpf.RunOptions{Data: tcpToVIP}); got != xdpPass {
		t.Fatalf("no socket: verdict %d, want XDP_PASS", got)
	}
	final, _ := d.Counters()
	if final.NoSocket != after.NoSocket+1 {
		t.Fatalf("no-socket counter %d -> %d, want +1", after.NoSocket, final.NoSocket)
	}
}

func TestDirectorMalformed(t *testing.T) {
	netlab.Require(t)
	d, err := LoadDirector()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.SetServices([]ServiceKey{{Addr: vip4, Proto: 6, Port: 80}, {Addr: vip6, Proto: 6, Port: 80}}); err != nil {
		t.Fatal(err)
	}
	full4 := frame(t, eth(layers.EthernetTypeIPv4), ip4(client4, vip4, layers.IPProtocolTCP), tcp(40000, 80))
	full6 := frame(t, eth(layers.EthernetTypeIPv6), ip6(client6, vip6, layers.IPProtocolTCP), tcp(40000, 80))
	badIHL := append([]byte(nil), full4...)
	badIHL[14] = 0x43 // version 4, IHL 3

	cases := []struct {
		name string
		data []byte
	}{
		{"ethernet only", full4[:14]},
		{"truncated IPv4", full4[:14+12]},
		{"IPv4 IHL below 5", badIHL},
		{"truncated TCP", full4[:14+20+10]},
		{"truncated IPv6", full6[:14+30]},
		{"truncated TCP over IPv6", full6[:14+40+8]},
		{"truncated VLAN tag", frame(t, eth(layers.EthernetTypeDot1Q))[:16]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, err := d.Counters()
			if err != nil {
				t.Fatal(err)
			}
			got, err := d.Program().Run(&ebpf.RunOptions{Data: tc.data})
			if err != nil {
				t.Fatal(err)
			}
			if got != xdpPass {
				t.Fatalf("verdict %d, want XDP_PASS", got)
			}
			after, _ := d.Counters()
			if after.Malformed != before.Malformed+1 {
				t.Fatalf("malformed counter %d -> %d, want +1", before.Malformed, after.Malformed)
			}
		})
	}
}
