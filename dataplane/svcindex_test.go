package dataplane

import (
	"net/netip"
	"testing"
)

// TestLookupSvc: the packet path's service index finds every configured
// service, by address, port and protocol, and nothing else, at sizes from
// one service to many (probe chains and wrap-around included).
func TestLookupSvc(t *testing.T) {
	for _, n := range []int{1, 2, 3, 17, 300} {
		var cfgs []ServiceConfig
		for i := range n {
			addr := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
			proto := uint8(ProtoTCP)
			if i%3 == 2 {
				proto = ProtoUDP
			}
			cfgs = append(cfgs, ServiceConfig{Key: ServiceKey{Addr: addr, Proto: proto, Port: uint16(i % 5)}, Method: DR, Scheduler: "rr"})
		}
		if n > 1 {
			cfgs = append(cfgs, ServiceConfig{Key: ServiceKey{Addr: vip6, Proto: ProtoTCP, Port: 443}, Method: DR, Scheduler: "rr"})
		}
		p := newTestPlane(t, 64, cfgs...)
		for _, c := range cfgs {
			a0, a1 := addrWords(c.Key.Addr)
			got := p.snap.lookupSvc(a0, a1, c.Key.Port, c.Key.Proto)
			if got == nil || got.Key != c.Key {
				t.Fatalf("n=%d: lookupSvc(%s) = %v", n, c.Key, got)
			}
			other := uint8(ProtoUDP)
			if c.Key.Proto == ProtoUDP {
				other = ProtoTCP
			}
			for _, miss := range []ServiceKey{
				{Addr: c.Key.Addr, Proto: c.Key.Proto, Port: c.Key.Port + 5},
				{Addr: c.Key.Addr, Proto: other, Port: c.Key.Port},
				{Addr: c.Key.Addr.Next().Next().Next().Next().Next(), Proto: c.Key.Proto, Port: 9999},
			} {
				m0, m1 := addrWords(miss.Addr)
				if got := p.snap.lookupSvc(m0, m1, miss.Port, miss.Proto); got != nil && got.Key != miss {
					t.Fatalf("n=%d: lookupSvc(%s) = %s", n, miss, got.Key)
				} else if got == nil && p.snap.Lookup(miss) != nil {
					t.Fatalf("n=%d: lookupSvc(%s) missed a configured service", n, miss)
				}
			}
		}
	}
	var empty Snapshot
	if empty.lookupSvc(0, 0, 80, ProtoTCP) != nil {
		t.Fatal("empty snapshot found a service")
	}
}
