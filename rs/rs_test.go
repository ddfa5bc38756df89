package rs

import (
	"bytes"
	"errors"
	"flag"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/xvs-lb/xvs/bpf"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    Command
		wantErr string
	}{
		{"up one vip", []string{"up", "--vip", "198.18.0.100"},
			Command{Name: "up", StatePath: DefaultStatePath, Up: UpConfig{VIPs: addrs("198.18.0.100"), TunMode: TunAuto, XDPMode: XDPAuto}}, ""},
		{"up several, dedup, prefix form", []string{"up", "--vip", "198.18.0.100/32", "--vip=2001:db8::100", "--vip", "198.18.0.100", "--state", "/tmp/s.json"},
			Command{Name: "up", StatePath: "/tmp/s.json", Up: UpConfig{VIPs: addrs("198.18.0.100", "2001:db8::100"), TunMode: TunAuto, XDPMode: XDPAuto}}, ""},
		{"up tun xdp devs", []string{"up", "--vip", "198.18.0.100", "--tun", "--tun-mode", "xdp", "--dev", "eth0", "--dev", "eth1", "--dev", "eth0", "--xdp-mode", "generic"},
			Command{Name: "up", StatePath: DefaultStatePath, Up: UpConfig{VIPs: addrs("198.18.0.100"), Tun: true, TunMode: TunXDP, Devs: []string{"eth0", "eth1"}, XDPMode: XDPGeneric}}, ""},
		{"mapped v4 unmapped", []string{"up", "--vip", "::ffff:198.18.0.100"},
			Command{Name: "up", StatePath: DefaultStatePath, Up: UpConfig{VIPs: addrs("198.18.0.100"), TunMode: TunAuto, XDPMode: XDPAuto}}, ""},
		{"down", []string{"down"}, Command{Name: "down", StatePath: DefaultStatePath}, ""},
		{"status with state", []string{"status", "--state", "/x/y.json"}, Command{Name: "status", StatePath: "/x/y.json"}, ""},

		{"no command", nil, Command{}, "no command"},
		{"unknown command", []string{"start"}, Command{}, `unknown command "start"`},
		{"up without vip", []string{"up"}, Command{}, "at least one --vip"},
		{"bad vip", []string{"up", "--vip", "198.18.0"}, Command{}, "not an IP address"},
		{"network vip", []string{"up", "--vip", "198.18.0.0/24"}, Command{}, "not a network"},
		{"dev without tun", []string{"up", "--vip", "198.18.0.100", "--dev", "eth0"}, Command{}, "--dev only applies with --tun"},
		{"tun-mode without tun", []string{"up", "--vip", "198.18.0.100", "--tun-mode", "xdp"}, Command{}, "--tun-mode only applies"},
		{"bad tun mode", []string{"up", "--vip", "198.18.0.100", "--tun", "--tun-mode", "gre"}, Command{}, `--tun-mode "gre"`},
		{"bad xdp mode", []string{"up", "--vip", "198.18.0.100", "--tun", "--xdp-mode", "hw"}, Command{}, `--xdp-mode "hw"`},
		{"dev with ipip", []string{"up", "--vip", "198.18.0.100", "--tun", "--tun-mode", "ipip", "--dev", "eth0"}, Command{}, "--tun-mode ipip uses tunl0"},
		{"bad dev", []string{"up", "--vip", "198.18.0.100", "--tun", "--dev", "a/b"}, Command{}, "not an interface name"},
		{"long dev", []string{"up", "--vip", "198.18.0.100", "--tun", "--dev", "abcdefghijklmnop"}, Command{}, "not an interface name"},
		{"stray argument", []string{"down", "now"}, Command{}, `unexpected argument "now"`},
		{"vip flag on down", []string{"down", "--vip", "198.18.0.100"}, Command{}, "unknown flag: --vip"},
		{"empty state", []string{"status", "--state", ""}, Command{}, "--state: empty path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			got, err := ParseArgs(tt.args, &stderr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseArgs(%q) error = %v, want one containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseArgs(%q): %v", tt.args, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseArgs(%q)\n got %+v\nwant %+v", tt.args, got, tt.want)
			}
		})
	}
}

