package healthcheck

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fake is a prober the test switches between up and down.
type fake struct {
	down   atomic.Bool
	weight atomic.Int64 // misc_dynamic weight, -1 none
	calls  atomic.Int64
}

func (f *fake) probe(context.Context) result {
	f.calls.Add(1)
	if f.down.Load() {
		return fail("fake down")
	}
	return result{ok: true, weight: int(f.weight.Load())}
}

type harness struct {
	t  *testing.T
	p  *Pool
	ch chan Transition

	mu    sync.Mutex
	fakes map[string]*fake // by server "ip:port"
	built map[string]int   // probers built per server
	logs  *syncBuffer
	// backlog holds transitions skipped by want, which may be wanted later.
	backlog []Transition
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newHarness returns a pool whose checkers are fakes (real=false) or the
// real probers.
func newHarness(t *testing.T, opts PoolOptions, real bool) *harness {
	h := &harness{t: t, ch: make(chan Transition, 10000), fakes: map[string]*fake{}, built: map[string]int{}, logs: &syncBuffer{}}
	opts.Logger = slog.New(slog.NewTextHandler(h.logs, nil))
	h.p = NewPool(opts, func(tr Transition) { h.ch <- tr })
	if !real {
		h.p.testProber = func(r *RealServer, c *Checker) prober {
			h.mu.Lock()
			defer h.mu.Unlock()
			return h.fakeLocked(serverKey(r.Addr, r.Port), true)
		}
	}
	t.Cleanup(func() {
		h.p.Close()
		if t.Failed() {
			t.Logf("pool log:\n%s", h.logs)
		}
	})
	return h
}

func (h *harness) fakeLocked(key string, build bool) *fake {
	f := h.fakes[key]
	if f == nil {
		f = &fake{}
		f.weight.Store(-1)
		h.fakes[key] = f
	}
	if build {
		h.built[key]++
	}
	return f
}

func (h *harness) fake(key string) *fake {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fakeLocked(key, false)
}

func (h *harness) builds(key string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.built[key]
}

// want waits for a transition equal to w, in any order with others.
func (h *harness) want(w Transition) {
	h.t.Helper()
	for i, got := range h.backlog {
		if got == w {
			h.backlog = append(h.backlog[:i], h.backlog[i+1:]...)
			return
		}
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-h.ch:
			if got == w {
				return
			}
			h.backlog = append(h.backlog, got)
		case <-deadline:
			h.t.Fatalf("no transition %+v; saw %+v", w, h.backlog)
		}
	}
}

// quiet asserts no transition arrives within d.
func (h *harness) quiet(d time.Duration) {
	h.t.Helper()
	select {
	case got := <-h.ch:
		h.t.Fatalf("unexpected transition %+v", got)
	case <-time.After(d):
	}
}

const svc = "[198.18.0.100]:tcp:80"

var (
	vip = netip.MustParseAddr("198.18.0.100")
	rs1 = netip.MustParseAddr("198.18.0.11")
	rs2 = netip.MustParseAddr("198.18.0.12")
	rs3 = netip.MustParseAddr("198.18.0.13")
)

func fastCheck() Checker {
	return Checker{Type: TCPCheck, DelayLoop: 30 * time.Millisecond, Warmup: Ptr(time.Duration(0)),
		Retry: Ptr(0), ConnectTimeout: time.Second}
}

func server(a netip.Addr) RealServer {
	return RealServer{Addr: a, Port: 80, Checkers: []Checker{fastCheck()}}
}

func TestPoolUpDown(t *testing.T) {
	h := newHarness(t, PoolOptions{}, false)
	if err := h.p.Update([]Service{{VIP: vip, Port: 80, Servers: []RealServer{server(rs1), server(rs2)}}}); err != nil {
		t.Fatal(err)
	}
	h.want(Transition{Service: svc, Server: "198.18.0.11:80", Up: true, InPool: true, Weight: 1})
	h.want(Transition{Service: svc, Server: "198.18.0.12:80", Up: true, InPool: true, Weight: 1})
	h.fake("198.18.0.11:80").down.Store(true)
	h.want(Transition{Service: svc, Server: "198.18.0.11:80"})
	h.fake("198.18.0.11:80").down.Store(false)
	h.want(Transition{Service: svc, Server: "198.18.0.11:80", Up: true, InPool: true, Weight: 1})
	logs := h.logs.String()
	for _, line := range []string{
		"TCP_CHECK on service [198.18.0.11]:tcp:80 failed after 0 retries.",
		"Removing service [198.18.0.11]:tcp:80 from VS [198.18.0.100]:tcp:80",
		"TCP connection to [198.18.0.11]:tcp:80 success.",
		"Adding service [198.18.0.11]:tcp:80 to VS [198.18.0.100]:tcp:80",
	} {
		if !strings.Contains(logs, line) {
			t.Errorf("log lacks %q", line)
		}
	}
	if s := h.p.Stats(); s.Transitions < 4 || s.Checks == 0 || s.Failures == 0 {
		t.Errorf("stats %+v: want >= 4 transitions, some checks and failures", s)
	}
}

