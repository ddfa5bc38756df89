package control

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
)

// TestWriteDaemons: ipvsadm -L --daemon's lines, byte for byte: master
// before backup whatever the order given, and settings a kernel did not
// report (zero) left out, as ipvsadm 1.31's list_daemon does.
func TestWriteDaemons(t *testing.T) {
	g4 := netip.MustParseAddr("224.0.0.81")
	g6 := netip.MustParseAddr("ff02::8848")
	cases := []struct {
		name string
		ds   []SyncDaemon
		want string
	}{
		{"none", nil, ""},
		{"master", []SyncDaemon{{Role: SyncMaster, Interface: "eth0", SyncID: 1, MaxLen: 1472, Group: g4, Port: 8848, TTL: 1}},
			"master sync daemon (mcast=eth0, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"},
		{"both, backup given first", []SyncDaemon{
			{Role: SyncBackup, Interface: "ens18", SyncID: 2, MaxLen: 1472, Group: g4, Port: 8848, TTL: 1},
			{Role: SyncMaster, Interface: "ens18", SyncID: 1, MaxLen: 1472, Group: g4, Port: 8848, TTL: 1},
		}, "master sync daemon (mcast=ens18, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n" +
			"backup sync daemon (mcast=ens18, syncid=2, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"},
		{"ipv6 group", []SyncDaemon{{Role: SyncBackup, Interface: "eth1", SyncID: 255, MaxLen: 8952, Group: g6, Port: 9000, TTL: 2}},
			"backup sync daemon (mcast=eth1, syncid=255, maxlen=8952, group=ff02::8848, port=9000, ttl=2)\n"},
		{"old kernel: no maxlen, group, port, ttl", []SyncDaemon{{Role: SyncMaster, Interface: "eth0"}},
			"master sync daemon (mcast=eth0, syncid=0)\n"},
		{"unknown role not listed", []SyncDaemon{{Role: 7, Interface: "eth0"}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := WriteDaemons(&b, c.ds); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != c.want {
				t.Errorf("got\n%q\nwant\n%q", got, c.want)
			}
		})
	}
}

// TestSyncResolved: the defaults and limits of ip_vs_sync.c's
// start_sync_thread.
func TestSyncResolved(t *testing.T) {
	g4, g6 := DefaultSyncGroup, netip.MustParseAddr("ff02::8848")
	cases := []struct {
		name string
		in   SyncDaemon
		mtu  int
		want SyncDaemon
	}{
		{"master defaults", SyncDaemon{Role: SyncMaster, Interface: "eth0"}, 9000,
			SyncDaemon{Role: SyncMaster, Interface: "eth0", MaxLen: 1472, Group: g4, Port: 8848, TTL: 1}},
		{"backup follows a jumbo MTU", SyncDaemon{Role: SyncBackup, Interface: "eth0", SyncID: 9}, 9000,
			SyncDaemon{Role: SyncBackup, Interface: "eth0", SyncID: 9, MaxLen: 8972, Group: g4, Port: 8848, TTL: 1}},
		{"backup never below 1500", SyncDaemon{Role: SyncBackup, Interface: "eth0"}, 1280,
			SyncDaemon{Role: SyncBackup, Interface: "eth0", MaxLen: 1472, Group: g4, Port: 8848, TTL: 1}},
		{"ipv6 headers", SyncDaemon{Role: SyncMaster, Interface: "eth0", Group: g6}, 1500,
			SyncDaemon{Role: SyncMaster, Interface: "eth0", MaxLen: 1452, Group: g6, Port: 8848, TTL: 1}},
		{"given values stay", SyncDaemon{Role: SyncMaster, Interface: "eth0", MaxLen: 1000, Port: 9000, TTL: 3}, 1500,
			SyncDaemon{Role: SyncMaster, Interface: "eth0", MaxLen: 1000, Group: g4, Port: 9000, TTL: 3}},
		{"master maxlen capped", SyncDaemon{Role: SyncMaster, Interface: "eth0", MaxLen: 65535}, 1500,
			SyncDaemon{Role: SyncMaster, Interface: "eth0", MaxLen: 65507, Group: g4, Port: 8848, TTL: 1}},
		{"backup maxlen at least 1024", SyncDaemon{Role: SyncBackup, Interface: "eth0", MaxLen: 100}, 1500,
			SyncDaemon{Role: SyncBackup, Interface: "eth0", MaxLen: 1024, Group: g4, Port: 8848, TTL: 1}},
		{"master maxlen may be small", SyncDaemon{Role: SyncMaster, Interface: "eth0", MaxLen: 100}, 1500,
			SyncDaemon{Role: SyncMaster, Interface: "eth0", MaxLen: 100, Group: g4, Port: 8848, TTL: 1}},
	}
	for _, c := range cases {
		if got := c.in.Resolved(c.mtu); got != c.want {
			t.Errorf("%s: Resolved(%d) = %+v, want %+v", c.name, c.mtu, got, c.want)
		}
	}
}

