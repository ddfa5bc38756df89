package vrrp

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestInstanceDrops(t *testing.T) {
	peer, group := netip.MustParseAddr(addrB), netip.MustParseAddr("224.0.0.18")
	good := Advert{Version: 2, VRID: 51, Priority: 250, Interval: time.Second, AuthType: AuthPass,
		AuthData: [8]byte([]byte("secret12")), Addrs: addrs("198.18.0.100")}
	enc := func(f func(a *Advert)) []byte {
		a := good
		a.Addrs = slices.Clone(good.Addrs)
		f(&a)
		b, err := a.Append(nil, peer, group)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name  string
		b     []byte
		src   string
		ttl   int
		want  DropReason
		attrb bool // counted on the instance (else unattributed)
	}{
		{"ttl 64", enc(func(*Advert) {}), addrB, 64, DropTTL, true},
		{"ttl 254", enc(func(*Advert) {}), addrB, 254, DropTTL, true},
		{"wrong password", enc(func(a *Advert) { a.AuthData = [8]byte([]byte("secret13")) }), addrB, 255, DropAuth, true},
		{"no auth", enc(func(a *Advert) { a.AuthType, a.AuthData = AuthNone, [8]byte{} }), addrB, 255, DropAuthType, true},
		{"interval 2s", enc(func(a *Advert) { a.Interval = 2 * time.Second }), addrB, 255, DropInterval, true},
		{"two addresses", enc(func(a *Advert) { a.Addrs = addrs("198.18.0.100", "198.18.0.101") }), addrB, 255, DropAddrCount, true},
		{"version 3", enc(func(a *Advert) { a.Version, a.AuthType, a.AuthData = 3, 0, [8]byte{} }), addrB, 255, DropVersion, true},
		{"own source", enc(func(*Advert) {}), addrA, 255, DropOwn, true},
		{"bad checksum", func() []byte { b := enc(func(*Advert) {}); b[6] ^= 0xff; return b }(), addrB, 255, DropChecksum, true},
		{"truncated", enc(func(*Advert) {})[:10], addrB, 255, DropShort, true},
		{"other vrid", enc(func(a *Advert) { a.VRID = 52 }), addrB, 255, DropVRID, false},
		{"garbage", []byte("GET / HTTP/1.0\r\n"), addrB, 255, DropVersion, false},
		{"one byte", []byte{0x21}, addrB, 255, DropShort, false},
	}
	w := newWorld(t)
	a := w.add("A", oneInstance(100), map[string]string{"eth0": addrA})
	w.boot(a)
	w.run(time.Second)
	cs := a.sp.conns[0]
	for _, tt := range tests {
		before := a.sp.Stats()
		stateBefore := a.state("VI_1")
		a.sp.handle(event{cs: cs, pkt: Packet{Data: tt.b, Src: netip.MustParseAddr(tt.src), Dst: group, TTL: tt.ttl}})
		after := a.sp.Stats()
		var got, was uint64
		if tt.attrb {
			got, was = after.Instances["VI_1"].Drops[tt.want], before.Instances["VI_1"].Drops[tt.want]
		} else {
			got, was = after.Unattributed[tt.want], before.Unattributed[tt.want]
		}
		if got != was+1 {
			t.Errorf("%s: %v drops went %d → %d, want +1 (instance %+v, unattributed %v)",
				tt.name, tt.want, was, got, after.Instances["VI_1"].Drops, after.Unattributed)
		}
		if ra := after.Instances["VI_1"].AdvertsRecv; ra != before.Instances["VI_1"].AdvertsRecv {
			t.Errorf("%s: packet was accepted", tt.name)
		}
		if s := a.state("VI_1"); s != stateBefore {
			t.Errorf("%s: state %v → %v", tt.name, stateBefore, s)
		}
	}
	// A valid higher-priority advert is accepted and keeps us BACKUP.
	a.sp.handle(event{cs: cs, pkt: Packet{Data: enc(func(*Advert) {}), Src: peer, Dst: group, TTL: 255}})
	if st := a.sp.Stats().Instances["VI_1"]; st.AdvertsRecv != 1 {
		t.Errorf("valid advert: AdvertsRecv = %d, want 1", st.AdvertsRecv)
	}
	w.run(10 * time.Second)
	if s := a.state("VI_1"); s != StateMaster {
		t.Errorf("after the drops and one valid advert, state = %v, want MASTER once the peer went silent", s)
	}
}

func TestDropReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for r := DropNone; r < numDropReasons; r++ {
		n := r.String()
		if n == "" || seen[n] {
			t.Errorf("DropReason %d has empty or duplicate name %q", r, n)
		}
		seen[n] = true
	}
}

func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNotifyScripts(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	gen := writeScript(t, dir, "notify.sh", `echo "notify $*" >> `+out)
	master := writeScript(t, dir, "master.sh", `echo "master $*" >> `+out)
	backup := writeScript(t, dir, "backup.sh", `echo "backup $*" >> `+out)
	stop := writeScript(t, dir, "stop.sh", `echo "stop $*" >> `+out)
	group := writeScript(t, dir, "group.sh", `echo "group $*" >> `+out)
	cfg := oneInstance(150, func(in *Instance) {
		in.Notify, in.NotifyMaster, in.NotifyBackup, in.NotifyStop = gen, master+" extra-arg", backup, stop
	})
	cfg.SyncGroups = []SyncGroup{{Name: "G1", Group: []string{"VI_1"}, Notify: group}}
	w := newWorld(t)
	a := w.add("A", cfg, map[string]string{"eth0": addrA})
	w.boot(a)
	w.run(5 * time.Second)
	w.stop(a)
	a.sp.flushNotify()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	want := []string{
		"backup ",
		"notify INSTANCE VI_1 BACKUP 150",
		"group GROUP G1 BACKUP 0",
		"master extra-arg",
		"notify INSTANCE VI_1 MASTER 150",
		"group GROUP G1 MASTER 0",
		"stop ",
		"notify INSTANCE VI_1 STOP 150",
		"group GROUP G1 STOP 0",
	}
	for i := range want {
		want[i] = strings.TrimSpace(want[i])
	}
	for i := range got {
		got[i] = strings.TrimSpace(got[i])
	}
	if !slices.Equal(got, want) {
		t.Errorf("notify calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// smtpSink is a minimal SMTP server on 127.0.0.1 that keeps each DATA.
type smtpSink struct {
	ln   net.Listener
	mu   sync.Mutex
	msgs []string
}

func newSMTPSink(t *testing.T) *smtpSink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpSink{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *smtpSink) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	say := func(l string) { c.Write([]byte(l + "\r\n")) }
	say("220 sink ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			say("250 sink")
		case strings.HasPrefix(cmd, "DATA"):
			say("354 go on")
			var msg strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				msg.WriteString(l)
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, msg.String())
			s.mu.Unlock()
			say("250 queued")
		case strings.HasPrefix(cmd, "QUIT"):
			say("221 bye")
			return
		default:
			say("250 ok")
		}
	}
}

func TestSMTPAlerts(t *testing.T) {
	sink := newSMTPSink(t)
	cfg := oneInstance(150, func(in *Instance) { in.SMTPAlert = true })
	cfg.Globals = Globals{RouterID: "dir1", SMTPServer: sink.ln.Addr().String(),
		NotificationEmail: []string{"ops@example.org"}, NotificationEmailFrom: "lb@example.org", SMTPConnectTimeout: 5 * time.Second}
	w := newWorld(t)
	a := w.add("A", cfg, map[string]string{"eth0": addrA})
	w.boot(a)
	w.run(5 * time.Second)
	a.sp.flushNotify()
	sink.mu.Lock()
	defer sink.mu.Unlock()
	var subjects []string
	for _, m := range sink.msgs {
		for _, l := range strings.Split(m, "\r\n") {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				subjects = append(subjects, s)
			}
		}
	}
	want := []string{"[dir1] VRRP Instance VI_1 - Entering BACKUP state", "[dir1] VRRP Instance VI_1 - Entering MASTER state"}
	if !slices.Equal(subjects, want) {
		t.Errorf("mail subjects = %q, want %q", subjects, want)
	}
}

