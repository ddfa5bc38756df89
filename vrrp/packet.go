package vrrp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// IPProto is the IP protocol number of VRRP (RFC 5798 §5.1.1.3).
const IPProto = 112

// Advertisement layout, common to v2 and v3 (RFC 3768 §5.1, RFC 5798 §5.1):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	v2: |  Auth Type    |   Adver Int   |          Checksum         |
//	v3: |(rsvd) |     Max Adver Int     |          Checksum         |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                 IPvX Address(es) ...                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	v2 only: |      Authentication Data (8 octets)                  |
const (
	offVerType  = 0
	offVRID     = 1
	offPriority = 2
	offCount    = 3
	offAuthType = 4 // v2
	offAdverInt = 4 // v2: byte 5; v3: 12 bits of bytes 4–5
	offChecksum = 6
	headerLen   = 8
	authDataLen = 8
	typeAdvert  = 1
)

// Authentication types of VRRPv2 (RFC 2338 §5.3.6; keepalived's auth_type).
const (
	AuthNone = 0
	AuthPass = 1
)

// MaxAddrs bounds the addresses in one advertisement (the count is 8 bits).
const MaxAddrs = 255

// DropReason says why a received advertisement was discarded. Every reason
// has a counter in [InstanceStats] and is logged once per instance.
type DropReason uint8

const (
	DropNone      DropReason = iota
	DropShort                // shorter than its header or its address count
	DropVersion              // version not 2/3, or not the instance's
	DropType                 // type is not ADVERTISEMENT
	DropTTL                  // TTL / hop limit not 255 (RFC 5798 §7.1)
	DropChecksum             // checksum does not verify
	DropVRID                 // no instance with this VRID on the interface
	DropAuthType             // v2 auth type differs from ours
	DropAuth                 // v2 PASS password differs (first 8 bytes)
	DropInterval             // v2 advert interval differs from ours
	DropAddrCount            // address count differs from our virtual_ipaddress
	DropFamily               // address family does not match the instance
	DropOwn                  // our own advert looped back
	numDropReasons
)

var dropNames = [numDropReasons]string{
	DropNone: "none", DropShort: "short", DropVersion: "version", DropType: "type",
	DropTTL: "ttl", DropChecksum: "checksum", DropVRID: "vrid", DropAuthType: "auth_type",
	DropAuth: "auth", DropInterval: "interval", DropAddrCount: "addr_count",
	DropFamily: "family", DropOwn: "own",
}

func (d DropReason) String() string {
	if d < numDropReasons {
		return dropNames[d]
	}
	return fmt.Sprintf("drop(%d)", uint8(d))
}

// Advert is one decoded VRRP advertisement. It is a wire struct, kept apart
// from the instance's domain state.
type Advert struct {
	Version  uint8 // 2 or 3
	VRID     uint8
	Priority uint8
	// Interval is the advert interval: whole seconds on the v2 wire,
	// centiseconds (Max Adver Int) on the v3 wire.
	Interval time.Duration
	AuthType uint8   // v2 only
	AuthData [8]byte // v2 only
	Addrs    []netip.Addr
}

// Errors returned by [Advert.Append].
var (
	ErrV2IPv6      = errors.New("vrrp: VRRPv2 has no IPv6 form")
	ErrBadVersion  = errors.New("vrrp: version must be 2 or 3")
	ErrInterval    = errors.New("vrrp: advert interval out of range for this version")
	ErrTooManyAddr = errors.New("vrrp: more than 255 addresses")
	ErrAddrFamily  = errors.New("vrrp: address family mixes IPv4 and IPv6")
)

