package director

import (
	"net/netip"
	"testing"
	"time"

	"github.com/xvs-lb/xvs/config"
	"github.com/xvs-lb/xvs/connsync"
	"github.com/xvs-lb/xvs/dataplane"
)

// TestSyncConnMapping: dataplane entries become IPVS sync conns with
// IPVS's state numbers and flags, and come back as the same entries.
func TestSyncConnMapping(t *testing.T) {
	client, vip, rs := netip.MustParseAddrPort("198.18.0.10:40000"), netip.MustParseAddrPort("198.18.0.100:80"), netip.MustParseAddrPort("198.18.0.11:80")
	entry := func(proto, state uint8, tmpl bool, expires time.Duration) dataplane.ConnEntry {
		return dataplane.ConnEntry{ConnInfo: dataplane.ConnInfo{Proto: proto, Template: tmpl, Client: client, Virtual: vip, State: state, Expires: expires}, Dest: rs}
	}
	tests := []struct {
		name      string
		e         dataplane.ConnEntry
		ok        bool
		state     uint16
		flags     uint32
		timeout   uint32
		roundTrip bool
	}{
		{"established", entry(6, dataplane.StateEstablished, false, 899*time.Second+time.Millisecond), true, connsync.TCPEstablished, 0, 900, true},
		{"syn_recv", entry(6, dataplane.StateSynRecv, false, 60*time.Second), true, connsync.TCPSynRecv, connsync.FlagInactive, 60, true},
		{"fin_wait", entry(6, dataplane.StateFinWait, false, 2*time.Minute), true, connsync.TCPFinWait, connsync.FlagInactive, 120, true},
		{"none", entry(6, dataplane.StateNone, false, time.Second), true, connsync.TCPNone, connsync.FlagInactive, 1, true},
		{"synack", entry(6, dataplane.StateSynAck, false, time.Second), true, connsync.TCPSynAck, connsync.FlagInactive, 1, true},
		{"udp", entry(17, dataplane.StateUDP, false, 5*time.Minute), true, 0, connsync.FlagInactive, 300, true},
		{"template", entry(6, dataplane.StateTemplate, true, 360*time.Second), true, 0, connsync.FlagTemplate, 360, true},
		{"expiring now: at least a second", entry(6, dataplane.StateClose, false, 0), true, connsync.TCPClose, connsync.FlagInactive, 1, false},
		{"udp state on tcp", entry(6, dataplane.StateUDP, false, time.Second), false, 0, 0, 0, false},
		{"sctp", entry(132, dataplane.StateEstablished, false, time.Second), false, 0, 0, 0, false},
		{"removed real server", func() dataplane.ConnEntry {
			e := entry(6, dataplane.StateEstablished, false, time.Second)
			e.Dest = netip.AddrPort{}
			return e
		}(), false, 0, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c connsync.Conn
			if ok := toSyncConn(nil, &tt.e, &c); ok != tt.ok {
				t.Fatalf("toSyncConn ok = %v, want %v", ok, tt.ok)
			}
			if !tt.ok {
				return
			}
			if c.State != tt.state || c.Flags != tt.flags || c.Timeout != tt.timeout || c.Proto != tt.e.Proto ||
				c.Client != tt.e.Client || c.Virtual != tt.e.Virtual || c.Dest != tt.e.Dest {
				t.Fatalf("got %s, want state %d flags %#x timeout %d", c.String(), tt.state, tt.flags, tt.timeout)
			}
			if !tt.roundTrip {
				return
			}
			back, ok := fromSyncConn(&c)
			want := tt.e
			want.Expires = time.Duration(tt.timeout) * time.Second
			if !ok || back != want {
				t.Fatalf("fromSyncConn = %+v, %v; want %+v", back, ok, want)
			}
		})
	}
	// What a kernel master may send and xvs cannot hold.
	bad := connsync.Conn{Proto: connsync.ProtoSCTP, Client: client, Virtual: vip, Dest: rs}
	if _, ok := fromSyncConn(&bad); ok {
		t.Errorf("fromSyncConn accepted an SCTP conn")
	}
}

func TestSameSync(t *testing.T) {
	a := &config.LVSSyncDaemon{Pos: config.Pos{File: "a", Line: 1}, Interface: "eth0", Instance: "VI_1", SyncID: 5}
	b := *a
	b.Pos.Line = 9
	c := *a
	c.Port = 9000
	for _, tt := range []struct {
		x, y *config.LVSSyncDaemon
		want bool
	}{
		{nil, nil, true}, {a, nil, false}, {nil, a, false}, {a, &b, true}, {a, &c, false},
	} {
		if got := sameSync(tt.x, tt.y); got != tt.want {
			t.Errorf("sameSync(%v, %v) = %v, want %v", tt.x, tt.y, got, tt.want)
		}
	}
}

// BenchmarkSyncWalkEmpty is the floor of a sender's walk: xvsd's default
// conn table (2^20 flows) read through the same walk, with no live entry.
func BenchmarkSyncWalkEmpty(b *testing.B) {
	tbl := dataplane.NewConnTable(DefaultConnTableSize)
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		tbl.Conns(func(dataplane.ConnInfo) bool { n++; return true })
		if n != 0 {
			b.Fatal(n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(tbl.Slots()), "ns/slot")
}
