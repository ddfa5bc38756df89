package benchxdp

import "encoding/binary"

// FlowHash is fwd.c's flow_hash: the baselines pick a real server with
// FlowHash(...) % n, and the benchmark predicts the sink's spread with it.
func FlowHash(saddr, daddr uint32, sport, dport uint16, proto uint8) uint32 {
	h := saddr * 0x9e3779b1
	h ^= daddr + 0x7f4a7c15 + (h << 6) + (h >> 2)
	h ^= (uint32(sport)<<16 | uint32(dport)) + 0x7f4a7c15 + (h << 6) + (h >> 2)
	h ^= uint32(proto)
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// FrameHash parses an Ethernet/IPv4/TCP-or-UDP frame and returns its
// FlowHash; ok is false for any other frame (the forwarders pass those to
// the kernel).
func FrameHash(f []byte) (h uint32, ok bool) {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:]) != 0x0800 {
		return 0, false
	}
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	proto := ip[9]
	if ihl < 20 || (proto != 6 && proto != 17) || len(ip) < ihl+4 {
		return 0, false
	}
	return FlowHash(binary.BigEndian.Uint32(ip[12:]), binary.BigEndian.Uint32(ip[16:]),
		binary.BigEndian.Uint16(ip[ihl:]), binary.BigEndian.Uint16(ip[ihl+2:]), proto), true
}
