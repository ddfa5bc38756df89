package config

import (
	"net/netip"
	"strconv"
	"time"
)

// Config is one keepalived.conf and everything it includes. Slices keep
// the order of the file (includes expanded in sorted glob order), so the
// same input always gives the same Config.
//
// Unset values: durations and numbers that keepalived inherits from an
// enclosing block are zero (or -1 where zero is a valid value, noted on
// the field) in the block where they were not written. Checkers are the
// exception: their timing fields hold the effective value, inherited from
// the real server, then the virtual server, then keepalived's default; so
// do a VRRP instance's version and gratuitous ARP fields, inherited from
// global_defs.
type Config struct {
	Files          []string // every file read, the main file first
	Global         GlobalDefs
	StaticAddrs    []IPAddress // static_ipaddress
	StaticRoutes   []RawLine   // static_routes, kept as written
	Scripts        []*VRRPScript
	SyncGroups     []*SyncGroup
	Instances      []*VRRPInstance
	ServerGroups   []*VirtualServerGroup
	VirtualServers []*VirtualServer
}

// RawLine is a line kept as written (e.g. static_routes), words joined by
// single spaces.
type RawLine struct {
	Pos  Pos
	Text string
}

// GlobalDefs is the global_defs block.
type GlobalDefs struct {
	Pos                   Pos
	RouterID              string
	NotificationEmail     []string
	NotificationEmailFrom string
	SMTPServer            string // host or address as written
	SMTPPort              int    // 0 = default (25)
	SMTPHeloName          string
	SMTPConnectTimeout    time.Duration
	EnableScriptSecurity  bool
	ScriptUser            string
	ScriptGroup           string
	DefaultInterface      string
	VRRPMcastGroup4       netip.Addr
	VRRPMcastGroup6       netip.Addr
	VRRPVersion           int // 0 = unset (2)
	VRRPStrict            bool
	VRRPSkipCheckAdvAddr  bool

	VRRPGarpMasterDelay         time.Duration
	VRRPGarpMasterRepeat        int
	VRRPGarpMasterRefresh       time.Duration
	VRRPGarpMasterRefreshRepeat int
	VRRPGarpLowerPrioDelay      time.Duration
	VRRPGarpLowerPrioRepeat     int
	VRRPGarpInterval            time.Duration
	VRRPGNAInterval             time.Duration

	LVSTimeouts LVSTimeouts
	// LVSSyncDaemon is lvs_sync_daemon; nil when not written (see
	// Config.SyncDaemon for the older per-instance form).
	LVSSyncDaemon *LVSSyncDaemon

	// XVSInterface (our keyword xvs_interface IFNAME) names the interface
	// xvsd attaches to, overriding the lookup from VRRP instances, VIP
	// addresses and routes.
	XVSInterface string
	// XVSConnTableSize (our keyword xvs_conn_table_size N) sizes the
	// connection table; 0 = the daemon's default.
	XVSConnTableSize int
}

// LVSSyncDaemon is global_defs' "lvs_sync_daemon INTERFACE [VRRP_INSTANCE]
// [id SYNC_ID] [maxlen LEN] [port PORT] [ttl TTL] [group ADDR]" (keepalived
// 1.3+; "inst NAME" may also name the instance): the IPVS connection sync
// daemon, master while the instance is MASTER and backup otherwise. Zero
// values are unset: IPVS's defaults apply (group 224.0.0.81, port 8848,
// ttl 1, maxlen from the MTU).
type LVSSyncDaemon struct {
	Pos       Pos
	Interface string
	// Instance is the VRRP instance that decides the role; "" runs master
	// and backup at once, as keepalived does without one.
	Instance string
	SyncID   int // -1 = unset: the instance's virtual_router_id, or 0
	MaxLen   int
	Port     int
	TTL      int
	Group    netip.Addr
}

// LVSTimeouts is global_defs' lvs_timeouts (ipvsadm --set); zero = unset.
type LVSTimeouts struct {
	TCP    time.Duration
	TCPFin time.Duration
	UDP    time.Duration
}

// IPAddress is one line of virtual_ipaddress / static_ipaddress:
// "198.18.0.100/24 brd 198.18.0.255 dev eth0 label eth0:1 scope global".
type IPAddress struct {
	Pos       Pos
	Prefix    netip.Prefix // address with its prefix length (/32 or /128 if none written)
	Broadcast netip.Addr
	Peer      netip.Prefix
	Dev       string // "" = the instance's interface
	Label     string
	Scope     string
	NoDAD     bool
	NoTrack   bool
}

