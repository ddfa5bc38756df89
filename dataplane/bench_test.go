package dataplane

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Benchmarks of the per-packet paths and the conn table. They run only with
// -bench; the big tables are built once per process.

func BenchmarkDREstablished(b *testing.B) {
	for _, flows := range []int{64, 4096, 1 << 16} {
		for _, mode := range benchModes {
			b.Run(fmt.Sprintf("flows=%d/%s", flows, mode), func(b *testing.B) { benchEstablished(b, flows, mode) })
		}
	}
}

// The per-packet benchmarks run each path two ways: "batch" hands the
// forwarder 64 frames at a time as a worker does (processBatch overlaps the
// conn table's cache misses), "single" one frame at a time. ns/op is per
// packet either way.
var benchModes = []string{"batch", "single"}

// frameRun says what runFrames sends: packet i is flow i*mul&mask in
// frames[i%64] (untagged IPv4 frames of n bytes), at table clock now, which
// moves 61 s forward every `every` packets (0: never).
type frameRun struct {
	frames    [][]byte
	n         int
	mul, mask int
	now       uint32
	every     int
}

// runFrames feeds the forwarder as runFrames' comment on frameRun says,
// and checks every verdict is "transmit". The loop does no indirect call
// of its own, so the figure is the forwarder's.
func runFrames(b *testing.B, f *forwarder, snap *Snapshot, r frameRun, mode string) {
	var pk [64]batchPkt
	if len(r.frames) != len(pk) {
		b.Fatalf("%d frames, want %d", len(r.frames), len(pk))
	}
	now, left := r.now, r.every
	tick := func() { // no division per packet
		if left--; left == 0 {
			now += 61
			left = r.every
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpuClock(b)
	if mode == "single" {
		for i := 0; b.Loop(); i++ {
			if r.every > 0 {
				tick()
			}
			buf := r.frames[i&63]
			setFlow(buf, i*r.mul&r.mask)
			if _, v := f.processAt(buf, 0, r.n, snap, now); v != DropNone {
				b.Fatal(v)
			}
			if i&63 == 63 {
				f.flush() // once per batch, as the worker does
			}
		}
		return
	}
	for i := 0; b.Loop(); i++ {
		if r.every > 0 {
			tick()
		}
		j := i & 63
		buf := r.frames[j]
		setFlow(buf, i*r.mul&r.mask)
		// Field by field (see parseFastV4 on composite literals).
		pk[j].buf, pk[j].off, pk[j].n = buf, 0, r.n
		if j < 63 {
			continue
		}
		runBatch(b, f, pk[:], snap, now)
	}
}

// runBatch processes a full batch as the worker does (then flushes the
// counts) and fails on any verdict but "transmit".
func runBatch(b *testing.B, f *forwarder, pk []batchPkt, snap *Snapshot, now uint32) {
	f.processBatch(pk, snap, now)
	for k := range pk {
		if pk[k].r != DropNone {
			b.Fatal(pk[k].r)
		}
	}
	f.flush()
}

// benchEstablished: flows established flows in a table sized for 1M; frames
// are 1448-byte-payload ACKs (a bulk transfer's segments). Like a worker's
// RX batch, 64 frame buffers are reused (the kernel has just copied each
// into UMEM, so its header is in cache); the flow's source port and address
// are written before each packet.
func benchEstablished(b *testing.B, flows int, mode string) {
	p := newTestPlane(b, 1<<20, drService("wrr", 1, 2))
	now := p.table.Now()
	syn := buildFrame(b, tcp4(0, TCPSyn))
	for i := range flows {
		setFlow(syn, i)
		if r := p.f.process(syn, p.snap, now); r != DropNone {
			b.Fatal(r)
		}
	}
	s := tcp4(0, TCPAck)
	s.payload = 1448
	frames := umemFrames(buildFrame(b, s), 64)
	runFrames(b, p.f, p.snap, frameRun{frames: frames, n: len(frames[0]), mul: 7919, mask: flows - 1, now: now}, mode)
}

func BenchmarkDRNewFlow(b *testing.B) {
	for _, size := range []int{1 << 12, 1 << 16, 1 << 20} {
		for _, mode := range benchModes {
			b.Run(fmt.Sprintf("table=%dK/%s", size>>10, mode), func(b *testing.B) { benchNewFlow(b, size, mode) })
		}
	}
}

// benchNewFlow: a SYN from a new client address and port each time, through
// parse, lookup miss, service lookup, wrr, insert. Every size/2 flows the
// clock jumps past SYN_RECV's timeout so old entries make room, as in a
// SYN-heavy steady state.
func benchNewFlow(b *testing.B, size int, mode string) {
	p := newTestPlane(b, size, drService("wrr", 1, 2))
	start := p.table.Now()
	frames := umemFrames(buildFrame(b, tcp4(1, TCPSyn)), 64)
	runFrames(b, p.f, p.snap, frameRun{frames: frames, n: len(frames[0]), mul: 1, mask: -1, now: start, every: size / 2}, mode)
}

// BenchmarkDRStages splits the established-flow path into cumulative stages
// (64 hot flows), to show where its time goes.
func BenchmarkDRStages(b *testing.B) {
	p := newTestPlane(b, 1<<20, drService("wrr", 1, 2))
	now := p.table.Now()
	syn := buildFrame(b, tcp4(0, TCPSyn))
	for i := range 64 {
		setPort(syn, 34, i)
		p.f.process(syn, p.snap, now)
	}
	s := tcp4(0, TCPAck)
	s.payload = 1448
	fr := buildFrame(b, s)
	b.Run("parse+key", func(b *testing.B) {
		var pk Packet
		var k connKey
		cpuClock(b)
		for i := 0; b.Loop(); i++ {
			setPort(fr, 34, i&63)
			p.f.parse(fr, &pk, &k)
		}
	})
	b.Run("parse+key+hash", func(b *testing.B) {
		var pk Packet
		var k connKey
		var x uint64
		cpuClock(b)
		for i := 0; b.Loop(); i++ {
			setPort(fr, 34, i&63)
			p.f.parse(fr, &pk, &k)
			x += p.table.hash(&k)
		}
		_ = x
	})
	b.Run("parse+key+hash+lookup", func(b *testing.B) {
		var pk Packet
		var k connKey
		cpuClock(b)
		for i := 0; b.Loop(); i++ {
			setPort(fr, 34, i&63)
			p.f.parse(fr, &pk, &k)
			if j, _, _ := p.table.lookupHashed(&k, p.table.hash(&k), now); j < 0 {
				b.Fatal("miss")
			}
		}
	})
	b.Run("process", func(b *testing.B) {
		cpuClock(b)
		for i := 0; b.Loop(); i++ {
			setPort(fr, 34, i&63)
			if r := p.f.process(fr, p.snap, now); r != DropNone {
				b.Fatal(r)
			}
			if i&63 == 63 {
				p.f.flush()
			}
		}
	})
}

// setFlow writes flow f's client port and address into an untagged IPv4
// frame with one store each. The kernel's copy into UMEM leaves a frame
// written by wide stores long before the parser runs; byte stores just
// before the parser's wider loads would add a store-forwarding stall that
// real frames do not have.
//
// The forwarder takes one from the TTL each time a benchmark hands it the
// same buffer: when it runs low it goes back up to 255, once in 254 uses.
// A store just before every packet would stall the TTL's load in the
// forwarder, which a frame the kernel wrote long before never does.
func setFlow(fr []byte, f int) {
	if fr[22] < 2 {
		fr[22] = 255
	}
	binary.BigEndian.PutUint16(fr[34:], uint16(f))
	binary.BigEndian.PutUint32(fr[26:], 0xC6121000+uint32(f>>16)&0xFFF) // 198.18.16.0/20
}

// setPort writes the TCP/UDP source port at off of an untagged IPv4 frame
// and tops up the TTL 12 bytes before it (see setFlow).
func setPort(fr []byte, off, port int) {
	if fr[off-12] < 2 {
		fr[off-12] = 255
	}
	binary.BigEndian.PutUint16(fr[off:], uint16(port))
}

// umemFrames returns n copies of frame laid out as in a worker's UMEM:
// 2048-byte chunks of one mapping, the frame 256 bytes into its chunk.
// With that stride every frame's header falls in the same two L1 cache
// sets, which a batch's passes must live with (XVS_BENCH_STRIDE overrides
// the stride, to compare).
func umemFrames(frame []byte, n int) [][]byte {
	stride := 2048
	if v, err := strconv.Atoi(os.Getenv("XVS_BENCH_STRIDE")); err == nil && v >= len(frame) {
		stride = v
	}
	slab := make([]byte, n*stride+256+len(frame))
	out := make([][]byte, n)
	for i := range out {
		o := i*stride + 256
		out[i] = slab[o : o+len(frame) : o+len(frame)]
		copy(out[i], frame)
	}
	return out
}

// mutexTable is the baseline: a map behind one mutex, as a first Go
// implementation would do it.
type mutexTable struct {
	mu sync.Mutex
	m  map[connKey]mutexVal
}

type mutexVal struct {
	dest  uint16
	state uint8
	exp   uint32
}

func (t *mutexTable) lookup(k *connKey) (mutexVal, bool) {
	t.mu.Lock()
	v, ok := t.m[*k]
	t.mu.Unlock()
	return v, ok
}

func (t *mutexTable) insert(k *connKey, v mutexVal) {
	t.mu.Lock()
	t.m[*k] = v
	t.mu.Unlock()
}

func benchKey(i int) connKey {
	c0, c1 := addrWords(netip.AddrFrom4([4]byte{198, 18 + byte(i>>24&1), byte(i >> 16), byte(i >> 8)}))
	v0, v1 := addrWords(vip4)
	return makeKey(ProtoTCP, kindConn, c0, c1, uint16(i)^uint16(i>>9), v0, v1, 80)
}

var (
	benchTables   = map[int]*ConnTable{}
	benchMutexes  = map[int]*mutexTable{}
	benchTablesMu sync.Mutex
)

func filledTable(b *testing.B, n int) *ConnTable {
	benchTablesMu.Lock()
	defer benchTablesMu.Unlock()
	if t := benchTables[n]; t != nil {
		return t
	}
	t := NewConnTable(n)
	now := t.Now()
	for i := range n {
		k := benchKey(i)
		t.insert(&k, 1, StateEstablished, now+900, now)
	}
	benchTables[n] = t
	return t
}

func filledMutex(n int) *mutexTable {
	benchTablesMu.Lock()
	defer benchTablesMu.Unlock()
	if t := benchMutexes[n]; t != nil {
		return t
	}
	t := &mutexTable{m: make(map[connKey]mutexVal, n)}
	for i := range n {
		k := benchKey(i)
		t.insert(&k, mutexVal{1, StateEstablished, 900})
	}
	benchMutexes[n] = t
	return t
}

var benchSizes = []int{1 << 20, 10 << 20}

func BenchmarkConnLookup(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("xvs/%dM", n>>20), func(b *testing.B) {
			t := filledTable(b, n)
			now := t.Now()
			b.ReportAllocs()
			b.ResetTimer()
			cpuClock(b)
			for i := 0; b.Loop(); i++ {
				k := benchKey(int(uint32(i) * 2654435761 % uint32(n)))
				if j, _, _ := t.lookup(&k, now); j < 0 && t.FullDrops() == 0 {
					b.Fatal("miss")
				}
			}
			b.ReportMetric(float64(t.Slots()*BytesPerSlot)/float64(n), "bytes/flow")
		})
		b.Run(fmt.Sprintf("mutexmap/%dM", n>>20), func(b *testing.B) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			t := filledMutex(n)
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ReportAllocs()
			b.ResetTimer()
			cpuClock(b)
			for i := 0; b.Loop(); i++ {
				k := benchKey(int(uint32(i) * 2654435761 % uint32(n)))
				if _, ok := t.lookup(&k); !ok {
					b.Fatal("miss")
				}
			}
			if after.HeapAlloc > before.HeapAlloc {
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "bytes/flow")
			}
		})
	}
}

