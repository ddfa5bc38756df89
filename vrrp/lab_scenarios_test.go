package vrrp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

var labDirAddr = [2]netip.Addr{netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")}

// labConfig is one director's single-instance config. v2 uses PASS auth
// with a password longer than 8 characters (both sides use the first 8).
func labConfig(v int, adv time.Duration, prio uint8, master bool, dir int, mods ...func(*Instance)) Config {
	in := Instance{
		Name: "VI_1", Interface: "eth0", VirtualRouterID: 51, Priority: prio, AdvertInt: adv, Version: v,
		VirtualIPAddresses: []VIP{{Prefix: netip.PrefixFrom(labVIP, 32), Dev: "eth0"}},
		GarpMasterRepeat:   3,
	}
	if master {
		in.State = StateMaster
	} else {
		in.State = StateBackup
	}
	if v == 2 {
		in.AuthType, in.AuthPass = AuthPass, "xvs-lab-secret"
	}
	for _, m := range mods {
		m(&in)
	}
	return Config{Globals: Globals{RouterID: fmt.Sprintf("dir%d", dir+1)}, Instances: []Instance{in}}
}

func unicast(dir int) func(*Instance) {
	return func(in *Instance) {
		in.UnicastSrcIP = labDirAddr[dir]
		in.UnicastPeers = []netip.Addr{labDirAddr[1-dir]}
	}
}

type failover struct {
	pair       string
	graceful   time.Duration // last (priority-0) advert → client reaches the VIP
	gracefulTO time.Duration // last advert → backup holds the VIP
	crash      time.Duration // last advert before the crash/partition → client reaches the VIP
	crashTO    time.Duration
}

// Failover bounds. The bounds (graceful stop: Skew_Time + 100ms;
// crash or partition: Master_Down_Interval + 100ms) are asserted on the
// median of a test's handovers (checkMedians), so that one handover
// delayed by a loaded CI box (a 2-core box at load 14 once delayed a v2
// takeover by 0.8s) does not fail the run while a systematic overshoot
// does; each single handover may exceed its bound by labSlack. The
// measured figures are always logged (logTable).
const labSlack = 250 * time.Millisecond

func gracefulBound(adv time.Duration) time.Duration { return skewOf(100, adv) + 100*time.Millisecond }
func crashBound(adv time.Duration) time.Duration    { return mdi(100, adv) + 100*time.Millisecond }

// slackFor is the slack of the other lab bounds (scripts, sync groups,
// preempt_delay), which are not the issue's.
func slackFor(time.Duration) time.Duration { return labSlack }

// checkMedians asserts the bounds on the medians of rows.
func checkMedians(t *testing.T, rows []failover, adv time.Duration) {
	t.Helper()
	if len(rows) == 0 {
		return
	}
	var g, c []time.Duration
	for _, r := range rows {
		g, c = append(g, r.gracefulTO), append(c, r.crashTO)
	}
	gm, cm := median(g), median(c)
	t.Logf("medians over %d pairs: graceful %v (bound %v), crash %v (bound %v)",
		len(rows), gm.Round(time.Millisecond), gracefulBound(adv), cm.Round(time.Millisecond), crashBound(adv))
	if gm > gracefulBound(adv) {
		t.Errorf("median graceful takeover %v > Skew_Time+100ms = %v", gm, gracefulBound(adv))
	}
	if cm > crashBound(adv) {
		t.Errorf("median crash/partition takeover %v > Master_Down_Interval+100ms = %v", cm, crashBound(adv))
	}
}

func median(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	n := len(d)
	if n%2 == 1 {
		return d[n/2]
	}
	return (d[n/2-1] + d[n/2]) / 2
}

// runPair exercises one master/backup pair: convergence, graceful stop and
// return (preemption), then a crash (kill -9) or a silent partition
// (bridge port disabled) and return.
func runPair(t *testing.T, l *vrrpLab, kindM, kindB string, v int, adv time.Duration, crashMode string, mods ...func(dir int) func(*Instance)) failover {
	t.Helper()
	modFor := func(dir int) []func(*Instance) {
		var ms []func(*Instance)
		for _, m := range mods {
			ms = append(ms, m(dir))
		}
		return ms
	}
	res := failover{pair: fmt.Sprintf("%s MASTER → %s BACKUP", kindM, kindB)}
	slack := labSlack
	mdiB := mdi(100, adv)
	t0 := time.Now()
	b := l.start(kindB, 1, labConfig(v, adv, 100, false, 1, modFor(1)...))
	m := l.start(kindM, 0, labConfig(v, adv, 150, true, 0, modFor(0)...))
	defer b.stop(t)
	defer m.stop(t)
	conv := l.mon.waitOnly(t, 0, t0, mdi(150, adv)+5*time.Second)
	// Both start at once, so both may become MASTER for a moment and both
	// announce the VIP. The client ignores a second ARP update within its
	// neighbour locktime (1 s), so it may keep the loser's MAC until the
	// winner's second round after vrrp_garp_master_delay (5 s): the
	// reason that round exists. Wait past it.
	l.probe.firstReplyAfter(t, conv, 10*time.Second)
	time.Sleep(2 * adv)
	if both := l.mon.maxBoth(t0, time.Now()); both > adv+slack {
		t.Errorf("%s: both directors held the VIP for %v after start", res.pair, both)
	}

	m.checkLog(t)
	b.checkLog(t)

	// Graceful stop: priority 0, the backup takes over after Skew_Time.
	tStop := time.Now()
	m.stop(t)
	take := l.mon.waitOnly(t, 1, tStop, 5*time.Second)
	last, ok := l.sniff[1].lastFrom(labDirAddr[0], take)
	if !ok || last.prio != 0 {
		t.Errorf("%s: last advert from the master before takeover = %+v (found %v), want priority 0", res.pair, last, ok)
	}
	res.gracefulTO = take.Sub(last.at)
	t.Logf("%s: stop at %s, priority 0 seen at %s, backup alone at %s", res.pair,
		tStop.Format("15:04:05.000"), last.at.Format("15:04:05.000"), take.Format("15:04:05.000"))
	res.graceful = l.probe.firstReplyAfter(t, take, 5*time.Second).Sub(last.at)
	if bound := gracefulBound(adv); res.gracefulTO > bound+slack {
		t.Errorf("%s: graceful takeover took %v, want ≤ skew+100ms = %v (+%v slack)", res.pair, res.gracefulTO, bound, slack)
	}

	// The master returns and takes the VIP back (state MASTER, priority 150).
	tBack := time.Now()
	m.run(t)
	back := l.mon.waitOnly(t, 0, tBack, mdi(150, adv)+5*time.Second)
	time.Sleep(2 * adv)
	if both := l.mon.maxBoth(tBack, time.Now()); both > adv+slack {
		t.Errorf("%s: both directors held the VIP for %v when the master returned", res.pair, both)
	}
	t.Logf("%s: master returned and preempted %v after restart", res.pair, back.Sub(tBack).Round(time.Millisecond))

	// Crash or silent partition: the backup waits Master_Down_Interval.
	tCrash := time.Now()
	port := l.links["dir1/eth0"]
	switch crashMode {
	case "kill":
		m.kill(t)
		// The dead box no longer answers: drop the VIP it left behind.
		if out, err := l.dirs[0].Output("ip", "addr", "del", labVIP.String()+"/32", "dev", "eth0"); err != nil {
			t.Logf("removing the stale VIP: %v %s", err, out)
		}
	case "partition":
		port.Switch.Run(t, "bridge", "link", "set", "dev", port.Peer, "state", "0")
	}
	// In a partition dir1 keeps the VIP behind its dead port: wait for
	// dir2 to hold it, whatever dir1 does.
	take = l.mon.waitHold(t, 1, tCrash, mdiB+5*time.Second)
	// The last advert the backup heard before taking over: one still in
	// flight while the port was being disabled counts (taking the last
	// one before tCrash overstated a unicast takeover by an advert).
	last, _ = l.sniff[1].lastFrom(labDirAddr[0], take)
	res.crashTO = take.Sub(last.at)
	t.Logf("%s: %s at %s, last advert seen at %s, backup holds at %s", res.pair, crashMode,
		tCrash.Format("15:04:05.000"), last.at.Format("15:04:05.000"), take.Format("15:04:05.000"))
	res.crash = l.probe.firstReplyAfter(t, take, 10*time.Second).Sub(last.at)
	if res.crashTO > crashBound(adv)+slack {
		t.Errorf("%s: takeover after %s took %v, want ≤ Master_Down_Interval+100ms = %v (+%v slack)",
			res.pair, crashMode, res.crashTO, crashBound(adv), slack)
	}
	if res.crashTO < 2*adv {
		t.Errorf("%s: takeover after %s took only %v; the backup should wait Master_Down_Interval %v", res.pair, crashMode, res.crashTO, mdiB)
	}
	if crashMode == "partition" {
		port.Switch.Run(t, "bridge", "link", "set", "dev", port.Peer, "state", "3")
	} else {
		m.run(t)
	}
	tHeal := time.Now()
	l.mon.waitOnly(t, 0, tHeal, mdi(150, adv)+5*time.Second)
	time.Sleep(2 * adv)
	if both := l.mon.maxBoth(tHeal, time.Now()); both > adv+slack {
		t.Errorf("%s: both directors held the VIP for %v after the %s ended", res.pair, both, crashMode)
	}
	return res
}

func logTable(t *testing.T, title string, rows []failover) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s — failover, from the master's last advert:\n", title)
	fmt.Fprintf(&b, "  %-36s %14s %14s %14s %14s\n", "pair", "stop→VIP held", "stop→client", "crash→VIP held", "crash→client")
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-36s %14v %14v %14v %14v\n", r.pair,
			r.gracefulTO.Round(time.Millisecond), r.graceful.Round(time.Millisecond),
			r.crashTO.Round(time.Millisecond), r.crash.Round(time.Millisecond))
	}
	t.Log(b.String())
}

