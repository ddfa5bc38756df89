package rs

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

const usage = `usage: xvs-rs COMMAND [flags]

Prepares this host as a real server behind an xvs (or LVS) director.

Commands:
  up      add the VIPs on lo, set arp_ignore/arp_announce, and with --tun
          open the director's tunnels (IPv4 or IPv6 outer header; kernel ipip
          or the decap XDP program)
  down    undo exactly what up changed, as recorded in the state file
  status  show the VIPs on lo, the sysctls, the tunnel and the decap program

Run "xvs-rs COMMAND --help" for the command's flags.
`

// Exit statuses of Main.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// Command is one parsed command line.
type Command struct {
	Name      string // up, down or status
	StatePath string
	Up        UpConfig // for up
}

// errHelp: --help was asked for and printed.
var errHelp = errors.New("help requested")

// ParseArgs parses a command line (without the program name).
func ParseArgs(args []string, stderr io.Writer) (Command, error) {
	if len(args) == 0 {
		return Command{}, errors.New("no command given (up, down or status)")
	}
	cmd := Command{Name: args[0]}
	if cmd.Name == "-h" || cmd.Name == "--help" || cmd.Name == "help" {
		fmt.Fprint(stderr, usage)
		return Command{}, errHelp
	}
	fs := pflag.NewFlagSet("xvs-rs "+cmd.Name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cmd.StatePath, "state", DefaultStatePath, "state `file` recording what up changed")
	var vips, devs []string
	var tunMode, xdpMode string
	switch cmd.Name {
	case "up":
		fs.StringArrayVar(&vips, "vip", nil, "virtual IP `address` to serve (IPv4 or IPv6); repeat for several")
		fs.BoolVar(&cmd.Up.Tun, "tun", false, "also accept the director's IP-in-IP tunnels (LVS TUN mode)")
		fs.StringVar(&tunMode, "tun-mode", string(TunAuto), "auto (ipip if the module is present, else xdp), ipip or xdp")
		fs.StringArrayVar(&devs, "dev", nil, "`interface` for the decap program; repeat for several (default: the default route's)")
		fs.StringVar(&xdpMode, "xdp-mode", string(XDPAuto), "how to attach the decap program: auto, driver or generic")
	case "down", "status":
	default:
		return Command{}, fmt.Errorf("unknown command %q (want up, down or status)", cmd.Name)
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return Command{}, errHelp
		}
		return Command{}, err
	}
	if fs.NArg() > 0 {
		return Command{}, fmt.Errorf("%s: unexpected argument %q", cmd.Name, fs.Arg(0))
	}
	if cmd.StatePath == "" {
		return Command{}, errors.New("--state: empty path")
	}
	if cmd.Name != "up" {
		return cmd, nil
	}

	if len(vips) == 0 {
		return Command{}, errors.New("up: at least one --vip is needed")
	}
	for _, v := range vips {
		a, err := ParseVIP(v)
		if err != nil {
			return Command{}, err
		}
		if !slices.Contains(cmd.Up.VIPs, a) {
			cmd.Up.VIPs = append(cmd.Up.VIPs, a)
		}
	}
	for _, f := range []string{"tun-mode", "dev", "xdp-mode"} {
		if fs.Changed(f) && !cmd.Up.Tun {
			return Command{}, fmt.Errorf("up: --%s only applies with --tun", f)
		}
	}
	switch m := TunMode(tunMode); m {
	case TunAuto, TunIPIP, TunXDP:
		cmd.Up.TunMode = m
	default:
		return Command{}, fmt.Errorf("up: --tun-mode %q: want auto, ipip or xdp", tunMode)
	}
	switch m := XDPMode(xdpMode); m {
	case XDPAuto, XDPDriver, XDPGeneric:
		cmd.Up.XDPMode = m
	default:
		return Command{}, fmt.Errorf("up: --xdp-mode %q: want auto, driver or generic", xdpMode)
	}
	if len(devs) > 0 && cmd.Up.TunMode == TunIPIP {
		return Command{}, errors.New("up: --dev is for the decap program; --tun-mode ipip uses tunl0")
	}
	for _, d := range devs {
		if d == "" || len(d) >= unix.IFNAMSIZ || strings.ContainsAny(d, "/ ") {
			return Command{}, fmt.Errorf("up: --dev %q: not an interface name", d)
		}
		if !slices.Contains(cmd.Up.Devs, d) {
			cmd.Up.Devs = append(cmd.Up.Devs, d)
		}
	}
	return cmd, nil
}

