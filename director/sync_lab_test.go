package director_test

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xvs-lb/xvs/internal/labserver"
	"github.com/xvs-lb/xvs/internal/netlab"
)

// syncVirtualServer is the service the sync lab tests' directors serve: DR,
// rr over rs1 and rs2.
var syncVirtualServer = fmt.Sprintf(drVirtualServer, "rr", 1)

// syncConf is a director of a VRRP pair that syncs its conn table
// (keepalived's lvs_sync_daemon), a DR service with rr over two real
// servers.
var syncConf = `global_defs {
   router_id %s
   lvs_sync_daemon eth0 VI_1 id 51
}

vrrp_instance VI_1 {
    state %s
    interface eth0
    virtual_router_id 51
    priority %d
    advert_int 1
    virtual_ipaddress {
        198.18.0.100/32
    }
}

` + syncVirtualServer

// TestXVSDSyncFailover: two xvsd directors, VRRP MASTER and BACKUP, with
// lvs_sync_daemon. Long-lived connections opened through the MASTER are
// synced to the BACKUP; the MASTER stops; after the BACKUP takes over every
// connection still works and still reaches the same real server. Without
// sync the new MASTER would drop their segments (no SYN, no conn entry).
func TestXVSDSyncFailover(t *testing.T) {
	topo := syncLab(t)
	client := topo.Client
	dir := t.TempDir()
	d1 := startDirector(t, topo.Dir1, dir, "dir1", fmt.Sprintf(syncConf, "dir1", "MASTER", 150), "-D")
	d2 := startDirector(t, topo.Dir2, dir, "dir2", fmt.Sprintf(syncConf, "dir2", "BACKUP", 100), "-D", "--metrics", "127.0.0.1:9105")
	holdsVIP := func(d *director) bool {
		out, err := d.h.Output("ip", "-4", "addr", "show", "dev", "eth0")
		return err == nil && strings.Contains(out, netlab.VIP.String()+"/32")
	}
	established := regexp.MustCompile(`(?m)^TCP .*ESTABLISHED\s+` + regexp.QuoteMeta(netlab.ClientAddr.String()) + `:\d+\s+` + regexp.QuoteMeta(vipHTTP.String()))
	conns := func(d *director) int {
		out, err := d.h.Output(xvsadmBin, "--control", d.sock, "-Lnc")
		if err != nil {
			return -1
		}
		return len(established.FindAllString(out, -1))
	}

	bothReals := func(d *director) bool {
		out, err := d.h.Output(xvsadmBin, "--control", d.sock, "-Ln")
		return err == nil && strings.Contains(out, "198.18.0.11:80") && strings.Contains(out, "198.18.0.12:80")
	}
	waitFor(t, 30*time.Second, "dir1 to become MASTER and serve the VIP", func() bool {
		if !holdsVIP(d1) || holdsVIP(d2) || !bothReals(d1) || !bothReals(d2) {
			return false
		}
		_, err := labserver.Get(client, vipHTTP, time.Second)
		return err == nil
	}, d1.proc)

	// Long-lived connections through the MASTER; rr puts half on each.
	const n = 6
	kept := make([]*labserver.Conn, n)
	first := make([]string, n)
	perServer := map[string]int{}
	for i := range kept {
		c, err := labserver.Dial(client, vipHTTP, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		if first[i], err = c.Get(5 * time.Second); err != nil {
			t.Fatalf("request on connection %d: %v", i, err)
		}
		kept[i] = c
		perServer[first[i]]++
	}
	if perServer["rs1"] != n/2 || perServer["rs2"] != n/2 {
		t.Fatalf("%d connections went %v, want %d on each real server (rr)", n, perServer, n/2)
	}

	// The BACKUP learns them from the MASTER's sync daemon.
	waitFor(t, 30*time.Second, fmt.Sprintf("dir2 to list the %d established connections", n), func() bool {
		return conns(d2) >= n
	}, d2.proc)

	// The MASTER fails; the BACKUP takes the VIP over.
	d1.proc.Stop()
	// Serving: VIP on dir2 and its dataplane forwarding. The kept
	// connections stay idle meanwhile: a segment that reached dir2 between
	// the VIP's arrival and its dataplane going active would meet dir2's
	// own kernel, which resets it (a director matter, not sync's).
	waitFor(t, 30*time.Second, "dir2 to take the VIP over and serve it", func() bool {
		if !holdsVIP(d2) {
			return false
		}
		_, err := labserver.Get(client, vipHTTP, time.Second)
		return err == nil
	}, d2.proc)

	for i, c := range kept {
		// Generous: segments sent during the takeover are retransmitted
		// by TCP, with backoff.
		got, err := c.Get(20 * time.Second)
		if err != nil {
			t.Errorf("connection %d (on %s) broke after the failover: %v\ndir2 log:\n%s", i, first[i], err, d2.proc.Log())
			continue
		}
		if got != first[i] {
			t.Errorf("connection %d moved from %s to %s", i, first[i], got)
		}
	}
	if got := labserver.Tally(client, vipHTTP, 4, 5*time.Second); got[""] != 0 {
		t.Errorf("new connections through dir2 after the failover: %v", got)
	}

	// dir2's metrics show what its backup role imported.
	body, err := d2.h.Output("curl", "-sf", "--max-time", "5", "http://127.0.0.1:9105/metrics")
	if err != nil {
		t.Fatalf("scrape dir2: %v", err)
	}
	m := map[string]float64{}
	for line := range strings.Lines(body) {
		if f := strings.Fields(line); len(f) == 2 && !strings.HasPrefix(line, "#") {
			m[f[0]], _ = strconv.ParseFloat(f[1], 64)
		}
	}
	if v := m["xvs_sync_imported_conns_total"]; v < n {
		t.Errorf("xvs_sync_imported_conns_total = %v, want at least %d", v, n)
	}
	if v := m[`xvs_sync_errors_total{kind="malformed"}`]; v != 0 {
		t.Errorf("malformed sync messages: %v", v)
	}
	if m[`xvs_sync_role{role="master"}`] != 1 || m[`xvs_sync_role{role="backup"}`] != 0 {
		t.Errorf("dir2 sync roles after the takeover: master %v backup %v, want master only",
			m[`xvs_sync_role{role="master"}`], m[`xvs_sync_role{role="backup"}`])
	}
}

// adminSyncConf is an LVS-only director (no VRRP, no lvs_sync_daemon):
// its sync daemon runs only if xvsadm starts it.
var adminSyncConf = `global_defs {
   router_id %s
   xvs_interface eth0
}

` + syncVirtualServer

// TestXVSDAdminSyncDaemon: two xvsd directors without lvs_sync_daemon;
// xvsadm --start-daemon master on the one holding the VIP and
// --start-daemon backup on the other, as an operator (or a keepalived
// notify script) would with ipvsadm. Connections opened through the
// first appear in the second's -Lnc; -L --daemon lists each role in
// ipvsadm's format; --stop-daemon stops them.
func TestXVSDAdminSyncDaemon(t *testing.T) {
	topo := syncLab(t)
	client := topo.Client
	// dir1 serves the VIP (set by hand, an LVS-only director); dir2 stands by.
	topo.Dir1.Run(t, "ip", "addr", "add", netlab.VIP.String()+"/32", "dev", "eth0")
	dir := t.TempDir()
	admin := func(d *director, args ...string) (string, error) {
		return d.h.Output(xvsadmBin, append([]string{"--control", d.sock}, args...)...)
	}
	d1 := startDirector(t, topo.Dir1, dir, "dir1", fmt.Sprintf(adminSyncConf, "dir1"))
	d2 := startDirector(t, topo.Dir2, dir, "dir2", fmt.Sprintf(adminSyncConf, "dir2"))
	bothReals := func(d *director) bool {
		out, err := admin(d, "-Ln")
		return err == nil && strings.Contains(out, "198.18.0.11:80") && strings.Contains(out, "198.18.0.12:80")
	}
	waitFor(t, 30*time.Second, "dir1 to serve the VIP", func() bool {
		if !bothReals(d1) {
			return false
		}
		_, err := labserver.Get(client, vipHTTP, time.Second)
		return err == nil
	}, d1.proc)
	waitFor(t, 30*time.Second, "dir2 to list both real servers", func() bool { return bothReals(d2) }, d2.proc)

	// Nothing runs until xvsadm starts it.
	for _, d := range []*director{d1, d2} {
		if out, err := admin(d, "-L", "--daemon"); err != nil || out != "" {
			t.Fatalf("-L --daemon before any start: %q, %v", out, err)
		}
	}
	if out, err := admin(d1, "--start-daemon", "master", "--mcast-interface", "eth0", "--syncid", "7"); err != nil || out != "" {
		t.Fatalf("dir1 --start-daemon master: %v %q", err, out)
	}
	if out, err := admin(d2, "--start-daemon", "backup", "--mcast-interface", "eth0", "--syncid", "7"); err != nil || out != "" {
		t.Fatalf("dir2 --start-daemon backup: %v %q", err, out)
	}
	// veth MTU 1500: both roles' maxlen is 1472, as with IPVS.
	wantList := map[*director]string{
		d1: "master sync daemon (mcast=eth0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n",
		d2: "backup sync daemon (mcast=eth0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n",
	}
	for d, want := range wantList {
		if out, err := admin(d, "-Ln", "--daemon"); err != nil || out != want {
			t.Errorf("-Ln --daemon on %s: %v\n got %q\nwant %q", d.h.Base, err, out, want)
		}
	}
	// A second start, and an unknown interface, are refused with IPVS's
	// messages and change nothing.
	if out, err := admin(d1, "--start-daemon", "master", "--mcast-interface", "eth0"); err == nil || out != "Daemon has already run\n" {
		t.Errorf("second --start-daemon master: %v %q", err, out)
	}
	if out, err := admin(d2, "--start-daemon", "master", "--mcast-interface", "eth7"); err == nil || out != "No such device\n" {
		t.Errorf("--start-daemon on a missing interface: %v %q", err, out)
	}
	if out, _ := admin(d2, "-L", "--daemon"); out != wantList[d2] {
		t.Errorf("dir2 after refused starts: %q", out)
	}

	established := regexp.MustCompile(`(?m)^TCP .*ESTABLISHED\s+` + regexp.QuoteMeta(netlab.ClientAddr.String()) + `:(\d+)\s+` +
		regexp.QuoteMeta(vipHTTP.String()) + `\s+(\S+)`)
	// Long-lived connections through dir1.
	const n = 4
	for i := range n {
		c, err := labserver.Dial(client, vipHTTP, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Get(5 * time.Second); err != nil {
			t.Fatalf("request on connection %d: %v", i, err)
		}
	}
	table := func(d *director) map[string]string {
		out, err := admin(d, "-Lnc")
		if err != nil {
			return nil
		}
		m := map[string]string{}
		for _, f := range established.FindAllStringSubmatch(out, -1) {
			m[f[1]] = f[2]
		}
		return m
	}
	on1 := table(d1)
	if len(on1) < n {
		t.Fatalf("dir1 lists %d established connections, want %d: %v", len(on1), n, on1)
	}
	waitFor(t, 30*time.Second, fmt.Sprintf("dir2 to list dir1's %d connections", n), func() bool {
		on2 := table(d2)
		for port, dest := range on1 {
			if on2[port] != dest {
				return false
			}
		}
		return true
	}, d2.proc)

	// Stopping: each role once; a second stop says none runs.
	if out, err := admin(d2, "--stop-daemon", "backup"); err != nil || out != "" {
		t.Errorf("dir2 --stop-daemon backup: %v %q", err, out)
	}
	if out, err := admin(d2, "--stop-daemon", "backup"); err == nil || out != "No daemon is running\n" {
		t.Errorf("dir2 second --stop-daemon backup: %v %q", err, out)
	}
	if out, err := admin(d1, "--stop-daemon", "master"); err != nil || out != "" {
		t.Errorf("dir1 --stop-daemon master: %v %q", err, out)
	}
	for _, d := range []*director{d1, d2} {
		if out, err := admin(d, "-L", "--daemon"); err != nil || out != "" {
			t.Errorf("-L --daemon on %s after the stops: %q, %v", d.h.Base, out, err)
		}
	}
}

// syncLab is netlab's standard topology with rs1 and rs2 set up as DR real
// servers of the VIP, each running an HTTP server that names itself.
func syncLab(t *testing.T) *netlab.Topology {
	topo := netlab.Standard(t)
	for name, h := range map[string]*netlab.Host{"rs1": topo.RS1, "rs2": topo.RS2} {
		netlab.RealServerDR(t, h, netlab.VIP)
		labserver.Start(t, h, name, 80, netip.AddrPort{})
	}
	return topo
}

// director is an xvsd under test and its control socket.
type director struct {
	h    *netlab.Host
	proc *netlab.Proc
	sock string
}

// startDirector runs xvsd on h with config text conf (written into dir) and
// a control socket there, plus extra flags.
func startDirector(t *testing.T, h *netlab.Host, dir, name, conf string, extra ...string) *director {
	path := filepath.Join(dir, name+".conf")
	writeConf(t, path, conf)
	sock := filepath.Join(dir, name+".sock")
	args := append([]string{"-n", "-l", "-f", path, "--control", sock}, extra...)
	return &director{h: h, proc: h.Start(t, xvsdBin, args...), sock: sock}
}
