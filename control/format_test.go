package control

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// golden compares got with testdata/<test name>.golden, or rewrites it
// with -update.
func golden(t *testing.T, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", t.Name()+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s\n--- got\n%s--- want\n%s", path, got, want)
	}
}

var testNames = func() *PortNames {
	n, err := ParsePortNames(strings.NewReader(`
# fixed table so goldens do not depend on the machine's /etc/services
http		80/tcp		www		# WorldWideWeb HTTP
https		443/tcp
domain		53/udp
ssh		22/tcp
`))
	if err != nil {
		panic(err)
	}
	return n
}()

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// fixture is the table the goldens print: a wrr web service with two DR
// real servers, a persistent NAT service with a mask, a UDP tunnel
// service, an IPv6 service, and fwmark services (IPv4 with sh flags,
// IPv6 with a prefix mask). Listed out of order to exercise sorting.
func fixture() []Service {
	return []Service{
		{
			ServiceKey: ServiceKey{FWMark: 1}, Sched: "sh", Flags: []string{FlagSHPort, FlagSHFallback},
			Persistent: true, Timeout: 300,
			Dests: []Dest{
				{Addr: ip("198.18.0.12"), Method: Route, Weight: 1},
				{Addr: ip("198.18.0.11"), Method: Route, Weight: 1, ActiveConns: 1},
			},
		},
		{
			ServiceKey: ServiceKey{Proto: TCP, Addr: ip("2001:db8::100"), Port: 80}, Sched: "wrr",
			Dests: []Dest{
				{Addr: ip("2001:db8::11"), Port: 80, Method: Route, Weight: 1, ActiveConns: 2, InactConns: 5},
				{Addr: ip("2001:db8::12"), Port: 80, Method: Route, Weight: 1},
			},
			Stats: Stats{Conns: 7, InPkts: 70, OutPkts: 0, InBytes: 4480, OutBytes: 0},
		},
		{
			ServiceKey: ServiceKey{Proto: TCP, Addr: ip("198.18.0.100"), Port: 80}, Sched: "wrr",
			Dests: []Dest{
				{Addr: ip("198.18.0.12"), Port: 80, Method: Route, Weight: 2, ActiveConns: 120, InactConns: 33,
					Upper: 1000, Lower: 800, PersistConns: 4,
					Stats: Stats{Conns: 123_456_789, InPkts: 2_345_678_901, OutPkts: 0, InBytes: 345_678_901_234, OutBytes: 0},
					Rates: Rates{CPS: 1200, InPPS: 45_000, OutPPS: 0, InBPS: 123_456_789, OutBPS: 0}},
				{Addr: ip("198.18.0.11"), Port: 80, Method: Route, Weight: 1, ActiveConns: 61, InactConns: 17,
					Stats: Stats{Conns: 61_728_394, InPkts: 1_172_839_450, OutPkts: 0, InBytes: 172_839_450_617, OutBytes: 0},
					Rates: Rates{CPS: 600, InPPS: 22_500, OutPPS: 0, InBPS: 61_728_394, OutBPS: 0}},
			},
			Stats: Stats{Conns: 185_185_183, InPkts: 3_518_518_351, OutPkts: 0, InBytes: 518_518_351_851, OutBytes: 0},
			Rates: Rates{CPS: 1800, InPPS: 67_500, OutPPS: 0, InBPS: 185_185_183, OutBPS: 0},
		},
		{
			ServiceKey: ServiceKey{Proto: TCP, Addr: ip("198.18.0.100"), Port: 443}, Sched: "wlc",
			Persistent: true, Timeout: 600, Netmask: 24,
			Dests: []Dest{
				{Addr: ip("198.18.0.11"), Port: 8443, Method: Masq, Weight: 1, ActiveConns: 4, InactConns: 0},
				{Addr: ip("198.18.0.12"), Port: 8443, Method: Masq, Weight: 0, ActiveConns: 1, InactConns: 2},
			},
			Stats: Stats{Conns: 5, InPkts: 99, OutPkts: 88, InBytes: 123_456_789_012_345, OutBytes: 98_765_432_109_876_543},
		},
		{
			ServiceKey: ServiceKey{Proto: UDP, Addr: ip("198.18.0.100"), Port: 53}, Sched: "rr",
			Dests: []Dest{
				{Addr: ip("198.18.0.11"), Port: 53, Method: Tunnel, Weight: 1, InactConns: 9},
			},
		},
		{
			ServiceKey: ServiceKey{FWMark: 2, IPv6: true}, Sched: "mh", Flags: []string{FlagMHPort},
			Persistent: true, Timeout: 360, Netmask: 64,
			Dests: []Dest{{Addr: ip("2001:db8::11"), Method: Route, Weight: 3}},
		},
	}
}

