package vrrp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// LinuxHost is the Host of a Linux network namespace: raw IP sockets for
// adverts, netlink for links and addresses, ARP and ICMPv6 sockets for
// announcements. Sockets are opened in the namespace of the thread that
// first uses them.
type LinuxHost struct {
	mu    sync.Mutex // guards the fields below
	arps  map[string]*arp.Client
	na    *ipv6.PacketConn
	bases map[string]*baseConf // interfaces under a vmac → saved settings
}

// NewLinuxHost returns the host for the current network namespace.
func NewLinuxHost() *LinuxHost {
	return &LinuxHost{arps: map[string]*arp.Client{}, bases: map[string]*baseConf{}}
}

// Open implements Host with a raw protocol-112 socket bound to ifname.
func (h *LinuxHost) Open(ifname string, v6 bool, group netip.Addr) (Conn, error) {
	ifi, err := interfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	if !v6 {
		pc, err := lc.ListenPacket(context.Background(), "ip4:112", "0.0.0.0")
		if err != nil {
			return nil, fmt.Errorf("raw socket on %s: %w", ifname, err)
		}
		c := &conn4{pc: ipv4.NewPacketConn(pc), ifi: ifi}
		if err := c.setup(group); err != nil {
			pc.Close()
			return nil, fmt.Errorf("raw socket on %s: %w", ifname, err)
		}
		return c, nil
	}
	pc, err := lc.ListenPacket(context.Background(), "ip6:112", "::")
	if err != nil {
		return nil, fmt.Errorf("raw socket on %s: %w", ifname, err)
	}
	c := &conn6{pc: ipv6.NewPacketConn(pc), ifi: ifi}
	if err := c.setup(group); err != nil {
		pc.Close()
		return nil, fmt.Errorf("raw socket on %s: %w", ifname, err)
	}
	return c, nil
}

type conn4 struct {
	pc  *ipv4.PacketConn
	ifi *net.Interface
}

func (c *conn4) setup(group netip.Addr) error {
	if err := c.pc.SetControlMessage(ipv4.FlagTTL|ipv4.FlagDst|ipv4.FlagInterface, true); err != nil {
		return err
	}
	if err := c.pc.SetMulticastTTL(255); err != nil {
		return err
	}
	if err := c.pc.SetTTL(255); err != nil {
		return err
	}
	if err := c.pc.SetMulticastLoopback(false); err != nil {
		return err
	}
	if err := c.pc.SetMulticastInterface(c.ifi); err != nil {
		return err
	}
	if group.IsValid() {
		if err := c.pc.JoinGroup(c.ifi, &net.IPAddr{IP: group.AsSlice()}); err != nil {
			return fmt.Errorf("join %v: %w", group, err)
		}
	}
	return nil
}

func (c *conn4) Send(b []byte, src, dst netip.Addr) error {
	cm := &ipv4.ControlMessage{Src: src.AsSlice(), IfIndex: c.ifi.Index}
	_, err := c.pc.WriteTo(b, cm, &net.IPAddr{IP: dst.AsSlice()})
	return err
}

func (c *conn4) Recv(p *Packet) error {
	buf := p.Data[:cap(p.Data)]
	n, cm, src, err := c.pc.ReadFrom(buf)
	if err != nil {
		if errors.Is(err, net.ErrClosed) {
			return ErrClosed
		}
		return err
	}
	p.Data = buf[:n]
	p.TTL = -1
	if ip, ok := src.(*net.IPAddr); ok {
		p.Src, _ = netip.AddrFromSlice(ip.IP)
		p.Src = p.Src.Unmap()
	}
	if cm != nil {
		p.TTL = cm.TTL
		p.Dst, _ = netip.AddrFromSlice(cm.Dst)
		p.Dst = p.Dst.Unmap()
	}
	return nil
}

func (c *conn4) Close() error { return c.pc.Close() }

type conn6 struct {
	pc  *ipv6.PacketConn
	ifi *net.Interface
}

