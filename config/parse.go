package config

import (
	"encoding/hex"
	"fmt"
	"io/fs"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// keepalived's defaults, applied where the file leaves a value unset.
const (
	DefaultDelayLoop        = 60 * time.Second
	DefaultConnectTimeout   = 5 * time.Second
	DefaultRetry            = 1
	DefaultDelayBeforeRetry = 1 * time.Second
	DefaultPersistence      = 360 * time.Second
	DefaultScheduler        = "wlc"
	DefaultPriority         = 100
	DefaultAdvertInt        = 1 * time.Second
)

// Load reads path and its includes, parses and validates it. The error is
// non-nil when the file cannot be read or any diagnostic is an error; the
// Config is returned whenever parsing got that far, for inspection.
func Load(path string) (*Config, Diagnostics, error) {
	data, err := osSource{}.read(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	cfg, diags := parse(osSource{}, path, data)
	diags = append(diags, Validate(cfg)...)
	diags.sortBy(cfg.Files)
	return cfg, diags, diags.Err()
}

// ParseFile reads and parses path and its includes without validating.
func ParseFile(path string) (*Config, Diagnostics, error) {
	data, err := osSource{}.read(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	cfg, diags := parse(osSource{}, path, data)
	return cfg, diags, nil
}

// ParseBytes parses data as the file name; includes are resolved on the
// OS file system relative to name's directory. It does not validate.
func ParseBytes(name string, data []byte) (*Config, Diagnostics) {
	return parse(osSource{}, name, data)
}

// ParseFS parses name from fsys, includes resolved inside fsys. It does
// not validate.
func ParseFS(fsys fs.FS, name string) (*Config, Diagnostics, error) {
	src := fsSource{fsys}
	data, err := src.read(name)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	cfg, diags := parse(src, name, data)
	return cfg, diags, nil
}

func parse(src source, name string, data []byte) (*Config, Diagnostics) {
	var diags Diagnostics
	lx := &lexer{src: src, diags: &diags}
	lx.lexFile(name, data, 0)
	tp := &treeParser{toks: lx.toks, diags: &diags}
	root := tp.parseBlock("root", nil, "")
	c := &conv{diags: &diags, cfg: &Config{Files: lx.files}, set: map[any]map[string]bool{}}
	c.root(root)
	c.resolveInstances()
	return c.cfg, diags
}

// keepalived's VRRP defaults for gratuitous ARP after becoming master.
const (
	DefaultGarpMasterDelay  = 5 * time.Second
	DefaultGarpMasterRepeat = 5
)

// resolveInstances fills each instance's effective values: its own, else
// global_defs', else keepalived's default. Done at the end because
// global_defs may follow the instances in the file.
func (c *conv) resolveInstances() {
	gd := &c.cfg.Global
	gset := c.set[gd]
	for _, vi := range c.cfg.Instances {
		iset := c.set[vi]
		dur := func(own *time.Duration, ownKey string, global time.Duration, gKey string, def time.Duration) {
			switch {
			case iset[ownKey]:
			case gset[gKey]:
				*own = global
			default:
				*own = def
			}
		}
		num := func(own *int, ownKey string, global int, gKey string, def int) {
			switch {
			case iset[ownKey]:
			case gset[gKey]:
				*own = global
			default:
				*own = def
			}
		}
		dur(&vi.GarpMasterDelay, "garp_master_delay", gd.VRRPGarpMasterDelay, "vrrp_garp_master_delay", DefaultGarpMasterDelay)
		num(&vi.GarpMasterRepeat, "garp_master_repeat", gd.VRRPGarpMasterRepeat, "vrrp_garp_master_repeat", DefaultGarpMasterRepeat)
		dur(&vi.GarpMasterRefresh, "garp_master_refresh", gd.VRRPGarpMasterRefresh, "vrrp_garp_master_refresh", 0)
		num(&vi.GarpMasterRefreshRepeat, "garp_master_refresh_repeat", gd.VRRPGarpMasterRefreshRepeat, "vrrp_garp_master_refresh_repeat", 1)
		dur(&vi.GarpLowerPrioDelay, "garp_lower_prio_delay", gd.VRRPGarpLowerPrioDelay, "vrrp_garp_lower_prio_delay", vi.GarpMasterDelay)
		num(&vi.GarpLowerPrioRepeat, "garp_lower_prio_repeat", gd.VRRPGarpLowerPrioRepeat, "vrrp_garp_lower_prio_repeat", vi.GarpMasterRepeat)
		num(&vi.Version, "version", gd.VRRPVersion, "vrrp_version", 2)
	}
}

// mark records that key was written in the block owning ptr.
func (c *conv) mark(owner any, key string) {
	m := c.set[owner]
	if m == nil {
		m = map[string]bool{}
		c.set[owner] = m
	}
	m[key] = true
}

// conv is the second pass: tree → typed model.
type conv struct {
	diags *Diagnostics
	cfg   *Config
	set   map[any]map[string]bool // block (pointer) → keywords written in it
}

func (c *conv) errorf(p Pos, format string, args ...any) { c.diags.errorf(p, format, args...) }
func (c *conv) warnf(p Pos, format string, args ...any)  { c.diags.warnf(p, format, args...) }

// each calls f for every well-formed known statement of a block.
func each(nodes []*node, f func(n *node)) {
	for _, n := range nodes {
		if n.known && !n.bad {
			f(n)
		}
	}
}

func (n *node) arg(i int) string {
	if i < len(n.args) {
		return n.args[i].text
	}
	return ""
}

func (n *node) name() string {
	if n.canon != "" {
		return n.canon
	}
	return n.word
}

// joined returns the arguments as keepalived hands a script line over:
// words joined by single spaces.
func (n *node) joined() string {
	parts := make([]string, len(n.args))
	for i, a := range n.args {
		parts[i] = a.text
	}
	return strings.Join(parts, " ")
}

func (c *conv) intArg(n *node, i int, lo, hi int) (int, bool) {
	s := n.arg(i)
	v, err := strconv.Atoi(s)
	if err != nil {
		c.errorf(n.pos, "%s %s: not an integer", n.name(), s)
		return 0, false
	}
	if v < lo || v > hi {
		c.errorf(n.pos, "%s %s: out of range %d..%d", n.name(), s, lo, hi)
		return 0, false
	}
	return v, true
}

// parseSeconds reads keepalived's timer values: whole or fractional
// seconds ("2", "0.5", "1.25"), at most microsecond precision as
// keepalived's timers have.
func parseSeconds(s string) (time.Duration, error) {
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" && (!hasDot || frac == "") {
		return 0, fmt.Errorf("not a number of seconds")
	}
	if len(frac) > 6 {
		return 0, fmt.Errorf("more than 6 decimal places")
	}
	for _, r := range whole + frac {
		if r < '0' || r > '9' {
			return 0, fmt.Errorf("not a number of seconds")
		}
	}
	var w int64
	if whole != "" {
		var err error
		w, err = strconv.ParseInt(whole, 10, 64)
		if err != nil || w > math.MaxInt32 {
			return 0, fmt.Errorf("too large")
		}
	}
	d := time.Duration(w) * time.Second
	if frac != "" {
		f, _ := strconv.ParseInt((frac + "000000")[:6], 10, 64)
		d += time.Duration(f) * time.Microsecond
	}
	return d, nil
}

func (c *conv) secondsArg(n *node, i int, allowZero bool) (time.Duration, bool) {
	s := n.arg(i)
	d, err := parseSeconds(s)
	if err != nil {
		c.errorf(n.pos, "%s %s: %v", n.name(), s, err)
		return 0, false
	}
	if d == 0 && !allowZero {
		c.errorf(n.pos, "%s %s: must be more than 0", n.name(), s)
		return 0, false
	}
	return d, true
}

func (c *conv) addrArg(n *node, i int) (netip.Addr, bool) {
	s := n.arg(i)
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		c.errorf(n.pos, "%s %s: not an IP address", n.name(), s)
		return netip.Addr{}, false
	}
	return a, true
}

func parsePort(s string) (uint16, bool) {
	v, err := strconv.ParseUint(s, 10, 16)
	if err != nil || v == 0 {
		return 0, false
	}
	return uint16(v), true
}

func (c *conv) portArg(n *node, i int) (uint16, bool) {
	p, ok := parsePort(n.arg(i))
	if !ok {
		c.errorf(n.pos, "%s %s: not a port (1..65535)", n.name(), n.arg(i))
	}
	return p, ok
}

// onOff reads keepalived's optional boolean argument (smtp_alert [on|off]).
func (c *conv) onOff(n *node) bool {
	if len(n.args) == 0 {
		return true
	}
	switch strings.ToLower(n.arg(0)) {
	case "on", "true", "yes":
		return true
	case "off", "false", "no":
		return false
	}
	c.errorf(n.pos, "%s %s: expected on or off", n.name(), n.arg(0))
	return false
}

func (c *conv) root(nodes []*node) {
	each(nodes, func(n *node) {
		switch n.key {
		case "global_defs":
			c.global(n)
		case "static_ipaddress":
			c.cfg.StaticAddrs = append(c.cfg.StaticAddrs, c.ipList(n)...)
		case "static_routes", "static_rules":
			c.cfg.StaticRoutes = append(c.cfg.StaticRoutes, rawLines(n)...)
		case "vrrp_script":
			c.cfg.Scripts = append(c.cfg.Scripts, c.script(n))
		case "vrrp_sync_group":
			c.cfg.SyncGroups = append(c.cfg.SyncGroups, c.syncGroup(n))
		case "vrrp_instance":
			c.cfg.Instances = append(c.cfg.Instances, c.instance(n))
		case "virtual_server_group":
			c.cfg.ServerGroups = append(c.cfg.ServerGroups, c.vsg(n))
		case "virtual_server":
			if vs := c.virtualServer(n); vs != nil {
				c.cfg.VirtualServers = append(c.cfg.VirtualServers, vs)
			}
		}
	})
}

func rawLines(n *node) []RawLine {
	var out []RawLine
	for _, it := range n.children {
		out = append(out, RawLine{Pos: it.pos, Text: it.joined()})
	}
	return out
}

func (c *conv) global(b *node) {
	gd := &c.cfg.Global
	gd.Pos = b.pos
	each(b.children, func(n *node) {
		c.mark(gd, n.key)
		switch n.key {
		case "router_id":
			gd.RouterID = n.arg(0)
		case "notification_email":
			for _, it := range n.children {
				gd.NotificationEmail = append(gd.NotificationEmail, it.arg(0))
			}
		case "notification_email_from":
			gd.NotificationEmailFrom = n.arg(0)
		case "smtp_server":
			gd.SMTPServer = n.arg(0)
			if len(n.args) > 1 {
				if p, ok := c.portArg(n, 1); ok {
					gd.SMTPPort = int(p)
				}
			}
		case "smtp_helo_name":
			gd.SMTPHeloName = n.arg(0)
		case "smtp_connect_timeout":
			gd.SMTPConnectTimeout, _ = c.secondsArg(n, 0, false)
		case "enable_script_security":
			gd.EnableScriptSecurity = true
		case "script_user":
			gd.ScriptUser, gd.ScriptGroup = n.arg(0), n.arg(1)
		case "default_interface":
			gd.DefaultInterface = n.arg(0)
		case "vrrp_mcast_group4":
			if a, ok := c.addrArg(n, 0); ok {
				if !a.Is4() || !a.IsMulticast() {
					c.errorf(n.pos, "vrrp_mcast_group4 %s: not an IPv4 multicast address", a)
				} else {
					gd.VRRPMcastGroup4 = a
				}
			}
		case "vrrp_mcast_group6":
			if a, ok := c.addrArg(n, 0); ok {
				if !a.Is6() || !a.IsMulticast() {
					c.errorf(n.pos, "vrrp_mcast_group6 %s: not an IPv6 multicast address", a)
				} else {
					gd.VRRPMcastGroup6 = a
				}
			}
		case "vrrp_version":
			gd.VRRPVersion, _ = c.intArg(n, 0, 2, 3)
		case "vrrp_strict":
			gd.VRRPStrict = true
		case "vrrp_skip_check_adv_addr":
			gd.VRRPSkipCheckAdvAddr = true
		case "vrrp_garp_master_delay":
			gd.VRRPGarpMasterDelay, _ = c.secondsArg(n, 0, true)
		case "vrrp_garp_master_repeat":
			gd.VRRPGarpMasterRepeat, _ = c.intArg(n, 0, 0, math.MaxInt32)
		case "vrrp_garp_master_refresh":
			gd.VRRPGarpMasterRefresh, _ = c.secondsArg(n, 0, true)
		case "vrrp_garp_master_refresh_repeat":
			gd.VRRPGarpMasterRefreshRepeat, _ = c.intArg(n, 0, 0, math.MaxInt32)
		case "vrrp_garp_lower_prio_delay":
			gd.VRRPGarpLowerPrioDelay, _ = c.secondsArg(n, 0, true)
		case "vrrp_garp_lower_prio_repeat":
			gd.VRRPGarpLowerPrioRepeat, _ = c.intArg(n, 0, 0, math.MaxInt32)
		case "vrrp_garp_interval":
			gd.VRRPGarpInterval, _ = c.secondsArg(n, 0, true)
		case "vrrp_gna_interval":
			gd.VRRPGNAInterval, _ = c.secondsArg(n, 0, true)
		case "lvs_timeouts":
			c.lvsTimeouts(n, &gd.LVSTimeouts)
		case "lvs_sync_daemon":
			if gd.LVSSyncDaemon != nil {
				c.errorf(n.pos, "lvs_sync_daemon: already given at %s", gd.LVSSyncDaemon.Pos)
				return
			}
			gd.LVSSyncDaemon = c.lvsSyncDaemon(n)
		case "xvs_interface":
			gd.XVSInterface = n.arg(0)
		case "xvs_conn_table_size":
			gd.XVSConnTableSize, _ = c.intArg(n, 0, 1, 1<<30)
		}
	})
}

func (c *conv) lvsTimeouts(n *node, t *LVSTimeouts) {
	for i := 0; i < len(n.args); i += 2 {
		k := strings.ToLower(n.arg(i))
		if i+1 >= len(n.args) {
			c.errorf(n.pos, "lvs_timeouts %s: missing value", k)
			return
		}
		d, err := parseSeconds(n.arg(i + 1))
		if err != nil {
			c.errorf(n.pos, "lvs_timeouts %s %s: %v", k, n.arg(i+1), err)
			continue
		}
		switch k {
		case "tcp":
			t.TCP = d
		case "tcpfin":
			t.TCPFin = d
		case "udp":
			t.UDP = d
		default:
			c.errorf(n.pos, "lvs_timeouts: unknown timeout %q (tcp, tcpfin, udp)", n.arg(i))
		}
	}
}

// lvsSyncDaemon reads "lvs_sync_daemon IF [INSTANCE] [id N] [maxlen N]
// [port N] [ttl N] [group ADDR] [inst INSTANCE]" as keepalived 2.x does:
// the second word, if not an option, is the instance; a bare number after
// it is the old positional syncid.
func (c *conv) lvsSyncDaemon(n *node) *LVSSyncDaemon {
	sd := &LVSSyncDaemon{Pos: n.pos, Interface: n.arg(0), SyncID: -1}
	if len(sd.Interface) >= 16 { // IFNAMSIZ, with its NUL
		c.errorf(n.pos, "lvs_sync_daemon %s: interface name too long", sd.Interface)
	}
	for i := 1; i < len(n.args); i++ {
		opt := n.arg(i)
		value := func() (string, bool) {
			if i+1 >= len(n.args) {
				c.errorf(n.pos, "lvs_sync_daemon %s: missing value", opt)
				return "", false
			}
			i++
			return n.arg(i), true
		}
		num := func(dst *int, lo, hi int) {
			s, ok := value()
			if !ok {
				return
			}
			v, err := strconv.Atoi(s)
			if err != nil || v < lo || v > hi {
				c.errorf(n.pos, "lvs_sync_daemon %s %s: not an integer in %d..%d", opt, s, lo, hi)
				return
			}
			*dst = v
		}
		switch opt {
		case "inst":
			if s, ok := value(); ok {
				if sd.Instance != "" {
					c.errorf(n.pos, "lvs_sync_daemon inst %s: the instance is already %s", s, sd.Instance)
				} else {
					sd.Instance = s
				}
			}
		case "id":
			num(&sd.SyncID, 0, 255)
		case "maxlen":
			num(&sd.MaxLen, 1, 65535-20-8)
		case "port":
			num(&sd.Port, 1, 65535)
		case "ttl":
			num(&sd.TTL, 1, 255)
		case "group":
			s, ok := value()
			if !ok {
				break
			}
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" || !a.IsMulticast() {
				c.errorf(n.pos, "lvs_sync_daemon group %s: not a multicast address", s)
				break
			}
			sd.Group = a
		default:
			switch {
			case i == 1:
				sd.Instance = opt
			case i == 2 && opt != "" && opt[0] >= '0' && opt[0] <= '9':
				v, err := strconv.Atoi(opt)
				if err != nil || v < 0 || v > 255 {
					c.errorf(n.pos, "lvs_sync_daemon syncid %s: not an integer in 0..255", opt)
					continue
				}
				c.warnf(n.pos, "lvs_sync_daemon %s: write the sync ID as \"id %s\"", opt, opt)
				sd.SyncID = v
			default:
				c.errorf(n.pos, "lvs_sync_daemon: unknown option %q (id, maxlen, port, ttl, group, inst)", opt)
			}
		}
	}
	return sd
}

