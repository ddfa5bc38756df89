package healthcheck

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// tlog is a slog.Logger writing to t.Log.
func tlog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// probeOnce builds a checker for rs as the pool would and runs it once.
func probeOnce(t *testing.T, opts PoolOptions, rs RealServer, c Checker) result {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = tlog(t)
	}
	p := NewPool(opts, nil)
	defer p.Close()
	vs := &vsState{key: "[198.18.0.100]:tcp:80", proto: "tcp"}
	r := &rsState{vs: vs, desc: fmtEndpoint(rs.Addr, "tcp", rs.Port)}
	cr, err := p.newChecker(r, &rs, &c)
	if err != nil {
		t.Fatalf("newChecker: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cr.timeout)
	defer cancel()
	return cr.prober.probe(ctx)
}

func addrPort(t testing.TB, a net.Addr) (netip.Addr, uint16) {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap.Addr(), ap.Port()
}

func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// closedPort returns a loopback port nobody listens on.
func closedPort(t *testing.T) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port := addrPort(t, l.Addr())
	l.Close()
	return port
}

// blackholePort returns a port whose SYNs are dropped: a listener with a
// full accept queue that never accepts.
func blackholePort(t *testing.T) uint16 {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(sa.(*syscall.SockaddrInet4).Port)
	// Fill the queue (backlog 0 holds one) until a connect stalls.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
		if i > 16 {
			t.Skip("cannot fill a listen queue here; timeout case not testable")
		}
	}
	return port
}

var loopback = netip.MustParseAddr("127.0.0.1")

func TestTCPCheck(t *testing.T) {
	l := listenTCP(t)
	_, up := addrPort(t, l.Addr())
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	tests := []struct {
		name string
		port uint16
		want bool
	}{
		{"up", up, true},
		{"refused", closedPort(t), false},
		{"timeout", blackholePort(t), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := probeOnce(t, PoolOptions{}, RealServer{Addr: loopback, Port: tc.port},
				Checker{Type: TCPCheck, ConnectTimeout: 300 * time.Millisecond})
			if r.ok != tc.want {
				t.Fatalf("ok = %v (%s), want %v", r.ok, r.detail, tc.want)
			}
		})
	}
}

func TestTCPCheckConnectPortAndBind(t *testing.T) {
	l := listenTCP(t)
	_, port := addrPort(t, l.Addr())
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		got <- c.RemoteAddr().String()
		c.Close()
	}()
	bindPort := closedPort(t)
	var mark uint32
	if os.Geteuid() == 0 {
		mark = 7 // SO_MARK needs CAP_NET_ADMIN
	}
	r := probeOnce(t, PoolOptions{}, RealServer{Addr: loopback, Port: 1},
		Checker{Type: TCPCheck, ConnectPort: port, BindTo: loopback, BindPort: bindPort, FWMark: mark, ConnectTimeout: time.Second})
	if !r.ok {
		t.Fatalf("probe failed: %s", r.detail)
	}
	if want := fmt.Sprintf("127.0.0.1:%d", bindPort); <-got != want {
		t.Fatalf("source address differs, want %s", want)
	}
}

func httpServer(t *testing.T, h http.Handler, tlsCfg *tls.Config) (netip.Addr, uint16) {
	t.Helper()
	l := listenTCP(t)
	srv := &http.Server{Handler: h, TLSConfig: tlsCfg}
	go func() {
		if tlsCfg != nil {
			_ = srv.ServeTLS(l, "", "")
		} else {
			_ = srv.Serve(l)
		}
	}()
	t.Cleanup(func() { srv.Close() })
	return addrPort(t, l.Addr())
}

const body = "hello from rs1\n"

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

func testMux(hosts chan<- string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		select {
		case hosts <- r.Host:
		default:
		}
		io.WriteString(w, body)
	})
	mux.HandleFunc("/missing", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusNotFound)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	return mux
}

