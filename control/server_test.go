package control_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xvs-lb/xvs/control"
	"github.com/xvs-lb/xvs/control/controltest"
)

func serve(t testing.TB) (string, *controltest.Memory) {
	t.Helper()
	mem := controltest.NewMemory()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	srv, err := control.Listen(path, mem, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left behind after Close: %v", err)
		}
	})
	return path, mem
}

func dial(t testing.TB, path string) *control.Client {
	t.Helper()
	c, err := control.Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSocketMode(t *testing.T) {
	path, _ := serve(t)
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, want socket 0600", fi.Mode())
	}
	// No temporary directory is left next to it.
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the socket", len(ents))
	}
}

func TestListenExisting(t *testing.T) {
	dir := t.TempDir()
	mem := controltest.NewMemory()

	// A stale socket (its daemon gone) is replaced.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	srv, err := control.Listen(stale, mem, nil)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	go srv.Serve()
	defer srv.Close()

	// A live one is not.
	if _, err := control.Listen(stale, mem, nil); err == nil || !strings.Contains(err.Error(), "another daemon") {
		t.Errorf("Listen over a live socket: %v", err)
	}
	// Nor is a regular file.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := control.Listen(file, mem, nil); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a file: %v", err)
	}
}

var (
	vip  = netip.MustParseAddr("198.18.0.100")
	web  = control.ServiceKey{Proto: control.TCP, Addr: vip, Port: 80}
	rs1  = control.Dest{Addr: netip.MustParseAddr("198.18.0.11"), Port: 80, Method: control.Route, Weight: 1}
	rs2  = control.Dest{Addr: netip.MustParseAddr("198.18.0.12"), Port: 80, Method: control.Route, Weight: 2}
	nope = control.ServiceKey{Proto: control.UDP, Addr: vip, Port: 80}
)

