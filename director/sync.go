package director

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xvs-lb/xvs/config"
	"github.com/xvs-lb/xvs/connsync"
	"github.com/xvs-lb/xvs/dataplane"
	"github.com/xvs-lb/xvs/vrrp"
)

// syncDaemon runs the IPVS sync daemon's roles (connsync) as keepalived
// starts them: master while the lvs_sync_daemon's VRRP instance is MASTER,
// backup otherwise; both at once when no instance is named. Its fields are
// owned by Director.mu; ctr is atomic and outlives roles and reloads.
type syncDaemon struct {
	cfg    *config.LVSSyncDaemon // nil: no sync daemon
	master *syncRole
	backup *syncRole
	closed bool // Close began: start nothing more
	ctr    connsync.Counters
}

// syncRole is one running role: a goroutine that owns its socket.
type syncRole struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (r *syncRole) stop() {
	if r != nil {
		r.cancel()
	}
}

// syncStartLocked sets the sync daemon up from the config at Start and on
// Reload: unchanged settings keep the running roles; changed ones restart
// them in the role the instance's current state asks for. Caller holds
// d.mu.
func (d *Director) syncStartLocked() {
	sd := &d.sync
	want := d.cfg.SyncDaemon()
	if d.dp == nil {
		if want != nil && sd.cfg == nil {
			d.log.Warn("lvs_sync_daemon: no dataplane runs here (-P or no virtual servers), nothing to sync")
		}
		want = nil
	}
	if sd.closed || sameSync(sd.cfg, want) {
		return
	}
	sd.master.stop()
	sd.backup.stop()
	sd.master, sd.backup, sd.cfg = nil, nil, want
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

// syncRunLocked makes the running roles master and backup as asked.
func (d *Director) syncRunLocked(master, backup bool) {
	sd := &d.sync
	if !master && sd.master != nil {
		sd.master.stop()
		sd.master = nil
		d.log.Info("lvs_sync_daemon: master stopped")
	}
	if !backup && sd.backup != nil {
		sd.backup.stop()
		sd.backup = nil
		d.log.Info("lvs_sync_daemon: backup stopped")
	}
	cfg, dp, log := *sd.cfg, d.dp, d.log
	// Half the conn table, within [64 Ki, 1 Mi] slots (1 to 16 MiB).
	cacheSlots := min(max(d.tableSize/2, connsync.DefaultCacheSlots), 1<<20)
	m := connsync.Multicast{Interface: cfg.Interface, Group: cfg.Group, Port: uint16(cfg.Port), TTL: uint8(cfg.TTL)}
	if master && sd.master == nil {
		sd.master = startRole(log, "master", func() (func(context.Context) error, error) {
			pc, dst, err := connsync.DialMulticast(m)
			if err != nil {
				return nil, err
			}
			s := connsync.NewSender(connsync.SenderConfig{
				SyncID: uint8(cfg.SyncID), MaxLen: cfg.MaxLen, Counters: &sd.ctr, Logger: log,
				CacheSlots: cacheSlots,
			}, syncTable{dp}, pc, dst)
			return s.Run, nil
		})
	}
	if backup && sd.backup == nil {
		sd.backup = startRole(log, "backup", func() (func(context.Context) error, error) {
			pc, err := connsync.ListenMulticast(m)
			if err != nil {
				return nil, err
			}
			r := connsync.NewReceiver(connsync.ReceiverConfig{SyncID: uint8(cfg.SyncID), Counters: &sd.ctr, Logger: log}, syncImporter{dp}, pc)
			return r.Run, nil
		})
	}
}

// startRole runs a role in a goroutine. Opening its socket is retried
// every few seconds: the interface may not be up (or exist) yet.
func startRole(log *slog.Logger, name string, open func() (func(context.Context) error, error)) *syncRole {
	ctx, cancel := context.WithCancel(context.Background())
	r := &syncRole{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		logged := false
		for {
			run, err := open()
			if err == nil {
				log.Info("lvs_sync_daemon: " + name + " started")
				_ = run(ctx)
				return
			}
			if !logged {
				log.Error("lvs_sync_daemon: "+name+" cannot start; retrying", "err", err)
				logged = true
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(3 * time.Second):
			}
		}
	}()
	return r
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
			case <-time.After(5 * time.Second):
				d.log.Warn("lvs_sync_daemon: a role did not stop in time")
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
			switch d.Service().Method {
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
	descSyncRole = prometheus.NewDesc("xvs_sync_role", "1 while this director runs the sync daemon's role (lvs_sync_daemon).", []string{"role"}, nil)
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
