package main

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/xvs-lb/xvs/control"
)

// fakeResolver knows one host name and a few service names.
type fakeResolver struct{}

func (fakeResolver) Host(name string) (netip.Addr, bool) {
	switch name {
	case "www.example.test":
		return netip.MustParseAddr("198.18.0.100"), true
	case "rs1.example.test":
		return netip.MustParseAddr("198.18.0.11"), true
	}
	return netip.Addr{}, false
}

func (fakeResolver) Port(name string, p control.Proto) (uint16, bool) {
	switch {
	case name == "http" && p == control.TCP:
		return 80, true
	case name == "https" && p == control.TCP:
		return 443, true
	case name == "domain" && p == control.UDP:
		return 53, true
	}
	return 0, false
}

// view is what a test compares of a parsed command line.
type view struct {
	Cmd      cmdKind
	Svc      control.Service
	Dest     control.Dest
	Format   control.Format
	Timeouts control.Timeouts
}

func viewOf(cl *cmdline) view {
	v := view{Cmd: cl.cmd, Svc: cl.svc, Format: cl.format, Timeouts: cl.timeouts}
	switch cl.cmd {
	case cmdAddDest, cmdEditDest, cmdDelDest:
		v.Dest = cl.dest
	}
	return v
}

var (
	vip   = netip.MustParseAddr("198.18.0.100")
	rs1   = netip.MustParseAddr("198.18.0.11")
	vip6  = netip.MustParseAddr("2001:db8::100")
	web   = control.ServiceKey{Proto: control.TCP, Addr: vip, Port: 80}
	web6  = control.ServiceKey{Proto: control.TCP, Addr: vip6, Port: 80}
	route = control.Dest{Addr: rs1, Port: 80, Method: control.Route, Weight: 1}
)

