package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/xvs-lb/xvs/scheduler"
)

var (
	rs1 = netip.MustParseAddr("198.18.0.11")
	rs2 = netip.MustParseAddr("198.18.0.12")
)

// testPlane is a forwarder and snapshot without sockets: the packet path as
// unit tests and benchmarks drive it.
type testPlane struct {
	tb    testing.TB
	table *ConnTable
	ids   idAllocator
	snap  *Snapshot
	f     *forwarder // receives on port 0 (the clients' side)
	f1    *forwarder // receives on port 1 (NAT real servers' side)
	hops  func(netip.Addr) (nextHop, bool)
}

func newTestPlane(tb testing.TB, size int, cfgs ...ServiceConfig) *testPlane {
	tb.Helper()
	p := &testPlane{tb: tb, table: NewConnTable(size), ids: idAllocator{ids: map[destIdentity]uint16{}}}
	var mac [6]byte
	copy(mac[:], macDir)
	ports := []portInfo{{mac: mac, src4: dir4.As4(), has4: true, mtu: 1500}, {mac: [6]byte(macDirRS), src4: dirRS4.As4(), has4: true, mtu: 1500}}
	neigh := newNeighCache()
	p.f = newForwarder(p.table, ports, 0, neigh, &QueueStats{})
	p.f1 = newForwarder(p.table, ports, 1, neigh, &QueueStats{})
	p.publish(cfgs...)
	return p
}

func (p *testPlane) publish(cfgs ...ServiceConfig) {
	p.tb.Helper()
	s, err := buildSnapshot(cfgs, p.snap, &p.ids, p.table, p.hops)
	if err != nil {
		p.tb.Fatal(err)
	}
	p.snap = s
}

func drService(sched string, w1, w2 int32) ServiceConfig {
	return ServiceConfig{
		Key: ServiceKey{Addr: vip4, Proto: ProtoTCP, Port: 80}, Method: DR, Scheduler: sched, Active: true,
		Dests: []DestConfig{
			{Addr: rs1, Weight: w1, Up: true, MAC: macRS1},
			{Addr: rs2, Weight: w2, Up: true, MAC: macRS2},
		},
	}
}

func TestForwardDR(t *testing.T) {
	p := newTestPlane(t, 1024, drService("rr", 1, 1))
	now := p.table.Now()
	syn := buildFrame(t, tcp4(40000, TCPSyn))
	orig := append([]byte(nil), syn...)
	if r := p.f.process(syn, p.snap, now); r != DropNone {
		t.Fatalf("SYN: %v", r)
	}
	dst := syn[0:6]
	if !bytes.Equal(syn[6:12], macDir) || !(bytes.Equal(dst, macRS1) || bytes.Equal(dst, macRS2)) {
		t.Fatalf("MACs after DR: dst %x src %x", dst, syn[6:12])
	}
	if !bytes.Equal(syn[12:], hopped(orig, 14)[12:]) {
		t.Fatal("DR changed bytes past the Ethernet addresses other than the TTL")
	}
	first := append([]byte(nil), dst...)
	// The rest of the flow follows the entry, whatever rr would pick next.
	for _, fl := range []uint8{TCPAck, TCPAck, TCPAck | TCPFin} {
		fr := buildFrame(t, tcp4(40000, fl))
		if r := p.f.process(fr, p.snap, now); r != DropNone || !bytes.Equal(fr[0:6], first) {
			t.Fatalf("flags %#x: %v to %x, want %x", fl, r, fr[0:6], first)
		}
	}
	// A second connection goes to the other real server (rr).
	fr := buildFrame(t, tcp4(40001, TCPSyn))
	if r := p.f.process(fr, p.snap, now); r != DropNone || bytes.Equal(fr[0:6], first) {
		t.Fatalf("second flow: %v to %x, first went to %x", r, fr[0:6], first)
	}
}

