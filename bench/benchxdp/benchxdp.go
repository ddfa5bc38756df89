// Package benchxdp owns the packet benchmark's XDP programs and their Go
// bindings: the replay generator (frames of a trace emitted into a veth with
// BPF_PROG_RUN in live-frames mode), the sink that counts frames per
// destination MAC and drops them, and xdp-fwd, the in-kernel forwarding
// baseline. The C sources sit beside this file; bpf2go compiles them into
// the committed *_bpfel.go/.o files (`make generate`).
package benchxdp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// MaxFrame is the longest frame the generator stores (replay.c MAX_FRAME).
const MaxFrame = 2048

// headerCopy is how many leading bytes the generator writes per packet
// when every frame of the trace is zero past them (synthetic traces are):
// writing 128 bytes instead of 1514 keeps the generator's cost independent
// of frame size.
const headerCopy = 128

func loadErr(what string, err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("load %s program: %+v", what, ve)
	}
	return fmt.Errorf("load %s program: %w", what, err)
}

func attach(p *ebpf.Program, ifindex int, what string) (link.Link, error) {
	l, err := link.AttachXDP(link.XDPOptions{Program: p, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		return nil, fmt.Errorf("attach %s to ifindex %d: %w", what, ifindex, err)
	}
	return l, nil
}

// sumPerCPU reads index i of a per-CPU array of uint64 and sums it.
func sumPerCPU(m *ebpf.Map, i uint32) (uint64, error) {
	var per []uint64
	if err := m.Lookup(i, &per); err != nil {
		return 0, err
	}
	var s uint64
	for _, v := range per {
		s += v
	}
	return s, nil
}

// zeroPerCPU clears the first n entries of a per-CPU array of uint64.
func zeroPerCPU(m *ebpf.Map, n uint32) error {
	zeros := make([]uint64, ebpf.MustPossibleCPU())
	for i := range n {
		if err := m.Update(i, zeros, ebpf.UpdateAny); err != nil {
			return err
		}
	}
	return nil
}

// Indexes of replay.c's state map.
const (
	stEmitted = 1
	stErrors  = 2
)

// Replayer is the loaded generator program holding one trace.
type Replayer struct {
	objs    replayObjects
	nframes int
	maxLen  int
	copyLen uint32
}

// LoadReplayer loads the generator with frames (each 14..MaxFrame bytes).
func LoadReplayer(frames [][]byte) (*Replayer, error) {
	if len(frames) == 0 {
		return nil, errors.New("replay: no frames")
	}
	maxLen := 0
	copyLen := uint32(headerCopy)
	for i, f := range frames {
		if len(f) < 14 || len(f) > MaxFrame {
			return nil, fmt.Errorf("replay: frame %d is %d bytes, want 14..%d", i, len(f), MaxFrame)
		}
		maxLen = max(maxLen, len(f))
		for _, b := range f[min(len(f), headerCopy):] {
			if b != 0 {
				copyLen = MaxFrame
				break
			}
		}
	}
	spec, err := loadReplay()
	if err != nil {
		return nil, fmt.Errorf("replay: spec: %w", err)
	}
	fm := spec.Maps[replayMapFrames]
	fm.MaxEntries = uint32(len(frames))
	// Entries hold only the bytes written per packet: a synthetic trace
	// costs 136 bytes per frame instead of 2056, so traces of 10⁵ flows
	// fit. The verifier still bounds every access: the program never reads
	// past copy_len (a constant it sees) into an entry. The map's BTF type
	// is the full struct, so it is dropped.
	valSize := 8 + copyLen
	fm.ValueSize, fm.Value = valSize, nil
	if err := spec.Variables[replayVarNframes].Set(uint32(len(frames))); err != nil {
		return nil, fmt.Errorf("replay: set nframes: %w", err)
	}
	if err := spec.Variables[replayVarCopyLen].Set(copyLen); err != nil {
		return nil, fmt.Errorf("replay: set copy_len: %w", err)
	}
	r := &Replayer{nframes: len(frames), maxLen: maxLen, copyLen: copyLen}
	if err := spec.LoadAndAssign(&r.objs, nil); err != nil {
		return nil, loadErr("replay", err)
	}
	// Entries as raw bytes (len, pad, data) in the map's value size.
	keys := make([]uint32, len(frames))
	vals := make([]byte, len(frames)*int(valSize))
	for i, f := range frames {
		keys[i] = uint32(i)
		v := vals[i*int(valSize) : (i+1)*int(valSize)]
		binary.NativeEndian.PutUint32(v, uint32(len(f)))
		copy(v[8:], f)
	}
	if _, err := r.objs.Frames.BatchUpdate(keys, vals, nil); err != nil {
		// Older kernels lack batch ops on arrays: fall back to one by one.
		for i := range keys {
			if err := r.objs.Frames.Update(keys[i], vals[i*int(valSize):(i+1)*int(valSize)], ebpf.UpdateAny); err != nil {
				r.Close()
				return nil, fmt.Errorf("replay: store frame %d: %w", i, err)
			}
		}
	}
	return r, nil
}

// Frames is the number of frames the generator cycles through.
func (r *Replayer) Frames() int { return r.nframes }

// CopyLen is how many bytes of each frame are written per packet.
func (r *Replayer) CopyLen() int { return int(r.copyLen) }

// Close releases the program and maps.
func (r *Replayer) Close() error { return r.objs.Close() }

// ReplayOptions bound one replay. At least one of Count and Duration must be
// set, so that a replay always stops by itself.
type ReplayOptions struct {
	Ifindex   int           // the veth to transmit on, in the caller's network namespace
	Rate      float64       // packets per second; 0 = as fast as the CPU allows
	Count     uint64        // stop after this many packets; 0 = no limit
	Duration  time.Duration // stop after this long; 0 = no limit
	BatchSize uint32        // kernel live-frames batch (0 = kernel default, 64)
}

// ReplayResult is what one replay emitted.
type ReplayResult struct {
	Emitted uint64        // frames handed to the veth (the program returned XDP_TX)
	Errors  uint64        // frames the program could not build
	Elapsed time.Duration // wall time of the replay
}

// Mpps is the emitted rate in millions of packets per second.
func (r ReplayResult) Mpps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Emitted) / r.Elapsed.Seconds() / 1e6
}

