package vrrp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// baseConf is what a vmac's base interface had before we changed it, and
// how many vmacs on it still need the change.
type baseConf struct {
	refs  int
	saved map[string]string // sysctl path → original value
}

// The sysctls keepalived sets (vrrp_if_config.c), and one it leaves to the
// administrator. On the vmac: reply to ARP only for its own addresses
// (arp_ignore), take adverts and ARP from our own addresses (accept_local:
// the address owner, another instance on this host), and receive on an
// interface that has no address of its own (rp_filter). On the base: never
// answer ARP for the VIPs with the real MAC (arp_ignore, arp_filter).
//
// arp_announce=2 on the base is ours: without it the kernel asks for a
// neighbour's MAC out of the base with the VIP as sender (a reply to the
// client leaves by the base's connected route), and the neighbour rewrites
// its entry for the VIP to the base's real MAC, undoing use_vmac.
// keepalived's NOTE_vrrp_vmac.txt leaves ARP tuning to the administrator.
var (
	vmacSysctls4 = [][2]string{
		{"ipv4/conf/%s/arp_ignore", "1"},
		{"ipv4/conf/%s/accept_local", "1"},
		{"ipv4/conf/%s/rp_filter", "0"},
		{"ipv4/conf/%s/promote_secondaries", "1"},
		// An IPv4 vmac needs no IPv6: both routers' vmacs share a MAC,
		// so their EUI-64 link-locals would collide.
		{"ipv6/conf/%s/disable_ipv6", "1"},
	}
	baseSysctls4 = [][2]string{
		{"ipv4/conf/%s/arp_ignore", "1"},
		{"ipv4/conf/%s/arp_filter", "1"},
		{"ipv4/conf/%s/arp_announce", "2"},
	}
)

func sysctlPath(pattern, ifname string) string {
	return filepath.Join("/proc/sys/net", fmt.Sprintf(pattern, ifname))
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(path, v string) error {
	if err := os.WriteFile(path, []byte(v), 0); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// SetupVMAC implements Host, as keepalived's netlink_link_add_vmac: a
// macvlan in private mode (so that adverts from a peer's vmac, which carry
// our own virtual MAC as source, are delivered to it), the interface
// settings above, and up. A macvlan left by a crashed run is adopted when it
// matches and replaced when it does not; any other link of that name is an
// error.
func (h *LinuxHost) SetupVMAC(v VMAC) error {
	base, err := linkByName(v.Base)
	if err != nil {
		return err
	}
	link, err := linkByName(v.Name)
	switch {
	case errors.Is(err, ErrNoLink):
		link = nil
	case err != nil:
		return err
	default:
		mv, ok := link.(*netlink.Macvlan)
		if !ok {
			return fmt.Errorf("%s exists and is not a macvlan (%s)", v.Name, link.Type())
		}
		if mv.ParentIndex != base.Attrs().Index || !bytes.Equal(mv.HardwareAddr, v.MAC) || mv.Mode != netlink.MACVLAN_MODE_PRIVATE {
			if err := netlink.LinkDel(link); err != nil {
				return fmt.Errorf("remove stale macvlan %s: %w", v.Name, err)
			}
			link = nil
		}
	}
	if link == nil {
		mv := &netlink.Macvlan{
			LinkAttrs: netlink.LinkAttrs{Name: v.Name, ParentIndex: base.Attrs().Index, HardwareAddr: v.MAC},
			Mode:      netlink.MACVLAN_MODE_PRIVATE,
		}
		if err := netlink.LinkAdd(mv); err != nil {
			return fmt.Errorf("create macvlan %s on %s: %w", v.Name, v.Base, err)
		}
		if link, err = linkByName(v.Name); err != nil {
			return err
		}
	}
	fail := func(err error) error {
		_ = netlink.LinkDel(link)
		return err
	}
	if !v.V6 {
		for _, sc := range vmacSysctls4 {
			if err := writeSysctl(sysctlPath(sc[0], v.Name), sc[1]); err != nil {
				return fail(err)
			}
		}
		if err := h.holdBase(v.Base); err != nil {
			return fail(err)
		}
	} else {
		// No EUI-64 link-local from the shared MAC (RFC 5798 §7.4); the
		// base's link-local is the advert source instead.
		if err := netlink.LinkSetIP6AddrGenMode(link, 1 /* IN6_ADDR_GEN_MODE_NONE */); err != nil {
			return fail(fmt.Errorf("%s: addrgenmode none: %w", v.Name, err))
		}
		if v.LinkLocal.IsValid() {
			a := &netlink.Addr{IPNet: &net.IPNet{IP: v.LinkLocal.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
			if err := netlink.AddrReplace(link, a); err != nil {
				return fail(fmt.Errorf("%s: add %v: %w", v.Name, v.LinkLocal, err))
			}
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		if !v.V6 {
			h.releaseBase(v.Base)
		}
		return fail(fmt.Errorf("%s: set up: %w", v.Name, err))
	}
	return nil
}

// RemoveVMAC implements Host: deletes the macvlan, and restores the base's
// settings when its last vmac goes.
func (h *LinuxHost) RemoveVMAC(v VMAC) error {
	if !v.V6 {
		h.releaseBase(v.Base)
	}
	link, err := linkByName(v.Name)
	if err != nil {
		return err
	}
	if _, ok := link.(*netlink.Macvlan); !ok {
		return fmt.Errorf("%s is not a macvlan (%s); left alone", v.Name, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("remove macvlan %s: %w", v.Name, err)
	}
	return nil
}

func (h *LinuxHost) holdBase(base string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if b := h.bases[base]; b != nil {
		b.refs++
		return nil
	}
	b := &baseConf{refs: 1, saved: map[string]string{}}
	for _, sc := range baseSysctls4 {
		p := sysctlPath(sc[0], base)
		old, err := readSysctl(p)
		if err != nil {
			return err
		}
		if old == sc[1] {
			continue
		}
		if err := writeSysctl(p, sc[1]); err != nil {
			return err
		}
		b.saved[p] = old
	}
	h.bases[base] = b
	return nil
}

func (h *LinuxHost) releaseBase(base string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.bases[base]
	if b == nil {
		return
	}
	if b.refs--; b.refs > 0 {
		return
	}
	delete(h.bases, base)
	for p, old := range b.saved {
		_ = writeSysctl(p, old) // the base may be gone
	}
}

// WatchLinks implements LinkWatcher with a netlink link subscription. If
// the subscription breaks (the socket overflowed, say), it reports a change
// so everything is re-read, and subscribes again.
func (h *LinuxHost) WatchLinks(done <-chan struct{}, changed func()) error {
	subscribe := func() (chan netlink.LinkUpdate, error) {
		ch := make(chan netlink.LinkUpdate, 64)
		err := netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{ErrorCallback: func(error) {}})
		return ch, err
	}
	ch, err := subscribe()
	if err != nil {
		return fmt.Errorf("subscribe to link changes: %w", err)
	}
	go func() {
		for {
			for range ch {
				changed()
			}
			select {
			case <-done:
				return
			case <-time.After(time.Second):
			}
			changed()
			for {
				if ch, err = subscribe(); err == nil {
					break
				}
				select {
				case <-done:
					return
				case <-time.After(time.Second):
				}
			}
		}
	}()
	return nil
}