// ipList reads virtual_ipaddress-style items.
func (c *conv) ipList(b *node) []IPAddress {
	var out []IPAddress
	for _, it := range b.children {
		ip := IPAddress{Pos: it.pos}
		s := it.arg(0)
		pfx, err := parsePrefixOrAddr(s)
		if err != nil {
			c.errorf(it.pos, "address %s: %v", s, err)
			continue
		}
		ip.Prefix = pfx
		ok := true
		for i := 1; i < len(it.args); i++ {
			opt := strings.ToLower(it.args[i].text)
			val := ""
			if n := lists["ipaddr"].options[opt]; n == 1 {
				if i+1 >= len(it.args) {
					c.errorf(it.pos, "address %s: %s: missing value", s, opt)
					ok = false
					break
				}
				i++
				val = it.args[i].text
			}
			switch opt {
			case "dev":
				ip.Dev = val
			case "label":
				ip.Label = val
			case "scope":
				ip.Scope = val
			case "brd", "broadcast":
				a, err := netip.ParseAddr(val)
				if err != nil {
					c.errorf(it.pos, "address %s: brd %s: not an IP address", s, val)
					ok = false
				}
				ip.Broadcast = a
			case "peer":
				p, err := parsePrefixOrAddr(val)
				if err != nil {
					c.errorf(it.pos, "address %s: peer %s: %v", s, val, err)
					ok = false
				}
				ip.Peer = p
			case "nodad":
				ip.NoDAD = true
			case "no_track":
				ip.NoTrack = true
			case "noprefixroute", "home", "autojoin", "preferred_lft", "track_group":
				// accepted, no effect in xvs
			default:
				c.warnf(it.pos, "address %s: unknown option %q ignored", s, it.args[i].text)
			}
		}
		if ok {
			out = append(out, ip)
		}
	}
	return out
}

