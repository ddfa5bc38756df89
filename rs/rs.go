package rs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/xvs-lb/xvs/bpf"
)

// TunMode is how a TUN real server opens the director's tunnelled packets.
type TunMode string

const (
	// TunAuto uses the kernel's ipip tunnel where the module is present
	// and the decap XDP program otherwise.
	TunAuto TunMode = "auto"
	// TunIPIP uses the kernel's fallback tunnel device tunl0.
	TunIPIP TunMode = "ipip"
	// TunXDP uses the decap XDP program on the receiving interfaces.
	TunXDP TunMode = "xdp"
)

// tunnelDev is the ipip module's fallback device, which receives every
// IPIP packet no configured tunnel claims.
const tunnelDev = "tunl0"

// UpConfig is what `xvs-rs up` was asked for.
type UpConfig struct {
	VIPs    []netip.Addr
	Tun     bool
	TunMode TunMode
	Devs    []string // interfaces for the decap program; default: the default route's
	XDPMode XDPMode
}

// Errors with a meaning of their own.
var (
	ErrOtherNetNS = errors.New("state belongs to another network namespace")
	ErrNoHostAddr = errors.New("this host has no address besides its VIPs for tunnels to reach")
	ErrNoDefault  = errors.New("no IPv4 default route to pick the tunnel interface from; name it with --dev")
)

// runner applies up, down and status to a host, recording in a state file.
type runner struct {
	h         host
	statePath string
	out       io.Writer
}

func (r *runner) printf(format string, args ...any) {
	fmt.Fprintf(r.out, format+"\n", args...)
}

// sysctlName writes a /proc/sys path the way sysctl(8) does: dots between
// components, and the dots inside an interface name (eth0.100) as slashes.
func sysctlName(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(p, ".", "/")
	}
	return strings.Join(parts, ".")
}

func confKey(dev, name string) string { return "net/ipv4/conf/" + dev + "/" + name }

// loadOrNew returns the state at the runner's path, or a new one for this
// namespace; a state from another namespace is refused.
func (r *runner) loadOrNew() (*State, error) {
	ns, err := r.h.NetNS()
	if err != nil {
		return nil, err
	}
	st, err := LoadState(r.statePath)
	if errors.Is(err, ErrNoState) {
		return &State{Version: stateVersion, NetNS: ns}, nil
	}
	if err != nil {
		return nil, err
	}
	if st.NetNS != ns {
		return nil, fmt.Errorf("%s: %w (%s; this is %s): give each namespace its own --state",
			r.statePath, ErrOtherNetNS, st.NetNS, ns)
	}
	return st, nil
}

// ensureSysctl makes key acceptable to ok, writing want if it is not, and
// records the value it found the first time it changes it.
func (r *runner) ensureSysctl(st *State, key string, ok func(int) bool, want string) (bool, error) {
	cur, err := r.h.ReadSysctl(key)
	if err != nil {
		return false, err
	}
	n, err := strconv.Atoi(cur)
	if err != nil {
		return false, fmt.Errorf("sysctl %s: value %q is not a number", sysctlName(key), cur)
	}
	if ok(n) {
		return false, nil
	}
	if _, seen := st.original(key); !seen {
		st.Sysctls = append(st.Sysctls, SavedSysctl{Key: key, Value: cur})
		if err := st.Save(r.statePath); err != nil {
			return false, err
		}
	}
	if err := r.h.WriteSysctl(key, want); err != nil {
		return false, err
	}
	r.printf("set %s = %s (was %s)", sysctlName(key), want, cur)
	return true, nil
}

// The values up wants. Each check accepts what is already good enough, so
// up never weakens a stricter setting an administrator chose.
var (
	// arp_ignore >= 1: answer ARP only for addresses on the interface asked
	// (2, 3 and 8 are stricter still). The VIP lives on lo, so the real
	// server never answers for it: only the director does.
	arpIgnoreOK = func(v int) bool { return v >= 1 }
	// arp_announce = 2: ARP requests carry the sending interface's address,
	// never the VIP, so neighbours do not learn VIP -> this host.
	arpAnnounceOK = func(v int) bool { return v == 2 }
	// rp_filter 0 or 2 (loose): strict mode drops packets whose source is
	// not routed back through the receiving interface, as decapsulated
	// client packets on tunl0 are not. The kernel uses max(all, dev).
	rpFilterOK = func(v int) bool { return v != 1 }
)

