package scheduler

import (
	"encoding/binary"
	"fmt"
	"math/bits"
)

// Protocol numbers whose first four payload bytes are the ports, as
// IPVS's sh/mh port lookups assume.
const (
	protoTCP  = 6
	protoUDP  = 17
	protoSCTP = 132
)

func hasPorts(proto uint8) bool {
	return proto == protoTCP || proto == protoUDP || proto == protoSCTP
}

// fold is IPVS's addr_fold in host order: the IPv4 address, or the XOR of
// an IPv6 address's four 32-bit words.
func fold(a *[16]byte) uint32 {
	if binary.BigEndian.Uint64(a[0:8]) == 0 && binary.BigEndian.Uint32(a[8:12]) == 0xffff {
		return binary.BigEndian.Uint32(a[12:16])
	}
	return binary.BigEndian.Uint32(a[0:4]) ^ binary.BigEndian.Uint32(a[4:8]) ^
		binary.BigEndian.Uint32(a[8:12]) ^ binary.BigEndian.Uint32(a[12:16])
}

// hashBits is Linux's hash_32: multiply by the golden ratio, keep the top
// bits.
func hashBits(v uint32, bits uint) uint32 { return (v * 0x61C88647) >> (32 - bits) }

const (
	hashTabBits = 8 // IPVS's CONFIG_IP_VS_{DH,SH}_TAB_BITS default
	hashTabSize = 1 << hashTabBits
	hashTabMask = hashTabSize - 1
)

// dh: ip_vs_dh.c. Bucket i holds the live dests in turn; weights do not
// shape the table (IPVS's dh ignores them), but a quiesced or overloaded
// dest's buckets take no flows.
type dhSched struct {
	base
	tab [hashTabSize]int32 // live positions, -1 when there are none
}

func buildDH(b base, _ Scheduler) (Scheduler, error) {
	s := &dhSched{base: b}
	for i := range s.tab {
		s.tab[i] = -1
		if n := len(b.live); n > 0 {
			s.tab[i] = int32(i % n)
		}
	}
	return s, nil
}

func (s *dhSched) Rebuild(dests []Dest) (Scheduler, error) {
	return build(s.name, s.opts, dests, s)
}

func (s *dhSched) Pick(f *Flow) int {
	p := s.tab[hashBits(fold(&f.Dst), hashTabBits)]
	if p < 0 || !avail(&s.live[p]) {
		return -1
	}
	return int(s.idx[p])
}

// sh: ip_vs_sh.c. Filling the table, each live dest takes weight
// consecutive buckets (at least one, so a quiesced dest keeps a bucket that
// takes no flows), in turn, round and round.
type shSched struct {
	base
	tab [hashTabSize]int32
}

func buildSH(b base, _ Scheduler) (Scheduler, error) {
	s := &shSched{base: b}
	p, count := 0, int32(0)
	for i := range s.tab {
		if len(b.live) == 0 {
			s.tab[i] = -1
			continue
		}
		s.tab[i] = int32(p)
		if count++; count >= b.live[p].Weight {
			p = (p + 1) % len(b.live)
			count = 0
		}
	}
	return s, nil
}

func (s *shSched) Rebuild(dests []Dest) (Scheduler, error) {
	return build(s.name, s.opts, dests, s)
}

func shHash(v uint32, offset uint32) uint32 {
	return (offset + hashBits(v, hashTabBits)) & hashTabMask
}

func (s *shSched) Pick(f *Flow) int {
	v := fold(&f.Src)
	if s.opts.SHPort && hasPorts(f.Proto) {
		v += uint32(f.SrcPort)
	}
	ih := shHash(v, 0)
	p := s.tab[ih]
	if p < 0 {
		return -1
	}
	if avail(&s.live[p]) {
		return int(s.idx[p])
	}
	if !s.opts.SHFallback {
		return -1
	}
	// ip_vs_sh_get_fallback: probe hashes with offsets ih, ih+1, ...
	for off := range uint32(hashTabSize) {
		p = s.tab[shHash(v, (off+ih)%hashTabSize)]
		if avail(&s.live[p]) {
			return int(s.idx[p])
		}
	}
	return -1
}

// mhDefaultSize is the Maglev table size when Options.MHTableSize is 0.
// (The kernel's compile-time default is 4093; 65537 spreads weights finer.)
const mhDefaultSize = 65537

// mh: ip_vs_mh.c, Maglev hashing (Eisenbud et al., NSDI 2016, §3.4).
type mhSched struct {
	base
	tab      []int32 // live positions, -1 when no dest has weight
	modM     uint64  // fastmod's multiplier for len(tab)
	lastW    []int32 // per live dest: the weight its entries were built for
	anyAvail bool    // some live dest has weight > 0
}

// Hash keys, fixed so tables are stable across restarts.
const (
	mhKey1 = 0x9e3779b97f4a7c15
	mhKey2 = 0xc2b2ae3d27d4eb4f
)

// mhHash is a keyed 32-bit mix of v (splitmix64's finalizer); IPVS uses
// hsiphash here, any good keyed hash gives Maglev its properties.
func mhHash(v uint32, key uint64) uint32 {
	x := uint64(v) ^ key
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return uint32(x)
}

