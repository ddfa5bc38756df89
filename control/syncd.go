package control

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/xvs-lb/xvs/connsync"
)

// SyncRole is a connection sync daemon's role. IPVS runs at most one
// master and one backup at a time; the values are IPVS's state bits
// (IP_VS_STATE_MASTER, IP_VS_STATE_BACKUP). It travels as "master" or
// "backup".
type SyncRole uint8

// The sync daemon's roles.
const (
	SyncMaster SyncRole = 1 // sends the conn table
	SyncBackup SyncRole = 2 // imports what a master sends
)

// String is the role as ipvsadm spells it.
func (r SyncRole) String() string {
	switch r {
	case SyncMaster:
		return "master"
	case SyncBackup:
		return "backup"
	}
	return fmt.Sprintf("role-%d", uint8(r))
}

// MarshalText writes "master" or "backup".
func (r SyncRole) MarshalText() ([]byte, error) {
	if r != SyncMaster && r != SyncBackup {
		return nil, fmt.Errorf("sync daemon role %d: unknown", uint8(r))
	}
	return []byte(r.String()), nil
}

// UnmarshalText reads "master" or "backup".
func (r *SyncRole) UnmarshalText(b []byte) error {
	switch string(b) {
	case "master":
		*r = SyncMaster
	case "backup":
		*r = SyncBackup
	default:
		return fmt.Errorf("sync daemon role %q: want master or backup", b)
	}
	return nil
}

// The sync daemon's defaults, IPVS's (ip_vs_sync.c), as connsync speaks
// them: what a role runs with when ipvsadm --start-daemon leaves an option
// out.
var DefaultSyncGroup = connsync.DefaultGroup4

// More of IPVS's sync defaults; see DefaultSyncGroup.
const (
	DefaultSyncPort = connsync.DefaultPort
	DefaultSyncTTL  = connsync.DefaultTTL
	// DefaultSyncIface is what ipvsadm --start-daemon names without
	// --mcast-interface (its DEF_MCAST_IFN).
	DefaultSyncIface = "eth0"
)

// SyncDaemon is one role of the connection sync daemon: what
// ipvsadm --start-daemon sets and -L --daemon lists. Zero values in a
// StartDaemon request are unset and take IPVS's defaults (Resolved);
// listings carry the values the role runs with.
type SyncDaemon struct {
	Role      SyncRole   `json:"role"`
	Interface string     `json:"mcast_ifn,omitempty"` // --mcast-interface
	SyncID    uint8      `json:"syncid"`              // --syncid; a backup with 0 accepts every syncid
	MaxLen    int        `json:"maxlen,omitempty"`    // --sync-maxlen: datagram payload limit in bytes
	Group     netip.Addr `json:"group,omitzero"`      // --mcast-group
	Port      uint16     `json:"port,omitempty"`      // --mcast-port
	TTL       uint8      `json:"ttl,omitempty"`       // --mcast-ttl
	// FromConfig marks, in listings, a role that keepalived.conf's
	// lvs_sync_daemon started (and VRRP transitions move) rather than
	// xvsadm --start-daemon. ipvsadm's listing has no place for it.
	FromConfig bool `json:"config,omitempty"`
}

// Validate checks a StartDaemon request's settings.
func (s *SyncDaemon) Validate() error {
	if s.Role != SyncMaster && s.Role != SyncBackup {
		return fmt.Errorf("sync daemon: role %d: want master or backup", uint8(s.Role))
	}
	if s.Interface == "" {
		return fmt.Errorf("%s sync daemon: no multicast interface", s.Role)
	}
	if len(s.Interface) > 255 || strings.ContainsAny(s.Interface, "\x00/") {
		return fmt.Errorf("%s sync daemon: interface %q: not an interface name", s.Role, s.Interface)
	}
	if s.MaxLen < 0 || s.MaxLen > 65535 {
		return fmt.Errorf("%s sync daemon: maxlen %d: want 1..65535", s.Role, s.MaxLen)
	}
	if s.Group.IsValid() && (!s.Group.IsMulticast() || s.Group.Is4In6() || s.Group.Zone() != "") {
		return fmt.Errorf("%s sync daemon: group %s: not a multicast address", s.Role, s.Group)
	}
	return nil
}

// Resolved is the role as IPVS runs it: group, port and TTL default to
// 224.0.0.81, 8848 and 1; maxlen defaults to what fits a 1500-byte packet
// (a master) or the interface's MTU, at least 1500 (a backup), less the IP
// and UDP headers, and a given maxlen is held within [1, 65535 less the
// headers] (a backup: at least 1024), as ip_vs_sync.c does.
func (s SyncDaemon) Resolved(mtu int) SyncDaemon {
	if !s.Group.IsValid() {
		s.Group = DefaultSyncGroup
	}
	if s.Port == 0 {
		s.Port = DefaultSyncPort
	}
	if s.TTL == 0 {
		s.TTL = DefaultSyncTTL
	}
	hlen := 20 + 8
	if s.Group.Is6() {
		hlen = 40 + 8
	}
	switch {
	case s.MaxLen > 0 && s.Role == SyncBackup:
		s.MaxLen = min(max(s.MaxLen, 1024), 65535-hlen)
	case s.MaxLen > 0:
		s.MaxLen = min(s.MaxLen, 65535-hlen)
	case s.Role == SyncBackup:
		s.MaxLen = min(max(mtu, 1500), 65535) - hlen
	default:
		s.MaxLen = 1500 - hlen
	}
	return s
}
