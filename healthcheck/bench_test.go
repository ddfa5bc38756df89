package healthcheck

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// usage is the process's user and system CPU time.
func usage(b *testing.B) (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// listeners is a helper process (this test binary running
// TestHelperListeners) holding n loopback listeners that accept and close
// every connection, so the server side's user-space work is not charged
// to the benchmark's process and accept queues do not fill.
type listeners struct {
	addrs []netip.AddrPort
	pid   int
}

// cpu is the helper's user+system CPU (10 ms resolution).
func (l *listeners) cpu(b *testing.B) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", l.pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64) // utime, field 14
	st, _ := strconv.ParseInt(f[12], 10, 64) // stime, field 15
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// startListeners starts the helper. XVS_HC_LISTENER_WRAP prefixes its
// command line (e.g. "ip netns exec NS taskset -c 1") and
// XVS_HC_LISTEN_ADDR sets its address (default 127.0.0.1), to measure with
// the listeners' packet processing on another CPU (see BenchmarkPool1000TCP).
func startListeners(b *testing.B, n int) *listeners {
	argv := append(strings.Fields(os.Getenv("XVS_HC_LISTENER_WRAP")), os.Args[0], "-test.run=^TestHelperListeners$")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "XVS_HC_LISTENERS="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("listener helper: %v", err)
	}
	b.Cleanup(func() {
		stdin.Close() // the helper exits at EOF
		_ = cmd.Wait()
	})
	l := &listeners{pid: cmd.Process.Pid}
	sc := bufio.NewScanner(stdout)
	for len(l.addrs) < n && sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
			ap, err := netip.ParseAddrPort(a)
			if err != nil {
				b.Fatalf("listener helper: %v", err)
			}
			l.addrs = append(l.addrs, ap)
		}
	}
	if len(l.addrs) < n {
		b.Fatalf("listener helper: %d of %d listeners (%v)", len(l.addrs), n, sc.Err())
	}
	go io.Copy(io.Discard, stdout)
	return l
}

// TestHelperListeners is the listener process of the benchmarks; it is
// skipped in a normal test run.
func TestHelperListeners(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("XVS_HC_LISTENERS"))
	if n <= 0 {
		t.Skip("helper process of BenchmarkPool1000TCP")
	}
	addr := os.Getenv("XVS_HC_LISTEN_ADDR")
	if addr == "" {
		addr = "127.0.0.1"
	}
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("listening %s\n", l.Addr())
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// BenchmarkPool1000TCP runs 1000 real servers with TCP_CHECK every second
// against loopback listeners for a fixed wall time (20 s, or
// XVS_HC_BENCH_DURATION) after a 1.5 s warm-up in which every checker has
// started, and reports per wall second the pool process's CPU (user and
// system), the listener process's CPU, mallocs per check and goroutines
// before, during and after.
//
// The listeners live in a helper process, but on loopback the kernel
// processes the server's half of each handshake (SYN, ACK, the RST)
// in softirq context inline in the checker's connect and close calls, so
// sys-s/wall-s still holds both ends' kernel TCP work; BenchmarkTCPProbe
// gives that floor per check.
//
// path=epoll is the pool's TCP_CHECK (one loop goroutine, raw sockets in
// epoll); path=dial runs TCP_CHECK through net.Dialer on a goroutine per
// probe under the same scheduler. On the 2-core CI-like VM, shared with
// other builds (load 3-4), 20 s runs gave:
//
//	path=epoll  0.050-0.057 cpu-s/wall-s (user 0.003-0.006), 0.001 mallocs/check, 2 goroutines
//	path=dial   0.109-0.115 cpu-s/wall-s (user 0.05), 34.5 mallocs/check
//	listeners   0.035-0.040 cpu-s/wall-s in the helper process
//
// The replaced design, a goroutine and a timer per checker probing with
// net.Dialer, measured 0.10 cpu-s/wall-s (with in-process listeners), 98.8
// µs CPU and 34 mallocs per check, ~1000 goroutines. In perf profiles of
// path=epoll about a fifth of the pool process's CPU is the listeners'
// kernel work (SYN on the listener, child socket, the RST at the child)
// run inline in its connect and close calls; a director probing remote
// real servers does not pay it.
//
// To take all packet receive processing (both ends') out of the pool
// process, put the listeners in another network namespace behind a veth
// whose receive queue RPS steers to CPU 1, and pin the pool to CPU 0:
//
//	veth pair, 198.18.200.1/24 in namespace C, 198.18.200.2/24 in S;
//	echo 2 > /sys/class/net/VETH_IN_S/queues/rx-0/rps_cpus   (inside S)
//	XVS_HC_LISTEN_ADDR=198.18.200.2 XVS_HC_LISTENER_WRAP="ip netns exec S taskset -c 1" \
//	  ip netns exec C taskset -c 0 ./healthcheck.test -test.run '^$' -test.bench Pool1000TCP -test.benchtime 1x
//
// That measured path=epoll 0.024-0.031 cpu-s/wall-s (0.046-0.052 with
// RPS off, i.e. receive processing inline) and path=dial 0.076.
//
//	go test -run '^$' -bench Pool1000TCP -benchtime 1x ./healthcheck/
func BenchmarkPool1000TCP(b *testing.B) {
	const n = 1000
	dur := 20 * time.Second
	if s := os.Getenv("XVS_HC_BENCH_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatalf("XVS_HC_BENCH_DURATION: %v", err)
		}
		dur = d
	}
	ls := startListeners(b, n)
	servers := make([]RealServer, n)
	for i, a := range ls.addrs {
		servers[i] = RealServer{Addr: a.Addr(), Port: a.Port(), Checkers: []Checker{{Type: TCPCheck, DelayLoop: time.Second, ConnectTimeout: time.Second}}}
	}
	for _, path := range []string{"epoll", "dial"} {
		b.Run("path="+path, func(b *testing.B) {
			for range b.N {
				benchPool(b, ls, servers, path == "dial", dur)
			}
		})
	}
}