func TestParseArgs(t *testing.T) {
	svc := func(k control.ServiceKey, sched string) control.Service {
		return control.Service{ServiceKey: k, Sched: sched}
	}
	cases := []struct {
		args []string
		want view
	}{
		{[]string{"-Ln"}, view{Cmd: cmdList, Format: control.Format{Numeric: true}}},
		{[]string{"-ln"}, view{Cmd: cmdList, Format: control.Format{Numeric: true}}},
		{[]string{"-Lnc"}, view{Cmd: cmdList, Format: control.Format{Numeric: true}}},
		{[]string{"-L", "-n", "--stats", "--exact"}, view{Cmd: cmdList, Format: control.Format{Numeric: true, Stats: true, Exact: true}}},
		{[]string{"--list", "--numeric", "--rate", "--sort"}, view{Cmd: cmdList, Format: control.Format{Numeric: true, Rate: true}}},
		{[]string{"-L", "--timeout"}, view{Cmd: cmdList}},
		{[]string{"-Ln", "-t", "198.18.0.100:80"}, view{Cmd: cmdList, Svc: control.Service{ServiceKey: web}, Format: control.Format{Numeric: true}}},
		{[]string{"-Ln", "--thresholds", "--nosort"}, view{Cmd: cmdList, Format: control.Format{Numeric: true, Thresholds: true, NoSort: true}}},
		{[]string{"-A", "-t", "198.18.0.100:80", "-s", "wrr"}, view{Cmd: cmdAdd, Svc: svc(web, "wrr")}},
		{[]string{"-At", "198.18.0.100:80", "-s", "wrr"}, view{Cmd: cmdAdd, Svc: svc(web, "wrr")}},
		{[]string{"-At198.18.0.100:80", "-swrr"}, view{Cmd: cmdAdd, Svc: svc(web, "wrr")}},
		{[]string{"--add-service", "--tcp-service", "198.18.0.100:80", "--scheduler", "wrr"}, view{Cmd: cmdAdd, Svc: svc(web, "wrr")}},
		{[]string{"--add-service", "--tcp-service=198.18.0.100:80", "--scheduler=wrr"}, view{Cmd: cmdAdd, Svc: svc(web, "wrr")}},
		{[]string{"-A", "-t", "198.18.0.100:http"}, view{Cmd: cmdAdd, Svc: svc(web, "wlc")}},
		{[]string{"-A", "-t", "www.example.test:80", "-s", "rr"}, view{Cmd: cmdAdd, Svc: svc(web, "rr")}},
		{[]string{"-E", "-t", "198.18.0.100:80", "-s", "wlc"}, view{Cmd: cmdEdit, Svc: svc(web, "wlc")}},
		{[]string{"-A", "-t", "198.18.0.100:80", "-s", "rr", "-p"},
			view{Cmd: cmdAdd, Svc: control.Service{ServiceKey: web, Sched: "rr", Persistent: true, Timeout: 360}}},
		{[]string{"-A", "-t", "198.18.0.100:80", "-p", "600", "-s", "rr"},
			view{Cmd: cmdAdd, Svc: control.Service{ServiceKey: web, Sched: "rr", Persistent: true, Timeout: 600}}},
		{[]string{"-A", "-t", "198.18.0.100:80", "-p", "-s", "rr"},
			view{Cmd: cmdAdd, Svc: control.Service{ServiceKey: web, Sched: "rr", Persistent: true, Timeout: 360}}},
		{[]string{"-A", "-t", "198.18.0.100:80", "-p600"},
			view{Cmd: cmdAdd, Svc: control.Service{ServiceKey: web, Sched: "wlc", Persistent: true, Timeout: 600}}},
		{[]string{"-A", "-t", "198.18.0.100:80", "--persistent=600"},
			view{Cmd: cmdAdd, Svc: control.Service{ServiceKey: web, Sched: "wlc", Persistent: true, Timeout: 600}}},
		{[]string{"-A", "-t", "198.18.0.100:80", "--persistent", "600"},
			view{Cmd: cmdAdd, Svc: control.Service{ServiceKey: web, Sched: "wlc", Persistent: true, Timeout: 600}}},
		{[]string{"-A", "-t", "198.18.0.100:0", "-p"},
			view{Cmd: cmdAdd, Svc: control.Service{ServiceKey: control.ServiceKey{Proto: control.TCP, Addr: vip}, Sched: "wlc", Persistent: true, Timeout: 360}}},
		{[]string{"-A", "-t", "198.18.0.100:443", "-s", "wlc", "-p", "600", "-M", "255.255.255.0"},
			view{Cmd: cmdAdd, Svc: control.Service{ServiceKey: control.ServiceKey{Proto: control.TCP, Addr: vip, Port: 443},
				Sched: "wlc", Persistent: true, Timeout: 600, Netmask: 24}}},
		{[]string{"-A", "-t", "198.18.0.100:80", "-M", "255.255.255.255"}, view{Cmd: cmdAdd, Svc: svc(web, "wlc")}},
		{[]string{"-A", "-t", "[2001:db8::100]:80", "-s", "wrr"}, view{Cmd: cmdAdd, Svc: svc(web6, "wrr")}},
		{[]string{"-A", "-t", "[2001:db8::100]:80", "-p", "-M", "64"},
			view{Cmd: cmdAdd, Svc: control.Service{ServiceKey: web6, Sched: "wlc", Persistent: true, Timeout: 360, Netmask: 64}}},
		{[]string{"-A", "-u", "198.18.0.100:domain", "-s", "rr", "-o"},
			view{Cmd: cmdAdd, Svc: control.Service{ServiceKey: control.ServiceKey{Proto: control.UDP, Addr: vip, Port: 53}, Sched: "rr", OnePacket: true}}},
		{[]string{"-A", "--sctp-service", "198.18.0.100:5000", "-s", "rr"},
			view{Cmd: cmdAdd, Svc: svc(control.ServiceKey{Proto: control.SCTP, Addr: vip, Port: 5000}, "rr")}},
		{[]string{"-A", "-f", "1", "-s", "sh", "-b", "sh-port,sh-fallback"},
			view{Cmd: cmdAdd, Svc: control.Service{ServiceKey: control.ServiceKey{FWMark: 1}, Sched: "sh", Flags: []string{"sh-fallback", "sh-port"}}}},
		{[]string{"-A", "-f", "1", "-b", "flag-3", "-s", "rr"},
			view{Cmd: cmdAdd, Svc: control.Service{ServiceKey: control.ServiceKey{FWMark: 1}, Sched: "rr", Flags: []string{"flag-3"}}}},
		{[]string{"-A", "-f", "2", "-6", "-s", "mh", "-p", "360", "-M", "64", "-b", "mh-port"},
			view{Cmd: cmdAdd, Svc: control.Service{ServiceKey: control.ServiceKey{FWMark: 2, IPv6: true}, Sched: "mh",
				Persistent: true, Timeout: 360, Netmask: 64, Flags: []string{"mh-port"}}}},
		{[]string{"-D", "-t", "198.18.0.100:80"}, view{Cmd: cmdDel, Svc: control.Service{ServiceKey: web}}},
		{[]string{"-a", "-t", "198.18.0.100:80", "-r", "198.18.0.11"}, view{Cmd: cmdAddDest, Svc: control.Service{ServiceKey: web}, Dest: route}},
		{[]string{"-a", "-t", "198.18.0.100:80", "-r", "rs1.example.test:80", "-g", "-w", "1"}, view{Cmd: cmdAddDest, Svc: control.Service{ServiceKey: web}, Dest: route}},
		// Direct routing cannot change the port: ipvsadm silently uses the service's.
		{[]string{"-a", "-t", "198.18.0.100:80", "-r", "198.18.0.11:8080", "-w", "3"},
			view{Cmd: cmdAddDest, Svc: control.Service{ServiceKey: web}, Dest: control.Dest{Addr: rs1, Port: 80, Method: control.Route, Weight: 3}}},
		{[]string{"-a", "-t", "198.18.0.100:80", "-r", "198.18.0.11:8080", "-m", "-w", "0", "-x", "100", "-y", "50"},
			view{Cmd: cmdAddDest, Svc: control.Service{ServiceKey: web}, Dest: control.Dest{Addr: rs1, Port: 8080, Method: control.Masq, Upper: 100, Lower: 50}}},
		{[]string{"--add-server", "--tcp-service", "198.18.0.100:80", "--real-server", "198.18.0.11", "--ipip", "--weight=2", "--tun-type", "ipip"},
			view{Cmd: cmdAddDest, Svc: control.Service{ServiceKey: web}, Dest: control.Dest{Addr: rs1, Port: 80, Method: control.Tunnel, Weight: 2}}},
		{[]string{"-a", "-t", "198.18.0.100:80", "-r", "[2001:db8::11]:80", "-i"},
			view{Cmd: cmdAddDest, Svc: control.Service{ServiceKey: web}, Dest: control.Dest{Addr: netip.MustParseAddr("2001:db8::11"), Port: 80, Method: control.Tunnel, Weight: 1}}},
		{[]string{"-a", "-f", "1", "-r", "198.18.0.11", "-w", "2"},
			view{Cmd: cmdAddDest, Svc: control.Service{ServiceKey: control.ServiceKey{FWMark: 1}}, Dest: control.Dest{Addr: rs1, Method: control.Route, Weight: 2}}},
		{[]string{"-e", "-t", "198.18.0.100:80", "-r", "198.18.0.11:80", "-w", "0"},
			view{Cmd: cmdEditDest, Svc: control.Service{ServiceKey: web}, Dest: control.Dest{Addr: rs1, Port: 80, Method: control.Route}}},
		{[]string{"-d", "-t", "198.18.0.100:80", "-r", "198.18.0.11"}, view{Cmd: cmdDelDest, Svc: control.Service{ServiceKey: web}, Dest: route}},
		{[]string{"--set", "900", "120", "300"}, view{Cmd: cmdTimeout, Timeouts: control.Timeouts{TCP: 900, TCPFin: 120, UDP: 300}}},
		{[]string{"--set", "0", "0", "60"}, view{Cmd: cmdTimeout, Timeouts: control.Timeouts{UDP: 60}}},
		{[]string{"-Z"}, view{Cmd: cmdZero}},
		{[]string{"-Z", "-t", "198.18.0.100:80"}, view{Cmd: cmdZero, Svc: control.Service{ServiceKey: web}}},
		{[]string{"-C"}, view{Cmd: cmdFlush}},
		{[]string{"--clear"}, view{Cmd: cmdFlush}},
		{[]string{"-S", "-n"}, view{Cmd: cmdSave, Format: control.Format{Numeric: true}}},
		{[]string{"-Sn"}, view{Cmd: cmdSave, Format: control.Format{Numeric: true}}},
		{[]string{"-R"}, view{Cmd: cmdRestore}},
		{[]string{"-h"}, view{Cmd: cmdHelp}},
		{[]string{"--version"}, view{Cmd: cmdVersion}},
	}
	for _, c := range cases {
		cl, err := parseArgs(c.args, fakeResolver{})
		if err != nil {
			t.Errorf("parseArgs(%q): %v", c.args, err)
			continue
		}
		if got := viewOf(cl); !reflect.DeepEqual(got, c.want) {
			t.Errorf("parseArgs(%q)\n got %+v\nwant %+v", c.args, got, c.want)
		}
	}
}

