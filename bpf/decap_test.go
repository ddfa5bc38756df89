//go:build linux

package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// decapXDPPass is XDP_PASS (enum xdp_action).
const decapXDPPass = 2

var (
	decapLocal   = netip.MustParseAddr("198.18.0.11")  // the real server's own address
	decapOther   = netip.MustParseAddr("198.18.0.12")  // another real server
	decapVIP     = netip.MustParseAddr("198.18.0.100") // a configured VIP
	decapNotVIP  = netip.MustParseAddr("198.18.0.101")
	decapVIP6    = netip.MustParseAddr("2001:db8::100")
	decapNotVIP6 = netip.MustParseAddr("2001:db8::101")
	decapClient  = netip.MustParseAddr("198.18.0.10")
	decapClient6 = netip.MustParseAddr("2001:db8::10")
	decapDir     = netip.MustParseAddr("198.18.0.2")
	decapLocal6  = netip.MustParseAddr("2001:db8::11") // the real server's own IPv6 address
	decapOther6  = netip.MustParseAddr("2001:db8::12")
	decapDir6    = netip.MustParseAddr("2001:db8::2")
	dcDirMAC     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	dcRSMAC      = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}
)

// dcLoadForTest loads the program with the fixture's VIPs and local
// address, or skips when the process may not load BPF programs.
func dcLoadForTest(tb testing.TB) *Decap {
	tb.Helper()
	d, err := LoadDecap()
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			tb.Skipf("loading BPF programs needs root or CAP_BPF+CAP_NET_ADMIN: %v", err)
		}
		tb.Fatalf("LoadDecap: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	for _, a := range []netip.Addr{decapVIP, decapVIP6} {
		if err := d.AddVIP(a); err != nil {
			tb.Fatal(err)
		}
	}
	if err := d.SetLocals([]netip.Addr{decapLocal, decapLocal6}); err != nil {
		tb.Fatal(err)
	}
	return d
}

func dcSerialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		tb.Fatalf("serialize: %v", err)
	}
	return bytes.Clone(buf.Bytes())
}

func dcEth(t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: dcDirMAC, DstMAC: dcRSMAC, EthernetType: t}
}

func dcIP4(src, dst netip.Addr, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Flags: layers.IPv4DontFragment,
		Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
}

// dcInnerUDP is the client's packet as the director received it.
func dcInnerUDP(tb testing.TB, dst netip.Addr) []byte {
	tb.Helper()
	return dcInnerUDPTOS(tb, dst, 0)
}

// dcInnerUDPTOS is dcInnerUDP with a TOS / traffic class (ECN in its low
// two bits).
func dcInnerUDPTOS(tb testing.TB, dst netip.Addr, tos uint8) []byte {
	tb.Helper()
	if dst.Is6() {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, TrafficClass: tos,
			SrcIP: decapClient6.AsSlice(), DstIP: dst.AsSlice()}
		udp := &layers.UDP{SrcPort: 40000, DstPort: 9999}
		udp.SetNetworkLayerForChecksum(ip)
		return dcSerialize(tb, ip, udp, gopacket.Payload("hello over 6in4"))
	}
	ip := dcIP4(decapClient, dst, layers.IPProtocolUDP)
	ip.TOS = tos
	udp := &layers.UDP{SrcPort: 40000, DstPort: 9999}
	udp.SetNetworkLayerForChecksum(ip)
	return dcSerialize(tb, ip, udp, gopacket.Payload("hello over ipip"))
}

// tunnel wraps inner in Ethernet + an outer IPv4 header to outerDst.
func dcTunnel(tb testing.TB, outerDst netip.Addr, inner []byte, proto layers.IPProtocol) []byte {
	tb.Helper()
	return dcSerialize(tb, dcEth(layers.EthernetTypeIPv4), dcIP4(decapDir, outerDst, proto), gopacket.Payload(inner))
}

// dcTunnelTOS is dcTunnel with the outer header's TOS set.
func dcTunnelTOS(tb testing.TB, outerDst netip.Addr, inner []byte, proto layers.IPProtocol, tos uint8) []byte {
	tb.Helper()
	ip := dcIP4(decapDir, outerDst, proto)
	ip.TOS = tos
	return dcSerialize(tb, dcEth(layers.EthernetTypeIPv4), ip, gopacket.Payload(inner))
}

