// Package trace owns the benchmark's synthetic traffic: pcaps of client
// flows to one or more VIPs (uniform or Zipf-distributed flow sizes, TCP
// SYN/ACK/data/FIN sequences and UDP, fixed or IMIX frame sizes) generated
// deterministically from a seed, and the reading and writing of those
// pcaps (pcapgo, no cgo), so anyone can regenerate a trace or replay their
// own.
package trace

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Frame sizes are captured lengths (no FCS): MinFrame is the 64-byte
// minimum Ethernet frame, MaxFrame the 1514-byte full-MTU frame.
const (
	MinFrame = 60
	MaxFrame = 1514
)

// Default addresses of generated traces: the standard lab's VIP, clients in
// 198.19.0.0/16, and locally administered MACs the bench topology assigns
// to the generator's and the director's veths.
var (
	DefaultVIP     = netip.MustParseAddr("198.18.0.100")
	DefaultClients = netip.MustParsePrefix("198.19.0.0/16")
	ClientMAC      = net.HardwareAddr{0x02, 0x00, 0xc6, 0x12, 0x00, 0x0a}
	DirectorMAC    = net.HardwareAddr{0x02, 0x00, 0xc6, 0x12, 0x00, 0x02}
)

// Config describes a trace. The zero value of each field means its default.
type Config struct {
	Packets int          // total frames; default 8192
	Flows   int          // distinct flows; default 512
	Dist    string       // flow sizes: "uniform" (default) or "zipf"
	ZipfS   float64      // Zipf exponent (>1); default 1.2
	Proto   string       // "tcp" (default), "udp", "mix" (half the flows each) or "syn" (TCP, one SYN per flow)
	Size    string       // "64" (default), "1514", "imix" or a captured length 60..1514
	VIPs    []netip.Addr // destinations, flows spread round-robin; default DefaultVIP
	Port    uint16       // destination port; default 80
	Clients netip.Prefix // client source addresses; default DefaultClients
	SrcMAC  net.HardwareAddr
	DstMAC  net.HardwareAddr
	Seed    uint64
	// DistinctClients gives flow i the i-th host address of Clients
	// (wrapping when the flows outnumber the addresses) instead of a
	// random one: schedulers that hash the client address (mh, sh) then
	// see as many distinct keys as the prefix allows.
	DistinctClients bool
}

func (c *Config) defaults() error {
	if c.Packets == 0 {
		c.Packets = 8192
	}
	if c.Flows == 0 {
		c.Flows = 512
	}
	if c.Packets < 0 || c.Flows < 0 {
		return errors.New("trace: negative packet or flow count")
	}
	if c.Dist == "" {
		c.Dist = "uniform"
	}
	if c.Dist != "uniform" && c.Dist != "zipf" {
		return fmt.Errorf("trace: flow size distribution %q: want uniform or zipf", c.Dist)
	}
	if c.ZipfS == 0 {
		c.ZipfS = 1.2
	}
	if c.ZipfS <= 1 {
		return fmt.Errorf("trace: zipf exponent %v: want > 1", c.ZipfS)
	}
	if c.Proto == "" {
		c.Proto = "tcp"
	}
	if c.Proto != "tcp" && c.Proto != "udp" && c.Proto != "mix" && c.Proto != "syn" {
		return fmt.Errorf("trace: protocol %q: want tcp, udp, mix or syn", c.Proto)
	}
	if c.Size == "" {
		c.Size = "64"
	}
	if _, err := ParseSize(c.Size); err != nil {
		return err
	}
	if len(c.VIPs) == 0 {
		c.VIPs = []netip.Addr{DefaultVIP}
	}
	for _, v := range c.VIPs {
		if !v.Is4() {
			return fmt.Errorf("trace: VIP %v: only IPv4 is generated", v)
		}
	}
	if c.Port == 0 {
		c.Port = 80
	}
	if !c.Clients.IsValid() {
		c.Clients = DefaultClients
	}
	if !c.Clients.Addr().Is4() || c.Clients.Bits() > 30 {
		return fmt.Errorf("trace: client prefix %v: want IPv4, /30 or wider", c.Clients)
	}
	if c.SrcMAC == nil {
		c.SrcMAC = ClientMAC
	}
	if c.DstMAC == nil {
		c.DstMAC = DirectorMAC
	}
	if len(c.SrcMAC) != 6 || len(c.DstMAC) != 6 {
		return errors.New("trace: MACs must be Ethernet (6 bytes)")
	}
	minPer := minPackets(c.Proto)
	if c.Flows == 0 || c.Packets < c.Flows*minPer {
		return fmt.Errorf("trace: %d packets cannot hold %d %s flows (at least %d packets each)", c.Packets, c.Flows, c.Proto, minPer)
	}
	return nil
}

