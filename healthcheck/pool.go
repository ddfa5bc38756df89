package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Pool runs the checkers of a set of services and publishes transitions.
type Pool struct {
	opts PoolOptions
	log  *slog.Logger
	onT  func(Transition)

	ctx    context.Context // ended by Close; parent of every checker
	cancel context.CancelFunc

	suspended atomic.Bool // ha_suspend: set by Suspend, cleared by Resume

	// mu guards everything below; checker goroutines take it only to
	// report a result, never while probing.
	mu       sync.Mutex
	services map[string]*vsState
	stopping bool    // Close has begun: no more Updates or reports
	closed   bool    // checkers are gone: the dispatcher drains and exits
	queue    []event // transitions and scripts, in order, for the dispatcher

	wake     chan struct{} // poke the dispatcher; cap 1
	loop     *loop
	checkers sync.WaitGroup // the loop goroutine
	scripts  sync.WaitGroup
	dispDone chan struct{}

	nChecks, nFailures, nTransitions, nScripts, nRefused atomic.Uint64

	// testProber, set by tests before Update, replaces the real probers.
	testProber func(r *RealServer, c *Checker) prober
	// dialTCP, set by tests before Update, runs TCP_CHECK through
	// net.Dialer on a goroutine per probe (the reference path).
	dialTCP bool
}

type event struct {
	t      *Transition
	script string
	env    []string
	what   string // for the log
}

type vsState struct {
	cfg      Service // Servers dropped; owned by Pool.mu
	key      string
	proto    string
	servers  map[string]*rsState
	order    []string
	quorumUp bool
	sorry    *pubState // published state of the sorry server, nil without one
	sorryKey string
}

// pubState is what was last published for a server.
type pubState struct {
	valid      bool
	up, inPool bool
	weight     int
}

type rsState struct {
	vs       *vsState
	cfg      RealServer // Checkers dropped
	key      string
	desc     string // "[ip]:tcp:port"
	checkers []*checkerRun
	up       bool
	pub      pubState
}

type checkerRun struct {
	rs        *rsState // nil once removed; guarded by Pool.mu
	sig       string
	typ       CheckType
	st        settings
	timeout   time.Duration
	prober    prober
	tcp       *tcpProber // TCP_CHECK driven by the loop's epoll; else nil
	haSuspend atomic.Bool
	logAll    bool // log_all_failures
	up        bool // guarded by Pool.mu
	dynWeight int  // -1: none; guarded by Pool.mu
	ctx       context.Context
	cancel    context.CancelFunc

	// Owned by the loop goroutine.
	at      time.Duration // deadline of the connect in flight, from loop.base
	hidx    int           // position in loop.inflight, -1 when not in it
	due     time.Time     // when the current check was due (delay_loop is counted from it)
	retries int           // failed attempts of the current check
	fd      int           // in-flight TCP_CHECK socket, -1 when none
	busy    bool          // a probe goroutine is running
	removed bool
}

