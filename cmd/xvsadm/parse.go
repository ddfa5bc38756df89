package main

// ipvsadm parses its command line with popt, and scripts depend on popt's
// ways: the command must come first (-L -n, not -n -L), short options
// combine (-Ln, -Lnc, -At ADDR), -p takes an optional argument only when
// the next word does not start with '-' (-p 600, -p -s rr, -p600), loose
// words are collected for --set tcp tcpfin udp, and each mistake has its
// own message and exit status. pflag (and the standard flag package) can
// do neither the optional-argument rule nor command-first ordering, so
// this is a small dedicated parser that reproduces popt's behaviour for
// ipvsadm's option table.

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/xvs-lb/xvs/control"
)

// Exit statuses, as ipvsadm uses them.
const (
	exitOK      = 0
	exitFailed  = 1   // a listing failed (ipvsadm exit(1))
	exitUsage   = 2   // fail(2, ...): bad option values and combinations
	exitCommand = 255 // ipvsadm returns -1: popt errors, "Try -h", failed ops
)

// exitError ends the program with a message on stderr and a status.
type exitError struct {
	code int
	msg  string // printed followed by a newline; may be empty
}

func (e *exitError) Error() string { return e.msg }

func fail(format string, args ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, args...)}
}

// cmdKind is the command, in ipvsadm's order (which its option table and
// messages index).
type cmdKind int

const (
	cmdNone cmdKind = iota
	cmdAdd
	cmdEdit
	cmdDel
	cmdFlush
	cmdList
	cmdAddDest
	cmdDelDest
	cmdEditDest
	cmdTimeout
	cmdStartDaemon
	cmdStopDaemon
	cmdRestore
	cmdSave
	cmdZero
	cmdHelp    // -h: handled at once
	cmdVersion // -v: handled at once
)

var cmdNames = [...]string{
	cmdAdd: "add-service", cmdEdit: "edit-service", cmdDel: "delete-service",
	cmdFlush: "flush", cmdList: "list", cmdAddDest: "add-server",
	cmdDelDest: "delete-server", cmdEditDest: "edit-server", cmdTimeout: "set",
	cmdStartDaemon: "start-daemon", cmdStopDaemon: "stop-daemon",
	cmdRestore: "restore", cmdSave: "save", cmdZero: "zero",
}

// Options, in ipvsadm's order: the order decides which error is reported
// first when several options are wrong for a command.
type optIndex int

const (
	optNumeric optIndex = iota
	optConnection
	optService
	optScheduler
	optPersistent
	optNetmask
	optServer
	optForward
	optWeight
	optUThreshold
	optLThreshold
	optMcast
	optTimeout
	optDaemon
	optStats
	optRate
	optThresholds
	optPersistentConn
	optNoSort
	optSyncID
	optExact
	optOnePacket
	optPE
	optSchedFlags
	optMcastGroup
	optMcastPort
	optMcastTTL
	optSyncMaxLen
	optTunInfo
	optTunType
	optTunPort
	optTunNoCsum
	optTunCsum
	optTunRemCsum
	numOpts
)

var optNames = [numOpts]string{
	"numeric", "connection", "service-address", "scheduler", "persistent",
	"netmask", "real-server", "forwarding-method", "weight", "u-threshold",
	"l-threshold", "mcast-interface", "timeout", "daemon", "stats", "rate",
	"thresholds", "persistent-conn", "nosort", "syncid", "exact", "ops", "pe",
	"sched-flags", "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen",
	"tun-info", "tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum",
}

// legal says, per command, what each option is: '+' required, 'x'
// illegal, '1' at most one of the '1's, ' ' optional. Columns follow
// optIndex.
var legal = map[cmdKind]string{
	// One character per option, in optIndex order: -n -c service -s -p -M
	// -r forward -w -x -y, then the long-only options from mcast-interface on.
	cmdAdd:         "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
	cmdEdit:        "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
	cmdDel:         "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdFlush:       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdList:        " 11xxxxxxxxx11       xxxxxxx xxxxx",
	cmdAddDest:     "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
	cmdDelDest:     "xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdEditDest:    "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
	cmdTimeout:     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdStartDaemon: "xxxxxxxxxxx xxxxxxx xxxx    xxxxxx",
	cmdStopDaemon:  "xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx",
	cmdRestore:     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdSave:        " xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
	cmdZero:        "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
}

