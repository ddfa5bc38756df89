// Package control owns the model and the wire protocol between xvsadm and
// xvsd: the virtual services, real servers, counters, connection entries,
// timeouts and sync daemon roles as ipvsadm shows them; the
// request/response protocol over the control socket (Server, Client,
// Handler); and ipvsadm's output formats (format.go), so that scripts
// written against ipvsadm parse xvsadm's output unchanged.
//
// # Protocol
//
// The control socket is a unix stream socket, created with mode 0600 (only
// its owner, root, may connect). A client writes one Request as a single
// line of JSON and reads one Response as a single line of JSON; it may send
// further requests on the same connection, one at a time (xvsadm -R does,
// one per restored rule). The server handles a connection's requests in
// order and closes it on a malformed line or a line longer than
// MaxRequestSize.
//
//	→ {"v":1,"op":"AddDest","service":{"proto":"tcp","addr":"198.18.0.100","port":80},"dest":{"addr":"198.18.0.11","port":80,"method":"Route","weight":1}}
//	← {}
//	→ {"v":1,"op":"AddDest", ... same ...}
//	← {"code":"dest-exists","error":"198.18.0.11:80: destination already exists"}
//	→ {"v":1,"op":"StartDaemon","daemon":{"role":"master","mcast_ifn":"eth0","syncid":1}}
//	← {}
//	→ {"v":1,"op":"Daemons"}
//	← {"daemons":[{"role":"master","mcast_ifn":"eth0","syncid":1,"maxlen":1472,"group":"224.0.0.81","port":8848,"ttl":1}]}
//
// Ops: AddService, EditService, DelService, AddDest, EditDest, DelDest,
// Clear, List, Zero, SetTimeouts, GetTimeouts, Conns, and the connection
// sync daemon's StartDaemon, StopDaemon and Daemons. A failed op answers
// with "error" (free text from the daemon) and "code" (an ErrorCode naming
// what went wrong in ipvsadm's terms); the client turns both back into an
// *OpError that matches this package's sentinel errors with errors.Is, and
// Message gives the text ipvsadm prints for it ("Service not defined",
// "Destination already exists", ...).
//
// Edit ops replace every setting of the service or real server, as
// ipvsadm -E and -e do: options not given on the command line take their
// defaults (scheduler wlc, no persistence, weight 1, gatewaying).
package control

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Proto is a virtual service's transport protocol (IP protocol number).
// It travels as "tcp", "udp" or "sctp".
type Proto uint8

// Protocols a virtual service may have.
const (
	TCP  Proto = 6
	UDP  Proto = 17
	SCTP Proto = 132
)

// String is the protocol's name as ipvsadm lists it: TCP, UDP, SCTP; IP
// for 0 (fwmark persistence templates in the connection list).
func (p Proto) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	case 0:
		return "IP"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// MarshalText spells the protocol in lower case ("tcp").
func (p Proto) MarshalText() ([]byte, error) {
	switch p {
	case 0, TCP, UDP, SCTP:
		return []byte(strings.ToLower(p.String())), nil
	}
	return nil, fmt.Errorf("protocol %d: not a virtual service protocol", uint8(p))
}

// UnmarshalText reads "tcp", "udp", "sctp" or "ip" in any case.
func (p *Proto) UnmarshalText(b []byte) error {
	switch strings.ToLower(string(b)) {
	case "tcp":
		*p = TCP
	case "udp":
		*p = UDP
	case "sctp":
		*p = SCTP
	case "ip", "":
		*p = 0
	default:
		return fmt.Errorf("protocol %q: want tcp, udp or sctp", b)
	}
	return nil
}

// Method is a real server's forwarding method.
type Method uint8

// Forwarding methods, named as ipvsadm -L names them.
const (
	Route  Method = iota // direct routing, ipvsadm -g (the default)
	Tunnel               // IPIP encapsulation, ipvsadm -i
	Masq                 // NAT, ipvsadm -m
	Local                // the director itself (kernel IPVS only; listed, never set by xvsadm)
)

