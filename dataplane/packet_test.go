package dataplane

import (
	"encoding/binary"
	"testing"
)

func TestParse(t *testing.T) {
	type want struct {
		r            DropReason
		proto        uint8
		sport, dport uint16
		flags        uint8
		l3, l4       uint16
		vlan, ipv6   bool
	}
	tests := []struct {
		name string
		spec frameSpec
		mut  func([]byte) []byte
		want want
	}{
		{"tcp4 syn", tcp4(40000, TCPSyn), nil, want{DropNone, ProtoTCP, 40000, 80, TCPSyn, 14, 34, false, false}},
		{"tcp4 vlan", frameSpec{vlan: 7, src: client4, dst: vip4, proto: ProtoTCP, sport: 1, dport: 80, flags: TCPAck}, nil,
			want{DropNone, ProtoTCP, 1, 80, TCPAck, 18, 38, true, false}},
		{"udp6", frameSpec{src: client6, dst: vip6, proto: ProtoUDP, sport: 5353, dport: 53, payload: 10}, nil,
			want{DropNone, ProtoUDP, 5353, 53, 0, 14, 54, false, true}},
		{"icmp4 echo", frameSpec{src: client4, dst: vip4, proto: ProtoICMP}, nil, want{DropNone, ProtoICMP, 0, 8 << 8, 0, 14, 34, false, false}},
		{"icmp6 echo", frameSpec{src: client6, dst: vip6, proto: ProtoICMPv6}, nil, want{DropNone, ProtoICMPv6, 0, 128 << 8, 0, 14, 54, false, true}},
		{"short", tcp4(1, TCPSyn), func(b []byte) []byte { return b[:13] }, want{r: DropShort}},
		{"not ip", tcp4(1, TCPSyn), func(b []byte) []byte { b[12], b[13] = 0x08, 0x06; return b }, want{r: DropNotIP}},
		{"double vlan", frameSpec{vlan: 7, src: client4, dst: vip4, proto: ProtoTCP, sport: 1, dport: 80}, func(b []byte) []byte {
			b[16], b[17] = 0x81, 0x00
			return b
		}, want{r: DropVLAN}},
		{"ipv4 bad version", tcp4(1, TCPSyn), func(b []byte) []byte { b[14] = 0x55; return b }, want{r: DropIPHeader}},
		{"ipv4 ihl 4", tcp4(1, TCPSyn), func(b []byte) []byte { b[14] = 0x44; return b }, want{r: DropIPHeader}},
		{"ipv4 total too big", tcp4(1, TCPSyn), func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 1500); return b }, want{r: DropIPLength}},
		{"ipv4 fragment", tcp4(1, TCPSyn), func(b []byte) []byte { b[20] = 0x20; return b }, want{r: DropFragment}},
		{"ipv4 later fragment", tcp4(1, TCPSyn), func(b []byte) []byte { b[20], b[21] = 0, 8; return b }, want{r: DropFragment}},
		{"tcp truncated", tcp4(1, TCPSyn), func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[16:], 20+19)
			return b[:14+39]
		}, want{r: DropL4Header}},
		{"tcp doff 4", tcp4(1, TCPSyn), func(b []byte) []byte { b[34+12] = 0x40; return b }, want{r: DropL4Header}},
		{"tcp doff past end", tcp4(1, TCPSyn), func(b []byte) []byte { b[34+12] = 0xF0; return b }, want{r: DropL4Header}},
		{"udp len short", frameSpec{src: client4, dst: vip4, proto: ProtoUDP, sport: 1, dport: 53}, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[34+4:], 7)
			return b
		}, want{r: DropL4Header}},
		{"ipv6 ext header", frameSpec{src: client6, dst: vip6, proto: ProtoUDP, sport: 1, dport: 53}, func(b []byte) []byte {
			b[14+6] = 0
			return b
		}, want{r: DropIPv6Ext}},
		{"ipv6 payload too long", frameSpec{src: client6, dst: vip6, proto: ProtoUDP, sport: 1, dport: 53}, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[14+4:], 200)
			return b
		}, want{r: DropIPLength}},
		{"sctp", tcp4(1, TCPSyn), func(b []byte) []byte { b[14+9] = 132; return b }, want{r: DropL4Proto}},
		{"ethernet padding", frameSpec{src: client4, dst: vip4, proto: ProtoUDP, sport: 9, dport: 53}, func(b []byte) []byte {
			return append(b, make([]byte, 60-len(b))...)
		}, want{DropNone, ProtoUDP, 9, 53, 0, 14, 34, false, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := buildFrame(t, tc.spec)
			if tc.mut != nil {
				b = tc.mut(b)
			}
			var p Packet
			r := Parse(b, &p)
			if r != tc.want.r {
				t.Fatalf("Parse = %v, want %v", r, tc.want.r)
			}
			if r != DropNone {
				return
			}
			got := want{r, p.Proto, p.SrcPort, p.DstPort, p.TCPFlags, p.L3, p.L4, p.VLAN, p.IPv6}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if int(p.End) > len(b) {
				t.Errorf("End %d past frame %d", p.End, len(b))
			}
		})
	}
}