// VRRPScript is a vrrp_script block.
type VRRPScript struct {
	Pos      Pos
	Name     string
	Script   string
	Interval time.Duration // default 1s
	Timeout  time.Duration // 0 = interval
	Weight   int           // -253..253, 0 = script only faults the instance
	Reverse  bool          // "weight N reverse"
	Rise     int           // default 1
	Fall     int           // default 1
	User     string
	Group    string
	InitFail bool
}

// Notify holds the notify scripts of an instance or sync group.
type Notify struct {
	Master string
	Backup string
	Fault  string
	Stop   string
	Any    string // "notify": called on every transition with the state
}

// TrackRef is one line of track_script / track_interface.
type TrackRef struct {
	Pos     Pos
	Name    string
	Weight  int  // 0 = the script's own weight (track_script) / fault (track_interface)
	HasW    bool // a weight was written
	Reverse bool
}

// SyncGroup is a vrrp_sync_group block.
type SyncGroup struct {
	Pos            Pos
	Name           string
	Group          []string
	Notify         Notify
	SMTPAlert      bool
	TrackScript    []TrackRef
	TrackInterface []TrackRef
}

// Auth is an instance's authentication block.
type Auth struct {
	Pos  Pos
	Type string // "PASS" or "AH"
	Pass string
}

// VRRPInstance is a vrrp_instance block.
type VRRPInstance struct {
	Pos             Pos
	Name            string
	State           string // "MASTER", "BACKUP" or "" (unset: BACKUP)
	Interface       string
	VirtualRouterID int           // 1..255
	Priority        int           // 1..255, default 100
	AdvertInt       time.Duration // default 1s; VRRPv3 allows centiseconds
	Version         int           // effective: own, else global vrrp_version, else 2
	Auth            *Auth

	VirtualIPAddresses         []IPAddress
	VirtualIPAddressesExcluded []IPAddress
	VirtualRoutes              []RawLine
	VirtualRules               []RawLine

	TrackInterface []TrackRef
	TrackScript    []TrackRef

	NoPreempt    bool
	PreemptDelay time.Duration
	UnicastSrcIP netip.Addr
	UnicastPeers []UnicastPeer
	McastSrcIP   netip.Addr
	Notify       Notify
	SMTPAlert    bool
	Accept       *bool // accept / no_accept; nil = keepalived's default

	// Gratuitous ARP timing, effective: the instance's, else global_defs'
	// vrrp_garp_*, else keepalived's defaults (5s, 5 times, no refresh,
	// lower_prio = master values).
	GarpMasterDelay         time.Duration
	GarpMasterRepeat        int
	GarpMasterRefresh       time.Duration
	GarpMasterRefreshRepeat int
	GarpLowerPrioDelay      time.Duration
	GarpLowerPrioRepeat     int

	UseVMAC          bool
	VMACName         string
	VMACXmitBase     bool
	NativeIPv6       bool
	DontTrackPrimary bool
	Strict           bool
	LVSSyncDaemonIf  string
}

// UnicastPeer is one line of unicast_peer.
type UnicastPeer struct {
	Pos  Pos
	Addr netip.Addr
}

// VirtualServerGroup is a virtual_server_group block.
type VirtualServerGroup struct {
	Pos     Pos
	Name    string
	Entries []VSGEntry
}

// VSGEntry is "IP port", "IP-LAST port" (a range of the last byte) or
// "fwmark N".
type VSGEntry struct {
	Pos    Pos
	Addr   netip.Addr
	Last   netip.Addr // end of range, equal to Addr for a single address
	Port   uint16
	FWMark uint32
}

// Method is the LVS forwarding method.
type Method string

const (
	MethodNAT Method = "NAT"
	MethodDR  Method = "DR"
	MethodTUN Method = "TUN"
)

