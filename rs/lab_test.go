package rs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/xvs-lb/xvs/internal/netlab"
)

// xvsRS runs xvs-rs (this test binary, see TestMain) inside h and returns
// its combined output; a non-zero exit fails the test.
func xvsRS(t *testing.T, h *netlab.Host, args ...string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return h.Run(t, "env", append([]string{mainEnv + "=1", exe}, args...)...)
}

// snapshot is everything up may touch in a namespace: every IPv4/IPv6
// interface sysctl, every address, every link with its XDP program.
func snapshot(t *testing.T, h *netlab.Host) string {
	t.Helper()
	// Link-local addresses lose their "tentative" flag when duplicate
	// address detection ends, whatever xvs-rs does: wait for that first.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if strings.TrimSpace(h.Run(t, "ip", "-6", "addr", "show", "tentative")) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: IPv6 addresses still tentative after 10 s:\n%s", h.Name, h.Run(t, "ip", "-6", "addr"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Some entries (stable_secret) cannot be read; grep's status is ignored.
	sys := h.Run(t, "sh", "-c", "cd /proc/sys/net && grep -r . ipv4/conf ipv6/conf 2>/dev/null | sort; true")
	if !strings.Contains(sys, "ipv4/conf/all/arp_ignore:") {
		t.Fatalf("sysctl snapshot of %s looks wrong:\n%.500s", h.Name, sys)
	}
	return sys + h.Run(t, "ip", "-o", "addr", "show") + h.Run(t, "ip", "-d", "-o", "link", "show")
}

// diffLines lists the lines only in a and only in b.
func diffLines(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out strings.Builder
	for _, l := range strings.Split(a, "\n") {
		if !mb[l] {
			fmt.Fprintf(&out, "- %s\n", l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !ma[l] {
			fmt.Fprintf(&out, "+ %s\n", l)
		}
	}
	return out.String()
}

func sysctl(t *testing.T, h *netlab.Host, name string) string {
	t.Helper()
	return strings.TrimSpace(h.Run(t, "sysctl", "-n", name))
}

// TestLabUpDownRestores: in a fresh namespace with some non-default values,
// up (with --tun on a veth) then down leaves sysctls, addresses and links
// exactly as they were; up twice is up once.
func TestLabUpDownRestores(t *testing.T) {
	lab := netlab.New(t)
	br := lab.Bridge("br0")
	rs := lab.Host("rs1")
	lab.Connect(rs, br, "eth0", "198.18.0.11/24", "2001:db8::11/64")
	rs.Run(t, "ip", "route", "add", "default", "via", "198.18.0.1")
	// Values up must change and later restore, and a VIP already there.
	rs.Run(t, "sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.eth0.rp_filter=1",
		"net.ipv4.conf.lo.arp_announce=1", "net.ipv4.conf.lo.arp_ignore=2")
	rs.Run(t, "ip", "addr", "add", "198.18.0.101/32", "dev", "lo")
	state := filepath.Join(t.TempDir(), "state.json")
	before := snapshot(t, rs)

	up := []string{"up", "--vip", "198.18.0.100", "--vip", "198.18.0.101", "--vip", "2001:db8::100",
		"--tun", "--tun-mode", "xdp", "--state", state}
	out := xvsRS(t, rs, up...)
	t.Logf("up:\n%s", out)

	for name, want := range map[string]string{
		"net.ipv4.conf.all.arp_ignore":   "1",
		"net.ipv4.conf.lo.arp_ignore":    "2", // stricter, kept
		"net.ipv4.conf.all.arp_announce": "2",
		"net.ipv4.conf.lo.arp_announce":  "2",
		"net.ipv4.conf.all.rp_filter":    "2",
		"net.ipv4.conf.eth0.rp_filter":   "2",
	} {
		if got := sysctl(t, rs, name); got != want {
			t.Errorf("after up: %s = %s, want %s", name, got, want)
		}
	}
	lo := rs.Run(t, "ip", "-o", "addr", "show", "dev", "lo")
	for _, a := range []string{"198.18.0.100/32", "198.18.0.101/32", "2001:db8::100/128"} {
		if !strings.Contains(lo, a) {
			t.Errorf("after up: %s not on lo:\n%s", a, lo)
		}
	}
	// The attachment outlives the xvs-rs process (and its mount namespace).
	if link := rs.Run(t, "ip", "-d", "link", "show", "eth0"); !strings.Contains(link, "name xvs_decap") {
		t.Errorf("after up: decap program not on eth0 (the default route's interface):\n%s", link)
	}
	afterUp := snapshot(t, rs)

	if out := xvsRS(t, rs, up...); !strings.Contains(out, "already up: nothing changed") {
		t.Errorf("second up did something:\n%s", out)
	}
	if again := snapshot(t, rs); again != afterUp {
		t.Errorf("second up changed the namespace:\n%s", diffLines(afterUp, again))
	}

	status := xvsRS(t, rs, "status", "--state", state)
	for _, want := range []string{
		"198.18.0.100/32  (added by xvs-rs)",
		"net.ipv4.conf.all.rp_filter = 2  (was 1)",
		"eth0: decap program id",
		"VIPs: 198.18.0.100 198.18.0.101 2001:db8::100",
		// The host's own addresses and the VIPs on lo, IPv4 and IPv6; not
		// eth0's link-local IPv6 address.
		"tunnels accepted to: 198.18.0.11 198.18.0.100 198.18.0.101 2001:db8::11 2001:db8::100\n",
	} {
		if !strings.Contains(status, want) {
			t.Errorf("status lacks %q:\n%s", want, status)
		}
	}
	if strings.Contains(status, "198.18.0.101/32  (added") {
		t.Errorf("status claims the pre-existing VIP:\n%s", status)
	}

	out = xvsRS(t, rs, "down", "--state", state)
	t.Logf("down:\n%s", out)
	if after := snapshot(t, rs); after != before {
		t.Errorf("down did not restore the namespace:\n%s", diffLines(before, after))
	}
	if out := xvsRS(t, rs, "down", "--state", state); !strings.Contains(out, "nothing to restore") {
		t.Errorf("down without state said:\n%s", out)
	}
}

// sendFrame sends a raw Ethernet frame out of ifname from inside h.
func sendFrame(h *netlab.Host, ifname string, frame []byte) error {
	return h.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		// Protocol 0: a socket that only sends.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], frame[0:6])
		if err := unix.Sendto(fd, frame, 0, sa); err != nil {
			return fmt.Errorf("send on %s: %w", ifname, err)
		}
		return nil
	})
}

