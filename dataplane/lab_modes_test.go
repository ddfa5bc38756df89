package dataplane

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xvs-lb/xvs/internal/labserver"
	"github.com/xvs-lb/xvs/internal/netlab"
	"github.com/xvs-lb/xvs/rs"
)

// runDataplane starts a dataplane in h on ifaces and stops it in cleanup.
func runDataplane(t *testing.T, h *netlab.Host, ifaces ...string) *Dataplane {
	t.Helper()
	var dp *Dataplane
	err := h.Do(func() error {
		var err error
		dp, err = New(Config{Interfaces: ifaces, ConnTableSize: 1 << 16, Frames: 4096, RingSize: 1024})
		return err
	})
	if err != nil {
		t.Fatalf("dataplane in %s: %v", h.Base, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dp.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if err := dp.Close(); err != nil {
			t.Errorf("dataplane close: %v", err)
		}
	})
	return dp
}

// checkSplit asserts that n requests all succeeded and both real servers
// served.
func checkSplit(t *testing.T, what string, got map[string]int, n int) {
	t.Helper()
	t.Logf("%s: %v", what, got)
	if got["rs1"]+got["rs2"] != n || got["rs1"] == 0 || got["rs2"] == 0 {
		t.Errorf("%s: answers %v, want %d from rs1 and rs2 together, both serving", what, got, n)
	}
}

func checkPeers(t *testing.T, client netip.Addr, servers ...*labserver.Server) {
	t.Helper()
	for _, s := range servers {
		for a := range s.Peers() {
			if a != client {
				t.Errorf("%s saw peer %s, want only the client %s", s.Name, a, client)
			}
		}
	}
}

func udpBoth(t *testing.T, h *netlab.Host, addr netip.AddrPort) {
	t.Helper()
	names := map[string]bool{}
	for i := range 8 {
		var got string
		var err error
		for try := 0; try < 3; try++ { // the first datagram may wait for ND/ARP
			if got, err = labserver.UDPEcho(h, addr, fmt.Sprint("ping", i), time.Second); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("udp echo %d via %s: %v", i, addr, err)
		}
		name, msg, _ := strings.Cut(got, " ")
		if msg != fmt.Sprint("ping", i) {
			t.Fatalf("udp echo %d: got %q", i, got)
		}
		names[name] = true
	}
	if !names["rs1"] || !names["rs2"] {
		t.Errorf("udp echoes via %s came from %v, want both real servers", addr, names)
	}
}

func logDrops(t *testing.T, dp *Dataplane) {
	t.Helper()
	st, err := dp.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range st.Queues {
		var drops []string
		for r, c := range q.Drops {
			if c != 0 {
				drops = append(drops, fmt.Sprintf("%s=%d", DropReason(r), c))
			}
		}
		t.Logf("%s/%d: rx %d tx %d (cross-port %d) too-big %d drops %v", q.Interface, q.Queue, q.RX, q.TX, q.CrossTX, q.TooBig, drops)
	}
	t.Logf("XDP: %+v", st.Director)
}

// natLab: the LVS NAT lab (LAB.md). The client and the director's eth0 on
// br0 (198.18.0.0/24, 2001:db8::/64), the director's eth1 and the real
// servers on br1 (198.19.0.0/24, 2001:db8:1::/64), the director their
// default gateway. The director does not route (ip_forward stays 0): only
// the dataplane carries traffic between the legs.
type natLab struct {
	client, dir *netlab.Host
	rs1, rs2    *labserver.Server
	dp          *Dataplane
}

var (
	natVIP4 = netip.MustParseAddr("198.18.0.100")
	natVIP6 = netip.MustParseAddr("2001:db8::100")
	natCli6 = netip.MustParseAddr("2001:db8::10")
	natRS4  = []netip.Addr{netip.MustParseAddr("198.19.0.11"), netip.MustParseAddr("198.19.0.12")}
	natRS6  = []netip.Addr{netip.MustParseAddr("2001:db8:1::11"), netip.MustParseAddr("2001:db8:1::12")}
)

