package dataplane

import (
	"bytes"
	"maps"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestProcessBatchMatchesSingle: processBatch (the worker's path, with its
// prefetch passes and slot hints) gives every frame the verdict and bytes
// that processAt gives it one at a time, over random batches that mix new
// and established flows, the same flow several times in one batch
// (SYN and ACK, FIN, RST, a SYN reopening a closed flow), DR, TUN and NAT,
// UDP, ICMP, frames to no service and garbage, and NAT replies on the
// real servers' side. Two planes with the same
// services see the same frames; their conn counts must agree at the end.
func TestProcessBatchMatchesSingle(t *testing.T) {
	cfgs := []ServiceConfig{drService("wrr", 1, 2), tunService(vip6), natService(vip4, ProtoUDP, 53, 5353, rip1, rip2)}
	single := newTestPlane(t, 1<<12)
	batch := newTestPlane(t, 1<<12)
	for _, p := range []*testPlane{single, batch} {
		p.hops = hopsOnPort1(0)
		p.publish(cfgs...)
	}
	rng := rand.New(rand.NewPCG(7, 11))
	flags := []uint8{TCPSyn, TCPAck, TCPAck, TCPAck, TCPAck | TCPFin, TCPRst, TCPSyn | TCPAck}
	var templates [][]byte
	for port := range 24 {
		sp := uint16(20000 + port)
		for _, fl := range flags {
			templates = append(templates,
				buildFrame(t, frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: sp, dport: 80, flags: fl, payload: 10}),
				buildFrame(t, frameSpec{src: client6, dst: vip6, proto: ProtoTCP, sport: sp, dport: 80, flags: fl, payload: 10}))
		}
		templates = append(templates, buildFrame(t, frameSpec{src: client4, dst: vip4, proto: ProtoUDP, sport: sp, dport: 53, payload: 20}))
	}
	templates = append(templates,
		buildFrame(t, frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: 1, dport: 81, flags: TCPSyn}), // no service
		buildFrame(t, frameSpec{src: client4, dst: vip4, proto: ProtoICMP}),
		[]byte{1, 2, 3},
		// TTL 1: answered with time-exceeded, by every method.
		withTTL(buildFrame(t, frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: 20001, dport: 80, flags: TCPAck, payload: 10}), 14, 1),
		withTTL(buildFrame(t, frameSpec{src: client6, dst: vip6, proto: ProtoTCP, sport: 20002, dport: 80, flags: TCPAck, payload: 10}), 14, 1),
		withTTL(buildFrame(t, frameSpec{src: client4, dst: vip4, proto: ProtoUDP, sport: 20003, dport: 53, payload: 20}), 14, 1))
	// Replies from the NAT real servers, which arrive on port 1, mixed with
	// ICMP errors about their flows, a real server that is a client of the
	// DR VIP itself, and garbage: a slot's reply flag from one batch must
	// not leak into the next.
	var replies [][]byte
	for port := range 24 {
		for _, rs := range []netip.Addr{rip1, rip2} {
			replies = append(replies, natReplyFrame(t, frameSpec{src: rs, dst: client4, proto: ProtoUDP, sport: 5353, dport: uint16(20000 + port), payload: 30}))
		}
		if port%4 == 0 {
			quoted := buildFrame(t, frameSpec{src: client4, dst: rip1, proto: ProtoUDP, sport: uint16(20000 + port), dport: 5353, payload: 20})[14:]
			replies = append(replies, icmpErrorFrame(t, rip1, client4, quoted))
		}
	}
	replies = append(replies,
		natReplyFrame(t, frameSpec{src: rip1, dst: vip4, proto: ProtoTCP, sport: 4000, dport: 80, flags: TCPSyn}),
		natReplyFrame(t, frameSpec{src: rip2, dst: vip4, proto: ProtoTCP, sport: 4001, dport: 80, flags: TCPAck}),
		[]byte{4, 5, 6})
	now := single.table.Now()
	var a, b [64][]byte
	var pk [64]batchPkt
	replied := 0
	for round := range 400 {
		n := 1 + rng.IntN(64)
		for i := range n {
			tpl := templates[rng.IntN(len(templates))]
			a[i], b[i] = withHeadroom(tpl), withHeadroom(tpl)
			pk[i] = batchPkt{buf: b[i], off: headr, n: len(tpl)}
		}
		batch.f.processBatch(pk[:n], batch.snap, now)
		for i := range n {
			out, r := single.f.processAt(a[i], headr, len(a[i])-headr, single.snap, now)
			got := pk[i]
			if got.r != r || got.out != out {
				t.Fatalf("round %d frame %d: batch %v %+v, single %v %+v", round, i, got.r, got.out, r, out)
			}
			if r == DropNone && !bytes.Equal(b[i][out.off:out.off+out.n], a[i][out.off:out.off+out.n]) {
				t.Fatalf("round %d frame %d: batch and single frames differ", round, i)
			}
		}
		// A batch of replies on the real servers' side.
		n = 1 + rng.IntN(32)
		for i := range n {
			tpl := replies[rng.IntN(len(replies))]
			a[i], b[i] = withHeadroom(tpl), withHeadroom(tpl)
			pk[i] = batchPkt{buf: b[i], off: headr, n: len(tpl)}
		}
		batch.f1.processBatch(pk[:n], batch.snap, now)
		for i := range n {
			out, r := single.f1.processAt(a[i], headr, len(a[i])-headr, single.snap, now)
			if got := pk[i]; got.r != r || got.out != out {
				t.Fatalf("round %d reply %d: batch %v %+v, single %v %+v", round, i, got.r, got.out, r, out)
			}
			if r == DropNone {
				replied++
				if !bytes.Equal(b[i][out.off:out.off+out.n], a[i][out.off:out.off+out.n]) {
					t.Fatalf("round %d reply %d: batch and single frames differ", round, i)
				}
			}
		}
		for _, f := range []*forwarder{single.f, batch.f, single.f1, batch.f1} {
			f.flush()
		}
		if round%50 == 49 {
			now += 20 // let SYN_RECV, CLOSE and the like expire now and then
		}
	}
	t.Logf("%d NAT replies forwarded", replied)
	if replied == 0 {
		t.Fatal("no NAT reply was forwarded")
	}
	for _, svc := range single.snap.Services() {
		for _, d := range svc.Dests() {
			sc, bc := single.table.Counts(d.ID), batch.table.Counts(d.ID)
			if sa, ba := sc.Active.Load(), bc.Active.Load(); sa != ba {
				t.Errorf("%s: active %d (single) vs %d (batch)", d.Addr, sa, ba)
			}
			if si, bi := sc.Inactive.Load(), bc.Inactive.Load(); si != bi {
				t.Errorf("%s: inactive %d (single) vs %d (batch)", d.Addr, si, bi)
			}
			if s, b := single.f.dst[d.ID].Packets.Load(), batch.f.dst[d.ID].Packets.Load(); s != b || s == 0 {
				t.Errorf("%s: %d packets (single) vs %d (batch); want equal and > 0", d.Addr, s, b)
			}
		}
	}
}