const (
	defaultSched      = "wlc"
	defaultPersistent = 360        // ipvsadm's IPVS_SVC_PERSISTENT_TIMEOUT (its man page says 300)
	maxTimeout        = 86400 * 31 // 31 days
	maxInt32          = 1<<31 - 1
)

// cmdline is a parsed ipvsadm command.
type cmdline struct {
	cmd      cmdKind
	opts     [numOpts]bool
	svc      control.Service
	svcAF6   bool // the service address family is IPv6 (netmask parsing depends on it)
	dest     control.Dest
	dest6    bool
	format   control.Format
	timeouts control.Timeouts
	sync     control.SyncDaemon // --start-daemon/--stop-daemon: role and settings
	tunType  string
}

// resolver turns names into addresses and ports, as ipvsadm does with
// gethostbyname and getservbyname.
type resolver interface {
	Host(name string) (netip.Addr, bool)
	Port(name string, p control.Proto) (uint16, bool)
}

// Popt's error texts.
const (
	poptBadOpt   = "unknown option"
	poptNoArg    = "missing argument"
	poptUnwanted = "option does not take an argument"
)

type argKind int

const (
	argNone argKind = iota
	argRequired
	argOptional
)

// option is one row of ipvsadm's option table.
type option struct {
	long  string
	short byte
	arg   argKind
	id    string // what parseArgs switches on: the short letter, or the long name
}

var options = []option{
	{"add-service", 'A', argNone, "A"},
	{"edit-service", 'E', argNone, "E"},
	{"delete-service", 'D', argNone, "D"},
	{"clear", 'C', argNone, "C"},
	{"list", 'L', argNone, "L"},
	{"list", 'l', argNone, "l"},
	{"zero", 'Z', argNone, "Z"},
	{"add-server", 'a', argNone, "a"},
	{"edit-server", 'e', argNone, "e"},
	{"delete-server", 'd', argNone, "d"},
	{"set", 0, argNone, "set"},
	{"help", 'h', argNone, "h"},
	{"version", 'v', argNone, "v"},
	{"restore", 'R', argNone, "R"},
	{"save", 'S', argNone, "S"},
	{"start-daemon", 0, argRequired, "start-daemon"},
	{"stop-daemon", 0, argRequired, "stop-daemon"},
	{"tcp-service", 't', argRequired, "t"},
	{"udp-service", 'u', argRequired, "u"},
	{"sctp-service", 0, argRequired, "sctp-service"},
	{"fwmark-service", 'f', argRequired, "f"},
	{"scheduler", 's', argRequired, "s"},
	{"persistent", 'p', argOptional, "p"},
	{"netmask", 'M', argRequired, "M"},
	{"real-server", 'r', argRequired, "r"},
	{"masquerading", 'm', argNone, "m"},
	{"ipip", 'i', argNone, "i"},
	{"gatewaying", 'g', argNone, "g"},
	{"weight", 'w', argRequired, "w"},
	{"u-threshold", 'x', argRequired, "x"},
	{"l-threshold", 'y', argRequired, "y"},
	{"numeric", 'n', argNone, "n"},
	{"connection", 'c', argNone, "c"},
	{"mcast-interface", 0, argRequired, "mcast-interface"},
	{"syncid", 0, argRequired, "syncid"},
	{"timeout", 0, argNone, "timeout"},
	{"daemon", 0, argNone, "daemon"},
	{"stats", 0, argNone, "stats"},
	{"rate", 0, argNone, "rate"},
	{"thresholds", 0, argNone, "thresholds"},
	{"persistent-conn", 0, argNone, "persistent-conn"},
	{"nosort", 0, argNone, "nosort"},
	{"sort", 0, argNone, "sort"},
	{"exact", 'X', argNone, "X"},
	{"ipv6", '6', argNone, "6"},
	{"ops", 'o', argNone, "o"},
	{"pe", 0, argRequired, "pe"},
	{"sched-flags", 'b', argRequired, "b"},
	{"mcast-group", 0, argRequired, "mcast-group"},
	{"mcast-port", 0, argRequired, "mcast-port"},
	{"mcast-ttl", 0, argRequired, "mcast-ttl"},
	{"sync-maxlen", 0, argRequired, "sync-maxlen"},
	{"tun-info", 0, argNone, "tun-info"},
	{"tun-type", 0, argRequired, "tun-type"},
	{"tun-port", 0, argRequired, "tun-port"},
	{"tun-nocsum", 0, argNone, "tun-nocsum"},
	{"tun-csum", 0, argNone, "tun-csum"},
	{"tun-remcsum", 0, argNone, "tun-remcsum"},
}

