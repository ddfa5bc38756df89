package director

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xvs-lb/xvs/config"
	"github.com/xvs-lb/xvs/connsync"
	"github.com/xvs-lb/xvs/control"
	"github.com/xvs-lb/xvs/dataplane"
	"github.com/xvs-lb/xvs/vrrp"
)

// syncDaemon runs the IPVS sync daemon's roles (connsync). As in the
// kernel, there is one master slot and one backup slot, each empty or
// running one role, whoever started it:
//
//   - keepalived.conf's lvs_sync_daemon starts roles as keepalived does:
//     master while its VRRP instance is MASTER, backup otherwise, both at
//     once when no instance is named. These config roles follow VRRP
//     transitions and restart when a reload changes lvs_sync_daemon.
//   - xvsadm --start-daemon starts an admin role, which runs until
//     xvsadm --stop-daemon (or shutdown), whatever the VRRP state, as a
//     kernel daemon ipvsadm started does: VRRP transitions and reloads,
//     even ones that change lvs_sync_daemon, leave it alone.
//   - A role starts only in an empty slot: --start-daemon into a slot the
//     config filled fails with "Daemon has already run", and the config
//     leaves a slot an admin role holds (it logs that). --stop-daemon
//     empties the slot whoever filled it; a stopped config role comes back
//     at the next VRRP transition or lvs_sync_daemon change, as keepalived
//     would start the kernel's again.
//
// Its fields are owned by Director.mu; ctr is atomic and outlives roles
// and reloads.
type syncDaemon struct {
	cfg    *config.LVSSyncDaemon // lvs_sync_daemon; nil: none
	master *syncRole
	backup *syncRole
	closed bool // Close began: start nothing more
	ctr    connsync.Counters
	// table and importer stand in for the dataplane's conn table when set
	// (tests); otherwise roles use Director.dp's.
	table    connsync.Table
	importer connsync.Importer
}

// syncRole is one running role: a goroutine that owns its socket.
type syncRole struct {
	cancel context.CancelFunc
	done   chan struct{}
	// set is what -L --daemon lists; a zero MaxLen is resolved from the
	// interface's MTU at listing time. Never changed after start.
	set   control.SyncDaemon
	admin bool // started by xvsadm --start-daemon
}

func (r *syncRole) stop() {
	if r != nil {
		r.cancel()
	}
}

// slot is where a role runs.
func (sd *syncDaemon) slot(role control.SyncRole) **syncRole {
	if role == control.SyncMaster {
		return &sd.master
	}
	return &sd.backup
}

// canSync says whether there is a conn table to sync. Caller holds d.mu.
func (d *Director) canSyncLocked() bool {
	return d.dp != nil || d.sync.table != nil
}

// syncStartLocked sets the config roles up from lvs_sync_daemon at Start
// and on Reload: unchanged settings keep the running roles; changed ones
// restart them in the role the instance's current state asks for. Admin
// roles stay. Caller holds d.mu.
func (d *Director) syncStartLocked() {
	sd := &d.sync
	want := d.cfg.SyncDaemon()
	if !d.canSyncLocked() {
		if want != nil && sd.cfg == nil {
			d.log.Warn("lvs_sync_daemon: no dataplane runs here (-P or no virtual servers), nothing to sync")
		}
		want = nil
	}
	if sd.closed || sameSync(sd.cfg, want) {
		return
	}
	for _, p := range []**syncRole{&sd.master, &sd.backup} {
		if *p != nil && !(*p).admin {
			(*p).stop()
			*p = nil
		}
	}
	sd.cfg = want
	if want == nil {
		return
	}
	d.log.Info("lvs_sync_daemon", "interface", want.Interface, "instance", want.Instance, "syncid", want.SyncID)
	if want.Instance == "" || d.speaker == nil {
		d.syncRunLocked(true, true)
		return
	}
	d.syncRunLocked(d.vrrpStates[want.Instance] == vrrp.StateMaster, d.vrrpStates[want.Instance] != vrrp.StateMaster)
}

func sameSync(a, b *config.LVSSyncDaemon) bool {
	if a == nil || b == nil {
		return a == b
	}
	x, y := *a, *b
	x.Pos, y.Pos = config.Pos{}, config.Pos{}
	return x == y
}

// syncStateLocked follows a VRRP transition. Caller holds d.mu.
func (d *Director) syncStateLocked(instance string, s vrrp.State) {
	sd := &d.sync
	if sd.cfg == nil || sd.closed || sd.cfg.Instance != instance {
		return
	}
	d.syncRunLocked(s == vrrp.StateMaster, s != vrrp.StateMaster)
}

