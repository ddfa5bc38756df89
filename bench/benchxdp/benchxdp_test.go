package benchxdp

import (
	"bytes"
	"net"
	"os"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xvs-lb/xvs/bench/trace"
)

func requireBPF(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("loading XDP programs needs root (CAP_BPF); run as root")
	}
}

// TestFwdMatchesFrameHash runs xdp-fwd on every frame of a trace and checks
// the rewritten MACs against the Go mirror of its hash: the benchmark's
// spread prediction and xsk-null rely on the two agreeing.
func TestFwdMatchesFrameHash(t *testing.T) {
	requireBPF(t)
	dir := net.HardwareAddr{0x02, 0, 0, 0, 0, 0xd1}
	var reals []net.HardwareAddr
	for i := range 7 {
		reals = append(reals, net.HardwareAddr{0x02, 0, 0, 0, 1, byte(i)})
	}
	f, err := LoadFwd(dir, reals)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr, err := trace.Generate(trace.Config{Packets: 300, Flows: 100, Proto: "mix"})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 2048)
	for i, fr := range tr.Frames {
		ret, err := f.Program().Run(&ebpf.RunOptions{Data: fr, DataOut: out})
		if err != nil {
			t.Fatal(err)
		}
		if ret != 3 { // XDP_TX
			t.Fatalf("frame %d: verdict %d, want XDP_TX", i, ret)
		}
		h, _ := FrameHash(fr)
		want := reals[h%uint32(len(reals))]
		if !bytes.Equal(out[:6], want) || !bytes.Equal(out[6:12], dir) {
			t.Fatalf("frame %d: dst %x src %x, want dst %x src %x", i, out[:6], out[6:12], want, dir)
		}
		if !bytes.Equal(out[12:len(fr)], fr[12:]) {
			t.Fatalf("frame %d: bytes past the MACs changed", i)
		}
	}
	// Not IPv4 TCP/UDP: passed untouched.
	arp := append(bytes.Repeat([]byte{0xff}, 12), 0x08, 0x06)
	arp = append(arp, make([]byte, 46)...)
	if ret, err := f.Program().Run(&ebpf.RunOptions{Data: arp}); err != nil || ret != 2 {
		t.Fatalf("ARP frame: verdict %d (%v), want XDP_PASS", ret, err)
	}
	c, err := f.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if want := (FwdCounters{RX: 301, TX: 300, Passed: 1}); c != want {
		t.Errorf("counters %+v, want %+v", c, want)
	}
}

// TestReplayCycles runs the generator without live frames: each run must
// turn the input buffer into the next frame of the trace, in order, and
// wrap around.
func TestReplayCycles(t *testing.T) {
	requireBPF(t)
	// The program's cursor is per CPU (the generator runs pinned), so the
	// sequence checked here holds only on one CPU: pin this thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var orig, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		t.Fatalf("affinity: %v", err)
	}
	one.Set(0)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatalf("pin to cpu0: %v", err)
	}
	// Give the thread back unpinned: other tests may run on it later.
	defer unix.SchedSetaffinity(0, &orig)
	for _, size := range []string{"64", "imix", "payload"} {
		var tr *trace.Trace
		var err error
		if size == "payload" {
			// Bytes past headerCopy: stored and written whole.
			tr = &trace.Trace{}
			for i := range 7 {
				f := make([]byte, 100+200*i)
				for j := range f {
					f[j] = byte(i + j)
				}
				tr.Frames = append(tr.Frames, f)
			}
		} else if tr, err = trace.Generate(trace.Config{Packets: 40, Flows: 10, Proto: "udp", Size: size}); err != nil {
			t.Fatal(err)
		}
		r, err := LoadReplayer(tr.Frames)
		if err != nil {
			t.Fatal(err)
		}
		if wantCopy := map[string]int{"64": headerCopy, "imix": headerCopy, "payload": MaxFrame}[size]; r.CopyLen() != wantCopy {
			t.Errorf("%s: copy length %d, want %d", size, r.CopyLen(), wantCopy)
		}
		maxLen := 0
		for _, f := range tr.Frames {
			maxLen = max(maxLen, len(f))
		}
		out := make([]byte, 4096)
		for i := range 2*len(tr.Frames) + 3 {
			type xdpMD struct{ Data, DataEnd, DataMeta, Ingress, RxQueue, Egress uint32 }
			ctxIn := xdpMD{DataEnd: uint32(maxLen)}
			var ctxOut xdpMD
			ret, err := r.objs.XvsReplay.Run(&ebpf.RunOptions{Data: make([]byte, maxLen), DataOut: out, Context: &ctxIn, ContextOut: &ctxOut})
			if err != nil {
				t.Fatal(err)
			}
			if ret != 3 {
				t.Fatalf("%s run %d: verdict %d, want XDP_TX", size, i, ret)
			}
			want := tr.Frames[i%len(tr.Frames)]
			got := out[:ctxOut.DataEnd-ctxOut.Data]
			if !bytes.Equal(got, want) {
				t.Fatalf("%s run %d: emitted %d bytes, want frame %d (%d bytes)", size, i, len(got), i%len(tr.Frames), len(want))
			}
		}
		r.Close()
	}
}

func TestLoadReplayerRejects(t *testing.T) {
	for _, frames := range [][][]byte{nil, {make([]byte, 13)}, {make([]byte, MaxFrame+1)}} {
		if r, err := LoadReplayer(frames); err == nil {
			r.Close()
			t.Errorf("LoadReplayer(%d frames) succeeded", len(frames))
		}
	}
}

func TestFrameHash(t *testing.T) {
	tr, _ := trace.Generate(trace.Config{Packets: 4, Flows: 1, Proto: "udp"})
	if _, ok := FrameHash(tr.Frames[0]); !ok {
		t.Error("UDP frame not hashed")
	}
	for _, f := range [][]byte{nil, make([]byte, 20), append(make([]byte, 12), 0x86, 0xdd, 0)} {
		if _, ok := FrameHash(f); ok {
			t.Errorf("FrameHash(%x) ok, want not hashed", f)
		}
	}
	// Same flow, same hash; the hash spreads the flows.
	a, _ := FrameHash(tr.Frames[0])
	b, _ := FrameHash(tr.Frames[1])
	if a != b {
		t.Error("two frames of one flow hash differently")
	}
}

func BenchmarkFrameHash(b *testing.B) {
	tr, _ := trace.Generate(trace.Config{Packets: 4, Flows: 1, Proto: "udp"})
	f := tr.Frames[0]
	b.ReportAllocs()
	for b.Loop() {
		FrameHash(f)
	}
}