// VirtualServer is a virtual_server block: exactly one of Addr+Port,
// FWMark or Group identifies it.
type VirtualServer struct {
	Pos    Pos
	Addr   netip.Addr
	Port   uint16
	FWMark uint32
	Group  string

	Protocol  string        // "TCP" (default), "UDP", "SCTP"
	DelayLoop time.Duration // default 60s
	Scheduler string        // lb_algo / lvs_sched, default "wlc"
	// SchedFlags: "sh-port", "sh-fallback", "mh-port", "mh-fallback",
	// "flag-1".."flag-3", "hashed", in the order written, no repeats.
	SchedFlags             []string
	OPS                    bool   // one-packet scheduling
	Method                 Method // lb_kind / lvs_method, default NAT
	Persistent             bool
	PersistenceTimeout     time.Duration // 360s if persistence_timeout has no value
	PersistenceGranularity int           // prefix bits (ipvsadm -M); 0 = whole address
	PersistenceEngine      string
	IPFamily               string // "inet", "inet6" or ""

	SorryServer        *SorryServer
	SorryServerInhibit bool
	Quorum             int // default 1
	Hysteresis         int
	QuorumUp           string
	QuorumDown         string
	HASuspend          bool
	Virtualhost        string
	Alpha              bool
	Omega              bool
	InhibitOnFailure   bool
	SMTPAlert          bool

	// Checker defaults for the whole service; 0 / -1 = unset.
	Retry            int // -1 = unset
	DelayBeforeRetry time.Duration
	Warmup           time.Duration
	ConnectTimeout   time.Duration

	RealServers []*RealServer
}

// Key is a stable identity of the service, as ipvsadm would print it:
// "TCP 198.18.0.100:80", "FWM 1", "GROUP name".
func (vs *VirtualServer) Key() string {
	switch {
	case vs.Group != "":
		return "GROUP " + vs.Group
	case vs.FWMark != 0 || !vs.Addr.IsValid():
		return "FWM " + strconv.FormatUint(uint64(vs.FWMark), 10)
	default:
		return vs.Protocol + " " + netip.AddrPortFrom(vs.Addr, vs.Port).String()
	}
}

// SorryServer is the server used when every real server is down.
type SorryServer struct {
	Pos    Pos
	Addr   netip.Addr
	Port   uint16
	Method Method // "" = the virtual server's
}

// RealServer is a real_server block.
type RealServer struct {
	Pos              Pos
	Addr             netip.Addr
	Port             uint16 // 0 if not written (fwmark services); then the VS port
	Weight           int    // 0..65535, default 1
	Method           Method // "" = the virtual server's
	InhibitOnFailure bool
	NotifyUp         string
	NotifyDown       string
	UThreshold       int // 0 = no limit
	LThreshold       int
	Alpha            bool
	SMTPAlert        bool
	Virtualhost      string

	// Checker defaults for this server; 0 / -1 = unset.
	DelayLoop        time.Duration
	Retry            int // -1 = unset
	DelayBeforeRetry time.Duration
	Warmup           time.Duration
	ConnectTimeout   time.Duration

	Checkers []*Checker
}

// Key is "198.18.0.11:80" (or the bare address when no port was written).
func (rs *RealServer) Key() string {
	if rs.Port == 0 {
		return rs.Addr.String()
	}
	return netip.AddrPortFrom(rs.Addr, rs.Port).String()
}

// CheckerType names a checker block as keepalived spells it.
type CheckerType string

const (
	TCPCheck  CheckerType = "TCP_CHECK"
	HTTPGet   CheckerType = "HTTP_GET"
	SSLGet    CheckerType = "SSL_GET"
	MiscCheck CheckerType = "MISC_CHECK"
	SMTPCheck CheckerType = "SMTP_CHECK"
	DNSCheck  CheckerType = "DNS_CHECK"
	UDPCheck  CheckerType = "UDP_CHECK"
	PingCheck CheckerType = "PING_CHECK"
)

// Checker is one checker block of a real server. Exactly the part for its
// Type is non-nil (none for TCP_CHECK and PING_CHECK).
type Checker struct {
	Pos  Pos
	Type CheckerType

	// Where to connect: zero = the real server's address and port.
	ConnectIP   netip.Addr
	ConnectPort uint16
	BindTo      netip.Addr
	BindPort    uint16
	BindIf      string
	FWMark      uint32

	// Effective timing (inherited and defaulted, see Config).
	ConnectTimeout   time.Duration // default 5s
	Retry            int           // default 1 (nb_get_retry is an old name)
	DelayBeforeRetry time.Duration // default 1s
	DelayLoop        time.Duration // default: the virtual server's
	Warmup           time.Duration
	Alpha            bool

	// ViaVIP (our keyword xvs_via_vip) asks for the data-path check: the
	// probe is sent to the virtual address through xvs's own forwarding to
	// this real server, so it fails when the data path does, not only when
	// the server does.
	ViaVIP bool

	HTTP *HTTPCheckSpec // HTTP_GET, SSL_GET
	Misc *MiscCheckSpec
	SMTP *SMTPCheckSpec
	DNS  *DNSCheckSpec
	UDP  *UDPCheckSpec
}

