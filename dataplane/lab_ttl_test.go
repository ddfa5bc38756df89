package dataplane

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xvs-lb/xvs/internal/netlab"
)

// TestLabDRTimeExceeded: a client's datagram to the VIP with TTL 1 is
// answered by the director with ICMP time-exceeded from the VIP, quoting
// it (what traceroute to a VIP shows); with TTL 2 it reaches a real server
// and the echo comes back.
func TestLabDRTimeExceeded(t *testing.T) {
	l := newDRLab(t)
	l.services(t, "rr", 1, 1, 0)
	var icmpFD, udpFD int
	err := l.topo.Client.Do(func() error {
		var err error
		if icmpFD, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP); err != nil {
			return err
		}
		if udpFD, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.Connect(udpFD, &unix.SockaddrInet4{Port: 53, Addr: netlab.VIP.As4()})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(icmpFD)
	defer unix.Close(udpFD)
	tv := unix.Timeval{Sec: 1}
	_ = unix.SetsockoptTimeval(icmpFD, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	_ = unix.SetsockoptTimeval(udpFD, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	sa, err := unix.Getsockname(udpFD)
	if err != nil {
		t.Fatal(err)
	}
	sport := sa.(*unix.SockaddrInet4).Port

	if err := unix.SetsockoptInt(udpFD, unix.IPPROTO_IP, unix.IP_TTL, 1); err != nil {
		t.Fatal(err)
	}
	found := false
	buf := make([]byte, 1500)
	for try := 0; try < 3 && !found; try++ {
		if _, err := unix.Write(udpFD, []byte("ttl one")); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Second)
		for !found && time.Now().Before(deadline) {
			n, _, err := unix.Recvfrom(icmpFD, buf, 0)
			if err != nil {
				break
			}
			ihl := int(buf[0]&0x0F) * 4
			ic := buf[ihl:n]
			if len(ic) < 8+20+8 || ic[0] != 11 || ic[1] != 0 {
				continue
			}
			q := ic[8:]
			qihl := int(q[0]&0x0F) * 4
			if q[9] != ProtoUDP || netip.AddrFrom4([4]byte(q[16:20])) != netlab.VIP ||
				int(q[qihl])<<8|int(q[qihl+1]) != sport {
				continue // someone else's
			}
			found = true
			if Checksum(ic, 0) != 0 {
				t.Error("time-exceeded ICMP checksum does not verify")
			}
			if src := netip.AddrFrom4([4]byte(buf[12:16])); src != netlab.VIP {
				t.Errorf("time-exceeded from %s, want the VIP %s", src, netlab.VIP)
			}
			if q[8] != 1 {
				t.Errorf("the quoted datagram has TTL %d, want 1 as the client sent it", q[8])
			}
		}
	}
	if !found {
		t.Fatal("no ICMP time-exceeded for a TTL-1 datagram to the VIP")
	}

	// TTL 2 crosses the director (one hop) and reaches a real server.
	if err := unix.SetsockoptInt(udpFD, unix.IPPROTO_IP, unix.IP_TTL, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(udpFD, []byte("ttl two")); err != nil {
		t.Fatal(err)
	}
	if n, err := unix.Read(udpFD, buf); err != nil || n == 0 {
		t.Fatalf("no echo for a TTL-2 datagram: %v", err)
	}
	st, err := l.dp.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var te uint64
	for _, q := range st.Queues {
		te += q.TimeExceeded
	}
	if te == 0 {
		t.Error("no time-exceeded answer counted")
	}
}