func TestClientOps(t *testing.T) {
	path, mem := serve(t)
	c := dial(t, path)
	ctx := context.Background()
	check := func(what string, err, want error, msg string) {
		t.Helper()
		if !errors.Is(err, want) && !(err == nil && want == nil) {
			t.Errorf("%s: err = %v, want %v", what, err, want)
			return
		}
		var oe *control.OpError
		if want != nil && (!errors.As(err, &oe) || oe.Message() != msg) {
			t.Errorf("%s: message = %q, want %q", what, oe.Message(), msg)
		}
	}
	check("AddService", c.AddService(ctx, control.Service{ServiceKey: web, Sched: "wrr"}), nil, "")
	check("AddService again", c.AddService(ctx, control.Service{ServiceKey: web, Sched: "wrr"}), control.ErrServiceExists, "Service already exists")
	check("AddService bad sched", c.AddService(ctx, control.Service{ServiceKey: nope, Sched: "nosuch"}), control.ErrNoScheduler, "Scheduler or persistence engine not found")
	check("EditService missing", c.EditService(ctx, control.Service{ServiceKey: nope, Sched: "rr"}), control.ErrNoService, "No such service")
	check("AddDest", c.AddDest(ctx, web, rs1), nil, "")
	check("AddDest 2", c.AddDest(ctx, web, rs2), nil, "")
	check("AddDest again", c.AddDest(ctx, web, rs1), control.ErrDestExists, "Destination already exists")
	check("AddDest no service", c.AddDest(ctx, nope, rs1), control.ErrNoService, "Service not defined")
	edited := rs1
	edited.Weight = 0
	check("EditDest", c.EditDest(ctx, web, edited), nil, "")
	check("EditDest missing", c.EditDest(ctx, web, control.Dest{Addr: netip.MustParseAddr("198.18.0.13"), Port: 80}), control.ErrNoDest, "No such destination")

	lr, err := c.List(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lr.Info != control.DefaultInfo || len(lr.Services) != 1 || len(lr.Services[0].Dests) != 2 ||
		lr.Services[0].Dests[0].Weight != 0 || lr.Services[0].Dests[1] != rs2 {
		t.Errorf("List = %+v", lr)
	}
	if _, err := c.List(ctx, &nope); !errors.Is(err, control.ErrNoService) {
		t.Errorf("List(missing) err = %v", err)
	}
	one, err := c.List(ctx, &web)
	if err != nil || len(one.Services) != 1 || one.Services[0].ServiceKey != web {
		t.Errorf("List(web) = %+v, %v", one, err)
	}

	check("DelDest", c.DelDest(ctx, web, rs2.Key()), nil, "")
	check("DelDest again", c.DelDest(ctx, web, rs2.Key()), control.ErrNoDest, "No such destination")
	check("Zero all", c.Zero(ctx, nil), nil, "")
	check("Zero missing", c.Zero(ctx, &nope), control.ErrNoService, "No such service")

	check("SetTimeouts", c.SetTimeouts(ctx, control.Timeouts{TCP: 600}), nil, "")
	if to, err := c.GetTimeouts(ctx); err != nil || to != (control.Timeouts{TCP: 600, TCPFin: 120, UDP: 300}) {
		t.Errorf("GetTimeouts = %+v, %v", to, err)
	}
	conn := control.Conn{Proto: control.UDP, Expire: 4 * time.Minute, State: "UDP",
		Source: netip.MustParseAddrPort("198.18.0.10:5353"), Virtual: netip.MustParseAddrPort("198.18.0.100:53"),
		Destination: netip.MustParseAddrPort("198.18.0.11:53")}
	mem.SetConns([]control.Conn{conn})
	if cs, err := c.Conns(ctx); err != nil || len(cs) != 1 || cs[0] != conn {
		t.Errorf("Conns = %+v, %v", cs, err)
	}
	// The sync daemon: one master and one backup at most, IPVS's messages.
	mem.SetInterfaces("eth0")
	check("StartDaemon", c.StartDaemon(ctx, control.SyncDaemon{Role: control.SyncMaster, Interface: "eth0", SyncID: 7}), nil, "")
	check("StartDaemon again", c.StartDaemon(ctx, control.SyncDaemon{Role: control.SyncMaster, Interface: "eth0"}), control.ErrDaemonRunning, "Daemon has already run")
	check("StartDaemon no device", c.StartDaemon(ctx, control.SyncDaemon{Role: control.SyncBackup, Interface: "eth9"}), control.ErrNoDevice, "No such device")
	check("StopDaemon backup", c.StopDaemon(ctx, control.SyncBackup), control.ErrNoDaemon, "No daemon is running")
	ds, err := c.Daemons(ctx)
	want := control.SyncDaemon{Role: control.SyncMaster, Interface: "eth0", SyncID: 7, MaxLen: 1472,
		Group: control.DefaultSyncGroup, Port: control.DefaultSyncPort, TTL: control.DefaultSyncTTL}
	if err != nil || len(ds) != 1 || ds[0] != want {
		t.Errorf("Daemons = %+v, %v; want [%+v]", ds, err, want)
	}
	check("StopDaemon master", c.StopDaemon(ctx, control.SyncMaster), nil, "")
	if ds, err := c.Daemons(ctx); err != nil || len(ds) != 0 {
		t.Errorf("Daemons after stop = %+v, %v", ds, err)
	}

	check("DelService", c.DelService(ctx, web), nil, "")
	check("DelService again", c.DelService(ctx, web), control.ErrNoService, "No such service")
	check("Clear", c.Clear(ctx), nil, "")
}

func TestDecodeRequest(t *testing.T) {
	cases := []struct {
		line string
		ok   bool
	}{
		{`{"v":1,"op":"Clear"}`, true},
		{`{"v":1,"op":"List"}`, true},
		{`{"v":1,"op":"List","service":{"proto":"tcp","addr":"198.18.0.100","port":80}}`, true},
		{`{"v":1,"op":"AddService","service":{"proto":"tcp","addr":"198.18.0.100","port":80,"sched":"wrr"}}`, true},
		{`{"v":1,"op":"AddService","service":{"fwmark":1,"ipv6":true,"sched":"sh","flags":["sh-port"]}}`, true},
		{`{"v":1,"op":"AddDest","service":{"proto":"udp","addr":"2001:db8::100","port":53},"dest":{"addr":"2001:db8::11","port":53,"method":"Tunnel","weight":1}}`, true},
		{`{"v":1,"op":"SetTimeouts","timeouts":{"tcp":900,"tcpfin":120,"udp":300}}`, true},
		{``, false},
		{`{`, false},
		{`[]`, false},
		{`{"v":2,"op":"Clear"}`, false},
		{`{"op":"Clear"}`, false},
		{`{"v":1,"op":"Reboot"}`, false},
		{`{"v":1,"op":"Clear","extra":1}`, false},
		{`{"v":1,"op":"Clear"} {"v":1,"op":"Clear"}`, false},
		{`{"v":1,"op":"AddService"}`, false},
		{`{"v":1,"op":"AddService","service":{"proto":"icmp","addr":"198.18.0.100","port":80}}`, false},
		{`{"v":1,"op":"AddService","service":{"proto":"tcp","port":80}}`, false},
		{`{"v":1,"op":"AddService","service":{"fwmark":1,"addr":"198.18.0.100"}}`, false},
		{`{"v":1,"op":"AddService","service":{"proto":"tcp","addr":"fe80::1%eth0","port":80}}`, false},
		{`{"v":1,"op":"AddService","service":{"proto":"tcp","addr":"198.18.0.100","port":65536}}`, false},
		{`{"v":1,"op":"AddDest","service":{"proto":"tcp","addr":"198.18.0.100","port":80}}`, false},
		{`{"v":1,"op":"AddDest","service":{"proto":"tcp","addr":"198.18.0.100","port":80},"dest":{"port":80}}`, false},
		{`{"v":1,"op":"AddDest","service":{"proto":"tcp","addr":"198.18.0.100","port":80},"dest":{"addr":"198.18.0.11","method":"Carrier pigeon"}}`, false},
		{`{"v":1,"op":"SetTimeouts"}`, false},
		{`{"v":1,"op":"SetTimeouts","timeouts":{"tcp":-1,"tcpfin":0,"udp":0}}`, false},
		{`{"v":1,"op":"StartDaemon","daemon":{"role":"master","mcast_ifn":"eth0","syncid":1}}`, true},
		{`{"v":1,"op":"StartDaemon","daemon":{"role":"backup","mcast_ifn":"eth0","syncid":0,"maxlen":1472,"group":"ff02::8848","port":8848,"ttl":1}}`, true},
		{`{"v":1,"op":"StopDaemon","daemon":{"role":"backup"}}`, true},
		{`{"v":1,"op":"Daemons"}`, true},
		{`{"v":1,"op":"StartDaemon"}`, false},
		{`{"v":1,"op":"StopDaemon","daemon":{}}`, false},
		{`{"v":1,"op":"StartDaemon","daemon":{"role":"primary","mcast_ifn":"eth0"}}`, false},
		{`{"v":1,"op":"StartDaemon","daemon":{"role":"master","mcast_ifn":"eth0","syncid":256}}`, false},
		{`{"v":1,"op":"StartDaemon","daemon":{"role":"master","mcast_ifn":"eth0","port":65536}}`, false},
	}
	for _, c := range cases {
		_, err := control.DecodeRequest([]byte(c.line))
		if (err == nil) != c.ok {
			t.Errorf("DecodeRequest(%s): err = %v, want ok %v", c.line, err, c.ok)
		}
	}
}

// rawConn talks to the server without the Client, to send what a client
// would not.
func rawConn(t *testing.T, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c, bufio.NewReader(c)
}

func TestServerBadRequests(t *testing.T) {
	path, _ := serve(t)

	// Several requests on one connection, then a malformed one closes it.
	c, r := rawConn(t, path)
	for range 3 {
		if _, err := c.Write([]byte(`{"v":1,"op":"GetTimeouts"}` + "\n")); err != nil {
			t.Fatal(err)
		}
		var resp control.Response
		line, err := r.ReadBytes('\n')
		if err != nil || json.Unmarshal(line, &resp) != nil || resp.Timeouts == nil || resp.Code != "" {
			t.Fatalf("GetTimeouts: %q, %v", line, err)
		}
	}
	c.Write([]byte("not json\n"))
	line, err := r.ReadBytes('\n')
	var resp control.Response
	if err != nil || json.Unmarshal(line, &resp) != nil || resp.Code != control.CodeInvalid {
		t.Fatalf("bad line: %q, %v", line, err)
	}
	if _, err := r.ReadBytes('\n'); err == nil {
		t.Errorf("connection still open after a malformed request")
	}

	// An over-long line is refused without reading it all into memory.
	c2, r2 := rawConn(t, path)
	go c2.Write(append(bytes.Repeat([]byte("x"), control.MaxRequestSize+10), '\n'))
	line, err = r2.ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &resp) != nil || resp.Code != control.CodeInvalid ||
		!strings.Contains(resp.Error, "longer than") {
		t.Errorf("long line: %q, %v", line, err)
	}
}