// TestNATReplyFastMatchesSlow: replies that replyUnchanged lets skip the
// forward entry leave the table exactly as replies that always move it
// (slowReplies): same verdicts, same bytes, and the same entries in the
// same states with the same expiries, over random request and reply
// flags (SYN, ACK, FIN, RST), TCP and UDP, while the clock moves. Every
// TCP state has the same timeout here, so that only the index entry's
// state, not its expiry, tells an ESTABLISHED flow from another.
func TestNATReplyFastMatchesSlow(t *testing.T) {
	cfgs := []ServiceConfig{natService(vip4, ProtoTCP, 80, 8080, rip1, rip2), natService(vip4, ProtoUDP, 53, 5353, rip1, rip2)}
	fast, slow := newTestPlane(t, 1<<12), newTestPlane(t, 1<<12)
	for _, p := range []*testPlane{fast, slow} {
		p.hops = hopsOnPort1(0)
		p.publish(cfgs...)
	}
	slow.f.slowReplies, slow.f1.slowReplies = true, true
	for _, p := range []*testPlane{fast, slow} {
		for st := StateNone; st <= StateSynAck; st++ {
			p.table.timeouts[st].Store(900)
		}
	}
	rng := rand.New(rand.NewPCG(3, 5))
	// Mostly ACKs, so that flows live long enough to be ESTABLISHED.
	flags := func(syn uint8) uint8 {
		switch n := rng.IntN(100); {
		case n < 6:
			return syn
		case n < 10:
			return TCPAck | TCPFin
		case n < 13:
			return TCPRst
		}
		return TCPAck
	}
	now := fast.table.Now()
	fastReplies := 0
	for i := range 20000 {
		port := uint16(30000 + rng.IntN(8))
		udp := rng.IntN(5) == 0
		var fr []byte
		f := func(p *testPlane) *forwarder { return p.f }
		if rng.IntN(2) == 0 {
			s := frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: port, dport: 80, flags: flags(TCPSyn)}
			if udp {
				s.proto, s.dport, s.flags = ProtoUDP, 53, 0
			}
			fr = buildFrame(t, s)
		} else {
			rs := []netip.Addr{rip1, rip2}[rng.IntN(2)]
			s := frameSpec{src: rs, dst: client4, proto: ProtoTCP, sport: 8080, dport: port, flags: flags(TCPSyn | TCPAck)}
			if udp {
				s.proto, s.sport, s.flags = ProtoUDP, 5353, 0
			}
			fr = natReplyFrame(t, s)
			f = func(p *testPlane) *forwarder { return p.f1 }
		}
		a, b := append([]byte(nil), fr...), append([]byte(nil), fr...)
		var rc uint64
		if fr[6] == macRS1[0] && fr[7] == macRS1[1] { // a reply: note whether it may skip
			var p Packet
			var k, rk connKey
			if parseKey(a, &p, &k) == DropNone {
				natReplyKey(&rk, &p, &k)
				if ri, c, _ := fast.table.lookup(&rk, now); ri >= 0 {
					rc = c
				}
			}
		}
		oa, ra := f(fast).processAt(a, 0, len(a), fast.snap, now)
		ob, rb := f(slow).processAt(b, 0, len(b), slow.snap, now)
		if oa != ob || ra != rb || !bytes.Equal(a, b) {
			t.Fatalf("packet %d: fast %v %+v, slow %v %+v", i, ra, oa, rb, ob)
		}
		if rc != 0 && ra == DropNone {
			var p Packet
			Parse(fr, &p)
			if fast.f1.replyUnchanged(&p, rc, now) {
				fastReplies++
			}
		}
		if rng.IntN(50) == 0 {
			now += uint32(rng.IntN(3))
		}
		if i%1000 == 999 {
			if df, ds := dumpTable(fast.table), dumpTable(slow.table); !maps.Equal(df, ds) {
				t.Fatalf("after packet %d the tables differ:\nfast %v\nslow %v", i, df, ds)
			}
		}
	}
	t.Logf("%d replies took the fast path", fastReplies)
	if fastReplies < 1000 {
		t.Errorf("only %d replies took the fast path; the test would not see it misbehave", fastReplies)
	}
}

// dumpTable lists every live slot of t: key → state, expiry and dest (not
// the control word's sequence, which counts writes, nor its tag, which
// depends on the table's hash seed).
func dumpTable(t *ConnTable) map[connKey][3]uint64 {
	m := map[connKey][3]uint64{}
	for b := range t.bk {
		for j := range bucketSlots {
			c := t.bk[b].ctl[j].Load()
			if ctlState(c) == stFree {
				continue
			}
			e := &t.bk[b].ent[j]
			k := connKey{w0: e.w[0] & keyMask, c0: e.w[1], c1: e.w[2], v0: e.w[3], v1: e.w[4]}
			m[k] = [3]uint64{uint64(ctlState(c)), uint64(ctlExpiry(c)), e.w[0] >> 48}
		}
	}
	return m
}