// Up applies cfg: VIPs on lo, ARP sysctls, and for TUN the decapsulation.
// Running it again with the same config changes nothing.
func (r *runner) Up(cfg UpConfig) error {
	st, err := r.loadOrNew()
	if err != nil {
		return err
	}
	// Written even when nothing changes, so down knows up ran here.
	if err := st.Save(r.statePath); err != nil {
		return err
	}
	changed := 0
	count := func(c bool, err error) error {
		if c {
			changed++
		}
		return err
	}

	has4 := slices.ContainsFunc(cfg.VIPs, netip.Addr.Is4)
	if has4 {
		for _, dev := range []string{"all", "lo"} {
			if err := count(r.ensureSysctl(st, confKey(dev, "arp_ignore"), arpIgnoreOK, "1")); err != nil {
				return err
			}
			if err := count(r.ensureSysctl(st, confKey(dev, "arp_announce"), arpAnnounceOK, "2")); err != nil {
				return err
			}
		}
	}

	have, err := r.h.LoAddrs()
	if err != nil {
		return err
	}
	for _, vip := range cfg.VIPs {
		p := netip.PrefixFrom(vip, vip.BitLen())
		if slices.ContainsFunc(have, func(h netip.Prefix) bool { return h.Addr() == vip }) {
			if !st.addedVIP(p) {
				r.printf("VIP %v is already on lo: left as it is (down will not remove it)", vip)
			}
			continue
		}
		if !st.addedVIP(p) {
			st.VIPs = append(st.VIPs, p)
			if err := st.Save(r.statePath); err != nil {
				return err
			}
		}
		if err := r.h.AddLoAddr(p); err != nil {
			return err
		}
		r.printf("added %v on lo", p)
		changed++
	}

	if !cfg.Tun && len(st.Decap) > 0 {
		r.printf("note: the decap program runs on %s; add --tun so it opens tunnels to these VIPs too",
			strings.Join(st.Decap, ", "))
	}
	if cfg.Tun {
		c, err := r.upTunnel(st, cfg)
		changed += c
		if err != nil {
			return err
		}
	}
	if err := st.Save(r.statePath); err != nil {
		return err
	}
	if changed == 0 {
		r.printf("already up: nothing changed")
	}
	return nil
}

