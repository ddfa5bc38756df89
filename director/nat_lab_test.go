package director_test

import (
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xvs-lb/xvs/internal/labserver"
	"github.com/xvs-lb/xvs/internal/netlab"
)

const natConf = `virtual_server 198.18.0.100 80 {
    delay_loop 1
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 198.19.0.11 8080 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
        }
    }
    real_server 198.19.0.12 8080 {
        weight 1
        TCP_CHECK {
            connect_timeout 1
        }
    }
}
`

// TestXVSDNAT: xvsd in NAT mode, the real servers' gateway on a second
// network, VIP:80 → RIP:8080, kernel forwarding off so only xvs carries the
// traffic. Requests balance, the real servers see the client, and the
// director's own health checks keep working (their replies come from the
// real servers' service ports, which NAT replies also come from).
func TestXVSDNAT(t *testing.T) {
	lab := netlab.New(t)
	front, back := lab.Bridge("br0"), lab.Bridge("br1")
	client, dir := lab.Host("client"), lab.Host("dir1")
	rs1, rs2 := lab.Host("rs1"), lab.Host("rs2")
	lab.Connect(client, front, "eth0", "198.18.0.10/24")
	lab.Connect(dir, front, "eth0", "198.18.0.2/24")
	lab.Connect(dir, back, "eth1", "198.19.0.1/24")
	client.Run(t, "ethtool", "-K", "eth0", "tx", "off")
	web := map[string]*labserver.Server{}
	for name, h := range map[string]*netlab.Host{"rs1": rs1, "rs2": rs2} {
		addr := map[string]string{"rs1": "198.19.0.11/24", "rs2": "198.19.0.12/24"}[name]
		lab.Connect(h, back, "eth0", addr)
		h.Run(t, "ethtool", "-K", "eth0", "tx", "off")
		h.Run(t, "ip", "route", "add", "default", "via", "198.19.0.1")
		web[name] = labserver.Start(t, h, name, 8080, netip.AddrPort{})
	}
	dir.Run(t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
	dir.Run(t, "ip", "addr", "add", netlab.VIP.String()+"/32", "dev", "eth0")

	tmp := t.TempDir()
	conf, sock := filepath.Join(tmp, "keepalived.conf"), filepath.Join(tmp, "xvsd.sock")
	writeConf(t, conf, natConf)
	p := dir.Start(t, xvsdBin, "-n", "-l", "-f", conf, "--control", sock)
	admin := func(args ...string) string {
		out, _ := dir.Output(xvsadmBin, append([]string{"--control", sock}, args...)...)
		return out
	}
	masq := regexp.MustCompile(`-> 198\.19\.0\.1[12]:8080\s+Masq\s+1\s`)
	waitFor(t, 20*time.Second, "xvsd to serve the VIP in NAT", func() bool {
		_, err := labserver.Get(client, vipHTTP, time.Second)
		return err == nil && len(masq.FindAllString(admin("-Ln"), -1)) == 2
	}, p)

	// Twice keepalived's detection time (delay_loop + retry ×
	// (connect_timeout + delay_before_retry) = 3 s) later both real servers
	// are still in: their check replies reached the kernel.
	time.Sleep(6 * time.Second)
	// A swallowed reply shows as a flap (removed, then back once the
	// reply path is gone), so the log is the witness, not one listing.
	if out := admin("-Ln"); len(masq.FindAllString(out, -1)) != 2 || strings.Contains(p.Log(), "failed") {
		t.Fatalf("health checks failed for NAT real servers that serve:\n%s\nxvsd log:\n%s", out, p.Log())
	}
	got := labserver.Tally(client, vipHTTP, 100, 2*time.Second)
	if got[""] != 0 || got["rs1"] != 50 || got["rs2"] != 50 {
		t.Fatalf("100 requests through NAT went %v, want 50/50 with rr and no failures", got)
	}
	for name, s := range web {
		for peer := range s.Peers() {
			if peer != netlab.ClientAddr && !strings.HasPrefix(peer.String(), "198.19.0.1") {
				t.Errorf("%s saw peer %s, want the client %s (or the director's checks)", name, peer, netlab.ClientAddr)
			}
		}
		if s.Peers()[netlab.ClientAddr] == 0 {
			t.Errorf("%s never saw the client's own address", name)
		}
	}

	// A failed check still takes a real server out.
	web["rs1"].Close()
	waitFor(t, 10*time.Second, "rs1 to leave after its server stopped", func() bool {
		return !strings.Contains(admin("-Ln"), "198.19.0.11:8080")
	}, p)
	if got := labserver.Tally(client, vipHTTP, 20, 2*time.Second); got["rs2"] != 20 {
		t.Fatalf("with rs1 down, 20 requests went %v, want all on rs2", got)
	}
}
