package suite

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"
)

// Verdicts printed against each target.
const (
	Pass  = "pass"
	Short = "short"
	NA    = "not available"
)

// Targets (issue 9's acceptance).
const (
	TargetVsXSKNull   = 0.9 // xvsd DR ≥ 0.9× xsk-null, same run
	TargetTwoQueue    = 1.6 // 2-queue veth ≥ 1.6× single queue
	TargetShare       = 0.05
	TargetVsHAProxy   = 1.5 // short connections/s through xvsd ≥ 1.5× HAProxy
	TargetVsKernelFwd = 0.9 // … and ≥ 0.9× kernel forwarding
)

func (r *Report) cell(fwd, size string) *Cell {
	for i := range r.Cells {
		if r.Cells[i].Forwarder == fwd && r.Cells[i].Size == size {
			return &r.Cells[i]
		}
	}
	return nil
}

func (r *Report) e2e(path, mode string) *E2ECell {
	for i := range r.E2E {
		if r.E2E[i].Path == path && r.E2E[i].Mode == mode {
			return &r.E2E[i]
		}
	}
	return nil
}

func errText(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if errors.Is(err, ErrNotAvailable) {
		if err == ErrNotAvailable {
			return NA
		}
		return NA + ": " + s
	}
	return "error: " + s
}

// Write prints the report: the packet table, the end-to-end table and the
// targets with pass/short/not available.
func (r *Report) Write(w io.Writer) {
	fmt.Fprintf(w, "xvs-bench: %d CPUs, %s; %d runs per cell\n", runtime.NumCPU(), r.Opts.Place, r.Opts.Runs)
	fmt.Fprintf(w, "load average (1/5/15 min) at start %s, at end %s\n", r.Load[0], r.Load[1])
	if len(r.Cells) > 0 {
		fmt.Fprintf(w, "\npacket replay (veth, AF_XDP copy mode, 1 queue; %v per run; Mpps forwarded = frames at the sink / generator time)\n", r.Opts.Duration)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "forwarder\tframe\tmin\tmedian\tmax\toffered\tunaccounted\tpaced: drops\tshare dev.\t")
		for _, c := range r.Cells {
			if c.Err != nil && len(c.Samples) == 0 {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t%s\n", c.Forwarder, c.Size, errText(c.Err))
				continue
			}
			pacedDrops, share := "-", "-"
			if c.Paced != nil {
				pacedDrops = fmt.Sprint(int64(c.Paced.Sent) - int64(c.Paced.Forwarded) - c.Paced.Unaccounted)
				share = pct(c.WorstShare())
			}
			lo, med, hi := c.Mpps()
			off := make([]float64, len(c.Samples))
			for i, s := range c.Samples {
				off[i] = s.OfferedMpps()
			}
			_, offMed, _ := spread(off)
			fmt.Fprintf(tw, "%s\t%s\t%.3f\t%.3f\t%.3f\t%.2f\t%d\t%s\t%s\t\n", c.Forwarder, c.Size, lo, med, hi, offMed, c.Unaccounted(), pacedDrops, share)
		}
		tw.Flush()
	}
	if len(r.Shares) > 0 {
		fmt.Fprintf(w, "\nreal-server shares (share run: %d TCP SYNs, one per flow, each from its own client address, over the %d-VIP service table, paced; deviation from equal weights)\n", ShareFlows, ServiceVIPs)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "forwarder\toffered Mpps\tforwarded\tdrops\tunaccounted\tworst dev.\tscheduler alone\t")
		for _, sr := range r.Shares {
			if sr.Err != nil {
				fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t%s\n", sr.Forwarder, errText(sr.Err))
				continue
			}
			fmt.Fprintf(tw, "%s\t%.3f\t%d\t%d\t%d\t%.1f%%\t%s\t\n", sr.Forwarder, sr.Rate/1e6, sr.Sample.Forwarded,
				int64(sr.Sample.Sent)-int64(sr.Sample.Forwarded)-sr.Sample.Unaccounted, sr.Sample.Unaccounted, 100*sr.Worst(), pct(sr.Predicted))
		}
		tw.Flush()
	}
	if len(r.E2E) > 0 {
		fmt.Fprintf(w, "\nend to end (wrk -t1 -c%d on the client, nginx real servers; requests/s, latency medians over runs)\n", max(r.Opts.E2E.Connections, 32))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "path\tconnections\tmin\tmedian\tmax\tp50\tp99\terrors\t")
		for _, c := range r.E2E {
			if c.Err != nil && len(c.Samples) == 0 {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t%s\n", c.Path, c.Mode, errText(c.Err))
				continue
			}
			lo, med, hi := c.RPS()
			p50, p99 := c.Latency()
			errs := 0
			for _, s := range c.Samples {
				errs += s.Errors
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.0f\t%v\t%v\t%d\t\n", c.Path, c.Mode, lo, med, hi, p50, p99, errs)
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "\ntargets\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range r.Targets() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t\n", t.Name, t.Value, t.Verdict)
	}
	tw.Flush()
}

// Target is one acceptance line.
type Target struct{ Name, Value, Verdict string }

