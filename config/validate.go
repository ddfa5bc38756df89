package config

import (
	"net/netip"
	"time"
)

// Schedulers are the LVS scheduler names keepalived passes to the kernel.
var Schedulers = []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}

// Validate checks what a single statement cannot: required parts, cross
// references (track_script, sync groups, virtual_server groups),
// duplicates and consistency. It does not change cfg.
func Validate(cfg *Config) Diagnostics {
	var ds Diagnostics
	if cfg == nil {
		return ds
	}
	scripts := map[string]*VRRPScript{}
	for _, s := range cfg.Scripts {
		if _, dup := scripts[s.Name]; dup {
			ds.errorf(s.Pos, "vrrp_script %s: defined twice (first at %s)", s.Name, scripts[s.Name].Pos)
			continue
		}
		scripts[s.Name] = s
		if s.Script == "" {
			ds.errorf(s.Pos, "vrrp_script %s: missing script", s.Name)
		}
	}
	instances := map[string]*VRRPInstance{}
	type vridKey struct {
		ifname string
		vrid   int
		v6     bool
	}
	vrids := map[vridKey]*VRRPInstance{}
	for _, vi := range cfg.Instances {
		if prev, dup := instances[vi.Name]; dup {
			ds.errorf(vi.Pos, "vrrp_instance %s: defined twice (first at %s)", vi.Name, prev.Pos)
			continue
		}
		instances[vi.Name] = vi
		validateInstance(&ds, vi, scripts)
		v6 := len(vi.VirtualIPAddresses) > 0 && vi.VirtualIPAddresses[0].Prefix.Addr().Is6()
		k := vridKey{vi.Interface, vi.VirtualRouterID, v6}
		if vi.VirtualRouterID != 0 && vi.Interface != "" {
			if prev, dup := vrids[k]; dup {
				ds.errorf(vi.Pos, "vrrp_instance %s: virtual_router_id %d on %s already used by %s (%s)",
					vi.Name, vi.VirtualRouterID, vi.Interface, prev.Name, prev.Pos)
			} else {
				vrids[k] = vi
			}
		}
	}
	// One address in two instances would be added by both.
	vipOwner := map[netip.Addr]*VRRPInstance{}
	for _, vi := range cfg.Instances {
		for _, ip := range vi.VirtualIPAddresses {
			a := ip.Prefix.Addr()
			if prev, dup := vipOwner[a]; dup && prev != vi {
				ds.errorf(ip.Pos, "vrrp_instance %s: virtual_ipaddress %s already in vrrp_instance %s (%s)", vi.Name, a, prev.Name, prev.Pos)
				continue
			}
			vipOwner[a] = vi
		}
	}
	if sd := cfg.Global.LVSSyncDaemon; sd != nil {
		if _, ok := instances[sd.Instance]; sd.Instance != "" && !ok {
			ds.errorf(sd.Pos, "lvs_sync_daemon: no vrrp_instance %s", sd.Instance)
		}
		for _, vi := range cfg.Instances {
			if vi.LVSSyncDaemonIf != "" {
				ds.warnf(vi.Pos, "vrrp_instance %s: lvs_sync_daemon_interface ignored, global_defs has lvs_sync_daemon (%s)", vi.Name, sd.Pos)
			}
		}
	}
	inGroup := map[string]string{}
	for _, sg := range cfg.SyncGroups {
		if len(sg.Group) == 0 {
			ds.errorf(sg.Pos, "vrrp_sync_group %s: missing group { ... }", sg.Name)
		}
		for _, m := range sg.Group {
			if _, ok := instances[m]; !ok {
				ds.errorf(sg.Pos, "vrrp_sync_group %s: no vrrp_instance %s", sg.Name, m)
				continue
			}
			if other, ok := inGroup[m]; ok {
				ds.errorf(sg.Pos, "vrrp_sync_group %s: vrrp_instance %s is already in sync group %s", sg.Name, m, other)
				continue
			}
			inGroup[m] = sg.Name
		}
		for _, t := range sg.TrackScript {
			if _, ok := scripts[t.Name]; !ok {
				ds.warnf(t.Pos, "track_script %s: no vrrp_script of that name, ignored", t.Name)
			}
		}
	}

	groups := map[string]*VirtualServerGroup{}
	for _, g := range cfg.ServerGroups {
		if prev, dup := groups[g.Name]; dup {
			ds.errorf(g.Pos, "virtual_server_group %s: defined twice (first at %s)", g.Name, prev.Pos)
			continue
		}
		groups[g.Name] = g
		if len(g.Entries) == 0 {
			ds.warnf(g.Pos, "virtual_server_group %s: empty", g.Name)
		}
	}
	services := map[string]*VirtualServer{}
	for _, vs := range cfg.VirtualServers {
		key := vs.Key()
		if prev, dup := services[key]; dup {
			ds.errorf(vs.Pos, "virtual_server %s: defined twice (first at %s)", key, prev.Pos)
			continue
		}
		services[key] = vs
		validateVS(&ds, vs, groups)
	}
	if p, ok := firstScript(cfg); ok && !cfg.Global.EnableScriptSecurity {
		// keepalived runs them anyway, as root, and says so.
		ds.warnf(p, "scripts are configured but global_defs has no enable_script_security")
	}
	return ds
}

