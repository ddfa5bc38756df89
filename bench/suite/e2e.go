package suite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/xvs-lb/xvs/internal/netlab"
)

// E2EOptions bound the end-to-end runs.
type E2EOptions struct {
	Duration    time.Duration // per wrk run; default 5 s
	Runs        int           // per cell; default 3
	Connections int           // wrk -c; default 32
	ClientCPU   int           // wrk's CPU; default 0
	ServerCPU   int           // nginx and the balancer's CPU; default 1 (0 on one CPU)
}

// E2ECell is one path × connection mode.
type E2ECell struct {
	Path    string // kernel-fwd, haproxy, xvsd-dr
	Mode    string // close (one request per connection) or keepalive
	Samples []WrkResult
	Err     error
}

// WrkResult is one wrk run.
type WrkResult struct {
	RPS      float64
	P50, P99 time.Duration
	Errors   int // connect/read/write/timeout errors and non-2xx
}

// RPS returns min, median and max requests/s.
func (c E2ECell) RPS() (lo, med, hi float64) {
	v := make([]float64, len(c.Samples))
	for i, s := range c.Samples {
		v[i] = s.RPS
	}
	return spread(v)
}

// Latency returns the median over runs of p50 and p99.
func (c E2ECell) Latency() (p50, p99 time.Duration) {
	a := make([]float64, len(c.Samples))
	b := make([]float64, len(c.Samples))
	for i, s := range c.Samples {
		a[i], b[i] = float64(s.P50), float64(s.P99)
	}
	_, m50, _ := spread(a)
	_, m99, _ := spread(b)
	return time.Duration(m50), time.Duration(m99)
}

// serviceAddr is what the kernel-forwarding path targets: an address of
// rs1 (on its lo) that the client reaches through the director as router.
const serviceAddr = "198.18.2.11"

