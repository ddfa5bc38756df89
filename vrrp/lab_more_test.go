package vrrp

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/xvs-lb/xvs/internal/netlab"
)

// TestLabDropsCauseNoTransition forges adverts from the client: wrong
// password, TTL 64, wrong interval, bad checksum, garbage. Both xvs
// speakers drop and count them, and the master stays master.
func TestLabDropsCauseNoTransition(t *testing.T) {
	l := newVRRPLab(t, false)
	t0 := time.Now()
	b := l.start("xvs", 1, labConfig(2, time.Second, 100, false, 1))
	m := l.start("xvs", 0, labConfig(2, time.Second, 150, true, 0))
	l.mon.waitOnly(t, 0, t0, 10*time.Second)
	time.Sleep(1500 * time.Millisecond) // dir2 has heard the master
	before := [2]Stats{m.readStats(t), b.readStats(t)}

	var pc *ipv4.PacketConn
	if err := l.client.Do(func() error {
		c, err := net.ListenPacket("ip4:112", "198.18.0.10")
		if err != nil {
			return err
		}
		pc = ipv4.NewPacketConn(c)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	src, group := netip.MustParseAddr("198.18.0.10"), netip.MustParseAddr("224.0.0.18")
	forge := func(f func(a *Advert)) []byte {
		a := Advert{Version: 2, VRID: 51, Priority: 254, Interval: time.Second, AuthType: AuthPass,
			AuthData: [8]byte([]byte("xvs-lab-")), Addrs: []netip.Addr{labVIP}}
		f(&a)
		p, err := a.Append(nil, src, group)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	badSum := forge(func(*Advert) {})
	badSum[6] ^= 0x5a
	sends := []struct {
		name  string
		b     []byte
		ttl   int
		want  DropReason
		attrb bool
	}{
		{"auth mismatch", forge(func(a *Advert) { a.AuthData = [8]byte([]byte("wrong-pw")) }), 255, DropAuth, true},
		{"TTL 64", forge(func(*Advert) {}), 64, DropTTL, true},
		{"interval 3s", forge(func(a *Advert) { a.Interval = 3 * time.Second }), 255, DropInterval, true},
		{"bad checksum", badSum, 255, DropChecksum, true},
		{"garbage", []byte("\xffgarbage that is not VRRP at all"), 255, DropVersion, false},
	}
	tSend := time.Now()
	for _, s := range sends {
		if err := pc.SetMulticastTTL(s.ttl); err != nil {
			t.Fatal(err)
		}
		for range 5 {
			if _, err := pc.WriteTo(s.b, nil, &net.IPAddr{IP: group.AsSlice()}); err != nil {
				t.Fatalf("send %s: %v", s.name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(2 * time.Second) // > one advert interval, and stats are rewritten every 50ms
	after := [2]Stats{m.readStats(t), b.readStats(t)}
	for i, name := range []string{"master dir1", "backup dir2"} {
		bi, ai := before[i].Instances["VI_1"], after[i].Instances["VI_1"]
		for _, s := range sends {
			got := ai.Drops[s.want] - bi.Drops[s.want]
			if !s.attrb {
				got = after[i].Unattributed[s.want] - before[i].Unattributed[s.want]
			}
			if got != 5 {
				t.Errorf("%s: %s: %v drops +%d, want +5", name, s.name, s.want, got)
			}
		}
		if ai.BecameMaster != bi.BecameMaster || ai.LeftMaster != bi.LeftMaster {
			t.Errorf("%s: transitions during the forged packets: became master %d→%d, left %d→%d",
				name, bi.BecameMaster, ai.BecameMaster, bi.LeftMaster, ai.LeftMaster)
		}
	}
	if s := l.mon.last(); !s.hold[0] || s.hold[1] {
		t.Errorf("VIP holders after the forged packets = %v, want dir1 only", s.hold)
	}
	if both := l.mon.maxBoth(tSend, time.Now()); both > 0 {
		t.Errorf("both directors held the VIP for %v during the forged packets", both)
	}
	t.Logf("drops on dir2: %v; unattributed %v", after[1].Instances["VI_1"].Drops, after[1].Unattributed)
}

// TestLabScriptWeight is the tutorials' chk_nginx: a vrrp_script with
// weight -10 on the master fails, the backup takes over; it recovers, the
// master takes back. Once with the script on xvs, once on keepalived.
func TestLabScriptWeight(t *testing.T) {
	l := newVRRPLab(t, false)
	for _, kinds := range [][2]string{{"xvs", "keepalived"}, {"keepalived", "xvs"}} {
		flag := filepath.Join(t.TempDir(), "nginx-ok")
		if err := os.WriteFile(flag, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		interval := 100 * time.Millisecond
		if kinds[0] == "keepalived" {
			interval = time.Second // keepalived's minimum
		}
		mc := labConfig(3, 100*time.Millisecond, 105, true, 0, func(in *Instance) {
			in.TrackScripts = []TrackScript{{Name: "chk_nginx"}}
		})
		mc.Scripts = []Script{{Name: "chk_nginx", Script: "/usr/bin/test -f " + flag, Interval: interval, Weight: -10, Rise: 1, Fall: 1}}
		t0 := time.Now()
		b := l.start(kinds[1], 1, labConfig(3, 100*time.Millisecond, 100, false, 1))
		m := l.start(kinds[0], 0, mc)
		l.mon.waitOnly(t, 0, t0, 10*time.Second)
		time.Sleep(time.Second)

		tFail := time.Now()
		os.Remove(flag)
		take := l.mon.waitOnly(t, 1, tFail, 3*interval+5*time.Second)
		tOK := time.Now()
		if err := os.WriteFile(flag, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		back := l.mon.waitOnly(t, 0, tOK, 3*interval+5*time.Second)
		t.Logf("script on %s (interval %v): failing → %s took over in %v; recovered → back in %v",
			kinds[0], interval, kinds[1], take.Sub(tFail).Round(time.Millisecond), back.Sub(tOK).Round(time.Millisecond))
		if bound := 2*interval + mdi(100, 100*time.Millisecond) + slackFor(100*time.Millisecond); take.Sub(tFail) > bound {
			t.Errorf("takeover after the script failed took %v, want ≤ %v", take.Sub(tFail), bound)
		}
		m.stop(t)
		b.stop(t)
	}
}

// TestLabSyncGroup: two instances on two networks in a vrrp_sync_group;
// eth1 going down on the master faults VI_2 and so the whole group, and
// both VIPs move to the other director (and back when eth1 returns).
func TestLabSyncGroup(t *testing.T) {
	l := newVRRPLab(t, true)
	cfg := func(prio uint8, master bool, dir int) Config {
		c := labConfig(3, 100*time.Millisecond, prio, master, dir)
		in2 := c.Instances[0]
		in2.Name, in2.Interface, in2.VirtualRouterID = "VI_2", "eth1", 52
		in2.VirtualIPAddresses = []VIP{{Prefix: netip.PrefixFrom(labVIP2, 32), Dev: "eth1"}}
		c.Instances = append(c.Instances, in2)
		c.SyncGroups = []SyncGroup{{Name: "VG_1", Group: []string{"VI_1", "VI_2"}}}
		return c
	}
	holds2 := func(dir int) bool {
		out, _ := l.dirs[dir].Output("ip", "-4", "-o", "addr", "show", "dev", "eth1")
		return strings.Contains(out, labVIP2.String()+"/32")
	}
	waitVIP2 := func(dir int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if holds2(dir) && !holds2(1-dir) {
				return
			}
		}
		t.Fatalf("VI_2's VIP %v: dir1 %v, dir2 %v; want only dir%d", labVIP2, holds2(0), holds2(1), dir+1)
	}
	for _, kinds := range [][2]string{{"xvs", "keepalived"}, {"keepalived", "xvs"}} {
		t0 := time.Now()
		b := l.start(kinds[1], 1, cfg(100, false, 1))
		m := l.start(kinds[0], 0, cfg(150, true, 0))
		l.mon.waitOnly(t, 0, t0, 10*time.Second)
		waitVIP2(0)

		tDown := time.Now()
		l.dirs[0].Run(t, "ip", "link", "set", "eth1", "down")
		take := l.mon.waitOnly(t, 1, tDown, 5*time.Second)
		waitVIP2(1)
		tUp := time.Now()
		l.dirs[0].Run(t, "ip", "link", "set", "eth1", "up")
		back := l.mon.waitOnly(t, 0, tUp, 10*time.Second)
		waitVIP2(0)
		t.Logf("sync group, %s master / %s backup: eth1 down → VI_1 moved in %v; eth1 up → back in %v",
			kinds[0], kinds[1], take.Sub(tDown).Round(time.Millisecond), back.Sub(tUp).Round(time.Millisecond))
		// The fault is seen within a link poll (100ms) and announced with
		// priority 0, so the peer's VI_1 takes over after about Skew_Time
		// (keepalived may also wait for its own VI_2's Master_Down_Interval).
		if bound := 100*time.Millisecond + mdi(100, 100*time.Millisecond) + slackFor(100*time.Millisecond); take.Sub(tDown) > bound {
			t.Errorf("group failover took %v, want ≤ %v", take.Sub(tDown), bound)
		}
		m.stop(t)
		b.stop(t)
	}
}

// TestLabPreemptOptions: a higher-priority xvs joining a keepalived master
// does not take over with nopreempt, and waits preempt_delay otherwise.
func TestLabPreemptOptions(t *testing.T) {
	l := newVRRPLab(t, false)
	adv := 100 * time.Millisecond
	t0 := time.Now()
	k := l.start("keepalived", 1, labConfig(3, adv, 100, true, 1))
	defer k.stop(t)
	l.mon.waitOnly(t, 1, t0, 10*time.Second)

	x := l.start("xvs", 0, labConfig(3, adv, 150, false, 0, func(in *Instance) { in.NoPreempt = true }))
	time.Sleep(20 * adv) // many Master_Down_Intervals
	if s := l.mon.last(); s.hold[0] || !s.hold[1] {
		t.Errorf("with nopreempt the higher-priority xvs took the VIP: holders %v", s.hold)
	}
	x.stop(t)

	delay := time.Second
	tStart := time.Now()
	x = l.start("xvs", 0, labConfig(3, adv, 150, false, 0, func(in *Instance) { in.PreemptDelay = delay }))
	defer x.stop(t)
	took := l.mon.waitOnly(t, 0, tStart, delay+5*time.Second).Sub(tStart)
	t.Logf("preempt_delay %v: xvs preempted keepalived %v after start", delay, took.Round(time.Millisecond))
	if took < delay {
		t.Errorf("preempted after %v, before preempt_delay %v", took, delay)
	}
	if bound := delay + mdi(150, adv) + 2*adv + slackFor(adv); took > bound {
		t.Errorf("preempted after %v, want ≤ %v", took, bound)
	}
}

// TestLabV6 runs VRRPv3 over IPv6 (link-local sources, ff02::12) between
// xvs and keepalived: election, graceful handover both ways, and the
// client reaching the IPv6 VIP through whichever director holds it.
func TestLabV6(t *testing.T) {
	l := newVRRPLab(t, false)
	vip6 := netip.MustParseAddr("2001:db8::100")
	for i, h := range append([]*netlab.Host{l.client}, l.dirs[:]...) {
		h.Run(t, "ip", "-6", "addr", "add", fmt.Sprintf("2001:db8::%d/64", []int{10, 2, 3}[i]), "dev", "eth0", "nodad")
	}
	for _, h := range l.dirs {
		waitLinkLocal(t, h)
	}
	mon := newVIPMonitor(t, l.dirs[:], vip6)
	v6 := func(in *Instance) {
		in.VirtualIPAddresses = []VIP{{Prefix: netip.PrefixFrom(vip6, 128), Dev: "eth0"}}
	}
	ping := func() {
		t.Helper()
		var out string
		var err error
		for range 20 {
			if out, err = l.client.Output("ping", "-6", "-c1", "-W1", vip6.String()); err == nil {
				return
			}
		}
		t.Errorf("client cannot reach %v: %v %s", vip6, err, out)
	}
	for _, kinds := range [][2]string{{"xvs", "keepalived"}, {"keepalived", "xvs"}} {
		t0 := time.Now()
		b := l.start(kinds[1], 1, labConfig(3, 100*time.Millisecond, 100, false, 1, v6))
		m := l.start(kinds[0], 0, labConfig(3, 100*time.Millisecond, 150, true, 0, v6))
		mon.waitOnly(t, 0, t0, 10*time.Second)
		ping()
		m.checkLog(t)
		tStop := time.Now()
		m.stop(t)
		take := mon.waitOnly(t, 1, tStop, 5*time.Second)
		ping()
		b.checkLog(t)
		t.Logf("IPv6 %s MASTER → %s BACKUP: graceful handover %v after SIGTERM", kinds[0], kinds[1], take.Sub(tStop).Round(time.Millisecond))
		b.stop(t)
	}
}

// waitLinkLocal waits until eth0's link-local address has left DAD, so
// that VRRP over IPv6 can use it as its source.
func waitLinkLocal(t *testing.T, h *netlab.Host) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		out, _ := h.Output("ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link")
		if strings.Contains(out, "fe80") && !strings.Contains(out, "tentative") {
			return
		}
	}
	t.Fatalf("%s: eth0 has no usable link-local address", h.Name)
}
