package director_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xvs-lb/xvs/internal/labserver"
	"github.com/xvs-lb/xvs/internal/netlab"
)

// Binaries built once for the lab tests.
var xvsdBin, xvsadmBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "xvs-director-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	xvsdBin, xvsadmBin = filepath.Join(dir, "xvsd"), filepath.Join(dir, "xvsadm")
	for bin, pkg := range map[string]string{xvsdBin: "../cmd/xvsd", xvsadmBin: "../cmd/xvsadm"} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", pkg, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// drVirtualServer is the lab's DR service (lb_algo and rs2's weight to
// fill in): rs1 and rs2, each with a TCP check.
const drVirtualServer = `virtual_server 198.18.0.100 80 {
    delay_loop 1
    lb_algo %s
    lb_kind DR
    protocol TCP

    real_server 198.18.0.11 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
        }
    }
    real_server 198.18.0.12 80 {
        weight %d
        TCP_CHECK {
            connect_timeout 1
        }
    }
}
`

// drConf is a tutorial-style LVS-DR director with wrr, rs2 of the given
// weight.
func drConf(w2 int) string {
	return `! A tutorial-style LVS-DR director, translated into the lab's addresses.
global_defs {
   router_id LVS_LAB
}

` + fmt.Sprintf(drVirtualServer, "wrr", w2)
}

var vipHTTP = netip.AddrPortFrom(netlab.VIP, 80)

type lab struct {
	topo  *netlab.Topology
	rs3   *netlab.Host
	xvsd  *netlab.Proc
	conf  string
	sock  string
	rs    map[string]*labserver.Server
	admin func(args ...string) (string, error)
}

// startLab builds the standard topology plus a third real server, puts the
// VIP on dir1 by hand (an LVS-only director, ifcfg-eth0:0 style) and starts
// xvsd there with the DR config.
func startLab(t *testing.T) *lab {
	topo := netlab.Standard(t)
	l := &lab{topo: topo, rs: map[string]*labserver.Server{}}
	l.rs3 = topo.Lab.Host("rs3")
	topo.Lab.Connect(l.rs3, topo.Bridge, "eth0", "198.18.0.13/24")
	for name, h := range map[string]*netlab.Host{"rs1": topo.RS1, "rs2": topo.RS2, "rs3": l.rs3} {
		netlab.RealServerDR(t, h, netlab.VIP)
		l.rs[name] = labserver.Start(t, h, name, 80, netip.AddrPort{})
	}
	topo.Dir1.Run(t, "ip", "addr", "add", netlab.VIP.String()+"/32", "dev", "eth0")

	dir := t.TempDir()
	l.conf = filepath.Join(dir, "keepalived.conf")
	l.sock = filepath.Join(dir, "xvsd.sock")
	writeConf(t, l.conf, drConf(2))
	l.xvsd = topo.Dir1.Start(t, xvsdBin, "-n", "-l", "-f", l.conf, "--control", l.sock, "--metrics", "127.0.0.1:9105")
	l.admin = func(args ...string) (string, error) {
		return topo.Dir1.Output(xvsadmBin, append([]string{"--control", l.sock}, args...)...)
	}
	// Ready when both real servers are listed and a request gets through.
	waitFor(t, 20*time.Second, "xvsd to serve the VIP", func() bool {
		out, err := l.admin("-Ln")
		if err != nil || !strings.Contains(out, "198.18.0.11:80") || !strings.Contains(out, "198.18.0.12:80") {
			return false
		}
		_, err = labserver.Get(topo.Client, vipHTTP, time.Second)
		return err == nil
	}, l.xvsd)
	return l
}