func BenchmarkConnInsert(b *testing.B) {
	for _, n := range benchSizes {
		// Insert into a table already holding n flows (at capacity, so each
		// insert replaces an expired entry: the steady state of a full table).
		b.Run(fmt.Sprintf("xvs/%dM", n>>20), func(b *testing.B) {
			t := NewConnTable(n)
			now := t.Now()
			for i := range n {
				k := benchKey(i)
				t.insert(&k, 1, StateSynRecv, now+60, now)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpuClock(b)
			for i := 0; b.Loop(); i++ {
				if i%n == 0 {
					now += 61
				}
				k := benchKey(i % n)
				k.w0 ^= uint64(i/n+1) << 16
				t.insert(&k, 1, StateSynRecv, now+60, now)
			}
		})
		b.Run(fmt.Sprintf("mutexmap/%dM", n>>20), func(b *testing.B) {
			t := &mutexTable{m: make(map[connKey]mutexVal, n)}
			for i := range n {
				k := benchKey(i)
				t.insert(&k, mutexVal{1, StateSynRecv, 60})
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpuClock(b)
			for i := 0; b.Loop(); i++ {
				k := benchKey(i % n)
				t.mu.Lock()
				delete(t.m, k) // expiry of the flow it replaces
				k.w0 ^= uint64(i/n+1) << 16
				t.m[k] = mutexVal{1, StateSynRecv, 60}
				t.mu.Unlock()
			}
		})
	}
}

// BenchmarkConnLookupParallel shows the scaling the lock-free table buys
// over the mutex baseline with all cores looking up.
func BenchmarkConnLookupParallel(b *testing.B) {
	n := benchSizes[0]
	b.Run("xvs/1M", func(b *testing.B) {
		t := filledTable(b, n)
		now := t.Now()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				k := benchKey(int(uint32(i) * 2654435761 % uint32(n)))
				t.lookup(&k, now)
				i++
			}
		})
	})
	b.Run("mutexmap/1M", func(b *testing.B) {
		t := filledMutex(n)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				k := benchKey(int(uint32(i) * 2654435761 % uint32(n)))
				t.lookup(&k)
				i++
			}
		})
	})
}

// cpuClock reports the benchmark's own thread CPU time per op ("cpu-ns/op")
// beside the wall-clock ns/op: on a shared 2-core machine wall time includes
// time other processes held the core. Call at the start of the benchmark,
// after setup; it locks the goroutine to its thread for the measurement.
func cpuClock(b *testing.B) {
	runtime.LockOSThread()
	start := threadCPU()
	b.Cleanup(func() {
		used := threadCPU() - start
		runtime.UnlockOSThread()
		if b.N > 0 {
			b.ReportMetric(float64(used)/float64(b.N), "cpu-ns/op")
		}
	})
}

func threadCPU() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
