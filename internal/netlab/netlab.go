// Package netlab builds test hosts in network namespaces joined by veth
// pairs and Linux bridges, as ../shared/LAB.md describes: the lab of the LVS
// tutorials (client, directors, real servers) on one machine.
//
// Every lab has a short unique prefix (xv + 4 hex digits + "-") for its
// namespaces, so parallel runs and leftovers never collide. Cleanup always
// runs: through t.Cleanup on success and failure, and through a signal
// handler on Ctrl-C. Sweep removes leftovers of labs whose process died.
package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
)

// stateDir records which process owns which prefix, so Sweep can tell a
// leftover from a lab that is still running.
const stateDir = "/run/xvs-netlab"

// prefixRE matches the namespace names this package creates.
var prefixRE = regexp.MustCompile(`^(xv[0-9a-f]{4}-)`)

// Require skips the test unless the process may create namespaces, veths and
// XDP programs. The lab needs root (or CAP_NET_ADMIN+CAP_BPF+CAP_SYS_ADMIN)
// and the ip command.
func Require(tb TB) {
	tb.Helper()
	if reason := missing(); reason != "" {
		tb.Skipf("netlab: %s; run the lab tests as root (make test does, CI runs as root)", reason)
	}
}

func missing() string {
	if _, err := exec.LookPath("ip"); err != nil {
		return "the ip command (iproute2) is not installed"
	}
	if os.Geteuid() == 0 {
		return ""
	}
	// Not root: accept the capabilities the lab needs.
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "cannot read capabilities"
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return "cannot parse capabilities"
			}
			const netAdmin, sysAdmin, bpfCap = 12, 21, 39
			if caps&(1<<netAdmin) != 0 && caps&(1<<sysAdmin) != 0 && caps&(1<<bpfCap) != 0 {
				return ""
			}
		}
	}
	return "the process lacks CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_BPF"
}

// Lab is one test's set of namespaces. Create it with New.
type Lab struct {
	tb     TB
	Prefix string

	mu       sync.Mutex // guards hosts, procs, cleaned
	hosts    []*Host
	procs    []*Proc
	switchNS *Host
	cleaned  bool
}

var (
	labsMu   sync.Mutex
	labs     = map[*Lab]struct{}{}
	sigOnce  sync.Once
	sweepErr error
	swept    sync.Once
)

// New creates an empty lab whose namespaces are removed when the test ends.
func New(tb TB) *Lab {
	tb.Helper()
	Require(tb)
	swept.Do(func() { sweepErr = Sweep() })
	if sweepErr != nil {
		tb.Logf("netlab: sweeping leftovers: %v", sweepErr)
	}
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatalf("netlab: random prefix: %v", err)
	}
	l := &Lab{tb: tb, Prefix: "xv" + hex.EncodeToString(b[:]) + "-"}
	if err := os.MkdirAll(stateDir, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(stateDir, l.Prefix), []byte(strconv.Itoa(os.Getpid())), 0o644)
	}
	labsMu.Lock()
	labs[l] = struct{}{}
	labsMu.Unlock()
	sigOnce.Do(installSignalCleanup)
	tb.Cleanup(l.Close)
	return l
}

// Close stops the lab's processes and removes its namespaces. It runs
// automatically at the end of the test; calling it twice is harmless.
func (l *Lab) Close() {
	l.mu.Lock()
	if l.cleaned {
		l.mu.Unlock()
		return
	}
	l.cleaned = true
	procs := l.procs
	hosts := l.hosts
	l.mu.Unlock()

	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop()
	}
	for _, h := range hosts {
		killNamespacePids(h.Name)
		_ = exec.Command("ip", "netns", "del", h.Name).Run()
	}
	_ = os.Remove(filepath.Join(stateDir, l.Prefix))
	labsMu.Lock()
	delete(labs, l)
	labsMu.Unlock()
}

// installSignalCleanup removes every live lab on SIGINT/SIGTERM, so Ctrl-C
// during go test leaves no namespaces behind.
func installSignalCleanup() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-ch
		labsMu.Lock()
		all := make([]*Lab, 0, len(labs))
		for l := range labs {
			all = append(all, l)
		}
		labsMu.Unlock()
		for _, l := range all {
			l.Close()
		}
		fmt.Fprintf(os.Stderr, "netlab: %v: removed %d lab(s)\n", sig, len(all))
		os.Exit(130)
	}()
}