// maxChunk bounds one BPF_PROG_RUN call (≈0.4 s at 10 Mpps), so that
// cancellation is honoured promptly.
const maxChunk = 1 << 22

// Run emits frames until Count or Duration is reached or ctx ends. It must
// be called on a goroutine whose OS thread is in the veth's network
// namespace (the kernel looks the ifindex up there); pin that thread to
// measure the generator on one CPU.
func (r *Replayer) Run(ctx context.Context, o ReplayOptions) (ReplayResult, error) {
	if o.Count == 0 && o.Duration <= 0 {
		return ReplayResult{}, errors.New("replay: set a packet count or a duration")
	}
	if o.Ifindex <= 0 {
		return ReplayResult{}, fmt.Errorf("replay: bad ifindex %d", o.Ifindex)
	}
	if err := zeroPerCPU(r.objs.State, 4); err != nil {
		return ReplayResult{}, fmt.Errorf("replay: reset counters: %w", err)
	}
	var interval uint64
	if o.Rate > 0 {
		interval = max(uint64(1e9/o.Rate), 1)
	}
	if err := r.objs.Pace.Update(uint32(0), interval, ebpf.UpdateAny); err != nil {
		return ReplayResult{}, fmt.Errorf("replay: set pace: %w", err)
	}
	if err := r.objs.Pace.Update(uint32(1), o.Count, ebpf.UpdateAny); err != nil {
		return ReplayResult{}, fmt.Errorf("replay: set limit: %w", err)
	}
	data := make([]byte, r.maxLen)
	xctx := struct {
		Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
	}{DataEnd: uint32(len(data)), IngressIfindex: uint32(o.Ifindex)}

	start := time.Now()
	var deadline time.Time
	if o.Duration > 0 {
		deadline = start.Add(o.Duration)
	}
	var asked, emitted uint64
	chunk := uint64(4096) // doubles while calls are short
	if o.Rate > 0 {
		// Paced runs mostly skip (≈50 ns each): start with calls of tens
		// of ms, or the gaps between calls would lower the rate.
		chunk = 1 << 20
	}
	for ctx.Err() == nil {
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			break
		}
		n := chunk
		if o.Count > 0 {
			if emitted >= o.Count {
				break
			}
			// Unpaced, every run emits one frame: ask for the remainder.
			// Paced, runs mostly skip; the program's limit stops it at
			// Count (per CPU: the generator thread is pinned).
			if o.Rate == 0 {
				n = min(n, o.Count-emitted)
			}
		}
		t0 := time.Now()
		_, err := r.objs.XvsReplay.Run(&ebpf.RunOptions{
			Data:      data,
			Context:   &xctx,
			Repeat:    uint32(n),
			Flags:     unix.BPF_F_TEST_XDP_LIVE_FRAMES,
			BatchSize: o.BatchSize,
		})
		if err != nil {
			return ReplayResult{}, fmt.Errorf("replay: BPF_PROG_RUN on ifindex %d: %w", o.Ifindex, err)
		}
		asked += n
		if o.Rate > 0 || o.Count > 0 {
			if emitted, err = sumPerCPU(r.objs.State, stEmitted); err != nil {
				return ReplayResult{}, fmt.Errorf("replay: read counters: %w", err)
			}
		} else {
			emitted = asked
		}
		// Each call has a fixed cost (the kernel sets up and tears down a
		// page pool, ≈ms), so calls should last ≈0.2 s: double the chunk
		// while they are shorter, within maxChunk and the time left.
		if d := time.Since(t0); d < 200*time.Millisecond {
			chunk = min(chunk*2, maxChunk)
		}
		if !deadline.IsZero() {
			perRun := float64(time.Since(start)) / float64(asked)
			if left := float64(time.Until(deadline)); left > 0 {
				chunk = min(chunk, max(uint64(left/perRun), 64))
			}
		}
	}
	res := ReplayResult{Elapsed: time.Since(start)}
	var err error
	if res.Emitted, err = sumPerCPU(r.objs.State, stEmitted); err != nil {
		return res, fmt.Errorf("replay: read counters: %w", err)
	}
	if res.Errors, err = sumPerCPU(r.objs.State, stErrors); err != nil {
		return res, fmt.Errorf("replay: read counters: %w", err)
	}
	return res, nil
}

