package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsProber is DNS_CHECK: a query over UDP must come back with our ID, the
// response bit and RCODE NOERROR.
type dnsProber struct {
	ep    endpoint
	qtype dnsmessage.Type
	name  dnsmessage.Name
}

var dnsTypes = map[string]dnsmessage.Type{
	"A": dnsmessage.TypeA, "NS": dnsmessage.TypeNS, "CNAME": dnsmessage.TypeCNAME,
	"SOA": dnsmessage.TypeSOA, "MX": dnsmessage.TypeMX, "TXT": dnsmessage.TypeTXT,
	"AAAA": dnsmessage.TypeAAAA,
}

func newDNSProber(ep endpoint, o *DNSOptions) (*dnsProber, error) {
	p := &dnsProber{ep: ep, qtype: dnsmessage.TypeSOA}
	name := "."
	if o != nil {
		if o.Type != "" {
			t, ok := dnsTypes[strings.ToUpper(o.Type)]
			if !ok {
				return nil, fmt.Errorf("DNS_CHECK type %q: want A NS CNAME SOA MX TXT or AAAA", o.Type)
			}
			p.qtype = t
		}
		if o.Name != "" {
			name = o.Name
		}
	}
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return nil, fmt.Errorf("DNS_CHECK name %q: %w", name, err)
	}
	p.name = n
	return p, nil
}

func (p *dnsProber) probe(ctx context.Context) result {
	id := uint16(rand.Uint32())
	q := dnsmessage.Question{Name: p.name, Type: p.qtype, Class: dnsmessage.ClassINET}
	msg := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{q},
	}
	pkt, err := msg.Pack()
	if err != nil {
		return fail("DNS pack: %v", err)
	}
	c, err := p.ep.dial(ctx, "udp")
	if err != nil {
		return fail("%v", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	if _, err := c.Write(pkt); err != nil {
		return fail("DNS send: %v", err)
	}
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return fail("DNS read: %v", err)
		}
		var pr dnsmessage.Parser
		h, err := pr.Start(buf[:n])
		if err != nil || h.ID != id || !h.Response {
			continue // not our answer; keep waiting until the deadline
		}
		if h.RCode != dnsmessage.RCodeSuccess {
			return fail("DNS rcode %v", h.RCode)
		}
		// keepalived checks ID, QR and RCODE only; a question, when the
		// reply carries one, must be ours.
		got, err := pr.Question()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return pass()
		}
		if err != nil {
			return fail("DNS reply question: %v", err)
		}
		if got.Type != q.Type || !strings.EqualFold(got.Name.String(), q.Name.String()) {
			return fail("DNS reply is for %v %v, want %v %v", got.Name, got.Type, q.Name, q.Type)
		}
		return pass()
	}
}