// ParseVIP parses a VIP: an address, or a host prefix (/32, /128).
// Addresses that cannot be a service address are refused.
func ParseVIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		p, perr := netip.ParsePrefix(s)
		if perr != nil {
			return netip.Addr{}, fmt.Errorf("--vip %q: not an IP address", s)
		}
		if p.Bits() != p.Addr().BitLen() {
			return netip.Addr{}, fmt.Errorf("--vip %q: a VIP is one address (/%d), not a network", s, p.Addr().BitLen())
		}
		a = p.Addr()
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("--vip %q: zones are not allowed", s)
	}
	a = a.Unmap()
	switch {
	case a.IsUnspecified():
		return netip.Addr{}, fmt.Errorf("--vip %q: the unspecified address", s)
	case a.IsLoopback():
		return netip.Addr{}, fmt.Errorf("--vip %q: a loopback address", s)
	case a.IsMulticast():
		return netip.Addr{}, fmt.Errorf("--vip %q: a multicast address", s)
	case a.IsLinkLocalUnicast():
		return netip.Addr{}, fmt.Errorf("--vip %q: a link-local address", s)
	case a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return netip.Addr{}, fmt.Errorf("--vip %q: the broadcast address", s)
	}
	return a, nil
}

// Main runs xvs-rs with args (without the program name) and returns the
// exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	return run(linuxHost{}, args, stdout, stderr)
}

func run(h host, args []string, stdout, stderr io.Writer) int {
	cmd, err := ParseArgs(args, stderr)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "xvs-rs: %v\n(xvs-rs --help for usage)\n", err)
		return exitUsage
	}
	unlock, err := lockState(cmd.StatePath)
	if err != nil {
		fmt.Fprintf(stderr, "xvs-rs: %v\n", err)
		return exitError
	}
	defer unlock()
	r := &runner{h: h, statePath: cmd.StatePath, out: stdout}
	switch cmd.Name {
	case "up":
		err = r.Up(cmd.Up)
		if err != nil {
			ns, _ := h.NetNS()
			if st, lerr := LoadState(cmd.StatePath); lerr == nil && st.NetNS == ns && st.changedAnything() {
				err = fmt.Errorf("%w\n(what up changed is recorded: `xvs-rs down --state %s` undoes it)", err, cmd.StatePath)
			}
			err = fmt.Errorf("up: %w", err)
		}
	case "down":
		err = r.Down()
		if errors.Is(err, ErrNoState) {
			fmt.Fprintf(stderr, "xvs-rs: down: no state at %s: nothing to restore\n", cmd.StatePath)
			return exitOK
		}
	case "status":
		err = r.Status()
	}
	if err != nil {
		fmt.Fprintf(stderr, "xvs-rs: %v\n", err)
		return exitError
	}
	return exitOK
}

// Up applies cfg to this host (the calling OS thread's network namespace)
// and records what it changed in statePath, as `xvs-rs up` does.
func Up(statePath string, cfg UpConfig, out io.Writer) error {
	return withLock(statePath, out, func(r *runner) error { return r.Up(cfg) })
}

// Down undoes what Up recorded in statePath, as `xvs-rs down` does;
// ErrNoState if there is nothing to undo.
func Down(statePath string, out io.Writer) error {
	return withLock(statePath, out, func(r *runner) error { return r.Down() })
}

// Status prints what `xvs-rs status` prints.
func Status(statePath string, out io.Writer) error {
	return withLock(statePath, out, func(r *runner) error { return r.Status() })
}

func withLock(statePath string, out io.Writer, fn func(*runner) error) error {
	unlock, err := lockState(statePath)
	if err != nil {
		return err
	}
	defer unlock()
	return fn(&runner{h: linuxHost{}, statePath: statePath, out: out})
}

// lockState serialises xvs-rs runs sharing a state file: an flock on its
// directory, released when the process exits.
func lockState(path string) (func(), error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock state directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock state directory %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}
