package connsync

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"
)

// Importer takes the conns a backup learns.
type Importer interface {
	// Import adds or updates one conn; c.Timeout is never 0. It must not
	// keep c.
	Import(c *Conn) error
}

// ReceiverConfig configures a Receiver.
type ReceiverConfig struct {
	// SyncID filters messages; 0 accepts every syncid (IPVS's rule).
	SyncID   uint8
	Counters *Counters
	Logger   *slog.Logger
}

// Receiver is the backup side. Handle may be called from one goroutine
// at a time (Run's).
type Receiver struct {
	cfg     ReceiverConfig
	imp     Importer
	conn    net.PacketConn
	errLog  time.Time
	each    func(c *Conn) // bound once, so Handle allocates nothing
	scratch Conn
}

// NewReceiver returns a receiver reading conn. Run owns conn from then on
// and closes it when it returns.
func NewReceiver(cfg ReceiverConfig, imp Importer, conn net.PacketConn) *Receiver {
	if cfg.Counters == nil {
		cfg.Counters = new(Counters)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Receiver{cfg: cfg, imp: imp, conn: conn}
	r.each = r.conn1
	return r
}

// Run reads and imports until ctx is done, then closes conn.
func (r *Receiver) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { r.conn.Close() })
	defer stop()
	defer r.conn.Close()
	buf := make([]byte, MaxMessage)
	for {
		n, _, err := r.conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			r.cfg.Logger.Warn("connsync: receive", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(100 * time.Millisecond): // no busy loop on a persistent error
			}
			continue
		}
		r.Handle(buf[:n])
	}
}

// Handle processes one datagram.
func (r *Receiver) Handle(msg []byte) {
	ctr := r.cfg.Counters
	ctr.RecvMessages.Add(1)
	// The syncid filter comes before the conns are read, as in IPVS; a
	// datagram too short to carry one is malformed.
	if len(msg) >= headerV0Len && int(msg[2])<<8|int(msg[3]) == len(msg) && r.cfg.SyncID != 0 && msg[1] != r.cfg.SyncID {
		ctr.WrongSyncID.Add(1)
		return
	}
	if _, err := decodeWith(msg, &r.scratch, r.each); err != nil {
		ctr.Malformed.Add(1)
		return
	}
}

func (r *Receiver) conn1(c *Conn) {
	ctr := r.cfg.Counters
	ctr.RecvConns.Add(1)
	if !importable(c) {
		ctr.Skipped.Add(1)
		return
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout(c)
	}
	if err := r.imp.Import(c); err != nil {
		ctr.ImportErrors.Add(1)
		if now := time.Now(); now.Sub(r.errLog) > 10*time.Second {
			r.errLog = now
			r.cfg.Logger.Warn("connsync: import", "conn", c.String(), "err", err)
		}
		return
	}
	ctr.Imported.Add(1)
}

// importable checks what IPVS's backup checks (protocol, state range) and
// what xvs cannot hold: fwmark services, persistence-engine data, SCTP.
func importable(c *Conn) bool {
	if c.Unsupported || c.FWMark != 0 {
		return false
	}
	switch c.Proto {
	case ProtoTCP:
		return c.Template() || c.State < TCPStates
	case ProtoUDP:
		return c.Template() || c.State == 0
	}
	return false
}

// tcpTimeouts are IPVS's default TCP timeouts by state, in seconds.
var tcpTimeouts = [TCPStates]uint32{
	TCPNone: 2, TCPEstablished: 900, TCPSynSent: 120, TCPSynRecv: 60,
	TCPFinWait: 120, TCPTimeWait: 120, TCPClose: 10, TCPCloseWait: 60,
	TCPLastAck: 30, TCPListen: 120, TCPSynAck: 120,
}

// DefaultTimeout is what an IPVS backup gives a conn whose message carried
// no timeout (version 0): the protocol's timeout for the state, or 3
// minutes for templates and anything else.
func DefaultTimeout(c *Conn) uint32 {
	switch {
	case c.Template():
	case c.Proto == ProtoTCP && c.State < TCPStates:
		return tcpTimeouts[c.State]
	case c.Proto == ProtoUDP:
		return 300
	}
	return 180
}