func TestOpErrorIs(t *testing.T) {
	e := &control.OpError{Op: control.OpAddDest, Code: control.CodeNoService, Detail: "x"}
	if !errors.Is(e, control.ErrNoService) || errors.Is(e, control.ErrNoDest) {
		t.Errorf("OpError.Is: wrong match")
	}
	if e.Message() != "Service not defined" {
		t.Errorf("Message = %q", e.Message())
	}
	if got := control.CodeOf(errors.Join(errors.New("a"), control.ErrDestExists)); got != control.CodeDestExists {
		t.Errorf("CodeOf = %q", got)
	}
	if got := control.CodeOf(errors.New("boom")); got != control.CodeFailed {
		t.Errorf("CodeOf(other) = %q", got)
	}
	generic := &control.OpError{Op: control.OpClear, Code: control.CodeFailed, Detail: "disk on fire"}
	if generic.Message() != "disk on fire" {
		t.Errorf("generic Message = %q", generic.Message())
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"op":"Clear"}`,
		`{"v":1,"op":"List","service":{"proto":"tcp","addr":"198.18.0.100","port":80}}`,
		`{"v":1,"op":"AddService","service":{"fwmark":1,"ipv6":true,"sched":"sh","flags":["sh-port"],"persistent":true,"timeout":300,"netmask":64}}`,
		`{"v":1,"op":"EditDest","service":{"proto":"udp","addr":"2001:db8::100","port":53},"dest":{"addr":"2001:db8::11","port":53,"method":"Masq","weight":1,"upper":5}}`,
		`{"v":1,"op":"DelDest","service":{"proto":"sctp","addr":"198.18.0.100","port":5000},"dest":{"addr":"198.18.0.11"}}`,
		`{"v":1,"op":"SetTimeouts","timeouts":{"tcp":900,"tcpfin":120,"udp":300}}`,
		`{"v":1,"op":"Zero"}`,
		`{"v":1,"op":"StartDaemon","daemon":{"role":"backup","mcast_ifn":"eth0","syncid":5,"maxlen":1472,"group":"224.0.0.81","port":8848,"ttl":1}}`,
		`{"v":1,"op":"StopDaemon","daemon":{"role":"master"}}`,
		`{"v":1,"op":"Daemons"}`,
	} {
		f.Add([]byte(s))
	}
	mem := controltest.NewMemory()
	f.Fuzz(func(t *testing.T, line []byte) {
		req, err := control.DecodeRequest(line)
		if err != nil {
			return
		}
		// A request that decodes is safe to hand to a Handler.
		resp, err := control.Dispatch(context.Background(), mem, req)
		if err == nil {
			if _, err := json.Marshal(resp); err != nil {
				t.Fatalf("response does not encode: %v", err)
			}
		}
	})
}

func BenchmarkClientList(b *testing.B) {
	path, mem := serve(b)
	svcs := make([]control.Service, 0, 16)
	for i := range 16 {
		k := web
		k.Port = uint16(8000 + i)
		svcs = append(svcs, control.Service{ServiceKey: k, Sched: "wrr", Dests: []control.Dest{rs1, rs2}})
	}
	mem.SetServices(svcs)
	c := dial(b, path)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.List(ctx, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDispatchRefusesBadSettings(t *testing.T) {
	path, mem := serve(t)
	c := dial(t, path)
	ctx := context.Background()
	bad := []struct {
		name string
		err  error
	}{
		{"no scheduler", c.AddService(ctx, control.Service{ServiceKey: web})},
		{"timeout 0", c.AddService(ctx, control.Service{ServiceKey: web, Sched: "rr", Persistent: true})},
		{"netmask 33", c.AddService(ctx, control.Service{ServiceKey: web, Sched: "rr", Netmask: 33})},
		{"flag", c.AddService(ctx, control.Service{ServiceKey: web, Sched: "rr", Flags: []string{"turbo"}})},
		{"weight", c.AddDest(ctx, web, control.Dest{Addr: rs1.Addr, Weight: 70000})},
		{"local", c.AddDest(ctx, web, control.Dest{Addr: rs1.Addr, Method: control.Local})},
		{"timeouts", c.SetTimeouts(ctx, control.Timeouts{TCP: control.MaxTimeout + 1})},
		{"daemon without interface", c.StartDaemon(ctx, control.SyncDaemon{Role: control.SyncMaster})},
		{"daemon unicast group", c.StartDaemon(ctx, control.SyncDaemon{Role: control.SyncMaster, Interface: "eth0", Group: rs1.Addr})},
		{"daemon maxlen", c.StartDaemon(ctx, control.SyncDaemon{Role: control.SyncBackup, Interface: "eth0", MaxLen: 70000})},
	}
	for _, b := range bad {
		if !errors.Is(b.err, control.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", b.name, b.err)
		}
	}
	// The connection survives a refused request, and nothing reached the handler.
	if err := c.AddService(ctx, control.Service{ServiceKey: web, Sched: "rr"}); err != nil {
		t.Errorf("good request after refused ones: %v", err)
	}
	if n := mem.Calls(control.OpAddService); n != 1 {
		t.Errorf("AddService reached the handler %d times, want 1", n)
	}
	if n := mem.Calls(control.OpStartDaemon); n != 0 {
		t.Errorf("StartDaemon reached the handler %d times, want 0", n)
	}
}