func writeConf(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool, p *netlab.Proc) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; xvsd log:\n%s", d, what, p.Log())
		}
		select {
		case <-p.Done():
			t.Fatalf("xvsd exited while waiting for %s: %v\n%s", what, p.Err(), p.Log())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestXVSDAdmin: xvsd serves a tutorial config; xvsadm adds a third real
// server that then takes traffic, drains it with weight 0, and deletes it.
func TestXVSDAdmin(t *testing.T) {
	l := startLab(t)
	client := l.topo.Client

	got := labserver.Tally(client, vipHTTP, 90, 2*time.Second)
	if got[""] != 0 || got["rs1"] != 30 || got["rs2"] != 60 {
		t.Fatalf("90 requests with wrr 1:2 went %v, want rs1 30, rs2 60, no failures", got)
	}

	// Only a tunnel may cross address families, as with IPVS.
	if out, err := l.admin("-a", "-t", "198.18.0.100:80", "-r", "[2001:db8::13]:80", "-g", "-w", "1"); err == nil ||
		!strings.Contains(out, "Different address family is allowed only for tunneling servers") {
		t.Errorf("xvsadm -a of an IPv6 real server with -g to an IPv4 service: %v %q, want refused", err, out)
	}
	if out, err := l.admin("-a", "-t", "198.18.0.100:80", "-r", "198.18.0.13:80", "-g", "-w", "1"); err != nil {
		t.Fatalf("xvsadm -a: %v\n%s", err, out)
	}
	out, _ := l.admin("-Ln")
	if !regexp.MustCompile(`-> 198\.18\.0\.13:80\s+Route\s+1\s`).MatchString(out) {
		t.Fatalf("xvsadm -Ln does not list rs3 with weight 1:\n%s", out)
	}
	// The new server's MAC is resolved off the packet path; give it a
	// moment to take traffic.
	waitFor(t, 10*time.Second, "rs3 to take new connections", func() bool {
		return labserver.Tally(client, vipHTTP, 8, 2*time.Second)["rs3"] > 0
	}, l.xvsd)

	// Drain: weight 0 takes no new connections.
	if out, err := l.admin("-e", "-t", "198.18.0.100:80", "-r", "198.18.0.13:80", "-g", "-w", "0"); err != nil {
		t.Fatalf("xvsadm -e -w 0: %v\n%s", err, out)
	}
	before := l.rs["rs3"].Hits()
	got = labserver.Tally(client, vipHTTP, 40, 2*time.Second)
	if got[""] != 0 || got["rs3"] != 0 || l.rs["rs3"].Hits() != before {
		t.Fatalf("after -w 0: %v; rs3 must take no new connections and nothing may fail", got)
	}

	if out, err := l.admin("-d", "-t", "198.18.0.100:80", "-r", "198.18.0.13:80"); err != nil {
		t.Fatalf("xvsadm -d: %v\n%s", err, out)
	}
	if out, _ := l.admin("-Ln"); strings.Contains(out, "198.18.0.13") {
		t.Fatalf("rs3 still listed after -d:\n%s", out)
	}
	// A bad admin command gets ipvsadm's error and a non-zero exit.
	if out, err := l.admin("-d", "-t", "198.18.0.100:80", "-r", "198.18.0.13:80"); err == nil || !strings.Contains(out, "No such destination") {
		t.Fatalf("deleting a missing real server: err %v, output %q; want ipvsadm's \"No such destination\"", err, out)
	}

	// A crashed xvsd leaves no XDP program behind: it was attached through
	// a BPF link, which the kernel releases with the process.
	if out := l.topo.Dir1.Run(t, "ip", "link", "show", "eth0"); !strings.Contains(out, "xdp") {
		t.Fatalf("no XDP program on dir1's eth0 while xvsd runs:\n%s", out)
	}
	l.xvsd.Kill()
	if out := l.topo.Dir1.Run(t, "ip", "link", "show", "eth0"); strings.Contains(out, "xdp") {
		t.Fatalf("XDP program left on eth0 after xvsd was killed:\n%s", out)
	}

	// The real servers saw the client's own address (DR keeps it).
	for name, s := range l.rs {
		for peer := range s.Peers() {
			if peer != netlab.ClientAddr {
				t.Errorf("%s saw peer %s, want only the client %s", name, peer, netlab.ClientAddr)
			}
		}
	}
}

// TestXVSDReload: SIGHUP with a broken file keeps the running config and
// logs file:line; SIGHUP with a changed weight applies it without breaking
// an established connection.
func TestXVSDReload(t *testing.T) {
	l := startLab(t)
	client := l.topo.Client

	kept, err := labserver.Dial(client, vipHTTP, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	first, err := kept.Get(2 * time.Second)
	if err != nil {
		t.Fatalf("request on the kept connection: %v", err)
	}

	// Broken file: refused with file:line, old config still serving.
	writeConf(t, l.conf, "virtual_server 198.18.0.100 80 {\n    lb_algo nosuch\n    real_server 198.18.0.11 80 {\n        weight -4\n    }\n}\n")
	if err := l.xvsd.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	lineRE := regexp.MustCompile(regexp.QuoteMeta(l.conf) + `:\d+: `)
	waitFor(t, 5*time.Second, "the reload to be refused with file:line", func() bool {
		return strings.Contains(l.xvsd.Log(), "reload refused") && lineRE.MatchString(l.xvsd.Log())
	}, l.xvsd)
	got := labserver.Tally(client, vipHTTP, 30, 2*time.Second)
	if got[""] != 0 || got["rs1"] != 10 || got["rs2"] != 20 {
		t.Fatalf("after a refused reload: %v, want the old wrr 1:2 split (10/20) and no failures", got)
	}

	// Good file with rs2's weight 2 → 1.
	writeConf(t, l.conf, drConf(1))
	if err := l.xvsd.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "rs2's weight to become 1", func() bool {
		out, _ := l.admin("-Ln")
		return regexp.MustCompile(`-> 198\.18\.0\.12:80\s+Route\s+1\s`).MatchString(out)
	}, l.xvsd)
	again, err := kept.Get(2 * time.Second)
	if err != nil {
		t.Fatalf("the established connection broke across the reload: %v", err)
	}
	if again != first {
		t.Fatalf("the established connection moved from %s to %s", first, again)
	}
	got = labserver.Tally(client, vipHTTP, 30, 2*time.Second)
	if got[""] != 0 || got["rs1"] != 15 || got["rs2"] != 15 {
		t.Fatalf("after the reload: %v, want 15/15 with weights 1:1", got)
	}
}

// TestXVSDMetrics: the Prometheus endpoint answers and its counters move
// with traffic.
func TestXVSDMetrics(t *testing.T) {
	l := startLab(t)
	scrape := func() map[string]float64 {
		t.Helper()
		// curl runs inside dir1's namespace, where the endpoint listens.
		body, err := l.topo.Dir1.Output("curl", "-sf", "--max-time", "3", "http://127.0.0.1:9105/metrics")
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		m := map[string]float64{}
		for line := range strings.Lines(body) {
			if strings.HasPrefix(line, "#") {
				continue
			}
			f := strings.Fields(line)
			if len(f) == 2 {
				v, _ := strconv.ParseFloat(f[1], 64)
				m[f[0]] = v
			}
		}
		return m
	}
	const svcPkts = `xvs_service_packets_total{port="80",protocol="tcp",vip="198.18.0.100"}`
	const rs1Conns = `xvs_real_server_connections_total{port="80",protocol="tcp",server="198.18.0.11:80",vip="198.18.0.100"}`
	before := scrape()
	if _, ok := before[svcPkts]; !ok {
		t.Fatalf("metrics lack %s", svcPkts)
	}
	got := labserver.Tally(l.topo.Client, vipHTTP, 30, 2*time.Second)
	if got[""] != 0 {
		t.Fatalf("requests failed: %v", got)
	}
	after := scrape()
	if after[svcPkts] < before[svcPkts]+30*3 {
		t.Errorf("%s went %v -> %v, want at least 90 more packets for 30 requests", svcPkts, before[svcPkts], after[svcPkts])
	}
	if after[rs1Conns]-before[rs1Conns] != 10 {
		t.Errorf("%s went %v -> %v, want +10 (wrr 1:2 over 30)", rs1Conns, before[rs1Conns], after[rs1Conns])
	}
	if after[`xvs_xdp_packets_total{verdict="redirected"}`] == 0 {
		t.Errorf("no redirected packets in the XDP counters")
	}
}
