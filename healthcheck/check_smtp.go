package healthcheck

import (
	"bufio"
	"context"
	"fmt"
	"strings"
)

// smtpProber is SMTP_CHECK: greeting 220, HELO answered with 250, QUIT.
type smtpProber struct {
	ep   endpoint
	helo string
}

func (p *smtpProber) probe(ctx context.Context) result {
	c, err := p.ep.dial(ctx, "tcp")
	if err != nil {
		return fail("%v", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()
	r := bufio.NewReader(c)
	if code, err := smtpReply(r); err != nil || code != 220 {
		return fail("SMTP greeting: code %d, %v", code, err)
	}
	if _, err := fmt.Fprintf(c, "HELO %s\r\n", p.helo); err != nil {
		return fail("SMTP HELO: %v", err)
	}
	if code, err := smtpReply(r); err != nil || code != 250 {
		return fail("SMTP HELO reply: code %d, %v", code, err)
	}
	_, _ = c.Write([]byte("QUIT\r\n"))
	return pass()
}

// smtpReply reads one (possibly multi-line, "250-...") reply.
func smtpReply(r *bufio.Reader) (int, error) {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return 0, err
		}
		line = strings.TrimRight(line, "\r\n")
		var code int
		if len(line) < 3 {
			return 0, fmt.Errorf("short reply %q", line)
		}
		if _, err := fmt.Sscanf(line[:3], "%d", &code); err != nil {
			return 0, fmt.Errorf("reply %q: %w", line, err)
		}
		if len(line) > 3 && line[3] == '-' {
			continue
		}
		return code, nil
	}
}
