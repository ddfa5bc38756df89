package vrrp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Packet is one received VRRP message with what the IP layer told about it.
type Packet struct {
	Data []byte // the VRRP message (IP payload)
	Src  netip.Addr
	Dst  netip.Addr
	TTL  int // IPv4 TTL or IPv6 hop limit; -1 if unknown
}

// Conn carries VRRP messages for one interface and address family. Send
// adds the IP header (protocol 112, TTL/hop limit 255, source src).
type Conn interface {
	Send(b []byte, src, dst netip.Addr) error
	// Recv blocks for the next message; it reuses p.Data's capacity.
	Recv(p *Packet) error
	Close() error
}

// Host is everything the speaker asks of the operating system. [LinuxHost]
// implements it with raw sockets, netlink and ARP/NDP; tests use a fake.
type Host interface {
	// Open returns a Conn on ifname joined to group (if valid).
	Open(ifname string, v6 bool, group netip.Addr) (Conn, error)
	// PrimaryAddr is the source for adverts: the first IPv4 address, or
	// the IPv6 link-local address, of ifname.
	PrimaryAddr(ifname string, v6 bool) (netip.Addr, error)
	LinkUp(ifname string) (bool, error)
	AddAddr(v VIP) error
	DelAddr(v VIP) error
	// Announce sends one gratuitous ARP (IPv4) or unsolicited neighbour
	// advertisement (IPv6) for ip out of dev.
	Announce(dev string, ip netip.Addr) error
	// SetupVMAC creates (or adopts) the macvlan v, applies the interface
	// settings keepalived applies and brings it up.
	SetupVMAC(v VMAC) error
	// RemoveVMAC deletes the macvlan v and restores its base's settings.
	RemoveVMAC(v VMAC) error
}

// LinkWatcher is implemented by hosts that can report link changes as they
// happen (netlink on Linux); polling remains as a fallback.
type LinkWatcher interface {
	// WatchLinks calls changed, from its own goroutine, after any link is
	// added, removed or changes state, until done is closed.
	WatchLinks(done <-chan struct{}, changed func()) error
}

// VMAC is one use_vmac interface.
type VMAC struct {
	Name string           // the macvlan's name (use_vmac NAME, default vrrp.VRID)
	Base string           // the instance's interface
	MAC  net.HardwareAddr // 00:00:5e:00:01:VRID, or 00:00:5e:00:02:VRID for IPv6
	V6   bool
	// LinkLocal (IPv6 only) is the base's link-local address; it is added
	// to the macvlan so that adverts leave from it with the virtual MAC
	// (RFC 5798 §7.4: the virtual router has no link-local of its own).
	LinkLocal netip.Addr
}

// vmacAddr is the virtual router MAC of RFC 5798 §7.3.
func vmacAddr(vrid uint8, v6 bool) net.HardwareAddr {
	if v6 {
		return net.HardwareAddr{0, 0, 0x5e, 0, 2, vrid}
	}
	return net.HardwareAddr{0, 0, 0x5e, 0, 1, vrid}
}

// ErrNoLink is wrapped by Host errors about an interface that does not
// exist; such an instance waits in FAULT for the interface to appear.
var ErrNoLink = errors.New("no such interface")

// ErrNoAddr is wrapped by PrimaryAddr when the interface has no usable
// address yet; the instance waits in FAULT, as keepalived's does.
var ErrNoAddr = errors.New("no usable address")

// Clock is the time source of the state machine.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Option configures New.
type Option func(*Speaker)

// WithHost replaces the Linux host (tests pass a fake).
func WithHost(h Host) Option { return func(s *Speaker) { s.host = h } }

// WithClock replaces the wall clock.
func WithClock(c Clock) Option { return func(s *Speaker) { s.clock = c } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Speaker) { s.log = l } }

// WithStateHook registers fn, called on every instance transition, in
// order, from the speaker's goroutine; it must not block (the dataplane
// stores a snapshot). It may call States and Stats.
func WithStateHook(fn func(instance string, s State)) Option {
	return func(s *Speaker) { s.onState = fn }
}

// WithLinkPoll sets how often link state is polled for track_interface and
// the instances' own interfaces. The default is 100ms, or 1s while the
// host's [LinkWatcher] reports changes as they happen.
func WithLinkPoll(d time.Duration) Option {
	return func(s *Speaker) { s.linkPoll, s.pollSet = d, true }
}

