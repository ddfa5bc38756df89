package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Resolver finds real servers' MAC addresses for DR forwarding, off the
// packet path: first in the kernel neighbour table (netlink), then, for IPv4,
// by an ARP request of its own (mdlayher/arp). Its sockets are opened in the
// network namespace NewResolver runs in and keep it.
//
// Owned by the Dataplane's control plane: Resolve runs under its own mutex.
type Resolver struct {
	mu    sync.Mutex
	nl    *netlink.Handle
	arp   map[int]*arp.Client // by ifindex
	macs  map[netip.Addr]net.HardwareAddr
	hops  map[netip.Addr]nextHop
	links map[int]int // interfaces the dataplane serves: ifindex → port
	probe int         // UDP/IPv6 socket whose datagrams make the kernel resolve a neighbour

	// Per-pass caches, reset by each Resolve: one neighbour-table dump per
	// (link, family) and one MTU read per link, instead of one per real
	// server — with thousands of real servers, per-address dumps made a
	// pass quadratic and stole CPU from the workers.
	neighs map[neighKey]map[netip.Addr]net.HardwareAddr
	mtus   map[int]int
}

type neighKey struct{ link, family int }

// NewResolver opens a netlink handle and one ARP client per interface.
func NewResolver(ifaces []*net.Interface) (*Resolver, error) {
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("resolver: netlink handle: %w", err)
	}
	r := &Resolver{nl: nl, arp: map[int]*arp.Client{}, macs: map[netip.Addr]net.HardwareAddr{},
		hops: map[netip.Addr]nextHop{}, links: map[int]int{}, probe: -1}
	if fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0); err == nil {
		r.probe = fd
	}
	for port, ifi := range ifaces {
		r.links[ifi.Index] = port
		c, err := arp.Dial(ifi)
		if err != nil {
			// No IPv4 address on the interface: neighbour table only.
			continue
		}
		r.arp[ifi.Index] = c
	}
	return r, nil
}

// Close releases the resolver's sockets.
func (r *Resolver) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, c := range r.arp {
		errs = append(errs, c.Close())
	}
	r.arp = nil
	if r.probe >= 0 {
		errs = append(errs, unix.Close(r.probe))
		r.probe = -1
	}
	if r.nl != nil {
		r.nl.Close()
		r.nl = nil
	}
	return errors.Join(errs...)
}

// Lookup returns the cached MAC of addr.
func (r *Resolver) Lookup(addr netip.Addr) (net.HardwareAddr, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.macs[addr]
	return m, ok
}

// hop returns the cached next hop of addr (MAC, port, MTU, source).
func (r *Resolver) hop(addr netip.Addr) (nextHop, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.hops[addr]
	if m, has := r.macs[addr]; has {
		h.MAC, ok = m, true
	}
	return h, ok
}

// Resolve refreshes the MACs of addrs, spending at most timeout per address
// that needs an ARP exchange and stopping once budget has passed (0 = no
// limit). It reports whether any answer changed.
func (r *Resolver) Resolve(addrs []netip.Addr, timeout, budget time.Duration) (changed bool) {
	var deadline time.Time
	if budget > 0 {
		deadline = time.Now().Add(budget)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nl == nil {
		return false
	}
	r.neighs, r.mtus = map[neighKey]map[netip.Addr]net.HardwareAddr{}, map[int]int{}
	defer func() { r.neighs, r.mtus = nil, nil }()
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		if seen[a] {
			continue
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			break
		}
		seen[a] = true
		rt, rok := r.routeTo(a)
		var mac net.HardwareAddr
		err := fmt.Errorf("no route to %s", a)
		if rok {
			mac, err = r.resolve(a, rt, timeout)
			if h, ok := r.hopOf(rt); ok {
				if oh, hadh := r.hops[a]; !hadh || oh.Port != h.Port || oh.MTU != h.MTU || oh.Src != h.Src {
					r.hops[a] = h
					changed = true
				}
			}
		}
		old, had := r.macs[a]
		switch {
		case err == nil && (!had || !bytes.Equal(old, mac)):
			r.macs[a] = mac
			changed = true
		case err != nil && had:
			// Keep a MAC we knew: a lost ARP reply must not take a
			// working real server out of service.
		}
	}
	return changed
}