func findLong(name string) *option {
	for i := range options {
		if options[i].long == name {
			return &options[i]
		}
	}
	return nil
}

func findShort(c byte) *option {
	for i := range options {
		if options[i].short == c && c != 0 {
			return &options[i]
		}
	}
	return nil
}

// event is one option as popt hands it over: the option, its argument
// (hasArg false when an optional argument was absent), the word it came
// from (for messages), or a popt error.
type event struct {
	opt    *option
	arg    string
	hasArg bool
	word   string
	err    string
}

// scanner walks argv the way popt does.
type scanner struct {
	args     []string
	next     int
	cluster  string // rest of a short-option cluster
	word     string // the word the cluster came from
	leftover []string
	noMore   bool // after "--"
}

// scan returns the next option event, or ok false at the end.
func (s *scanner) scan() (ev event, ok bool) {
	for {
		if s.cluster != "" {
			c := s.cluster[0]
			s.cluster = s.cluster[1:]
			o := findShort(c)
			if o == nil {
				return event{word: s.word, err: poptBadOpt}, true
			}
			ev := event{opt: o, word: s.word}
			if o.arg == argNone {
				return ev, true
			}
			if s.cluster != "" {
				ev.arg, ev.hasArg, s.cluster = s.cluster, true, ""
				return ev, true
			}
			return s.nextArg(ev), true
		}
		if s.next >= len(s.args) {
			return event{}, false
		}
		w := s.args[s.next]
		s.next++
		switch {
		case s.noMore || len(w) < 2 || w[0] != '-':
			s.leftover = append(s.leftover, w)
		case w == "--":
			s.noMore = true
		case strings.HasPrefix(w, "--"):
			name, val, hasVal := strings.Cut(w[2:], "=")
			o := findLong(name)
			if o == nil {
				return event{word: w, err: poptBadOpt}, true
			}
			ev := event{opt: o, word: w}
			switch {
			case o.arg == argNone && hasVal:
				return event{word: w, err: poptUnwanted}, true
			case o.arg == argNone:
				return ev, true
			case hasVal:
				ev.arg, ev.hasArg = val, true
				return ev, true
			}
			return s.nextArg(ev), true
		default:
			s.cluster, s.word = w[1:], w
		}
	}
}

// nextArg takes the option's argument from the next word: always for a
// required argument, and for an optional one only if the word does not
// look like an option.
func (s *scanner) nextArg(ev event) event {
	if s.next >= len(s.args) {
		if ev.opt.arg == argRequired {
			return event{word: ev.word, err: poptNoArg}
		}
		return ev
	}
	w := s.args[s.next]
	if ev.opt.arg == argOptional && strings.HasPrefix(w, "-") {
		return ev
	}
	s.next++
	ev.arg, ev.hasArg = w, true
	return ev
}

