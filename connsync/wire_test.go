package connsync

import (
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// unhex reads a hex string written with spaces and newlines between the
// fields of the struct layout.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

var (
	// A DR conn, ESTABLISHED, 900 s left, derived field by field from
	// struct ip_vs_sync_mesg and struct ip_vs_sync_v4.
	goldenV4Conn = Conn{
		Proto: ProtoTCP, Flags: FlagDRoute, State: TCPEstablished,
		Client: ap("198.18.0.10:40000"), Virtual: ap("198.18.0.100:80"), Dest: ap("198.18.0.11:80"),
		Timeout: 900,
	}
	goldenV4 = `
		00 05 002c 01 01 0000                  header: reserved, syncid 5, size 44, 1 conn, version 1, spare
		00 06 0024                             type IPv4, TCP, version 0 size 36
		00000003                               flags: DROUTE
		0001 9c40 0050 0050                    state ESTABLISHED, cport 40000, vport 80, dport 80
		00000000 00000384                      fwmark 0, timeout 900
		c612000a c6120064 c612000b             caddr, vaddr, daddr`

	// A persistence template (cport 0) then an IPv6 UDP conn.
	goldenTmpl = Conn{
		Proto: ProtoTCP, Flags: FlagTemplate | FlagMasq, State: 0,
		Client: ap("203.0.113.0:0"), Virtual: ap("198.18.0.100:443"), Dest: ap("198.19.0.12:8443"),
		Timeout: 360,
	}
	goldenV6Conn = Conn{
		Proto: ProtoUDP, Flags: FlagTunnel | FlagInactive, State: 0,
		Client: ap("[2001:db8::10]:5353"), Virtual: ap("[2001:db8::100]:53"), Dest: ap("[2001:db8::11]:53"),
		Timeout: 300,
	}
	goldenTwo = `
		00 07 0074 02 01 0000                  header: syncid 7, size 8+36+72 = 116, 2 conns
		00 06 0024 00001000                    IPv4 TCP size 36, flags TEMPLATE (NAT)
		0000 0000 01bb 20fb                    state 0, cport 0, vport 443, dport 8443
		00000000 00000168                      fwmark 0, timeout 360
		cb007100 c6120064 c613000c
		01 11 0048 00000102                    IPv6 UDP size 72, flags TUNNEL|INACTIVE
		0000 14e9 0035 0035                    state 0, cport 5353, vport 53, dport 53
		00000000 0000012c                      timeout 300
		20010db8000000000000000000000010
		20010db8000000000000000000000100
		20010db8000000000000000000000011`
)

func decodeAll(t testing.TB, msg []byte) (Header, []Conn, error) {
	t.Helper()
	var got []Conn
	h, err := Decode(msg, func(c *Conn) { got = append(got, *c) })
	return h, got, err
}

func TestEncodeGolden(t *testing.T) {
	tests := []struct {
		name   string
		syncID uint8
		conns  []Conn
		want   string
	}{
		{"one IPv4 conn", 5, []Conn{goldenV4Conn}, goldenV4},
		{"template and IPv6 conn", 7, []Conn{goldenTmpl, goldenV6Conn}, goldenTwo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEncoder(tt.syncID, DefaultMaxLen)
			for i := range tt.conns {
				if ok, err := e.Add(&tt.conns[i]); !ok || err != nil {
					t.Fatalf("Add(%v) = %v, %v", tt.conns[i].String(), ok, err)
				}
			}
			if got, want := hex.EncodeToString(e.Bytes()), hex.EncodeToString(unhex(t, stripComments(tt.want))); got != want {
				t.Errorf("encoded\n got %s\nwant %s", got, want)
			}
		})
	}
}

// stripComments drops the prose after each line's hex fields.
func stripComments(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		for _, f := range strings.Fields(line) {
			if _, err := hex.DecodeString(f); err != nil {
				break
			}
			b.WriteString(f)
		}
	}
	return b.String()
}