func newNATLab(t *testing.T) *natLab {
	netlab.Require(t)
	lab := netlab.New(t)
	br0, br1 := lab.Bridge("br0"), lab.Bridge("br1")
	l := &natLab{client: lab.Host("client"), dir: lab.Host("dir1")}
	lab.Connect(l.client, br0, "eth0", "198.18.0.10/24", "2001:db8::10/64")
	lab.Connect(l.dir, br0, "eth0", "198.18.0.2/24", "2001:db8::2/64")
	lab.Connect(l.dir, br1, "eth1", "198.19.0.1/24", "2001:db8:1::1/64")
	l.client.Run(t, "ethtool", "-K", "eth0", "tx", "off")
	// The VIPs on the director's client leg (what VRRP would add).
	l.dir.Run(t, "ip", "addr", "add", natVIP4.String()+"/32", "dev", "eth0")
	l.dir.Run(t, "ip", "-6", "addr", "add", natVIP6.String()+"/128", "dev", "eth0", "nodad")
	var srv [2]*labserver.Server
	for i, name := range []string{"rs1", "rs2"} {
		h := lab.Host(name)
		lab.Connect(h, br1, "eth0", natRS4[i].String()+"/24", natRS6[i].String()+"/64")
		h.Run(t, "ethtool", "-K", "eth0", "tx", "off") // full checksums, as from a NIC
		h.Run(t, "ip", "route", "add", "default", "via", "198.19.0.1")
		h.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:1::1")
		srv[i] = labserver.Start(t, h, name, 8080, netip.AddrPortFrom(netip.IPv6Unspecified(), 5353))
	}
	l.rs1, l.rs2 = srv[0], srv[1]
	l.dp = runDataplane(t, l.dir, "eth0", "eth1")
	var svcs []ServiceConfig
	for fam, vip := range []netip.Addr{natVIP4, natVIP6} {
		reals := natRS4
		if fam == 1 {
			reals = natRS6
		}
		tcp := ServiceConfig{Key: ServiceKey{Addr: vip, Proto: ProtoTCP, Port: 80}, Method: NAT, Scheduler: "rr", Active: true}
		udp := ServiceConfig{Key: ServiceKey{Addr: vip, Proto: ProtoUDP, Port: 53}, Method: NAT, Scheduler: "rr", Active: true}
		for _, r := range reals {
			tcp.Dests = append(tcp.Dests, DestConfig{Addr: r, Port: 8080, Weight: 1, Up: true})
			udp.Dests = append(udp.Dests, DestConfig{Addr: r, Port: 5353, Weight: 1, Up: true})
		}
		svcs = append(svcs, tcp, udp)
	}
	if err := l.dp.SetServices(svcs); err != nil {
		t.Fatal(err)
	}
	for _, svc := range l.dp.Snapshot().Services() {
		for _, d := range svc.Dests() {
			if !d.HasMAC || d.port != 1 {
				t.Fatalf("%s: real server %s: MAC known %v, port %d; want a MAC and port 1 (eth1)", svc.Key, d.Addr, d.HasMAC, d.port)
			}
		}
	}
	return l
}

// TestLabNAT: 300 new connections to VIP:80 reach the real servers on 8080
// through the director's two legs, both serve, they see the client's
// address, replies come back through the dataplane; UDP echo too; the conn
// table follows both directions of each connection.
func TestLabNAT(t *testing.T) {
	l := newNATLab(t)
	defer logDrops(t, l.dp)
	const n = 300
	vip := netip.AddrPortFrom(natVIP4, 80)
	checkSplit(t, "NAT IPv4 HTTP", labserver.Tally(l.client, vip, n, 3*time.Second), n)
	checkPeers(t, netlab.ClientAddr, l.rs1, l.rs2)
	udpBoth(t, l.client, netip.AddrPortFrom(natVIP4, 53))

	// Both halves went through the dataplane: the real servers' leg sent
	// replies across ports, and closed connections reached TIME_WAIT or
	// CLOSE through the reply path's FIN (the input-only table would
	// leave the director's side in FIN_WAIT).
	st, err := l.dp.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var cross [2]uint64
	for _, q := range st.Queues {
		if q.Interface == "eth0" {
			cross[0] += q.CrossTX
		} else {
			cross[1] += q.CrossTX
		}
	}
	if cross[0] < 3*n || cross[1] < 3*n {
		t.Errorf("cross-port frames: requests %d, replies %d; want ≥ %d each", cross[0], cross[1], 3*n)
	}
	states := map[string]int{}
	l.dp.Conns(func(e ConnEntry) bool {
		if e.Proto == ProtoTCP {
			states[e.StateName()]++
		}
		return true
	})
	t.Logf("TCP conn states: %v", states)
	if states["TIME_WAIT"]+states["CLOSE"] < n*9/10 {
		t.Errorf("TCP conn states %v: want closed connections in TIME_WAIT/CLOSE", states)
	}
}

