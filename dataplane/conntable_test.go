package dataplane

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
)

func key4(i int) connKey {
	c0, c1 := addrWords(netip.AddrFrom4([4]byte{198, 18, byte(i >> 16), byte(i >> 8)}))
	v0, v1 := addrWords(vip4)
	return makeKey(ProtoTCP, kindConn, c0, c1, uint16(i), v0, v1, 80)
}

func TestTCPStateTable(t *testing.T) {
	// Spot checks against IPVS's INPUT-ONLY table (ip_vs_proto_tcp.c).
	tests := []struct {
		from  uint8
		flags uint8
		want  uint8
	}{
		{StateNone, TCPSyn, StateSynRecv},
		{StateSynRecv, TCPAck, StateEstablished},
		{StateSynRecv, TCPSyn, StateSynRecv},
		{StateEstablished, TCPAck, StateEstablished},
		{StateEstablished, TCPFin | TCPAck, StateFinWait},
		{StateFinWait, TCPAck, StateFinWait},
		{StateFinWait, TCPFin, StateFinWait},
		{StateEstablished, TCPRst, StateClose},
		{StateEstablished, TCPRst | TCPAck, StateClose},
		{StateSynRecv, TCPRst, StateSynRecv},
		{StateSynRecv, TCPFin, StateTimeWait},
		{StateTimeWait, TCPSyn, StateSynRecv},
		{StateClose, TCPAck, StateClose},
		{StateEstablished, 0, StateEstablished},
		{StateEstablished, TCPSyn | TCPAck, StateEstablished},
	}
	for _, tc := range tests {
		if got := nextTCPState(tc.from, tc.flags); got != tc.want {
			t.Errorf("%s + flags %#02x = %s, want %s", StateName(tc.from), tc.flags, StateName(got), StateName(tc.want))
		}
	}
}

func TestConnTableBasic(t *testing.T) {
	tb := NewConnTable(1000)
	now := tb.Now()
	k := key4(1)
	if i, _, _ := tb.lookup(&k, now); i >= 0 {
		t.Fatal("lookup in empty table hit")
	}
	if !tb.insert(&k, 7, StateSynRecv, now+60, now) {
		t.Fatal("insert failed")
	}
	i, c, d := tb.lookup(&k, now)
	if i < 0 || d != 7 || ctlState(c) != StateSynRecv {
		t.Fatalf("lookup = %d, dest %d, state %s", i, d, StateName(ctlState(c)))
	}
	cnt := tb.Counts(7)
	if a, in := cnt.Active.Load(), cnt.Inactive.Load(); a != 0 || in != 1 {
		t.Fatalf("after SYN: active %d inactive %d, want 0 1", a, in)
	}
	tb.touch(i, c, d, StateEstablished, now)
	i, c, _ = tb.lookup(&k, now)
	if ctlState(c) != StateEstablished || ctlExpiry(c) != now+900 {
		t.Fatalf("after ACK: state %s expiry %d", StateName(ctlState(c)), ctlExpiry(c)-now)
	}
	if a, in := cnt.Active.Load(), cnt.Inactive.Load(); a != 1 || in != 0 {
		t.Fatalf("after ACK: active %d inactive %d, want 1 0", a, in)
	}
	tb.touch(i, c, d, StateFinWait, now)
	if a, in := cnt.Active.Load(), cnt.Inactive.Load(); a != 0 || in != 1 {
		t.Fatalf("after FIN: active %d inactive %d, want 0 1", a, in)
	}
	// Lazy expiry: past FIN_WAIT's 120 s the entry is gone and uncounted.
	if i, _, _ := tb.lookup(&k, now+121); i >= 0 {
		t.Fatal("expired entry still found")
	}
	if a, in := cnt.Active.Load(), cnt.Inactive.Load(); a != 0 || in != 0 {
		t.Fatalf("after expiry: active %d inactive %d, want 0 0", a, in)
	}
	var n int
	tb.Conns(func(ConnInfo) bool { n++; return true })
	if n != 0 {
		t.Fatalf("Conns lists %d entries, want 0", n)
	}
}