func TestDecodeGolden(t *testing.T) {
	tests := []struct {
		name  string
		msg   string
		want  Header
		conns []Conn
	}{
		{"one IPv4 conn", goldenV4, Header{Version: 1, SyncID: 5, Conns: 1}, []Conn{goldenV4Conn}},
		{"template and IPv6 conn", goldenTwo, Header{Version: 1, SyncID: 7, Conns: 2}, []Conn{goldenTmpl, goldenV6Conn}},
		{"options: sequence data, optional unknown, then aligned next conn", `
			00 01 0070 02 01 0000                 size 8 + 64 (62 + 2 pad) + 40 (36 + 4-byte optional param) = 112
			00 06 003e 00000603                   size 36+26 = 62, flags DROUTE|IN_SEQ|OUT_SEQ
			0001 9c40 0050 0050 00000000 00000384
			c612000a c6120064 c612000b
			01 18 000000010000000200000003 000000040000000500000006   SEQ_DATA, 24 bytes
			0000                                  padding to 32 bits
			00 11 0028 00000003                   UDP size 40
			0000 3039 0035 0035 00000000 0000012c
			c612000a c6120064 c612000b
			47 02 abcd                            unknown optional parameter (bit 6 set): ignored`,
			Header{Version: 1, SyncID: 1, Conns: 2},
			[]Conn{
				{Proto: ProtoTCP, Flags: FlagDRoute | FlagSeqMask, State: TCPEstablished, Client: ap("198.18.0.10:40000"), Virtual: ap("198.18.0.100:80"), Dest: ap("198.18.0.11:80"), Timeout: 900},
				{Proto: ProtoUDP, Flags: FlagDRoute, Client: ap("198.18.0.10:12345"), Virtual: ap("198.18.0.100:53"), Dest: ap("198.18.0.11:53"), Timeout: 300},
			}},
		{"mandatory unknown parameter and PE data mark the conn unsupported", `
			00 00 005d 02 01 0000                 size 8 + 40 + 45 (the last conn is not padded)
			00 06 0028 00000003 0001 9c40 0050 0050 00000000 00000384 c612000a c6120064 c612000b
			09 02 0000                            type 9 without bit 6: mandatory, unknown
			00 06 002d 00000003 0001 9c41 0050 0050 00000000 00000384 c612000a c6120064 c612000b
			02 02 0102 03 03 736970               PE data, PE name "sip"`,
			Header{Version: 1, Conns: 2},
			[]Conn{
				{Proto: ProtoTCP, Flags: FlagDRoute, State: TCPEstablished, Client: ap("198.18.0.10:40000"), Virtual: ap("198.18.0.100:80"), Dest: ap("198.18.0.11:80"), Timeout: 900, Unsupported: true},
				{Proto: ProtoTCP, Flags: FlagDRoute, State: TCPEstablished, Client: ap("198.18.0.10:40001"), Virtual: ap("198.18.0.100:80"), Dest: ap("198.18.0.11:80"), Timeout: 900, Unsupported: true},
			}},
		{"version 0 message (struct ip_vs_sync_mesg_v0, ip_vs_sync_conn_v0)", `
			02 03 0034                            nr_conns 2, syncid 3, size 4+24+24 = 52
			00 06 9c40 0050 0050 c612000a c6120064 c612000b 0003 0001
			00 11 3039 0035 0035 c612000a c6120064 c612000c 1003 0000`,
			Header{Version: 0, SyncID: 3, Conns: 2},
			[]Conn{
				{Proto: ProtoTCP, Flags: FlagDRoute, State: TCPEstablished, Client: ap("198.18.0.10:40000"), Virtual: ap("198.18.0.100:80"), Dest: ap("198.18.0.11:80")},
				{Proto: ProtoUDP, Flags: FlagDRoute | FlagTemplate, Client: ap("198.18.0.10:12345"), Virtual: ap("198.18.0.100:53"), Dest: ap("198.18.0.12:53")},
			}},
		{"version 0 conn with sequence options", `
			01 00 0034
			00 06 9c40 0050 0050 c612000a c6120064 c612000b 0603 0001
			000000010000000200000003 000000040000000500000006`,
			Header{Version: 0, Conns: 1},
			[]Conn{{Proto: ProtoTCP, Flags: FlagDRoute | FlagSeqMask, State: TCPEstablished, Client: ap("198.18.0.10:40000"), Virtual: ap("198.18.0.100:80"), Dest: ap("198.18.0.11:80")}}},
		{"empty version 1 message", "00 09 0008 00 01 0000", Header{Version: 1, SyncID: 9}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, got, err := decodeAll(t, unhex(t, stripComments(tt.msg)))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if h != tt.want {
				t.Errorf("header = %+v, want %+v", h, tt.want)
			}
			if len(got) != len(tt.conns) {
				t.Fatalf("got %d conns, want %d: %v", len(got), len(tt.conns), got)
			}
			for i := range got {
				if got[i] != tt.conns[i] {
					t.Errorf("conn %d:\n got %s (unsupported %v)\nwant %s (unsupported %v)", i, got[i].String(), got[i].Unsupported, tt.conns[i].String(), tt.conns[i].Unsupported)
				}
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	v4 := "00 06 0024 00000003 0001 9c40 0050 0050 00000000 00000384 c612000a c6120064 c612000b"
	tests := []struct {
		name, msg string
	}{
		{"empty", ""},
		{"three bytes", "00 00 00"},
		{"size larger than datagram", "00 00 0010 00 01 0000"},
		{"size smaller than datagram", "00 00 0008 00 01 0000 00"},
		{"count beyond data", "00 00 0008 01 01 0000"},
		{"conn cut short", "00 00 0020 01 01 0000 00 06 0024 00000003 0001 9c40 0050 0050 00000000 00000384"},
		{"conn size past the end", "00 00 002c 01 01 0000 00 06 0030" + v4[10:]},
		{"conn size below the IPv4 minimum", "00 00 002c 01 01 0000 00 06 0020" + v4[10:]},
		{"conn version 1", "00 00 002c 01 01 0000 00 06 1024" + v4[10:]},
		{"unknown conn type", "00 00 002c 01 01 0000 02" + v4[2:]},
		{"IPv6 type in an IPv4-sized conn", "00 00 002c 01 01 0000 01" + v4[2:]},
		{"option header cut", "00 00 0030 01 01 0000 00 06 0025" + v4[10:] + "01 000000"},
		{"option of length 0", "00 00 0030 01 01 0000 00 06 0026" + v4[10:] + "47 00 0000"},
		{"option past the conn", "00 00 0030 01 01 0000 00 06 0028" + v4[10:] + "47 05 0000"},
		{"sequence data of the wrong length", "00 00 0030 01 01 0000 00 06 0028" + v4[10:] + "01 02 0000"},
		{"sequence data twice", "00 00 0060 01 01 0000 00 06 0058" + v4[10:] + "01 18" + strings.Repeat("00", 24) + "01 18" + strings.Repeat("00", 24)},
		{"PE name too long", "00 00 0040 01 01 0000 00 06 0037" + v4[10:] + "03 11" + strings.Repeat("61", 17) + "00"},
		{"version 0 conn cut", "01 00 0014 00 06 9c40 0050 0050 c612000a c6120064"},
		{"version 0 options cut", "01 00 001c 00 06 9c40 0050 0050 c612000a c6120064 c612000b 0603 0001"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := 0
			_, err := Decode(unhex(t, tt.msg), func(*Conn) { called++ })
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode = %v, want ErrMalformed", err)
			}
			if called != 0 {
				t.Errorf("f called %d times on a refused message", called)
			}
		})
	}
}

func randConn(r *rand.Rand) Conn {
	c := Conn{
		Proto:   []uint8{ProtoTCP, ProtoUDP}[r.IntN(2)],
		Flags:   []uint32{FlagMasq, FlagTunnel, FlagDRoute}[r.IntN(3)] | uint32(r.IntN(2))*FlagTemplate | uint32(r.IntN(2))*FlagInactive,
		State:   uint16(r.IntN(int(TCPStates))),
		FWMark:  r.Uint32() & 0xff,
		Timeout: r.Uint32N(100000),
	}
	addr := func() netip.Addr {
		if r.IntN(3) == 0 {
			var b [16]byte
			b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
			for i := 4; i < 16; i++ {
				b[i] = byte(r.Uint32())
			}
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte{198, 18, byte(r.Uint32()), byte(r.Uint32())})
	}
	a := addr()
	mk := func() netip.AddrPort {
		if a.Is4() {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(r.Uint32()), byte(r.Uint32())}), uint16(r.Uint32()))
		}
		b := a.As16()
		b[15] = byte(r.Uint32())
		return netip.AddrPortFrom(netip.AddrFrom16(b), uint16(r.Uint32()))
	}
	c.Client, c.Virtual, c.Dest = mk(), mk(), mk()
	return c
}

