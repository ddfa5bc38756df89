// Package controltest owns Memory, an in-memory control.Handler with
// IPVS's semantics (which op fails how), for tests of the control protocol,
// xvsadm and anything else that needs a daemon to talk to.
package controltest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/xvs-lb/xvs/control"
	"github.com/xvs-lb/xvs/scheduler"
)

// Memory holds services in memory. The zero value is not ready; use
// NewMemory.
type Memory struct {
	mu       sync.Mutex // guards everything below
	svcs     []control.Service
	timeouts control.Timeouts
	conns    []control.Conn
	info     control.Info           // returned by List; zero means control.DefaultInfo
	calls    map[control.Op]int     // handler calls by op
	daemons  [2]*control.SyncDaemon // running sync roles: master, backup
	ifaces   []string               // interfaces StartDaemon knows; nil: any
}

// Calls is how many times the handler method for op was called.
func (m *Memory) Calls(op control.Op) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[op]
}

// SetInfo sets what List reports for ipvsadm -L's first line.
func (m *Memory) SetInfo(i control.Info) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.info = i
}

// NewMemory returns an empty table with IPVS's default timeouts.
func NewMemory() *Memory {
	return &Memory{
		timeouts: control.Timeouts{TCP: 900, TCPFin: 120, UDP: 300},
		calls:    map[control.Op]int{},
	}
}

var _ control.Handler = (*Memory)(nil)

func (m *Memory) find(k control.ServiceKey) int {
	return slices.IndexFunc(m.svcs, func(s control.Service) bool { return s.ServiceKey == k })
}

func findDest(s *control.Service, k control.DestKey) int {
	return slices.IndexFunc(s.Dests, func(d control.Dest) bool { return d.Key() == k })
}

func checkSched(name string) error {
	if !slices.Contains(scheduler.Names(), name) {
		return fmt.Errorf("scheduler %q: %w", name, control.ErrNoScheduler)
	}
	return nil
}

// AddService implements control.Handler.
func (m *Memory) AddService(_ context.Context, svc control.Service) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpAddService]++
	if m.find(svc.ServiceKey) >= 0 {
		return fmt.Errorf("%s: %w", svc.ServiceKey, control.ErrServiceExists)
	}
	if err := checkSched(svc.Sched); err != nil {
		return err
	}
	svc.Dests, svc.Stats, svc.Rates = nil, control.Stats{}, control.Rates{}
	m.svcs = append(m.svcs, svc)
	return nil
}

// EditService implements control.Handler.
func (m *Memory) EditService(_ context.Context, svc control.Service) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpEditService]++
	i := m.find(svc.ServiceKey)
	if i < 0 {
		return fmt.Errorf("%s: %w", svc.ServiceKey, control.ErrNoService)
	}
	if err := checkSched(svc.Sched); err != nil {
		return err
	}
	old := m.svcs[i]
	svc.Dests, svc.Stats, svc.Rates = old.Dests, old.Stats, old.Rates
	m.svcs[i] = svc
	return nil
}

// DelService implements control.Handler.
func (m *Memory) DelService(_ context.Context, k control.ServiceKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpDelService]++
	i := m.find(k)
	if i < 0 {
		return fmt.Errorf("%s: %w", k, control.ErrNoService)
	}
	m.svcs = slices.Delete(m.svcs, i, i+1)
	return nil
}

// AddDest implements control.Handler.
func (m *Memory) AddDest(_ context.Context, k control.ServiceKey, d control.Dest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpAddDest]++
	i := m.find(k)
	if i < 0 {
		return fmt.Errorf("%s: %w", k, control.ErrNoService)
	}
	s := &m.svcs[i]
	if findDest(s, d.Key()) >= 0 {
		return fmt.Errorf("%s: %w", d.Addr, control.ErrDestExists)
	}
	d.ActiveConns, d.InactConns, d.PersistConns = 0, 0, 0
	d.Stats, d.Rates = control.Stats{}, control.Rates{}
	s.Dests = append(s.Dests, d)
	return nil
}

// EditDest implements control.Handler.
func (m *Memory) EditDest(_ context.Context, k control.ServiceKey, d control.Dest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpEditDest]++
	i := m.find(k)
	if i < 0 {
		return fmt.Errorf("%s: %w", k, control.ErrNoService)
	}
	s := &m.svcs[i]
	j := findDest(s, d.Key())
	if j < 0 {
		return fmt.Errorf("%s: %w", d.Addr, control.ErrNoDest)
	}
	old := s.Dests[j]
	old.Method, old.Weight, old.Upper, old.Lower = d.Method, d.Weight, d.Upper, d.Lower
	s.Dests[j] = old
	return nil
}

// DelDest implements control.Handler.
func (m *Memory) DelDest(_ context.Context, k control.ServiceKey, dk control.DestKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpDelDest]++
	i := m.find(k)
	if i < 0 {
		return fmt.Errorf("%s: %w", k, control.ErrNoService)
	}
	s := &m.svcs[i]
	j := findDest(s, dk)
	if j < 0 {
		return fmt.Errorf("%s: %w", dk.Addr, control.ErrNoDest)
	}
	s.Dests = slices.Delete(s.Dests, j, j+1)
	return nil
}