// dcTunnel6 wraps inner in Ethernet + an outer IPv6 header to outerDst
// with the given next header and traffic class, as the director's 4in6 and
// 6in6 (RFC 2473) do.
func dcTunnel6(tb testing.TB, outerDst netip.Addr, inner []byte, next layers.IPProtocol, tc uint8) []byte {
	tb.Helper()
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, TrafficClass: tc,
		SrcIP: decapDir6.AsSlice(), DstIP: outerDst.AsSlice()}
	return dcSerialize(tb, dcEth(layers.EthernetTypeIPv6), ip, gopacket.Payload(inner))
}

// decapsulated is what the program should produce from a tunnelled frame:
// the same MACs, the inner packet's EtherType, the inner packet.
func dcDecapsulated(inner []byte, t layers.EthernetType) []byte {
	out := make([]byte, 14, 14+len(inner))
	copy(out[0:6], dcRSMAC)
	copy(out[6:12], dcDirMAC)
	binary.BigEndian.PutUint16(out[12:], uint16(t))
	return append(out, inner...)
}

func dcChecksumOK(h []byte) bool {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

func dcFixChecksum(h []byte) {
	ihl := int(h[0]&0x0f) * 4
	h[10], h[11] = 0, 0
	var sum uint32
	for i := 0; i < ihl; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
}

type decapCase struct {
	name    string
	frame   []byte
	want    []byte // the frame the stack receives
	counter string // which counter must rise by one
}

func decapCases(tb testing.TB) []decapCase {
	in4 := dcInnerUDP(tb, decapVIP)
	in6 := dcInnerUDP(tb, decapVIP6)
	ipip := dcTunnel(tb, decapLocal, in4, layers.IPProtocolIPv4)

	// An outer header with 4 bytes of options (a no-op and an end of list).
	withOpts := dcSerialize(tb, dcEth(layers.EthernetTypeIPv4), &layers.IPv4{Version: 4, IHL: 6, TTL: 64,
		Protocol: layers.IPProtocolIPv4, SrcIP: decapDir.AsSlice(), DstIP: decapLocal.AsSlice(),
		Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}},
		gopacket.Payload(in4))

	tcp := func() []byte {
		ip := dcIP4(decapClient, decapVIP, layers.IPProtocolTCP)
		t := &layers.TCP{SrcPort: 40000, DstPort: 80, SYN: true, Window: 65535}
		t.SetNetworkLayerForChecksum(ip)
		return dcSerialize(tb, dcEth(layers.EthernetTypeIPv4), ip, t)
	}()
	arp := dcSerialize(tb, dcEth(layers.EthernetTypeARP), &layers.ARP{AddrType: layers.LinkTypeEthernet,
		Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4, Operation: layers.ARPRequest,
		SourceHwAddress: dcDirMAC, SourceProtAddress: decapDir.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: decapVIP.AsSlice()})

	badSum := bytes.Clone(ipip)
	badSum[14+10] ^= 0xff

	// The outer header claims more bytes than the frame holds.
	longOuter := bytes.Clone(ipip)
	binary.BigEndian.PutUint16(longOuter[14+2:], uint16(len(ipip)-14+1))
	dcFixChecksum(longOuter[14:])

	// Outer header complete and consistent, inner header cut short.
	shortInner := dcTunnel(tb, decapLocal, in4[:12], layers.IPProtocolIPv4)
	shortInner6 := dcTunnel(tb, decapLocal, in6[:30], layers.IPProtocolIPv6)

	// The inner header claims more bytes than the tunnel carries.
	longInner := bytes.Clone(ipip)
	binary.BigEndian.PutUint16(longInner[14+20+2:], uint16(len(in4)+1))
	dcFixChecksum(longInner[14+20:])

	frag := bytes.Clone(ipip)
	frag[14+6] |= 0x20 // more fragments
	dcFixChecksum(frag[14:])

	ihl4 := bytes.Clone(ipip)
	ihl4[14] = 0x44
	dcFixChecksum(ihl4[14:])

	// A frame padded after the IP packet (as short Ethernet frames are).
	padded := append(bytes.Clone(ipip), make([]byte, 8)...)

	const ect0, ect1, ce = 0x02, 0x01, 0x03
	ecn := []decapCase{
		{"ipip CE outer marks ECT(0) inner", dcTunnelTOS(tb, decapLocal, dcInnerUDPTOS(tb, decapVIP, 0x28|ect0), layers.IPProtocolIPv4, ce),
			dcDecapsulated(dcInnerUDPTOS(tb, decapVIP, 0x28|ce), layers.EthernetTypeIPv4), "decapsulated"},
		{"ipip CE outer leaves Not-ECT inner", dcTunnelTOS(tb, decapLocal, dcInnerUDPTOS(tb, decapVIP, 0x28), layers.IPProtocolIPv4, ce),
			dcDecapsulated(dcInnerUDPTOS(tb, decapVIP, 0x28), layers.EthernetTypeIPv4), "decapsulated"},
		{"ipip ECT outer leaves ECT inner", dcTunnelTOS(tb, decapLocal, dcInnerUDPTOS(tb, decapVIP, ect1), layers.IPProtocolIPv4, ect0),
			dcDecapsulated(dcInnerUDPTOS(tb, decapVIP, ect1), layers.EthernetTypeIPv4), "decapsulated"},
		{"6in4 CE outer marks ECT(1) inner", dcTunnelTOS(tb, decapLocal, dcInnerUDPTOS(tb, decapVIP6, 0xb8|ect1), layers.IPProtocolIPv6, ce),
			dcDecapsulated(dcInnerUDPTOS(tb, decapVIP6, 0xb8|ce), layers.EthernetTypeIPv6), "decapsulated"},
	}
	// IPv6 outer header (4in6, 6in6).
	in4over6 := dcTunnel6(tb, decapLocal6, in4, layers.IPProtocolIPv4, 0)
	in6over6 := dcTunnel6(tb, decapLocal6, in6, layers.IPProtocolIPv6, 0)
	// Next headers other than 4 and 41: hop-by-hop (0), destination options
	// (60, where RFC 2473's encapsulation limit goes), routing (43). The
	// payload is the tunnelled packet all the same: the program must look
	// no further.
	withNext := func(next byte) []byte {
		f := bytes.Clone(in4over6)
		f[14+6] = next
		return f
	}
	// payload_len claiming one byte more than the frame holds.
	longOuter6 := bytes.Clone(in4over6)
	binary.BigEndian.PutUint16(longOuter6[14+4:], uint16(len(in4)+1))
	// payload_len shorter than the inner packet, the frame intact.
	shortPlen6 := bytes.Clone(in4over6)
	binary.BigEndian.PutUint16(shortPlen6[14+4:], uint16(len(in4)-1))
	shortPlen66 := bytes.Clone(in6over6)
	binary.BigEndian.PutUint16(shortPlen66[14+4:], uint16(len(in6)-1))
	// payload_len too short for even the inner header.
	tinyPlen6 := bytes.Clone(in4over6)
	binary.BigEndian.PutUint16(tinyPlen6[14+4:], 12)
	zeroPlen6 := bytes.Clone(in4over6)
	binary.BigEndian.PutUint16(zeroPlen6[14+4:], 0)
	// Version 4 in an IPv6 EtherType frame.
	badVersion6 := bytes.Clone(in4over6)
	badVersion6[14] = 0x40 | badVersion6[14]&0x0f
	padded6 := append(bytes.Clone(in6over6), make([]byte, 8)...)
	// A plain IPv6 UDP datagram to the VIP: not a tunnel.
	plain6 := dcSerialize(tb, dcEth(layers.EthernetTypeIPv6), gopacket.Payload(in6))
	ecn6 := []decapCase{
		{"4in6 CE outer marks ECT(0) inner", dcTunnel6(tb, decapLocal6, dcInnerUDPTOS(tb, decapVIP, 0x28|ect0), layers.IPProtocolIPv4, 0xb8|ce),
			dcDecapsulated(dcInnerUDPTOS(tb, decapVIP, 0x28|ce), layers.EthernetTypeIPv4), "decapsulated"},
		{"4in6 CE outer marks ECT(1) inner", dcTunnel6(tb, decapLocal6, dcInnerUDPTOS(tb, decapVIP, ect1), layers.IPProtocolIPv4, ce),
			dcDecapsulated(dcInnerUDPTOS(tb, decapVIP, ce), layers.EthernetTypeIPv4), "decapsulated"},
		{"4in6 CE outer leaves Not-ECT inner", dcTunnel6(tb, decapLocal6, dcInnerUDPTOS(tb, decapVIP, 0x28), layers.IPProtocolIPv4, ce),
			dcDecapsulated(dcInnerUDPTOS(tb, decapVIP, 0x28), layers.EthernetTypeIPv4), "decapsulated"},
		{"4in6 ECT outer leaves ECT inner", dcTunnel6(tb, decapLocal6, dcInnerUDPTOS(tb, decapVIP, ect1), layers.IPProtocolIPv4, ect0),
			dcDecapsulated(dcInnerUDPTOS(tb, decapVIP, ect1), layers.EthernetTypeIPv4), "decapsulated"},
		{"6in6 CE outer marks ECT(0) inner", dcTunnel6(tb, decapLocal6, dcInnerUDPTOS(tb, decapVIP6, 0xb8|ect0), layers.IPProtocolIPv6, 0x20|ce),
			dcDecapsulated(dcInnerUDPTOS(tb, decapVIP6, 0xb8|ce), layers.EthernetTypeIPv6), "decapsulated"},
		{"6in6 CE outer leaves Not-ECT inner", dcTunnel6(tb, decapLocal6, dcInnerUDPTOS(tb, decapVIP6, 0xb8), layers.IPProtocolIPv6, ce),
			dcDecapsulated(dcInnerUDPTOS(tb, decapVIP6, 0xb8), layers.EthernetTypeIPv6), "decapsulated"},
		{"6in6 ECT outer leaves ECT inner", dcTunnel6(tb, decapLocal6, dcInnerUDPTOS(tb, decapVIP6, ect0), layers.IPProtocolIPv6, ect1),
			dcDecapsulated(dcInnerUDPTOS(tb, decapVIP6, ect0), layers.EthernetTypeIPv6), "decapsulated"},
	}
	ecn = append(ecn, ecn6...)
	ecn = append(ecn, []decapCase{
		{"4in6 to VIP", in4over6, dcDecapsulated(in4, layers.EthernetTypeIPv4), "decapsulated"},
		{"6in6 to VIP", in6over6, dcDecapsulated(in6, layers.EthernetTypeIPv6), "decapsulated"},
		{"6in6 padded frame", padded6, append(dcDecapsulated(in6, layers.EthernetTypeIPv6), make([]byte, 8)...), "decapsulated"},
		{"4in6 to non-VIP", dcTunnel6(tb, decapLocal6, dcInnerUDP(tb, decapNotVIP), layers.IPProtocolIPv4, 0), nil, "passed"},
		{"6in6 to non-VIP", dcTunnel6(tb, decapLocal6, dcInnerUDP(tb, decapNotVIP6), layers.IPProtocolIPv6, 0), nil, "passed"},
		{"4in6 to another host", dcTunnel6(tb, decapOther6, in4, layers.IPProtocolIPv4, 0), nil, "passed"},
		{"6in6 to another host", dcTunnel6(tb, decapOther6, in6, layers.IPProtocolIPv6, 0), nil, "passed"},
		// The host's IPv4 address written as IPv4-mapped is not an IPv6 local.
		{"4in6 to a mapped IPv4 local", dcTunnel6(tb, netip.AddrFrom16(decapLocal.As16()), in4, layers.IPProtocolIPv4, 0), nil, "passed"},
		{"ipv6 next header 0 (hop-by-hop)", withNext(0), nil, "passed"},
		{"ipv6 next header 60 (destination options)", withNext(60), nil, "passed"},
		{"ipv6 next header 43 (routing)", withNext(43), nil, "passed"},
		{"plain udp over ipv6 to VIP", plain6, nil, "passed"},
		{"truncated outer ipv6 header", in4over6[:14+39], nil, "malformed"},
		{"outer ipv6 version 4", badVersion6, nil, "malformed"},
		{"outer payload_len longer than frame", longOuter6, nil, "malformed"},
		{"4in6 payload_len shorter than inner", shortPlen6, nil, "malformed"},
		{"6in6 payload_len shorter than inner", shortPlen66, nil, "malformed"},
		{"4in6 payload_len shorter than inner header", tinyPlen6, nil, "malformed"},
		{"4in6 payload_len 0", zeroPlen6, nil, "malformed"},
		{"4in6 truncated inner header", dcTunnel6(tb, decapLocal6, in4[:12], layers.IPProtocolIPv4, 0), nil, "malformed"},
		{"6in6 truncated inner header", dcTunnel6(tb, decapLocal6, in6[:30], layers.IPProtocolIPv6, 0), nil, "malformed"},
	}...)
	return append(ecn, []decapCase{
		{"ipip to VIP", ipip, dcDecapsulated(in4, layers.EthernetTypeIPv4), "decapsulated"},
		{"ipip with outer options", withOpts, dcDecapsulated(in4, layers.EthernetTypeIPv4), "decapsulated"},
		{"ipip padded frame", padded, append(dcDecapsulated(in4, layers.EthernetTypeIPv4), make([]byte, 8)...), "decapsulated"},
		{"6in4 to VIP", dcTunnel(tb, decapLocal, in6, layers.IPProtocolIPv6), dcDecapsulated(in6, layers.EthernetTypeIPv6), "decapsulated"},
		{"ipip to non-VIP", dcTunnel(tb, decapLocal, dcInnerUDP(tb, decapNotVIP), layers.IPProtocolIPv4), nil, "passed"},
		{"6in4 to non-VIP", dcTunnel(tb, decapLocal, dcInnerUDP(tb, decapNotVIP6), layers.IPProtocolIPv6), nil, "passed"},
		{"ipip to another host", dcTunnel(tb, decapOther, in4, layers.IPProtocolIPv4), nil, "passed"},
		{"ipip fragment", frag, nil, "passed"},
		{"plain tcp to VIP", tcp, nil, "passed"},
		{"arp", arp, nil, "passed"},
		{"truncated outer header", ipip[:14+15], nil, "malformed"},
		{"outer longer than frame", longOuter, nil, "malformed"},
		{"outer ihl 4", ihl4, nil, "malformed"},
		{"outer bad checksum", badSum, nil, "malformed"},
		{"truncated inner header", shortInner, nil, "malformed"},
		{"truncated inner ipv6 header", shortInner6, nil, "malformed"},
		{"inner longer than tunnel", longInner, nil, "malformed"},
	}...)
}