// NewPool returns a pool with no services; onTransition may be nil.
func NewPool(opts PoolOptions, onTransition func(Transition)) *Pool {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.NotifyTimeout <= 0 {
		opts.NotifyTimeout = 30 * time.Second
	}
	if onTransition == nil {
		onTransition = func(Transition) {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{
		opts: opts, log: opts.Logger, onT: onTransition, ctx: ctx, cancel: cancel,
		services: map[string]*vsState{}, wake: make(chan struct{}, 1), dispDone: make(chan struct{}),
	}
	if opts.InsecureScripts {
		p.log.Warn("SECURITY VIOLATION - scripts are being executed but script_security not enabled.")
	}
	p.loop = newLoop(p)
	p.checkers.Add(1)
	go p.loop.run()
	go p.dispatch()
	return p
}

// Stats returns the pool's counters.
func (p *Pool) Stats() Stats {
	return Stats{
		Checks: p.nChecks.Load(), Failures: p.nFailures.Load(), Transitions: p.nTransitions.Load(),
		Scripts: p.nScripts.Load(), Refused: p.nRefused.Load(),
	}
}

// Suspend pauses the checkers of services with HASuspend (the director is
// not MASTER for their VIP); their state is kept as it was.
func (p *Pool) Suspend() { p.suspended.Store(true) }

// Resume undoes Suspend.
func (p *Pool) Resume() { p.suspended.Store(false) }

// Update makes services the pool's desired set. Checkers whose options are
// unchanged keep running with their state; new ones start, removed ones
// stop. Invalid checkers are skipped and reported in the returned error;
// the rest is applied.
func (p *Pool) Update(services []Service) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return errors.New("healthcheck: Update on a closed pool")
	}
	var errs []error
	seen := map[string]bool{}
	for i := range services {
		s := &services[i]
		key := s.key()
		if seen[key] {
			errs = append(errs, fmt.Errorf("service %s: duplicate", key))
			continue
		}
		seen[key] = true
		vs := p.services[key]
		isNew := vs == nil
		if isNew {
			vs = &vsState{key: key, servers: map[string]*rsState{}}
			p.services[key] = vs
		}
		vs.cfg = *s
		vs.cfg.Servers = nil
		vs.proto = s.proto()
		errs = append(errs, p.updateServers(vs, s.Servers)...)
		p.updateSorry(vs, s.Sorry)
		if isNew {
			vs.quorumUp = p.liveWeight(vs) >= vs.quorum() && p.liveWeight(vs) > 0
		}
		p.recompute(vs)
	}
	for key, vs := range p.services {
		if seen[key] {
			continue
		}
		for _, k := range vs.order {
			p.removeServer(vs, vs.servers[k])
		}
		delete(p.services, key)
	}
	p.kick()
	return errors.Join(errs...)
}

// updateSorry follows a change of sorry server; the old one, if it was
// published, is removed. vs.cfg is already the new configuration.
func (p *Pool) updateSorry(vs *vsState, s *SorryServer) {
	key := ""
	if s != nil {
		key = serverKey(s.Addr, s.Port)
	}
	if vs.sorry != nil && vs.sorryKey != key {
		if vs.sorry.valid {
			p.publish(Transition{Service: vs.key, Server: vs.sorryKey, Sorry: true, Removed: true})
		}
		vs.sorry = nil
	}
	if s != nil && vs.sorry == nil {
		vs.sorry = &pubState{}
	}
	vs.sorryKey = key
}

func (vs *vsState) quorum() int {
	if vs.cfg.Quorum <= 0 {
		return 1
	}
	return vs.cfg.Quorum
}

func (p *Pool) updateServers(vs *vsState, servers []RealServer) []error {
	var errs []error
	seen := map[string]bool{}
	var order []string
	for i := range servers {
		r := &servers[i]
		key := serverKey(r.Addr, r.Port)
		if seen[key] {
			errs = append(errs, fmt.Errorf("service %s server %s: duplicate", vs.key, key))
			continue
		}
		seen[key] = true
		order = append(order, key)
		rs := vs.servers[key]
		if rs == nil {
			rs = &rsState{vs: vs, key: key, desc: fmtEndpoint(r.Addr, vs.proto, r.Port)}
			rs.up = !(r.Alpha || vs.cfg.Alpha)
			vs.servers[key] = rs
		}
		rs.cfg = *r
		rs.cfg.Checkers = nil
		errs = append(errs, p.updateCheckers(rs, r)...)
		rs.up = rs.allUp()
	}
	for _, k := range vs.order {
		if !seen[k] {
			p.removeServer(vs, vs.servers[k])
		}
	}
	vs.order = order
	return errs
}

func (rs *rsState) allUp() bool {
	if len(rs.checkers) == 0 {
		return rs.up
	}
	for _, c := range rs.checkers {
		if !c.up {
			return false
		}
	}
	return true
}

func (p *Pool) removeServer(vs *vsState, rs *rsState) {
	for _, c := range rs.checkers {
		p.stop(c)
	}
	delete(vs.servers, rs.key)
	if rs.pub.valid {
		p.publish(Transition{Service: vs.key, Server: rs.key, Removed: true})
	}
}