func TestHTTPGet(t *testing.T) {
	addr, port := httpServer(t, testMux(nil), nil)
	codes := func(s ...string) []StatusRange {
		r, err := ParseStatusCodes(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		name string
		urls []URL
		port uint16
		want bool
	}{
		{"up", []URL{{Path: "/ok"}}, port, true},
		{"down", []URL{{Path: "/ok"}}, closedPort(t), false},
		{"wrong status", []URL{{Path: "/missing"}}, port, false},
		{"status list accepts 404", []URL{{Path: "/missing", StatusCodes: codes("200", "400-404")}}, port, true},
		{"status 200 only rejects 404", []URL{{Path: "/missing", StatusCodes: codes("200")}}, port, false},
		{"digest ok", []URL{{Path: "/ok", Digest: md5hex(body)}}, port, true},
		{"digest upper-case ok", []URL{{Path: "/ok", Digest: strings.ToUpper(md5hex(body))}}, port, true},
		{"wrong digest", []URL{{Path: "/ok", Digest: md5hex("something else")}}, port, false},
		{"regex match", []URL{{Path: "/ok", Regex: "from rs[0-9]"}}, port, true},
		{"regex no match", []URL{{Path: "/ok", Regex: "from rs[a-z]"}}, port, false},
		{"regex_no_match inverted", []URL{{Path: "/ok", Regex: "from rs[0-9]", RegexNoMatch: true}}, port, false},
		{"all urls must pass", []URL{{Path: "/ok"}, {Path: "/missing"}}, port, false},
		{"timeout", []URL{{Path: "/slow"}}, port, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := probeOnce(t, PoolOptions{}, RealServer{Addr: addr, Port: tc.port}, Checker{Type: HTTPGet,
				ConnectTimeout: 500 * time.Millisecond, HTTP: &HTTPOptions{URLs: tc.urls}})
			if r.ok != tc.want {
				t.Fatalf("ok = %v (%s), want %v", r.ok, r.detail, tc.want)
			}
		})
	}
}

func TestHTTPVirtualHost(t *testing.T) {
	hosts := make(chan string, 1)
	addr, port := httpServer(t, testMux(hosts), nil)
	for _, tc := range []struct {
		name         string
		svc, rs, url string
		want         string
	}{
		{"default ip:port", "", "", "", fmt.Sprintf("127.0.0.1:%d", port)},
		{"from real server", "", "rs.example", "", "rs.example"},
		{"url overrides", "", "rs.example", "url.example", "url.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := probeOnce(t, PoolOptions{}, RealServer{Addr: addr, Port: port, VirtualHost: tc.rs}, Checker{Type: HTTPGet,
				ConnectTimeout: time.Second, HTTP: &HTTPOptions{URLs: []URL{{Path: "/ok", VirtualHost: tc.url}}}})
			if !r.ok {
				t.Fatal(r.detail)
			}
			if got := <-hosts; got != tc.want {
				t.Fatalf("Host = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHTTPBadOptions(t *testing.T) {
	for _, o := range []HTTPOptions{
		{Protocol: "2"},
		{URLs: []URL{{Path: "/", Regex: "("}}},
		{URLs: []URL{{Path: "/", Digest: "xyz"}}},
	} {
		if _, err := newHTTPProber(endpoint{}, false, &o, ""); err == nil {
			t.Errorf("newHTTPProber(%+v) = nil error, want one", o)
		}
	}
}

func TestParseStatusCodes(t *testing.T) {
	got, err := ParseStatusCodes([]string{"200", "300-399", "503"})
	if err != nil {
		t.Fatal(err)
	}
	want := []StatusRange{{200, 200}, {300, 399}, {503, 503}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"abc", "300-200", "99", "200-x"} {
		if _, err := ParseStatusCodes([]string{bad}); err == nil {
			t.Errorf("ParseStatusCodes(%q) = nil error", bad)
		}
	}
}

// selfSigned makes a certificate for "rs1.example" valid for an hour.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rs1.example"},
		DNSNames: []string{"rs1.example"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestSSLGet(t *testing.T) {
	cert := selfSigned(t)
	var sni atomic.Value
	cfg := &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		sni.Store(h.ServerName)
		return &cert, nil
	}}
	addr, port := httpServer(t, testMux(nil), cfg)
	plainAddr, plainPort := httpServer(t, testMux(nil), nil)
	tests := []struct {
		name    string
		port    uint16
		sniOn   bool
		url     URL
		want    bool
		wantSNI string
	}{
		{"up without sni", port, false, URL{Path: "/ok", Digest: md5hex(body)}, true, ""},
		{"up with sni", port, true, URL{Path: "/ok"}, true, "rs1.example"},
		{"wrong status", port, false, URL{Path: "/missing"}, false, ""},
		{"plain http server", plainPort, false, URL{Path: "/ok"}, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sni.Store("unset")
			a := addr
			if tc.port == plainPort {
				a = plainAddr
			}
			r := probeOnce(t, PoolOptions{}, RealServer{Addr: a, Port: tc.port, VirtualHost: "rs1.example"}, Checker{Type: SSLGet,
				ConnectTimeout: time.Second, HTTP: &HTTPOptions{URLs: []URL{tc.url}, EnableSNI: tc.sniOn}})
			if r.ok != tc.want {
				t.Fatalf("ok = %v (%s), want %v", r.ok, r.detail, tc.want)
			}
			if tc.want && sni.Load() != tc.wantSNI {
				t.Fatalf("SNI = %q, want %q", sni.Load(), tc.wantSNI)
			}
		})
	}
}

