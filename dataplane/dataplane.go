package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xvs-lb/xvs/bpf"
)

// Config sizes and places the dataplane.
type Config struct {
	// Interfaces to serve: the client side, and for NAT also the real
	// servers' side. Every one gets the director program and sockets.
	Interfaces    []string
	Queues        int // RX queues per interface to serve; 0 = all
	ConnTableSize int // flows + templates; default 1<<20
	BatchSize     int // descriptors per batch; default 64
	Frames        int // UMEM frames per socket; default 4096
	FrameSize     int // default 2048 (256 bytes of it are headroom)
	RingSize      int // each AF_XDP ring; default 2048
	// SweepInterval is how often the sweeper reaps one slice of the conn
	// table; a full pass takes FullSweep. Defaults 100 ms and 5 s.
	SweepInterval time.Duration
	FullSweep     time.Duration
	// ResolveInterval is how often real-server MACs are re-resolved;
	// default 10 s.
	ResolveInterval time.Duration
}

func (c *Config) defaults() error {
	if len(c.Interfaces) == 0 {
		return errors.New("dataplane config: no interfaces")
	}
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&c.ConnTableSize, 1<<20)
	def(&c.BatchSize, 64)
	def(&c.Frames, 4096)
	def(&c.FrameSize, 2048)
	def(&c.RingSize, 2048)
	if c.BatchSize > MaxBatch {
		return fmt.Errorf("dataplane config: batch %d larger than %d", c.BatchSize, MaxBatch)
	}
	if c.BatchSize > c.RingSize {
		return fmt.Errorf("dataplane config: batch %d larger than ring %d", c.BatchSize, c.RingSize)
	}
	for _, d := range []*time.Duration{&c.SweepInterval, &c.FullSweep, &c.ResolveInterval} {
		if *d < 0 {
			return errors.New("dataplane config: negative interval")
		}
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = 100 * time.Millisecond
	}
	if c.FullSweep == 0 {
		c.FullSweep = 5 * time.Second
	}
	if c.ResolveInterval == 0 {
		c.ResolveInterval = 10 * time.Second
	}
	return nil
}

type iface struct {
	name  string
	index int
	mac   [6]byte
	link  link.Link
}

// Dataplane is xvs's packet path on a set of interfaces: the director XDP
// program, one AF_XDP socket and worker per RX queue, the conn table, the
// services snapshot and the MAC resolver.
type Dataplane struct {
	cfg     Config
	table   *ConnTable
	snap    atomic.Pointer[Snapshot]
	dirs    []*bpf.Director // one per interface: an XSKMAP is keyed by queue alone
	ifaces  []*iface
	ports   []portInfo
	neigh   *neighCache
	workers []*worker
	res     *Resolver

	// Control plane state, under mu.
	mu       sync.Mutex
	services []ServiceConfig
	ids      idAllocator
	running  bool
	closed   bool

	kick   chan struct{} // asks the resolver goroutine for a round now
	stop   atomic.Bool
	cancel context.CancelFunc // ends Run's goroutines; set under mu
	wg     sync.WaitGroup
}