func dcCounter(c DecapCounters, name string) uint64 {
	switch name {
	case "decapsulated":
		return c.Decapsulated
	case "passed":
		return c.Passed
	case "malformed":
		return c.Malformed
	}
	panic("unknown counter " + name)
}

// runDecap runs the program over frame and returns the frame the stack
// would get and the counters' change.
func dcRun(tb testing.TB, d *Decap, frame []byte) (uint32, []byte, DecapCounters) {
	tb.Helper()
	before, err := d.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	opts := dcRunOpts(frame)
	ret, err := d.Program().Run(opts)
	if err != nil {
		tb.Fatalf("prog.Run: %v", err)
	}
	after, err := d.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	return ret, opts.DataOut, DecapCounters{
		Decapsulated: after.Decapsulated - before.Decapsulated,
		Passed:       after.Passed - before.Passed,
		Malformed:    after.Malformed - before.Malformed,
	}
}

func TestDecap(t *testing.T) {
	d := dcLoadForTest(t)
	for _, tc := range decapCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == nil {
				want = tc.frame
			}
			ret, got, delta := dcRun(t, d, tc.frame)
			if ret != decapXDPPass {
				t.Errorf("verdict = %d, want XDP_PASS", ret)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output frame:\n got %x\nwant %x", got, want)
			}
			var wantDelta DecapCounters
			switch tc.counter {
			case "decapsulated":
				wantDelta.Decapsulated = 1
			case "passed":
				wantDelta.Passed = 1
			case "malformed":
				wantDelta.Malformed = 1
			}
			if delta != wantDelta {
				t.Errorf("counters rose by %+v, want %+v", delta, wantDelta)
			}
			if tc.counter == "decapsulated" {
				// The stack must see a well-formed packet of the inner kind.
				p := gopacket.NewPacket(got, layers.LayerTypeEthernet, gopacket.Default)
				if el := p.ErrorLayer(); el != nil {
					t.Errorf("decapsulated frame does not parse: %v", el.Error())
				}
				if p.Layer(layers.LayerTypeUDP) == nil {
					t.Errorf("decapsulated frame has no UDP layer: %v", p)
				}
			}
		})
	}
}