// udpServer answers each datagram with reply(payload), or not when it
// returns nil.
func udpServer(t *testing.T, reply func([]byte) []byte) uint16 {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := reply(buf[:n]); out != nil {
				_, _ = c.WriteTo(out, from)
			}
		}
	}()
	_, port := addrPort(t, c.LocalAddr())
	return port
}

func TestUDPCheck(t *testing.T) {
	echo := udpServer(t, func(b []byte) []byte { return append([]byte(nil), b...) })
	silent := udpServer(t, func([]byte) []byte { return nil })
	closed := func() uint16 {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, p := addrPort(t, c.LocalAddr())
		c.Close()
		return p
	}()
	payload, err := ParseHexString("de ad be ef 01")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		port uint16
		o    UDPOptions
		want bool
	}{
		{"reply required and given", echo, UDPOptions{RequireReply: true}, true},
		{"reply required, none", silent, UDPOptions{RequireReply: true}, false},
		{"no reply required, silent", silent, UDPOptions{}, true},
		{"no reply required, port unreachable", closed, UDPOptions{}, false},
		{"pattern with wildcards", echo, UDPOptions{Payload: payload, ReplyPattern: "deadXeXf"}, true},
		{"pattern mismatch", echo, UDPOptions{Payload: payload, ReplyPattern: "dead00"}, false},
		{"reply too short", echo, UDPOptions{Payload: payload, RequireReply: true, MinReplyLength: 6}, false},
		{"reply too long", echo, UDPOptions{Payload: payload, RequireReply: true, MaxReplyLength: 4}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := probeOnce(t, PoolOptions{}, RealServer{Addr: loopback, Port: tc.port},
				Checker{Type: UDPCheck, ConnectTimeout: 300 * time.Millisecond, UDP: &tc.o})
			if r.ok != tc.want {
				t.Fatalf("ok = %v (%s), want %v", r.ok, r.detail, tc.want)
			}
		})
	}
}

func TestParseHexString(t *testing.T) {
	// The example of keepalived.conf(5).
	got, err := ParseHexString("Ab12f 3 456 546443123")
	if err != nil {
		t.Fatal(err)
	}
	if want := "ab120f0345065464431203"; hex.EncodeToString(got) != want {
		t.Fatalf("got %x, want %s", got, want)
	}
	v, m, err := parseHexPattern("aX x1", true)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(v) != "a001" || hex.EncodeToString(m) != "f00f" {
		t.Fatalf("pattern = %x mask %x, want a001 mask f00f", v, m)
	}
	for _, bad := range []string{"", "zz", "x1"} {
		if _, err := ParseHexString(bad); err == nil {
			t.Errorf("ParseHexString(%q) = nil error", bad)
		}
	}
}