func (r *runner) upTunnel(st *State, cfg UpConfig) (int, error) {
	changed := 0
	count := func(c bool, err error) error {
		if c {
			changed++
		}
		return err
	}
	mode := cfg.TunMode
	if mode == TunAuto || mode == "" {
		mode = TunXDP
		if r.h.HasIPIP() {
			mode = TunIPIP
		}
	}
	switch mode {
	case TunIPIP:
		ok, err := r.h.LinkExists(tunnelDev)
		if err != nil {
			return changed, err
		}
		if !ok {
			return changed, fmt.Errorf("the ipip module is loaded but this namespace has no %s "+
				"(net.core.fb_tunnels_only_for_init_net?): use --tun-mode xdp", tunnelDev)
		}
		for _, dev := range []string{"all", tunnelDev} {
			if err := count(r.ensureSysctl(st, confKey(dev, "rp_filter"), rpFilterOK, "2")); err != nil {
				return changed, err
			}
		}
		up, err := r.h.LinkUp(tunnelDev)
		if err != nil {
			return changed, err
		}
		if !up {
			st.TunnelUp = tunnelDev
			if err := st.Save(r.statePath); err != nil {
				return changed, err
			}
			if err := r.h.SetLinkUp(tunnelDev, true); err != nil {
				return changed, err
			}
			r.printf("brought %s up", tunnelDev)
			changed++
		}
		if slices.ContainsFunc(cfg.VIPs, netip.Addr.Is6) {
			r.printf("note: IPv6 VIPs over IPv4 tunnels need the sit module's sit0 (or --tun-mode xdp); not set up")
		}
		// Tunnels with an IPv6 outer header (4in6, 6in6) would need
		// ip6_tunnel's ip6tnl0, which up does not manage (see doc.go).
		return changed, nil
	case TunXDP:
	default:
		return changed, fmt.Errorf("unknown tunnel mode %q (want auto, ipip or xdp)", cfg.TunMode)
	}

	devs := cfg.Devs
	if len(devs) == 0 {
		var err error
		if devs, err = r.h.DefaultRouteDevs(); err != nil {
			return changed, err
		}
		if len(devs) == 0 {
			return changed, ErrNoDefault
		}
	}
	for _, dev := range devs {
		ok, err := r.h.LinkExists(dev)
		if err != nil {
			return changed, err
		}
		if !ok {
			return changed, fmt.Errorf("interface %s does not exist", dev)
		}
	}
	// The host's IPv4 addresses open tunnels with an IPv4 outer header
	// (ipip, 6in4), its IPv6 ones those with an IPv6 outer header (4in6,
	// 6in6). The VIPs on lo are among them, as the kernel's tunnels would
	// accept them too, but they alone are not enough: a director sends
	// tunnels to the real server's own address.
	locals, err := r.h.HostAddrs()
	if err != nil {
		return changed, err
	}
	if !slices.ContainsFunc(locals, func(a netip.Addr) bool { return !slices.Contains(cfg.VIPs, a) }) {
		return changed, ErrNoHostAddr
	}
	for _, dev := range devs {
		for _, d := range []string{"all", dev} {
			if err := count(r.ensureSysctl(st, confKey(d, "rp_filter"), rpFilterOK, "2")); err != nil {
				return changed, err
			}
		}
		before, err := r.h.DecapStatus(dev)
		if err != nil {
			return changed, err
		}
		if before.ProgID != 0 && !before.Ours {
			return changed, fmt.Errorf("interface %s: %w (%q, id %d): xvs-rs leaves it alone",
				dev, bpf.ErrForeignXDP, before.ProgName, before.ProgID)
		}
		if !slices.Contains(st.Decap, dev) && before.ProgID == 0 {
			st.Decap = append(st.Decap, dev)
			if err := st.Save(r.statePath); err != nil {
				return changed, err
			}
		}
		m, err := r.h.DecapAttach(dev, cfg.VIPs, locals, cfg.XDPMode)
		if err != nil {
			return changed, err
		}
		if before.ProgID == 0 {
			r.printf("attached the decap program to %s (%v mode)", dev, m)
			changed++
		}
	}
	return changed, nil
}

// Down undoes what up recorded: the decap program first (no more packets
// for the VIPs), then the VIPs, then the sysctls (so the host never answers
// ARP for a VIP it still holds). Whatever cannot be undone stays in the
// state file for another try.
func (r *runner) Down() error {
	ns, err := r.h.NetNS()
	if err != nil {
		return err
	}
	st, err := LoadState(r.statePath)
	if err != nil {
		return err
	}
	if st.NetNS != ns {
		return fmt.Errorf("%s: %w (%s; this is %s)", r.statePath, ErrOtherNetNS, st.NetNS, ns)
	}
	var errs []error

	var keptDecap []string
	for _, dev := range st.Decap {
		if err := r.h.DecapDetach(dev); err != nil {
			errs = append(errs, err)
			keptDecap = append(keptDecap, dev)
			continue
		}
		r.printf("detached the decap program from %s", dev)
	}
	st.Decap = keptDecap

	var keptVIPs []netip.Prefix
	for _, p := range st.VIPs {
		if err := r.h.DelLoAddr(p); err != nil {
			errs = append(errs, err)
			keptVIPs = append(keptVIPs, p)
			continue
		}
		r.printf("removed %v from lo", p)
	}
	st.VIPs = keptVIPs

	if st.TunnelUp != "" {
		ok, err := r.h.LinkExists(st.TunnelUp)
		if err == nil && ok {
			err = r.h.SetLinkUp(st.TunnelUp, false)
		}
		if err != nil {
			errs = append(errs, err)
		} else {
			r.printf("set %s down", st.TunnelUp)
			st.TunnelUp = ""
		}
	}

	var keptSysctls []SavedSysctl
	for i := len(st.Sysctls) - 1; i >= 0; i-- {
		s := st.Sysctls[i]
		err := r.h.WriteSysctl(s.Key, s.Value)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			r.printf("%s no longer exists (interface gone): nothing to restore", sysctlName(s.Key))
		case err != nil:
			errs = append(errs, err)
			keptSysctls = append([]SavedSysctl{s}, keptSysctls...)
		default:
			r.printf("restored %s = %s", sysctlName(s.Key), s.Value)
		}
	}
	st.Sysctls = keptSysctls

	if len(errs) > 0 {
		if err := st.Save(r.statePath); err != nil {
			errs = append(errs, err)
		}
		return fmt.Errorf("down: not everything could be undone (kept in %s): %w", r.statePath, errors.Join(errs...))
	}
	if err := os.Remove(r.statePath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove state: %w", err)
	}
	return nil
}

