package director

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/xvs-lb/xvs/control"
	"github.com/xvs-lb/xvs/dataplane"
	"github.com/xvs-lb/xvs/scheduler"
)

// forwarder is what the director needs of the dataplane; the daemon passes
// a *dataplane.Dataplane, tests a fake.
type forwarder interface {
	SetServices([]dataplane.ServiceConfig) error
	ServiceStats() []dataplane.ServiceStat
	Conns(func(dataplane.ConnEntry) bool)
	SetTimeouts(dataplane.Timeouts)
	Timeouts() dataplane.Timeouts
}

// The control.Handler methods below are xvsadm's view of the table. Each
// change is applied to the desired table and published at once; a config
// reload later replaces the table, as keepalived's reload overrides
// ipvsadm's changes.

var _ control.Handler = (*Director)(nil)

func validSched(name string) error {
	for _, n := range scheduler.Names() {
		if n == name {
			return nil
		}
	}
	return fmt.Errorf("scheduler %q: %w", name, control.ErrNoScheduler)
}

func checkService(svc *control.Service) error {
	if err := svc.ServiceKey.Validate(); err != nil {
		return fmt.Errorf("%w: %v", control.ErrInvalid, err)
	}
	if svc.FWMark != 0 {
		return fmt.Errorf("fwmark services: netfilter marks are not visible to XDP: %w", control.ErrUnsupported)
	}
	if svc.Proto == control.SCTP {
		return fmt.Errorf("SCTP services: %w", control.ErrUnsupported)
	}
	if svc.Sched == "" {
		svc.Sched = "wlc"
	}
	return validSched(svc.Sched)
}

// AddService adds a virtual service (ipvsadm -A).
func (d *Director) AddService(_ context.Context, svc control.Service) error {
	if err := checkService(&svc); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.table.find(svc.ServiceKey) != nil {
		return fmt.Errorf("%s: %w", svc.ServiceKey, control.ErrServiceExists)
	}
	svc.Dests = nil
	d.table.services = append(d.table.services, &vservice{ctl: svc})
	return d.publishLocked()
}

// EditService replaces a service's settings (ipvsadm -E).
func (d *Director) EditService(_ context.Context, svc control.Service) error {
	if err := checkService(&svc); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.table.find(svc.ServiceKey)
	if s == nil {
		return fmt.Errorf("%s: %w", svc.ServiceKey, control.ErrNoService)
	}
	svc.Dests = nil
	s.ctl = svc
	return d.publishLocked()
}

// DelService removes a service and, with it, its flows (ipvsadm -D).
func (d *Director) DelService(_ context.Context, key control.ServiceKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, s := range d.table.services {
		if s.ctl.ServiceKey == key {
			d.table.services = append(d.table.services[:i:i], d.table.services[i+1:]...)
			return d.publishLocked()
		}
	}
	return fmt.Errorf("%s: %w", key, control.ErrNoService)
}

func checkDest(svc *vservice, dst *control.Dest) error {
	if !dst.Addr.IsValid() {
		return fmt.Errorf("real server without address: %w", control.ErrInvalid)
	}
	// Only a tunnel crosses families (4in6, 6in4), as in IPVS.
	if dst.Addr.Unmap().Is4() != svc.ctl.Addr.Unmap().Is4() && dst.Method != control.Tunnel {
		return fmt.Errorf("real server %s and service %s differ in address family (only -i, tunnelling, can mix them): %w", dst.Addr, svc.ctl.Addr, control.ErrInvalid)
	}
	if dst.Port == 0 {
		dst.Port = svc.ctl.Port
	}
	if dst.Weight < 0 || dst.Weight > 65535 {
		return fmt.Errorf("weight %d: %w", dst.Weight, control.ErrInvalid)
	}
	return nil
}

// destService finds the service a real-server op names and checks (and
// completes) the real server. Caller holds d.mu.
func (d *Director) destService(key control.ServiceKey, dst *control.Dest) (*vservice, error) {
	s := d.table.find(key)
	if s == nil {
		return nil, fmt.Errorf("%s: %w", key, control.ErrNoService)
	}
	if err := checkDest(s, dst); err != nil {
		return nil, err
	}
	return s, nil
}

