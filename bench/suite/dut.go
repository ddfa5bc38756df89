package suite

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/xvs-lb/xvs/internal/netlab"
)

// The device-under-test seat. xvsd is started as a command in the
// director namespace, pinned to the worker CPU, with a keepalived.conf the
// suite writes: ServiceVIPs × RealsPerService in DR mode. Until the
// command exists (cmd/xvsd, built into bin/), the suite reports the seat as
// not available rather than a number.

// Service table of the device under test: 16 VIPs × 64 real servers.
const (
	ServiceVIPs     = 16
	RealsPerService = 64
)

// VIPs returns n VIPs from 198.18.0.100 up.
func VIPs(n int) []netip.Addr {
	vs := make([]netip.Addr, n)
	for i := range vs {
		vs[i] = netip.AddrFrom4([4]byte{198, 18, 0, byte(100 + i)})
	}
	return vs
}

// KeepalivedConf writes the DUT's service table: every VIP:port over TCP
// and UDP, the given scheduler and forwarding method (DR, TUN, NAT),
// every real server weight 1 and no health checker (a real server without
// checker is always up).
func KeepalivedConf(ifname string, vips []netip.Addr, port uint16, reals []Real, sched, kind string) string {
	var b strings.Builder
	b.WriteString("# written by xvs-bench: the device under test's service table\n")
	fmt.Fprintf(&b, "global_defs {\n    xvs_interface %s\n}\n", ifname)
	for _, proto := range []string{"TCP", "UDP"} {
		for _, v := range vips {
			fmt.Fprintf(&b, "virtual_server %s %d {\n    lb_algo %s\n    lb_kind %s\n    protocol %s\n", v, port, sched, kind, proto)
			for _, r := range reals {
				fmt.Fprintf(&b, "    real_server %s %d {\n        weight 1\n    }\n", r.Addr, port)
			}
			b.WriteString("}\n")
		}
	}
	return b.String()
}

// CommandDUT runs a command as the forwarder. In Args, {if} becomes the
// director interface, {conf} the written keepalived.conf, {cpu} the
// worker CPU and {metrics} the metrics listen address.
type CommandDUT struct {
	Label string
	Args  []string
	Sched string // scheduler written into the config
	Kind  string // forwarding method written into the config; default DR
	// Metrics: the command serves xvsd's Prometheus metrics on {metrics}
	// (inside the director namespace); Stats reads its counters there.
	Metrics bool

	proc *netlab.Proc
	dir  *netlab.Host
}

// metricsAddr is where a DUT serves metrics, inside its own namespace.
const metricsAddr = "127.0.0.1:9105"

// Name implements Forwarder.
func (c *CommandDUT) Name() string { return c.Label }