func ratio(num, den *Cell) (float64, error) {
	if num == nil || den == nil {
		return 0, ErrNotAvailable
	}
	for _, c := range []*Cell{num, den} {
		if len(c.Samples) == 0 {
			if c.Err != nil {
				return 0, c.Err
			}
			return 0, ErrNotAvailable
		}
	}
	_, a, _ := num.Mpps()
	_, b, _ := den.Mpps()
	if b == 0 {
		return 0, errors.New("zero baseline")
	}
	return a / b, nil
}

func pct(x float64) string {
	if x < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*x)
}

func verdict(ok bool) string {
	if ok {
		return Pass
	}
	return Short
}

// Targets evaluates the acceptance lines.
func (r *Report) Targets() []Target {
	var ts []Target
	sizes := map[string]bool{}
	var order []string
	for _, c := range r.Cells {
		if !sizes[c.Size] {
			sizes[c.Size] = true
			order = append(order, c.Size)
		}
	}
	for _, size := range order {
		for _, dut := range []string{"xvsd-dr wlc", "xvsd-dr mh", "xvsd-tun wlc", "xvsd-nat wlc"} {
			// The acceptance names DR; TUN and NAT are reported.
			minNull := TargetVsXSKNull
			if !strings.HasPrefix(dut, "xvsd-dr") {
				minNull = 0
			}
			for _, base := range []struct {
				name string
				min  float64
			}{{"xsk-null", minNull}, {"xdp-fwd", 0}} {
				q, err := ratio(r.cell(dut, size), r.cell(base.name, size))
				name := fmt.Sprintf("%s / %s, %s", dut, base.name, size)
				switch {
				case err != nil:
					ts = append(ts, Target{name, "-", errText(err)})
				case base.min == 0:
					ts = append(ts, Target{name, fmt.Sprintf("%.2f×", q), "(reported)"})
				default:
					ts = append(ts, Target{name + fmt.Sprintf(" ≥ %.1f×", base.min), fmt.Sprintf("%.2f×", q), verdict(q >= base.min)})
				}
			}
		}
		// The queue rows are measured at the first size only.
		if size != order[0] {
			continue
		}
		name := fmt.Sprintf("xvsd-dr 2-queue ≥ %.1f× 1-queue (generators on cpu0+cpu1), %s", TargetTwoQueue, size)
		if q, err := ratio(r.cell(TwoQueueRow, size), r.cell(OneQueueRow, size)); err != nil {
			ts = append(ts, Target{name, "-", errText(err)})
		} else {
			ts = append(ts, Target{name, fmt.Sprintf("%.2f×", q), verdict(q >= TargetTwoQueue)})
		}
		if q, err := ratio(r.cell(TwoQueueRow, size), r.cell("xvsd-dr wlc", size)); err == nil {
			ts = append(ts, Target{fmt.Sprintf("%s / xvsd-dr wlc (1 queue, generator on cpu0 only), %s", TwoQueueRow, size), fmt.Sprintf("%.2f×", q), "(reported)"})
		}
	}
	for _, c := range r.Cells {
		if len(c.Samples) == 0 {
			continue
		}
		u := c.Unaccounted()
		ts = append(ts, Target{fmt.Sprintf("no silent loss, %s %s", c.Forwarder, c.Size), fmt.Sprintf("%d unaccounted", u), verdict(u == 0)})
		if ws := c.WorstShare(); ws >= 0 {
			ts = append(ts, Target{fmt.Sprintf("real-server shares ±5%% (paced run), %s %s", c.Forwarder, c.Size), fmt.Sprintf("worst %.1f%%", 100*ws), verdict(ws <= TargetShare)})
		}
	}
	for _, sr := range r.Shares {
		name := fmt.Sprintf("real-server shares ±5%% of weights (share run), %s", sr.Forwarder)
		if sr.Err != nil {
			ts = append(ts, Target{name, "-", errText(sr.Err)})
			continue
		}
		u := sr.Sample.Unaccounted
		ts = append(ts, Target{fmt.Sprintf("no silent loss, share run, %s", sr.Forwarder), fmt.Sprintf("%d unaccounted", u), verdict(u == 0)})
		ws := sr.Worst()
		ts = append(ts, Target{name, fmt.Sprintf("worst %.1f%% (scheduler alone %s)", 100*ws, pct(sr.Predicted)), verdict(ws >= 0 && ws <= TargetShare)})
	}
	if len(r.E2E) > 0 {
		dut := r.e2e("xvsd-dr", "close")
		for _, base := range []struct {
			path string
			min  float64
		}{{"haproxy", TargetVsHAProxy}, {"kernel-fwd", TargetVsKernelFwd}} {
			b := r.e2e(base.path, "close")
			name := fmt.Sprintf("short conns/s xvsd-dr / %s ≥ %.1f×", base.path, base.min)
			switch {
			case dut == nil || len(dut.Samples) == 0:
				reason := error(ErrNotAvailable)
				if dut != nil && dut.Err != nil {
					reason = dut.Err
				}
				ts = append(ts, Target{name, "-", errText(reason)})
			case b == nil || len(b.Samples) == 0:
				ts = append(ts, Target{name, "-", "baseline missing"})
			default:
				_, a, _ := dut.RPS()
				_, d, _ := b.RPS()
				ts = append(ts, Target{name, fmt.Sprintf("%.2f×", a/d), verdict(a >= base.min*d)})
			}
		}
	}
	return ts
}