var methodNames = [...]string{Route: "Route", Tunnel: "Tunnel", Masq: "Masq", Local: "Local"}

// String is the name in ipvsadm -L's Forward column.
func (m Method) String() string {
	if int(m) < len(methodNames) {
		return methodNames[m]
	}
	return fmt.Sprintf("method-%d", uint8(m))
}

// Switch is the ipvsadm option that selects the method (-g, -i, -m).
func (m Method) Switch() string {
	switch m {
	case Tunnel:
		return "-i"
	case Masq:
		return "-m"
	}
	return "-g"
}

// MarshalText writes the ipvsadm -L name.
func (m Method) MarshalText() ([]byte, error) {
	if int(m) >= len(methodNames) {
		return nil, fmt.Errorf("forwarding method %d: unknown", uint8(m))
	}
	return []byte(methodNames[m]), nil
}

// UnmarshalText reads the ipvsadm -L name, or keepalived's DR/TUN/NAT.
func (m *Method) UnmarshalText(b []byte) error {
	switch strings.ToLower(string(b)) {
	case "route", "dr", "":
		*m = Route
	case "tunnel", "tun":
		*m = Tunnel
	case "masq", "nat":
		*m = Masq
	case "local":
		*m = Local
	default:
		return fmt.Errorf("forwarding method %q: want Route, Tunnel or Masq", b)
	}
	return nil
}

// ServiceKey names a virtual service: protocol, address and port, or a
// firewall mark. Two keys name the same service when they are equal.
type ServiceKey struct {
	Proto Proto      `json:"proto,omitempty"` // 0 for fwmark services
	Addr  netip.Addr `json:"addr,omitzero"`   // unset for fwmark services
	Port  uint16     `json:"port,omitempty"`
	// FWMark, when not zero, names a firewall-mark service (ipvsadm -f);
	// Proto, Addr and Port are then unset.
	FWMark uint32 `json:"fwmark,omitempty"`
	// IPv6 is the address family of a fwmark service (ipvsadm -f N -6).
	IPv6 bool `json:"ipv6,omitempty"`
}

// Is6 reports whether the service is an IPv6 one.
func (k ServiceKey) Is6() bool {
	if k.FWMark != 0 {
		return k.IPv6
	}
	return k.Addr.Is6() // IPv4-mapped addresses count as IPv6, as in ipvsadm
}

// String is the key as ipvsadm -Ln spells it: "TCP  198.18.0.100:80",
// "FWM  1".
func (k ServiceKey) String() string {
	if k.FWMark != 0 {
		if k.IPv6 {
			return fmt.Sprintf("FWM  %d IPv6", k.FWMark)
		}
		return fmt.Sprintf("FWM  %d", k.FWMark)
	}
	return fmt.Sprintf("%-4s %s", k.Proto, netip.AddrPortFrom(k.Addr, k.Port))
}

// Validate checks that the key names exactly one kind of service.
func (k ServiceKey) Validate() error {
	if k.FWMark != 0 {
		if k.Proto != 0 || k.Addr.IsValid() || k.Port != 0 {
			return fmt.Errorf("service fwmark %d: protocol, address and port must be unset", k.FWMark)
		}
		return nil
	}
	switch k.Proto {
	case TCP, UDP, SCTP:
	default:
		return fmt.Errorf("service: protocol %d: want tcp, udp or sctp", uint8(k.Proto))
	}
	if !k.Addr.IsValid() {
		return fmt.Errorf("service %s: no address", k.Proto)
	}
	if k.Addr.Zone() != "" {
		return fmt.Errorf("service %s: address %s: zones are not allowed", k.Proto, k.Addr)
	}
	if k.IPv6 {
		return fmt.Errorf("service %s: the ipv6 flag is for fwmark services; the address gives the family", k)
	}
	return nil
}

