package healthcheck

import (
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// openFDs counts the process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(ents)
}

// eventually polls cond for up to 10 s; the bound is generous because
// only the outcome is asserted, not how fast it came.
func eventually(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// withoutEpoll runs the test's pools in the fallback mode, where the loop
// waits on a channel and TCP_CHECK probes on goroutines.
func withoutEpoll(t *testing.T) {
	testNoEpoll = true
	t.Cleanup(func() { testNoEpoll = false })
}

// TestPoolTCPLoop drives real TCP_CHECKs through the pool, in the epoll
// loop (parked in the runtime's poller, or blocking in epoll_wait) and in
// the fallback without epoll: up, refused (down), back up on the same port.
func TestPoolTCPLoop(t *testing.T) {
	for _, mode := range []string{"epoll", "epoll-blocking", "fallback"} {
		t.Run(mode, func(t *testing.T) {
			switch mode {
			case "fallback":
				withoutEpoll(t)
			case "epoll-blocking":
				testNoPoller = true
				t.Cleanup(func() { testNoPoller = false })
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr, port := addrPort(t, l.Addr())
			key := serverKey(addr, port)
			desc := fmtEndpoint(addr, "tcp", port)
			h := newHarness(t, PoolOptions{}, true)
			if got := h.p.loop.epfd >= 0; got != (mode != "fallback") {
				t.Fatalf("loop uses epoll = %v in mode %s", got, mode)
			}
			if got := h.p.loop.rc != nil; got != (mode == "epoll") {
				t.Fatalf("loop parks in the runtime's poller = %v in mode %s", got, mode)
			}
			r := RealServer{Addr: addr, Port: port, Checkers: []Checker{fastCheck()}}
			if err := h.p.Update([]Service{{VIP: vip, Port: 80, Servers: []RealServer{r}}}); err != nil {
				t.Fatal(err)
			}
			h.want(Transition{Service: svc, Server: key, Up: true, InPool: true, Weight: 1})
			l.Close()
			h.want(Transition{Service: svc, Server: key})
			l2, err := net.Listen("tcp", l.Addr().String())
			if err != nil {
				t.Skipf("cannot listen on %s again: %v", l.Addr(), err)
			}
			defer l2.Close()
			h.want(Transition{Service: svc, Server: key, Up: true, InPool: true, Weight: 1})
			logs := h.logs.String()
			for _, line := range []string{
				"TCP_CHECK on service " + desc + " failed after 0 retries.",
				"connect to " + key + ": ", // refused, or reset when the listener closed with the connection queued
				"TCP connection to " + desc + " success.",
			} {
				if !strings.Contains(logs, line) {
					t.Errorf("log lacks %q", line)
				}
			}
		})
	}
}

// TestPoolTCPNoGoroutinePerChecker: TCP_CHECKs add no goroutines, however
// many there are, and every socket is closed by Close.
func TestPoolTCPNoGoroutinePerChecker(t *testing.T) {
	l := listenTCP(t)
	addr, port := addrPort(t, l.Addr())
	fds := openFDs(t)
	g0 := runtime.NumGoroutine()
	h := newHarness(t, PoolOptions{}, true)
	gPool := runtime.NumGoroutine()
	var servers []RealServer
	for i := range 50 {
		c := fastCheck()
		c.ConnectPort = port
		servers = append(servers, RealServer{Addr: addr, Port: uint16(10000 + i), Checkers: []Checker{c}})
	}
	if err := h.p.Update([]Service{{VIP: vip, Port: 80, Servers: servers}}); err != nil {
		t.Fatal(err)
	}
	if !eventually(func() bool { return h.p.Stats().Checks >= 200 }) {
		t.Fatalf("only %d checks ran", h.p.Stats().Checks)
	}
	if g := runtime.NumGoroutine(); g > gPool {
		t.Errorf("goroutines with 50 TCP_CHECKs = %d, with none = %d", g, gPool)
	}
	if s := h.p.Stats(); s.Failures > 0 {
		t.Errorf("%d failed checks against a live listener", s.Failures)
	}
	h.p.Close()
	if !eventually(func() bool { return runtime.NumGoroutine() <= g0 }) {
		t.Errorf("goroutines after Close = %d, before NewPool = %d", runtime.NumGoroutine(), g0)
	}
	// The listener's accept queue holds reset connections; they are the
	// listener's, not the pool's.
	if n := openFDs(t); n > fds {
		t.Errorf("open descriptors after Close = %d, before NewPool = %d", n, fds)
	}
}

// TestPoolTCPTimeout: a connect that never completes fails at
// connect_timeout with keepalived's retry, and its socket is closed.
func TestPoolTCPTimeout(t *testing.T) {
	port := blackholePort(t)
	h := newHarness(t, PoolOptions{}, true)
	c := Checker{Type: TCPCheck, DelayLoop: 5 * time.Second, Warmup: Ptr(time.Duration(0)),
		Retry: Ptr(1), DelayBeforeRetry: Ptr(20 * time.Millisecond), ConnectTimeout: 100 * time.Millisecond}
	key := serverKey(loopback, port)
	fds := openFDs(t)
	h.p.Update([]Service{{VIP: vip, Port: 80, Servers: []RealServer{{Addr: loopback, Port: port, Checkers: []Checker{c}}}}})
	h.want(Transition{Service: svc, Server: key, Up: true, InPool: true, Weight: 1})
	h.want(Transition{Service: svc, Server: key})
	logs := h.logs.String()
	for _, line := range []string{"timeout after 100ms", "failed after 1 retries."} {
		if !strings.Contains(logs, line) {
			t.Errorf("log lacks %q", line)
		}
	}
	if s := h.p.Stats(); s.Checks != 2 || s.Failures != 2 {
		t.Errorf("stats %+v: want 2 checks (one retry), both failed", s)
	}
	// The next check is 5 s away: no socket is open now.
	if n := openFDs(t); n > fds {
		t.Errorf("open descriptors = %d, before the check %d", n, fds)
	}
}

// TestPoolTCPRemoveInFlight: removing a checker closes its connect in
// flight at once rather than at its (long) timeout.
func TestPoolTCPRemoveInFlight(t *testing.T) {
	port := blackholePort(t)
	h := newHarness(t, PoolOptions{}, true)
	c := Checker{Type: TCPCheck, DelayLoop: 5 * time.Second, Warmup: Ptr(time.Duration(0)), ConnectTimeout: time.Minute}
	fds := openFDs(t)
	h.p.Update([]Service{{VIP: vip, Port: 80, Servers: []RealServer{{Addr: loopback, Port: port, Checkers: []Checker{c}}}}})
	if !eventually(func() bool { return openFDs(t) > fds }) {
		t.Fatal("no connect in flight")
	}
	h.p.Update(nil)
	if !eventually(func() bool { return openFDs(t) <= fds }) {
		t.Errorf("open descriptors = %d after removal, %d before the check", openFDs(t), fds)
	}
	if s := h.p.Stats(); s.Checks != 0 {
		t.Errorf("stats %+v: the removed check must not count", s)
	}
}

// TestTCPProbeMatchesDial is a differential test of the raw-socket
// TCP_CHECK against the net.Dialer reference.
func TestTCPProbeMatchesDial(t *testing.T) {
	l := listenTCP(t)
	_, up := addrPort(t, l.Addr())
	cases := []struct {
		name string
		addr netip.AddrPort
	}{
		{"up", netip.AddrPortFrom(loopback, up)},
		{"refused", netip.AddrPortFrom(loopback, closedPort(t))},
		{"timeout", netip.AddrPortFrom(loopback, blackholePort(t))},
	}
	if l6, err := net.Listen("tcp", "[::1]:0"); err == nil {
		defer l6.Close()
		a, p := addrPort(t, l6.Addr())
		cases = append(cases, struct {
			name string
			addr netip.AddrPort
		}{"ipv6", netip.AddrPortFrom(a, p)})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep := endpoint{addr: tc.addr}
			raw, err := newTCPProber(ep)
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			var got [2]result
			for i, p := range []prober{raw, &dialTCPProber{ep: ep}} {
				pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				got[i] = p.probe(pctx)
				cancel()
			}
			if got[0].ok != got[1].ok {
				t.Fatalf("raw ok = %v (%s), dial ok = %v (%s)", got[0].ok, got[0].detail, got[1].ok, got[1].detail)
			}
			if want := tc.name == "up" || tc.name == "ipv6"; got[0].ok != want {
				t.Fatalf("ok = %v (%s), want %v", got[0].ok, got[0].detail, want)
			}
		})
	}
}

