//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// DecapProgramName is the kernel's name for the decap program; it is how a
// later process recognises the program on an interface as its own.
const DecapProgramName = "xvs_decap"

// DecapCounters are the decap program's per-CPU counters summed over CPUs.
// Every packet the program sees lands in exactly one of them.
type DecapCounters struct {
	Decapsulated uint64 // outer header (IPv4 or IPv6) stripped, inner packet passed to the stack
	Passed       uint64 // not a tunnelled packet for a local VIP: passed untouched
	Malformed    uint64 // truncated or invalid outer or inner headers: passed untouched
}

// Decap is the real-server decap program (decap.c) and its maps: the VIPs
// whose tunnelled packets it opens, and the host addresses (IPv4 and IPv6)
// tunnels must be addressed to.
type Decap struct {
	objs decapObjects
}

// XDPMode is how a program is attached to an interface.
type XDPMode int

const (
	// XDPModeDriver runs the program in the driver's receive path (native
	// XDP; veth supports it).
	XDPModeDriver XDPMode = iota + 1
	// XDPModeGeneric runs it after the kernel has built an skb, for drivers
	// without native XDP.
	XDPModeGeneric
)

func (m XDPMode) String() string {
	switch m {
	case XDPModeDriver:
		return "driver"
	case XDPModeGeneric:
		return "generic"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

func (m XDPMode) flag() (uint32, error) {
	switch m {
	case XDPModeDriver:
		return unix.XDP_FLAGS_DRV_MODE, nil
	case XDPModeGeneric:
		return unix.XDP_FLAGS_SKB_MODE, nil
	}
	return 0, fmt.Errorf("unknown XDP mode %d", int(m))
}

var (
	// ErrNoXDP: no XDP program is attached to the interface.
	ErrNoXDP = errors.New("no XDP program attached")
	// ErrForeignXDP: the interface runs an XDP program that is not the
	// decap program; xvs leaves it alone.
	ErrForeignXDP = errors.New("another XDP program is attached")
)

// LoadDecap loads the decap program and creates its (empty) maps.
func LoadDecap() (*Decap, error) {
	d := &Decap{}
	if err := loadDecapObjects(&d.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load decap program: %+v", ve)
		}
		return nil, fmt.Errorf("load decap program: %w", err)
	}
	return d, nil
}

// Program is the XDP program, for tests that run it with prog.Run.
func (d *Decap) Program() *ebpf.Program { return d.objs.XvsDecap }

// Attach attaches the program to an interface in native (driver) mode
// through a BPF link, which the kernel detaches when the link is closed or
// the process exits. AttachPersistent is for one-shot commands.
func (d *Decap) Attach(ifindex int) (link.Link, error) {
	l, err := link.AttachXDP(link.XDPOptions{
		Program:   d.objs.XvsDecap,
		Interface: ifindex,
		Flags:     link.XDPDriverMode,
	})
	if err != nil {
		return nil, fmt.Errorf("attach decap to ifindex %d: %w", ifindex, err)
	}
	return l, nil
}

// AttachPersistent attaches the program to an interface through netlink, so
// it stays attached after this process exits, until DetachDecap. It does
// not replace another program: ErrForeignXDP if one is attached. Attaching
// the same program again is a no-op.
//
// Netlink attachment rather than a link pinned in bpffs: a bpffs pin lives
// in a mount namespace, and `ip netns exec` gives each command a private
// one, so the pin and with it the attachment would vanish when the command
// ends. An attachment made through netlink belongs to the interface.
func (d *Decap) AttachPersistent(ifindex int, mode XDPMode) error {
	flag, err := mode.flag()
	if err != nil {
		return fmt.Errorf("attach decap to ifindex %d: %w", ifindex, err)
	}
	err = setXDP(ifindex, d.objs.XvsDecap.FD(), -1, flag|unix.XDP_FLAGS_UPDATE_IF_NOEXIST)
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
		att, aerr := DecapAttachmentOf(ifindex)
		if aerr != nil {
			return fmt.Errorf("attach decap to ifindex %d: %w", ifindex, errors.Join(err, aerr))
		}
		info, ierr := d.objs.XvsDecap.Info()
		if ierr == nil {
			if id, ok := info.ID(); ok && uint32(id) == att.ProgID {
				return nil
			}
		}
		if !att.Ours {
			return fmt.Errorf("attach decap to ifindex %d: %w (program %q, id %d)", ifindex, ErrForeignXDP, att.Name, att.ProgID)
		}
		return fmt.Errorf("attach decap to ifindex %d: another decap instance (id %d) is attached: %w", ifindex, att.ProgID, err)
	}
	return fmt.Errorf("attach decap to ifindex %d in %v mode: %w", ifindex, mode, err)
}

// DecapAttachment describes the XDP program attached to an interface.
type DecapAttachment struct {
	Ifindex int
	ProgID  uint32  // 0: nothing attached
	Mode    XDPMode // valid when ProgID != 0
	Name    string  // the program's kernel name
	Ours    bool    // it is the decap program
}

