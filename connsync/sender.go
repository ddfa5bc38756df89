package connsync

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// Table is the conn table the master syncs from.
type Table interface {
	// Walk calls f for each live entry until f returns false, in an order
	// that is stable while the table does not change. Each entry's Timeout
	// is its remaining life in seconds. f must not keep c.
	Walk(f func(c *Conn) bool)
}

// Counters are the sync daemon's counters; one set serves a director's
// sender and receiver across role changes. Safe for concurrent use.
type Counters struct {
	SentMessages atomic.Uint64
	SentConns    atomic.Uint64
	SendErrors   atomic.Uint64
	RecvMessages atomic.Uint64 // datagrams read, whatever became of them
	RecvConns    atomic.Uint64 // conns in well-formed messages of our syncid
	Imported     atomic.Uint64
	ImportErrors atomic.Uint64 // the importer refused the conn
	Skipped      atomic.Uint64 // conns xvs cannot hold (protocol, state, PE data, fwmark)
	Malformed    atomic.Uint64 // datagrams dropped as malformed
	WrongSyncID  atomic.Uint64 // datagrams dropped for their syncid
}

// Sender defaults.
const (
	DefaultInterval   = 500 * time.Millisecond
	DefaultRefresh    = 30 * time.Second
	DefaultMaxRate    = 1 << 20 // bytes per second
	DefaultMaxLen     = 1500 - 20 - 8
	DefaultCacheSlots = 1 << 16
	// udpIPOverhead is what the token bucket adds per datagram for its
	// IPv4 and UDP headers.
	udpIPOverhead = 28
	// walkShare: a walk may use at most 1/walkShare of the time.
	walkShare = 20
)

// SenderConfig configures a Sender; zero fields take the defaults.
type SenderConfig struct {
	SyncID        uint8
	MaxLen        int           // message size limit in bytes
	Interval      time.Duration // between table walks
	RefreshPeriod time.Duration // re-send a live conn at most this often
	MaxRate       int           // bytes per second
	CacheSlots    int           // remembered conns (rounded up to a power of two)
	Counters      *Counters
	Logger        *slog.Logger
}

