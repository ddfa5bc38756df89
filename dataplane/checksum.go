package dataplane

import "encoding/binary"

// Checksum returns the Internet checksum (RFC 1071) of b, starting from the
// partial sum initial (for example a pseudo-header sum). The result is ready
// to be stored in a header: the ones' complement of the folded sum.
func Checksum(b []byte, initial uint32) uint16 {
	return ^fold(sum(b, initial))
}

// sum adds b as big-endian 16-bit words to acc without folding.
func sum(b []byte, acc uint32) uint32 {
	a := uint64(acc)
	for len(b) >= 8 {
		v := binary.BigEndian.Uint64(b)
		a += v >> 48
		a += (v >> 32) & 0xFFFF
		a += (v >> 16) & 0xFFFF
		a += v & 0xFFFF
		b = b[8:]
	}
	for len(b) >= 2 {
		a += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		a += uint64(b[0]) << 8
	}
	for a>>32 != 0 {
		a = (a & 0xFFFFFFFF) + a>>32
	}
	return uint32(a)
}

func fold(s uint32) uint16 {
	s = (s & 0xFFFF) + s>>16
	s = (s & 0xFFFF) + s>>16
	return uint16(s)
}

// PseudoHeaderSum returns the unfolded sum of the TCP/UDP pseudo-header
// (RFC 793 §3.1, RFC 8200 §8.1) for the given addresses (4 or 16 bytes each).
func PseudoHeaderSum(src, dst []byte, proto uint8, length int) uint32 {
	s := sum(src, 0)
	s = sum(dst, s)
	return s + uint32(proto) + uint32(length)
}

// ChecksumUpdate16 returns the checksum hc after one 16-bit word of the
// covered data changed from old to new, by RFC 1624 eqn. 3:
// HC' = ~(~HC + ~m + m'). It never yields the -0 that eqn. 2 can produce.
func ChecksumUpdate16(hc, old, new uint16) uint16 {
	s := uint32(^hc) + uint32(^old) + uint32(new)
	return ^fold(s)
}

// ChecksumUpdate32 is ChecksumUpdate16 for a 32-bit field (an IPv4 address
// or two adjacent ports).
func ChecksumUpdate32(hc uint16, old, new uint32) uint16 {
	s := uint32(^hc) + uint32(^uint16(old>>16)) + uint32(^uint16(old)) +
		uint32(uint16(new>>16)) + uint32(uint16(new))
	return ^fold(s)
}

// ChecksumUpdateBytes updates hc for a field that changed from old to new;
// both slices have the same even length (an IPv6 address, a port pair).
func ChecksumUpdateBytes(hc uint16, old, new []byte) uint16 {
	s := uint32(^hc)
	for i := 0; i+1 < len(old) && i+1 < len(new); i += 2 {
		s += uint32(^binary.BigEndian.Uint16(old[i:])&0xFFFF) + uint32(binary.BigEndian.Uint16(new[i:]))
	}
	return ^fold(s)
}

// ipv4HeaderChecksum is Checksum for a 20-byte IPv4 header (checksum field
// zero), unrolled: the TUN path writes one per packet.
func ipv4HeaderChecksum(h []byte) uint16 {
	_ = h[19]
	a := uint64(binary.BigEndian.Uint32(h[0:])) + uint64(binary.BigEndian.Uint32(h[4:])) +
		uint64(binary.BigEndian.Uint32(h[8:])) + uint64(binary.BigEndian.Uint32(h[12:])) +
		uint64(binary.BigEndian.Uint32(h[16:]))
	a = (a & 0xFFFFFFFF) + a>>32
	a = (a & 0xFFFFFFFF) + a>>32
	return ^fold(uint32(a))
}

// decTTL decrements the IPv4 TTL (updating the header checksum
// incrementally) or the IPv6 hop limit of a parsed frame. It reports false,
// changing nothing, when the packet arrived with 1 or 0 left.
func decTTL(frame []byte, p *Packet) bool {
	ip := frame[p.L3:]
	if p.IPv6 {
		if ip[7] <= 1 {
			return false
		}
		ip[7]--
		return true
	}
	_ = ip[11]
	ttl := ip[8]
	if ttl <= 1 {
		return false
	}
	ip[8] = ttl - 1
	old := uint16(ttl)<<8 | uint16(ip[9])
	binary.BigEndian.PutUint16(ip[10:], ChecksumUpdate16(binary.BigEndian.Uint16(ip[10:]), old, old-0x100))
	return true
}