func TestParseAllocs(t *testing.T) {
	b := buildFrame(t, tcp4(1, TCPSyn))
	var p Packet
	if n := testing.AllocsPerRun(100, func() { Parse(b, &p) }); n != 0 {
		t.Fatalf("Parse allocates %v times", n)
	}
}

// FuzzParse checks the validity gate: no panic, and every offset it returns
// lies inside the frame with room for the header it names.
func FuzzParse(f *testing.F) {
	for _, s := range []frameSpec{
		tcp4(40000, TCPSyn), tcp4(40000, TCPAck|TCPFin),
		{vlan: 5, src: client4, dst: vip4, proto: ProtoTCP, sport: 1, dport: 80, flags: TCPSyn, payload: 100},
		{src: client4, dst: vip4, proto: ProtoUDP, sport: 1, dport: 53, payload: 30},
		{src: client6, dst: vip6, proto: ProtoTCP, sport: 1, dport: 80, flags: TCPSyn},
		{src: client6, dst: vip6, proto: ProtoUDP, sport: 1, dport: 53},
		{src: client4, dst: vip4, proto: ProtoICMP},
		{src: client6, dst: vip6, proto: ProtoICMPv6},
	} {
		f.Add(buildFrame(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// The forwarder's IPv4 fast path must agree with the general gate
		// on every frame it accepts.
		var fp, gp Packet
		var fk, gk connKey
		if parseFastV4(b, &fp, &fk) {
			if r := parseKey(b, &gp, &gk); r != DropNone || fp != gp || fk != gk {
				t.Fatalf("fast path accepted %x as %+v %+v; general path: %v %+v %+v", b, fp, fk, r, gp, gk)
			}
		}
		var p Packet
		if Parse(b, &p) != DropNone {
			return
		}
		if int(p.End) > len(b) || p.L4 >= p.End || p.L3 >= p.L4 {
			t.Fatalf("offsets L3 %d L4 %d End %d, frame %d", p.L3, p.L4, p.End, len(b))
		}
		min := map[uint8]int{ProtoTCP: 20, ProtoUDP: 8, ProtoICMP: 8, ProtoICMPv6: 8}[p.Proto]
		if int(p.End)-int(p.L4) < min {
			t.Fatalf("L4 header of proto %d has %d bytes", p.Proto, int(p.End)-int(p.L4))
		}
		_, _, _, _ = p.addrWords(b)
	})
}

func BenchmarkParse(b *testing.B) {
	fr := buildFrame(b, tcp4(40000, TCPAck))
	var p Packet
	b.ReportAllocs()
	for b.Loop() {
		Parse(fr, &p)
	}
}