// Clear implements control.Handler.
func (m *Memory) Clear(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpClear]++
	m.svcs = nil
	return nil
}

func cloneService(s control.Service) control.Service {
	s.Flags = slices.Clone(s.Flags)
	s.Dests = slices.Clone(s.Dests)
	return s
}

// List implements control.Handler.
func (m *Memory) List(_ context.Context, k *control.ServiceKey) (control.ListReply, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpList]++
	lr := control.ListReply{Info: m.info}
	if k != nil {
		i := m.find(*k)
		if i < 0 {
			return control.ListReply{}, fmt.Errorf("%s: %w", *k, control.ErrNoService)
		}
		lr.Services = []control.Service{cloneService(m.svcs[i])}
		return lr, nil
	}
	for _, s := range m.svcs {
		lr.Services = append(lr.Services, cloneService(s))
	}
	return lr, nil
}

// Zero implements control.Handler.
func (m *Memory) Zero(_ context.Context, k *control.ServiceKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpZero]++
	zero := func(s *control.Service) {
		s.Stats, s.Rates = control.Stats{}, control.Rates{}
		for j := range s.Dests {
			s.Dests[j].Stats, s.Dests[j].Rates = control.Stats{}, control.Rates{}
		}
	}
	if k != nil {
		i := m.find(*k)
		if i < 0 {
			return fmt.Errorf("%s: %w", *k, control.ErrNoService)
		}
		zero(&m.svcs[i])
		return nil
	}
	for i := range m.svcs {
		zero(&m.svcs[i])
	}
	return nil
}

// SetTimeouts implements control.Handler; 0 leaves a value unchanged.
func (m *Memory) SetTimeouts(_ context.Context, t control.Timeouts) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpSetTimeouts]++
	if t.TCP != 0 {
		m.timeouts.TCP = t.TCP
	}
	if t.TCPFin != 0 {
		m.timeouts.TCPFin = t.TCPFin
	}
	if t.UDP != 0 {
		m.timeouts.UDP = t.UDP
	}
	return nil
}

// GetTimeouts implements control.Handler.
func (m *Memory) GetTimeouts(context.Context) (control.Timeouts, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpGetTimeouts]++
	return m.timeouts, nil
}

// Conns implements control.Handler.
func (m *Memory) Conns(context.Context) ([]control.Conn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpConns]++
	return slices.Clone(m.conns), nil
}

// SetConns replaces the connection table Conns returns.
func (m *Memory) SetConns(c []control.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.conns = slices.Clone(c)
}

// SetServices replaces the whole table, counters included (test fixtures).
func (m *Memory) SetServices(svcs []control.Service) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.svcs = nil
	for _, s := range svcs {
		m.svcs = append(m.svcs, cloneService(s))
	}
}

// SetInterfaces names the interfaces StartDaemon accepts (nil: any), as
// the kernel looks --mcast-interface up.
func (m *Memory) SetInterfaces(names ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ifaces = slices.Clone(names)
}

func slot(r control.SyncRole) int {
	if r == control.SyncBackup {
		return 1
	}
	return 0
}

// StartDaemon implements control.Handler with IPVS's checks, in its
// order: the interface first, then whether the role runs. The role runs
// with IPVS's defaults filled in, for a 1500-byte MTU.
func (m *Memory) StartDaemon(_ context.Context, sd control.SyncDaemon) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpStartDaemon]++
	if err := sd.Validate(); err != nil {
		return fmt.Errorf("%w: %w", control.ErrInvalid, err)
	}
	if m.ifaces != nil && !slices.Contains(m.ifaces, sd.Interface) {
		return fmt.Errorf("%s: %w", sd.Interface, control.ErrNoDevice)
	}
	if m.daemons[slot(sd.Role)] != nil {
		return fmt.Errorf("%s: %w", sd.Role, control.ErrDaemonRunning)
	}
	r := sd.Resolved(1500)
	m.daemons[slot(sd.Role)] = &r
	return nil
}

// StopDaemon implements control.Handler.
func (m *Memory) StopDaemon(_ context.Context, role control.SyncRole) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpStopDaemon]++
	if role != control.SyncMaster && role != control.SyncBackup {
		return fmt.Errorf("role %d: %w", role, control.ErrInvalid)
	}
	if m.daemons[slot(role)] == nil {
		return fmt.Errorf("%s: %w", role, control.ErrNoDaemon)
	}
	m.daemons[slot(role)] = nil
	return nil
}

// Daemons implements control.Handler.
func (m *Memory) Daemons(context.Context) ([]control.SyncDaemon, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls[control.OpDaemons]++
	var out []control.SyncDaemon
	for _, d := range m.daemons {
		if d != nil {
			out = append(out, *d)
		}
	}
	return out, nil
}
