package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/xvs-lb/xvs/scheduler"
)

// Method is a service's (or real server's) forwarding method.
type Method uint8

// Forwarding methods, as keepalived's lb_kind names them.
const (
	DR Method = iota
	TUN
	NAT
)

func (m Method) String() string {
	switch m {
	case DR:
		return "DR"
	case TUN:
		return "TUN"
	case NAT:
		return "NAT"
	}
	return fmt.Sprintf("Method(%d)", uint8(m))
}

// ServiceKey names a virtual service. Port 0 means every port of the VIP
// (a persistent port-less service).
type ServiceKey struct {
	Addr  netip.Addr
	Proto uint8 // ProtoTCP or ProtoUDP
	Port  uint16
}

func (k ServiceKey) String() string {
	p := "tcp"
	if k.Proto == ProtoUDP {
		p = "udp"
	}
	return fmt.Sprintf("%s %s", p, netip.AddrPortFrom(k.Addr, k.Port))
}

// ServiceConfig is one virtual service as the control plane describes it.
type ServiceConfig struct {
	Key ServiceKey
	// Method is the real servers' forwarding method, unless one has its
	// own (DestConfig.OwnMethod).
	Method       Method
	Scheduler    string // "rr", "wrr", ... as ipvsadm spells them
	SchedOptions scheduler.Options
	// Persistence is persistence_timeout; 0 = no persistence.
	Persistence time.Duration
	// PersistenceMask is persistence_granularity as prefix bits (0 = /32 for
	// IPv4, /128 for IPv6).
	PersistenceMask int
	// Active: this director is VRRP MASTER for the VIP. An inactive service
	// forwards nothing.
	Active bool
	Dests  []DestConfig
}

// DestConfig is one real server of a service.
type DestConfig struct {
	Addr   netip.Addr
	Port   uint16 // 0 = the service's port
	Weight int32
	Up     bool  // health checks pass
	Upper  int32 // ipvsadm -x
	Lower  int32 // ipvsadm -y
	// MAC, when set, is used as is; otherwise the Resolver's answer is.
	MAC net.HardwareAddr
	// Method, when OwnMethod is set, is this real server's forwarding
	// method (ipvsadm -g/-i/-m per real server, lvs_method in a
	// real_server block); otherwise the service's Method is.
	Method    Method
	OwnMethod bool
}

// destIdentity identifies a real server of a service across snapshots, so its
// dest ID (and with it its conn counts and stats) survives reconfiguration.
type destIdentity struct {
	svc  ServiceKey
	addr netip.Addr
	port uint16
}

// Snapshot is the immutable services table the workers forward with. Build
// it with Dataplane.SetServices; workers load it once per batch.
type Snapshot struct {
	services map[svcKey]*Service
	byID     []*Dest // dest ID → real server; nil = removed
	list     []*Service
	// natReals holds the address key words of NAT real servers (nil when
	// there are none): packets from them may be replies. natList holds the
	// same when they are few: a scan of a few words beats hashing a map
	// key on every packet.
	natReals map[[2]uint64]bool
	natList  [][2]uint64
	// fast is byID flattened for the established-flow path: what it needs
	// of a DR real server in 8 bytes, one load after the conn entry's dest
	// ID instead of a chain of three (byID, Dest, Service).
	fast []destFast
	// svcIdx is services as an open-addressing table the packet path
	// probes without hashing a map key: a power-of-two array at most half
	// full.
	svcIdx []svcSlot
}

type svcSlot struct {
	k   svcKey
	svc *Service
}

// svcHash mixes a service key for svcIdx (not adversarial input: the keys
// are the configuration's).
func svcHash(a0, a1 uint64, port uint16, proto uint8) uint64 {
	h := (a0 ^ a1*0x9E3779B97F4A7C15 ^ uint64(port)<<8 ^ uint64(proto)) * 0xBF58476D1CE4E5B9
	return h ^ h>>31
}

// lookupSvc returns the service for (VIP key words, port, protocol), or nil.
func (s *Snapshot) lookupSvc(a0, a1 uint64, port uint16, proto uint8) *Service {
	m := uint64(len(s.svcIdx) - 1)
	if len(s.svcIdx) == 0 {
		return nil
	}
	for i := svcHash(a0, a1, port, proto) & m; ; i = (i + 1) & m {
		e := &s.svcIdx[i]
		if e.svc == nil {
			return nil
		}
		if e.k.a1 == a1 && e.k.a0 == a0 && e.k.port == port && e.k.proto == proto {
			return e.svc
		}
	}
}

