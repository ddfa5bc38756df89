package vrrp

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

const (
	addrA = "198.18.0.2"
	addrB = "198.18.0.3"
)

func vip(s string) VIP { return VIP{Prefix: netip.MustParsePrefix(s)} }

func oneInstance(prio uint8, mod ...func(*Instance)) Config {
	in := Instance{
		Name: "VI_1", Interface: "eth0", VirtualRouterID: 51, Priority: prio,
		AdvertInt: time.Second, AuthType: AuthPass, AuthPass: "secret12345",
		VirtualIPAddresses: []VIP{vip("198.18.0.100/32")},
	}
	for _, m := range mod {
		m(&in)
	}
	return Config{Instances: []Instance{in}}
}

// skewOf and mdi restate RFC 5798 §6.1 independently of the code under test.
func skewOf(prio int, adv time.Duration) time.Duration {
	return time.Duration(256-prio) * adv / 256
}
func mdi(prio int, adv time.Duration) time.Duration { return 3*adv + skewOf(prio, adv) }

func TestSkewAndMasterDownInterval(t *testing.T) {
	tests := []struct {
		prio     uint8
		adv      time.Duration
		wantSkew time.Duration
		wantMDI  time.Duration
	}{
		{100, time.Second, 609375 * time.Microsecond, 3609375 * time.Microsecond},
		{200, time.Second, 218750 * time.Microsecond, 3218750 * time.Microsecond},
		{254, time.Second, 7812500 * time.Nanosecond, 3007812500 * time.Nanosecond},
		{100, 100 * time.Millisecond, 60937500 * time.Nanosecond, 360937500 * time.Nanosecond},
		{1, 100 * time.Millisecond, 99609375 * time.Nanosecond, 399609375 * time.Nanosecond},
	}
	for _, tt := range tests {
		in := &instance{prio: tt.prio, masterAdverInt: tt.adv}
		if got := in.skew(); got != tt.wantSkew {
			t.Errorf("skew(prio %d, %v) = %v, want %v", tt.prio, tt.adv, got, tt.wantSkew)
		}
		if got := in.masterDown(); got != tt.wantMDI {
			t.Errorf("masterDown(prio %d, %v) = %v, want %v", tt.prio, tt.adv, got, tt.wantMDI)
		}
	}
}

func TestElectionHigherPriorityWins(t *testing.T) {
	w := newWorld(t)
	a := w.add("A", oneInstance(200), map[string]string{"eth0": addrA})
	b := w.add("B", oneInstance(100), map[string]string{"eth0": addrB})
	w.boot(a)
	w.boot(b)
	w.run(5 * time.Second)
	if a.garps != 5 {
		t.Errorf("A sent %d gratuitous ARPs in the first round, want 5 (garp_master_repeat)", a.garps)
	}
	w.run(5 * time.Second)
	if a.garps != 10 {
		t.Errorf("A sent %d gratuitous ARPs after garp_master_delay, want 10", a.garps)
	}
	if got := w.masters("VI_1"); !slices.Equal(got, []string{"A"}) {
		t.Fatalf("masters = %v, want [A]", got)
	}
	if at, _ := w.lastTransition("A", "VI_1", StateMaster); at != mdi(200, time.Second) {
		t.Errorf("A became MASTER at %v, want Master_Down_Interval %v", at, mdi(200, time.Second))
	}
	if b.state("VI_1") != StateBackup {
		t.Errorf("B state = %v, want BACKUP", b.state("VI_1"))
	}
	if !a.vips["eth0 198.18.0.100/32"] || len(b.vips) != 0 {
		t.Errorf("VIPs: A %v, B %v; want only A to hold 198.18.0.100/32", a.vips, b.vips)
	}
	for _, e := range w.log {
		if e.host == "B" && e.state == StateMaster {
			t.Errorf("B became MASTER at %v", e.at)
		}
	}
}

