package rs

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// FuzzParseArgs: any command line parses or fails cleanly, and what parses
// is usable: valid, distinct VIPs and a known mode.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{
		"up --vip 198.18.0.100",
		"up --vip 198.18.0.100 --vip 2001:db8::100 --tun --tun-mode xdp --dev eth0 --state /tmp/s.json",
		"up --vip=198.18.0.100/32 --tun --xdp-mode generic",
		"down --state /run/xvs-rs/state.json",
		"status",
		"up --vip ::ffff:198.18.0.100 --vip 198.18.0.100",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		cmd, err := ParseArgs(strings.Fields(line), io.Discard)
		if err != nil {
			return
		}
		if cmd.Name != "up" {
			return
		}
		if len(cmd.Up.VIPs) == 0 {
			t.Fatalf("%q: up with no VIPs", line)
		}
		for i, v := range cmd.Up.VIPs {
			if !v.IsValid() || v.Is4In6() || v.IsLoopback() || v.IsUnspecified() {
				t.Fatalf("%q: bad VIP %v accepted", line, v)
			}
			if slices.Contains(cmd.Up.VIPs[i+1:], v) {
				t.Fatalf("%q: VIP %v twice", line, v)
			}
		}
		if !slices.Contains([]TunMode{TunAuto, TunIPIP, TunXDP}, cmd.Up.TunMode) ||
			!slices.Contains([]XDPMode{XDPAuto, XDPDriver, XDPGeneric}, cmd.Up.XDPMode) {
			t.Fatalf("%q: modes %q/%q", line, cmd.Up.TunMode, cmd.Up.XDPMode)
		}
	})
}

// FuzzLoadState: a state file either fails to load or survives a save and
// load unchanged.
func FuzzLoadState(f *testing.F) {
	f.Add([]byte(`{"version":1,"netns":"net:[4026532177]","sysctls":[{"key":"net/ipv4/conf/all/arp_ignore","value":"0"}],"vips":["198.18.0.100/32","2001:db8::100/128"],"decap":["eth0"]}`))
	f.Add([]byte(`{"version":1,"netns":"x","tunnel_up":"tunl0"}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "state.json")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		st, err := LoadState(path)
		if err != nil {
			return
		}
		path2 := filepath.Join(dir, "again.json")
		if err := st.Save(path2); err != nil {
			t.Fatal(err)
		}
		st2, err := LoadState(path2)
		if err != nil {
			t.Fatalf("saved state does not load: %v", err)
		}
		if !reflect.DeepEqual(st, st2) {
			t.Fatalf("round trip changed the state:\n%+v\n%+v", st, st2)
		}
	})
}