func TestParseArgsErrors(t *testing.T) {
	const (
		svcArg = "198.18.0.100:80"
		tryMsg = "Try `xvsadm -h' or 'xvsadm --help' for more information."
	)
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"-n", "-L"}, 255, tryMsg},
		{[]string{"foo"}, 255, tryMsg},
		{[]string{"--bogus"}, 255, tryMsg},
		{[]string{"-q"}, 255, tryMsg},
		{[]string{"-L", "--bogus"}, 255, "--bogus: unknown option"},
		{[]string{"-Lq"}, 255, "-Lq: unknown option"},
		{[]string{"-A", "-t"}, 255, "-t: missing argument"},
		{[]string{"-A", "-t", svcArg, "-s"}, 255, "-s: missing argument"},
		{[]string{"-C", "--clear=1"}, 255, "--clear=1: option does not take an argument"},
		{[]string{"-L", "-A"}, 2, "invalid option `-A'"},
		{[]string{"-L", "-h"}, 2, "invalid option `-h'"},
		{[]string{"-A", "-t", "198.18.0.100"}, 2, "Zero port specified for non-persistent service"},
		{[]string{"-A", "-t", "300.1.1.1:80"}, 2, "illegal virtual server address[:port] specified"},
		{[]string{"-A", "-t", "80"}, 2, "illegal virtual server address[:port] specified"},
		{[]string{"-A", "-t", "198.18.0.100:65536"}, 2, "illegal virtual server address[:port] specified"},
		{[]string{"-A", "-t", "198.18.0.100:nosuch"}, 2, "illegal virtual server address[:port] specified"},
		{[]string{"-A", "-t", "198.18.0.100:"}, 2, "illegal virtual server address[:port] specified"},
		{[]string{"-A", "-t", "[2001:db8::100]80"}, 2, "illegal virtual server address[:port] specified"},
		{[]string{"-A", "-t", "nosuch.example.test:80"}, 2, "illegal virtual server address[:port] specified"},
		{[]string{"-A", "-u", "198.18.0.100:http"}, 2, "illegal virtual server address[:port] specified"},
		{[]string{"-a", "-t", svcArg, "-r", "x"}, 2, "illegal real server address[:port] specified"},
		{[]string{"-a", "-t", svcArg}, 2, "You need to supply the 'real-server' option for the 'add-server' command"},
		{[]string{"-A", "-s", "rr"}, 2, "You need to supply the 'service-address' option for the 'add-service' command"},
		{[]string{"-d", "-r", "198.18.0.11"}, 2, "You need to supply the 'service-address' option for the 'delete-server' command"},
		{[]string{"-L", "-s", "rr"}, 2, "Illegal 'scheduler' option with the 'list' command"},
		{[]string{"-D", "-t", svcArg, "-s", "rr"}, 2, "Illegal 'scheduler' option with the 'delete-service' command"},
		{[]string{"-A", "-t", svcArg, "-x", "5"}, 2, "Illegal 'u-threshold' option with the 'add-service' command"},
		{[]string{"-C", "-n"}, 2, "Illegal 'numeric' option with the 'flush' command"},
		{[]string{"-L", "-c", "--timeout"}, 2, "The option 'timeout' conflicts with the 'connection' option in the 'list' command"},
		{[]string{"-L", "-t", svcArg, "-c"}, 2, "The option 'service-address' conflicts with the 'connection' option in the 'list' command"},
		{[]string{"-L", "-c", "--stats"}, 2, "options conflicts in the list command"},
		{[]string{"-L", "--timeout", "--persistent-conn"}, 2, "options conflicts in the list command"},
		{[]string{"-A", "-t", svcArg, "-s", "rr", "-s", "wrr"}, 2, "multiple 'scheduler' options specified"},
		{[]string{"-Lnn"}, 2, "multiple 'numeric' options specified"},
		{[]string{"-a", "-t", svcArg, "-r", "198.18.0.11", "-m", "-g"}, 2, "multiple 'forwarding-method' options specified"},
		{[]string{"-a", "-t", svcArg, "-r", "198.18.0.11", "-w", "70000"}, 2, "illegal weight specified"},
		{[]string{"-a", "-t", svcArg, "-r", "198.18.0.11", "-w", "abc"}, 2, "illegal weight specified"},
		{[]string{"-a", "-t", svcArg, "-r", "198.18.0.11", "-w", "-1"}, 2, "illegal weight specified"},
		{[]string{"-a", "-t", svcArg, "-r", "198.18.0.11", "-x", "-1"}, 2, "illegal u_threshold specified"},
		{[]string{"-a", "-t", svcArg, "-r", "198.18.0.11", "-y", "x"}, 2, "illegal l_threshold specified"},
		{[]string{"-A", "-t", svcArg, "-p", "0"}, 2, "invalid timeout value `0' specified"},
		{[]string{"-A", "-t", svcArg, "-p", "abc"}, 2, "invalid timeout value `abc' specified"},
		{[]string{"-A", "-t", svcArg, "-p", "2678401"}, 2, "invalid timeout value `2678401' specified"},
		{[]string{"-A", "-f", "0"}, 2, "invalid fwmark value `0' specified"},
		{[]string{"-A", "-f", "4294967296"}, 2, "invalid fwmark value `4294967296' specified"},
		{[]string{"-A", "-t", svcArg, "-M", "255.0.255.0"}, 2, "illegal virtual server persistent mask specified"},
		{[]string{"-A", "-t", "[2001:db8::100]:80", "-M", "129"}, 2, "illegal ipv6 netmask specified"},
		// -M is read by the family known when it is seen, as in ipvsadm.
		{[]string{"-A", "-M", "64", "-t", "[2001:db8::100]:80"}, 2, "illegal virtual server persistent mask specified"},
		{[]string{"-A", "-t", svcArg, "-6"}, 2, "-6 used before -f\n"},
		{[]string{"-A", "-t", svcArg, "-b", "sh-port"}, 2, "incompatible scheduler flag `sh-port'"},
		{[]string{"-A", "-t", svcArg, "-s", "sh", "-b", "bogus"}, 2, "invalid scheduler flag `bogus'"},
		{[]string{"--set", "900", "120"}, 2, "--set option requires 3 timeout values"},
		{[]string{"--set", "900", "120", "x"}, 2, "invalid timeout value `x' specified"},
		{[]string{"--set", "900", "120", "300", "1"}, 2, "unexpected argument 1"},
		{[]string{"-L", "extra"}, 2, "unexpected argument extra"},
		{[]string{"-A", "-t", svcArg, "-o"}, 2, "One-Packet Scheduling is only for UDP virtual services"},
		{[]string{"-a", "-t", svcArg, "-r", "[2001:db8::11]:80"}, 2, "Different address family is allowed only for tunneling servers"},
		{[]string{"-a", "-t", svcArg, "-r", "198.18.0.11", "--tun-type", "ipip"}, 2, "Tunnel options conflict with forward method"},
		{[]string{"-a", "-t", svcArg, "-r", "198.18.0.11", "-i", "--tun-type", "gue"}, 2, "You need to supply the 'tun-port' option for the 'gue' tunnel type"},
		{[]string{"-a", "-t", svcArg, "-r", "198.18.0.11", "-i", "--tun-port", "6080"}, 2, "Illegal 'tun-port' option with the 'ipip' tunnel type"},
		{[]string{"-a", "-t", svcArg, "-r", "198.18.0.11", "-i", "--tun-type", "gre", "--tun-csum", "--tun-nocsum"}, 2,
			"The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gre' tunnel type"},
		{[]string{"-a", "-t", svcArg, "-r", "198.18.0.11", "-i", "--tun-type", "vxlan"}, 2, "illegal tunnel type specified"},
		{[]string{"--start-daemon", "foo"}, 2, "illegal start-daemon parameter specified"},
		{[]string{"--stop-daemon", "foo"}, 2, "illegal start_daemon specified"},
		{[]string{"--start-daemon", "master", "--syncid", "256"}, 2, "illegal syncid specified"},
		{[]string{"--start-daemon", "master", "--mcast-group", "198.18.0.1"}, 2, "invalid IPv4 mcast-group `198.18.0.1'"},
		{[]string{"--start-daemon", "Master"}, 2, "illegal start-daemon parameter specified"},
		{[]string{"--start-daemon"}, 255, tryMsg},
		{[]string{"--start-daemon", "master", "--syncid", "-1"}, 2, "illegal syncid specified"},
		{[]string{"--start-daemon", "master", "--syncid", "x"}, 2, "illegal syncid specified"},
		{[]string{"--start-daemon", "master", "--mcast-group", "ff02::1%eth0"}, 2, "invalid IPv6 mcast-group `ff02::1%eth0'"},
		{[]string{"--start-daemon", "master", "--mcast-group", "::ffff:224.0.0.81"}, 2, "invalid IPv6 mcast-group `::ffff:224.0.0.81'"},
		{[]string{"--start-daemon", "master", "--mcast-group", "2001:db8::1"}, 2, "invalid IPv6 mcast-group `2001:db8::1'"},
		{[]string{"--start-daemon", "master", "--mcast-group", "224.0.0"}, 2, "invalid IPv4 mcast-group `224.0.0'"},
		{[]string{"--start-daemon", "master", "--mcast-port", "0"}, 2, "illegal mcast-port specified"},
		{[]string{"--start-daemon", "master", "--mcast-port", "65536"}, 2, "illegal mcast-port specified"},
		{[]string{"--start-daemon", "master", "--mcast-ttl", "256"}, 2, "illegal mcast-ttl specified"},
		{[]string{"--start-daemon", "master", "--mcast-ttl", "0"}, 2, "illegal mcast-ttl specified"},
		{[]string{"--start-daemon", "master", "--sync-maxlen", "65508"}, 2, "illegal sync-maxlen specified"},
		{[]string{"--start-daemon", "master", "--sync-maxlen", "0"}, 2, "illegal sync-maxlen specified"},
		{[]string{"--start-daemon", "master", "--syncid", "1", "--syncid", "2"}, 2, "multiple 'syncid' options specified"},
		{[]string{"--start-daemon", "master", "--mcast-interface", "eth0", "--mcast-interface", "eth1"}, 2, "multiple 'mcast-interface' options specified"},
		{[]string{"--start-daemon", "master", "-n"}, 2, "Illegal 'numeric' option with the 'start-daemon' command"},
		{[]string{"--start-daemon", "master", "--daemon"}, 2, "Illegal 'daemon' option with the 'start-daemon' command"},
		{[]string{"--start-daemon", "master", "extra"}, 2, "unexpected argument extra"},
		{[]string{"--start-daemon", "master", "--stop-daemon", "master"}, 2, "invalid option `--stop-daemon'"},
		{[]string{"--stop-daemon", "master", "--mcast-interface", "eth0"}, 2, "Illegal 'mcast-interface' option with the 'stop-daemon' command"},
		{[]string{"--stop-daemon", "backup", "--mcast-port", "9000"}, 2, "Illegal 'mcast-port' option with the 'stop-daemon' command"},
		{[]string{"-L", "--daemon", "--stats"}, 2, "options conflicts in the list command"},
		{[]string{"-L", "--daemon", "-c"}, 2, "The option 'daemon' conflicts with the 'connection' option in the 'list' command"},
		{[]string{"-L", "--daemon", "--timeout"}, 2, "The option 'daemon' conflicts with the 'timeout' option in the 'list' command"},
		{[]string{"-L", "--daemon", "--mcast-interface", "eth0"}, 2, "Illegal 'mcast-interface' option with the 'list' command"},
		{[]string{"-S", "-c"}, 2, "Illegal 'connection' option with the 'save' command"},
	}
	for _, c := range cases {
		_, err := parseArgs(c.args, fakeResolver{})
		xe, ok := err.(*exitError)
		if !ok {
			t.Errorf("parseArgs(%q) = %v, want exit %d %q", c.args, err, c.code, c.msg)
			continue
		}
		if xe.code != c.code || xe.msg != c.msg {
			t.Errorf("parseArgs(%q) = exit %d %q, want exit %d %q", c.args, xe.code, xe.msg, c.code, c.msg)
		}
	}
}