func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("not an address/prefix")
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("not an IP address")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (c *conv) script(b *node) *VRRPScript {
	s := &VRRPScript{Pos: b.pos, Name: b.arg(0), Interval: time.Second, Rise: 1, Fall: 1}
	each(b.children, func(n *node) {
		switch n.key {
		case "script":
			s.Script = n.joined()
		case "interval":
			s.Interval, _ = c.secondsArg(n, 0, false)
		case "timeout":
			s.Timeout, _ = c.secondsArg(n, 0, false)
		case "weight":
			s.Weight, _ = c.intArg(n, 0, -253, 253)
			if len(n.args) > 1 {
				if strings.EqualFold(n.arg(1), "reverse") {
					s.Reverse = true
				} else {
					c.errorf(n.pos, "weight: unexpected %q (only \"reverse\" may follow)", n.arg(1))
				}
			}
		case "rise":
			s.Rise, _ = c.intArg(n, 0, 1, math.MaxInt32)
		case "fall":
			s.Fall, _ = c.intArg(n, 0, 1, math.MaxInt32)
		case "user":
			s.User, s.Group = n.arg(0), n.arg(1)
		case "init_fail":
			s.InitFail = true
		}
	})
	return s
}

func (c *conv) notify(n *node, nt *Notify) bool {
	switch n.key {
	case "notify_master":
		nt.Master = n.joined()
	case "notify_backup":
		nt.Backup = n.joined()
	case "notify_fault":
		nt.Fault = n.joined()
	case "notify_stop":
		nt.Stop = n.joined()
	case "notify":
		nt.Any = n.joined()
	default:
		return false
	}
	return true
}

