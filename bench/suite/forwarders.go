package suite

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
	WorkerCPUs  string // CPU list for a whole-process DUT (taskset -c)
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

// xskBase is what both AF_XDP baselines share: the project's director
// program steering VIP traffic to one socket bound to queue 0 (copy mode on
// veth), asavie/xdp's socket and UMEM set-up with the dataplane's ring
// sizes, an 8 MB send buffer, and one worker goroutine pinned in the
// director namespace running the forwarder's loop.
type xskBase struct {
	name   string
	dir    *bpf.Director
	lnk    link.Link
	sock   *xdp.Socket
	cancel context.CancelFunc
	done   chan error
	once   sync.Once

	rx, tx, txFull atomic.Uint64
}

// xskOptions: rings as deep as the dataplane's defaults.
var xskOptions = xdp.SocketOptions{
	NumFrames: 4096, FrameSize: 2048,
	FillRingNumDescs: 2048, CompletionRingNumDescs: 2048,
	RxRingNumDescs: 2048, TxRingNumDescs: 2048,
}

// xskLoop forwards until ctx ends: reals by FlowHash, src the director.
type xskLoop func(ctx context.Context, reals [][6]byte, src [6]byte) error

// start sets the socket up (bind flags: asavie/xdp's DefaultSocketFlags,
// set for this call) and runs loop on the worker; afterSocket, if set,
// runs on the worker's thread once the socket exists.
func (x *xskBase) start(env Env, bindFlags uint16, afterSocket func() error, loop xskLoop) error {
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
			old := xdp.DefaultSocketFlags
			xdp.DefaultSocketFlags = bindFlags
			for try := 0; ; try++ {
				x.sock, err = xdp.NewSocket(env.Ifindex, 0, &xskOptions)
				if err == nil || !strings.Contains(err.Error(), "busy") || try == 50 {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			xdp.DefaultSocketFlags = old
			if err != nil {
				ready <- fmt.Errorf("%s: AF_XDP socket on %s: %w", x.name, env.Ifname, err)
				return nil
			}
			// Copy mode turns each TX frame into an skb charged to the
			// socket's send buffer; the default (≈200 KB) caps the frames
			// in flight below one veth ring and makes sendto refuse work.
			if err := unix.SetsockoptInt(x.sock.FD(), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20); err != nil {
				ready <- fmt.Errorf("%s: send buffer: %w", x.name, err)
				return nil
			}
			if afterSocket != nil {
				if err := afterSocket(); err != nil {
					ready <- err
					return nil
				}
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
			return loop(ctx, macs, src)
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

// Stats implements Forwarder.
func (x *xskBase) Stats() (FwdStats, error) {
	c, err := x.dir.Counters()
	if err != nil {
		return FwdStats{}, err
	}
	st, err := x.sock.Stats()
	if err != nil {
		return FwdStats{}, fmt.Errorf("%s: socket stats: %w", x.name, err)
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

func (x *xskBase) close() error {
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

// stop ends the loop, then runs release (if set) and closes the socket.
func (x *xskBase) stop(release func() error) error {
	var err error
	x.once.Do(func() {
		x.cancel()
		err = <-x.done
		if release != nil {
			err = errors.Join(err, release())
		}
		err = errors.Join(err, x.close())
	})
	return err
}

// XSKAsavie is xsk-null written with asavie/xdp's ring calls as they are:
// the same forwarding as XSKNull, but GetDescs scans the UMEM's free list
// linearly each loop and its Transmit panics on unexpected sendto errors
// (turned into an error here). Kept as an extra row: it shows what the
// library's bookkeeping costs.
type XSKAsavie struct{ xskBase }

// Name implements Forwarder.
func (*XSKAsavie) Name() string { return "xsk-asavie" }

// Start implements Forwarder.
func (x *XSKAsavie) Start(env Env) error {
	x.name = x.Name()
	return x.start(env, 0, nil, x.loop)
}

// Stop implements Forwarder.
func (x *XSKAsavie) Stop() error { return x.stop(nil) }

func (x *XSKAsavie) loop(ctx context.Context, reals [][6]byte, src [6]byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("xsk-asavie: asavie/xdp panicked: %v", r)
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
				return fmt.Errorf("xsk-asavie: poll: %w", err)
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
	return nil
}
