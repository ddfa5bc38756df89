package connsync

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeTable is a conn table in a slice, walked in order.
type fakeTable struct {
	mu    sync.Mutex
	conns []Conn
}

func (t *fakeTable) Walk(f func(c *Conn) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var c Conn // one copy per walk, as a real table adapter does
	for i := range t.conns {
		c = t.conns[i]
		if !f(&c) {
			return
		}
	}
}

func (t *fakeTable) set(conns []Conn) {
	t.mu.Lock()
	t.conns = conns
	t.mu.Unlock()
}

// capture is a net.PacketConn that keeps what is written to it.
type capture struct {
	mu   sync.Mutex
	msgs [][]byte
	fail error
}

func (c *capture) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return 0, c.fail
	}
	c.msgs = append(c.msgs, append([]byte(nil), b...))
	return len(b), nil
}
func (c *capture) ReadFrom([]byte) (int, net.Addr, error) { return 0, nil, net.ErrClosed }
func (c *capture) Close() error                           { return nil }
func (c *capture) LocalAddr() net.Addr                    { return &net.UDPAddr{} }
func (c *capture) SetDeadline(time.Time) error            { return nil }
func (c *capture) SetReadDeadline(time.Time) error        { return nil }
func (c *capture) SetWriteDeadline(time.Time) error       { return nil }

// take returns the conns written since the last take, decoded.
func (c *capture) take(t *testing.T) []Conn {
	t.Helper()
	c.mu.Lock()
	msgs := c.msgs
	c.msgs = nil
	c.mu.Unlock()
	var out []Conn
	for _, m := range msgs {
		if _, err := Decode(m, func(x *Conn) { out = append(out, *x) }); err != nil {
			t.Fatalf("sender wrote a message that does not decode: %v", err)
		}
	}
	return out
}

type importFunc func(*Conn) error

func (f importFunc) Import(c *Conn) error { return f(c) }

type counts struct {
	SentMessages, SentConns, SendErrors, RecvMessages, RecvConns, Imported,
	ImportErrors, Skipped, Malformed, WrongSyncID uint64
}

func snapshot(c *Counters) counts {
	return counts{c.SentMessages.Load(), c.SentConns.Load(), c.SendErrors.Load(), c.RecvMessages.Load(),
		c.RecvConns.Load(), c.Imported.Load(), c.ImportErrors.Load(), c.Skipped.Load(), c.Malformed.Load(), c.WrongSyncID.Load()}
}

// tcpConn is established conn i of a client population.
func tcpConn(i int, state uint16) Conn {
	return Conn{
		Proto: ProtoTCP, Flags: FlagDRoute, State: state,
		Client:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 1 + byte(i>>16), byte(i >> 8)}), uint16(10000+i&0xff)),
		Virtual: ap("198.18.0.100:80"), Dest: ap("198.18.0.11:80"), Timeout: 900,
	}
}

func keys(cs []Conn) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = fmt.Sprintf("%v>%v", c.Client, c.Dest)
	}
	return out
}