// checkerSig identifies a checker's configuration, including what it
// inherits from its server and service, so Update can keep it running.
// Pointer fields are spelled by value (%#v would print addresses).
func checkerSig(vs *vsState, r *RealServer, c *Checker) string {
	flat := *c
	flat.Retry, flat.DelayBeforeRetry, flat.Warmup = nil, nil, nil
	flat.HTTP, flat.Misc, flat.UDP, flat.DNS, flat.SMTP, flat.ViaVIP = nil, nil, nil, nil, nil, nil
	return fmt.Sprintf("%#v|%s|%d|%q|%q|%v|%#v|%#v|%#v|%#v|%#v|%#v|%v|%v|%v",
		flat, r.Addr, r.Port, r.VirtualHost, vs.cfg.VirtualHost, vs.cfg.Alpha || r.Alpha,
		derefOr(c.HTTP), derefOr(c.Misc), derefOr(c.UDP), derefOr(c.DNS), derefOr(c.SMTP), derefOr(c.ViaVIP),
		derefOr(c.Retry), derefOr(c.DelayBeforeRetry), derefOr(c.Warmup))
}

func derefOr[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func (p *Pool) updateCheckers(rs *rsState, r *RealServer) []error {
	var errs []error
	old := rs.checkers
	var next []*checkerRun
	for i := range r.Checkers {
		c := &r.Checkers[i]
		sig := checkerSig(rs.vs, r, c)
		if j := slices.IndexFunc(old, func(o *checkerRun) bool { return o != nil && o.sig == sig }); j >= 0 {
			next = append(next, old[j])
			old[j] = nil
			continue
		}
		cr, err := p.newChecker(rs, r, c)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s server %s %s: %w", rs.vs.key, rs.key, c.Type, err))
			continue
		}
		cr.sig = sig
		// A checker added to a server that is up starts up, so adding a
		// check does not flap the server; alpha starts it down.
		cr.up = !(c.Alpha || r.Alpha || rs.vs.cfg.Alpha) && (rs.up || len(rs.checkers) == 0)
		next = append(next, cr)
		p.start(cr)
	}
	for _, o := range old {
		if o != nil {
			p.stop(o)
		}
	}
	rs.checkers = next
	for _, c := range next {
		c.haSuspend.Store(rs.vs.cfg.HASuspend)
	}
	return errs
}

func (p *Pool) newChecker(rs *rsState, r *RealServer, c *Checker) (*checkerRun, error) {
	st := c.settings()
	cr := &checkerRun{rs: rs, typ: c.Type, st: st, timeout: st.connectTimeout, dynWeight: -1, logAll: c.LogAllFailures,
		hidx: -1, fd: -1}
	ep := endpoint{addr: netip.AddrPortFrom(r.Addr, r.Port), bindIf: c.BindIf, fwmark: c.FWMark,
		bind: netip.AddrPortFrom(c.BindTo, c.BindPort)}
	if c.ConnectIP.IsValid() {
		ep.addr = netip.AddrPortFrom(c.ConnectIP, ep.addr.Port())
	}
	if c.ConnectPort != 0 {
		ep.addr = netip.AddrPortFrom(ep.addr.Addr(), c.ConnectPort)
	}
	host := r.VirtualHost
	if host == "" {
		host = rs.vs.cfg.VirtualHost
	}
	var err error
	if p.testProber != nil {
		cr.prober = p.testProber(r, c)
		return cr, nil
	}
	switch c.Type {
	case TCPCheck:
		if c.ViaVIP != nil {
			cr.prober, err = newViaVIPProber(ep, c.ViaVIP)
		} else if p.dialTCP {
			cr.prober = &dialTCPProber{ep: ep}
		} else if tp, terr := newTCPProber(ep); terr == nil {
			cr.tcp, cr.prober = tp, tp
		} else {
			// An address the raw socket cannot be given (a zone naming a
			// missing interface, bindto of the other family) fails at
			// each check, as it always did, rather than at Update.
			cr.prober = &dialTCPProber{ep: ep}
		}
	case HTTPGet, SSLGet:
		cr.prober, err = newHTTPProber(ep, c.Type == SSLGet, c.HTTP, host)
	case MiscCheck:
		var mp *miscProber
		mp, err = newMiscProber(c.Misc, p.opts.InsecureScripts, p.log, rs.desc+" VS "+rs.vs.key)
		if err == nil {
			cr.prober = mp
			cr.timeout = st.delayLoop
			if c.Misc.Timeout > 0 {
				cr.timeout = c.Misc.Timeout
			}
		}
	case PingCheck:
		cr.prober = &pingProber{ep: ep}
	case UDPCheck:
		cr.prober, err = newUDPProber(ep, c.UDP)
	case DNSCheck:
		if r.Port == 0 && c.ConnectPort == 0 {
			ep.addr = netip.AddrPortFrom(ep.addr.Addr(), 53)
		}
		cr.prober, err = newDNSProber(ep, c.DNS)
	case SMTPCheck:
		helo := DefaultSMTPHelo
		if c.SMTP != nil && c.SMTP.HeloName != "" {
			helo = c.SMTP.HeloName
		}
		cr.prober = &smtpProber{ep: ep, helo: helo}
	default:
		err = fmt.Errorf("unsupported checker type %q", c.Type)
	}
	if err != nil {
		return nil, err
	}
	return cr, nil
}

