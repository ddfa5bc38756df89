package director

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/xvs-lb/xvs/config"
	"github.com/xvs-lb/xvs/control"
	"github.com/xvs-lb/xvs/dataplane"
	"github.com/xvs-lb/xvs/scheduler"
)

// table is the director's desired set of virtual services: the
// configuration, with xvsadm's changes on top, and each real server's
// health. It is plain data, owned by Director.mu; publish turns it into a
// dataplane snapshot.
type table struct {
	services []*vservice
}

// vservice is one virtual service.
type vservice struct {
	ctl   control.Service // key and settings; ctl.Dests is unused
	reals []*real
	sorry *real
	// fromConfig is the keepalived.conf block it came from; nil when
	// xvsadm added it.
	fromConfig *config.VirtualServer
	// sorryActive: the health checker says no real server (or no quorum)
	// is left, so the sorry server takes the traffic.
	sorryActive bool
}

// real is one real server of a virtual service.
type real struct {
	dest control.Dest // configured address, port, method, weight, thresholds
	// up is the health checker's verdict; real servers without checkers
	// are always up.
	up bool
	// weight is the live weight: dest.Weight, or what a MISC_CHECK with
	// misc_dynamic or inhibit_on_failure said (-1 = dest.Weight).
	weight int32
}

func (r *real) liveWeight() int32 {
	if r.weight >= 0 {
		return r.weight
	}
	return r.dest.Weight
}

func (t *table) find(k control.ServiceKey) *vservice {
	for _, s := range t.services {
		if s.ctl.ServiceKey == k {
			return s
		}
	}
	return nil
}

func (s *vservice) findReal(k control.DestKey) *real {
	for _, r := range s.reals {
		if r.dest.Addr == k.Addr && r.dest.Port == k.Port {
			return r
		}
	}
	return nil
}

// methodOf maps keepalived's lb_kind to ipvsadm's forwarding method.
func methodOf(m config.Method) control.Method {
	switch m {
	case config.MethodNAT:
		return control.Masq
	case config.MethodTUN:
		return control.Tunnel
	}
	return control.Route
}

func protoOf(p string) (control.Proto, bool) {
	switch p {
	case "TCP", "":
		return control.TCP, true
	case "UDP":
		return control.UDP, true
	case "SCTP":
		return control.SCTP, true
	}
	return 0, false
}

// tableFromConfig builds the desired table from keepalived.conf. Services
// the dataplane cannot serve (fwmark, SCTP) are left out with a warning
// each, as keepalived leaves out what the kernel refuses.
func tableFromConfig(c *config.Config) (*table, []string) {
	t := &table{}
	var warns []string
	for _, vs := range c.VirtualServers {
		keys, err := serviceKeys(c, vs)
		if err != nil {
			warns = append(warns, fmt.Sprintf("%s: virtual_server %s: %v; not served", vs.Pos, vs.Key(), err))
			continue
		}
		for _, k := range keys {
			t.services = append(t.services, serviceFromConfig(vs, k))
		}
	}
	return t, warns
}

// serviceKeys lists the (protocol, address, port) services a
// virtual_server block stands for: one, or one per address of its
// virtual_server_group.
func serviceKeys(c *config.Config, vs *config.VirtualServer) ([]control.ServiceKey, error) {
	proto, ok := protoOf(vs.Protocol)
	if !ok {
		return nil, fmt.Errorf("protocol %q", vs.Protocol)
	}
	if proto == control.SCTP {
		return nil, fmt.Errorf("SCTP is not forwarded by xvs yet")
	}
	switch {
	case vs.Group != "":
		g := c.ServerGroup(vs.Group)
		if g == nil {
			return nil, fmt.Errorf("no virtual_server_group %q", vs.Group)
		}
		var keys []control.ServiceKey
		for _, e := range g.Entries {
			if e.FWMark != 0 {
				return nil, fmt.Errorf("group %s: fwmark entries need netfilter marks, which XDP does not see", g.Name)
			}
			last := e.Last
			if !last.IsValid() {
				last = e.Addr
			}
			for a := e.Addr; a.IsValid() && a.Compare(last) <= 0; a = a.Next() {
				keys = append(keys, control.ServiceKey{Proto: proto, Addr: a, Port: e.Port})
			}
		}
		return keys, nil
	case vs.FWMark != 0 || !vs.Addr.IsValid():
		return nil, fmt.Errorf("fwmark services need netfilter marks, which XDP does not see")
	}
	return []control.ServiceKey{{Proto: proto, Addr: vs.Addr, Port: vs.Port}}, nil
}

