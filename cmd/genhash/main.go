// Command genhash computes the digest of a web page the way keepalived's
// HTTP_GET and SSL_GET checkers do, for their `digest` keyword: it sends
// keepalived's HTTP/1.0 GET to a real server and hashes the body that
// comes back (up to Content-Length), printing "MD5SUM = <hex>" as
// keepalived's genhash does.
//
//	genhash -s 198.18.0.11 -p 80 -u /index.html
//	genhash -S -s 198.18.0.11 -p 443 -u /health -V www.example.test -I
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

const versionString = "genhash (xvs), keepalived genhash compatible\n"

// maxResponse bounds what is read from the server; health-check pages are
// small, and a runaway stream should not fill memory.
const maxResponse = 64 << 20

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

type request struct {
	server  netip.Addr
	port    uint16
	url     string
	ssl     bool
	sni     bool
	vhost   string
	verbose bool
	mark    uint32
	hash    string // "MD5" or "SHA1"
	proto   string // "1.0", "1.0c" or "1.1"
	timeout time.Duration
}

// plainError is a message printed as it is (keepalived's wording).
type plainError string

func (e plainError) Error() string { return string(e) }

// errUsage asks run to print the usage text.
var errUsage = errors.New("usage")

func parseArgs(args []string, stderr io.Writer) (*request, error) {
	fs := pflag.NewFlagSet("genhash", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		server, url, vhost, hashName, proto, port, mark string
		ssl, sni, verbose, help, release                bool
		timeout                                         int
	)
	fs.BoolVarP(&release, "release", "r", false, "")
	fs.BoolVarP(&help, "help", "h", false, "")
	fs.BoolVarP(&verbose, "verbose", "v", false, "")
	fs.BoolVarP(&ssl, "use-ssl", "S", false, "")
	fs.BoolVarP(&sni, "use-sni", "I", false, "")
	fs.StringVarP(&server, "server", "s", "", "")
	fs.StringVarP(&hashName, "hash", "H", "md5", "")
	fs.StringVarP(&vhost, "use-virtualhost", "V", "", "")
	fs.StringVarP(&port, "port", "p", "", "")
	fs.StringVarP(&url, "url", "u", "/", "")
	fs.StringVarP(&mark, "fwmark", "m", "", "")
	fs.StringVarP(&proto, "protocol", "P", "1.0", "")
	fs.IntVarP(&timeout, "timeout", "t", 5, "")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if release {
		fmt.Fprint(stderr, versionString)
	}
	if help {
		return nil, errUsage
	}
	if fs.NArg() > 0 {
		return nil, plainError("Unexpected argument(s): " + strings.Join(fs.Args(), " "))
	}
	req := &request{url: url, ssl: ssl, sni: sni, vhost: vhost, verbose: verbose, proto: proto,
		timeout: time.Duration(timeout) * time.Second}
	if server == "" || port == "" {
		return nil, errUsage
	}
	a, err := netip.ParseAddr(server)
	if err != nil {
		return nil, fmt.Errorf("server should be an IP, not %s", server)
	}
	req.server = a.Unmap()
	p, err := strconv.ParseInt(port, 10, 32)
	if err != nil || p <= 0 || p > 65535 {
		return nil, fmt.Errorf("invalid port number '%s'", port)
	}
	req.port = uint16(p)
	if mark != "" {
		m, err := strconv.ParseUint(strings.TrimLeft(mark, " \t"), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("invalid fwmark '%s'", mark)
		}
		req.mark = uint32(m)
	}
	switch strings.ToUpper(hashName) {
	case "MD5":
		req.hash = "MD5"
	case "SHA1":
		req.hash = "SHA1"
	default:
		return nil, fmt.Errorf("unknown hash algorithm: %s", hashName)
	}
	switch proto {
	case "1.0", "1.0c", "1.1":
	default:
		return nil, fmt.Errorf("invalid HTTP protocol version '%s'", proto)
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("invalid timeout '%d'", timeout)
	}
	return req, nil
}