func (c *conv) trackList(b *node, scripts bool) []TrackRef {
	var out []TrackRef
	for _, it := range b.children {
		r := TrackRef{Pos: it.pos, Name: it.arg(0)}
		ok := true
		for i := 1; i < len(it.args); i++ {
			switch strings.ToLower(it.args[i].text) {
			case "weight":
				if i+1 >= len(it.args) {
					c.errorf(it.pos, "%s: weight: missing value", r.Name)
					ok = false
					continue
				}
				i++
				lo, hi := -254, 254
				if scripts {
					lo, hi = -253, 253
				}
				v, err := strconv.Atoi(it.args[i].text)
				if err != nil || v < lo || v > hi {
					c.errorf(it.pos, "%s: weight %s: not an integer in %d..%d", r.Name, it.args[i].text, lo, hi)
					ok = false
					continue
				}
				r.Weight, r.HasW = v, true
			case "reverse":
				r.Reverse = true
			default:
				c.warnf(it.pos, "%s: unknown option %q ignored", r.Name, it.args[i].text)
			}
		}
		if ok {
			out = append(out, r)
		}
	}
	return out
}

func (c *conv) syncGroup(b *node) *SyncGroup {
	sg := &SyncGroup{Pos: b.pos, Name: b.arg(0)}
	each(b.children, func(n *node) {
		if c.notify(n, &sg.Notify) {
			return
		}
		switch n.key {
		case "group":
			for _, it := range n.children {
				sg.Group = append(sg.Group, it.arg(0))
			}
		case "smtp_alert":
			sg.SMTPAlert = c.onOff(n)
		case "track_script":
			sg.TrackScript = append(sg.TrackScript, c.trackList(n, true)...)
		case "track_interface":
			sg.TrackInterface = append(sg.TrackInterface, c.trackList(n, false)...)
		}
	})
	return sg
}

