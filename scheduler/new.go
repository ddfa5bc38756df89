package scheduler

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// ErrUnknown is returned (wrapped) for a scheduler name New does not know.
var ErrUnknown = errors.New("unknown scheduler")

// ErrBadFlag is returned (wrapped) by ParseSchedFlags for a flag ipvsadm
// would reject.
var ErrBadFlag = errors.New("invalid scheduler flag")

type builder func(b base, prev Scheduler) (Scheduler, error)

var builders = map[string]builder{
	"rr":    buildRR,
	"wrr":   buildWRR,
	"lc":    buildLC,
	"wlc":   buildWLC,
	"lblc":  buildLBLC,
	"lblcr": buildLBLCR,
	"dh":    buildDH,
	"sh":    buildSH,
	"sed":   buildSED,
	"nq":    buildNQ,
	"mh":    buildMH,
	"fo":    buildFO,
	"ovf":   buildOVF,
	"twos":  buildTWOS,
}

// Names lists the scheduler names New accepts, sorted.
func Names() []string {
	names := make([]string, 0, len(builders))
	for n := range builders {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// New builds the named scheduler (names as ipvsadm and keepalived spell
// them) over dests. Errors name the scheduler and the offending dest.
func New(name string, opts Options, dests []Dest) (Scheduler, error) {
	return build(name, opts, dests, nil)
}

func build(name string, opts Options, dests []Dest, prev Scheduler) (Scheduler, error) {
	bf, ok := builders[name]
	if !ok {
		return nil, fmt.Errorf("scheduler %q: %w", name, ErrUnknown)
	}
	b, err := newBase(name, opts, dests)
	if err != nil {
		return nil, err
	}
	s, err := bf(b, prev)
	if err != nil {
		return nil, fmt.Errorf("scheduler %s: %w", name, err)
	}
	// Only once the build has succeeded: attaching may take the counts'
	// updates away from the scheduler built before.
	s.(interface{ baseOf() *base }).baseOf().attach(indexKinds[name], name == "lblc" || name == "lblcr")
	return s, nil
}

// base is the immutable part every scheduler shares: the dests as given
// and the "live" ones (Up), which play the role of IPVS's destination list.
type base struct {
	name   string
	opts   Options
	all    []Dest
	live   []Dest  // Up dests, in order
	idx    []int32 // live[i] is all[idx[i]]
	slots  []slot  // slots[i] is live[i] packed for the list walkers
	thresh bool    // some live dest has an upper threshold
	ix     *index  // lc, wlc, sed, nq, lblc, lblcr: see index.go
}

func (b *base) baseOf() *base { return b }

// slot is what the list walkers (lc, wlc, sed, nq, lblc, lblcr) read of a
// live dest, packed three to a Dest's size so a walk touches fewer lines.
type slot struct {
	c     *ConnCounts
	w     int32
	upper int32
}

// over is live[i].Overloaded() for a slot known to have an upper
// threshold. The walkers test "sl.w <= 0 || (sl.upper > 0 && over(i))"
// inline: the common case then costs no call.
func (b *base) over(i int) bool { return b.live[i].overloadSlow() }

func newBase(name string, opts Options, dests []Dest) (base, error) {
	b := base{name: name, opts: opts, all: slices.Clone(dests)}
	if len(dests) > 1<<24 {
		return base{}, fmt.Errorf("scheduler %s: %d dests: too many", name, len(dests))
	}
	for i := range b.all {
		d := &b.all[i]
		switch {
		case d.Conns == nil:
			return base{}, fmt.Errorf("scheduler %s: dest %d: nil Conns", name, i)
		case d.Weight < 0:
			return base{}, fmt.Errorf("scheduler %s: dest %d: negative weight %d", name, i, d.Weight)
		case d.Upper < 0 || d.Lower < 0:
			return base{}, fmt.Errorf("scheduler %s: dest %d: negative threshold", name, i)
		}
		if d.Up {
			b.live = append(b.live, *d)
			b.idx = append(b.idx, int32(i))
			b.slots = append(b.slots, slot{c: d.Conns, w: d.Weight, upper: d.Upper})
			if d.Upper > 0 {
				b.thresh = true
			}
		}
	}
	return b, nil
}

func (b *base) Name() string { return b.name }

// avail is IPVS's "may take a new flow": not quiesced, not overloaded.
func avail(d *Dest) bool { return d.Weight > 0 && !d.Overloaded() }

// livePos maps each live dest's identity (its ConnCounts) to its position.
func (b *base) livePos() map[*ConnCounts]int32 {
	m := make(map[*ConnCounts]int32, len(b.live))
	for i := range b.live {
		m[b.live[i].Conns] = int32(i)
	}
	return m
}

// ParseSchedFlags parses ipvsadm's -b argument (comma-separated) for
// scheduler sched ("" = ipvsadm's default, wlc). As in ipvsadm, sh-* flags
// are valid only with sh and mh-* only with mh; flag-1 and flag-2 are the
// raw bits behind sh-/mh-fallback and sh-/mh-port and set both; flag-3 is
// accepted and has no effect. Empty elements are skipped.
func ParseSchedFlags(sched, flags string) (Options, error) {
	var o Options
	if sched == "" {
		sched = "wlc"
	}
	for f := range strings.SplitSeq(flags, ",") {
		switch {
		case f == "":
		case f == "flag-1":
			o.SHFallback, o.MHFallback = true, true
		case f == "flag-2":
			o.SHPort, o.MHPort = true, true
		case f == "flag-3":
		case f == "sh-fallback" && sched == "sh":
			o.SHFallback = true
		case f == "sh-port" && sched == "sh":
			o.SHPort = true
		case f == "mh-fallback" && sched == "mh":
			o.MHFallback = true
		case f == "mh-port" && sched == "mh":
			o.MHPort = true
		default:
			return Options{}, fmt.Errorf("sched-flags %q for %s: %q: %w", flags, sched, f, ErrBadFlag)
		}
	}
	return o, nil
}

// FormatSchedFlags renders o's flags for sched as ipvsadm lists them, or ""
// when none applies.
func FormatSchedFlags(sched string, o Options) string {
	var fs []string
	switch sched {
	case "sh":
		if o.SHFallback {
			fs = append(fs, "sh-fallback")
		}
		if o.SHPort {
			fs = append(fs, "sh-port")
		}
	case "mh":
		if o.MHFallback {
			fs = append(fs, "mh-fallback")
		}
		if o.MHPort {
			fs = append(fs, "mh-port")
		}
	}
	return strings.Join(fs, ",")
}