func TestDecapVIPAndLocalSets(t *testing.T) {
	d := dcLoadForTest(t)
	frame := dcTunnel(t, decapLocal, dcInnerUDP(t, decapVIP), layers.IPProtocolIPv4)

	if err := d.DeleteVIP(decapVIP); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteVIP(decapVIP); err != nil {
		t.Fatalf("deleting an absent VIP: %v", err)
	}
	if _, got, _ := dcRun(t, d, frame); !bytes.Equal(got, frame) {
		t.Errorf("after DeleteVIP the frame was changed")
	}
	if err := d.AddVIP(decapVIP); err != nil {
		t.Fatal(err)
	}
	vips, err := d.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Addr{decapVIP, decapVIP6}; !dcEqualAddrs(vips, want) {
		t.Errorf("VIPs() = %v, want %v", vips, want)
	}

	if err := d.SetLocals([]netip.Addr{decapOther}); err != nil {
		t.Fatal(err)
	}
	if _, got, _ := dcRun(t, d, frame); !bytes.Equal(got, frame) {
		t.Errorf("with %v not local the frame was changed", decapLocal)
	}
	if err := d.SetLocals([]netip.Addr{decapOther, decapLocal}); err != nil {
		t.Fatal(err)
	}
	locals, err := d.Locals()
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Addr{decapLocal, decapOther}; !dcEqualAddrs(locals, want) {
		t.Errorf("Locals() = %v, want %v", locals, want)
	}
	if _, got, _ := dcRun(t, d, frame); bytes.Equal(got, frame) {
		t.Errorf("with %v local again the frame was not decapsulated", decapLocal)
	}
	if err := d.SetLocals([]netip.Addr{decapLocal, netip.Addr{}}); err == nil {
		t.Errorf("SetLocals accepted the zero Addr")
	}
	if locals, err := d.Locals(); err != nil || !dcEqualAddrs(locals, []netip.Addr{decapLocal, decapOther}) {
		t.Errorf("after a refused SetLocals, Locals() = %v, %v; want them unchanged", locals, err)
	}
	if err := d.AddVIP(netip.Addr{}); err == nil {
		t.Errorf("AddVIP accepted the zero Addr")
	}
}