func TestParseVIP(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{"198.18.0.100", "198.18.0.100", ""},
		{"2001:db8::100", "2001:db8::100", ""},
		{"2001:db8::100/128", "2001:db8::100", ""},
		{"::ffff:198.18.0.100", "198.18.0.100", ""},
		{"0.0.0.0", "", "unspecified"},
		{"::", "", "unspecified"},
		{"127.0.0.2", "", "loopback"},
		{"::1", "", "loopback"},
		{"224.0.0.18", "", "multicast"},
		{"ff02::12", "", "multicast"},
		{"169.254.1.1", "", "link-local"},
		{"fe80::1", "", "link-local"},
		{"fe80::1%eth0", "", "zones"},
		{"255.255.255.255", "", "broadcast"},
		{"2001:db8::/64", "", "not a network"},
		{"vip.example", "", "not an IP address"},
		{"", "", "not an IP address"},
	}
	for _, tt := range tests {
		got, err := ParseVIP(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseVIP(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != netip.MustParseAddr(tt.want) {
			t.Errorf("ParseVIP(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.json")
	if _, err := LoadState(path); !errors.Is(err, ErrNoState) {
		t.Fatalf("LoadState(missing) error = %v, want ErrNoState", err)
	}
	want := &State{
		Version: stateVersion,
		NetNS:   "net:[4026531840]",
		Sysctls: []SavedSysctl{{"net/ipv4/conf/all/arp_ignore", "0"}, {"net/ipv4/conf/eth0.100/rp_filter", "1"}},
		VIPs:    []netip.Prefix{netip.MustParsePrefix("198.18.0.100/32"), netip.MustParsePrefix("2001:db8::100/128")},
		Decap:   []string{"eth0"},
	}
	if err := want.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("state file mode = %v, %v; want 0644", fi.Mode(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".state-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}

	for name, content := range map[string]string{
		"garbage":     "{not json",
		"old version": `{"version": 99, "netns": "x"}`,
		"bad vip":     `{"version": 1, "netns": "x", "vips": ["198.18.0.300/32"]}`,
		"network vip": `{"version": 1, "netns": "x", "vips": ["198.18.0.0/24"]}`,
		"no netns":    `{"version": 1}`,
		"other key":   `{"version": 1, "netns": "x", "sysctls": [{"key": "kernel/core_pattern", "value": "0"}]}`,
		"escape":      `{"version": 1, "netns": "x", "sysctls": [{"key": "net/ipv4/conf/../../../kernel/arp_ignore", "value": "0"}]}`,
		"text value":  `{"version": 1, "netns": "x", "sysctls": [{"key": "net/ipv4/conf/all/rp_filter", "value": "|sh"}]}`,
		"bad dev":     `{"version": 1, "netns": "x", "decap": ["../eth0"]}`,
		"bad tunnel":  `{"version": 1, "netns": "x", "tunnel_up": "eth0"}`,
	} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadState(path); err == nil || errors.Is(err, ErrNoState) {
			t.Errorf("%s: LoadState error = %v, want a parse error", name, err)
		}
	}
}

func TestSysctlName(t *testing.T) {
	for key, want := range map[string]string{
		"net/ipv4/conf/all/arp_ignore":     "net.ipv4.conf.all.arp_ignore",
		"net/ipv4/conf/eth0.100/rp_filter": "net.ipv4.conf.eth0/100.rp_filter",
	} {
		if got := sysctlName(key); got != want {
			t.Errorf("sysctlName(%q) = %q, want %q", key, got, want)
		}
	}
}

// newRunner returns a runner over a fake host with a state path in a temp
// dir, and the buffer it prints to.
func newRunner(t *testing.T, h host) (*runner, *bytes.Buffer) {
	t.Helper()
	var out bytes.Buffer
	return &runner{h: h, statePath: filepath.Join(t.TempDir(), "state.json"), out: &out}, &out
}

func tunXDP(vips ...string) UpConfig {
	return UpConfig{VIPs: addrs(vips...), Tun: true, TunMode: TunXDP, XDPMode: XDPAuto}
}

func TestUpThenDownRestores(t *testing.T) {
	h := newFakeHost()
	h.m.Sysctls["net/ipv4/conf/lo/arp_ignore"] = "2" // stricter: kept
	before := h.snapshot()
	r, out := newRunner(t, h)

	if err := r.Up(tunXDP("198.18.0.100", "2001:db8::100")); err != nil {
		t.Fatalf("up: %v", err)
	}
	wantSys := map[string]string{
		"net/ipv4/conf/all/arp_ignore":   "1",
		"net/ipv4/conf/lo/arp_ignore":    "2",
		"net/ipv4/conf/all/arp_announce": "2",
		"net/ipv4/conf/lo/arp_announce":  "2",
		"net/ipv4/conf/all/rp_filter":    "2",
		"net/ipv4/conf/eth0/rp_filter":   "2",
		"net/ipv4/conf/lo/rp_filter":     "0",
	}
	for k, want := range wantSys {
		if got := h.m.Sysctls[k]; got != want {
			t.Errorf("after up %s = %s, want %s", k, got, want)
		}
	}
	for _, p := range []string{"198.18.0.100/32", "2001:db8::100/128"} {
		if !slices.Contains(h.m.Lo, netip.MustParsePrefix(p)) {
			t.Errorf("after up %s not on lo: %v", p, h.m.Lo)
		}
	}
	if x := h.m.XDP["eth0"]; x.Name != bpf.DecapProgramName {
		t.Errorf("after up eth0 runs %+v, want the decap program", x)
	}
	if !h.m.DecapVIPs[netip.MustParseAddr("198.18.0.100")] || !h.m.DecapVIPs[netip.MustParseAddr("2001:db8::100")] {
		t.Errorf("decap VIPs = %v", h.m.DecapVIPs)
	}
	for _, l := range []string{"198.18.0.11", "2001:db8::11"} {
		if !slices.Contains(h.m.DecapLocals, netip.MustParseAddr(l)) {
			t.Errorf("decap locals = %v, want the host's address %s", h.m.DecapLocals, l)
		}
	}
	if !strings.Contains(out.String(), "set net.ipv4.conf.all.arp_ignore = 1 (was 0)") {
		t.Errorf("up output lacks the sysctl change:\n%s", out)
	}

	if err := r.Down(); err != nil {
		t.Fatalf("down: %v", err)
	}
	if after := h.snapshot(); !reflect.DeepEqual(after, before) {
		t.Errorf("down did not restore the machine:\n got %+v\nwant %+v", after, before)
	}
	if _, err := os.Stat(r.statePath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file still there after down: %v", err)
	}
	if err := r.Down(); !errors.Is(err, ErrNoState) {
		t.Errorf("second down error = %v, want ErrNoState", err)
	}
}

func TestUpTwiceIsUpOnce(t *testing.T) {
	h := newFakeHost()
	r, out := newRunner(t, h)
	cfg := tunXDP("198.18.0.100", "2001:db8::100")
	if err := r.Up(cfg); err != nil {
		t.Fatal(err)
	}
	once := h.snapshot()
	state1, err := os.ReadFile(r.statePath)
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	h.calls = nil
	if err := r.Up(cfg); err != nil {
		t.Fatal(err)
	}
	if twice := h.snapshot(); !reflect.DeepEqual(twice, once) {
		t.Errorf("second up changed the machine:\n got %+v\nwant %+v", twice, once)
	}
	state2, err := os.ReadFile(r.statePath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(state1, state2) {
		t.Errorf("second up changed the state:\n%s\nthen\n%s", state1, state2)
	}
	if got := out.String(); got != "already up: nothing changed\n" {
		t.Errorf("second up printed %q", got)
	}
	for _, c := range h.calls {
		if strings.HasPrefix(c, "WriteSysctl") || strings.HasPrefix(c, "AddLoAddr") {
			t.Errorf("second up still called %s", c)
		}
	}
}

func TestUpKeepsExistingVIP(t *testing.T) {
	h := newFakeHost()
	pre := netip.MustParsePrefix("198.18.0.100/32")
	h.m.Lo = append(h.m.Lo, pre)
	before := h.snapshot()
	r, out := newRunner(t, h)
	if err := r.Up(UpConfig{VIPs: addrs("198.18.0.100", "198.18.0.101")}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "VIP 198.18.0.100 is already on lo") {
		t.Errorf("up did not say the VIP was there:\n%s", out)
	}
	st, err := LoadState(r.statePath)
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("198.18.0.101/32")}; !reflect.DeepEqual(st.VIPs, want) {
		t.Errorf("state VIPs = %v, want %v", st.VIPs, want)
	}
	if err := r.Down(); err != nil {
		t.Fatal(err)
	}
	if after := h.snapshot(); !reflect.DeepEqual(after, before) {
		t.Errorf("down:\n got %+v\nwant %+v", after, before)
	}
}

func TestUpIPv6OnlyLeavesARPAlone(t *testing.T) {
	h := newFakeHost()
	r, _ := newRunner(t, h)
	if err := r.Up(UpConfig{VIPs: addrs("2001:db8::100")}); err != nil {
		t.Fatal(err)
	}
	for _, c := range h.calls {
		if strings.HasPrefix(c, "WriteSysctl") {
			t.Errorf("IPv6-only up wrote a sysctl: %s", c)
		}
	}
}

func TestUpIPIP(t *testing.T) {
	h := newFakeHost()
	h.m.IPIP = true
	h.m.Links["tunl0"] = false
	h.m.Sysctls["net/ipv4/conf/tunl0/rp_filter"] = "1"
	before := h.snapshot()
	r, _ := newRunner(t, h)
	if err := r.Up(UpConfig{VIPs: addrs("198.18.0.100"), Tun: true, TunMode: TunAuto}); err != nil {
		t.Fatal(err)
	}
	if !h.m.Links["tunl0"] || h.m.Sysctls["net/ipv4/conf/tunl0/rp_filter"] != "2" || len(h.m.XDP) != 0 {
		t.Errorf("ipip up: tunl0 up=%v rp_filter=%s xdp=%v", h.m.Links["tunl0"],
			h.m.Sysctls["net/ipv4/conf/tunl0/rp_filter"], h.m.XDP)
	}
	if err := r.Down(); err != nil {
		t.Fatal(err)
	}
	if after := h.snapshot(); !reflect.DeepEqual(after, before) {
		t.Errorf("down:\n got %+v\nwant %+v", after, before)
	}

	delete(h.m.Links, "tunl0")
	err := r.Up(UpConfig{VIPs: addrs("198.18.0.100"), Tun: true, TunMode: TunIPIP})
	if err == nil || !strings.Contains(err.Error(), "no tunl0") {
		t.Errorf("up without tunl0: error = %v", err)
	}
}

// TestUpTunLocals: up --tun gives the decap program the host's IPv4 and
// IPv6 addresses (the latter open 4in6/6in6 tunnels), status lists them,
// and down restores the machine, whichever families the host has.
func TestUpTunLocals(t *testing.T) {
	a := func(s ...string) []netip.Addr { return addrs(s...) }
	tests := []struct {
		name         string
		host4, host6 []netip.Addr
		vips         []netip.Addr
		wantLocals   []netip.Addr // sorted
		wantStatus   string
	}{
		{"dual stack", a("198.18.0.11"), a("2001:db8::11", "fd00:db8::11"), a("198.18.0.100", "2001:db8::100"),
			a("198.18.0.11", "198.18.0.100", "2001:db8::11", "2001:db8::100", "fd00:db8::11"),
			"tunnels accepted to: 198.18.0.11 198.18.0.100 2001:db8::11 2001:db8::100 fd00:db8::11"},
		{"ipv6 only", []netip.Addr{}, a("2001:db8::11"), a("2001:db8::100"),
			a("2001:db8::11", "2001:db8::100"),
			"tunnels accepted to: 2001:db8::11 2001:db8::100"},
		{"ipv4 only", a("198.18.0.11"), []netip.Addr{}, a("198.18.0.100"),
			a("198.18.0.11", "198.18.0.100"),
			"tunnels accepted to: 198.18.0.11 198.18.0.100"},
		{"ipv6 host, ipv4 VIP", []netip.Addr{}, a("2001:db8::11"), a("198.18.0.100"),
			a("198.18.0.100", "2001:db8::11"),
			"tunnels accepted to: 198.18.0.100 2001:db8::11"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost()
			h.m.Host4, h.m.Host6 = tt.host4, tt.host6
			before := h.snapshot()
			r, out := newRunner(t, h)
			cfg := UpConfig{VIPs: tt.vips, Tun: true, TunMode: TunXDP, XDPMode: XDPAuto}
			if err := r.Up(cfg); err != nil {
				t.Fatalf("up: %v", err)
			}
			got := slices.SortedFunc(slices.Values(h.m.DecapLocals), netip.Addr.Compare)
			if !slices.Equal(got, tt.wantLocals) {
				t.Errorf("decap locals = %v, want %v", got, tt.wantLocals)
			}
			out.Reset()
			if err := r.Status(); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), tt.wantStatus+"\n") {
				t.Errorf("status lacks %q:\n%s", tt.wantStatus, out)
			}
			if err := r.Down(); err != nil {
				t.Fatalf("down: %v", err)
			}
			if after := h.snapshot(); !reflect.DeepEqual(after, before) {
				t.Errorf("down did not restore the machine:\n got %+v\nwant %+v", after, before)
			}
		})
	}
}

func TestUpErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(*fakeHost)
		cfg     UpConfig
		wantErr string
	}{
		{"foreign XDP program", func(h *fakeHost) { h.m.XDP["eth0"] = fakeXDP{ID: 5, Name: "other_prog", Mode: bpf.XDPModeDriver} },
			tunXDP("198.18.0.100"), "another XDP program"},
		{"no default route", func(h *fakeHost) { h.m.DefaultDevs = nil }, tunXDP("198.18.0.100"), "no IPv4 default route"},
		{"missing dev", nil, UpConfig{VIPs: addrs("198.18.0.100"), Tun: true, TunMode: TunXDP, Devs: []string{"eth9"}}, "interface eth9 does not exist"},
		// Empty, not nil: the VIPs up adds on lo come and go in them.
		{"no host address", func(h *fakeHost) { h.m.Host4, h.m.Host6 = []netip.Addr{}, []netip.Addr{} }, tunXDP("2001:db8::100", "198.18.0.100"),
			"no address besides its VIPs"},
		{"sysctl write fails", func(h *fakeHost) {
			h.fail["WriteSysctl net/ipv4/conf/lo/arp_announce"] = errors.New("permission denied")
		},
			tunXDP("198.18.0.100"), "permission denied"},
		{"second VIP fails", func(h *fakeHost) { h.fail["AddLoAddr 198.18.0.101/32"] = errors.New("no buffer space") },
			tunXDP("198.18.0.100", "198.18.0.101"), "no buffer space"},
		{"attach fails", func(h *fakeHost) { h.fail["DecapAttach eth0"] = errors.New("verifier says no") },
			tunXDP("198.18.0.100"), "verifier says no"},
		{"unparsable sysctl", func(h *fakeHost) { h.m.Sysctls["net/ipv4/conf/all/arp_ignore"] = "x" },
			tunXDP("198.18.0.100"), "is not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost()
			if tt.setup != nil {
				tt.setup(h)
			}
			before := h.snapshot()
			r, _ := newRunner(t, h)
			err := r.Up(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("up error = %v, want one containing %q", err, tt.wantErr)
			}
			// Whatever up did before failing is recorded and undone.
			h.fail = map[string]error{}
			if err := r.Down(); err != nil {
				t.Fatalf("down after failed up: %v", err)
			}
			if after := h.snapshot(); !reflect.DeepEqual(after, before) {
				t.Errorf("down after failed up:\n got %+v\nwant %+v", after, before)
			}
		})
	}
}

