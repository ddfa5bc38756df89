package dataplane

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

var (
	rip1  = netip.MustParseAddr("198.19.0.11")
	rip2  = netip.MustParseAddr("198.19.0.12")
	rip6  = netip.MustParseAddr("2001:db8:1::11")
	headr = 256 // AF_XDP's headroom
)

// withHeadroom returns a UMEM-like frame buffer: headroom, then the frame.
func withHeadroom(fr []byte) []byte {
	buf := make([]byte, headr+len(fr)+64)
	copy(buf[headr:], fr)
	return buf[:headr+len(fr)]
}

// hopsOnPort1 puts NAT real servers behind port 1 and the rest on port 0;
// mtu applies to every real server (0 = the port's).
func hopsOnPort1(mtu int) func(netip.Addr) (nextHop, bool) {
	return func(a netip.Addr) (nextHop, bool) {
		port := 0
		if a == rip1 || a == rip2 || a == rip6 {
			port = 1
		}
		return nextHop{Port: port, MTU: mtu}, true
	}
}

// verifyIP checks the IPv4 header checksum (if IPv4) and the TCP/UDP/ICMP
// checksum of the datagram at frame[l3:] by full recomputation.
func verifyIP(t *testing.T, what string, frame []byte) {
	t.Helper()
	var p Packet
	if r := Parse(frame, &p); r != DropNone {
		t.Fatalf("%s: frame does not parse: %v", what, r)
	}
	ip := frame[p.L3:]
	seg := frame[p.L4:p.End]
	var ps uint32
	if p.IPv6 {
		ps = PseudoHeaderSum(ip[8:24], ip[24:40], p.Proto, len(seg))
	} else {
		if Checksum(ip[:p.L4-p.L3], 0) != 0 {
			t.Errorf("%s: IPv4 header checksum wrong", what)
		}
		ps = PseudoHeaderSum(ip[12:16], ip[16:20], p.Proto, len(seg))
	}
	if p.Proto == ProtoICMP {
		ps = 0
	}
	if p.Proto == ProtoUDP && !p.IPv6 && seg[6] == 0 && seg[7] == 0 {
		return // no checksum
	}
	if c := Checksum(seg, ps); c != 0 {
		t.Errorf("%s: L4 (proto %d) checksum wrong (residue %#04x)", what, p.Proto, c)
	}
}

func tunService(vip netip.Addr) ServiceConfig {
	return ServiceConfig{Key: ServiceKey{Addr: vip, Proto: ProtoTCP, Port: 80}, Method: TUN, Scheduler: "rr", Active: true,
		Dests: []DestConfig{{Addr: rs1, Weight: 1, Up: true, MAC: macRS1}, {Addr: rs2, Weight: 1, Up: true, MAC: macRS2}}}
}

func TestForwardTUN(t *testing.T) {
	p := newTestPlane(t, 1024, tunService(vip4), tunService(vip6))
	now := p.table.Now()
	for _, tc := range []struct {
		name  string
		spec  frameSpec
		proto byte
		df    bool
	}{
		{"ipv4", frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: 1000, dport: 80, flags: TCPSyn, payload: 100}, protoIPIP, true},
		{"ipv4 no DF", frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: 1001, dport: 80, flags: TCPSyn, payload: 10}, protoIPIP, false},
		{"6in4", frameSpec{src: client6, dst: vip6, proto: ProtoTCP, sport: 1002, dport: 80, flags: TCPSyn, payload: 100}, protoIPv6, true},
	} {
		fr := buildFrame(t, tc.spec)
		if !tc.df {
			fr[20] &^= 0x40
			fr = withTTL(fr, 14, fr[22]) // the same TTL; fixes the checksum
		}
		buf := withHeadroom(fr)
		var ids [2]uint16
		for i := range 2 {
			copy(buf[headr:], fr)
			out, r := p.f.processAt(buf, headr, len(fr), p.snap, now)
			if r != DropNone {
				t.Fatalf("%s: %v", tc.name, r)
			}
			got := buf[out.off : out.off+out.n]
			if out.port != 0 || out.off != headr-20 || out.n != len(fr)+20 {
				t.Fatalf("%s: out %+v, want port 0, %d bytes at %d", tc.name, out, len(fr)+20, headr-20)
			}
			if !(bytes.Equal(got[0:6], macRS1) || bytes.Equal(got[0:6], macRS2)) || !bytes.Equal(got[6:12], macDir) ||
				binary.BigEndian.Uint16(got[12:]) != etherTypeIPv4 {
				t.Errorf("%s: Ethernet header % x", tc.name, got[:14])
			}
			oh := got[14:34]
			wantDF := byte(0)
			if tc.df {
				wantDF = 0x40
			}
			if oh[0] != 0x45 || int(binary.BigEndian.Uint16(oh[2:])) != len(fr)-14+20 || oh[6] != wantDF || oh[7] != 0 ||
				oh[8] != 64 || oh[9] != tc.proto || Checksum(oh, 0) != 0 {
				t.Errorf("%s: outer header % x", tc.name, oh)
			}
			src, dst := netip.AddrFrom4([4]byte(oh[12:16])), netip.AddrFrom4([4]byte(oh[16:20]))
			if src != dir4 || (dst != rs1 && dst != rs2) {
				t.Errorf("%s: outer %s → %s, want %s → a real server", tc.name, src, dst, dir4)
			}
			if !bytes.Equal(got[34:], hopped(fr, 14)[14:]) {
				t.Errorf("%s: inner packet changed beyond its TTL", tc.name)
			}
			ids[i] = binary.BigEndian.Uint16(oh[4:])
		}
		if ids[0] == ids[1] {
			t.Errorf("%s: two outer headers with ID %d", tc.name, ids[0])
		}
	}
	// Without headroom nothing can be prepended.
	if r := p.f.process(buildFrame(t, tcp4(2000, TCPSyn)), p.snap, now); r != DropHeadroom {
		t.Errorf("TUN without headroom: %v, want %v", r, DropHeadroom)
	}
	ps := p.table.Counts(p.snap.Services()[0].Dests()[0].ID)
	if ps.Inactive.Load()+ps.Active.Load() == 0 {
		t.Error("TUN flows not in the conn table")
	}
}

