package suite

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/xvs-lb/xvs/bench/benchxdp"
	"github.com/xvs-lb/xvs/bench/trace"
	"github.com/xvs-lb/xvs/scheduler"
)

// The share run judges a scheduler's spread over real servers against
// their weights. Over the default trace each VIP has 32 flows for 64 real
// servers, too few to judge anything; this trace has one TCP SYN per flow
// (a SYN is all a scheduler decides on), 64-byte frames, and every flow
// from its own client address, as many as DefaultClients holds: 65534
// flows, 4096 per VIP, 1024 per real server over the 16 VIPs. The
// generator stores 136 bytes per frame, so the trace costs ≈9 MB.
const ShareFlows = 65534

// ShareRun is one device under test's share run.
type ShareRun struct {
	Forwarder string
	Sched     string
	Flows     int
	Rate      float64 // offered frames/s
	Sample    Sample
	Err       error
	// Predicted is the worst deviation from the weights that the
	// project's scheduler package gives for the same flows, picked one
	// by one as the dataplane would (its own statistical spread: Maglev
	// hashes 65534 client addresses, ≈3% standard deviation per real
	// server); -1 if it could not be computed.
	Predicted float64
	want      map[[6]byte]float64
}

// Worst is the largest relative deviation of a real server's share of
// the forwarded frames from its weight's share.
func (s ShareRun) Worst() float64 { return worstDev(s.Sample.ByMAC, s.Sample.Forwarded, s.want) }

// worstDev is the largest |got-want|/want over the real servers of want,
// got being byMAC's share of total; -1 without data.
func worstDev(byMAC map[[6]byte]uint64, total uint64, want map[[6]byte]float64) float64 {
	if total == 0 || len(want) == 0 {
		return -1
	}
	worst := 0.0
	for mac, w := range want {
		got := float64(byMAC[mac]) / float64(total)
		if w > 0 {
			worst = max(worst, abs(got-w)/w)
		}
	}
	return worst
}

func shareTrace(vips []netip.Addr, port uint16) (*trace.Trace, error) {
	return trace.Generate(trace.Config{Packets: ShareFlows, Flows: ShareFlows, Proto: "syn", Size: "64",
		VIPs: vips, Port: port, DistinctClients: true})
}

// predictShares picks a real server for every flow of tr with the
// scheduler package, one scheduler per service (VIP) as the dataplane
// has, each new flow counted as an inactive connection (a SYN), and
// returns the worst deviation of the resulting shares from equal weights.
func predictShares(sched string, tr *trace.Trace, reals []Real) (float64, error) {
	type svc struct {
		s     scheduler.Scheduler
		conns []*scheduler.ConnCounts
	}
	svcs := map[netip.AddrPort]*svc{}
	byMAC := map[[6]byte]uint64{}
	for _, f := range tr.Flows {
		sv := svcs[f.Dst]
		if sv == nil {
			sv = &svc{}
			dests := make([]scheduler.Dest, len(reals))
			for i, r := range reals {
				c := &scheduler.ConnCounts{}
				sv.conns = append(sv.conns, c)
				dests[i] = scheduler.Dest{Weight: 1, Up: true, Conns: c, Addr: r.Addr.As16(), Port: f.Dst.Port()}
			}
			s, err := scheduler.New(sched, scheduler.Options{}, dests)
			if err != nil {
				return -1, fmt.Errorf("share run: scheduler %s: %w", sched, err)
			}
			sv.s = s
			svcs[f.Dst] = sv
		}
		fl := scheduler.Flow{Src: f.Src.Addr().As16(), Dst: f.Dst.Addr().As16(), SrcPort: f.Src.Port(), DstPort: f.Dst.Port(), Proto: uint8(f.Proto)}
		i := sv.s.Pick(&fl)
		if i < 0 {
			return -1, fmt.Errorf("share run: %s picked no real server", sched)
		}
		sv.conns[i].AddInactive(1)
		byMAC[[6]byte(reals[i].MAC)]++
	}
	return worstDev(byMAC, uint64(len(tr.Flows)), equalShares(reals)), nil
}

// runShare replays the share trace once, paced at rate, through f.
func (pl *PacketLab) runShare(ctx context.Context, r *benchxdp.Replayer, f Forwarder, sched string, tr *trace.Trace, rate float64) ShareRun {
	sr := ShareRun{Forwarder: f.Name(), Sched: sched, Flows: len(tr.Frames), Rate: rate, want: equalShares(pl.Reals)}
	var err error
	if sr.Predicted, err = predictShares(sched, tr, pl.Reals); err != nil {
		sr.Predicted = -1
	}
	d := time.Duration(float64(len(tr.Frames))/rate*float64(time.Second))*2 + 5*time.Second
	sr.Sample, sr.Err = pl.Measure(ctx, r, f, PacketOptions{Count: uint64(len(tr.Frames)), Rate: rate, Duration: d})
	return sr
}
