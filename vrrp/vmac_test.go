package vrrp

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestVMACAddr(t *testing.T) {
	tests := []struct {
		vrid uint8
		v6   bool
		want string
	}{
		{51, false, "00:00:5e:00:01:33"},
		{1, false, "00:00:5e:00:01:01"},
		{255, true, "00:00:5e:00:02:ff"},
	}
	for _, tt := range tests {
		if got := vmacAddr(tt.vrid, tt.v6).String(); got != tt.want {
			t.Errorf("vmacAddr(%d, v6=%v) = %s, want %s", tt.vrid, tt.v6, got, tt.want)
		}
	}
}

func withVMAC(in *Instance) { in.UseVMAC = true }

// TestVMACElectionAndStop: with use_vmac both routers create vrrp.51, the
// master holds the VIP on it, adverts still reach the peer (the backup
// stays BACKUP), and a graceful stop removes the vmac.
func TestVMACElectionAndStop(t *testing.T) {
	w := newWorld(t)
	a := w.add("A", oneInstance(200, withVMAC), map[string]string{"eth0": addrA})
	b := w.add("B", oneInstance(100, withVMAC), map[string]string{"eth0": addrB})
	w.boot(a)
	w.boot(b)
	w.run(10 * time.Second)
	for _, h := range []*fakeHost{a, b} {
		v, ok := h.vmacs["vrrp.51"]
		if !ok {
			t.Fatalf("%s: no vmac vrrp.51 (ops %v)", h.name, h.vmacOps)
		}
		if want := (net.HardwareAddr{0, 0, 0x5e, 0, 1, 51}); v.Base != "eth0" || v.V6 || v.MAC.String() != want.String() {
			t.Errorf("%s: vmac = %+v, want base eth0, MAC %v", h.name, v, want)
		}
	}
	if got := w.masters("VI_1"); !slices.Equal(got, []string{"A"}) {
		t.Fatalf("masters = %v, want [A]", got)
	}
	if !a.vips["vrrp.51 198.18.0.100/32"] || len(a.vips) != 1 || len(b.vips) != 0 {
		t.Errorf("VIPs: A %v, B %v; want only A to hold it, on vrrp.51", a.vips, b.vips)
	}
	if st := b.sp.Stats().Instances["VI_1"]; st.AdvertsRecv < 5 {
		t.Errorf("B accepted %d adverts, want the master's", st.AdvertsRecv)
	}
	w.stop(a)
	if got, want := a.vmacOps, []string{"setup vrrp.51", "remove vrrp.51"}; !slices.Equal(got, want) {
		t.Errorf("A vmac operations = %v, want %v", got, want)
	}
	w.run(2 * time.Second)
	if got := w.masters("VI_1"); !slices.Equal(got, []string{"B"}) {
		t.Fatalf("after A stopped: masters = %v, want [B]", got)
	}
	if !b.vips["vrrp.51 198.18.0.100/32"] {
		t.Errorf("B VIPs = %v, want 198.18.0.100/32 on vrrp.51", b.vips)
	}
}

// TestVMACConnRoles: which conn adverts leave by and arrive on.
func TestVMACConnRoles(t *testing.T) {
	tests := []struct {
		name           string
		mod            func(*Instance)
		wantTx, wantRx string
	}{
		{"no vmac", func(*Instance) {}, "eth0", "eth0"},
		{"vmac", withVMAC, "vrrp.51", "vrrp.51"},
		{"vmac_xmit_base", func(in *Instance) { in.UseVMAC, in.VMACXmitBase = true, true }, "eth0", "vrrp.51"},
		{"vmac named, unicast", func(in *Instance) {
			in.UseVMAC, in.VMACName = true, "vip51"
			in.UnicastSrcIP, in.UnicastPeers = labDirAddr[0], labDirAddr[1:]
		}, "eth0", "eth0"},
	}
	for _, tt := range tests {
		w := newWorld(t)
		h := w.add("A", oneInstance(100, tt.mod), map[string]string{"eth0": addrA})
		w.boot(h)
		in := h.sp.insts[0]
		if in.txc == nil || in.rxc == nil {
			t.Errorf("%s: not attached", tt.name)
			continue
		}
		if in.txc.key.ifname != tt.wantTx || in.rxc.key.ifname != tt.wantRx {
			t.Errorf("%s: tx %s rx %s, want tx %s rx %s", tt.name, in.txc.key.ifname, in.rxc.key.ifname, tt.wantTx, tt.wantRx)
		}
	}
}

// TestMissingInterface: an instance whose interface is missing at start
// waits in FAULT (Run does not fail), comes up when the interface appears,
// and goes back to FAULT, releasing its sockets, when it disappears.
func TestMissingInterface(t *testing.T) {
	w := newWorld(t)
	h := w.add("A", oneInstance(200, withVMAC), map[string]string{"eth0": addrA})
	delete(h.links, "eth0")
	w.boot(h)
	if st := h.state("VI_1"); st != StateFault {
		t.Fatalf("state with eth0 missing = %v, want FAULT", st)
	}
	if len(h.sp.conns) != 0 || len(h.vmacs) != 0 {
		t.Errorf("with eth0 missing: %d conns, vmacs %v; want none", len(h.sp.conns), h.vmacs)
	}
	w.run(time.Second)
	h.links["eth0"] = true
	w.run(150 * time.Millisecond) // one link poll
	if st := h.state("VI_1"); st != StateBackup {
		t.Fatalf("state after eth0 appeared = %v, want BACKUP", st)
	}
	w.run(5 * time.Second)
	if st := h.state("VI_1"); st != StateMaster || !h.vips["vrrp.51 198.18.0.100/32"] {
		t.Fatalf("state = %v, VIPs %v; want MASTER holding the VIP on vrrp.51", st, h.vips)
	}
	delete(h.links, "eth0")
	w.run(150 * time.Millisecond)
	if st := h.state("VI_1"); st != StateFault {
		t.Fatalf("state after eth0 vanished = %v, want FAULT", st)
	}
	if len(h.sp.conns) != 0 || len(h.vips) != 0 {
		t.Errorf("after eth0 vanished: %d conns, VIPs %v; want none", len(h.sp.conns), h.vips)
	}
	if got, want := h.vmacOps, []string{"setup vrrp.51", "remove vrrp.51"}; !slices.Equal(got, want) {
		t.Errorf("vmac operations = %v, want %v", got, want)
	}
	h.links["eth0"] = true
	w.run(5 * time.Second)
	if st := h.state("VI_1"); st != StateMaster {
		t.Errorf("state after eth0 came back = %v, want MASTER", st)
	}
}

// TestMissingAddress: an interface without an address yet also means
// FAULT until one appears (keepalived: "no IPv4 address for interface").
func TestMissingAddress(t *testing.T) {
	w := newWorld(t)
	h := w.add("A", oneInstance(100), map[string]string{"eth0": addrA})
	delete(h.addrs, "eth0")
	w.boot(h)
	w.run(time.Second)
	if st := h.state("VI_1"); st != StateFault {
		t.Fatalf("state without an address = %v, want FAULT", st)
	}
	h.addrs["eth0"] = netip.MustParseAddr(addrA)
	w.run(5 * time.Second)
	if st := h.state("VI_1"); st != StateMaster {
		t.Errorf("state after the address appeared = %v, want MASTER", st)
	}
}