func TestDownPartialFailureKeepsState(t *testing.T) {
	h := newFakeHost()
	before := h.snapshot()
	r, _ := newRunner(t, h)
	if err := r.Up(tunXDP("198.18.0.100", "198.18.0.101")); err != nil {
		t.Fatal(err)
	}
	h.fail["DelLoAddr 198.18.0.101/32"] = errors.New("busy")
	err := r.Down()
	if err == nil || !strings.Contains(err.Error(), "busy") {
		t.Fatalf("down error = %v, want the injected failure", err)
	}
	st, err := LoadState(r.statePath)
	if err != nil {
		t.Fatalf("state after partial down: %v", err)
	}
	want := &State{Version: stateVersion, NetNS: h.m.NS, VIPs: []netip.Prefix{netip.MustParsePrefix("198.18.0.101/32")}}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("state after partial down = %+v, want %+v", st, want)
	}
	delete(h.fail, "DelLoAddr 198.18.0.101/32")
	if err := r.Down(); err != nil {
		t.Fatal(err)
	}
	if after := h.snapshot(); !reflect.DeepEqual(after, before) {
		t.Errorf("down:\n got %+v\nwant %+v", after, before)
	}
}

func TestStateOfAnotherNamespace(t *testing.T) {
	h := newFakeHost()
	r, _ := newRunner(t, h)
	if err := r.Up(UpConfig{VIPs: addrs("198.18.0.100")}); err != nil {
		t.Fatal(err)
	}
	h.m.NS = "net:[4026532999]"
	if err := r.Down(); !errors.Is(err, ErrOtherNetNS) {
		t.Errorf("down error = %v, want ErrOtherNetNS", err)
	}
	if err := r.Up(UpConfig{VIPs: addrs("198.18.0.100")}); !errors.Is(err, ErrOtherNetNS) {
		t.Errorf("up error = %v, want ErrOtherNetNS", err)
	}
}