func (c *SenderConfig) defaults() {
	if c.MaxLen <= 0 {
		c.MaxLen = DefaultMaxLen
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.RefreshPeriod <= 0 {
		c.RefreshPeriod = DefaultRefresh
	}
	if c.MaxRate <= 0 {
		c.MaxRate = DefaultMaxRate
	}
	if c.CacheSlots <= 0 {
		c.CacheSlots = DefaultCacheSlots
	}
	if c.Counters == nil {
		c.Counters = new(Counters)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Sender is the master side. Its state is owned by the goroutine that
// calls Run (or pass, in tests).
type Sender struct {
	cfg   SenderConfig
	table Table
	conn  net.PacketConn
	dst   net.Addr
	enc   *Encoder
	cache sentCache

	start   time.Time
	tokens  float64   // bytes the bucket holds
	refill  time.Time // last refill
	resume  int       // walk position to start sending from
	pending []pendingSlot
	errLog  time.Time // last send error logged
}

type pendingSlot struct {
	key      uint64
	val      uint32
	deadline uint32
}

// NewSender returns a sender that writes to dst through conn. Run owns
// conn from then on and closes it when it returns.
func NewSender(cfg SenderConfig, table Table, conn net.PacketConn, dst net.Addr) *Sender {
	cfg.defaults()
	now := time.Now()
	return &Sender{
		cfg: cfg, table: table, conn: conn, dst: dst,
		enc:     NewEncoder(cfg.SyncID, cfg.MaxLen),
		cache:   newSentCache(cfg.CacheSlots),
		start:   now,
		refill:  now,
		tokens:  float64(cfg.MaxRate),
		pending: make([]pendingSlot, 0, MaxConns),
	}
}

// Run walks the table and sends until ctx is done, then closes conn.
func (s *Sender) Run(ctx context.Context) error {
	defer s.conn.Close()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		begin := time.Now()
		s.pass(begin)
		t.Reset(max(s.cfg.Interval, walkShare*time.Since(begin)))
	}
}

// seconds is the sender's clock: whole seconds since it started, from 1.
func (s *Sender) seconds(now time.Time) uint32 {
	return uint32(now.Sub(s.start)/time.Second) + 1
}

// pass is one table walk: it sends what changed, within the bandwidth
// budget, and returns how many conns it sent.
func (s *Sender) pass(now time.Time) int {
	rate := float64(s.cfg.MaxRate)
	s.tokens = min(s.tokens+now.Sub(s.refill).Seconds()*rate, max(rate, float64(s.cfg.MaxLen+udpIPOverhead)))
	s.refill = now
	sec := s.seconds(now)
	sent := 0
	pos, stopped := 0, false
	resume := s.resume
	s.table.Walk(func(c *Conn) bool {
		pos++
		if pos <= resume || !syncable(c) {
			return true
		}
		key, val := fingerprint(c)
		deadline := sec + c.Timeout
		if slot := s.cache.find(key); slot != nil && slot.val == val && !moved(slot.deadline, deadline, c.Timeout, s.cfg.RefreshPeriod) {
			return true
		}
		size := ConnV4Len
		if c.Client.Addr().Is6() {
			size = ConnV6Len
		}
		if s.tokens < float64(len(s.enc.Bytes())+size+3+udpIPOverhead) {
			stopped = true
			s.resume = pos - 1
			return false
		}
		ok, err := s.enc.Add(c)
		if err != nil {
			return true // not representable; nothing a backup could use
		}
		if !ok {
			sent += s.flush()
			if ok, _ = s.enc.Add(c); !ok {
				return true
			}
		}
		s.pending = append(s.pending, pendingSlot{key, val, deadline})
		return true
	})
	sent += s.flush()
	if !stopped {
		s.resume = 0
	}
	return sent
}

// flush sends the message being built, if any; the conns in it count as
// sent (remembered) only when the datagram left.
func (s *Sender) flush() int {
	n := s.enc.Len()
	if n == 0 {
		return 0
	}
	msg := s.enc.Bytes()
	s.tokens -= float64(len(msg) + udpIPOverhead)
	_, err := s.conn.WriteTo(msg, s.dst)
	if err != nil {
		s.cfg.Counters.SendErrors.Add(1)
		if now := time.Now(); now.Sub(s.errLog) > 10*time.Second {
			s.errLog = now
			s.cfg.Logger.Warn("connsync: send", "to", s.dst, "err", err)
		}
		n = 0
	} else {
		s.cfg.Counters.SentMessages.Add(1)
		s.cfg.Counters.SentConns.Add(uint64(n))
		for _, p := range s.pending {
			s.cache.store(p.key, p.val, p.deadline)
		}
	}
	s.pending = s.pending[:0]
	s.enc.Reset()
	return n
}

// syncable reports whether IPVS would sync c in its state: templates and
// UDP always, TCP once established and while closing.
func syncable(c *Conn) bool {
	if c.Template() || c.Proto != ProtoTCP {
		return true
	}
	switch c.State {
	case TCPEstablished, TCPFinWait, TCPClose, TCPCloseWait, TCPTimeWait:
		return true
	}
	return false
}

// moved reports whether a conn's expiry moved far enough since it was sent
// to be sent again: by min(refresh, max(timeout/2, 10 s)), IPVS's
// sync_refresh_period rule.
func moved(sentDeadline, deadline, timeout uint32, refresh time.Duration) bool {
	d := int64(deadline) - int64(sentDeadline)
	if d < 0 {
		d = -d
	}
	thr := min(int64(refresh/time.Second), max(int64(timeout/2), 10))
	return d >= thr
}

// fingerprint hashes what identifies a conn (key) and what a backup must
// learn again when it changes (val).
func fingerprint(c *Conn) (key uint64, val uint32) {
	k := uint64(c.Proto) | uint64(c.Flags&FlagTemplate)<<8 | uint64(c.Client.Port())<<32 | uint64(c.Virtual.Port())<<48
	h := mix(0x243F6A8885A308D3, k)
	h = mixAddr(h, c.Client.Addr())
	h = mixAddr(h, c.Virtual.Addr())
	h = mix(h, uint64(c.FWMark))
	v := mix(0x13198A2E03707344, uint64(c.State)|uint64(c.Dest.Port())<<16|uint64(c.Flags&FlagFwdMask)<<32)
	v = mixAddr(v, c.Dest.Addr())
	return h | 1, uint32(v ^ v>>32) // key 0 marks an empty slot
}

func mixAddr(h uint64, a netip.Addr) uint64 {
	b := a.As16()
	var w0, w1 uint64
	for i := range 8 {
		w0 = w0<<8 | uint64(b[i])
		w1 = w1<<8 | uint64(b[8+i])
	}
	return mix(mix(h, w0), w1)
}

func mix(h, v uint64) uint64 {
	h ^= v
	h *= 0x9E3779B97F4A7C15
	h ^= h >> 32
	h *= 0xD6E8FEB86659FD93
	return h ^ h>>29
}

// sentCache remembers what was sent: fixed size, 8-way set associative.
type sentCache struct {
	slots []sentSlot
	mask  uint64
}

type sentSlot struct {
	key      uint64
	val      uint32
	deadline uint32
}

const cacheWays = 8 // a set is two cache lines

func newSentCache(n int) sentCache {
	size := cacheWays
	for size < n {
		size <<= 1
	}
	return sentCache{slots: make([]sentSlot, size), mask: uint64(size - 1)}
}

func (c *sentCache) set(key uint64) []sentSlot {
	i := (key >> 7) & c.mask &^ (cacheWays - 1)
	return c.slots[i : i+cacheWays]
}

func (c *sentCache) find(key uint64) *sentSlot {
	set := c.set(key)
	for i := range set {
		if set[i].key == key {
			return &set[i]
		}
	}
	return nil
}

func (c *sentCache) store(key uint64, val, deadline uint32) {
	if s := c.find(key); s != nil {
		s.val, s.deadline = val, deadline
		return
	}
	set := c.set(key)
	victim := 0
	for i := range set {
		if set[i].key == 0 {
			victim = i
			break
		}
		// The entry that expires first is the least use to remember.
		if int32(set[i].deadline-set[victim].deadline) < 0 {
			victim = i
		}
	}
	set[victim] = sentSlot{key: key, val: val, deadline: deadline}
}
