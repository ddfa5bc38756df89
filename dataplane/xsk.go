package dataplane

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// xsk is one AF_XDP socket with its own UMEM, its four rings and a free-frame
// stack. Owned by one worker goroutine (the control plane touches only fd,
// for statistics, and close).
//
// Why not asavie/xdp's Socket: its free-frame bookkeeping is a []bool that
// GetDescs scans from frame 0 on every call (O(frames) per batch; with 4096
// frames and half of them in the fill ring it scans ≥2048 entries to find
// 64 free ones), completed TX frames can only be recovered through that
// scan, its Transmit panics on an unexpected sendto error, and Stats()
// dereferences the RX ring of a TX-only socket. This file keeps the same
// setup sequence and does frame bookkeeping with a stack: O(batch).
type xsk struct {
	fd        int
	ifindex   int
	queue     int
	umem      []byte
	frameSize uint64
	fill      addrRing
	comp      addrRing
	rx        descRing
	tx        descRing
	free      []uint64 // frame base addresses owned by user space, unused
	needWake  bool
}

type ringHdr struct {
	prod, cons, flags *atomic.Uint32
	mask, size        uint32
	mem               []byte
}

type addrRing struct {
	ringHdr
	descs []uint64
}

type descRing struct {
	ringHdr
	descs []unix.XDPDesc
}

// xskConfig sizes one socket. Ring sizes must be powers of two.
type xskConfig struct {
	Frames    int // UMEM frames
	FrameSize int // 2048 or 4096
	RingSize  int // each of fill, completion, rx, tx
}

func (c xskConfig) validate() error {
	pow2 := func(n int) bool { return n > 0 && n&(n-1) == 0 }
	if !pow2(c.RingSize) || !pow2(c.FrameSize) || c.FrameSize < 2048 || c.Frames < 2*c.RingSize {
		return fmt.Errorf("AF_XDP sizes: frames %d (≥ 2×ring), frame size %d (power of two ≥ 2048), ring %d (power of two)",
			c.Frames, c.FrameSize, c.RingSize)
	}
	return nil
}

// newXSK creates, maps and binds an AF_XDP socket on ifindex/queue in the
// calling thread's network namespace. Copy mode is left to the kernel's
// choice (veth has no zero-copy); need_wakeup is requested so sendto and
// poll are only called when the kernel asks for them.
func newXSK(ifindex, queue int, c xskConfig) (_ *xsk, err error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("AF_XDP socket: %w", err)
	}
	x := &xsk{fd: fd, ifindex: ifindex, queue: queue, frameSize: uint64(c.FrameSize)}
	defer func() {
		if err != nil {
			x.close()
		}
	}()
	x.umem, err = unix.Mmap(-1, 0, c.Frames*c.FrameSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mmap UMEM (%d bytes): %w", c.Frames*c.FrameSize, err)
	}
	reg := unix.XDPUmemReg{
		Addr: uint64(uintptr(unsafe.Pointer(&x.umem[0]))),
		Len:  uint64(len(x.umem)),
		Size: uint32(c.FrameSize),
		// Headroom 0: the kernel still puts XDP_PACKET_HEADROOM (256)
		// bytes before each received packet, room for TUN's outer header.
	}
	if _, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_UMEM_REG,
		uintptr(unsafe.Pointer(&reg)), unsafe.Sizeof(reg), 0); e != 0 {
		return nil, fmt.Errorf("setsockopt XDP_UMEM_REG: %w", e)
	}
	for _, o := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING, unix.XDP_TX_RING} {
		if err := unix.SetsockoptInt(fd, unix.SOL_XDP, o, c.RingSize); err != nil {
			return nil, fmt.Errorf("setsockopt ring %d size %d: %w", o, c.RingSize, err)
		}
	}
	var off unix.XDPMmapOffsets
	ol := uint32(unsafe.Sizeof(off))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&ol)), 0); e != 0 {
		return nil, fmt.Errorf("getsockopt XDP_MMAP_OFFSETS: %w", e)
	}
	if x.fill.ringHdr, err = mapRing(fd, unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, c.RingSize, 8); err != nil {
		return nil, fmt.Errorf("fill ring: %w", err)
	}
	x.fill.descs = unsafe.Slice((*uint64)(unsafe.Pointer(&x.fill.mem[off.Fr.Desc])), c.RingSize)
	if x.comp.ringHdr, err = mapRing(fd, unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, c.RingSize, 8); err != nil {
		return nil, fmt.Errorf("completion ring: %w", err)
	}
	x.comp.descs = unsafe.Slice((*uint64)(unsafe.Pointer(&x.comp.mem[off.Cr.Desc])), c.RingSize)
	dsz := int(unsafe.Sizeof(unix.XDPDesc{}))
	if x.rx.ringHdr, err = mapRing(fd, unix.XDP_PGOFF_RX_RING, off.Rx, c.RingSize, dsz); err != nil {
		return nil, fmt.Errorf("rx ring: %w", err)
	}
	x.rx.descs = unsafe.Slice((*unix.XDPDesc)(unsafe.Pointer(&x.rx.mem[off.Rx.Desc])), c.RingSize)
	if x.tx.ringHdr, err = mapRing(fd, unix.XDP_PGOFF_TX_RING, off.Tx, c.RingSize, dsz); err != nil {
		return nil, fmt.Errorf("tx ring: %w", err)
	}
	x.tx.descs = unsafe.Slice((*unix.XDPDesc)(unsafe.Pointer(&x.tx.mem[off.Tx.Desc])), c.RingSize)

	sa := &unix.SockaddrXDP{Flags: unix.XDP_USE_NEED_WAKEUP, Ifindex: uint32(ifindex), QueueID: uint32(queue)}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, fmt.Errorf("bind AF_XDP to ifindex %d queue %d: %w", ifindex, queue, err)
	}
	x.needWake = true
	x.free = make([]uint64, 0, c.Frames)
	for i := c.Frames - 1; i >= 0; i-- {
		x.free = append(x.free, uint64(i)*x.frameSize)
	}
	x.refill()
	return x, nil
}