func TestCrashTakeoverAfterMasterDownInterval(t *testing.T) {
	w := newWorld(t)
	a := w.add("A", oneInstance(200), map[string]string{"eth0": addrA})
	b := w.add("B", oneInstance(100), map[string]string{"eth0": addrB})
	w.boot(a)
	w.boot(b)
	w.run(5 * time.Second) // A master since 3.21875s, adverts at 4.21875 …
	lastAdvert := mdi(200, time.Second) + time.Second
	w.crash(a)
	w.run(10 * time.Second)
	at, ok := w.lastTransition("B", "VI_1", StateMaster)
	if !ok {
		t.Fatal("B never became MASTER after A crashed")
	}
	if want := lastAdvert + mdi(100, time.Second); at != want {
		t.Errorf("B took over at %v, want last advert %v + Master_Down_Interval = %v", at, lastAdvert, want)
	}
}

func TestGracefulStopTakeoverAfterSkew(t *testing.T) {
	for _, v := range []int{2, 3} {
		w := newWorld(t)
		adv := time.Second
		if v == 3 {
			adv = 100 * time.Millisecond
		}
		mod := func(in *Instance) {
			in.Version = v
			in.AdvertInt = adv
			if v == 3 {
				in.AuthType, in.AuthPass = AuthNone, ""
			}
		}
		a := w.add("A", oneInstance(200, mod), map[string]string{"eth0": addrA})
		b := w.add("B", oneInstance(100, mod), map[string]string{"eth0": addrB})
		w.boot(a)
		w.boot(b)
		w.run(5 * time.Second)
		stopAt := w.now()
		w.stop(a)
		w.run(5 * time.Second)
		at, ok := w.lastTransition("B", "VI_1", StateMaster)
		if !ok {
			t.Fatalf("v%d: B never became MASTER after A stopped", v)
		}
		if want := stopAt + skewOf(100, adv); at != want {
			t.Errorf("v%d: B took over at %v, want stop %v + Skew_Time = %v", v, at, stopAt, want)
		}
		if st := a.sp.Stats().Instances["VI_1"]; st.PriorityZeroTx != 1 {
			t.Errorf("v%d: A sent %d priority-0 adverts, want 1", v, st.PriorityZeroTx)
		}
		if len(a.vips) != 0 {
			t.Errorf("v%d: A kept VIPs after stop: %v", v, a.vips)
		}
	}
}

func TestPreemption(t *testing.T) {
	tests := []struct {
		name       string
		mod        func(*Instance)
		wantMaster string
		notBefore  time.Duration // A must not be MASTER before this (since A booted)
	}{
		{"preempt", func(*Instance) {}, "A", 0},
		{"nopreempt", func(in *Instance) { in.NoPreempt = true }, "B", 0},
		{"preempt_delay", func(in *Instance) { in.PreemptDelay = 10 * time.Second }, "A", 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			b := w.add("B", oneInstance(100), map[string]string{"eth0": addrB})
			a := w.add("A", oneInstance(200, tt.mod), map[string]string{"eth0": addrA})
			w.boot(b)
			w.run(5 * time.Second)
			if got := w.masters("VI_1"); !slices.Equal(got, []string{"B"}) {
				t.Fatalf("masters before A returns = %v, want [B]", got)
			}
			aBoot := w.now()
			w.boot(a)
			w.run(20 * time.Second)
			if got := w.masters("VI_1"); !slices.Equal(got, []string{tt.wantMaster}) {
				t.Fatalf("masters = %v, want [%s]", got, tt.wantMaster)
			}
			if tt.wantMaster == "A" {
				at, _ := w.lastTransition("A", "VI_1", StateMaster)
				if at-aBoot < tt.notBefore {
					t.Errorf("A preempted %v after boot, want at least %v", at-aBoot, tt.notBefore)
				}
				if b.state("VI_1") != StateBackup {
					t.Errorf("B = %v after A preempted, want BACKUP", b.state("VI_1"))
				}
			}
		})
	}
}