// TestDecapLocals6: IPv6 addresses given to SetLocals go to the IPv6 set,
// which decides which IPv6-outer tunnels are opened, and IPv4 ones do not
// open IPv6 tunnels (nor the reverse).
func TestDecapLocals6(t *testing.T) {
	d := dcLoadForTest(t)
	in6 := dcTunnel6(t, decapLocal6, dcInnerUDP(t, decapVIP6), layers.IPProtocolIPv6, 0)
	in4 := dcTunnel(t, decapLocal, dcInnerUDP(t, decapVIP), layers.IPProtocolIPv4)
	for _, tc := range []struct {
		name         string
		locals       []netip.Addr
		want         []netip.Addr // Locals() afterwards
		open4, open6 bool
	}{
		{"both", []netip.Addr{decapLocal6, decapLocal}, []netip.Addr{decapLocal, decapLocal6}, true, true},
		{"ipv4 only", []netip.Addr{decapLocal}, []netip.Addr{decapLocal}, true, false},
		{"ipv6 only", []netip.Addr{decapOther6, decapLocal6}, []netip.Addr{decapLocal6, decapOther6}, false, true},
		{"other ipv6", []netip.Addr{decapOther6, decapOther}, []netip.Addr{decapOther, decapOther6}, false, false},
		// An IPv4-mapped IPv6 address is the IPv4 address.
		{"mapped", []netip.Addr{netip.AddrFrom16(decapLocal.As16())}, []netip.Addr{decapLocal}, true, false},
		{"none", nil, nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.SetLocals(tc.locals); err != nil {
				t.Fatal(err)
			}
			got, err := d.Locals()
			if err != nil {
				t.Fatal(err)
			}
			if !dcEqualAddrs(got, tc.want) {
				t.Errorf("Locals() = %v, want %v", got, tc.want)
			}
			for _, f := range []struct {
				name  string
				frame []byte
				open  bool
			}{{"ipip", in4, tc.open4}, {"6in6", in6, tc.open6}} {
				_, out, delta := dcRun(t, d, f.frame)
				if opened := !bytes.Equal(out, f.frame); opened != f.open {
					t.Errorf("%s: opened = %v, want %v", f.name, opened, f.open)
				}
				if want := map[bool]uint64{true: 1}[f.open]; delta.Decapsulated != want || delta.Passed != 1-want {
					t.Errorf("%s: counters rose by %+v", f.name, delta)
				}
			}
		})
	}
}

func dcEqualAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// dcRef is a slow, plain reading of decap.c's rules: the frame the stack
// should receive and the counter that should rise.
func dcRef(frame []byte) ([]byte, string) {
	if len(frame) < 14 {
		return frame, "passed"
	}
	switch binary.BigEndian.Uint16(frame[12:]) {
	case 0x0800:
		return dcRef4(frame)
	case 0x86dd:
		return dcRef6(frame)
	}
	return frame, "passed"
}

func dcRef4(frame []byte) ([]byte, string) {
	ip := frame[14:]
	if len(ip) < 20 {
		return frame, "malformed"
	}
	proto := ip[9]
	if proto != 4 && proto != 41 {
		return frame, "passed"
	}
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 {
		return frame, "malformed"
	}
	tot := int(binary.BigEndian.Uint16(ip[2:]))
	if tot < ihl || tot > len(ip) {
		return frame, "malformed"
	}
	if binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
		return frame, "passed"
	}
	if netip.AddrFrom4([4]byte(ip[16:20])) != decapLocal {
		return frame, "passed"
	}
	var sum uint32
	for i := 0; i < ihl; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		return frame, "malformed"
	}
	return dcRefInner(frame, ihl, tot-ihl, proto, ip[1]&3 == 3)
}

func dcRef6(frame []byte) ([]byte, string) {
	ip := frame[14:]
	if len(ip) < 40 {
		return frame, "malformed"
	}
	next := ip[6]
	if next != 4 && next != 41 {
		return frame, "passed"
	}
	if ip[0]>>4 != 6 {
		return frame, "malformed"
	}
	plen := int(binary.BigEndian.Uint16(ip[4:]))
	if plen > len(ip)-40 {
		return frame, "malformed"
	}
	if netip.AddrFrom16([16]byte(ip[24:40])) != decapLocal6 {
		return frame, "passed"
	}
	tc := binary.BigEndian.Uint16(ip[0:]) >> 4 & 0xff
	return dcRefInner(frame, 40, plen, next, tc&3 == 3)
}