func TestSyncDaemonValidate(t *testing.T) {
	ok := SyncDaemon{Role: SyncBackup, Interface: "eth0"}
	bad := map[string]SyncDaemon{
		"no role":         {Interface: "eth0"},
		"role 3":          {Role: 3, Interface: "eth0"},
		"no interface":    {Role: SyncMaster},
		"slash":           {Role: SyncMaster, Interface: "a/b"},
		"unicast group":   {Role: SyncMaster, Interface: "eth0", Group: netip.MustParseAddr("198.18.0.1")},
		"mapped group":    {Role: SyncMaster, Interface: "eth0", Group: netip.MustParseAddr("::ffff:224.0.0.81")},
		"zoned group":     {Role: SyncMaster, Interface: "eth0", Group: netip.MustParseAddr("ff02::1%eth0")},
		"negative maxlen": {Role: SyncMaster, Interface: "eth0", MaxLen: -1},
	}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate(%+v) = %v", ok, err)
	}
	for name, sd := range bad {
		if err := sd.Validate(); err == nil {
			t.Errorf("%s: Validate(%+v) accepted it", name, sd)
		}
	}
}

func TestSyncRoleText(t *testing.T) {
	for _, r := range []SyncRole{SyncMaster, SyncBackup} {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var back SyncRole
		if err := json.Unmarshal(b, &back); err != nil || back != r {
			t.Errorf("%s: round trip %s = %v, %v", r, b, back, err)
		}
	}
	if _, err := json.Marshal(SyncRole(0)); err == nil {
		t.Errorf("role 0 marshals")
	}
	var r SyncRole
	if err := json.Unmarshal([]byte(`"Master"`), &r); err == nil {
		t.Errorf(`"Master" unmarshals as %v; ipvsadm wants lower case`, r)
	}
}

// TestSyncDaemonJSON: the wire form the package doc shows.
func TestSyncDaemonJSON(t *testing.T) {
	sd := SyncDaemon{Role: SyncMaster, Interface: "eth0", SyncID: 1}
	b, err := json.Marshal(Request{V: 1, Op: OpStartDaemon, Daemon: &sd})
	if want := `{"v":1,"op":"StartDaemon","daemon":{"role":"master","mcast_ifn":"eth0","syncid":1}}`; err != nil || string(b) != want {
		t.Errorf("request = %s, %v; want %s", b, err, want)
	}
	b, err = json.Marshal(Response{Daemons: []SyncDaemon{sd.Resolved(1500)}})
	if want := `{"daemons":[{"role":"master","mcast_ifn":"eth0","syncid":1,"maxlen":1472,"group":"224.0.0.81","port":8848,"ttl":1}]}`; err != nil || string(b) != want {
		t.Errorf("response = %s, %v; want %s", b, err, want)
	}
}
