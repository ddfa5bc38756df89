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

// natLab is TestXVSDNAT's topology: the client and the director's eth0 on
// 198.18.0.0/24, the director's eth1 and the NAT real servers rs1 and rs2
// (web on 8080, the director as gateway) on 198.19.0.0/24, kernel
// forwarding off so only xvs carries the traffic; with dr, also rs3, a DR
// real server on the client's network (web on 80, the VIP on lo). It
// starts xvsd with conf.
type natLab struct {
	client, dir *netlab.Host
	web         map[string]*labserver.Server
	xvsd        *netlab.Proc
	admin       func(args ...string) string
}

func startNATLab(t *testing.T, conf string, dr bool) *natLab {
	lab := netlab.New(t)
	front, back := lab.Bridge("br0"), lab.Bridge("br1")
	l := &natLab{client: lab.Host("client"), dir: lab.Host("dir1"), web: map[string]*labserver.Server{}}
	lab.Connect(l.client, front, "eth0", "198.18.0.10/24")
	lab.Connect(l.dir, front, "eth0", "198.18.0.2/24")
	lab.Connect(l.dir, back, "eth1", "198.19.0.1/24")
	l.client.Run(t, "ethtool", "-K", "eth0", "tx", "off")
	for _, name := range []string{"rs1", "rs2"} {
		h := lab.Host(name)
		addr := map[string]string{"rs1": "198.19.0.11/24", "rs2": "198.19.0.12/24"}[name]
		lab.Connect(h, back, "eth0", addr)
		h.Run(t, "ethtool", "-K", "eth0", "tx", "off")
		h.Run(t, "ip", "route", "add", "default", "via", "198.19.0.1")
		l.web[name] = labserver.Start(t, h, name, 8080, netip.AddrPort{})
	}
	if dr {
		h := lab.Host("rs3")
		lab.Connect(h, front, "eth0", "198.18.0.13/24")
		h.Run(t, "ethtool", "-K", "eth0", "tx", "off")
		netlab.RealServerDR(t, h, netlab.VIP)
		l.web["rs3"] = labserver.Start(t, h, "rs3", 80, netip.AddrPort{})
	}
	l.dir.Run(t, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
	l.dir.Run(t, "ip", "addr", "add", netlab.VIP.String()+"/32", "dev", "eth0")

	tmp := t.TempDir()
	path, sock := filepath.Join(tmp, "keepalived.conf"), filepath.Join(tmp, "xvsd.sock")
	writeConf(t, path, conf)
	l.xvsd = l.dir.Start(t, xvsdBin, "-n", "-l", "-f", path, "--control", sock)
	l.admin = func(args ...string) string {
		out, _ := l.dir.Output(xvsadmBin, append([]string{"--control", sock}, args...)...)
		return out
	}
	return l
}

// TestXVSDNAT: xvsd in NAT mode, the real servers' gateway on a second
// network, VIP:80 → RIP:8080, kernel forwarding off so only xvs carries the
// traffic. Requests balance, the real servers see the client, and the
// director's own health checks keep working (their replies come from the
// real servers' service ports, which NAT replies also come from).
func TestXVSDNAT(t *testing.T) {
	l := startNATLab(t, natConf, false)
	client, p, admin, web := l.client, l.xvsd, l.admin, l.web
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

// mixedConf is natConf with its second real server replaced by a DR one
// on the client's network.
var mixedConf = strings.Replace(natConf, "real_server 198.19.0.12 8080 {\n", "real_server 198.18.0.13 80 {\n        lvs_method DR\n", 1)

// TestXVSDMixedMethods: one virtual server with a NAT real server and,
// through its real_server block's lvs_method, a DR one, as IPVS allows.
// Each is forwarded its own way, or no request would succeed: rs1 has no
// VIP to take a DR packet, and rs3 answering a NAT packet from its own
// address would be refused by the client. rr gives each half of the
// requests, and both see the client's address.
func TestXVSDMixedMethods(t *testing.T) {
	l := startNATLab(t, mixedConf, true)
	route := regexp.MustCompile(`-> 198\.18\.0\.13:80\s+Route\s+1\s`)
	masq := regexp.MustCompile(`-> 198\.19\.0\.11:8080\s+Masq\s+1\s`)
	waitFor(t, 20*time.Second, "xvsd to list both real servers", func() bool {
		out := l.admin("-Ln")
		_, err := labserver.Get(l.client, vipHTTP, time.Second)
		return err == nil && route.MatchString(out) && masq.MatchString(out)
	}, l.xvsd)
	got := labserver.Tally(l.client, vipHTTP, 100, 2*time.Second)
	if got[""] != 0 || got["rs1"] != 50 || got["rs3"] != 50 {
		t.Fatalf("100 requests went %v, want 50 to the NAT rs1 and 50 to the DR rs3 with rr, no failures\n%s", got, l.admin("-Ln"))
	}
	for _, name := range []string{"rs1", "rs3"} {
		if l.web[name].Peers()[netlab.ClientAddr] == 0 {
			t.Errorf("%s never saw the client's own address", name)
		}
	}
}
