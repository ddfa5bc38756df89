package suite

import (
	"context"
	"strings"
	"testing"

	"github.com/xvs-lb/xvs/bench/benchxdp"
	"github.com/xvs-lb/xvs/bench/trace"
	"github.com/xvs-lb/xvs/internal/netlab"
)

// TestReplayForwardSink replays a small trace through each baseline into
// the sink at a gentle rate and checks that every frame is accounted for
// and that the sink saw exactly the spread FlowHash predicts.
func TestReplayForwardSink(t *testing.T) {
	netlab.Require(t)
	for _, f := range []Forwarder{&XDPFwd{}, &XSKNull{}, &XSKAsavie{}} {
		t.Run(f.Name(), func(t *testing.T) { testReplayForwardSink(t, f) })
	}
}

func testReplayForwardSink(t *testing.T, f Forwarder) {
	const nreals = 8
	pl, err := NewPacketLab(t, nreals, DefaultPlacement())
	if err != nil {
		t.Fatal(err)
	}
	tr, err := trace.Generate(trace.Config{Packets: 512, Flows: 64, Proto: "mix", VIPs: VIPs(2)})
	if err != nil {
		t.Fatal(err)
	}
	r, err := benchxdp.LoadReplayer(tr.Frames)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := pl.Start(f, pl.Env(t, VIPs(2), 80)); err != nil {
		t.Fatal(err)
	}
	defer f.Stop()

	// Two full passes over the trace, paced well below any forwarder's
	// capacity so that nothing is dropped.
	const count = 2 * 512
	s, err := pl.Measure(context.Background(), r, f, PacketOptions{Count: count, Rate: 20000})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sent %d forwarded %d other %d drops %v unaccounted %d", s.Sent, s.Forwarded, s.Other, s.Drops, s.Unaccounted)
	if s.Sent != count {
		t.Fatalf("generator emitted %d frames, want %d", s.Sent, count)
	}
	var dropped uint64
	for _, v := range s.Drops {
		dropped += v
	}
	if s.Sent != s.Forwarded+dropped {
		t.Errorf("sent %d != forwarded %d + counted drops %d (unaccounted %d)", s.Sent, s.Forwarded, dropped, s.Unaccounted)
	}
	// The generator's own veth may drop a few frames when CI loads the
	// machine (counted as "gen ..." drops); the forwarder must have seen
	// exactly what left the generator, and lost nothing itself.
	var genDropped uint64
	for k, v := range s.Drops {
		if strings.HasPrefix(k, "gen ") {
			genDropped += v
		}
	}
	if s.Fwd.RX != s.Sent-genDropped || s.Fwd.TX != s.Sent-genDropped {
		t.Errorf("%s saw rx %d tx %d, want both %d (sent %d − %d dropped at the generator)",
			f.Name(), s.Fwd.RX, s.Fwd.TX, s.Sent-genDropped, s.Sent, genDropped)
	}
	if dropped != genDropped {
		t.Fatalf("counted drops %v at 20 kpps beyond the generator's own", s.Drops)
	}
	// The generator cycles through the trace from frame 0: the first
	// Sent frames, repeated, are what the sink must have seen.
	want := map[[6]byte]uint64{}
	for i := range s.Sent {
		h, ok := benchxdp.FrameHash(tr.Frames[i%uint64(len(tr.Frames))])
		if !ok {
			t.Fatalf("frame %d: not TCP/UDP over IPv4", i)
		}
		want[[6]byte(pl.Reals[h%nreals].MAC)]++
	}
	// Which frames the generator dropped is unknown, so with such drops
	// each real server may fall short of its share by at most that many.
	var sunk uint64
	for mac, w := range want {
		got := s.ByMAC[mac]
		sunk += got
		if got > w || got+genDropped < w {
			t.Errorf("sink counted %d frames to %x, want %d (− at most %d dropped at the generator)", got, mac, w, genDropped)
		}
	}
	if sunk != s.Forwarded {
		t.Errorf("sink counted %d frames in all, forwarded %d", sunk, s.Forwarded)
	}
	if len(s.ByMAC) != len(want) {
		t.Errorf("sink saw %d MACs, want %d: %v", len(s.ByMAC), len(want), s.ByMAC)
	}
}
