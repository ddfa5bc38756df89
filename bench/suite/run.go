package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/xvs-lb/xvs/bench/benchxdp"
	"github.com/xvs-lb/xvs/bench/trace"
	"github.com/xvs-lb/xvs/internal/netlab"
)

// Options configure a whole run.
type Options struct {
	Runs     int           // measurements per cell; default 5
	Duration time.Duration // generator time per packet measurement; default 2 s
	Sizes    []string      // frame sizes (trace.ParseSize); default 64, 1514
	Place    Placement
	Pcap     string // replay this pcap instead of generated traces (Sizes ignored)
	Trace    trace.Config
	NoPacket bool
	E2E      E2EOptions
	NoE2E    bool
	// Forwarders, if set, limits the packet table to these rows (names
	// as printed: xdp-fwd, xsk-null, xvsd-dr wlc, …).
	Forwarders []string
	Log        io.Writer // progress lines; nil = none
}

func (o *Options) defaults() {
	if o.Runs == 0 {
		o.Runs = 5
	}
	if o.Duration == 0 {
		o.Duration = 2 * time.Second
	}
	if len(o.Sizes) == 0 {
		o.Sizes = []string{"64", "1514"}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
}

// Cell is one forwarder at one frame size: its samples, or why there are
// none.
type Cell struct {
	Forwarder string
	Size      string
	Samples   []Sample
	Err       error // ErrNotAvailable or what failed
	Expected  map[[6]byte]float64
	// Paced is a run offered a quarter of the slowest forwarded rate: no frame
	// should be dropped, so the real-server spread it shows is the
	// forwarder's and not the drop pattern's.
	Paced *Sample
}

// Mpps returns min, median and max of the forwarded rate.
func (c Cell) Mpps() (lo, med, hi float64) {
	v := make([]float64, len(c.Samples))
	for i, s := range c.Samples {
		v[i] = s.Mpps()
	}
	return spread(v)
}

func spread(v []float64) (lo, med, hi float64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[0], v[len(v)/2], v[len(v)-1]
}

// Unaccounted sums the silent losses of all samples, the paced one too.
func (c Cell) Unaccounted() int64 {
	var u int64
	for _, s := range c.Samples {
		u += s.Unaccounted
	}
	if c.Paced != nil {
		u += c.Paced.Unaccounted
	}
	return u
}

// WorstShare is the largest relative deviation of a real server's share of
// forwarded frames from its expected share (0.05 = 5%) in the paced run;
// -1 if there was none.
// forwardedNothing explains runs in which no frame reached a real server:
// a method this xvsd build does not forward (it drops every frame with
// reason "method") is not available; anything else is an error.
func forwardedNothing(ss []Sample) error {
	if len(ss) == 0 {
		return nil
	}
	drops := map[string]uint64{}
	for _, s := range ss {
		if s.Forwarded > 0 {
			return nil
		}
		for k, v := range s.Drops {
			drops[k] += v
		}
	}
	top, n := "", uint64(0)
	for k, v := range drops {
		if v > n || (v == n && k < top) {
			top, n = k, v
		}
	}
	if top == "xvsd drop method" {
		return fmt.Errorf("%w: this xvsd drops every frame with reason \"method\" (forwarding method not in this build)", ErrNotAvailable)
	}
	return fmt.Errorf("forwarded nothing; most drops: %s (%d)", top, n)
}

func (c Cell) WorstShare() float64 {
	if c.Paced == nil {
		return -1
	}
	return worstDev(c.Paced.ByMAC, c.Paced.Forwarded, c.Expected)
}

// shareSummary lists the largest and smallest real-server shares against
// the expected ones.
func shareSummary(s Sample, want map[[6]byte]float64) string {
	type kv struct {
		mac       [6]byte
		got, want float64
	}
	var all []kv
	for mac, w := range want {
		all = append(all, kv{mac, float64(s.ByMAC[mac]) / float64(max(s.Forwarded, 1)), w})
	}
	slices.SortFunc(all, func(a, b kv) int {
		switch {
		case a.got > b.got:
			return -1
		case a.got < b.got:
			return 1
		}
		return 0
	})
	if len(all) == 0 {
		return "-"
	}
	f := func(k kv) string { return fmt.Sprintf("%x %.2f%% (want %.2f%%)", k.mac[4:], 100*k.got, 100*k.want) }
	return "max " + f(all[0]) + ", min " + f(all[len(all)-1])
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// hashShares is the share of frames each real server gets from FlowHash
// (what xdp-fwd and xsk-null do).
func hashShares(frames [][]byte, reals []Real) map[[6]byte]float64 {
	m := map[[6]byte]float64{}
	n := 0
	for _, f := range frames {
		h, ok := benchxdp.FrameHash(f)
		if !ok {
			continue
		}
		var mac [6]byte
		copy(mac[:], reals[h%uint32(len(reals))].MAC)
		m[mac]++
		n++
	}
	for k := range m {
		m[k] /= float64(n)
	}
	return m
}

// equalShares is an even spread over reals (what a scheduler with equal
// weights should give over many flows).
func equalShares(reals []Real) map[[6]byte]float64 {
	m := map[[6]byte]float64{}
	for _, r := range reals {
		var mac [6]byte
		copy(mac[:], r.MAC)
		m[mac] = 1 / float64(len(reals))
	}
	return m
}

// Report is everything a run measured.
type Report struct {
	Opts  Options
	Cells []Cell
	E2E   []E2ECell
	// Shares are the share runs of the devices under test.
	Shares []ShareRun
	Start  time.Time
	Took   time.Duration
	// Load is /proc/loadavg's 1/5/15-minute figures at the start and at
	// the end of the run: other work on the machine moves every figure.
	Load [2]string
}

// loadAvg reads the 1, 5 and 15-minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

type traceSet struct {
	size   string
	frames [][]byte
	vips   []netip.Addr
	port   uint16
}

func (o *Options) traces() ([]traceSet, error) {
	if o.Pcap != "" {
		frames, err := trace.ReadPcapFile(o.Pcap)
		if err != nil {
			return nil, err
		}
		vips, port := pcapServices(frames)
		return []traceSet{{size: "pcap", frames: frames, vips: vips, port: port}}, nil
	}
	var out []traceSet
	for _, size := range o.Sizes {
		c := o.Trace
		c.Size = size
		if len(c.VIPs) == 0 {
			c.VIPs = VIPs(ServiceVIPs)
		}
		if c.Port == 0 {
			c.Port = 80
		}
		tr, err := trace.Generate(c)
		if err != nil {
			return nil, err
		}
		out = append(out, traceSet{size: size, frames: tr.Frames, vips: c.VIPs, port: c.Port})
	}
	return out, nil
}

// pcapServices guesses the services of a user's pcap: every IPv4
// destination of a TCP/UDP frame, with the most common destination port.
func pcapServices(frames [][]byte) ([]netip.Addr, uint16) {
	seen := map[netip.Addr]bool{}
	var vips []netip.Addr
	ports := map[uint16]int{}
	for _, f := range frames {
		if len(f) < 38 || f[12] != 0x08 || f[13] != 0x00 || (f[23] != 6 && f[23] != 17) {
			continue
		}
		ihl := int(f[14]&0x0f) * 4
		if len(f) < 14+ihl+4 {
			continue
		}
		a := netip.AddrFrom4([4]byte(f[30:34]))
		if !seen[a] {
			seen[a] = true
			vips = append(vips, a)
		}
		ports[uint16(f[14+ihl+2])<<8|uint16(f[14+ihl+3])]++
	}
	var port uint16
	for p, n := range ports {
		if n > ports[port] {
			port = p
		}
	}
	return vips, port
}

// forwarderSeat is one row of the packet table: how to make the
// forwarder, and which real-server spread to expect from it.
type forwarderSeat struct {
	name   string
	make   func() (Forwarder, error)
	hashed bool   // spread by FlowHash (baselines) rather than by a scheduler
	sched  string // the scheduler, for the share run (devices under test)
	// queues > 1: a multi-queue veth. twoGens: a generator thread on
	// each of CPUs 0 and 1 (first frame size only, no paced run), the
	// arrangement of the queue-scaling comparison.
	queues    int
	twoGens   bool
	firstSize bool // measured at the first frame size only (extra rows)
}

// Queue-scaling rows: the same DUT and the same two generators, on a 1-
// and a 2-queue veth.
const (
	OneQueueRow = "xvsd-dr wlc 1q 2gen"
	TwoQueueRow = "xvsd-dr wlc 2q 2gen"
)

// Seats are the forwarders measured, in table order: the two baselines,
// then the device under test.
func Seats() []forwarderSeat {
	return []forwarderSeat{
		{name: "xdp-fwd", make: func() (Forwarder, error) { return &XDPFwd{}, nil }, hashed: true},
		{name: "xsk-null", make: func() (Forwarder, error) { return &XSKNull{}, nil }, hashed: true},
		{name: "xsk-asavie", make: func() (Forwarder, error) { return &XSKAsavie{}, nil }, hashed: true, firstSize: true},
		{name: "xvsd-dr wlc", make: func() (Forwarder, error) { return XVSDDR("wlc") }, sched: "wlc"},
		{name: "xvsd-dr mh", make: func() (Forwarder, error) { return XVSDDR("mh") }, sched: "mh"},
		{name: "xvsd-tun wlc", make: func() (Forwarder, error) { return XVSD("TUN", "wlc") }},
		{name: "xvsd-nat wlc", make: func() (Forwarder, error) { return XVSD("NAT", "wlc") }},
		{name: OneQueueRow, make: func() (Forwarder, error) { return XVSDDR("wlc") }, queues: 1, twoGens: true, firstSize: true},
		{name: TwoQueueRow, make: func() (Forwarder, error) { return XVSDDR("wlc") }, queues: 2, twoGens: true, firstSize: true},
	}
}

// Run measures everything Options ask for.
func Run(ctx context.Context, tb netlab.TB, o Options) (*Report, error) {
	o.defaults()
	rep := &Report{Opts: o, Start: time.Now(), Load: [2]string{loadAvg()}}
	defer func() { rep.Load[1] = loadAvg() }()
	if !o.NoPacket {
		if err := runPacket(ctx, tb, o, rep); err != nil {
			return rep, err
		}
	}
	if !o.NoE2E {
		if err := runE2E(ctx, tb, o, rep); err != nil {
			return rep, err
		}
	}
	rep.Took = time.Since(rep.Start)
	return rep, nil
}

func runPacket(ctx context.Context, tb netlab.TB, o Options, rep *Report) error {
	sets, err := o.traces()
	if err != nil {
		return err
	}
	replayers := make([]*benchxdp.Replayer, len(sets))
	for i, ts := range sets {
		if replayers[i], err = benchxdp.LoadReplayer(ts.frames); err != nil {
			return err
		}
		defer replayers[i].Close()
	}
	var shareTr *trace.Trace
	var shareRep, gen2 *benchxdp.Replayer
	defer func() {
		for _, r := range []*benchxdp.Replayer{shareRep, gen2} {
			if r != nil {
				r.Close()
			}
		}
	}()
	for _, seat := range Seats() {
		if len(o.Forwarders) > 0 && !slices.Contains(o.Forwarders, seat.name) {
			continue
		}
		// A fresh veth pair per forwarder, one start for all sizes:
		// asavie/xdp never unmaps its rings, so xsk-null's socket keeps
		// its queue busy until the process exits.
		f, err := seat.make()
		if err == nil && seat.twoGens && runtime.NumCPU() < 2 {
			err = fmt.Errorf("two generators need 2 CPUs: %w", ErrNotAvailable)
		}
		var pl *PacketLab
		var env Env
		if err == nil {
			fmt.Fprintf(o.Log, "packet: %s: starting\n", seat.name)
			if pl, err = NewPacketLabQueues(tb, RealsPerService, o.Place, seat.queues); err == nil {
				env = pl.Env(tb, sets[0].vips, sets[0].port)
				if seat.twoGens {
					// Queue-scaling rows: the DUT may run anywhere, on
					// one queue as on two; only the queues differ.
					env.WorkerCPUs = fmt.Sprintf("0-%d", runtime.NumCPU()-1)
				}
				err = pl.Start(f, env)
			}
		}
		for i, ts := range sets {
			if seat.firstSize && i > 0 {
				break
			}
			var po PacketOptions
			cell := Cell{Forwarder: seat.name, Size: ts.size, Err: err}
			if seat.twoGens && err == nil {
				if gen2 == nil {
					gen2, cell.Err = benchxdp.LoadReplayer(ts.frames)
				}
				po.Gens = []Gen{{R: replayers[i], CPU: 0}, {R: gen2, CPU: 1}}
			}
			reals := Reals(RealsPerService)
			if seat.hashed {
				cell.Expected = hashShares(ts.frames, reals)
			}
			// A scheduler's spread is judged by the share run: the
			// trace has too few flows per service for it.
			for r := 0; cell.Err == nil && r < o.Runs && ctx.Err() == nil; r++ {
				po.Duration = o.Duration
				s, merr := pl.Measure(ctx, replayers[i], f, po)
				if merr != nil {
					cell.Err = merr
					break
				}
				fmt.Fprintf(o.Log, "packet: %-12s %5s run %d: %.3f Mpps forwarded (%.2f offered), unaccounted %d\n",
					seat.name, ts.size, r+1, s.Mpps(), s.OfferedMpps(), s.Unaccounted)
				if s.Unaccounted != 0 {
					fmt.Fprintf(o.Log, "packet: %-12s %5s run %d: sent %d, forwarded %d, other %d, counted drops %v, forwarder %+v\n",
						seat.name, ts.size, r+1, s.Sent, s.Forwarded, s.Other, s.Drops, s.Fwd)
				}
				cell.Samples = append(cell.Samples, s)
			}
			if seat.queues > 1 && pl != nil {
				// Did the generators feed every queue? (cumulative)
				if st, err := ethtoolStats(pl.Dir, pl.DirIf); err == nil {
					var per []string
					for q := range seat.queues {
						per = append(per, fmt.Sprintf("queue %d: %d", q, st[fmt.Sprintf("rx_queue_%d_xdp_packets", q)]))
					}
					fmt.Fprintf(o.Log, "packet: %s: director frames by RX queue: %s\n", seat.name, strings.Join(per, ", "))
				}
			}
			if err := forwardedNothing(cell.Samples); err != nil {
				cell.Err, cell.Samples = err, nil
			}
			if len(cell.Samples) > 0 && cell.Err == nil && ctx.Err() == nil && !seat.twoGens {
				// A quarter of the slowest run: this machine's other load
				// moves capacity by 2-3× between runs.
				lo, _, _ := cell.Mpps()
				rate := max(lo*1e6/4, 1e4)
				// Whole passes over the trace, so that the expected shares
				// (computed over the whole trace) apply exactly.
				passes := max(uint64(rate*o.Duration.Seconds())/uint64(len(ts.frames)), 1)
				s, merr := pl.Measure(ctx, replayers[i], f, PacketOptions{Count: passes * uint64(len(ts.frames)), Rate: rate, Duration: 4 * o.Duration})
				if merr != nil {
					cell.Err = merr
				} else {
					fmt.Fprintf(o.Log, "packet: %-12s %5s paced at %.3f Mpps: %.3f Mpps forwarded, unaccounted %d, counted drops %v, forwarder %+v\n",
						seat.name, ts.size, rate/1e6, s.Mpps(), s.Unaccounted, s.Drops, s.Fwd)
					cell.Paced = &s
					fmt.Fprintf(o.Log, "packet: %-12s %5s paced run: %d real servers got frames; shares: %s\n", seat.name, ts.size, len(s.ByMAC), shareSummary(s, cell.Expected))
				}
			}
			rep.Cells = append(rep.Cells, cell)
		}
		if seat.sched != "" && err == nil && ctx.Err() == nil {
			if shareTr == nil {
				if shareTr, err = shareTrace(sets[0].vips, sets[0].port); err == nil {
					shareRep, err = benchxdp.LoadReplayer(shareTr.Frames)
				}
				if err != nil {
					return fmt.Errorf("share run: %w", err)
				}
			}
			// A quarter of the slowest 64-byte run (new flows cost more
			// than established ones), at least 10 kpps.
			rate := 1e4
			if c := rep.cell(seat.name, sets[0].size); c != nil && len(c.Samples) > 0 {
				lo, _, _ := c.Mpps()
				rate = max(lo*1e6/4, 1e4)
			}
			// From a fresh start, as the scheduler's prediction is: the
			// timed runs leave conn entries behind (flows cut mid-way, some
			// ESTABLISHED, which a least-connection scheduler weighs 256
			// times a new one), and whichever the last run left would skew
			// the shares by up to a third.
			if err = f.Stop(); err == nil {
				err = pl.Start(f, env)
			}
			if err != nil {
				return fmt.Errorf("share run: restart %s: %w", seat.name, err)
			}
			sr := pl.runShare(ctx, shareRep, f, seat.sched, shareTr, rate)
			if sr.Err == nil {
				fmt.Fprintf(o.Log, "packet: %-12s share run at %.3f Mpps: %d flows, forwarded %d, drops %v, unaccounted %d, worst %.1f%% (scheduler alone %.1f%%); %s\n",
					seat.name, rate/1e6, sr.Flows, sr.Sample.Forwarded, sr.Sample.Drops, sr.Sample.Unaccounted, 100*sr.Worst(), 100*sr.Predicted, shareSummary(sr.Sample, sr.want))
			}
			rep.Shares = append(rep.Shares, sr)
		}
		if err == nil {
			if serr := f.Stop(); serr != nil {
				fmt.Fprintf(o.Log, "packet: %s: stop: %v\n", seat.name, serr)
			}
			pl.Lab.Close()
		} else if !errors.Is(err, ErrNotAvailable) {
			fmt.Fprintf(o.Log, "packet: %s: %v\n", seat.name, err)
		}
	}
	return ctx.Err()
}
