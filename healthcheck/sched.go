package healthcheck

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// loop is the pool's one scheduling goroutine. It keeps every checker in a
// heap ordered by when its next check is due and sleeps on an epoll set
// until then. TCP_CHECKs never leave the loop: it opens a non-blocking
// socket, adds it to the epoll set and keeps the checker in a second heap
// under its connect deadline; writability (or the deadline) settles the
// check. Other checkers run their probe on a goroutine that lives as long
// as the probe (bounded by its context deadline) and hand the result back.
//
// Compared with a goroutine and a timer per checker this removes the
// per-check goroutine wake-ups and the net.Conn machinery: at 1000
// TCP_CHECKs a second the loop sleeps about once per 20 ms grid step
// (onGrid) and handles every check due in it.
//
// Everything in checkerRun marked "loop" is owned by this goroutine.
type loop struct {
	p    *Pool
	base time.Time // heap keys count from here (monotonic)
	epfd int       // -1: epoll unavailable, every probe runs on a goroutine
	evfd int       // eventfd that wakes epoll_wait; -1 with epfd

	// The loop parks in the Go runtime's poller on epfd (nested epoll)
	// rather than in a blocking epoll_wait: a goroutine sitting in a
	// system call keeps sysmon polling to retake its P, which was 11% of
	// the pool's CPU in profiles of BenchmarkPool1000TCP.
	epf    *os.File
	rc     syscall.RawConn
	pollFn func(uintptr) bool // l.pollReady, bound once
	// parkedUntil is the read deadline set on epf, from base (-1: none).
	parkedUntil time.Duration
	nReady      int
	pollErr     error

	wakeCh  chan struct{} // the wake-up when epoll is unavailable
	pending atomic.Bool   // a wake-up is signalled and not yet consumed

	mu   sync.Mutex // guards ops, done, quit
	ops  []loopOp
	done []probeDone
	quit bool

	due      dueHeap       // checkers waiting for their next check
	inflight checkerHeap   // TCP_CHECKs connecting, by deadline
	byFD     []*checkerRun // in-flight TCP_CHECK sockets by descriptor
	events   []unix.EpollEvent
	nWaits   atomic.Uint64  // times the loop slept, for the benchmark
	probes   sync.WaitGroup // probe goroutines
	timer    *time.Timer    // for the wait without epoll
}

// testNoEpoll and testNoPoller, set by tests, make new pools use the
// fallbacks: no epoll at all, or epoll without the runtime's poller.
var testNoEpoll, testNoPoller bool

type loopOp struct {
	cr     *checkerRun
	remove bool
}

type probeDone struct {
	cr *checkerRun
	r  result
}

func newLoop(p *Pool) *loop {
	l := &loop{p: p, base: time.Now(), epfd: -1, evfd: -1, wakeCh: make(chan struct{}, 1),
		events: make([]unix.EpollEvent, 256)}
	l.pollFn = l.pollReady
	l.parkedUntil = -1
	if testNoEpoll {
		return l
	}
	if err := l.openEpoll(); err != nil {
		p.log.Warn("healthcheck: no epoll, TCP_CHECK runs one goroutine per probe", "err", err)
	}
	return l
}

func (l *loop) openEpoll() error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		_ = unix.Close(evfd)
		_ = unix.Close(epfd)
		return err
	}
	l.epfd, l.evfd = epfd, evfd
	// An epoll descriptor is itself pollable: hand it to the runtime's
	// poller. Without that (not expected on Linux) wait blocks in
	// epoll_wait instead.
	if testNoPoller {
		return nil
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		return nil
	}
	// From here the File owns epfd (closing it when collected).
	l.epf = os.NewFile(uintptr(epfd), "healthcheck-epoll")
	if l.epf.SetReadDeadline(time.Time{}) != nil {
		return nil // not in the poller; epoll_wait ignores O_NONBLOCK
	}
	if rc, err := l.epf.SyscallConn(); err == nil {
		l.rc = rc
	}
	return nil
}

// pollReady is the RawConn.Read callback: collect ready events without
// blocking; false parks the goroutine until epfd is readable.
func (l *loop) pollReady(uintptr) bool {
	for {
		// Raw, like the per-check calls (rawConnect): with timeout 0 it
		// does not block.
		r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])),
			uintptr(len(l.events)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		l.nReady, l.pollErr = 0, nil
		if e != 0 {
			l.pollErr = e
			return true
		}
		l.nReady = int(r)
		return r > 0
	}
}

// post hands the loop a checker to start or stop.
func (l *loop) post(op loopOp) {
	l.mu.Lock()
	l.ops = append(l.ops, op)
	l.mu.Unlock()
	l.wake()
}

// stop makes run return after closing its sockets and waiting for its
// probes. The wake-up is written under mu so that run, which reads quit
// under mu before closing the eventfd, cannot close it first.
func (l *loop) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.quit = true
	l.pending.Store(true)
	l.signal()
}

func (l *loop) wake() {
	if l.pending.CompareAndSwap(false, true) {
		l.signal()
	}
}

var one = [8]byte{1}

