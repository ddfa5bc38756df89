package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tcpProber is TCP_CHECK: a successful connect is a pass. The socket is
// closed with a RST (SO_LINGER 0), as HAProxy does: 1000 checks a second
// closed with FIN would keep ~60000 sockets in TIME_WAIT on the director
// and cost three more packets each.
//
// It works on a raw non-blocking socket rather than a net.Conn so the
// pool's scheduler can drive every TCP_CHECK from one epoll loop (open,
// wait for writability, finish) with no goroutine and no allocation per
// check; probe is the same steps waiting with poll(2), for direct use.
type tcpProber struct {
	ep     endpoint
	family int
	bindSA unix.Sockaddr // nil: kernel's choice
	desc   string        // "ip:port" for failure details

	// The destination in the kernel's layout, for connect as a raw
	// system call (see rawConnect).
	raw4   unix.RawSockaddrInet4
	raw6   unix.RawSockaddrInet6
	rawPtr unsafe.Pointer
	rawLen uintptr
}

// lingerRST makes close send a RST.
var lingerRST = unix.Linger{Onoff: 1, Linger: 0}

func newTCPProber(ep endpoint) (*tcpProber, error) {
	dst := netip.AddrPortFrom(ep.addr.Addr().Unmap(), ep.addr.Port())
	p := &tcpProber{ep: ep, desc: dst.String()}
	dstSA, family, err := sockaddr(dst)
	if err != nil {
		return nil, err
	}
	p.family = family
	switch sa := dstSA.(type) {
	case *unix.SockaddrInet4:
		p.raw4 = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: sa.Addr}
		putPort(&p.raw4.Port, sa.Port)
		p.rawPtr, p.rawLen = unsafe.Pointer(&p.raw4), unsafe.Sizeof(p.raw4)
	case *unix.SockaddrInet6:
		p.raw6 = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: sa.Addr, Scope_id: sa.ZoneId}
		putPort(&p.raw6.Port, sa.Port)
		p.rawPtr, p.rawLen = unsafe.Pointer(&p.raw6), unsafe.Sizeof(p.raw6)
	}
	if ep.bind.Addr().IsValid() || ep.bind.Port() != 0 {
		a := ep.bind.Addr().Unmap()
		if !a.IsValid() {
			a = netip.IPv4Unspecified()
			if p.family == unix.AF_INET6 {
				a = netip.IPv6Unspecified()
			}
		}
		var fam int
		if p.bindSA, fam, err = sockaddr(netip.AddrPortFrom(a, ep.bind.Port())); err != nil {
			return nil, fmt.Errorf("bindto: %w", err)
		}
		if fam != p.family {
			return nil, fmt.Errorf("bindto %s and connect address %s differ in family", a, dst.Addr())
		}
	}
	return p, nil
}

// sockaddr converts a for connect/bind. A zoned IPv6 address takes its
// scope from the interface named by the zone.
func sockaddr(a netip.AddrPort) (unix.Sockaddr, int, error) {
	ip := a.Addr()
	switch {
	case ip.Is4():
		return &unix.SockaddrInet4{Addr: ip.As4(), Port: int(a.Port())}, unix.AF_INET, nil
	case ip.Is6():
		sa := &unix.SockaddrInet6{Addr: ip.As16(), Port: int(a.Port())}
		if z := ip.Zone(); z != "" {
			ifi, err := net.InterfaceByName(z)
			if err != nil {
				return nil, 0, fmt.Errorf("address %s: zone: %w", ip, err)
			}
			sa.ZoneId = uint32(ifi.Index)
		}
		return sa, unix.AF_INET6, nil
	}
	return nil, 0, fmt.Errorf("address %s: not an IP address", a)
}

// putPort stores port in network byte order.
func putPort(dst *uint16, port int) {
	b := (*[2]byte)(unsafe.Pointer(dst))
	b[0], b[1] = byte(port>>8), byte(port)
}

// The per-check system calls are issued raw, without telling the Go
// scheduler: none of them blocks (the socket is non-blocking, a close with
// SO_LINGER 0 resets at once), and a scheduled system call from a process
// that was idle wakes sysmon, whose polling showed as 7% of the pool's CPU
// in profiles (BenchmarkPool1000TCP; 3% with raw calls).

