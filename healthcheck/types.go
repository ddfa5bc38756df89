package healthcheck

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"
)

// CheckType names a keepalived checker block.
type CheckType string

// The checker blocks keepalived knows (BFD_CHECK and FILE_CHECK are not
// supported).
const (
	TCPCheck  CheckType = "TCP_CHECK"
	HTTPGet   CheckType = "HTTP_GET"
	SSLGet    CheckType = "SSL_GET"
	MiscCheck CheckType = "MISC_CHECK"
	PingCheck CheckType = "PING_CHECK"
	UDPCheck  CheckType = "UDP_CHECK"
	DNSCheck  CheckType = "DNS_CHECK"
	SMTPCheck CheckType = "SMTP_CHECK"
)

// Keepalived's defaults.
const (
	DefaultDelayLoop      = 60 * time.Second
	DefaultConnectTimeout = 5 * time.Second
	DefaultSMTPHelo       = "smtpchecker.keepalived.org"
	defaultUDPMaxReply    = 255
)

// Service is one virtual_server block: its identity, quorum settings and
// real servers.
type Service struct {
	// Name identifies the service across Updates and in Transitions. Empty
	// means keepalived's rendering, e.g. "[198.18.0.100]:tcp:80" or
	// "FWM 7".
	Name     string
	VIP      netip.Addr
	Port     uint16
	Protocol string // "tcp" (default), "udp", "sctp"
	FWMark   uint32

	// Quorum is the minimum live weight; 0 means keepalived's default 1.
	Quorum     int
	Hysteresis int
	QuorumUp   string // script run when quorum is gained
	QuorumDown string // script run when quorum is lost

	Sorry *SorryServer

	// HASuspend: the checkers of this service pause while the pool is
	// suspended (the director is not MASTER for the VIP).
	HASuspend bool
	// Alpha and Omega apply to every real server of the service; a real
	// server may also set Alpha itself.
	Alpha bool
	Omega bool
	// VirtualHost is the default Host for HTTP_GET/SSL_GET.
	VirtualHost string

	Servers []RealServer
}

// SorryServer is the sorry_server of a virtual server.
type SorryServer struct {
	Addr    netip.Addr
	Port    uint16
	Inhibit bool // sorry_server_inhibit: weight 0 instead of removal
}

// RealServer is one real_server block.
type RealServer struct {
	Addr   netip.Addr
	Port   uint16
	Weight int // 0 means keepalived's default 1; use NoWeight for 0
	// InhibitOnFailure keeps a failed server in the table with weight 0.
	InhibitOnFailure bool
	Alpha            bool
	NotifyUp         string
	NotifyDown       string
	VirtualHost      string
	Checkers         []Checker
}

// NoWeight requests a configured weight of 0 (the zero value means 1).
const NoWeight = -1

// Checker is one checker block. Pointer fields distinguish "not set" (use
// keepalived's default for the checker type) from an explicit zero.
type Checker struct {
	Type CheckType

	ConnectIP        netip.Addr // default: the real server's address
	ConnectPort      uint16     // default: the real server's port
	BindTo           netip.Addr
	BindPort         uint16
	BindIf           string
	FWMark           uint32 // SO_MARK on the checker's sockets
	ConnectTimeout   time.Duration
	Retry            *int // alias nb_get_retry
	DelayBeforeRetry *time.Duration
	DelayLoop        time.Duration
	Warmup           *time.Duration
	Alpha            bool
	LogAllFailures   bool

	HTTP *HTTPOptions // HTTP_GET, SSL_GET
	Misc *MiscOptions // MISC_CHECK
	UDP  *UDPOptions  // UDP_CHECK
	DNS  *DNSOptions  // DNS_CHECK
	SMTP *SMTPOptions // SMTP_CHECK
	// ViaVIP turns a TCP_CHECK into the data-path check (xvs_via_vip).
	ViaVIP *ViaVIPOptions
}

// HTTPOptions mirrors the HTTP_GET/SSL_GET block.
type HTTPOptions struct {
	URLs []URL
	// Protocol is "1.0" (default as keepalived), "1.0C" or "1.1".
	Protocol    string
	VirtualHost string
	EnableSNI   bool
}

// URL is one url block. A check passes when every URL passes.
type URL struct {
	Path   string
	Digest string // MD5 of the body, hex
	// StatusCodes lists accepted codes as ranges; empty means 200-299.
	StatusCodes  []StatusRange
	VirtualHost  string
	Regex        string // RE2 syntax, not PCRE
	RegexNoMatch bool
}

// StatusRange is an inclusive range of HTTP status codes.
type StatusRange struct{ Lo, Hi int }

// ParseStatusCodes parses keepalived's status_code arguments, e.g.
// ["200", "300-399"].
func ParseStatusCodes(args []string) ([]StatusRange, error) {
	var out []StatusRange
	for _, a := range args {
		lo, hi, isRange := strings.Cut(a, "-")
		var r StatusRange
		if _, err := fmt.Sscanf(lo, "%d", &r.Lo); err != nil {
			return nil, fmt.Errorf("status_code %q: %w", a, err)
		}
		r.Hi = r.Lo
		if isRange {
			if _, err := fmt.Sscanf(hi, "%d", &r.Hi); err != nil {
				return nil, fmt.Errorf("status_code %q: %w", a, err)
			}
		}
		if r.Lo < 100 || r.Hi > 999 || r.Lo > r.Hi {
			return nil, fmt.Errorf("status_code %q: want codes 100-999, low <= high", a)
		}
		out = append(out, r)
	}
	return out, nil
}

