package director

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/xvs-lb/xvs/config"
	"github.com/xvs-lb/xvs/control"
)

// findInterfaces picks the interfaces the dataplane serves, without extra
// configuration, for each VIP in turn: global_defs' xvs_interface if set;
// else the interface of the vrrp_instance whose virtual_ipaddress holds the
// VIP (or the address line's own dev); else the interface that already holds
// the VIP (LVS-only setups put it there by hand, ifcfg-eth0:0 style); else
// the interface of the route to the VIP.
//
// NAT services add the real servers' side: the interface of the route to
// each NAT real server (and sorry server), since requests leave and replies
// arrive there. The list is made when the dataplane starts; a NAT real
// server added later behind another interface needs a restart.
func findInterfaces(c *config.Config, t *table) ([]string, error) {
	var out []string
	if c.Global.XVSInterface != "" {
		out = append(out, c.Global.XVSInterface)
	} else {
		for _, s := range t.services {
			name, err := interfaceFor(c, s.ctl.Addr)
			if err != nil {
				return nil, fmt.Errorf("virtual server %s: %w", s.ctl.ServiceKey, err)
			}
			if !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	for _, s := range t.services {
		reals := s.reals
		if s.sorry != nil {
			reals = append(slices.Clip(reals), s.sorry)
		}
		for _, r := range reals {
			if r.dest.Method != control.Masq {
				continue
			}
			name, err := routeInterface(r.dest.Addr)
			if err != nil {
				return nil, fmt.Errorf("virtual server %s: NAT real server %s: %w", s.ctl.ServiceKey, r.dest.Addr, err)
			}
			if !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	return out, nil
}

// routeInterface names the interface of the route to a.
func routeInterface(a netip.Addr) (string, error) {
	routes, err := netlink.RouteGet(a.AsSlice())
	if err != nil {
		return "", fmt.Errorf("route to %s: %w", a, err)
	}
	if len(routes) == 0 {
		return "", fmt.Errorf("no route to %s", a)
	}
	l, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return "", fmt.Errorf("link %d: %w", routes[0].LinkIndex, err)
	}
	if l.Attrs().Name == "lo" {
		return "", fmt.Errorf("%s is a local address", a)
	}
	return l.Attrs().Name, nil
}

func interfaceFor(c *config.Config, vip netip.Addr) (string, error) {
	if in := c.InstanceFor(vip); in != nil {
		for _, a := range in.VirtualIPAddresses {
			if a.Prefix.Addr() == vip && a.Dev != "" {
				return a.Dev, nil
			}
		}
		if in.Interface != "" {
			return in.Interface, nil
		}
	}
	family := netlink.FAMILY_V4
	if vip.Is6() && !vip.Is4In6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(nil, family)
	if err != nil {
		return "", fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == vip.Unmap() {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return "", fmt.Errorf("link %d: %w", a.LinkIndex, err)
			}
			if l.Attrs().Name != "lo" {
				return l.Attrs().Name, nil
			}
		}
	}
	routes, err := netlink.RouteGet(vip.AsSlice())
	if err != nil || len(routes) == 0 {
		return "", fmt.Errorf("no interface holds VIP %s and no route leads to it (set xvs_interface in global_defs)", vip)
	}
	l, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return "", fmt.Errorf("link %d: %w", routes[0].LinkIndex, err)
	}
	if l.Attrs().Name == "lo" {
		return "", fmt.Errorf("VIP %s is local on lo (a real server's setup?): set xvs_interface in global_defs", vip)
	}
	return l.Attrs().Name, nil
}
