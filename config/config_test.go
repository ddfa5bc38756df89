package config

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/golden")

// corpusFiles lists the top-level configs of the corpus (the include
// tree is entered through include/keepalived.conf).
func corpusFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/corpus/*.conf")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "testdata/corpus/include/keepalived.conf")
	slices.Sort(files)
	return files
}

func golden(t *testing.T, got string) {
	t.Helper()
	path := filepath.Join("testdata", "golden", filepath.FromSlash(t.Name())+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./config -run %s -update)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update to accept):\n%s", path, diffLines(string(want), got))
	}
}

// diffLines shows the first differing line, enough to find the change.
func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n  want: " + wl + "\n  got:  " + gl
		}
	}
	return "(no line differs)"
}

// TestCorpus loads every tutorial-style config: none may have errors,
// and the model plus diagnostics must match the golden file.
func TestCorpus(t *testing.T) {
	for _, f := range corpusFiles(t) {
		name := strings.TrimPrefix(filepath.ToSlash(f), "testdata/corpus/")
		t.Run(strings.ReplaceAll(name, "/", "_"), func(t *testing.T) {
			cfg, diags, err := Load(f)
			if err != nil {
				t.Fatalf("Load(%s): %v", f, err)
			}
			golden(t, Dump(cfg)+"--- diagnostics\n"+diags.String())
		})
	}
}

// TestDeterministic parses every corpus file twice and compares dumps.
func TestDeterministic(t *testing.T) {
	for _, f := range corpusFiles(t) {
		a, _, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		b, _, _ := Load(f)
		if Dump(a) != Dump(b) {
			t.Errorf("%s: two loads differ", f)
		}
	}
}

// TestFlatEqualsLines checks that a tutorial's one-line form and the same
// config one keyword per line give the same model (positions aside).
func TestFlatEqualsLines(t *testing.T) {
	flat := `vrrp_script chk_nginx { script "killall -0 nginx" interval 2 weight -10 fall 2 rise 2 }
vrrp_instance VI_1 { state MASTER interface eth0 virtual_router_id 51 priority 100 advert_int 1 authentication { auth_type PASS auth_pass 1111 } virtual_ipaddress { 198.18.0.100 198.18.0.101/24 dev eth0 } track_script { chk_nginx } notify_master "/bin/n.sh master" }
virtual_server 198.18.0.100 80 { delay_loop 6 lb_algo wrr lb_kind DR persistence_timeout 50 protocol TCP real_server 198.18.0.11 80 { weight 3 TCP_CHECK { connect_timeout 10 nb_get_retry 3 delay_before_retry 3 connect_port 80 } } }
`
	lines := `vrrp_script chk_nginx {
  script "killall -0 nginx"
  interval 2
  weight -10
  fall 2
  rise 2
}
vrrp_instance VI_1 {
  state MASTER
  interface eth0
  virtual_router_id 51
  priority 100
  advert_int 1
  authentication {
    auth_type PASS
    auth_pass 1111
  }
  virtual_ipaddress {
    198.18.0.100
    198.18.0.101/24 dev eth0
  }
  track_script {
    chk_nginx
  }
  notify_master "/bin/n.sh master"
}
virtual_server 198.18.0.100 80 {
  delay_loop 6
  lb_algo wrr
  lb_kind DR
  persistence_timeout 50
  protocol TCP
  real_server 198.18.0.11 80 {
    weight 3
    TCP_CHECK {
      connect_timeout 10
      nb_get_retry 3
      delay_before_retry 3
      connect_port 80
    }
  }
}
`
	a, da := ParseBytes("x.conf", []byte(flat))
	b, db := ParseBytes("x.conf", []byte(lines))
	if len(da) != 0 || len(db) != 0 {
		t.Fatalf("diagnostics: flat:\n%slines:\n%s", da, db)
	}
	strip := func(s string) string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "Pos:") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	if sa, sb := strip(Dump(a)), strip(Dump(b)); sa != sb {
		t.Errorf("flat and multi-line differ:\n%s", diffLines(sb, sa))
	}
}

// TestModel checks typed values the other packages rely on.
func TestModel(t *testing.T) {
	cfg, diags, err := Load("testdata/corpus/master_dr.conf")
	if err != nil {
		t.Fatalf("%v\n%s", err, diags)
	}
	if got, want := len(cfg.Instances), 1; got != want {
		t.Fatalf("instances = %d, want %d", got, want)
	}
	vi := cfg.Instances[0]
	if vi.Name != "VI_1" || vi.State != "MASTER" || vi.Interface != "eth0" || vi.VirtualRouterID != 51 ||
		vi.Priority != 100 || vi.AdvertInt != time.Second {
		t.Errorf("instance = %+v", vi)
	}
	if want := netip.MustParsePrefix("198.18.0.100/32"); vi.VirtualIPAddresses[0].Prefix != want {
		t.Errorf("vip = %v, want %v", vi.VirtualIPAddresses[0].Prefix, want)
	}
	if vi.Auth == nil || vi.Auth.Type != "PASS" || vi.Auth.Pass != "1111" {
		t.Errorf("auth = %+v", vi.Auth)
	}
	vs := cfg.VirtualServers[0]
	if got, want := vs.Key(), "TCP 198.18.0.100:80"; got != want {
		t.Errorf("Key() = %q, want %q", got, want)
	}
	if vs.Scheduler != "wrr" || vs.Method != MethodDR || !vs.Persistent || vs.PersistenceTimeout != 50*time.Second ||
		vs.DelayLoop != 6*time.Second {
		t.Errorf("vs = %+v", vs)
	}
	if len(vs.RealServers) != 2 {
		t.Fatalf("real servers = %d", len(vs.RealServers))
	}
	rs := vs.RealServers[1]
	if rs.Addr != netip.MustParseAddr("198.18.0.12") || rs.Port != 80 || rs.Weight != 3 {
		t.Errorf("rs = %+v", rs)
	}
	ck := rs.Checkers[0]
	want := Checker{Pos: ck.Pos, Type: TCPCheck, ConnectPort: 80, ConnectTimeout: 10 * time.Second,
		Retry: 3, DelayBeforeRetry: 3 * time.Second, DelayLoop: 6 * time.Second}
	if *ck != want {
		t.Errorf("checker = %+v\nwant      %+v", *ck, want)
	}
	if got, want := ck.Pos, (Pos{File: "testdata/corpus/master_dr.conf", Line: 46}); got != want {
		t.Errorf("checker pos = %v, want %v", got, want)
	}
}

// TestRestOfLine checks where unquoted script lines end: at the end of
// the line, or at the next keyword when the statement shares its line.
func TestRestOfLine(t *testing.T) {
	conf := "vrrp_instance V {\n notify /bin/notify.sh state\n notify_master /bin/m.sh master\n}\n" +
		"vrrp_instance W { notify_backup /bin/b.sh backup notify_fault /bin/f.sh fault state BACKUP }\n"
	cfg, diags := ParseBytes("t.conf", []byte(conf))
	if len(diags) != 0 {
		t.Fatalf("diagnostics:\n%s", diags)
	}
	got := []string{cfg.Instances[0].Notify.Any, cfg.Instances[0].Notify.Master,
		cfg.Instances[1].Notify.Backup, cfg.Instances[1].Notify.Fault, cfg.Instances[1].State}
	want := []string{"/bin/notify.sh state", "/bin/m.sh master", "/bin/b.sh backup", "/bin/f.sh fault", "BACKUP"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestLookups(t *testing.T) {
	cfg, _, err := Load("testdata/corpus/dual_master.conf")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr string
		want string
	}{
		{"198.19.8.100", "VI_1"},
		{"198.19.8.101", "VI_2"},
		{"198.19.8.102", ""},
	}
	for _, tt := range tests {
		got := ""
		if vi := cfg.InstanceFor(netip.MustParseAddr(tt.addr)); vi != nil {
			got = vi.Name
		}
		if got != tt.want {
			t.Errorf("InstanceFor(%s) = %q, want %q", tt.addr, got, tt.want)
		}
	}
	fw, _, err := Load("testdata/corpus/fwmark.conf")
	if err != nil {
		t.Fatal(err)
	}
	if g := fw.ServerGroup("web"); g == nil || len(g.Entries) != 3 {
		t.Errorf("ServerGroup(web) = %+v", g)
	}
	if g := fw.ServerGroup("nope"); g != nil {
		t.Errorf("ServerGroup(nope) = %+v, want nil", g)
	}
}

func TestKeys(t *testing.T) {
	tests := []struct {
		vs   VirtualServer
		want string
	}{
		{VirtualServer{Protocol: "TCP", Addr: netip.MustParseAddr("198.18.0.100"), Port: 80}, "TCP 198.18.0.100:80"},
		{VirtualServer{Protocol: "UDP", Addr: netip.MustParseAddr("2001:db8::1"), Port: 53}, "UDP [2001:db8::1]:53"},
		{VirtualServer{Protocol: "TCP", FWMark: 7}, "FWM 7"},
		{VirtualServer{Protocol: "TCP", Group: "web"}, "GROUP web"},
	}
	for _, tt := range tests {
		if got := tt.vs.Key(); got != tt.want {
			t.Errorf("Key() = %q, want %q", got, tt.want)
		}
	}
}

func TestParseSeconds(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1", time.Second, true},
		{"0", 0, true},
		{"0.5", 500 * time.Millisecond, true},
		{"2.25", 2250 * time.Millisecond, true},
		{".5", 500 * time.Millisecond, true},
		{"3.", 3 * time.Second, true},
		{"0.000001", time.Microsecond, true},
		{"0.0000001", 0, false},
		{"-1", 0, false},
		{"1e3", 0, false},
		{"", 0, false},
		{".", 0, false},
		{"99999999999", 0, false},
		{"inf", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSeconds(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSeconds(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// TestErrors checks the exact diagnostics for broken files.
func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		conf string
		want string // Diagnostics.String() of parse + validate
	}{
		{"priority out of range", "vrrp_instance V {\n interface eth0\n virtual_router_id 1\n priority 300\n virtual_ipaddress {\n 198.18.0.1\n }\n}\n",
			"t.conf:4: priority 300: out of range 1..255\n"},
		{"vrid missing and bad state", "vrrp_instance V {\n state PRIMARY\n interface eth0\n virtual_ipaddress { 198.18.0.1 }\n}\n",
			"t.conf:2: state PRIMARY: expected MASTER or BACKUP\nt.conf:1: vrrp_instance V: missing virtual_router_id\n"},
		{"unknown keyword is a warning", "global_defs {\n router_id a\n lvs_flush\n frobnicate 1 2 { x }\n}\n",
			"t.conf:3: warning: unknown keyword \"lvs_flush\" ignored\nt.conf:4: warning: unknown keyword \"frobnicate\" ignored\n"},
		{"missing close brace", "virtual_server 198.18.0.1 80 {\n lb_algo rr\n",
			"t.conf:1: virtual_server: missing '}' to close the block opened here\nt.conf:1: warning: virtual_server TCP 198.18.0.1:80: no real_server\n"},
		{"bad granularity", "virtual_server fwmark 1 {\n persistence_granularity 255.0.255.0\n real_server 198.18.0.2 {\n }\n}\n",
			"t.conf:2: persistence_granularity 255.0.255.0: not a contiguous netmask\n"},
		{"global values", "global_defs {\n vrrp_mcast_group4 198.18.0.1\n vrrp_mcast_group6 ff02::12x\n vrrp_version 4\n lvs_timeouts tcp 10 fin 3 udp\n smtp_server 192.0.2.1 0\n smtp_connect_timeout 0\n}\n",
			"t.conf:2: vrrp_mcast_group4 198.18.0.1: not an IPv4 multicast address\n" +
				"t.conf:3: vrrp_mcast_group6 ff02::12x: not an IP address\n" +
				"t.conf:4: vrrp_version 4: out of range 2..3\n" +
				"t.conf:5: lvs_timeouts: unknown timeout \"fin\" (tcp, tcpfin, udp)\n" +
				"t.conf:5: lvs_timeouts udp: missing value\n" +
				"t.conf:6: smtp_server 0: not a port (1..65535)\n" +
				"t.conf:7: smtp_connect_timeout 0: must be more than 0\n"},
		{"instance values", "vrrp_instance V {\n interface eth0\n virtual_router_id 256\n advert_int 0.005\n preempt_delay 2000\n smtp_alert maybe\n authentication {\n  auth_type MD5\n }\n unicast_peer {\n  198.18.0.999\n  198.18.0.3 min_ttl 1 colour red\n }\n virtual_ipaddress {\n  198.18.0.1/33\n  198.18.0.2 brd x\n  198.18.0.3 dev\n  198.18.0.4 shiny\n }\n track_interface {\n  eth1 weight 300\n }\n}\n",
			"t.conf:3: virtual_router_id 256: out of range 1..255\n" +
				"t.conf:4: advert_int 0.005: VRRP counts in centiseconds\n" +
				"t.conf:5: preempt_delay 2000: out of range 0..1000\n" +
				"t.conf:6: smtp_alert maybe: expected on or off\n" +
				"t.conf:8: auth_type MD5: expected PASS or AH\n" +
				"t.conf:11: unicast_peer 198.18.0.999: not an IP address\n" +
				"t.conf:12: warning: unicast_peer 198.18.0.3: unknown option \"colour\" ignored\n" +
				"t.conf:12: warning: unicast_peer 198.18.0.3: unknown option \"red\" ignored\n" +
				"t.conf:15: address 198.18.0.1/33: not an address/prefix\n" +
				"t.conf:16: address 198.18.0.2: brd x: not an IP address\n" +
				"t.conf:17: address 198.18.0.3: dev: missing value\n" +
				"t.conf:18: warning: address 198.18.0.4: unknown option \"shiny\" ignored\n" +
				"t.conf:21: eth1: weight 300: not an integer in -254..254\n" +
				"t.conf:1: vrrp_instance V: missing virtual_router_id\n" +
				"t.conf:7: vrrp_instance V: authentication: missing auth_type\n"},
		{"service values", "virtual_server_group g {\n 198.18.0.9-3 80\n fwmark x\n 198.18.0.1\n}\nvirtual_server 198.18.0.1 80 {\n protocol ICMP\n ip_family inet5\n sorry_server 198.18.0.5 http\n quorum 0\n real_server 198.18.0.2 80 {\n  uthreshold 10\n  lthreshold 20\n  HTTP_GET {\n   http_protocol 2\n   url {\n    status_code 99 300-200 204\n   }\n  }\n  DNS_CHECK {\n   type PTR\n  }\n  UDP_CHECK {\n   payload xyz\n  }\n }\n}\n",
			"t.conf:2: virtual_server_group g: 198.18.0.9-3: bad range end \"3\"\n" +
				"t.conf:3: virtual_server_group g: fwmark x: not a mark (1..4294967295)\n" +
				"t.conf:4: virtual_server_group g: 198.18.0.1: missing port\n" +
				"t.conf:7: protocol ICMP: expected TCP, UDP or SCTP\n" +
				"t.conf:8: ip_family inet5: expected inet or inet6\n" +
				"t.conf:9: sorry_server http: not a port (1..65535)\n" +
				"t.conf:10: quorum 0: out of range 1..2147483647\n" +
				"t.conf:15: http_protocol 2: expected 1.0, 1.0C, 1.0K or 1.1\n" +
				"t.conf:17: status_code 99: not an HTTP status code (100..999)\n" +
				"t.conf:17: status_code 300-200: bad range end\n" +
				"t.conf:21: type PTR: expected A, NS, CNAME, SOA, MX, TXT or AAAA\n" +
				"t.conf:24: payload xyz: not hex\n" +
				"t.conf:1: warning: virtual_server_group g: empty\n" +
				"t.conf:11: real_server 198.18.0.2:80: lthreshold 20 above uthreshold 10\n" +
				"t.conf:16: real_server 198.18.0.2:80: HTTP_GET: url: missing path\n"},
		{"vip in two instances", "vrrp_instance A {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n  198.18.0.100\n }\n}\nvrrp_instance B {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n  198.18.0.100/24\n }\n}\n",
			"t.conf:8: vrrp_instance B: virtual_router_id 1 on eth0 already used by A (t.conf:1)\n" +
				"t.conf:12: vrrp_instance B: virtual_ipaddress 198.18.0.100 already in vrrp_instance A (t.conf:1)\n"},
		{"port 0 without persistence", "virtual_server 198.18.0.1 0 {\n real_server 198.18.0.2 {\n }\n}\nvirtual_server 198.18.0.1 x {\n}\n",
			"t.conf:5: virtual_server 198.18.0.1 x: not a port (0..65535)\nt.conf:1: virtual_server TCP 198.18.0.1:0: port 0 (every port) needs persistence_timeout\n"},
		{"stray close brace", "}\n", "t.conf:1: unexpected '}'\n"},
		{"bad vip", "virtual_server 198.18.0.300 80 {\n}\n",
			"t.conf:1: virtual_server 198.18.0.300: not an IP address, fwmark or group\n"},
		{"bad port and lb_kind", "virtual_server 198.18.0.1 80 {\n lb_kind FOO\n real_server 198.18.0.2 99999 {\n }\n}\n",
			"t.conf:2: lb_kind FOO: expected NAT, DR or TUN\nt.conf:3: real_server 198.18.0.2 99999: not a port (1..65535)\nt.conf:1: warning: virtual_server TCP 198.18.0.1:80: no real_server\n"},
		{"weight range", "virtual_server 198.18.0.1 80 {\n real_server 198.18.0.2 80 {\n  weight 70000\n }\n}\n",
			"t.conf:3: weight 70000: out of range 0..65535\n"},
		{"missing argument", "virtual_server 198.18.0.1 80 {\n delay_loop\n real_server 198.18.0.2 80 {\n }\n}\n",
			"t.conf:2: delay_loop: missing argument\n"},
		{"http_get without url", "virtual_server 198.18.0.1 80 {\n real_server 198.18.0.2 80 {\n  HTTP_GET {\n   connect_timeout 3\n  }\n }\n}\n",
			"t.conf:3: real_server 198.18.0.2:80: HTTP_GET: missing url { path ... }\n"},
		{"bad digest", "virtual_server 198.18.0.1 443 {\n real_server 198.18.0.2 443 {\n  SSL_GET {\n   url {\n    path /\n    digest xyz\n   }\n  }\n }\n}\n",
			"t.conf:6: digest xyz: not an MD5 digest (32 hex digits)\n"},
		{"unknown scheduler", "virtual_server 198.18.0.1 80 {\n lb_algo fastest\n real_server 198.18.0.2 80 {\n }\n}\n",
			"t.conf:1: virtual_server TCP 198.18.0.1:80: unknown scheduler \"fastest\"\n"},
		{"duplicate services", "virtual_server 198.18.0.1 80 {\n real_server 198.18.0.2 80 {\n }\n}\nvirtual_server 198.18.0.1 80 {\n real_server 198.18.0.2 80 {\n }\n real_server 198.18.0.2 80 {\n }\n}\n",
			"t.conf:5: virtual_server TCP 198.18.0.1:80: defined twice (first at t.conf:1)\n"},
		{"duplicate real server", "virtual_server 198.18.0.1 80 {\n real_server 198.18.0.2 80 {\n }\n real_server 198.18.0.2 80 {\n }\n}\n",
			"t.conf:4: real_server 198.18.0.2:80: defined twice in virtual_server TCP 198.18.0.1:80 (first at t.conf:2)\n"},
		{"sync group member missing", "vrrp_sync_group G {\n group {\n  A\n }\n}\n",
			"t.conf:1: vrrp_sync_group G: no vrrp_instance A\n"},
		{"unknown group", "virtual_server group nope {\n real_server 198.18.0.2 80 {\n }\n}\n",
			"t.conf:1: virtual_server group nope: no virtual_server_group of that name\n"},
		{"fractional advert v2", "vrrp_instance V {\n interface eth0\n virtual_router_id 9\n advert_int 0.5\n virtual_ipaddress {\n 198.18.0.1\n }\n}\n",
			"t.conf:1: vrrp_instance V: advert_int 500ms: VRRPv2 needs whole seconds (use version 3)\n"},
		{"unterminated quote", "vrrp_script s {\n script \"killall -0 nginx\n}\n",
			"t.conf:2: unterminated quoted string\nt.conf:1: warning: scripts are configured but global_defs has no enable_script_security\n"},
		{"missing open brace", "vrrp_instance V\n interface eth0\n",
			"t.conf:1: vrrp_instance: missing '{'\nt.conf:2: warning: unknown keyword \"interface\" ignored\n"},
		{"block after plain keyword", "global_defs {\n router_id a { b }\n}\n",
			"t.conf:2: router_id: takes no block\n"},
		{"include no match is a warning", "include /nonexistent/*.conf\n",
			"t.conf:1: warning: include /nonexistent/*.conf: no file matches\n"},
		{"track_script unknown", "vrrp_instance V {\n interface eth0\n virtual_router_id 9\n track_script {\n  nope weight 5\n }\n virtual_ipaddress {\n 198.18.0.1\n }\n}\n",
			"t.conf:5: warning: track_script nope: no vrrp_script of that name, ignored\n"},
		{"checker key of another checker", "virtual_server 198.18.0.1 80 {\n real_server 198.18.0.2 80 {\n  TCP_CHECK {\n   misc_path /bin/true\n  }\n }\n}\n",
			"t.conf:4: warning: TCP_CHECK: keyword \"misc_path\" does not apply, ignored\n"},
		{"case warning", "virtual_server 198.18.0.1 80 {\n LB_ALGO rr\n real_server 198.18.0.2 80 {\n }\n}\n",
			"t.conf:2: warning: keyword \"LB_ALGO\" should be written \"lb_algo\"\n"},
		{"lvs_sync_daemon values", "global_defs {\n lvs_sync_daemon eth0 VI_1 id 300 maxlen 0 port x ttl 256 group 198.18.0.1 colour red\n}\n",
			"t.conf:2: lvs_sync_daemon id 300: not an integer in 0..255\n" +
				"t.conf:2: lvs_sync_daemon maxlen 0: not an integer in 1..65507\n" +
				"t.conf:2: lvs_sync_daemon port x: not an integer in 1..65535\n" +
				"t.conf:2: lvs_sync_daemon ttl 256: not an integer in 1..255\n" +
				"t.conf:2: lvs_sync_daemon group 198.18.0.1: not a multicast address\n" +
				"t.conf:2: lvs_sync_daemon: unknown option \"colour\" (id, maxlen, port, ttl, group, inst)\n" +
				"t.conf:2: lvs_sync_daemon: unknown option \"red\" (id, maxlen, port, ttl, group, inst)\n" +
				"t.conf:2: lvs_sync_daemon: no vrrp_instance VI_1\n"},
		{"lvs_sync_daemon twice, missing value, long name", "global_defs {\n lvs_sync_daemon eth0 id\n lvs_sync_daemon eth1\n}\nglobal_defs {\n}\n",
			"t.conf:2: lvs_sync_daemon id: missing value\nt.conf:3: lvs_sync_daemon: already given at t.conf:2\n"},
		{"lvs_sync_daemon positional syncid and a legacy interface", "global_defs {\n lvs_sync_daemon averyveryverylongname0 V 7\n}\nvrrp_instance V {\n interface eth0\n virtual_router_id 9\n lvs_sync_daemon_interface eth1\n virtual_ipaddress {\n 198.18.0.1\n }\n}\n",
			"t.conf:2: lvs_sync_daemon averyveryverylongname0: interface name too long\n" +
				"t.conf:2: warning: lvs_sync_daemon 7: write the sync ID as \"id 7\"\n" +
				"t.conf:4: warning: vrrp_instance V: lvs_sync_daemon_interface ignored, global_defs has lvs_sync_daemon (t.conf:2)\n"},
		{"family mix", "virtual_server 198.18.0.1 80 {\n real_server 2001:db8::2 80 {\n }\n}\n",
			"t.conf:2: real_server [2001:db8::2]:80: address family differs from virtual_server TCP 198.18.0.1:80 (only TUN can mix)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, diags := ParseBytes("t.conf", []byte(tt.conf))
			diags = append(diags, Validate(cfg)...)
			if got := diags.String(); got != tt.want {
				t.Errorf("diagnostics:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// TestSyncDaemon: the effective sync daemon settings from each way of
// writing them.
func TestSyncDaemon(t *testing.T) {
	inst := "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n%s virtual_ipaddress {\n 198.18.0.100\n }\n}\n"
	tests := []struct {
		name, conf string
		want       *LVSSyncDaemon // Pos not compared
	}{
		{"none", fmt.Sprintf(inst, ""), nil},
		{"global, sync ID from the instance's vrid", "global_defs {\n lvs_sync_daemon eth1 VI_1\n}\n" + fmt.Sprintf(inst, ""),
			&LVSSyncDaemon{Interface: "eth1", Instance: "VI_1", SyncID: 51}},
		{"global with options", "global_defs {\n lvs_sync_daemon eth1 inst VI_1 id 0 port 9000 ttl 2 maxlen 1200 group ff02::8:81\n}\n" + fmt.Sprintf(inst, ""),
			&LVSSyncDaemon{Interface: "eth1", Instance: "VI_1", SyncID: 0, Port: 9000, TTL: 2, MaxLen: 1200, Group: netip.MustParseAddr("ff02::8:81")}},
		{"no instance: both roles, sync ID 0", "global_defs {\n lvs_sync_daemon eth1\n}\n",
			&LVSSyncDaemon{Interface: "eth1"}},
		{"legacy per-instance interface", fmt.Sprintf(inst, " lvs_sync_daemon_interface eth2\n"),
			&LVSSyncDaemon{Interface: "eth2", Instance: "VI_1", SyncID: 51}},
		{"global wins over legacy", "global_defs {\n lvs_sync_daemon eth1 VI_1 id 3\n}\n" + fmt.Sprintf(inst, " lvs_sync_daemon_interface eth2\n"),
			&LVSSyncDaemon{Interface: "eth1", Instance: "VI_1", SyncID: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, diags := ParseBytes("t.conf", []byte(tt.conf))
			if diags.HasErrors() {
				t.Fatalf("diagnostics: %s", diags)
			}
			got := cfg.SyncDaemon()
			if got != nil {
				got.Pos = Pos{}
			}
			if (got == nil) != (tt.want == nil) || (got != nil && *got != *tt.want) {
				t.Errorf("SyncDaemon() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestLoadError checks that Load refuses a bad file with file:line in the
// error and wraps ErrInvalid.
func TestLoadError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(path, []byte("vrrp_instance V {\n priority 0\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := Load(path)
	if err == nil {
		t.Fatal("Load accepted priority 0")
	}
	if !strings.Contains(err.Error(), path+":2: priority 0: out of range 1..255") {
		t.Errorf("error %q lacks file:line", err)
	}
	var inv *InvalidError
	if !asInvalid(err, &inv) || len(inv.Errors) == 0 {
		t.Errorf("error %T is not an *InvalidError", err)
	}
	if _, _, err := Load(filepath.Join(dir, "missing.conf")); err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("Load(missing) = %v, want a not-exist error", err)
	}
}

func asInvalid(err error, target **InvalidError) bool {
	e, ok := err.(*InvalidError)
	if ok {
		*target = e
	}
	return ok
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

// TestIncludeFS exercises includes inside an fs.FS: relative to the
// including file, sorted glob order, and loop detection.
func TestIncludeFS(t *testing.T) {
	fsys := fstest.MapFS{
		"etc/k.conf":           {Data: []byte("include conf.d/*.conf\n")},
		"etc/conf.d/b.conf":    {Data: []byte("vrrp_script b {\n script /bin/b\n}\n")},
		"etc/conf.d/a.conf":    {Data: []byte("vrrp_script a { script /bin/a }\ninclude ../loop.inc\n")},
		"etc/loop.inc":         {Data: []byte("include conf.d/a.conf\n")},
		"etc/conf.d/c.conf.no": {Data: []byte("garbage {\n")},
	}
	cfg, diags, err := ParseFS(fsys, "etc/k.conf")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range cfg.Scripts {
		names = append(names, s.Name+"@"+s.Pos.String())
	}
	if got, want := strings.Join(names, " "), "a@etc/conf.d/a.conf:1 b@etc/conf.d/b.conf:1"; got != want {
		t.Errorf("scripts = %s, want %s", got, want)
	}
	if got, want := diags.String(), "etc/loop.inc:1: warning: include conf.d/a.conf: etc/conf.d/a.conf is already being read, skipped\n"; got != want {
		t.Errorf("diagnostics = %q, want %q", got, want)
	}
	if got, want := strings.Join(cfg.Files, " "), "etc/k.conf etc/conf.d/a.conf etc/loop.inc etc/conf.d/b.conf"; got != want {
		t.Errorf("files = %s, want %s", got, want)
	}
}

func TestLexer(t *testing.T) {
	var diags Diagnostics
	l := &lexer{diags: &diags}
	got := l.splitLine(`  url{ path "/a b" } # c`, Pos{"f", 1})
	var parts []string
	for _, tk := range got {
		parts = append(parts, tk.String())
	}
	if g, w := strings.Join(parts, " "), `f:1:url f:1:{ f:1:path f:1:"/a b" f:1:}`; g != w {
		t.Errorf("tokens = %s, want %s", g, w)
	}
	got = l.splitLine(`auth_pass pa!ss ! comment`, Pos{"f", 2})
	if len(got) != 2 || got[1].text != "pa!ss" {
		t.Errorf("tokens = %v, want auth_pass pa!ss", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, file := range corpusFiles(f) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("include k.conf\n"))
	f.Add([]byte("global_defs { lvs_sync_daemon eth0 VI_1 7 inst X id 3 maxlen 1400 port 8848 ttl 1 group ff02::8:81 }\n"))
	f.Add([]byte("virtual_server_group g { 198.18.0.1-9 80 fwmark 3 2001:db8::1-ff 443 }\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys := fstest.MapFS{"k.conf": {Data: data}, "inc/x.conf": {Data: data}}
		cfg, diags, err := ParseFS(fsys, "k.conf")
		if err != nil {
			t.Fatal(err)
		}
		diags = append(diags, Validate(cfg)...)
		for _, d := range diags {
			if d.Pos.File == "" || d.Pos.Line < 1 {
				t.Fatalf("diagnostic without position: %+v", d)
			}
		}
		// Deterministic: a second parse gives the same model.
		cfg2, _, _ := ParseFS(fsys, "k.conf")
		if d1, d2 := Dump(cfg), Dump(cfg2); d1 != d2 {
			t.Fatalf("two parses differ:\n%s", diffLines(d1, d2))
		}
	})
}

func BenchmarkParse(b *testing.B) {
	data, err := os.ReadFile("testdata/corpus/sync_group_nat.conf")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		cfg, diags := ParseBytes("k.conf", data)
		if diags.HasErrors() || len(cfg.VirtualServers) != 1 {
			b.Fatal(diags)
		}
	}
}

// flatten does what the tutorials' web pages did to their configs:
// comments dropped, every line joined onto one.
func flatten(data []byte) []byte {
	var l lexer
	l.diags = new(Diagnostics)
	var words []string
	for i, line := range strings.Split(string(data), "\n") {
		for _, tk := range l.splitLine(line, Pos{"", i + 1}) {
			if tk.quoted {
				words = append(words, strconv.Quote(tk.text))
			} else {
				words = append(words, tk.text)
			}
		}
	}
	return []byte(strings.Join(words, " ") + "\n")
}

func stripPos(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "Pos:") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestFlattenCorpus is a differential test of the one-line grammar: each
// multi-line corpus file, flattened onto one line, must give the same
// model and the same diagnostic messages.
func TestFlattenCorpus(t *testing.T) {
	for _, f := range corpusFiles(t) {
		if strings.Contains(f, "include") {
			continue // include takes the rest of its line
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		a, da := ParseBytes(f, data)
		b, db := ParseBytes(f, flatten(data))
		da = append(da, Validate(a)...)
		db = append(db, Validate(b)...)
		if sa, sb := stripPos(Dump(a)), stripPos(Dump(b)); sa != sb {
			t.Errorf("%s: flattened model differs:\n%s", f, diffLines(sa, sb))
		}
		if len(da) != len(db) {
			t.Errorf("%s: diagnostics differ:\n%s---\n%s", f, da, db)
			continue
		}
		for i := range da {
			if da[i].Msg != db[i].Msg {
				t.Errorf("%s: diagnostic %d: %q, flattened %q", f, i, da[i].Msg, db[i].Msg)
			}
		}
	}
}

// TestBadFiles loads broken files from testdata/bad and compares the
// exact "file:line: message" output with golden files.
func TestBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, diags, err := Load(f)
			if err == nil {
				t.Fatalf("Load(%s) accepted a broken file", f)
			}
			golden(t, diags.String())
		})
	}
}
