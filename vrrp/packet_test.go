package vrrp

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// Adverts captured with tcpdump from keepalived 2.2.7 (Debian) in a lab
// namespace, VRRP payload only, with the IP addresses they travelled between.
var captured = []struct {
	name     string
	hex      string
	src, dst string
	want     Advert
}{
	{
		name: "v2 PASS two VIPs",
		hex:  "21339602 01014d5c c6120064 c6120065 73656372 65743132",
		src:  "198.18.0.2", dst: "224.0.0.18",
		want: Advert{Version: 2, VRID: 51, Priority: 150, Interval: time.Second, AuthType: AuthPass,
			AuthData: [8]byte([]byte("secret12")), Addrs: addrs("198.18.0.100", "198.18.0.101")},
	},
	{
		name: "v3 IPv4 advert_int 0.1",
		hex:  "31339601 000acba6 c6120064",
		src:  "198.18.0.2", dst: "224.0.0.18",
		want: Advert{Version: 3, VRID: 51, Priority: 150, Interval: 100 * time.Millisecond, Addrs: addrs("198.18.0.100")},
	},
	{
		name: "v3 IPv6",
		hex: "31339602 00642552 20010db8 00000000 00000000 00000100" +
			"20010db8 00000000 00000000 00000101",
		src: "fe80::f00a:9fff:fe41:2926", dst: "ff02::12",
		want: Advert{Version: 3, VRID: 51, Priority: 150, Interval: time.Second, Addrs: addrs("2001:db8::100", "2001:db8::101")},
	},
}

func addrs(s ...string) []netip.Addr {
	var a []netip.Addr
	for _, x := range s {
		a = append(a, netip.MustParseAddr(x))
	}
	return a
}

func unhex(t testing.TB, s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseCapturedKeepalived(t *testing.T) {
	for _, c := range captured {
		t.Run(c.name, func(t *testing.T) {
			b := unhex(t, c.hex)
			src, dst := netip.MustParseAddr(c.src), netip.MustParseAddr(c.dst)
			var got Advert
			if r := Parse(b, src, dst, &got); r != DropNone {
				t.Fatalf("Parse = %v, want accepted", r)
			}
			if !advertEqual(&got, &c.want) {
				t.Errorf("Parse = %+v, want %+v", got, c.want)
			}
			// Our encoder must produce keepalived's bytes, checksum included.
			enc, err := c.want.Append(nil, src, dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc, b) {
				t.Errorf("Append = %x\nwant     %x", enc, b)
			}
		})
	}
}

func advertEqual(a, b *Advert) bool {
	return a.Version == b.Version && a.VRID == b.VRID && a.Priority == b.Priority &&
		a.Interval == b.Interval && a.AuthType == b.AuthType && a.AuthData == b.AuthData &&
		slices.Equal(a.Addrs, b.Addrs)
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		a        Advert
		src, dst string
	}{
		{"v2 none", Advert{Version: 2, VRID: 1, Priority: 100, Interval: 3 * time.Second, Addrs: addrs("192.0.2.1")}, "192.0.2.10", "224.0.0.18"},
		{"v2 pass", Advert{Version: 2, VRID: 255, Priority: 255, Interval: 255 * time.Second, AuthType: AuthPass,
			AuthData: [8]byte{'a', 'b'}, Addrs: addrs("192.0.2.1", "198.51.100.7", "203.0.113.9")}, "192.0.2.10", "192.0.2.11"},
		{"v3 v4 max interval", Advert{Version: 3, VRID: 7, Priority: 0, Interval: 40950 * time.Millisecond, Addrs: addrs("192.0.2.1")}, "192.0.2.10", "224.0.0.18"},
		{"v3 v6", Advert{Version: 3, VRID: 9, Priority: 1, Interval: 10 * time.Millisecond, Addrs: addrs("fe80::1", "2001:db8::5")}, "fe80::2", "ff02::12"},
		{"v3 no addrs", Advert{Version: 3, VRID: 9, Priority: 1, Interval: time.Second}, "192.0.2.10", "224.0.0.18"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, dst := netip.MustParseAddr(tt.src), netip.MustParseAddr(tt.dst)
			b, err := tt.a.Append([]byte{0xee}, src, dst)
			if err != nil {
				t.Fatal(err)
			}
			if b[0] != 0xee {
				t.Fatal("Append overwrote the prefix")
			}
			var got Advert
			if r := Parse(b[1:], src, dst, &got); r != DropNone {
				t.Fatalf("Parse = %v", r)
			}
			if !advertEqual(&got, &tt.a) {
				t.Errorf("round trip = %+v, want %+v", got, tt.a)
			}
			if ref := refChecksum(b[1:], src, dst, tt.a.Version == 3); ref != 0 {
				t.Errorf("reference checksum over the message = %#04x, want 0", ref)
			}
		})
	}
}

func TestAppendErrors(t *testing.T) {
	v4, v6, g4 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("fe80::1"), netip.MustParseAddr("224.0.0.18")
	tests := []struct {
		name string
		a    Advert
		src  netip.Addr
	}{
		{"v2 on IPv6", Advert{Version: 2, Interval: time.Second}, v6},
		{"version 4", Advert{Version: 4, Interval: time.Second}, v4},
		{"v2 sub-second", Advert{Version: 2, Interval: 500 * time.Millisecond}, v4},
		{"v2 zero", Advert{Version: 2}, v4},
		{"v3 too long", Advert{Version: 3, Interval: 41 * time.Second}, v4},
		{"v3 mixed family", Advert{Version: 3, Interval: time.Second, Addrs: addrs("2001:db8::1")}, v4},
		{"too many", Advert{Version: 3, Interval: time.Second, Addrs: make([]netip.Addr, 256)}, v4},
	}
	for _, tt := range tests {
		if b, err := tt.a.Append(nil, tt.src, g4); err == nil {
			t.Errorf("%s: Append = %x, want an error", tt.name, b)
		}
	}
}

