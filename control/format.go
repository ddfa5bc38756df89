package control

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Format selects one of ipvsadm's listing layouts. The zero Format is
// plain "ipvsadm -L" with numeric hosts and port names when Names is set.
type Format struct {
	Numeric        bool // -n: numeric ports (hosts are always numeric, see below)
	Stats          bool // --stats
	Rate           bool // --rate
	Thresholds     bool // --thresholds
	PersistentConn bool // --persistent-conn
	TunInfo        bool // --tun-info
	Exact          bool // --exact: no K/M/G/T scaling
	NoSort         bool // --nosort: keep the daemon's order
	// Names turns ports into service names without -n, as ipvsadm does
	// with getservbyport. Hosts stay numeric: ipvsadm would resolve them
	// with reverse DNS, which a director's control tool should not wait
	// on, and the layout (widths, truncation) is the same either way.
	Names *PortNames
}

// WriteTimeouts writes ipvsadm -L --timeout.
func WriteTimeouts(w io.Writer, t Timeouts) error {
	_, err := fmt.Fprintf(w, "Timeout (tcp tcpfin udp): %d %d %d\n", t.TCP, t.TCPFin, t.UDP)
	return err
}

// WriteDaemons writes ipvsadm -L --daemon: one line per running role,
// master first. Like ipvsadm, it leaves out settings that are zero (a
// kernel too old to report them).
func WriteDaemons(w io.Writer, ds []SyncDaemon) error {
	bw := bufio.NewWriter(w)
	for _, role := range []SyncRole{SyncMaster, SyncBackup} {
		for i := range ds {
			d := &ds[i]
			if d.Role != role {
				continue
			}
			fmt.Fprintf(bw, "%s sync daemon (mcast=%s, syncid=%d", d.Role, d.Interface, d.SyncID)
			if d.MaxLen != 0 {
				fmt.Fprintf(bw, ", maxlen=%d", d.MaxLen)
			}
			if d.Group.IsValid() {
				fmt.Fprintf(bw, ", group=%s", d.Group)
			}
			if d.Port != 0 {
				fmt.Fprintf(bw, ", port=%d", d.Port)
			}
			if d.TTL != 0 {
				fmt.Fprintf(bw, ", ttl=%d", d.TTL)
			}
			bw.WriteString(")\n")
		}
	}
	return bw.Flush()
}

// WriteList writes ipvsadm -L: the version line, the column titles and
// every service with its real servers.
func WriteList(w io.Writer, info Info, svcs []Service, f Format) error {
	bw := bufio.NewWriter(w)
	if info == (Info{}) {
		info = DefaultInfo
	}
	fmt.Fprintf(bw, "IP Virtual Server version %s (size=%d)\n", info.Version, info.Size)
	writeTitle(bw, f)
	for _, i := range f.sorted(svcs) {
		writeService(bw, &svcs[i], f, false)
	}
	return bw.Flush()
}

// WriteService writes ipvsadm -L -t|-u|-f service: titles and one service,
// without the version line.
func WriteService(w io.Writer, svc *Service, f Format) error {
	bw := bufio.NewWriter(w)
	writeTitle(bw, f)
	writeService(bw, svc, f, false)
	return bw.Flush()
}

// WriteSave writes ipvsadm -S: one -A line per service followed by one -a
// line per real server, which ipvsadm -R reads back.
func WriteSave(w io.Writer, svcs []Service, f Format) error {
	bw := bufio.NewWriter(w)
	for _, i := range f.sorted(svcs) {
		writeService(bw, &svcs[i], f, true)
	}
	return bw.Flush()
}

// WriteConns writes ipvsadm -L -c.
func WriteConns(w io.Writer, conns []Conn, f Format) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("IPVS connection entries\n")
	if f.PersistentConn {
		fmt.Fprintf(bw, "pro expire %-11s %-18s %-18s %-18s %-16s %s\n",
			"state", "source", "virtual", "destination", "pe name", "pe_data")
	} else {
		fmt.Fprintf(bw, "pro expire %-11s %-18s %-18s %s\n",
			"state", "source", "virtual", "destination")
	}
	for i := range conns {
		c := &conns[i]
		secs := int64(c.Expire.Seconds())
		if secs < 0 {
			secs = 0
		}
		expire := fmt.Sprintf("%02d:%02d", secs/60, secs%60)
		fmt.Fprintf(bw, "%-3s %-6s %-11s %-18s %-18s %s\n", c.Proto, expire, c.State,
			f.addrPort(c.Source.Addr(), c.Source.Port(), c.Proto),
			f.addrPort(c.Virtual.Addr(), c.Virtual.Port(), c.Proto),
			f.addrPort(c.Destination.Addr(), c.Destination.Port(), c.Proto))
	}
	return bw.Flush()
}