// indexServices builds svcIdx from services.
func (s *Snapshot) indexServices() {
	n := 2
	for n < 2*len(s.services) {
		n *= 2
	}
	s.svcIdx = make([]svcSlot, n)
	m := uint64(n - 1)
	for k, svc := range s.services {
		i := svcHash(k.a0, k.a1, k.port, k.proto) & m
		for s.svcIdx[i].svc != nil {
			i = (i + 1) & m
		}
		s.svcIdx[i] = svcSlot{k: k, svc: svc}
	}
}

// destFast is a real server as the established-flow fast path sees it.
type destFast struct {
	mac   [6]byte
	port  uint8 // dataplane port of the route to it
	flags uint8
}

// destFast flags.
const (
	// fastDR: a DR real server of an active service whose port fits
	// destFast, so an established flow to it needs only the MAC rewrite.
	fastDR uint8 = 1 << iota
	// fastActive: a real server of an active service (any method).
	fastActive
)

// natListMax is how many NAT real servers natList holds at most.
const natListMax = 8

// isNATReal reports whether key words (a0, a1) are a NAT real server's.
func (s *Snapshot) isNATReal(a0, a1 uint64) bool {
	if s.natReals == nil {
		return false
	}
	if s.natList != nil {
		for _, w := range s.natList {
			if w[1] == a1 && w[0] == a0 {
				return true
			}
		}
		return false
	}
	return s.natReals[[2]uint64{a0, a1}]
}

// svcKey is ServiceKey in the form the packet path builds from a frame.
type svcKey struct {
	a0, a1 uint64
	port   uint16
	proto  uint8
}

// Service is one virtual service inside a snapshot.
type Service struct {
	Key         ServiceKey
	Method      Method
	Active      bool
	sched       scheduler.Scheduler
	dests       []*Dest // same order as the scheduler's dests
	persist     uint32  // seconds; 0 = none
	maskHi      uint64  // persistence netmask over the address key words
	maskLo      uint64
	schedName   string
	SchedOpts   scheduler.Options
	Persistence time.Duration
	PersistMask int
	vip         [16]byte // Key.Addr as 16 bytes (IPv4-mapped for IPv4)
	v0, v1      uint64   // Key.Addr as conn-table key words
}

// Dests returns the service's real servers.
func (s *Service) Dests() []*Dest { return s.dests }

// SchedulerName returns the scheduler's name.
func (s *Service) SchedulerName() string { return s.schedName }

// Dest is one real server inside a snapshot.
type Dest struct {
	ID     uint16
	Addr   netip.Addr
	Port   uint16
	Weight int32
	Up     bool
	MAC    [6]byte
	HasMAC bool
	// Method is how packets reach this real server: its own, or its
	// service's.
	Method Method
	svc    *Service
	ip     [16]byte // Addr as 16 bytes (IPv4-mapped for IPv4)
	a0, a1 uint64   // Addr as conn-table key words
	port   int      // the dataplane port (interface index) it is reached by
	mtu    int      // path MTU toward it; 0 = the port's
	src4   [4]byte  // TUN outer source (the route's preferred source)
	hasSrc bool
	// tun6: an IPv6 real server, reached by TUN through an outer IPv6
	// header from src6 (the route's preferred source, if hasSrc6)
	tun6    bool
	src6    [16]byte
	hasSrc6 bool
}

// nextHop is how the control plane reaches a real server: its MAC, the
// dataplane port of the route to it, the route's MTU and preferred IPv4
// source (zero when unknown).
type nextHop struct {
	MAC     net.HardwareAddr // the real server's, or its gateway's
	Port    int
	MTU     int
	Src     netip.Addr
	Gateway bool // routed: MAC is the gateway's (TUN and NAT only)
}

// Service returns the service the real server belongs to.
func (d *Dest) Service() *Service { return d.svc }

// Lookup returns the service for a key, or nil.
func (s *Snapshot) Lookup(k ServiceKey) *Service {
	if s == nil {
		return nil
	}
	return s.services[makeSvcKey(k)]
}

// Services returns the services in configuration order.
func (s *Snapshot) Services() []*Service {
	if s == nil {
		return nil
	}
	return s.list
}