func (p *Pool) start(cr *checkerRun) {
	cr.ctx, cr.cancel = context.WithCancel(p.ctx)
	p.loop.post(loopOp{cr: cr})
}

// stop ends a checker: its probe in flight is cancelled and the loop
// drops it. Called with p.mu held.
func (p *Pool) stop(cr *checkerRun) {
	cr.cancel()
	cr.rs = nil
	p.loop.post(loopOp{cr: cr, remove: true})
}

// wakeGrid is the grid that wake-ups of checkers with a delay_loop of a
// second or more are rounded up to: checkers due in the same 20 ms wake
// the loop once between them instead of once each. At 1000 checks a
// second the loop sleeps 50 times a second instead of ~1000, which halves
// the pool's CPU (BenchmarkPool1000TCP, 0.05 against 0.10-0.12 cpu-s per
// second without the grid); the warmup still spreads them over delay_loop.
const wakeGrid = 20 * time.Millisecond

// onGrid rounds at up to the grid when the loop is long enough for 20 ms
// not to matter.
func onGrid(at time.Time, loop time.Duration) time.Time {
	if loop < 50*wakeGrid {
		return at
	}
	if r := at.UnixNano() % int64(wakeGrid); r != 0 {
		at = at.Add(wakeGrid - time.Duration(r))
	}
	return at
}

func (p *Pool) checkerUp(cr *checkerRun) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return cr.up
}

func (p *Pool) logAttempt(cr *checkerRun, r result) {
	p.mu.Lock()
	rs := cr.rs
	p.mu.Unlock()
	if rs == nil {
		return
	}
	p.log.Info(fmt.Sprintf("%s on service %s failed: %s", cr.typ, rs.desc, r.detail))
}

// report applies a checker's settled result.
func (p *Pool) report(cr *checkerRun, r result, retries int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := cr.rs
	if rs == nil || p.stopping {
		return
	}
	changed := cr.up != r.ok
	weightChanged := r.ok && cr.dynWeight != r.weight
	cr.up = r.ok
	if r.ok {
		cr.dynWeight = r.weight
	}
	switch {
	case changed && r.ok:
		p.log.Info(successLine(cr.typ, rs.desc))
	case changed:
		p.log.Info(fmt.Sprintf("%s on service %s failed after %d retries.", cr.typ, rs.desc, retries), "reason", r.detail)
	case !r.ok && cr.logAll:
		p.log.Info(fmt.Sprintf("%s on service %s failed: %s", cr.typ, rs.desc, r.detail))
	}
	if !changed && !weightChanged {
		return // the common case: nothing to derive, keep it O(1)
	}
	rs.up = rs.allUp()
	p.recompute(rs.vs)
	p.kick()
}

func successLine(t CheckType, desc string) string {
	switch t {
	case TCPCheck:
		return fmt.Sprintf("TCP connection to %s success.", desc)
	case HTTPGet, SSLGet:
		return fmt.Sprintf("HTTP status code success to %s url(s).", desc)
	case MiscCheck:
		return fmt.Sprintf("Misc check to %s success.", desc)
	case PingCheck:
		return fmt.Sprintf("ICMP connection to address %s success.", desc)
	case UDPCheck:
		return fmt.Sprintf("UDP connection to %s success.", desc)
	case DNSCheck:
		return fmt.Sprintf("DNS_CHECK (%s) succeeded.", desc)
	case SMTPCheck:
		return fmt.Sprintf("Remote SMTP server %s succeed.", desc)
	}
	return fmt.Sprintf("%s on service %s success.", t, desc)
}