var pairs = [][2]string{{"xvs", "xvs"}, {"keepalived", "xvs"}, {"xvs", "keepalived"}, {"keepalived", "keepalived"}}

// TestLabV2PassMulticast: VRRPv2, PASS auth, advert_int 1 s, multicast;
// the crash is a kill -9.
func TestLabV2PassMulticast(t *testing.T) {
	l := newVRRPLab(t, false)
	var rows []failover
	for _, p := range pairs {
		rows = append(rows, runPair(t, l, p[0], p[1], 2, time.Second, "kill"))
		if t.Failed() {
			break
		}
	}
	logTable(t, "VRRPv2 advert_int 1s, PASS, multicast, crash = kill -9", rows)
	checkMedians(t, rows, time.Second)
}

// TestLabV3Fast: VRRPv3, advert_int 0.1 s, multicast; the crash is a
// silent partition (the master's bridge port disabled).
func TestLabV3Fast(t *testing.T) {
	l := newVRRPLab(t, false)
	var rows []failover
	for _, p := range pairs {
		rows = append(rows, runPair(t, l, p[0], p[1], 3, 100*time.Millisecond, "partition"))
		if t.Failed() {
			break
		}
	}
	logTable(t, "VRRPv3 advert_int 0.1s, multicast, crash = bridge port disabled", rows)
	checkMedians(t, rows, 100*time.Millisecond)
}

// TestLabV3Unicast: VRRPv3 advert_int 0.1 s over unicast_peer.
func TestLabV3Unicast(t *testing.T) {
	l := newVRRPLab(t, false)
	var rows []failover
	for _, p := range [][2]string{{"xvs", "keepalived"}, {"keepalived", "xvs"}} {
		rows = append(rows, runPair(t, l, p[0], p[1], 3, 100*time.Millisecond, "partition", unicast))
		if t.Failed() {
			break
		}
	}
	logTable(t, "VRRPv3 advert_int 0.1s, unicast peers", rows)
	checkMedians(t, rows, 100*time.Millisecond)
}
