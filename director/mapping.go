package director

import (
	"net/netip"
	"strconv"

	"github.com/xvs-lb/xvs/config"
	"github.com/xvs-lb/xvs/healthcheck"
	"github.com/xvs-lb/xvs/vrrp"
)

// vrrpConfig maps keepalived.conf's VRRP part onto the speaker's config.
func vrrpConfig(c *config.Config) vrrp.Config {
	g := c.Global
	out := vrrp.Config{Globals: vrrp.Globals{
		RouterID:                g.RouterID,
		McastGroup4:             g.VRRPMcastGroup4,
		McastGroup6:             g.VRRPMcastGroup6,
		Version:                 g.VRRPVersion,
		GarpMasterDelay:         g.VRRPGarpMasterDelay,
		GarpMasterRepeat:        g.VRRPGarpMasterRepeat,
		GarpMasterRefresh:       g.VRRPGarpMasterRefresh,
		GarpMasterRefreshRepeat: g.VRRPGarpMasterRefreshRepeat,
		SMTPServer:              g.SMTPServer,
		SMTPConnectTimeout:      g.SMTPConnectTimeout,
		NotificationEmail:       g.NotificationEmail,
		NotificationEmailFrom:   g.NotificationEmailFrom,
	}}
	if g.SMTPServer != "" && g.SMTPPort != 0 {
		out.Globals.SMTPServer = g.SMTPServer + ":" + strconv.Itoa(g.SMTPPort)
	}
	for _, s := range c.Scripts {
		out.Scripts = append(out.Scripts, vrrp.Script{
			Name: s.Name, Script: s.Script, Interval: s.Interval, Timeout: s.Timeout,
			Weight: s.Weight, Rise: s.Rise, Fall: s.Fall,
		})
	}
	for _, in := range c.Instances {
		vi := vrrp.Instance{
			Name:            in.Name,
			State:           vrrp.StateBackup,
			Interface:       in.Interface,
			VirtualRouterID: uint8(in.VirtualRouterID),
			Priority:        uint8(in.Priority),
			AdvertInt:       in.AdvertInt,
			Version:         in.Version,
			NoPreempt:       in.NoPreempt,
			PreemptDelay:    in.PreemptDelay,
			McastSrcIP:      in.McastSrcIP,
			UnicastSrcIP:    in.UnicastSrcIP,
			NotifyMaster:    in.Notify.Master,
			NotifyBackup:    in.Notify.Backup,
			NotifyFault:     in.Notify.Fault,
			NotifyStop:      in.Notify.Stop,
			Notify:          in.Notify.Any,
			SMTPAlert:       in.SMTPAlert,
			// The config holds the effective (inherited) values already.
			GarpMasterDelay:   in.GarpMasterDelay,
			GarpMasterRepeat:  in.GarpMasterRepeat,
			GarpMasterRefresh: in.GarpMasterRefresh,
			UseVMAC:           in.UseVMAC,
			VMACName:          in.VMACName,
			VMACXmitBase:      in.VMACXmitBase,
		}
		if in.State == "MASTER" {
			vi.State = vrrp.StateMaster
		}
		if in.Auth != nil && in.Auth.Type == "PASS" {
			vi.AuthType = vrrp.AuthPass
			vi.AuthPass = in.Auth.Pass
		}
		for _, a := range in.VirtualIPAddresses {
			vi.VirtualIPAddresses = append(vi.VirtualIPAddresses, vrrp.VIP{Prefix: a.Prefix, Dev: a.Dev, Label: a.Label})
		}
		for _, p := range in.UnicastPeers {
			vi.UnicastPeers = append(vi.UnicastPeers, p.Addr)
		}
		for _, t := range in.TrackInterface {
			vi.TrackInterfaces = append(vi.TrackInterfaces, vrrp.TrackInterface{Name: t.Name, Weight: t.Weight})
		}
		for _, t := range in.TrackScript {
			vi.TrackScripts = append(vi.TrackScripts, vrrp.TrackScript{Name: t.Name, Weight: t.Weight, HasWeight: t.HasW})
		}
		out.Instances = append(out.Instances, vi)
	}
	for _, sg := range c.SyncGroups {
		out.SyncGroups = append(out.SyncGroups, vrrp.SyncGroup{
			Name: sg.Name, Group: sg.Group,
			NotifyMaster: sg.Notify.Master, NotifyBackup: sg.Notify.Backup,
			NotifyFault: sg.Notify.Fault, NotifyStop: sg.Notify.Stop, Notify: sg.Notify.Any,
			SMTPAlert: sg.SMTPAlert,
		})
	}
	return out
}