// Compare orders keys as ipvsadm sorts its listing: by fwmark (address
// services first), family (IPv4 first), protocol, address, port.
func (k ServiceKey) Compare(o ServiceKey) int {
	switch {
	case k.FWMark != o.FWMark:
		return cmpInt(k.FWMark, o.FWMark)
	case k.Is6() != o.Is6():
		if o.Is6() {
			return -1
		}
		return 1
	case k.Proto != o.Proto:
		return cmpInt(k.Proto, o.Proto)
	}
	if c := k.Addr.Compare(o.Addr); c != 0 {
		return c
	}
	return cmpInt(k.Port, o.Port)
}

func cmpInt[T ~uint8 | ~uint16 | ~uint32](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Scheduler flags as ipvsadm -b spells them. IPVS has three flag bits
// whose meaning depends on the scheduler: sh and mh name the first two,
// every other scheduler sees flag-1..flag-3.
const (
	FlagSHFallback = "sh-fallback"
	FlagSHPort     = "sh-port"
	FlagMHFallback = "mh-fallback"
	FlagMHPort     = "mh-port"
)

// Service is a virtual service with its real servers, as listed.
type Service struct {
	ServiceKey
	Sched string   `json:"sched"`           // scheduler name: rr, wrr, wlc, ...
	Flags []string `json:"flags,omitempty"` // scheduler flags (ipvsadm -b), in ipvsadm's order
	// Persistent services send a client to the same real server for
	// Timeout seconds after its last connection (ipvsadm -p).
	Persistent bool   `json:"persistent,omitempty"`
	Timeout    uint32 `json:"timeout,omitempty"`
	// Netmask is the persistence granularity as a prefix length (ipvsadm
	// -M): 32 (IPv4) or 128 (IPv6) means per client address; 0 means the
	// default, per client address.
	Netmask   int    `json:"netmask,omitempty"`
	OnePacket bool   `json:"ops,omitempty"` // one-packet scheduling (ipvsadm -o, UDP)
	PE        string `json:"pe,omitempty"`  // persistence engine (ipvsadm --pe)

	Dests []Dest `json:"dests,omitempty"` // filled by List; ignored by Add/EditService
	Stats Stats  `json:"stats,omitzero"`
	Rates Rates  `json:"rates,omitzero"`
}

// Bits is the persistence granularity in bits for the service's family:
// Netmask, or the full address length when Netmask is 0.
func (s *Service) Bits() int {
	full := 32
	if s.Is6() {
		full = 128
	}
	if s.Netmask <= 0 || s.Netmask > full {
		return full
	}
	return s.Netmask
}

// MaxTimeout is the longest persistence or connection timeout ipvsadm
// accepts: 31 days, in seconds.
const MaxTimeout = 86400 * 31

// ValidateSettings checks the settings Add/EditService carry (the key is
// checked by Validate).
func (s *Service) ValidateSettings() error {
	if s.Sched == "" {
		return fmt.Errorf("service %s: no scheduler", s.ServiceKey)
	}
	if s.Persistent && (s.Timeout < 1 || s.Timeout > MaxTimeout) {
		return fmt.Errorf("service %s: persistence timeout %d: want 1..%d", s.ServiceKey, s.Timeout, MaxTimeout)
	}
	if s.Netmask < 0 || s.Netmask > fullBits(s.Is6()) {
		return fmt.Errorf("service %s: netmask /%d out of range", s.ServiceKey, s.Netmask)
	}
	for _, f := range s.Flags {
		if FlagBits([]string{f}) == 0 {
			return fmt.Errorf("service %s: scheduler flag %q: unknown", s.ServiceKey, f)
		}
	}
	return nil
}

// Validate checks a real server's settings.
func (d *Dest) Validate() error {
	if !d.Addr.IsValid() || d.Addr.Zone() != "" {
		return fmt.Errorf("real server %q: not an address", d.Addr)
	}
	if d.Weight < 0 || d.Weight > 65535 {
		return fmt.Errorf("real server %s: weight %d: want 0..65535", d.Addr, d.Weight)
	}
	if d.Method > Masq {
		return fmt.Errorf("real server %s: forwarding method %s cannot be set", d.Addr, d.Method)
	}
	if d.Upper > 1<<31-1 || d.Lower > 1<<31-1 {
		return fmt.Errorf("real server %s: connection thresholds out of range", d.Addr)
	}
	return nil
}

// DestKey names a real server within a service.
type DestKey struct {
	Addr netip.Addr `json:"addr"`
	Port uint16     `json:"port,omitempty"`
}

// Dest is a real server of a virtual service.
type Dest struct {
	Addr   netip.Addr `json:"addr"`
	Port   uint16     `json:"port,omitempty"`
	Method Method     `json:"method"`
	Weight int32      `json:"weight"`          // 0..65535; 0 = quiesced
	Upper  uint32     `json:"upper,omitempty"` // upper connection threshold (ipvsadm -x), 0 = none
	Lower  uint32     `json:"lower,omitempty"` // lower connection threshold (ipvsadm -y), 0 = none

	ActiveConns  uint32 `json:"active,omitempty"`
	InactConns   uint32 `json:"inactive,omitempty"`
	PersistConns uint32 `json:"persist,omitempty"`
	Stats        Stats  `json:"stats,omitzero"`
	Rates        Rates  `json:"rates,omitzero"`
}

// Key is the real server's address and port.
func (d *Dest) Key() DestKey { return DestKey{Addr: d.Addr, Port: d.Port} }

// Stats are cumulative counters since the service or real server was
// added or last zeroed (ipvsadm -Z).
type Stats struct {
	Conns    uint64 `json:"conns,omitempty"`
	InPkts   uint64 `json:"inpkts,omitempty"`
	OutPkts  uint64 `json:"outpkts,omitempty"`
	InBytes  uint64 `json:"inbytes,omitempty"`
	OutBytes uint64 `json:"outbytes,omitempty"`
}

// Rates are per-second estimates of the same counters.
type Rates struct {
	CPS    uint64 `json:"cps,omitempty"`
	InPPS  uint64 `json:"inpps,omitempty"`
	OutPPS uint64 `json:"outpps,omitempty"`
	InBPS  uint64 `json:"inbps,omitempty"`
	OutBPS uint64 `json:"outbps,omitempty"`
}

// Conn is one entry of the connection table (ipvsadm -Lc).
type Conn struct {
	Proto Proto `json:"proto"`
	// Expire is the time left before the entry expires; ipvsadm shows
	// it as mm:ss. (JSON: nanoseconds.)
	Expire time.Duration `json:"expire"`
	// State is the protocol state as IPVS names it: ESTABLISHED,
	// SYN_RECV, FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, ... for
	// TCP; UDP for UDP flows; NONE for persistence templates.
	State       string         `json:"state"`
	Source      netip.AddrPort `json:"source"`
	Virtual     netip.AddrPort `json:"virtual"`
	Destination netip.AddrPort `json:"destination"`
}

// Timeouts are the connection timeouts in seconds (ipvsadm --set,
// --timeout); 0 in SetTimeouts leaves that value unchanged, as in IPVS.
type Timeouts struct {
	TCP    int `json:"tcp"`
	TCPFin int `json:"tcpfin"`
	UDP    int `json:"udp"`
}

// Info describes the director for ipvsadm -L's first line.
type Info struct {
	Version string `json:"version"` // IPVS version xvsd mimics, "1.2.1"
	Size    int    `json:"size"`    // connection table size
}

// DefaultInfo is what -L prints when the daemon leaves Info empty.
var DefaultInfo = Info{Version: "1.2.1", Size: 4096}