func serviceFromConfig(vs *config.VirtualServer, k control.ServiceKey) *vservice {
	s := &vservice{fromConfig: vs}
	s.ctl.ServiceKey = k
	s.ctl.Sched = vs.Scheduler
	if s.ctl.Sched == "" {
		s.ctl.Sched = "wlc"
	}
	s.ctl.Flags = append([]string(nil), vs.SchedFlags...)
	if vs.Persistent || vs.PersistenceTimeout > 0 {
		s.ctl.Persistent = true
		s.ctl.Timeout = uint32(vs.PersistenceTimeout / time.Second)
		s.ctl.Netmask = vs.PersistenceGranularity
	}
	s.ctl.OnePacket = vs.OPS
	for _, rs := range vs.RealServers {
		m := vs.Method
		if rs.Method != "" {
			m = rs.Method
		}
		port := rs.Port
		if port == 0 {
			port = k.Port
		}
		r := &real{
			dest: control.Dest{
				Addr: rs.Addr, Port: port, Method: methodOf(m), Weight: int32(rs.Weight),
				Upper: uint32(max(rs.UThreshold, 0)), Lower: uint32(max(rs.LThreshold, 0)),
			},
			// keepalived's alpha: a checked server starts down and must
			// pass its checks first.
			up:     !(len(rs.Checkers) > 0 && (rs.Alpha || vs.Alpha)),
			weight: -1,
		}
		s.reals = append(s.reals, r)
	}
	if ss := vs.SorryServer; ss != nil {
		m := vs.Method
		if ss.Method != "" {
			m = ss.Method
		}
		port := ss.Port
		if port == 0 {
			port = k.Port
		}
		s.sorry = &real{dest: control.Dest{Addr: ss.Addr, Port: port, Method: methodOf(m), Weight: 1}, up: true, weight: -1}
	}
	return s
}

// schedOptions turns ipvsadm's -b flags into scheduler options.
func schedOptions(flags []string) scheduler.Options {
	var o scheduler.Options
	for _, f := range flags {
		switch f {
		case "sh-fallback", "flag-1":
			o.SHFallback, o.MHFallback = true, true
		case "sh-port", "flag-2":
			o.SHPort, o.MHPort = true, true
		case "mh-fallback":
			o.MHFallback = true
		case "mh-port":
			o.MHPort = true
		}
	}
	return o
}

func dpMethod(m control.Method) dataplane.Method {
	switch m {
	case control.Masq:
		return dataplane.NAT
	case control.Tunnel:
		return dataplane.TUN
	}
	return dataplane.DR
}

// dataplaneServices is the table as the dataplane takes it. active says
// whether this director is MASTER for a VIP (true where no VRRP instance
// holds it). A real server that failed its checks is left out, as
// keepalived removes it from IPVS — unless inhibit_on_failure keeps it
// with weight 0; when none is left, the sorry server serves.
func (t *table) dataplaneServices(active func(netip.Addr) bool) []dataplane.ServiceConfig {
	out := make([]dataplane.ServiceConfig, 0, len(t.services))
	for _, s := range t.services {
		if s.ctl.FWMark != 0 || s.ctl.Proto == control.SCTP {
			continue
		}
		sc := dataplane.ServiceConfig{
			Key:          dataplane.ServiceKey{Addr: s.ctl.Addr, Proto: uint8(s.ctl.Proto), Port: s.ctl.Port},
			Method:       dataplane.DR,
			Scheduler:    s.ctl.Sched,
			SchedOptions: schedOptions(s.ctl.Flags),
			Active:       active(s.ctl.Addr),
		}
		if s.ctl.Persistent {
			sc.Persistence = time.Duration(s.ctl.Timeout) * time.Second
			if sc.Persistence == 0 {
				sc.Persistence = 300 * time.Second
			}
			if s.ctl.Netmask > 0 && s.ctl.Netmask < s.ctl.Bits()+1 {
				sc.PersistenceMask = s.ctl.Netmask
			}
		}
		visible := s.visibleReals()
		for _, r := range visible {
			sc.Dests = append(sc.Dests, dataplane.DestConfig{
				Addr: r.dest.Addr, Port: r.dest.Port, Weight: r.liveWeight(), Up: true,
				Upper: int32(r.dest.Upper), Lower: int32(r.dest.Lower),
				Method: dpMethod(r.dest.Method), OwnMethod: true,
			})
		}
		// Each real server is forwarded by its own method, as in IPVS;
		// the service's is what listings show, its first real server's.
		if len(visible) > 0 {
			sc.Method = dpMethod(visible[0].dest.Method)
		} else if len(s.reals) > 0 {
			sc.Method = dpMethod(s.reals[0].dest.Method)
		}
		out = append(out, sc)
	}
	return out
}

// visibleReals are the real servers IPVS would hold: those up (or kept at
// weight 0 by inhibit_on_failure), or the sorry server when the checker
// says none is left.
func (s *vservice) visibleReals() []*real {
	if s.sorryActive && s.sorry != nil {
		return []*real{s.sorry}
	}
	var out []*real
	for _, r := range s.reals {
		if r.up {
			out = append(out, r)
		}
	}
	return out
}