func benchPool(b *testing.B, ls *listeners, servers []RealServer, dial bool, dur time.Duration) {
	runtime.GC()
	var down atomic.Int64
	gBefore := runtime.NumGoroutine()
	p := NewPool(PoolOptions{Logger: tlog(b)}, func(t Transition) {
		if !t.Up {
			down.Add(1)
		}
	})
	p.dialTCP = dial
	if err := p.Update([]Service{{VIP: vip, Port: 80, Servers: servers}}); err != nil {
		b.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // warmup: every checker has begun
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	u0, s0 := usage(b)
	srv0, st0, w0, t0 := ls.cpu(b), p.Stats(), p.loop.nWaits.Load(), time.Now()
	time.Sleep(dur / 2)
	gDuring := runtime.NumGoroutine()
	time.Sleep(dur - dur/2)
	u1, s1 := usage(b)
	srv1, st1, w1, wall := ls.cpu(b), p.Stats(), p.loop.nWaits.Load(), time.Since(t0)
	runtime.ReadMemStats(&ms1)
	p.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > gBefore && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	gAfter := runtime.NumGoroutine()
	checks := max(st1.Checks-st0.Checks, 1)
	cpu := (u1 - u0) + (s1 - s0)
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cpu-s/wall-s")
	b.ReportMetric((u1-u0).Seconds()/wall.Seconds(), "user-s/wall-s")
	b.ReportMetric((s1-s0).Seconds()/wall.Seconds(), "sys-s/wall-s")
	b.ReportMetric((srv1-srv0).Seconds()/wall.Seconds(), "listener-cpu-s/wall-s")
	b.ReportMetric(float64(checks)/wall.Seconds(), "checks/s")
	b.ReportMetric(float64(w1-w0)/wall.Seconds(), "loop-waits/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(checks), "cpu-µs/check")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(checks), "mallocs/check")
	b.ReportMetric(float64(gBefore), "goroutines-before")
	b.ReportMetric(float64(gDuring), "goroutines-during")
	b.ReportMetric(float64(gAfter), "goroutines-after")
	if f := st1.Failures; f > 0 || down.Load() > 0 {
		b.Errorf("%d failed checks, %d down transitions against live listeners", f, down.Load())
	}
	if gAfter > gBefore {
		b.Errorf("goroutines grew: %d before, %d after Close", gBefore, gAfter)
	}
}

// BenchmarkTCPProbe runs TCP_CHECK probes back to back on one goroutine,
// round robin over 1000 listeners in the helper process: the floor for
// the pool's cpu-µs/check (socket, connect, wait, close and the kernel's
// work for both ends of the loopback handshake). raw is the pool's
// tcpProber (waiting with poll), dial the net.Dialer reference.
func BenchmarkTCPProbe(b *testing.B) {
	ls := startListeners(b, 1000)
	for _, path := range []string{"raw", "dial"} {
		b.Run(path, func(b *testing.B) {
			probers := make([]prober, len(ls.addrs))
			for i, a := range ls.addrs {
				ep := endpoint{addr: a}
				if path == "dial" {
					probers[i] = &dialTCPProber{ep: ep}
					continue
				}
				tp, err := newTCPProber(ep)
				if err != nil {
					b.Fatal(err)
				}
				probers[i] = tp
			}
			ctx := b.Context()
			b.ReportAllocs()
			u0, s0 := usage(b)
			srv0 := ls.cpu(b)
			n := 0
			for b.Loop() {
				if r := probers[n%len(probers)].probe(ctx); !r.ok {
					b.Fatal(r.detail)
				}
				n++
			}
			u1, s1 := usage(b)
			b.ReportMetric(float64((u1-u0+s1-s0).Microseconds())/float64(n), "cpu-µs/op")
			b.ReportMetric(float64((s1-s0).Microseconds())/float64(n), "sys-µs/op")
			b.ReportMetric(float64((ls.cpu(b)-srv0).Microseconds())/float64(n), "listener-cpu-µs/op")
		})
	}
}
