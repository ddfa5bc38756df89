package trace

import (
	"bytes"
	"math"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

func TestFlowSizes(t *testing.T) {
	for _, tc := range []struct {
		dist                   string
		flows, packets, minPer int
	}{
		{"uniform", 10, 100, 3}, {"uniform", 7, 100, 1}, {"zipf", 100, 5000, 3}, {"zipf", 64, 64, 1},
	} {
		sizes := FlowSizes(tc.dist, 1.2, tc.flows, tc.packets, tc.minPer)
		sum := 0
		for i, n := range sizes {
			sum += n
			if n < tc.minPer {
				t.Errorf("%+v: flow %d has %d packets, want >= %d", tc, i, n, tc.minPer)
			}
			if i > 0 && n > sizes[i-1] {
				t.Errorf("%+v: flow %d (%d) larger than flow %d (%d)", tc, i, n, i-1, sizes[i-1])
			}
		}
		if sum != tc.packets {
			t.Errorf("%+v: sizes sum to %d, want %d", tc, sum, tc.packets)
		}
		if tc.dist == "uniform" && sizes[0]-sizes[len(sizes)-1] > 1 {
			t.Errorf("%+v: uniform sizes differ by more than 1: %v", tc, sizes)
		}
	}
}

// TestZipfShape: the share of the spare packets follows 1/rank^s, so the
// ratio of flow 1's extra packets to flow k's is close to k^s.
func TestZipfShape(t *testing.T) {
	const s = 1.2
	sizes := FlowSizes("zipf", s, 200, 200*3+100000, 3)
	for _, k := range []int{2, 5, 10, 50} {
		got := float64(sizes[0]-3) / float64(sizes[k-1]-3)
		want := math.Pow(float64(k), s)
		if math.Abs(got-want)/want > 0.05 {
			t.Errorf("size(1)/size(%d) = %.2f, want %.2f", k, got, want)
		}
	}
}

func decode(t *testing.T, f []byte) gopacket.Packet {
	t.Helper()
	p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("frame does not decode: %v", el.Error())
	}
	return p
}

func TestGenerateTCPFlows(t *testing.T) {
	vips := []netip.Addr{netip.MustParseAddr("198.18.0.100"), netip.MustParseAddr("198.18.0.101")}
	tr, err := Generate(Config{Packets: 600, Flows: 40, Proto: "tcp", Size: "64", VIPs: vips, Dist: "zipf"})
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.Frames) != 600 || len(tr.Flow) != 600 || len(tr.Flows) != 40 {
		t.Fatalf("got %d frames, %d flow ids, %d flows", len(tr.Frames), len(tr.Flow), len(tr.Flows))
	}
	seen := make([]int, len(tr.Flows))
	for i, f := range tr.Frames {
		if len(f) != MinFrame {
			t.Fatalf("frame %d is %d bytes, want %d", i, len(f), MinFrame)
		}
		p := decode(t, f)
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		fl := tr.Flows[tr.Flow[i]]
		if got := netip.AddrFrom4([4]byte(ip.DstIP.To4())); got != fl.Dst.Addr() {
			t.Fatalf("frame %d to %v, want %v", i, got, fl.Dst.Addr())
		}
		if !DefaultClients.Contains(netip.AddrFrom4([4]byte(ip.SrcIP.To4()))) {
			t.Fatalf("frame %d from %v, outside %v", i, ip.SrcIP, DefaultClients)
		}
		k := seen[tr.Flow[i]]
		seen[tr.Flow[i]]++
		switch {
		case k == 0:
			if !tcp.SYN || tcp.ACK {
				t.Fatalf("frame %d: first packet of its flow is not a SYN", i)
			}
		case k == fl.Packets-1:
			if !tcp.FIN || !tcp.ACK {
				t.Fatalf("frame %d: last packet of its flow is not FIN+ACK", i)
			}
		default:
			if tcp.SYN || tcp.FIN || !tcp.ACK {
				t.Fatalf("frame %d: middle packet flags SYN=%v FIN=%v ACK=%v", i, tcp.SYN, tcp.FIN, tcp.ACK)
			}
		}
		// Checksums are right: gopacket recomputes and compares.
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range seen {
		if n != tr.Flows[i].Packets {
			t.Errorf("flow %d: %d frames, want %d", i, n, tr.Flows[i].Packets)
		}
	}
	// Round robin over VIPs.
	if tr.Flows[0].Dst.Addr() != vips[0] || tr.Flows[1].Dst.Addr() != vips[1] {
		t.Errorf("flows 0 and 1 go to %v and %v, want the two VIPs", tr.Flows[0].Dst, tr.Flows[1].Dst)
	}
}

func TestGenerateSizes(t *testing.T) {
	for _, tc := range []struct {
		size  string
		proto string
		check func(n int) bool
	}{
		{"1514", "udp", func(n int) bool { return n == 1514 }},
		{"1514", "tcp", func(n int) bool { return n == 1514 }},
		{"300", "mix", func(n int) bool { return n == 300 }},
		{"imix", "udp", func(n int) bool { return n == 60 || n == 590 || n == 1514 }},
	} {
		tr, err := Generate(Config{Packets: 2000, Flows: 50, Proto: tc.proto, Size: tc.size})
		if err != nil {
			t.Fatalf("%s/%s: %v", tc.size, tc.proto, err)
		}
		counts := map[int]int{}
		for i, f := range tr.Frames {
			if !tc.check(len(f)) {
				t.Fatalf("%s/%s: frame %d is %d bytes", tc.size, tc.proto, i, len(f))
			}
			counts[len(f)]++
			decode(t, f)
		}
		if tc.size == "imix" {
			// 7:4:1 within a few percent over 2000 frames.
			if r := float64(counts[60]) / float64(counts[1514]); r < 5 || r > 9.5 {
				t.Errorf("imix 64:1518 ratio %.1f, want ≈7 (%v)", r, counts)
			}
		}
	}
}