// InstanceStats are one instance's counters.
type InstanceStats struct {
	State          State
	Priority       uint8 // effective priority
	AdvertsSent    uint64
	AdvertsRecv    uint64 // accepted
	PriorityZeroTx uint64
	PriorityZeroRx uint64
	BecameMaster   uint64
	LeftMaster     uint64
	Drops          [numDropReasons]uint64 // indexed by DropReason
}

// DropsByName is Drops keyed by DropReason.String() (for metrics).
func (s InstanceStats) DropsByName() map[string]uint64 {
	m := make(map[string]uint64, numDropReasons-1)
	for r := DropNone + 1; r < numDropReasons; r++ {
		m[r.String()] = s.Drops[r]
	}
	return m
}

// Dropped is the count for reason r.
func (s InstanceStats) Dropped(r DropReason) uint64 {
	if r < numDropReasons {
		return s.Drops[r]
	}
	return 0
}

// Stats is a snapshot of the speaker's counters.
type Stats struct {
	Instances map[string]InstanceStats
	// Unattributed counts drops of packets that match no instance.
	Unattributed [numDropReasons]uint64
}

type connKey struct {
	ifname string
	v6     bool
}

type connState struct {
	key    connKey
	conn   Conn
	byVRID [256]*instance
	logged [numDropReasons]bool
	users  int  // instances using it; closed at zero
	closed bool // its readLoop's queued packets are stale
	// vmac is set on an instance's own macvlan conn, which hears every
	// advert on the LAN; other VRIDs are counted on the base conn.
	vmac bool
}

// linkState is what the last poll saw of one interface.
type linkState struct {
	up     bool
	exists bool
}

type group struct {
	cfg     *SyncGroup
	members []*instance
	state   State
}

type scriptState struct {
	cfg   *Script
	known bool // a first result arrived
	ok    bool // current status after rise/fall
	run   int  // consecutive results equal to !ok
}

// event is something the core reacts to besides time passing.
type event struct {
	cs     *connState
	pkt    Packet
	script string
	ok     bool
}

// Speaker runs the VRRP instances of one Config.
type Speaker struct {
	cfg      Config
	host     Host
	clock    Clock
	log      *slog.Logger
	onState  func(string, State)
	linkPoll time.Duration
	pollSet  bool // WithLinkPoll was given

	live     bool           // Run is running: opened conns get a readLoop
	wg       sync.WaitGroup // readLoops and script loops
	linkKick chan struct{}  // the link watcher saw a change

	events  chan event
	stopCh  chan struct{}
	stopped sync.Once
	running chan struct{} // closed when Run returns
	entered atomic.Bool   // Run was called

	nmu      sync.Mutex // guards the notification queue
	nq       []func()
	nrunning bool
	nwg      sync.WaitGroup

	// mu guards all state below. The core holds it while it handles an
	// event or a tick; States and Stats take it to copy.
	mu           sync.Mutex
	insts        []*instance
	byName       map[string]*instance
	groups       []*group
	conns        []*connState
	scripts      map[string]*scriptState
	links        map[string]linkState
	linkAt       time.Time
	baseGroup    map[connKey]netip.Addr // group the shared conn joins
	vmacRx       map[connKey]*[256]bool // VRIDs read on a vmac instead
	unattributed [numDropReasons]uint64
	started      bool
	finished     bool
	syncing      bool          // syncMembers is moving a group; no recursion
	hooks        []stateChange // OnState calls to make once mu is released
}

type stateChange struct {
	name  string
	state State
}

// unlockAndNotify releases mu, then calls the state hook for transitions
// made while it was held, so that the hook may call States or Stats.
func (s *Speaker) unlockAndNotify() {
	hooks := s.hooks
	s.hooks = nil
	s.mu.Unlock()
	for _, h := range hooks {
		s.onState(h.name, h.state)
	}
}