func (c *conn6) setup(group netip.Addr) error {
	if err := c.pc.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst|ipv6.FlagInterface, true); err != nil {
		return err
	}
	if err := c.pc.SetMulticastHopLimit(255); err != nil {
		return err
	}
	if err := c.pc.SetHopLimit(255); err != nil {
		return err
	}
	if err := c.pc.SetMulticastLoopback(false); err != nil {
		return err
	}
	if err := c.pc.SetMulticastInterface(c.ifi); err != nil {
		return err
	}
	if group.IsValid() {
		if err := c.pc.JoinGroup(c.ifi, &net.IPAddr{IP: group.AsSlice()}); err != nil {
			return fmt.Errorf("join %v: %w", group, err)
		}
	}
	return nil
}

func (c *conn6) Send(b []byte, src, dst netip.Addr) error {
	cm := &ipv6.ControlMessage{Src: src.AsSlice(), IfIndex: c.ifi.Index, HopLimit: 255}
	_, err := c.pc.WriteTo(b, cm, &net.IPAddr{IP: dst.AsSlice(), Zone: c.ifi.Name})
	return err
}

func (c *conn6) Recv(p *Packet) error {
	buf := p.Data[:cap(p.Data)]
	n, cm, src, err := c.pc.ReadFrom(buf)
	if err != nil {
		if errors.Is(err, net.ErrClosed) {
			return ErrClosed
		}
		return err
	}
	p.Data = buf[:n]
	p.TTL = -1
	if ip, ok := src.(*net.IPAddr); ok {
		p.Src, _ = netip.AddrFromSlice(ip.IP)
	}
	if cm != nil {
		p.TTL = cm.HopLimit
		p.Dst, _ = netip.AddrFromSlice(cm.Dst)
	}
	return nil
}

func (c *conn6) Close() error { return c.pc.Close() }

// PrimaryAddr implements Host: the first IPv4 address of ifname, or its
// IPv6 link-local address (RFC 5798 §5.1.2.2 wants link-local for v6).
func (h *LinuxHost) PrimaryAddr(ifname string, v6 bool) (netip.Addr, error) {
	link, err := linkByName(ifname)
	if err != nil {
		return netip.Addr{}, err
	}
	fam := netlink.FAMILY_V4
	if v6 {
		fam = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(link, fam)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of %s: %w", ifname, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if v6 != ip.Is6() || (v6 && !ip.IsLinkLocalUnicast()) {
			continue
		}
		if a.Flags&unix.IFA_F_SECONDARY != 0 {
			continue
		}
		return ip, nil
	}
	return netip.Addr{}, fmt.Errorf("%s: %w (%s)", ifname, ErrNoAddr, map[bool]string{false: "IPv4", true: "IPv6 link-local"}[v6])
}

// LinkUp implements Host: administratively up and carrier present.
func (h *LinuxHost) LinkUp(ifname string) (bool, error) {
	link, err := linkByName(ifname)
	if err != nil {
		return false, err
	}
	a := link.Attrs()
	if a.Flags&net.FlagUp == 0 {
		return false, nil
	}
	return a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown, nil
}

// linkByName wraps ErrNoLink when ifname does not exist.
func linkByName(ifname string) (netlink.Link, error) {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("link %s: %w", ifname, ErrNoLink)
		}
		return nil, fmt.Errorf("link %s: %w", ifname, err)
	}
	return link, nil
}

func interfaceByName(ifname string) (*net.Interface, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		if _, lerr := linkByName(ifname); errors.Is(lerr, ErrNoLink) {
			return nil, lerr
		}
		return nil, fmt.Errorf("interface %s: %w", ifname, err)
	}
	return ifi, nil
}

func vipAddr(v VIP) (netlink.Link, *netlink.Addr, error) {
	link, err := linkByName(v.Dev)
	if err != nil {
		return nil, nil, err
	}
	p := v.Prefix
	if p.Bits() < 0 {
		p = netip.PrefixFrom(p.Addr(), p.Addr().BitLen())
	}
	a := &netlink.Addr{
		IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Label: v.Label,
	}
	if p.Addr().Is6() {
		// The VIP must answer at once, not after duplicate detection.
		a.Flags = unix.IFA_F_NODAD
	}
	return link, a, nil
}

