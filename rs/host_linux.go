package rs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xvs-lb/xvs/bpf"
)

// linuxHost is the machine as seen from the calling OS thread's network
// namespace (netlink sockets and /proc/sys/net both follow the thread).
type linuxHost struct{}

func (linuxHost) NetNS() (string, error) {
	// thread-self, not self: a caller may have moved only this thread.
	ns, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return "", fmt.Errorf("network namespace: %w", err)
	}
	return ns, nil
}

func sysctlPath(key string) (string, error) {
	clean := filepath.Clean("/" + key)
	if clean != "/"+key || strings.Contains(key, "..") {
		return "", fmt.Errorf("sysctl %q: bad key", key)
	}
	return "/proc/sys" + clean, nil
}

func (linuxHost) ReadSysctl(key string) (string, error) {
	p, err := sysctlPath(key)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", sysctlName(key), err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (linuxHost) WriteSysctl(key, value string) error {
	p, err := sysctlPath(key)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("write sysctl %s: %w", sysctlName(key), err)
	}
	_, err = f.WriteString(value + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write sysctl %s = %s: %w", sysctlName(key), value, err)
	}
	return nil
}

func lo() (netlink.Link, error) {
	l, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("interface lo: %w", err)
	}
	return l, nil
}

func (linuxHost) LoAddrs() ([]netip.Prefix, error) {
	l, err := lo()
	if err != nil {
		return nil, err
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("addresses on lo: %w", err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (linuxHost) AddLoAddr(p netip.Prefix) error {
	l, err := lo()
	if err != nil {
		return err
	}
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		// No duplicate address detection on lo, and preferred lifetime 0:
		// the address stays valid for connections to it, but source
		// address selection avoids it (RFC 6724 rule 3).
		a.Flags = unix.IFA_F_NODAD
		a.PreferedLft = 0
		a.ValidLft = 0xffffffff // forever
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		return fmt.Errorf("add %v on lo: %w", p, err)
	}
	return nil
}

func (linuxHost) DelLoAddr(p netip.Prefix) error {
	l, err := lo()
	if err != nil {
		return err
	}
	if err := netlink.AddrDel(l, &netlink.Addr{IPNet: ipNet(p)}); err != nil {
		if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("remove %v from lo: %w", p, err)
	}
	return nil
}

func (linuxHost) DefaultRouteDevs() ([]string, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("IPv4 routes: %w", err)
	}
	var idx []int
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.LinkIndex > 0 {
			idx = append(idx, r.LinkIndex)
		}
		for _, nh := range r.MultiPath {
			idx = append(idx, nh.LinkIndex)
		}
	}
	var devs []string
	for _, i := range idx {
		l, err := netlink.LinkByIndex(i)
		if err != nil {
			return nil, fmt.Errorf("default route interface %d: %w", i, err)
		}
		name := l.Attrs().Name
		if !slices.Contains(devs, name) {
			devs = append(devs, name)
		}
	}
	return devs, nil
}

func (linuxHost) LinkExists(name string) (bool, error) {
	_, err := netlink.LinkByName(name)
	if err == nil {
		return true, nil
	}
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return false, nil
	}
	return false, fmt.Errorf("interface %s: %w", name, err)
}

func (linuxHost) LinkUp(name string) (bool, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return false, fmt.Errorf("interface %s: %w", name, err)
	}
	return l.Attrs().Flags&net.FlagUp != 0, nil
}

func (linuxHost) SetLinkUp(name string, up bool) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	if up {
		err = netlink.LinkSetUp(l)
	} else {
		err = netlink.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("set %s up=%v: %w", name, up, err)
	}
	return nil
}

func (linuxHost) HostAddrs() ([]netip.Addr, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("host addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && tunnelLocal(p.Addr(), a.Flags) {
			out = append(out, p.Addr())
		}
	}
	return out, nil
}