// TestForwardTUNIPv6Outer: real servers with IPv6 addresses get an outer
// IPv6 header (RFC 2473, as IPVS's ip6_tnl tunnels), for IPv4 (4in6) and
// IPv6 (6in6) VIPs: every field of it, the Ethernet type, the inner packet
// unchanged but for its TTL; the source is the route's preferred one when
// the route has one, else the port's address, and without either the
// packet is refused; the MTU check counts 40 bytes.
func TestForwardTUNIPv6Outer(t *testing.T) {
	rsA, rsB := netip.MustParseAddr("2001:db8::11"), netip.MustParseAddr("2001:db8::12")
	dir6, routeSrc := netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8::99")
	svc := func(vip netip.Addr) ServiceConfig {
		return ServiceConfig{Key: ServiceKey{Addr: vip, Proto: ProtoTCP, Port: 80}, Method: TUN, Scheduler: "rr", Active: true,
			Dests: []DestConfig{{Addr: rsA, Weight: 1, Up: true, MAC: macRS1}, {Addr: rsB, Weight: 1, Up: true, MAC: macRS2}}}
	}
	for _, c := range []struct {
		name     string
		port6    bool       // the port has an IPv6 address
		src      netip.Addr // the route's preferred source, if valid
		mtu      int
		wantSrc  netip.Addr
		wantDrop DropReason
		wantICMP bool
		payload  int
	}{
		{name: "port address", port6: true, wantSrc: dir6, payload: 100},
		{name: "route source", port6: true, src: routeSrc, wantSrc: routeSrc, payload: 100},
		{name: "route source only", src: routeSrc, wantSrc: routeSrc, payload: 100},
		{name: "no IPv6 source", wantDrop: DropMethod, payload: 100},
		{name: "too big", port6: true, mtu: 1400, wantICMP: true, payload: 1400 - 40 - 40 + 1},
	} {
		p := newTestPlane(t, 1024)
		p.f.ports[0].src6, p.f.ports[0].has6 = dir6.As16(), c.port6
		p.hops = func(netip.Addr) (nextHop, bool) { return nextHop{Port: 0, MTU: c.mtu, Src: c.src}, true }
		p.publish(svc(vip4), svc(vip6))
		now := p.table.Now()
		for _, inner := range []struct {
			name  string
			spec  frameSpec
			proto byte
		}{
			{"4in6", frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: 1000, dport: 80, flags: TCPSyn, payload: c.payload}, protoIPIP},
			{"6in6", frameSpec{src: client6, dst: vip6, proto: ProtoTCP, sport: 1000, dport: 80, flags: TCPSyn, payload: c.payload - 20}, protoIPv6},
		} {
			what := c.name + ", " + inner.name
			fr := buildFrame(t, inner.spec)
			ip := fr[14:]
			if ip[0]>>4 == 4 {
				ip[1] = 0xB8 // a traffic class to copy (EF)
				fr = withTTL(fr, 14, fr[22])
			} else {
				binary.BigEndian.PutUint32(ip[0:], 6<<28|0xB8<<20|0x12345)
			}
			buf := withHeadroom(fr)
			out, r := p.f.processAt(buf, headr, len(fr), p.snap, now)
			if c.wantDrop != DropNone {
				if r != c.wantDrop {
					t.Errorf("%s: %v, want %v", what, r, c.wantDrop)
				}
				continue
			}
			if r != DropNone {
				t.Fatalf("%s: %v", what, r)
			}
			got := buf[out.off : out.off+out.n]
			if c.wantICMP {
				var gp Packet
				Parse(got, &gp)
				ic := got[gp.L4:gp.End]
				mtu := -1
				if inner.proto == protoIPIP && ic[0] == 3 && ic[1] == 4 {
					mtu = int(binary.BigEndian.Uint16(ic[6:]))
				} else if inner.proto == protoIPv6 && ic[0] == 2 {
					mtu = int(binary.BigEndian.Uint32(ic[4:]))
				}
				if mtu != c.mtu-40 {
					t.Errorf("%s: answer announces MTU %d, want %d", what, mtu, c.mtu-40)
				}
				continue
			}
			if out.port != 0 || out.off != headr-40 || out.n != len(fr)+40 {
				t.Fatalf("%s: out %+v, want %d bytes at %d", what, out, len(fr)+40, headr-40)
			}
			if !(bytes.Equal(got[0:6], macRS1) || bytes.Equal(got[0:6], macRS2)) || !bytes.Equal(got[6:12], macDir) ||
				binary.BigEndian.Uint16(got[12:]) != etherTypeIPv6 {
				t.Errorf("%s: Ethernet header % x", what, got[:14])
			}
			oh := got[14:54]
			w := binary.BigEndian.Uint32(oh[0:])
			if w>>28 != 6 || (w>>20)&0xFF != 0xB8 || w&0xFFFFF != 0 || int(binary.BigEndian.Uint16(oh[4:])) != len(fr)-14 ||
				oh[6] != inner.proto || oh[7] != 64 {
				t.Errorf("%s: outer header % x", what, oh[:8])
			}
			src, dst := netip.AddrFrom16([16]byte(oh[8:24])), netip.AddrFrom16([16]byte(oh[24:40]))
			if src != c.wantSrc || (dst != rsA && dst != rsB) {
				t.Errorf("%s: outer %s → %s, want %s → a real server", what, src, dst, c.wantSrc)
			}
			if !bytes.Equal(got[54:], hopped(fr, 14)[14:]) {
				t.Errorf("%s: inner packet changed beyond its TTL", what)
			}
		}
	}
}