func runE2E(ctx context.Context, tb netlab.TB, o Options, rep *Report) error {
	e := o.E2E
	if e.Duration == 0 {
		e.Duration = 5 * time.Second
	}
	if e.Runs == 0 {
		e.Runs = 3
	}
	if e.Connections == 0 {
		e.Connections = 32
	}
	if e.ServerCPU == 0 && o.Place.Worker != 0 {
		e.ServerCPU = o.Place.Worker
	}
	topo := netlab.Standard(tb)
	all := []*netlab.Host{topo.Client, topo.Dir1, topo.RS1, topo.RS2}
	for _, h := range all {
		// Short connections by the ten thousand: wide port range and
		// TIME_WAIT reuse, or the client runs out of ports mid-run.
		for _, kv := range []string{"net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1", "net.core.somaxconn=4096", "net.ipv4.tcp_max_syn_backlog=4096"} {
			if out, err := h.Output("sysctl", "-q", "-w", kv); err != nil {
				return fmt.Errorf("e2e: %w: %s", err, out)
			}
		}
	}
	for _, rs := range []*netlab.Host{topo.RS1, topo.RS2} {
		netlab.RealServerDR(tb, rs, netlab.VIP)
		if err := startNginx(tb, rs, e.ServerCPU); err != nil {
			return err
		}
	}
	setup := [][]string{
		// Kernel forwarding: rs1 also holds serviceAddr; the client routes
		// it through dir1, which routes it to rs1 out of the same port
		// (no ICMP redirects, so the client keeps using dir1).
		{"rs1", "ip", "addr", "add", serviceAddr + "/32", "dev", "lo"},
		{"dir1", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
		{"dir1", "sysctl", "-q", "-w", "net.ipv4.conf.all.send_redirects=0"},
		{"dir1", "sysctl", "-q", "-w", "net.ipv4.conf.eth0.send_redirects=0"},
		{"dir1", "ip", "route", "add", serviceAddr + "/32", "via", netlab.RS1Addr.String()},
		{"client", "ip", "route", "add", serviceAddr + "/32", "via", netlab.Dir1Addr.String()},
		// HAProxy and xvsd serve the VIP on dir1.
		{"dir1", "ip", "addr", "add", netlab.VIP.String() + "/32", "dev", "eth0"},
	}
	hosts := map[string]*netlab.Host{"rs1": topo.RS1, "dir1": topo.Dir1, "client": topo.Client}
	for _, s := range setup {
		if out, err := hosts[s[0]].Output(s[1], s[2:]...); err != nil {
			return fmt.Errorf("e2e: %w: %s", err, out)
		}
	}
	// The client must be ready: nginx answers on both paths.
	for _, url := range []string{"http://" + serviceAddr + "/", "http://" + netlab.RS1Addr.String() + "/"} {
		if err := waitHTTP(topo.Client, url); err != nil {
			return err
		}
	}

	paths := []struct {
		name  string
		url   string
		start func() (stop func(), err error)
	}{
		{"kernel-fwd", "http://" + serviceAddr + "/", func() (func(), error) { return kernelOnCPU(topo.Dir1, e.ServerCPU) }},
		{"haproxy", "http://" + netlab.VIP.String() + "/", func() (func(), error) { return startHAProxy(tb, topo.Dir1, e.ServerCPU) }},
		{"xvsd-dr", "http://" + netlab.VIP.String() + "/", func() (func(), error) { return startXVSD(tb, topo.Dir1, e.ServerCPU) }},
	}
	for _, p := range paths {
		stop, err := p.start()
		if err == nil {
			err = waitHTTP(topo.Client, p.url)
			if err != nil {
				if p.name == "haproxy" && haproxyLog != nil {
					err = fmt.Errorf("%w\nhaproxy log:\n%s", err, haproxyLog())
				}
				stop()
			}
		}
		for _, mode := range []string{"close", "keepalive"} {
			cell := E2ECell{Path: p.name, Mode: mode, Err: err}
			for r := 0; err == nil && r < e.Runs && ctx.Err() == nil; r++ {
				res, werr := runWrk(topo.Client, p.url, mode, e)
				if werr != nil {
					cell.Err = werr
					break
				}
				fmt.Fprintf(o.Log, "e2e: %-10s %-9s run %d: %.0f req/s p50 %v p99 %v errors %d\n", p.name, mode, r+1, res.RPS, res.P50, res.P99, res.Errors)
				cell.Samples = append(cell.Samples, res)
			}
			rep.E2E = append(rep.E2E, cell)
		}
		if err == nil {
			stop()
		} else if !errors.Is(err, ErrNotAvailable) {
			fmt.Fprintf(o.Log, "e2e: %s: %v\n", p.name, err)
		}
	}
	return ctx.Err()
}

// kernelOnCPU steers the director's kernel forwarding to cpu with RPS on
// its eth0, for the time of the kernel-fwd runs. HAProxy and xvsd do their
// forwarding work on that CPU (pinned); without RPS the kernel would do its
// own in the softirq of whichever CPU received the frame, here the client's
// (wrk's) CPU, and so be measured with a CPU to itself the others lack. The
// frame's receive up to the XDP hook, and RPS's hand-off, stay on the
// receiving CPU for every path alike.
func kernelOnCPU(dir *netlab.Host, cpu int) (func(), error) {
	path := "/sys/class/net/eth0/queues/rx-0/rps_cpus"
	if out, err := dir.Output("sh", "-c", fmt.Sprintf("echo %x > %s", 1<<cpu, path)); err != nil {
		return nil, fmt.Errorf("e2e: RPS to cpu%d: %w: %s", cpu, err, out)
	}
	return func() { _, _ = dir.Output("sh", "-c", "echo 0 > "+path) }, nil
}

func waitHTTP(client *netlab.Host, url string) error {
	var out string
	var err error
	for range 50 {
		if out, err = client.Output("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1", url); err == nil && out == "200" {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("e2e: %s never answered 200 (last: %q, %v)", url, out, err)
}

// startNginx runs nginx in h with everything (pid, logs, temp files) in
// a temp dir: never the system's nginx or its configuration.
func startNginx(tb netlab.TB, h *netlab.Host, cpu int) error {
	dir := tb.TempDir()
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    keepalive_requests 1000000;
    server {
        listen 80 backlog=4096;
        location / { return 200 "ok\n"; }
    }
}
`, dir)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("e2e: nginx config: %w", err)
	}
	h.Start(tb, "taskset", "-c", strconv.Itoa(cpu), "nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path)
	return nil
}

// startHAProxy runs HAProxy in TCP mode on the VIP, one thread, round
// robin over both real servers' own addresses.
func startHAProxy(tb netlab.TB, h *netlab.Host, cpu int) (func(), error) {
	dir := tb.TempDir()
	conf := fmt.Sprintf(`global
    nbthread 1
    maxconn 8000
    pidfile %s/haproxy.pid
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend vip
    bind %s:80 backlog 4096
    default_backend reals
backend reals
    balance roundrobin
    server rs1 %s:80
    server rs2 %s:80
`, dir, netlab.VIP, netlab.RS1Addr, netlab.RS2Addr)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("e2e: haproxy config: %w", err)
	}
	p := h.Start(tb, "taskset", "-c", strconv.Itoa(cpu), "haproxy", "-db", "-f", path)
	haproxyLog = p.Log
	return p.Stop, nil
}

// haproxyLog reads the running HAProxy's output, for errors.
var haproxyLog func() string

// startXVSD runs xvsd (virtual servers only) on dir1 in DR mode for the
// VIP's port 80, wlc over both real servers.
func startXVSD(tb netlab.TB, h *netlab.Host, cpu int) (func(), error) {
	bin, err := FindXVSD()
	if err != nil {
		return nil, err
	}
	dir := tb.TempDir()
	conf := fmt.Sprintf(`global_defs {
    xvs_interface eth0
}
virtual_server %s 80 {
    lb_algo wlc
    lb_kind DR
    protocol TCP
    real_server %s 80 {
        weight 1
    }
    real_server %s 80 {
        weight 1
    }
}
`, netlab.VIP, netlab.RS1Addr, netlab.RS2Addr)
	path := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("e2e: xvsd config: %w", err)
	}
	p := h.Start(tb, "taskset", "-c", strconv.Itoa(cpu), bin, "-n", "-l", "-C", "--control", "", "-f", path)
	return p.Stop, nil
}

var (
	rpsRE = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	latRE = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	errRE = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	nonRE = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// ParseWrk reads wrk --latency output.
func ParseWrk(out string) (WrkResult, error) {
	var r WrkResult
	m := rpsRE.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk: no Requests/sec in output:\n%s", out)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	for _, l := range latRE.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(l[2], 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[l[3]]
		d := time.Duration(v * float64(unit))
		if l[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	if e := errRE.FindStringSubmatch(out); e != nil {
		for _, s := range e[1:] {
			n, _ := strconv.Atoi(s)
			r.Errors += n
		}
	}
	if e := nonRE.FindStringSubmatch(out); e != nil {
		n, _ := strconv.Atoi(e[1])
		r.Errors += n
	}
	return r, nil
}

func runWrk(client *netlab.Host, url, mode string, e E2EOptions) (WrkResult, error) {
	args := []string{"-c", strconv.Itoa(e.ClientCPU), "wrk", "-t1", "-c" + strconv.Itoa(e.Connections),
		"-d" + strconv.Itoa(int(e.Duration.Seconds())) + "s", "--latency", "--timeout", "2s"}
	if mode == "close" {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, url)
	out, err := client.Output("taskset", args...)
	if err != nil {
		return WrkResult{}, fmt.Errorf("wrk %s: %w", strings.Join(args, " "), err)
	}
	return ParseWrk(out)
}