// TestLabTunDecapDelivers: a director sends IPIP, 6in4, 4in6 and 6in6
// packets to a real server set up with `xvs-rs up --tun`; the decap program
// opens them (its counter shows it was the program, not a kernel tunnel)
// and a UDP server bound to the VIP receives the client's datagram with the
// client's address.
func TestLabTunDecapDelivers(t *testing.T) {
	lab := netlab.New(t)
	br := lab.Bridge("br0")
	rs := lab.Host("rs1")
	dir := lab.Host("dir")
	rsLink := lab.Connect(rs, br, "eth0", "198.18.0.11/24", "2001:db8::11/64")
	dirLink := lab.Connect(dir, br, "eth0", "198.18.0.2/24", "2001:db8::2/64")
	state := filepath.Join(t.TempDir(), "state.json")
	xvsRS(t, rs, "up", "--vip", "198.18.0.100", "--vip", "2001:db8::100",
		"--tun", "--tun-mode", "xdp", "--dev", "eth0", "--state", state)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = rs.Output("env", mainEnv+"=1", exe, "down", "--state", state) })

	var conn4, conn6 net.PacketConn
	if err := rs.Do(func() error {
		var err error
		if conn4, err = net.ListenPacket("udp4", "198.18.0.100:9999"); err != nil {
			return err
		}
		conn6, err = net.ListenPacket("udp6", "[2001:db8::100]:9999")
		return err
	}); err != nil {
		t.Fatalf("UDP servers on the VIPs: %v", err)
	}
	t.Cleanup(func() { conn4.Close(); conn6.Close() })

	client4 := netip.MustParseAddr("198.18.0.10")
	client6 := netip.MustParseAddr("2001:db8::10")
	// frame is the director's packet: Ethernet, an outer IPv4 header (ipv6
	// false) or IPv6 header (as in RFC 2473: next header 4 or 41, no
	// extension headers) to the real server, the client's UDP datagram.
	frame := func(ipv6 bool, inner gopacket.NetworkLayer, payload string) []byte {
		udp := &layers.UDP{SrcPort: 40000, DstPort: 9999}
		if err := udp.SetNetworkLayerForChecksum(inner); err != nil {
			t.Fatal(err)
		}
		proto := layers.IPProtocolIPv4
		if _, ok := inner.(*layers.IPv6); ok {
			proto = layers.IPProtocolIPv6
		}
		eth := &layers.Ethernet{SrcMAC: dirLink.MAC, DstMAC: rsLink.MAC, EthernetType: layers.EthernetTypeIPv4}
		var outer gopacket.SerializableLayer = &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto,
			SrcIP: net.IP{198, 18, 0, 2}, DstIP: net.IP{198, 18, 0, 11}}
		if ipv6 {
			eth.EthernetType = layers.EthernetTypeIPv6
			outer = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto,
				SrcIP: net.ParseIP("2001:db8::2"), DstIP: net.ParseIP("2001:db8::11")}
		}
		buf := gopacket.NewSerializeBuffer()
		err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
			eth, outer, inner.(gopacket.SerializableLayer), udp, gopacket.Payload(payload))
		if err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	inner4 := func() gopacket.NetworkLayer {
		return &layers.IPv4{Version: 4, IHL: 5, TTL: 63, Protocol: layers.IPProtocolUDP,
			SrcIP: client4.AsSlice(), DstIP: net.IP{198, 18, 0, 100}}
	}
	inner6 := func() gopacket.NetworkLayer {
		return &layers.IPv6{Version: 6, HopLimit: 63, NextHeader: layers.IPProtocolUDP,
			SrcIP: client6.AsSlice(), DstIP: net.ParseIP("2001:db8::100")}
	}
	ipip := frame(false, inner4(), "through ipip")
	sixin4 := frame(false, inner6(), "through 6in4")
	fourin6 := frame(true, inner4(), "through 4in6")
	sixin6 := frame(true, inner6(), "through 6in6")

	for _, tc := range []struct {
		name   string
		frame  []byte
		conn   net.PacketConn
		want   string
		client netip.Addr
	}{
		{"ipip", ipip, conn4, "through ipip", client4},
		{"6in4", sixin4, conn6, "through 6in4", client6},
		{"4in6", fourin6, conn4, "through 4in6", client4},
		{"6in6", sixin6, conn6, "through 6in6", client6},
	} {
		if err := sendFrame(dir, "eth0", tc.frame); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		// A deadline only so a lost packet fails instead of hanging.
		_ = tc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 1500)
		n, from, err := tc.conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("%s: the UDP server on the VIP got nothing:\n%s", tc.name,
					xvsRS(t, rs, "status", "--state", state))
				continue
			}
			t.Fatalf("%s: read: %v", tc.name, err)
		}
		got := from.(*net.UDPAddr).AddrPort()
		if string(buf[:n]) != tc.want || got.Addr().Unmap() != tc.client || got.Port() != 40000 {
			t.Errorf("%s: got %q from %v, want %q from %v:40000", tc.name, buf[:n], got, tc.want, tc.client)
		}
	}
	// In process this time: Status on a thread inside the namespace.
	var sb strings.Builder
	if err := rs.Do(func() error { return Status(state, &sb) }); err != nil {
		t.Fatalf("Status: %v", err)
	}
	status := sb.String()
	if !strings.Contains(status, "decapsulated 4,") {
		t.Errorf("status does not count the four decapsulated packets:\n%s", status)
	}
	if !strings.Contains(status, "tunnels accepted to: 198.18.0.11 198.18.0.100 2001:db8::11 2001:db8::100\n") {
		t.Errorf("status does not list the IPv4 and IPv6 host addresses as tunnel ends:\n%s", status)
	}

	xvsRS(t, rs, "down", "--state", state)
	if link := rs.Run(t, "ip", "-d", "link", "show", "eth0"); strings.Contains(link, "xdp") {
		t.Errorf("after down an XDP program is still on eth0:\n%s", link)
	}
	if lo := rs.Run(t, "ip", "addr", "show", "dev", "lo"); strings.Contains(lo, "198.18.0.100") || strings.Contains(lo, "2001:db8::100") {
		t.Errorf("after down a VIP is still on lo:\n%s", lo)
	}
}