// dnsServer answers queries: NOERROR for "ok.example.", NXDOMAIN otherwise;
// with decoy, only replies with the wrong ID.
func dnsServer(t *testing.T, decoy bool) uint16 {
	return udpServer(t, func(b []byte) []byte {
		var p dnsmessage.Parser
		h, err := p.Start(b)
		if err != nil {
			return nil
		}
		q, err := p.Question()
		if err != nil {
			return nil
		}
		rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true}
		if q.Name.String() != "ok.example." {
			rh.RCode = dnsmessage.RCodeNameError
		}
		msg := dnsmessage.Message{Header: rh, Questions: []dnsmessage.Question{q}}
		if rh.RCode == dnsmessage.RCodeSuccess && q.Type == dnsmessage.TypeA {
			msg.Answers = []dnsmessage.Resource{{
				Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
				Body:   &dnsmessage.AResource{A: [4]byte{198, 18, 0, 11}},
			}}
		}
		out, err := msg.Pack()
		if err != nil {
			return nil
		}
		if decoy {
			d := msg
			d.Header.ID++
			bad, _ := d.Pack()
			return bad
		}
		return out
	})
}

func TestDNSCheck(t *testing.T) {
	srv := dnsServer(t, false)
	decoy := dnsServer(t, true)
	tests := []struct {
		name string
		port uint16
		o    DNSOptions
		want bool
	}{
		{"A ok", srv, DNSOptions{Type: "A", Name: "ok.example"}, true},
		{"SOA ok", srv, DNSOptions{Type: "soa", Name: "ok.example."}, true},
		{"nxdomain", srv, DNSOptions{Type: "A", Name: "missing.example"}, false},
		{"wrong id only", decoy, DNSOptions{Type: "A", Name: "ok.example"}, false},
		{"no server", closedPort(t), DNSOptions{Name: "ok.example"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := probeOnce(t, PoolOptions{}, RealServer{Addr: loopback, Port: tc.port},
				Checker{Type: DNSCheck, ConnectTimeout: 300 * time.Millisecond, DNS: &tc.o})
			if r.ok != tc.want {
				t.Fatalf("ok = %v (%s), want %v", r.ok, r.detail, tc.want)
			}
		})
	}
	if _, err := newDNSProber(endpoint{}, &DNSOptions{Type: "PTRX"}); err == nil {
		t.Error("type PTRX accepted")
	}
}

// smtpServer speaks greeting then answers HELO with helo; it records the
// HELO argument.
func smtpServer(t *testing.T, greeting, helo string, seen chan<- string) uint16 {
	l := listenTCP(t)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, greeting)
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				select {
				case seen <- strings.TrimSpace(line):
				default:
				}
				io.WriteString(c, helo)
			}()
		}
	}()
	_, port := addrPort(t, l.Addr())
	return port
}

func TestSMTPCheck(t *testing.T) {
	seen := make(chan string, 1)
	ok := smtpServer(t, "220-smtp.example ESMTP\r\n220 ready\r\n", "250 smtp.example\r\n", seen)
	busy := smtpServer(t, "554 no service\r\n", "250 x\r\n", nil)
	badHelo := smtpServer(t, "220 ready\r\n", "500 what\r\n", nil)
	tests := []struct {
		name     string
		port     uint16
		helo     string
		want     bool
		wantHelo string
	}{
		{"up default helo", ok, "", true, "HELO " + DefaultSMTPHelo},
		{"up helo_name", ok, "lb1.example", true, "HELO lb1.example"},
		{"554 greeting", busy, "", false, ""},
		{"HELO refused", badHelo, "", false, ""},
		{"down", closedPort(t), "", false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := probeOnce(t, PoolOptions{}, RealServer{Addr: loopback, Port: tc.port},
				Checker{Type: SMTPCheck, ConnectTimeout: time.Second, SMTP: &SMTPOptions{HeloName: tc.helo}})
			if r.ok != tc.want {
				t.Fatalf("ok = %v (%s), want %v", r.ok, r.detail, tc.want)
			}
			if tc.wantHelo != "" {
				if got := <-seen; got != tc.wantHelo {
					t.Fatalf("server saw %q, want %q", got, tc.wantHelo)
				}
			}
		})
	}
}

func TestPingCheck(t *testing.T) {
	r := probeOnce(t, PoolOptions{}, RealServer{Addr: loopback},
		Checker{Type: PingCheck, ConnectTimeout: time.Second})
	if !r.ok && strings.Contains(r.detail, "socket") {
		t.Skipf("no ICMP socket here (need root or ping_group_range): %s", r.detail)
	}
	if !r.ok {
		t.Fatalf("ping 127.0.0.1 failed: %s", r.detail)
	}
}