func TestConnTableSweepAndConns(t *testing.T) {
	tb := NewConnTable(100)
	now := tb.Now()
	for i := range 50 {
		k := key4(i)
		exp := now + 10
		if i%2 == 0 {
			exp = now + 1000
		}
		if !tb.insert(&k, uint16(1+i%3), StateUDP, exp, now) {
			t.Fatalf("insert %d failed", i)
		}
	}
	var live int
	tb.Conns(func(ci ConnInfo) bool {
		live++
		if ci.Virtual != netip.AddrPortFrom(vip4, 80) || !ci.Client.Addr().Is4() || ci.Proto != ProtoTCP {
			t.Errorf("entry %+v", ci)
		}
		return true
	})
	if live != 50 {
		t.Fatalf("Conns = %d entries, want 50", live)
	}
	next, reaped := 0, 0
	for range 4 {
		var r int
		next, r = tb.Sweep(next, tb.Slots()/3+1, now+11, nil)
		reaped += r
	}
	if reaped != 25 {
		t.Fatalf("sweep reaped %d, want 25", reaped)
	}
	var total int32
	for d := uint16(1); d <= 3; d++ {
		total += tb.Counts(d).Inactive.Load()
	}
	if total != 25 {
		t.Fatalf("inactive total %d, want 25", total)
	}
	// Reap everything of dest 2 as if it were removed.
	tb.Sweep(0, tb.Slots(), now+11, func(d uint16) bool { return d == 2 })
	if n := tb.Counts(2).Inactive.Load(); n != 0 {
		t.Fatalf("dest 2 still counts %d", n)
	}
}

// TestConnTableDifferential drives the table and a map model with the same
// random operations (single goroutine) and compares every answer.
func TestConnTableDifferential(t *testing.T) {
	type val struct {
		dest  uint16
		state uint8
		exp   uint32
	}
	tb := NewConnTable(4096)
	model := map[connKey]val{}
	r := rand.New(rand.NewPCG(3, 4))
	now := tb.Now()
	keys := 3000
	for op := range 200000 {
		k := key4(r.IntN(keys))
		m, inModel := model[k]
		if inModel && int32(m.exp-now) < 0 {
			delete(model, k)
			inModel = false
		}
		switch r.IntN(10) {
		case 0:
			now += uint32(r.IntN(3))
		case 1, 2, 3:
			if inModel {
				continue
			}
			d := uint16(1 + r.IntN(5))
			if tb.insert(&k, d, StateSynRecv, now+60, now) {
				model[k] = val{d, StateSynRecv, now + 60}
			}
		default:
			i, c, d := tb.lookup(&k, now)
			if (i >= 0) != inModel {
				t.Fatalf("op %d: lookup hit=%v, model has=%v", op, i >= 0, inModel)
			}
			if i < 0 {
				continue
			}
			if d != m.dest || ctlState(c) != m.state || ctlExpiry(c) != m.exp {
				t.Fatalf("op %d: got dest %d state %d exp %d, model %+v", op, d, ctlState(c), ctlExpiry(c), m)
			}
			ns := []uint8{StateEstablished, StateFinWait, StateClose, StateSynRecv}[r.IntN(4)]
			tb.touch(i, c, d, ns, now)
			model[k] = val{d, ns, now + defaultTimeouts[ns]}
		}
	}
	// Counts equal the model's census.
	var wantA, wantI [6]int32
	for _, v := range model {
		if int32(v.exp-now) < 0 {
			continue
		}
		if v.state == StateEstablished {
			wantA[v.dest]++
		} else {
			wantI[v.dest]++
		}
	}
	tb.Sweep(0, tb.Slots(), now, nil)
	for d := 1; d <= 5; d++ {
		c := tb.Counts(uint16(d))
		if c.Active.Load() != wantA[d] || c.Inactive.Load() != wantI[d] {
			t.Errorf("dest %d: active %d inactive %d, want %d %d", d, c.Active.Load(), c.Inactive.Load(), wantA[d], wantI[d])
		}
	}
}

// TestConnTableConcurrent hammers the table from several goroutines (run it
// with -race) and then checks that the counts match a census of the table.
func TestConnTableConcurrent(t *testing.T) {
	tb := NewConnTable(2048)
	now := tb.Now()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for range 20000 {
				k := key4(r.IntN(1500))
				tnow := now + uint32(r.IntN(200))
				if i, c, d := tb.lookup(&k, tnow); i >= 0 {
					switch r.IntN(3) {
					case 0:
						tb.touch(i, c, d, StateEstablished, tnow)
					case 1:
						tb.touch(i, c, d, StateClose, tnow)
					case 2:
						tb.reap(i, c)
					}
				} else {
					tb.insert(&k, uint16(1+r.IntN(4)), StateSynRecv, tnow+60, tnow)
				}
			}
		}()
	}
	go func() {
		for range 20 {
			tb.Sweep(0, tb.Slots(), now+100, nil)
		}
	}()
	wg.Wait()
	var census [5][2]int32
	tb.Conns(func(ci ConnInfo) bool { return true })
	for i := range tb.Slots() {
		c := tb.ctlw(i).Load()
		if ctlState(c) == stFree {
			continue
		}
		d := tb.destOf(i)
		if ctlState(c) == StateEstablished {
			census[d][0]++
		} else {
			census[d][1]++
		}
	}
	for d := 1; d <= 4; d++ {
		c := tb.Counts(uint16(d))
		if c.Active.Load() != census[d][0] || c.Inactive.Load() != census[d][1] {
			t.Errorf("dest %d: counts %d/%d, census %d/%d", d, c.Active.Load(), c.Inactive.Load(), census[d][0], census[d][1])
		}
	}
}