// New checks cfg and builds a speaker. Nothing touches the network until Run.
func New(cfg Config, opts ...Option) (*Speaker, error) {
	ncfg, err := normalize(cfg)
	if err != nil {
		return nil, err
	}
	s := &Speaker{
		cfg:       ncfg,
		clock:     realClock{},
		log:       slog.Default(),
		linkPoll:  100 * time.Millisecond,
		events:    make(chan event, 256),
		stopCh:    make(chan struct{}),
		running:   make(chan struct{}),
		byName:    map[string]*instance{},
		scripts:   map[string]*scriptState{},
		links:     map[string]linkState{},
		linkKick:  make(chan struct{}, 1),
		baseGroup: map[connKey]netip.Addr{},
		vmacRx:    map[connKey]*[256]bool{},
	}
	for _, o := range opts {
		o(s)
	}
	if s.host == nil {
		s.host = NewLinuxHost()
	}
	for i := range s.cfg.Scripts {
		sc := &s.cfg.Scripts[i]
		s.scripts[sc.Name] = &scriptState{cfg: sc, ok: true}
	}
	for i := range s.cfg.Instances {
		in := newInstance(s, &s.cfg.Instances[i])
		s.insts = append(s.insts, in)
		s.byName[in.cfg.Name] = in
		// Links start as up: the first poll logs only what is not.
		s.links[in.cfg.Interface] = linkState{up: true, exists: true}
		for _, ti := range in.cfg.TrackInterfaces {
			s.links[ti.Name] = linkState{up: true, exists: true}
		}
		if in.vmac != nil {
			s.links[in.vmac.Name] = linkState{}
		}
		k := connKey{in.cfg.Interface, in.v6}
		if in.rxOnBase() && len(in.cfg.UnicastPeers) == 0 {
			s.baseGroup[k] = in.dsts[0]
		}
		if !in.rxOnBase() {
			if s.vmacRx[k] == nil {
				s.vmacRx[k] = new([256]bool)
			}
			s.vmacRx[k][in.cfg.VirtualRouterID] = true
		}
	}
	for i := range s.cfg.SyncGroups {
		g := &group{cfg: &s.cfg.SyncGroups[i], state: StateInit}
		for _, m := range g.cfg.Group {
			in := s.byName[m]
			in.group = g
			g.members = append(g.members, in)
		}
		s.groups = append(s.groups, g)
	}
	return s, nil
}

// start attaches every instance to its interface and sets its initial
// state (RFC 5798 §6.4.1 with keepalived's handling of `state MASTER`). An
// instance whose interface is missing, or has no address yet, starts in
// FAULT and is attached when the interface appears; other errors fail.
func (s *Speaker) start() error {
	s.mu.Lock()
	defer s.unlockAndNotify()
	now := s.clock.Now()
	s.pollLinks(now)
	for _, in := range s.insts {
		if !s.links[in.cfg.Interface].exists {
			in.logAttach(fmt.Errorf("interface %s: %w", in.cfg.Interface, ErrNoLink))
			continue
		}
		if err := in.attach(); err != nil {
			if errors.Is(err, ErrNoLink) || errors.Is(err, ErrNoAddr) {
				in.logAttach(err)
				continue
			}
			for _, o := range s.insts {
				o.detach(false)
			}
			return err
		}
	}
	for _, in := range s.insts {
		in.evalTracking()
	}
	s.started = true
	for _, in := range s.insts {
		in.initState(now)
	}
	for _, g := range s.groups {
		s.syncGroupState(g)
	}
	return nil
}

// acquire returns the conn on (ifname, v6), opening it if needed.
// vmac marks an instance's own macvlan conn.
func (s *Speaker) acquire(k connKey, group netip.Addr, vmac bool) (*connState, error) {
	for _, cs := range s.conns {
		if cs.key == k {
			cs.users++
			return cs, nil
		}
	}
	c, err := s.host.Open(k.ifname, k.v6, group)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", k.ifname, err)
	}
	cs := &connState{key: k, conn: c, users: 1, vmac: vmac}
	s.conns = append(s.conns, cs)
	if s.live {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.readLoop(cs)
		}()
	}
	return cs, nil
}

// release drops one user of cs and closes it after the last.
func (s *Speaker) release(cs *connState) {
	cs.users--
	if cs.users > 0 {
		return
	}
	cs.closed = true
	cs.conn.Close()
	for i, c := range s.conns {
		if c == cs {
			s.conns = append(s.conns[:i], s.conns[i+1:]...)
			break
		}
	}
}

func (s *Speaker) closeConns() {
	for _, cs := range s.conns {
		cs.conn.Close()
	}
}

// Run runs the speaker until ctx is done or Stop is called; either way it
// leaves gracefully (priority 0 from every MASTER, VIPs removed).
func (s *Speaker) Run(ctx context.Context) error {
	if s.entered.Swap(true) {
		return errors.New("vrrp: Run called twice")
	}
	defer close(s.running)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.watchLinks(sctx.Done())
	s.mu.Lock()
	s.live = true
	s.mu.Unlock()
	if err := s.start(); err != nil {
		cancel()
		s.wg.Wait()
		return err
	}
	for _, sc := range s.scripts {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.scriptLoop(sctx, sc.cfg)
		}()
	}
	for s.runOnce(ctx) {
	}
	cancel()
	s.shutdown(true)
	s.wg.Wait()
	s.flushNotify()
	return nil
}

