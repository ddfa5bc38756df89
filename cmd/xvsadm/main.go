// Command xvsadm administers xvsd's virtual services with ipvsadm's
// command line and output formats, over xvsd's control socket: operators'
// habits and the scripts that parse ipvsadm keep working.
//
// Differences from ipvsadm: hosts are listed numerically even without -n
// (ports are still named from /etc/services); -S also saves -x/-y when set;
// -R stops with a non-zero status if any rule failed, not only the last.
// The connection sync daemon commands (--start-daemon, --stop-daemon,
// -L --daemon) drive xvsd's own sync daemon, which speaks IPVS's protocol.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/xvs-lb/xvs/control"
	"github.com/xvs-lb/xvs/scheduler"
)

const version = "xvsadm (xvs) speaking ipvsadm v1.31 (IPVS v1.2.1 compatible)"

func main() {
	names, _ := control.LoadPortNames("/etc/services") // without it, ports stay numeric
	e := &env{
		stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr,
		getenv: os.Getenv, res: sysResolver{names: names}, names: names,
	}
	os.Exit(run(context.Background(), os.Args[1:], e))
}

// env is what run needs from the outside world, replaceable in tests.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	res            resolver
	names          *control.PortNames
}

// sysResolver resolves names with the system resolver and /etc/services.
type sysResolver struct{ names *control.PortNames }

func (r sysResolver) Host(name string) (netip.Addr, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", name)
	if err != nil || len(addrs) == 0 {
		return netip.Addr{}, false
	}
	return addrs[0].Unmap(), true
}

func (r sysResolver) Port(name string, p control.Proto) (uint16, bool) { return r.names.Port(name, p) }

// session connects on first use, so that -h, -v and usage errors work
// without a daemon, and -R uses one connection for all its rules.
type session struct {
	path   string
	client *control.Client
}

func (s *session) get(ctx context.Context) (*control.Client, error) {
	if s.client != nil {
		return s.client, nil
	}
	c, err := control.Dial(ctx, s.path)
	if err != nil {
		return nil, &exitError{code: exitUsage, msg: fmt.Sprintf(
			"Can't initialize ipvs: %v\nAre you sure that xvsd is running with its control socket at %s?", err, s.path)}
	}
	s.client = c
	return c, nil
}

func (s *session) close() {
	if s.client != nil {
		s.client.Close()
	}
}

// splitControl removes xvs's own --control PATH (anywhere on the line)
// from ipvsadm's arguments.
func splitControl(args []string, getenv func(string) string) (path string, rest []string, err error) {
	path = getenv("XVS_CONTROL")
	if path == "" {
		path = control.DefaultPath
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return path, append(rest, args[i:]...), nil
		case a == "--control":
			if i+1 >= len(args) {
				return "", nil, &exitError{code: exitCommand, msg: "--control: missing argument"}
			}
			path = args[i+1]
			i++
		case strings.HasPrefix(a, "--control="):
			path = strings.TrimPrefix(a, "--control=")
		default:
			rest = append(rest, a)
		}
	}
	return path, rest, nil
}

// run is xvsadm: it returns the exit status.
func run(ctx context.Context, args []string, e *env) int {
	path, args, err := splitControl(args, e.getenv)
	if err != nil {
		return report(e, err)
	}
	s := &session{path: path}
	defer s.close()
	if len(args) == 0 {
		// Bare ipvsadm lists the table.
		return report(e, execute(ctx, s, &cmdline{cmd: cmdList}, e))
	}
	cl, err := parseArgs(args, e.res)
	if err != nil {
		return report(e, err)
	}
	switch cl.cmd {
	case cmdHelp:
		fmt.Fprint(e.stdout, usage)
		return exitOK
	case cmdVersion:
		fmt.Fprintln(e.stdout, version)
		return exitOK
	case cmdRestore:
		return report(e, restore(ctx, s, e))
	}
	return report(e, execute(ctx, s, cl, e))
}

// report prints an error as ipvsadm would and turns it into a status.
func report(e *env, err error) int {
	if err == nil {
		return exitOK
	}
	var xe *exitError
	if errors.As(err, &xe) {
		if xe.msg != "" {
			fmt.Fprintln(e.stderr, xe.msg)
		}
		return xe.code
	}
	fmt.Fprintln(e.stderr, err)
	return exitCommand
}