// TestLabNATIPv6: the same with an IPv6 VIP and IPv6 real servers.
func TestLabNATIPv6(t *testing.T) {
	l := newNATLab(t)
	defer logDrops(t, l.dp)
	const n = 100
	checkSplit(t, "NAT IPv6 HTTP", labserver.Tally(l.client, netip.AddrPortFrom(natVIP6, 80), n, 3*time.Second), n)
	checkPeers(t, natCli6, l.rs1, l.rs2)
	udpBoth(t, l.client, netip.AddrPortFrom(natVIP6, 53))
}

// tunLab: the standard topology, real servers set up by xvs-rs (in process)
// with --tun --tun-mode xdp: the VIP on lo and the decap program on eth0.
type tunLab struct {
	topo     *netlab.Topology
	rs1, rs2 *labserver.Server
	dp       *Dataplane
}

func newTUNLab(t *testing.T) *tunLab {
	netlab.Require(t)
	topo := netlab.Standard(t)
	l := &tunLab{topo: topo}
	var srv [2]*labserver.Server
	for i, h := range []*netlab.Host{topo.RS1, topo.RS2} {
		state := filepath.Join(t.TempDir(), "xvs-rs.json")
		cmd, err := rs.ParseArgs([]string{"up", "--vip", netlab.VIP.String(), "--tun", "--tun-mode", "xdp",
			"--dev", "eth0", "--state", state}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Do(func() error { return rs.Up(cmd.StatePath, cmd.Up, io.Discard) }); err != nil {
			t.Fatalf("xvs-rs up in %s: %v", h.Base, err)
		}
		t.Cleanup(func() { _ = h.Do(func() error { return rs.Down(state, io.Discard) }) })
		srv[i] = labserver.Start(t, h, h.Base, 80, netip.AddrPortFrom(netlab.VIP, 53))
	}
	l.rs1, l.rs2 = srv[0], srv[1]
	topo.Dir1.Run(t, "ip", "addr", "add", netlab.VIP.String()+"/32", "dev", "eth0")
	l.dp = runDataplane(t, topo.Dir1, "eth0")
	return l
}

func (l *tunLab) services(t *testing.T) {
	t.Helper()
	var svcs []ServiceConfig
	for _, k := range []ServiceKey{{Addr: netlab.VIP, Proto: ProtoTCP, Port: 80}, {Addr: netlab.VIP, Proto: ProtoUDP, Port: 53}} {
		svcs = append(svcs, ServiceConfig{Key: k, Method: TUN, Scheduler: "rr", Active: true, Dests: []DestConfig{
			{Addr: netlab.RS1Addr, Weight: 1, Up: true}, {Addr: netlab.RS2Addr, Weight: 1, Up: true}}})
	}
	if err := l.dp.SetServices(svcs); err != nil {
		t.Fatal(err)
	}
}

// TestLabTUN: 300 new connections through IPIP to real servers that
// decapsulate with xvs-rs's XDP program; both serve, they see the client's
// address; UDP echo too.
func TestLabTUN(t *testing.T) {
	l := newTUNLab(t)
	l.services(t)
	defer logDrops(t, l.dp)
	const n = 300
	checkSplit(t, "TUN HTTP", labserver.Tally(l.topo.Client, netip.AddrPortFrom(netlab.VIP, 80), n, 3*time.Second), n)
	checkPeers(t, netlab.ClientAddr, l.rs1, l.rs2)
	udpBoth(t, l.topo.Client, netip.AddrPortFrom(netlab.VIP, 53))
}