// DecapAttachmentOf reports what XDP program, if any, runs on an interface.
func DecapAttachmentOf(ifindex int) (DecapAttachment, error) {
	a := DecapAttachment{Ifindex: ifindex}
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return a, fmt.Errorf("interface %d: %w", ifindex, err)
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached {
		return a, nil
	}
	switch x.AttachMode {
	case nl.XDP_ATTACHED_DRV:
		a.Mode = XDPModeDriver
	case nl.XDP_ATTACHED_SKB:
		a.Mode = XDPModeGeneric
	default:
		// Offloaded or several programs at once: not something xvs set up.
		a.ProgID = x.ProgId
		a.Name = "(multi/offload)"
		return a, nil
	}
	a.ProgID = x.ProgId
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId))
	if err != nil {
		return a, fmt.Errorf("interface %d: XDP program %d: %w", ifindex, x.ProgId, err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return a, fmt.Errorf("interface %d: XDP program %d info: %w", ifindex, x.ProgId, err)
	}
	a.Name = info.Name
	a.Ours = info.Name == DecapProgramName
	return a, nil
}

// OpenAttachedDecap opens the decap program attached to an interface and
// its maps, so a later process can change the VIPs or read the counters.
// ErrNoXDP if nothing is attached, ErrForeignXDP if it is another program.
func OpenAttachedDecap(ifindex int) (*Decap, error) {
	att, err := DecapAttachmentOf(ifindex)
	if err != nil {
		return nil, err
	}
	if att.ProgID == 0 {
		return nil, fmt.Errorf("interface %d: %w", ifindex, ErrNoXDP)
	}
	if !att.Ours {
		return nil, fmt.Errorf("interface %d: %w (program %q, id %d)", ifindex, ErrForeignXDP, att.Name, att.ProgID)
	}
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(att.ProgID))
	if err != nil {
		return nil, fmt.Errorf("interface %d: open decap program %d: %w", ifindex, att.ProgID, err)
	}
	d := &Decap{}
	d.objs.XvsDecap = prog
	fail := func(err error) (*Decap, error) {
		_ = d.Close()
		return nil, fmt.Errorf("interface %d: decap program %d: %w", ifindex, att.ProgID, err)
	}
	info, err := prog.Info()
	if err != nil {
		return fail(err)
	}
	ids, ok := info.MapIDs()
	if !ok {
		return fail(errors.New("kernel does not report the program's maps"))
	}
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			return fail(fmt.Errorf("open map %d: %w", id, err))
		}
		mi, err := m.Info()
		if err != nil {
			m.Close()
			return fail(fmt.Errorf("map %d info: %w", id, err))
		}
		var slot **ebpf.Map
		switch mi.Name {
		case decapMapDecapVips:
			slot = &d.objs.DecapVips
		case decapMapDecapVips6:
			slot = &d.objs.DecapVips6
		case decapMapDecapLocals:
			slot = &d.objs.DecapLocals
		case decapMapDecapLocals6:
			slot = &d.objs.DecapLocals6
		case decapMapDecapStats:
			slot = &d.objs.DecapStats
		}
		if slot == nil || *slot != nil {
			m.Close()
			continue
		}
		*slot = m
	}
	if d.objs.DecapVips == nil || d.objs.DecapVips6 == nil || d.objs.DecapLocals == nil ||
		d.objs.DecapLocals6 == nil || d.objs.DecapStats == nil {
		return fail(errors.New("maps missing: not a decap program of this version"))
	}
	return d, nil
}

// DetachDecap removes the decap program from an interface if it is the one
// attached there (nil if nothing is attached; ErrForeignXDP and no change if
// another program is). The removal names the program it expects, so a
// program attached meanwhile by someone else is never removed.
func DetachDecap(ifindex int) error {
	att, err := DecapAttachmentOf(ifindex)
	if err != nil {
		return err
	}
	if att.ProgID == 0 {
		return nil
	}
	if !att.Ours {
		return fmt.Errorf("detach decap from interface %d: %w (program %q, id %d)", ifindex, ErrForeignXDP, att.Name, att.ProgID)
	}
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(att.ProgID))
	if err != nil {
		return fmt.Errorf("detach decap from interface %d: open program %d: %w", ifindex, att.ProgID, err)
	}
	defer prog.Close()
	flag, err := att.Mode.flag()
	if err != nil {
		return fmt.Errorf("detach decap from interface %d: %w", ifindex, err)
	}
	if err := setXDP(ifindex, -1, prog.FD(), flag|unix.XDP_FLAGS_REPLACE); err != nil {
		return fmt.Errorf("detach decap from interface %d: %w", ifindex, err)
	}
	return nil
}

