package dataplane

import (
	"bytes"
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
		[]byte{1, 2, 3})
	// Replies from the NAT real servers, which arrive on port 1.
	var replies [][]byte
	for port := range 24 {
		for _, rs := range []netip.Addr{rip1, rip2} {
			replies = append(replies, natReplyFrame(t, frameSpec{src: rs, dst: client4, proto: ProtoUDP, sport: 5353, dport: uint16(20000 + port), payload: 30}))
		}
	}
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