func TestForwardTUNTooBig(t *testing.T) {
	p := newTestPlane(t, 1024)
	p.hops = hopsOnPort1(1400)
	p.publish(tunService(vip4), tunService(vip6))
	now := p.table.Now()
	for _, v6 := range []bool{false, true} {
		spec := frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: 1000, dport: 80, flags: TCPAck, payload: 1381 - 40}
		if v6 {
			spec = frameSpec{src: client6, dst: vip6, proto: ProtoTCP, sport: 1000, dport: 80, flags: TCPAck, payload: 1381 - 60}
		}
		// The flow exists; this full-sized segment does not fit.
		syn := spec
		syn.flags, syn.payload = TCPSyn, 0
		if r := p.f.process(withHeadroom(buildFrame(t, syn))[headr:], p.snap, now); r != DropHeadroom {
			t.Fatalf("v6=%v: SYN without headroom: %v", v6, r)
		}
		fr := buildFrame(t, spec)
		buf := withHeadroom(fr)
		before := p.f.q.TooBig.Load()
		out, r := p.f.processAt(buf, headr, len(fr), p.snap, now)
		if r != DropNone || out.port != 0 {
			t.Fatalf("v6=%v: %v out %+v", v6, r, out)
		}
		if p.f.q.TooBig.Load() != before+1 {
			t.Errorf("v6=%v: too-big not counted", v6)
		}
		got := buf[out.off : out.off+out.n]
		if !bytes.Equal(got[0:6], macClient) || !bytes.Equal(got[6:12], macDir) {
			t.Errorf("v6=%v: MACs % x", v6, got[:12])
		}
		verifyIP(t, "too-big", got)
		var gp Packet
		Parse(got, &gp)
		ic := got[gp.L4:gp.End]
		if !v6 {
			ip := got[14:]
			if ip[9] != ProtoICMP || netip.AddrFrom4([4]byte(ip[12:16])) != vip4 || netip.AddrFrom4([4]byte(ip[16:20])) != client4 {
				t.Errorf("IPv4 too-big header % x", ip[:20])
			}
			if ic[0] != 3 || ic[1] != 4 || binary.BigEndian.Uint16(ic[6:]) != 1380 {
				t.Errorf("ICMP % x, want type 3 code 4 MTU 1380", ic[:8])
			}
			if len(got) > 14+576 || !bytes.Equal(ic[8:], fr[14:14+len(ic)-8]) {
				t.Errorf("ICMP quote: %d bytes, or not the original's start", len(ic)-8)
			}
		} else {
			ip := got[14:]
			if ip[6] != ProtoICMPv6 || netip.AddrFrom16([16]byte(ip[8:24])) != vip6 || netip.AddrFrom16([16]byte(ip[24:40])) != client6 {
				t.Errorf("IPv6 too-big header % x", ip[:40])
			}
			if ic[0] != 2 || ic[1] != 0 || binary.BigEndian.Uint32(ic[4:]) != 1380 {
				t.Errorf("ICMPv6 % x, want type 2 MTU 1380", ic[:8])
			}
			if len(got) > 14+1280 || !bytes.Equal(ic[8:], fr[14:14+len(ic)-8]) {
				t.Errorf("ICMPv6 quote: %d bytes, or not the original's start", len(ic)-8)
			}
		}
	}
	// Without DF: dropped and counted, not fragmented.
	spec := frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: 1000, dport: 80, flags: TCPAck, payload: 1381 - 40}
	fr := buildFrame(t, spec)
	fr[20] &^= 0x40
	if _, r := p.f.processAt(withHeadroom(fr), headr, len(fr), p.snap, now); r != DropTooBig {
		t.Errorf("big non-DF packet: %v, want %v", r, DropTooBig)
	}
}

func natService(vip netip.Addr, proto uint8, port, rport uint16, reals ...netip.Addr) ServiceConfig {
	s := ServiceConfig{Key: ServiceKey{Addr: vip, Proto: proto, Port: port}, Method: NAT, Scheduler: "rr", Active: true}
	for i, r := range reals {
		s.Dests = append(s.Dests, DestConfig{Addr: r, Port: rport, Weight: 1, Up: true, MAC: []net.HardwareAddr{macRS1, macRS2}[i]})
	}
	return s
}

// natReplyFrame builds a real server's reply: from rip:rport to the client,
// arriving on the director's real-server leg.
func natReplyFrame(t testing.TB, s frameSpec) []byte {
	fr := buildFrame(t, s)
	copy(fr[0:6], macDirRS)
	copy(fr[6:12], macRS1)
	return fr
}

func connState(p *testPlane, client netip.AddrPort) (string, int) {
	st, n := "", 0
	p.table.Conns(func(ci ConnInfo) bool {
		n++
		if ci.Client == client {
			st = ci.StateName()
		}
		return true
	})
	return st, n
}