// Status prints the VIPs on lo, the sysctls up manages, the tunnel and the
// decap program, marking what up changed.
func (r *runner) Status() error {
	ns, err := r.h.NetNS()
	if err != nil {
		return err
	}
	st, err := LoadState(r.statePath)
	switch {
	case errors.Is(err, ErrNoState):
		r.printf("state: none at %s (xvs-rs up has not run, or down has)", r.statePath)
		st = &State{}
	case err != nil:
		return err
	case st.NetNS != ns:
		r.printf("state: %s belongs to %s, not this namespace (%s): ignored", r.statePath, st.NetNS, ns)
		st = &State{}
	default:
		r.printf("state: %s", r.statePath)
	}

	addrs, err := r.h.LoAddrs()
	if err != nil {
		return err
	}
	r.printf("VIPs on lo:")
	n := 0
	for _, p := range addrs {
		if p.Addr().IsLoopback() {
			continue
		}
		n++
		mark := ""
		if st.addedVIP(p) {
			mark = "  (added by xvs-rs)"
		}
		r.printf("  %v%s", p, mark)
	}
	if n == 0 {
		r.printf("  none")
	}

	keys := []string{
		confKey("all", "arp_ignore"), confKey("lo", "arp_ignore"),
		confKey("all", "arp_announce"), confKey("lo", "arp_announce"),
		confKey("all", "rp_filter"),
	}
	devs := slices.Clone(st.Decap)
	if ok, err := r.h.LinkExists(tunnelDev); err == nil && ok {
		devs = append(devs, tunnelDev)
	}
	for _, d := range devs {
		keys = append(keys, confKey(d, "rp_filter"))
	}
	for _, s := range st.Sysctls {
		if !slices.Contains(keys, s.Key) {
			keys = append(keys, s.Key)
		}
	}
	r.printf("sysctls:")
	for _, k := range keys {
		v, err := r.h.ReadSysctl(k)
		if err != nil {
			v = "(" + err.Error() + ")"
		}
		mark := ""
		if orig, ok := st.original(k); ok {
			mark = "  (was " + orig + ")"
		}
		r.printf("  %s = %s%s", sysctlName(k), v, mark)
	}

	r.printf("tunnel:")
	if r.h.HasIPIP() {
		r.printf("  ipip module: present")
	} else {
		r.printf("  ipip module: absent (TUN uses the decap XDP program)")
	}
	if st.TunnelUp != "" {
		r.printf("  %s: brought up by xvs-rs", st.TunnelUp)
	}
	links, err := r.h.Links()
	if err != nil {
		return err
	}
	shown := false
	for _, dev := range links {
		ds, err := r.h.DecapStatus(dev)
		if err != nil {
			r.printf("  %s: %v", dev, err)
			continue
		}
		if ds.ProgID == 0 {
			continue
		}
		shown = true
		if !ds.Ours {
			r.printf("  %s: XDP program %q (id %d), not xvs's", dev, ds.ProgName, ds.ProgID)
			continue
		}
		r.printf("  %s: decap program id %d, %v mode", dev, ds.ProgID, ds.Mode)
		r.printf("    VIPs: %s", joinAddrs(ds.VIPs))
		r.printf("    tunnels accepted to: %s", joinAddrs(ds.Locals))
		r.printf("    decapsulated %d, passed %d, malformed %d",
			ds.Counters.Decapsulated, ds.Counters.Passed, ds.Counters.Malformed)
	}
	for _, dev := range st.Decap {
		if !slices.Contains(links, dev) {
			r.printf("  %s: recorded in the state but gone", dev)
			shown = true
		}
	}
	if !shown {
		r.printf("  decap program: not attached")
	}
	return nil
}

func joinAddrs(as []netip.Addr) string {
	if len(as) == 0 {
		return "none"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, " ")
}