func TestPoolAlpha(t *testing.T) {
	h := newHarness(t, PoolOptions{}, false)
	h.fake("198.18.0.11:80").down.Store(true)
	r := server(rs1)
	r.Alpha = true
	h.p.Update([]Service{{VIP: vip, Port: 80, Servers: []RealServer{r}}})
	h.want(Transition{Service: svc, Server: "198.18.0.11:80"})
	h.quiet(150 * time.Millisecond) // failing checks of a down server change nothing
	h.fake("198.18.0.11:80").down.Store(false)
	h.want(Transition{Service: svc, Server: "198.18.0.11:80", Up: true, InPool: true, Weight: 1})
}

func TestPoolInhibitOnFailure(t *testing.T) {
	h := newHarness(t, PoolOptions{}, false)
	r := server(rs1)
	r.InhibitOnFailure = true
	r.Weight = 3
	h.p.Update([]Service{{VIP: vip, Port: 80, Servers: []RealServer{r, server(rs2)}}})
	h.want(Transition{Service: svc, Server: "198.18.0.11:80", Up: true, InPool: true, Weight: 3})
	h.fake("198.18.0.11:80").down.Store(true)
	h.want(Transition{Service: svc, Server: "198.18.0.11:80", Up: false, InPool: true, Weight: 0})
	if !strings.Contains(h.logs.String(), "Disabling service [198.18.0.11]:tcp:80 from VS") {
		t.Error("no Disabling log line")
	}
	h.fake("198.18.0.11:80").down.Store(false)
	h.want(Transition{Service: svc, Server: "198.18.0.11:80", Up: true, InPool: true, Weight: 3})
}

func TestPoolMiscDynamicWeight(t *testing.T) {
	h := newHarness(t, PoolOptions{}, false)
	h.fake("198.18.0.11:80").weight.Store(5)
	h.p.Update([]Service{{VIP: vip, Port: 80, Servers: []RealServer{server(rs1)}}})
	h.want(Transition{Service: svc, Server: "198.18.0.11:80", Up: true, InPool: true, Weight: 5})
	h.fake("198.18.0.11:80").weight.Store(9)
	h.want(Transition{Service: svc, Server: "198.18.0.11:80", Up: true, InPool: true, Weight: 9})
}

