package suite

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/asavie/xdp"
	"github.com/cilium/ebpf/link"

	"github.com/xvs-lb/xvs/bench/benchxdp"
	"github.com/xvs-lb/xvs/bpf"
	"github.com/xvs-lb/xvs/internal/netlab"
)

// Env is what a forwarder gets to run in the director namespace.
type Env struct {
	TB          netlab.TB
	Dir         *netlab.Host
	Ifname      string
	Ifindex     int // in Dir
	DirectorMAC net.HardwareAddr
	Reals       []Real
	VIPs        []netip.Addr // every VIP of the trace; services are VIP:Port over TCP and UDP
	Port        uint16
	WorkerCPU   int
}

// FwdStats are a forwarder's own counters. Drops names every place the
// forwarder lost or refused a frame, so that the run can check that
// nothing went missing silently.
type FwdStats struct {
	RX, TX uint64
	Drops  map[string]uint64
}

// Forwarder is one thing measured in the director's seat.
type Forwarder interface {
	Name() string
	// Start brings the forwarder up on env.Ifname and returns once it
	// forwards.
	Start(env Env) error
	// Stats reads the counters since Start.
	Stats() (FwdStats, error)
	// Stop takes it down; the interface is left without XDP program.
	Stop() error
}

// ErrNotAvailable marks a forwarder that cannot run here (the device under
// test before it exists); the report shows "not available" for it.
var ErrNotAvailable = errors.New("not available")

// XDPFwd is the in-kernel baseline.
type XDPFwd struct {
	f   *benchxdp.Fwd
	lnk link.Link
}

// Name implements Forwarder.
func (*XDPFwd) Name() string { return "xdp-fwd" }

// Start implements Forwarder.
func (x *XDPFwd) Start(env Env) error {
	macs := make([]net.HardwareAddr, len(env.Reals))
	for i, r := range env.Reals {
		macs[i] = r.MAC
	}
	f, err := benchxdp.LoadFwd(env.DirectorMAC, macs)
	if err != nil {
		return err
	}
	if err := env.Dir.Do(func() error {
		x.lnk, err = f.Attach(env.Ifindex)
		return err
	}); err != nil {
		f.Close()
		return err
	}
	x.f = f
	return nil
}

// Stats implements Forwarder.
func (x *XDPFwd) Stats() (FwdStats, error) {
	c, err := x.f.Counters()
	if err != nil {
		return FwdStats{}, err
	}
	return FwdStats{RX: c.RX, TX: c.TX, Drops: map[string]uint64{"xdp-fwd passed to kernel": c.Passed}}, nil
}

// Stop implements Forwarder.
func (x *XDPFwd) Stop() error {
	return errors.Join(x.lnk.Close(), x.f.Close())
}

// XSKNull is the simplest AF_XDP forwarder: the project's director program
// steers VIP traffic to one socket (copy mode on veth); one goroutine
// receives a batch, rewrites the MACs (destination: a real server by
// FlowHash, source: the director) and transmits it on the same socket. No
// conn table, no scheduler: the ceiling of the AF_XDP path on this
// machine. It uses asavie/xdp as is (its GetDescs scans the UMEM's free
// list linearly, and its Transmit panics on unexpected sendto errors,
// turned into an error here).
type XSKNull struct {
	dir    *bpf.Director
	lnk    link.Link
	sock   *xdp.Socket
	cancel context.CancelFunc
	done   chan error
	once   sync.Once

	rx, tx, txFull atomic.Uint64
}

// Name implements Forwarder.
func (*XSKNull) Name() string { return "xsk-null" }

// xskOptions: rings as deep as the dataplane's defaults.
var xskOptions = xdp.SocketOptions{
	NumFrames: 4096, FrameSize: 2048,
	FillRingNumDescs: 2048, CompletionRingNumDescs: 2048,
	RxRingNumDescs: 2048, TxRingNumDescs: 2048,
}