// runOnce waits for the next event or timer and handles it; false means stop.
func (s *Speaker) runOnce(ctx context.Context) bool {
	s.mu.Lock()
	next := s.nextDeadline()
	s.mu.Unlock()
	d := next.Sub(s.clock.Now())
	if d < 0 {
		d = 0
	}
	select {
	case <-ctx.Done():
		return false
	case <-s.stopCh:
		return false
	case ev := <-s.events:
		s.handle(ev)
	case <-s.linkKick:
		s.linksChanged()
	case <-s.clock.After(d):
		s.tick()
	}
	return true
}

// Stop makes Run return after a graceful leave and waits for it.
// Calling Stop on a speaker that never ran is harmless.
func (s *Speaker) Stop() {
	s.stopped.Do(func() { close(s.stopCh) })
	if s.entered.Load() {
		<-s.running
	}
}

// Abort closes the speaker's sockets without any goodbye (no priority-0
// advert, VIPs left in place), as a crash would. For tests and fencing.
func (s *Speaker) Abort() {
	s.mu.Lock()
	s.finished = true
	s.closeConns()
	s.mu.Unlock()
	s.stopped.Do(func() { close(s.stopCh) })
}

// shutdown leaves every instance: keepalived sends priority 0 from MASTER so
// a backup takes over after Skew_Time instead of Master_Down_Interval.
func (s *Speaker) shutdown(graceful bool) {
	s.mu.Lock()
	defer s.unlockAndNotify()
	if s.finished {
		return
	}
	s.finished = true
	now := s.clock.Now()
	if graceful {
		for _, in := range s.insts {
			in.stop(now)
		}
		for _, g := range s.groups {
			s.notifyGroup(g, StateStop)
		}
		for _, in := range s.insts {
			in.detach(true)
		}
	}
	s.closeConns()
}

func (s *Speaker) readLoop(cs *connState) {
	for {
		p := Packet{Data: make([]byte, 0, 1500)}
		if err := cs.conn.Recv(&p); err != nil {
			if errors.Is(err, ErrClosed) {
				return
			}
			s.log.Warn("vrrp: receive failed", "interface", cs.key.ifname, "err", err)
			select {
			case <-s.stopCh:
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		select {
		case s.events <- event{cs: cs, pkt: p}:
		case <-s.stopCh:
			return
		}
	}
}

// ErrClosed is returned by Conn.Recv after Close.
var ErrClosed = errors.New("vrrp: connection closed")

// States returns each instance's current state.
func (s *Speaker) States() map[string]State {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]State, len(s.insts))
	for _, in := range s.insts {
		m[in.cfg.Name] = in.state
	}
	return m
}

// Stats returns a copy of the counters.
func (s *Speaker) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Instances: make(map[string]InstanceStats, len(s.insts)), Unattributed: s.unattributed}
	for _, in := range s.insts {
		c := in.stats
		c.State = in.state
		c.Priority = in.prio
		st.Instances[in.cfg.Name] = c
	}
	return st
}

// handle processes one event under the lock.
func (s *Speaker) handle(ev event) {
	s.mu.Lock()
	defer s.unlockAndNotify()
	if s.finished || !s.started {
		return
	}
	now := s.clock.Now()
	if ev.cs != nil {
		if ev.cs.closed {
			return
		}
		s.handlePacket(ev.cs, &ev.pkt, now)
		return
	}
	s.scriptResult(ev.script, ev.ok, now)
}

// tick fires every timer that is due.
func (s *Speaker) tick() {
	s.mu.Lock()
	defer s.unlockAndNotify()
	if s.finished || !s.started {
		return
	}
	now := s.clock.Now()
	if !now.Before(s.linkAt) {
		// Detached instances retry on every poll: an address may have
		// appeared, which is not a link event.
		if s.pollLinks(now) || s.anyDetached() {
			s.reevaluate(now)
		}
	}
	for _, in := range s.insts {
		in.timers(now)
	}
}

func (s *Speaker) nextDeadline() time.Time {
	next := s.linkAt
	for _, in := range s.insts {
		for _, t := range [...]time.Time{in.downAt, in.adverAt, in.garpAt, in.refreshAt} {
			if !t.IsZero() && t.Before(next) {
				next = t
			}
		}
	}
	return next
}