func (l *loop) signal() {
	if l.evfd < 0 {
		select {
		case l.wakeCh <- struct{}{}:
		default:
		}
		return
	}
	// EAGAIN means the counter is already non-zero: the loop will wake.
	_, _ = unix.Write(l.evfd, one[:])
}

// run is the loop goroutine; it returns after stop.
func (l *loop) run() {
	defer l.p.checkers.Done()
	for {
		now := time.Now()
		if !l.drain(now) {
			break
		}
		mono := now.Sub(l.base)
		for len(l.inflight) > 0 && l.inflight[0].at <= mono {
			cr := heap.Pop(&l.inflight).(*checkerRun)
			l.closeFD(cr)
			l.settle(cr, cr.tcp.timedOut(cr.timeout), now)
		}
		for len(l.due) > 0 && l.due[0].at <= mono {
			if cr := l.due.pop(); !cr.removed {
				l.fire(cr, now)
			}
		}
		next := time.Duration(-1)
		if len(l.due) > 0 {
			next = l.due[0].at
		}
		if len(l.inflight) > 0 && (next < 0 || l.inflight[0].at < next) {
			next = l.inflight[0].at
		}
		l.wait(next)
	}
	for _, cr := range l.byFD {
		if cr != nil {
			l.closeFD(cr)
		}
	}
	l.probes.Wait()
	if l.epfd >= 0 {
		_ = unix.Close(l.evfd)
		if l.epf != nil {
			_ = l.epf.Close()
		} else {
			_ = unix.Close(l.epfd)
		}
	}
}

// drain takes posted checkers and probe results; false once stopped.
func (l *loop) drain(now time.Time) bool {
	l.mu.Lock()
	ops, done, quit := l.ops, l.done, l.quit
	l.ops, l.done = nil, nil
	l.mu.Unlock()
	if quit {
		return false
	}
	for _, op := range ops {
		cr := op.cr
		if op.remove {
			cr.removed = true // its entry in due is dropped when it comes up
			if cr.hidx >= 0 {
				heap.Remove(&l.inflight, cr.hidx)
			}
			if cr.fd >= 0 {
				l.closeFD(cr)
			}
			continue
		}
		// The random warmup spreads checkers sharing a delay_loop over it.
		cr.due = now
		if cr.st.warmup > 0 {
			cr.due = now.Add(rand.N(cr.st.warmup))
		}
		l.schedule(cr, onGrid(cr.due, cr.st.delayLoop))
	}
	for _, d := range done {
		d.cr.busy = false
		if d.cr.removed || d.cr.ctx.Err() != nil {
			continue
		}
		l.settle(d.cr, d.r, time.Now())
	}
	return true
}

// wait sleeps until next (from base; forever if negative), a socket is
// ready or a wake-up arrives, and settles the ready sockets.
func (l *loop) wait(next time.Duration) {
	d := time.Duration(-1)
	if next >= 0 {
		d = max(next-time.Since(l.base), 0)
	}
	if l.epfd < 0 {
		l.nWaits.Add(1)
		l.waitChan(d)
		return
	}
	var n int
	var err error
	if l.rc != nil {
		// Sockets opened just now are often ready already (and a past
		// deadline would make RawConn.Read return before polling).
		l.pollReady(0)
		n, err = l.nReady, l.pollErr
		if n == 0 && err == nil && d != 0 { // park in the runtime's poller
			l.nWaits.Add(1)
			// The deadline changes once per sleep, not once per call:
			// each change is a runtime timer update that can wake the
			// thread sleeping in the runtime's poller.
			if next != l.parkedUntil {
				var dl time.Time
				if next >= 0 {
					dl = l.base.Add(next)
				}
				_ = l.epf.SetReadDeadline(dl)
				l.parkedUntil = next
			}
			if rerr := l.rc.Read(l.pollFn); rerr != nil && !errors.Is(rerr, os.ErrDeadlineExceeded) {
				err = rerr
			}
			n = l.nReady
			if l.pollErr != nil {
				err = l.pollErr
			}
		}
	} else {
		l.nWaits.Add(1)
		ms := -1
		if d >= 0 {
			// Round up: waking early would only spin until the deadline.
			ms = int(min((d+time.Millisecond-1)/time.Millisecond, 1<<30))
		}
		n, err = unix.EpollWait(l.epfd, l.events, ms)
		if errors.Is(err, unix.EINTR) {
			return
		}
	}
	if err != nil {
		l.p.log.Error("healthcheck: epoll_wait", "err", err)
		time.Sleep(10 * time.Millisecond) // do not spin on a persistent error
		return
	}
	now := time.Now()
	for _, ev := range l.events[:n] {
		fd := int(ev.Fd)
		if fd == l.evfd {
			var buf [8]byte
			_, _ = unix.Read(l.evfd, buf[:])
			l.pending.Store(false)
			continue
		}
		if fd >= len(l.byFD) || l.byFD[fd] == nil {
			continue
		}
		cr := l.byFD[fd]
		l.byFD[fd], cr.fd = nil, -1
		heap.Remove(&l.inflight, cr.hidx)
		l.settle(cr, cr.tcp.finish(fd, ev.Events), now)
	}
}