// sorted yields the services' indexes in listing order.
func (f Format) sorted(svcs []Service) []int {
	idx := make([]int, len(svcs))
	for i := range idx {
		idx[i] = i
	}
	if !f.NoSort {
		slices.SortStableFunc(idx, func(a, b int) int {
			return svcs[a].ServiceKey.Compare(svcs[b].ServiceKey)
		})
	}
	return idx
}

func writeTitle(w *bufio.Writer, f Format) {
	switch {
	case f.Stats:
		fmt.Fprintf(w, "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
	case f.Rate:
		fmt.Fprintf(w, "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
	case f.Thresholds:
		fmt.Fprintf(w, "%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn")
	case f.PersistentConn:
		fmt.Fprintf(w, "%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn")
	case f.TunInfo:
		w.WriteString("Prot LocalAddress:Port Scheduler Flags\n" +
			"  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n")
	default:
		w.WriteString("Prot LocalAddress:Port Scheduler Flags\n" +
			"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
	}
}

// writeService writes one service and its real servers, as a listing
// (rule false) or as -S rules (rule true).
func writeService(w *bufio.Writer, s *Service, f Format, rule bool) {
	// ipvsadm lists fwmark services' real servers with TCP port names.
	nameProto := s.Proto
	if s.FWMark != 0 {
		nameProto = TCP
	}
	var name string
	switch {
	case s.FWMark != 0 && rule:
		name = fmt.Sprintf("-f %d", s.FWMark)
		if s.IPv6 {
			name += " -6"
		}
	case s.FWMark != 0:
		name = s.ServiceKey.String()
	case rule:
		name = protoSwitch(s.Proto) + " " + f.addrPort(s.Addr, s.Port, s.Proto)
	default:
		name = fmt.Sprintf("%-4s %s", s.Proto, f.addrPort(s.Addr, s.Port, s.Proto))
		if !s.Is6() {
			name = truncate(name, 33)
		}
	}
	flags := FlagNames(s.Sched, FlagBits(s.Flags))
	switch {
	case rule:
		fmt.Fprintf(w, "-A %s -s %s", name, s.Sched)
		if s.Persistent {
			fmt.Fprintf(w, " -p %d", s.Timeout)
			if s.Bits() != fullBits(s.Is6()) {
				w.WriteString(" -M " + maskString(s.Bits(), s.Is6()))
			}
		}
		if s.PE != "" {
			w.WriteString(" --pe " + s.PE)
		}
		if s.OnePacket {
			w.WriteString(" -o")
		}
		if len(flags) > 0 {
			w.WriteString(" -b " + strings.Join(flags, ","))
		}
	case f.Stats:
		fmt.Fprintf(w, "%-33s", name)
		f.largenums(w, s.Stats.Conns, s.Stats.InPkts, s.Stats.OutPkts, s.Stats.InBytes, s.Stats.OutBytes)
	case f.Rate:
		fmt.Fprintf(w, "%-33s", name)
		f.largenums(w, s.Rates.CPS, s.Rates.InPPS, s.Rates.OutPPS, s.Rates.InBPS, s.Rates.OutBPS)
	default:
		fmt.Fprintf(w, "%s %s", name, s.Sched)
		if len(flags) > 0 {
			w.WriteString(" (" + strings.Join(flags, ",") + ")")
		}
		if s.Persistent {
			fmt.Fprintf(w, " persistent %d", s.Timeout)
			if s.Bits() != fullBits(s.Is6()) {
				w.WriteString(" mask " + maskString(s.Bits(), s.Is6()))
			}
			if s.PE != "" {
				w.WriteString(" pe " + s.PE)
			}
		}
		if s.OnePacket {
			w.WriteString(" ops")
		}
	}
	w.WriteByte('\n')

	dests := s.Dests
	if !f.NoSort {
		dests = slices.Clone(dests)
		slices.SortStableFunc(dests, func(a, b Dest) int {
			if c := a.Addr.Compare(b.Addr); c != 0 {
				return c
			}
			return cmpInt(a.Port, b.Port)
		})
	}
	for i := range dests {
		d := &dests[i]
		dname := f.addrPort(d.Addr, d.Port, nameProto)
		if !rule && !d.Addr.Is6() {
			dname = truncate(dname, 28)
		}
		switch {
		case rule:
			fmt.Fprintf(w, "-a %s -r %s %s -w %d", name, dname, d.Method.Switch(), d.Weight)
			if d.Method == Tunnel {
				w.WriteString(" --tun-type ipip")
			}
			if d.Upper != 0 {
				fmt.Fprintf(w, " -x %d", d.Upper)
			}
			if d.Lower != 0 {
				fmt.Fprintf(w, " -y %d", d.Lower)
			}
			w.WriteByte('\n')
		case f.Stats:
			fmt.Fprintf(w, "  -> %-28s", dname)
			f.largenums(w, d.Stats.Conns, d.Stats.InPkts, d.Stats.OutPkts, d.Stats.InBytes, d.Stats.OutBytes)
			w.WriteByte('\n')
		case f.Rate:
			// ipvsadm prints the first three rates unscaled.
			fmt.Fprintf(w, "  -> %-28s %8d %8d %8d", dname, d.Rates.CPS, d.Rates.InPPS, d.Rates.OutPPS)
			f.largenums(w, d.Rates.InBPS, d.Rates.OutBPS)
			w.WriteByte('\n')
		case f.Thresholds:
			fmt.Fprintf(w, "  -> %-28s %-10d %-10d %-10d %-10d\n", dname, d.Upper, d.Lower, d.ActiveConns, d.InactConns)
		case f.PersistentConn:
			fmt.Fprintf(w, "  -> %-28s %-9d %-11d %-10d %-10d\n", dname, d.Weight, d.PersistConns, d.ActiveConns, d.InactConns)
		case f.TunInfo:
			ti := "n/a"
			if d.Method == Tunnel {
				ti = "ipip"
			}
			fmt.Fprintf(w, "  -> %-28s %-7s %-13s %-6d %-10d %-10d\n", dname, d.Method, ti, d.Weight, d.ActiveConns, d.InactConns)
		default:
			fmt.Fprintf(w, "  -> %-28s %-7s %-6d %-10d %-10d\n", dname, d.Method, d.Weight, d.ActiveConns, d.InactConns)
		}
	}
}

// Note: ipvsadm -S prints no -x/-y (thresholds are lost by a save and
// restore); writeService adds them only when set, so a plain setup saves
// byte for byte as ipvsadm does and a thresholded one survives -S | -R.

func protoSwitch(p Proto) string {
	switch p {
	case UDP:
		return "-u"
	case SCTP:
		return "--sctp-service"
	}
	return "-t"
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func fullBits(v6 bool) int {
	if v6 {
		return 128
	}
	return 32
}

// maskString spells a persistence mask as ipvsadm does: dotted quad for
// IPv4, prefix length for IPv6.
func maskString(bits int, v6 bool) string {
	if v6 {
		return strconv.Itoa(bits)
	}
	m := ^uint32(0) << (32 - bits)
	if bits == 0 {
		m = 0
	}
	return netip.AddrFrom4([4]byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}).String()
}

// addrPort spells an address and port as ipvsadm does: IPv6 in brackets,
// the port as a service name unless numeric output was asked for.
func (f Format) addrPort(a netip.Addr, port uint16, p Proto) string {
	host := a.String()
	if a.Is6() {
		host = "[" + host + "]"
	}
	if !f.Numeric && f.Names != nil {
		if n, ok := f.Names.Name(port, p); ok {
			return host + ":" + n
		}
	}
	return host + ":" + strconv.Itoa(int(port))
}

// largenums prints counters in 9-character columns; without Exact, large
// values are scaled to K, M, G or T (powers of 1000) as ipvsadm does.
func (f Format) largenums(w *bufio.Writer, vals ...uint64) {
	for _, v := range vals {
		w.WriteString(FormatLargeNum(v, f.Exact))
	}
}

// FormatLargeNum is one counter column of --stats/--rate.
func FormatLargeNum(v uint64, exact bool) string {
	switch {
	case exact:
		// One space before the number, at least 9 columns in all.
		return fmt.Sprintf("%9s", " "+strconv.FormatUint(v, 10))
	case v < 100_000_000:
		return fmt.Sprintf("%9d", v)
	case v < 1_000_000_000:
		return fmt.Sprintf("%8dK", v/1_000)
	case v < 100_000_000_000:
		return fmt.Sprintf("%8dM", v/1_000_000)
	case v < 100_000_000_000_000:
		return fmt.Sprintf("%8dG", v/1_000_000_000)
	}
	return fmt.Sprintf("%8dT", v/1_000_000_000_000)
}

// Scheduler flag bits: IPVS gives schedulers three flag bits; sh and mh
// name the first two.
const (
	flagBit1 uint8 = 1 << iota
	flagBit2
	flagBit3
)

// FlagBits maps scheduler flag names to IPVS's flag bits (unknown names
// are ignored; ParseSchedFlags rejects them).
func FlagBits(flags []string) uint8 {
	var b uint8
	for _, f := range flags {
		switch f {
		case FlagSHFallback, FlagMHFallback, "flag-1":
			b |= flagBit1
		case FlagSHPort, FlagMHPort, "flag-2":
			b |= flagBit2
		case "flag-3":
			b |= flagBit3
		}
	}
	return b
}

// FlagNames names flag bits for a scheduler, in ipvsadm's order.
func FlagNames(sched string, b uint8) []string {
	var out []string
	switch sched {
	case "sh", "mh":
		if b&flagBit1 != 0 {
			out = append(out, sched+"-fallback")
		}
		if b&flagBit2 != 0 {
			out = append(out, sched+"-port")
		}
	default:
		for i, n := range []string{"flag-1", "flag-2", "flag-3"} {
			if b&(1<<i) != 0 {
				out = append(out, n)
			}
		}
	}
	return out
}

// ParseSchedFlags reads ipvsadm -b's comma-separated list for a scheduler
// ("" meaning ipvsadm's default, wlc), returning the flags in canonical
// order. Errors are ipvsadm's.
func ParseSchedFlags(sched, arg string) ([]string, error) {
	if sched == "" {
		sched = "wlc"
	}
	var b uint8
	for _, fl := range strings.Split(arg, ",") {
		if fl == "" {
			continue // strtok skips empty fields
		}
		switch fl {
		case "flag-1":
			b |= flagBit1
		case "flag-2":
			b |= flagBit2
		case "flag-3":
			b |= flagBit3
		case FlagSHFallback, FlagSHPort, FlagMHFallback, FlagMHPort:
			if !strings.HasPrefix(fl, sched+"-") {
				return nil, fmt.Errorf("incompatible scheduler flag `%s'", fl)
			}
			b |= FlagBits([]string{fl})
		default:
			return nil, fmt.Errorf("invalid scheduler flag `%s'", fl)
		}
	}
	return FlagNames(sched, b), nil
}

// PortNames maps ports to service names and back, per protocol, as
// /etc/services does.
type PortNames struct {
	byPort map[portProto]string
	byName map[nameProto]uint16
}

type portProto struct {
	port  uint16
	proto string
}

type nameProto struct {
	name  string
	proto string
}

func protoKey(p Proto) string { return strings.ToLower(p.String()) }

// Name is the service name of a port ("http" for 80/tcp).
func (n *PortNames) Name(port uint16, p Proto) (string, bool) {
	if n == nil {
		return "", false
	}
	s, ok := n.byPort[portProto{port, protoKey(p)}]
	return s, ok
}

// Port is the port of a service name or alias.
func (n *PortNames) Port(name string, p Proto) (uint16, bool) {
	if n == nil {
		return 0, false
	}
	port, ok := n.byName[nameProto{name, protoKey(p)}]
	return port, ok
}

// ParsePortNames reads the /etc/services format: "name port/proto
// aliases... # comment". The first entry for a port wins, as with
// getservbyport.
func ParsePortNames(r io.Reader) (*PortNames, error) {
	n := &PortNames{byPort: map[portProto]string{}, byName: map[nameProto]uint16{}}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		portStr, proto, ok := strings.Cut(fields[1], "/")
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil {
			continue
		}
		proto = strings.ToLower(proto)
		pp := portProto{uint16(port), proto}
		if _, dup := n.byPort[pp]; !dup {
			n.byPort[pp] = fields[0]
		}
		names := append([]string{fields[0]}, fields[2:]...)
		for _, name := range names {
			np := nameProto{name, proto}
			if _, dup := n.byName[np]; !dup {
				n.byName[np] = uint16(port)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("services: %w", err)
	}
	return n, nil
}

// LoadPortNames reads a services file such as /etc/services.
func LoadPortNames(path string) (*PortNames, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n, err := ParsePortNames(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}