func FuzzParseArgs(f *testing.F) {
	seeds := [][]string{
		{"-Ln"}, {"-Lnc"}, {"-A", "-t", "198.18.0.100:80", "-s", "wrr", "-p"},
		{"-a", "-t", "[2001:db8::100]:80", "-r", "[2001:db8::11]:80", "-m", "-w", "3"},
		{"--set", "900", "120", "300"}, {"-A", "-f", "1", "-6", "-M", "64", "-b", "sh-port"},
		{"-a", "-t", "198.18.0.100:80", "-r", "198.18.0.11", "-i", "--tun-type", "gue", "--tun-port", "1"},
		{"--start-daemon", "master", "--mcast-interface", "eth0", "--syncid", "1", "--sync-maxlen", "1472",
			"--mcast-group", "224.0.0.81", "--mcast-port", "8848", "--mcast-ttl", "1"},
		{"--stop-daemon", "backup"}, {"-L", "--daemon"},
	}
	for _, s := range seeds {
		f.Add(joinNUL(s))
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := splitNUL(s)
		cl, err := parseArgs(args, fakeResolver{})
		if err != nil {
			if _, ok := err.(*exitError); !ok {
				t.Fatalf("parseArgs(%q): error %T %v, want *exitError", args, err, err)
			}
			return
		}
		// Whatever parses as a service command names a valid service,
		// and a start-daemon command is one xvsd's checks accept.
		switch cl.cmd {
		case cmdStartDaemon:
			if err := cl.sync.Validate(); err != nil {
				t.Fatalf("parseArgs(%q): accepted invalid daemon settings: %v", args, err)
			}
		case cmdAdd, cmdEdit, cmdDel, cmdAddDest, cmdEditDest, cmdDelDest:
			if err := cl.svc.ServiceKey.Validate(); err != nil {
				t.Fatalf("parseArgs(%q): accepted invalid service: %v", args, err)
			}
		}
	})
}