func TestDownToleratesVanishedInterface(t *testing.T) {
	h := newFakeHost()
	r, out := newRunner(t, h)
	if err := r.Up(tunXDP("198.18.0.100")); err != nil {
		t.Fatal(err)
	}
	// eth0 goes away, with its sysctls and XDP program.
	delete(h.m.Links, "eth0")
	delete(h.m.Sysctls, "net/ipv4/conf/eth0/rp_filter")
	delete(h.m.XDP, "eth0")
	if err := r.Down(); err != nil {
		t.Fatalf("down: %v", err)
	}
	if !strings.Contains(out.String(), "net.ipv4.conf.eth0.rp_filter no longer exists") {
		t.Errorf("down did not mention the vanished sysctl:\n%s", out)
	}
}

// TestRandomUpsThenDown is a property test: after any sequence of ups
// (random VIPs, modes, pre-existing values) one down restores the machine.
func TestRandomUpsThenDown(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	pool := addrs("198.18.0.100", "198.18.0.101", "2001:db8::100", "2001:db8::101")
	vals := []string{"0", "1", "2", "3", "8"}
	for i := range 300 {
		h := newFakeHost()
		for k := range h.m.Sysctls {
			h.m.Sysctls[k] = vals[r.IntN(len(vals))]
		}
		if r.IntN(2) == 0 {
			h.m.Lo = append(h.m.Lo, netip.PrefixFrom(pool[0], 32))
		}
		h.m.Links["eth1"] = true
		h.m.Sysctls["net/ipv4/conf/eth1/rp_filter"] = vals[r.IntN(len(vals))]
		before := h.snapshot()
		run, _ := newRunner(t, h)
		for range 1 + r.IntN(4) {
			var cfg UpConfig
			for _, a := range pool {
				if r.IntN(2) == 0 {
					cfg.VIPs = append(cfg.VIPs, a)
				}
			}
			if len(cfg.VIPs) == 0 {
				cfg.VIPs = pool[:1]
			}
			if r.IntN(2) == 0 {
				cfg.Tun, cfg.TunMode, cfg.XDPMode = true, TunXDP, XDPAuto
				if r.IntN(2) == 0 {
					cfg.Devs = []string{"eth1"}
				}
			}
			if err := run.Up(cfg); err != nil {
				t.Fatalf("case %d: up %+v: %v", i, cfg, err)
			}
		}
		if err := run.Down(); err != nil {
			t.Fatalf("case %d: down: %v", i, err)
		}
		if after := h.snapshot(); !reflect.DeepEqual(after, before) {
			t.Fatalf("case %d: down did not restore:\n got %+v\nwant %+v", i, after, before)
		}
	}
}