// AddDest adds a real server (ipvsadm -a).
func (d *Director) AddDest(_ context.Context, key control.ServiceKey, dst control.Dest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, err := d.destService(key, &dst)
	if err != nil {
		return err
	}
	if s.findReal(dst.Key()) != nil {
		return fmt.Errorf("%s: %w", netip.AddrPortFrom(dst.Addr, dst.Port), control.ErrDestExists)
	}
	s.reals = append(s.reals, &real{dest: onlySettings(dst), up: true, weight: -1})
	return d.publishLocked()
}

// onlySettings drops the counters a client may have sent along.
func onlySettings(dst control.Dest) control.Dest {
	return control.Dest{Addr: dst.Addr, Port: dst.Port, Method: dst.Method, Weight: dst.Weight, Upper: dst.Upper, Lower: dst.Lower}
}

// EditDest changes a real server's settings (ipvsadm -e); its flows stay.
func (d *Director) EditDest(_ context.Context, key control.ServiceKey, dst control.Dest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, err := d.destService(key, &dst)
	if err != nil {
		return err
	}
	r := s.findReal(dst.Key())
	if r == nil {
		return fmt.Errorf("%s: %w", netip.AddrPortFrom(dst.Addr, dst.Port), control.ErrNoDest)
	}
	r.dest = onlySettings(dst)
	// An operator's weight wins over a checker's dynamic weight until the
	// next transition.
	r.weight = -1
	return d.publishLocked()
}

// DelDest removes a real server (ipvsadm -d); its flows are dropped, as
// LVS does with expire_nodest_conn=1.
func (d *Director) DelDest(_ context.Context, key control.ServiceKey, dk control.DestKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.table.find(key)
	if s == nil {
		return fmt.Errorf("%s: %w", key, control.ErrNoService)
	}
	if dk.Port == 0 {
		dk.Port = s.ctl.Port
	}
	for i, r := range s.reals {
		if r.dest.Addr == dk.Addr && r.dest.Port == dk.Port {
			s.reals = append(s.reals[:i:i], s.reals[i+1:]...)
			return d.publishLocked()
		}
	}
	return fmt.Errorf("%s: %w", netip.AddrPortFrom(dk.Addr, dk.Port), control.ErrNoDest)
}

// Clear removes every service (ipvsadm -C).
func (d *Director) Clear(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.table.services = nil
	return d.publishLocked()
}

// List answers ipvsadm -L: the table with the dataplane's counters.
func (d *Director) List(_ context.Context, key *control.ServiceKey) (control.ListReply, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	stats := map[dataplane.ServiceKey]dataplane.ServiceStat{}
	if d.fwd != nil {
		for _, st := range d.fwd.ServiceStats() {
			stats[st.Key] = st
		}
	}
	reply := control.ListReply{Info: control.Info{Version: "1.2.1", Size: d.tableSize}}
	now := time.Now()
	for _, s := range d.table.services {
		if key != nil && s.ctl.ServiceKey != *key {
			continue
		}
		svc := s.ctl
		svc.Dests = nil
		st := stats[dataplane.ServiceKey{Addr: s.ctl.Addr, Proto: uint8(s.ctl.Proto), Port: s.ctl.Port}]
		for _, r := range s.visibleReals() {
			dst := r.dest
			dst.Weight = r.liveWeight()
			for _, ds := range st.Dests {
				if ds.Addr == dst.Addr && ds.Port == dst.Port {
					dst.ActiveConns = uint32(max(ds.Active, 0))
					dst.InactConns = uint32(max(ds.Inactive, 0))
					dst.PersistConns = uint32(max(ds.Persist, 0))
					raw := control.Stats{Conns: ds.Conns, InPkts: ds.Packets, InBytes: ds.Bytes}
					dst.Stats, dst.Rates = d.counters.observe(counterKey{svc.ServiceKey, dst.Key()}, raw, now)
				}
			}
			svc.Stats.Conns += dst.Stats.Conns
			svc.Stats.InPkts += dst.Stats.InPkts
			svc.Stats.InBytes += dst.Stats.InBytes
			svc.Rates.CPS += dst.Rates.CPS
			svc.Rates.InPPS += dst.Rates.InPPS
			svc.Rates.InBPS += dst.Rates.InBPS
			svc.Dests = append(svc.Dests, dst)
		}
		reply.Services = append(reply.Services, svc)
	}
	if key != nil && len(reply.Services) == 0 {
		return reply, fmt.Errorf("%s: %w", *key, control.ErrNoService)
	}
	return reply, nil
}