// readLines polls a file written by scripts until it has n lines.
func readLines(t *testing.T, path string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		lines := strings.Fields(strings.ReplaceAll(string(b), " ", "_"))
		if len(lines) >= n || time.Now().After(deadline) {
			return lines
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPoolQuorumSorryAndScripts(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "events")
	notify := script(t, dir, "notify.sh", `echo "$XVS_SERVER-$XVS_STATE" >> `+out, 0o755)
	quorum := script(t, dir, "quorum.sh", `echo "quorum-$XVS_STATE" >> `+out, 0o755)
	h := newHarness(t, PoolOptions{}, false)
	a, b := server(rs1), server(rs2)
	a.NotifyUp, a.NotifyDown = notify, notify
	s := Service{VIP: vip, Port: 80, Quorum: 2, QuorumUp: quorum, QuorumDown: quorum, Omega: true,
		Sorry: &SorryServer{Addr: rs3, Port: 80}, Servers: []RealServer{a, b}}
	h.p.Update([]Service{s})
	h.want(Transition{Service: svc, Server: "198.18.0.13:80", Up: true, Sorry: true})
	h.fake("198.18.0.11:80").down.Store(true)
	// Quorum lost: rs1 down, rs2 leaves although up, the sorry server comes in.
	h.want(Transition{Service: svc, Server: "198.18.0.11:80"})
	h.want(Transition{Service: svc, Server: "198.18.0.12:80", Up: true})
	h.want(Transition{Service: svc, Server: "198.18.0.13:80", Up: true, InPool: true, Weight: 1, Sorry: true})
	st := h.p.State()
	if len(st) != 3 || st[0].QuorumUp || !st[2].Sorry || !st[2].InPool || st[1].InPool || !st[1].Up {
		t.Fatalf("State after quorum loss = %+v", st)
	}
	h.fake("198.18.0.11:80").down.Store(false)
	h.want(Transition{Service: svc, Server: "198.18.0.11:80", Up: true, InPool: true, Weight: 1})
	h.want(Transition{Service: svc, Server: "198.18.0.12:80", Up: true, InPool: true, Weight: 1})
	h.want(Transition{Service: svc, Server: "198.18.0.13:80", Up: true, Sorry: true})
	got := readLines(t, out, 4)
	want := []string{"198.18.0.11:80-DOWN", "quorum-DOWN", "198.18.0.11:80-UP", "quorum-UP"}
	if !sameSet(got, want) {
		t.Fatalf("script events %q, want %q (any order)", got, want)
	}
	logs := h.logs.String()
	for _, line := range []string{"Lost quorum 2-0=2 > 1 for VS " + svc, "Gained quorum 2+0=2 <= 2 for VS " + svc,
		"Adding sorry server [198.18.0.13]:tcp:80 to VS " + svc, "Removing sorry server [198.18.0.13]:tcp:80 from VS " + svc} {
		if !strings.Contains(logs, line) {
			t.Errorf("log lacks %q", line)
		}
	}
	// omega: Close runs the down notifier of up servers and quorum_down.
	h.p.Close()
	got = readLines(t, out, 6)
	if !sameSet(got[4:], []string{"198.18.0.11:80-DOWN", "quorum-DOWN"}) {
		t.Fatalf("omega events %q, want rs1 DOWN and quorum DOWN", got[4:])
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, v := range m {
		if v != 0 {
			return false
		}
	}
	return true
}

func TestPoolHysteresis(t *testing.T) {
	h := newHarness(t, PoolOptions{}, false)
	s := Service{VIP: vip, Port: 80, Quorum: 2, Hysteresis: 1,
		Servers: []RealServer{server(rs1), server(rs2), server(rs3)}}
	h.p.Update([]Service{s})
	keys := []string{"198.18.0.11:80", "198.18.0.12:80", "198.18.0.13:80"}
	for _, k := range keys {
		h.want(Transition{Service: svc, Server: k, Up: true, InPool: true, Weight: 1})
	}
	quorum := func() bool { return h.p.State()[0].QuorumUp }
	// Live weight 3 → 0: quorum 2 with hysteresis 1 is lost only below 1.
	for i, k := range keys {
		h.fake(k).down.Store(true)
		h.want(Transition{Service: svc, Server: k})
		if got, want := quorum(), i < 2; got != want {
			t.Fatalf("after %d down: quorum up = %v, want %v", i+1, got, want)
		}
	}
	// 0 → 3: gained only at 2+1.
	for i, k := range keys {
		h.fake(k).down.Store(false)
		h.want(Transition{Service: svc, Server: k, Up: true, InPool: true, Weight: 1})
		if got, want := quorum(), i == 2; got != want {
			t.Fatalf("after %d up: quorum up = %v, want %v", i+1, got, want)
		}
	}
}

func TestPoolUnsafeNotifyRefused(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "ran")
	bad := script(t, dir, "notify.sh", "touch "+out, 0o777)
	h := newHarness(t, PoolOptions{}, false)
	r := server(rs1)
	r.NotifyDown = bad
	h.p.Update([]Service{{VIP: vip, Port: 80, Servers: []RealServer{r}}})
	h.want(Transition{Service: svc, Server: "198.18.0.11:80", Up: true, InPool: true, Weight: 1})
	h.fake("198.18.0.11:80").down.Store(true)
	h.want(Transition{Service: svc, Server: "198.18.0.11:80"})
	deadline := time.Now().Add(10 * time.Second)
	for h.p.Stats().Refused == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if h.p.Stats().Refused != 1 {
		t.Fatalf("Refused = %d, want 1", h.p.Stats().Refused)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("world-writable notify script ran")
	}
	if !strings.Contains(h.logs.String(), "is world-writable") {
		t.Error("refusal reason not logged")
	}
}

func TestPoolUpdateKeepsChecks(t *testing.T) {
	base := runtime.NumGoroutine()
	h := newHarness(t, PoolOptions{}, false)
	cfg := func(loop2 time.Duration, with1 bool) []Service {
		b := server(rs2)
		b.Checkers[0].DelayLoop = loop2
		s := Service{VIP: vip, Port: 80, Servers: []RealServer{b}}
		if with1 {
			s.Servers = append(s.Servers, server(rs1))
		}
		return []Service{s}
	}
	h.p.Update(cfg(30*time.Millisecond, true))
	h.want(Transition{Service: svc, Server: "198.18.0.11:80", Up: true, InPool: true, Weight: 1})
	h.want(Transition{Service: svc, Server: "198.18.0.12:80", Up: true, InPool: true, Weight: 1})
	h.p.Update(cfg(30*time.Millisecond, true))
	h.quiet(100 * time.Millisecond)
	if b1, b2 := h.builds("198.18.0.11:80"), h.builds("198.18.0.12:80"); b1 != 1 || b2 != 1 {
		t.Fatalf("identical Update rebuilt checkers: builds %d, %d; want 1, 1", b1, b2)
	}
	h.p.Update(cfg(40*time.Millisecond, true))
	h.quiet(100 * time.Millisecond) // a changed checker restarts without a flap
	if b1, b2 := h.builds("198.18.0.11:80"), h.builds("198.18.0.12:80"); b1 != 1 || b2 != 2 {
		t.Fatalf("after changing rs2's checker: builds %d, %d; want 1, 2", b1, b2)
	}
	h.p.Update(cfg(40*time.Millisecond, false))
	h.want(Transition{Service: svc, Server: "198.18.0.11:80", Removed: true})
	h.p.Update(nil)
	h.want(Transition{Service: svc, Server: "198.18.0.12:80", Removed: true})
	if st := h.p.State(); len(st) != 0 {
		t.Fatalf("State after Update(nil) = %+v", st)
	}
	h.p.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		t.Fatalf("goroutines after Close = %d, before NewPool = %d", n, base)
	}
}