// opFailed reports a failed op with ipvsadm's message.
func opFailed(err error, code int) error {
	var oe *control.OpError
	if errors.As(err, &oe) {
		return &exitError{code: code, msg: oe.Message()}
	}
	var xe *exitError
	if errors.As(err, &xe) {
		return xe
	}
	return &exitError{code: code, msg: err.Error()}
}

// opTimeout bounds one exchange with xvsd, so that a stuck daemon makes
// xvsadm fail instead of hang.
const opTimeout = 30 * time.Second

// execute runs one parsed command (not -h, -v, -R).
func execute(ctx context.Context, s *session, cl *cmdline, e *env) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	f := cl.format
	if !f.Numeric {
		f.Names = e.names
	}
	key := cl.svc.ServiceKey
	if cl.cmd == cmdAdd || cl.cmd == cmdEdit {
		// xvsd answers the same for a name it does not know; checking
		// here saves the round trip.
		if !slices.Contains(scheduler.Names(), cl.svc.Sched) {
			return &exitError{code: exitCommand, msg: control.Message(control.OpAddService, control.CodeNoScheduler)}
		}
	}
	c, err := s.get(ctx)
	if err != nil {
		return err
	}
	switch cl.cmd {
	case cmdList:
		return list(ctx, c, cl, f, e.stdout)
	case cmdSave:
		lr, err := c.List(ctx, nil)
		if err != nil {
			return opFailed(err, exitFailed)
		}
		return control.WriteSave(e.stdout, lr.Services, f)
	case cmdFlush:
		err = c.Clear(ctx)
	case cmdAdd:
		err = c.AddService(ctx, cl.svc)
	case cmdEdit:
		err = c.EditService(ctx, cl.svc)
	case cmdDel:
		err = c.DelService(ctx, key)
	case cmdZero:
		if cl.opts[optService] {
			err = c.Zero(ctx, &key)
		} else {
			err = c.Zero(ctx, nil)
		}
	case cmdAddDest:
		err = c.AddDest(ctx, key, cl.dest)
	case cmdEditDest:
		err = c.EditDest(ctx, key, cl.dest)
	case cmdDelDest:
		err = c.DelDest(ctx, key, cl.dest.Key())
	case cmdTimeout:
		err = c.SetTimeouts(ctx, cl.timeouts)
	case cmdStartDaemon:
		err = c.StartDaemon(ctx, cl.sync)
	case cmdStopDaemon:
		err = c.StopDaemon(ctx, cl.sync.Role)
	default:
		return &exitError{code: exitCommand, msg: fmt.Sprintf("command %d: not handled", cl.cmd)}
	}
	if err != nil {
		return opFailed(err, exitCommand)
	}
	return nil
}

func list(ctx context.Context, c *control.Client, cl *cmdline, f control.Format, w io.Writer) error {
	switch {
	case cl.opts[optConnection]:
		conns, err := c.Conns(ctx)
		if err != nil {
			return opFailed(err, exitFailed)
		}
		return control.WriteConns(w, conns, f)
	case cl.opts[optService]:
		key := cl.svc.ServiceKey
		lr, err := c.List(ctx, &key)
		if err != nil {
			return opFailed(err, exitFailed)
		}
		if len(lr.Services) == 0 {
			return &exitError{code: exitFailed, msg: control.Message(control.OpList, control.CodeNoService)}
		}
		return control.WriteService(w, &lr.Services[0], f)
	case cl.opts[optTimeout]:
		t, err := c.GetTimeouts(ctx)
		if err != nil {
			return opFailed(err, exitFailed)
		}
		return control.WriteTimeouts(w, t)
	case cl.opts[optDaemon]:
		ds, err := c.Daemons(ctx)
		if err != nil {
			return opFailed(err, exitFailed)
		}
		return control.WriteDaemons(w, ds)
	}
	lr, err := c.List(ctx, nil)
	if err != nil {
		return opFailed(err, exitFailed)
	}
	return control.WriteList(w, lr.Info, lr.Services, f)
}

