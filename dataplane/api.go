package dataplane

import (
	"fmt"
	"net/netip"

	"github.com/xvs-lb/xvs/bpf"
)

// Stats is a point-in-time copy of the dataplane's counters.
type Stats struct {
	Queues    []QueueStat
	Director  bpf.Counters // the XDP program's verdicts
	TableFull uint64       // inserts that found no room
	Slots     int          // conn table slots
}

// Stats reads every queue's counters, the sockets' kernel counters and the
// XDP program's counters.
func (dp *Dataplane) Stats() (Stats, error) {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	var s Stats
	if dp.closed {
		return s, fmt.Errorf("dataplane: closed")
	}
	for _, w := range dp.workers {
		if ks, err := w.x.kernelStats(); err == nil {
			k := &w.q.KernelStats
			k.RXDropped.Store(ks.Rx_dropped)
			k.RXInvalidDescs.Store(ks.Rx_invalid_descs)
			k.TXInvalidDescs.Store(ks.Tx_invalid_descs)
			k.RXRingFull.Store(ks.Rx_ring_full)
			k.RXFillRingEmpty.Store(ks.Rx_fill_ring_empty_descs)
			k.TXRingEmptyDescs.Store(ks.Tx_ring_empty_descs)
		}
		q := w.q.snapshot()
		q.Interface, q.Queue = w.ifname, w.x.queue
		s.Queues = append(s.Queues, q)
	}
	for _, dir := range dp.dirs {
		c, err := dir.Counters()
		if err != nil {
			return s, fmt.Errorf("dataplane stats: %w", err)
		}
		s.Director.Redirected += c.Redirected
		s.Director.Passed += c.Passed
		s.Director.Malformed += c.Malformed
		s.Director.NoSocket += c.NoSocket
	}
	s.TableFull = dp.table.FullDrops()
	s.Slots = dp.table.Slots()
	return s, nil
}

// DestStat is one real server's counters (ipvsadm -L --stats per real server).
type DestStat struct {
	Addr     netip.Addr
	Port     uint16
	Weight   int32
	Up       bool
	HasMAC   bool
	Active   int32 // ActiveConn
	Inactive int32 // InActConn
	Persist  int32 // persistence templates
	Conns    uint64
	Packets  uint64 // InPkts (DR/TUN: the director sees only inbound)
	Bytes    uint64
}

// ServiceStat is one service and its real servers' counters. Service
// counters are the sums over its current real servers.
type ServiceStat struct {
	Key         ServiceKey
	Method      Method
	Scheduler   string
	Active      bool
	Persistence int64 // seconds
	Conns       uint64
	Packets     uint64
	Bytes       uint64
	Dests       []DestStat
}

// ServiceStats returns per-service and per-real-server counters for xvsadm
// --stats; --rate is the difference of two calls over time.
func (dp *Dataplane) ServiceStats() []ServiceStat {
	snap := dp.snap.Load()
	dp.mu.Lock()
	workers := dp.workers
	dp.mu.Unlock()
	var out []ServiceStat
	for _, svc := range snap.Services() {
		ss := ServiceStat{Key: svc.Key, Method: svc.Method, Scheduler: svc.schedName, Active: svc.Active,
			Persistence: int64(svc.persist)}
		for _, d := range svc.dests {
			c := dp.table.Counts(d.ID)
			ds := DestStat{Addr: d.Addr, Port: d.Port, Weight: d.Weight, Up: d.Up, HasMAC: d.HasMAC,
				Active: c.Active.Load(), Inactive: c.Inactive.Load(), Persist: c.Persist.Load()}
			for _, w := range workers {
				st := &w.f.dst[d.ID]
				ds.Conns += st.Conns.Load()
				ds.Packets += st.Packets.Load()
				ds.Bytes += st.Bytes.Load()
			}
			ss.Conns += ds.Conns
			ss.Packets += ds.Packets
			ss.Bytes += ds.Bytes
			ss.Dests = append(ss.Dests, ds)
		}
		out = append(out, ss)
	}
	return out
}

// ConnEntry is a conn-table entry with its real server resolved against the
// current snapshot (xvsadm -Lnc).
type ConnEntry struct {
	ConnInfo
	Dest netip.AddrPort // zero when the real server was removed
}

// Conns calls f for every live conn-table entry until f returns false.
func (dp *Dataplane) Conns(f func(ConnEntry) bool) {
	snap := dp.snap.Load()
	dp.table.Conns(func(ci ConnInfo) bool {
		e := ConnEntry{ConnInfo: ci}
		if d := snap.DestByID(ci.DestID); d != nil {
			e.Dest = netip.AddrPortFrom(d.Addr, d.Port)
		}
		return f(e)
	})
}

// ZeroStats zeroes the per-real-server counters (ipvsadm -Z). Counts of
// live connections are state, not statistics, and stay. Packets a worker
// counts while this runs may land on either side of the reset.
func (dp *Dataplane) ZeroStats() {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	for _, w := range dp.workers {
		for i := range w.f.dst {
			ds := &w.f.dst[i]
			ds.Conns.Store(0)
			ds.Packets.Store(0)
			ds.Bytes.Store(0)
		}
	}
}