// DestByID returns the real server with dest ID id, or nil.
func (s *Snapshot) DestByID(id uint16) *Dest {
	if s == nil || int(id) >= len(s.byID) {
		return nil
	}
	return s.byID[id]
}

func makeSvcKey(k ServiceKey) svcKey {
	a0, a1 := addrWords(k.Addr)
	return svcKey{a0: a0, a1: a1, port: k.Port, proto: k.Proto}
}

// persistMask returns the key-word masks for a prefix of bits over the
// 16-byte (IPv4-mapped) address.
func persistMask(addr netip.Addr, bits int) (hi, lo uint64) {
	if addr.Is4() {
		if bits <= 0 || bits > 32 {
			bits = 32
		}
		bits += 96
	} else if bits <= 0 || bits > 128 {
		bits = 128
	}
	var b [16]byte
	for i := range bits {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return addrWords(netip.AddrFrom16(b))
}

// errors returned by snapshot building.
var (
	ErrBadService   = errors.New("bad service")
	ErrTooManyDests = errors.New("too many real servers")
)

// idAllocator hands out dest IDs; owned by the control plane (under
// Dataplane.mu). A removed real server's ID is reused only once its conn
// counts are zero, so stale entries can never reach a new real server.
type idAllocator struct {
	ids     map[destIdentity]uint16
	free    []uint16
	retired []retiredID
	next    int
}

type retiredID struct {
	id uint16
	at time.Time
}

func (a *idAllocator) get(k destIdentity, counts func(uint16) int32) (uint16, error) {
	if id, ok := a.ids[k]; ok {
		return id, nil
	}
	// Recycle retired IDs whose entries are all gone.
	kept := a.retired[:0]
	for _, r := range a.retired {
		if counts(r.id) == 0 && time.Since(r.at) > 2*time.Second {
			a.free = append(a.free, r.id)
		} else {
			kept = append(kept, r)
		}
	}
	a.retired = kept
	var id uint16
	switch {
	case a.next < MaxDests-1:
		a.next++
		id = uint16(a.next)
	case len(a.free) > 0:
		id = a.free[len(a.free)-1]
		a.free = a.free[:len(a.free)-1]
	default:
		return 0, fmt.Errorf("real server %s of %s: %w", netip.AddrPortFrom(k.addr, k.port), k.svc, ErrTooManyDests)
	}
	a.ids[k] = id
	return id, nil
}

// retireExcept retires every ID not in keep.
func (a *idAllocator) retireExcept(keep map[destIdentity]bool) {
	for k, id := range a.ids {
		if !keep[k] {
			delete(a.ids, k)
			a.retired = append(a.retired, retiredID{id: id, at: time.Now()})
		}
	}
}

// buildSnapshot turns service configs into a snapshot. macs gives resolved
// MACs for real servers whose DestConfig has none.
// prev, when not nil, lends its schedulers' runtime state (rr cursor, caches)
// through Rebuild.
func buildSnapshot(cfgs []ServiceConfig, prev *Snapshot, ids *idAllocator, table *ConnTable, hops func(netip.Addr) (nextHop, bool)) (*Snapshot, error) {
	s := &Snapshot{services: make(map[svcKey]*Service, len(cfgs))}
	keep := make(map[destIdentity]bool)
	maxID := 0
	counts := func(id uint16) int32 {
		c := table.Counts(id)
		return c.Active.Load() + c.Inactive.Load() + c.Persist.Load()
	}
	for ci, c := range cfgs {
		if !c.Key.Addr.IsValid() || (c.Key.Proto != ProtoTCP && c.Key.Proto != ProtoUDP) {
			return nil, fmt.Errorf("service #%d (%s): address and protocol tcp/udp required: %w", ci, c.Key, ErrBadService)
		}
		c.Key.Addr = c.Key.Addr.Unmap()
		sk := makeSvcKey(c.Key)
		if _, dup := s.services[sk]; dup {
			return nil, fmt.Errorf("service %s: defined twice: %w", c.Key, ErrBadService)
		}
		name := c.Scheduler
		if name == "" {
			name = "wlc"
		}
		if c.Method > NAT {
			return nil, fmt.Errorf("service %s: forwarding method %v: %w", c.Key, c.Method, ErrBadService)
		}
		svc := &Service{
			Key: c.Key, Method: c.Method, Active: c.Active, schedName: name,
			SchedOpts: c.SchedOptions, Persistence: c.Persistence, PersistMask: c.PersistenceMask,
			vip: c.Key.Addr.As16(),
		}
		svc.v0, svc.v1 = addrWords(c.Key.Addr)
		if c.Persistence > 0 {
			svc.persist = durSeconds(c.Persistence)
			svc.maskHi, svc.maskLo = persistMask(c.Key.Addr, c.PersistenceMask)
		}
		sd := make([]scheduler.Dest, 0, len(c.Dests))
		for di, dc := range c.Dests {
			if !dc.Addr.IsValid() {
				return nil, fmt.Errorf("service %s: real server #%d: no address: %w", c.Key, di, ErrBadService)
			}
			port := dc.Port
			if port == 0 {
				port = c.Key.Port
			}
			idk := destIdentity{svc: c.Key, addr: dc.Addr.Unmap(), port: port}
			m := c.Method
			if dc.OwnMethod {
				m = dc.Method
			}
			if m > NAT {
				return nil, fmt.Errorf("service %s: real server %s: forwarding method %v: %w", c.Key, idk.addr, m, ErrBadService)
			}
			if m == NAT && idk.addr.Is4() != c.Key.Addr.Is4() {
				return nil, fmt.Errorf("service %s: real server %s: NAT needs the VIP's address family: %w", c.Key, idk.addr, ErrBadService)
			}
			if keep[idk] {
				return nil, fmt.Errorf("service %s: real server %s listed twice: %w", c.Key, netip.AddrPortFrom(idk.addr, port), ErrBadService)
			}
			id, err := ids.get(idk, counts)
			if err != nil {
				return nil, err
			}
			keep[idk] = true
			d := &Dest{ID: id, Addr: idk.addr, Port: port, Weight: dc.Weight, Up: dc.Up, Method: m, svc: svc, ip: idk.addr.As16(),
				tun6: m == TUN && idk.addr.Is6()}
			d.a0, d.a1 = addrWords(idk.addr)
			mac := dc.MAC
			if hops != nil {
				if h, ok := hops(idk.addr); ok {
					// DR rewrites only MACs: a routed real server would
					// get packets for the VIP through a router, which
					// sends them back here. It stays without a MAC.
					if len(mac) != 6 && !(m == DR && h.Gateway) {
						mac = h.MAC
					}
					d.port, d.mtu = h.Port, h.MTU
					if h.Src.Is4() {
						d.src4, d.hasSrc = h.Src.As4(), true
					} else if h.Src.Is6() {
						d.src6, d.hasSrc6 = h.Src.As16(), true
					}
				}
			}
			if m == NAT {
				if s.natReals == nil {
					s.natReals = map[[2]uint64]bool{}
				}
				s.natReals[[2]uint64{d.a0, d.a1}] = true
			}
			if len(mac) == 6 {
				copy(d.MAC[:], mac)
				d.HasMAC = true
			}
			svc.dests = append(svc.dests, d)
			// A real server whose MAC is unknown cannot be forwarded to:
			// the scheduler sees it as down.
			sd = append(sd, scheduler.Dest{
				Weight: dc.Weight, Up: dc.Up && d.HasMAC, Upper: dc.Upper, Lower: dc.Lower,
				Conns: &table.Counts(id).ConnCounts,
				Addr:  idk.addr.As16(), Port: port,
			})
			maxID = max(maxID, int(id))
		}
		var sch scheduler.Scheduler
		var err error
		if old := prev.Lookup(c.Key); old != nil && old.schedName == name && old.SchedOpts == c.SchedOptions {
			sch, err = old.sched.Rebuild(sd)
		} else {
			sch, err = scheduler.New(name, c.SchedOptions, sd)
		}
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", c.Key, err)
		}
		svc.sched = sch
		s.services[sk] = svc
		s.list = append(s.list, svc)
	}
	if len(s.natReals) <= natListMax {
		for w := range s.natReals {
			s.natList = append(s.natList, w)
		}
	}
	s.indexServices()
	s.byID = make([]*Dest, maxID+1)
	s.fast = make([]destFast, maxID+1)
	for _, svc := range s.list {
		for _, d := range svc.dests {
			s.byID[d.ID] = d
			if d.port <= 0xFF {
				fd := destFast{mac: d.MAC, port: uint8(d.port)}
				if svc.Active {
					fd.flags |= fastActive
					if d.Method == DR {
						fd.flags |= fastDR
					}
				}
				s.fast[d.ID] = fd
			}
		}
	}
	ids.retireExcept(keep)
	return s, nil
}