func rawConnect(fd int, sa unsafe.Pointer, n uintptr) error {
	if _, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(sa), n); e != 0 {
		return e
	}
	return nil
}

func rawClose(fd int) {
	_, _, _ = unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

func rawSetLinger(fd int) error {
	if _, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_LINGER,
		uintptr(unsafe.Pointer(&lingerRST)), unsafe.Sizeof(lingerRST), 0); e != 0 {
		return e
	}
	return nil
}

// open creates the socket, applies bindto/fwmark/bind_if and starts the
// connect; the caller waits for the socket to become writable, then calls
// finish. On error no socket is left open.
func (p *tcpProber) open() (int, error) {
	fd, err := unix.Socket(p.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("TCP socket: %w", err)
	}
	if err = p.setup(fd); err == nil {
		if err = rawConnect(fd, p.rawPtr, p.rawLen); errors.Is(err, unix.EINPROGRESS) {
			err = nil
		} else if err != nil {
			err = fmt.Errorf("connect to %s: %w", p.desc, err)
		}
	}
	if err != nil {
		rawClose(fd)
		return -1, err
	}
	return fd, nil
}

func (p *tcpProber) setup(fd int) error {
	// Set before connect so that a close at any point resets.
	if err := rawSetLinger(fd); err != nil {
		return fmt.Errorf("SO_LINGER: %w", err)
	}
	if p.ep.fwmark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(p.ep.fwmark)); err != nil {
			return fmt.Errorf("SO_MARK %d: %w", p.ep.fwmark, err)
		}
	}
	if p.ep.bindIf != "" {
		if err := unix.BindToDevice(fd, p.ep.bindIf); err != nil {
			return fmt.Errorf("SO_BINDTODEVICE %s: %w", p.ep.bindIf, err)
		}
	}
	if p.bindSA != nil {
		if err := unix.Bind(fd, p.bindSA); err != nil {
			return fmt.Errorf("bind %s: %w", p.ep.bind, err)
		}
	}
	return nil
}

// finish reads the connect's outcome from a socket that polled ready with
// events and closes it with a RST. A TCP socket polls writable without
// error only once the handshake is done, so SO_ERROR is read only when
// the poll reported an error or hang-up: one system call less per pass.
func (p *tcpProber) finish(fd int, events uint32) result {
	if events&(unix.EPOLLERR|unix.EPOLLHUP) == 0 && events&unix.EPOLLOUT != 0 {
		rawClose(fd)
		return pass()
	}
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	rawClose(fd)
	switch {
	case err != nil:
		return fail("connect to %s: SO_ERROR: %v", p.desc, err)
	case soerr != 0:
		return fail("connect to %s: %v", p.desc, unix.Errno(soerr))
	}
	return pass()
}

// timedOut is the result of a connect that did not finish in time.
func (p *tcpProber) timedOut(d time.Duration) result {
	return fail("connect to %s: timeout after %v", p.desc, d)
}

// probe runs one check on the calling goroutine, bounded by ctx; the pool
// uses open/finish from its epoll loop instead.
func (p *tcpProber) probe(ctx context.Context) result {
	start := time.Now()
	fd, err := p.open()
	if err != nil {
		return fail("%v", err)
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	for {
		// Short polls so cancellation is seen soon.
		wait := 50 * time.Millisecond
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		if ctx.Err() != nil || wait <= 0 {
			_ = unix.Close(fd)
			return p.timedOut(time.Since(start).Round(time.Millisecond))
		}
		n, err := unix.Poll(pfd, int((wait+time.Millisecond-1)/time.Millisecond))
		switch {
		case errors.Is(err, unix.EINTR):
		case err != nil:
			_ = unix.Close(fd)
			return fail("connect to %s: poll: %v", p.desc, err)
		case n > 0:
			return p.finish(fd, uint32(pfd[0].Revents))
		}
	}
}

// dialTCPProber is the TCP_CHECK through net.Dialer, one goroutine per
// probe; kept as the reference that tests and benchmarks compare
// tcpProber against.
type dialTCPProber struct{ ep endpoint }

func (p *dialTCPProber) probe(ctx context.Context) result {
	c, err := p.ep.dial(ctx, "tcp")
	if err != nil {
		return fail("%v", err)
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
	return pass()
}
