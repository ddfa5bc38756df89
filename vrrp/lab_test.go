package vrrp

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/xvs-lb/xvs/internal/netlab"
)

// Lab addresses (LAB.md): directors .2/.3, client .10, VIP .100 on
// 198.18.0.0/24; a second network 198.19.0.0/24 for sync groups.
var (
	labVIP  = netip.MustParseAddr("198.18.0.100")
	labVIP2 = netip.MustParseAddr("198.19.0.100")
)

type vrrpLab struct {
	t      *testing.T
	nl     *netlab.Lab
	client *netlab.Host
	dirs   [2]*netlab.Host
	links  map[string]*netlab.Link // "dir1/eth0", ...
	mon    *vipMonitor
	sniff  [2]*sniffer
	probe  *prober
}

// newVRRPLab builds client + two directors on br0 (and, with second, the
// directors also on br1 via eth1) and starts the VIP monitor, an advert
// sniffer in each director and an ICMP prober in the client.
func newVRRPLab(t *testing.T, second bool) *vrrpLab {
	netlab.Require(t)
	if _, err := os.Stat("/usr/sbin/keepalived"); err != nil {
		t.Skip("keepalived is not installed (Debian package keepalived)")
	}
	nl := netlab.New(t)
	l := &vrrpLab{t: t, nl: nl, links: map[string]*netlab.Link{}}
	br := nl.Bridge("br0")
	l.client = nl.Host("client")
	l.links["client/eth0"] = nl.Connect(l.client, br, "eth0", "198.18.0.10/24")
	var br1 *netlab.Bridge
	if second {
		br1 = nl.Bridge("br1")
	}
	for i := range l.dirs {
		h := nl.Host(fmt.Sprintf("dir%d", i+1))
		l.dirs[i] = h
		l.links[h.Base+"/eth0"] = nl.Connect(h, br, "eth0", fmt.Sprintf("198.18.0.%d/24", i+2))
		if second {
			l.links[h.Base+"/eth1"] = nl.Connect(h, br1, "eth1", fmt.Sprintf("198.19.0.%d/24", i+2))
		}
	}
	l.mon = newVIPMonitor(t, l.dirs[:], labVIP)
	for i, h := range l.dirs {
		l.sniff[i] = newSniffer(t, h)
	}
	l.probe = newProber(t, l.client, labVIP)
	return l
}

// ---- speakers: the xvs helper process or keepalived ----

type speakerProc struct {
	kind  string // "xvs" or "keepalived"
	host  *netlab.Host
	cfg   Config
	dir   string
	proc  *netlab.Proc
	stats string
	env   []string // extra environment for the xvs helper
}

func (l *vrrpLab) start(kind string, dir int, cfg Config, env ...string) *speakerProc {
	l.t.Helper()
	sp := &speakerProc{kind: kind, host: l.dirs[dir], cfg: cfg, dir: l.t.TempDir(), env: env}
	sp.run(l.t)
	return sp
}

