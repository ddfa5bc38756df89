package director

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/xvs-lb/xvs/config"
	"github.com/xvs-lb/xvs/connsync"
	"github.com/xvs-lb/xvs/control"
	"github.com/xvs-lb/xvs/vrrp"
)

type emptyTable struct{}

func (emptyTable) Walk(func(*connsync.Conn) bool) {}

type dropImporter struct{}

func (dropImporter) Import(*connsync.Conn) error { return nil }

// syncTestDirector is a Director with no dataplane whose sync roles read
// an empty table, with lvs_sync_daemon on lo when cfg is set. Its roles
// open real sockets on lo (no packets need to flow).
func syncTestDirector(t *testing.T) *Director {
	t.Helper()
	d := &Director{log: slog.New(slog.DiscardHandler), cfg: &config.Config{}, vrrpStates: map[string]vrrp.State{}}
	d.sync.table, d.sync.importer = emptyTable{}, dropImporter{}
	t.Cleanup(d.stopSync)
	return d
}

// listed is -L --daemon as role:interface:syncid:config, for compact
// comparisons.
func listed(t *testing.T, d *Director) []string {
	t.Helper()
	ds, err := d.Daemons(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range ds {
		by := "admin"
		if s.FromConfig {
			by = "config"
		}
		out = append(out, s.Role.String()+":"+s.Interface+":"+string(rune('0'+s.SyncID))+":"+by)
	}
	return out
}

// TestSyncDaemonAdmin: xvsadm --start-daemon, --stop-daemon and -L
// --daemon against the director: IPVS's defaults and errors, and a
// refused command changes nothing.
func TestSyncDaemonAdmin(t *testing.T) {
	ctx := context.Background()
	d := syncTestDirector(t)
	master := control.SyncDaemon{Role: control.SyncMaster, Interface: "lo", SyncID: 1}
	if err := d.StartDaemon(ctx, master); err != nil {
		t.Fatalf("start master: %v", err)
	}
	backup := control.SyncDaemon{Role: control.SyncBackup, Interface: "lo", SyncID: 2, Port: 18848}
	if err := d.StartDaemon(ctx, backup); err != nil {
		t.Fatalf("start backup: %v", err)
	}
	ds, err := d.Daemons(ctx)
	if err != nil {
		t.Fatal(err)
	}
	group := netip.MustParseAddr("224.0.0.81")
	want := []control.SyncDaemon{
		{Role: control.SyncMaster, Interface: "lo", SyncID: 1, MaxLen: 1472, Group: group, Port: 8848, TTL: 1},
		// A backup's default maxlen follows the interface's MTU (lo: 65536, held to 65535).
		{Role: control.SyncBackup, Interface: "lo", SyncID: 2, MaxLen: 65535 - 28, Group: group, Port: 18848, TTL: 1},
	}
	if !slices.Equal(ds, want) {
		t.Fatalf("Daemons = %+v\nwant %+v", ds, want)
	}

	bad := []struct {
		name string
		sd   control.SyncDaemon
		want error
	}{
		{"master again", control.SyncDaemon{Role: control.SyncMaster, Interface: "lo"}, control.ErrDaemonRunning},
		{"backup again", control.SyncDaemon{Role: control.SyncBackup, Interface: "lo", SyncID: 9}, control.ErrDaemonRunning},
		// The interface is checked before the slot, as in the kernel.
		{"unknown interface", control.SyncDaemon{Role: control.SyncMaster, Interface: "xvs-nosuch0"}, control.ErrNoDevice},
		{"interface name too long", control.SyncDaemon{Role: control.SyncMaster, Interface: "a-very-long-interface-name"}, control.ErrNoDevice},
		{"no interface", control.SyncDaemon{Role: control.SyncMaster}, control.ErrInvalid},
		{"no role", control.SyncDaemon{Interface: "lo"}, control.ErrInvalid},
		{"unicast group", control.SyncDaemon{Role: control.SyncMaster, Interface: "lo", Group: netip.MustParseAddr("198.18.0.1")}, control.ErrInvalid},
	}
	for _, b := range bad {
		err := d.StartDaemon(ctx, b.sd)
		if !errors.Is(err, b.want) {
			t.Errorf("%s: StartDaemon = %v, want %v", b.name, err, b.want)
		}
		if err != nil && control.CodeOf(err) == control.CodeFailed {
			t.Errorf("%s: %v has no ipvsadm code", b.name, err)
		}
	}
	if ds2, _ := d.Daemons(ctx); !slices.Equal(ds2, want) {
		t.Errorf("after refused starts, Daemons = %+v, want %+v", ds2, want)
	}

	if err := d.StopDaemon(ctx, control.SyncMaster); err != nil {
		t.Fatalf("stop master: %v", err)
	}
	if err := d.StopDaemon(ctx, control.SyncMaster); !errors.Is(err, control.ErrNoDaemon) {
		t.Errorf("stop master twice: %v, want ErrNoDaemon", err)
	}
	if err := d.StopDaemon(ctx, 0); !errors.Is(err, control.ErrInvalid) {
		t.Errorf("stop role 0: %v, want ErrInvalid", err)
	}
	if got := listed(t, d); !slices.Equal(got, []string{"backup:lo:2:admin"}) {
		t.Errorf("after stopping the master: %v", got)
	}
	// The slot is free again, and a stopped backup's port can be bound at once.
	if err := d.StartDaemon(ctx, master); err != nil {
		t.Errorf("restart master: %v", err)
	}
	if err := d.StopDaemon(ctx, control.SyncBackup); err != nil {
		t.Fatalf("stop backup: %v", err)
	}
	if err := d.StartDaemon(ctx, backup); err != nil {
		t.Errorf("restart backup on the same port: %v", err)
	}

	d.stopSync()
	if got := listed(t, d); len(got) != 0 {
		t.Errorf("after shutdown: %v", got)
	}
	if err := d.StartDaemon(ctx, master); err == nil {
		t.Errorf("StartDaemon after shutdown succeeded")
	}
}

// TestSyncDaemonNoDataplane: with nothing to sync (xvsd -P), a start is
// refused as unsupported, not accepted and idle.
func TestSyncDaemonNoDataplane(t *testing.T) {
	d := &Director{log: slog.New(slog.DiscardHandler), cfg: &config.Config{}, vrrpStates: map[string]vrrp.State{}}
	err := d.StartDaemon(context.Background(), control.SyncDaemon{Role: control.SyncMaster, Interface: "lo"})
	if !errors.Is(err, control.ErrUnsupported) {
		t.Errorf("StartDaemon without a dataplane = %v, want ErrUnsupported", err)
	}
	if ds, _ := d.Daemons(context.Background()); len(ds) != 0 {
		t.Errorf("Daemons = %+v", ds)
	}
}

// TestSyncDaemonConfigAndAdmin: the interaction rule. lvs_sync_daemon's
// roles and xvsadm's share one master and one backup slot; VRRP
// transitions and reloads move only the config's roles; --stop-daemon
// stops either.
func TestSyncDaemonConfigAndAdmin(t *testing.T) {
	ctx := context.Background()
	d := syncTestDirector(t)
	conf := func(id int) *config.Config {
		return &config.Config{Global: config.GlobalDefs{LVSSyncDaemon: &config.LVSSyncDaemon{Interface: "lo", Instance: "VI_1", SyncID: id, Port: 18849}}}
	}
	reload := func(c *config.Config) {
		d.mu.Lock()
		d.cfg = c
		d.syncStartLocked()
		d.mu.Unlock()
	}
	vrrpState := func(s vrrp.State) {
		d.mu.Lock()
		d.vrrpStates["VI_1"] = s
		d.syncStateLocked("VI_1", s)
		d.mu.Unlock()
	}
	check := func(step string, want ...string) {
		t.Helper()
		if got := listed(t, d); !slices.Equal(got, want) {
			t.Errorf("%s: -L --daemon = %v, want %v", step, got, want)
		}
	}

	if err := d.StartDaemon(ctx, control.SyncDaemon{Role: control.SyncMaster, Interface: "lo", SyncID: 1}); err != nil {
		t.Fatal(err)
	}
	// No VRRP speaker here: lvs_sync_daemon wants both roles; the master
	// slot is the admin's.
	reload(conf(5))
	check("config loaded", "master:lo:1:admin", "backup:lo:5:config")
	if err := d.StartDaemon(ctx, control.SyncDaemon{Role: control.SyncBackup, Interface: "lo"}); !errors.Is(err, control.ErrDaemonRunning) {
		t.Errorf("start backup over the config's: %v, want ErrDaemonRunning", err)
	}

	vrrpState(vrrp.StateMaster)
	check("VRRP MASTER: config backup stops, admin master stays", "master:lo:1:admin")
	vrrpState(vrrp.StateBackup)
	check("VRRP BACKUP: config backup again, admin master stays", "master:lo:1:admin", "backup:lo:5:config")

	reload(conf(5))
	check("reload, lvs_sync_daemon unchanged", "master:lo:1:admin", "backup:lo:5:config")
	reload(conf(6))
	check("reload, lvs_sync_daemon changed", "master:lo:1:admin", "backup:lo:6:config")

	// --stop-daemon stops whatever runs in the slot; the config's role
	// returns at its next transition, not at a reload that changes nothing.
	if err := d.StopDaemon(ctx, control.SyncBackup); err != nil {
		t.Fatalf("stop the config's backup: %v", err)
	}
	check("config backup stopped by xvsadm", "master:lo:1:admin")
	reload(conf(6))
	check("reload unchanged after the stop", "master:lo:1:admin")
	vrrpState(vrrp.StateBackup)
	check("next transition", "master:lo:1:admin", "backup:lo:6:config")

	// The admin master gone, a MASTER transition puts the config's there.
	if err := d.StopDaemon(ctx, control.SyncMaster); err != nil {
		t.Fatal(err)
	}
	vrrpState(vrrp.StateMaster)
	check("MASTER with the slot free", "master:lo:6:config")
	// An admin backup started now stays through the config going away.
	if err := d.StartDaemon(ctx, control.SyncDaemon{Role: control.SyncBackup, Interface: "lo", SyncID: 3, Port: 18850}); err != nil {
		t.Fatal(err)
	}
	reload(&config.Config{})
	check("lvs_sync_daemon removed", "backup:lo:3:admin")
}
