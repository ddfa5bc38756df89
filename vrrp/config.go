package vrrp

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// State is a VRRP instance (or sync group) state. The names are
// keepalived's, as printed in logs and passed to notify scripts.
type State uint8

const (
	StateInit State = iota
	StateBackup
	StateMaster
	StateFault
	StateStop // only passed to notify scripts when the speaker stops
)

func (s State) String() string {
	switch s {
	case StateInit:
		return "INIT"
	case StateBackup:
		return "BACKUP"
	case StateMaster:
		return "MASTER"
	case StateFault:
		return "FAULT"
	case StateStop:
		return "STOP"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Config is everything the speaker runs: keepalived's global_defs (the
// VRRP part), vrrp_script, vrrp_instance and vrrp_sync_group blocks.
type Config struct {
	Globals    Globals
	Scripts    []Script    // vrrp_script NAME { ... }
	Instances  []Instance  // vrrp_instance NAME { ... }
	SyncGroups []SyncGroup // vrrp_sync_group NAME { ... }
}

// Globals mirrors the VRRP-related global_defs keywords.
type Globals struct {
	RouterID    string     // router_id (used in SMTP alerts)
	McastGroup4 netip.Addr // vrrp_mcast_group4; default 224.0.0.18
	McastGroup6 netip.Addr // vrrp_mcast_group6; default ff02::12
	Version     int        // vrrp_version: 2 (default) or 3

	// Gratuitous ARP / unsolicited NA on becoming MASTER.
	GarpMasterDelay         time.Duration // vrrp_garp_master_delay; default 5s; <0 disables the second round
	GarpMasterRepeat        int           // vrrp_garp_master_repeat; default 5
	GarpMasterRefresh       time.Duration // vrrp_garp_master_refresh; 0 = off
	GarpMasterRefreshRepeat int           // vrrp_garp_master_refresh_repeat; default 1

	// SMTP alerts.
	SMTPServer            string        // smtp_server host[:port]; port 25 by default
	SMTPConnectTimeout    time.Duration // smtp_connect_timeout; default 30s
	NotificationEmail     []string      // notification_email { ... }
	NotificationEmailFrom string        // notification_email_from
	EnableSMTPAlert       bool          // enable_smtp_alert / smtp_alert in global_defs
}

// Script mirrors vrrp_script.
type Script struct {
	Name     string
	Script   string        // script "CMD ARGS" (run with /bin/sh -c)
	Interval time.Duration // interval; default 1s
	Timeout  time.Duration // timeout; default = Interval
	Weight   int           // weight -254..254; 0 = failure puts tracking instances in FAULT
	Rise     int           // rise; default 1
	Fall     int           // fall; default 1
}

// VIP is one virtual_ipaddress line: ADDR[/PREFIX] [dev IF] [label L].
type VIP struct {
	Prefix netip.Prefix // a bare address means /32 or /128
	Dev    string       // default: the instance's interface
	Label  string
}

// TrackInterface is a track_interface line: IF [weight W].
type TrackInterface struct {
	Name   string
	Weight int // 0: link down → FAULT; otherwise added while down (<0) or up (>0)
}

// TrackScript is a track_script line: NAME [weight W].
type TrackScript struct {
	Name      string
	Weight    int
	HasWeight bool // the line overrides the script's weight
}

// Instance mirrors vrrp_instance.
type Instance struct {
	Name            string
	State           State // state MASTER|BACKUP: the initial wish
	Interface       string
	VirtualRouterID uint8         // virtual_router_id 1..255
	Priority        uint8         // priority 1..255; default 100
	AdvertInt       time.Duration // advert_int; default 1s
	Version         int           // version; 0 = Globals.Version
	NoPreempt       bool          // nopreempt
	PreemptDelay    time.Duration // preempt_delay

	AuthType int    // authentication { auth_type PASS } → AuthPass; default AuthNone
	AuthPass string // auth_pass (first 8 bytes are used)

	VirtualIPAddresses []VIP

	McastSrcIP   netip.Addr   // mcast_src_ip
	UnicastSrcIP netip.Addr   // unicast_src_ip
	UnicastPeers []netip.Addr // unicast_peer { ... }

	TrackInterfaces []TrackInterface
	TrackScripts    []TrackScript

	NotifyMaster string // notify_master
	NotifyBackup string // notify_backup
	NotifyFault  string // notify_fault
	NotifyStop   string // notify_stop
	Notify       string // notify (called with INSTANCE NAME STATE PRIORITY)
	SMTPAlert    bool   // smtp_alert

	// GarpMasterDelay etc. override Globals when non-zero.
	GarpMasterDelay   time.Duration
	GarpMasterRepeat  int
	GarpMasterRefresh time.Duration

	// use_vmac [NAME]: a macvlan (mode private) on Interface with the
	// virtual router MAC 00:00:5e:00:01:VRID (IPv6: 00:00:5e:00:02:VRID)
	// carries the adverts and the VIPs whose dev is Interface.
	UseVMAC      bool
	VMACName     string // use_vmac's argument; default "vrrp.VRID"
	VMACXmitBase bool   // vmac_xmit_base: send adverts from Interface instead
}

// SyncGroup mirrors vrrp_sync_group.
type SyncGroup struct {
	Name         string
	Group        []string // group { INSTANCE ... }
	NotifyMaster string
	NotifyBackup string
	NotifyFault  string
	NotifyStop   string
	Notify       string // called with GROUP NAME STATE 0
	SMTPAlert    bool
}

// ErrConfig is wrapped by every configuration error from New.
var ErrConfig = errors.New("vrrp: invalid config")

var (
	defaultGroup4 = netip.MustParseAddr("224.0.0.18")
	defaultGroup6 = netip.MustParseAddr("ff02::12")
)

// normalize fills defaults and checks cfg; it returns a copy.
func normalize(cfg Config) (Config, error) {
	g := &cfg.Globals
	if !g.McastGroup4.IsValid() {
		g.McastGroup4 = defaultGroup4
	}
	if !g.McastGroup6.IsValid() {
		g.McastGroup6 = defaultGroup6
	}
	if g.Version == 0 {
		g.Version = 2
	}
	if g.GarpMasterDelay == 0 {
		g.GarpMasterDelay = 5 * time.Second
	}
	if g.GarpMasterRepeat == 0 {
		g.GarpMasterRepeat = 5
	}
	if g.GarpMasterRefreshRepeat == 0 {
		g.GarpMasterRefreshRepeat = 1
	}
	if g.SMTPConnectTimeout == 0 {
		g.SMTPConnectTimeout = 30 * time.Second
	}
	scripts := map[string]bool{}
	cfg.Scripts = append([]Script(nil), cfg.Scripts...)
	for i := range cfg.Scripts {
		s := &cfg.Scripts[i]
		if s.Name == "" || s.Script == "" {
			return cfg, fmt.Errorf("%w: vrrp_script %q: name and script are required", ErrConfig, s.Name)
		}
		if scripts[s.Name] {
			return cfg, fmt.Errorf("%w: vrrp_script %q defined twice", ErrConfig, s.Name)
		}
		scripts[s.Name] = true
		if s.Interval <= 0 {
			s.Interval = time.Second
		}
		if s.Timeout <= 0 {
			s.Timeout = s.Interval
		}
		if s.Rise <= 0 {
			s.Rise = 1
		}
		if s.Fall <= 0 {
			s.Fall = 1
		}
		if s.Weight < -254 || s.Weight > 254 {
			return cfg, fmt.Errorf("%w: vrrp_script %q: weight %d out of -254..254", ErrConfig, s.Name, s.Weight)
		}
	}
	names := map[string]bool{}
	type key struct {
		ifname string
		vrid   uint8
		v6     bool
	}
	vrids := map[key]string{}
	vmacs := map[string]string{}
	cfg.Instances = append([]Instance(nil), cfg.Instances...)
	for i := range cfg.Instances {
		in := &cfg.Instances[i]
		where := fmt.Sprintf("vrrp_instance %q", in.Name)
		if in.Name == "" || names[in.Name] {
			return cfg, fmt.Errorf("%w: %s: empty or duplicate name", ErrConfig, where)
		}
		names[in.Name] = true
		if in.Interface == "" {
			return cfg, fmt.Errorf("%w: %s: interface is required", ErrConfig, where)
		}
		if in.VirtualRouterID == 0 {
			return cfg, fmt.Errorf("%w: %s: virtual_router_id must be 1..255", ErrConfig, where)
		}
		if in.Priority == 0 {
			in.Priority = 100
		}
		if in.AdvertInt == 0 {
			in.AdvertInt = time.Second
		}
		if in.Version == 0 {
			in.Version = g.Version
		}
		if in.UseVMAC {
			if in.VMACName == "" {
				in.VMACName = fmt.Sprintf("vrrp.%d", in.VirtualRouterID)
			}
			if len(in.VMACName) > 15 || strings.ContainsAny(in.VMACName, "/ \t") || in.VMACName == in.Interface {
				return cfg, fmt.Errorf("%w: %s: use_vmac name %q is not a usable interface name", ErrConfig, where, in.VMACName)
			}
			if other, ok := vmacs[in.VMACName]; ok {
				return cfg, fmt.Errorf("%w: %s: use_vmac %s already used by %q", ErrConfig, where, in.VMACName, other)
			}
			vmacs[in.VMACName] = in.Name
		} else {
			in.VMACName, in.VMACXmitBase = "", false
		}
		if in.State != StateMaster && in.State != StateBackup && in.State != StateInit {
			return cfg, fmt.Errorf("%w: %s: state must be MASTER or BACKUP", ErrConfig, where)
		}
		if len(in.VirtualIPAddresses) == 0 {
			return cfg, fmt.Errorf("%w: %s: no virtual_ipaddress", ErrConfig, where)
		}
		if len(in.VirtualIPAddresses) > MaxAddrs {
			return cfg, fmt.Errorf("%w: %s: more than %d virtual addresses", ErrConfig, where, MaxAddrs)
		}
		in.VirtualIPAddresses = append([]VIP(nil), in.VirtualIPAddresses...)
		v6 := in.VirtualIPAddresses[0].Prefix.Addr().Is6()
		for j := range in.VirtualIPAddresses {
			v := &in.VirtualIPAddresses[j]
			if !v.Prefix.IsValid() {
				return cfg, fmt.Errorf("%w: %s: virtual_ipaddress %d is invalid", ErrConfig, where, j+1)
			}
			if v.Prefix.Addr().Is6() != v6 {
				return cfg, fmt.Errorf("%w: %s: virtual_ipaddress %v mixes address families", ErrConfig, where, v.Prefix)
			}
			if v.Dev == "" {
				v.Dev = in.Interface
			}
		}
		switch in.Version {
		case 2:
			if v6 {
				return cfg, fmt.Errorf("%w: %s: VRRPv2 has no IPv6; use version 3", ErrConfig, where)
			}
			if in.AdvertInt%time.Second != 0 || in.AdvertInt > 255*time.Second {
				return cfg, fmt.Errorf("%w: %s: VRRPv2 advert_int %v must be whole seconds 1..255", ErrConfig, where, in.AdvertInt)
			}
		case 3:
			if in.AdvertInt%(10*time.Millisecond) != 0 || in.AdvertInt > 40950*time.Millisecond {
				return cfg, fmt.Errorf("%w: %s: VRRPv3 advert_int %v must be centiseconds up to 40.95s", ErrConfig, where, in.AdvertInt)
			}
			if in.AuthType != AuthNone {
				return cfg, fmt.Errorf("%w: %s: VRRPv3 has no authentication", ErrConfig, where)
			}
		default:
			return cfg, fmt.Errorf("%w: %s: version %d (want 2 or 3)", ErrConfig, where, in.Version)
		}
		if in.AuthType != AuthNone && in.AuthType != AuthPass {
			return cfg, fmt.Errorf("%w: %s: auth_type %d (only PASS is supported)", ErrConfig, where, in.AuthType)
		}
		k := key{in.Interface, in.VirtualRouterID, v6}
		if other, ok := vrids[k]; ok {
			return cfg, fmt.Errorf("%w: %s: virtual_router_id %d already used by %q on %s", ErrConfig, where, in.VirtualRouterID, other, in.Interface)
		}
		vrids[k] = in.Name
		for _, p := range in.UnicastPeers {
			if p.Is6() != v6 {
				return cfg, fmt.Errorf("%w: %s: unicast_peer %v has the wrong family", ErrConfig, where, p)
			}
		}
		for _, ts := range in.TrackScripts {
			if !scripts[ts.Name] {
				return cfg, fmt.Errorf("%w: %s: track_script %q is not defined", ErrConfig, where, ts.Name)
			}
		}
	}
	inGroup := map[string]string{}
	for _, sg := range cfg.SyncGroups {
		if len(sg.Group) == 0 {
			return cfg, fmt.Errorf("%w: vrrp_sync_group %q: empty group", ErrConfig, sg.Name)
		}
		for _, m := range sg.Group {
			if !names[m] {
				return cfg, fmt.Errorf("%w: vrrp_sync_group %q: instance %q is not defined", ErrConfig, sg.Name, m)
			}
			if g, ok := inGroup[m]; ok {
				return cfg, fmt.Errorf("%w: vrrp_sync_group %q: instance %q already in group %q", ErrConfig, sg.Name, m, g)
			}
			inGroup[m] = sg.Name
		}
	}
	return cfg, nil
}