func (c *conv) instance(b *node) *VRRPInstance {
	vi := &VRRPInstance{
		Pos: b.pos, Name: b.arg(0), Priority: DefaultPriority, AdvertInt: DefaultAdvertInt,
	}
	each(b.children, func(n *node) {
		c.mark(vi, n.key)
		if c.notify(n, &vi.Notify) {
			return
		}
		switch n.key {
		case "state":
			switch s := strings.ToUpper(n.arg(0)); s {
			case "MASTER", "BACKUP":
				vi.State = s
			default:
				c.errorf(n.pos, "state %s: expected MASTER or BACKUP", n.arg(0))
			}
		case "interface":
			vi.Interface = n.arg(0)
		case "virtual_router_id":
			vi.VirtualRouterID, _ = c.intArg(n, 0, 1, 255)
		case "priority":
			vi.Priority, _ = c.intArg(n, 0, 1, 255)
		case "advert_int":
			if d, ok := c.secondsArg(n, 0, false); ok {
				if d%(10*time.Millisecond) != 0 {
					c.errorf(n.pos, "advert_int %s: VRRP counts in centiseconds", n.arg(0))
				} else if d > 40950*time.Millisecond {
					c.errorf(n.pos, "advert_int %s: more than 40.95 seconds", n.arg(0))
				} else {
					vi.AdvertInt = d
				}
			}
		case "version":
			vi.Version, _ = c.intArg(n, 0, 2, 3)
		case "authentication":
			vi.Auth = c.auth(n)
		case "virtual_ipaddress":
			vi.VirtualIPAddresses = append(vi.VirtualIPAddresses, c.ipList(n)...)
		case "virtual_ipaddress_excluded":
			vi.VirtualIPAddressesExcluded = append(vi.VirtualIPAddressesExcluded, c.ipList(n)...)
		case "virtual_routes":
			vi.VirtualRoutes = append(vi.VirtualRoutes, rawLines(n)...)
		case "virtual_rules":
			vi.VirtualRules = append(vi.VirtualRules, rawLines(n)...)
		case "track_interface":
			vi.TrackInterface = append(vi.TrackInterface, c.trackList(n, false)...)
		case "track_script":
			vi.TrackScript = append(vi.TrackScript, c.trackList(n, true)...)
		case "nopreempt":
			vi.NoPreempt = true
		case "preempt":
			vi.NoPreempt = false
		case "preempt_delay":
			if d, ok := c.secondsArg(n, 0, true); ok {
				if d > 1000*time.Second {
					c.errorf(n.pos, "preempt_delay %s: out of range 0..1000", n.arg(0))
				} else {
					vi.PreemptDelay = d
				}
			}
		case "unicast_src_ip":
			vi.UnicastSrcIP, _ = c.addrArg(n, 0)
		case "mcast_src_ip":
			vi.McastSrcIP, _ = c.addrArg(n, 0)
		case "unicast_peer":
			for _, it := range n.children {
				a, err := netip.ParseAddr(it.arg(0))
				if err != nil {
					c.errorf(it.pos, "unicast_peer %s: not an IP address", it.arg(0))
					continue
				}
				for i := 1; i < len(it.args); i++ {
					if _, opt := lists["peer"].options[strings.ToLower(it.args[i].text)]; opt {
						i++ // min_ttl / max_ttl: accepted, no effect in xvs
						continue
					}
					c.warnf(it.pos, "unicast_peer %s: unknown option %q ignored", a, it.args[i].text)
				}
				vi.UnicastPeers = append(vi.UnicastPeers, UnicastPeer{Pos: it.pos, Addr: a})
			}
		case "smtp_alert":
			vi.SMTPAlert = c.onOff(n)
		case "garp_master_delay":
			vi.GarpMasterDelay, _ = c.secondsArg(n, 0, true)
		case "garp_master_repeat":
			vi.GarpMasterRepeat, _ = c.intArg(n, 0, 0, math.MaxInt32)
		case "garp_master_refresh":
			vi.GarpMasterRefresh, _ = c.secondsArg(n, 0, true)
		case "garp_master_refresh_repeat":
			vi.GarpMasterRefreshRepeat, _ = c.intArg(n, 0, 0, math.MaxInt32)
		case "garp_lower_prio_delay":
			vi.GarpLowerPrioDelay, _ = c.secondsArg(n, 0, true)
		case "garp_lower_prio_repeat":
			vi.GarpLowerPrioRepeat, _ = c.intArg(n, 0, 0, math.MaxInt32)
		case "use_vmac":
			vi.UseVMAC = true
			vi.VMACName = n.arg(0)
		case "vmac_xmit_base":
			vi.VMACXmitBase = true
		case "native_ipv6":
			vi.NativeIPv6 = true
		case "dont_track_primary":
			vi.DontTrackPrimary = true
		case "strict_mode":
			vi.Strict = c.onOff(n)
		case "lvs_sync_daemon_interface":
			vi.LVSSyncDaemonIf = n.arg(0)
		case "accept":
			t := true
			vi.Accept = &t
		case "no_accept":
			f := false
			vi.Accept = &f
		}
	})
	return vi
}

func (c *conv) auth(b *node) *Auth {
	a := &Auth{Pos: b.pos}
	each(b.children, func(n *node) {
		switch n.key {
		case "auth_type":
			switch t := strings.ToUpper(n.arg(0)); t {
			case "PASS", "AH":
				a.Type = t
			default:
				c.errorf(n.pos, "auth_type %s: expected PASS or AH", n.arg(0))
			}
		case "auth_pass":
			a.Pass = n.arg(0)
		}
	})
	return a
}

func (c *conv) vsg(b *node) *VirtualServerGroup {
	grp := &VirtualServerGroup{Pos: b.pos, Name: b.arg(0)}
	for _, it := range b.children {
		e := VSGEntry{Pos: it.pos}
		head := it.arg(0)
		if len(it.args) < 2 {
			c.errorf(it.pos, "virtual_server_group %s: %s: missing port", grp.Name, head)
			continue
		}
		if len(it.args) > 2 {
			c.warnf(it.pos, "virtual_server_group %s: extra words after %s %s ignored", grp.Name, head, it.arg(1))
		}
		if strings.EqualFold(head, "fwmark") {
			v, err := strconv.ParseUint(it.arg(1), 10, 32)
			if err != nil || v == 0 {
				c.errorf(it.pos, "virtual_server_group %s: fwmark %s: not a mark (1..4294967295)", grp.Name, it.arg(1))
				continue
			}
			e.FWMark = uint32(v)
			grp.Entries = append(grp.Entries, e)
			continue
		}
		first, last, err := parseRange(head)
		if err != nil {
			c.errorf(it.pos, "virtual_server_group %s: %s: %v", grp.Name, head, err)
			continue
		}
		p, ok := parsePort(it.arg(1))
		if !ok {
			c.errorf(it.pos, "virtual_server_group %s: %s: port %s: not a port (1..65535)", grp.Name, head, it.arg(1))
			continue
		}
		e.Addr, e.Last, e.Port = first, last, p
		grp.Entries = append(grp.Entries, e)
	}
	return grp
}

// parseRange reads "198.18.0.1" or keepalived's range "198.18.0.1-10"
// (the last byte, or last 16-bit group for IPv6, runs up to the number).
func parseRange(s string) (first, last netip.Addr, err error) {
	a, end, isRange := strings.Cut(s, "-")
	first, err = netip.ParseAddr(a)
	if err != nil || first.Zone() != "" {
		return first, last, fmt.Errorf("not an IP address")
	}
	if !isRange {
		return first, first, nil
	}
	b := first.AsSlice()
	if first.Is4() {
		v, err := strconv.ParseUint(end, 10, 8)
		if err != nil || byte(v) < b[3] {
			return first, last, fmt.Errorf("bad range end %q", end)
		}
		b[3] = byte(v)
	} else {
		v, err := strconv.ParseUint(end, 16, 16)
		cur := uint64(b[14])<<8 | uint64(b[15])
		if err != nil || v < cur {
			return first, last, fmt.Errorf("bad range end %q", end)
		}
		b[14], b[15] = byte(v>>8), byte(v)
	}
	last, _ = netip.AddrFromSlice(b)
	return first, last, nil
}

