package suite

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/xvs-lb/xvs/bench/benchxdp"
	"github.com/xvs-lb/xvs/internal/netlab"
)

// PacketOptions bound one measurement.
type PacketOptions struct {
	Duration time.Duration // generator run time
	Count    uint64        // or a packet count (whichever comes first)
	Rate     float64       // offered packets/s; 0 = as fast as the generator goes
	Settle   time.Duration // wait after the generator stops before checking the sink is quiet; default 100 ms
	// Gens, if set, replace the one generator: each runs its own copy of
	// the trace, pinned to its CPU, all at once (Rate is per generator).
	Gens []Gen
}

// Gen is one generator thread.
type Gen struct {
	R   *benchxdp.Replayer
	CPU int
}

// Sample is one measurement of one forwarder.
type Sample struct {
	Forwarder string
	Sent      uint64 // frames the generator emitted
	Forwarded uint64 // frames the sink counted to a real server's MAC
	Other     uint64 // frames the sink counted to other MACs (the forwarder's own ARP, …)
	Elapsed   time.Duration
	// Drops are the counted losses, by where they happened: the veth
	// rings (kernel counters of both ends) and the forwarder's own.
	Drops map[string]uint64
	// Unaccounted = Sent - Forwarded - Other - sum(Drops): silent loss
	// (or, if negative, frames from elsewhere). Zero is the only good
	// value.
	Unaccounted int64
	ByMAC       map[[6]byte]uint64
	Fwd         FwdStats
}

// Mpps is the forwarded rate over the generator's run time.
func (s Sample) Mpps() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Forwarded) / s.Elapsed.Seconds() / 1e6
}

// OfferedMpps is the generator's rate.
func (s Sample) OfferedMpps() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Sent) / s.Elapsed.Seconds() / 1e6
}

var queueRE = regexp.MustCompile(`^(rx|tx)_queue_\d+_`)