// TestRoundTrip: random conns through the encoder, split into messages
// as the limits say, come back equal from the decoder.
func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, maxLen := range []int{80, 200, DefaultMaxLen, 9000, MaxMessage} {
		want := make([]Conn, 600)
		for i := range want {
			want[i] = randConn(r)
		}
		e := NewEncoder(42, maxLen)
		var got []Conn
		flush := func() {
			msg := e.Bytes()
			if len(msg) > max(maxLen, HeaderLen+ConnV6Len) {
				t.Fatalf("message of %d bytes over the limit %d", len(msg), maxLen)
			}
			h, conns, err := decodeAll(t, msg)
			if err != nil || h.SyncID != 42 || h.Version != 1 || h.Conns != len(conns) {
				t.Fatalf("decode: %+v, %v", h, err)
			}
			got = append(got, conns...)
			e.Reset()
		}
		for i := range want {
			ok, err := e.Add(&want[i])
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				flush()
				if ok, _ := e.Add(&want[i]); !ok {
					t.Fatalf("conn %d does not fit an empty message of %d bytes", i, maxLen)
				}
			}
		}
		flush()
		if len(got) != len(want) {
			t.Fatalf("maxLen %d: %d conns back, want %d", maxLen, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("maxLen %d: conn %d:\n got %s\nwant %s", maxLen, i, got[i].String(), want[i].String())
			}
		}
	}
}