func TestForwardNAT(t *testing.T) {
	p := newTestPlane(t, 1024)
	p.hops = hopsOnPort1(0)
	p.publish(natService(vip4, ProtoTCP, 80, 8080, rip1), natService(vip4, ProtoUDP, 53, 5353, rip1),
		natService(vip6, ProtoTCP, 80, 8080, rip6))
	now := p.table.Now()
	for _, fam := range []struct {
		name           string
		vip, cli, real netip.Addr
	}{{"ipv4", vip4, client4, rip1}, {"ipv6", vip6, client6, rip6}} {
		in := func(flags uint8) []byte {
			fr := buildFrame(t, frameSpec{src: fam.cli, dst: fam.vip, proto: ProtoTCP, sport: 40000, dport: 80, flags: flags, payload: 7})
			orig := append([]byte(nil), fr...)
			out, r := p.f.processAt(fr, 0, len(fr), p.snap, now)
			if r != DropNone || out.port != 1 {
				t.Fatalf("%s request flags %#x: %v port %d", fam.name, flags, r, out.port)
			}
			verifyIP(t, fam.name+" request", fr)
			var q Packet
			Parse(fr, &q)
			dst := netip.AddrFrom4([4]byte(fr[30:34]))
			if q.IPv6 {
				dst = netip.AddrFrom16([16]byte(fr[38:54]))
			}
			if dst != fam.real || q.DstPort != 8080 || q.SrcPort != 40000 || !bytes.Equal(fr[0:6], macRS1) || !bytes.Equal(fr[6:12], macDirRS) {
				t.Errorf("%s request: to %s:%d from port %d, MACs % x", fam.name, dst, q.DstPort, q.SrcPort, fr[:12])
			}
			if !bytes.Equal(fr[q.End-7:q.End], orig[q.End-7:q.End]) {
				t.Errorf("%s request: payload changed", fam.name)
			}
			return fr
		}
		reply := func(flags uint8) {
			fr := natReplyFrame(t, frameSpec{src: fam.real, dst: fam.cli, proto: ProtoTCP, sport: 8080, dport: 40000, flags: flags, payload: 5})
			out, r := p.f1.processAt(fr, 0, len(fr), p.snap, now)
			if r != DropNone || out.port != 0 {
				t.Fatalf("%s reply flags %#x: %v port %d", fam.name, flags, r, out.port)
			}
			verifyIP(t, fam.name+" reply", fr)
			var q Packet
			Parse(fr, &q)
			src := netip.AddrFrom4([4]byte(fr[26:30]))
			if q.IPv6 {
				src = netip.AddrFrom16([16]byte(fr[22:38]))
			}
			if src != fam.vip || q.SrcPort != 80 || q.DstPort != 40000 || !bytes.Equal(fr[0:6], macClient) || !bytes.Equal(fr[6:12], macDir) {
				t.Errorf("%s reply: from %s:%d to port %d, MACs % x", fam.name, src, q.SrcPort, q.DstPort, fr[:12])
			}
		}
		cli := netip.AddrPortFrom(fam.cli, 40000)
		// The conn table follows both halves (IPVS's INPUT/OUTPUT tables).
		steps := []struct {
			reply bool
			flags uint8
			want  string
		}{
			{false, TCPSyn, "SYN_RECV"},
			{true, TCPSyn | TCPAck, "SYN_RECV"},
			{false, TCPAck, "ESTABLISHED"},
			{true, TCPAck, "ESTABLISHED"},
			{false, TCPFin | TCPAck, "CLOSE_WAIT"},
			{true, TCPFin | TCPAck, "TIME_WAIT"},
		}
		for _, s := range steps {
			if s.reply {
				reply(s.flags)
			} else {
				in(s.flags)
			}
			if st, n := connState(p, cli); st != s.want || n != 1 {
				t.Errorf("%s: after %s flags %#x: state %s, %d entries listed; want %s, 1", fam.name,
					map[bool]string{false: "request", true: "reply"}[s.reply], s.flags, st, n, s.want)
			}
		}
		// A reply for no flow takes the ordinary path and is dropped.
		fr := natReplyFrame(t, frameSpec{src: fam.real, dst: fam.cli, proto: ProtoTCP, sport: 8080, dport: 40001, flags: TCPAck})
		if _, r := p.f1.processAt(fr, 0, len(fr), p.snap, now); r != DropNoService {
			t.Errorf("%s: stray reply: %v, want %v", fam.name, r, DropNoService)
		}
		// Clear the flow so that the next family's list has one entry.
		p.table.Sweep(0, p.table.Slots(), now+1000, nil)
	}

	// UDP: a zero (absent) IPv4 UDP checksum stays absent; others verify.
	for _, zero := range []bool{false, true} {
		fr := buildFrame(t, frameSpec{src: client4, dst: vip4, proto: ProtoUDP, sport: 5000, dport: 53, payload: 9})
		if zero {
			fr[40], fr[41] = 0, 0
		}
		if _, r := p.f.processAt(fr, 0, len(fr), p.snap, now); r != DropNone {
			t.Fatal(r)
		}
		if zero != (fr[40] == 0 && fr[41] == 0) {
			t.Errorf("UDP zero checksum %v: after NAT % x", zero, fr[40:42])
		}
		verifyIP(t, "udp request", fr)
		rep := natReplyFrame(t, frameSpec{src: rip1, dst: client4, proto: ProtoUDP, sport: 5353, dport: 5000, payload: 3})
		if _, r := p.f1.processAt(rep, 0, len(rep), p.snap, now); r != DropNone {
			t.Fatal(r)
		}
		verifyIP(t, "udp reply", rep)
	}
}