// parseArgs parses one ipvsadm command line (without the program name).
// A non-nil error is an *exitError.
func parseArgs(args []string, res resolver) (*cmdline, error) {
	cl := &cmdline{}
	cl.dest.Weight = 1
	cl.dest.Method = control.Route
	sc := &scanner{args: args}
	tryHelp := &exitError{code: exitCommand, msg: "Try `xvsadm -h' or 'xvsadm --help' for more information."}

	ev, ok := sc.scan()
	if !ok || ev.err != "" {
		return nil, tryHelp
	}
	switch ev.opt.id {
	case "A":
		cl.cmd = cmdAdd
	case "E":
		cl.cmd = cmdEdit
	case "D":
		cl.cmd = cmdDel
	case "a":
		cl.cmd = cmdAddDest
	case "e":
		cl.cmd = cmdEditDest
	case "d":
		cl.cmd = cmdDelDest
	case "C":
		cl.cmd = cmdFlush
	case "L", "l":
		cl.cmd = cmdList
	case "Z":
		cl.cmd = cmdZero
	case "set":
		cl.cmd = cmdTimeout
	case "R":
		cl.cmd = cmdRestore
	case "S":
		cl.cmd = cmdSave
	case "start-daemon", "stop-daemon":
		cl.cmd = cmdStartDaemon
		if ev.opt.id == "stop-daemon" {
			cl.cmd = cmdStopDaemon
		}
		if ev.arg != "master" && ev.arg != "backup" {
			if cl.cmd == cmdStartDaemon {
				return nil, fail("illegal start-daemon parameter specified")
			}
			return nil, fail("illegal start_daemon specified")
		}
		cl.sync.Role = control.SyncMaster
		if ev.arg == "backup" {
			cl.sync.Role = control.SyncBackup
		}
	case "h":
		cl.cmd = cmdHelp
		return cl, nil
	case "v":
		cl.cmd = cmdVersion
		return cl, nil
	default:
		return nil, tryHelp
	}

	var schedFlags string
	for {
		ev, ok := sc.scan()
		if !ok {
			break
		}
		if ev.err != "" {
			return nil, &exitError{code: exitCommand, msg: ev.word + ": " + ev.err}
		}
		if err := cl.option(ev, res, &schedFlags); err != nil {
			return nil, err
		}
	}

	rest := sc.leftover
	if cl.cmd == cmdTimeout {
		if len(rest) < 3 {
			return nil, fail("--set option requires 3 timeout values")
		}
		var t [3]int
		for i := range t {
			v, err := parseTimeout(rest[i], 0)
			if err != nil {
				return nil, err
			}
			t[i] = v
		}
		cl.timeouts = control.Timeouts{TCP: t[0], TCPFin: t[1], UDP: t[2]}
		rest = rest[3:]
	}
	if len(rest) > 0 {
		return nil, fail("unexpected argument %s", rest[0])
	}
	if schedFlags != "" {
		flags, err := control.ParseSchedFlags(cl.svc.Sched, schedFlags)
		if err != nil {
			return nil, fail("%s", err.Error())
		}
		cl.svc.Flags = flags
	}
	if err := cl.check(); err != nil {
		return nil, err
	}
	return cl, nil
}

// set marks an option as given; ipvsadm refuses most options twice.
func (cl *cmdline) set(o optIndex) error {
	if cl.opts[o] {
		return fail("multiple '%s' options specified", optNames[o])
	}
	cl.opts[o] = true
	return nil
}