// killNamespacePids ends processes still running in a namespace this lab
// created (a namespace deletion does not stop them).
func killNamespacePids(ns string) {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// Sweep removes namespaces left behind by labs whose test process is gone
// (a crash, a SIGKILL). It only touches names with this package's prefix.
func Sweep() error {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return fmt.Errorf("ip netns list: %w", err)
	}
	var errs []error
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := prefixRE.FindStringSubmatch(f[0])
		if m == nil || prefixAlive(m[1]) {
			continue
		}
		killNamespacePids(f[0])
		if err := exec.Command("ip", "netns", "del", f[0]).Run(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %w", f[0], err))
		}
	}
	if entries, err := os.ReadDir(stateDir); err == nil {
		for _, e := range entries {
			if !prefixAlive(e.Name()) {
				_ = os.Remove(filepath.Join(stateDir, e.Name()))
			}
		}
	}
	return errors.Join(errs...)
}

func prefixAlive(prefix string) bool {
	b, err := os.ReadFile(filepath.Join(stateDir, prefix))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

// Host is one network namespace of the lab.
type Host struct {
	lab  *Lab
	Name string // full namespace name, with the lab prefix
	Base string // name without the prefix ("rs1")
}

// Host creates a namespace named prefix+name with lo up.
func (l *Lab) Host(name string) *Host {
	l.tb.Helper()
	if len(name) > 8 {
		l.tb.Fatalf("netlab: host name %q longer than 8 characters (interface names are limited to 15)", name)
	}
	h := &Host{lab: l, Name: l.Prefix + name, Base: name}
	l.must("ip", "netns", "add", h.Name)
	l.mu.Lock()
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()
	h.Run(l.tb, "ip", "link", "set", "lo", "up")
	return h
}

func (l *Lab) must(name string, args ...string) string {
	l.tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		l.tb.Fatalf("netlab: %s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Bridge is a Linux bridge; all of a lab's bridges live in one "switch"
// namespace, as if on one switch.
type Bridge struct {
	Switch *Host
	Name   string
}

// Bridge creates a bridge in the lab's switch namespace.
func (l *Lab) Bridge(name string) *Bridge {
	l.tb.Helper()
	l.mu.Lock()
	sw := l.switchNS
	l.mu.Unlock()
	if sw == nil {
		sw = l.Host("sw")
		l.mu.Lock()
		l.switchNS = sw
		l.mu.Unlock()
	}
	sw.Run(l.tb, "ip", "link", "add", name, "type", "bridge", "forward_delay", "0", "stp_state", "0")
	// No multicast snooping: VRRP adverts must reach every port.
	sw.Run(l.tb, "ip", "link", "set", name, "type", "bridge", "mcast_snooping", "0")
	sw.Run(l.tb, "ip", "link", "set", name, "up")
	return &Bridge{Switch: sw, Name: name}
}

// Link is one veth pair: Name inside Host, Peer on the bridge.
type Link struct {
	Host   *Host
	Name   string // interface name inside Host ("eth0")
	Switch *Host
	Peer   string // the bridge port's name in the switch namespace
	MAC    net.HardwareAddr
	Addrs  []netip.Prefix
}

// Connect plugs host into bridge with a veth pair, names the host end
// ifname, brings both ends up and adds the addresses (CIDR notation).
func (l *Lab) Connect(h *Host, br *Bridge, ifname string, addrs ...string) *Link {
	l.tb.Helper()
	peer := h.Base + "-" + ifname
	if len(peer) > 15 {
		l.tb.Fatalf("netlab: port name %q too long", peer)
	}
	l.must("ip", "link", "add", "name", ifname, "netns", h.Name, "type", "veth",
		"peer", "name", peer, "netns", br.Switch.Name)
	br.Switch.Run(l.tb, "ip", "link", "set", peer, "master", br.Name)
	br.Switch.Run(l.tb, "ip", "link", "set", peer, "up")
	lk := &Link{Host: h, Name: ifname, Switch: br.Switch, Peer: peer}
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			l.tb.Fatalf("netlab: address %q: %v", a, err)
		}
		args := []string{"addr", "add", a, "dev", ifname}
		if p.Addr().Is6() {
			args = []string{"-6", "addr", "add", a, "dev", ifname, "nodad"}
		}
		h.Run(l.tb, "ip", args...)
		lk.Addrs = append(lk.Addrs, p)
	}
	h.Run(l.tb, "ip", "link", "set", ifname, "up")
	mac := strings.TrimSpace(h.Run(l.tb, "cat", "/sys/class/net/"+ifname+"/address"))
	hw, err := net.ParseMAC(mac)
	if err != nil {
		l.tb.Fatalf("netlab: MAC of %s in %s: %v", ifname, h.Name, err)
	}
	lk.MAC = hw
	return lk
}

// Command returns a command that runs inside the namespace.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.Name, name}, args...)...)
}

