package vrrp

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestLabInterfaceAppears: an xvs instance (with use_vmac) whose interface
// does not exist yet starts in FAULT instead of failing, becomes MASTER
// when the interface appears, goes back to FAULT when it is deleted, and
// recovers, vmac included, when it is created again. The link poll is
// slowed to 10s, so only the netlink subscription can see the changes
// within the 5s waited.
func TestLabInterfaceAppears(t *testing.T) {
	l := newVRRPLab(t, false)
	h := l.dirs[0]
	cfg := labConfig(3, 100*time.Millisecond, 150, true, 0, func(in *Instance) {
		in.Interface, in.UseVMAC = "xeth0", true
		in.VirtualIPAddresses = []VIP{{Prefix: netip.PrefixFrom(labVIP2, 32), Dev: "xeth0"}}
	})
	x := l.start("xvs", 0, cfg, "VRRP_HELPER_LINK_POLL=10s")
	state := func() State { return x.readStats(t).Instances["VI_1"].State }
	waitState := func(want State, what string) time.Duration {
		t.Helper()
		t0 := time.Now()
		for deadline := t0.Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			select {
			case <-x.proc.Done():
				t.Fatalf("%s: the speaker exited: %v", what, x.proc.Err())
			default:
			}
			if st, err := readStatsFile(x.stats); err == nil && st.Instances["VI_1"].State == want {
				return time.Since(t0)
			}
		}
		t.Fatalf("%s: state %v after 5s, want %v", what, state(), want)
		return 0
	}
	holdsVIP := func() bool {
		out, _ := h.Output("ip", "-4", "-o", "addr", "show", "dev", "vrrp.51")
		return strings.Contains(out, labVIP2.String()+"/32")
	}
	create := func() {
		h.Run(t, "ip", "link", "add", "xeth0", "type", "veth", "peer", "name", "xpeer0")
		h.Run(t, "ip", "addr", "add", "198.19.0.2/24", "dev", "xeth0")
		h.Run(t, "ip", "link", "set", "xpeer0", "up")
		h.Run(t, "ip", "link", "set", "xeth0", "up")
	}

	waitState(StateFault, "interface missing at start")
	time.Sleep(300 * time.Millisecond)
	if st := state(); st != StateFault || holdsVIP() {
		t.Fatalf("with xeth0 missing: state %v, VIP held %v; want FAULT and no VIP", st, holdsVIP())
	}
	create()
	d := waitState(StateMaster, "xeth0 created")
	if !holdsVIP() {
		t.Errorf("MASTER without the VIP on vrrp.51")
	}
	t.Logf("xeth0 created → MASTER in %v (out of FAULT it waits Master_Down_Interval, 360ms)", d.Round(time.Millisecond))

	h.Run(t, "ip", "link", "del", "xeth0")
	d = waitState(StateFault, "xeth0 deleted")
	t.Logf("xeth0 deleted → FAULT in %v", d.Round(time.Millisecond))

	create()
	d = waitState(StateMaster, "xeth0 created again")
	if !holdsVIP() {
		t.Errorf("MASTER again without the VIP on a recreated vrrp.51")
	}
	t.Logf("xeth0 created again → MASTER in %v", d.Round(time.Millisecond))
	x.stop(t)
	if out, err := h.Output("ip", "link", "show", "vrrp.51"); err == nil {
		t.Errorf("vrrp.51 left after stop: %s", out)
	}
	for _, line := range strings.Split(x.proc.Log(), "\n") {
		if strings.Contains(line, "level=ERROR") {
			t.Errorf("xvs logged: %s", line)
		}
	}
}