// TestSenderWhatAndWhen walks the rules of the package doc one pass at a
// time: new entries once, changes again, unchanged never, refresh on a
// moved expiry, only the states IPVS syncs.
func TestSenderWhatAndWhen(t *testing.T) {
	tbl := &fakeTable{}
	out := &capture{}
	var ctr Counters
	s := NewSender(SenderConfig{SyncID: 9, Counters: &ctr, RefreshPeriod: 30 * time.Second}, tbl, out, nil)
	t0 := s.start

	est := tcpConn(1, TCPEstablished)
	synRecv := tcpConn(2, TCPSynRecv)
	udp := Conn{Proto: ProtoUDP, Flags: FlagDRoute | FlagInactive, Client: ap("198.18.0.10:5353"), Virtual: ap("198.18.0.100:53"), Dest: ap("198.18.0.12:53"), Timeout: 300}
	tmpl := Conn{Proto: ProtoTCP, Flags: FlagDRoute | FlagTemplate, Client: ap("198.18.0.0:0"), Virtual: ap("198.18.0.100:80"), Dest: ap("198.18.0.11:80"), Timeout: 360}

	type step struct {
		name  string
		at    time.Duration
		conns []Conn
		want  []Conn
	}
	moved := est
	moved.Timeout = 900 // same timeout, 30 s later: expiry moved by 30 s
	finWait := est
	finWait.State, finWait.Timeout = TCPFinWait, 120
	// idle ages an entry that saw no traffic: its remaining life shrinks.
	idle := func(c Conn, by uint32) Conn { c.Timeout -= by; return c }
	otherDest := idle(udp, 31)
	otherDest.Dest = ap("198.18.0.11:53")
	steps := []step{
		{"new entries; SYN_RECV is not synced", 0, []Conn{est, synRecv, udp, tmpl}, []Conn{est, udp, tmpl}},
		{"nothing changed", 500 * time.Millisecond, []Conn{est, synRecv, udp, tmpl}, nil},
		{"SYN_RECV became ESTABLISHED", time.Second, []Conn{est, tcpConn(2, TCPEstablished), udp, tmpl}, []Conn{tcpConn(2, TCPEstablished)}},
		{"expiry moved 29 s: not yet", 29 * time.Second, []Conn{est, idle(udp, 29), idle(tmpl, 29)}, nil},
		{"expiry moved 30 s: refresh; the idle UDP and template are not", 30 * time.Second, []Conn{moved, idle(udp, 30), idle(tmpl, 30)}, []Conn{moved}},
		{"state change and real server change", 31 * time.Second, []Conn{finWait, otherDest, idle(tmpl, 31)}, []Conn{finWait, otherDest}},
	}
	for _, st := range steps {
		tbl.set(st.conns)
		s.pass(t0.Add(st.at))
		got := out.take(t)
		if fmt.Sprint(keys(got)) != fmt.Sprint(keys(st.want)) {
			t.Fatalf("%s: sent %v, want %v", st.name, keys(got), keys(st.want))
		}
		for i := range got {
			if got[i] != st.want[i] {
				t.Fatalf("%s: conn %d sent as %s, want %s", st.name, i, got[i].String(), st.want[i].String())
			}
		}
	}
	if c := snapshot(&ctr); c.SentConns != 7 || c.SentMessages != 4 || c.SendErrors != 0 {
		t.Errorf("counters %+v, want 7 conns in 4 messages", c)
	}
}

func TestSenderSyncable(t *testing.T) {
	want := map[uint16]bool{TCPEstablished: true, TCPFinWait: true, TCPClose: true, TCPCloseWait: true, TCPTimeWait: true}
	for st := range TCPStates {
		c := tcpConn(0, st)
		if got := syncable(&c); got != want[st] {
			t.Errorf("TCP state %d: syncable %v, want %v", st, got, want[st])
		}
		c.Flags |= FlagTemplate
		if !syncable(&c) {
			t.Errorf("template in state %d not syncable", st)
		}
	}
}

func TestMoved(t *testing.T) {
	tests := []struct {
		sent, now, timeout uint32
		refresh            time.Duration
		want               bool
	}{
		{100, 100, 900, 30 * time.Second, false},
		{100, 129, 900, 30 * time.Second, false},
		{100, 130, 900, 30 * time.Second, true},
		{130, 100, 900, 30 * time.Second, true}, // moved back
		{100, 109, 10, 30 * time.Second, false}, // 10 s floor
		{100, 110, 10, 30 * time.Second, true},
		{100, 149, 100, 5 * time.Minute, false}, // half the timeout
		{100, 150, 100, 5 * time.Minute, true},
	}
	for _, tt := range tests {
		if got := moved(tt.sent, tt.now, tt.timeout, tt.refresh); got != tt.want {
			t.Errorf("moved(%d, %d, timeout %d, refresh %v) = %v, want %v", tt.sent, tt.now, tt.timeout, tt.refresh, got, tt.want)
		}
	}
}

// TestSenderBandwidth: with a budget below the table, each pass sends what
// the bucket allows, the next one continues where it stopped, and every
// conn is sent exactly once in the end.
func TestSenderBandwidth(t *testing.T) {
	const n = 1000
	conns := make([]Conn, n)
	for i := range conns {
		conns[i] = tcpConn(i, TCPEstablished)
	}
	tbl := &fakeTable{conns: conns}
	out := &capture{}
	const rate = 8000 // bytes/s: ~5 full messages a second
	s := NewSender(SenderConfig{MaxRate: rate}, tbl, out, nil)
	seen := map[string]int{}
	var total int
	for i := 0; i < 40 && len(seen) < n; i++ {
		now := s.start.Add(time.Duration(i) * time.Second)
		sent := out.take(t)
		_ = sent
		s.pass(now)
		got := out.take(t)
		bytes := 0
		for range got {
			bytes += ConnV4Len
		}
		if i > 0 && bytes > rate {
			t.Fatalf("pass %d sent %d conn bytes, over the %d bytes/s budget", i, bytes, rate)
		}
		for _, k := range keys(got) {
			seen[k]++
		}
		total += len(got)
	}
	if len(seen) != n || total != n {
		t.Fatalf("after 40 s: %d distinct conns sent, %d in all; want %d once each", len(seen), total, n)
	}
}