// Zero resets counters (ipvsadm -Z) by remembering where they stood: the
// dataplane's counters only ever grow.
func (d *Director) Zero(_ context.Context, key *control.ServiceKey) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if key != nil && d.table.find(*key) == nil {
		return fmt.Errorf("%s: %w", *key, control.ErrNoService)
	}
	if d.fwd == nil {
		return nil
	}
	for _, st := range d.fwd.ServiceStats() {
		sk := control.ServiceKey{Proto: control.Proto(st.Key.Proto), Addr: st.Key.Addr, Port: st.Key.Port}
		if key != nil && sk != *key {
			continue
		}
		for _, ds := range st.Dests {
			d.counters.zero(counterKey{sk, control.DestKey{Addr: ds.Addr, Port: ds.Port}},
				control.Stats{Conns: ds.Conns, InPkts: ds.Packets, InBytes: ds.Bytes})
		}
	}
	return nil
}

// SetTimeouts sets the conn table's timeouts (ipvsadm --set); 0 keeps a value.
func (d *Director) SetTimeouts(_ context.Context, t control.Timeouts) error {
	if t.TCP < 0 || t.TCPFin < 0 || t.UDP < 0 {
		return fmt.Errorf("negative timeout: %w", control.ErrInvalid)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fwd == nil {
		return fmt.Errorf("timeouts: no dataplane (-P): %w", control.ErrUnsupported)
	}
	cur := d.fwd.Timeouts()
	set := func(dst *time.Duration, s int) {
		if s > 0 {
			*dst = time.Duration(s) * time.Second
		}
	}
	set(&cur.TCP, t.TCP)
	set(&cur.TCPFin, t.TCPFin)
	set(&cur.UDP, t.UDP)
	d.fwd.SetTimeouts(cur)
	return nil
}

// GetTimeouts answers ipvsadm -L --timeout.
func (d *Director) GetTimeouts(context.Context) (control.Timeouts, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fwd == nil {
		return control.Timeouts{TCP: 900, TCPFin: 120, UDP: 300}, nil
	}
	t := d.fwd.Timeouts()
	return control.Timeouts{TCP: int(t.TCP / time.Second), TCPFin: int(t.TCPFin / time.Second), UDP: int(t.UDP / time.Second)}, nil
}

// Conns answers ipvsadm -Lc.
func (d *Director) Conns(context.Context) ([]control.Conn, error) {
	d.mu.Lock()
	fwd := d.fwd
	d.mu.Unlock()
	var out []control.Conn
	if fwd == nil {
		return out, nil
	}
	fwd.Conns(func(e dataplane.ConnEntry) bool {
		c := control.Conn{
			Proto:       control.Proto(e.Proto),
			Expire:      e.Expires,
			State:       e.StateName(),
			Source:      e.Client,
			Virtual:     e.Virtual,
			Destination: e.Dest,
		}
		if e.Template {
			// IPVS lists persistence templates in state NONE.
			c.State = "NONE"
		}
		out = append(out, c)
		return len(out) < 1<<20
	})
	return out, nil
}

// StartDaemon starts a connection sync daemon role (ipvsadm
// --start-daemon); see syncDaemon for how it shares the two slots with
// lvs_sync_daemon.
func (d *Director) StartDaemon(_ context.Context, sd control.SyncDaemon) error {
	return d.syncStartAdmin(sd)
}

// StopDaemon stops the role running in a slot (ipvsadm --stop-daemon),
// whoever started it.
func (d *Director) StopDaemon(_ context.Context, role control.SyncRole) error {
	return d.syncStopAdmin(role)
}

// Daemons answers ipvsadm -L --daemon.
func (d *Director) Daemons(context.Context) ([]control.SyncDaemon, error) {
	return d.syncList(), nil
}