func TestGenerateDeterministic(t *testing.T) {
	c := Config{Packets: 300, Flows: 30, Proto: "mix", Dist: "zipf", Seed: 7}
	a, err := Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Generate(c)
	for i := range a.Frames {
		if !bytes.Equal(a.Frames[i], b.Frames[i]) {
			t.Fatalf("frame %d differs between two generations with the same seed", i)
		}
	}
	c.Seed = 8
	d, _ := Generate(c)
	same := 0
	for i := range a.Frames {
		if bytes.Equal(a.Frames[i], d.Frames[i]) {
			same++
		}
	}
	if same == len(a.Frames) {
		t.Fatal("another seed gave the same trace")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{Dist: "pareto"}, {Proto: "sctp"}, {Size: "59"}, {Size: "1515"}, {ZipfS: 0.5},
		{Packets: 10, Flows: 5, Proto: "tcp"}, {VIPs: []netip.Addr{netip.MustParseAddr("2001:db8::1")}},
	} {
		if _, err := Generate(c); err == nil {
			t.Errorf("Generate(%+v) succeeded, want an error", c)
		}
	}
}

func TestPcapRoundTrip(t *testing.T) {
	tr, err := Generate(Config{Packets: 100, Flows: 10, Size: "imix", Proto: "udp"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WritePcap(&buf, tr.Frames); err != nil {
		t.Fatal(err)
	}
	first := bytes.Clone(buf.Bytes())
	got, err := ReadPcap(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(tr.Frames) {
		t.Fatalf("read %d frames, wrote %d", len(got), len(tr.Frames))
	}
	for i := range got {
		if !bytes.Equal(got[i], tr.Frames[i]) {
			t.Fatalf("frame %d differs after the round trip", i)
		}
	}
	// Regenerating writes the same bytes.
	buf.Reset()
	if err := WritePcap(&buf, tr.Frames); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, buf.Bytes()) {
		t.Fatal("two writes of the same frames differ")
	}
}

func TestReadPcapRejects(t *testing.T) {
	var buf bytes.Buffer
	if err := WritePcap(&buf, [][]byte{make([]byte, 60)}); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// Link type (bytes 20..23) set to raw IP.
	raw := bytes.Clone(b)
	raw[20] = 101
	if _, err := ReadPcap(bytes.NewReader(raw)); err == nil {
		t.Error("raw-IP capture accepted")
	}
	// Captured length shorter than the wire length: truncated capture.
	tr := bytes.Clone(b)
	tr[24+12] = 100 // orig_len of the first record
	if _, err := ReadPcap(bytes.NewReader(tr)); err == nil {
		t.Error("truncated capture accepted")
	}
	if _, err := ReadPcap(bytes.NewReader(b[:10])); err == nil {
		t.Error("short file accepted")
	}
}

func FuzzReadPcap(f *testing.F) {
	tr, _ := Generate(Config{Packets: 8, Flows: 2, Size: "imix", Proto: "udp"})
	var buf bytes.Buffer
	_ = WritePcap(&buf, tr.Frames)
	f.Add(buf.Bytes())
	f.Add([]byte{0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		frames, err := ReadPcap(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, fr := range frames {
			_ = len(fr)
		}
	})
}

func BenchmarkGenerate(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Generate(Config{Packets: 1024, Flows: 64}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSYNDistinctClients checks the share-run trace: one TCP SYN per flow,
// every flow from its own client address while the prefix lasts.
func TestSYNDistinctClients(t *testing.T) {
	for _, tc := range []struct {
		clients   string
		flows     int
		wantAddrs int
	}{
		{"198.19.0.0/16", 3000, 3000},
		{"198.19.0.0/28", 40, 14}, // 14 hosts: addresses wrap, flows stay distinct
	} {
		tr, err := Generate(Config{Packets: tc.flows, Flows: tc.flows, Proto: "syn", Clients: netip.MustParsePrefix(tc.clients), DistinctClients: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(tr.Frames) != tc.flows {
			t.Fatalf("%s: %d frames, want %d", tc.clients, len(tr.Frames), tc.flows)
		}
		addrs := map[netip.Addr]bool{}
		flows := map[netip.AddrPort]bool{}
		for i, f := range tr.Frames {
			p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
			tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if tcp == nil || ip == nil || !tcp.SYN || tcp.ACK || tcp.FIN {
				t.Fatalf("%s: frame %d is not a bare TCP SYN", tc.clients, i)
			}
			a, _ := netip.AddrFromSlice(ip.SrcIP)
			addrs[a] = true
			flows[netip.AddrPortFrom(a, uint16(tcp.SrcPort))] = true
		}
		if len(addrs) != tc.wantAddrs || len(flows) != tc.flows {
			t.Errorf("%s: %d client addresses, %d flows; want %d, %d", tc.clients, len(addrs), len(flows), tc.wantAddrs, tc.flows)
		}
	}
}