func validateInstance(ds *Diagnostics, vi *VRRPInstance, scripts map[string]*VRRPScript) {
	if vi.Interface == "" {
		ds.errorf(vi.Pos, "vrrp_instance %s: missing interface", vi.Name)
	}
	if vi.VirtualRouterID == 0 {
		ds.errorf(vi.Pos, "vrrp_instance %s: missing virtual_router_id", vi.Name)
	}
	if len(vi.VirtualIPAddresses) == 0 {
		ds.warnf(vi.Pos, "vrrp_instance %s: no virtual_ipaddress", vi.Name)
	}
	if vi.Priority == 255 && vi.State == "BACKUP" {
		ds.warnf(vi.Pos, "vrrp_instance %s: priority 255 is the address owner, state BACKUP ignored", vi.Name)
	}
	version := vi.Version
	if version == 0 {
		version = 2
	}
	if version == 2 && vi.AdvertInt%time.Second != 0 {
		ds.errorf(vi.Pos, "vrrp_instance %s: advert_int %s: VRRPv2 needs whole seconds (use version 3)", vi.Name, vi.AdvertInt)
	}
	if a := vi.Auth; a != nil {
		if version == 3 {
			ds.warnf(a.Pos, "vrrp_instance %s: authentication is not part of VRRPv3, ignored", vi.Name)
		}
		if a.Type == "" {
			ds.errorf(a.Pos, "vrrp_instance %s: authentication: missing auth_type", vi.Name)
		}
		if a.Type == "PASS" && a.Pass == "" {
			ds.errorf(a.Pos, "vrrp_instance %s: authentication: missing auth_pass", vi.Name)
		}
		if len(a.Pass) > 8 {
			ds.warnf(a.Pos, "vrrp_instance %s: auth_pass longer than 8 characters, truncated", vi.Name)
		}
	}
	var fam4, fam6 bool
	for _, ip := range vi.VirtualIPAddresses {
		if ip.Prefix.Addr().Is4() {
			fam4 = true
		} else {
			fam6 = true
		}
	}
	if fam4 && fam6 && !vi.NativeIPv6 {
		ds.errorf(vi.Pos, "vrrp_instance %s: virtual_ipaddress mixes IPv4 and IPv6 (use virtual_ipaddress_excluded)", vi.Name)
	}
	if vi.UnicastSrcIP.IsValid() {
		for _, p := range vi.UnicastPeers {
			if p.Addr.Is4() != vi.UnicastSrcIP.Is4() {
				ds.errorf(p.Pos, "unicast_peer %s: not the family of unicast_src_ip %s", p.Addr, vi.UnicastSrcIP)
			}
		}
	}
	for _, t := range vi.TrackScript {
		if _, ok := scripts[t.Name]; !ok {
			ds.warnf(t.Pos, "track_script %s: no vrrp_script of that name, ignored", t.Name)
		}
	}
}

