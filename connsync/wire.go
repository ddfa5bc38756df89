package connsync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Wire-format constants of the IPVS sync protocol (Linux
// net/netfilter/ipvs/ip_vs_sync.c, include/uapi/linux/ip_vs.h).
const (
	// DefaultPort is IPVS's sync port (IP_VS_SYNC_PORT).
	DefaultPort = 8848
	// DefaultTTL is the multicast TTL IPVS uses unless told otherwise.
	DefaultTTL = 1
	// HeaderLen is the version 1 message header: reserved (0), syncid,
	// size (be16), nr_conns, version (1), spare (be16, 0).
	HeaderLen = 8
	// ConnV4Len and ConnV6Len are the fixed parts of an IPv4 and an IPv6
	// sync_conn: type, protocol, ver_size (be16: version in the top 4
	// bits, size in the low 12), flags (be32), state (be16), cport, vport,
	// dport (be16), fwmark (be32), timeout (be32, seconds), then caddr,
	// vaddr and daddr.
	ConnV4Len = 36
	ConnV6Len = 72
	// MaxConns is the most conns one message can count (nr_conns is a byte).
	MaxConns = 255
	// MaxMessage is the largest datagram the receiver reads.
	MaxMessage = 65535

	protoVersion = 1
	headerV0Len  = 4  // version 0: nr_conns, syncid, size (be16)
	connV0Len    = 24 // version 0 conn: reserved, protocol, ports, addrs, flags (be16), state (be16)
	seqOptLen    = 24 // struct ip_vs_sync_conn_options: in_seq and out_seq, 3 × be32 each
	typeInet6    = 1  // sync_conn type bit 0: IPv6 addresses
	verShift     = 12
	sizeMask     = 0x0fff
)

// DefaultGroup4 is IPVS's IPv4 sync group (IP_VS_SYNC_GROUP). IPVS has no
// IPv6 default: an IPv6 group must be configured.
var DefaultGroup4 = netip.AddrFrom4([4]byte{224, 0, 0, 81})

// Optional parameters after a conn's addresses: type, length, data. A type
// with bit 6 set may be ignored by a receiver that does not know it; any
// other unknown type makes the receiver skip that conn.
const (
	optSeqData  = 1
	optPEData   = 2
	optPEName   = 3
	optFlag     = 1 << 6 // IPVS_OPT_F_PARAM: optional
	peNameMax   = 16     // IP_VS_PENAME_MAXLEN
	optHeaderSz = 2
)

// IPVS conn flags (IP_VS_CONN_F_*) that matter to sync.
const (
	FlagMasq     uint32 = 0x0000 // forwarding method NAT
	FlagTunnel   uint32 = 0x0002
	FlagDRoute   uint32 = 0x0003
	FlagFwdMask  uint32 = 0x0007
	FlagSync     uint32 = 0x0020
	FlagHashed   uint32 = 0x0040 // never sent
	FlagInactive uint32 = 0x0100
	FlagOutSeq   uint32 = 0x0200
	FlagInSeq    uint32 = 0x0400
	FlagSeqMask  uint32 = 0x0600
	FlagNoCPort  uint32 = 0x0800
	FlagTemplate uint32 = 0x1000
	FlagOnePkt   uint32 = 0x2000
)

// IPVS TCP states (IP_VS_TCP_S_*), as the state field carries them. UDP
// conns have one state (0), templates 0 (NONE) or 1 (ASSURED).
const (
	TCPNone uint16 = iota
	TCPEstablished
	TCPSynSent
	TCPSynRecv
	TCPFinWait
	TCPTimeWait
	TCPClose
	TCPCloseWait
	TCPLastAck
	TCPListen
	TCPSynAck
	TCPStates // number of TCP states
)

// Protocol numbers.
const (
	ProtoTCP  = 6
	ProtoUDP  = 17
	ProtoSCTP = 132
)

// Conn is one connection entry or persistence template as the sync
// protocol carries it. Addresses are all IPv4 or all IPv6.
type Conn struct {
	Proto   uint8
	Flags   uint32 // FlagTemplate, FlagInactive, forwarding method, ...
	State   uint16 // TCP* for TCP; 0 for UDP and templates
	Client  netip.AddrPort
	Virtual netip.AddrPort
	Dest    netip.AddrPort
	FWMark  uint32
	// Timeout is how long, in seconds, the entry lives without traffic.
	// 0 (version 0 messages) means the receiver's default for the state.
	Timeout uint32
	// Unsupported is set by the decoder on a conn a receiver must skip:
	// it carries a mandatory parameter this implementation does not know,
	// or persistence-engine data (xvs has no persistence engines).
	Unsupported bool
}

// Template reports whether c is a persistence template.
func (c *Conn) Template() bool { return c.Flags&FlagTemplate != 0 }

// String prints c as ipvsadm -Lnc would order it.
func (c *Conn) String() string {
	kind := "conn"
	if c.Template() {
		kind = "template"
	}
	return fmt.Sprintf("%s proto %d %v→%v→%v state %d flags %#x timeout %ds", kind, c.Proto, c.Client, c.Virtual, c.Dest, c.State, c.Flags, c.Timeout)
}

// Errors of Decode; each wraps ErrMalformed.
var (
	ErrMalformed = errors.New("malformed sync message")
	errShort     = fmt.Errorf("%w: shorter than its header", ErrMalformed)
	errSize      = fmt.Errorf("%w: size field differs from the datagram length", ErrMalformed)
	errConnShort = fmt.Errorf("%w: conn runs past the end", ErrMalformed)
	errConnVer   = fmt.Errorf("%w: unknown conn version", ErrMalformed)
	errConnType  = fmt.Errorf("%w: unknown conn type", ErrMalformed)
	errOption    = fmt.Errorf("%w: bad optional parameter", ErrMalformed)
)

// Header is a decoded message header.
type Header struct {
	Version uint8 // 0 or 1
	SyncID  uint8
	Conns   int // nr_conns
}

// Decode checks msg whole, then calls f for each of its conns; a message
// with any structural fault is refused whole (ErrMalformed) before f sees
// anything. It reads version 1 messages and, as IPVS backups do, the old
// version 0 (IPv4 only, no timeouts). f must not keep c.
func Decode(msg []byte, f func(c *Conn)) (Header, error) {
	var c Conn
	return decodeWith(msg, &c, f)
}

// decodeWith is Decode with the caller's scratch conn, so a caller that
// keeps one allocates nothing.
func decodeWith(msg []byte, c *Conn, f func(c *Conn)) (Header, error) {
	h, err := decode(msg, c, nil)
	if err != nil || f == nil {
		return h, err
	}
	_, err = decode(msg, c, f)
	return h, err
}

func decode(msg []byte, c *Conn, f func(c *Conn)) (Header, error) {
	var h Header
	if len(msg) < headerV0Len {
		return h, errShort
	}
	if int(binary.BigEndian.Uint16(msg[2:])) != len(msg) {
		return h, errSize
	}
	h.SyncID = msg[1]
	if len(msg) >= HeaderLen && msg[0] == 0 && msg[5] == protoVersion && binary.BigEndian.Uint16(msg[6:]) == 0 {
		h.Version, h.Conns = 1, int(msg[4])
		return h, decodeV1(msg, h.Conns, c, f)
	}
	h.Conns = int(msg[0])
	return h, decodeV0(msg, h.Conns, c, f)
}

func decodeV1(msg []byte, n int, c *Conn, f func(c *Conn)) error {
	off := HeaderLen
	for i := range n {
		if off+ConnV4Len > len(msg) {
			return fmt.Errorf("conn %d: %w", i, errConnShort)
		}
		vs := binary.BigEndian.Uint16(msg[off+2:])
		size := int(vs & sizeMask)
		end := off + size
		if end > len(msg) || size < ConnV4Len {
			return fmt.Errorf("conn %d: %w", i, errConnShort)
		}
		if vs>>verShift != 0 {
			return fmt.Errorf("conn %d: %w %d", i, errConnVer, vs>>verShift)
		}
		if err := parseConnV1(msg[off:end], c); err != nil {
			return fmt.Errorf("conn %d: %w", i, err)
		}
		if f != nil {
			f(c)
		}
		// Each conn starts 32-bit aligned; the padding is not in its size.
		off += (size + 3) &^ 3
	}
	return nil
}

// parseConnV1 reads one version 1 conn; b is exactly its size.
func parseConnV1(b []byte, c *Conn) error {
	*c = Conn{}
	typ := b[0]
	alen, fixed := 4, ConnV4Len
	switch typ {
	case 0:
	case typeInet6:
		alen, fixed = 16, ConnV6Len
	default:
		return fmt.Errorf("%w %d", errConnType, typ)
	}
	if len(b) < fixed {
		return errConnShort
	}
	c.Proto = b[1]
	c.Flags = binary.BigEndian.Uint32(b[4:])
	c.State = binary.BigEndian.Uint16(b[8:])
	cport := binary.BigEndian.Uint16(b[10:])
	vport := binary.BigEndian.Uint16(b[12:])
	dport := binary.BigEndian.Uint16(b[14:])
	c.FWMark = binary.BigEndian.Uint32(b[16:])
	c.Timeout = binary.BigEndian.Uint32(b[20:])
	a := 24
	c.Client = netip.AddrPortFrom(addrAt(b[a:], alen), cport)
	c.Virtual = netip.AddrPortFrom(addrAt(b[a+alen:], alen), vport)
	c.Dest = netip.AddrPortFrom(addrAt(b[a+2*alen:], alen), dport)
	var seen uint8
	for p := fixed; p < len(b); {
		if p+optHeaderSz > len(b) {
			return errOption
		}
		typ, plen := b[p], int(b[p+1])
		p += optHeaderSz
		if plen == 0 || p+plen > len(b) {
			return errOption
		}
		switch t := typ &^ optFlag; t {
		case optSeqData, optPEData, optPEName:
			if seen&(1<<t) != 0 || (t == optSeqData && plen != seqOptLen) || (t == optPEName && plen > peNameMax) {
				return errOption
			}
			seen |= 1 << t
			if t == optPEData {
				c.Unsupported = true
			}
		default:
			if typ&optFlag == 0 {
				c.Unsupported = true
			}
		}
		p += plen
	}
	return nil
}

func addrAt(b []byte, n int) netip.Addr {
	if n == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16([16]byte(b[:16]))
}

func decodeV0(msg []byte, n int, c *Conn, f func(c *Conn)) error {
	off := headerV0Len
	for i := range n {
		if off+connV0Len > len(msg) {
			return fmt.Errorf("conn %d: %w", i, errConnShort)
		}
		b := msg[off:]
		flags := uint32(binary.BigEndian.Uint16(b[20:]))
		off += connV0Len
		if flags&FlagSeqMask != 0 {
			off += seqOptLen
			if off > len(msg) {
				return fmt.Errorf("conn %d: %w", i, errConnShort)
			}
		}
		if f == nil {
			continue
		}
		*c = Conn{
			Proto:   b[1],
			Flags:   flags,
			State:   binary.BigEndian.Uint16(b[22:]),
			Client:  netip.AddrPortFrom(addrAt(b[8:], 4), binary.BigEndian.Uint16(b[2:])),
			Virtual: netip.AddrPortFrom(addrAt(b[12:], 4), binary.BigEndian.Uint16(b[4:])),
			Dest:    netip.AddrPortFrom(addrAt(b[16:], 4), binary.BigEndian.Uint16(b[6:])),
		}
		f(c)
	}
	return nil
}

// Encoder builds version 1 messages in a buffer it owns; after the first
// message it allocates nothing.
type Encoder struct {
	buf    []byte
	maxLen int
	n      int
}

// NewEncoder returns an encoder of messages of at most maxLen bytes
// (IPVS: the interface MTU less the IP and UDP headers, 1472 for IPv4 on
// Ethernet), clamped to hold at least one IPv6 conn.
func NewEncoder(syncID uint8, maxLen int) *Encoder {
	maxLen = min(max(maxLen, HeaderLen+ConnV6Len), MaxMessage)
	e := &Encoder{buf: make([]byte, HeaderLen, maxLen), maxLen: maxLen}
	e.buf[1] = syncID
	e.Reset()
	return e
}

// Reset empties the message, keeping the sync ID.
func (e *Encoder) Reset() {
	id := e.buf[1]
	e.buf = e.buf[:HeaderLen]
	clear(e.buf)
	e.buf[1], e.buf[5] = id, protoVersion
	e.n = 0
	binary.BigEndian.PutUint16(e.buf[2:], HeaderLen)
}

// Len is the number of conns in the message.
func (e *Encoder) Len() int { return e.n }

// Add appends c and reports whether it fitted; a full message must be
// sent and Reset first. A conn whose three addresses are not all IPv4 or
// all IPv6 is refused with an error.
func (e *Encoder) Add(c *Conn) (bool, error) {
	v4 := c.Client.Addr().Is4() && c.Virtual.Addr().Is4() && c.Dest.Addr().Is4()
	v6 := c.Client.Addr().Is6() && c.Virtual.Addr().Is6() && c.Dest.Addr().Is6() &&
		!c.Client.Addr().Is4In6() && !c.Virtual.Addr().Is4In6() && !c.Dest.Addr().Is4In6()
	if !v4 && !v6 {
		return false, fmt.Errorf("sync conn %v→%v→%v: addresses must be all IPv4 or all IPv6", c.Client, c.Virtual, c.Dest)
	}
	size := ConnV4Len
	if v6 {
		size = ConnV6Len
	}
	pad := (4 - len(e.buf)&3) & 3
	if e.n == MaxConns || len(e.buf)+pad+size > e.maxLen {
		return false, nil
	}
	for range pad {
		e.buf = append(e.buf, 0)
	}
	off := len(e.buf)
	e.buf = e.buf[:off+size]
	b := e.buf[off:]
	if v6 {
		b[0] = typeInet6
	} else {
		b[0] = 0
	}
	b[1] = c.Proto
	binary.BigEndian.PutUint16(b[2:], uint16(size)) // version 0 in the top bits
	binary.BigEndian.PutUint32(b[4:], c.Flags&^(FlagHashed|FlagSeqMask))
	binary.BigEndian.PutUint16(b[8:], c.State)
	binary.BigEndian.PutUint16(b[10:], c.Client.Port())
	binary.BigEndian.PutUint16(b[12:], c.Virtual.Port())
	binary.BigEndian.PutUint16(b[14:], c.Dest.Port())
	binary.BigEndian.PutUint32(b[16:], c.FWMark)
	binary.BigEndian.PutUint32(b[20:], c.Timeout)
	a := 24
	for _, ap := range [3]netip.AddrPort{c.Client, c.Virtual, c.Dest} {
		if v6 {
			s := ap.Addr().As16()
			a += copy(b[a:], s[:])
		} else {
			s := ap.Addr().As4()
			a += copy(b[a:], s[:])
		}
	}
	e.n++
	e.buf[4] = byte(e.n)
	binary.BigEndian.PutUint16(e.buf[2:], uint16(len(e.buf)))
	return true, nil
}

// Bytes is the message as built so far, valid until the next Add or Reset.
func (e *Encoder) Bytes() []byte { return e.buf }