func TestForwardDrops(t *testing.T) {
	svc := drService("rr", 1, 1)
	inactive := svc
	inactive.Active = false
	nomac := svc
	nomac.Dests = []DestConfig{{Addr: rs1, Weight: 1, Up: true}}
	down := svc
	down.Dests = []DestConfig{{Addr: rs1, Weight: 1, Up: false, MAC: macRS1}}
	tests := []struct {
		name string
		svc  ServiceConfig
		spec frameSpec
		want DropReason
	}{
		{"no service port", svc, frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: 1, dport: 81, flags: TCPSyn}, DropNoService},
		{"no service proto", svc, frameSpec{src: client4, dst: vip4, proto: ProtoUDP, sport: 1, dport: 80}, DropNoService},
		{"ack without conn", svc, tcp4(1, TCPAck), DropNoConn},
		{"syn rst", svc, tcp4(1, TCPSyn|TCPRst), DropNoConn},
		{"inactive", inactive, tcp4(1, TCPSyn), DropInactive},
		{"no mac", nomac, tcp4(1, TCPSyn), DropNoDest},
		{"down", down, tcp4(1, TCPSyn), DropNoDest},
		{"icmp", svc, frameSpec{src: client4, dst: vip4, proto: ProtoICMP}, DropL4Proto},
		{"ok", svc, tcp4(1, TCPSyn), DropNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPlane(t, 64, tc.svc)
			if got := p.f.process(buildFrame(t, tc.spec), p.snap, p.table.Now()); got != tc.want {
				t.Fatalf("process = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestForwardWeightZeroAndRemoval(t *testing.T) {
	p := newTestPlane(t, 1024, drService("rr", 1, 1))
	now := p.table.Now()
	// Establish one flow on each real server.
	to := map[string]uint16{}
	for port := uint16(100); port < 102; port++ {
		fr := buildFrame(t, tcp4(port, TCPSyn))
		if r := p.f.process(fr, p.snap, now); r != DropNone {
			t.Fatal(r)
		}
		to[string(fr[0:6])] = port
		p.f.process(buildFrame(t, tcp4(port, TCPAck)), p.snap, now)
	}
	rs2Port := to[string(macRS2)]
	// Weight 0 on rs2: new flows all go to rs1, rs2's flow keeps working.
	p.publish(drService("rr", 1, 0))
	for port := uint16(200); port < 220; port++ {
		fr := buildFrame(t, tcp4(port, TCPSyn))
		if r := p.f.process(fr, p.snap, now); r != DropNone || !bytes.Equal(fr[0:6], macRS1) {
			t.Fatalf("new flow with rs2 at weight 0: %v to %x", r, fr[0:6])
		}
	}
	fr := buildFrame(t, tcp4(rs2Port, TCPAck))
	if r := p.f.process(fr, p.snap, now); r != DropNone || !bytes.Equal(fr[0:6], macRS2) {
		t.Fatalf("established flow on quiesced rs2: %v to %x", r, fr[0:6])
	}
	id2 := p.snap.services[makeSvcKey(ServiceKey{vip4, ProtoTCP, 80})].dests[1].ID
	if a := p.table.Counts(id2).Active.Load(); a != 1 {
		t.Fatalf("rs2 active = %d, want 1", a)
	}
	// Removing rs2 drops its flow and frees the entry (expire_nodest_conn).
	svc := drService("rr", 1, 1)
	svc.Dests = svc.Dests[:1]
	p.publish(svc)
	if r := p.f.process(buildFrame(t, tcp4(rs2Port, TCPAck)), p.snap, now); r != DropDestGone {
		t.Fatalf("flow of removed rs2: %v, want %v", r, DropDestGone)
	}
	if a := p.table.Counts(id2).Active.Load(); a != 0 {
		t.Fatalf("removed rs2 still counts %d active", a)
	}
	if r := p.f.process(buildFrame(t, tcp4(rs2Port, TCPAck)), p.snap, now); r != DropNoConn {
		t.Fatalf("after removal: %v, want %v", r, DropNoConn)
	}
}

func TestForwardPersistence(t *testing.T) {
	svc := drService("rr", 1, 1)
	svc.Persistence = 50 * time.Second
	svc.PersistenceMask = 24
	p := newTestPlane(t, 1024, svc)
	now := p.table.Now()
	var first []byte
	for port := uint16(1000); port < 1020; port++ {
		fr := buildFrame(t, tcp4(port, TCPSyn))
		if r := p.f.process(fr, p.snap, now); r != DropNone {
			t.Fatal(r)
		}
		if first == nil {
			first = append([]byte(nil), fr[0:6]...)
		} else if !bytes.Equal(fr[0:6], first) {
			t.Fatalf("port %d went to %x, template says %x", port, fr[0:6], first)
		}
	}
	// Same /24: same real server. Another /24: the scheduler decides, and
	// rr's next pick is the other server.
	spec := tcp4(5, TCPSyn)
	spec.src = netip.MustParseAddr("198.18.0.77")
	fr := buildFrame(t, spec)
	p.f.process(fr, p.snap, now)
	if !bytes.Equal(fr[0:6], first) {
		t.Fatalf("same /24 went to %x, want %x", fr[0:6], first)
	}
	spec.src = netip.MustParseAddr("198.18.1.77")
	fr = buildFrame(t, spec)
	p.f.process(fr, p.snap, now)
	if bytes.Equal(fr[0:6], first) {
		t.Fatalf("other /24 stuck to %x too", first)
	}
	tmpl := map[netip.AddrPort]bool{}
	p.table.Conns(func(ci ConnInfo) bool {
		if ci.Template {
			tmpl[ci.Client] = true
		}
		return true
	})
	want := map[netip.AddrPort]bool{netip.MustParseAddrPort("198.18.0.0:0"): true, netip.MustParseAddrPort("198.18.1.0:0"): true}
	if len(tmpl) != len(want) || !tmpl[netip.MustParseAddrPort("198.18.0.0:0")] || !tmpl[netip.MustParseAddrPort("198.18.1.0:0")] {
		t.Fatalf("templates %v, want %v", tmpl, want)
	}
}

func TestForwardUDPAndConnReuse(t *testing.T) {
	udp := ServiceConfig{Key: ServiceKey{Addr: vip4, Proto: ProtoUDP, Port: 53}, Method: DR, Scheduler: "rr", Active: true,
		Dests: []DestConfig{{Addr: rs1, Weight: 1, Up: true, MAC: macRS1}, {Addr: rs2, Weight: 1, Up: true, MAC: macRS2}}}
	p := newTestPlane(t, 1024, udp, drService("rr", 1, 1))
	now := p.table.Now()
	spec := frameSpec{src: client4, dst: vip4, proto: ProtoUDP, sport: 5000, dport: 53}
	a := buildFrame(t, spec)
	p.f.process(a, p.snap, now)
	for range 5 {
		b := buildFrame(t, spec)
		if r := p.f.process(b, p.snap, now); r != DropNone || !bytes.Equal(a[0:6], b[0:6]) {
			t.Fatalf("udp flow moved: %v %x vs %x", r, b[0:6], a[0:6])
		}
	}
	// A TCP flow that closed (RST → CLOSE) and sees a new SYN is rescheduled.
	s1 := buildFrame(t, tcp4(7000, TCPSyn))
	p.f.process(s1, p.snap, now)
	p.f.process(buildFrame(t, tcp4(7000, TCPAck)), p.snap, now)
	p.f.process(buildFrame(t, tcp4(7000, TCPRst)), p.snap, now)
	var st uint8
	p.table.Conns(func(ci ConnInfo) bool {
		if ci.Client.Port() == 7000 {
			st = ci.State
		}
		return true
	})
	if st != StateClose {
		t.Fatalf("after RST state %s, want CLOSE", StateName(st))
	}
	s2 := buildFrame(t, tcp4(7000, TCPSyn))
	if r := p.f.process(s2, p.snap, now); r != DropNone || bytes.Equal(s1[0:6], s2[0:6]) {
		t.Fatalf("reused port: %v to %x, old %x (rr should move it)", r, s2[0:6], s1[0:6])
	}
}

func TestForwardAllocs(t *testing.T) {
	p := newTestPlane(t, 1<<16, drService("rr", 1, 1))
	now := p.table.Now()
	fr := buildFrame(t, tcp4(40000, TCPSyn))
	p.f.process(fr, p.snap, now)
	ack := buildFrame(t, tcp4(40000, TCPAck))
	if n := testing.AllocsPerRun(1000, func() { p.f.process(ack, p.snap, now) }); n != 0 {
		t.Errorf("established path allocates %v", n)
	}
	port := uint16(1)
	syn := buildFrame(t, tcp4(1, TCPSyn))
	if n := testing.AllocsPerRun(1000, func() {
		port++
		syn[34], syn[35] = byte(port>>8), byte(port)
		p.f.process(syn, p.snap, now)
	}); n != 0 {
		t.Errorf("new-flow path allocates %v", n)
	}
}

func TestForwardIPv6AndVLAN(t *testing.T) {
	rs6a, rs6b := netip.MustParseAddr("2001:db8::11"), netip.MustParseAddr("2001:db8::12")
	svc6 := ServiceConfig{Key: ServiceKey{Addr: vip6, Proto: ProtoTCP, Port: 443}, Method: DR, Scheduler: "rr", Active: true,
		Dests: []DestConfig{{Addr: rs6a, Weight: 1, Up: true, MAC: macRS1}, {Addr: rs6b, Weight: 1, Up: true, MAC: macRS2}}}
	p := newTestPlane(t, 1024, svc6, drService("rr", 1, 1))
	now := p.table.Now()
	spec := frameSpec{src: client6, dst: vip6, proto: ProtoTCP, sport: 3333, dport: 443, flags: TCPSyn}
	syn := buildFrame(t, spec)
	if r := p.f.process(syn, p.snap, now); r != DropNone || !bytes.Equal(syn[0:6], macRS1) {
		t.Fatalf("IPv6 SYN: %v to %x", r, syn[0:6])
	}
	spec.flags = TCPAck
	ack := buildFrame(t, spec)
	if r := p.f.process(ack, p.snap, now); r != DropNone || !bytes.Equal(ack[0:6], macRS1) {
		t.Fatalf("IPv6 ACK: %v to %x", r, ack[0:6])
	}
	var found bool
	p.table.Conns(func(ci ConnInfo) bool {
		found = found || (ci.Client == netip.AddrPortFrom(client6, 3333) && ci.Virtual == netip.AddrPortFrom(vip6, 443) && ci.State == StateEstablished)
		return true
	})
	if !found {
		t.Fatal("IPv6 conn entry not listed as ESTABLISHED")
	}
	// A VLAN-tagged frame keeps its tag; only the MACs change.
	v := tcp4(4444, TCPSyn)
	v.vlan = 12
	fr := buildFrame(t, v)
	orig := append([]byte(nil), fr...)
	if r := p.f.process(fr, p.snap, now); r != DropNone {
		t.Fatalf("VLAN SYN: %v", r)
	}
	if !bytes.Equal(fr[12:], hopped(orig, 18)[12:]) || !bytes.Equal(fr[6:12], macDir) {
		t.Fatal("VLAN frame changed beyond its MACs and TTL")
	}
}

func TestForwardTableFull(t *testing.T) {
	p := newTestPlane(t, 8, drService("rr", 1, 1)) // 16 slots
	now := p.table.Now()
	fwd := 0
	for port := uint16(1); port <= 64; port++ {
		if p.f.process(buildFrame(t, tcp4(port, TCPSyn)), p.snap, now) == DropNone {
			fwd++
		}
	}
	if fwd != 64 {
		t.Fatalf("%d of 64 new flows forwarded with a full table, want all", fwd)
	}
	full := p.f.q.TableFull.Load()
	if full == 0 || full != p.table.FullDrops() {
		t.Fatalf("TableFull %d, table FullDrops %d: want equal and > 0", full, p.table.FullDrops())
	}
	// A flow that found no room is still forwarded on its later packets
	// (scheduled per packet while the table is under pressure).
	if r := p.f.process(buildFrame(t, tcp4(64, TCPAck)), p.snap, now); r != DropNone {
		t.Fatalf("ACK of an unrecorded flow with a full table: %v", r)
	}
	// Entries already in the table are unaffected.
	var listed int
	p.table.Conns(func(ConnInfo) bool { listed++; return true })
	if uint64(listed)+full != 64 {
		t.Fatalf("%d entries + %d overflowed != 64 flows", listed, full)
	}
}

// FuzzProcess runs whole frames through the packet path (parse, conn table,
// scheduler, rewrite): no panic, and a transmitted frame differs from its
// input only in the Ethernet addresses.
func FuzzProcess(f *testing.F) {
	for _, s := range []frameSpec{
		tcp4(40000, TCPSyn), tcp4(40000, TCPAck), tcp4(40000, TCPRst),
		{vlan: 5, src: client4, dst: vip4, proto: ProtoTCP, sport: 1, dport: 80, flags: TCPSyn, payload: 100},
		{src: client4, dst: vip4, proto: ProtoUDP, sport: 1, dport: 53, payload: 30},
		{src: client6, dst: vip6, proto: ProtoTCP, sport: 1, dport: 80, flags: TCPSyn},
	} {
		f.Add(buildFrame(f, s))
	}
	udp := ServiceConfig{Key: ServiceKey{Addr: vip4, Proto: ProtoUDP, Port: 53}, Method: DR, Scheduler: "rr", Active: true,
		Dests: []DestConfig{{Addr: rs1, Weight: 1, Up: true, MAC: macRS1}}}
	p := newTestPlane(f, 1024, drService("rr", 1, 1), udp)
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := append([]byte(nil), b...)
		if p.f.process(b, p.snap, p.table.Now()) != DropNone {
			if !bytes.Equal(b, orig) {
				t.Fatal("dropped frame was modified")
			}
			return
		}
		var q Packet
		if Parse(orig, &q) != DropNone {
			t.Fatal("forwarded a frame that does not parse")
		}
		want := hopped(orig, int(q.L3))
		if !q.IPv6 {
			// The IPv4 header checksum is updated, not recomputed: a
			// valid one stays valid (as recomputed), a broken one stays
			// broken (the receiver's kernel drops the packet, as it
			// would have without the director).
			if Checksum(orig[q.L3:q.L4], 0) != 0 {
				if Checksum(b[q.L3:q.L4], 0) == 0 {
					t.Fatal("forwarding mended a broken IPv4 header checksum")
				}
				copy(want[int(q.L3)+10:int(q.L3)+12], b[int(q.L3)+10:int(q.L3)+12])
			}
		}
		if !bytes.Equal(b[12:], want[12:]) || !bytes.Equal(b[6:12], macDir) {
			t.Fatal("forwarded frame changed beyond its MACs and TTL")
		}
	})
}

// TestForwardPersistenceKeptByTraffic: a template outlives its timeout while
// a connection it placed carries traffic, as LVS keeps templates that still
// control connections. (LVS also keeps it for idle connections; xvs lets it
// expire then — see the package README.)
func TestForwardPersistenceKeptByTraffic(t *testing.T) {
	svc := drService("rr", 1, 1)
	svc.Persistence = 50 * time.Second
	p := newTestPlane(t, 1024, svc)
	now := p.table.Now()
	syn := buildFrame(t, tcp4(1000, TCPSyn))
	p.f.process(syn, p.snap, now)
	first := append([]byte(nil), syn[0:6]...)
	for dt := uint32(40); dt <= 160; dt += 40 {
		if r := p.f.process(buildFrame(t, tcp4(1000, TCPAck)), p.snap, now+dt); r != DropNone {
			t.Fatalf("t+%d: %v", dt, r)
		}
	}
	fr := buildFrame(t, tcp4(1001, TCPSyn))
	p.f.process(fr, p.snap, now+170)
	if !bytes.Equal(fr[0:6], first) {
		t.Fatalf("new connection at t+170 went to %x, template (kept by traffic) says %x", fr[0:6], first)
	}
}

// TestImportConn moves a master's entries to a backup whose real servers
// have other dest IDs; the backup forwards the flow to the same real server.
func TestImportConn(t *testing.T) {
	svc := drService("rr", 1, 1)
	svc.Persistence = 50 * time.Second
	master := newTestPlane(t, 1024, svc)
	now := master.table.Now()
	syn := buildFrame(t, tcp4(2000, TCPSyn))
	master.f.process(syn, master.snap, now)
	master.f.process(buildFrame(t, tcp4(2000, TCPAck)), master.snap, now)
	rev := svc
	rev.Dests = []DestConfig{svc.Dests[1], svc.Dests[0]}
	backup := newTestPlane(t, 1024, drService("rr", 1, 1)) // takes IDs 1, 2 for rs1, rs2
	backup.publish(rev, ServiceConfig{Key: ServiceKey{Addr: vip4, Proto: ProtoUDP, Port: 1}, Scheduler: "rr", Active: true,
		Dests: []DestConfig{{Addr: rs2, Weight: 1, Up: true, MAC: macRS2}}})
	var n int
	master.table.Conns(func(ci ConnInfo) bool {
		d := master.snap.DestByID(ci.DestID)
		e := ConnEntry{ConnInfo: ci, Dest: netip.AddrPortFrom(d.Addr, d.Port)}
		if err := importConn(backup.snap, backup.table, e); err != nil {
			t.Fatal(err)
		}
		n++
		return true
	})
	if n != 2 {
		t.Fatalf("exported %d entries, want conn + template", n)
	}
	fr := buildFrame(t, tcp4(2000, TCPAck))
	if r := backup.f.process(fr, backup.snap, backup.table.Now()); r != DropNone || !bytes.Equal(fr[0:6], syn[0:6]) {
		t.Fatalf("backup forwarded the synced flow: %v to %x, master sent it to %x", r, fr[0:6], syn[0:6])
	}
	fr = buildFrame(t, tcp4(2001, TCPSyn))
	backup.f.process(fr, backup.snap, backup.table.Now())
	if !bytes.Equal(fr[0:6], syn[0:6]) {
		t.Fatalf("synced template not honoured: %x, want %x", fr[0:6], syn[0:6])
	}
	err := importConn(backup.snap, backup.table, ConnEntry{
		ConnInfo: ConnInfo{Proto: ProtoTCP, Client: netip.MustParseAddrPort("198.18.0.10:5"), Virtual: netip.AddrPortFrom(vip4, 80), State: StateEstablished},
		Dest:     netip.MustParseAddrPort("198.18.0.99:80"),
	})
	if !errors.Is(err, ErrUnknownDest) {
		t.Fatalf("import to unknown real server: %v, want ErrUnknownDest", err)
	}
}

// TestForwardWLCSeesCounts: the conn table's exact counts drive wlc, as the
// least-connection schedulers need: after rs1's connections close, new
// flows go to rs1.
func TestForwardWLCSeesCounts(t *testing.T) {
	if _, err := scheduler.New("wlc", scheduler.Options{}, nil); err != nil {
		t.Skipf("wlc not in the scheduler package yet: %v", err)
	}
	p := newTestPlane(t, 1024, drService("wlc", 1, 1))
	now := p.table.Now()
	on := map[string][]uint16{}
	for port := uint16(100); port < 110; port++ {
		fr := buildFrame(t, tcp4(port, TCPSyn))
		if r := p.f.process(fr, p.snap, now); r != DropNone {
			t.Fatal(r)
		}
		p.f.process(buildFrame(t, tcp4(port, TCPAck)), p.snap, now)
		on[string(fr[0:6])] = append(on[string(fr[0:6])], port)
	}
	if len(on[string(macRS1)]) != 5 || len(on[string(macRS2)]) != 5 {
		t.Fatalf("wlc split 10 flows %d/%d, want 5/5", len(on[string(macRS1)]), len(on[string(macRS2)]))
	}
	for _, port := range on[string(macRS1)] {
		p.f.process(buildFrame(t, tcp4(port, TCPRst)), p.snap, now)
	}
	svc := p.snap.Services()[0]
	c1, c2 := p.table.Counts(svc.dests[0].ID), p.table.Counts(svc.dests[1].ID)
	if c1.Active.Load() != 0 || c1.Inactive.Load() != 5 || c2.Active.Load() != 5 {
		t.Fatalf("counts rs1 %d/%d rs2 %d/%d, want 0/5 and 5/0", c1.Active.Load(), c1.Inactive.Load(), c2.Active.Load(), c2.Inactive.Load())
	}
	fr := buildFrame(t, tcp4(200, TCPSyn))
	p.f.process(fr, p.snap, now)
	if !bytes.Equal(fr[0:6], macRS1) {
		t.Fatalf("wlc sent a new flow to %x, want rs1 (no active conns)", fr[0:6])
	}
}

// withTTL returns a copy of frame whose IP header at l3 carries TTL (IPv6
// hop limit) ttl, the IPv4 header checksum recomputed in full.
func withTTL(frame []byte, l3 int, ttl byte) []byte {
	b := append([]byte(nil), frame...)
	ip := b[l3:]
	if ip[0]>>4 == 6 {
		ip[7] = ttl
		return b
	}
	ip[8] = ttl
	ihl := int(ip[0]&0x0F) * 4
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], Checksum(ip[:ihl], 0))
	return b
}

