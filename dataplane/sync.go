package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrUnknownDest means an imported conn names a service or real server this
// director does not have.
var ErrUnknownDest = errors.New("unknown service or real server")

// ImportConn adds a conn entry or persistence template learned from another
// director (the sync daemon's backup side), so that a takeover keeps
// established connections. Dest IDs are per director: the entry's real
// server is found by address in this director's current snapshot. An entry
// that already exists takes the imported state, expiry and real server (a
// master re-sends its conns as they change and to keep them alive).
func (dp *Dataplane) ImportConn(e ConnEntry) error {
	return importConn(dp.snap.Load(), dp.table, e)
}

func importConn(snap *Snapshot, t *ConnTable, e ConnEntry) error {
	if e.State == stFree || e.State >= stNATOut || (e.Template != (e.State == StateTemplate)) {
		return fmt.Errorf("import conn %v→%v: bad state %d", e.Client, e.Virtual, e.State)
	}
	svc := snap.Lookup(ServiceKey{Addr: e.Virtual.Addr(), Proto: e.Proto, Port: e.Virtual.Port()})
	if svc == nil {
		svc = snap.Lookup(ServiceKey{Addr: e.Virtual.Addr(), Proto: e.Proto})
	}
	if svc == nil {
		return fmt.Errorf("import conn %v→%v: service: %w", e.Client, e.Virtual, ErrUnknownDest)
	}
	var d *Dest
	for _, x := range svc.dests {
		if netip.AddrPortFrom(x.Addr, x.Port) == e.Dest {
			d = x
			break
		}
	}
	if d == nil {
		return fmt.Errorf("import conn %v→%v: real server %v: %w", e.Client, e.Virtual, e.Dest, ErrUnknownDest)
	}
	kind := uint8(kindConn)
	if e.Template {
		kind = kindTmpl
	}
	c0, c1 := addrWords(e.Client.Addr())
	v0, v1 := addrWords(e.Virtual.Addr())
	k := makeKey(e.Proto, kind, c0, c1, e.Client.Port(), v0, v1, e.Virtual.Port())
	now := t.Now()
	ttl := durSeconds(e.Expires)
	exp := now + ttl
	placed := false
	if i, c, id := t.lookup(&k, now); i >= 0 {
		// Known already: take the master's word for state, expiry and
		// real server, as IPVS's backup does with each sync message.
		if id == d.ID {
			t.set(i, c, id, e.State, exp)
			placed = true
		} else {
			t.reap(i, c)
			// A NAT flow's reply index names its real server: the
			// old one's goes with it.
			if od := snap.DestByID(id); od != nil && od.Method == NAT && !e.Template {
				var ok connKey
				natOutKey(&ok, e.Proto, c0, c1, e.Client.Port(), od, natPort(od, e.Virtual.Port()))
				if oi, oc, _ := t.lookup(&ok, now); oi >= 0 {
					t.reap(oi, oc)
				}
			}
		}
	}
	if !placed && !t.insert(&k, d.ID, e.State, exp, now) {
		return fmt.Errorf("import conn %v→%v: conn table full", e.Client, e.Virtual)
	}
	if d.Method == NAT && !e.Template {
		// The reply index, so that the real server's replies find the flow.
		var rk connKey
		natOutKey(&rk, e.Proto, c0, c1, e.Client.Port(), d, natPort(d, e.Virtual.Port()))
		indexed := false
		if i, c, id := t.lookup(&rk, now); i >= 0 {
			if indexed = id == d.ID; indexed {
				t.set(i, c, id, natOutState(e.State), exp)
			} else {
				t.reap(i, c)
			}
		}
		if !indexed && !t.insert(&rk, d.ID, natOutState(e.State), exp, now) {
			return fmt.Errorf("import conn %v→%v: conn table full", e.Client, e.Virtual)
		}
	}
	return nil
}
