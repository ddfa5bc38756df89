package director

import (
	"time"

	"github.com/xvs-lb/xvs/control"
)

// counterKey names one real server of one service.
type counterKey struct {
	svc  control.ServiceKey
	dest control.DestKey
}

// counters turns the dataplane's ever-growing counters into what ipvsadm
// shows: values since the last -Z, and per-second rates estimated from the
// last two observations at least a second apart (IPVS's estimator averages
// over 2 s; this is the same order of smoothing). Owned by Director.mu.
type counters struct {
	base map[counterKey]control.Stats
	last map[counterKey]sample
}

type sample struct {
	at    time.Time
	raw   control.Stats
	rates control.Rates
}

func (c *counters) zero(k counterKey, raw control.Stats) {
	if c.base == nil {
		c.base = map[counterKey]control.Stats{}
	}
	c.base[k] = raw
}

func (c *counters) observe(k counterKey, raw control.Stats, now time.Time) (control.Stats, control.Rates) {
	if c.last == nil {
		c.last = map[counterKey]sample{}
	}
	b := c.base[k]
	// A real server that was removed and added again starts from zero in
	// the dataplane: forget a base above the raw value.
	if raw.Conns < b.Conns || raw.InPkts < b.InPkts || raw.InBytes < b.InBytes {
		b = control.Stats{}
		delete(c.base, k)
	}
	st := control.Stats{
		Conns: raw.Conns - b.Conns, InPkts: raw.InPkts - b.InPkts, OutPkts: raw.OutPkts - b.OutPkts,
		InBytes: raw.InBytes - b.InBytes, OutBytes: raw.OutBytes - b.OutBytes,
	}
	prev, ok := c.last[k]
	if !ok {
		c.last[k] = sample{at: now, raw: raw}
		return st, control.Rates{}
	}
	dt := now.Sub(prev.at).Seconds()
	if dt < 1 {
		return st, prev.rates
	}
	rate := func(a, b uint64) uint64 {
		if a < b {
			return 0
		}
		return uint64(float64(a-b) / dt)
	}
	r := control.Rates{
		CPS: rate(raw.Conns, prev.raw.Conns), InPPS: rate(raw.InPkts, prev.raw.InPkts), OutPPS: rate(raw.OutPkts, prev.raw.OutPkts),
		InBPS: rate(raw.InBytes, prev.raw.InBytes), OutBPS: rate(raw.OutBytes, prev.raw.OutBytes),
	}
	c.last[k] = sample{at: now, raw: raw, rates: r}
	return st, r
}
