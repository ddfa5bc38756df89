package rs

import (
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"slices"

	"github.com/xvs-lb/xvs/bpf"
)

// fakeHost is a host in memory. Its exported-looking fields are the whole
// machine state, so two snapshots compare with reflect.DeepEqual.
type fakeHost struct {
	m     machine
	fail  map[string]error // "op arg" -> error, to inject failures
	calls []string
}

type machine struct {
	NS          string
	Sysctls     map[string]string
	Lo          []netip.Prefix
	DefaultDevs []string
	Links       map[string]bool // name -> up
	Host4       []netip.Addr    // what HostAddrs reports, IPv4
	Host6       []netip.Addr    // and IPv6 (global and unique-local only)
	IPIP        bool
	XDP         map[string]fakeXDP // dev -> attached program
	DecapVIPs   map[netip.Addr]bool
	DecapLocals []netip.Addr
}

type fakeXDP struct {
	ID   uint32
	Name string
	Mode bpf.XDPMode
}

const fakeDecapID = 77

func newFakeHost() *fakeHost {
	return &fakeHost{
		m: machine{
			NS: "net:[4026532001]",
			Sysctls: map[string]string{
				"net/ipv4/conf/all/arp_ignore":    "0",
				"net/ipv4/conf/all/arp_announce":  "0",
				"net/ipv4/conf/all/rp_filter":     "1",
				"net/ipv4/conf/lo/arp_ignore":     "0",
				"net/ipv4/conf/lo/arp_announce":   "0",
				"net/ipv4/conf/lo/rp_filter":      "0",
				"net/ipv4/conf/eth0/arp_ignore":   "0",
				"net/ipv4/conf/eth0/arp_announce": "0",
				"net/ipv4/conf/eth0/rp_filter":    "1",
			},
			Lo:          []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")},
			DefaultDevs: []string{"eth0"},
			Links:       map[string]bool{"lo": true, "eth0": true},
			Host4:       []netip.Addr{netip.MustParseAddr("198.18.0.11")},
			Host6:       []netip.Addr{netip.MustParseAddr("2001:db8::11")},
			XDP:         map[string]fakeXDP{},
			DecapVIPs:   map[netip.Addr]bool{},
		},
		fail: map[string]error{},
	}
}

// snapshot deep-copies the machine state.
func (f *fakeHost) snapshot() machine {
	c := f.m
	c.Sysctls = maps.Clone(f.m.Sysctls)
	c.Lo = slices.Clone(f.m.Lo)
	c.DefaultDevs = slices.Clone(f.m.DefaultDevs)
	c.Links = maps.Clone(f.m.Links)
	c.Host4 = slices.Clone(f.m.Host4)
	c.Host6 = slices.Clone(f.m.Host6)
	c.XDP = maps.Clone(f.m.XDP)
	c.DecapVIPs = maps.Clone(f.m.DecapVIPs)
	c.DecapLocals = slices.Clone(f.m.DecapLocals)
	return c
}

func (f *fakeHost) op(name, arg string) error {
	f.calls = append(f.calls, name+" "+arg)
	return f.fail[name+" "+arg]
}

func (f *fakeHost) NetNS() (string, error) { return f.m.NS, nil }

func (f *fakeHost) ReadSysctl(key string) (string, error) {
	if err := f.op("ReadSysctl", key); err != nil {
		return "", err
	}
	v, ok := f.m.Sysctls[key]
	if !ok {
		return "", fmt.Errorf("read sysctl %s: %w", key, fs.ErrNotExist)
	}
	return v, nil
}

func (f *fakeHost) WriteSysctl(key, value string) error {
	if err := f.op("WriteSysctl", key); err != nil {
		return err
	}
	if _, ok := f.m.Sysctls[key]; !ok {
		return fmt.Errorf("write sysctl %s: %w", key, fs.ErrNotExist)
	}
	f.m.Sysctls[key] = value
	return nil
}

func (f *fakeHost) LoAddrs() ([]netip.Prefix, error) {
	return slices.Clone(f.m.Lo), f.op("LoAddrs", "")
}

func (f *fakeHost) AddLoAddr(p netip.Prefix) error {
	if err := f.op("AddLoAddr", p.String()); err != nil {
		return err
	}
	if slices.Contains(f.m.Lo, p) {
		return fmt.Errorf("add %v: file exists", p)
	}
	f.m.Lo = append(f.m.Lo, p)
	if p.Addr().Is4() {
		f.m.Host4 = append(f.m.Host4, p.Addr())
	} else {
		f.m.Host6 = append(f.m.Host6, p.Addr())
	}
	return nil
}

