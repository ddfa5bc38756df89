package dataplane

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// refChecksum is the slow RFC 1071 reference: one 16-bit word at a time.
func refChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i < len(b); i += 2 {
		w := uint32(b[i]) << 8
		if i+1 < len(b) {
			w |= uint32(b[i+1])
		}
		s += w
		for s>>16 != 0 {
			s = s&0xFFFF + s>>16
		}
	}
	return ^uint16(s)
}

func TestChecksumKnown(t *testing.T) {
	// IPv4 header from RFC 1071-style worked examples (checksum field zeroed).
	hdr := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
		0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if got, want := Checksum(hdr, 0), uint16(0xb861); got != want {
		t.Fatalf("Checksum = %#04x, want %#04x", got, want)
	}
	for _, n := range []int{0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 1499, 1500} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + 3)
		}
		if got, want := Checksum(b, 0), refChecksum(b); got != want {
			t.Errorf("len %d: Checksum = %#04x, want %#04x", n, got, want)
		}
	}
}

// sameChecksum treats 0x0000 and 0xFFFF as equal: both are ones'-complement
// zero, and a receiver accepts either (RFC 1624 §3).
func sameChecksum(a, b uint16) bool {
	return a == b || (a == 0 && b == 0xFFFF) || (a == 0xFFFF && b == 0)
}

// TestChecksumIncrementalDifferential changes random fields of random data and
// checks every incremental helper against a full recomputation.
func TestChecksumIncrementalDifferential(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 20000 {
		n := 20 + 2*r.IntN(40)
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if iter%5 == 0 { // zero-heavy data exercises the ±0 edge
			for i := range b {
				if r.IntN(4) != 0 {
					b[i] = 0
				}
			}
		}
		// Checksum field at 10..11; it covers itself as zero.
		binary.BigEndian.PutUint16(b[10:], 0)
		hc := Checksum(b, 0)
		binary.BigEndian.PutUint16(b[10:], hc)

		var got uint16
		switch iter % 3 {
		case 0:
			off := 12 + 2*r.IntN((n-12)/2)
			old := binary.BigEndian.Uint16(b[off:])
			nw := uint16(r.Uint32())
			binary.BigEndian.PutUint16(b[off:], nw)
			got = ChecksumUpdate16(hc, old, nw)
		case 1:
			off := 12 + 2*r.IntN((n-14)/2)
			old := binary.BigEndian.Uint32(b[off:])
			nw := r.Uint32()
			binary.BigEndian.PutUint32(b[off:], nw)
			got = ChecksumUpdate32(hc, old, nw)
		case 2:
			off := 12
			l := 2 * (1 + r.IntN((n-12)/2))
			old := append([]byte(nil), b[off:off+l]...)
			for i := off; i < off+l; i++ {
				b[i] = byte(r.Uint32())
			}
			got = ChecksumUpdateBytes(hc, old, b[off:off+l])
		}
		binary.BigEndian.PutUint16(b[10:], 0)
		want := refChecksum(b)
		if !sameChecksum(got, want) {
			t.Fatalf("iter %d: incremental %#04x, full %#04x", iter, got, want)
		}
		// The updated header must verify: the sum over all words is -0.
		binary.BigEndian.PutUint16(b[10:], got)
		if v := refChecksum(b); v != 0 && v != 0xFFFF {
			t.Fatalf("iter %d: updated data does not verify (%#04x)", iter, v)
		}
	}
}

func BenchmarkChecksum1500(b *testing.B) {
	buf := make([]byte, 1500)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		Checksum(buf, 0)
	}
}

func BenchmarkChecksumUpdate32(b *testing.B) {
	b.ReportAllocs()
	var hc uint16 = 0x1234
	for i := 0; b.Loop(); i++ {
		hc = ChecksumUpdate32(hc, uint32(i), uint32(i*3))
	}
	_ = hc
}

func TestIPv4HeaderChecksum(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	h := make([]byte, 20)
	for range 10000 {
		for i := range h {
			h[i] = byte(rng.Uint32())
		}
		h[10], h[11] = 0, 0
		if got, want := ipv4HeaderChecksum(h), refChecksum(h); !sameChecksum(got, want) {
			t.Fatalf("% x: got %#04x, want %#04x", h, got, want)
		}
	}
}