func TestParseRejects(t *testing.T) {
	v2 := unhex(t, captured[0].hex)
	v3 := unhex(t, captured[1].hex)
	src, dst := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("224.0.0.18")
	mod := func(b []byte, f func([]byte)) []byte {
		c := slices.Clone(b)
		f(c)
		return c
	}
	tests := []struct {
		name string
		b    []byte
		src  netip.Addr
		dst  netip.Addr
		want DropReason
	}{
		{"empty", nil, src, dst, DropShort},
		{"7 bytes", v2[:7], src, dst, DropShort},
		{"v2 without auth data", v2[:16], src, dst, DropShort},
		{"count beyond length", mod(v3, func(b []byte) { b[3] = 2 }), src, dst, DropShort},
		{"version 1", mod(v2, func(b []byte) { b[0] = 0x11 }), src, dst, DropVersion},
		{"version 4", mod(v3, func(b []byte) { b[0] = 0x41 }), src, dst, DropVersion},
		{"v2 over IPv6", v2, netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::12"), DropVersion},
		{"type 2", mod(v2, func(b []byte) { b[0] = 0x22 }), src, dst, DropType},
		{"v2 checksum", mod(v2, func(b []byte) { b[7] ^= 1 }), src, dst, DropChecksum},
		{"v2 payload flip", mod(v2, func(b []byte) { b[2] = 151 }), src, dst, DropChecksum},
		{"v3 wrong pseudo src", v3, netip.MustParseAddr("198.18.0.3"), dst, DropChecksum},
		{"v3 wrong pseudo dst", v3, src, netip.MustParseAddr("198.18.0.3"), DropChecksum},
		{"trailing byte", append(slices.Clone(v3), 0x55), src, dst, DropChecksum},
	}
	for _, tt := range tests {
		var a Advert
		if got := Parse(tt.b, tt.src, tt.dst, &a); got != tt.want {
			t.Errorf("%s: Parse = %v, want %v", tt.name, got, tt.want)
		}
	}
	// The v2 checksum does not cover the addresses around it.
	var a Advert
	if r := Parse(v2, netip.MustParseAddr("198.18.0.9"), dst, &a); r != DropNone {
		t.Errorf("v2 from another source = %v, want accepted (no pseudo-header)", r)
	}
}

// refChecksum is a slow reference for the internet checksum over the
// message and, for v3, the pseudo-header built as a byte slice.
func refChecksum(msg []byte, src, dst netip.Addr, v3 bool) uint16 {
	var buf []byte
	if v3 {
		if src.Is4() {
			buf = append(buf, src.AsSlice()...)
			buf = append(buf, dst.AsSlice()...)
			buf = append(buf, 0, IPProto, byte(len(msg)>>8), byte(len(msg)))
		} else {
			buf = append(buf, src.AsSlice()...)
			buf = append(buf, dst.AsSlice()...)
			buf = append(buf, 0, 0, byte(len(msg)>>8), byte(len(msg)), 0, 0, 0, IPProto)
		}
	}
	buf = append(buf, msg...)
	if len(buf)%2 == 1 {
		buf = append(buf, 0)
	}
	var sum uint64
	for i := 0; i < len(buf); i += 2 {
		sum += uint64(buf[i])<<8 | uint64(buf[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func FuzzParse(f *testing.F) {
	for _, c := range captured {
		b := unhex(f, c.hex)
		f.Add(b, c.src == "198.18.0.2")
	}
	f.Add([]byte{0x21, 0x01}, true)
	f.Fuzz(func(t *testing.T, b []byte, v4 bool) {
		src, dst := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("224.0.0.18")
		if !v4 {
			src, dst = netip.MustParseAddr("fe80::f00a:9fff:fe41:2926"), netip.MustParseAddr("ff02::12")
		}
		var a Advert
		if Parse(b, src, dst, &a) != DropNone {
			return
		}
		if ref := refChecksum(b, src, dst, a.Version == 3); ref != 0 {
			t.Fatalf("accepted %x with reference checksum %#04x", b, ref)
		}
		// Canonical packets re-encode to the same bytes.
		enc, err := a.Append(nil, src, dst)
		canonical := err == nil && len(enc) == len(b) && (a.Version == 2 || b[4]&0xf0 == 0)
		if canonical && !bytes.Equal(enc, b) {
			t.Fatalf("re-encoded %x as %x", b, enc)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	pkt := unhex(b, captured[0].hex)
	src, dst := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("224.0.0.18")
	a := Advert{Addrs: make([]netip.Addr, 0, 4)}
	b.ReportAllocs()
	for b.Loop() {
		if Parse(pkt, src, dst, &a) != DropNone {
			b.Fatal("drop")
		}
	}
}

func BenchmarkAppend(b *testing.B) {
	a := captured[2].want
	src, dst := netip.MustParseAddr(captured[2].src), netip.MustParseAddr(captured[2].dst)
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = a.Append(buf[:0], src, dst); err != nil {
			b.Fatal(err)
		}
	}
}