func (f *fakeHost) DelLoAddr(p netip.Prefix) error {
	if err := f.op("DelLoAddr", p.String()); err != nil {
		return err
	}
	f.m.Lo = slices.DeleteFunc(f.m.Lo, func(q netip.Prefix) bool { return q == p })
	f.m.Host4 = slices.DeleteFunc(f.m.Host4, func(a netip.Addr) bool { return a == p.Addr() })
	f.m.Host6 = slices.DeleteFunc(f.m.Host6, func(a netip.Addr) bool { return a == p.Addr() })
	return nil
}

func (f *fakeHost) DefaultRouteDevs() ([]string, error) {
	return slices.Clone(f.m.DefaultDevs), f.op("DefaultRouteDevs", "")
}

func (f *fakeHost) LinkExists(name string) (bool, error) {
	_, ok := f.m.Links[name]
	return ok, f.op("LinkExists", name)
}

func (f *fakeHost) LinkUp(name string) (bool, error) {
	up, ok := f.m.Links[name]
	if !ok {
		return false, fmt.Errorf("interface %s: not found", name)
	}
	return up, f.op("LinkUp", name)
}

func (f *fakeHost) SetLinkUp(name string, up bool) error {
	if err := f.op("SetLinkUp", name); err != nil {
		return err
	}
	if _, ok := f.m.Links[name]; !ok {
		return fmt.Errorf("interface %s: not found", name)
	}
	f.m.Links[name] = up
	return nil
}

func (f *fakeHost) HostAddrs() ([]netip.Addr, error) {
	return append(slices.Clone(f.m.Host4), f.m.Host6...), f.op("HostAddrs", "")
}
func (f *fakeHost) HasIPIP() bool { return f.m.IPIP }

func (f *fakeHost) Links() ([]string, error) {
	return slices.Sorted(maps.Keys(f.m.Links)), f.op("Links", "")
}

func (f *fakeHost) DecapAttach(dev string, vips, locals []netip.Addr, mode XDPMode) (bpf.XDPMode, error) {
	if err := f.op("DecapAttach", dev); err != nil {
		return 0, err
	}
	if _, ok := f.m.Links[dev]; !ok {
		return 0, fmt.Errorf("interface %s: not found", dev)
	}
	if x, ok := f.m.XDP[dev]; ok && x.Name != bpf.DecapProgramName {
		return 0, bpf.ErrForeignXDP
	}
	for _, v := range vips {
		f.m.DecapVIPs[v] = true
	}
	f.m.DecapLocals = slices.Clone(locals)
	m := bpf.XDPModeDriver
	if mode == XDPGeneric {
		m = bpf.XDPModeGeneric
	}
	if x, ok := f.m.XDP[dev]; ok {
		return x.Mode, nil
	}
	f.m.XDP[dev] = fakeXDP{ID: fakeDecapID, Name: bpf.DecapProgramName, Mode: m}
	return m, nil
}

func (f *fakeHost) DecapDetach(dev string) error {
	if err := f.op("DecapDetach", dev); err != nil {
		return err
	}
	x, ok := f.m.XDP[dev]
	if !ok {
		return nil
	}
	if x.Name != bpf.DecapProgramName {
		return bpf.ErrForeignXDP
	}
	delete(f.m.XDP, dev)
	// The kernel frees the program and its maps with the last attachment.
	for _, x := range f.m.XDP {
		if x.Name == bpf.DecapProgramName {
			return nil
		}
	}
	f.m.DecapVIPs = map[netip.Addr]bool{}
	f.m.DecapLocals = nil
	return nil
}

func (f *fakeHost) DecapStatus(dev string) (DecapStatus, error) {
	st := DecapStatus{Dev: dev}
	if err := f.op("DecapStatus", dev); err != nil {
		return st, err
	}
	x, ok := f.m.XDP[dev]
	if !ok {
		return st, nil
	}
	st.ProgID, st.ProgName, st.Mode = x.ID, x.Name, x.Mode
	st.Ours = x.Name == bpf.DecapProgramName
	if st.Ours {
		st.VIPs = slices.SortedFunc(maps.Keys(f.m.DecapVIPs), netip.Addr.Compare)
		// Sorted, as the real program's listing is.
		st.Locals = slices.SortedFunc(slices.Values(f.m.DecapLocals), netip.Addr.Compare)
		st.Counters = bpf.DecapCounters{Decapsulated: 3, Passed: 5}
	}
	return st, nil
}