// syncRunLocked makes the config roles master and backup as asked, in
// the slots admin roles leave free.
func (d *Director) syncRunLocked(master, backup bool) {
	sd := &d.sync
	cfg := *sd.cfg
	for _, w := range []struct {
		role control.SyncRole
		on   bool
	}{{control.SyncMaster, master}, {control.SyncBackup, backup}} {
		p := sd.slot(w.role)
		switch {
		case !w.on && *p != nil && !(*p).admin:
			(*p).stop()
			*p = nil
			d.log.Info("lvs_sync_daemon: " + w.role.String() + " stopped")
		case w.on && *p == nil:
			set := control.SyncDaemon{Role: w.role, Interface: cfg.Interface, SyncID: uint8(cfg.SyncID), MaxLen: cfg.MaxLen,
				Group: cfg.Group, Port: uint16(cfg.Port), TTL: uint8(cfg.TTL), FromConfig: true}
			*p = startRole(d.log, set, false, nil, d.syncOpenerLocked(set))
		case w.on && (*p).admin:
			d.log.Info("lvs_sync_daemon: the " + w.role.String() + " role runs as xvsadm --start-daemon started it; left alone")
		}
	}
}

// syncOpenerLocked returns what opens a role's socket and makes its loop.
// Caller holds d.mu and has checked canSyncLocked.
func (d *Director) syncOpenerLocked(set control.SyncDaemon) func() (func(context.Context) error, error) {
	sd := &d.sync
	tbl, imp := sd.table, sd.importer
	if tbl == nil {
		tbl = syncTable{d.dp}
	}
	if imp == nil {
		imp = syncImporter{d.dp}
	}
	ctr, log := &sd.ctr, d.log
	// Half the conn table, within [64 Ki, 1 Mi] slots (1 to 16 MiB).
	cacheSlots := min(max(d.tableSize/2, connsync.DefaultCacheSlots), 1<<20)
	// A master's maxlen does not depend on the MTU; a backup's is only
	// listed (it reads datagrams of any size).
	r := set.Resolved(1500)
	m := connsync.Multicast{Interface: r.Interface, Group: r.Group, Port: r.Port, TTL: r.TTL}
	if set.Role == control.SyncMaster {
		return func() (func(context.Context) error, error) {
			pc, dst, err := connsync.DialMulticast(m)
			if err != nil {
				return nil, err
			}
			s := connsync.NewSender(connsync.SenderConfig{
				SyncID: r.SyncID, MaxLen: r.MaxLen, Counters: ctr, Logger: log, CacheSlots: cacheSlots,
			}, tbl, pc, dst)
			return s.Run, nil
		}
	}
	return func() (func(context.Context) error, error) {
		pc, err := connsync.ListenMulticast(m)
		if err != nil {
			return nil, err
		}
		rcv := connsync.NewReceiver(connsync.ReceiverConfig{SyncID: r.SyncID, Counters: ctr, Logger: log}, imp, pc)
		return rcv.Run, nil
	}
}

// startRole runs a role in a goroutine: run when its socket is already
// open, else open, retried every few seconds (lvs_sync_daemon's interface
// may not be up, or exist, yet).
func startRole(log *slog.Logger, set control.SyncDaemon, admin bool, run func(context.Context) error,
	open func() (func(context.Context) error, error)) *syncRole {
	ctx, cancel := context.WithCancel(context.Background())
	r := &syncRole{cancel: cancel, done: make(chan struct{}), set: set, admin: admin}
	name := "lvs_sync_daemon: " + set.Role.String()
	if admin {
		name = "sync daemon (xvsadm --start-daemon): " + set.Role.String()
	}
	go func() {
		defer close(r.done)
		logged := false
		for run == nil {
			var err error
			if run, err = open(); err == nil {
				break
			}
			if !logged {
				log.Error(name+" cannot start; retrying", "err", err)
				logged = true
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(3 * time.Second):
			}
		}
		log.Info(name+" started", "interface", set.Interface, "syncid", set.SyncID)
		_ = run(ctx)
	}()
	return r
}

// roleStopWait bounds the wait for a stopped role's goroutine.
const roleStopWait = 5 * time.Second