func TestTieBreakByPrimaryAddress(t *testing.T) {
	w := newWorld(t)
	a := w.add("A", oneInstance(100), map[string]string{"eth0": addrA})
	b := w.add("B", oneInstance(100), map[string]string{"eth0": addrB})
	w.boot(a)
	w.boot(b)
	w.run(10 * time.Second)
	// Both time out together; the higher primary address keeps MASTER.
	if got := w.masters("VI_1"); !slices.Equal(got, []string{"B"}) {
		t.Fatalf("masters = %v, want [B] (198.18.0.3 > 198.18.0.2)", got)
	}
}

func TestOwnerAndStateMasterStart(t *testing.T) {
	w := newWorld(t)
	o := w.add("O", oneInstance(255), map[string]string{"eth0": addrA})
	w.boot(o)
	if o.state("VI_1") != StateMaster {
		t.Errorf("owner (priority 255) starts as %v, want MASTER at once", o.state("VI_1"))
	}
	w2 := newWorld(t)
	m := w2.add("M", oneInstance(150, func(in *Instance) { in.State = StateMaster }), map[string]string{"eth0": addrA})
	w2.boot(m)
	w2.run(5 * time.Second)
	at, _ := w2.lastTransition("M", "VI_1", StateMaster)
	if want := time.Second + skewOf(150, time.Second); at != want {
		t.Errorf("state MASTER took over at %v, want advert_int + skew = %v", at, want)
	}
}

func TestV3BackupLearnsMasterInterval(t *testing.T) {
	w := newWorld(t)
	v3 := func(adv time.Duration) func(*Instance) {
		return func(in *Instance) { in.Version, in.AdvertInt, in.AuthType, in.AuthPass = 3, adv, AuthNone, "" }
	}
	a := w.add("A", oneInstance(200, v3(100*time.Millisecond)), map[string]string{"eth0": addrA})
	b := w.add("B", oneInstance(100, v3(time.Second)), map[string]string{"eth0": addrB})
	w.boot(a)
	w.boot(b)
	w.run(2 * time.Second)
	if got := w.masters("VI_1"); !slices.Equal(got, []string{"A"}) {
		t.Fatalf("masters = %v, want [A]", got)
	}
	crashAt := w.now()
	w.crash(a)
	w.run(10 * time.Second)
	at, _ := w.lastTransition("B", "VI_1", StateMaster)
	// A's last advert is at most 100ms before the crash.
	want := mdi(100, 100*time.Millisecond)
	if got := at - crashAt; got > want || got < want-100*time.Millisecond {
		t.Errorf("B took over %v after the crash, want within (%v, %v] using the learned 100ms interval",
			got, want-100*time.Millisecond, want)
	}
}

func TestScriptWeightMovesMaster(t *testing.T) {
	chk := Script{Name: "chk_nginx", Script: "true", Interval: time.Second, Weight: -10, Fall: 2, Rise: 2}
	cfg := func(prio uint8) Config {
		c := oneInstance(prio, func(in *Instance) { in.TrackScripts = []TrackScript{{Name: "chk_nginx"}} })
		c.Scripts = []Script{chk}
		return c
	}
	w := newWorld(t)
	a := w.add("A", cfg(101), map[string]string{"eth0": addrA})
	b := w.add("B", cfg(100), map[string]string{"eth0": addrB})
	w.boot(a)
	w.boot(b)
	w.run(5 * time.Second)
	if got := w.masters("VI_1"); !slices.Equal(got, []string{"A"}) {
		t.Fatalf("masters = %v, want [A]", got)
	}
	script := func(h *fakeHost, ok bool) { h.sp.handle(event{script: "chk_nginx", ok: ok}); w.deliver() }
	script(a, true) // first result: healthy
	script(a, false)
	if got := a.sp.Stats().Instances["VI_1"].Priority; got != 101 {
		t.Errorf("after one failure (fall 2) priority = %d, want 101", got)
	}
	script(a, false)
	if got := a.sp.Stats().Instances["VI_1"].Priority; got != 91 {
		t.Errorf("after two failures priority = %d, want 91", got)
	}
	w.run(10 * time.Second)
	if got := w.masters("VI_1"); !slices.Equal(got, []string{"B"}) {
		t.Fatalf("masters after script failed = %v, want [B]", got)
	}
	script(a, true)
	script(a, true)
	w.run(10 * time.Second)
	if got := w.masters("VI_1"); !slices.Equal(got, []string{"A"}) {
		t.Fatalf("masters after script recovered = %v, want [A]", got)
	}
}

