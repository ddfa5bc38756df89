// Package labserver owns the lab's stand-ins for real servers and clients:
// an HTTP and UDP echo server that names itself and records the peers it
// saw, and a client that opens fresh connections from inside a namespace.
// Lab tests, the demo and the benchmarks share them.
package labserver

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/xvs-lb/xvs/internal/netlab"
)

// Server is a real server's HTTP (TCP :port) and UDP echo service.
type Server struct {
	Name  string
	mu    sync.Mutex
	peers map[netip.Addr]int
	hits  int
	ln    net.Listener
	pc    net.PacketConn
	srv   *http.Server
}

// Start listens inside h on TCP :httpPort (every local address, the VIP
// on lo included) and, when udpAddr is valid, on that UDP address (bind it
// to the VIP so replies leave with the VIP as their source). The server
// answers every HTTP request with its name and a newline, and echoes UDP.
// Listeners close when the lab test ends.
func Start(tb netlab.TB, h *netlab.Host, name string, httpPort uint16, udpAddr netip.AddrPort) *Server {
	tb.Helper()
	s := &Server{Name: name, peers: map[netip.Addr]int{}}
	err := h.Do(func() error {
		var err error
		if s.ln, err = net.Listen("tcp", fmt.Sprintf(":%d", httpPort)); err != nil {
			return err
		}
		if udpAddr.IsValid() {
			s.pc, err = net.ListenPacket("udp", udpAddr.String())
		}
		return err
	})
	if err != nil {
		tb.Fatalf("labserver %s: listen: %v", name, err)
	}
	s.srv = &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
				s.saw(ap.Addr())
			}
			fmt.Fprintf(w, "%s\n", name)
		}),
	}
	go s.srv.Serve(s.ln)
	if s.pc != nil {
		go s.echo()
	}
	tb.Cleanup(s.Close)
	return s
}

func (s *Server) echo() {
	buf := make([]byte, 2048)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if ua, ok := from.(*net.UDPAddr); ok {
			s.saw(ua.AddrPort().Addr())
		}
		_, _ = s.pc.WriteTo(append([]byte(s.Name+" "), buf[:n]...), from)
	}
}

func (s *Server) saw(a netip.Addr) {
	s.mu.Lock()
	s.peers[a.Unmap()]++
	s.hits++
	s.mu.Unlock()
}

// Peers returns how many requests each client address made.
func (s *Server) Peers() map[netip.Addr]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[netip.Addr]int, len(s.peers))
	for k, v := range s.peers {
		m[k] = v
	}
	return m
}

// Hits is the number of requests served.
func (s *Server) Hits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

// Close stops both listeners.
func (s *Server) Close() {
	if s.srv != nil {
		s.srv.Close()
	}
	if s.pc != nil {
		s.pc.Close()
	}
}

// Get makes one HTTP/1.0 request over a new TCP connection opened from
// inside h (the socket is created in h's namespace) and returns the body
// with surrounding space trimmed: the serving real server's name.
func Get(h *netlab.Host, addr netip.AddrPort, timeout time.Duration) (string, error) {
	var c net.Conn
	err := h.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr.String(), timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return roundTrip(c, bufio.NewReader(c), "1.0", timeout)
}

// roundTrip sends one GET on c and returns the trimmed body of a 200.
func roundTrip(c net.Conn, br *bufio.Reader, version string, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "GET / HTTP/%s\r\nHost: lab\r\n\r\n", version); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return strings.TrimSpace(string(b)), nil
}

// Conn is a kept-alive HTTP/1.1 connection, for tests that need an
// established flow to survive a change.
type Conn struct {
	c  net.Conn
	br *bufio.Reader
}

// Dial opens a keep-alive connection from inside h.
func Dial(h *netlab.Host, addr netip.AddrPort, timeout time.Duration) (*Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr.String(), timeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &Conn{c: c, br: bufio.NewReader(c)}, nil
}

// Get sends one request on the kept-alive connection and returns the body.
func (k *Conn) Get(timeout time.Duration) (string, error) {
	return roundTrip(k.c, k.br, "1.1", timeout)
}

// Close closes the connection.
func (k *Conn) Close() error { return k.c.Close() }

// Tally makes n requests with new connections and counts the answers by
// server name; failures are counted under "".
func Tally(h *netlab.Host, addr netip.AddrPort, n int, timeout time.Duration) map[string]int {
	got := map[string]int{}
	for range n {
		name, err := Get(h, addr, timeout)
		if err != nil {
			name = ""
		}
		got[name]++
	}
	return got
}

// UDPEcho sends payload to addr from inside h and returns the reply. It
// tries three times, each waiting up to timeout: the first datagram of a
// flow may wait for ARP somewhere on the path and be lost.
func UDPEcho(h *netlab.Host, addr netip.AddrPort, payload string, timeout time.Duration) (string, error) {
	var c net.Conn
	err := h.Do(func() error {
		var err error
		c, err = net.Dial("udp", addr.String())
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for range 3 {
		if _, err = c.Write([]byte(payload)); err != nil {
			return "", err
		}
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		var n int
		if n, err = c.Read(buf); err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", fmt.Errorf("no echo from %s: %w", addr, err)
}