// New loads and attaches the director program, opens the sockets and starts
// nothing yet (Run starts the workers). Call it in the network namespace of
// the interfaces: sockets and the XDP attachment are made there.
func New(cfg Config) (_ *Dataplane, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	dp := &Dataplane{
		cfg:   cfg,
		table: NewConnTable(cfg.ConnTableSize),
		ids:   idAllocator{ids: map[destIdentity]uint16{}},
		kick:  make(chan struct{}, 1),
		neigh: newNeighCache(),
	}
	defer func() {
		if err != nil {
			dp.teardown()
		}
	}()
	var nifs []*net.Interface
	for _, name := range cfg.Interfaces {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("dataplane: interface %s: %w", name, err)
		}
		a := l.Attrs()
		ifc := &iface{name: name, index: a.Index}
		copy(ifc.mac[:], a.HardwareAddr)
		pi := portInfo{mac: ifc.mac, mtu: a.MTU}
		if addrs, err := netlink.AddrList(l, netlink.FAMILY_V4); err == nil {
			for _, ad := range addrs {
				if ip, ok := netip.AddrFromSlice(ad.IP.To4()); ok && ad.Flags&unix.IFA_F_SECONDARY == 0 {
					pi.src4, pi.has4 = ip.As4(), true
					break
				}
			}
		}
		if addrs, err := netlink.AddrList(l, netlink.FAMILY_V6); err == nil {
			for _, ad := range addrs {
				ip, ok := netip.AddrFromSlice(ad.IP)
				if ok && ip.Is6() && !ip.Is4In6() && ip.IsGlobalUnicast() && ad.Flags&(unix.IFA_F_DADFAILED|unix.IFA_F_DEPRECATED) == 0 {
					pi.src6, pi.has6 = ip.As16(), true
					break
				}
			}
		}
		dp.ifaces = append(dp.ifaces, ifc)
		dp.ports = append(dp.ports, pi)
		nifs = append(nifs, &net.Interface{Index: a.Index, Name: name, HardwareAddr: a.HardwareAddr, MTU: a.MTU})
	}
	for port, ifc := range dp.ifaces {
		// Each interface has its own program instance and maps: the XSKMAP
		// is indexed by RX queue, and queue 0 of two interfaces needs two
		// sockets.
		dir, err := bpf.LoadDirector()
		if err != nil {
			return nil, fmt.Errorf("dataplane: %w", err)
		}
		dp.dirs = append(dp.dirs, dir)
		l, err := netlink.LinkByIndex(ifc.index)
		if err != nil {
			return nil, fmt.Errorf("dataplane: interface %s: %w", ifc.name, err)
		}
		queues := max(l.Attrs().NumRxQueues, 1)
		if cfg.Queues > 0 {
			queues = min(queues, cfg.Queues)
		}
		for q := range queues {
			x, err := newXSK(ifc.index, q, xskConfig{Frames: cfg.Frames, FrameSize: cfg.FrameSize, RingSize: cfg.RingSize})
			if q > 0 && errors.Is(err, unix.EINVAL) {
				// IFLA_NUM_RX_QUEUES counts allocated queues (veth
				// allocates one per possible CPU); bind fails past
				// the real ones.
				break
			}
			if err != nil {
				return nil, fmt.Errorf("dataplane: %s queue %d: %w", ifc.name, q, err)
			}
			qs := &QueueStats{}
			w := &worker{
				ifname: ifc.name, port: port, x: x, q: qs, batch: cfg.BatchSize, pk: make([]batchPkt, MaxBatch),
				f: newForwarder(dp.table, dp.ports, port, dp.neigh, qs), snap: &dp.snap, table: dp.table,
				out: make([]*pktSender, len(dp.ifaces)),
			}
			dp.workers = append(dp.workers, w)
			for op, oifc := range dp.ifaces {
				if op == port {
					continue
				}
				if w.out[op], err = newPktSender(oifc.index); err != nil {
					return nil, fmt.Errorf("dataplane: %s queue %d: TX socket on %s: %w", ifc.name, q, oifc.name, err)
				}
			}
			if err := dir.RegisterSocket(q, x.fd); err != nil {
				return nil, fmt.Errorf("dataplane: %s: %w", ifc.name, err)
			}
		}
		ifc.link, err = dir.Attach(ifc.index)
		if err != nil {
			return nil, fmt.Errorf("dataplane: %w", err)
		}
	}
	if dp.res, err = NewResolver(nifs); err != nil {
		return nil, fmt.Errorf("dataplane: %w", err)
	}
	return dp, nil
}

// Table returns the conn table (for the sync daemon and tests).
func (dp *Dataplane) Table() *ConnTable { return dp.table }

// Snapshot returns the services snapshot the workers use now.
func (dp *Dataplane) Snapshot() *Snapshot { return dp.snap.Load() }