// dcRefInner judges the inner packet behind an outer header of hdrlen
// bytes carrying payload bytes with protocol / next header next.
func dcRefInner(frame []byte, hdrlen, payload int, next byte, ce bool) ([]byte, string) {
	inner := frame[14+hdrlen:]
	var etype uint16
	if next == 4 {
		if len(inner) < 20 || payload < 20 {
			return frame, "malformed"
		}
		il := int(binary.BigEndian.Uint16(inner[2:]))
		if inner[0]>>4 != 4 || inner[0]&0x0f < 5 || il > payload || il < int(inner[0]&0x0f)*4 {
			return frame, "malformed"
		}
		if netip.AddrFrom4([4]byte(inner[16:20])) != decapVIP {
			return frame, "passed"
		}
		etype = 0x0800
		if ce && inner[1]&3 != 0 {
			valid := dcChecksumOK(inner[:int(inner[0]&0x0f)*4])
			inner = bytes.Clone(inner)
			old := binary.BigEndian.Uint16(inner[0:])
			inner[1] |= 3
			if valid {
				// Full recomputation against the program's incremental update.
				dcFixChecksum(inner)
			} else {
				// A broken checksum must stay broken (RFC 1624 eqn. 3 keeps
				// the error), so the stack still drops the packet.
				sum := uint32(^binary.BigEndian.Uint16(inner[10:])) + uint32(^old) + uint32(binary.BigEndian.Uint16(inner[0:]))
				for sum > 0xffff {
					sum = sum&0xffff + sum>>16
				}
				binary.BigEndian.PutUint16(inner[10:], ^uint16(sum))
			}
		}
	} else {
		if len(inner) < 40 || payload < 40 {
			return frame, "malformed"
		}
		if inner[0]>>4 != 6 || int(binary.BigEndian.Uint16(inner[4:])) > payload-40 {
			return frame, "malformed"
		}
		if netip.AddrFrom16([16]byte(inner[24:40])) != decapVIP6 {
			return frame, "passed"
		}
		etype = 0x86dd
		if tc := binary.BigEndian.Uint16(inner[0:]) >> 4 & 0xff; ce && tc&3 != 0 {
			inner = bytes.Clone(inner)
			inner[1] |= 0x30
		}
	}
	out := make([]byte, 0, len(frame)-hdrlen)
	out = append(out, frame[:12]...)
	out = binary.BigEndian.AppendUint16(out, etype)
	return append(out, inner...), "decapsulated"
}

// checkAgainstRef runs one frame through the program and the reference.
func dcCheckRef(t *testing.T, d *Decap, frame []byte) {
	t.Helper()
	want, wantCounter := dcRef(frame)
	ret, got, delta := dcRun(t, d, frame)
	if ret != decapXDPPass {
		t.Fatalf("frame %x: verdict %d, want XDP_PASS", frame, ret)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("frame %x:\n got %x\nwant %x", frame, got, want)
	}
	if dcCounter(delta, wantCounter) != 1 || delta.Decapsulated+delta.Passed+delta.Malformed != 1 {
		t.Fatalf("frame %x: counters rose by %+v, want %s +1", frame, delta, wantCounter)
	}
}

