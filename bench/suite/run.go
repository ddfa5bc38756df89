package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
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
	Log      io.Writer // progress lines; nil = none
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
func (c Cell) WorstShare() float64 {
	if c.Paced == nil {
		return -1
	}
	worst := 0.0
	for _, s := range []Sample{*c.Paced} {
		if s.Forwarded == 0 {
			continue
		}
		for mac, want := range c.Expected {
			got := float64(s.ByMAC[mac]) / float64(s.Forwarded)
			if want > 0 {
				worst = max(worst, abs(got-want)/want)
			}
		}
	}
	return worst
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
	Start time.Time
	Took  time.Duration
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
	hashed bool // spread by FlowHash (baselines) rather than by a scheduler
}

// Seats are the forwarders measured, in table order: the two baselines,
// then the device under test.
func Seats() []forwarderSeat {
	return []forwarderSeat{
		{name: "xdp-fwd", make: func() (Forwarder, error) { return &XDPFwd{}, nil }, hashed: true},
		{name: "xsk-null", make: func() (Forwarder, error) { return &XSKNull{}, nil }, hashed: true},
		{name: "xvsd-dr wlc", make: func() (Forwarder, error) { return XVSDDR("wlc") }},
		{name: "xvsd-dr mh", make: func() (Forwarder, error) { return XVSDDR("mh") }},
	}
}

// Run measures everything Options ask for.
func Run(ctx context.Context, tb netlab.TB, o Options) (*Report, error) {
	o.defaults()
	rep := &Report{Opts: o, Start: time.Now()}
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
	for _, seat := range Seats() {
		// A fresh veth pair per forwarder, one start for all sizes:
		// asavie/xdp never unmaps its rings, so xsk-null's socket keeps
		// its queue busy until the process exits.
		f, err := seat.make()
		var pl *PacketLab
		if err == nil {
			fmt.Fprintf(o.Log, "packet: %s: starting\n", seat.name)
			if pl, err = NewPacketLab(tb, RealsPerService, o.Place); err == nil {
				err = pl.Start(f, pl.Env(tb, sets[0].vips, sets[0].port))
			}
		}
		for i, ts := range sets {
			cell := Cell{Forwarder: seat.name, Size: ts.size, Err: err}
			reals := Reals(RealsPerService)
			if seat.hashed {
				cell.Expected = hashShares(ts.frames, reals)
			} else {
				cell.Expected = equalShares(reals)
			}
			for r := 0; err == nil && r < o.Runs && ctx.Err() == nil; r++ {
				s, merr := pl.Measure(ctx, replayers[i], f, PacketOptions{Duration: o.Duration})
				if merr != nil {
					cell.Err = merr
					break
				}
				fmt.Fprintf(o.Log, "packet: %-12s %5s run %d: %.3f Mpps forwarded (%.2f offered), unaccounted %d\n",
					seat.name, ts.size, r+1, s.Mpps(), s.OfferedMpps(), s.Unaccounted)
				cell.Samples = append(cell.Samples, s)
			}
			if len(cell.Samples) > 0 && cell.Err == nil && ctx.Err() == nil {
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