func mapRing(fd int, pgoff int64, o unix.XDPRingOffset, n, descSize int) (ringHdr, error) {
	mem, err := unix.Mmap(fd, pgoff, int(o.Desc)+n*descSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return ringHdr{}, fmt.Errorf("mmap: %w", err)
	}
	return ringHdr{
		prod:  (*atomic.Uint32)(unsafe.Pointer(&mem[o.Producer])),
		cons:  (*atomic.Uint32)(unsafe.Pointer(&mem[o.Consumer])),
		flags: (*atomic.Uint32)(unsafe.Pointer(&mem[o.Flags])),
		mask:  uint32(n - 1),
		size:  uint32(n),
		mem:   mem,
	}, nil
}

func (x *xsk) base(addr uint64) uint64 { return addr &^ (x.frameSize - 1) }

// refill moves free frames into the fill ring, as many as fit.
func (x *xsk) refill() int {
	r := &x.fill
	prod := r.prod.Load()
	room := int(r.size - (prod - r.cons.Load()))
	n := min(room, len(x.free))
	for i := range n {
		r.descs[(prod+uint32(i))&r.mask] = x.free[len(x.free)-1-i]
	}
	x.free = x.free[:len(x.free)-n]
	r.prod.Store(prod + uint32(n))
	return n
}

// complete takes transmitted frames back from the completion ring.
func (x *xsk) complete() int {
	r := &x.comp
	cons := r.cons.Load()
	n := int(r.prod.Load() - cons)
	for i := range n {
		x.free = append(x.free, x.base(r.descs[(cons+uint32(i))&r.mask]))
	}
	r.cons.Store(cons + uint32(n))
	return n
}

// txRoom returns the free TX slots.
func (x *xsk) txRoom() int {
	return int(x.tx.size - (x.tx.prod.Load() - x.tx.cons.Load()))
}

// kick asks the kernel to transmit what the TX ring holds. EAGAIN, EBUSY and
// ENOBUFS mean "try again later" (the ring stays queued); any other error is
// returned for the caller to count. Never panics.
func (x *xsk) kick() error {
	if x.needWake && x.tx.flags.Load()&unix.XDP_RING_NEED_WAKEUP == 0 {
		return nil
	}
	for {
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(x.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		case unix.EAGAIN, unix.EBUSY, unix.ENOBUFS:
			return errTXBusy
		default:
			return e
		}
	}
}

var errTXBusy = errors.New("AF_XDP TX busy")

// wait blocks in poll(2) until the RX ring has packets or timeoutMs passes.
func (x *xsk) wait(timeoutMs int) error {
	pfd := [1]unix.PollFd{{Fd: int32(x.fd), Events: unix.POLLIN}}
	_, err := unix.Poll(pfd[:], timeoutMs)
	if err == unix.EINTR {
		return nil
	}
	return err
}

// kernelStats reads XDP_STATISTICS.
func (x *xsk) kernelStats() (unix.XDPStatistics, error) {
	var s unix.XDPStatistics
	l := uint32(unsafe.Sizeof(s))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(x.fd), unix.SOL_XDP, unix.XDP_STATISTICS,
		uintptr(unsafe.Pointer(&s)), uintptr(unsafe.Pointer(&l)), 0); e != 0 {
		return s, fmt.Errorf("getsockopt XDP_STATISTICS: %w", e)
	}
	return s, nil
}

func (x *xsk) close() error {
	var errs []error
	for _, m := range [][]byte{x.fill.mem, x.comp.mem, x.rx.mem, x.tx.mem} {
		if m != nil {
			errs = append(errs, unix.Munmap(m))
		}
	}
	x.fill, x.comp, x.rx, x.tx = addrRing{}, addrRing{}, descRing{}, descRing{}
	if x.fd >= 0 {
		errs = append(errs, unix.Close(x.fd))
		x.fd = -1
	}
	if x.umem != nil {
		errs = append(errs, unix.Munmap(x.umem))
		x.umem = nil
	}
	return errors.Join(errs...)
}
