package dataplane

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// TestForwardMixedMethods: one service whose real servers each have their
// own forwarding method (ipvsadm -a … -g / -m / -i), as IPVS allows: each
// flow leaves by its real server's method, on the SYN and on the
// established packets after it, through the batch path as a worker runs
// it, and the NAT real server's replies come back from the VIP.
func TestForwardMixedMethods(t *testing.T) {
	p := newTestPlane(t, 1024)
	p.hops = hopsOnPort1(0)
	svc := ServiceConfig{Key: ServiceKey{Addr: vip4, Proto: ProtoTCP, Port: 80}, Method: DR, Scheduler: "rr", Active: true,
		Dests: []DestConfig{
			{Addr: rs1, Weight: 1, Up: true, MAC: macRS1}, // the service's method, DR
			{Addr: rip1, Port: 8080, Weight: 1, Up: true, MAC: macRS2, Method: NAT, OwnMethod: true},
			{Addr: rs2, Weight: 1, Up: true, MAC: macRS2, Method: TUN, OwnMethod: true},
		}}
	p.publish(svc)
	want := map[netip.Addr]Method{}
	for _, d := range p.snap.Services()[0].Dests() {
		want[d.Addr] = d.Method
	}
	if want[rs1] != DR || want[rip1] != NAT || want[rs2] != TUN {
		t.Fatalf("dest methods %v", want)
	}
	now := p.table.Now()
	// check returns the real server the frame out went to, judging by
	// how it was forwarded.
	check := func(what string, in []byte, buf []byte, out txOut) netip.Addr {
		t.Helper()
		got := buf[out.off : out.off+out.n]
		switch {
		case out.n == len(in)+20: // TUN: an outer IPv4 header
			oh := got[14:34]
			if oh[9] != protoIPIP || Checksum(oh, 0) != 0 || !bytes.Equal(got[34:], hopped(in, 14)[14:]) {
				t.Errorf("%s: tunnel header % x", what, oh)
			}
			return netip.AddrFrom4([4]byte(oh[16:20]))
		case out.n == len(in):
			dst := netip.AddrFrom4([4]byte(got[30:34]))
			if dst == vip4 { // DR: only the MACs and the TTL change
				if !bytes.Equal(got[0:6], macRS1) || !bytes.Equal(got[12:], hopped(in, 14)[12:]) {
					t.Errorf("%s: DR frame % x", what, got[:34])
				}
				return rs1
			}
			verifyIP(t, what, got)
			if dport := binary.BigEndian.Uint16(got[36:38]); dport != 8080 || out.port != 1 {
				t.Errorf("%s: NAT to %s:%d on port %d", what, dst, dport, out.port)
			}
			return dst
		}
		t.Errorf("%s: %d bytes out of %d", what, out.n, len(in))
		return netip.Addr{}
	}
	var pk [3]batchPkt
	var ins [3][]byte
	picked := map[uint16]netip.Addr{}
	for _, flags := range []uint8{TCPSyn, TCPAck, TCPAck} {
		for i := range pk {
			ins[i] = buildFrame(t, frameSpec{src: client4, dst: vip4, proto: ProtoTCP, sport: uint16(41000 + i), dport: 80, flags: flags, payload: 9})
			pk[i] = batchPkt{buf: withHeadroom(ins[i]), off: headr, n: len(ins[i])}
		}
		p.f.processBatch(pk[:], p.snap, now)
		p.f.flush()
		seen := map[netip.Addr]bool{}
		for i := range pk {
			if pk[i].r != DropNone {
				t.Fatalf("flags %#x flow %d: %v", flags, i, pk[i].r)
			}
			rs := check("flow", ins[i], pk[i].buf, pk[i].out)
			seen[rs] = true
			sport := uint16(41000 + i)
			if prev, ok := picked[sport]; ok && prev != rs {
				t.Errorf("flow %d moved from %s to %s", i, prev, rs)
			}
			picked[sport] = rs
		}
		if len(seen) != 3 {
			t.Errorf("flags %#x: real servers %v, want each of the three once (rr)", flags, seen)
		}
	}
	// The NAT real server's reply leaves from the VIP; replies are
	// recognised by real server, so a DR real server's packets are not.
	var natPort uint16
	for sport, rs := range picked {
		if rs == rip1 {
			natPort = sport
		}
	}
	fr := natReplyFrame(t, frameSpec{src: rip1, dst: client4, proto: ProtoTCP, sport: 8080, dport: natPort, flags: TCPAck, payload: 5})
	out, r := p.f1.processAt(fr, 0, len(fr), p.snap, now)
	if r != DropNone || out.port != 0 {
		t.Fatalf("NAT reply: %v port %d", r, out.port)
	}
	verifyIP(t, "reply", fr)
	if src := netip.AddrFrom4([4]byte(fr[26:30])); src != vip4 || binary.BigEndian.Uint16(fr[34:36]) != 80 {
		t.Errorf("NAT reply from %s:%d, want %s:80", src, binary.BigEndian.Uint16(fr[34:36]), vip4)
	}
	if !p.snap.isNATReal(addrWords(rip1)) || p.snap.isNATReal(addrWords(rs1)) || p.snap.isNATReal(addrWords(rs2)) {
		t.Error("only the NAT real server should be taken for a NAT real server")
	}
	// Each real server's conns are counted under it.
	for _, d := range p.snap.Services()[0].Dests() {
		c := p.table.Counts(d.ID)
		if n := c.Active.Load() + c.Inactive.Load(); n != 1 {
			t.Errorf("%s (%v): %d conns, want 1", d.Addr, d.Method, n)
		}
	}
}