// healthServices maps the checked services of the table onto the checker
// pool's services, named by their control key so transitions find their way
// back. via fills the addressing of data-path checks (xvs_via_vip); it
// returns nil while that is not known yet, and the checker then runs as a
// plain TCP_CHECK until a later update.
func healthServices(t *table, via func(*vservice, *real) *healthcheck.ViaVIPOptions) []healthcheck.Service {
	var out []healthcheck.Service
	for _, s := range t.services {
		vs := s.fromConfig
		if vs == nil {
			continue
		}
		hs := healthcheck.Service{
			Name:        s.ctl.ServiceKey.String(),
			VIP:         s.ctl.Addr,
			Port:        s.ctl.Port,
			Protocol:    vs.Protocol,
			Quorum:      vs.Quorum,
			Hysteresis:  vs.Hysteresis,
			QuorumUp:    vs.QuorumUp,
			QuorumDown:  vs.QuorumDown,
			HASuspend:   vs.HASuspend,
			Alpha:       vs.Alpha,
			Omega:       vs.Omega,
			VirtualHost: vs.Virtualhost,
		}
		if s.sorry != nil {
			hs.Sorry = &healthcheck.SorryServer{Addr: s.sorry.dest.Addr, Port: s.sorry.dest.Port, Inhibit: vs.SorryServerInhibit}
		}
		for i, rs := range vs.RealServers {
			if i >= len(s.reals) {
				break
			}
			r := s.reals[i]
			hr := healthcheck.RealServer{
				Addr: r.dest.Addr, Port: r.dest.Port, Weight: rs.Weight,
				InhibitOnFailure: rs.InhibitOnFailure || vs.InhibitOnFailure,
				Alpha:            rs.Alpha, NotifyUp: rs.NotifyUp, NotifyDown: rs.NotifyDown,
				VirtualHost: rs.Virtualhost,
			}
			if rs.Weight == 0 {
				hr.Weight = healthcheck.NoWeight
			}
			for _, c := range rs.Checkers {
				hc := checkerOf(c)
				if c.ViaVIP && hc.Type == healthcheck.TCPCheck && via != nil {
					hc.ViaVIP = via(s, r)
				}
				hr.Checkers = append(hr.Checkers, hc)
			}
			hs.Servers = append(hs.Servers, hr)
		}
		out = append(out, hs)
	}
	return out
}

func checkerOf(c *config.Checker) healthcheck.Checker {
	hc := healthcheck.Checker{
		Type:             healthcheck.CheckType(c.Type),
		ConnectIP:        c.ConnectIP,
		ConnectPort:      c.ConnectPort,
		BindTo:           c.BindTo,
		BindPort:         c.BindPort,
		BindIf:           c.BindIf,
		FWMark:           c.FWMark,
		ConnectTimeout:   c.ConnectTimeout,
		Retry:            healthcheck.Ptr(c.Retry),
		DelayBeforeRetry: healthcheck.Ptr(c.DelayBeforeRetry),
		DelayLoop:        c.DelayLoop,
		Warmup:           healthcheck.Ptr(c.Warmup),
		Alpha:            c.Alpha,
	}
	if h := c.HTTP; h != nil {
		ho := &healthcheck.HTTPOptions{Protocol: h.HTTPProtocol, VirtualHost: h.Virtualhost, EnableSNI: h.EnableSNI}
		for _, u := range h.URLs {
			hu := healthcheck.URL{Path: u.Path, Digest: u.Digest, VirtualHost: u.Virtualhost, Regex: u.Regex, RegexNoMatch: u.RegexNoMatch}
			for _, sr := range u.StatusCodes {
				hu.StatusCodes = append(hu.StatusCodes, healthcheck.StatusRange{Lo: sr.Lo, Hi: sr.Hi})
			}
			ho.URLs = append(ho.URLs, hu)
		}
		hc.HTTP = ho
	}
	if m := c.Misc; m != nil {
		hc.Misc = &healthcheck.MiscOptions{Path: m.Path, Timeout: m.Timeout, Dynamic: m.Dynamic}
	}
	if u := c.UDP; u != nil {
		hc.UDP = &healthcheck.UDPOptions{Payload: u.Payload, RequireReply: u.RequireReply, ReplyPattern: string(u.ReplyPattern),
			MinReplyLength: u.MinReplyLength, MaxReplyLength: u.MaxReplyLength}
	}
	if d := c.DNS; d != nil {
		hc.DNS = &healthcheck.DNSOptions{Type: d.Type, Name: d.Name}
	}
	if s := c.SMTP; s != nil {
		hc.SMTP = &healthcheck.SMTPOptions{HeloName: s.HeloName}
	}
	return hc
}

// serviceByName finds a service by the name healthServices gave it.
func (t *table) serviceByName(name string) *vservice {
	for _, s := range t.services {
		if s.ctl.ServiceKey.String() == name {
			return s
		}
	}
	return nil
}

// realByName finds a real server (or the sorry server) by "ip:port".
func (s *vservice) realByName(name string) *real {
	for _, r := range s.reals {
		if addrPort(r) == name {
			return r
		}
	}
	if s.sorry != nil && addrPort(s.sorry) == name {
		return s.sorry
	}
	return nil
}

func addrPort(r *real) string { return netip.AddrPortFrom(r.dest.Addr, r.dest.Port).String() }