// TestDecapMatchesReference mutates the table's frames (byte changes,
// truncation) and compares the program with refDecap.
func TestDecapMatchesReference(t *testing.T) {
	d := dcLoadForTest(t)
	cases := decapCases(t)
	for _, tc := range cases {
		dcCheckRef(t, d, tc.frame)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 3000 {
		f := bytes.Clone(cases[r.IntN(len(cases))].frame)
		for range 1 + r.IntN(3) {
			switch r.IntN(4) {
			case 0: // flip a header byte, where the decisions are made
				f[r.IntN(min(len(f), 14+40+40))] ^= byte(1 << r.IntN(8))
			case 1:
				f[r.IntN(len(f))] = byte(r.IntN(256))
			case 2: // truncate, keeping an Ethernet header
				f = f[:14+r.IntN(len(f)-13)]
			case 3: // keep the outer checksum valid so later checks are reached
				if len(f) >= 14+20 {
					f[14+r.IntN(20)] ^= byte(1 << r.IntN(8))
					if ihl := int(f[14]&0x0f) * 4; ihl >= 20 && len(f) >= 14+ihl {
						dcFixChecksum(f[14:])
					}
				}
			}
		}
		dcCheckRef(t, d, f)
	}
}

// TestDecapECNMatchesReference: random valid inner IPv4 headers under an
// outer header with random ECN bits; the program's incremental checksum
// update must equal a full recomputation.
func TestDecapECNMatchesReference(t *testing.T) {
	d := dcLoadForTest(t)
	r := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		inner := dcIP4(decapClient, decapVIP, layers.IPProtocolUDP)
		inner.TOS = uint8(r.IntN(256))
		inner.TTL = uint8(r.IntN(256))
		inner.Id = uint16(r.IntN(65536))
		inner.SrcIP = netip.AddrFrom4([4]byte{198, 18, byte(r.IntN(2)), byte(r.IntN(256))}).AsSlice()
		udp := &layers.UDP{SrcPort: layers.UDPPort(r.IntN(65536)), DstPort: 9999}
		udp.SetNetworkLayerForChecksum(inner)
		in := dcSerialize(t, inner, udp, gopacket.Payload("ecn"))
		frame := dcTunnelTOS(t, decapLocal, in, layers.IPProtocolIPv4, uint8(r.IntN(256)))
		dcCheckRef(t, d, frame)
	}
}

func FuzzDecap(f *testing.F) {
	d := dcLoadForTest(f)
	for _, tc := range decapCases(f) {
		f.Add(tc.frame)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		// The kernel's test run wants an Ethernet header and at most a page.
		if len(frame) < 14 || len(frame) > 1500 {
			t.Skip()
		}
		dcCheckRef(t, d, frame)
	})
}

func BenchmarkDecap(b *testing.B) {
	d := dcLoadForTest(b)
	plainIP := dcIP4(decapClient, decapVIP, layers.IPProtocolUDP)
	plainUDP := &layers.UDP{SrcPort: 40000, DstPort: 9999}
	plainUDP.SetNetworkLayerForChecksum(plainIP)
	frames := map[string][]byte{
		"ipip":  dcTunnel(b, decapLocal, dcInnerUDP(b, decapVIP), layers.IPProtocolIPv4),
		"6in6":  dcTunnel6(b, decapLocal6, dcInnerUDP(b, decapVIP6), layers.IPProtocolIPv6, 0),
		"plain": dcSerialize(b, dcEth(layers.EthernetTypeIPv4), plainIP, plainUDP, gopacket.Payload("x")),
	}
	// One test run per iteration: with Repeat the kernel reruns the program
	// on the already decapsulated buffer, so only the first run would decap.
	// The syscall dominates; "plain" in the same run is the baseline, and the
	// difference is the decap path's cost.
	for _, name := range []string{"plain", "ipip", "6in6"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			opts := dcRunOpts(frames[name])
			out := opts.DataOut
			for b.Loop() {
				opts.DataOut = out
				if _, err := d.Program().Run(opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func dcRunOpts(frame []byte) *ebpf.RunOptions {
	// Room for a frame that grows, though decap only shrinks frames.
	return &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
}