func joinNUL(args []string) string {
	s := ""
	for i, a := range args {
		if i > 0 {
			s += "\x00"
		}
		s += a
	}
	return s
}

func splitNUL(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func TestLegalTable(t *testing.T) {
	for cmd, row := range legal {
		if len(row) != int(numOpts) {
			t.Errorf("legal[%s] has %d columns, want %d", cmdNames[cmd], len(row), numOpts)
		}
		if strings.Trim(row, "x+1 ") != "" {
			t.Errorf("legal[%s] = %q: unknown rule character", cmdNames[cmd], row)
		}
	}
}

func BenchmarkParseArgs(b *testing.B) {
	args := []string{"-a", "-t", "198.18.0.100:80", "-r", "198.18.0.11:80", "-g", "-w", "1"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseArgs(args, fakeResolver{}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestParseDaemon: --start-daemon and --stop-daemon with their options,
// as ipvsadm reads them; an interface left out is ipvsadm's eth0.
func TestParseDaemon(t *testing.T) {
	g4, g6 := netip.MustParseAddr("224.0.0.81"), netip.MustParseAddr("ff02::8848")
	cases := []struct {
		args []string
		cmd  cmdKind
		want control.SyncDaemon
	}{
		{[]string{"--start-daemon", "master"}, cmdStartDaemon, control.SyncDaemon{Role: control.SyncMaster, Interface: "eth0"}},
		{[]string{"--start-daemon=backup", "--mcast-interface=eth1"}, cmdStartDaemon, control.SyncDaemon{Role: control.SyncBackup, Interface: "eth1"}},
		{[]string{"--start-daemon", "master", "--mcast-interface", ""}, cmdStartDaemon, control.SyncDaemon{Role: control.SyncMaster, Interface: "eth0"}},
		{[]string{"--start-daemon", "master", "--syncid", "2", "--mcast-interface", "ens18"}, cmdStartDaemon,
			control.SyncDaemon{Role: control.SyncMaster, Interface: "ens18", SyncID: 2}},
		{[]string{"--start-daemon", "backup", "--mcast-interface", "eth0", "--syncid", "255", "--sync-maxlen", "8952",
			"--mcast-group", "224.0.0.81", "--mcast-port", "9000", "--mcast-ttl", "2"}, cmdStartDaemon,
			control.SyncDaemon{Role: control.SyncBackup, Interface: "eth0", SyncID: 255, MaxLen: 8952, Group: g4, Port: 9000, TTL: 2}},
		{[]string{"--start-daemon", "master", "--mcast-group", "ff02::8848", "--sync-maxlen", "65507"}, cmdStartDaemon,
			control.SyncDaemon{Role: control.SyncMaster, Interface: "eth0", MaxLen: 65507, Group: g6}},
		{[]string{"--start-daemon", "master", "--syncid", "0"}, cmdStartDaemon, control.SyncDaemon{Role: control.SyncMaster, Interface: "eth0"}},
		{[]string{"--stop-daemon", "backup"}, cmdStopDaemon, control.SyncDaemon{Role: control.SyncBackup}},
		// ipvsadm accepts (and the kernel ignores) a syncid on stop.
		{[]string{"--stop-daemon", "master", "--syncid", "3"}, cmdStopDaemon, control.SyncDaemon{Role: control.SyncMaster, SyncID: 3}},
	}
	for _, c := range cases {
		cl, err := parseArgs(c.args, fakeResolver{})
		if err != nil {
			t.Errorf("parseArgs(%q): %v", c.args, err)
			continue
		}
		if cl.cmd != c.cmd || cl.sync != c.want {
			t.Errorf("parseArgs(%q) = %s %+v, want %s %+v", c.args, cmdNames[cl.cmd], cl.sync, cmdNames[c.cmd], c.want)
		}
	}
	for _, args := range [][]string{{"-L", "--daemon"}, {"-Ln", "--daemon"}, {"-l", "--daemon"}, {"--list", "--daemon", "--numeric"}} {
		cl, err := parseArgs(args, fakeResolver{})
		if err != nil || cl.cmd != cmdList || !cl.opts[optDaemon] {
			t.Errorf("parseArgs(%q) = %+v, %v; want a daemon listing", args, cl, err)
		}
	}
}