// fastmodM and fastmod compute x % d for 32-bit x and d > 1 with two
// multiplies instead of a division (Lemire, Kaser and Kurz, "Faster
// remainder by direct computation", 2019): M = ceil(2^64/d); the low 64
// bits of M*x are the fraction x/d, and that fraction times d is the
// remainder. The division costs more than the rest of an mh pick.
func fastmodM(d uint32) uint64 { return ^uint64(0)/uint64(d) + 1 }

func fastmod(x uint32, m uint64, d uint32) uint32 {
	hi, _ := bits.Mul64(m*uint64(x), uint64(d))
	return uint32(hi)
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

func buildMH(b base, prev Scheduler) (Scheduler, error) {
	m := b.opts.MHTableSize
	if m == 0 {
		m = mhDefaultSize
	}
	if m > 1<<24 || !isPrime(m) {
		return nil, fmt.Errorf("mh table size %d: want a prime up to %d", m, 1<<24)
	}
	if len(b.live) > m {
		return nil, fmt.Errorf("mh table size %d: smaller than the %d servers", m, len(b.live))
	}
	s := &mhSched{base: b, tab: make([]int32, m), modM: fastmodM(uint32(m)), lastW: make([]int32, len(b.live))}
	// IPVS's last_weight: a quiesced dest keeps the weight it had, so its
	// entries (and everyone else's) stay where they were.
	var prevW map[*ConnCounts]int32
	if p, ok := prev.(*mhSched); ok {
		prevW = make(map[*ConnCounts]int32, len(p.live))
		for i := range p.live {
			prevW[p.live[i].Conns] = p.lastW[i]
		}
	}
	for i := range b.live {
		w := b.live[i].Weight
		if w > 0 {
			s.anyAvail = true
		} else {
			w = prevW[b.live[i].Conns]
		}
		s.lastW[i] = w
	}
	s.populate()
	return s, nil
}

// populate fills tab: every dest walks its permutation (offset + j*skip
// mod M) taking the first free entries, turns entries per round, where
// turns is proportional to its weight.
func (s *mhSched) populate() {
	m := uint32(len(s.tab))
	for i := range s.tab {
		s.tab[i] = -1
	}
	n := len(s.live)
	var g int32
	for _, w := range s.lastW {
		if w > 0 {
			if g == 0 {
				g = w
			} else {
				g = gcd(w, g)
			}
		}
	}
	if g == 0 {
		return
	}
	// turns: weight/gcd, scaled down (each weighted dest keeping at least
	// one) so a round is at most M/64 entries; the partial last round then
	// moves no dest's share by more than 1/64 of it. (IPVS caps turns at 63
	// by a shift, which loses precision between close weights.)
	turns := make([]uint64, n)
	var total uint64
	for i, w := range s.lastW {
		turns[i] = uint64(w / g)
		total += turns[i]
	}
	if limit := max(uint64(m)/64, uint64(n)); total > limit {
		for i, w := range s.lastW {
			if w > 0 {
				turns[i] = max(1, (turns[i]*limit+total/2)/total) // rounded
			}
		}
	}
	off := make([]uint32, n)
	skip := make([]uint32, n)
	for i := range s.live {
		d := &s.live[i]
		key := fold(&d.Addr) + uint32(d.Port)
		if d.Addr == ([16]byte{}) && d.Port == 0 {
			key = uint32(s.idx[i]) + 1
		}
		off[i] = mhHash(key, mhKey1) % m
		skip[i] = mhHash(key, mhKey2)%(m-1) + 1
	}
	filled := uint32(0)
	for filled < m {
		for i := range n {
			for t := uint64(0); t < turns[i]; t++ {
				c := off[i]
				for s.tab[c] >= 0 {
					c += skip[i]
					if c >= m {
						c -= m
					}
				}
				off[i] = c
				s.tab[c] = int32(i)
				if filled++; filled == m {
					return
				}
			}
		}
	}
}

func (s *mhSched) Rebuild(dests []Dest) (Scheduler, error) {
	return build(s.name, s.opts, dests, s)
}

func (s *mhSched) Pick(f *Flow) int {
	if !s.anyAvail {
		return -1
	}
	m := uint32(len(s.tab))
	v := fold(&f.Src)
	if s.opts.MHPort && hasPorts(f.Proto) {
		v += uint32(f.SrcPort)
	}
	ih := fastmod(mhHash(v, mhKey1), s.modM, m)
	p := s.tab[ih]
	if p < 0 {
		return -1
	}
	if avail(&s.live[p]) {
		return int(s.idx[p])
	}
	if !s.opts.MHFallback {
		return -1
	}
	// ip_vs_mh_get_fallback: probe the hashes of v+offset for offsets
	// ih, ih+1, ... around the table.
	for off := range m {
		p = s.tab[mhHash(v+(off+ih)%m, mhKey1)%m]
		if avail(&s.live[p]) {
			return int(s.idx[p])
		}
	}
	return -1
}