// pollLinks refreshes link states; it reports whether any changed.
func (s *Speaker) pollLinks(now time.Time) bool {
	s.linkAt = now.Add(s.linkPoll)
	changed := false
	for name, was := range s.links {
		up, err := s.host.LinkUp(name)
		st := linkState{up: up && err == nil, exists: err == nil || !errors.Is(err, ErrNoLink)}
		if st != was {
			s.log.Info("vrrp: link state changed", "interface", name, "up", st.up, "exists", st.exists)
			s.links[name] = st
			changed = true
		}
	}
	return changed
}

// linksChanged handles a report from the link watcher.
func (s *Speaker) linksChanged() {
	s.mu.Lock()
	defer s.unlockAndNotify()
	if s.finished || !s.started {
		return
	}
	now := s.clock.Now()
	if s.pollLinks(now) || s.anyDetached() {
		s.reevaluate(now)
	}
}

func (s *Speaker) anyDetached() bool {
	for _, in := range s.insts {
		if !in.attached {
			return true
		}
	}
	return false
}

// watchLinks subscribes to link changes if the host can; the poll then
// only backs it up (and retries detached instances).
func (s *Speaker) watchLinks(done <-chan struct{}) {
	w, ok := s.host.(LinkWatcher)
	if !ok {
		return
	}
	err := w.WatchLinks(done, func() {
		select {
		case s.linkKick <- struct{}{}:
		default: // one pending kick re-reads every link
		}
	})
	if err != nil {
		s.log.Warn("vrrp: cannot subscribe to link changes; polling only", "every", s.linkPoll, "err", err)
		return
	}
	if !s.pollSet {
		s.linkPoll = time.Second
	}
}

// scriptResult applies rise/fall hysteresis to one script run.
func (s *Speaker) scriptResult(name string, ok bool, now time.Time) {
	sc := s.scripts[name]
	if sc == nil {
		return
	}
	if !sc.known {
		// The first result decides at once (keepalived's init state needs
		// one result either way).
		sc.known = true
		if sc.ok == ok {
			return
		}
		sc.ok = ok
		s.log.Info("vrrp: script status", "script", name, "ok", ok)
		s.reevaluate(now)
		return
	}
	if ok == sc.ok {
		sc.run = 0
		return
	}
	sc.run++
	need := sc.cfg.Fall
	if ok {
		need = sc.cfg.Rise
	}
	if sc.run < need {
		return
	}
	sc.run = 0
	sc.ok = ok
	s.log.Info("vrrp: script status", "script", name, "ok", ok)
	s.reevaluate(now)
}

// reevaluate recomputes priorities and faults after a tracked object changed,
// and moves instances (and their sync groups) in or out of FAULT.
func (s *Speaker) reevaluate(now time.Time) {
	for _, in := range s.insts {
		in.followInterface(now)
	}
	for _, in := range s.insts {
		in.evalTracking()
	}
	for _, in := range s.insts {
		fault := in.fault || (in.group != nil && groupFault(in.group))
		switch {
		case fault && in.state != StateFault:
			in.enterFault(now)
		case !fault && in.state == StateFault:
			in.leaveFault(now)
		}
	}
	for _, g := range s.groups {
		s.syncGroupState(g)
	}
}

func groupFault(g *group) bool {
	for _, m := range g.members {
		if m.fault {
			return true
		}
	}
	return false
}

// syncGroupState derives the group's state from its members and notifies
// on change: FAULT if any member is, MASTER if all are, else BACKUP.
func (s *Speaker) syncGroupState(g *group) {
	st := StateMaster
	for _, m := range g.members {
		switch m.state {
		case StateFault:
			st = StateFault
		case StateBackup, StateInit:
			if st != StateFault {
				st = StateBackup
			}
		}
	}
	if st != g.state {
		g.state = st
		s.log.Info("vrrp: sync group state", "group", g.cfg.Name, "state", st)
		s.notifyGroup(g, st)
	}
}

// syncMembers moves the other members of in's group to st (master or
// backup), as keepalived's vrrp_sync_master/vrrp_sync_backup do.
func (s *Speaker) syncMembers(in *instance, st State, now time.Time) {
	g := in.group
	if g == nil || s.syncing {
		return
	}
	s.syncing = true
	defer func() { s.syncing = false }()
	for _, m := range g.members {
		if m == in || m.state == st || m.state == StateFault {
			continue
		}
		switch st {
		case StateMaster:
			m.becomeMaster(now)
		case StateBackup:
			m.becomeBackup(now)
		}
	}
	s.syncGroupState(g)
}