// tunnelLocal reports whether an interface address (with its IFA_F_*
// flags) is one a director may address tunnels to. Link-local IPv6
// addresses are per link, and the director names real servers by routable
// addresses; an address that failed duplicate address detection belongs to
// another host.
func tunnelLocal(a netip.Addr, flags int) bool {
	if a.Is4() {
		return !a.IsLoopback()
	}
	return a.IsGlobalUnicast() && flags&unix.IFA_F_DADFAILED == 0
}

func (linuxHost) HasIPIP() bool {
	_, err := os.Stat("/sys/module/ipip")
	return err == nil
}

func (linuxHost) Links() ([]string, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	names := make([]string, 0, len(ls))
	for _, l := range ls {
		names = append(names, l.Attrs().Name)
	}
	return names, nil
}

func ifindex(dev string) (int, error) {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		return 0, fmt.Errorf("interface %s: %w", dev, err)
	}
	return l.Attrs().Index, nil
}

// openOrLoadDecap returns the decap program already running on some
// interface of the namespace, so all interfaces share one program and one
// set of maps, or loads a new one.
func openOrLoadDecap() (*bpf.Decap, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	for _, l := range links {
		x := l.Attrs().Xdp
		if x == nil || !x.Attached {
			continue
		}
		d, err := bpf.OpenAttachedDecap(l.Attrs().Index)
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, bpf.ErrForeignXDP) && !errors.Is(err, bpf.ErrNoXDP) {
			return nil, err
		}
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise RLIMIT_MEMLOCK for BPF: %w", err)
	}
	return bpf.LoadDecap()
}

func (linuxHost) DecapAttach(dev string, vips, locals []netip.Addr, mode XDPMode) (bpf.XDPMode, error) {
	idx, err := ifindex(dev)
	if err != nil {
		return 0, err
	}
	d, err := openOrLoadDecap()
	if err != nil {
		return 0, err
	}
	defer d.Close()
	// Maps first, so the first packet after attaching already finds them.
	for _, v := range vips {
		if err := d.AddVIP(v); err != nil {
			return 0, err
		}
	}
	if err := d.SetLocals(locals); err != nil {
		return 0, err
	}
	switch mode {
	case XDPDriver:
		return bpf.XDPModeDriver, d.AttachPersistent(idx, bpf.XDPModeDriver)
	case XDPGeneric:
		return bpf.XDPModeGeneric, d.AttachPersistent(idx, bpf.XDPModeGeneric)
	}
	err = d.AttachPersistent(idx, bpf.XDPModeDriver)
	if err == nil || errors.Is(err, bpf.ErrForeignXDP) {
		return bpf.XDPModeDriver, err
	}
	if gerr := d.AttachPersistent(idx, bpf.XDPModeGeneric); gerr != nil {
		return 0, fmt.Errorf("%w; generic mode: %w", err, gerr)
	}
	return bpf.XDPModeGeneric, nil
}

func (linuxHost) DecapDetach(dev string) error {
	l, err := netlink.LinkByName(dev)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil // gone, and its XDP program with it
		}
		return fmt.Errorf("interface %s: %w", dev, err)
	}
	if err := bpf.DetachDecap(l.Attrs().Index); err != nil {
		return fmt.Errorf("%s: %w", dev, err)
	}
	return nil
}

func (linuxHost) DecapStatus(dev string) (DecapStatus, error) {
	st := DecapStatus{Dev: dev}
	idx, err := ifindex(dev)
	if err != nil {
		return st, err
	}
	att, err := bpf.DecapAttachmentOf(idx)
	if err != nil {
		return st, err
	}
	st.ProgID, st.ProgName, st.Mode, st.Ours = att.ProgID, att.Name, att.Mode, att.Ours
	if !att.Ours {
		return st, nil
	}
	d, err := bpf.OpenAttachedDecap(idx)
	if err != nil {
		return st, err
	}
	defer d.Close()
	if st.VIPs, err = d.VIPs(); err != nil {
		return st, err
	}
	if st.Locals, err = d.Locals(); err != nil {
		return st, err
	}
	if st.Counters, err = d.Counters(); err != nil {
		return st, err
	}
	return st, nil
}