func TestScriptWithoutWeightFaults(t *testing.T) {
	c := oneInstance(200, func(in *Instance) { in.TrackScripts = []TrackScript{{Name: "chk"}} })
	c.Scripts = []Script{{Name: "chk", Script: "true"}}
	w := newWorld(t)
	a := w.add("A", c, map[string]string{"eth0": addrA})
	b := w.add("B", oneInstance(100), map[string]string{"eth0": addrB})
	w.boot(a)
	w.boot(b)
	w.run(5 * time.Second)
	a.sp.handle(event{script: "chk", ok: false})
	w.deliver()
	if a.state("VI_1") != StateFault {
		t.Fatalf("A = %v after a weightless script failed, want FAULT", a.state("VI_1"))
	}
	faultAt := w.now()
	w.run(5 * time.Second)
	at, _ := w.lastTransition("B", "VI_1", StateMaster)
	if want := faultAt + skewOf(100, time.Second); at != want {
		t.Errorf("B took over at %v, want %v (FAULT sends priority 0)", at, want)
	}
	a.sp.handle(event{script: "chk", ok: true})
	w.run(10 * time.Second)
	if got := w.masters("VI_1"); !slices.Equal(got, []string{"A"}) {
		t.Errorf("masters after recovery = %v, want [A]", got)
	}
}

func syncConfig(prio uint8) Config {
	mk := func(name, ifn string, vrid uint8, v string) Instance {
		return Instance{Name: name, Interface: ifn, VirtualRouterID: vrid, Priority: prio, AdvertInt: time.Second,
			VirtualIPAddresses: []VIP{vip(v)}}
	}
	return Config{
		Instances:  []Instance{mk("VI_1", "eth0", 1, "198.18.0.100/32"), mk("VI_2", "eth1", 2, "198.19.0.100/32")},
		SyncGroups: []SyncGroup{{Name: "G", Group: []string{"VI_1", "VI_2"}}},
	}
}

func TestSyncGroupMovesTogether(t *testing.T) {
	w := newWorld(t)
	a := w.add("A", syncConfig(200), map[string]string{"eth0": addrA, "eth1": "198.19.0.2"})
	b := w.add("B", syncConfig(100), map[string]string{"eth0": addrB, "eth1": "198.19.0.3"})
	w.boot(a)
	w.boot(b)
	w.run(5 * time.Second)
	for _, inst := range []string{"VI_1", "VI_2"} {
		if got := w.masters(inst); !slices.Equal(got, []string{"A"}) {
			t.Fatalf("%s masters = %v, want [A]", inst, got)
		}
	}
	a.links["eth1"] = false
	w.run(time.Second)
	if a.state("VI_1") != StateFault || a.state("VI_2") != StateFault {
		t.Fatalf("A = %v/%v after eth1 went down, want FAULT/FAULT", a.state("VI_1"), a.state("VI_2"))
	}
	w.run(5 * time.Second)
	for _, inst := range []string{"VI_1", "VI_2"} {
		if got := w.masters(inst); !slices.Equal(got, []string{"B"}) {
			t.Errorf("%s masters after A's eth1 failed = %v, want [B]", inst, got)
		}
	}
	a.links["eth1"] = true
	w.run(10 * time.Second)
	for _, inst := range []string{"VI_1", "VI_2"} {
		if got := w.masters(inst); !slices.Equal(got, []string{"A"}) {
			t.Errorf("%s masters after A recovered = %v, want [A]", inst, got)
		}
	}
}