func TestRunExitStatus(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state.json")
	state2 := filepath.Join(dir, "other.json")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
		notStderr  string
	}{
		{"usage", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`, ""},
		{"help", []string{"--help"}, exitOK, "usage: xvs-rs COMMAND", ""},
		{"down without state", []string{"down", "--state", state}, exitOK, "no state at " + state + ": nothing to restore", ""},
		{"up", []string{"up", "--vip", "198.18.0.100", "--state", state}, exitOK, "", ""},
		{"up foreign xdp", []string{"up", "--vip", "198.18.0.100", "--tun", "--tun-mode", "xdp", "--dev", "eth1", "--state", state}, exitError, "another XDP program", ""},
		{"failed up says how to undo", []string{"up", "--vip", "198.18.0.100", "--tun", "--tun-mode", "xdp", "--dev", "eth1", "--state", state}, exitError, "`xvs-rs down --state " + state + "` undoes it", ""},
		// Nothing left to record (the VIP and sysctls are already as wanted):
		// no undo hint.
		{"failed up with nothing changed", []string{"up", "--vip", "198.18.0.100", "--tun", "--tun-mode", "xdp", "--dev", "eth1", "--state", state2}, exitError, "another XDP program", "undoes it"},
		{"down", []string{"down", "--state", state}, exitOK, "", ""},
	}
	h := newFakeHost()
	h.m.Links["eth1"] = true
	h.m.Sysctls["net/ipv4/conf/eth1/rp_filter"] = "0"
	h.m.XDP["eth1"] = fakeXDP{ID: 9, Name: "someone_else", Mode: bpf.XDPModeDriver}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := run(h, tt.args, &stdout, &stderr)
		if code != tt.wantCode || !strings.Contains(stderr.String(), tt.wantStderr) ||
			(tt.notStderr != "" && strings.Contains(stderr.String(), tt.notStderr)) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q (and not %q)", tt.name, code, stderr.String(), tt.wantCode, tt.wantStderr, tt.notStderr)
		}
	}
}

// TestStatusGolden checks status output against testdata/TestStatusGolden.golden
// (go test -run TestStatusGolden -update rewrites it).
func TestStatusGolden(t *testing.T) {
	h := newFakeHost()
	r, out := newRunner(t, h)
	if err := r.Up(tunXDP("198.18.0.100", "2001:db8::100")); err != nil {
		t.Fatal(err)
	}
	h.m.Lo = append(h.m.Lo, netip.MustParsePrefix("198.18.0.200/32")) // not ours
	out.Reset()
	if err := r.Status(); err != nil {
		t.Fatal(err)
	}
	got := strings.ReplaceAll(out.String(), r.statePath, "STATE")
	golden := filepath.Join("testdata", t.Name()+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("status output differs from %s:\n got:\n%s\nwant:\n%s", golden, got, want)
	}
}