func (sp *speakerProc) run(t *testing.T) {
	t.Helper()
	switch sp.kind {
	case "xvs":
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(sp.cfg)
		if err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(sp.dir, "vrrp.json")
		sp.stats = filepath.Join(sp.dir, "stats.json")
		os.Remove(sp.stats)
		if err := os.WriteFile(conf, b, 0o644); err != nil {
			t.Fatal(err)
		}
		args := append(append([]string{}, sp.env...), exe, "vrrp-helper", conf, sp.stats)
		sp.proc = sp.host.Start(t, "env", args...)
	case "keepalived":
		conf := filepath.Join(sp.dir, "keepalived.conf")
		if err := os.WriteFile(conf, []byte(keepalivedConf(sp.cfg)), 0o644); err != nil {
			t.Fatal(err)
		}
		p := func(n string) string { return filepath.Join(sp.dir, n) }
		// -R: no respawn, so that killing the VRRP child is a crash.
		sp.proc = sp.host.Start(t, "keepalived", "-n", "-l", "-D", "-P", "-R", "-f", conf,
			"-p", p("k.pid"), "-r", p("vrrp.pid"), "-c", p("chk.pid"), "-b", p("bfd.pid"))
	}
	t.Cleanup(func() {
		sp.stop(t)
		if t.Failed() {
			t.Logf("---- %s on %s log ----\n%s", sp.kind, sp.host.Base, tail(sp.proc.Log(), 60))
		}
	})
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop is a graceful stop (SIGTERM; priority 0 from a master) and waits.
func (sp *speakerProc) stop(t *testing.T) {
	if sp.proc.Signal(syscall.SIGTERM) != nil {
		return
	}
	select {
	case <-sp.proc.Done():
	case <-time.After(10 * time.Second):
		t.Errorf("%s on %s did not stop within 10s of SIGTERM", sp.kind, sp.host.Base)
		_ = sp.proc.Signal(syscall.SIGKILL)
		<-sp.proc.Done()
	}
	if strings.Contains(sp.proc.Log(), "WARNING: DATA RACE") {
		t.Errorf("%s on %s reported a data race (go test -race):\n%s", sp.kind, sp.host.Base, sp.proc.Log())
	}
}

// kill is a crash: SIGKILL to the process that speaks VRRP.
func (sp *speakerProc) kill(t *testing.T) {
	t.Helper()
	if sp.kind == "keepalived" {
		b, err := os.ReadFile(filepath.Join(sp.dir, "vrrp.pid"))
		if err != nil {
			t.Fatalf("keepalived VRRP pid: %v", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("keepalived VRRP pid %q: %v", b, err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill keepalived VRRP child %d: %v", pid, err)
		}
		sp.stop(t) // the parent, which does not respawn (-R)
		return
	}
	_ = sp.proc.Signal(syscall.SIGKILL)
	<-sp.proc.Done()
}

// checkLog fails the test if the xvs speaker logged an error or a failed
// announcement (keepalived's log is not checked).
func (sp *speakerProc) checkLog(t *testing.T) {
	t.Helper()
	if sp.kind != "xvs" {
		return
	}
	for _, line := range strings.Split(sp.proc.Log(), "\n") {
		if strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") && !strings.Contains(line, "dropped") {
			t.Errorf("xvs on %s logged: %s", sp.host.Base, line)
		}
	}
}

// readStats reads the xvs helper's last stats snapshot.
func (sp *speakerProc) readStats(t *testing.T) Stats {
	t.Helper()
	st, err := readStatsFile(sp.stats)
	if err != nil {
		t.Fatalf("stats of %s: %v", sp.host.Base, err)
	}
	return st
}

func readStatsFile(path string) (Stats, error) {
	var st Stats
	b, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	err = json.Unmarshal(b, &st)
	return st, err
}

// keepalivedConf renders cfg as keepalived.conf (the subset the tests use).
func keepalivedConf(cfg Config) string {
	var b strings.Builder
	secs := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }
	fmt.Fprintf(&b, "global_defs {\n    router_id %s\n}\n", cfg.Globals.RouterID)
	for _, s := range cfg.Scripts {
		fmt.Fprintf(&b, "vrrp_script %s {\n    script %q\n    interval %s\n    weight %d\n    rise %d\n    fall %d\n}\n",
			s.Name, s.Script, secs(max(s.Interval, time.Second)), s.Weight, max(s.Rise, 1), max(s.Fall, 1))
	}
	for _, g := range cfg.SyncGroups {
		fmt.Fprintf(&b, "vrrp_sync_group %s {\n    group {\n        %s\n    }\n}\n", g.Name, strings.Join(g.Group, "\n        "))
	}
	for _, in := range cfg.Instances {
		st := "BACKUP"
		if in.State == StateMaster {
			st = "MASTER"
		}
		v := in.Version
		if v == 0 {
			v = 2
		}
		fmt.Fprintf(&b, "vrrp_instance %s {\n    state %s\n    interface %s\n    virtual_router_id %d\n    priority %d\n    advert_int %s\n    version %d\n",
			in.Name, st, in.Interface, in.VirtualRouterID, in.Priority, secs(in.AdvertInt), v)
		if in.NoPreempt {
			b.WriteString("    nopreempt\n")
		}
		if in.PreemptDelay > 0 {
			fmt.Fprintf(&b, "    preempt_delay %s\n", secs(in.PreemptDelay))
		}
		if in.AuthType == AuthPass {
			fmt.Fprintf(&b, "    authentication {\n        auth_type PASS\n        auth_pass %s\n    }\n", in.AuthPass)
		}
		if in.UnicastSrcIP.IsValid() {
			fmt.Fprintf(&b, "    unicast_src_ip %s\n    unicast_peer {\n", in.UnicastSrcIP)
			for _, p := range in.UnicastPeers {
				fmt.Fprintf(&b, "        %s\n", p)
			}
			b.WriteString("    }\n")
		}
		if in.UseVMAC {
			fmt.Fprintf(&b, "    use_vmac %s\n", in.VMACName)
			if in.VMACXmitBase {
				b.WriteString("    vmac_xmit_base\n")
			}
		}
		b.WriteString("    virtual_ipaddress {\n")
		for _, v := range in.VirtualIPAddresses {
			fmt.Fprintf(&b, "        %s dev %s\n", v.Prefix, v.Dev)
		}
		b.WriteString("    }\n")
		if len(in.TrackScripts) > 0 {
			b.WriteString("    track_script {\n")
			for _, ts := range in.TrackScripts {
				fmt.Fprintf(&b, "        %s\n", ts.Name)
			}
			b.WriteString("    }\n")
		}
		b.WriteString("}\n")
	}
	return b.String()
}

// ---- observers ----

type holdSample struct {
	at   time.Time
	hold [2]bool
}

// vipMonitor samples, every 5 ms through netlink, whether each director
// holds the VIP.
type vipMonitor struct {
	mu      sync.Mutex
	samples []holdSample
}

func newVIPMonitor(t *testing.T, dirs []*netlab.Host, vip netip.Addr) *vipMonitor {
	m := &vipMonitor{}
	var hs [2]*netlink.Handle
	for i, h := range dirs {
		ns, err := h.NS()
		if err != nil {
			t.Fatal(err)
		}
		hs[i], err = netlink.NewHandleAt(ns)
		ns.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			var s holdSample
			for i, h := range hs {
				fam := netlink.FAMILY_V4
				if vip.Is6() {
					fam = netlink.FAMILY_V6
				}
				addrs, _ := h.AddrList(nil, fam)
				for _, a := range addrs {
					if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == vip {
						s.hold[i] = true
					}
				}
			}
			s.at = time.Now()
			m.mu.Lock()
			m.samples = append(m.samples, s)
			m.mu.Unlock()
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
		for _, h := range hs {
			h.Close()
		}
	})
	return m
}

