package dataplane

import "sync/atomic"

// BatchBuckets are the upper bounds of the batch-size histogram buckets
// (the last bucket takes everything above).
var BatchBuckets = [...]int{1, 2, 4, 8, 16, 32, 64, 128, 256}

// QueueStats are one worker's counters. The worker writes them; anyone may
// read them at any time.
type QueueStats struct {
	RX, TX    atomic.Uint64
	RXBytes   atomic.Uint64
	TXBytes   atomic.Uint64
	Drops     [NumDropReasons]atomic.Uint64
	TableFull atomic.Uint64 // new flows forwarded without an entry
	TooBig    atomic.Uint64 // ICMP fragmentation-needed / packet-too-big sent (TUN)
	// TimeExceeded counts ICMP time-exceeded sent (TTL 1 or 0 on arrival);
	// ICMPLimited the ICMP errors not sent for the rate limit.
	TimeExceeded atomic.Uint64
	ICMPLimited  atomic.Uint64
	CrossTX      atomic.Uint64 // frames sent on another port's socket (NAT)
	TXRetries    atomic.Uint64 // sendto returned EAGAIN/EBUSY/ENOBUFS
	TXErrors     atomic.Uint64 // sendto failed otherwise
	PollErrors   atomic.Uint64
	FillEmpty    atomic.Uint64 // no free frame to refill the fill ring
	Batches      [len(BatchBuckets) + 1]atomic.Uint64
	Wakeups      atomic.Uint64
	KernelStats  KernelXSKStats
}

// KernelXSKStats mirrors struct xdp_statistics for one socket.
type KernelXSKStats struct {
	RXDropped, RXInvalidDescs, TXInvalidDescs     atomic.Uint64
	RXRingFull, RXFillRingEmpty, TXRingEmptyDescs atomic.Uint64
}

func (q *QueueStats) batch(n int) {
	for i, b := range BatchBuckets {
		if n <= b {
			q.Batches[i].Add(1)
			return
		}
	}
	q.Batches[len(BatchBuckets)].Add(1)
}

// QueueStat is a plain copy of one queue's counters.
type QueueStat struct {
	Interface string
	Queue     int
	RX, TX    uint64
	RXBytes   uint64
	TXBytes   uint64
	Drops     [NumDropReasons]uint64
	TableFull uint64
	TooBig    uint64
	// TimeExceeded and ICMPLimited: see QueueStats.
	TimeExceeded uint64
	ICMPLimited  uint64
	CrossTX      uint64
	TXRetries    uint64
	TXErrors     uint64
	FillEmpty    uint64
	Batches      [len(BatchBuckets) + 1]uint64
	Wakeups      uint64
	// Kernel-side socket counters (XDP_STATISTICS).
	KernelRXDropped, KernelRXRingFull, KernelFillRingEmpty uint64
	KernelRXInvalid, KernelTXInvalid                       uint64
}

func (q *QueueStats) snapshot() QueueStat {
	s := QueueStat{
		RX: q.RX.Load(), TX: q.TX.Load(), RXBytes: q.RXBytes.Load(), TXBytes: q.TXBytes.Load(),
		TableFull: q.TableFull.Load(), TooBig: q.TooBig.Load(), TimeExceeded: q.TimeExceeded.Load(), ICMPLimited: q.ICMPLimited.Load(), CrossTX: q.CrossTX.Load(), TXRetries: q.TXRetries.Load(), TXErrors: q.TXErrors.Load(),
		FillEmpty: q.FillEmpty.Load(), Wakeups: q.Wakeups.Load(),
		KernelRXDropped:     q.KernelStats.RXDropped.Load(),
		KernelRXRingFull:    q.KernelStats.RXRingFull.Load(),
		KernelFillRingEmpty: q.KernelStats.RXFillRingEmpty.Load(),
		KernelRXInvalid:     q.KernelStats.RXInvalidDescs.Load(),
		KernelTXInvalid:     q.KernelStats.TXInvalidDescs.Load(),
	}
	for i := range s.Drops {
		s.Drops[i] = q.Drops[i].Load()
	}
	for i := range s.Batches {
		s.Batches[i] = q.Batches[i].Load()
	}
	return s
}
