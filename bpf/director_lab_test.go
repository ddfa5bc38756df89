package bpf

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/asavie/xdp"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/xvs-lb/xvs/internal/netlab"
)

// TestDirectorLab attaches the director program to a director's veth in the
// standard topology and shows with real packets that VIP traffic reaches an
// AF_XDP socket on the queue, while ping and ARP keep working.
func TestDirectorLab(t *testing.T) {
	topo := netlab.Standard(t)
	dir := topo.Dir1
	// The director holds the VIP, as a VRRP master does, so it answers
	// ARP and ping for it.
	dir.Run(t, "ip", "addr", "add", netlab.VIP.String()+"/32", "dev", "eth0")

	d, err := LoadDirector()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.SetServices([]ServiceKey{{Addr: netlab.VIP, Proto: 17, Port: 5353}, {Addr: netlab.VIP, Proto: 6, Port: 80}}); err != nil {
		t.Fatal(err)
	}

	var sock *xdp.Socket
	err = dir.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		lnk, err := d.Attach(ifi.Index)
		if err != nil {
			return err
		}
		t.Cleanup(func() { lnk.Close() })
		sock, err = xdp.NewSocket(ifi.Index, 0, nil)
		if err != nil {
			return fmt.Errorf("AF_XDP socket: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	if err := d.RegisterSocket(0, sock.FD()); err != nil {
		t.Fatal(err)
	}
	sock.Fill(sock.GetDescs(sock.NumFreeFillSlots()))

	// The program is attached through a BPF link in driver mode.
	if out := dir.Run(t, "ip", "link", "show", "eth0"); !strings.Contains(out, "xdp ") && !strings.Contains(out, "xdp/id") {
		t.Fatalf("no native XDP program on eth0:\n%s", out)
	}

	// Traffic the kernel keeps: ping to the director and to the VIP (ARP
	// resolves the VIP on the way).
	for _, dst := range []string{netlab.Dir1Addr.String(), netlab.VIP.String()} {
		if out, err := topo.Client.Output("ping", "-c", "2", "-i", "0.2", "-W", "2", dst); err != nil {
			t.Fatalf("ping %s with the program attached: %v\n%s", dst, err, out)
		}
	}
	if out := topo.Client.Run(t, "ip", "neigh", "show", netlab.VIP.String()); !strings.Contains(out, topo.Links["dir1"].MAC.String()) {
		t.Fatalf("client's ARP entry for the VIP is not the director's MAC %s: %q", topo.Links["dir1"].MAC, out)
	}

	// VIP traffic goes to the socket: UDP datagrams and TCP SYNs.
	const n = 5
	err = topo.Client.Do(func() error {
		c, err := net.Dial("udp", netlab.VIP.String()+":5353")
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range n {
			if _, err := fmt.Fprintf(c, "probe-%d", i); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = topo.Client.Output("curl", "-s", "--max-time", "1", "http://"+netlab.VIP.String()+"/")

	udpSeen, synSeen := 0, 0
	deadline := time.Now().Add(5 * time.Second)
	for (udpSeen < n || synSeen == 0) && time.Now().Before(deadline) {
		if _, _, err := sock.Poll(200); err != nil {
			t.Fatal(err)
		}
		descs := sock.Receive(sock.NumReceived())
		for _, desc := range descs {
			p := gopacket.NewPacket(sock.GetFrame(desc), layers.LayerTypeEthernet, gopacket.Default)
			ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if ip == nil || !ip.DstIP.Equal(netlab.VIP.AsSlice()) || !ip.SrcIP.Equal(netlab.ClientAddr.AsSlice()) {
				t.Errorf("socket got a packet that is not client->VIP: %v", p)
				continue
			}
			if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && u.DstPort == 5353 && strings.HasPrefix(string(u.Payload), "probe-") {
				udpSeen++
			}
			if tc, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && tc.DstPort == 80 && tc.SYN {
				synSeen++
			}
		}
		sock.Fill(descs)
	}
	if udpSeen != n {
		t.Errorf("socket received %d of %d UDP datagrams to the VIP", udpSeen, n)
	}
	if synSeen == 0 {
		t.Errorf("socket received no TCP SYN to VIP:80")
	}
	c, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.Redirected < uint64(n+1) || c.Passed == 0 {
		t.Errorf("counters %+v: want >= %d redirected and some passed (ping, ARP)", c, n+1)
	}
	t.Logf("director counters: %+v", c)
}