// Start implements Forwarder.
func (x *XSKNull) Start(env Env) error {
	d, err := bpf.LoadDirector()
	if err != nil {
		return err
	}
	var keys []bpf.ServiceKey
	for _, v := range env.VIPs {
		keys = append(keys, bpf.ServiceKey{Addr: v, Proto: 6, Port: env.Port}, bpf.ServiceKey{Addr: v, Proto: 17, Port: env.Port})
	}
	if err := d.SetServices(keys); err != nil {
		d.Close()
		return err
	}
	x.dir = d
	macs := make([][6]byte, len(env.Reals))
	for i, r := range env.Reals {
		copy(macs[i][:], r.MAC)
	}
	var src [6]byte
	copy(src[:], env.DirectorMAC)

	ready := make(chan error, 1)
	x.done = make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	x.cancel = cancel
	go func() {
		// The worker runs inside Do: its OS thread stays in the director
		// namespace and pinned for the whole loop.
		x.done <- env.Dir.Do(func() error {
			var err error
			if x.lnk, err = d.Attach(env.Ifindex); err != nil {
				ready <- err
				return nil
			}
			// A socket closed just before (the previous run) releases
			// the queue asynchronously: retry a busy bind for a while.
			for try := 0; ; try++ {
				x.sock, err = xdp.NewSocket(env.Ifindex, 0, &xskOptions)
				if err == nil || !strings.Contains(err.Error(), "busy") || try == 50 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				ready <- fmt.Errorf("xsk-null: AF_XDP socket on %s: %w", env.Ifname, err)
				return nil
			}
			// Copy mode turns each TX frame into an skb charged to the
			// socket's send buffer; the default (≈200 KB) caps the frames
			// in flight below one veth ring and makes sendto refuse work.
			if err := unix.SetsockoptInt(x.sock.FD(), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20); err != nil {
				ready <- fmt.Errorf("xsk-null: send buffer: %w", err)
				return nil
			}
			if err := d.RegisterSocket(0, x.sock.FD()); err != nil {
				ready <- err
				return nil
			}
			restore, err := pinThread(env.WorkerCPU)
			if err != nil {
				ready <- err
				return nil
			}
			defer restore()
			ready <- nil
			return x.loop(ctx, macs, src)
		})
	}()
	if err := <-ready; err != nil {
		cancel()
		<-x.done
		x.close()
		return err
	}
	return nil
}

func (x *XSKNull) loop(ctx context.Context, reals [][6]byte, src [6]byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("xsk-null: asavie/xdp panicked: %v", r)
		}
	}()
	s := x.sock
	n := uint32(len(reals))
	const batch = 64
	pfd := []unix.PollFd{{Fd: int32(s.FD()), Events: unix.POLLIN}}
	for ctx.Err() == nil {
		if c := s.NumCompleted(); c > 0 {
			s.Complete(c)
		}
		s.Fill(s.GetDescs(s.NumFreeFillSlots()))
		nrx := s.NumReceived()
		if nrx == 0 {
			// Sleep until frames arrive: the NAPI thread that fills the
			// ring may share this CPU. (asavie/xdp's Poll also asks for
			// POLLOUT, which is always ready, and would spin.)
			if _, err := unix.Poll(pfd, 100); err != nil && err != unix.EINTR {
				return fmt.Errorf("xsk-null: poll: %w", err)
			}
			continue
		}
		descs := s.Receive(min(nrx, batch))
		for i := range descs {
			f := s.GetFrame(descs[i])
			h, _ := benchxdp.FrameHash(f)
			copy(f[0:6], reals[h%n][:])
			copy(f[6:12], src[:])
		}
		sent := s.Transmit(descs)
		// In copy mode one sendto sends at most 32 frames (the kernel's
		// TX batch); asavie/xdp's Transmit kicks once, so kick again
		// while the kernel keeps taking frames.
		for free := s.NumFreeTxSlots(); free < xskOptions.TxRingNumDescs; {
			_, _, _ = unix.Syscall6(unix.SYS_SENDTO, uintptr(s.FD()), 0, 0, unix.MSG_DONTWAIT, 0, 0)
			now := s.NumFreeTxSlots()
			if now == free {
				break
			}
			free = now
		}
		x.rx.Add(uint64(len(descs)))
		x.tx.Add(uint64(sent))
		x.txFull.Add(uint64(len(descs) - sent))
	}
	runtime.KeepAlive(reals)
	return nil
}

// Stats implements Forwarder.
func (x *XSKNull) Stats() (FwdStats, error) {
	c, err := x.dir.Counters()
	if err != nil {
		return FwdStats{}, err
	}
	st, err := x.sock.Stats()
	if err != nil {
		return FwdStats{}, fmt.Errorf("xsk-null: socket stats: %w", err)
	}
	k := st.KernelStats
	return FwdStats{RX: x.rx.Load(), TX: x.tx.Load(), Drops: map[string]uint64{
		"director passed to kernel": c.Passed + c.Malformed + c.NoSocket,
		// Rx_dropped counts frames the socket could not take (no fill
		// descriptor or RX ring full); the other two detail it.
		"xsk rx dropped":       k.Rx_dropped,
		"xsk tx ring full":     x.txFull.Load(),
		"xsk tx invalid descs": k.Tx_invalid_descs,
	}}, nil
}

func (x *XSKNull) close() error {
	var errs []error
	if x.dir != nil {
		// The XSKMAP holds the socket: empty it first so the socket and
		// its queue are released when closed.
		errs = append(errs, x.dir.UnregisterSocket(0))
	}
	if x.sock != nil {
		errs = append(errs, x.sock.Close())
	}
	if x.lnk != nil {
		errs = append(errs, x.lnk.Close())
	}
	if x.dir != nil {
		errs = append(errs, x.dir.Close())
	}
	return errors.Join(errs...)
}

// Stop implements Forwarder.
func (x *XSKNull) Stop() error {
	var err error
	x.once.Do(func() {
		x.cancel()
		err = <-x.done
		err = errors.Join(err, x.close())
	})
	return err
}