// TestForwardNATReplyNeedsRequestPath: a reply whose client was never seen
// on this director (e.g. after a takeover) is dropped as no_neigh.
func TestForwardNATNoNeigh(t *testing.T) {
	p := newTestPlane(t, 1024)
	p.hops = hopsOnPort1(0)
	p.publish(natService(vip4, ProtoUDP, 53, 5353, rip1))
	now := p.table.Now()
	fr := buildFrame(t, frameSpec{src: client4, dst: vip4, proto: ProtoUDP, sport: 5000, dport: 53})
	if _, r := p.f.processAt(fr, 0, len(fr), p.snap, now); r != DropNone {
		t.Fatal(r)
	}
	p.f.neigh = newNeighCache()
	p.f1.neigh = p.f.neigh
	rep := natReplyFrame(t, frameSpec{src: rip1, dst: client4, proto: ProtoUDP, sport: 5353, dport: 5000})
	if _, r := p.f1.processAt(rep, 0, len(rep), p.snap, now); r != DropNoNeigh {
		t.Errorf("reply without a learned client: %v, want %v", r, DropNoNeigh)
	}
}

// icmpErrorFrame builds an ICMP port-unreachable from rip to the client
// quoting quoted (an IP datagram).
func icmpErrorFrame(t testing.TB, rip, cli netip.Addr, quoted []byte) []byte {
	eth := &layers.Ethernet{SrcMAC: macRS1, DstMAC: macDirRS, EthernetType: layers.EthernetTypeIPv4}
	var ls []gopacket.SerializableLayer
	if rip.Is4() {
		ls = []gopacket.SerializableLayer{eth,
			&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: rip.AsSlice(), DstIP: cli.AsSlice()},
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, gopacket.Payload(quoted)}
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: rip.AsSlice(), DstIP: cli.AsSlice()}
		ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(1, 4)}
		_ = ic.SetNetworkLayerForChecksum(ip)
		ls = []gopacket.SerializableLayer{eth, ip, ic, gopacket.Payload(append(make([]byte, 4), quoted...))}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestForwardNATICMPError(t *testing.T) {
	p := newTestPlane(t, 1024)
	p.hops = hopsOnPort1(0)
	p.publish(natService(vip4, ProtoUDP, 53, 5353, rip1), natService(vip6, ProtoUDP, 53, 5353, rip6))
	now := p.table.Now()
	for _, fam := range []struct{ vip, cli, real netip.Addr }{{vip4, client4, rip1}, {vip6, client6, rip6}} {
		req := buildFrame(t, frameSpec{src: fam.cli, dst: fam.vip, proto: ProtoUDP, sport: 5000, dport: 53, payload: 20})
		orig := append([]byte(nil), req[14:]...)
		if _, r := p.f.processAt(req, 0, len(req), p.snap, now); r != DropNone {
			t.Fatal(r)
		}
		fr := icmpErrorFrame(t, fam.real, fam.cli, req[14:])
		out, r := p.f1.processAt(fr, 0, len(fr), p.snap, now)
		if r != DropNone || out.port != 0 {
			t.Fatalf("%s: ICMP error: %v port %d", fam.vip, r, out.port)
		}
		verifyIP(t, "icmp error", fr)
		var q Packet
		Parse(fr, &q)
		ip := fr[14:]
		quoted := fr[q.L4+8:]
		src := netip.AddrFrom4([4]byte(ip[12:16]))
		if q.IPv6 {
			src = netip.AddrFrom16([16]byte(ip[8:24]))
		}
		if src != fam.vip || !bytes.Equal(fr[0:6], macClient) {
			t.Errorf("%s: ICMP error from %s to MAC % x, want from the VIP to the client", fam.vip, src, fr[0:6])
		}
		// The quote is the client's original datagram again, checksums
		// and all, as it reached the real server: one hop older.
		if !bytes.Equal(quoted, hopped(orig, 0)) {
			t.Errorf("%s: quoted packet\n% x\nwant the client's original\n% x", fam.vip, quoted, orig)
		}
	}
	// An ICMP error about no known flow, and a non-error, are dropped.
	stray := buildFrame(t, frameSpec{src: client4, dst: vip4, proto: ProtoUDP, sport: 6000, dport: 53})
	copy(stray[30:34], rip1.AsSlice())
	fr := icmpErrorFrame(t, rip1, client4, stray[14:])
	if _, r := p.f1.processAt(fr, 0, len(fr), p.snap, now); r != DropNoConn {
		t.Errorf("ICMP error about no flow: %v, want %v", r, DropNoConn)
	}
	echo := buildFrame(t, frameSpec{src: rip1, dst: client4, proto: ProtoICMP})
	if _, r := p.f1.processAt(echo, 0, len(echo), p.snap, now); r != DropL4Proto {
		t.Errorf("ICMP echo from a real server: %v, want %v", r, DropL4Proto)
	}
}

