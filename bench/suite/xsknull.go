package suite

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/asavie/xdp"
	"golang.org/x/sys/unix"

	"github.com/xvs-lb/xvs/bench/benchxdp"
)

// XSKNull is the simplest fair AF_XDP forwarder: the socket set-up of
// xskBase, then its own O(batch) ring handling. Per loop it takes completed
// TX frames onto a free-frame stack, hands free frames to the fill ring,
// moves up to 64 received descriptors straight into the TX ring (the frame
// is rewritten in place: destination a real server by FlowHash, source the
// director), and kicks sendto only while the kernel asks for it
// (need_wakeup) and takes frames. Idle, it sleeps in poll(POLLIN). No conn
// table, no scheduler: the ceiling of the AF_XDP copy path on veth, the
// bar the device under test is measured against.
type XSKNull struct {
	xskBase
	umem       []byte
	fill, comp xring[uint64]
	rxr, txr   xring[unix.XDPDesc]
	free       []uint64
}

// xring is one mapped AF_XDP ring: producer, consumer and flags words
// shared with the kernel, and the descriptors.
type xring[T uint64 | unix.XDPDesc] struct {
	prod, cons, flags *atomic.Uint32
	descs             []T
	mask              uint32
	mem               []byte
}

// mapXRing maps a ring of the socket fd a second time (asavie/xdp keeps
// its own mapping private; the kernel allows several).
func mapXRing[T uint64 | unix.XDPDesc](fd int, pgoff int64, o unix.XDPRingOffset, n int) (xring[T], error) {
	var zero T
	mem, err := unix.Mmap(fd, pgoff, int(o.Desc)+n*int(unsafe.Sizeof(zero)), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return xring[T]{}, fmt.Errorf("xsk-null: map ring at %#x: %w", pgoff, err)
	}
	return xring[T]{
		prod:  (*atomic.Uint32)(unsafe.Pointer(&mem[o.Producer])),
		cons:  (*atomic.Uint32)(unsafe.Pointer(&mem[o.Consumer])),
		flags: (*atomic.Uint32)(unsafe.Pointer(&mem[o.Flags])),
		descs: unsafe.Slice((*T)(unsafe.Pointer(&mem[o.Desc])), n),
		mask:  uint32(n - 1),
		mem:   mem,
	}, nil
}

// Name implements Forwarder.
func (*XSKNull) Name() string { return "xsk-null" }

// Start implements Forwarder.
func (x *XSKNull) Start(env Env) error {
	x.name = x.Name()
	return x.start(env, unix.XDP_USE_NEED_WAKEUP, x.mapRings, x.loop)
}

// Stop implements Forwarder.
func (x *XSKNull) Stop() error { return x.stop(x.unmap) }

func (x *XSKNull) mapRings() error {
	fd := x.sock.FD()
	var off unix.XDPMmapOffsets
	ol := uint32(unsafe.Sizeof(off))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&ol)), 0); e != 0 {
		return fmt.Errorf("xsk-null: XDP_MMAP_OFFSETS: %w", e)
	}
	o := xskOptions
	var err error
	if x.fill, err = mapXRing[uint64](fd, unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, o.FillRingNumDescs); err != nil {
		return err
	}
	if x.comp, err = mapXRing[uint64](fd, unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, o.CompletionRingNumDescs); err != nil {
		return errors.Join(err, x.unmap())
	}
	if x.rxr, err = mapXRing[unix.XDPDesc](fd, unix.XDP_PGOFF_RX_RING, off.Rx, o.RxRingNumDescs); err != nil {
		return errors.Join(err, x.unmap())
	}
	if x.txr, err = mapXRing[unix.XDPDesc](fd, unix.XDP_PGOFF_TX_RING, off.Tx, o.TxRingNumDescs); err != nil {
		return errors.Join(err, x.unmap())
	}
	// The whole UMEM, through the one accessor asavie/xdp offers.
	x.umem = x.sock.GetFrame(xdp.Desc{Len: uint32(o.NumFrames * o.FrameSize)})
	x.free = make([]uint64, 0, o.NumFrames)
	for i := o.NumFrames - 1; i >= 0; i-- {
		x.free = append(x.free, uint64(i*o.FrameSize))
	}
	return nil
}

