package netlab

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestStandardTopology(t *testing.T) {
	topo := Standard(t)
	prefix := topo.Lab.Prefix

	// Real packets cross the bridge: the client reaches every other host.
	for _, dst := range []string{"198.18.0.2", "198.18.0.3", "198.18.0.11", "198.18.0.12"} {
		if out, err := topo.Client.Output("ping", "-c", "1", "-W", "2", dst); err != nil {
			t.Fatalf("ping %s: %v\n%s", dst, err, out)
		}
	}

	// Do runs Go code inside the namespace: a listener there is reachable
	// from the client, and not from the test's own namespace.
	var ln net.Listener
	if err := topo.RS1.Do(func() (err error) {
		ln, err = net.Listen("tcp", "198.18.0.11:8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello from rs1\n"))
			c.Close()
		}
	}()
	out, err := topo.Client.Output("curl", "-s", "--max-time", "3", "telnet://198.18.0.11:8080")
	if err != nil && !strings.Contains(out, "hello") {
		t.Fatalf("client -> rs1 listener: %v %s", err, out)
	}
	if !strings.Contains(out, "hello from rs1") {
		t.Fatalf("client got %q, want the rs1 greeting", out)
	}

	// Start/Stop by PID.
	p := topo.RS2.Start(t, "sleep", "60")
	p.Stop()
	select {
	case <-p.Done():
	case <-time.After(6 * time.Second):
		t.Fatal("process not stopped")
	}

	// Close removes every namespace of the lab.
	topo.Lab.Close()
	list, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(list), prefix) {
		t.Fatalf("namespaces with prefix %s left after Close:\n%s", prefix, list)
	}
}

func TestRealServerDR(t *testing.T) {
	topo := Standard(t)
	RealServerDR(t, topo.RS1, VIP)
	got := strings.TrimSpace(topo.RS1.Run(t, "sysctl", "-n", "net.ipv4.conf.all.arp_ignore"))
	if got != "1" {
		t.Fatalf("arp_ignore = %s, want 1", got)
	}
	if !strings.Contains(topo.RS1.Run(t, "ip", "addr", "show", "dev", "lo"), "198.18.0.100/32") {
		t.Fatal("VIP not on lo")
	}
	// The real server must not answer ARP for the VIP: the client cannot
	// reach it (no director holds the VIP here).
	if _, err := topo.Client.Output("ping", "-c", "1", "-W", "1", VIP.String()); err == nil {
		t.Fatal("rs1 answered for the VIP despite arp_ignore")
	}
}