// serverWeight is the configured weight, adjusted by misc_dynamic
// checkers (each sets the weight; several add their adjustments).
func (rs *rsState) serverWeight() int {
	base := rs.cfg.weight()
	w := base
	for _, c := range rs.checkers {
		if c.dynWeight >= 0 {
			w += c.dynWeight - base
		}
	}
	return max(w, 0)
}

func (p *Pool) liveWeight(vs *vsState) int {
	sum := 0
	for _, rs := range vs.servers {
		if rs.up {
			sum += rs.serverWeight()
		}
	}
	return sum
}

// recompute derives quorum, sorry server and every server's table state
// for vs and publishes what changed. Called with p.mu held.
func (p *Pool) recompute(vs *vsState) {
	live := p.liveWeight(vs)
	q, h := vs.quorum(), vs.cfg.Hysteresis
	switch {
	case vs.quorumUp && (live == 0 || live < q-h):
		vs.quorumUp = false
		p.log.Info(fmt.Sprintf("Lost quorum %d-%d=%d > %d for VS %s", q, h, q-h, live, vs.key))
		p.runScript(vs.cfg.QuorumDown, "quorum_down "+vs.key, "XVS_SERVICE="+vs.key, "XVS_STATE=DOWN")
	case !vs.quorumUp && live > 0 && live >= q+h:
		vs.quorumUp = true
		p.log.Info(fmt.Sprintf("Gained quorum %d+%d=%d <= %d for VS %s", q, h, q+h, live, vs.key))
		p.runScript(vs.cfg.QuorumUp, "quorum_up "+vs.key, "XVS_SERVICE="+vs.key, "XVS_STATE=UP")
	}
	sorryActive := vs.sorry != nil && !vs.quorumUp
	for _, k := range vs.order {
		rs := vs.servers[k]
		inPool, weight := false, 0
		switch {
		case rs.up && !sorryActive:
			inPool, weight = true, rs.serverWeight()
		case !rs.up && rs.cfg.InhibitOnFailure:
			inPool = true
		}
		old := rs.pub
		if old.valid && old.up == rs.up && old.inPool == inPool && old.weight == weight {
			continue
		}
		rs.pub = pubState{valid: true, up: rs.up, inPool: inPool, weight: weight}
		if old.valid {
			p.logServer(rs, old, rs.pub)
			if old.up != rs.up {
				script, state := rs.cfg.NotifyDown, "DOWN"
				if rs.up {
					script, state = rs.cfg.NotifyUp, "UP"
				}
				p.runScript(script, "notify "+rs.desc, "XVS_SERVICE="+vs.key, "XVS_SERVER="+rs.key, "XVS_STATE="+state)
			}
		}
		p.publish(Transition{Service: vs.key, Server: rs.key, Up: rs.up, InPool: inPool, Weight: weight})
	}
	if vs.sorry != nil {
		s := vs.cfg.Sorry
		inPool, weight := sorryActive, 0
		if sorryActive {
			weight = 1
		}
		if s.Inhibit {
			inPool = true
		}
		old := *vs.sorry
		if !old.valid || old.inPool != inPool || old.weight != weight {
			*vs.sorry = pubState{valid: true, up: true, inPool: inPool, weight: weight}
			desc := fmtEndpoint(s.Addr, vs.proto, s.Port)
			if sorryActive && (!old.valid || old.weight == 0) {
				p.log.Info(fmt.Sprintf("Adding sorry server %s to VS %s", desc, vs.key))
			} else if !sorryActive && old.valid && old.weight > 0 {
				p.log.Info(fmt.Sprintf("Removing sorry server %s from VS %s", desc, vs.key))
			}
			p.publish(Transition{Service: vs.key, Server: serverKey(s.Addr, s.Port), Up: true,
				InPool: inPool, Weight: weight, Sorry: true})
		}
	}
}

func (p *Pool) logServer(rs *rsState, old, now pubState) {
	vs := rs.vs.key
	switch {
	case now.inPool && !old.inPool:
		p.log.Info(fmt.Sprintf("Adding service %s to VS %s", rs.desc, vs))
	case !now.inPool && old.inPool:
		p.log.Info(fmt.Sprintf("Removing service %s from VS %s", rs.desc, vs))
	case now.inPool && now.weight == 0 && old.weight != 0:
		p.log.Info(fmt.Sprintf("Disabling service %s from VS %s", rs.desc, vs))
	case now.inPool && old.weight == 0 && now.weight != 0:
		p.log.Info(fmt.Sprintf("Enabling service %s to VS %s", rs.desc, vs))
	case now.inPool && now.weight != old.weight:
		p.log.Info(fmt.Sprintf("Changing weight from %d to %d for service %s of VS %s", old.weight, now.weight, rs.desc, vs))
	}
}