// MiscOptions mirrors the MISC_CHECK block.
type MiscOptions struct {
	Path    string // misc_path: command line, split on spaces
	Timeout time.Duration
	Dynamic bool
}

// UDPOptions mirrors the UDP_CHECK block.
type UDPOptions struct {
	Payload        []byte // nil: a random payload as keepalived
	RequireReply   bool
	ReplyPattern   string // require_reply HEX_STR; x/X nibbles match anything
	MinReplyLength int
	MaxReplyLength int // 0 means 255
}

// DNSOptions mirrors the DNS_CHECK block.
type DNSOptions struct {
	Type string // A NS CNAME SOA MX TXT AAAA; default SOA
	Name string // default "."
}

// SMTPOptions mirrors the SMTP_CHECK block.
type SMTPOptions struct {
	HeloName string
}

// ViaVIPOptions configures the data-path check (xvs_via_vip). The daemon
// fills the addressing from the service and its neighbour table.
type ViaVIPOptions struct {
	Interface string           // egress interface
	DstMAC    net.HardwareAddr // real server (DR) or next hop (TUN)
	SrcMAC    net.HardwareAddr // default: the interface's address
	SrcIP     netip.Addr       // director's address the reply comes back to
	VIP       netip.Addr
	Port      uint16
	Tunnel    bool // TUN: wrap in IPIP to the real server's address
}

// PoolOptions configures a Pool.
type PoolOptions struct {
	Logger *slog.Logger
	// InsecureScripts runs scripts that fail the safety rules (logging a
	// warning) instead of refusing them.
	InsecureScripts bool
	// NotifyTimeout bounds notify and quorum scripts; default 30s.
	NotifyTimeout time.Duration
}

// Transition is what the daemon turns into a new scheduler snapshot.
type Transition struct {
	Service string
	Server  string // "ip:port" (IPv6 in brackets)
	Up      bool   // health of the server
	// InPool says whether the server belongs in the service's table; a
	// failed server with inhibit_on_failure stays with Weight 0, and live
	// servers leave when quorum is lost and a sorry server takes over.
	InPool bool
	Weight int
	Sorry  bool // this is the sorry server
	// Removed: the server left the configuration (Update); drop it.
	Removed bool
}

// ServerState is one row of Pool.State.
type ServerState struct {
	Service string
	Server  string
	Up      bool
	InPool  bool
	Weight  int
	Sorry   bool
	// QuorumUp is the state of the service's quorum.
	QuorumUp bool
	// Checks holds per-checker health, in configuration order.
	Checks []CheckState
}

// CheckState is one checker's view in ServerState.
type CheckState struct {
	Type CheckType
	Up   bool
}

// Stats are the pool's counters.
type Stats struct {
	Checks      uint64 // check runs
	Failures    uint64 // failed check runs
	Transitions uint64 // published transitions
	Scripts     uint64 // scripts started
	Refused     uint64 // scripts refused by the safety rules
}

// Ptr returns a pointer to v, for the optional Checker fields.
func Ptr[T any](v T) *T { return &v }

func (s *Service) key() string {
	if s.Name != "" {
		return s.Name
	}
	if s.FWMark != 0 && !s.VIP.IsValid() {
		return fmt.Sprintf("FWM %d", s.FWMark)
	}
	return fmtEndpoint(s.VIP, s.proto(), s.Port)
}

func (s *Service) proto() string {
	if s.Protocol == "" {
		return "tcp"
	}
	return strings.ToLower(s.Protocol)
}

// fmtEndpoint renders keepalived's "[ip]:proto:port".
func fmtEndpoint(a netip.Addr, proto string, port uint16) string {
	return fmt.Sprintf("[%s]:%s:%d", a, proto, port)
}

func serverKey(a netip.Addr, port uint16) string {
	return netip.AddrPortFrom(a, port).String()
}

func (r *RealServer) weight() int {
	switch {
	case r.Weight == NoWeight:
		return 0
	case r.Weight <= 0:
		return 1
	}
	return r.Weight
}

// settings resolves a checker's timing with keepalived's per-type defaults.
type settings struct {
	delayLoop, connectTimeout, delayBeforeRetry, warmup time.Duration
	retry                                               int
}

func (c *Checker) settings() settings {
	s := settings{delayLoop: c.DelayLoop, connectTimeout: c.ConnectTimeout}
	if s.delayLoop <= 0 {
		s.delayLoop = DefaultDelayLoop
	}
	if s.connectTimeout <= 0 {
		s.connectTimeout = DefaultConnectTimeout
	}
	switch c.Type {
	case DNSCheck:
		s.retry = 3
		s.delayBeforeRetry = s.delayLoop
	case MiscCheck:
		s.retry = 0
		s.delayBeforeRetry = time.Second
	case HTTPGet, SSLGet:
		s.retry = 1
		s.delayBeforeRetry = 3 * time.Second
	default:
		s.retry = 1
		s.delayBeforeRetry = time.Second
	}
	if c.Retry != nil && *c.Retry >= 0 {
		s.retry = *c.Retry
	}
	if c.DelayBeforeRetry != nil && *c.DelayBeforeRetry >= 0 {
		s.delayBeforeRetry = *c.DelayBeforeRetry
	}
	s.warmup = s.delayLoop
	if c.Warmup != nil && *c.Warmup >= 0 {
		s.warmup = *c.Warmup
	}
	return s
}