func (l *loop) waitChan(d time.Duration) {
	if d < 0 {
		<-l.wakeCh
		l.pending.Store(false)
		return
	}
	if l.timer == nil {
		l.timer = time.NewTimer(d)
	} else {
		l.timer.Reset(d)
	}
	select {
	case <-l.wakeCh:
		l.pending.Store(false)
	case <-l.timer.C:
	}
	l.timer.Stop()
}

func (l *loop) schedule(cr *checkerRun, at time.Time) {
	l.due.push(at.Sub(l.base), cr)
}

func (l *loop) closeFD(cr *checkerRun) {
	rawClose(cr.fd)
	l.byFD[cr.fd], cr.fd = nil, -1
}

// fire starts a checker's check that is due.
func (l *loop) fire(cr *checkerRun, now time.Time) {
	p := l.p
	if cr.haSuspend.Load() && p.suspended.Load() {
		cr.due = now.Add(cr.st.delayLoop)
		l.schedule(cr, onGrid(cr.due, cr.st.delayLoop))
		return
	}
	if cr.tcp == nil || l.epfd < 0 {
		l.goProbe(cr)
		return
	}
	fd, err := cr.tcp.open()
	if err == nil {
		ev := unix.EpollEvent{Events: unix.EPOLLOUT, Fd: int32(fd)}
		if err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			rawClose(fd)
			err = fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	if err != nil {
		l.settle(cr, fail("%v", err), now)
		return
	}
	for fd >= len(l.byFD) {
		l.byFD = append(l.byFD, nil)
	}
	l.byFD[fd], cr.fd = cr, fd
	cr.at = now.Add(cr.timeout).Sub(l.base)
	heap.Push(&l.inflight, cr)
}

// goProbe runs a probe on its own goroutine, bounded by the checker's
// timeout; the result comes back through done.
func (l *loop) goProbe(cr *checkerRun) {
	cr.busy = true
	l.probes.Add(1)
	go func() {
		defer l.probes.Done()
		ctx, cancel := context.WithTimeout(cr.ctx, cr.timeout)
		r := cr.prober.probe(ctx)
		cancel()
		l.mu.Lock()
		l.done = append(l.done, probeDone{cr, r})
		l.mu.Unlock()
		l.wake()
	}()
}

// settle applies keepalived's retry rule to a finished check and
// schedules the next one.
func (l *loop) settle(cr *checkerRun, r result, now time.Time) {
	p := l.p
	p.nChecks.Add(1)
	if !r.ok {
		p.nFailures.Add(1)
	}
	// The next check is due delay_loop after the previous one was due, so
	// the rate stays one per delay_loop however long probes take; a
	// checker that fell behind starts afresh from now.
	loop := cr.st.delayLoop
	if cr.due = cr.due.Add(loop); cr.due.Before(now) {
		cr.due = now
	}
	next := onGrid(cr.due, loop)
	switch {
	case r.ok:
		cr.retries = 0
		p.report(cr, r, 0)
	case p.checkerUp(cr) && cr.retries < cr.st.retry:
		cr.retries++
		p.logAttempt(cr, r)
		cr.due = now.Add(cr.st.delayBeforeRetry)
		next = cr.due
	default:
		p.report(cr, r, cr.retries)
		cr.retries = 0
	}
	l.schedule(cr, next)
}

// dueHeap orders checkers by when their next check is due. The key sits
// in the entry, so sifting through 1000 entries does not touch 1000
// checkers' cache lines (it showed in profiles); a stopped checker is not
// removed but skipped when it comes up.
type dueHeap []dueEntry

type dueEntry struct {
	at time.Duration // from loop.base
	cr *checkerRun
}

func (h *dueHeap) push(at time.Duration, cr *checkerRun) {
	*h = append(*h, dueEntry{at, cr})
	s := *h
	for i := len(s) - 1; i > 0; {
		parent := (i - 1) / 2
		if s[parent].at <= s[i].at {
			break
		}
		s[parent], s[i] = s[i], s[parent]
		i = parent
	}
}

func (h *dueHeap) pop() *checkerRun {
	s := *h
	top := s[0].cr
	n := len(s) - 1
	s[0] = s[n]
	s[n] = dueEntry{}
	s = s[:n]
	for i := 0; ; {
		least, l, r := i, 2*i+1, 2*i+2
		if l < n && s[l].at < s[least].at {
			least = l
		}
		if r < n && s[r].at < s[least].at {
			least = r
		}
		if least == i {
			break
		}
		s[i], s[least] = s[least], s[i]
		i = least
	}
	*h = s
	return top
}

// checkerHeap orders connecting checkers by deadline (at); hidx tracks
// positions so a checker leaves when its socket is ready or it is stopped.
type checkerHeap []*checkerRun

func (h checkerHeap) Len() int           { return len(h) }
func (h checkerHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h checkerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}

func (h *checkerHeap) Push(x any) {
	cr := x.(*checkerRun)
	cr.hidx = len(*h)
	*h = append(*h, cr)
}

func (h *checkerHeap) Pop() any {
	old := *h
	cr := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	cr.hidx = -1
	return cr
}