// publish queues t; called with p.mu held.
func (p *Pool) publish(t Transition) {
	p.queue = append(p.queue, event{t: &t})
}

// runScript queues a script run; called with p.mu held.
func (p *Pool) runScript(cmd, what string, env ...string) {
	if cmd == "" {
		return
	}
	p.queue = append(p.queue, event{script: cmd, env: env, what: what})
}

func (p *Pool) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// dispatch delivers queued events in order until Close.
func (p *Pool) dispatch() {
	defer close(p.dispDone)
	for {
		p.mu.Lock()
		q := p.queue
		p.queue = nil
		closed := p.closed
		p.mu.Unlock()
		for _, e := range q {
			p.deliver(e)
		}
		if closed && len(q) == 0 {
			return
		}
		if len(q) == 0 {
			<-p.wake
		}
	}
}

func (p *Pool) deliver(e event) {
	if e.t != nil {
		p.nTransitions.Add(1)
		p.onT(*e.t)
		return
	}
	p.scripts.Add(1)
	go func() {
		defer p.scripts.Done()
		p.execScript(e.script, e.what, e.env)
	}()
}

// execScript vets and runs a notify or quorum script with NotifyTimeout.
func (p *Pool) execScript(script, what string, env []string) {
	argv, err := splitCommand(script)
	if err == nil {
		argv, err = vetScript(argv, p.opts.InsecureScripts)
	}
	if err != nil {
		p.nRefused.Add(1)
		p.log.Warn(fmt.Sprintf("%s: script refused: %v", what, err))
		return
	}
	p.nScripts.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.NotifyTimeout)
	defer cancel()
	code, err := runScript(ctx, argv, env)
	if err != nil || code != 0 {
		p.log.Warn(fmt.Sprintf("%s: script %s exited with status %d", what, argv[0], code), "err", err)
	}
}

// State returns every server of every service, sorted.
func (p *Pool) State() []ServerState {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []ServerState
	for _, vs := range p.services {
		for _, k := range vs.order {
			rs := vs.servers[k]
			st := ServerState{Service: vs.key, Server: rs.key, Up: rs.up, InPool: rs.pub.inPool,
				Weight: rs.pub.weight, QuorumUp: vs.quorumUp}
			for _, c := range rs.checkers {
				st.Checks = append(st.Checks, CheckState{Type: c.typ, Up: c.up})
			}
			out = append(out, st)
		}
		if vs.sorry != nil {
			s := vs.cfg.Sorry
			out = append(out, ServerState{Service: vs.key, Server: serverKey(s.Addr, s.Port), Up: true,
				InPool: vs.sorry.inPool, Weight: vs.sorry.weight, Sorry: true, QuorumUp: vs.quorumUp})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		if out[i].Sorry != out[j].Sorry {
			return !out[i].Sorry
		}
		return out[i].Server < out[j].Server
	})
	return out
}

// Close stops every checker and waits for them, runs the omega notifiers,
// delivers the remaining transitions and waits for running scripts.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		return
	}
	p.stopping = true
	p.cancel()
	p.loop.stop()
	p.mu.Unlock()
	p.checkers.Wait()
	p.mu.Lock()
	for _, vs := range p.services {
		if !vs.cfg.Omega {
			continue
		}
		for _, k := range vs.order {
			if rs := vs.servers[k]; rs.up {
				p.runScript(rs.cfg.NotifyDown, "notify "+rs.desc, "XVS_SERVICE="+vs.key, "XVS_SERVER="+rs.key, "XVS_STATE=DOWN")
			}
		}
		if vs.quorumUp {
			p.runScript(vs.cfg.QuorumDown, "quorum_down "+vs.key, "XVS_SERVICE="+vs.key, "XVS_STATE=DOWN")
		}
	}
	p.closed = true
	p.mu.Unlock()
	p.kick()
	<-p.dispDone
	p.scripts.Wait()
}