func TestSyncGroupForcesPeerMember(t *testing.T) {
	// Only VI_1's peer is reachable: when B's VI_1 wins, B's VI_2 follows
	// even though it still hears A's VI_2.
	w := newWorld(t)
	a := w.add("A", syncConfig(200), map[string]string{"eth0": addrA, "eth1": "198.19.0.2"})
	b := w.add("B", syncConfig(100), map[string]string{"eth0": addrB, "eth1": "198.19.0.3"})
	w.boot(a)
	w.boot(b)
	w.run(5 * time.Second)
	w.stop(a)
	w.run(2 * time.Second)
	if b.state("VI_1") != StateMaster || b.state("VI_2") != StateMaster {
		t.Fatalf("B = %v/%v, want MASTER/MASTER", b.state("VI_1"), b.state("VI_2"))
	}
	var groupMaster int
	for _, e := range w.log {
		if e.host == "B" && e.state == StateMaster {
			groupMaster++
		}
	}
	if groupMaster != 2 {
		t.Errorf("B's members entered MASTER %d times, want 2", groupMaster)
	}
}

func TestTrackInterfaceWeight(t *testing.T) {
	c := oneInstance(150, func(in *Instance) {
		in.TrackInterfaces = []TrackInterface{{Name: "eth9", Weight: -60}, {Name: "eth8"}}
	})
	w := newWorld(t)
	a := w.add("A", c, map[string]string{"eth0": addrA, "eth9": "198.18.9.1", "eth8": "198.18.8.1"})
	w.boot(a)
	a.links["eth9"] = false
	w.run(time.Second)
	if got := a.sp.Stats().Instances["VI_1"].Priority; got != 90 {
		t.Errorf("priority with eth9 down = %d, want 90", got)
	}
	a.links["eth8"] = false
	w.run(time.Second)
	if a.state("VI_1") != StateFault {
		t.Errorf("state with weightless eth8 down = %v, want FAULT", a.state("VI_1"))
	}
}

// TestDualMaster is the tutorials' active-active setup: two instances with
// crossed priorities, each director master of one.
func TestDualMaster(t *testing.T) {
	cfg := func(p1, p2 uint8) Config {
		c := oneInstance(p1)
		in2 := c.Instances[0]
		in2.Name, in2.VirtualRouterID, in2.Priority = "VI_2", 52, p2
		in2.VirtualIPAddresses = []VIP{vip("198.18.0.101/32")}
		c.Instances = append(c.Instances, in2)
		return c
	}
	w := newWorld(t)
	a := w.add("A", cfg(150, 100), map[string]string{"eth0": addrA})
	b := w.add("B", cfg(100, 150), map[string]string{"eth0": addrB})
	w.boot(a)
	w.boot(b)
	w.run(10 * time.Second)
	if got := w.masters("VI_1"); !slices.Equal(got, []string{"A"}) {
		t.Errorf("VI_1 masters = %v, want [A]", got)
	}
	if got := w.masters("VI_2"); !slices.Equal(got, []string{"B"}) {
		t.Errorf("VI_2 masters = %v, want [B]", got)
	}
	w.crash(b)
	w.run(10 * time.Second)
	if got := w.masters("VI_2"); !slices.Equal(got, []string{"A"}) {
		t.Errorf("VI_2 masters after B crashed = %v, want [A]", got)
	}
	if !a.vips["eth0 198.18.0.100/32"] || !a.vips["eth0 198.18.0.101/32"] {
		t.Errorf("A's VIPs = %v, want both", a.vips)
	}
}

func TestGarpRefresh(t *testing.T) {
	c := oneInstance(255, func(in *Instance) { in.GarpMasterRefresh = 2 * time.Second })
	c.Globals.GarpMasterDelay = -1 // no second round
	c.Globals.GarpMasterRepeat = 2
	c.Globals.GarpMasterRefreshRepeat = 3
	w := newWorld(t)
	a := w.add("A", c, map[string]string{"eth0": addrA})
	w.boot(a)
	if a.garps != 2 {
		t.Fatalf("gratuitous ARPs on becoming MASTER = %d, want 2", a.garps)
	}
	w.run(5 * time.Second) // refreshes at 2s and 4s, 3 each
	if a.garps != 2+2*3 {
		t.Errorf("gratuitous ARPs after 5s = %d, want %d", a.garps, 2+2*3)
	}
}
