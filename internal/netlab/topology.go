package netlab

import (
	"net/netip"
)

// Addresses of the standard topology (LAB.md): the LVS tutorials' lab
// translated into the benchmarking range.
var (
	ClientAddr = netip.MustParseAddr("198.18.0.10")
	Dir1Addr   = netip.MustParseAddr("198.18.0.2")
	Dir2Addr   = netip.MustParseAddr("198.18.0.3")
	RS1Addr    = netip.MustParseAddr("198.18.0.11")
	RS2Addr    = netip.MustParseAddr("198.18.0.12")
	VIP        = netip.MustParseAddr("198.18.0.100")
)

// Topology is the standard lab: a client, two directors and two real
// servers on one bridge, each with eth0 in 198.18.0.0/24.
type Topology struct {
	Lab                          *Lab
	Bridge                       *Bridge
	Client, Dir1, Dir2, RS1, RS2 *Host
	// Links by host base name ("client", "dir1", ...).
	Links map[string]*Link
}

// Standard builds the standard topology. The client's eth0 has tx checksum
// offload off, so that packets it sends carry full checksums as they would
// from a real NIC (veth otherwise leaves them partial).
func Standard(tb TB) *Topology {
	tb.Helper()
	l := New(tb)
	t := &Topology{Lab: l, Bridge: l.Bridge("br0"), Links: map[string]*Link{}}
	add := func(name string, addr netip.Addr) *Host {
		h := l.Host(name)
		t.Links[name] = l.Connect(h, t.Bridge, "eth0", netip.PrefixFrom(addr, 24).String())
		return h
	}
	t.Client = add("client", ClientAddr)
	t.Dir1 = add("dir1", Dir1Addr)
	t.Dir2 = add("dir2", Dir2Addr)
	t.RS1 = add("rs1", RS1Addr)
	t.RS2 = add("rs2", RS2Addr)
	t.Client.Run(tb, "ethtool", "-K", "eth0", "tx", "off")
	return t
}

// RealServerDR configures h as a DR real server for vip: the VIP on lo/32
// and arp_ignore=1, arp_announce=2, so that only the director answers ARP
// for the VIP (what xvs-rs up does).
func RealServerDR(tb TB, h *Host, vip netip.Addr) {
	tb.Helper()
	bits := 32
	if vip.Is6() {
		bits = 128
	}
	for _, kv := range []string{
		"net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2",
		"net.ipv4.conf.lo.arp_ignore=1", "net.ipv4.conf.lo.arp_announce=2",
	} {
		h.Run(tb, "sysctl", "-q", "-w", kv)
	}
	args := []string{"addr", "add", netip.PrefixFrom(vip, bits).String(), "dev", "lo"}
	if vip.Is6() {
		// No duplicate address detection: a tentative address cannot be
		// bound to, and the test binds to it at once.
		args = append(args, "nodad")
	}
	h.Run(tb, "ip", args...)
}
