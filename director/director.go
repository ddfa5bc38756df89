// Package director owns xvsd's running state: the virtual services of
// keepalived.conf with xvsadm's changes on top, each real server's health,
// each VRRP instance's state, and the wiring that turns all of them into
// dataplane snapshots. cmd/xvsd is a thin main around Run.
//
// One mutex (Director.mu) guards the control-plane state; it is never taken
// on the packet path, which only sees the snapshots the dataplane publishes.
package director

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xvs-lb/xvs/config"
	"github.com/xvs-lb/xvs/control"
	"github.com/xvs-lb/xvs/dataplane"
	"github.com/xvs-lb/xvs/healthcheck"
	"github.com/xvs-lb/xvs/vrrp"
)

// Options are xvsd's command-line settings.
type Options struct {
	ConfigFile  string // -f
	ControlPath string // --control; "" = no control socket
	MetricsAddr string // --metrics; "" = no metrics endpoint
	VRRPOnly    bool   // -P: VRRP only, no virtual servers
	LVSOnly     bool   // -C: virtual servers only, no VRRP
	// InsecureScripts runs scripts that fail keepalived's safety rules.
	InsecureScripts bool
	Logger          *slog.Logger
}

// DefaultConnTableSize is the conn table's size when keepalived.conf has no
// xvs_conn_table_size.
const DefaultConnTableSize = 1 << 20

// Director is a running xvsd.
type Director struct {
	opts Options
	log  *slog.Logger

	mu         sync.Mutex // guards everything below
	cfg        *config.Config
	table      *table
	fwd        forwarder
	dp         *dataplane.Dataplane
	pool       *healthcheck.Pool
	speaker    *vrrp.Speaker
	vrrpStates map[string]vrrp.State
	// publishReq carries requests to the publisher goroutine (capacity 1).
	publishReq chan struct{}
	// viaPending: some data-path check still lacks its addressing (the
	// real server's MAC was not resolved yet) and runs as a TCP_CHECK.
	viaPending bool
	counters   counters
	sync       syncDaemon // lvs_sync_daemon (sync.go)
	tableSize  int
	ifaces     []string

	ctl     *control.Server
	metrics *http.Server
	cancel  context.CancelFunc
	done    chan struct{}
}

// Check loads and validates a config as xvsd -t does.
func Check(path string) (config.Diagnostics, error) {
	_, diags, err := config.Load(path)
	return diags, err
}

// Start loads the config and starts everything: dataplane (unless -P), health
// checks, VRRP (unless -C), the control socket and metrics. It returns once
// all are running; Close stops them.
func Start(opts Options) (*Director, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg, diags, err := config.Load(opts.ConfigFile)
	for _, w := range diags.Warnings() {
		log.Warn(w.String())
	}
	if err != nil {
		return nil, err
	}
	d := &Director{opts: opts, log: log, cfg: cfg, vrrpStates: map[string]vrrp.State{}, done: make(chan struct{}),
		publishReq: make(chan struct{}, 1)}
	t, warns := tableFromConfig(cfg)
	for _, w := range warns {
		log.Warn(w)
	}
	d.table = t
	d.tableSize = cfg.Global.XVSConnTableSize
	if d.tableSize <= 0 {
		d.tableSize = DefaultConnTableSize
	}

	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	var wg sync.WaitGroup
	fail := func(err error) (*Director, error) {
		cancel()
		d.shutdown()
		wg.Wait()
		return nil, err
	}

	if !opts.VRRPOnly && len(t.services) > 0 {
		ifaces, err := findInterfaces(cfg, t)
		if err != nil {
			return fail(err)
		}
		d.ifaces = ifaces
		dp, err := dataplane.New(dataplane.Config{Interfaces: ifaces, ConnTableSize: d.tableSize})
		if err != nil {
			return fail(fmt.Errorf("dataplane on %v: %w", ifaces, err))
		}
		d.dp, d.fwd = dp, dp
		if lt := cfg.Global.LVSTimeouts; lt != (config.LVSTimeouts{}) {
			cur := dp.Timeouts()
			if lt.TCP > 0 {
				cur.TCP = lt.TCP
			}
			if lt.TCPFin > 0 {
				cur.TCPFin = lt.TCPFin
			}
			if lt.UDP > 0 {
				cur.UDP = lt.UDP
			}
			dp.SetTimeouts(cur)
		}
		wg.Go(func() {
			if err := dp.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("dataplane stopped", "err", err)
			}
		})
		log.Info("dataplane running", "interfaces", ifaces, "conn_table", d.tableSize)
	}

	wg.Go(func() { d.publisher(ctx) })

	if !opts.LVSOnly && len(cfg.Instances) > 0 {
		sp, err := vrrp.New(vrrpConfig(cfg), vrrp.WithLogger(log), vrrp.WithStateHook(d.onVRRPState))
		if err != nil {
			return fail(err)
		}
		d.speaker = sp
		wg.Go(func() {
			if err := sp.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("VRRP stopped", "err", err)
			}
		})
	}

	d.mu.Lock()
	err = d.publishLocked()
	d.syncStartLocked()
	d.mu.Unlock()
	if err != nil {
		return fail(err)
	}

	if !opts.VRRPOnly {
		d.pool = healthcheck.NewPool(healthcheck.PoolOptions{Logger: log, InsecureScripts: opts.InsecureScripts}, d.onTransition)
		d.mu.Lock()
		err := d.updateChecksLocked()
		d.mu.Unlock()
		if err != nil {
			log.Warn("health checks", "err", err)
		}
		wg.Go(func() { d.viaVIPRefresher(ctx) })
	}

	if opts.ControlPath != "" {
		srv, err := control.Listen(opts.ControlPath, d, log)
		if err != nil {
			return fail(err)
		}
		d.ctl = srv
		wg.Go(func() { _ = srv.Serve() })
	}
	if opts.MetricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(&collector{d: d})
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		ln, err := net.Listen("tcp", opts.MetricsAddr)
		if err != nil {
			return fail(fmt.Errorf("metrics on %s: %w", opts.MetricsAddr, err))
		}
		d.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() { _ = d.metrics.Serve(ln) })
	}
	go func() {
		wg.Wait()
		close(d.done)
	}()
	log.Info("xvsd started", "config", opts.ConfigFile, "services", len(t.services), "vrrp_instances", len(cfg.Instances))
	return d, nil
}