// holder returns which director holds the VIP now (-1 none, 2 both).
func (m *vipMonitor) last() holdSample {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.samples) == 0 {
		return holdSample{}
	}
	return m.samples[len(m.samples)-1]
}

// waitOnly waits until only director i holds the VIP and returns the time
// of the first such sample.
func (m *vipMonitor) waitOnly(t *testing.T, i int, since time.Time, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		m.mu.Lock()
		for _, s := range m.samples {
			if !s.at.Before(since) && s.hold[i] && !s.hold[1-i] {
				m.mu.Unlock()
				return s.at
			}
		}
		m.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("director %d did not become the only VIP holder within %v (last sample %+v)", i+1, timeout, m.last())
	return time.Time{}
}

// waitHold waits until director i holds the VIP (whatever the other does).
func (m *vipMonitor) waitHold(t *testing.T, i int, since time.Time, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		m.mu.Lock()
		for _, s := range m.samples {
			if !s.at.Before(since) && s.hold[i] {
				m.mu.Unlock()
				return s.at
			}
		}
		m.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("director %d did not take the VIP within %v (last sample %+v)", i+1, timeout, m.last())
	return time.Time{}
}

// maxBoth is the longest stretch within [from, to] in which both
// directors held the VIP.
func (m *vipMonitor) maxBoth(from, to time.Time) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	var longest time.Duration
	var start time.Time
	for _, s := range m.samples {
		if s.at.Before(from) || s.at.After(to) {
			continue
		}
		both := s.hold[0] && s.hold[1]
		switch {
		case both && start.IsZero():
			start = s.at
		case both:
			longest = max(longest, s.at.Sub(start))
		case !both:
			start = time.Time{}
		}
	}
	return longest
}

