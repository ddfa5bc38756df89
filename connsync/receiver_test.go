package connsync

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xvs-lb/xvs/internal/netlab"
)

var quiet = slog.New(slog.DiscardHandler)

// store is an Importer that keeps what it is given.
type store struct {
	mu    sync.Mutex
	conns map[netip.AddrPort]Conn
	fail  error
}

func (s *store) Import(c *Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	if s.conns == nil {
		s.conns = map[netip.AddrPort]Conn{}
	}
	s.conns[c.Client] = *c
	return nil
}

func (s *store) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func encode(t testing.TB, syncID uint8, conns ...Conn) []byte {
	t.Helper()
	e := NewEncoder(syncID, MaxMessage)
	for i := range conns {
		if ok, err := e.Add(&conns[i]); !ok || err != nil {
			t.Fatalf("encode: %v %v", ok, err)
		}
	}
	return append([]byte(nil), e.Bytes()...)
}

func TestReceiverHandle(t *testing.T) {
	est := tcpConn(1, TCPEstablished)
	badState := tcpConn(2, TCPStates)
	udpBadState := Conn{Proto: ProtoUDP, State: 1, Client: ap("198.18.0.10:1"), Virtual: ap("198.18.0.100:53"), Dest: ap("198.18.0.11:53")}
	sctp := tcpConn(3, 1)
	sctp.Proto = ProtoSCTP
	fwmark := tcpConn(4, TCPEstablished)
	fwmark.Flags |= FlagTemplate
	fwmark.FWMark = 7
	tests := []struct {
		name    string
		syncID  uint8
		msg     []byte
		fail    error
		want    counts
		present []netip.AddrPort
	}{
		{"imported", 5, encode(t, 5, est), nil,
			counts{RecvMessages: 1, RecvConns: 1, Imported: 1}, []netip.AddrPort{est.Client}},
		{"other syncid dropped", 5, encode(t, 6, est), nil,
			counts{RecvMessages: 1, WrongSyncID: 1}, nil},
		{"syncid 0 accepts all", 0, encode(t, 6, est), nil,
			counts{RecvMessages: 1, RecvConns: 1, Imported: 1}, []netip.AddrPort{est.Client}},
		{"malformed", 5, []byte{0, 5, 0, 9, 1, 1, 0, 0, 0}, nil,
			counts{RecvMessages: 1, Malformed: 1}, nil},
		{"too short for a header", 5, []byte{0, 5}, nil,
			counts{RecvMessages: 1, Malformed: 1}, nil},
		{"what xvs cannot hold is skipped", 0, encode(t, 0, badState, udpBadState, sctp, fwmark, est), nil,
			counts{RecvMessages: 1, RecvConns: 5, Skipped: 4, Imported: 1}, []netip.AddrPort{est.Client}},
		{"importer refuses", 0, encode(t, 0, est), errors.New("unknown real server"),
			counts{RecvMessages: 1, RecvConns: 1, ImportErrors: 1}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ctr Counters
			st := &store{fail: tt.fail}
			r := NewReceiver(ReceiverConfig{SyncID: tt.syncID, Counters: &ctr, Logger: quiet}, st, nil)
			r.Handle(tt.msg)
			if got := snapshot(&ctr); got != tt.want {
				t.Errorf("counters %+v, want %+v", got, tt.want)
			}
			if st.len() != len(tt.present) {
				t.Errorf("imported %d conns, want %d", st.len(), len(tt.present))
			}
			for _, k := range tt.present {
				if _, ok := st.conns[k]; !ok {
					t.Errorf("conn from %v not imported", k)
				}
			}
		})
	}
}

// TestReceiverDefaultTimeout: a version 0 message carries no timeout; the
// importer gets IPVS's default for the state.
func TestReceiverDefaultTimeout(t *testing.T) {
	msg := unhex(t, stripComments(`
		03 00 004c
		00 06 9c40 0050 0050 c612000a c6120064 c612000b 0003 0001   TCP ESTABLISHED
		00 06 9c41 0050 0050 c612000a c6120064 c612000b 0003 0006   TCP CLOSE
		00 11 3039 0035 0035 c612000a c6120064 c612000c 0003 0000   UDP`))
	st := &store{}
	NewReceiver(ReceiverConfig{Logger: quiet}, st, nil).Handle(msg)
	want := map[uint16]uint32{40000: 900, 40001: 10, 12345: 300}
	if st.len() != len(want) {
		t.Fatalf("imported %d conns, want %d", st.len(), len(want))
	}
	for _, c := range st.conns {
		if c.Timeout != want[c.Client.Port()] {
			t.Errorf("conn from port %d: timeout %d, want %d", c.Client.Port(), c.Timeout, want[c.Client.Port()])
		}
	}
	tmpl := Conn{Flags: FlagTemplate, Proto: ProtoTCP}
	if got := DefaultTimeout(&tmpl); got != 180 {
		t.Errorf("template default timeout %d, want 180 (IPVS's 3 minutes)", got)
	}
}