func validateVS(ds *Diagnostics, vs *VirtualServer, groups map[string]*VirtualServerGroup) {
	key := vs.Key()
	if vs.Group != "" {
		if _, ok := groups[vs.Group]; !ok {
			ds.errorf(vs.Pos, "virtual_server group %s: no virtual_server_group of that name", vs.Group)
		}
	}
	if vs.Addr.IsValid() && vs.Port == 0 && !vs.Persistent {
		ds.errorf(vs.Pos, "virtual_server %s: port 0 (every port) needs persistence_timeout", key)
	}
	if !containsStr(Schedulers, vs.Scheduler) {
		ds.errorf(vs.Pos, "virtual_server %s: unknown scheduler %q", key, vs.Scheduler)
	}
	for _, f := range vs.SchedFlags {
		switch f {
		case "sh-port", "sh-fallback":
			if vs.Scheduler != "sh" {
				ds.warnf(vs.Pos, "virtual_server %s: %s only applies to lb_algo sh", key, f)
			}
		case "mh-port", "mh-fallback":
			if vs.Scheduler != "mh" {
				ds.warnf(vs.Pos, "virtual_server %s: %s only applies to lb_algo mh", key, f)
			}
		}
	}
	if vs.OPS && vs.Protocol != "UDP" {
		ds.errorf(vs.Pos, "virtual_server %s: ops needs protocol UDP", key)
	}
	if vs.Hysteresis >= vs.Quorum && vs.Hysteresis > 0 {
		ds.errorf(vs.Pos, "virtual_server %s: hysteresis %d must be less than quorum %d", key, vs.Hysteresis, vs.Quorum)
	}
	if ss := vs.SorryServer; ss != nil && !ss.Addr.IsValid() {
		ds.errorf(ss.Pos, "virtual_server %s: sorry_server_lvs_method without sorry_server", key)
	}
	if len(vs.RealServers) == 0 && vs.SorryServer == nil {
		ds.warnf(vs.Pos, "virtual_server %s: no real_server", key)
	}
	seen := map[string]*RealServer{}
	for _, rs := range vs.RealServers {
		rk := rs.Key()
		if prev, dup := seen[rk]; dup {
			ds.errorf(rs.Pos, "real_server %s: defined twice in virtual_server %s (first at %s)", rk, key, prev.Pos)
			continue
		}
		seen[rk] = rs
		method := rs.Method
		if method == "" {
			method = vs.Method
		}
		if vs.Addr.IsValid() && rs.Addr.Is4() != vs.Addr.Is4() && method != MethodTUN {
			ds.errorf(rs.Pos, "real_server %s: address family differs from virtual_server %s (only TUN can mix)", rk, key)
		}
		if rs.Port != 0 && (vs.FWMark != 0 || groupHasFWMark(groups[vs.Group])) {
			ds.warnf(rs.Pos, "real_server %s: port ignored, virtual_server %s is a fwmark service", rk, key)
		}
		if rs.Port == 0 && vs.Port != 0 {
			ds.errorf(rs.Pos, "real_server %s: missing port", rk)
		}
		if method != MethodNAT && rs.Port != 0 && vs.Port != 0 && rs.Port != vs.Port {
			ds.warnf(rs.Pos, "real_server %s: %s cannot change the port, %d is used", rk, method, vs.Port)
		}
		if rs.UThreshold != 0 && rs.LThreshold > rs.UThreshold {
			ds.errorf(rs.Pos, "real_server %s: lthreshold %d above uthreshold %d", rk, rs.LThreshold, rs.UThreshold)
		}
		for _, ck := range rs.Checkers {
			validateChecker(ds, rs, ck)
		}
	}
}

func groupHasFWMark(g *VirtualServerGroup) bool {
	if g == nil {
		return false
	}
	for _, e := range g.Entries {
		if e.FWMark != 0 {
			return true
		}
	}
	return false
}

// firstScript returns where the first script of the file is configured.
func firstScript(cfg *Config) (Pos, bool) {
	for _, s := range cfg.Scripts {
		return s.Pos, true
	}
	for _, sg := range cfg.SyncGroups {
		if sg.Notify != (Notify{}) {
			return sg.Pos, true
		}
	}
	for _, vi := range cfg.Instances {
		if vi.Notify != (Notify{}) {
			return vi.Pos, true
		}
	}
	for _, vs := range cfg.VirtualServers {
		if vs.QuorumUp != "" || vs.QuorumDown != "" {
			return vs.Pos, true
		}
		for _, rs := range vs.RealServers {
			if rs.NotifyUp != "" || rs.NotifyDown != "" {
				return rs.Pos, true
			}
			for _, ck := range rs.Checkers {
				if ck.Misc != nil {
					return ck.Pos, true
				}
			}
		}
	}
	return Pos{}, false
}

func validateChecker(ds *Diagnostics, rs *RealServer, ck *Checker) {
	where := "real_server " + rs.Key() + ": " + string(ck.Type)
	switch ck.Type {
	case HTTPGet, SSLGet:
		if len(ck.HTTP.URLs) == 0 {
			ds.errorf(ck.Pos, "%s: missing url { path ... }", where)
		}
		for _, u := range ck.HTTP.URLs {
			if u.Path == "" {
				ds.errorf(u.Pos, "%s: url: missing path", where)
			}
		}
	case MiscCheck:
		if ck.Misc.Path == "" {
			ds.errorf(ck.Pos, "%s: missing misc_path", where)
		}
	case PingCheck, TCPCheck, DNSCheck, UDPCheck, SMTPCheck:
	}
	if ck.Type != MiscCheck && ck.Type != PingCheck && ck.ConnectPort == 0 && rs.Port == 0 && ck.Type != SMTPCheck && ck.Type != DNSCheck {
		ds.errorf(ck.Pos, "%s: no port to check (connect_port, or a real_server port)", where)
	}
	if ck.ConnectIP.IsValid() && ck.BindTo.IsValid() && ck.ConnectIP.Is4() != ck.BindTo.Is4() {
		ds.errorf(ck.Pos, "%s: bindto %s and connect_ip %s differ in family", where, ck.BindTo, ck.ConnectIP)
	}
	if ck.ViaVIP && ck.Type == MiscCheck {
		ds.errorf(ck.Pos, "%s: xvs_via_vip needs a network checker", where)
	}
}