func TestEncodeRefusesMixedFamilies(t *testing.T) {
	c := goldenV4Conn
	c.Dest = ap("[2001:db8::11]:80")
	e := NewEncoder(0, DefaultMaxLen)
	if ok, err := e.Add(&c); ok || err == nil {
		t.Fatalf("Add of a mixed-family conn = %v, %v; want an error", ok, err)
	}
	c.Dest = netip.AddrPortFrom(netip.AddrFrom16(netip.MustParseAddr("198.18.0.11").As16()), 80)
	if ok, err := e.Add(&c); ok || err == nil {
		t.Fatalf("Add with a 4-in-6 address = %v, %v; want an error", ok, err)
	}
	if e.Len() != 0 || len(e.Bytes()) != HeaderLen {
		t.Fatalf("refused conns changed the message: %d conns, %d bytes", e.Len(), len(e.Bytes()))
	}
}

func TestEncoderCountLimit(t *testing.T) {
	e := NewEncoder(0, MaxMessage)
	c := goldenV4Conn
	n := 0
	for {
		ok, err := e.Add(&c)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		n++
	}
	if n != MaxConns {
		t.Fatalf("a message took %d conns, want %d (nr_conns is a byte)", n, MaxConns)
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{goldenV4, goldenTwo,
		"00 01 0070 02 01 0000 00 06 003e 00000603 0001 9c40 0050 0050 00000000 00000384 c612000a c6120064 c612000b 01 18 000000010000000200000003 000000040000000500000006 0000 00 11 0028 00000003 0000 3039 0035 0035 00000000 0000012c c612000a c6120064 c612000b 47 02 abcd",
		"02 03 0034 00 06 9c40 0050 0050 c612000a c6120064 c612000b 0003 0001 00 11 3039 0035 0035 c612000a c6120064 c612000c 1003 0000",
		"00 00 005d 02 01 0000 00 06 0028 00000003 0001 9c40 0050 0050 00000000 00000384 c612000a c6120064 c612000b 09 02 0000 00 06 002d 00000003 0001 9c41 0050 0050 00000000 00000384 c612000a c6120064 c612000b 02 02 0102 03 03 736970",
	} {
		f.Add(unhex(f, stripComments(s)))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		var got []Conn
		h, err := Decode(msg, func(c *Conn) { got = append(got, *c) })
		if err != nil {
			if !errors.Is(err, ErrMalformed) || len(got) != 0 {
				t.Fatalf("error %v after %d conns; want ErrMalformed and none", err, len(got))
			}
		} else if len(got) != h.Conns {
			t.Fatalf("header counts %d conns, f saw %d", h.Conns, len(got))
		}
		// Whatever decoded re-encodes and decodes to the same conns (less
		// what the encoder never sends: sequence flags, options).
		e := NewEncoder(h.SyncID, MaxMessage)
		for i := range got {
			c := got[i]
			if c.Client.Addr().Is4() != c.Virtual.Addr().Is4() || c.Client.Addr().Is4() != c.Dest.Addr().Is4() {
				t.Fatalf("conn %d mixes families: %s", i, c.String())
			}
			if ok, err := e.Add(&c); !ok || err != nil {
				t.Fatalf("re-encode conn %d: %v, %v", i, ok, err)
			}
		}
		var again []Conn
		if _, err := Decode(e.Bytes(), func(c *Conn) { again = append(again, *c) }); err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		for i := range again {
			w := got[i]
			w.Flags &^= FlagSeqMask | FlagHashed
			w.Unsupported = false
			if again[i] != w {
				t.Fatalf("conn %d after re-encoding:\n got %s\nwant %s", i, again[i].String(), w.String())
			}
		}
		// The receiver counts every datagram once, whatever it holds.
		var ctr Counters
		r := NewReceiver(ReceiverConfig{SyncID: 1, Counters: &ctr}, importFunc(func(*Conn) error { return nil }), nil)
		r.Handle(msg)
		if ctr.RecvMessages.Load() != 1 || ctr.Malformed.Load()+ctr.WrongSyncID.Load() > 1 {
			t.Fatalf("counters after one datagram: %+v", snapshot(&ctr))
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	e := NewEncoder(1, DefaultMaxLen)
	c := goldenV4Conn
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := e.Add(&c); !ok {
			e.Reset()
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	e := NewEncoder(1, DefaultMaxLen)
	c := goldenV4Conn
	for {
		if ok, _ := e.Add(&c); !ok {
			break
		}
	}
	msg := e.Bytes()
	n := 0
	f := func(*Conn) { n++ }
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := Decode(msg, f); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(e.Len()), "conns/msg")
}