func (c *conv) method(n *node) (Method, bool) {
	switch m := Method(strings.ToUpper(n.arg(0))); m {
	case MethodNAT, MethodDR, MethodTUN:
		return m, true
	}
	c.errorf(n.pos, "%s %s: expected NAT, DR or TUN", n.name(), n.arg(0))
	return "", false
}

func (c *conv) virtualServer(b *node) *VirtualServer {
	vs := &VirtualServer{
		Pos: b.pos, Protocol: "TCP", DelayLoop: DefaultDelayLoop, Scheduler: DefaultScheduler,
		Method: MethodNAT, Quorum: 1, Retry: -1,
	}
	switch {
	case strings.EqualFold(b.arg(0), "fwmark"):
		v, err := strconv.ParseUint(b.arg(1), 10, 32)
		if err != nil || v == 0 {
			c.errorf(b.pos, "virtual_server fwmark %s: not a mark (1..4294967295)", b.arg(1))
			return nil
		}
		vs.FWMark = uint32(v)
	case strings.EqualFold(b.arg(0), "group"):
		if b.arg(1) == "" {
			c.errorf(b.pos, "virtual_server group: missing group name")
			return nil
		}
		vs.Group = b.arg(1)
	default:
		a, err := netip.ParseAddr(b.arg(0))
		if err != nil || a.Zone() != "" {
			c.errorf(b.pos, "virtual_server %s: not an IP address, fwmark or group", b.arg(0))
			return nil
		}
		vs.Addr = a
		if len(b.args) < 2 {
			c.errorf(b.pos, "virtual_server %s: missing port", a)
			return nil
		}
		// Port 0 is LVS's "every port" service, valid with persistence.
		p, err := strconv.ParseUint(b.arg(1), 10, 16)
		if err != nil {
			c.errorf(b.pos, "virtual_server %s %s: not a port (0..65535)", a, b.arg(1))
			return nil
		}
		vs.Port = uint16(p)
	}
	var rsNodes []*node
	each(b.children, func(n *node) {
		switch n.key {
		case "real_server":
			rsNodes = append(rsNodes, n) // after the VS keys: they inherit from it
		case "delay_loop":
			vs.DelayLoop, _ = c.secondsArg(n, 0, false)
		case "lb_algo", "lvs_sched":
			vs.Scheduler = strings.ToLower(n.arg(0))
		case "lb_kind", "lvs_method":
			if m, ok := c.method(n); ok {
				vs.Method = m
			}
		case "persistence_timeout":
			// No value: keepalived's default; 0: not persistent.
			vs.PersistenceTimeout = DefaultPersistence
			if len(n.args) > 0 {
				if d, ok := c.secondsArg(n, 0, true); ok {
					vs.PersistenceTimeout = d
				}
			}
			vs.Persistent = vs.PersistenceTimeout > 0
		case "persistence_granularity":
			vs.PersistenceGranularity, _ = c.granularity(n)
		case "persistence_engine":
			vs.PersistenceEngine = n.arg(0)
		case "protocol":
			switch p := strings.ToUpper(n.arg(0)); p {
			case "TCP", "UDP", "SCTP":
				vs.Protocol = p
			default:
				c.errorf(n.pos, "protocol %s: expected TCP, UDP or SCTP", n.arg(0))
			}
		case "ip_family":
			switch f := strings.ToLower(n.arg(0)); f {
			case "inet", "inet6":
				vs.IPFamily = f
			default:
				c.errorf(n.pos, "ip_family %s: expected inet or inet6", n.arg(0))
			}
		case "sorry_server":
			a, ok1 := c.addrArg(n, 0)
			p, ok2 := c.portArg(n, 1)
			if ok1 && ok2 {
				m := Method("")
				if vs.SorryServer != nil {
					m = vs.SorryServer.Method
				}
				vs.SorryServer = &SorryServer{Pos: n.pos, Addr: a, Port: p, Method: m}
			}
		case "sorry_server_inhibit":
			vs.SorryServerInhibit = true
		case "sorry_server_lvs_method":
			if m, ok := c.method(n); ok {
				if vs.SorryServer == nil {
					vs.SorryServer = &SorryServer{Pos: n.pos}
				}
				vs.SorryServer.Method = m
			}
		case "quorum":
			vs.Quorum, _ = c.intArg(n, 0, 1, math.MaxInt32)
		case "hysteresis":
			vs.Hysteresis, _ = c.intArg(n, 0, 0, math.MaxInt32)
		case "quorum_up":
			vs.QuorumUp = n.joined()
		case "quorum_down":
			vs.QuorumDown = n.joined()
		case "ha_suspend":
			vs.HASuspend = true
		case "virtualhost":
			vs.Virtualhost = n.arg(0)
		case "alpha":
			vs.Alpha = true
		case "omega":
			vs.Omega = true
		case "inhibit_on_failure":
			vs.InhibitOnFailure = true
		case "smtp_alert":
			vs.SMTPAlert = c.onOff(n)
		case "ops":
			vs.OPS = true
		case "hashed", "flag-1", "flag-2", "flag-3", "sh-port", "sh-fallback", "mh-port", "mh-fallback":
			if !containsStr(vs.SchedFlags, n.key) {
				vs.SchedFlags = append(vs.SchedFlags, n.key)
			}
		case "nat_mask":
			c.warnf(n.pos, "nat_mask: obsolete, ignored")
		case "retry", "nb_get_retry":
			vs.Retry, _ = c.intArg(n, 0, 0, math.MaxInt32)
		case "delay_before_retry":
			vs.DelayBeforeRetry, _ = c.secondsArg(n, 0, true)
		case "warmup":
			vs.Warmup, _ = c.secondsArg(n, 0, true)
		case "connect_timeout":
			vs.ConnectTimeout, _ = c.secondsArg(n, 0, false)
		}
	})
	for _, n := range rsNodes {
		if rs := c.realServer(vs, n); rs != nil {
			vs.RealServers = append(vs.RealServers, rs)
		}
	}
	return vs
}

