package dataplane

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Cross-port transmission (NAT: requests leave by the real servers' port,
// replies by the clients').
//
// An AF_XDP TX ring has a single producer, and its frames belong to its
// socket's UMEM, so a worker cannot put a frame on another port's AF_XDP
// socket without sharing state with that socket's worker. Instead each
// worker owns, for every other port, a TX-only AF_PACKET socket bound to
// that interface (protocol 0: it receives nothing; PACKET_QDISC_BYPASS:
// straight to the driver). Nothing is shared between workers: the kernel
// serialises the device queue. The worker gathers a batch's frames for a
// port and sends them with one sendmmsg(2), which copies them, after which
// the frames go back to the worker's own free stack at once.
//
// The cost is a copy and a syscall per batch per port; a zero-copy design
// (one shared UMEM, per-worker-pair descriptor rings handing frames to the
// TX ring's owner) is possible later without changing the packet path.
type pktSender struct {
	fd     int
	n      int
	msgs   []mmsghdr
	iov    []unix.Iovec
	frames []uint64 // UMEM frame bases of the queued frames
}

// mmsghdr is struct mmsghdr (x/sys/unix has no type for it).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

func newPktSender(ifindex int) (*pktSender, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind AF_PACKET to ifindex %d: %w", ifindex, err)
	}
	// Best effort: older kernels send through the qdisc instead.
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	s := &pktSender{fd: fd, msgs: make([]mmsghdr, MaxBatch), iov: make([]unix.Iovec, MaxBatch),
		frames: make([]uint64, 0, MaxBatch)}
	for i := range s.msgs {
		s.msgs[i].hdr.Iov = &s.iov[i]
		s.msgs[i].hdr.SetIovlen(1)
	}
	return s, nil
}

// add queues b (inside UMEM frame base) for the next flush. The caller
// never queues more than MaxBatch frames between flushes.
func (s *pktSender) add(b []byte, base uint64) {
	s.iov[s.n].Base = &b[0]
	s.iov[s.n].SetLen(len(b))
	s.frames = append(s.frames, base)
	s.n++
}

// flush sends the queued frames; it returns how many the kernel took and
// the error that stopped it, if any. The frames are free afterwards either
// way (the kernel copied those it took).
func (s *pktSender) flush() (int, error) {
	sent := 0
	var err error
	for sent < s.n {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msgs[sent])),
			uintptr(s.n-sent), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			err = e
			break
		}
		if r == 0 {
			break
		}
		sent += int(r)
	}
	s.n = 0
	return sent, err
}

func (s *pktSender) close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}
