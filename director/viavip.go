package director

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xvs-lb/xvs/control"
	"github.com/xvs-lb/xvs/dataplane"
	"github.com/xvs-lb/xvs/healthcheck"
)

// updateChecksLocked hands the pool the table's checks. Caller holds d.mu.
func (d *Director) updateChecksLocked() error {
	d.viaPending = false
	return d.pool.Update(healthServices(d.table, d.viaVIPLocked))
}

// viaVIPLocked addresses a data-path check (xvs_via_vip): the SYN goes out
// of the VIP's interface, from the director's own address there, to the
// real server's MAC as the dataplane resolved it (DR), or tunnelled to the
// real server (TUN). Until the MAC is known it returns nil and marks the
// check pending.
func (d *Director) viaVIPLocked(s *vservice, r *real) *healthcheck.ViaVIPOptions {
	if d.dp == nil || !s.ctl.Addr.Is4() {
		return nil
	}
	ifname, err := interfaceFor(d.cfg, s.ctl.Addr)
	if err != nil {
		return nil
	}
	mac := d.destMAC(s.ctl.ServiceKey, r)
	src := primaryV4(ifname, func(a netip.Addr) bool {
		return d.cfg.InstanceFor(a) != nil || d.table.hasVIP(a)
	})
	if mac == nil || !src.IsValid() {
		d.viaPending = true
		return nil
	}
	return &healthcheck.ViaVIPOptions{
		Interface: ifname, DstMAC: mac, SrcIP: src, VIP: s.ctl.Addr, Port: s.ctl.Port,
		Tunnel: r.dest.Method == control.Tunnel,
	}
}

// destMAC is the real server's MAC from the dataplane's current snapshot.
func (d *Director) destMAC(k control.ServiceKey, r *real) net.HardwareAddr {
	svc := d.dp.Snapshot().Lookup(dataplane.ServiceKey{Addr: k.Addr, Proto: uint8(k.Proto), Port: k.Port})
	if svc == nil {
		return nil
	}
	for _, dst := range svc.Dests() {
		if dst.Addr == r.dest.Addr && dst.Port == r.dest.Port && dst.HasMAC {
			return net.HardwareAddr(dst.MAC[:])
		}
	}
	return nil
}

// primaryV4 is the first IPv4 address on ifname that is not a VIP: the
// address the real server's SYN/ACK comes back to.
func primaryV4(ifname string, isVIP func(netip.Addr) bool) netip.Addr {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return netip.Addr{}
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if ok && !isVIP(ip) {
			return ip
		}
	}
	return netip.Addr{}
}

// viaVIPRefresher re-addresses pending data-path checks once the dataplane
// has resolved the MACs they need.
func (d *Director) viaVIPRefresher(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.mu.Lock()
		if d.viaPending && d.pool != nil {
			if err := d.updateChecksLocked(); err != nil {
				d.log.Warn("data-path checks", "err", err)
			}
		}
		d.mu.Unlock()
	}
}

func (t *table) hasVIP(a netip.Addr) bool {
	for _, s := range t.services {
		if s.ctl.Addr == a {
			return true
		}
	}
	return false
}