// Sink is the loaded sink program.
type Sink struct{ objs sinkObjects }

// SinkCounts is what the sink has seen.
type SinkCounts struct {
	Frames   uint64             // every frame
	Short    uint64             // shorter than an Ethernet header
	Overflow uint64             // not attributed: the MAC table was full
	ByMAC    map[[6]byte]uint64 // frames per destination MAC
}

// LoadSink loads the sink program.
func LoadSink() (*Sink, error) {
	s := &Sink{}
	if err := loadSinkObjects(&s.objs, nil); err != nil {
		return nil, loadErr("sink", err)
	}
	return s, nil
}

// Attach attaches the sink in driver mode to an interface of the caller's
// network namespace.
func (s *Sink) Attach(ifindex int) (link.Link, error) { return attach(s.objs.XvsSink, ifindex, "sink") }

// Counts reads the counters, summed over CPUs.
func (s *Sink) Counts() (SinkCounts, error) {
	c := SinkCounts{ByMAC: map[[6]byte]uint64{}}
	for i, p := range []*uint64{&c.Frames, &c.Short, &c.Overflow} {
		v, err := sumPerCPU(s.objs.Totals, uint32(i))
		if err != nil {
			return c, fmt.Errorf("sink: totals: %w", err)
		}
		*p = v
	}
	var key uint64
	var per []uint64
	it := s.objs.ByMac.Iterate()
	for it.Next(&key, &per) {
		var mac [6]byte
		var kb [8]byte
		binary.NativeEndian.PutUint64(kb[:], key)
		copy(mac[:], kb[:6])
		for _, v := range per {
			c.ByMAC[mac] += v
		}
	}
	if err := it.Err(); err != nil {
		return c, fmt.Errorf("sink: by_mac: %w", err)
	}
	return c, nil
}

