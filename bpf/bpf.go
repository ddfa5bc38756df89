// Package bpf owns xvs's XDP programs and their maps: the director program
// that steers VIP traffic (and NAT replies) to the AF_XDP sockets and passes
// everything else to the kernel, and the real-server decap program.
//
// The C sources sit beside this file; bpf2go compiles them into the committed
// *_bpfel.go/.o files (`make generate`).
package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// ServiceKey names what the director claims: traffic to Addr with protocol
// Proto (6 TCP, 17 UDP, 132 SCTP) and destination Port; Port 0 claims every
// port of Addr.
type ServiceKey struct {
	Addr  netip.Addr
	Proto uint8
	Port  uint16
}

// RealKey names a NAT real server whose replies the dataplane must see:
// source Addr, Proto and source Port (0 = any port; Proto 1 or 58 claims
// the ICMP errors it sends).
type RealKey = ServiceKey

// Counters are the director program's per-CPU counters summed over CPUs.
// Every packet the program sees lands in exactly one of them.
type Counters struct {
	Redirected uint64 // handed to an AF_XDP socket
	Passed     uint64 // not for the dataplane: left to the kernel
	Malformed  uint64 // truncated or invalid headers: left to the kernel
	NoSocket   uint64 // for the dataplane, but no socket on that queue: left to the kernel
}

// Director is the loaded director program and its maps.
type Director struct {
	objs directorObjects
}

// LoadDirector loads the director program and creates its maps.
func LoadDirector() (*Director, error) {
	d := &Director{}
	if err := loadDirectorObjects(&d.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load director program: %+v", ve)
		}
		return nil, fmt.Errorf("load director program: %w", err)
	}
	return d, nil
}

// Program is the XDP program, for tests that run it with prog.Run.
func (d *Director) Program() *ebpf.Program { return d.objs.XvsDirector }

// Attach attaches the program to an interface in native (driver) mode
// through a BPF link: if the process dies, the kernel detaches it.
func (d *Director) Attach(ifindex int) (link.Link, error) {
	l, err := link.AttachXDP(link.XDPOptions{
		Program:   d.objs.XvsDirector,
		Interface: ifindex,
		Flags:     link.XDPDriverMode,
	})
	if err != nil {
		return nil, fmt.Errorf("attach director to ifindex %d: %w", ifindex, err)
	}
	return l, nil
}

func flowKey(k ServiceKey) directorFlowKey {
	var fk directorFlowKey
	// As16 of an IPv4 address is its IPv4-mapped form, as the program keys it.
	fk.Addr = k.Addr.Unmap().As16()
	// The program compares the port as it is on the wire.
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], k.Port)
	fk.Port = binary.NativeEndian.Uint16(p[:])
	fk.Proto = k.Proto
	return fk
}

// String prints a map key as address, port and protocol, for errors.
func (fk directorFlowKey) String() string {
	k := keyFromFlow(fk)
	return fmt.Sprintf("%v:%d/%d", k.Addr, k.Port, k.Proto)
}

func keyFromFlow(fk directorFlowKey) ServiceKey {
	var p [2]byte
	binary.NativeEndian.PutUint16(p[:], fk.Port)
	return ServiceKey{
		Addr:  netip.AddrFrom16(fk.Addr).Unmap(),
		Proto: fk.Proto,
		Port:  binary.BigEndian.Uint16(p[:]),
	}
}

// syncKeys makes hash map m hold exactly keys, each with value one:
// missing keys are added before stale ones are removed, so a key present in
// both the old and new set never disappears, even for an instant.
func syncKeys[K comparable, V any](m *ebpf.Map, keys []K, one V) error {
	want := make(map[K]struct{}, len(keys))
	for _, k := range keys {
		want[k] = struct{}{}
		if err := m.Update(&k, &one, ebpf.UpdateAny); err != nil {
			return fmt.Errorf("add %v: %w", k, err)
		}
	}
	var stale []K
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate: %w", err)
	}
	for _, k := range stale {
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %v: %w", k, err)
		}
	}
	return nil
}

// syncSet makes a flow-keyed map hold exactly keys.
func syncSet(m *ebpf.Map, keys []ServiceKey) error {
	fks := make([]directorFlowKey, 0, len(keys))
	for _, k := range keys {
		if !k.Addr.IsValid() {
			return fmt.Errorf("key %v: invalid address", k)
		}
		fks = append(fks, flowKey(k))
	}
	return syncKeys(m, fks, uint32(1))
}

// SetServices makes the services map hold exactly keys.
func (d *Director) SetServices(keys []ServiceKey) error {
	if err := syncSet(d.objs.Services, keys); err != nil {
		return fmt.Errorf("services map: %w", err)
	}
	return nil
}

// SetNATReals makes the nat_reals map hold exactly keys.
func (d *Director) SetNATReals(keys []RealKey) error {
	if err := syncSet(d.objs.NatReals, keys); err != nil {
		return fmt.Errorf("nat_reals map: %w", err)
	}
	return nil
}

// SetLocalAddrs makes the local_addrs map hold exactly addrs: the
// director's own addresses, whose traffic goes to the kernel unless a
// service claims it (replies to its health checks from NAT real servers).
func (d *Director) SetLocalAddrs(addrs []netip.Addr) error {
	keys := make([][16]byte, 0, len(addrs))
	for _, a := range addrs {
		keys = append(keys, a.Unmap().As16())
	}
	if err := syncKeys(d.objs.LocalAddrs, keys, uint32(1)); err != nil {
		return fmt.Errorf("local_addrs map: %w", err)
	}
	return nil
}

// RegisterSocket puts an AF_XDP socket into the XSKMAP slot of its RX queue.
func (d *Director) RegisterSocket(queue int, fd int) error {
	q, v := uint32(queue), uint32(fd)
	if err := d.objs.Xsks.Update(&q, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("xsks map: register queue %d: %w", queue, err)
	}
	return nil
}

// UnregisterSocket empties a queue's XSKMAP slot.
func (d *Director) UnregisterSocket(queue int) error {
	q := uint32(queue)
	if err := d.objs.Xsks.Delete(&q); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("xsks map: unregister queue %d: %w", queue, err)
	}
	return nil
}

// Counters reads the counters, summed over CPUs.
func (d *Director) Counters() (Counters, error) {
	var c Counters
	dst := []*uint64{&c.Redirected, &c.Passed, &c.Malformed, &c.NoSocket}
	for i, p := range dst {
		var per []uint64
		if err := d.objs.Counters.Lookup(uint32(i), &per); err != nil {
			return Counters{}, fmt.Errorf("counters map: %w", err)
		}
		for _, v := range per {
			*p += v
		}
	}
	return c, nil
}

// Close releases the program and maps. Links attached with Attach are
// closed separately by their owner.
func (d *Director) Close() error { return d.objs.Close() }