// TestLabVIPNotAnnounced: after up, a neighbour's ARP (IPv4) and neighbour
// solicitation (IPv6) for the VIPs go unanswered, so only the director
// attracts VIP traffic; the real server's own address still answers. The
// IPv4 control (VIP on lo with the kernel's default arp_ignore=0) shows the
// check can fail.
func TestLabVIPNotAnnounced(t *testing.T) {
	lab := netlab.New(t)
	br := lab.Bridge("br0")
	rs := lab.Host("rs1")
	nb := lab.Host("nb")
	lab.Connect(rs, br, "eth0", "198.18.0.11/24", "2001:db8::11/64")
	lab.Connect(nb, br, "eth0", "198.18.0.10/24", "2001:db8::10/64")
	state := filepath.Join(t.TempDir(), "state.json")
	xvsRS(t, rs, "up", "--vip", "198.18.0.100", "--vip", "2001:db8::100", "--state", state)

	ping := func(addr string) error {
		_, err := nb.Output("ping", "-n", "-c", "1", "-W", "1", addr)
		return err
	}
	for _, own := range []string{"198.18.0.11", "2001:db8::11"} {
		if err := ping(own); err != nil {
			t.Fatalf("the real server's own address does not answer: %v", err)
		}
	}
	for _, vip := range []string{"198.18.0.100", "2001:db8::100"} {
		if err := ping(vip); err == nil {
			t.Errorf("ping %s from a neighbour got an answer: the real server announces its VIP", vip)
		}
		neigh := nb.Run(t, "ip", "neigh", "show", vip)
		if strings.Contains(neigh, "lladdr") {
			t.Errorf("the neighbour learnt a MAC for %s: %s", vip, neigh)
		}
	}

	xvsRS(t, rs, "down", "--state", state)
	rs.Run(t, "ip", "addr", "add", "198.18.0.100/32", "dev", "lo")
	nb.Run(t, "ip", "neigh", "flush", "dev", "eth0")
	if err := ping("198.18.0.100"); err != nil {
		t.Errorf("control: with arp_ignore=0 the VIP on lo should answer, but: %v", err)
	}
}