// AddAddr implements Host; an address already present is not an error.
func (h *LinuxHost) AddAddr(v VIP) error {
	link, a, err := vipAddr(v)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add %v to %s: %w", v.Prefix, v.Dev, err)
	}
	return nil
}

// DelAddr implements Host; an address already gone (or gone with its
// interface) is not an error.
func (h *LinuxHost) DelAddr(v VIP) error {
	link, a, err := vipAddr(v)
	if errors.Is(err, ErrNoLink) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := netlink.AddrDel(link, a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("remove %v from %s: %w", v.Prefix, v.Dev, err)
	}
	return nil
}

// Announce implements Host: a gratuitous ARP request (sender = target =
// VIP, broadcast) or an unsolicited NA to ff02::1 with the Override flag
// (RFC 4861 §7.2.6).
func (h *LinuxHost) Announce(dev string, ip netip.Addr) error {
	ifi, err := interfaceByName(dev)
	if err != nil {
		return err
	}
	if ip.Is4() {
		c, err := h.arpClient(ifi)
		if err != nil {
			return err
		}
		p, err := arp.NewPacket(arp.OperationRequest, ifi.HardwareAddr, ip, ethernet.Broadcast, ip)
		if err != nil {
			return fmt.Errorf("gratuitous ARP for %v: %w", ip, err)
		}
		if err := c.WriteTo(p, ethernet.Broadcast); err != nil {
			return fmt.Errorf("gratuitous ARP for %v on %s: %w", ip, dev, err)
		}
		return nil
	}
	pc, err := h.naConn()
	if err != nil {
		return err
	}
	msg := icmp.Message{Type: ipv6.ICMPTypeNeighborAdvertisement, Body: &icmp.RawBody{Data: naBody(ip, ifi.HardwareAddr)}}
	b, err := msg.Marshal(nil) // the kernel fills the ICMPv6 checksum
	if err != nil {
		return fmt.Errorf("unsolicited NA for %v: %w", ip, err)
	}
	cm := &ipv6.ControlMessage{Src: ip.AsSlice(), IfIndex: ifi.Index, HopLimit: 255}
	dst := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: dev}
	if _, err := pc.WriteTo(b, cm, dst); err != nil {
		return fmt.Errorf("unsolicited NA for %v on %s: %w", ip, dev, err)
	}
	return nil
}

// naBody is the NA body after type/code/checksum: flags (Override), the
// target, and a target link-layer address option.
func naBody(ip netip.Addr, mac net.HardwareAddr) []byte {
	b := make([]byte, 4, 4+16+8)
	b[0] = 0x20 // O flag
	t := ip.As16()
	b = append(b, t[:]...)
	if len(mac) == 6 {
		b = append(b, 2, 1)
		b = append(b, mac...)
	}
	return b
}

func (h *LinuxHost) arpClient(ifi *net.Interface) (*arp.Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	// Keyed by index too: a vmac or interface recreated under the same
	// name is a new link, and the old socket would write nowhere.
	key := fmt.Sprintf("%s/%d", ifi.Name, ifi.Index)
	if c := h.arps[key]; c != nil {
		return c, nil
	}
	for k, c := range h.arps {
		if strings.HasPrefix(k, ifi.Name+"/") {
			c.Close() // the link it was bound to is gone
			delete(h.arps, k)
		}
	}
	c, err := arp.Dial(ifi)
	if err != nil {
		return nil, fmt.Errorf("ARP socket on %s: %w", ifi.Name, err)
	}
	h.arps[key] = c
	return c, nil
}

func (h *LinuxHost) naConn() (*ipv6.PacketConn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.na != nil {
		return h.na, nil
	}
	c, err := net.ListenPacket("ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, fmt.Errorf("ICMPv6 socket: %w", err)
	}
	pc := ipv6.NewPacketConn(c)
	if err := pc.SetMulticastHopLimit(255); err != nil {
		c.Close()
		return nil, fmt.Errorf("ICMPv6 socket: %w", err)
	}
	h.na = pc
	return pc, nil
}

// Close releases the cached announcement sockets.
func (h *LinuxHost) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for n, c := range h.arps {
		c.Close()
		delete(h.arps, n)
	}
	if h.na != nil {
		h.na.Close()
		h.na = nil
	}
	return nil
}
