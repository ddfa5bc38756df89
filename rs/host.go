package rs

import (
	"net/netip"

	"github.com/xvs-lb/xvs/bpf"
)

// host is what up, down and status need from the machine. The real one
// (linuxHost) speaks netlink, /proc/sys and bpf; unit tests use a fake, so
// the restore logic is tested without root.
type host interface {
	// NetNS names the calling thread's network namespace.
	NetNS() (string, error)

	// ReadSysctl and WriteSysctl take a path under /proc/sys.
	ReadSysctl(key string) (string, error)
	WriteSysctl(key, value string) error

	// LoAddrs lists the addresses on lo.
	LoAddrs() ([]netip.Prefix, error)
	AddLoAddr(netip.Prefix) error
	DelLoAddr(netip.Prefix) error

	// DefaultRouteDevs names the interfaces of the IPv4 default route(s).
	DefaultRouteDevs() ([]string, error)
	// LinkExists reports whether an interface exists; LinkUp whether it is
	// administratively up.
	LinkExists(name string) (bool, error)
	LinkUp(name string) (bool, error)
	SetLinkUp(name string, up bool) error
	// HostAddrs lists the namespace's addresses a director may send
	// tunnels to: IPv4 outside 127/8, and IPv6 global unicast (unique-local
	// included; never link-local or ::1).
	HostAddrs() ([]netip.Addr, error)
	// HasIPIP reports whether the kernel's ipip module is loaded or built in.
	HasIPIP() bool

	// DecapAttach makes the decap program run on dev with at least vips
	// and exactly locals as its host addresses; one program and one set of
	// maps serve all interfaces of the namespace. Attaching where it
	// already runs only updates the maps. It returns the mode used.
	DecapAttach(dev string, vips, locals []netip.Addr, mode XDPMode) (bpf.XDPMode, error)
	// DecapDetach removes the decap program from dev; nil if it is not
	// attached there, an error if another XDP program is.
	DecapDetach(dev string) error
	// DecapStatus describes the XDP program on dev (zero ProgID: none).
	DecapStatus(dev string) (DecapStatus, error)
	// Links names every interface of the namespace.
	Links() ([]string, error)
}

// DecapStatus is the XDP program on one interface and, when it is the decap
// program, its maps and counters.
type DecapStatus struct {
	Dev      string
	ProgID   uint32
	ProgName string
	Mode     bpf.XDPMode
	Ours     bool
	VIPs     []netip.Addr
	Locals   []netip.Addr
	Counters bpf.DecapCounters
}

// XDPMode is how up attaches the decap program.
type XDPMode string

const (
	// XDPAuto tries driver mode and falls back to generic mode.
	XDPAuto XDPMode = "auto"
	// XDPDriver is native XDP in the driver (veth has it).
	XDPDriver XDPMode = "driver"
	// XDPGeneric runs after the skb is built; slower, works everywhere.
	XDPGeneric XDPMode = "generic"
)