// option applies one option after the command.
func (cl *cmdline) option(ev event, res resolver, schedFlags *string) error {
	arg := ev.arg
	setOpt := cl.set
	switch ev.opt.id {
	case "t", "u", "sctp-service":
		if err := setOpt(optService); err != nil {
			return err
		}
		cl.svc.Proto = map[string]control.Proto{"t": control.TCP, "u": control.UDP, "sctp-service": control.SCTP}[ev.opt.id]
		addr, port, hasPort, ok := parseService(arg, cl.svc.Proto, res)
		if !ok {
			return fail("illegal virtual server address[:port] specified")
		}
		cl.svc.Addr = addr
		cl.svcAF6 = addr.Is6()
		if cl.svcAF6 {
			cl.svc.Netmask = 128
		}
		if hasPort {
			cl.svc.Port = port
		}
	case "f":
		if err := setOpt(optService); err != nil {
			return err
		}
		mark, err := strtol(arg)
		if err != nil || mark <= 0 || mark > 1<<32-1 {
			return fail("invalid fwmark value `%s' specified", arg)
		}
		cl.svc.FWMark = uint32(mark)
		cl.svcAF6 = false
	case "s":
		if err := setOpt(optScheduler); err != nil {
			return err
		}
		cl.svc.Sched = arg
	case "p":
		if err := setOpt(optPersistent); err != nil {
			return err
		}
		cl.svc.Persistent = true
		cl.svc.Timeout = defaultPersistent
		if ev.hasArg {
			v, err := parseTimeout(arg, 1)
			if err != nil {
				return err
			}
			cl.svc.Timeout = uint32(v)
		}
	case "M":
		if err := setOpt(optNetmask); err != nil {
			return err
		}
		if !cl.svcAF6 {
			bits, ok := parseMask4(arg, res)
			if !ok {
				return fail("illegal virtual server persistent mask specified")
			}
			cl.svc.Netmask = bits
		} else {
			bits := atoi(arg)
			if bits < 1 || bits > 128 {
				return fail("illegal ipv6 netmask specified")
			}
			cl.svc.Netmask = bits
		}
	case "r":
		if err := setOpt(optServer); err != nil {
			return err
		}
		proto := cl.svc.Proto
		if cl.svc.FWMark != 0 {
			proto = control.TCP
		}
		addr, port, hasPort, ok := parseService(arg, proto, res)
		if !ok {
			return fail("illegal real server address[:port] specified")
		}
		cl.dest.Addr = addr
		cl.dest6 = addr.Is6()
		cl.dest.Port = port
		if !hasPort {
			cl.dest.Port = cl.svc.Port
		}
	case "i", "g", "m":
		if err := setOpt(optForward); err != nil {
			return err
		}
		cl.dest.Method = map[string]control.Method{"i": control.Tunnel, "g": control.Route, "m": control.Masq}[ev.opt.id]
	case "w":
		if err := setOpt(optWeight); err != nil {
			return err
		}
		v, err := strtol(arg)
		if err != nil || v < 0 || v > 65535 {
			return fail("illegal weight specified")
		}
		cl.dest.Weight = int32(v)
	case "x", "y":
		o, name := optUThreshold, "u_threshold"
		if ev.opt.id == "y" {
			o, name = optLThreshold, "l_threshold"
		}
		if err := setOpt(o); err != nil {
			return err
		}
		v, err := strtol(arg)
		if err != nil || v < 0 || v > maxInt32 {
			return fail("illegal %s specified", name)
		}
		if o == optUThreshold {
			cl.dest.Upper = uint32(v)
		} else {
			cl.dest.Lower = uint32(v)
		}
	case "c":
		return setOpt(optConnection)
	case "n":
		cl.format.Numeric = true
		return setOpt(optNumeric)
	case "mcast-interface":
		cl.sync.Interface = arg
		return setOpt(optMcast)
	case "syncid":
		if err := setOpt(optSyncID); err != nil {
			return err
		}
		v, err := strtol(arg)
		if err != nil || v < 0 || v > 255 {
			return fail("illegal syncid specified")
		}
		cl.sync.SyncID = uint8(v)
	case "timeout":
		return setOpt(optTimeout)
	case "daemon":
		return setOpt(optDaemon)
	case "stats":
		cl.format.Stats = true
		return setOpt(optStats)
	case "rate":
		cl.format.Rate = true
		return setOpt(optRate)
	case "thresholds":
		cl.format.Thresholds = true
		return setOpt(optThresholds)
	case "persistent-conn":
		cl.format.PersistentConn = true
		return setOpt(optPersistentConn)
	case "nosort":
		cl.format.NoSort = true
		return setOpt(optNoSort)
	case "sort":
		// Sorting is the default; kept for compatibility, as in ipvsadm.
	case "X":
		cl.format.Exact = true
		return setOpt(optExact)
	case "6":
		if cl.svc.FWMark == 0 {
			return fail("-6 used before -f\n")
		}
		cl.svc.IPv6 = true
		cl.svcAF6 = true
		cl.svc.Netmask = 128
	case "o":
		cl.svc.OnePacket = true
		return setOpt(optOnePacket)
	case "pe":
		if err := setOpt(optPE); err != nil {
			return err
		}
		cl.svc.PE = arg
	case "b":
		if err := setOpt(optSchedFlags); err != nil {
			return err
		}
		*schedFlags = arg
	case "mcast-group":
		if err := setOpt(optMcastGroup); err != nil {
			return err
		}
		// inet_pton's rules: no zone, and an IPv4-mapped address is not
		// an IPv6 multicast address.
		a, err := netip.ParseAddr(arg)
		switch {
		case strings.Contains(arg, ":") && (err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" || !a.IsMulticast()):
			return fail("invalid IPv6 mcast-group `%s'", arg)
		case !strings.Contains(arg, ":") && (err != nil || !a.Is4() || !a.IsMulticast()):
			return fail("invalid IPv4 mcast-group `%s'", arg)
		}
		cl.sync.Group = a
	case "mcast-port", "mcast-ttl", "sync-maxlen", "tun-port":
		spec := map[string]struct {
			o    optIndex
			max  int64
			name string
		}{
			"mcast-port":  {optMcastPort, 65535, "mcast-port"},
			"mcast-ttl":   {optMcastTTL, 255, "mcast-ttl"},
			"sync-maxlen": {optSyncMaxLen, 65535 - 20 - 8, "sync-maxlen"},
			"tun-port":    {optTunPort, 65535, "tunnel port"},
		}[ev.opt.id]
		if err := setOpt(spec.o); err != nil {
			return err
		}
		v, err := strtol(arg)
		if err != nil || v < 1 || v > spec.max {
			return fail("illegal %s specified", spec.name)
		}
		switch spec.o {
		case optMcastPort:
			cl.sync.Port = uint16(v)
		case optMcastTTL:
			cl.sync.TTL = uint8(v)
		case optSyncMaxLen:
			cl.sync.MaxLen = int(v)
		}
	case "tun-info":
		cl.format.TunInfo = true
		return setOpt(optTunInfo)
	case "tun-type":
		if err := setOpt(optTunType); err != nil {
			return err
		}
		switch arg {
		case "ipip", "gue", "gre":
			cl.tunType = arg
		default:
			return fail("illegal tunnel type specified")
		}
	case "tun-nocsum":
		return setOpt(optTunNoCsum)
	case "tun-csum":
		return setOpt(optTunCsum)
	case "tun-remcsum":
		return setOpt(optTunRemCsum)
	default:
		// A second command, -h or -v after the command.
		return fail("invalid option `%s'", ev.word)
	}
	return nil
}

// check applies ipvsadm's checks that need the whole command line.
func (cl *cmdline) check() error {
	row := legal[cl.cmd]
	last, count := -1, 0
	for j := range numOpts {
		given, rule := cl.opts[j], row[j]
		switch {
		case !given && rule == '+':
			return fail("You need to supply the '%s' option for the '%s' command", optNames[j], cmdNames[cl.cmd])
		case given && rule == 'x':
			return fail("Illegal '%s' option with the '%s' command", optNames[j], cmdNames[cl.cmd])
		case given && rule == '1':
			count++
			if count == 1 {
				last = int(j)
				continue
			}
			return fail("The option '%s' conflicts with the '%s' option in the '%s' command", optNames[j], optNames[last], cmdNames[cl.cmd])
		}
	}

	switch cl.cmd {
	case cmdAdd, cmdEdit:
		if cl.svc.FWMark == 0 && cl.svc.Port == 0 && !cl.svc.Persistent {
			return fail("Zero port specified for non-persistent service")
		}
		if cl.svc.OnePacket && cl.svc.FWMark == 0 && cl.svc.Proto != control.UDP {
			return fail("One-Packet Scheduling is only for UDP virtual services")
		}
		if cl.svc.Sched == "" {
			cl.svc.Sched = defaultSched
		}
	case cmdAddDest, cmdEditDest:
		m := cl.dest.Method
		// Direct routing and tunnelling cannot change the port.
		if cl.svc.FWMark == 0 && (m == control.Tunnel || m == control.Route) {
			cl.dest.Port = cl.svc.Port
		}
		if cl.dest6 != cl.svcAF6 && m != control.Tunnel {
			return fail("Different address family is allowed only for tunneling servers")
		}
		tunOpts := cl.opts[optTunType] || cl.opts[optTunPort] || cl.opts[optTunNoCsum] || cl.opts[optTunCsum] || cl.opts[optTunRemCsum]
		if tunOpts && m != control.Tunnel {
			return fail("Tunnel options conflict with forward method")
		}
		if err := cl.checkTunnel(); err != nil {
			return err
		}
	case cmdStartDaemon:
		if cl.sync.Interface == "" {
			// ipvsadm's DEF_MCAST_IFN.
			cl.sync.Interface = control.DefaultSyncIface
		}
	case cmdList:
		o := cl.opts
		if ((o[optConnection] || o[optTimeout] || o[optDaemon]) && (o[optStats] || o[optRate] || o[optThresholds])) ||
			((o[optTimeout] || o[optDaemon]) && o[optPersistentConn]) {
			return fail("options conflicts in the list command")
		}
	}
	if cl.svc.FWMark != 0 {
		// The model keeps fwmark services free of protocol and address.
		cl.svc.Proto, cl.svc.Addr, cl.svc.Port = 0, netip.Addr{}, 0
	}
	if (cl.svcAF6 && cl.svc.Netmask == 128) || (!cl.svcAF6 && cl.svc.Netmask == 32) {
		cl.svc.Netmask = 0 // per client address, the default
	}
	return nil
}

// checkTunnel applies ipvsadm's tunnel-type table: ipip takes no tunnel
// options, gue needs a port and one checksum option, gre one of
// --tun-nocsum/--tun-csum. xvs itself only encapsulates in IPIP.
func (cl *cmdline) checkTunnel() error {
	typ := cl.tunType
	if typ == "" {
		typ = "ipip"
	}
	rules := map[string]string{"ipip": "xxxx", "gue": "+111", "gre": "x11x"}[typ]
	opts := []optIndex{optTunPort, optTunNoCsum, optTunCsum, optTunRemCsum}
	last, count := optIndex(-1), 0
	for j, o := range opts {
		given, rule := cl.opts[o], rules[j]
		switch {
		case !given && rule == '+':
			return fail("You need to supply the '%s' option for the '%s' tunnel type", optNames[o], typ)
		case given && rule == 'x':
			return fail("Illegal '%s' option with the '%s' tunnel type", optNames[o], typ)
		case given && rule == '1':
			count++
			if count == 1 {
				last = o
				continue
			}
			return fail("The option '%s' conflicts with the '%s' option in the '%s' tunnel type", optNames[o], optNames[last], typ)
		}
	}
	return nil
}

// strtol parses a decimal integer the way ipvsadm's string_to_number
// does: optional leading blanks and sign, then digits to the end.
func strtol(s string) (int64, error) {
	t := strings.TrimLeft(s, " \t\n\v\f\r")
	return strconv.ParseInt(t, 10, 64)
}

// atoi reads leading digits as C's atoi does ("64abc" is 64, "x" is 0).
func atoi(s string) int {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	n := 0
	for i := 0; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		n = n*10 + int(s[i]-'0')
		if n > 1<<20 {
			break // far outside any valid value
		}
	}
	if neg {
		return -n
	}
	return n
}