func TestConnTableFill(t *testing.T) {
	const n = 100000
	tb := NewConnTable(n)
	now := tb.Now()
	failed := 0
	for i := range n {
		k := key4(i)
		if !tb.insert(&k, 1, StateUDP, now+300, now) {
			failed++
		}
	}
	// Two 8-slot choices with 1/8 spare slots: failures at 100% of the
	// configured capacity stay rare.
	if failed > n/100 {
		t.Fatalf("%d of %d inserts failed at capacity", failed, n)
	}
	if got := tb.FullDrops(); got != uint64(failed) {
		t.Fatalf("FullDrops %d, failed %d", got, failed)
	}
	t.Logf("%d slots for %d flows: %.1f bytes/flow, %d inserts failed", tb.Slots(), n, float64(tb.Slots()*BytesPerSlot)/n, failed)
}

// TestConnTableProbeAndSlotFor: the batch path's helpers. slotFor finds the
// slot a lookup would (or a free one for an absent key); probe confirms a
// slot holds exactly the key it is asked about, reaps it when expired, and
// leaves a slot holding another key to a full lookup.
func TestConnTableProbeAndSlotFor(t *testing.T) {
	tb := NewConnTable(1000)
	now := tb.Now()
	k, other := key4(1), key4(2)
	h := tb.hash(&k)
	hit, free, _, _ := tb.slotFor(h, now)
	if hit >= 0 || free < 0 {
		t.Fatalf("empty table: slotFor = %d, %d; want -1 and a free slot", hit, free)
	}
	tb.insert(&k, 3, StateEstablished, now+900, now)
	i, _, _ := tb.lookup(&k, now)
	if hit, _, _, _ = tb.slotFor(h, now); hit != i {
		t.Fatalf("slotFor = %d, lookup found slot %d", hit, i)
	}
	if j, c, d, found := tb.probe(i, &k, now); !found || j != i || d != 3 || ctlState(c) != StateEstablished {
		t.Fatalf("probe(own slot) = %d, %s, dest %d, found %v", j, StateName(ctlState(c)), d, found)
	}
	if j, _, _, found := tb.probe(i, &other, now); found || j >= 0 {
		t.Fatalf("probe(slot of another key) = %d, found %v; want not found", j, found)
	}
	if j, _, _, found := tb.probe(free^1, &k, now); found && j != i {
		t.Fatalf("probe(wrong slot) claimed slot %d", j)
	}
	// Expired: a definite miss, and the slot is freed and uncounted.
	if j, _, _, found := tb.probe(i, &k, now+901); !found || j >= 0 {
		t.Fatalf("probe(expired) = %d, found %v; want -1, found", j, found)
	}
	if a := tb.Counts(3).Active.Load(); a != 0 {
		t.Fatalf("active %d after the expired entry was reaped, want 0", a)
	}
}

// TestInsertUsableStaleMask: an insert handed a usable mask that another
// insert has since made stale (processBatch's, from its prefetch pass)
// never overwrites a live entry: both keys stay findable, counts exact.
func TestInsertUsableStaleMask(t *testing.T) {
	tb := NewConnTable(1000)
	now := tb.Now()
	inserted := 0
	for i := 0; inserted < 200 && i < 10000; i++ {
		a, b := key4(2*i), key4(2*i+1)
		ha, hb := tb.hash(&a), tb.hash(&b)
		a1, _, _ := tb.buckets(ha)
		b1, _, _ := tb.buckets(hb)
		if a1 != b1 {
			continue // only keys sharing a first bucket can go stale this way
		}
		_, _, m, _ := tb.slotFor(hb, now) // b's view, before a is inserted
		if !tb.insert(&a, 1, StateEstablished, now+900, now) {
			t.Fatal("insert a failed")
		}
		if !tb.insertUsable(&b, hb, m, 2, StateEstablished, now+900, now) {
			t.Fatal("insert b with a stale mask failed")
		}
		ia, _, da := tb.lookup(&a, now)
		ib, _, db := tb.lookup(&b, now)
		if ia < 0 || ib < 0 || ia == ib || da != 1 || db != 2 {
			t.Fatalf("after the stale insert: a at %d (dest %d), b at %d (dest %d)", ia, da, ib, db)
		}
		inserted++
	}
	if inserted == 0 {
		t.Fatal("no two keys shared a first bucket")
	}
	if a, b := tb.Counts(1).Active.Load(), tb.Counts(2).Active.Load(); a != int32(inserted) || b != int32(inserted) {
		t.Errorf("active counts %d and %d, want %d each", a, b, inserted)
	}
}