// syncStartAdmin starts a role for xvsadm --start-daemon, with the
// kernel's checks in its order: the interface, then the slot. The socket
// is opened here, so that a failure is the command's answer and leaves
// nothing behind.
func (d *Director) syncStartAdmin(set control.SyncDaemon) error {
	if err := set.Validate(); err != nil {
		return fmt.Errorf("%w: %w", control.ErrInvalid, err)
	}
	set.FromConfig = false
	d.mu.Lock()
	defer d.mu.Unlock()
	sd := &d.sync
	if sd.closed {
		return fmt.Errorf("%s sync daemon: xvsd is shutting down", set.Role)
	}
	if !d.canSyncLocked() {
		return fmt.Errorf("%s sync daemon: no dataplane runs in this xvsd (-P, or no virtual servers at start), so there is no conn table to sync: %w",
			set.Role, control.ErrUnsupported)
	}
	ifi, err := net.InterfaceByName(set.Interface)
	if err != nil {
		return fmt.Errorf("%s sync daemon: interface %q: %w (%v)", set.Role, set.Interface, control.ErrNoDevice, err)
	}
	p := sd.slot(set.Role)
	if r := *p; r != nil {
		by := "xvsadm --start-daemon"
		if !r.admin {
			by = "lvs_sync_daemon"
		}
		return fmt.Errorf("%s sync daemon already runs on %s, started by %s: %w", set.Role, r.set.Interface, by, control.ErrDaemonRunning)
	}
	set = set.Resolved(ifi.MTU)
	run, err := d.syncOpenerLocked(set)()
	if err != nil {
		return fmt.Errorf("%s sync daemon on %s: %w", set.Role, set.Interface, err)
	}
	*p = startRole(d.log, set, true, run, nil)
	return nil
}

// syncStopAdmin stops the role in a slot for xvsadm --stop-daemon,
// whoever started it, and waits for its socket to close, so that a start
// right after finds the slot and the port free.
func (d *Director) syncStopAdmin(role control.SyncRole) error {
	if role != control.SyncMaster && role != control.SyncBackup {
		return fmt.Errorf("sync daemon role %d: %w", role, control.ErrInvalid)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.sync.slot(role)
	r := *p
	if r == nil {
		return fmt.Errorf("%s sync daemon: %w", role, control.ErrNoDaemon)
	}
	*p = nil
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(roleStopWait):
		d.log.Warn("sync daemon: a role did not stop in time", "role", role.String())
	}
	d.log.Info("sync daemon (xvsadm --stop-daemon): "+role.String()+" stopped", "config", !r.admin)
	return nil
}

// syncList answers -L --daemon: the running roles, master first, with
// IPVS's defaults filled in.
func (d *Director) syncList() []control.SyncDaemon {
	d.mu.Lock()
	roles := []*syncRole{d.sync.master, d.sync.backup}
	d.mu.Unlock()
	out := []control.SyncDaemon{}
	for _, r := range roles {
		if r == nil {
			continue
		}
		mtu := 1500
		if r.set.MaxLen == 0 {
			if ifi, err := net.InterfaceByName(r.set.Interface); err == nil {
				mtu = ifi.MTU
			}
		}
		out = append(out, r.set.Resolved(mtu))
	}
	return out
}

// stopSync stops both roles and waits for their sockets to close, before
// the dataplane they read goes. Called once, from shutdown.
func (d *Director) stopSync() {
	d.mu.Lock()
	sd := &d.sync
	sd.closed = true
	roles := []*syncRole{sd.master, sd.backup}
	sd.master, sd.backup = nil, nil
	d.mu.Unlock()
	for _, r := range roles {
		if r != nil {
			r.cancel()
			select {
			case <-r.done:
			case <-time.After(roleStopWait):
				d.log.Warn("sync daemon: a role did not stop in time", "role", r.set.Role.String())
			}
		}
	}
}

// syncTable lets the sender read the dataplane's conn table as IPVS conns.
type syncTable struct{ dp *dataplane.Dataplane }

func (t syncTable) Walk(f func(c *connsync.Conn) bool) {
	snap := t.dp.Snapshot()
	var c connsync.Conn // one per walk; the sender does not keep it
	t.dp.Conns(func(e dataplane.ConnEntry) bool {
		if !toSyncConn(snap, &e, &c) {
			return true
		}
		return f(&c)
	})
}

