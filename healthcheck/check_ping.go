package healthcheck

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"syscall"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// pingProber is PING_CHECK: one ICMP echo, answered before the timeout.
// It uses an unprivileged ICMP datagram socket where ping_group_range
// allows it and a raw socket otherwise (root).
type pingProber struct{ ep endpoint }

func (p *pingProber) probe(ctx context.Context) result {
	dst := p.ep.addr.Addr()
	v6 := dst.Is6() && !dst.Is4In6()
	netDgram, netRaw, proto := "udp4", "ip4:icmp", 1
	var echoT, replyT icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if v6 {
		netDgram, netRaw, proto = "udp6", "ip6:ipv6-icmp", 58
		echoT, replyT = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	src := ""
	if p.ep.bind.Addr().IsValid() {
		src = p.ep.bind.Addr().String()
	}
	dgram := true
	c, err := icmp.ListenPacket(netDgram, src)
	if err != nil {
		dgram = false
		if c, err = icmp.ListenPacket(netRaw, src); err != nil {
			return fail("ICMP socket: %v", err)
		}
	}
	defer c.Close()
	if p.ep.fwmark != 0 || p.ep.bindIf != "" {
		if err := setSockopts(c, p.ep); err != nil {
			return fail("%v", err)
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	id, seq := int(rand.Uint32()&0xffff), int(rand.Uint32()&0xffff)
	body := &icmp.Echo{ID: id, Seq: seq, Data: []byte("xvs-healthcheck")}
	wb, err := (&icmp.Message{Type: echoT, Body: body}).Marshal(nil)
	if err != nil {
		return fail("ICMP marshal: %v", err)
	}
	var to net.Addr = &net.IPAddr{IP: dst.AsSlice()}
	if dgram {
		to = &net.UDPAddr{IP: dst.AsSlice()}
	}
	if _, err := c.WriteTo(wb, to); err != nil {
		return fail("ICMP send: %v", err)
	}
	rb := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(rb)
		if err != nil {
			if os.IsTimeout(err) || ctx.Err() != nil {
				return fail("ICMP echo to %s: no reply", dst)
			}
			return fail("ICMP read: %v", err)
		}
		if fromIP(from) != dst.Unmap().String() {
			continue
		}
		m, err := icmp.ParseMessage(proto, rb[:n])
		if err != nil || m.Type != replyT {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		// A datagram socket rewrites the ID to its port, so only the
		// sequence identifies our echo there.
		if !ok || e.Seq != seq || (!dgram && e.ID != id) {
			continue
		}
		return pass()
	}
}

func fromIP(a net.Addr) string {
	switch a := a.(type) {
	case *net.IPAddr:
		return a.IP.String()
	case *net.UDPAddr:
		return a.IP.String()
	}
	return ""
}

func setSockopts(c *icmp.PacketConn, ep endpoint) error {
	var sc syscall.Conn
	if v4 := c.IPv4PacketConn(); v4 != nil {
		sc, _ = v4.PacketConn.(syscall.Conn)
	} else if v6 := c.IPv6PacketConn(); v6 != nil {
		sc, _ = v6.PacketConn.(syscall.Conn)
	}
	if sc == nil {
		return fmt.Errorf("ICMP socket: no raw access for SO_MARK")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("ICMP socket: %w", err)
	}
	return ep.control("", "", rc)
}
