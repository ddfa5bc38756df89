package main

import (
	"bytes"
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xvs-lb/xvs/control"
	"github.com/xvs-lb/xvs/control/controltest"
)

// daemon serves a controltest.Memory on a socket in a temporary directory.
func daemon(t *testing.T) (string, *controltest.Memory) {
	t.Helper()
	mem := controltest.NewMemory()
	path := filepath.Join(t.TempDir(), "xvsd.sock")
	srv, err := control.Listen(path, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path, mem
}

var testPortNames = func() *control.PortNames {
	n, err := control.ParsePortNames(strings.NewReader("http 80/tcp www\nhttps 443/tcp\ndomain 53/udp\n"))
	if err != nil {
		panic(err)
	}
	return n
}()

type result struct {
	stdout, stderr string
	code           int
}

// xvsadm runs the command as a user would, against the socket at path.
func xvsadm(t *testing.T, path, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{
		stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb,
		getenv: func(string) string { return "" },
		res:    fakeResolver{}, names: testPortNames,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, append([]string{"--control", path}, args...), e)
	return result{out.String(), errb.String(), code}
}

// must runs a command that has to succeed silently.
func must(t *testing.T, path string, args ...string) {
	t.Helper()
	if r := xvsadm(t, path, "", args...); r.code != 0 || r.stderr != "" || r.stdout != "" {
		t.Fatalf("xvsadm %q: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
	}
}

func TestEndToEnd(t *testing.T) {
	path, mem := daemon(t)
	must(t, path, "-A", "-t", "198.18.0.100:80", "-s", "wrr")
	must(t, path, "-a", "-t", "198.18.0.100:80", "-r", "198.18.0.11:80", "-g", "-w", "1")
	must(t, path, "-a", "-t", "198.18.0.100:80", "-r", "198.18.0.12", "-w", "2")
	must(t, path, "-e", "-t", "198.18.0.100:80", "-r", "198.18.0.11", "-w", "5")
	must(t, path, "-A", "-t", "198.18.0.100:443", "-s", "rr", "-p", "600", "-M", "255.255.255.0")
	must(t, path, "-a", "-t", "198.18.0.100:443", "-r", "198.18.0.11:8443", "-m")

	const wantLn = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  198.18.0.100:80 wrr
  -> 198.18.0.11:80               Route   5      0          0         
  -> 198.18.0.12:80               Route   2      0          0         
TCP  198.18.0.100:443 rr persistent 600 mask 255.255.255.0
  -> 198.18.0.11:8443             Masq    1      0          0         
`
	for _, args := range [][]string{{"-Ln"}, {"-ln"}, {"-L", "-n"}, {"--list", "--numeric"}} {
		if r := xvsadm(t, path, "", args...); r.code != 0 || r.stdout != wantLn {
			t.Errorf("xvsadm %q: exit %d stderr %q\n got:\n%s\nwant:\n%s", args, r.code, r.stderr, r.stdout, wantLn)
		}
	}
	// Without -n, ports are named.
	if r := xvsadm(t, path, ""); !strings.Contains(r.stdout, "TCP  198.18.0.100:http wrr\n") || r.code != 0 {
		t.Errorf("bare xvsadm: exit %d, stdout:\n%s", r.code, r.stdout)
	}

	errCases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"-A", "-t", "198.18.0.100:80", "-s", "rr"}, 255, "Service already exists"},
		{[]string{"-A", "-t", "198.18.0.100:81", "-s", "bogus"}, 255, "Scheduler or persistence engine not found"},
		{[]string{"-E", "-t", "198.18.0.100:81", "-s", "rr"}, 255, "No such service"},
		{[]string{"-D", "-t", "198.18.0.100:81"}, 255, "No such service"},
		{[]string{"-a", "-t", "198.18.0.100:80", "-r", "198.18.0.11"}, 255, "Destination already exists"},
		{[]string{"-a", "-t", "198.18.0.100:81", "-r", "198.18.0.11"}, 255, "Service not defined"},
		{[]string{"-e", "-t", "198.18.0.100:80", "-r", "198.18.0.13"}, 255, "No such destination"},
		{[]string{"-d", "-t", "198.18.0.100:80", "-r", "198.18.0.13"}, 255, "No such destination"},
		{[]string{"-d", "-t", "198.18.0.100:81", "-r", "198.18.0.11"}, 255, "Service not defined"},
		{[]string{"-Z", "-t", "198.18.0.100:81"}, 255, "No such service"},
		{[]string{"-L", "-t", "198.18.0.100:81"}, 1, "No such service"},
		{[]string{"-A", "-t", "198.18.0.100"}, 2, "Zero port specified for non-persistent service"},
		{[]string{"-n", "-L"}, 255, "Try `xvsadm -h' or 'xvsadm --help' for more information."},
	}
	for _, c := range errCases {
		r := xvsadm(t, path, "", c.args...)
		if r.code != c.code || r.stderr != c.msg+"\n" || r.stdout != "" {
			t.Errorf("xvsadm %q: exit %d stderr %q stdout %q; want exit %d stderr %q", c.args, r.code, r.stderr, r.stdout, c.code, c.msg)
		}
	}

	// One service.
	r := xvsadm(t, path, "", "-L", "-n", "-t", "198.18.0.100:443")
	wantOne := "Prot LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
		"TCP  198.18.0.100:443 rr persistent 600 mask 255.255.255.0\n" +
		"  -> 198.18.0.11:8443             Masq    1      0          0         \n"
	if r.code != 0 || r.stdout != wantOne {
		t.Errorf("-L -n -t: exit %d stderr %q\n%s", r.code, r.stderr, r.stdout)
	}

	// Edit a service: unset options go back to their defaults, as with ipvsadm -E.
	must(t, path, "-E", "-t", "198.18.0.100:443", "-s", "wlc")
	lr, err := mem.List(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range lr.Services {
		if s.Port == 443 && (s.Sched != "wlc" || s.Persistent || s.Netmask != 0 || len(s.Dests) != 1) {
			t.Errorf("after -E: %+v", s)
		}
	}

	// Timeouts.
	if r := xvsadm(t, path, "", "-L", "--timeout"); r.stdout != "Timeout (tcp tcpfin udp): 900 120 300\n" {
		t.Errorf("--timeout: %q %q", r.stdout, r.stderr)
	}
	must(t, path, "--set", "600", "0", "60")
	if r := xvsadm(t, path, "", "-L", "--timeout"); r.stdout != "Timeout (tcp tcpfin udp): 600 120 60\n" {
		t.Errorf("--timeout after --set: %q %q", r.stdout, r.stderr)
	}

	// Connections.
	mem.SetConns([]control.Conn{{Proto: control.TCP, Expire: 899 * time.Second, State: "ESTABLISHED",
		Source:      netip.MustParseAddrPort("198.18.0.10:40000"),
		Virtual:     netip.MustParseAddrPort("198.18.0.100:80"),
		Destination: netip.MustParseAddrPort("198.18.0.11:80")}})
	wantConns := "IPVS connection entries\n" +
		"pro expire state       source             virtual            destination\n" +
		"TCP 14:59  ESTABLISHED 198.18.0.10:40000  198.18.0.100:80    198.18.0.11:80\n"
	if r := xvsadm(t, path, "", "-Lnc"); r.stdout != wantConns || r.code != 0 {
		t.Errorf("-Lnc: exit %d %q\n%s", r.code, r.stderr, r.stdout)
	}

	// Zero, delete a real server, delete a service, clear.
	must(t, path, "-Z")
	must(t, path, "-d", "-t", "198.18.0.100:80", "-r", "198.18.0.12")
	must(t, path, "-D", "-t", "198.18.0.100:443")
	const wantAfter = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  198.18.0.100:80 wrr
  -> 198.18.0.11:80               Route   5      0          0         
`
	if r := xvsadm(t, path, "", "-Ln"); r.stdout != wantAfter {
		t.Errorf("after deletes:\n%s", r.stdout)
	}
	must(t, path, "-C")
	if r := xvsadm(t, path, "", "-Sn"); r.stdout != "" || r.code != 0 {
		t.Errorf("-Sn after -C: exit %d %q", r.code, r.stdout)
	}
	// One failed -Z -t above, one -Z here.
	if got := mem.Calls(control.OpZero); got != 2 {
		t.Errorf("Zero calls = %d, want 2", got)
	}
}

// TestSaveRestore checks that what -S prints, -R reads back to the same
// table: save, clear, restore, save again.
func TestSaveRestore(t *testing.T) {
	for _, numeric := range []bool{true, false} {
		path, _ := daemon(t)
		setup := [][]string{
			{"-A", "-t", "198.18.0.100:80", "-s", "wrr"},
			{"-a", "-t", "198.18.0.100:80", "-r", "198.18.0.11", "-w", "1"},
			{"-a", "-t", "198.18.0.100:80", "-r", "198.18.0.12", "-w", "2", "-x", "1000", "-y", "800"},
			{"-A", "-t", "198.18.0.100:443", "-s", "wlc", "-p", "600", "-M", "255.255.255.0"},
			{"-a", "-t", "198.18.0.100:443", "-r", "198.18.0.11:8443", "-m", "-w", "0"},
			{"-A", "-u", "198.18.0.100:53", "-s", "rr", "-o"},
			{"-a", "-u", "198.18.0.100:53", "-r", "198.18.0.11", "-i"},
			{"-A", "-t", "[2001:db8::100]:80", "-s", "wrr", "-p"},
			{"-a", "-t", "[2001:db8::100]:80", "-r", "[2001:db8::11]:80"},
			{"-a", "-t", "[2001:db8::100]:80", "-r", "198.18.0.12", "-i"},
			{"-A", "-f", "1", "-s", "sh", "-b", "sh-fallback,sh-port", "-p", "300"},
			{"-a", "-f", "1", "-r", "198.18.0.11"},
			{"-A", "-f", "2", "-6", "-s", "mh", "-p", "-M", "64", "-b", "mh-port"},
			{"-a", "-f", "2", "-6", "-r", "2001:db8::11", "-w", "3"},
			{"-A", "--sctp-service", "198.18.0.100:5000", "-s", "rr"},
		}
		for _, args := range setup {
			must(t, path, args...)
		}
		saveArgs := []string{"-S"}
		if numeric {
			saveArgs = []string{"-S", "-n"}
		}
		first := xvsadm(t, path, "", saveArgs...)
		if first.code != 0 || strings.Count(first.stdout, "\n") != len(setup) {
			t.Fatalf("%q: exit %d %q, %d lines for %d rules:\n%s", saveArgs, first.code, first.stderr,
				strings.Count(first.stdout, "\n"), len(setup), first.stdout)
		}
		must(t, path, "-C")
		if r := xvsadm(t, path, first.stdout, "-R"); r.code != 0 || r.stderr != "" {
			t.Fatalf("-R: exit %d %q", r.code, r.stderr)
		}
		second := xvsadm(t, path, "", saveArgs...)
		if second.stdout != first.stdout {
			t.Errorf("%q after -C and -R differs:\n--- first\n%s--- second\n%s", saveArgs, first.stdout, second.stdout)
		}
	}
}

func TestRestoreErrors(t *testing.T) {
	path, _ := daemon(t)
	// A failed op is reported and the rest still runs; the status says so.
	in := "# saved\n-A -t 198.18.0.100:80 -s rr\nipvsadm -A -t 198.18.0.100:80 -s rr\n\n-a -t 198.18.0.100:80 -r 198.18.0.11 # rs1\n"
	r := xvsadm(t, path, in, "-R")
	if r.code != 255 || r.stderr != "Service already exists\n" {
		t.Errorf("-R with a duplicate: exit %d stderr %q", r.code, r.stderr)
	}
	if s := xvsadm(t, path, "", "-Sn"); s.stdout != "-A -t 198.18.0.100:80 -s rr\n-a -t 198.18.0.100:80 -r 198.18.0.11:80 -g -w 1\n" {
		t.Errorf("after -R: %q", s.stdout)
	}
	// A usage error stops at once, with ipvsadm's status.
	r = xvsadm(t, path, "-A -t 198.18.0.100:81 -s rr -s wrr\n-A -t 198.18.0.100:82 -s rr\n", "-R")
	if r.code != 2 || r.stderr != "multiple 'scheduler' options specified\n" {
		t.Errorf("-R with a usage error: exit %d stderr %q", r.code, r.stderr)
	}
	r = xvsadm(t, path, "-R\n", "-R")
	if r.code != 255 {
		t.Errorf("-R inside -R: exit %d stderr %q", r.code, r.stderr)
	}
}

func TestNoDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	r := xvsadm(t, path, "", "-Ln")
	if r.code != 2 || !strings.HasPrefix(r.stderr, "Can't initialize ipvs: ") || !strings.Contains(r.stderr, path) {
		t.Errorf("no daemon: exit %d stderr %q", r.code, r.stderr)
	}
	// Help, version and usage errors need no daemon.
	if r := xvsadm(t, path, "", "-h"); r.code != 0 || !strings.Contains(r.stdout, "Usage:") {
		t.Errorf("-h: exit %d", r.code)
	}
	if r := xvsadm(t, path, "", "-v"); r.code != 0 || !strings.Contains(r.stdout, "ipvsadm v1.31") {
		t.Errorf("-v: exit %d %q", r.code, r.stdout)
	}
	// The sync daemon commands go to xvsd like the others.
	for _, args := range [][]string{{"--start-daemon", "master"}, {"--stop-daemon", "backup"}, {"-L", "--daemon"}} {
		if r := xvsadm(t, path, "", args...); r.code != 2 || !strings.HasPrefix(r.stderr, "Can't initialize ipvs: ") {
			t.Errorf("%q without xvsd: exit %d %q", args, r.code, r.stderr)
		}
	}
	if r := xvsadm(t, path, "", "--start-daemon", "primary"); r.code != 2 || r.stderr != "illegal start-daemon parameter specified\n" {
		t.Errorf("--start-daemon primary: exit %d %q", r.code, r.stderr)
	}
}

// TestDaemonCommands: --start-daemon, --stop-daemon and -L --daemon
// against a daemon with IPVS's rules, with ipvsadm's output and messages.
func TestDaemonCommands(t *testing.T) {
	path, mem := daemon(t)
	mem.SetInterfaces("eth0", "ens18")
	list := func() string {
		t.Helper()
		r := xvsadm(t, path, "", "-L", "--daemon")
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("-L --daemon: exit %d %q", r.code, r.stderr)
		}
		if rn := xvsadm(t, path, "", "-Ln", "--daemon"); rn.stdout != r.stdout {
			t.Errorf("-Ln --daemon %q differs from -L --daemon %q", rn.stdout, r.stdout)
		}
		return r.stdout
	}
	if got := list(); got != "" {
		t.Errorf("-L --daemon with none running: %q", got)
	}
	must(t, path, "--start-daemon", "master", "--mcast-interface", "ens18", "--syncid", "1")
	must(t, path, "--start-daemon", "backup", "--mcast-interface=ens18", "--syncid", "2")
	const both = "master sync daemon (mcast=ens18, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n" +
		"backup sync daemon (mcast=ens18, syncid=2, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
	if got := list(); got != both {
		t.Errorf("-L --daemon:\n got %q\nwant %q", got, both)
	}

	errCases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--start-daemon", "master", "--mcast-interface", "ens18"}, 255, "Daemon has already run"},
		// The interface is checked first, as in IPVS.
		{[]string{"--start-daemon", "master", "--mcast-interface", "eth9"}, 255, "No such device"},
		{[]string{"--start-daemon", "master", "--mcast-interface", "ens18", "--sync-maxlen", "70000"}, 2, "illegal sync-maxlen specified"},
	}
	for _, c := range errCases {
		r := xvsadm(t, path, "", c.args...)
		if r.code != c.code || r.stderr != c.msg+"\n" || r.stdout != "" {
			t.Errorf("xvsadm %q: exit %d stderr %q stdout %q; want exit %d stderr %q", c.args, r.code, r.stderr, r.stdout, c.code, c.msg)
		}
	}
	// Failed starts changed nothing.
	if got := list(); got != both {
		t.Errorf("-L --daemon after refused starts:\n got %q\nwant %q", got, both)
	}

	must(t, path, "--stop-daemon", "master")
	if r := xvsadm(t, path, "", "--stop-daemon", "master"); r.code != 255 || r.stderr != "No daemon is running\n" {
		t.Errorf("--stop-daemon master twice: exit %d %q", r.code, r.stderr)
	}
	if got, want := list(), "backup sync daemon (mcast=ens18, syncid=2, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"; got != want {
		t.Errorf("-L --daemon after stopping the master:\n got %q\nwant %q", got, want)
	}
	// Without --mcast-interface, ipvsadm's eth0; every option carried.
	must(t, path, "--start-daemon", "master", "--syncid", "9", "--sync-maxlen", "1000",
		"--mcast-group", "239.1.2.3", "--mcast-port", "9000", "--mcast-ttl", "4")
	if got, want := list(), "master sync daemon (mcast=eth0, syncid=9, maxlen=1000, group=239.1.2.3, port=9000, ttl=4)\n"+
		"backup sync daemon (mcast=ens18, syncid=2, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"; got != want {
		t.Errorf("-L --daemon:\n got %q\nwant %q", got, want)
	}
	// Restore runs daemon lines too (ipvsadm -R does).
	if r := xvsadm(t, path, "--stop-daemon master\n--stop-daemon backup\n", "-R"); r.code != 0 || r.stderr != "" {
		t.Errorf("-R stopping both: exit %d %q", r.code, r.stderr)
	}
	if got := list(); got != "" {
		t.Errorf("-L --daemon after stopping both: %q", got)
	}
	if n := mem.Calls(control.OpStartDaemon); n != 5 {
		t.Errorf("StartDaemon reached the daemon %d times, want 5 (the usage error never leaves xvsadm)", n)
	}
}

func TestControlPath(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "XVS_CONTROL" {
				return v
			}
			return ""
		}
	}
	cases := []struct {
		args    []string
		env     string
		path    string
		rest    []string
		wantErr bool
	}{
		{[]string{"-Ln"}, "", control.DefaultPath, []string{"-Ln"}, false},
		{[]string{"-Ln"}, "/tmp/e.sock", "/tmp/e.sock", []string{"-Ln"}, false},
		{[]string{"--control", "/tmp/a.sock", "-Ln"}, "/tmp/e.sock", "/tmp/a.sock", []string{"-Ln"}, false},
		{[]string{"-Ln", "--control=/tmp/b.sock"}, "", "/tmp/b.sock", []string{"-Ln"}, false},
		{[]string{"-Ln", "--control"}, "", "", nil, true},
		{[]string{"-A", "--", "--control", "x"}, "", control.DefaultPath, []string{"-A", "--", "--control", "x"}, false},
	}
	for _, c := range cases {
		path, rest, err := splitControl(c.args, env(c.env))
		if (err != nil) != c.wantErr || path != c.path || strings.Join(rest, " ") != strings.Join(c.rest, " ") {
			t.Errorf("splitControl(%q, %q) = %q, %q, %v; want %q, %q", c.args, c.env, path, rest, err, c.path, c.rest)
		}
	}
}