// setXDP is RTM_SETLINK with IFLA_XDP: fd -1 detaches; expected >= 0 makes
// the change conditional on that program being attached (XDP_FLAGS_REPLACE).
func setXDP(ifindex, fd, expected int, flags uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(ifindex)
	req.AddData(msg)
	attrs := nl.NewRtAttr(unix.IFLA_XDP|unix.NLA_F_NESTED, nil)
	attrs.AddRtAttr(nl.IFLA_XDP_FD, nl.Uint32Attr(uint32(int32(fd))))
	attrs.AddRtAttr(nl.IFLA_XDP_FLAGS, nl.Uint32Attr(flags))
	if expected >= 0 {
		attrs.AddRtAttr(unix.IFLA_XDP_EXPECTED_FD, nl.Uint32Attr(uint32(int32(expected))))
	}
	req.AddData(attrs)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

var present = uint8(1)

// AddVIP makes the program open tunnels to addr: an IPv4 VIP for IPv4 in
// IPv4 or IPv6, an IPv6 VIP for IPv6 in IPv4 or IPv6.
func (d *Decap) AddVIP(addr netip.Addr) error {
	addr = addr.Unmap()
	var err error
	switch {
	case addr.Is4():
		k := addr.As4()
		err = d.objs.DecapVips.Update(&k, &present, ebpf.UpdateAny)
	case addr.Is6():
		k := addr.As16()
		err = d.objs.DecapVips6.Update(&k, &present, ebpf.UpdateAny)
	default:
		return errors.New("decap: add VIP: invalid address")
	}
	if err != nil {
		return fmt.Errorf("decap: add VIP %v: %w", addr, err)
	}
	return nil
}

// DeleteVIP stops decapsulating for addr; deleting an absent VIP is not an
// error.
func (d *Decap) DeleteVIP(addr netip.Addr) error {
	addr = addr.Unmap()
	var err error
	switch {
	case addr.Is4():
		k := addr.As4()
		err = d.objs.DecapVips.Delete(&k)
	case addr.Is6():
		k := addr.As16()
		err = d.objs.DecapVips6.Delete(&k)
	default:
		return errors.New("decap: delete VIP: invalid address")
	}
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("decap: delete VIP %v: %w", addr, err)
	}
	return nil
}

// VIPs lists the VIPs, sorted.
func (d *Decap) VIPs() ([]netip.Addr, error) {
	l, err := addrsOf(d.objs.DecapVips, d.objs.DecapVips6)
	if err != nil {
		return nil, fmt.Errorf("decap: list VIPs: %w", err)
	}
	return l, nil
}

// SetLocals makes the set of host addresses that tunnels may be addressed
// to exactly addrs: IPv4 addresses for tunnels with an IPv4 outer header
// (decap_locals), IPv6 ones for an IPv6 outer header (decap_locals6).
// Addresses are added before stale ones go, so a kept address never
// disappears. An invalid address is refused before anything changes.
func (d *Decap) SetLocals(addrs []netip.Addr) error {
	var want4 [][4]byte
	var want6 [][16]byte
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case a.Is4():
			want4 = append(want4, a.As4())
		case a.Is6():
			want6 = append(want6, a.As16())
		default:
			return errors.New("decap: local address: invalid address")
		}
	}
	if err := syncKeys(d.objs.DecapLocals, want4, present); err != nil {
		return fmt.Errorf("decap: local IPv4 addresses: %w", err)
	}
	if err := syncKeys(d.objs.DecapLocals6, want6, present); err != nil {
		return fmt.Errorf("decap: local IPv6 addresses: %w", err)
	}
	return nil
}

// Locals lists the host addresses tunnels may be addressed to, IPv4 and
// IPv6, sorted.
func (d *Decap) Locals() ([]netip.Addr, error) {
	l, err := addrsOf(d.objs.DecapLocals, d.objs.DecapLocals6)
	if err != nil {
		return nil, fmt.Errorf("decap: list local addresses: %w", err)
	}
	return l, nil
}

// addrsOf lists the keys of an IPv4-keyed and an IPv6-keyed address set,
// sorted.
func addrsOf(m4, m6 *ebpf.Map) ([]netip.Addr, error) {
	var out []netip.Addr
	var k4 [4]byte
	var k6 [16]byte
	var v uint8
	it := m4.Iterate()
	for it.Next(&k4, &v) {
		out = append(out, netip.AddrFrom4(k4))
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	it = m6.Iterate()
	for it.Next(&k6, &v) {
		out = append(out, netip.AddrFrom16(k6))
	}
	if err := it.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}

// Counters reads the counters, summed over CPUs.
func (d *Decap) Counters() (DecapCounters, error) {
	var c DecapCounters
	dst := []*uint64{&c.Decapsulated, &c.Passed, &c.Malformed}
	for i, p := range dst {
		var per []uint64
		if err := d.objs.DecapStats.Lookup(uint32(i), &per); err != nil {
			return DecapCounters{}, fmt.Errorf("decap: counters map: %w", err)
		}
		for _, v := range per {
			*p += v
		}
	}
	return c, nil
}

// Close releases this process's handles on the program and maps. A
// persistent attachment keeps them alive in the kernel; links from Attach
// are closed separately by their owner.
func (d *Decap) Close() error { return d.objs.Close() }