// toSyncConn converts a conn-table entry; false for what IPVS cannot
// carry (a removed real server, a state without an IPVS equivalent).
func toSyncConn(snap *dataplane.Snapshot, e *dataplane.ConnEntry, c *connsync.Conn) bool {
	if !e.Dest.IsValid() {
		return false
	}
	*c = connsync.Conn{Proto: e.Proto, Client: e.Client, Virtual: e.Virtual, Dest: e.Dest}
	switch {
	case e.Template:
		c.Flags = connsync.FlagTemplate
	case e.Proto == connsync.ProtoTCP && e.State >= dataplane.StateNone && e.State <= dataplane.StateSynAck:
		c.State = uint16(e.State - dataplane.StateNone)
		if c.State != connsync.TCPEstablished {
			c.Flags = connsync.FlagInactive
		}
	case e.Proto == connsync.ProtoUDP && e.State == dataplane.StateUDP:
		c.Flags = connsync.FlagInactive // IPVS counts UDP conns as inactive
	default:
		return false
	}
	if snap != nil {
		if d := snap.DestByID(e.DestID); d != nil {
			switch d.Method {
			case dataplane.DR:
				c.Flags |= connsync.FlagDRoute
			case dataplane.TUN:
				c.Flags |= connsync.FlagTunnel
			}
		}
	}
	c.Timeout = uint32(min(max(math.Ceil(e.Expires.Seconds()), 1), math.MaxUint32))
	return true
}

// syncImporter hands received conns to the dataplane.
type syncImporter struct{ dp *dataplane.Dataplane }

func (im syncImporter) Import(c *connsync.Conn) error {
	e, ok := fromSyncConn(c)
	if !ok {
		return errUnsyncable
	}
	return im.dp.ImportConn(e)
}

var errUnsyncable = errors.New("sync conn: state has no xvs equivalent")

func fromSyncConn(c *connsync.Conn) (dataplane.ConnEntry, bool) {
	e := dataplane.ConnEntry{
		ConnInfo: dataplane.ConnInfo{
			Proto: c.Proto, Template: c.Template(), Client: c.Client, Virtual: c.Virtual,
			Expires: time.Duration(c.Timeout) * time.Second,
		},
		Dest: c.Dest,
	}
	switch {
	case c.Template():
		e.State = dataplane.StateTemplate
	case c.Proto == connsync.ProtoTCP && c.State < connsync.TCPStates:
		e.State = dataplane.StateNone + uint8(c.State)
	case c.Proto == connsync.ProtoUDP:
		e.State = dataplane.StateUDP
	default:
		return e, false
	}
	return e, true
}

var (
	descSyncRole = prometheus.NewDesc("xvs_sync_role", "1 while this director runs the sync daemon's role (lvs_sync_daemon or xvsadm --start-daemon).", []string{"role"}, nil)
	descSyncMsgs = prometheus.NewDesc("xvs_sync_messages_total", "Sync daemon datagrams sent or received.", []string{"direction"}, nil)
	descSyncConn = prometheus.NewDesc("xvs_sync_conns_total", "Conns sent, or received in well-formed messages of our sync ID.", []string{"direction"}, nil)
	descSyncImp  = prometheus.NewDesc("xvs_sync_imported_conns_total", "Received conns added to the conn table (or already there).", nil, nil)
	descSyncDrop = prometheus.NewDesc("xvs_sync_errors_total", "Sync daemon failures by kind: send_error, malformed and wrong_syncid (datagrams), import_failed and skipped (conns).", []string{"kind"}, nil)
)

// collectSync adds the sync daemon's metrics; the collector calls it with
// what it read under d.mu.
func collectSync(ch chan<- prometheus.Metric, ctr *connsync.Counters, master, backup bool) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	ch <- prometheus.MustNewConstMetric(descSyncRole, prometheus.GaugeValue, b(master), "master")
	ch <- prometheus.MustNewConstMetric(descSyncRole, prometheus.GaugeValue, b(backup), "backup")
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	counter(descSyncMsgs, ctr.SentMessages.Load(), "sent")
	counter(descSyncMsgs, ctr.RecvMessages.Load(), "received")
	counter(descSyncConn, ctr.SentConns.Load(), "sent")
	counter(descSyncConn, ctr.RecvConns.Load(), "received")
	counter(descSyncImp, ctr.Imported.Load())
	counter(descSyncDrop, ctr.SendErrors.Load(), "send_error")
	counter(descSyncDrop, ctr.Malformed.Load(), "malformed")
	counter(descSyncDrop, ctr.WrongSyncID.Load(), "wrong_syncid")
	counter(descSyncDrop, ctr.ImportErrors.Load(), "import_failed")
	counter(descSyncDrop, ctr.Skipped.Load(), "skipped")
}