// CommandContext is Command bound to a context.
func (h *Host) CommandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Name, name}, args...)...)
}

// Output runs a command inside the namespace and returns its combined output.
func (h *Host) Output(name string, args ...string) (string, error) {
	out, err := h.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %s %s: %w: %s", h.Name, name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Run is Output that fails the test on error.
func (h *Host) Run(tb TB, name string, args ...string) string {
	tb.Helper()
	out, err := h.Output(name, args...)
	if err != nil {
		tb.Fatalf("netlab: %v", err)
	}
	return out
}

// Do runs fn with the calling goroutine's OS thread inside the namespace.
// Sockets created in fn stay in the namespace after Do returns; goroutines
// started in fn do not inherit it.
func (h *Host) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netlab: current netns: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(h.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netlab: netns %s: %w", h.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netlab: enter %s: %w", h.Name, err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the wrong namespace: keep it locked so the
		// runtime discards it when this goroutine ends.
		return errors.Join(fnErr, fmt.Errorf("netlab: leave %s: %w", h.Name, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// NS opens a handle to the namespace (for netlink.NewHandleAt and the like).
// The caller closes it.
func (h *Host) NS() (netns.NsHandle, error) {
	return netns.GetFromName(h.Name)
}

// Proc is a background process started in a namespace.
type Proc struct {
	Cmd     *exec.Cmd
	LogPath string
	done    chan struct{}
	err     error
	once    sync.Once
}

// Start runs a command in the background inside the namespace. Its output
// goes to a log file in the test's temp dir; it is stopped (SIGTERM, then
// SIGKILL after 5 s) when the lab closes, by PID.
func (h *Host) Start(tb TB, name string, args ...string) *Proc {
	tb.Helper()
	logf, err := os.CreateTemp(tb.TempDir(), h.Base+"-"+filepath.Base(name)+"-*.log")
	if err != nil {
		tb.Fatalf("netlab: log file: %v", err)
	}
	cmd := h.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C to go test is handled by netlab, not
	// delivered to the children directly.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatalf("netlab: start %s in %s: %v", name, h.Name, err)
	}
	p := &Proc{Cmd: cmd, LogPath: logf.Name(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	h.lab.mu.Lock()
	h.lab.procs = append(h.lab.procs, p)
	h.lab.mu.Unlock()
	return p
}

// Pid is the process ID (ip netns exec execs the command, so it is the
// command's own PID).
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit error, valid after Done.
func (p *Proc) Err() error { <-p.done; return p.err }

// Log returns what the process has printed so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Signal sends sig to the process, unless it has exited.
func (p *Proc) Signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return os.ErrProcessDone
	default:
	}
	return p.Cmd.Process.Signal(sig)
}

// Stop sends SIGTERM, waits up to 5 s, then SIGKILLs. Safe to call twice.
func (p *Proc) Stop() {
	p.once.Do(func() {
		if p.Signal(syscall.SIGTERM) != nil {
			return
		}
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.Signal(syscall.SIGKILL)
			<-p.done
		}
	})
}

// Kill sends SIGKILL and waits for the exit (a crash, for failover tests).
func (p *Proc) Kill() {
	p.once.Do(func() {
		if p.Signal(syscall.SIGKILL) == nil {
			<-p.done
		}
	})
}