// route finds the port, MTU and preferred source of the route to a.
func (r *Resolver) routeTo(a netip.Addr) (netlink.Route, bool) {
	routes, err := r.nl.RouteGet(a.AsSlice())
	if err != nil || len(routes) == 0 {
		return netlink.Route{}, false
	}
	return routes[0], true
}

// hopOf is the port, MTU and preferred source of route rt.
func (r *Resolver) hopOf(rt netlink.Route) (nextHop, bool) {
	port, ok := r.links[rt.LinkIndex]
	if !ok {
		return nextHop{}, false
	}
	h := nextHop{Port: port, MTU: rt.MTU, Gateway: rt.Gw != nil}
	if h.MTU == 0 {
		mtu, ok := r.mtus[rt.LinkIndex]
		if !ok {
			if l, err := r.nl.LinkByIndex(rt.LinkIndex); err == nil {
				mtu = l.Attrs().MTU
			}
			if r.mtus != nil {
				r.mtus[rt.LinkIndex] = mtu
			}
		}
		h.MTU = mtu
	}
	if src, ok := netip.AddrFromSlice(rt.Src); ok {
		h.Src = src.Unmap()
	}
	return h, true
}

// neighbour looks a up in the kernel's neighbour table of link, from the
// pass's dump unless fresh asks for a new one (after a probe).
func (r *Resolver) neighbour(link int, a netip.Addr, fresh bool) (net.HardwareAddr, bool) {
	family := netlink.FAMILY_V4
	if !a.Is4() {
		family = netlink.FAMILY_V6
	}
	k := neighKey{link, family}
	table, ok := r.neighs[k]
	if !ok || fresh {
		neighs, err := r.nl.NeighList(link, family)
		if err != nil {
			return nil, false
		}
		table = make(map[netip.Addr]net.HardwareAddr, len(neighs))
		for _, n := range neighs {
			ip, ok := netip.AddrFromSlice(n.IP)
			if ok && len(n.HardwareAddr) == 6 &&
				n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT) != 0 {
				table[ip.Unmap()] = n.HardwareAddr
			}
		}
		if r.neighs != nil {
			r.neighs[k] = table
		}
	}
	mac, ok := table[a]
	return mac, ok
}

func (r *Resolver) resolve(a netip.Addr, rt netlink.Route, timeout time.Duration) (net.HardwareAddr, error) {
	if rt.Gw != nil {
		// A routed real server (TUN, NAT): the next hop is the gateway.
		// DR cannot use it; buildSnapshot keeps such a DR real server out.
		gw, ok := netip.AddrFromSlice(rt.Gw)
		if !ok {
			return nil, fmt.Errorf("route to %s: gateway %v", a, rt.Gw)
		}
		a = gw.Unmap()
	}
	if mac, ok := r.neighbour(rt.LinkIndex, a, false); ok {
		return mac, nil
	}
	if !a.Is4() {
		// IPv6: no NDP client of our own. A datagram to the discard port
		// makes the kernel solicit the neighbour; then reread its table.
		if r.probe < 0 {
			return nil, fmt.Errorf("%s: not in the neighbour table", a)
		}
		sa := &unix.SockaddrInet6{Port: 9, Addr: a.As16(), ZoneId: uint32(rt.LinkIndex)}
		_ = unix.Sendto(r.probe, []byte{0}, unix.MSG_DONTWAIT, sa)
		deadline := time.Now().Add(timeout)
		for time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			if mac, ok := r.neighbour(rt.LinkIndex, a, true); ok {
				return mac, nil
			}
		}
		return nil, fmt.Errorf("%s: no neighbour advertisement", a)
	}
	c := r.arp[rt.LinkIndex]
	if c == nil || !a.Is4() {
		return nil, fmt.Errorf("%s: not in the neighbour table", a)
	}
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("arp deadline: %w", err)
	}
	mac, err := c.Resolve(a)
	if err != nil {
		return nil, fmt.Errorf("arp %s: %w", a, err)
	}
	return mac, nil
}
