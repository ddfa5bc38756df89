package healthcheck

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
)

// maxRegexBody bounds how much of a body is kept for regex matching; the
// digest is computed over the whole body as it streams.
const maxRegexBody = 1 << 20

// httpProber is HTTP_GET and SSL_GET.
type httpProber struct {
	ep       endpoint
	tls      bool
	sni      bool
	proto    string
	defHost  string // virtualhost from checker, real server or service
	urls     []httpURL
	endpoint string // "[ip]:tcp:port" for messages
}

type httpURL struct {
	URL
	re     *regexp.Regexp
	digest string // lower-case
}

func newHTTPProber(ep endpoint, tlsOn bool, o *HTTPOptions, defHost string) (*httpProber, error) {
	p := &httpProber{ep: ep, tls: tlsOn, proto: "1.0", defHost: defHost,
		endpoint: fmtEndpoint(ep.addr.Addr(), "tcp", ep.addr.Port())}
	if o == nil {
		o = &HTTPOptions{}
	}
	if o.Protocol != "" {
		switch o.Protocol {
		case "1.0", "1.0C", "1.1":
			p.proto = o.Protocol
		default:
			return nil, fmt.Errorf("http_protocol %q: want 1.0, 1.0C or 1.1", o.Protocol)
		}
	}
	if o.VirtualHost != "" {
		p.defHost = o.VirtualHost
	}
	p.sni = o.EnableSNI
	urls := o.URLs
	if len(urls) == 0 {
		urls = []URL{{Path: "/"}}
	}
	for _, u := range urls {
		hu := httpURL{URL: u, digest: strings.ToLower(u.Digest)}
		if hu.Path == "" {
			hu.Path = "/"
		}
		if u.Regex != "" {
			re, err := regexp.Compile(u.Regex)
			if err != nil {
				return nil, fmt.Errorf("url %s: regex: %w", u.Path, err)
			}
			hu.re = re
		}
		if hu.digest != "" {
			if b, err := hex.DecodeString(hu.digest); err != nil || len(b) != md5.Size {
				return nil, fmt.Errorf("url %s: digest %q is not an MD5 hex string", u.Path, u.Digest)
			}
		}
		p.urls = append(p.urls, hu)
	}
	return p, nil
}

func (p *httpProber) probe(ctx context.Context) result {
	for i := range p.urls {
		if r := p.get(ctx, &p.urls[i]); !r.ok {
			return r
		}
	}
	return pass()
}

func (p *httpProber) get(ctx context.Context, u *httpURL) result {
	c, err := p.ep.dial(ctx, "tcp")
	if err != nil {
		return fail("%s", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	defer stop()

	host := u.VirtualHost
	if host == "" {
		host = p.defHost
	}
	if p.tls {
		cfg := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // keepalived's SSL_GET does not verify
		if p.sni && host != "" {
			cfg.ServerName = host
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail("SSL handshake: %v", err)
		}
		c = tc
	}
	hostHdr := host
	if hostHdr == "" {
		hostHdr = p.ep.addr.Addr().String()
		if p.ep.addr.Addr().Is6() {
			hostHdr = "[" + hostHdr + "]"
		}
		if port := p.ep.addr.Port(); (p.tls && port != 443) || (!p.tls && port != 80) {
			hostHdr = net.JoinHostPort(p.ep.addr.Addr().String(), fmt.Sprint(port))
		}
	}
	var req bytes.Buffer
	ver := "HTTP/1.0"
	if p.proto == "1.1" {
		ver = "HTTP/1.1"
	}
	fmt.Fprintf(&req, "GET %s %s\r\nUser-Agent: KeepAliveClient\r\nHost: %s\r\n", u.Path, ver, hostHdr)
	if p.proto != "1.0" {
		req.WriteString("Connection: close\r\n")
	}
	req.WriteString("\r\n")
	if _, err := c.Write(req.Bytes()); err != nil {
		return fail("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return fail("read response: %v", err)
	}
	defer resp.Body.Close()
	if !statusOK(resp.StatusCode, u.StatusCodes) {
		return fail("HTTP status code error to %s url(%s), status_code [%d]", p.endpoint, u.Path, resp.StatusCode)
	}
	if u.digest == "" && u.re == nil {
		return pass()
	}
	h := md5.New()
	var keep bytes.Buffer
	w := io.Writer(h)
	if u.re != nil {
		w = io.MultiWriter(h, &limitedBuffer{b: &keep, n: maxRegexBody})
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fail("read body of url(%s): %v", u.Path, err)
	}
	if u.digest != "" {
		if got := hex.EncodeToString(h.Sum(nil)); got != u.digest {
			return fail("MD5 digest error to %s url(%s), MD5SUM [%s] expected [%s]", p.endpoint, u.Path, got, u.digest)
		}
	}
	if u.re != nil && u.re.Match(keep.Bytes()) == u.RegexNoMatch {
		return fail("Regex match failed to %s url(%s)", p.endpoint, u.Path)
	}
	return pass()
}

func statusOK(code int, rs []StatusRange) bool {
	if len(rs) == 0 {
		return code >= 200 && code <= 299
	}
	for _, r := range rs {
		if code >= r.Lo && code <= r.Hi {
			return true
		}
	}
	return false
}

// limitedBuffer keeps the first n bytes written and drops the rest.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