// restore applies the rules -S printed, read from stdin, one command line
// per line. Like ipvsadm, a usage error stops at once; a failed op is
// reported and the next line runs.
func restore(ctx context.Context, s *session, e *env) error {
	sc := bufio.NewScanner(e.stdin)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	failed := false
	for sc.Scan() {
		args := restoreWords(sc.Text())
		if len(args) == 0 {
			continue
		}
		cl, err := parseArgs(args, e.res)
		if err != nil {
			return err
		}
		switch cl.cmd {
		case cmdRestore, cmdHelp, cmdVersion:
			// ipvsadm refuses -R inside -R (it would loop on stdin).
			return &exitError{code: exitCommand, msg: "Try `xvsadm -h' or 'xvsadm --help' for more information."}
		}
		if err := execute(ctx, s, cl, e); err != nil {
			var xe *exitError
			if errors.As(err, &xe) && xe.code == exitUsage {
				return err
			}
			report(e, err)
			failed = true
		}
	}
	if err := sc.Err(); err != nil {
		return &exitError{code: exitFailed, msg: fmt.Sprintf("reading rules from stdin: %v", err)}
	}
	if failed {
		return &exitError{code: exitCommand}
	}
	return nil
}

// restoreWords splits one rule line into arguments: words separated by
// blanks, the program name dropped wherever it appears (ipvsadm-save
// output may carry it), and everything from a word starting with '#' on
// ignored.
func restoreWords(line string) []string {
	var args []string
	for _, w := range strings.Fields(line) {
		if strings.HasPrefix(w, "#") {
			break
		}
		if w == "ipvsadm" || w == "xvsadm" {
			continue
		}
		args = append(args, w)
	}
	return args
}

const usage = version + `
Usage:
  xvsadm -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe persistence_engine] [-b sched-flags]
  xvsadm -D virtual-service
  xvsadm -C
  xvsadm -R
  xvsadm -S [-n]
  xvsadm -a|e virtual-service -r server-address [options]
  xvsadm -d virtual-service -r server-address
  xvsadm -L|l [virtual-service] [options]
  xvsadm -Z [virtual-service]
  xvsadm --set tcp tcpfin udp
  xvsadm --start-daemon {master|backup} [daemon-options]
  xvsadm --stop-daemon {master|backup}
  xvsadm -h

virtual-service:
  --tcp-service|-t service-address   host[:port]; IPv6 as [addr]:port
  --udp-service|-u service-address
  --sctp-service   service-address
  --fwmark-service|-f fwmark         an integer > 0, with -6 for IPv6

Commands (long or short):
  --add-service     -A        add a virtual service
  --edit-service    -E        change a virtual service's settings
  --delete-service  -D        delete a virtual service
  --clear           -C        delete every virtual service
  --restore         -R        read rules (as -S prints them) from stdin
  --save            -S        print the rules to stdout
  --add-server      -a        add a real server to a virtual service
  --edit-server     -e        change a real server's settings
  --delete-server   -d        remove a real server
  --list            -L|-l     list the table
  --zero            -Z        zero the counters of one or all services
  --set tcp tcpfin udp        set the connection timeouts
  --start-daemon              start a connection sync daemon role
  --stop-daemon               stop a connection sync daemon role
  --help            -h        this text
  --version         -v        the version

Options:
  --scheduler      -s scheduler      rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos (default wlc)
  --persistent     -p [timeout]      persistent service (default timeout 360 s)
  --netmask        -M netmask        persistence granularity (IPv6: prefix length)
  --sched-flags    -b flags          sh-fallback,sh-port / mh-fallback,mh-port / flag-1..3
  --ops            -o                one-packet scheduling (UDP)
  --real-server    -r server-address host[:port]
  --gatewaying     -g                direct routing (default)
  --ipip           -i                IPIP tunnelling
  --masquerading   -m                NAT
  --weight         -w weight         0..65535 (default 1)
  --u-threshold    -x uthreshold     upper connection threshold
  --l-threshold    -y lthreshold     lower connection threshold
  --numeric        -n                numeric ports in listings
  --connection     -c                list the connection table
  --timeout                          list the timeouts (tcp tcpfin udp)
  --stats                            list counters
  --rate                             list rates
  --exact                            counters without K/M/G/T scaling
  --thresholds                       list thresholds
  --persistent-conn                  list persistent connections
  --tun-info                         list tunnel details
  --nosort, --sort                   keep the daemon's order / sort (default)
  --daemon                           list the running sync daemon roles

Daemon options:
  --mcast-interface interface        multicast interface (default eth0)
  --syncid sid                       sync ID, 0..255 (default 0; a backup with 0 accepts all)
  --sync-maxlen length               largest sync message (default: MTU less headers, 1472)
  --mcast-group address              IPv4/IPv6 group (default 224.0.0.81)
  --mcast-port port                  UDP port (default 8848)
  --mcast-ttl ttl                    multicast TTL (default 1)

xvs options:
  --control PATH                     control socket (default /run/xvsd.sock, or $XVS_CONTROL)
`
