package director

import (
	"net/netip"
	"testing"

	"github.com/xvs-lb/xvs/config"
	"github.com/xvs-lb/xvs/control"
	"github.com/xvs-lb/xvs/dataplane"
)

// TestDataplaneServicesPerRealMethod: a real_server's own lvs_method (or
// ipvsadm's -g/-i/-m per real server) reaches the dataplane with that
// real server; the others take the virtual server's.
func TestDataplaneServicesPerRealMethod(t *testing.T) {
	a := netip.MustParseAddr
	vs := &config.VirtualServer{Addr: a("198.18.0.10"), Port: 80, Scheduler: "rr", Method: config.MethodDR,
		RealServers: []*config.RealServer{
			{Addr: a("198.18.1.11"), Port: 80, Weight: 1},
			{Addr: a("198.18.1.12"), Port: 8080, Weight: 1, Method: config.MethodNAT},
			{Addr: a("198.18.1.13"), Port: 80, Weight: 1, Method: config.MethodTUN},
		}}
	s := serviceFromConfig(vs, control.ServiceKey{Proto: control.TCP, Addr: vs.Addr, Port: vs.Port})
	tb := &table{services: []*vservice{s}}
	got := tb.dataplaneServices(func(netip.Addr) bool { return true })
	if len(got) != 1 || len(got[0].Dests) != 3 {
		t.Fatalf("services %+v", got)
	}
	if got[0].Method != dataplane.DR {
		t.Errorf("service method %v, want DR (its first real server's)", got[0].Method)
	}
	want := []dataplane.Method{dataplane.DR, dataplane.NAT, dataplane.TUN}
	for i, d := range got[0].Dests {
		if !d.OwnMethod || d.Method != want[i] {
			t.Errorf("real server %s: method %v (own %v), want %v", d.Addr, d.Method, d.OwnMethod, want[i])
		}
	}
}