// FindXVSD returns the xvsd binary to run as device under test, or
// ErrNotAvailable: bin/xvsd of the repository (make build), then $PATH.
func FindXVSD() (string, error) {
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				p := filepath.Join(d, "bin", "xvsd")
				if st, err := os.Stat(p); err == nil && !st.IsDir() {
					return p, nil
				}
				break
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if p, err := exec.LookPath("xvsd"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("xvsd: %w yet (no bin/xvsd: cmd/xvsd is not built)", ErrNotAvailable)
}

// XVSDDR is the DUT seat for xvsd in DR mode with scheduler sched, or an
// error wrapping ErrNotAvailable. xvsd runs virtual servers only (-C, no
// VRRP), without control socket, pinned whole to the worker CPU.
func XVSDDR(sched string) (*CommandDUT, error) { return XVSD("DR", sched) }

// XVSD is the DUT seat for xvsd with forwarding method kind (DR, TUN,
// NAT). The packet lab is one wire, so every method's output reaches the
// sink by the real server's MAC: TUN adds an IPIP header to 198.18.1.x,
// NAT rewrites the destination to it (NAT's replies, the director's
// second leg, are not exercised: the sink answers nothing).
func XVSD(kind, sched string) (*CommandDUT, error) {
	p, err := FindXVSD()
	if err != nil {
		return nil, err
	}
	return &CommandDUT{Label: "xvsd-" + strings.ToLower(kind) + " " + sched, Sched: sched, Kind: kind,
		Args:    []string{p, "-n", "-l", "-C", "--control", "", "-f", "{conf}", "--metrics", "{metrics}"},
		Metrics: true}, nil
}

// Start implements Forwarder: it waits up to 10 s for an XDP program on
// the interface.
func (c *CommandDUT) Start(env Env) error {
	dir := env.TB.TempDir()
	conf := filepath.Join(dir, "keepalived.conf")
	kind := c.Kind
	if kind == "" {
		kind = "DR"
	}
	if err := os.WriteFile(conf, []byte(KeepalivedConf(env.Ifname, env.VIPs, env.Port, env.Reals, c.Sched, kind)), 0o644); err != nil {
		return fmt.Errorf("%s: write config: %w", c.Label, err)
	}
	cpus := env.WorkerCPUs
	if cpus == "" {
		cpus = strconv.Itoa(env.WorkerCPU)
	}
	args := []string{"-c", cpus}
	for _, a := range c.Args {
		a = strings.ReplaceAll(a, "{if}", env.Ifname)
		a = strings.ReplaceAll(a, "{conf}", conf)
		a = strings.ReplaceAll(a, "{cpu}", strconv.Itoa(env.WorkerCPU))
		a = strings.ReplaceAll(a, "{metrics}", metricsAddr)
		args = append(args, a)
	}
	c.dir = env.Dir
	c.proc = env.Dir.Start(env.TB, "taskset", args...)
	deadline := time.Now().Add(20 * time.Second)
	for ; time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		select {
		case <-c.proc.Done():
			return fmt.Errorf("%s exited: %v\n%s", c.Label, c.proc.Err(), c.proc.Log())
		default:
		}
		if out, err := env.Dir.Output("ip", "link", "show", "dev", env.Ifname); err == nil && strings.Contains(out, "xdp") {
			if !c.Metrics {
				time.Sleep(time.Second) // let it resolve the real servers' MACs
				return nil
			}
			// Ready when every real server of every service is up (MAC
			// known): earlier, new flows would all go to the first few.
			want := 2 * len(env.VIPs) * len(env.Reals)
			for time.Now().Before(deadline) {
				out, err := c.scrape()
				if err == nil && strings.Count(out, "\nxvs_real_server_up{") >= want {
					up := 0
					for line := range strings.Lines(out) {
						if strings.HasPrefix(line, "xvs_real_server_up{") && strings.HasSuffix(strings.TrimSpace(line), " 1") {
							up++
						}
					}
					if up >= want {
						return nil
					}
				}
				time.Sleep(200 * time.Millisecond)
			}
			c.proc.Stop()
			return fmt.Errorf("%s: not all %d real servers up after 20 s", c.Label, want)
		}
	}
	c.proc.Stop()
	return fmt.Errorf("%s: no XDP program on %s after 20 s\n%s", c.Label, env.Ifname, c.proc.Log())
}

// Stats implements Forwarder: xvsd's counters from its metrics endpoint
// (AF_XDP RX/TX, the dataplane's drops by reason, the XDP program's
// verdicts other than redirected). Without metrics, only the kernel
// counters account for frames.
func (c *CommandDUT) Stats() (FwdStats, error) {
	st := FwdStats{Drops: map[string]uint64{}}
	if !c.Metrics || c.dir == nil {
		return st, nil
	}
	out, err := c.scrape()
	if err != nil {
		return st, err
	}
	return ParseXVSDMetrics(out), nil
}

// scrape reads the metrics page; the forwarder shares its CPU with the
// traffic, so it may answer slowly.
func (c *CommandDUT) scrape() (string, error) {
	var err error
	for range 3 {
		var out string
		if out, err = c.dir.Output("curl", "-s", "--max-time", "10", "http://"+metricsAddr+"/metrics"); err == nil {
			return out, nil
		}
	}
	return "", fmt.Errorf("%s: metrics: %w", c.Label, err)
}

var labelRE = regexp.MustCompile(`(reason|verdict)="([^"]*)"`)

// ParseXVSDMetrics sums xvsd's dataplane counters over interfaces and
// queues.
func ParseXVSDMetrics(text string) FwdStats {
	st := FwdStats{Drops: map[string]uint64{}}
	for line := range strings.Lines(text) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		n := uint64(v)
		name, _, _ := strings.Cut(f[0], "{")
		label := ""
		if m := labelRE.FindStringSubmatch(f[0]); m != nil {
			label = m[2]
		}
		switch name {
		case "xvs_dataplane_rx_packets_total":
			st.RX += n
		case "xvs_dataplane_tx_packets_total":
			st.TX += n
		case "xvs_dataplane_drops_total":
			st.Drops["xvsd drop "+label] += n
		case "xvs_xdp_packets_total":
			if label != "redirected" {
				st.Drops["xvsd xdp "+label] += n
			}
		}
	}
	return st
}

// Stop implements Forwarder.
func (c *CommandDUT) Stop() error {
	if c.proc != nil {
		c.proc.Stop()
	}
	return nil
}
