package vrrp

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"testing"
	"time"
)

// fakeClock is driven by the simulation; After is only used by Run.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time                         { return c.now }
func (c *fakeClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

type wirePkt struct {
	from *fakeHost
	ifn  string
	data []byte
	src  netip.Addr
	dst  netip.Addr
	ttl  int
}

// fakeHost is one router on the simulated LAN(s).
type fakeHost struct {
	w       *world
	name    string
	addrs   map[string]netip.Addr // ifname → primary address
	links   map[string]bool
	vips    map[string]bool // "dev addr/bits"
	garps   int
	vmacs   map[string]VMAC // created by SetupVMAC
	vmacOps []string        // "setup NAME" / "remove NAME", in order
	cut     bool            // partitioned: sends and receives nothing
	crashed bool
	sp      *Speaker
	conns   []*fakeConn
}

type fakeConn struct {
	h     *fakeHost
	ifn   string
	v6    bool
	in    chan Packet
	close sync.Once
	done  chan struct{}
}

func (c *fakeConn) Send(b []byte, src, dst netip.Addr) error {
	if c.h.cut || c.h.crashed {
		return nil
	}
	c.h.w.queue = append(c.h.w.queue, wirePkt{from: c.h, ifn: c.ifn, data: append([]byte(nil), b...), src: src, dst: dst, ttl: 255})
	return nil
}

func (c *fakeConn) Recv(p *Packet) error {
	select {
	case q := <-c.in:
		*p = q
		return nil
	case <-c.done:
		return ErrClosed
	}
}

func (c *fakeConn) Close() error {
	c.close.Do(func() { close(c.done) })
	return nil
}

func (h *fakeHost) Open(ifname string, v6 bool, group netip.Addr) (Conn, error) {
	wire := ifname
	if v, ok := h.vmacs[ifname]; ok {
		wire = v.Base // a vmac sends on its base's wire
	}
	if _, ok := h.links[wire]; !ok {
		return nil, ErrNoLink
	}
	c := &fakeConn{h: h, ifn: wire, v6: v6, in: make(chan Packet, 16), done: make(chan struct{})}
	h.conns = append(h.conns, c)
	return c, nil
}

func (h *fakeHost) PrimaryAddr(ifname string, v6 bool) (netip.Addr, error) {
	a, ok := h.addrs[ifname]
	if !ok {
		return a, ErrNoAddr
	}
	return a, nil
}

// LinkUp: an interface absent from links does not exist; a vmac follows
// its base.
func (h *fakeHost) LinkUp(ifname string) (bool, error) {
	if v, ok := h.vmacs[ifname]; ok {
		ifname = v.Base
	}
	up, ok := h.links[ifname]
	if !ok {
		return false, ErrNoLink
	}
	return up, nil
}

func (h *fakeHost) SetupVMAC(v VMAC) error {
	if _, ok := h.links[v.Base]; !ok {
		return ErrNoLink
	}
	if h.vmacs == nil {
		h.vmacs = map[string]VMAC{}
	}
	h.vmacs[v.Name] = v
	h.vmacOps = append(h.vmacOps, "setup "+v.Name)
	return nil
}

func (h *fakeHost) RemoveVMAC(v VMAC) error {
	if _, ok := h.vmacs[v.Name]; !ok {
		return ErrNoLink
	}
	delete(h.vmacs, v.Name)
	h.vmacOps = append(h.vmacOps, "remove "+v.Name)
	return nil
}

func (h *fakeHost) AddAddr(v VIP) error {
	h.vips[v.Dev+" "+v.Prefix.String()] = true
	return nil
}

func (h *fakeHost) DelAddr(v VIP) error {
	delete(h.vips, v.Dev+" "+v.Prefix.String())
	return nil
}

func (h *fakeHost) Announce(dev string, ip netip.Addr) error {
	h.garps++
	return nil
}

type transition struct {
	at    time.Duration // since the simulation began
	host  string
	inst  string
	state State
}

// world is a discrete-event simulation of routers on shared LANs: packets
// are delivered instantly, time jumps to the next timer of any speaker.
type world struct {
	t     *testing.T
	clock *fakeClock
	start time.Time
	hosts []*fakeHost
	queue []wirePkt
	log   []transition
}

func newWorld(t *testing.T) *world {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &world{t: t, clock: &fakeClock{now: t0}, start: t0}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// add creates a router named name with primary addresses per interface.
func (w *world) add(name string, cfg Config, addrs map[string]string) *fakeHost {
	w.t.Helper()
	h := &fakeHost{w: w, name: name, addrs: map[string]netip.Addr{}, links: map[string]bool{}, vips: map[string]bool{}}
	for ifn, a := range addrs {
		h.addrs[ifn] = netip.MustParseAddr(a)
		h.links[ifn] = true
	}
	sp, err := New(cfg, WithHost(h), WithClock(w.clock), WithLogger(quiet),
		WithStateHook(func(inst string, s State) {
			w.log = append(w.log, transition{w.clock.now.Sub(w.start), name, inst, s})
		}))
	if err != nil {
		w.t.Fatalf("New(%s): %v", name, err)
	}
	h.sp = sp
	w.hosts = append(w.hosts, h)
	return h
}

func (w *world) boot(h *fakeHost) {
	w.t.Helper()
	if err := h.sp.start(); err != nil {
		w.t.Fatalf("start %s: %v", h.name, err)
	}
	w.deliver()
}

func (w *world) deliver() {
	for len(w.queue) > 0 {
		p := w.queue[0]
		w.queue = w.queue[1:]
		for _, h := range w.hosts {
			if h == p.from || h.cut || h.crashed || !h.sp.started {
				continue
			}
			if !p.dst.IsMulticast() && h.addrs[p.ifn] != p.dst {
				continue
			}
			for _, cs := range h.sp.conns {
				if cs.conn.(*fakeConn).ifn == p.ifn && cs.key.v6 == p.src.Is6() {
					h.sp.handle(event{cs: cs, pkt: Packet{Data: append([]byte(nil), p.data...), Src: p.src, Dst: p.dst, TTL: p.ttl}})
				}
			}
		}
	}
}

// run advances virtual time by d, firing timers in order.
func (w *world) run(d time.Duration) {
	end := w.clock.now.Add(d)
	for {
		w.deliver()
		var next time.Time
		for _, h := range w.hosts {
			if h.crashed || !h.sp.started {
				continue
			}
			h.sp.mu.Lock()
			n := h.sp.nextDeadline()
			h.sp.mu.Unlock()
			if next.IsZero() || n.Before(next) {
				next = n
			}
		}
		if next.IsZero() || next.After(end) {
			break
		}
		if next.After(w.clock.now) {
			w.clock.now = next
		}
		for _, h := range w.hosts {
			if !h.crashed && h.sp.started {
				h.sp.tick()
			}
		}
	}
	w.clock.now = end
	w.deliver()
}

func (w *world) now() time.Duration { return w.clock.now.Sub(w.start) }

// state is h's current state of inst.
func (h *fakeHost) state(inst string) State { return h.sp.States()[inst] }

// masters lists the hosts holding inst as MASTER.
func (w *world) masters(inst string) []string {
	var m []string
	for _, h := range w.hosts {
		if !h.crashed && h.sp.started && h.state(inst) == StateMaster {
			m = append(m, h.name)
		}
	}
	sort.Strings(m)
	return m
}

// lastTransition returns when host last entered st for inst.
func (w *world) lastTransition(host, inst string, st State) (time.Duration, bool) {
	for i := len(w.log) - 1; i >= 0; i-- {
		e := w.log[i]
		if e.host == host && e.inst == inst && e.state == st {
			return e.at, true
		}
	}
	return 0, false
}

// crash makes h vanish without a goodbye.
func (w *world) crash(h *fakeHost) {
	h.crashed = true
	h.sp.Abort()
}

// stop makes h leave gracefully (priority 0) at the current time.
func (w *world) stop(h *fakeHost) {
	h.sp.shutdown(true)
	h.crashed = true
	w.deliver()
}

var _ = context.Background
