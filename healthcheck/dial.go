package healthcheck

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// result is the outcome of one check run.
type result struct {
	ok     bool
	weight int    // misc_dynamic weight, or -1
	detail string // why it failed, for the log
}

func pass() result { return result{ok: true, weight: -1} }
func fail(format string, a ...any) result {
	return result{weight: -1, detail: fmt.Sprintf(format, a...)}
}

// prober runs one check. It must return when ctx is done.
type prober interface {
	probe(ctx context.Context) result
}

// endpoint is the addressing common to the network checkers.
type endpoint struct {
	addr   netip.AddrPort
	bind   netip.AddrPort // zero Addr: kernel's choice
	bindIf string
	fwmark uint32
}

// control sets SO_MARK and SO_BINDTODEVICE on a socket before connect.
func (e *endpoint) control(_, _ string, c syscall.RawConn) error {
	if e.fwmark == 0 && e.bindIf == "" {
		return nil
	}
	var serr error
	err := c.Control(func(fd uintptr) {
		if e.fwmark != 0 {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(e.fwmark)); err != nil {
				serr = fmt.Errorf("SO_MARK %d: %w", e.fwmark, err)
				return
			}
		}
		if e.bindIf != "" {
			if err := unix.BindToDevice(int(fd), e.bindIf); err != nil {
				serr = fmt.Errorf("SO_BINDTODEVICE %s: %w", e.bindIf, err)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func (e *endpoint) dialer(network string) *net.Dialer {
	// Checks are short-lived: no keepalive setsockopts.
	d := &net.Dialer{Control: e.control, KeepAlive: -1}
	if e.bind.Addr().IsValid() || e.bind.Port() != 0 {
		a := e.bind.Addr()
		if !a.IsValid() {
			a = netip.IPv4Unspecified()
			if e.addr.Addr().Is6() {
				a = netip.IPv6Unspecified()
			}
		}
		ap := netip.AddrPortFrom(a, e.bind.Port())
		if network == "udp" {
			d.LocalAddr = net.UDPAddrFromAddrPort(ap)
		} else {
			d.LocalAddr = net.TCPAddrFromAddrPort(ap)
		}
	}
	return d
}

// dial connects and ties the connection's deadline to ctx.
func (e *endpoint) dial(ctx context.Context, network string) (net.Conn, error) {
	c, err := e.dialer(network).DialContext(ctx, network, e.addr.String())
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	return c, nil
}

// aLongTimeAgo is a deadline in the past, to wake blocked reads.
var aLongTimeAgo = time.Unix(1, 0)