func TestNewTCPProberErrors(t *testing.T) {
	tests := []struct {
		name string
		ep   endpoint
		want string
	}{
		{"no address", endpoint{}, "not an IP address"},
		{"family mismatch", endpoint{addr: netip.MustParseAddrPort("127.0.0.1:80"), bind: netip.MustParseAddrPort("[::1]:0")}, "differ in family"},
		{"bad zone", endpoint{addr: netip.MustParseAddrPort("[fe80::1%xvs-no-such-if]:80")}, "zone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newTCPProber(tc.ep)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// TestCheckerHeap is a differential test of the loop's heap (with
// removal by index) against sorting.
func TestCheckerHeap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h checkerHeap
	live := map[*checkerRun]bool{}
	for step := range 2000 {
		switch op := rng.IntN(3); {
		case op < 2 || len(h) == 0:
			cr := &checkerRun{at: time.Duration(rng.IntN(100)), hidx: -1}
			heap.Push(&h, cr)
			live[cr] = true
		default:
			cr := h[rng.IntN(len(h))]
			heap.Remove(&h, cr.hidx)
			if cr.hidx != -1 {
				t.Fatalf("step %d: removed checker keeps index %d", step, cr.hidx)
			}
			delete(live, cr)
		}
		for i, cr := range h {
			if cr.hidx != i {
				t.Fatalf("step %d: checker at %d has index %d", step, i, cr.hidx)
			}
		}
	}
	var want []time.Duration
	for cr := range live {
		want = append(want, cr.at)
	}
	slices.Sort(want)
	var got []time.Duration
	for len(h) > 0 {
		got = append(got, heap.Pop(&h).(*checkerRun).at)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pop order %v, want %v", got, want)
	}
}

// TestDueHeap is a differential test of the loop's due heap against
// sorting, with pops interleaved with pushes.
func TestDueHeap(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var h dueHeap
	var ref []time.Duration // sorted
	for step := range 3000 {
		if rng.IntN(3) < 2 || len(h) == 0 {
			at := time.Duration(rng.IntN(50))
			cr := &checkerRun{at: at}
			h.push(at, cr)
			i, _ := slices.BinarySearch(ref, at)
			ref = slices.Insert(ref, i, at)
			continue
		}
		if got := h.pop().at; got != ref[0] {
			t.Fatalf("step %d: pop %v, want the least %v", step, got, ref[0])
		}
		ref = ref[1:]
	}
	if len(h) != len(ref) {
		t.Fatalf("%d entries left, want %d", len(h), len(ref))
	}
}