// TestSenderSendError: conns of a datagram that failed are not remembered,
// so the next pass sends them again.
func TestSenderSendError(t *testing.T) {
	tbl := &fakeTable{conns: []Conn{tcpConn(1, TCPEstablished)}}
	out := &capture{fail: errors.New("no buffer space")}
	var ctr Counters
	s := NewSender(SenderConfig{Counters: &ctr, Logger: quiet}, tbl, out, nil)
	s.pass(s.start)
	if c := snapshot(&ctr); c.SendErrors != 1 || c.SentConns != 0 {
		t.Fatalf("after a failed send: %+v", c)
	}
	out.fail = nil
	s.pass(s.start.Add(time.Second))
	if got := out.take(t); len(got) != 1 {
		t.Fatalf("after the error cleared: %d conns sent, want the 1 that failed", len(got))
	}
}

// TestSentCacheBounded: more live conns than cache slots costs re-sends,
// never memory.
func TestSentCacheBounded(t *testing.T) {
	c := newSentCache(64)
	if len(c.slots) != 64 {
		t.Fatalf("cache of %d slots, want 64", len(c.slots))
	}
	for i := range 10000 {
		cn := tcpConn(i, TCPEstablished)
		k, v := fingerprint(&cn)
		c.store(k, v, uint32(i))
		if s := c.find(k); s == nil || s.val != v || s.deadline != uint32(i) {
			t.Fatalf("conn %d not found right after store", i)
		}
	}
	if len(c.slots) != 64 {
		t.Fatalf("cache grew to %d slots", len(c.slots))
	}
	// The entry expiring first goes: fill one set, then store one more.
	c = newSentCache(cacheWays)
	for i, dl := range []uint32{50, 10, 40, 30, 70, 80, 90, 20} {
		c.store(uint64(i+1)<<7|1, 0, dl)
	}
	c.store(99<<7|1, 0, 60)
	if c.find(2<<7|1) != nil {
		t.Errorf("the entry with the earliest expiry was kept")
	}
	for _, k := range []uint64{1, 3, 4, 5, 6, 7, 8, 99} {
		if c.find(k<<7|1) == nil {
			t.Errorf("entry %d evicted", k)
		}
	}
}

func TestFingerprint(t *testing.T) {
	a := tcpConn(1, TCPEstablished)
	ka, va := fingerprint(&a)
	b := a
	b.Timeout = 17 // the timeout is not part of either
	if kb, vb := fingerprint(&b); kb != ka || vb != va {
		t.Errorf("timeout changed the fingerprint")
	}
	for name, mod := range map[string]func(*Conn){
		"state": func(c *Conn) { c.State = TCPFinWait },
		"dest":  func(c *Conn) { c.Dest = ap("198.18.0.12:80") },
		"dport": func(c *Conn) { c.Dest = ap("198.18.0.11:81") },
	} {
		c := a
		mod(&c)
		if k, v := fingerprint(&c); k != ka || v == va {
			t.Errorf("%s: key changed %v, value unchanged %v; want same key, new value", name, k != ka, v == va)
		}
	}
	for name, mod := range map[string]func(*Conn){
		"client":   func(c *Conn) { c.Client = ap("198.18.9.9:10001") },
		"cport":    func(c *Conn) { c.Client = netip.AddrPortFrom(c.Client.Addr(), 1) },
		"vip":      func(c *Conn) { c.Virtual = ap("198.18.0.101:80") },
		"template": func(c *Conn) { c.Flags |= FlagTemplate },
		"proto":    func(c *Conn) { c.Proto = ProtoUDP },
	} {
		c := a
		mod(&c)
		if k, _ := fingerprint(&c); k == ka {
			t.Errorf("%s: same key", name)
		}
	}
}

// BenchmarkSenderPass is the steady-state cost of a walk over a table
// whose conns were all sent already: per conn, one hash and one probe.
func BenchmarkSenderPass(b *testing.B) {
	const n = 100000
	conns := make([]Conn, n)
	for i := range conns {
		conns[i] = tcpConn(i, TCPEstablished)
	}
	tbl := &fakeTable{conns: conns}
	s := NewSender(SenderConfig{MaxRate: 1 << 30, CacheSlots: 1 << 18}, tbl, &capture{}, nil)
	s.pass(s.start)
	if len(conns) != int(s.cfg.Counters.SentConns.Load()) {
		b.Fatalf("first pass sent %d of %d", s.cfg.Counters.SentConns.Load(), n)
	}
	b.ReportAllocs()
	for b.Loop() {
		s.pass(s.start)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/conn")
}
