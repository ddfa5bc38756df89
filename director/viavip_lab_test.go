package director_test

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xvs-lb/xvs/internal/labserver"
	"github.com/xvs-lb/xvs/internal/netlab"
)

const viaVIPConf = `virtual_server 198.18.0.100 80 {
    delay_loop 1
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server 198.18.0.11 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
            xvs_via_vip
        }
    }
    real_server 198.18.0.12 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
            xvs_via_vip
        }
    }
}
`

// TestDataPathCheck: rs2 runs its web server but lacks the VIP on lo, the
// classic DR misconfiguration. A TCP_CHECK to its own address passes; the
// data-path check (xvs_via_vip) probes VIP:80 through the real server's MAC
// and takes rs2 out, so every request lands on rs1.
func TestDataPathCheck(t *testing.T) {
	topo := netlab.Standard(t)
	netlab.RealServerDR(t, topo.RS1, netlab.VIP)
	for _, kv := range []string{"net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"} {
		topo.RS2.Run(t, "sysctl", "-q", "-w", kv)
	}
	labserver.Start(t, topo.RS1, "rs1", 80, netip.AddrPort{})
	labserver.Start(t, topo.RS2, "rs2", 80, netip.AddrPort{})
	topo.Dir1.Run(t, "ip", "addr", "add", netlab.VIP.String()+"/32", "dev", "eth0")

	// The control: rs2's own address answers on port 80.
	if _, err := labserver.Get(topo.Dir1, netip.AddrPortFrom(netlab.RS2Addr, 80), 2*time.Second); err != nil {
		t.Fatalf("rs2 must serve on its own address for this test to mean anything: %v", err)
	}

	dir := t.TempDir()
	conf, sock := filepath.Join(dir, "keepalived.conf"), filepath.Join(dir, "xvsd.sock")
	writeConf(t, conf, viaVIPConf)
	p := topo.Dir1.Start(t, xvsdBin, "-n", "-l", "-f", conf, "--control", sock)
	admin := func(args ...string) string {
		out, _ := topo.Dir1.Output(xvsadmBin, append([]string{"--control", sock}, args...)...)
		return out
	}
	waitFor(t, 20*time.Second, "rs2 to fail its data-path check and leave", func() bool {
		out := admin("-Ln")
		return strings.Contains(out, "198.18.0.11:80") && !strings.Contains(out, "198.18.0.12:80")
	}, p)
	if got := labserver.Tally(topo.Client, vipHTTP, 40, 2*time.Second); got["rs1"] != 40 {
		t.Fatalf("40 requests went %v, want all on rs1", got)
	}
	if !strings.Contains(p.Log(), "198.18.0.12") {
		t.Errorf("xvsd logged nothing about rs2 going down:\n%s", p.Log())
	}

	// Fix rs2 the way xvs-rs would: the VIP on lo. The check passes and
	// rs2 comes back.
	topo.RS2.Run(t, "ip", "addr", "add", netlab.VIP.String()+"/32", "dev", "lo")
	waitFor(t, 15*time.Second, "rs2 to pass its data-path check", func() bool {
		return strings.Contains(admin("-Ln"), "198.18.0.12:80")
	}, p)
}
