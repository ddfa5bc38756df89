package dataplane

import (
	"testing"

	"github.com/asavie/xdp"
	"github.com/vishvananda/netlink"

	"github.com/xvs-lb/xvs/internal/netlab"
)

// BenchmarkFrameBookkeeping measures why xsk.go replaces asavie/xdp's frame
// bookkeeping: finding 64 free frames per batch with a real asavie socket
// (4096 frames, 2048 of them lent to the fill ring, the steady state of a
// receiving worker) against xvs's free stack.
func BenchmarkFrameBookkeeping(b *testing.B) {
	netlab.Require(b)
	lab := netlab.New(b)
	h := lab.Host("bk")
	lab.Connect(h, lab.Bridge("br0"), "eth0", "198.18.0.50/24")
	var sock *xdp.Socket
	err := h.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		sock, err = xdp.NewSocket(l.Attrs().Index, 0, &xdp.SocketOptions{
			NumFrames: 4096, FrameSize: 2048, FillRingNumDescs: 2048,
			CompletionRingNumDescs: 2048, RxRingNumDescs: 2048, TxRingNumDescs: 2048,
		})
		return err
	})
	if err != nil {
		b.Fatalf("asavie socket: %v", err)
	}
	defer sock.Close()
	sock.Fill(sock.GetDescs(2048))
	b.Run("asavie-GetDescs64", func(b *testing.B) {
		b.ReportAllocs()
		cpuClock(b)
		for b.Loop() {
			if len(sock.GetDescs(64)) != 64 {
				b.Fatal("short")
			}
		}
	})
	b.Run("xvs-stack64", func(b *testing.B) {
		free := make([]uint64, 0, 4096)
		for i := range 2048 {
			free = append(free, uint64(i)*2048)
		}
		var out [64]uint64
		b.ReportAllocs()
		cpuClock(b)
		for b.Loop() {
			n := copy(out[:], free[len(free)-64:])
			free = free[:len(free)-n]
			free = append(free, out[:n]...)
		}
	})
}