func (x *XSKNull) unmap() error {
	var errs []error
	for _, m := range [][]byte{x.fill.mem, x.comp.mem, x.rxr.mem, x.txr.mem} {
		if m != nil {
			errs = append(errs, unix.Munmap(m))
		}
	}
	x.fill, x.comp, x.rxr, x.txr = xring[uint64]{}, xring[uint64]{}, xring[unix.XDPDesc]{}, xring[unix.XDPDesc]{}
	return errors.Join(errs...)
}

// kick asks the kernel to transmit while it needs waking and takes
// frames: in copy mode one sendto sends at most 32. It reports whether
// the TX ring moved. Busy answers (EAGAIN: batch done or send buffer full,
// EBUSY, ENOBUFS) are not errors.
func (x *XSKNull) kick() (moved bool, err error) {
	t := &x.txr
	for t.cons.Load() != t.prod.Load() && t.flags.Load()&unix.XDP_RING_NEED_WAKEUP != 0 {
		c0 := t.cons.Load()
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(x.sock.FD()), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0, unix.EINTR, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS:
		default:
			return moved, fmt.Errorf("xsk-null: sendto: %w", e)
		}
		if t.cons.Load() == c0 {
			break
		}
		moved = true
	}
	return moved, nil
}

func (x *XSKNull) loop(ctx context.Context, reals [][6]byte, src [6]byte) error {
	const batch = 64
	nreals := uint32(len(reals))
	frameMask := ^uint64(xskOptions.FrameSize - 1)
	fill, comp, rx, tx := &x.fill, &x.comp, &x.rxr, &x.txr
	fillSize, txSize := uint32(len(fill.descs)), uint32(len(tx.descs))
	pfd := []unix.PollFd{{Fd: int32(x.sock.FD())}}
	for ctx.Err() == nil {
		// Completed TX frames back onto the stack…
		cc := comp.cons.Load()
		nc := comp.prod.Load() - cc
		for i := range nc {
			x.free = append(x.free, comp.descs[(cc+i)&comp.mask]&frameMask)
		}
		comp.cons.Store(cc + nc)
		// …and free frames into the fill ring.
		fp := fill.prod.Load()
		k := min(int(fillSize-(fp-fill.cons.Load())), len(x.free))
		for i := range k {
			fill.descs[(fp+uint32(i))&fill.mask] = x.free[len(x.free)-1-i]
		}
		x.free = x.free[:len(x.free)-k]
		fill.prod.Store(fp + uint32(k))

		rc := rx.cons.Load()
		avail := rx.prod.Load() - rc
		tp := tx.prod.Load()
		n := min(avail, batch, txSize-(tp-tx.cons.Load()))
		if n == 0 {
			moved, err := x.kick()
			if err != nil {
				return err
			}
			if moved {
				continue
			}
			// Idle: sleep until frames arrive. TX full: sleep until it
			// has room (poll also drives copy-mode TX). The NAPI thread
			// that fills and drains the rings may share this CPU.
			pfd[0].Events, pfd[0].Revents = unix.POLLIN, 0
			timeout := 100
			if avail > 0 {
				pfd[0].Events, timeout = unix.POLLOUT, 1
			}
			if _, err := unix.Poll(pfd, timeout); err != nil && err != unix.EINTR {
				return fmt.Errorf("xsk-null: poll: %w", err)
			}
			continue
		}
		for i := range n {
			d := rx.descs[(rc+i)&rx.mask]
			f := x.umem[d.Addr : d.Addr+uint64(d.Len)]
			if len(f) >= 12 { // the director program passes only IPv4 frames here
				h, _ := benchxdp.FrameHash(f)
				copy(f[0:6], reals[h%nreals][:])
				copy(f[6:12], src[:])
			}
			tx.descs[(tp+i)&tx.mask] = d
		}
		rx.cons.Store(rc + n)
		tx.prod.Store(tp + n)
		x.rx.Add(uint64(n))
		x.tx.Add(uint64(n))
		if _, err := x.kick(); err != nil {
			return err
		}
	}
	return nil
}