// SetServices replaces the service set: it resolves MACs it does not know
// yet (bounded wait), builds a snapshot, publishes it to the workers and
// makes the XDP program claim exactly the active services.
func (dp *Dataplane) SetServices(cfgs []ServiceConfig) error {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if dp.closed {
		return errors.New("dataplane: closed")
	}
	cfgs = append([]ServiceConfig(nil), cfgs...)
	var need []netip.Addr
	for _, c := range cfgs {
		for _, d := range c.Dests {
			if len(d.MAC) != 6 {
				if _, ok := dp.res.Lookup(d.Addr.Unmap()); !ok {
					need = append(need, d.Addr.Unmap())
				}
			}
		}
	}
	if len(need) > 0 {
		// Bounded: a real server that does not answer stays unavailable
		// and the background resolver keeps trying.
		dp.res.Resolve(need, 300*time.Millisecond, time.Second)
	}
	if err := dp.publishLocked(cfgs); err != nil {
		return err
	}
	dp.services = cfgs
	select {
	case dp.kick <- struct{}{}:
	default:
	}
	return nil
}

func (dp *Dataplane) publishLocked(cfgs []ServiceConfig) error {
	s, err := buildSnapshot(cfgs, dp.snap.Load(), &dp.ids, dp.table, dp.res.hop)
	if err != nil {
		return fmt.Errorf("dataplane: %w", err)
	}
	var keys, reals []bpf.ServiceKey
	seen := map[bpf.RealKey]bool{}
	addReal := func(k bpf.RealKey) {
		if !seen[k] {
			seen[k] = true
			reals = append(reals, k)
		}
	}
	for _, svc := range s.list {
		// Inactive services (VRRP BACKUP) are claimed too, and their
		// packets dropped as inactive: at a takeover VRRP adds the VIP to
		// the interface before this director's services turn active, and
		// unclaimed packets in that window would reach the kernel, which
		// now owns the VIP, has no socket for it, and resets the client's
		// connection. Dropped, they are retransmitted.
		keys = append(keys, bpf.ServiceKey{Addr: svc.Key.Addr, Proto: svc.Key.Proto, Port: svc.Key.Port})
		// Replies from NAT real servers, and the ICMP errors they send.
		for _, d := range svc.dests {
			if d.Method != NAT {
				continue
			}
			port := d.Port
			if svc.Key.Port == 0 {
				port = 0
			}
			addReal(bpf.RealKey{Addr: d.Addr, Proto: svc.Key.Proto, Port: port})
			icmp := uint8(ProtoICMP)
			if !d.Addr.Is4() {
				icmp = ProtoICMPv6
			}
			addReal(bpf.RealKey{Addr: d.Addr, Proto: icmp})
		}
	}
	// Claim new services only after the workers can serve them, and stop
	// claiming removed ones before the workers forget them: publish first
	// when growing is harmless either way, since unclaimed packets simply
	// stay with the kernel.
	dp.snap.Store(s)
	locals := dp.localAddrs()
	for _, dir := range dp.dirs {
		if err := dir.SetServices(keys); err != nil {
			return fmt.Errorf("dataplane: %w", err)
		}
		// Before nat_reals: replies to the director's own health checks
		// must keep reaching the kernel.
		if err := dir.SetLocalAddrs(locals); err != nil {
			return fmt.Errorf("dataplane: %w", err)
		}
		if err := dir.SetNATReals(reals); err != nil {
			return fmt.Errorf("dataplane: %w", err)
		}
	}
	return nil
}

// SetTimeouts changes the conn timeouts (ipvsadm --set).
func (dp *Dataplane) SetTimeouts(t Timeouts) { dp.table.SetTimeouts(t) }

// Timeouts returns the conn timeouts.
func (dp *Dataplane) Timeouts() Timeouts { return dp.table.Timeouts() }

