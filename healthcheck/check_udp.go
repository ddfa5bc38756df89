package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
)

// udpProber is UDP_CHECK. Without require_reply the check passes unless an
// ICMP error (seen as ECONNREFUSED and friends on the connected socket)
// arrives before connect_timeout, as in keepalived.
type udpProber struct {
	ep           endpoint
	payload      []byte
	requireReply bool
	pattern      []byte
	mask         []byte
	minLen       int
	maxLen       int
}

func newUDPProber(ep endpoint, o *UDPOptions) (*udpProber, error) {
	p := &udpProber{ep: ep, maxLen: defaultUDPMaxReply}
	if o == nil {
		o = &UDPOptions{}
	}
	p.payload = o.Payload
	p.requireReply = o.RequireReply || o.ReplyPattern != ""
	if o.ReplyPattern != "" {
		v, m, err := parseHexPattern(o.ReplyPattern, true)
		if err != nil {
			return nil, fmt.Errorf("UDP_CHECK require_reply: %w", err)
		}
		p.pattern, p.mask = v, m
	}
	p.minLen = o.MinReplyLength
	if o.MaxReplyLength > 0 {
		p.maxLen = o.MaxReplyLength
	}
	if p.minLen > p.maxLen {
		return nil, fmt.Errorf("UDP_CHECK: min_reply_length %d > max_reply_length %d", p.minLen, p.maxLen)
	}
	return p, nil
}

func (p *udpProber) probe(ctx context.Context) result {
	c, err := p.ep.dial(ctx, "udp")
	if err != nil {
		return fail("%v", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	payload := p.payload
	if payload == nil {
		payload = make([]byte, 16)
		for i := range payload {
			payload[i] = byte(rand.Uint32())
		}
	}
	if _, err := c.Write(payload); err != nil {
		return fail("UDP send: %v", err)
	}
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil {
		if isICMPError(err) {
			return fail("UDP socket error: %v", err)
		}
		if !p.requireReply && (errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil) {
			return pass()
		}
		return fail("UDP no reply: %v", err)
	}
	if !p.requireReply {
		return pass()
	}
	if n < p.minLen || n > p.maxLen {
		return fail("UDP reply length %d outside [%d, %d]", n, p.minLen, p.maxLen)
	}
	for i := 0; i < n && i < len(p.pattern); i++ {
		if buf[i]&p.mask[i] != p.pattern[i] {
			return fail("UDP reply byte %d is %#02x, want %#02x", i, buf[i], p.pattern[i])
		}
	}
	return pass()
}

func isICMPError(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTDOWN)
}

// ParseHexString parses keepalived's free-format HEX_STR (payload): groups
// separated by spaces, two digits a byte, a trailing odd digit its own
// byte. "Ab12f 3 456" is AB 12 0F 03 45 06.
func ParseHexString(s string) ([]byte, error) {
	v, _, err := parseHexPattern(s, false)
	return v, err
}

// parseHexPattern parses a HEX_STR; with wild, x/X nibbles are wildcards
// (mask 0).
func parseHexPattern(s string, wild bool) (val, mask []byte, err error) {
	for _, g := range strings.Fields(s) {
		for i := 0; i < len(g); i += 2 {
			pair := g[i:min(i+2, len(g))]
			if len(pair) == 1 {
				pair = "0" + pair
			}
			var v, m byte
			for _, ch := range []byte(pair) {
				n, nm, ok := nibble(ch, wild)
				if !ok {
					return nil, nil, fmt.Errorf("hex string %q: bad character %q", s, ch)
				}
				v, m = v<<4|n, m<<4|nm
			}
			val, mask = append(val, v), append(mask, m)
		}
	}
	if len(val) == 0 {
		return nil, nil, fmt.Errorf("hex string %q: empty", s)
	}
	return val, mask, nil
}

func nibble(c byte, wild bool) (v, mask byte, ok bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', 0xf, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, 0xf, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, 0xf, true
	case wild && (c == 'x' || c == 'X'):
		return 0, 0, true
	}
	return 0, 0, false
}