type advSeen struct {
	at   time.Time
	src  netip.Addr
	prio uint8
}

// sniffer records the VRRP adverts a director receives.
type sniffer struct {
	mu   sync.Mutex
	seen []advSeen
}

func newSniffer(t *testing.T, h *netlab.Host) *sniffer {
	s := &sniffer{}
	var pc *ipv4.PacketConn
	var c net.PacketConn
	err := h.Do(func() error {
		var err error
		c, err = net.ListenPacket("ip4:112", "0.0.0.0")
		if err != nil {
			return err
		}
		pc = ipv4.NewPacketConn(c)
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		return pc.JoinGroup(ifi, &net.IPAddr{IP: net.IPv4(224, 0, 0, 18)})
	})
	if err != nil {
		t.Fatalf("sniffer in %s: %v", h.Name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, _, src, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 3 {
				continue
			}
			ip, _ := netip.AddrFromSlice(src.(*net.IPAddr).IP)
			s.mu.Lock()
			s.seen = append(s.seen, advSeen{time.Now(), ip.Unmap(), buf[2]})
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return s
}

// lastFrom is the last advert from src received before t.
func (s *sniffer) lastFrom(src netip.Addr, before time.Time) (advSeen, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.seen) - 1; i >= 0; i-- {
		a := s.seen[i]
		if a.src == src && a.at.Before(before) {
			return a, true
		}
	}
	return advSeen{}, false
}

// prober pings the VIP from the client every 10 ms and records replies.
type prober struct {
	mu      sync.Mutex
	replies []time.Time
}

func newProber(t *testing.T, h *netlab.Host, vip netip.Addr) *prober {
	p := &prober{}
	var c *icmp.PacketConn
	if err := h.Do(func() error {
		var err error
		c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		t.Fatalf("prober: %v", err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(10 * time.Millisecond)
		defer tk.Stop()
		for seq := 1; ; seq++ {
			m := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 0x5652, Seq: seq & 0xffff, Data: []byte("xvs-vrrp")}}
			b, _ := m.Marshal(nil)
			_, _ = c.WriteTo(b, &net.IPAddr{IP: vip.AsSlice()})
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 1500)
		for {
			n, src, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			if ip, ok := src.(*net.IPAddr); !ok || !ip.IP.Equal(vip.AsSlice()) {
				continue
			}
			p.mu.Lock()
			p.replies = append(p.replies, time.Now())
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() { close(stop); c.Close(); wg.Wait() })
	return p
}

// firstReplyAfter waits for a reply later than t.
func (p *prober) firstReplyAfter(tt *testing.T, t time.Time, timeout time.Duration) time.Time {
	tt.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		i := sort.Search(len(p.replies), func(i int) bool { return p.replies[i].After(t) })
		if i < len(p.replies) {
			r := p.replies[i]
			p.mu.Unlock()
			return r
		}
		p.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	tt.Fatalf("the client got no echo reply from the VIP within %v", timeout)
	return time.Time{}
}
