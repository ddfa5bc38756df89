package director_test

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xvs-lb/xvs/internal/labserver"
	"github.com/xvs-lb/xvs/internal/netlab"
)

// healthConf: HTTP_GET every second; a failed check is retried once after
// 1 s, each attempt bounded by connect_timeout 1 s. %s is an extra line for
// the virtual server (inhibit_on_failure).
const healthConf = `global_defs {
   router_id LVS_HEALTH
}
virtual_server 198.18.0.100 80 {
    delay_loop 1
    lb_algo rr
    lb_kind DR
    protocol TCP
    sorry_server 198.18.0.20 80
    %s
    real_server 198.18.0.11 80 {
        weight 1
        HTTP_GET {
            url {
                path /
                status_code 200
            }
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }
    }
    real_server 198.18.0.12 80 {
        weight 1
        HTTP_GET {
            url {
                path /
                status_code 200
            }
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }
    }
}
`

// detectBound is keepalived's detection time for healthConf:
// delay_loop + retry × (connect_timeout + delay_before_retry), plus 1 s.
const detectBound = 1*time.Second + 1*(1*time.Second+1*time.Second) + 1*time.Second

type healthLab struct {
	topo   *netlab.Topology
	xvsd   *netlab.Proc
	admin  func(args ...string) (string, error)
	web    map[string]*labserver.Server
	hosts  map[string]*netlab.Host
	client *netlab.Host
}

func startHealthLab(t *testing.T, extra string) *healthLab {
	topo := netlab.Standard(t)
	sorry := topo.Lab.Host("sorry")
	topo.Lab.Connect(sorry, topo.Bridge, "eth0", "198.18.0.20/24")
	hl := &healthLab{topo: topo, web: map[string]*labserver.Server{}, client: topo.Client,
		hosts: map[string]*netlab.Host{"rs1": topo.RS1, "rs2": topo.RS2, "sorry": sorry}}
	for name, h := range hl.hosts {
		netlab.RealServerDR(t, h, netlab.VIP)
		hl.web[name] = labserver.Start(t, h, name, 80, netip.AddrPort{})
	}
	topo.Dir1.Run(t, "ip", "addr", "add", netlab.VIP.String()+"/32", "dev", "eth0")
	dir := t.TempDir()
	conf, sock := filepath.Join(dir, "keepalived.conf"), filepath.Join(dir, "xvsd.sock")
	writeConf(t, conf, fmt.Sprintf(healthConf, extra))
	hl.xvsd = topo.Dir1.Start(t, xvsdBin, "-n", "-l", "-f", conf, "--control", sock)
	hl.admin = func(args ...string) (string, error) {
		return topo.Dir1.Output(xvsadmBin, append([]string{"--control", sock}, args...)...)
	}
	waitFor(t, 20*time.Second, "both real servers to serve", func() bool {
		got := labserver.Tally(topo.Client, vipHTTP, 4, time.Second)
		return got["rs1"] > 0 && got["rs2"] > 0
	}, hl.xvsd)
	return hl
}

func (hl *healthLab) listing(t *testing.T) string {
	t.Helper()
	out, err := hl.admin("-Ln")
	if err != nil {
		t.Fatalf("xvsadm -Ln: %v\n%s", err, out)
	}
	return out
}

var (
	rs1Listed   = regexp.MustCompile(`-> 198\.18\.0\.11:80\s+Route\s+1\s`)
	rs1Weight0  = regexp.MustCompile(`-> 198\.18\.0\.11:80\s+Route\s+0\s`)
	sorryListed = regexp.MustCompile(`-> 198\.18\.0\.20:80\s+Route`)
)

// TestHealthRemoveAndSorry: rs1's web server stops → rs1 leaves the table
// within keepalived's detection time and every request lands on rs2; it
// comes back when the server does; with both down the sorry server serves.
func TestHealthRemoveAndSorry(t *testing.T) {
	hl := startHealthLab(t, "")

	hl.web["rs1"].Close()
	stopped := time.Now()
	waitFor(t, detectBound+2*time.Second, "rs1 to leave the table", func() bool {
		return !strings.Contains(hl.listing(t), "198.18.0.11:80")
	}, hl.xvsd)
	if took := time.Since(stopped); took > detectBound {
		t.Errorf("rs1 removed after %v, want within delay_loop + retry×(connect_timeout+delay_before_retry) + 1 s = %v", took, detectBound)
	} else {
		t.Logf("rs1 removed %v after its web server stopped (bound %v)", took.Round(10*time.Millisecond), detectBound)
	}
	if got := labserver.Tally(hl.client, vipHTTP, 200, 2*time.Second); got["rs2"] != 200 {
		t.Fatalf("with rs1 down, 200 requests went %v, want all 200 on rs2", got)
	}

	hl.web["rs1"] = labserver.Start(t, hl.hosts["rs1"], "rs1", 80, netip.AddrPort{})
	waitFor(t, detectBound+2*time.Second, "rs1 to come back", func() bool {
		return rs1Listed.MatchString(hl.listing(t))
	}, hl.xvsd)
	waitFor(t, 5*time.Second, "rs1 to serve again", func() bool {
		return labserver.Tally(hl.client, vipHTTP, 4, 2*time.Second)["rs1"] > 0
	}, hl.xvsd)

	hl.web["rs1"].Close()
	hl.web["rs2"].Close()
	waitFor(t, detectBound+3*time.Second, "the sorry server to take over", func() bool {
		return sorryListed.MatchString(hl.listing(t))
	}, hl.xvsd)
	waitFor(t, 5*time.Second, "the sorry server to serve", func() bool {
		got := labserver.Tally(hl.client, vipHTTP, 10, 2*time.Second)
		return got["sorry"] == 10
	}, hl.xvsd)
}

// TestHealthInhibitOnFailure: with inhibit_on_failure a failed real server
// stays listed with weight 0 and takes no new connections.
func TestHealthInhibitOnFailure(t *testing.T) {
	hl := startHealthLab(t, "inhibit_on_failure")

	hl.web["rs1"].Close()
	waitFor(t, detectBound+2*time.Second, "rs1 to be inhibited (weight 0)", func() bool {
		return rs1Weight0.MatchString(hl.listing(t))
	}, hl.xvsd)
	if got := labserver.Tally(hl.client, vipHTTP, 50, 2*time.Second); got["rs2"] != 50 {
		t.Fatalf("with rs1 inhibited, 50 requests went %v, want all on rs2", got)
	}
	hl.web["rs1"] = labserver.Start(t, hl.hosts["rs1"], "rs1", 80, netip.AddrPort{})
	waitFor(t, detectBound+2*time.Second, "rs1's weight to return to 1", func() bool {
		return rs1Listed.MatchString(hl.listing(t))
	}, hl.xvsd)
}