// Sizer picks the captured length of each frame.
type Sizer struct {
	fixed int
	imix  bool
}

// IMIX is the simple IMIX: 7 parts 64-byte, 4 parts 594-byte and 1 part
// 1518-byte frames (on the wire, with FCS).
var IMIX = []struct{ Len, Weight int }{{60, 7}, {590, 4}, {1514, 1}}

// ParseSize reads "64", "1514", "imix" or a captured length.
func ParseSize(s string) (Sizer, error) {
	switch strings.ToLower(s) {
	case "imix":
		return Sizer{imix: true}, nil
	case "64":
		return Sizer{fixed: MinFrame}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < MinFrame || n > MaxFrame {
		return Sizer{}, fmt.Errorf("trace: frame size %q: want 64, 1514, imix or %d..%d", s, MinFrame, MaxFrame)
	}
	return Sizer{fixed: n}, nil
}

func (s Sizer) pick(r *rand.Rand) int {
	if !s.imix {
		return s.fixed
	}
	total := 0
	for _, e := range IMIX {
		total += e.Weight
	}
	x := r.IntN(total)
	for _, e := range IMIX {
		if x < e.Weight {
			return e.Len
		}
		x -= e.Weight
	}
	return IMIX[len(IMIX)-1].Len
}

// Flow is one generated flow.
type Flow struct {
	Proto   layers.IPProtocol
	Src     netip.AddrPort
	Dst     netip.AddrPort
	Packets int
}

// Trace is a generated trace: its frames in order and the flows they
// belong to (Flow[i] is the index in Flows of frame i).
type Trace struct {
	Frames [][]byte
	Flow   []int
	Flows  []Flow
}

// minPackets is the fewest frames a flow of proto has: SYN, ACK and FIN
// for TCP connections, one datagram or one SYN otherwise.
func minPackets(proto string) int {
	if proto == "tcp" || proto == "mix" {
		return 3
	}
	return 1
}

// FlowSizes splits packets among flows: equal shares (uniform) or shares
// proportional to 1/rank^s (zipf), each at least minPer, summing to packets.
func FlowSizes(dist string, s float64, flows, packets, minPer int) []int {
	sizes := make([]int, flows)
	spare := packets - flows*minPer
	w := make([]float64, flows)
	var sum float64
	for i := range w {
		w[i] = 1
		if dist == "zipf" {
			w[i] = 1 / math.Pow(float64(i+1), s)
		}
		sum += w[i]
	}
	given := 0
	for i := range sizes {
		extra := int(float64(spare) * w[i] / sum)
		sizes[i] = minPer + extra
		given += extra
	}
	// Hand the rounding remainder to the largest flows, one each.
	for i := 0; given < spare; i = (i + 1) % flows {
		sizes[i]++
		given++
	}
	return sizes
}

// Generate builds the trace c describes. The same Config always gives the
// same frames.
func Generate(c Config) (*Trace, error) {
	if err := c.defaults(); err != nil {
		return nil, err
	}
	sizer, _ := ParseSize(c.Size)
	r := rand.New(rand.NewPCG(c.Seed, 0x78767362656e6368)) // "xvsbench"
	minPer := minPackets(c.Proto)
	sizes := FlowSizes(c.Dist, c.ZipfS, c.Flows, c.Packets, minPer)

	t := &Trace{Flows: make([]Flow, c.Flows)}
	base := c.Clients.Masked().Addr().As4()
	hostBits := 32 - c.Clients.Bits()
	seen := map[netip.AddrPort]bool{}
	for i := range t.Flows {
		proto := layers.IPProtocolTCP
		if c.Proto == "udp" || (c.Proto == "mix" && i%2 == 1) {
			proto = layers.IPProtocolUDP
		}
		var src netip.AddrPort
		for {
			// Host part avoids the network and broadcast addresses.
			h := 1 + r.Uint32N(uint32(1)<<hostBits-2)
			if c.DistinctClients {
				h = 1 + uint32(i)%(uint32(1)<<hostBits-2)
			}
			a := base
			v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
			v |= h
			src = netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), uint16(1024+r.IntN(64511)))
			if !seen[src] {
				seen[src] = true
				break
			}
		}
		t.Flows[i] = Flow{Proto: proto, Src: src, Dst: netip.AddrPortFrom(c.VIPs[i%len(c.VIPs)], c.Port), Packets: sizes[i]}
	}

	// Interleave: a shuffled multiset of flow ids; the k-th occurrence of a
	// flow is its k-th packet, so each flow keeps its own order.
	order := make([]int, 0, c.Packets)
	for i, n := range sizes {
		for range n {
			order = append(order, i)
		}
	}
	r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	next := make([]int, c.Flows)
	t.Frames = make([][]byte, 0, len(order))
	t.Flow = order
	for _, fi := range order {
		f := t.Flows[fi]
		k := next[fi]
		next[fi]++
		frame, err := build(c, f, k, sizer.pick(r))
		if err != nil {
			return nil, fmt.Errorf("trace: flow %d packet %d: %w", fi, k, err)
		}
		t.Frames = append(t.Frames, frame)
	}
	return t, nil
}