func TestRunCheck(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		body string
		want bool
	}{
		{"exit 0", true},
		{"exit 1", false},
		{"sleep 5", false}, // timeout
	}
	for _, tt := range tests {
		sc := &Script{Name: "s", Script: writeScript(t, dir, "s.sh", tt.body), Timeout: 200 * time.Millisecond}
		if got := runCheck(context.Background(), sc); got != tt.want {
			t.Errorf("runCheck(%q) = %v, want %v", tt.body, got, tt.want)
		}
	}
}

// TestRunAndStop drives the real event loop over the fake host: an owner
// becomes MASTER at once, and Stop sends priority 0 and removes the VIP.
func TestRunAndStop(t *testing.T) {
	w := newWorld(t)
	h := &fakeHost{w: w, name: "A", addrs: map[string]netip.Addr{"eth0": netip.MustParseAddr(addrA)},
		links: map[string]bool{"eth0": true}, vips: map[string]bool{}}
	states := make(chan State, 8)
	sp, err := New(oneInstance(255), WithHost(h), WithLogger(quiet),
		WithStateHook(func(_ string, s State) { states <- s }))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sp.Run(context.Background()) }()
	if s := <-states; s != StateMaster {
		t.Fatalf("first state = %v, want MASTER", s)
	}
	sp.Stop()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	st := sp.Stats().Instances["VI_1"]
	if st.PriorityZeroTx != 1 || st.AdvertsSent < 2 {
		t.Errorf("sent %d adverts, %d with priority 0; want ≥2 and 1", st.AdvertsSent, st.PriorityZeroTx)
	}
	if len(h.vips) != 0 {
		t.Errorf("VIPs left after Stop: %v", h.vips)
	}
	var last Advert
	p := w.queue[len(w.queue)-1]
	if r := Parse(p.data, p.src, p.dst, &last); r != DropNone || last.Priority != 0 {
		t.Errorf("last advert: %v priority %d, want a valid priority-0 advert", r, last.Priority)
	}
}

func TestConfigErrors(t *testing.T) {
	base := func() Config { return oneInstance(100) }
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no vrid", func(c *Config) { c.Instances[0].VirtualRouterID = 0 }},
		{"no interface", func(c *Config) { c.Instances[0].Interface = "" }},
		{"no vip", func(c *Config) { c.Instances[0].VirtualIPAddresses = nil }},
		{"v2 ipv6", func(c *Config) { c.Instances[0].VirtualIPAddresses = []VIP{vip("2001:db8::1/128")} }},
		{"v2 subsecond", func(c *Config) { c.Instances[0].AdvertInt = 100 * time.Millisecond }},
		{"v3 auth", func(c *Config) { c.Instances[0].Version = 3 }},
		{"mixed families", func(c *Config) {
			c.Instances[0].Version, c.Instances[0].AuthType = 3, AuthNone
			c.Instances[0].VirtualIPAddresses = append(c.Instances[0].VirtualIPAddresses, vip("2001:db8::1/128"))
		}},
		{"duplicate vrid", func(c *Config) {
			in := c.Instances[0]
			in.Name = "VI_2"
			c.Instances = append(c.Instances, in)
		}},
		{"unknown script", func(c *Config) { c.Instances[0].TrackScripts = []TrackScript{{Name: "nope"}} }},
		{"unknown group member", func(c *Config) { c.SyncGroups = []SyncGroup{{Name: "G", Group: []string{"VI_9"}}} }},
		{"use_vmac on the interface itself", func(c *Config) { c.Instances[0].UseVMAC, c.Instances[0].VMACName = true, "eth0" }},
		{"script weight", func(c *Config) { c.Scripts = []Script{{Name: "s", Script: "true", Weight: 300}} }},
	}
	for _, tt := range tests {
		c := base()
		tt.mod(&c)
		if _, err := New(c, WithHost(&fakeHost{})); err == nil {
			t.Errorf("%s: New succeeded, want an error", tt.name)
		}
	}
	if _, err := New(base(), WithHost(&fakeHost{})); err != nil {
		t.Errorf("valid config: %v", err)
	}
}
