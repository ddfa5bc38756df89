//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/xvs-lb/xvs/internal/netlab"
)

// TestDecapAttachments attaches the decap program to a veth every way the
// API offers and checks what the interface runs after each step: a BPF link
// (gone with the link), a persistent netlink attachment (idempotent,
// reopened by a later "process", removed by DetachDecap) in both modes, and
// refusal to touch someone else's XDP program.
func TestDecapAttachments(t *testing.T) {
	lab := netlab.New(t)
	h := lab.Host("rs")
	lab.Connect(h, lab.Bridge("br0"), "eth0", "198.18.0.11/24")
	d := dcLoadForTest(t)
	info, err := d.Program().Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()

	err = h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		idx := ifi.Index
		expect := func(step string, progID uint32, ours bool, mode XDPMode) error {
			a, err := DecapAttachmentOf(idx)
			if err != nil {
				return fmt.Errorf("%s: %w", step, err)
			}
			if a.ProgID != progID || a.Ours != ours || (progID != 0 && a.Mode != mode) {
				return fmt.Errorf("%s: attachment %+v, want prog %d ours=%v mode %v", step, a, progID, ours, mode)
			}
			return nil
		}

		if _, err := OpenAttachedDecap(idx); !errors.Is(err, ErrNoXDP) {
			return fmt.Errorf("OpenAttachedDecap on a bare interface: %v, want ErrNoXDP", err)
		}
		if err := DetachDecap(idx); err != nil {
			return fmt.Errorf("DetachDecap on a bare interface: %w", err)
		}

		l, err := d.Attach(idx)
		if err != nil {
			return err
		}
		if err := expect("bpf link", uint32(id), true, XDPModeDriver); err != nil {
			l.Close()
			return err
		}
		if err := l.Close(); err != nil {
			return err
		}
		if err := expect("link closed", 0, false, 0); err != nil {
			return err
		}

		for _, mode := range []XDPMode{XDPModeDriver, XDPModeGeneric} {
			if err := d.AttachPersistent(idx, mode); err != nil {
				return fmt.Errorf("%v: %w", mode, err)
			}
			if err := d.AttachPersistent(idx, mode); err != nil {
				return fmt.Errorf("%v: attaching twice: %w", mode, err)
			}
			if err := expect("persistent "+mode.String(), uint32(id), true, mode); err != nil {
				return err
			}
			// What a later xvs-rs run does: find the program, change a map.
			d2, err := OpenAttachedDecap(idx)
			if err != nil {
				return err
			}
			// Both locals maps are found by name, the IPv6 one included.
			locals, err := d2.Locals()
			if err != nil {
				d2.Close()
				return err
			}
			if want := []netip.Addr{decapLocal, decapLocal6}; !dcEqualAddrs(locals, want) {
				d2.Close()
				return fmt.Errorf("Locals after reopening = %v, want %v", locals, want)
			}
			extra := netip.MustParseAddr("198.18.0.102")
			err = d2.AddVIP(extra)
			d2.Close()
			if err != nil {
				return err
			}
			vips, err := d.VIPs()
			if err != nil {
				return err
			}
			if want := []netip.Addr{decapVIP, extra, decapVIP6}; !dcEqualAddrs(vips, want) {
				return fmt.Errorf("VIPs after reopening = %v, want %v", vips, want)
			}
			if err := d.DeleteVIP(extra); err != nil {
				return err
			}
			if err := DetachDecap(idx); err != nil {
				return err
			}
			if err := expect("detached "+mode.String(), 0, false, 0); err != nil {
				return err
			}
		}

		foreign, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name: "not_decap", Type: ebpf.XDP, License: "GPL",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
		})
		if err != nil {
			return err
		}
		defer foreign.Close()
		if err := setXDP(idx, foreign.FD(), -1, unix.XDP_FLAGS_DRV_MODE); err != nil {
			return fmt.Errorf("attach a foreign program: %w", err)
		}
		defer setXDP(idx, -1, -1, unix.XDP_FLAGS_DRV_MODE)
		if a, err := DecapAttachmentOf(idx); err != nil || a.Ours || a.Name != "not_decap" {
			return fmt.Errorf("foreign attachment = %+v, %v", a, err)
		}
		if err := d.AttachPersistent(idx, XDPModeDriver); !errors.Is(err, ErrForeignXDP) {
			return fmt.Errorf("AttachPersistent over a foreign program: %v, want ErrForeignXDP", err)
		}
		if err := DetachDecap(idx); !errors.Is(err, ErrForeignXDP) {
			return fmt.Errorf("DetachDecap of a foreign program: %v, want ErrForeignXDP", err)
		}
		if _, err := OpenAttachedDecap(idx); !errors.Is(err, ErrForeignXDP) {
			return fmt.Errorf("OpenAttachedDecap of a foreign program: %v, want ErrForeignXDP", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