// build serialises packet k of flow f as a frame of exactly size bytes:
// payload for data packets, Ethernet trailer (zeros) for TCP control
// packets, whose IP length stays that of a bare header.
func build(c Config, f Flow, k, size int) ([]byte, error) {
	eth := &layers.Ethernet{SrcMAC: c.SrcMAC, DstMAC: c.DstMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{
		Version: 4, IHL: 5, TTL: 64, Protocol: f.Proto, Flags: layers.IPv4DontFragment,
		Id: uint16(k), SrcIP: f.Src.Addr().AsSlice(), DstIP: f.Dst.Addr().AsSlice(),
	}
	var l4 gopacket.SerializableLayer
	payload := 0
	const hdr = 14 + 20
	if f.Proto == layers.IPProtocolUDP {
		u := &layers.UDP{SrcPort: layers.UDPPort(f.Src.Port()), DstPort: layers.UDPPort(f.Dst.Port())}
		if err := u.SetNetworkLayerForChecksum(ip); err != nil {
			return nil, err
		}
		l4 = u
		payload = size - hdr - 8
	} else {
		// Client side of a connection: SYN, ACK, data..., FIN.
		const isn = 1000
		tc := &layers.TCP{SrcPort: layers.TCPPort(f.Src.Port()), DstPort: layers.TCPPort(f.Dst.Port()), Window: 65535}
		switch {
		case k == 0 || c.Proto == "syn":
			tc.SYN, tc.Seq = true, isn
		case k == 1:
			tc.ACK, tc.Seq, tc.Ack = true, isn+1, 2001
		case k == f.Packets-1:
			tc.FIN, tc.ACK = true, true
			tc.Seq, tc.Ack = uint32(isn+1+(k-2)*(size-hdr-20)), 2001
		default:
			tc.ACK, tc.PSH = true, true
			tc.Seq, tc.Ack = uint32(isn+1+(k-2)*(size-hdr-20)), 2001
			payload = size - hdr - 20
		}
		if err := tc.SetNetworkLayerForChecksum(ip); err != nil {
			return nil, err
		}
		l4 = tc
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, l4, gopacket.Payload(make([]byte, max(payload, 0)))); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	if len(b) > size {
		return nil, fmt.Errorf("frame of %d bytes exceeds size %d", len(b), size)
	}
	return append(slices.Clone(b), make([]byte, size-len(b))...), nil
}