// granularity reads persistence_granularity: an IPv4 netmask
// (255.255.255.0) or a prefix length (24, or up to 128 for IPv6), as
// prefix bits.
func (c *conv) granularity(n *node) (int, bool) {
	s := n.arg(0)
	if v, err := strconv.Atoi(s); err == nil {
		if v < 1 || v > 128 {
			c.errorf(n.pos, "persistence_granularity %s: out of range 1..128", s)
			return 0, false
		}
		return v, true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		c.errorf(n.pos, "persistence_granularity %s: not a netmask or prefix length", s)
		return 0, false
	}
	m := a.As4()
	bits := uint32(m[0])<<24 | uint32(m[1])<<16 | uint32(m[2])<<8 | uint32(m[3])
	ones := 0
	for bits&(1<<31) != 0 {
		ones++
		bits <<= 1
	}
	if bits != 0 || ones == 0 {
		c.errorf(n.pos, "persistence_granularity %s: not a contiguous netmask", s)
		return 0, false
	}
	return ones, true
}

func containsStr(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func (c *conv) realServer(vs *VirtualServer, b *node) *RealServer {
	a, err := netip.ParseAddr(b.arg(0))
	if err != nil || a.Zone() != "" {
		c.errorf(b.pos, "real_server %s: not an IP address", b.arg(0))
		return nil
	}
	rs := &RealServer{Pos: b.pos, Addr: a, Weight: 1, Retry: -1}
	if len(b.args) > 1 {
		p, ok := parsePort(b.arg(1))
		if !ok {
			c.errorf(b.pos, "real_server %s %s: not a port (1..65535)", a, b.arg(1))
			return nil
		}
		rs.Port = p
	}
	var chkNodes []*node
	each(b.children, func(n *node) {
		switch n.key {
		case "tcp_check", "http_get", "ssl_get", "misc_check", "smtp_check", "dns_check", "udp_check", "ping_check":
			chkNodes = append(chkNodes, n)
		case "weight":
			rs.Weight, _ = c.intArg(n, 0, 0, 65535)
		case "lvs_method":
			if m, ok := c.method(n); ok {
				rs.Method = m
			}
		case "inhibit_on_failure":
			rs.InhibitOnFailure = true
		case "notify_up":
			rs.NotifyUp = n.joined()
		case "notify_down":
			rs.NotifyDown = n.joined()
		case "uthreshold":
			rs.UThreshold, _ = c.intArg(n, 0, 0, math.MaxInt32)
		case "lthreshold":
			rs.LThreshold, _ = c.intArg(n, 0, 0, math.MaxInt32)
		case "alpha":
			rs.Alpha = true
		case "smtp_alert":
			rs.SMTPAlert = c.onOff(n)
		case "virtualhost":
			rs.Virtualhost = n.arg(0)
		case "retry", "nb_get_retry":
			rs.Retry, _ = c.intArg(n, 0, 0, math.MaxInt32)
		case "delay_before_retry":
			rs.DelayBeforeRetry, _ = c.secondsArg(n, 0, true)
		case "warmup":
			rs.Warmup, _ = c.secondsArg(n, 0, true)
		case "connect_timeout":
			rs.ConnectTimeout, _ = c.secondsArg(n, 0, false)
		case "delay_loop":
			rs.DelayLoop, _ = c.secondsArg(n, 0, false)
		}
	})
	for _, n := range chkNodes {
		if ck := c.checker(vs, rs, n); ck != nil {
			rs.Checkers = append(rs.Checkers, ck)
		}
	}
	return rs
}

// checkerKeys lists the type-specific keywords each checker accepts; the
// common ones (connect_ip, retry, ...) are accepted by all.
var checkerKeys = map[CheckerType][]string{
	HTTPGet:   {"url", "virtualhost", "enable_sni", "tls_compliant", "fast_recovery", "http_protocol"},
	SSLGet:    {"url", "virtualhost", "enable_sni", "tls_compliant", "fast_recovery", "http_protocol"},
	MiscCheck: {"misc_path", "misc_timeout", "misc_dynamic", "user"},
	SMTPCheck: {"helo_name", "host"},
	DNSCheck:  {"type", "name"},
	UDPCheck:  {"payload", "require_reply", "min_reply_length", "max_reply_length"},
}

var commonCheckerKeys = []string{
	"connect_ip", "connect_port", "bindto", "bind_port", "bind_if", "fwmark", "alpha",
	"xvs_via_vip", "retry", "nb_get_retry", "delay_before_retry", "warmup",
	"connect_timeout", "delay_loop",
}

func (c *conv) checker(vs *VirtualServer, rs *RealServer, b *node) *Checker {
	ck := &Checker{Pos: b.pos, Type: CheckerType(strings.ToUpper(b.key)), Retry: -1}
	switch ck.Type {
	case HTTPGet, SSLGet:
		ck.HTTP = &HTTPCheckSpec{}
	case MiscCheck:
		ck.Misc = &MiscCheckSpec{}
	case SMTPCheck:
		ck.SMTP = &SMTPCheckSpec{}
	case DNSCheck:
		ck.DNS = &DNSCheckSpec{Type: "SOA", Name: "."}
	case UDPCheck:
		ck.UDP = &UDPCheckSpec{}
	}
	each(b.children, func(n *node) {
		if !containsStr(commonCheckerKeys, n.key) && !containsStr(checkerKeys[ck.Type], n.key) {
			c.warnf(n.pos, "%s: keyword %q does not apply, ignored", ck.Type, n.word)
			return
		}
		switch n.key {
		case "connect_ip":
			ck.ConnectIP, _ = c.addrArg(n, 0)
		case "connect_port":
			ck.ConnectPort, _ = c.portArg(n, 0)
		case "bindto":
			ck.BindTo, _ = c.addrArg(n, 0)
		case "bind_port":
			ck.BindPort, _ = c.portArg(n, 0)
		case "bind_if":
			ck.BindIf = n.arg(0)
		case "fwmark":
			v, err := strconv.ParseUint(n.arg(0), 10, 32)
			if err != nil {
				c.errorf(n.pos, "fwmark %s: not a mark", n.arg(0))
			}
			ck.FWMark = uint32(v)
		case "alpha":
			ck.Alpha = true
		case "xvs_via_vip":
			ck.ViaVIP = true
		case "retry", "nb_get_retry":
			ck.Retry, _ = c.intArg(n, 0, 0, math.MaxInt32)
		case "delay_before_retry":
			ck.DelayBeforeRetry, _ = c.secondsArg(n, 0, true)
		case "warmup":
			ck.Warmup, _ = c.secondsArg(n, 0, true)
		case "connect_timeout":
			ck.ConnectTimeout, _ = c.secondsArg(n, 0, false)
		case "delay_loop":
			ck.DelayLoop, _ = c.secondsArg(n, 0, false)
		case "url":
			ck.HTTP.URLs = append(ck.HTTP.URLs, c.url(n))
		case "virtualhost":
			ck.HTTP.Virtualhost = n.arg(0)
		case "enable_sni":
			ck.HTTP.EnableSNI = true
		case "tls_compliant":
			ck.HTTP.TLSCompliant = true
		case "fast_recovery":
			ck.HTTP.FastRecovery = c.onOff(n)
		case "http_protocol":
			switch p := strings.ToUpper(n.arg(0)); p {
			case "1.0", "1.0C", "1.0K", "1.1":
				ck.HTTP.HTTPProtocol = p
			default:
				c.errorf(n.pos, "http_protocol %s: expected 1.0, 1.0C, 1.0K or 1.1", n.arg(0))
			}
		case "misc_path":
			ck.Misc.Path = n.joined()
		case "misc_timeout":
			ck.Misc.Timeout, _ = c.secondsArg(n, 0, false)
		case "misc_dynamic":
			ck.Misc.Dynamic = true
		case "user":
			ck.Misc.User, ck.Misc.Group = n.arg(0), n.arg(1)
		case "helo_name":
			ck.SMTP.HeloName = n.arg(0)
		case "host":
			ck.SMTP.Hosts = append(ck.SMTP.Hosts, c.smtpHost(n))
		case "type":
			t := strings.ToUpper(n.arg(0))
			switch t {
			case "A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA":
				ck.DNS.Type = t
			default:
				c.errorf(n.pos, "type %s: expected A, NS, CNAME, SOA, MX, TXT or AAAA", n.arg(0))
			}
		case "name":
			ck.DNS.Name = n.arg(0)
		case "payload":
			p, err := hex.DecodeString(n.arg(0))
			if err != nil {
				c.errorf(n.pos, "payload %s: not hex", n.arg(0))
			}
			ck.UDP.Payload = p
		case "require_reply":
			ck.UDP.RequireReply = true
			if len(n.args) > 0 {
				p, err := hex.DecodeString(n.arg(0))
				if err != nil {
					c.errorf(n.pos, "require_reply %s: not hex", n.arg(0))
				}
				ck.UDP.ReplyPattern = p
			}
		case "min_reply_length":
			ck.UDP.MinReplyLength, _ = c.intArg(n, 0, 0, 65535)
		case "max_reply_length":
			ck.UDP.MaxReplyLength, _ = c.intArg(n, 0, 0, 65535)
		}
	})
	// Effective timing: checker, then real server, then virtual server,
	// then keepalived's default.
	if ck.ConnectTimeout == 0 {
		ck.ConnectTimeout = firstDur(rs.ConnectTimeout, vs.ConnectTimeout, DefaultConnectTimeout)
	}
	if ck.DelayLoop == 0 {
		ck.DelayLoop = firstDur(rs.DelayLoop, vs.DelayLoop, DefaultDelayLoop)
	}
	if ck.DelayBeforeRetry == 0 {
		ck.DelayBeforeRetry = firstDur(rs.DelayBeforeRetry, vs.DelayBeforeRetry, DefaultDelayBeforeRetry)
	}
	if ck.Warmup == 0 {
		ck.Warmup = firstDur(rs.Warmup, vs.Warmup, 0)
	}
	if ck.Retry < 0 {
		ck.Retry = DefaultRetry
		if rs.Retry >= 0 {
			ck.Retry = rs.Retry
		} else if vs.Retry >= 0 {
			ck.Retry = vs.Retry
		}
	}
	ck.Alpha = ck.Alpha || rs.Alpha || vs.Alpha
	return ck
}

func firstDur(ds ...time.Duration) time.Duration {
	for _, d := range ds {
		if d != 0 {
			return d
		}
	}
	return 0
}

func (c *conv) url(b *node) URL {
	u := URL{Pos: b.pos}
	each(b.children, func(n *node) {
		switch n.key {
		case "path":
			u.Path = n.arg(0)
		case "digest":
			d := strings.ToLower(n.arg(0))
			if _, err := hex.DecodeString(d); err != nil || len(d) != 32 {
				c.errorf(n.pos, "digest %s: not an MD5 digest (32 hex digits)", n.arg(0))
				return
			}
			u.Digest = d
		case "status_code":
			u.StatusCodes = nil
			for _, a := range n.args {
				for _, f := range strings.Split(a.text, ",") {
					if f == "" {
						continue
					}
					r, err := parseStatusRange(f)
					if err != nil {
						c.errorf(n.pos, "status_code %s: %v", f, err)
						continue
					}
					u.StatusCodes = append(u.StatusCodes, r)
				}
			}
		case "regex":
			u.Regex = n.arg(0)
		case "regex_no_match":
			u.RegexNoMatch = true
		case "virtualhost":
			u.Virtualhost = n.arg(0)
		}
	})
	return u
}

func parseStatusRange(s string) (StatusRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	l, err := strconv.Atoi(lo)
	if err != nil || l < 100 || l > 999 {
		return StatusRange{}, fmt.Errorf("not an HTTP status code (100..999)")
	}
	h := l
	if isRange {
		h, err = strconv.Atoi(hi)
		if err != nil || h < l || h > 999 {
			return StatusRange{}, fmt.Errorf("bad range end")
		}
	}
	return StatusRange{Lo: l, Hi: h}, nil
}

func (c *conv) smtpHost(b *node) SMTPHost {
	h := SMTPHost{Pos: b.pos}
	each(b.children, func(n *node) {
		switch n.key {
		case "connect_ip":
			h.ConnectIP, _ = c.addrArg(n, 0)
		case "connect_port":
			h.ConnectPort, _ = c.portArg(n, 0)
		case "bindto":
			h.BindTo, _ = c.addrArg(n, 0)
		case "bind_port":
			h.BindPort, _ = c.portArg(n, 0)
		default:
			c.warnf(n.pos, "host: keyword %q does not apply, ignored", n.word)
		}
	})
	return h
}