const usage = `Usage:
  genhash -s server-address -p port -u url
  genhash -S -s server-address -p port -u url
  genhash -h
  genhash -r

Options (long or short):
  --use-ssl         -S   connect with TLS
  --use-sni         -I   send SNI in the TLS handshake (the -V name)
  --server          -s   the real server's IP address
  --port            -p   its port
  --url             -u   the URL path to fetch (default /)
  --use-virtualhost -V   the Host header to send
  --hash            -H   md5 (default) or sha1
  --protocol        -P   1.0 (default), 1.0c (with Connection: close) or 1.1
  --timeout         -t   seconds to wait (default 5)
  --fwmark          -m   mark the connection's packets (SO_MARK)
  --verbose         -v   show the headers and body received
  --release         -r   show the version
  --help            -h   this text
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	req, err := parseArgs(args, stderr)
	if errors.Is(err, errUsage) {
		if err != errUsage {
			fmt.Fprintln(stderr, err)
		}
		fmt.Fprint(stderr, versionString+usage)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	start := time.Now()
	raw, err := fetch(ctx, req)
	if err != nil {
		fmt.Fprintf(stderr, "Connection failed: %v\n", err)
		return 1
	}
	res := digest(raw, req.hash)
	if req.verbose {
		fmt.Fprintf(stdout, "%s    HTTP Header Buffer    %s", delimBegin, delimEnd)
		dump(stdout, res.header)
		fmt.Fprintf(stdout, "%s HTTP Header Ascii Buffer %s", delimBegin, delimEnd)
		fmt.Fprintf(stdout, "%s\n", res.header)
		fmt.Fprintf(stdout, "%s        HTML Buffer        %s", delimBegin, delimEnd)
		dump(stdout, res.body)
		fmt.Fprintf(stdout, "\n%s    HTML hash resulting    %s", delimBegin, delimEnd)
		dump(stdout, res.sum)
		fmt.Fprintf(stdout, "%s HTML hash final resulting %s", delimBegin, delimEnd)
	}
	fmt.Fprintf(stdout, "%sSUM = %s", req.hash, hex.EncodeToString(res.sum))
	if res.contentLen >= 0 && res.contentLen != res.received {
		fmt.Fprintf(stdout, "\nWARNING - Content-Length (%d) does not match received bytes (%d).", res.contentLen, res.received)
	}
	fmt.Fprint(stdout, "\n\n")
	if req.verbose {
		fmt.Fprintf(stdout, "Global response time for [%s] = %d usecs\n", req.url, time.Since(start).Microseconds())
	}
	if !res.complete {
		fmt.Fprintln(stderr, "warning: no end of HTTP header in the response; digest of nothing")
		return 1
	}
	return 0
}

const (
	delimBegin = "-----------------------["
	delimEnd   = "]-----------------------\n"
)

// requestText is keepalived's GET: HTTP/1.0, its User-Agent, and a Host
// header of the virtual host, or of the server's address and port.
func requestText(req *request) string {
	host := req.vhost
	if host == "" {
		host = netip.AddrPortFrom(req.server, req.port).String()
	}
	version, extra := "1.0", ""
	switch req.proto {
	case "1.0c":
		extra = "Connection: close\r\n"
	case "1.1":
		version, extra = "1.1", "Connection: close\r\n"
	}
	return fmt.Sprintf("GET %s HTTP/%s\r\nUser-Agent: KeepAlive GenHash Client\r\nHost: %s\r\n%s\r\n",
		req.url, version, host, extra)
}

// fetch sends the request and reads the whole response until the server
// closes the connection (HTTP/1.0).
func fetch(ctx context.Context, req *request) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, req.timeout)
	defer cancel()
	d := net.Dialer{}
	if req.mark != 0 {
		mark := int(req.mark)
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, mark)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	addr := netip.AddrPortFrom(req.server, req.port).String()
	var c net.Conn
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if req.ssl {
		// keepalived's checker does not verify certificates: it checks
		// that the server answers, not who it is.
		cfg := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // see above
		if req.sni && req.vhost != "" {
			cfg.ServerName = req.vhost
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		c = tc
	}
	if _, err := io.WriteString(c, requestText(req)); err != nil {
		return nil, fmt.Errorf("cannot send get request to %s: %w", addr, err)
	}
	raw, err := io.ReadAll(io.LimitReader(bufio.NewReader(c), maxResponse))
	if err != nil && len(raw) == 0 {
		return nil, fmt.Errorf("reading from %s: %w", addr, err)
	}
	// A TLS server that closes without close_notify, or a timeout after
	// data, still leaves a page to hash, as with keepalived.
	return raw, nil
}

type digestResult struct {
	header, body []byte
	sum          []byte
	contentLen   int64 // -1 when the header has none
	received     int64 // body bytes received
	complete     bool  // the header ended (blank line found)
}

// digest splits a raw HTTP response at the blank line after the header
// and hashes the body, at most Content-Length bytes of it, as keepalived
// does.
func digest(raw []byte, hashName string) digestResult {
	var h hash.Hash = md5.New()
	if hashName == "SHA1" {
		h = sha1.New()
	}
	res := digestResult{contentLen: -1}
	end := bytes.Index(raw, []byte("\r\n\r\n"))
	sep := 4
	if lf := bytes.Index(raw, []byte("\n\n")); lf >= 0 && (end < 0 || lf < end) {
		end, sep = lf, 2
	}
	if end < 0 {
		res.header = raw
		res.sum = h.Sum(nil)
		return res
	}
	res.complete = true
	res.header = raw[:end+sep]
	res.body = raw[end+sep:]
	res.received = int64(len(res.body))
	res.contentLen = contentLength(res.header)
	body := res.body
	if res.contentLen >= 0 && int64(len(body)) > res.contentLen {
		body = body[:res.contentLen]
	}
	h.Write(body)
	res.sum = h.Sum(nil)
	return res
}

// contentLength finds "Content-Length:" at the start of a header line
// (keepalived matches it case-sensitively).
func contentLength(header []byte) int64 {
	for _, line := range strings.Split(string(header), "\n") {
		v, ok := strings.CutPrefix(strings.TrimRight(line, "\r"), "Content-Length:")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 {
			return -1
		}
		return n
	}
	return -1
}

// dump writes b as offset, 16 hex bytes (a dash after 8) and their
// printable characters, the layout of genhash -v.
func dump(w io.Writer, b []byte) {
	for off := 0; off < len(b); off += 16 {
		line := b[off:min(off+16, len(b))]
		var hx, asc strings.Builder
		for i := range 16 {
			if i == 8 {
				hx.WriteString("- ")
			}
			if i < len(line) {
				fmt.Fprintf(&hx, "%02x ", line[i])
				c := line[i]
				if c < 0x20 || c > 0x7e {
					c = '.'
				}
				asc.WriteByte(c)
			} else {
				hx.WriteString("   ")
				asc.WriteByte(' ')
			}
		}
		fmt.Fprintf(w, "%04d  %s  %s\n", off, hx.String(), asc.String())
	}
}
