package dataplane

import (
	"runtime"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// worker serves one RX queue: its socket, its forwarder, its counters.
// Everything here is owned by the worker goroutine except q (read by Stats).
type worker struct {
	ifname string
	port   int // index of its interface among the dataplane's
	x      *xsk
	f      *forwarder
	q      *QueueStats
	batch  int
	snap   *atomic.Pointer[Snapshot]
	table  *ConnTable
	// out holds, per other port, this worker's own TX-only socket on it
	// (nil for its own port, whose AF_XDP TX ring it owns). See sender.go.
	out []*pktSender
	pk  []batchPkt // the batch being processed, MaxBatch long
}

// pollTimeoutMs bounds how long an idle worker sleeps in poll(2) before it
// checks whether it should stop.
const pollTimeoutMs = 100

// txRetries is how often a batch that does not fit the TX ring kicks the
// kernel and reclaims completions before the rest of the batch is dropped.
const txRetries = 4

func (w *worker) run(stop *atomic.Bool) {
	// The worker owns its OS thread: poll(2) and sendto(2) block only it,
	// and the scheduler does not move the hot loop between threads.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	x := w.x
	for !stop.Load() {
		x.complete()
		if x.refill() == 0 && len(x.free) == 0 && x.fill.prod.Load() == x.fill.cons.Load() {
			w.q.FillEmpty.Add(1)
		}
		n := w.step()
		if n == 0 {
			timeout := pollTimeoutMs
			// Frames queued for TX but not yet sent (sendto said
			// EAGAIN): kick again, and come back soon for the rest.
			if x.tx.prod.Load() != x.tx.cons.Load() {
				w.kick()
				timeout = 1
			}
			w.q.Wakeups.Add(1)
			if err := x.wait(timeout); err != nil {
				w.q.PollErrors.Add(1)
			}
		} else if x.fill.flags.Load()&unix.XDP_RING_NEED_WAKEUP != 0 {
			// Zero-copy drivers wait for a wakeup to use new fill entries.
			_ = x.wait(0)
		}
	}
}

// step receives, processes and transmits one batch; it returns how many
// packets it received.
func (w *worker) step() int {
	x := w.x
	rx := &x.rx
	cons := rx.cons.Load()
	n := int(rx.prod.Load() - cons)
	if n == 0 {
		return 0
	}
	n = min(n, w.batch)
	w.q.batch(n)
	snap := w.snap.Load()
	now := w.table.Now()
	room := x.txRoom()
	if room < n {
		room = w.makeRoom(n)
	}
	tx := &x.tx
	prod := tx.prod.Load()
	sent := 0
	var rxBytes, txBytes uint64
	fs := x.frameSize
	pk := w.pk[:n]
	for i := range pk {
		d := &rx.descs[(cons+uint32(i))&rx.mask]
		base := x.base(d.Addr)
		rxBytes += uint64(d.Len)
		// The whole UMEM frame: the packet starts at d.Addr-base, after
		// the kernel's headroom, which the forwarder may use.
		// Field by field: a composite literal is built on the stack
		// with narrow stores and copied with wide loads that stall.
		b := &pk[i]
		b.buf, b.off, b.n = x.umem[base:base+fs:base+fs], int(d.Addr-base), int(d.Len)
		b.out, b.r = txOut{}, DropNoService
	}
	if snap != nil {
		w.f.processBatch(pk, snap, now)
	}
	for i := range pk {
		base := x.base(rx.descs[(cons+uint32(i))&rx.mask].Addr)
		out, r := pk[i].out, pk[i].r
		if r == DropNone && out.port != w.port {
			if out.port < len(w.out) && w.out[out.port] != nil {
				w.out[out.port].add(x.umem[base+uint64(out.off):base+uint64(out.off+out.n)], base)
				continue
			}
			r = DropTxError
		}
		if r == DropNone && sent >= room {
			r = DropTxFull
		}
		if r != DropNone {
			w.q.Drops[r].Add(1)
			x.free = append(x.free, base)
			continue
		}
		tx.descs[(prod+uint32(sent))&tx.mask] = unix.XDPDesc{Addr: base + uint64(out.off), Len: uint32(out.n)}
		sent++
		txBytes += uint64(out.n)
	}
	for _, s := range w.out {
		if s != nil && s.n > 0 {
			w.sendOut(s)
		}
	}
	w.f.flush()
	rx.cons.Store(cons + uint32(n))
	w.q.RX.Add(uint64(n))
	w.q.RXBytes.Add(rxBytes)
	if sent > 0 {
		tx.prod.Store(prod + uint32(sent))
		w.q.TX.Add(uint64(sent))
		w.q.TXBytes.Add(txBytes)
		w.kick()
	}
	return n
}

// sendOut flushes a cross-port sender and takes its frames back.
func (w *worker) sendOut(s *pktSender) {
	queued := s.n
	var bytes uint64
	for i := range queued {
		bytes += uint64(s.iov[i].Len)
	}
	sent, err := s.flush()
	if sent > 0 {
		w.q.TX.Add(uint64(sent))
		w.q.CrossTX.Add(uint64(sent))
	}
	if sent == queued {
		w.q.TXBytes.Add(bytes)
	}
	if sent < queued {
		if err == unix.EAGAIN || err == unix.ENOBUFS {
			w.q.Drops[DropTxFull].Add(uint64(queued - sent))
		} else {
			w.q.Drops[DropTxError].Add(uint64(queued - sent))
		}
	}
	w.x.free = append(w.x.free, s.frames...)
	s.frames = s.frames[:0]
}

// makeRoom kicks the kernel and reclaims completions until n TX slots are
// free or the retries run out; it returns the free slots.
func (w *worker) makeRoom(n int) int {
	room := w.x.txRoom()
	for i := 0; i < txRetries && room < n; i++ {
		w.q.TXRetries.Add(1)
		w.kick()
		w.x.complete()
		room = w.x.txRoom()
	}
	return room
}

func (w *worker) kick() {
	switch err := w.x.kick(); err {
	case nil:
	case errTXBusy:
		w.q.TXRetries.Add(1)
	default:
		w.q.TXErrors.Add(1)
	}
}
