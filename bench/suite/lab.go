package suite

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xvs-lb/xvs/bench/benchxdp"
	"github.com/xvs-lb/xvs/bench/trace"
	"github.com/xvs-lb/xvs/internal/netlab"
)

// Placement says which CPU runs what. The default on a 2-CPU machine gives
// the forwarder's worker CPU 1, shared only with the sink (the
// generator-side veth's NAPI thread, an XDP drop of a few tens of ns per
// frame), and puts the director-side veth's NAPI thread (where the XDP
// program and the AF_XDP copy into UMEM run) on CPU 0 with the generator:
// the RX softirq on the other core than the worker, as in the reference
// set-up the issue quotes. Measured at 64 bytes, this placement gave
// xsk-null 0.78 Mpps where NAPI, worker and sink all on CPU 1 gave 0.22,
// worker on the generator's CPU 0.54, sink there 0.47. A sink on the
// generator's CPU starves: the generator gives way to it only when the
// scheduler asks.
type Placement struct {
	Gen, SinkNAPI, DirNAPI, Worker int
}

// DefaultPlacement is the placement described on Placement, collapsed onto
// CPU 0 on a single-CPU machine.
func DefaultPlacement() Placement {
	if runtime.NumCPU() < 2 {
		return Placement{}
	}
	return Placement{Gen: 0, SinkNAPI: 1, DirNAPI: 0, Worker: 1}
}

func (p Placement) String() string {
	return fmt.Sprintf("generator cpu%d, sink NAPI cpu%d, director NAPI cpu%d, forwarder worker cpu%d",
		p.Gen, p.SinkNAPI, p.DirNAPI, p.Worker)
}

// Real is one real server as the packet lab sees it: an address the
// director resolves to MAC through a permanent neighbour entry; the sink
// counts frames by that MAC.
type Real struct {
	Addr netip.Addr
	MAC  net.HardwareAddr
}

// Reals returns n real servers 198.18.1.1.. with MACs 02:00:c6:12:01:xx.
func Reals(n int) []Real {
	rs := make([]Real, n)
	for i := range rs {
		rs[i] = Real{
			Addr: netip.AddrFrom4([4]byte{198, 18, byte(1 + (i+1)/256), byte((i + 1) % 256)}),
			MAC:  net.HardwareAddr{0x02, 0x00, 0xc6, 0x12, byte(1 + i/256), byte(i % 256)},
		}
	}
	return rs
}

// LabMTU is the packet lab's veth MTU.
const LabMTU = 1600

// DirectorAddr is the director's own address in the packet lab.
var DirectorAddr = netip.MustParsePrefix("198.18.0.2/16")

// PacketLab is the replay topology:
//
//	ns gen: [generator → GenIf, sink on GenIf] ══veth══ ns dir: [DirIf, forwarder]
//
// The director forwards out of the interface frames came in on, as DR
// does on one wire, so the generator-side veth also stands for the real
// servers: its sink XDP program counts what comes back, per destination
// MAC. A veth peer needs an XDP program to take XDP_TX/redirected frames;
// the sink is that program on GenIf, the forwarder's on DirIf.
type PacketLab struct {
	Lab          *netlab.Lab
	Gen, Dir     *netlab.Host
	GenIf, DirIf string
	GenIdx       int // ifindex of GenIf in Gen
	DirIdx       int // ifindex of DirIf in Dir
	DirMAC       net.HardwareAddr
	Reals        []Real
	Place        Placement
	Sink         *benchxdp.Sink
	sinkLink     link.Link
	// Queues is the veth pair's queue count; with more than one, the
	// NAPI threads of both ends are spread over every CPU (NAPICPUs).
	Queues int
}

// NewPacketLab builds the topology with nreals real servers and one queue.
func NewPacketLab(tb netlab.TB, nreals int, place Placement) (*PacketLab, error) {
	return NewPacketLabQueues(tb, nreals, place, 1)
}