// publishLocked sends the table to the dataplane. Caller holds d.mu.
func (d *Director) publishLocked() error {
	if d.fwd == nil {
		return nil
	}
	return d.fwd.SetServices(d.table.dataplaneServices(d.activeLocked))
}

// activeLocked says whether this director forwards for vip: always, unless
// a VRRP instance holds the VIP and is not MASTER (a BACKUP director keeps
// its table, ready, but does not forward).
func (d *Director) activeLocked(vip netip.Addr) bool {
	if d.speaker == nil {
		return true
	}
	in := d.cfg.InstanceFor(vip)
	if in == nil {
		return true
	}
	return d.vrrpStates[in.Name] == vrrp.StateMaster
}

func (d *Director) onVRRPState(instance string, s vrrp.State) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.vrrpStates[instance] = s
	d.requestPublish()
	d.syncStateLocked(instance, s)
	if d.pool != nil {
		// ha_suspend: checkers of services whose VIP this director does not
		// hold pause; the pool applies it per service.
		master := false
		for _, st := range d.vrrpStates {
			master = master || st == vrrp.StateMaster
		}
		if master {
			d.pool.Resume()
		} else {
			d.pool.Suspend()
		}
	}
}

func (d *Director) onTransition(tr healthcheck.Transition) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.table.serviceByName(tr.Service)
	if s == nil {
		return
	}
	changed := false
	if tr.Sorry {
		changed = s.sorryActive != tr.InPool
		s.sorryActive = tr.InPool
	} else if r := s.realByName(tr.Server); r != nil {
		up, w := tr.InPool && !tr.Removed, int32(tr.Weight)
		changed = r.up != up || r.liveWeight() != w
		r.up, r.weight = up, w
	}
	// The pool reports every server when it first sees it; most of those
	// change nothing, and a burst of them must not rebuild the table once
	// each.
	if changed {
		d.requestPublish()
	}
}

// requestPublish asks the publisher goroutine for a new snapshot. Requests
// made while it builds one collapse into one more build, so a burst of
// health or VRRP events costs two builds, not one per event.
func (d *Director) requestPublish() {
	select {
	case d.publishReq <- struct{}{}:
	default:
	}
}

// publisher turns publish requests into snapshots, off the callers'
// goroutines.
func (d *Director) publisher(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.publishReq:
		}
		d.mu.Lock()
		if err := d.publishLocked(); err != nil {
			d.log.Error("publish", "err", err)
		}
		d.mu.Unlock()
	}
}

// Reload re-reads the config file (SIGHUP). A config with errors is refused
// with its file:line messages and the running one stays. A good one
// replaces the table — and with it xvsadm's changes, as keepalived's reload
// does — keeping the health of real servers that stay, so no real server
// flaps and established flows keep their real servers.
func (d *Director) Reload() error {
	cfg, diags, err := config.Load(d.opts.ConfigFile)
	for _, w := range diags.Warnings() {
		d.log.Warn(w.String())
	}
	if err != nil {
		d.log.Error("reload refused; the running configuration stays", "err", err)
		return err
	}
	t, warns := tableFromConfig(cfg)
	for _, w := range warns {
		d.log.Warn(w)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range t.services {
		if old := d.table.find(s.ctl.ServiceKey); old != nil {
			s.sorryActive = old.sorryActive
			for _, r := range s.reals {
				if or := old.findReal(r.dest.Key()); or != nil {
					r.up = or.up
				}
			}
		}
	}
	d.cfg, d.table = cfg, t
	d.syncStartLocked()
	if err := d.publishLocked(); err != nil {
		d.log.Error("reload: publish", "err", err)
		return err
	}
	if d.pool != nil {
		if err := d.updateChecksLocked(); err != nil {
			d.log.Warn("reload: health checks", "err", err)
		}
	}
	d.log.Info("configuration reloaded", "config", d.opts.ConfigFile, "services", len(t.services))
	return nil
}

// Close stops everything: VRRP first with a priority-0 advert, so the backup
// takes over at once, then checks, the control socket and the dataplane.
func (d *Director) Close() error {
	d.shutdown()
	d.cancel()
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		return errors.New("xvsd: shutdown timed out")
	}
	return nil
}

func (d *Director) shutdown() {
	d.stopSync()
	if d.speaker != nil {
		d.speaker.Stop()
	}
	if d.pool != nil {
		d.pool.Close()
	}
	if d.ctl != nil {
		d.ctl.Close()
	}
	if d.metrics != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = d.metrics.Shutdown(ctx)
		cancel()
	}
	if d.dp != nil {
		if err := d.dp.Close(); err != nil {
			d.log.Warn("dataplane close", "err", err)
		}
	}
}

// Done is closed once every goroutine Start began has ended.
func (d *Director) Done() <-chan struct{} { return d.done }
