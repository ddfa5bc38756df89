package connsync

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// Multicast names the sync channel: keepalived's lvs_sync_daemon INTERFACE
// and its group, port and ttl options.
type Multicast struct {
	Interface string
	Group     netip.Addr // zero: DefaultGroup4
	Port      uint16     // zero: DefaultPort
	TTL       uint8      // zero: DefaultTTL
}

func (m Multicast) resolve() (Multicast, *net.Interface, error) {
	if !m.Group.IsValid() {
		m.Group = DefaultGroup4
	}
	if m.Port == 0 {
		m.Port = DefaultPort
	}
	if m.TTL == 0 {
		m.TTL = DefaultTTL
	}
	if !m.Group.IsMulticast() {
		return m, nil, fmt.Errorf("connsync: group %v: not a multicast address", m.Group)
	}
	ifi, err := net.InterfaceByName(m.Interface)
	if err != nil {
		return m, nil, fmt.Errorf("connsync: interface %q: %w", m.Interface, err)
	}
	return m, ifi, nil
}

func (m Multicast) network() string {
	if m.Group.Is4() {
		return "udp4"
	}
	return "udp6"
}

// control runs f on the socket before bind and folds both errors.
func control(f func(fd int) error) func(string, string, syscall.RawConn) error {
	return func(_, _ string, rc syscall.RawConn) error {
		var ferr error
		if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
			return err
		}
		return ferr
	}
}

// DialMulticast opens the master's socket: multicast out of the interface
// with the TTL, loop off (IPVS's settings), bound to the interface's first
// IPv4 address for IPv4 so the source is predictable. Write to the
// returned address.
func DialMulticast(m Multicast) (net.PacketConn, net.Addr, error) {
	m, ifi, err := m.resolve()
	if err != nil {
		return nil, nil, err
	}
	lc := net.ListenConfig{Control: control(func(fd int) error {
		if m.Group.Is4() {
			if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(ifi.Index)}); err != nil {
				return fmt.Errorf("IP_MULTICAST_IF: %w", err)
			}
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, int(m.TTL)); err != nil {
				return fmt.Errorf("IP_MULTICAST_TTL: %w", err)
			}
			return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, ifi.Index); err != nil {
			return fmt.Errorf("IPV6_MULTICAST_IF: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, int(m.TTL)); err != nil {
			return fmt.Errorf("IPV6_MULTICAST_HOPS: %w", err)
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, 0)
	})}
	laddr := ":0"
	if m.Group.Is4() {
		if a := firstAddr4(ifi); a.IsValid() {
			laddr = netip.AddrPortFrom(a, 0).String()
		}
	}
	pc, err := lc.ListenPacket(context.Background(), m.network(), laddr)
	if err != nil {
		return nil, nil, fmt.Errorf("connsync: sender socket on %s: %w", m.Interface, err)
	}
	dst := &net.UDPAddr{IP: m.Group.AsSlice(), Port: int(m.Port)}
	if m.Group.Is6() {
		dst.Zone = ifi.Name
	}
	return pc, dst, nil
}

// ListenMulticast opens the backup's socket: bound to the group and port
// on the interface only, group joined there, address reuse on (as IPVS's
// backup socket), so a master and a backup socket can coexist.
func ListenMulticast(m Multicast) (net.PacketConn, error) {
	m, ifi, err := m.resolve()
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: control(func(fd int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fmt.Errorf("SO_REUSEADDR: %w", err)
		}
		if err := unix.BindToDevice(fd, ifi.Name); err != nil {
			return fmt.Errorf("SO_BINDTODEVICE: %w", err)
		}
		return nil
	})}
	bind := netip.AddrPortFrom(m.Group, m.Port).String()
	if m.Group.Is6() {
		bind = netip.AddrPortFrom(m.Group.WithZone(ifi.Name), m.Port).String()
	}
	pc, err := lc.ListenPacket(context.Background(), m.network(), bind)
	if err != nil {
		return nil, fmt.Errorf("connsync: receiver socket on %s %s: %w", m.Interface, bind, err)
	}
	rc, err := pc.(*net.UDPConn).SyscallConn()
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("connsync: receiver socket: %w", err)
	}
	var jerr error
	err = rc.Control(func(fd uintptr) {
		if m.Group.Is4() {
			jerr = unix.SetsockoptIPMreqn(int(fd), unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP,
				&unix.IPMreqn{Multiaddr: m.Group.As4(), Ifindex: int32(ifi.Index)})
			return
		}
		jerr = unix.SetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP,
			&unix.IPv6Mreq{Multiaddr: m.Group.As16(), Interface: uint32(ifi.Index)})
	})
	if err == nil {
		err = jerr
	}
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("connsync: join %v on %s: %w", m.Group, m.Interface, err)
	}
	return pc, nil
}

func firstAddr4(ifi *net.Interface) netip.Addr {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap()
			}
		}
	}
	return netip.Addr{}
}