// hopped returns frame as a router forwards it: TTL (hop limit) one lower.
func hopped(frame []byte, l3 int) []byte {
	ip := frame[l3:]
	if ip[0]>>4 == 6 {
		return withTTL(frame, l3, ip[7]-1)
	}
	return withTTL(frame, l3, ip[8]-1)
}

// TestForwardTTL: every method takes one from the TTL (hop limit), as IPVS
// does; a client's packet that arrives with 1 or 0 left is answered with
// ICMP time-exceeded from the VIP, a NAT reply is dropped and counted.
// IPv4 and IPv6.
func TestForwardTTL(t *testing.T) {
	p := newTestPlane(t, 1024)
	p.hops = hopsOnPort1(0)
	tun := tunService(vip4)
	tun.Key.Port = 81
	p.publish(drService("rr", 1, 1), tun, natService(vip4, ProtoUDP, 53, 5353, rip1), natService(vip6, ProtoUDP, 53, 5353, rip6))
	now := p.table.Now()
	for _, tc := range []struct {
		name string
		spec frameSpec
	}{
		{"dr", frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: 7000, dport: 80, flags: TCPSyn}},
		{"tun", frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: 7001, dport: 81, flags: TCPSyn}},
		{"nat4", frameSpec{src: client4, dst: vip4, proto: ProtoUDP, sport: 7002, dport: 53, payload: 8}},
		{"nat6", frameSpec{src: client6, dst: vip6, proto: ProtoUDP, sport: 7003, dport: 53, payload: 8}},
	} {
		fr := buildFrame(t, tc.spec)
		// TTL 1 or 0: answered with time-exceeded quoting the packet.
		for _, ttl := range []byte{1, 0} {
			one := withTTL(fr, 14, ttl)
			buf := withHeadroom(one)
			out, r := p.f.processAt(buf, headr, len(one), p.snap, now)
			if r != DropNone {
				t.Errorf("%s with TTL %d: %v, want an ICMP answer", tc.name, ttl, r)
				continue
			}
			checkTimeExceeded(t, tc.name, buf[out.off:out.off+out.n], one, out.port, 0)
		}
		// TTL 2: forwarded with 1 and a valid header.
		two := withTTL(fr, 14, 2)
		buf := withHeadroom(two)
		out, r := p.f.processAt(buf, headr, len(two), p.snap, now)
		if r != DropNone {
			t.Fatalf("%s with TTL 2: %v", tc.name, r)
		}
		got := buf[out.off : out.off+out.n]
		l3 := 14
		if tc.name == "tun" {
			l3 = 34 // the inner packet's
			if got[14+8] != 64 {
				t.Errorf("tun: outer TTL %d, want 64", got[14+8])
			}
		}
		ttl := got[l3+8]
		if tc.spec.src.Is6() {
			ttl = got[l3+7]
		}
		if ttl != 1 {
			t.Errorf("%s: forwarded with TTL %d, want 1", tc.name, ttl)
		}
		if tc.name != "tun" {
			verifyIP(t, tc.name, got)
		} else if Checksum(got[l3:l3+20], 0) != 0 {
			t.Error("tun: inner IPv4 header checksum wrong")
		}
	}
	// NAT replies: the same rule on the way back.
	for _, tc := range []struct {
		name      string
		real, cli netip.Addr
		dport     uint16
	}{{"nat4 reply", rip1, client4, 7002}, {"nat6 reply", rip6, client6, 7003}} {
		rep := natReplyFrame(t, frameSpec{src: tc.real, dst: tc.cli, proto: ProtoUDP, sport: 5353, dport: tc.dport, payload: 8})
		one := withTTL(rep, 14, 1)
		if _, r := p.f1.processAt(one, 0, len(one), p.snap, now); r != DropTTL {
			t.Errorf("%s with TTL 1: %v, want %v", tc.name, r, DropTTL)
		}
		two := withTTL(rep, 14, 2)
		if _, r := p.f1.processAt(two, 0, len(two), p.snap, now); r != DropNone {
			t.Fatalf("%s with TTL 2: %v", tc.name, r)
		}
		verifyIP(t, tc.name, two)
		if ttl := two[14+8]; tc.cli.Is6() && two[14+7] != 1 || !tc.cli.Is6() && ttl != 1 {
			t.Errorf("%s: forwarded with TTL (hop limit) not 1", tc.name)
		}
	}
}

