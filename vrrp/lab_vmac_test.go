package vrrp

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xvs-lb/xvs/internal/netlab"
)

// TestLabVMAC runs use_vmac between xvs and keepalived: the client's ARP
// entry for the VIP is the virtual router MAC 00:00:5e:00:01:33 whoever is
// master, before and after a failover each way (xvs → keepalived on a
// graceful stop, keepalived → xvs when xvs returns and preempts), and a
// stopped speaker leaves no vmac and restores the base's sysctls.
func TestLabVMAC(t *testing.T) {
	l := newVRRPLab(t, false)
	const vmacMAC = "00:00:5e:00:01:33"
	adv := 100 * time.Millisecond
	vm := func(in *Instance) { in.UseVMAC, in.VMACName = true, "vrrp.51" }
	// keepalived leaves ARP tuning to the administrator (its
	// NOTE_vrrp_vmac.txt); without arp_announce=2 its director's own ARP
	// requests (sender = VIP) rewrite the client's entry to eth0's MAC.
	l.dirs[1].Run(t, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_announce=2")

	sysctls := func(h *netlab.Host) string {
		out, _ := h.Output("sh", "-c", "cat /proc/sys/net/ipv4/conf/eth0/arp_ignore /proc/sys/net/ipv4/conf/eth0/arp_filter /proc/sys/net/ipv4/conf/eth0/arp_announce")
		return strings.Join(strings.Fields(out), " ")
	}
	before := sysctls(l.dirs[0])
	vmacOf := func(h *netlab.Host) (string, bool) {
		out, err := h.Output("ip", "-d", "link", "show", "vrrp.51")
		return out, err == nil
	}
	// clientSees waits until the client reaches the VIP and checks that
	// its neighbour entry for it is the virtual MAC, and stays so while
	// the master has talked back to it for a while.
	clientSees := func(when string, since time.Time) {
		t.Helper()
		l.probe.firstReplyAfter(t, since, 5*time.Second)
		// Make the directors ask for the client's MAC again, as they do
		// whenever their entry expires, after the client's locktime (1s,
		// during which Linux ignores ARP updates to a fresh entry).
		time.Sleep(1100 * time.Millisecond)
		for _, h := range l.dirs {
			h.Run(t, "ip", "neigh", "flush", "to", "198.18.0.10", "dev", "eth0")
		}
		time.Sleep(100 * time.Millisecond)
		l.probe.firstReplyAfter(t, time.Now(), 2*time.Second)
		out := l.client.Run(t, "ip", "neigh", "show", labVIP.String(), "dev", "eth0")
		if !strings.Contains(out, "lladdr "+vmacMAC) {
			t.Errorf("%s: client's neighbour entry for %v = %q, want lladdr %s", when, labVIP, strings.TrimSpace(out), vmacMAC)
		} else {
			t.Logf("%s: client's entry: %s", when, strings.TrimSpace(out))
		}
	}

	t0 := time.Now()
	k := l.start("keepalived", 1, labConfig(3, adv, 100, false, 1, vm))
	defer k.stop(t)
	x := l.start("xvs", 0, labConfig(3, adv, 150, true, 0, vm))
	conv := l.mon.waitOnly(t, 0, t0, 10*time.Second)
	l.client.Run(t, "ip", "neigh", "flush", "dev", "eth0")
	clientSees("xvs MASTER", conv)
	out, ok := vmacOf(l.dirs[0])
	if !ok || !strings.Contains(out, "link/ether "+vmacMAC) || !strings.Contains(out, "macvlan mode private") {
		t.Errorf("xvs's vrrp.51: %q; want a private macvlan with MAC %s", out, vmacMAC)
	}
	if got := sysctls(l.dirs[0]); got != "1 1 2" {
		t.Errorf("xvs director's eth0 arp_ignore arp_filter arp_announce = %s, want 1 1 2", got)
	}
	for _, sc := range []string{"arp_ignore=1", "accept_local=1", "rp_filter=0"} {
		kv := strings.SplitN(sc, "=", 2)
		if got := strings.TrimSpace(l.dirs[0].Run(t, "cat", "/proc/sys/net/ipv4/conf/vrrp.51/"+kv[0])); got != kv[1] {
			t.Errorf("vrrp.51 %s = %s, want %s", kv[0], got, kv[1])
		}
	}
	x.checkLog(t)

	// xvs → keepalived: graceful stop.
	tStop := time.Now()
	x.stop(t)
	take := l.mon.waitOnly(t, 1, tStop, 5*time.Second)
	clientSees("keepalived MASTER after xvs stopped", take)
	if out, ok := vmacOf(l.dirs[0]); ok {
		t.Errorf("xvs left its vmac behind after stopping: %s", out)
	}
	if got := sysctls(l.dirs[0]); got != before {
		t.Errorf("xvs director's eth0 sysctls after stop = %s, want the original %s", got, before)
	}
	t.Logf("graceful handover xvs → keepalived with vmac: %v", take.Sub(tStop).Round(time.Millisecond))

	// keepalived → xvs: xvs returns with priority 150 and preempts.
	tBack := time.Now()
	x.run(t)
	back := l.mon.waitOnly(t, 0, tBack, 10*time.Second)
	clientSees("xvs MASTER after preempting keepalived", back)
	t.Logf("xvs preempted keepalived with vmac %v after restart", back.Sub(tBack).Round(time.Millisecond))
	x.checkLog(t)
	k.stop(t)
	x.stop(t)
	for i, h := range l.dirs {
		if out, ok := vmacOf(h); ok {
			t.Errorf("dir%d still has vrrp.51 after both stopped: %s", i+1, out)
		}
	}
}

// TestLabVMACv6: use_vmac with VRRPv3 over IPv6 between xvs and keepalived:
// the vmac has MAC 00:00:5e:00:02:33 and the base's link-local (the advert
// source), the client's neighbour entry for the VIP is that MAC, and a
// graceful stop hands over both ways.
func TestLabVMACv6(t *testing.T) {
	l := newVRRPLab(t, false)
	const vmacMAC = "00:00:5e:00:02:33"
	vip6 := netip.MustParseAddr("2001:db8::100")
	for i, h := range append([]*netlab.Host{l.client}, l.dirs[:]...) {
		h.Run(t, "ip", "-6", "addr", "add", fmt.Sprintf("2001:db8::%d/64", []int{10, 2, 3}[i]), "dev", "eth0", "nodad")
	}
	for _, h := range l.dirs {
		waitLinkLocal(t, h)
	}
	mon := newVIPMonitor(t, l.dirs[:], vip6)
	v6 := func(in *Instance) {
		in.UseVMAC, in.VMACName = true, "vrrp.51"
		in.VirtualIPAddresses = []VIP{{Prefix: netip.PrefixFrom(vip6, 128), Dev: "eth0"}}
	}
	ping := func(when string) {
		t.Helper()
		var out string
		var err error
		for range 20 {
			if out, err = l.client.Output("ping", "-6", "-c1", "-W1", vip6.String()); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s: client cannot reach %v: %v %s", when, vip6, err, out)
		}
		out = l.client.Run(t, "ip", "-6", "neigh", "show", vip6.String(), "dev", "eth0")
		if !strings.Contains(out, "lladdr "+vmacMAC) {
			t.Errorf("%s: client's neighbour entry for %v = %q, want lladdr %s", when, vip6, strings.TrimSpace(out), vmacMAC)
		}
	}
	for _, kinds := range [][2]string{{"xvs", "keepalived"}, {"keepalived", "xvs"}} {
		t0 := time.Now()
		b := l.start(kinds[1], 1, labConfig(3, 100*time.Millisecond, 100, false, 1, v6))
		m := l.start(kinds[0], 0, labConfig(3, 100*time.Millisecond, 150, true, 0, v6))
		mon.waitOnly(t, 0, t0, 10*time.Second)
		l.client.Run(t, "ip", "-6", "neigh", "flush", "dev", "eth0")
		ping(kinds[0] + " MASTER")
		if kinds[0] == "xvs" {
			out := l.dirs[0].Run(t, "ip", "-d", "addr", "show", "dev", "vrrp.51")
			ll := strings.TrimSpace(l.dirs[0].Run(t, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"))
			if !strings.Contains(out, "link/ether "+vmacMAC) || len(strings.Fields(ll)) < 4 || !strings.Contains(out, strings.Fields(ll)[3]) {
				t.Errorf("xvs's vrrp.51 = %s; want MAC %s and eth0's link-local (%s)", out, vmacMAC, ll)
			}
			m.checkLog(t)
		}
		tStop := time.Now()
		m.stop(t)
		take := mon.waitOnly(t, 1, tStop, 5*time.Second)
		ping(kinds[1] + " MASTER after " + kinds[0] + " stopped")
		if kinds[1] == "xvs" {
			b.checkLog(t)
		}
		t.Logf("IPv6 vmac %s MASTER → %s BACKUP: graceful handover %v", kinds[0], kinds[1], take.Sub(tStop).Round(time.Millisecond))
		b.stop(t)
	}
}

// TestLabVMACUnicast: use_vmac with unicast peers, xvs MASTER and
// keepalived BACKUP. Unicast adverts must leave by the base interface (as
// keepalived's do): sent from the vmac, the ARP request for the peer never
// gets an answer and both directors end up MASTER.
func TestLabVMACUnicast(t *testing.T) {
	l := newVRRPLab(t, false)
	adv := 100 * time.Millisecond
	vm := func(dir int) func(*Instance) {
		return func(in *Instance) { unicast(dir)(in); in.UseVMAC, in.VMACName = true, "vrrp.51" }
	}
	t0 := time.Now()
	k := l.start("keepalived", 1, labConfig(3, adv, 100, false, 1, vm(1)))
	defer k.stop(t)
	x := l.start("xvs", 0, labConfig(3, adv, 150, true, 0, vm(0)))
	defer x.stop(t)
	conv := l.mon.waitOnly(t, 0, t0, 10*time.Second)
	time.Sleep(20 * adv)
	if both := l.mon.maxBoth(conv, time.Now()); both > 0 {
		t.Errorf("both directors held the VIP for %v after xvs took over", both)
	}
	if s := l.mon.last(); !s.hold[0] || s.hold[1] {
		t.Errorf("VIP holders %v, want xvs (dir1) only", s.hold)
	}
	tStop := time.Now()
	x.stop(t)
	take := l.mon.waitOnly(t, 1, tStop, 5*time.Second)
	t.Logf("unicast with vmac: graceful handover xvs → keepalived %v", take.Sub(tStop).Round(time.Millisecond))
}
