package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xvs-lb/xvs/internal/labserver"
	"github.com/xvs-lb/xvs/internal/netlab"
	"github.com/xvs-lb/xvs/rs"
	"golang.org/x/sys/unix"
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

// waitResolved waits until every real server has a MAC: SetServices waits
// at most a second, and on a loaded machine the background resolver may
// finish the job.
func waitResolved(t *testing.T, dp *Dataplane) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		missing := ""
		for _, svc := range dp.Snapshot().Services() {
			for _, d := range svc.Dests() {
				if !d.HasMAC {
					missing = d.Addr.String()
				}
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("real server %s: MAC not resolved", missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tally makes n requests with new connections; a first request that fails
// ends the test at once rather than after n timeouts.
func tally(t *testing.T, h *netlab.Host, addr netip.AddrPort, n int) map[string]int {
	t.Helper()
	name, err := labserver.Get(h, addr, 3*time.Second)
	if err != nil {
		t.Fatalf("first request to %s: %v", addr, err)
	}
	got := labserver.Tally(h, addr, n-1, 3*time.Second)
	got[name]++
	return got
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
		// Nothing listens on 5454: the real servers answer ICMP port
		// unreachable, which the director must translate.
		closed := udp
		closed.Key.Port = 54
		closed.Dests = nil
		for _, r := range reals {
			closed.Dests = append(closed.Dests, DestConfig{Addr: r, Port: 5454, Weight: 1, Up: true})
		}
		svcs = append(svcs, tcp, udp, closed)
	}
	if err := l.dp.SetServices(svcs); err != nil {
		t.Fatal(err)
	}
	waitResolved(t, l.dp)
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
	checkSplit(t, "NAT IPv4 HTTP", tally(t, l.client, vip, n), n)
	checkPeers(t, netlab.ClientAddr, l.rs1, l.rs2)
	udpBoth(t, l.client, netip.AddrPortFrom(natVIP4, 53))
	checkRefused(t, l.client, netip.AddrPortFrom(natVIP4, 54))

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
	checkSplit(t, "NAT IPv6 HTTP", tally(t, l.client, netip.AddrPortFrom(natVIP6, 80), n), n)
	checkPeers(t, natCli6, l.rs1, l.rs2)
	udpBoth(t, l.client, netip.AddrPortFrom(natVIP6, 53))
	checkRefused(t, l.client, netip.AddrPortFrom(natVIP6, 54))
}

// checkRefused: a datagram to a NAT service whose real servers do not
// listen comes back as ICMP port unreachable translated to the VIP, which
// the client's kernel matches to its socket (ECONNREFUSED on the next read).
func checkRefused(t *testing.T, h *netlab.Host, addr netip.AddrPort) {
	t.Helper()
	var c net.Conn
	if err := h.Do(func() (err error) { c, err = net.Dial("udp", addr.String()); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var err error
	for try := 0; try < 3; try++ {
		if _, err = c.Write([]byte("anyone?")); err != nil {
			break
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err = c.Read(make([]byte, 64)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("UDP to %s with no listener: %v, want connection refused (translated ICMP)", addr, err)
	}
}

// tunLab: the standard topology, real servers set up by xvs-rs (in process)
// with --tun --tun-mode xdp: the VIP on lo and the decap program on eth0.
type tunLab struct {
	topo     *netlab.Topology
	rs1, rs2 *labserver.Server
	dp       *Dataplane
}

func newTUNLab(t *testing.T, extraVIP ...netip.Addr) *tunLab {
	return newTUNLabWith(t, nil, extraVIP...)
}

// newTUNLabWith is newTUNLab with pre run on the topology first, before
// xvs-rs reads the real servers' addresses and the dataplane its port's.
func newTUNLabWith(t *testing.T, pre func(*netlab.Topology), extraVIP ...netip.Addr) *tunLab {
	netlab.Require(t)
	topo := netlab.Standard(t)
	if pre != nil {
		pre(topo)
	}
	l := &tunLab{topo: topo}
	var srv [2]*labserver.Server
	for i, h := range []*netlab.Host{topo.RS1, topo.RS2} {
		state := filepath.Join(t.TempDir(), "xvs-rs.json")
		args := []string{"up", "--vip", netlab.VIP.String(), "--tun", "--tun-mode", "xdp", "--dev", "eth0", "--state", state}
		for _, v := range extraVIP {
			args = append(args, "--vip", v.String())
		}
		cmd, err := rs.ParseArgs(args, io.Discard)
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
	waitResolved(t, l.dp)
}

// TestLabTUN: 300 new connections through IPIP to real servers that
// decapsulate with xvs-rs's XDP program; both serve, they see the client's
// address; UDP echo too.
func TestLabTUN(t *testing.T) {
	l := newTUNLab(t)
	l.services(t)
	defer logDrops(t, l.dp)
	const n = 300
	checkSplit(t, "TUN HTTP", tally(t, l.topo.Client, netip.AddrPortFrom(netlab.VIP, 80), n), n)
	checkPeers(t, netlab.ClientAddr, l.rs1, l.rs2)
	udpBoth(t, l.topo.Client, netip.AddrPortFrom(netlab.VIP, 53))
}

// TestLabTUNMTU: with the route to the real servers at MTU 1400, the
// client's full-sized DF TCP segments are answered with ICMP
// fragmentation-needed announcing 1380 (1400 minus the outer header), the
// client's kernel takes it (its path MTU to the VIP becomes 1380), and bulk
// TCP uploads adapt and complete.
func TestLabTUNMTU(t *testing.T) {
	l := newTUNLab(t)
	for _, a := range []netip.Addr{netlab.RS1Addr, netlab.RS2Addr} {
		l.topo.Dir1.Run(t, "ip", "route", "add", a.String()+"/32", "dev", "eth0", "mtu", "1400")
	}
	// A byte counter on port 9000 of each real server: reads to EOF,
	// answers with the count.
	for _, h := range []*netlab.Host{l.topo.RS1, l.topo.RS2} {
		var ln net.Listener
		if err := h.Do(func() (err error) { ln, err = net.Listen("tcp", ":9000"); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(20 * time.Second))
					n, _ := io.Copy(io.Discard, c)
					fmt.Fprintf(c, "%d", n)
				}()
			}
		}()
	}
	l.services(t)
	svcs := []ServiceConfig{}
	for _, svc := range l.dp.Snapshot().Services() {
		c := ServiceConfig{Key: svc.Key, Method: TUN, Scheduler: "rr", Active: true}
		for _, d := range svc.Dests() {
			c.Dests = append(c.Dests, DestConfig{Addr: d.Addr, Weight: 1, Up: true})
		}
		svcs = append(svcs, c)
	}
	c9000 := svcs[0]
	c9000.Key.Port = 9000
	svcs = append(svcs, c9000)
	if err := l.dp.SetServices(svcs); err != nil {
		t.Fatal(err)
	}
	waitResolved(t, l.dp)
	defer logDrops(t, l.dp)
	for _, d := range l.dp.Snapshot().Services()[0].Dests() {
		if d.mtu != 1400 {
			t.Fatalf("real server %s: path MTU %d, want 1400 from the route", d.Addr, d.mtu)
		}
	}

	// A raw ICMP socket in the client sees the director's answers.
	var icmpFD, udpFD int
	err := l.topo.Client.Do(func() error {
		var err error
		icmpFD, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(icmpFD)

	// Bulk TCP uploads: the first full-sized DF segment is answered with
	// frag-needed, the client's PMTU adapts, the uploads complete.
	const size = 300 << 10
	for i := range 4 {
		var c net.Conn
		if err := l.topo.Client.Do(func() (err error) {
			c, err = net.DialTimeout("tcp", netip.AddrPortFrom(netlab.VIP, 9000).String(), 3*time.Second)
			return err
		}); err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		if _, err := c.Write(make([]byte, size)); err != nil {
			t.Fatalf("upload %d: write: %v", i, err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(b) != fmt.Sprint(size) {
			t.Fatalf("upload %d: real server counted %q (%v), want %d", i, b, err, size)
		}
	}

	_ = unix.SetsockoptTimeval(icmpFD, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1})
	mtu := 0
	buf := make([]byte, 1500)
	for mtu == 0 {
		n, _, err := unix.Recvfrom(icmpFD, buf, 0)
		if err != nil {
			break
		}
		ihl := int(buf[0]&0x0F) * 4
		ic := buf[ihl:n]
		if len(ic) < 8+20 || ic[0] != 3 || ic[1] != 4 {
			continue
		}
		if Checksum(ic, 0) != 0 {
			t.Errorf("frag-needed ICMP checksum does not verify")
		}
		if src := netip.AddrFrom4([4]byte(buf[12:16])); src != netlab.VIP {
			t.Errorf("frag-needed from %s, want the VIP", src)
		}
		if q := ic[8:]; q[9] != ProtoTCP || netip.AddrFrom4([4]byte(q[12:16])) != netlab.ClientAddr {
			t.Errorf("frag-needed quotes % x, want the client's TCP segment", q[:20])
		}
		mtu = int(ic[6])<<8 | int(ic[7])
	}
	if mtu != 1380 {
		t.Fatalf("ICMP fragmentation-needed announced MTU %d, want 1380", mtu)
	}
	// The client's kernel took it: its path MTU to the VIP is 1380.
	err = l.topo.Client.Do(func() error {
		var err error
		if udpFD, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.Connect(udpFD, &unix.SockaddrInet4{Port: 53, Addr: netlab.VIP.As4()})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(udpFD)
	if got, err := unix.GetsockoptInt(udpFD, unix.IPPROTO_IP, unix.IP_MTU); err != nil || got != 1380 {
		t.Errorf("client's path MTU to the VIP: %d (%v), want 1380", got, err)
	}
	st, err := l.dp.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if tb := st.Queues[0].TooBig; tb == 0 {
		t.Error("no too-big answers counted")
	}
}

// TestLabDRIPv6: DR with an IPv6 VIP and IPv6 real servers; their MACs are
// unknown to the director's kernel at first, so the resolver's probe makes
// the kernel solicit them.
func TestLabDRIPv6(t *testing.T) {
	netlab.Require(t)
	topo := netlab.Standard(t)
	vip := netip.MustParseAddr("2001:db8::100")
	addrs := map[*netlab.Host]string{topo.Client: "2001:db8::10", topo.Dir1: "2001:db8::2",
		topo.RS1: "2001:db8::11", topo.RS2: "2001:db8::12"}
	for h, a := range addrs {
		h.Run(t, "ip", "-6", "addr", "add", a+"/64", "dev", "eth0", "nodad")
	}
	var srv [2]*labserver.Server
	for i, h := range []*netlab.Host{topo.RS1, topo.RS2} {
		netlab.RealServerDR(t, h, vip)
		srv[i] = labserver.Start(t, h, h.Base, 80, netip.AddrPortFrom(vip, 53))
	}
	topo.Dir1.Run(t, "ip", "-6", "addr", "add", vip.String()+"/128", "dev", "eth0", "nodad")
	dp := runDataplane(t, topo.Dir1, "eth0")
	dests := []DestConfig{
		{Addr: netip.MustParseAddr(addrs[topo.RS1]), Weight: 1, Up: true},
		{Addr: netip.MustParseAddr(addrs[topo.RS2]), Weight: 1, Up: true},
	}
	if err := dp.SetServices([]ServiceConfig{
		{Key: ServiceKey{Addr: vip, Proto: ProtoTCP, Port: 80}, Method: DR, Scheduler: "rr", Active: true, Dests: dests},
		{Key: ServiceKey{Addr: vip, Proto: ProtoUDP, Port: 53}, Method: DR, Scheduler: "rr", Active: true, Dests: dests},
	}); err != nil {
		t.Fatal(err)
	}
	waitResolved(t, dp)
	defer logDrops(t, dp)
	const n = 100
	checkSplit(t, "DR IPv6 HTTP", tally(t, topo.Client, netip.AddrPortFrom(vip, 80), n), n)
	checkPeers(t, netip.MustParseAddr(addrs[topo.Client]), srv[0], srv[1])
	udpBoth(t, topo.Client, netip.AddrPortFrom(vip, 53))
}

// TestLabTUNIPv6: an IPv6 VIP over IPv4 tunnels (6in4, protocol 41) to
// real servers whose decap program opens them.
func TestLabTUNIPv6(t *testing.T) {
	vip := netip.MustParseAddr("2001:db8::100")
	l := newTUNLab(t, vip)
	l.topo.Client.Run(t, "ip", "-6", "addr", "add", "2001:db8::10/64", "dev", "eth0", "nodad")
	l.topo.Dir1.Run(t, "ip", "-6", "addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad")
	l.topo.Dir1.Run(t, "ip", "-6", "addr", "add", vip.String()+"/128", "dev", "eth0", "nodad")
	// The real servers answer the client directly, over IPv6.
	l.topo.RS1.Run(t, "ip", "-6", "addr", "add", "2001:db8::11/64", "dev", "eth0", "nodad")
	l.topo.RS2.Run(t, "ip", "-6", "addr", "add", "2001:db8::12/64", "dev", "eth0", "nodad")
	var srv [2]*labserver.Server
	for i, h := range []*netlab.Host{l.topo.RS1, l.topo.RS2} {
		srv[i] = labserver.Start(t, h, h.Base+"-v6", 8080, netip.AddrPortFrom(vip, 5353))
	}
	dests := []DestConfig{{Addr: netlab.RS1Addr, Weight: 1, Up: true}, {Addr: netlab.RS2Addr, Weight: 1, Up: true}}
	if err := l.dp.SetServices([]ServiceConfig{
		{Key: ServiceKey{Addr: vip, Proto: ProtoTCP, Port: 8080}, Method: TUN, Scheduler: "rr", Active: true, Dests: dests},
		{Key: ServiceKey{Addr: vip, Proto: ProtoUDP, Port: 5353}, Method: TUN, Scheduler: "rr", Active: true, Dests: dests},
	}); err != nil {
		t.Fatal(err)
	}
	waitResolved(t, l.dp)
	defer logDrops(t, l.dp)
	checkV6Pair(t, "TUN IPv6", l.topo.Client, vip, netip.MustParseAddr("2001:db8::10"), srv)
}

// TestLabTUNIPv6Outer: real servers reached over IPv6 only. The director
// tunnels in an outer IPv6 header (4in6 for the IPv4 VIP, 6in6 for the
// IPv6 one), the real servers' decap program (xvs-rs --tun, XDP) opens
// it, and they answer the client directly; HTTP and UDP both ways, both
// real servers serve, they see the client's own address.
func TestLabTUNIPv6Outer(t *testing.T) {
	vip6 := netip.MustParseAddr("2001:db8::100")
	rs6 := []netip.Addr{netip.MustParseAddr("2001:db8::11"), netip.MustParseAddr("2001:db8::12")}
	client6 := netip.MustParseAddr("2001:db8::10")
	l := newTUNLabWith(t, func(topo *netlab.Topology) {
		topo.Client.Run(t, "ip", "-6", "addr", "add", client6.String()+"/64", "dev", "eth0", "nodad")
		topo.Dir1.Run(t, "ip", "-6", "addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad")
		topo.Dir1.Run(t, "ip", "-6", "addr", "add", vip6.String()+"/128", "dev", "eth0", "nodad")
		for i, h := range []*netlab.Host{topo.RS1, topo.RS2} {
			h.Run(t, "ip", "-6", "addr", "add", rs6[i].String()+"/64", "dev", "eth0", "nodad")
		}
	}, vip6)
	var srv [2]*labserver.Server
	for i, h := range []*netlab.Host{l.topo.RS1, l.topo.RS2} {
		srv[i] = labserver.Start(t, h, h.Base+"-v6", 8080, netip.AddrPortFrom(vip6, 5353))
	}
	dests := []DestConfig{{Addr: rs6[0], Weight: 1, Up: true}, {Addr: rs6[1], Weight: 1, Up: true}}
	var svcs []ServiceConfig
	for _, k := range []ServiceKey{
		{Addr: netlab.VIP, Proto: ProtoTCP, Port: 80}, {Addr: netlab.VIP, Proto: ProtoUDP, Port: 53},
		{Addr: vip6, Proto: ProtoTCP, Port: 8080}, {Addr: vip6, Proto: ProtoUDP, Port: 5353},
	} {
		svcs = append(svcs, ServiceConfig{Key: k, Method: TUN, Scheduler: "rr", Active: true, Dests: dests})
	}
	if err := l.dp.SetServices(svcs); err != nil {
		t.Fatal(err)
	}
	waitResolved(t, l.dp)
	defer logDrops(t, l.dp)

	// 4in6: the IPv4 VIP.
	const n = 100
	checkSplit(t, "TUN 4in6 HTTP", tally(t, l.topo.Client, netip.AddrPortFrom(netlab.VIP, 80), n), n)
	checkPeers(t, netlab.ClientAddr, l.rs1, l.rs2)
	udpBoth(t, l.topo.Client, netip.AddrPortFrom(netlab.VIP, 53))

	// 6in6: the IPv6 VIP.
	checkV6Pair(t, "TUN 6in6", l.topo.Client, vip6, client6, srv)
}

// checkV6Pair: 100 new HTTP connections from client to vip:8080 and six
// UDP echoes to vip:5353 are all answered by the two real servers' "-v6"
// servers in srv, both serving, and they saw the client's own address.
func checkV6Pair(t *testing.T, what string, client *netlab.Host, vip, clientAddr netip.Addr, srv [2]*labserver.Server) {
	t.Helper()
	const n = 100
	got := tally(t, client, netip.AddrPortFrom(vip, 8080), n)
	t.Logf("%s HTTP: %v", what, got)
	if got["rs1-v6"]+got["rs2-v6"] != n || got["rs1-v6"] == 0 || got["rs2-v6"] == 0 {
		t.Errorf("answers %v, want %d from rs1-v6 and rs2-v6 together, both serving", got, n)
	}
	checkPeers(t, clientAddr, srv[0], srv[1])
	names := map[string]bool{}
	for i := range 6 {
		reply, err := labserver.UDPEcho(client, netip.AddrPortFrom(vip, 5353), fmt.Sprint("ping", i), time.Second)
		if err != nil {
			t.Fatalf("udp echo %d: %v", i, err)
		}
		name, _, _ := strings.Cut(reply, " ")
		names[name] = true
	}
	if !names["rs1-v6"] || !names["rs2-v6"] {
		t.Errorf("udp echoes came from %v, want both real servers", names)
	}
}