// TestNATRewriteChecksumDifferential: random TCP/UDP packets of both
// families rewritten both ways; the incrementally updated checksums equal a
// full recomputation.
func TestNATRewriteChecksumDifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	addr := func(v6 bool) netip.Addr {
		if v6 {
			var b [16]byte
			binary.BigEndian.PutUint32(b[:], 0x20010db8)
			for i := 4; i < 16; i++ {
				b[i] = byte(rng.Uint32())
			}
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte{198, 18 + byte(rng.IntN(2)), byte(rng.Uint32()), byte(rng.Uint32())})
	}
	for i := range 3000 {
		v6 := i%2 == 1
		proto := uint8(ProtoTCP)
		if i%4 >= 2 {
			proto = ProtoUDP
		}
		spec := frameSpec{src: addr(v6), dst: addr(v6), proto: proto, sport: uint16(rng.Uint32()), dport: uint16(rng.Uint32()),
			flags: TCPAck, payload: rng.IntN(300)}
		fr := buildFrame(t, spec)
		payload := fr[len(fr)-spec.payload:]
		for j := range payload {
			payload[j] = byte(rng.Uint32())
		}
		// Fix the L4 checksum over the random payload (full computation).
		var p Packet
		if Parse(fr, &p) != DropNone {
			t.Fatal("parse")
		}
		co := 16
		if proto == ProtoUDP {
			co = 6
		}
		seg := fr[p.L4:p.End]
		seg[co], seg[co+1] = 0, 0
		ip := fr[p.L3:]
		var ps uint32
		if v6 {
			ps = PseudoHeaderSum(ip[8:24], ip[24:40], proto, len(seg))
		} else {
			ps = PseudoHeaderSum(ip[12:16], ip[16:20], proto, len(seg))
		}
		putL4Csum(seg[co:], proto, Checksum(seg, ps))
		verifyIP(t, "input", fr)

		// A random TTL (hop limit), so that its update meets every
		// checksum value; the IPv4 header checksum is recomputed for it.
		ttl := byte(3 + rng.IntN(253))
		if v6 {
			ip[7] = ttl
		} else {
			ip[8] = ttl
			ip[10], ip[11] = 0, 0
			binary.BigEndian.PutUint16(ip[10:], Checksum(ip[:20], 0))
		}
		ttlAt := 8
		if v6 {
			ttlAt = 7
		}
		real := addr(v6)
		d := &Dest{Addr: real, Port: uint16(rng.Uint32()), ip: real.As16()}
		if !natRewriteDst(fr, &p, d) {
			t.Fatalf("packet %d: TTL %d refused", i, ttl)
		}
		verifyIP(t, "rewritten destination", fr)
		Parse(fr, &p)
		if got := pktAddr(fr, &p, false); got != real || p.DstPort != d.Port {
			t.Errorf("packet %d: destination %v:%d, want %v:%d", i, got, p.DstPort, real, d.Port)
		}
		vip, vport := addr(v6), uint16(rng.Uint32())
		svc := &Service{Key: ServiceKey{Addr: vip}, vip: vip.As16()}
		if !natRewriteSrc(fr, &p, svc, vport) {
			t.Fatalf("packet %d: TTL %d refused", i, ttl-1)
		}
		verifyIP(t, "rewritten source", fr)
		Parse(fr, &p)
		if got := pktAddr(fr, &p, true); got != vip || p.SrcPort != vport {
			t.Errorf("packet %d: source %v:%d, want %v:%d", i, got, p.SrcPort, vip, vport)
		}
		if got := ip[ttlAt]; got != ttl-2 {
			t.Errorf("packet %d: TTL %d after two hops from %d", i, got, ttl)
		}
		if t.Failed() {
			t.Fatalf("packet %d (%+v)", i, spec)
		}
	}
}

// pktAddr returns a parsed packet's source (src) or destination address.
func pktAddr(fr []byte, p *Packet, src bool) netip.Addr {
	ip := fr[p.L3:]
	if p.IPv6 {
		if src {
			return netip.AddrFrom16([16]byte(ip[8:24]))
		}
		return netip.AddrFrom16([16]byte(ip[24:40]))
	}
	if src {
		return netip.AddrFrom4([4]byte(ip[12:16]))
	}
	return netip.AddrFrom4([4]byte(ip[16:20]))
}

// BenchmarkEstablishedByMethod: an established flow's packet in each
// forwarding method through one harness (runTemplates), so that the
// methods compare in one run: DR (MACs, TTL), TUN (outer header), NAT
// request (destination rewrite) and NAT reply (reply index, source
// rewrite). 64 flows, 1400-byte payloads (the largest a 1500-byte MTU
// takes with TUN's outer header). Each packet's 54 header bytes are
// restored before it is processed, a copy all four figures include.
func BenchmarkEstablishedByMethod(b *testing.B) {
	s := tcp4(0, TCPAck)
	s.payload = 1400
	ack := buildFrame(b, s)
	syn := buildFrame(b, tcp4(0, TCPSyn))
	// establish sends flow i's SYN and first ACK through f and returns the
	// ACK as it left (NAT: rewritten) and its template.
	establish := func(p *testPlane, f *forwarder, i, off int) (sent, tmpl []byte) {
		now := p.table.Now()
		for _, fr := range [][]byte{syn, ack} {
			buf := make([]byte, off+len(fr))
			copy(buf[off:], fr)
			setPort(buf, off+34, i)
			if _, r := f.processAt(buf, off, len(fr), p.snap, now); r != DropNone {
				b.Fatal(r)
			}
			sent = buf[off:]
		}
		tmpl = append([]byte(nil), ack...)
		setPort(tmpl, 34, i)
		return sent, tmpl
	}
	type method struct {
		name string
		p    *testPlane
		f    *forwarder
		tmpl [][]byte
	}
	var ms []method
	dr := newTestPlane(b, 1<<20, drService("wrr", 1, 2))
	tun := newTestPlane(b, 1<<20, tunService(vip4))
	nat := newTestPlane(b, 1<<20)
	nat.hops = hopsOnPort1(0)
	nat.publish(natService(vip4, ProtoTCP, 80, 8080, rip1, rip2))
	var drT, tunT, reqT, repT [][]byte
	for i := range 64 {
		_, t := establish(dr, dr.f, i, 0)
		drT = append(drT, t)
		_, t = establish(tun, tun.f, i, headr)
		tunT = append(tunT, t)
		sent, t := establish(nat, nat.f, i, 0)
		reqT = append(reqT, t)
		// Flow i went to rip1 or rip2 by rr: its reply comes from there.
		rs := netip.AddrFrom4([4]byte(sent[30:34]))
		repT = append(repT, natReplyFrame(b, frameSpec{src: rs, dst: client4, proto: ProtoTCP, sport: 8080, dport: uint16(i), flags: TCPAck, payload: 1400}))
	}
	ms = append(ms, method{"DR", dr, dr.f, drT}, method{"TUN", tun, tun.f, tunT},
		method{"NAT-request", nat, nat.f, reqT}, method{"NAT-reply", nat, nat.f1, repT})
	for _, m := range ms {
		for _, mode := range benchModes {
			b.Run("method="+m.name+"/"+mode, func(b *testing.B) { runTemplates(b, m.f, m.p.snap, m.tmpl, m.p.table.Now(), mode) })
		}
	}
}