func fixtureConns() []Conn {
	ap := netip.MustParseAddrPort
	return []Conn{
		{Proto: TCP, Expire: 14*time.Minute + 59*time.Second, State: "ESTABLISHED",
			Source: ap("198.18.0.10:40112"), Virtual: ap("198.18.0.100:80"), Destination: ap("198.18.0.11:80")},
		{Proto: TCP, Expire: 58 * time.Second, State: "SYN_RECV",
			Source: ap("198.18.0.10:40114"), Virtual: ap("198.18.0.100:80"), Destination: ap("198.18.0.12:80")},
		{Proto: TCP, Expire: 1*time.Minute + 5*time.Second, State: "FIN_WAIT",
			Source: ap("198.18.0.10:40116"), Virtual: ap("198.18.0.100:443"), Destination: ap("198.18.0.11:8443")},
		{Proto: TCP, Expire: 90 * time.Second, State: "TIME_WAIT",
			Source: ap("203.0.113.200:65535"), Virtual: ap("198.18.0.100:80"), Destination: ap("198.18.0.12:80")},
		{Proto: UDP, Expire: 4*time.Minute + 30*time.Second, State: "UDP",
			Source: ap("198.18.0.10:5353"), Virtual: ap("198.18.0.100:53"), Destination: ap("198.18.0.11:53")},
		{Proto: TCP, Expire: 9*time.Minute + 58*time.Second, State: "NONE",
			Source: ap("198.18.0.10:0"), Virtual: ap("198.18.0.100:443"), Destination: ap("198.18.0.11:8443")},
		{Proto: TCP, Expire: 2 * time.Minute, State: "ESTABLISHED",
			Source: ap("[2001:db8::10]:40200"), Virtual: ap("[2001:db8::100]:80"), Destination: ap("[2001:db8::11]:80")},
	}
}

func TestGolden(t *testing.T) {
	info := Info{Version: "1.2.1", Size: 4096}
	svcs := fixture()
	list := func(f Format) func() ([]byte, error) {
		return func() ([]byte, error) {
			var b bytes.Buffer
			err := WriteList(&b, info, svcs, f)
			return b.Bytes(), err
		}
	}
	cases := []struct {
		name string
		out  func() ([]byte, error)
	}{
		{"Ln", list(Format{Numeric: true, Names: testNames})},
		{"L", list(Format{Names: testNames})},
		{"Ln_nosort", list(Format{Numeric: true, NoSort: true})},
		{"Ln_stats", list(Format{Numeric: true, Stats: true})},
		{"Ln_stats_exact", list(Format{Numeric: true, Stats: true, Exact: true})},
		{"Ln_rate", list(Format{Numeric: true, Rate: true})},
		{"Ln_rate_exact", list(Format{Numeric: true, Rate: true, Exact: true})},
		{"Ln_thresholds", list(Format{Numeric: true, Thresholds: true})},
		{"Ln_persistent_conn", list(Format{Numeric: true, PersistentConn: true})},
		{"Ln_tun_info", list(Format{Numeric: true, TunInfo: true})},
		{"Ln_service", func() ([]byte, error) {
			var b bytes.Buffer
			err := WriteService(&b, &svcs[2], Format{Numeric: true})
			return b.Bytes(), err
		}},
		{"Lnc", func() ([]byte, error) {
			var b bytes.Buffer
			err := WriteConns(&b, fixtureConns(), Format{Numeric: true, Names: testNames})
			return b.Bytes(), err
		}},
		{"Lc", func() ([]byte, error) {
			var b bytes.Buffer
			err := WriteConns(&b, fixtureConns(), Format{Names: testNames})
			return b.Bytes(), err
		}},
		{"Lnc_persistent_conn", func() ([]byte, error) {
			var b bytes.Buffer
			err := WriteConns(&b, fixtureConns()[:2], Format{Numeric: true, PersistentConn: true})
			return b.Bytes(), err
		}},
		{"timeout", func() ([]byte, error) {
			var b bytes.Buffer
			err := WriteTimeouts(&b, Timeouts{TCP: 900, TCPFin: 120, UDP: 300})
			return b.Bytes(), err
		}},
		{"Sn", func() ([]byte, error) {
			var b bytes.Buffer
			err := WriteSave(&b, svcs, Format{Numeric: true, Names: testNames})
			return b.Bytes(), err
		}},
		{"S", func() ([]byte, error) {
			var b bytes.Buffer
			err := WriteSave(&b, svcs, Format{Names: testNames})
			return b.Bytes(), err
		}},
		{"Ln_empty", func() ([]byte, error) {
			var b bytes.Buffer
			err := WriteList(&b, Info{}, nil, Format{Numeric: true})
			return b.Bytes(), err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.out()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, got)
		})
	}
}