// checkTimeExceeded checks that got is an ICMP time-exceeded (ICMPv6 hop
// limit exceeded) answering frame orig, out of port want: from orig's
// destination to its source, back to its source MAC, quoting its IP packet.
func checkTimeExceeded(t *testing.T, what string, got, orig []byte, port, want int) {
	t.Helper()
	verifyIP(t, what+" time-exceeded", got)
	var p, o Packet
	if Parse(got, &p) != DropNone || Parse(orig, &o) != DropNone {
		t.Fatalf("%s: answer or original does not parse", what)
	}
	if port != want {
		t.Errorf("%s: answer leaves by port %d, want %d", what, port, want)
	}
	if !bytes.Equal(got[0:6], orig[6:12]) {
		t.Errorf("%s: answer to MAC % x, want the sender's % x", what, got[0:6], orig[6:12])
	}
	ic := got[p.L4:p.End]
	if p.IPv6 {
		if p.Proto != ProtoICMPv6 || ic[0] != 3 || ic[1] != 0 {
			t.Errorf("%s: answer proto %d type %d code %d, want ICMPv6 3/0", what, p.Proto, ic[0], ic[1])
		}
	} else if p.Proto != ProtoICMP || ic[0] != 11 || ic[1] != 0 {
		t.Errorf("%s: answer proto %d type %d code %d, want ICMP 11/0", what, p.Proto, ic[0], ic[1])
	}
	if gs, gd, os, od := pktAddr(got, &p, true), pktAddr(got, &p, false), pktAddr(orig, &o, true), pktAddr(orig, &o, false); gs != od || gd != os {
		t.Errorf("%s: answer %v → %v, want %v → %v", what, gs, gd, od, os)
	}
	quote := ic[8:]
	if want := orig[o.L3:o.End]; !bytes.HasPrefix(want, quote) || len(quote) < min(len(want), 28) {
		t.Errorf("%s: answer quotes %d bytes that are not the start of the packet", what, len(quote))
	}
}

