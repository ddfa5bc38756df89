package healthcheck

import (
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/xvs-lb/xvs/internal/netlab"
)

var (
	dirMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	rsMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x11}
	dirIP  = netip.MustParseAddr("198.18.0.2")
)

func probeFrame(tunnel bool) synFrame {
	f := synFrame{srcMAC: dirMAC, dstMAC: rsMAC, srcIP: dirIP, vip: vip, sport: 40000, dport: 80, seq: 0x01020304}
	if tunnel {
		f.tunnelTo = rs1
	}
	return f
}

// csum16 is the Internet checksum of b (RFC 1071), for verification.
func csum16(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func tcpChecksumOK(ip []byte) bool {
	ihl := int(ip[0]&0xf) * 4
	seg := ip[ihl:binary.BigEndian.Uint16(ip[2:4])]
	pseudo := append(append(append([]byte{}, ip[12:20]...), 0, 6), byte(len(seg)>>8), byte(len(seg)))
	return csum16(append(pseudo, seg...)) == 0
}

func TestBuildSYN(t *testing.T) {
	for _, tunnel := range []bool{false, true} {
		f := probeFrame(tunnel)
		b, err := buildSYN(f)
		if err != nil {
			t.Fatal(err)
		}
		pkt := gopacket.NewPacket(b, layers.LayerTypeEthernet, gopacket.Default)
		eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		if eth.DstMAC.String() != rsMAC.String() || eth.SrcMAC.String() != dirMAC.String() {
			t.Errorf("tunnel=%v: MACs %v -> %v", tunnel, eth.SrcMAC, eth.DstMAC)
		}
		ipOff := 14
		if tunnel {
			outer := b[14:]
			if outer[9] != 4 || netip.AddrFrom4([4]byte(outer[16:20])) != rs1 || netip.AddrFrom4([4]byte(outer[12:16])) != dirIP {
				t.Errorf("outer header proto %d %v -> %v, want IPIP %v -> %v", outer[9],
					net.IP(outer[12:16]), net.IP(outer[16:20]), dirIP, rs1)
			}
			if csum16(outer[:20]) != 0 {
				t.Error("outer IPv4 checksum wrong")
			}
			ipOff += 20
		}
		inner := b[ipOff:]
		if netip.AddrFrom4([4]byte(inner[16:20])) != vip || netip.AddrFrom4([4]byte(inner[12:16])) != dirIP || inner[9] != 6 {
			t.Errorf("tunnel=%v: inner %v -> %v proto %d", tunnel, net.IP(inner[12:16]), net.IP(inner[16:20]), inner[9])
		}
		if csum16(inner[:20]) != 0 || !tcpChecksumOK(inner) {
			t.Errorf("tunnel=%v: checksums wrong: % x", tunnel, inner)
		}
		tcp := inner[20:]
		if binary.BigEndian.Uint16(tcp[0:]) != 40000 || binary.BigEndian.Uint16(tcp[2:]) != 80 ||
			binary.BigEndian.Uint32(tcp[4:]) != f.seq || tcp[13] != 0x02 {
			t.Errorf("tunnel=%v: TCP header % x, want SYN 40000->80 seq %#x", tunnel, tcp[:20], f.seq)
		}
	}
}

// reply builds a frame from VIP:80 back to the director.
func reply(t testing.TB, src netip.Addr, sport, dport uint16, syn, ack, rst bool, ackNo uint32) []byte {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dirIP.AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), SYN: syn, ACK: ack, RST: rst, Ack: ackNo, Seq: 77}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: rsMAC, DstMAC: dirMAC, EthernetType: layers.EthernetTypeIPv4}, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestClassify(t *testing.T) {
	f := probeFrame(false)
	arp, _ := hex.DecodeString("ffffffffffff020000000011080600010800060400010200000000110a000001000000000000c612000b")
	tests := []struct {
		name  string
		frame []byte
		want  answer
	}{
		{"syn/ack", reply(t, vip, 80, 40000, true, true, false, f.seq+1), synAck},
		{"syn/ack wrong ack", reply(t, vip, 80, 40000, true, true, false, f.seq), notOurs},
		{"rst", reply(t, vip, 80, 40000, false, true, true, f.seq+1), reset},
		{"other port", reply(t, vip, 81, 40000, true, true, false, f.seq+1), notOurs},
		{"other client port", reply(t, vip, 80, 40001, true, true, false, f.seq+1), notOurs},
		{"from the real server's own address", reply(t, rs1, 80, 40000, true, true, false, f.seq+1), notOurs},
		{"arp", arp, notOurs},
		{"truncated", reply(t, vip, 80, 40000, true, true, false, f.seq+1)[:40], notOurs},
		{"empty", nil, notOurs},
	}
	for _, tc := range tests {
		if got := classify(tc.frame, f); got != tc.want {
			t.Errorf("%s: classify = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func FuzzClassify(f *testing.F) {
	p := probeFrame(false)
	f.Add(reply(f, vip, 80, 40000, true, true, false, p.seq+1))
	f.Add(reply(f, vip, 80, 40000, false, true, true, p.seq+1))
	syn, _ := buildSYN(p)
	f.Add(syn)
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = classify(b, p) // must not panic on any frame
	})
}

func TestViaVIPOptions(t *testing.T) {
	ep := endpoint{addr: netip.AddrPortFrom(rs1, 80)}
	for _, o := range []ViaVIPOptions{
		{DstMAC: rsMAC, SrcIP: dirIP, VIP: vip},                                                     // no interface
		{Interface: "eth0", DstMAC: rsMAC[:3], SrcIP: dirIP, VIP: vip},                              // bad MAC
		{Interface: "eth0", DstMAC: rsMAC, SrcIP: dirIP, VIP: netip.MustParseAddr("2001:db8::100")}, // IPv6
	} {
		if _, err := newViaVIPProber(ep, &o); err == nil {
			t.Errorf("newViaVIPProber(%+v) = nil error", o)
		}
	}
}

// TestViaVIPLab runs the data-path check (and PING_CHECK) in the standard lab: dir1 probes VIP:80
// through rs1 (VIP on lo, DR) and rs2 (no VIP). Both listen on :80, so a
// plain TCP_CHECK passes for both; only the data-path check tells rs2 is
// unfit for DR.
func TestViaVIPLab(t *testing.T) {
	netlab.Require(t)
	topo := netlab.Standard(t)
	netlab.RealServerDR(t, topo.RS1, netlab.VIP)
	for _, h := range []*netlab.Host{topo.RS1, topo.RS2} {
		if err := h.Do(func() error {
			l, err := net.Listen("tcp", ":80")
			if err == nil {
				t.Cleanup(func() { l.Close() })
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	mac := func(h *netlab.Host) net.HardwareAddr {
		out := h.Run(t, "cat", "/sys/class/net/eth0/address")
		m, err := net.ParseMAC(strings.TrimSpace(out))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		name string
		rs   netip.Addr
		mac  net.HardwareAddr
		via  bool
		want bool
	}{
		{"rs1 via VIP", netlab.RS1Addr, mac(topo.RS1), true, true},
		{"rs2 via VIP (no VIP on lo)", netlab.RS2Addr, mac(topo.RS2), true, false},
		{"rs2 plain TCP_CHECK", netlab.RS2Addr, nil, false, true},
		{"rs1 PING_CHECK", netlab.RS1Addr, nil, false, true},
		{"PING_CHECK to an absent host", netip.MustParseAddr("198.18.0.99"), nil, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Checker{Type: TCPCheck, ConnectTimeout: time.Second}
			if strings.Contains(tc.name, "PING") {
				c.Type = PingCheck
			}
			if tc.via {
				c.ViaVIP = &ViaVIPOptions{Interface: "eth0", DstMAC: tc.mac, SrcIP: netlab.Dir1Addr, VIP: netlab.VIP}
			}
			var r result
			if err := topo.Dir1.Do(func() error {
				r = probeOnce(t, PoolOptions{}, RealServer{Addr: tc.rs, Port: 80}, c)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if r.ok != tc.want {
				t.Fatalf("ok = %v (%s), want %v", r.ok, r.detail, tc.want)
			}
		})
	}
}

func FuzzParseHexString(f *testing.F) {
	for _, s := range []string{"Ab12f 3 456 546443123", "deadbeef", "x", "0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseHexString(s)
		if err != nil {
			return
		}
		// Re-encoded as plain pairs, it parses to the same bytes.
		again, err := ParseHexString(hex.EncodeToString(b))
		if err != nil || string(again) != string(b) {
			t.Fatalf("%q -> %x -> %x, %v", s, b, again, err)
		}
	})
}

func FuzzSplitCommand(f *testing.F) {
	for _, s := range []string{`/bin/check -a "x y" 'z'`, `""`, `a"b"c`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := splitCommand(s)
		if err == nil && len(w) == 0 {
			t.Fatalf("splitCommand(%q) = no words, no error", s)
		}
	})
}
