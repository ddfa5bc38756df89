package main

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
)

const page = "<html><body>real server 1</body></html>\n"

func md5hex(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }

// recorder is a web server that remembers the Host and SNI it was asked for.
type recorder struct {
	mu         sync.Mutex
	host, sni  string
	userAgent  string
	protoMajor int
	protoMinor int
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	rec.host, rec.userAgent = r.Host, r.UserAgent()
	rec.protoMajor, rec.protoMinor = r.ProtoMajor, r.ProtoMinor
	if r.TLS != nil {
		rec.sni = r.TLS.ServerName
	}
	rec.mu.Unlock()
	if r.URL.Path != "/index.html" {
		http.NotFound(w, r)
		return
	}
	w.Write([]byte(page))
}

func hostPort(t *testing.T, url string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(url, "http://"), "https://"))
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

func genhash(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestHTTP(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	host, port := hostPort(t, srv.URL)

	out, errs, code := genhash(t, "-s", host, "-p", port, "-u", "/index.html")
	if want := "MD5SUM = " + md5hex(page) + "\n\n"; code != 0 || out != want {
		t.Errorf("genhash: exit %d, stdout %q (stderr %q), want %q", code, out, errs, want)
	}
	rec.mu.Lock()
	if rec.host != host+":"+port || rec.userAgent != "KeepAlive GenHash Client" || rec.protoMinor != 0 {
		t.Errorf("request: Host %q, User-Agent %q, HTTP/1.%d", rec.host, rec.userAgent, rec.protoMinor)
	}
	rec.mu.Unlock()

	// Virtual host, SHA1, long options, HTTP/1.1.
	out, _, code = genhash(t, "--server", host, "--port="+port, "--url", "/index.html", "-V", "www.example.test", "-H", "sha1", "-P", "1.1")
	sum := sha1.Sum([]byte(page))
	if want := "SHA1SUM = " + hex.EncodeToString(sum[:]) + "\n\n"; code != 0 || out != want {
		t.Errorf("genhash sha1: exit %d, stdout %q, want %q", code, out, want)
	}
	rec.mu.Lock()
	if rec.host != "www.example.test" || rec.protoMinor != 1 {
		t.Errorf("vhost request: Host %q, HTTP/1.%d", rec.host, rec.protoMinor)
	}
	rec.mu.Unlock()

	// The digest of an error page is still a digest (keepalived compares it).
	out, _, code = genhash(t, "-s", host, "-p", port, "-u", "/missing")
	if code != 0 || !strings.HasPrefix(out, "MD5SUM = ") || strings.Contains(out, md5hex(page)) {
		t.Errorf("404 page: exit %d, %q", code, out)
	}

	// Verbose mode shows the header and the hash.
	out, _, code = genhash(t, "-v", "-s", host, "-p", port, "-u", "/index.html")
	if code != 0 || !strings.Contains(out, "HTTP Header Ascii Buffer") || !strings.Contains(out, "HTTP/1.0 200 OK") ||
		!strings.Contains(out, "MD5SUM = "+md5hex(page)) {
		t.Errorf("verbose: exit %d\n%s", code, out)
	}
}

func TestSSL(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewTLSServer(rec)
	defer srv.Close()
	host, port := hostPort(t, srv.URL)
	out, errs, code := genhash(t, "-S", "-s", host, "-p", port, "-u", "/index.html", "-V", "www.example.test", "-I")
	if want := "MD5SUM = " + md5hex(page) + "\n\n"; code != 0 || out != want {
		t.Errorf("genhash -S: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	rec.mu.Lock()
	if rec.sni != "www.example.test" {
		t.Errorf("SNI = %q, want www.example.test", rec.sni)
	}
	rec.mu.Unlock()
}

func TestDigest(t *testing.T) {
	cases := []struct {
		raw         string
		body        string
		clen, rx    int64
		complete    bool
		wantWarning bool
	}{
		{"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello", 5, 5, true, false},
		{"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello world", "hello", 5, 11, true, true},
		{"HTTP/1.0 200 OK\r\n\r\nhello world", "hello world", -1, 11, true, false},
		{"HTTP/1.0 200 OK\n\nunix", "unix", -1, 4, true, false},
		{"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nabc", "abc", -1, 3, true, false},
		{"HTTP/1.0 200 OK\r\nContent-Length: x\r\n\r\nabc", "abc", -1, 3, true, false},
		{"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n", "", -1, 0, false, false},
		{"", "", -1, 0, false, false},
	}
	for _, c := range cases {
		r := digest([]byte(c.raw), "MD5")
		if hex.EncodeToString(r.sum) != md5hex(c.body) || r.contentLen != c.clen || r.received != c.rx || r.complete != c.complete {
			t.Errorf("digest(%q) = sum %x len %d rx %d complete %v; want md5(%q) %d %d %v",
				c.raw, r.sum, r.contentLen, r.received, r.complete, c.body, c.clen, c.rx, c.complete)
		}
	}
}

// TestContentLengthWarning serves a body longer than its Content-Length.
func TestContentLengthWarning(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 1024)
		c.Read(buf)
		c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello world"))
	}()
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	out, _, code := genhash(t, "-s", host, "-p", port, "-u", "/")
	want := "MD5SUM = " + md5hex("hello") + "\nWARNING - Content-Length (5) does not match received bytes (11).\n\n"
	if code != 0 || out != want {
		t.Errorf("got exit %d %q, want %q", code, out, want)
	}
}

func TestArgs(t *testing.T) {
	cases := []struct {
		args []string
		msg  string
	}{
		{[]string{"-s", "rs1.example.test", "-p", "80"}, "server should be an IP, not rs1.example.test"},
		{[]string{"-s", "198.18.0.11", "-p", "0"}, "invalid port number '0'"},
		{[]string{"-s", "198.18.0.11", "-p", "80x"}, "invalid port number '80x'"},
		{[]string{"-s", "198.18.0.11", "-p", "80", "-H", "crc32"}, "unknown hash algorithm: crc32"},
		{[]string{"-s", "198.18.0.11", "-p", "80", "-m", "-1"}, "invalid fwmark '-1'"},
		{[]string{"-s", "198.18.0.11", "-p", "80", "extra"}, "Unexpected argument(s): extra"},
		{[]string{"-s", "198.18.0.11"}, "Usage:"},
		{[]string{"-h"}, "Usage:"},
		{[]string{"--bogus"}, "unknown flag: --bogus"},
	}
	for _, c := range cases {
		_, errs, code := genhash(t, c.args...)
		if code != 1 || !strings.Contains(errs, c.msg) {
			t.Errorf("genhash %q: exit %d stderr %q, want 1 and %q", c.args, code, errs, c.msg)
		}
	}
	// Nothing listening.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	if _, errs, code := genhash(t, "-s", host, "-p", port); code != 1 || !strings.HasPrefix(errs, "Connection failed") {
		t.Errorf("closed port: exit %d, %q", code, errs)
	}
}