// Reset zeroes every counter.
func (s *Sink) Reset() error {
	if err := zeroPerCPU(s.objs.Totals, 3); err != nil {
		return fmt.Errorf("sink: reset totals: %w", err)
	}
	var keys []uint64
	var key uint64
	var per []uint64
	it := s.objs.ByMac.Iterate()
	for it.Next(&key, &per) {
		keys = append(keys, key)
	}
	for _, k := range keys {
		if err := s.objs.ByMac.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("sink: reset by_mac: %w", err)
		}
	}
	return nil
}

// Close releases the program and maps.
func (s *Sink) Close() error { return s.objs.Close() }

// Fwd is the loaded xdp-fwd baseline.
type Fwd struct{ objs fwdObjects }

// FwdCounters are xdp-fwd's counters summed over CPUs.
type FwdCounters struct {
	RX, TX, Passed uint64
}

// LoadFwd loads xdp-fwd: frames leave with src = director and dst = one of
// reals, chosen by FlowHash.
func LoadFwd(director net.HardwareAddr, reals []net.HardwareAddr) (*Fwd, error) {
	if len(director) != 6 {
		return nil, fmt.Errorf("xdp-fwd: director MAC %v is not Ethernet", director)
	}
	if len(reals) == 0 || len(reals) > 1024 {
		return nil, fmt.Errorf("xdp-fwd: %d real servers, want 1..1024", len(reals))
	}
	spec, err := loadFwd()
	if err != nil {
		return nil, fmt.Errorf("xdp-fwd: spec: %w", err)
	}
	var dm [6]byte
	copy(dm[:], director)
	if err := spec.Variables[fwdVarDirectorMac].Set(dm); err != nil {
		return nil, fmt.Errorf("xdp-fwd: set director_mac: %w", err)
	}
	if err := spec.Variables[fwdVarNreals].Set(uint32(len(reals))); err != nil {
		return nil, fmt.Errorf("xdp-fwd: set nreals: %w", err)
	}
	f := &Fwd{}
	if err := spec.LoadAndAssign(&f.objs, nil); err != nil {
		return nil, loadErr("xdp-fwd", err)
	}
	for i, m := range reals {
		if len(m) != 6 {
			f.Close()
			return nil, fmt.Errorf("xdp-fwd: real server MAC %v is not Ethernet", m)
		}
		var v fwdMac
		copy(v.Addr[:], m)
		if err := f.objs.Reals.Update(uint32(i), &v, ebpf.UpdateAny); err != nil {
			f.Close()
			return nil, fmt.Errorf("xdp-fwd: store real %d: %w", i, err)
		}
	}
	return f, nil
}

// Attach attaches xdp-fwd in driver mode.
func (f *Fwd) Attach(ifindex int) (link.Link, error) {
	return attach(f.objs.XvsFwd, ifindex, "xdp-fwd")
}

// Program is the XDP program, for tests that run it with prog.Run.
func (f *Fwd) Program() *ebpf.Program { return f.objs.XvsFwd }

// Counters reads the counters, summed over CPUs.
func (f *Fwd) Counters() (FwdCounters, error) {
	var c FwdCounters
	for i, p := range []*uint64{&c.RX, &c.TX, &c.Passed} {
		v, err := sumPerCPU(f.objs.Counters, uint32(i))
		if err != nil {
			return c, fmt.Errorf("xdp-fwd: counters: %w", err)
		}
		*p = v
	}
	return c, nil
}

// Reset zeroes the counters.
func (f *Fwd) Reset() error { return zeroPerCPU(f.objs.Counters, 3) }

// Close releases the program and maps.
func (f *Fwd) Close() error { return f.objs.Close() }
