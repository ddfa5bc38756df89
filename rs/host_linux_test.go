package rs

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTunnelLocal: which interface addresses up hands the decap program as
// tunnel ends.
func TestTunnelLocal(t *testing.T) {
	tests := []struct {
		addr  string
		flags int
		want  bool
	}{
		{"198.18.0.11", 0, true},
		{"198.18.0.100", 0, true}, // a VIP on lo, as the kernel's tunnels accept it
		{"127.0.0.1", 0, false},
		{"127.0.0.2", 0, false},
		{"2001:db8::11", 0, true},
		{"2001:db8::11", unix.IFA_F_NODAD | unix.IFA_F_DEPRECATED, true},
		{"2001:db8::11", unix.IFA_F_TENTATIVE, true}, // becomes usable once DAD ends
		{"2001:db8::11", unix.IFA_F_DADFAILED | unix.IFA_F_TENTATIVE, false},
		{"fd00:db8::11", 0, true}, // unique-local
		{"fe80::1", 0, false},
		{"::1", 0, false},
		{"ff02::1", 0, false},
		{"::", 0, false},
	}
	for _, tt := range tests {
		if got := tunnelLocal(netip.MustParseAddr(tt.addr), tt.flags); got != tt.want {
			t.Errorf("tunnelLocal(%s, %#x) = %v, want %v", tt.addr, tt.flags, got, tt.want)
		}
	}
}