// TestAgainstKeepalived compares with keepalived's own genhash when it is
// installed (CI installs keepalived).
func TestAgainstKeepalived(t *testing.T) {
	bin, err := exec.LookPath("genhash")
	if err != nil {
		t.Skip("keepalived's genhash is not installed")
	}
	srv := httptest.NewServer(&recorder{})
	defer srv.Close()
	host, port := hostPort(t, srv.URL)
	for _, url := range []string{"/index.html", "/missing"} {
		theirs, err := exec.Command(bin, "-s", host, "-p", port, "-u", url).Output()
		if err != nil {
			t.Fatalf("%s: %v", bin, err)
		}
		hexRE := regexp.MustCompile(`[0-9a-f]{32}`)
		want := hexRE.FindString(string(theirs))
		ours, _, _ := genhash(t, "-s", host, "-p", port, "-u", url)
		if got := hexRE.FindString(ours); want == "" || got != want {
			t.Errorf("%s: ours %q, keepalived's %q", url, ours, theirs)
		}
	}
}

func FuzzDigest(f *testing.F) {
	f.Add([]byte("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello world"))
	f.Add([]byte("HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n\r\n<h1>404</h1>"))
	f.Add([]byte("HTTP/1.0 200 OK\n\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r := digest(raw, "MD5")
		if len(r.sum) != md5.Size {
			t.Fatalf("sum length %d", len(r.sum))
		}
		if r.complete && len(r.header)+len(r.body) != len(raw) {
			t.Fatalf("header %d + body %d != %d", len(r.header), len(r.body), len(raw))
		}
	})
}
