package rs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// DefaultStatePath is where up records what it changed, for down.
const DefaultStatePath = "/run/xvs-rs/state.json"

// stateVersion is bumped when State changes incompatibly.
const stateVersion = 1

// ErrNoState: there is no state file, so there is nothing to restore.
var ErrNoState = errors.New("no state file")

// State is what up changed, so that down can undo exactly that: the
// original value of every sysctl it wrote, the addresses it added, the
// interfaces it attached the decap program to. Entries are recorded (and
// the file written) before the change is made, so a crash in the middle
// still leaves a state that down can undo.
type State struct {
	Version int `json:"version"`
	// NetNS identifies the network namespace (as in /proc/PID/ns/net) the
	// changes were made in; down refuses to apply a state elsewhere.
	NetNS string `json:"netns"`
	// Sysctls holds original values, in the order they were first changed.
	Sysctls []SavedSysctl `json:"sysctls,omitempty"`
	// VIPs are the addresses up added on lo (not those already there).
	VIPs []netip.Prefix `json:"vips,omitempty"`
	// Decap lists the interfaces up attached the decap program to.
	Decap []string `json:"decap,omitempty"`
	// TunnelUp is the ipip device up brought up (empty if none).
	TunnelUp string `json:"tunnel_up,omitempty"`
}

// SavedSysctl is a sysctl's value before up changed it. Key is its path
// under /proc/sys ("net/ipv4/conf/all/arp_ignore").
type SavedSysctl struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// original returns the recorded original value of key.
func (s *State) original(key string) (string, bool) {
	for _, v := range s.Sysctls {
		if v.Key == key {
			return v.Value, true
		}
	}
	return "", false
}

// changedAnything reports whether the state records a change to undo.
func (s *State) changedAnything() bool {
	return len(s.Sysctls) > 0 || len(s.VIPs) > 0 || len(s.Decap) > 0 || s.TunnelUp != ""
}

func (s *State) addedVIP(p netip.Prefix) bool { return slices.Contains(s.VIPs, p) }

// LoadState reads a state file; ErrNoState if there is none.
func LoadState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", path, ErrNoState)
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("state file %s: version %d, this xvs-rs understands %d", path, s.Version, stateVersion)
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	// Empty lists and absent ones mean the same.
	if len(s.Sysctls) == 0 {
		s.Sysctls = nil
	}
	if len(s.VIPs) == 0 {
		s.VIPs = nil
	}
	if len(s.Decap) == 0 {
		s.Decap = nil
	}
	return &s, nil
}

// savedKeyRE matches the sysctls up writes; down writes nothing else, even
// if the state file says so.
var savedKeyRE = regexp.MustCompile(`^net/ipv4/conf/[^/]{1,15}/(arp_ignore|arp_announce|rp_filter)$`)

func (s *State) validate() error {
	if s.NetNS == "" {
		return errors.New("no network namespace")
	}
	for _, v := range s.Sysctls {
		if !savedKeyRE.MatchString(v.Key) || strings.Contains(v.Key, "..") {
			return fmt.Errorf("sysctl %q is not one xvs-rs changes", v.Key)
		}
		if _, err := strconv.Atoi(v.Value); err != nil {
			return fmt.Errorf("sysctl %s: value %q is not a number", v.Key, v.Value)
		}
	}
	for _, p := range s.VIPs {
		if !p.IsValid() || p.Bits() != p.Addr().BitLen() {
			return fmt.Errorf("VIP %v is not a host address", p)
		}
	}
	for _, d := range s.Decap {
		if d == "" || len(d) > 15 || strings.ContainsAny(d, "/ ") {
			return fmt.Errorf("interface %q: not an interface name", d)
		}
	}
	if s.TunnelUp != "" && s.TunnelUp != tunnelDev {
		return fmt.Errorf("tunnel %q: xvs-rs only brings up %s", s.TunnelUp, tunnelDev)
	}
	return nil
}

// Save writes the state atomically (a temporary file renamed over the old
// one), so a crash never leaves a half-written state.
func (s *State) Save(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	b = append(b, '\n')
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	f, err := os.CreateTemp(dir, ".state-*")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	// No fsync: everything the state describes (sysctls, addresses, XDP
	// attachments) is gone after a power loss too; the rename alone keeps
	// the file whole if xvs-rs dies.
	_, werr := f.Write(b)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(f.Name(), 0o644)
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write state %s: %w", path, werr)
	}
	return nil
}