// runTemplates feeds the forwarder packet i = frame templates[i&63], each
// in its own UMEM-like chunk after 256 bytes of headroom, batch by batch or
// one at a time. Before each packet it restores the 54 header bytes the
// forwarder rewrote (Ethernet, IPv4, TCP; a copy the figure includes) and
// checks every verdict is "transmit".
func runTemplates(b *testing.B, f *forwarder, snap *Snapshot, tmpl [][]byte, now uint32, mode string) {
	const hdr = 54
	var pk [64]batchPkt
	var bufs [64][]byte
	if len(tmpl) != len(pk) {
		b.Fatalf("%d templates, want %d", len(tmpl), len(pk))
	}
	// Laid out as in a worker's UMEM (see umemFrames): 2048-byte chunks,
	// the frame 256 bytes in, the bytes before it headroom.
	off := headr
	slab := make([]byte, len(bufs)*2048)
	for i := range bufs {
		if off+len(tmpl[i]) > 2048 {
			b.Fatalf("template %d does not fit a chunk", i)
		}
		bufs[i] = slab[i*2048 : i*2048+off+len(tmpl[i]) : i*2048+2048]
		copy(bufs[i][off:], tmpl[i])
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpuClock(b)
	for i := 0; b.Loop(); i++ {
		j := i & 63
		buf := bufs[j]
		copy(buf[off:off+hdr], tmpl[j][:hdr])
		if mode == "single" {
			if _, r := f.processAt(buf, off, len(tmpl[j]), snap, now); r != DropNone {
				b.Fatal(r)
			}
			if j == 63 {
				f.flush()
			}
			continue
		}
		pk[j].buf, pk[j].off, pk[j].n = buf, off, len(tmpl[j])
		if j < 63 {
			continue
		}
		runBatch(b, f, pk[:], snap, now)
	}
}

func TestForwardModesAllocs(t *testing.T) {
	p := newTestPlane(t, 1<<16)
	p.hops = hopsOnPort1(0)
	p.publish(natService(vip4, ProtoTCP, 80, 8080, rip1), tunService(vip6))
	now := p.table.Now()
	syn := buildFrame(t, tcp4(1, TCPSyn))
	req := append([]byte(nil), syn...)
	if _, r := p.f.processAt(req, 0, len(req), p.snap, now); r != DropNone {
		t.Fatal(r)
	}
	rep := natReplyFrame(t, frameSpec{src: rip1, dst: client4, proto: ProtoTCP, sport: 8080, dport: 1, flags: TCPSyn | TCPAck})
	repOrig := append([]byte(nil), rep...)
	tun := buildFrame(t, frameSpec{src: client6, dst: vip6, proto: ProtoTCP, sport: 1, dport: 80, flags: TCPSyn})
	tunBuf := withHeadroom(tun)
	port := uint16(1)
	for name, fn := range map[string]func(){
		"nat new flow": func() {
			port++
			copy(req, syn)
			req[34], req[35] = byte(port>>8), byte(port)
			p.f.processAt(req, 0, len(req), p.snap, now)
		},
		"nat reply": func() {
			copy(rep, repOrig)
			p.f1.processAt(rep, 0, len(rep), p.snap, now)
		},
		"tun": func() {
			copy(tunBuf[headr:], tun)
			p.f.processAt(tunBuf, headr, len(tun), p.snap, now)
		},
	} {
		if n := testing.AllocsPerRun(500, fn); n != 0 {
			t.Errorf("%s allocates %v", name, n)
		}
	}
}

// TestImportConnNAT: a synced NAT flow gets its reply index on the backup,
// so the real server's replies keep flowing after a takeover.
func TestImportConnNAT(t *testing.T) {
	svc := natService(vip4, ProtoTCP, 80, 8080, rip1, rip2)
	master := newTestPlane(t, 1024)
	master.hops = hopsOnPort1(0)
	master.publish(svc)
	now := master.table.Now()
	syn := buildFrame(t, tcp4(2000, TCPSyn))
	if _, r := master.f.processAt(syn, 0, len(syn), master.snap, now); r != DropNone {
		t.Fatal(r)
	}
	real := netip.AddrFrom4([4]byte(syn[30:34]))
	backup := newTestPlane(t, 1024)
	backup.hops = hopsOnPort1(0)
	backup.publish(natService(vip4, ProtoUDP, 1, 1, rip2), svc) // other dest IDs
	var n int
	master.table.Conns(func(ci ConnInfo) bool {
		d := master.snap.DestByID(ci.DestID)
		if err := importConn(backup.snap, backup.table, ConnEntry{ConnInfo: ci, Dest: netip.AddrPortFrom(d.Addr, d.Port)}); err != nil {
			t.Fatal(err)
		}
		n++
		return true
	})
	if n != 1 {
		t.Fatalf("master listed %d entries, want 1 (index entries are not listed)", n)
	}
	now = backup.table.Now()
	ack := buildFrame(t, tcp4(2000, TCPAck))
	if _, r := backup.f.processAt(ack, 0, len(ack), backup.snap, now); r != DropNone || netip.AddrFrom4([4]byte(ack[30:34])) != real {
		t.Fatalf("backup: request %v to %v, want %s", r, ack[30:34], real)
	}
	rep := natReplyFrame(t, frameSpec{src: real, dst: client4, proto: ProtoTCP, sport: 8080, dport: 2000, flags: TCPAck})
	if _, r := backup.f1.processAt(rep, 0, len(rep), backup.snap, now); r != DropNone {
		t.Fatalf("backup: reply of the synced flow: %v", r)
	}
	verifyIP(t, "reply on the backup", rep)
}

// FuzzProcessModes runs frames through the TUN and NAT paths on both ports
// (requests, replies, ICMP errors): no panic, and whatever is transmitted
// lies inside the frame buffer and is a frame the validity gate accepts (a
// tunnel's outer header carries a correct checksum).
func FuzzProcessModes(f *testing.F) {
	req := buildFrame(f, frameSpec{src: client4, dst: vip4, proto: ProtoUDP, sport: 5000, dport: 53, payload: 20})
	for _, s := range []frameSpec{
		tcp4(40000, TCPSyn),
		{src: client6, dst: vip6, proto: ProtoTCP, sport: 1, dport: 80, flags: TCPSyn, payload: 1300},
		{src: client4, dst: vip4, proto: ProtoTCP, sport: 1, dport: 80, flags: TCPAck, payload: 1460},
	} {
		f.Add(buildFrame(f, s), false)
	}
	f.Add(req, false)
	f.Add(natReplyFrame(f, frameSpec{src: rip1, dst: client4, proto: ProtoUDP, sport: 5353, dport: 5000}), true)
	quoted := append([]byte(nil), req[14:]...)
	copy(quoted[16:20], rip1.AsSlice())
	f.Add(icmpErrorFrame(f, rip1, client4, quoted), true)
	f.Add(buildFrame(f, frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: 1, dport: 81, flags: TCPSyn, payload: 1300}), false)
	p := newTestPlane(f, 1024)
	p.hops = hopsOnPort1(1400)
	p.f.ports[0].src6, p.f.ports[0].has6 = netip.MustParseAddr("2001:db8::2").As16(), true
	// Port 81: TUN to IPv6 real servers (4in6).
	tun6 := tunService(vip4)
	tun6.Key.Port = 81
	tun6.Dests = []DestConfig{{Addr: netip.MustParseAddr("2001:db8::11"), Weight: 1, Up: true, MAC: macRS1}}
	p.publish(tunService(vip4), tunService(vip6), tun6, natService(vip4, ProtoUDP, 53, 5353, rip1))
	// The request that the reply seeds belong to.
	if _, r := p.f.processAt(append([]byte(nil), req...), 0, len(req), p.snap, p.table.Now()); r != DropNone {
		f.Fatal(r)
	}
	f.Fuzz(func(t *testing.T, b []byte, rsSide bool) {
		fw := p.f
		if rsSide {
			fw = p.f1
		}
		buf := withHeadroom(b)
		out, r := fw.processAt(buf, headr, len(b), p.snap, p.table.Now())
		if r != DropNone {
			return
		}
		if out.off < 0 || out.n <= 0 || out.off+out.n > len(buf) || out.port < 0 || out.port > 1 {
			t.Fatalf("out %+v outside the %d-byte buffer", out, len(buf))
		}
		var q Packet
		fr := buf[out.off : out.off+out.n]
		r = Parse(fr, &q)
		if r == DropL4Proto && (q.Proto == protoIPIP || q.Proto == protoIPv6) {
			if !q.IPv6 && Checksum(fr[q.L3:q.L3+ipv4MinHeader], 0) != 0 {
				t.Fatal("tunnel header checksum wrong")
			}
			if q.IPv6 && int(binary.BigEndian.Uint16(fr[q.L3+4:]))+ipv6HeaderLen != len(fr)-int(q.L3) {
				t.Fatal("IPv6 tunnel header's payload length is not the inner packet's")
			}
			return
		}
		if r != DropNone {
			t.Fatalf("transmitted frame does not parse: %v", r)
		}
	})
}

// TestRoutedRealServer: a real server behind a gateway is reached through
// the gateway's MAC in TUN and NAT, and never in DR (a router would send
// the VIP's packets back).
func TestRoutedRealServer(t *testing.T) {
	p := newTestPlane(t, 1024)
	p.hops = func(netip.Addr) (nextHop, bool) { return nextHop{MAC: macRS2, Gateway: true}, true }
	dr := drService("rr", 1, 1)
	dr.Dests = []DestConfig{{Addr: rs1, Weight: 1, Up: true}}
	tun := tunService(vip4)
	tun.Key.Port = 81
	tun.Dests = dr.Dests
	nat := natService(vip4, ProtoTCP, 82, 8080, rip1)
	nat.Dests[0].MAC = nil
	p.publish(dr, tun, nat)
	for i, want := range []bool{false, true, true} {
		svc := p.snap.Services()[i]
		d := svc.Dests()[0]
		if d.HasMAC != want || (want && !bytes.Equal(d.MAC[:], macRS2)) {
			t.Errorf("%v %s: MAC known %v (%x), want %v (the gateway's)", svc.Method, svc.Key, d.HasMAC, d.MAC, want)
		}
	}
}