// vethCounters reads the kernel's counters of a veth end: ethtool's
// per-queue XDP counters summed over queues, and the device's dropped
// counters.
func vethCounters(h *netlab.Host, ifname string) (map[string]uint64, error) {
	raw, err := ethtoolStats(h, ifname)
	if err != nil {
		return nil, err
	}
	m := map[string]uint64{}
	for k, v := range raw {
		if loc := queueRE.FindStringSubmatchIndex(k); loc != nil {
			m[k[loc[2]:loc[3]]+"_"+k[loc[1]:]] += v
		}
	}
	out, err := h.Output("ip", "-s", "-j", "link", "show", "dev", ifname)
	if err != nil {
		return nil, err
	}
	var links []struct {
		Stats struct {
			RX struct{ Dropped uint64 } `json:"rx"`
			TX struct{ Dropped uint64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return nil, fmt.Errorf("ip -s -j link show %s: %v", ifname, err)
	}
	m["dev_rx_dropped"] = links[0].Stats.RX.Dropped
	m["dev_tx_dropped"] = links[0].Stats.TX.Dropped
	return m, nil
}

// lossCounters are the kernel counters that each count a frame lost
// between generator, director and sink, once (with ringFull, below):
//   - dir rx_drops: the director's XDP verdict failed (e.g. a redirect to a
//     full AF_XDP socket) or the frame could not become an skb;
//   - dir rx_xdp_drops: the forwarder's program dropped it;
//   - dir rx_xdp_tx_errors: XDP_TX found the generator side's ring full;
//   - dir skb_tx_dropped: a frame sent as an skb (AF_XDP copy mode) found
//     the generator side's ring full (the device's tx_dropped also counts
//     the two XDP transmit errors, which are taken out).
//
// The generator side's rx_xdp_drops are the sink's verdicts, not losses.
var lossCounters = []string{"dir rx_drops", "dir rx_xdp_drops", "dir rx_xdp_tx_errors", "dir skb_tx_dropped"}

// ringFull is the loss key for frames the generator sent that never
// reached the director: its RX ring was full. They are counted as sent
// minus what the director's NAPI thread took off its rings (dir
// rx_xdp_packets), not by the generator side's tx_xdp_xmit_errors: veth
// adds to that counter after dropping the ring's lock, so two generator
// CPUs sending into one director queue (the 1q 2gen row) lose increments
// of it, while a ring's only consumer counts exactly.
const ringFull = "gen→dir ring full"

func (pl *PacketLab) kernelCounters() (map[string]uint64, error) {
	g, err := vethCounters(pl.Gen, pl.GenIf)
	if err != nil {
		return nil, err
	}
	d, err := vethCounters(pl.Dir, pl.DirIf)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for k, v := range g {
		out["gen "+k] = v
	}
	for k, v := range d {
		out["dir "+k] = v
	}
	out["dir skb_tx_dropped"] = d["dev_tx_dropped"] - d["rx_xdp_tx_errors"] - d["tx_xdp_xmit_errors"]
	return out, nil
}

// quiesce waits (at most 10 s) until the sink has seen no frame for
// 300 ms: every ring between generator and sink is drained.
func (pl *PacketLab) quiesce() error {
	var last uint64
	for i := range 100 {
		c, err := pl.Sink.Counts()
		if err != nil {
			return err
		}
		if i > 0 && c.Frames == last {
			return nil
		}
		last = c.Frames
		time.Sleep(300 * time.Millisecond)
	}
	return errors.New("packet lab: frames still arriving at the sink after 10 s")
}

// Env describes the director seat for a forwarder serving vips:port.
func (pl *PacketLab) Env(tb netlab.TB, vips []netip.Addr, port uint16) Env {
	e := Env{TB: tb, Dir: pl.Dir, Ifname: pl.DirIf, Ifindex: pl.DirIdx, DirectorMAC: pl.DirMAC,
		Reals: pl.Reals, VIPs: vips, Port: port, WorkerCPU: pl.Place.Worker, WorkerCPUs: strconv.Itoa(pl.Place.Worker)}
	return e
}

// Start starts f in the director seat and pins the director-side NAPI
// thread, which exists once f has attached its XDP program.
func (pl *PacketLab) Start(f Forwarder, env Env) error {
	if err := f.Start(env); err != nil {
		return fmt.Errorf("%s: start: %w", f.Name(), err)
	}
	if err := Threaded(pl.Dir, pl.DirIf, pl.napiCPUs(pl.Place.DirNAPI)...); err != nil {
		return errors.Join(err, f.Stop())
	}
	return nil
}

// Measure replays frames through the forwarder already started with
// Start and accounts for every frame.
func (pl *PacketLab) Measure(ctx context.Context, r *benchxdp.Replayer, f Forwarder, o PacketOptions) (Sample, error) {
	if o.Settle == 0 {
		o.Settle = 100 * time.Millisecond
	}
	s := Sample{Forwarder: f.Name()}
	// A slow forwarder may still be draining the previous run's backlog.
	if err := pl.quiesce(); err != nil {
		return s, err
	}
	if err := pl.Sink.Reset(); err != nil {
		return s, err
	}
	k0, err := pl.kernelCounters()
	if err != nil {
		return s, err
	}
	f0, err := f.Stats()
	if err != nil {
		return s, err
	}
	gens := o.Gens
	if len(gens) == 0 {
		gens = []Gen{{R: r, CPU: pl.Place.Gen}}
	}
	results := make([]benchxdp.ReplayResult, len(gens))
	errs := make([]error, len(gens))
	var wg sync.WaitGroup
	for i, g := range gens {
		wg.Go(func() {
			errs[i] = pl.Gen.Do(func() error {
				restore, err := pinThread(g.CPU)
				if err != nil {
					return err
				}
				defer restore()
				results[i], err = g.R.Run(ctx, benchxdp.ReplayOptions{Ifindex: pl.GenIdx, Rate: o.Rate, Count: o.Count, Duration: o.Duration})
				return err
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return s, err
	}
	var res benchxdp.ReplayResult
	for _, x := range results {
		res.Emitted += x.Emitted
		res.Errors += x.Errors
		res.Elapsed = max(res.Elapsed, x.Elapsed)
	}
	time.Sleep(o.Settle)
	if err := pl.quiesce(); err != nil {
		return s, err
	}
	k1, err := pl.kernelCounters()
	if err != nil {
		return s, err
	}
	f1, err := f.Stats()
	if err != nil {
		return s, err
	}
	sc, err := pl.Sink.Counts()
	if err != nil {
		return s, err
	}
	s.Sent, s.Elapsed, s.ByMAC = res.Emitted, res.Elapsed, sc.ByMAC
	for _, r := range pl.Reals {
		s.Forwarded += sc.ByMAC[[6]byte(r.MAC)]
	}
	s.Other = sc.Frames - s.Forwarded
	s.Drops = map[string]uint64{}
	for _, k := range lossCounters {
		if d := k1[k] - k0[k]; d > 0 {
			s.Drops[k] = d
		}
	}
	// Frames the director took in beyond those sent (its peer's own
	// packets, e.g. ARP) would make this negative: then none is counted
	// and Unaccounted shows the difference.
	if in := k1["dir rx_xdp_packets"] - k0["dir rx_xdp_packets"]; in < res.Emitted {
		s.Drops[ringFull] = res.Emitted - in
	}
	s.Fwd = FwdStats{RX: f1.RX - f0.RX, TX: f1.TX - f0.TX, Drops: map[string]uint64{}}
	for k, v := range f1.Drops {
		s.Fwd.Drops[k] = v - f0.Drops[k]
	}
	if res.Errors > 0 {
		s.Drops["generator could not build frame"] = res.Errors
	}
	for k, v := range s.Fwd.Drops {
		if v > 0 && countsAsLoss(k) {
			s.Drops[k] = v
		}
	}
	var dropped uint64
	for _, v := range s.Drops {
		dropped += v
	}
	// Frames to other MACs are the director's answers in place of a
	// forwarded frame (ICMP errors back to the client): accounted for,
	// not forwarded. Anything else there (its own ARP) would make
	// Unaccounted negative, which shows.
	s.Unaccounted = int64(s.Sent) - int64(s.Forwarded) - int64(s.Other) - int64(dropped)
	return s, nil
}

// countsAsLoss tells the forwarder's drop counters that are the only record
// of a loss from those a kernel counter in lossCounters records too.
func countsAsLoss(name string) bool {
	switch name {
	case "xsk rx dropped": // the same frames as dir rx_drops
		return false
	}
	return true
}