// NewPacketLabQueues builds the topology on a veth pair with queues RX and
// TX queues per end. A veth delivers an XDP-transmitted frame to the peer
// queue numbered by the sending CPU (modulo the queues): a generator
// thread per CPU feeds a queue each.
func NewPacketLabQueues(tb netlab.TB, nreals int, place Placement, queues int) (*PacketLab, error) {
	tb.Helper()
	l := netlab.New(tb)
	pl := &PacketLab{Lab: l, Gen: l.Host("gen"), Dir: l.Host("dir"), Place: place,
		DirMAC: trace.DirectorMAC, Reals: Reals(nreals), Queues: max(queues, 1)}
	// The lab prefix keeps interface (and so NAPI thread) names unique
	// across concurrent labs.
	pl.GenIf, pl.DirIf = l.Prefix+"g", l.Prefix+"d"
	nq := strconv.Itoa(pl.Queues)
	if out, err := exec.Command("ip", "link", "add", pl.GenIf, "numtxqueues", nq, "numrxqueues", nq, "netns", pl.Gen.Name, "type", "veth",
		"peer", "name", pl.DirIf, "numtxqueues", nq, "numrxqueues", nq, "netns", pl.Dir.Name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("packet lab: veth %s/%s: %w: %s", pl.GenIf, pl.DirIf, err, out)
	}
	cmds := []struct {
		h    *netlab.Host
		args []string
	}{
		// No IPv6: router and neighbour solicitations would be frames
		// nobody sent, spoiling the count.
		{pl.Gen, []string{"sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"}},
		{pl.Dir, []string{"sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"}},
		// MTU 1600: room for TUN's 20-byte IPIP header on a 1514-byte
		// frame, as on a tunnel-carrying underlay.
		{pl.Gen, []string{"ip", "link", "set", pl.GenIf, "address", trace.ClientMAC.String(), "mtu", strconv.Itoa(LabMTU), "up"}},
		{pl.Dir, []string{"ip", "link", "set", pl.DirIf, "address", pl.DirMAC.String(), "mtu", strconv.Itoa(LabMTU), "up"}},
		{pl.Dir, []string{"ip", "addr", "add", DirectorAddr.String(), "dev", pl.DirIf}},
	}
	for _, r := range pl.Reals {
		cmds = append(cmds, struct {
			h    *netlab.Host
			args []string
		}{pl.Dir, []string{"ip", "neigh", "replace", r.Addr.String(), "lladdr", r.MAC.String(), "dev", pl.DirIf, "nud", "permanent"}})
	}
	for _, c := range cmds {
		if out, err := c.h.Output(c.args[0], c.args[1:]...); err != nil {
			return nil, fmt.Errorf("packet lab: %w: %s", err, out)
		}
	}
	var err error
	if pl.GenIdx, err = ifindex(pl.Gen, pl.GenIf); err != nil {
		return nil, err
	}
	if pl.DirIdx, err = ifindex(pl.Dir, pl.DirIf); err != nil {
		return nil, err
	}
	if pl.Sink, err = benchxdp.LoadSink(); err != nil {
		return nil, err
	}
	tb.Cleanup(func() { pl.Sink.Close() })
	if err := pl.Gen.Do(func() error {
		pl.sinkLink, err = pl.Sink.Attach(pl.GenIdx)
		return err
	}); err != nil {
		return nil, fmt.Errorf("packet lab: %w", err)
	}
	tb.Cleanup(func() { pl.sinkLink.Close() })
	if err := Threaded(pl.Gen, pl.GenIf, pl.napiCPUs(place.SinkNAPI)...); err != nil {
		return nil, err
	}
	return pl, nil
}

func ifindex(h *netlab.Host, name string) (int, error) {
	var idx int
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		idx = ifi.Index
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ifindex of %s in %s: %w", name, h.Name, err)
	}
	return idx, nil
}

// napiCPUs is where the NAPI threads of one end go: cpu with one queue,
// one thread per CPU with several.
func (pl *PacketLab) napiCPUs(cpu int) []int {
	if pl.Queues <= 1 {
		return []int{cpu}
	}
	cpus := make([]int, runtime.NumCPU())
	for i := range cpus {
		cpus[i] = i
	}
	return cpus
}

// Threaded turns on threaded NAPI for ifname (veth has NAPI only while an
// XDP program is attached, so call it after attaching) and pins its NAPI
// kernel threads, one per queue, to cpus in turn (in thread creation
// order, which need not be queue order).
func Threaded(h *netlab.Host, ifname string, cpus ...int) error {
	if out, err := h.Output("sh", "-c", "echo 1 > /sys/class/net/"+ifname+"/threaded"); err != nil {
		return fmt.Errorf("threaded NAPI on %s: %w: %s", ifname, err, out)
	}
	pids, err := napiThreads(ifname)
	if err != nil {
		return err
	}
	if len(pids) == 0 {
		return fmt.Errorf("threaded NAPI on %s: no napi/%s-* kernel thread found", ifname, ifname)
	}
	slices.Sort(pids)
	for i, pid := range pids {
		cpu := cpus[i%len(cpus)]
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(pid, &set); err != nil {
			return fmt.Errorf("pin NAPI thread %d of %s to cpu%d: %w", pid, ifname, cpu, err)
		}
	}
	return nil
}

// napiThreads finds the kernel threads named napi/IFNAME-ID (the name is
// cut at 15 characters).
func napiThreads(ifname string) ([]int, error) {
	want := "napi/" + ifname + "-"
	if len(want) > 15 {
		want = want[:15]
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list threads: %w", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(string(b)), want) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// ethtoolStats reads `ethtool -S ifname` in h as name → value.
func ethtoolStats(h *netlab.Host, ifname string) (map[string]uint64, error) {
	out, err := h.Output("ethtool", "-S", ifname)
	if err != nil {
		return nil, err
	}
	m := map[string]uint64{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		m[strings.TrimSpace(k)] = n
	}
	return m, nil
}

// pinThread pins the calling OS thread to cpu and returns a function that
// restores its previous affinity. The caller holds runtime.LockOSThread.
func pinThread(cpu int) (restore func(), err error) {
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, fmt.Errorf("get affinity: %w", err)
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("pin to cpu%d: %w", cpu, err)
	}
	return func() { _ = unix.SchedSetaffinity(0, &old) }, nil
}