// parseTimeout reads a timeout in [min, 31 days].
func parseTimeout(s string, min int64) (int, error) {
	v, err := strtol(s)
	if err != nil || v < min || v > maxTimeout {
		return 0, fail("invalid timeout value `%s' specified", s)
	}
	return int(v), nil
}

// parseService reads host[:port], [v6addr]:port or a bare IPv6 address,
// as ipvsadm's parse_service does. ok is false where ipvsadm would say
// "illegal ... address[:port] specified".
func parseService(buf string, proto control.Proto, res resolver) (addr netip.Addr, port uint16, hasPort, ok bool) {
	if isDigits(buf) {
		return addr, 0, false, false
	}
	host, portStr := buf, ""
	hasPort = false
	if strings.HasPrefix(buf, "[") {
		end := strings.IndexByte(buf, ']')
		if end < 0 || !strings.HasPrefix(buf[end+1:], ":") {
			return addr, 0, false, false
		}
		host, portStr, hasPort = buf[1:end], buf[end+2:], true
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return addr, 0, false, false
		}
		addr = a
	} else if a, err := netip.ParseAddr(buf); err == nil && a.Is6() && a.Zone() == "" {
		addr = a
	} else {
		if i := strings.LastIndexByte(buf, ':'); i >= 0 {
			host, portStr, hasPort = buf[:i], buf[i+1:], true
		}
		a, err := netip.ParseAddr(host)
		switch {
		case err == nil && a.Is4():
			addr = a
		case err == nil:
			return addr, 0, false, false
		default:
			h, found := res.Host(host)
			if !found || !h.Is4() {
				return addr, 0, false, false
			}
			addr = h
		}
	}
	if hasPort {
		if v, err := strtol(portStr); err == nil && v >= 0 && v <= 65535 {
			port = uint16(v)
		} else if p, found := res.Port(portStr, proto); found && portStr != "" {
			port = p
		} else {
			return netip.Addr{}, 0, false, false
		}
	}
	return addr, port, hasPort, true
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseMask4 reads an IPv4 persistence mask (dotted quad or a name that
// resolves to one) and returns its prefix length. Masks with holes, which
// IPVS would accept, are refused: they are never what was meant.
func parseMask4(s string, res resolver) (int, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		h, found := res.Host(s)
		if !found {
			return 0, false
		}
		a = h
	}
	if !a.Is4() {
		return 0, false
	}
	b := a.As4()
	m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	bits := 0
	for bits < 32 && m&(1<<(31-bits)) != 0 {
		bits++
	}
	if bits < 32 && m<<bits != 0 {
		return 0, false
	}
	if bits == 0 {
		// 0.0.0.0 would send every client to one server; IPVS allows it.
		return 0, false
	}
	return bits, true
}