// TestICMPRateLimit: a worker sends at most icmpPerSecond ICMP errors in a
// second of the table clock; the rest are dropped and counted, and the
// budget comes back the next second.
func TestICMPRateLimit(t *testing.T) {
	p := newTestPlane(t, 1024, drService("rr", 1, 1))
	now := p.table.Now()
	one := withTTL(buildFrame(t, frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: 7000, dport: 80, flags: TCPSyn}), 14, 1)
	send := func(n int, now uint32) (answered, dropped int) {
		for range n {
			buf := withHeadroom(one)
			switch _, r := p.f.processAt(buf, headr, len(one), p.snap, now); r {
			case DropNone:
				answered++
			case DropTTL:
				dropped++
			default:
				t.Fatalf("TTL 1: %v", r)
			}
		}
		return answered, dropped
	}
	if a, d := send(icmpPerSecond+50, now); a != icmpPerSecond || d != 50 {
		t.Errorf("first second: %d answered, %d dropped; want %d, 50", a, d, icmpPerSecond)
	}
	if got := p.f.q.ICMPLimited.Load(); got != 50 {
		t.Errorf("ICMPLimited = %d, want 50", got)
	}
	if got := p.f.q.TimeExceeded.Load(); got != icmpPerSecond {
		t.Errorf("TimeExceeded = %d, want %d", got, icmpPerSecond)
	}
	if a, d := send(10, now+1); a != 10 || d != 0 {
		t.Errorf("next second: %d answered, %d dropped; want 10, 0", a, d)
	}
}