// script writes an executable shell script into dir.
func script(t *testing.T, dir, name, text string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+text+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // umask-proof
		t.Fatal(err)
	}
	return p
}

func TestMiscCheck(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	tests := []struct {
		name     string
		text     string
		mode     os.FileMode
		dynamic  bool
		insecure bool
		args     string
		want     bool
		weight   int
		detail   string
	}{
		{"exit 0", "exit 0", 0o755, false, false, "", true, -1, ""},
		{"exit 1", "exit 1", 0o755, false, false, "", false, -1, "exit status 1"},
		{"exit 7 static is failure", "exit 7", 0o755, false, false, "", false, -1, "exit status 7"},
		{"exit 7 dynamic weight 5", "exit 7", 0o755, true, false, "", true, 5, ""},
		{"exit 2 dynamic weight 0", "exit 2", 0o755, true, false, "", true, 0, ""},
		{"exit 255 dynamic weight 253", "exit 255", 0o755, true, false, "", true, 253, ""},
		{"exit 1 dynamic still down", "exit 1", 0o755, true, false, "", false, -1, ""},
		{"arguments passed", `[ "$1" = "a b" ] && [ "$2" = c ]`, 0o755, false, false, ` "a b" c`, true, -1, ""},
		{"timeout kills", "echo $$ > " + pidFile + "; sleep 30 & wait", 0o755, false, false, "", false, -1, "timed out"},
		{"world-writable refused", "exit 0", 0o777, false, false, "", false, -1, "world-writable"},
		{"world-writable with opt-in", "exit 0", 0o777, false, true, "", true, -1, ""},
		{"not executable refused", "exit 0", 0o644, false, false, "", false, -1, "not executable"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := script(t, dir, fmt.Sprintf("s%d.sh", i), tc.text, tc.mode)
			r := probeOnce(t, PoolOptions{InsecureScripts: tc.insecure}, RealServer{Addr: loopback, Port: 80},
				Checker{Type: MiscCheck, Misc: &MiscOptions{Path: p + tc.args, Timeout: 300 * time.Millisecond, Dynamic: tc.dynamic}})
			if r.ok != tc.want || (tc.want && r.weight != tc.weight) {
				t.Fatalf("ok, weight = %v, %d (%s), want %v, %d", r.ok, r.weight, r.detail, tc.want, tc.weight)
			}
			if !strings.Contains(r.detail, tc.detail) {
				t.Fatalf("detail %q does not say %q", r.detail, tc.detail)
			}
		})
	}
	// The timed-out script and its child are gone.
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("timed-out script pid %d still exists (kill 0: %v)", pid, err)
	}
}

func TestCheckScriptDirectory(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	sticky := filepath.Join(dir, "sticky")
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{open, 0o777}, {sticky, 0o777 | os.ModeSticky}} {
		if err := os.Mkdir(d.path, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
	}
	inOpen := script(t, open, "s.sh", "exit 0", 0o755)
	inSticky := script(t, sticky, "s.sh", "exit 0", 0o755)
	if _, err := checkScript(inOpen); !errors.Is(err, ErrUnsafeScript) || !strings.Contains(err.Error(), "world-writable") {
		t.Errorf("script in world-writable dir: err = %v, want ErrUnsafeScript", err)
	}
	if _, err := checkScript(inSticky); err != nil {
		t.Errorf("script in sticky dir: %v", err)
	}
	if _, err := checkScript("sh"); err != nil {
		t.Errorf("sh from PATH: %v", err)
	}
}

func TestSplitCommand(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"/bin/check", []string{"/bin/check"}},
		{`/bin/check  -a "x y" 'z'`, []string{"/bin/check", "-a", "x y", "z"}},
		{`/bin/check ""`, []string{"/bin/check", ""}},
	}
	for _, tc := range tests {
		got, err := splitCommand(tc.in)
		if err != nil || fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
			t.Errorf("splitCommand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "  ", `/bin/x "open`} {
		if _, err := splitCommand(bad); err == nil {
			t.Errorf("splitCommand(%q) = nil error", bad)
		}
	}
}