// Append encodes a into b for a packet from src to dst (the v3 checksum
// covers their pseudo-header) and returns the extended slice.
func (a *Advert) Append(b []byte, src, dst netip.Addr) ([]byte, error) {
	v6 := src.Is6() && !src.Is4In6()
	switch a.Version {
	case 2:
		if v6 {
			return b, ErrV2IPv6
		}
	case 3:
	default:
		return b, ErrBadVersion
	}
	if len(a.Addrs) > MaxAddrs {
		return b, ErrTooManyAddr
	}
	start := len(b)
	b = append(b, a.Version<<4|typeAdvert, a.VRID, a.Priority, uint8(len(a.Addrs)))
	if a.Version == 2 {
		secs := a.Interval / time.Second
		if secs < 1 || secs > 255 || a.Interval%time.Second != 0 {
			return b[:start], fmt.Errorf("%w: v2 %v", ErrInterval, a.Interval)
		}
		b = append(b, a.AuthType, uint8(secs), 0, 0)
	} else {
		cs := a.Interval / (10 * time.Millisecond)
		if cs < 1 || cs > 0xfff {
			return b[:start], fmt.Errorf("%w: v3 %v", ErrInterval, a.Interval)
		}
		b = append(b, uint8(cs>>8)&0x0f, uint8(cs), 0, 0)
	}
	for _, ip := range a.Addrs {
		if ip.Is4() == v6 {
			return b[:start], ErrAddrFamily
		}
		b = append(b, ip.AsSlice()...)
	}
	if a.Version == 2 {
		b = append(b, a.AuthData[:]...)
	}
	msg := b[start:]
	var sum uint32
	if a.Version == 3 {
		sum = pseudoSum(src, dst, len(msg))
	}
	binary.BigEndian.PutUint16(msg[offChecksum:], ^fold(sumBytes(sum, msg)))
	return b, nil
}

// Parse decodes and verifies the VRRP message b (the IP payload) received
// from src to dst into a, reusing a.Addrs. It checks what the packet alone
// can tell: length, version, type, checksum. The instance checks the rest.
func Parse(b []byte, src, dst netip.Addr, a *Advert) DropReason {
	if len(b) < headerLen {
		return DropShort
	}
	ver := b[offVerType] >> 4
	if ver != 2 && ver != 3 {
		return DropVersion
	}
	if b[offVerType]&0x0f != typeAdvert {
		return DropType
	}
	v6 := src.Is6() && !src.Is4In6()
	if ver == 2 && v6 {
		return DropVersion
	}
	alen := 4
	if v6 {
		alen = 16
	}
	n := int(b[offCount])
	need := headerLen + n*alen
	if ver == 2 {
		need += authDataLen
	}
	if len(b) < need {
		return DropShort
	}
	// Checksum covers the whole VRRP message as received (RFC 5798 §5.2.8),
	// with the pseudo-header in v3 only.
	var sum uint32
	if ver == 3 {
		sum = pseudoSum(src, dst, len(b))
	}
	if fold(sumBytes(sum, b)) != 0xffff {
		return DropChecksum
	}
	a.Version = ver
	a.VRID = b[offVRID]
	a.Priority = b[offPriority]
	a.AuthType = 0
	a.AuthData = [8]byte{}
	if ver == 2 {
		a.AuthType = b[offAuthType]
		a.Interval = time.Duration(b[offAdverInt+1]) * time.Second
		copy(a.AuthData[:], b[headerLen+n*alen:])
	} else {
		cs := binary.BigEndian.Uint16(b[offAdverInt:]) & 0x0fff
		a.Interval = time.Duration(cs) * 10 * time.Millisecond
	}
	a.Addrs = a.Addrs[:0]
	for i := range n {
		off := headerLen + i*alen
		if v6 {
			a.Addrs = append(a.Addrs, netip.AddrFrom16([16]byte(b[off:off+16])))
		} else {
			a.Addrs = append(a.Addrs, netip.AddrFrom4([4]byte(b[off:off+4])))
		}
	}
	return DropNone
}

// pseudoSum is the partial sum of the IPv4 (RFC 768 style) or IPv6
// (RFC 8200 §8.1) pseudo-header that the VRRPv3 checksum covers.
func pseudoSum(src, dst netip.Addr, length int) uint32 {
	var sum uint32
	if src.Is4() || src.Is4In6() {
		s, d := src.Unmap().As4(), dst.Unmap().As4()
		sum = sumBytes(sum, s[:])
		sum = sumBytes(sum, d[:])
		sum += IPProto + uint32(length)
		return sum
	}
	s, d := src.As16(), dst.As16()
	sum = sumBytes(sum, s[:])
	sum = sumBytes(sum, d[:])
	sum += uint32(length>>16) + uint32(length&0xffff) + IPProto
	return sum
}

// sumBytes adds b as big-endian 16-bit words to sum (RFC 1071).
func sumBytes(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}