func TestFormatLargeNum(t *testing.T) {
	cases := []struct {
		v     uint64
		exact bool
		want  string
	}{
		{0, false, "        0"},
		{99_999_999, false, " 99999999"},
		{100_000_000, false, "  100000K"},
		{999_999_999, false, "  999999K"},
		{1_000_000_000, false, "    1000M"},
		{99_999_999_999, false, "   99999M"},
		{100_000_000_000, false, "     100G"},
		{99_999_999_999_999, false, "   99999G"},
		{100_000_000_000_000, false, "     100T"},
		{18_446_744_073_709_551_615, false, "18446744T"},
		{12345678, true, " 12345678"},
		{123456789, true, " 123456789"},
		{18_446_744_073_709_551_615, true, " 18446744073709551615"},
	}
	for _, c := range cases {
		if got := FormatLargeNum(c.v, c.exact); got != c.want {
			t.Errorf("FormatLargeNum(%d, %v) = %q, want %q", c.v, c.exact, got, c.want)
		}
	}
}

func TestParseSchedFlags(t *testing.T) {
	cases := []struct {
		sched, arg string
		want       string
		err        string
	}{
		{"sh", "sh-port,sh-fallback", "sh-fallback,sh-port", ""},
		{"sh", "sh-port,,sh-port", "sh-port", ""},
		{"mh", "mh-fallback", "mh-fallback", ""},
		{"", "flag-2", "flag-2", ""},
		{"rr", "flag-3,flag-1", "flag-1,flag-3", ""},
		{"sh", "flag-1", "sh-fallback", ""},
		{"rr", "sh-port", "", "incompatible scheduler flag `sh-port'"},
		{"sh", "mh-port", "", "incompatible scheduler flag `mh-port'"},
		{"sh", "bogus", "", "invalid scheduler flag `bogus'"},
	}
	for _, c := range cases {
		got, err := ParseSchedFlags(c.sched, c.arg)
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("ParseSchedFlags(%q, %q) err = %v, want %q", c.sched, c.arg, err, c.err)
			}
			continue
		}
		if err != nil || strings.Join(got, ",") != c.want {
			t.Errorf("ParseSchedFlags(%q, %q) = %q, %v; want %q", c.sched, c.arg, got, err, c.want)
		}
	}
}

func TestPortNames(t *testing.T) {
	if n, ok := testNames.Name(80, TCP); !ok || n != "http" {
		t.Errorf("Name(80/tcp) = %q, %v", n, ok)
	}
	if _, ok := testNames.Name(80, UDP); ok {
		t.Errorf("Name(80/udp) found, want not")
	}
	if p, ok := testNames.Port("www", TCP); !ok || p != 80 {
		t.Errorf("Port(www/tcp) = %d, %v", p, ok)
	}
	var none *PortNames
	if _, ok := none.Name(80, TCP); ok {
		t.Errorf("nil PortNames found a name")
	}
}

func TestMaskString(t *testing.T) {
	for bits, want := range map[int]string{32: "255.255.255.255", 24: "255.255.255.0", 1: "128.0.0.0", 0: "0.0.0.0"} {
		if got := maskString(bits, false); got != want {
			t.Errorf("maskString(%d) = %q, want %q", bits, got, want)
		}
	}
	if got := maskString(64, true); got != "64" {
		t.Errorf("maskString(64, v6) = %q", got)
	}
}

func BenchmarkWriteList(b *testing.B) {
	svcs := fixture()
	f := Format{Numeric: true}
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := WriteList(&buf, DefaultInfo, svcs, f); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTruncation checks ipvsadm's cuts: an IPv4 service name at 33
// characters and a real server at 28 in listings, never in -S output or
// for IPv6.
func TestTruncation(t *testing.T) {
	names, err := ParsePortNames(strings.NewReader("a-rather-long-service-name 8080/tcp\n"))
	if err != nil {
		t.Fatal(err)
	}
	svcs := []Service{{
		ServiceKey: ServiceKey{Proto: TCP, Addr: ip("198.18.0.100"), Port: 8080}, Sched: "rr",
		Dests: []Dest{{Addr: ip("198.18.0.11"), Port: 8080, Method: Masq, Weight: 1}},
	}}
	var b bytes.Buffer
	if err := WriteList(&b, DefaultInfo, svcs, Format{Names: names}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	if want := "TCP  198.18.0.100:a-rather-long-s rr"; lines[3] != want {
		t.Errorf("service line %q, want %q", lines[3], want)
	}
	if want := "  -> 198.18.0.11:a-rather-long-se Masq    1      0          0         "; lines[4] != want {
		t.Errorf("dest line %q, want %q", lines[4], want)
	}
	b.Reset()
	if err := WriteSave(&b, svcs, Format{Names: names}); err != nil {
		t.Fatal(err)
	}
	want := "-A -t 198.18.0.100:a-rather-long-service-name -s rr\n" +
		"-a -t 198.18.0.100:a-rather-long-service-name -r 198.18.0.11:a-rather-long-service-name -m -w 1\n"
	if b.String() != want {
		t.Errorf("save:\n%s\nwant:\n%s", b.String(), want)
	}
}