func TestPoolSuspend(t *testing.T) {
	h := newHarness(t, PoolOptions{}, false)
	a, b := server(rs1), server(rs2)
	h.p.Update([]Service{
		{VIP: vip, Port: 80, HASuspend: true, Servers: []RealServer{a}},
		{VIP: vip, Port: 443, Servers: []RealServer{b}},
	})
	h.want(Transition{Service: svc, Server: "198.18.0.11:80", Up: true, InPool: true, Weight: 1})
	f1, f2 := h.fake("198.18.0.11:80"), h.fake("198.18.0.12:80")
	h.p.Suspend()
	time.Sleep(50 * time.Millisecond) // let an in-flight probe finish
	c1, c2 := f1.calls.Load(), f2.calls.Load()
	time.Sleep(200 * time.Millisecond)
	if d := f1.calls.Load() - c1; d > 0 {
		t.Errorf("suspended ha_suspend service probed %d times", d)
	}
	if f2.calls.Load() == c2 {
		t.Error("service without ha_suspend stopped probing")
	}
	h.p.Resume()
	deadline := time.Now().Add(5 * time.Second)
	for f1.calls.Load() == c1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if f1.calls.Load() == c1 {
		t.Error("no probe after Resume")
	}
}

func TestPoolUpdateErrors(t *testing.T) {
	h := newHarness(t, PoolOptions{}, true)
	bad := server(rs1)
	bad.Checkers = []Checker{{Type: "BFD_CHECK"}, {Type: HTTPGet, HTTP: &HTTPOptions{URLs: []URL{{Regex: "("}}}}}
	err := h.p.Update([]Service{{VIP: vip, Port: 80, Servers: []RealServer{bad, server(rs2), server(rs2)}}})
	if err == nil {
		t.Fatal("Update accepted bad checkers")
	}
	for _, want := range []string{"BFD_CHECK", "regex", "duplicate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestPoolRetries counts attempts at a real HTTP server: a failing check of
// an up server is tried retry+1 times, delay_before_retry apart, before
// the server is declared down.
func TestPoolRetries(t *testing.T) {
	for _, retry := range []int{0, 1, 3} {
		t.Run(fmt.Sprint("retry=", retry), func(t *testing.T) {
			var mu sync.Mutex
			var hits []time.Time
			addr, port := httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				hits = append(hits, time.Now())
				mu.Unlock()
				http.Error(w, "down", http.StatusServiceUnavailable)
			}), nil)
			h := newHarness(t, PoolOptions{}, true)
			const dbr = 80 * time.Millisecond
			c := Checker{Type: HTTPGet, DelayLoop: 5 * time.Second, Warmup: Ptr(time.Duration(0)),
				Retry: Ptr(retry), DelayBeforeRetry: Ptr(dbr), ConnectTimeout: time.Second,
				HTTP: &HTTPOptions{URLs: []URL{{Path: "/"}}}}
			key := serverKey(addr, port)
			h.p.Update([]Service{{VIP: vip, Port: 80, Servers: []RealServer{{Addr: addr, Port: port, Checkers: []Checker{c}}}}})
			h.want(Transition{Service: svc, Server: key, Up: true, InPool: true, Weight: 1})
			h.want(Transition{Service: svc, Server: key})
			mu.Lock()
			got := append([]time.Time(nil), hits...)
			mu.Unlock()
			if len(got) != retry+1 {
				t.Fatalf("attempts before down = %d, want retry+1 = %d", len(got), retry+1)
			}
			for i := 1; i < len(got); i++ {
				if gap := got[i].Sub(got[i-1]); gap < dbr {
					t.Errorf("retry %d came %v after the previous attempt, want >= delay_before_retry %v", i, gap, dbr)
				}
			}
			want := fmt.Sprintf("HTTP_GET on service [127.0.0.1]:tcp:%d failed after %d retries.", port, retry)
			if !strings.Contains(h.logs.String(), want) {
				t.Errorf("log lacks %q", want)
			}
		})
	}
}