// HTTPCheckSpec is the HTTP_GET / SSL_GET part of a checker.
type HTTPCheckSpec struct {
	URLs         []URL
	Virtualhost  string
	EnableSNI    bool
	TLSCompliant bool
	FastRecovery bool
	HTTPProtocol string // "1.0" (default), "1.0C", "1.1", "1.0K"
}

// URL is one url block.
type URL struct {
	Pos          Pos
	Path         string
	Digest       string // lower-case hex MD5 of the body, "" = not checked
	StatusCodes  []StatusRange
	Regex        string
	RegexNoMatch bool
	Virtualhost  string
}

// StatusRange is an inclusive range of HTTP status codes; keepalived
// accepts 200-299 when no status_code is written.
type StatusRange struct{ Lo, Hi int }

// MiscCheckSpec is the MISC_CHECK part of a checker.
type MiscCheckSpec struct {
	Path    string
	Timeout time.Duration // 0 = delay_loop
	Dynamic bool
	User    string
	Group   string
}

// SMTPCheckSpec is the SMTP_CHECK part of a checker.
type SMTPCheckSpec struct {
	HeloName string
	Hosts    []SMTPHost
}

// SMTPHost is a host block inside SMTP_CHECK.
type SMTPHost struct {
	Pos         Pos
	ConnectIP   netip.Addr
	ConnectPort uint16
	BindTo      netip.Addr
	BindPort    uint16
}

// DNSCheckSpec is the DNS_CHECK part of a checker.
type DNSCheckSpec struct {
	Type string // default "SOA"
	Name string // default "."
}

// UDPCheckSpec is the UDP_CHECK part of a checker.
type UDPCheckSpec struct {
	Payload        []byte
	RequireReply   bool
	ReplyPattern   []byte // optional pattern after require_reply
	MinReplyLength int
	MaxReplyLength int
}

// InstanceFor returns the vrrp_instance whose virtual_ipaddress (or
// virtual_ipaddress_excluded) holds addr, or nil. xvsd uses it to find
// the interface a virtual server's VIP lives on.
func (c *Config) InstanceFor(addr netip.Addr) *VRRPInstance {
	for _, vi := range c.Instances {
		for _, lists := range [][]IPAddress{vi.VirtualIPAddresses, vi.VirtualIPAddressesExcluded} {
			for _, ip := range lists {
				if ip.Prefix.Addr() == addr {
					return vi
				}
			}
		}
	}
	return nil
}

// ServerGroup returns the virtual_server_group called name, or nil.
func (c *Config) ServerGroup(name string) *VirtualServerGroup {
	for _, g := range c.ServerGroups {
		if g.Name == name {
			return g
		}
	}
	return nil
}

// SyncDaemon returns the effective sync daemon settings, or nil when the
// file asks for none: global_defs' lvs_sync_daemon, else the first
// vrrp_instance with the older lvs_sync_daemon_interface (that instance
// decides the role). An unset sync ID becomes the instance's
// virtual_router_id, or 0 without an instance, as keepalived does.
func (c *Config) SyncDaemon() *LVSSyncDaemon {
	var sd LVSSyncDaemon
	switch {
	case c.Global.LVSSyncDaemon != nil:
		sd = *c.Global.LVSSyncDaemon
	default:
		for _, vi := range c.Instances {
			if vi.LVSSyncDaemonIf != "" {
				sd = LVSSyncDaemon{Pos: vi.Pos, Interface: vi.LVSSyncDaemonIf, Instance: vi.Name, SyncID: -1}
				break
			}
		}
		if sd.Interface == "" {
			return nil
		}
	}
	if sd.SyncID < 0 {
		sd.SyncID = 0
		for _, vi := range c.Instances {
			if vi.Name == sd.Instance {
				sd.SyncID = vi.VirtualRouterID
				break
			}
		}
	}
	return &sd
}