// TestImportConnUpdates: importing an entry the backup already has takes
// the new state, expiry and real server, with the counts following; a NAT
// flow's reply index follows its real server.
func TestImportConnUpdates(t *testing.T) {
	p := newTestPlane(t, 1024)
	p.hops = hopsOnPort1(0)
	p.publish(drService("rr", 1, 1), natService(vip4, ProtoUDP, 53, 5353, rip1, rip2))
	dr := p.snap.Services()[0]
	rs1ID, rs2ID := dr.dests[0].ID, dr.dests[1].ID
	e := ConnEntry{
		ConnInfo: ConnInfo{Proto: ProtoTCP, Client: netip.AddrPortFrom(client4, 4000), Virtual: netip.AddrPortFrom(vip4, 80),
			State: StateSynRecv, Expires: 60 * time.Second},
		Dest: netip.AddrPortFrom(rs1, 80),
	}
	state := func() (uint16, uint8, time.Duration) {
		var id uint16
		var st uint8
		var exp time.Duration
		n := 0
		p.table.Conns(func(ci ConnInfo) bool {
			if ci.Client == e.Client && ci.Proto == ProtoTCP {
				id, st, exp = ci.DestID, ci.State, ci.Expires
				n++
			}
			return true
		})
		if n != 1 {
			t.Fatalf("%d entries for the flow, want 1", n)
		}
		return id, st, exp
	}
	for _, step := range []struct {
		state uint8
		exp   time.Duration
		dest  netip.AddrPort
	}{
		{StateSynRecv, 60 * time.Second, netip.AddrPortFrom(rs1, 80)},
		{StateEstablished, 900 * time.Second, netip.AddrPortFrom(rs1, 80)},
		{StateEstablished, 300 * time.Second, netip.AddrPortFrom(rs2, 80)},
	} {
		e.State, e.Expires, e.Dest = step.state, step.exp, step.dest
		if err := importConn(p.snap, p.table, e); err != nil {
			t.Fatal(err)
		}
		id, st, exp := state()
		want := rs1ID
		if step.dest.Addr() == rs2 {
			want = rs2ID
		}
		if id != want || st != step.state || exp < step.exp-2*time.Second || exp > step.exp {
			t.Fatalf("after import of %s/%v to %v: dest %d state %s expires %v", StateName(step.state), step.exp, step.dest, id, StateName(st), exp)
		}
	}
	c1, c2 := p.table.Counts(rs1ID), p.table.Counts(rs2ID)
	if c1.Active.Load() != 0 || c1.Inactive.Load() != 0 || c2.Active.Load() != 1 || c2.Inactive.Load() != 0 {
		t.Fatalf("counts rs1 %d/%d rs2 %d/%d, want 0/0 and 1/0", c1.Active.Load(), c1.Inactive.Load(), c2.Active.Load(), c2.Inactive.Load())
	}
	// NAT: the reply index moves with the real server.
	n := ConnEntry{
		ConnInfo: ConnInfo{Proto: ProtoUDP, Client: netip.AddrPortFrom(client4, 4001), Virtual: netip.AddrPortFrom(vip4, 53),
			State: StateUDP, Expires: 300 * time.Second},
		Dest: netip.AddrPortFrom(rip1, 5353),
	}
	for _, real := range []netip.Addr{rip1, rip2} {
		n.Dest = netip.AddrPortFrom(real, 5353)
		if err := importConn(p.snap, p.table, n); err != nil {
			t.Fatal(err)
		}
	}
	req := buildFrame(t, frameSpec{src: client4, dst: vip4, proto: ProtoUDP, sport: 4001, dport: 53, payload: 8})
	p.f.processAt(req, 0, len(req), p.snap, p.table.Now()) // teaches the client's next hop
	for _, tc := range []struct {
		real netip.Addr
		want DropReason
	}{{rip2, DropNone}, {rip1, DropNoService}} {
		rep := natReplyFrame(t, frameSpec{src: tc.real, dst: client4, proto: ProtoUDP, sport: 5353, dport: 4001, payload: 8})
		if _, r := p.f1.processAt(rep, 0, len(rep), p.snap, p.table.Now()); r != tc.want {
			t.Errorf("reply from %s: %v, want %v", tc.real, r, tc.want)
		}
	}
	var outs int
	for i := range p.table.Slots() {
		c := p.table.ctlw(i).Load()
		if ctlState(c) == stNATOut {
			outs++
		}
	}
	if outs != 1 {
		t.Errorf("%d NAT reply index entries, want 1", outs)
	}
}