func TestCheckerDefaults(t *testing.T) {
	tests := []struct {
		c    Checker
		want settings
	}{
		{Checker{Type: TCPCheck}, settings{delayLoop: 60 * time.Second, connectTimeout: 5 * time.Second, delayBeforeRetry: time.Second, warmup: 60 * time.Second, retry: 1}},
		{Checker{Type: HTTPGet, DelayLoop: 6 * time.Second}, settings{delayLoop: 6 * time.Second, connectTimeout: 5 * time.Second, delayBeforeRetry: 3 * time.Second, warmup: 6 * time.Second, retry: 1}},
		{Checker{Type: DNSCheck, DelayLoop: 2 * time.Second}, settings{delayLoop: 2 * time.Second, connectTimeout: 5 * time.Second, delayBeforeRetry: 2 * time.Second, warmup: 2 * time.Second, retry: 3}},
		{Checker{Type: MiscCheck}, settings{delayLoop: 60 * time.Second, connectTimeout: 5 * time.Second, delayBeforeRetry: time.Second, warmup: 60 * time.Second, retry: 0}},
		{Checker{Type: SMTPCheck, Retry: Ptr(4), DelayBeforeRetry: Ptr(time.Duration(0)), Warmup: Ptr(time.Duration(0)), ConnectTimeout: time.Second},
			settings{delayLoop: 60 * time.Second, connectTimeout: time.Second, retry: 4}},
	}
	for _, tc := range tests {
		if got := tc.c.settings(); got != tc.want {
			t.Errorf("%s settings = %+v, want %+v", tc.c.Type, got, tc.want)
		}
	}
}

func TestPoolSorryChange(t *testing.T) {
	h := newHarness(t, PoolOptions{}, false)
	h.fake("198.18.0.11:80").down.Store(true)
	r := server(rs1)
	r.Alpha = true
	s := Service{VIP: vip, Port: 80, Sorry: &SorryServer{Addr: rs3, Port: 80}, Servers: []RealServer{r}}
	h.p.Update([]Service{s})
	h.want(Transition{Service: svc, Server: "198.18.0.13:80", Up: true, InPool: true, Weight: 1, Sorry: true})
	s.Sorry = &SorryServer{Addr: rs2, Port: 8080}
	h.p.Update([]Service{s})
	h.want(Transition{Service: svc, Server: "198.18.0.13:80", Sorry: true, Removed: true})
	h.want(Transition{Service: svc, Server: "198.18.0.12:8080", Up: true, InPool: true, Weight: 1, Sorry: true})
	s.Sorry = nil
	h.p.Update([]Service{s})
	h.want(Transition{Service: svc, Server: "198.18.0.12:8080", Sorry: true, Removed: true})
}