// Run starts one worker per socket, the conn-table sweeper and the MAC
// resolver, and returns when ctx ends (after stopping the workers).
func (dp *Dataplane) Run(ctx context.Context) error {
	dp.mu.Lock()
	if dp.closed || dp.running {
		dp.mu.Unlock()
		return errors.New("dataplane: Run on a closed or running dataplane")
	}
	dp.running = true
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dp.cancel = cancel
	dp.mu.Unlock()
	for _, w := range dp.workers {
		dp.wg.Add(1)
		go func() {
			defer dp.wg.Done()
			w.run(&dp.stop)
		}()
	}
	dp.wg.Add(2)
	go func() { defer dp.wg.Done(); dp.sweeper(ctx) }()
	go func() { defer dp.wg.Done(); dp.resolver(ctx) }()
	<-ctx.Done()
	dp.stop.Store(true)
	dp.wg.Wait()
	return nil
}

// sweeper reaps expired entries a slice per tick, so that a full pass over
// the table takes FullSweep and no tick holds anything for long.
func (dp *Dataplane) sweeper(ctx context.Context) {
	tk := time.NewTicker(dp.cfg.SweepInterval)
	defer tk.Stop()
	ticks := max(int(dp.cfg.FullSweep/dp.cfg.SweepInterval), 1)
	per := (dp.table.Slots() + ticks - 1) / ticks
	next := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		if dp.stop.Load() {
			return
		}
		snap := dp.snap.Load()
		gone := func(id uint16) bool { return snap.DestByID(id) == nil }
		next, _ = dp.table.Sweep(next, per, dp.table.Now(), gone)
	}
}

// resolver re-resolves real-server MACs and republishes when one changed.
func (dp *Dataplane) resolver(ctx context.Context) {
	tk := time.NewTicker(dp.cfg.ResolveInterval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		case <-dp.kick:
		}
		dp.mu.Lock()
		cfgs := dp.services
		dp.mu.Unlock()
		var addrs []netip.Addr
		for _, c := range cfgs {
			for _, d := range c.Dests {
				if len(d.MAC) != 6 {
					addrs = append(addrs, d.Addr.Unmap())
				}
			}
		}
		if len(addrs) == 0 || !dp.res.Resolve(addrs, 300*time.Millisecond, 0) {
			continue
		}
		dp.mu.Lock()
		if !dp.closed {
			_ = dp.publishLocked(dp.services)
		}
		dp.mu.Unlock()
	}
}

// Close stops the workers (if Run is still going), detaches the XDP program
// and releases sockets and maps.
func (dp *Dataplane) Close() error {
	dp.mu.Lock()
	if dp.closed {
		dp.mu.Unlock()
		return nil
	}
	dp.closed = true
	if dp.cancel != nil {
		dp.cancel()
	}
	dp.mu.Unlock()
	dp.stop.Store(true)
	dp.wg.Wait()
	return dp.teardown()
}

func (dp *Dataplane) teardown() error {
	var errs []error
	for _, ifc := range dp.ifaces {
		if ifc.link != nil {
			errs = append(errs, ifc.link.Close())
			ifc.link = nil
		}
	}
	for _, w := range dp.workers {
		errs = append(errs, w.x.close())
		for _, o := range w.out {
			if o != nil {
				errs = append(errs, o.close())
			}
		}
	}
	dp.workers = nil
	if dp.res != nil {
		errs = append(errs, dp.res.Close())
		dp.res = nil
	}
	for _, dir := range dp.dirs {
		errs = append(errs, dir.Close())
	}
	dp.dirs = nil
	return errors.Join(errs...)
}

// localAddrs lists the addresses on the served interfaces: traffic to them
// stays with the kernel unless a service claims it (bpf local_addrs).
func (dp *Dataplane) localAddrs() []netip.Addr {
	var out []netip.Addr
	for _, ifc := range dp.ifaces {
		l, err := netlink.LinkByIndex(ifc.index)
		if err != nil {
			continue
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}