// waitFor polls ok every 20 ms until it holds or d passes; no timing is
// asserted, d only bounds a failure.
func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runPair runs a sender and a receiver over the given sockets until the
// test ends.
func runPair(t *testing.T, tbl Table, send net.PacketConn, dst net.Addr, recv net.PacketConn, st *store, ctr *Counters) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = NewSender(SenderConfig{SyncID: 3, Counters: ctr, Interval: 50 * time.Millisecond, Logger: quiet}, tbl, send, dst).Run(ctx)
	})
	wg.Go(func() {
		_ = NewReceiver(ReceiverConfig{SyncID: 3, Counters: ctr, Logger: quiet}, st, recv).Run(ctx)
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func population(n int) []Conn {
	conns := make([]Conn, n)
	for i := range conns {
		conns[i] = tcpConn(i, TCPEstablished)
	}
	conns = append(conns, Conn{Proto: ProtoUDP, Client: ap("[2001:db8::10]:5353"), Virtual: ap("[2001:db8::100]:53"), Dest: ap("[2001:db8::11]:53"), Timeout: 300})
	return conns
}

// TestLoopback runs a sender and a receiver over UDP on 127.0.0.1 (the
// unicast seam; no privileges needed): every conn arrives, once.
func TestLoopback(t *testing.T) {
	recv, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	send, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := population(500)
	st := &store{}
	var ctr Counters
	runPair(t, &fakeTable{conns: conns}, send, recv.LocalAddr(), recv, st, &ctr)
	waitFor(t, 20*time.Second, "all conns imported", func() bool { return st.len() == len(conns) })
	// Later walks send nothing new.
	sent := ctr.SentConns.Load()
	time.Sleep(200 * time.Millisecond)
	if got := ctr.SentConns.Load(); got != sent || sent != uint64(len(conns)) {
		t.Errorf("sent %d then %d conns, want %d once", sent, got, len(conns))
	}
	for _, c := range conns {
		if got := st.conns[c.Client]; got != c {
			t.Errorf("imported %s, want %s", got.String(), c.String())
		}
	}
}

// TestMulticastNetns runs the real multicast sockets between two network
// namespaces on a bridge: the sync channel as xvsd opens it.
func TestMulticastNetns(t *testing.T) {
	lab := netlab.New(t)
	br := lab.Bridge("br0")
	a, b := lab.Host("dir1"), lab.Host("dir2")
	lab.Connect(a, br, "eth0", "198.18.0.2/24", "2001:db8::2/64")
	lab.Connect(b, br, "eth0", "198.18.0.3/24", "2001:db8::3/64")
	for _, group := range []netip.Addr{{}, netip.MustParseAddr("ff02::8:81")} {
		name := "default group"
		if group.IsValid() {
			name = "group " + group.String()
		}
		t.Run(name, func(t *testing.T) {
			m := Multicast{Interface: "eth0", Group: group, Port: 8848}
			var send, recv net.PacketConn
			var dst net.Addr
			if err := a.Do(func() (err error) { send, dst, err = DialMulticast(m); return err }); err != nil {
				t.Fatal(err)
			}
			if err := b.Do(func() (err error) { recv, err = ListenMulticast(m); return err }); err != nil {
				t.Fatal(err)
			}
			conns := population(300)
			st := &store{}
			var ctr Counters
			runPair(t, &fakeTable{conns: conns}, send, dst, recv, st, &ctr)
			waitFor(t, 30*time.Second, "all conns imported over multicast", func() bool { return st.len() == len(conns) })
			if c := snapshot(&ctr); c.Malformed != 0 || c.WrongSyncID != 0 {
				t.Errorf("counters %+v", c)
			}
		})
	}
	if _, _, err := DialMulticast(Multicast{Interface: "nosuch0"}); err == nil {
		t.Errorf("DialMulticast on a missing interface succeeded")
	}
	if _, err := ListenMulticast(Multicast{Interface: "lo", Group: netip.MustParseAddr("198.18.0.1")}); err == nil {
		t.Errorf("ListenMulticast on a unicast group succeeded")
	}
}
