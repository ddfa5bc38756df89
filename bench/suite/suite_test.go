package suite

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/xvs-lb/xvs/bench/trace"
)

const wrkOut = `Running 3s test @ http://198.18.0.100/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.31ms    3.01ms  40.12ms   93.10%
    Req/Sec    11.41k     1.02k   12.60k    80.00%
  Latency Distribution
     50%    1.32ms
     75%    2.01ms
     90%    3.50ms
     99%   61.13ms
  34102 requests in 3.00s, 5.01MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 1
Requests/sec:  11184.52
Transfer/sec:      1.67MB
`

func TestParseWrk(t *testing.T) {
	got, err := ParseWrk(wrkOut)
	if err != nil {
		t.Fatal(err)
	}
	want := WrkResult{RPS: 11184.52, P50: 1320 * time.Microsecond, P99: 61130 * time.Microsecond, Errors: 6}
	if got != want {
		t.Errorf("ParseWrk = %+v, want %+v", got, want)
	}
	us, err := ParseWrk(strings.Replace(wrkOut, "1.32ms", "842.00us", 1))
	if err != nil || us.P50 != 842*time.Microsecond {
		t.Errorf("µs latency: %v %v", us.P50, err)
	}
	if _, err := ParseWrk("unable to connect to 198.18.0.100:80 Connection refused"); err == nil {
		t.Error("ParseWrk accepted an output without a rate")
	}
}

func TestPcapServices(t *testing.T) {
	tr, err := trace.Generate(trace.Config{Packets: 100, Flows: 20, VIPs: VIPs(3), Port: 8080, Proto: "mix"})
	if err != nil {
		t.Fatal(err)
	}
	vips, port := pcapServices(tr.Frames)
	if len(vips) != 3 || port != 8080 {
		t.Errorf("pcapServices = %v %d, want the 3 VIPs and port 8080", vips, port)
	}
}

func TestHashSharesSumToOne(t *testing.T) {
	tr, _ := trace.Generate(trace.Config{Packets: 1000, Flows: 100, Proto: "udp"})
	var sum float64
	for _, v := range hashShares(tr.Frames, Reals(8)) {
		sum += v
	}
	if sum < 0.999 || sum > 1.001 {
		t.Errorf("shares sum to %v", sum)
	}
}

func TestKeepalivedConf(t *testing.T) {
	for _, kind := range []string{"DR", "TUN", "NAT"} {
		c := KeepalivedConf("eth0", VIPs(2), 80, Reals(3), "mh", kind)
		for _, want := range []string{"xvs_interface eth0", "virtual_server 198.18.0.101 80 {", "lb_algo mh", "lb_kind " + kind + "\n", "protocol UDP", "real_server 198.18.1.3 80 {"} {
			if !strings.Contains(c, want) {
				t.Errorf("%s: config lacks %q", kind, want)
			}
		}
		if n := strings.Count(c, "real_server"); n != 2*2*3 {
			t.Errorf("%s: %d real_server blocks, want 12", kind, n)
		}
	}
}

func TestWorstDev(t *testing.T) {
	a, b := [6]byte{1}, [6]byte{2}
	want := map[[6]byte]float64{a: 0.5, b: 0.5}
	for _, tc := range []struct {
		got   map[[6]byte]uint64
		total uint64
		worst float64
	}{
		{map[[6]byte]uint64{a: 50, b: 50}, 100, 0},
		{map[[6]byte]uint64{a: 55, b: 45}, 100, 0.1},
		{map[[6]byte]uint64{a: 100}, 100, 1},
		{nil, 0, -1},
	} {
		if got := worstDev(tc.got, tc.total, want); math.Abs(got-tc.worst) > 1e-9 {
			t.Errorf("worstDev(%v, %d) = %v, want %v", tc.got, tc.total, got, tc.worst)
		}
	}
}

// TestPredictShares: wlc over one SYN per flow fills every real server in
// turn (exact shares when the flows per service are a multiple of the
// servers); mh's spread over 65534 distinct clients is its hash's, a few
// percent, and deterministic.
func TestPredictShares(t *testing.T) {
	tr, err := shareTrace(VIPs(4), 80)
	if err != nil {
		t.Fatal(err)
	}
	small := &trace.Trace{Flows: tr.Flows[:4*64*8]}
	if got, err := predictShares("wlc", small, Reals(64)); err != nil || got != 0 {
		t.Errorf("wlc over 8 flows per real server and service: worst %v, %v; want 0", got, err)
	}
	m1, err := predictShares("mh", tr, Reals(64))
	if err != nil {
		t.Fatal(err)
	}
	m2, _ := predictShares("mh", tr, Reals(64))
	if m1 != m2 || m1 <= 0 || m1 > 0.2 {
		t.Errorf("mh worst deviation %v then %v, want the same, in (0, 20%%]", m1, m2)
	}
	if _, err := predictShares("nope", small, Reals(2)); err == nil {
		t.Error("unknown scheduler: no error")
	}
}

func TestReals(t *testing.T) {
	rs := Reals(300)
	seen := map[string]bool{}
	for _, r := range rs {
		if seen[r.MAC.String()] || seen[r.Addr.String()] {
			t.Fatalf("duplicate real %v %v", r.Addr, r.MAC)
		}
		seen[r.MAC.String()], seen[r.Addr.String()] = true, true
		if !strings.HasPrefix(r.Addr.String(), "198.18.") {
			t.Fatalf("real %v outside 198.18.0.0/15", r.Addr)
		}
	}
}

func TestParseXVSDMetrics(t *testing.T) {
	text := `# HELP xvs_dataplane_rx_packets_total Packets received on an AF_XDP socket.
xvs_dataplane_rx_packets_total{interface="d",queue="0"} 1000
xvs_dataplane_rx_packets_total{interface="d",queue="1"} 500
xvs_dataplane_tx_packets_total{interface="d",queue="0"} 1.2e+03
xvs_dataplane_drops_total{interface="d",queue="0",reason="no_conn"} 250
xvs_dataplane_drops_total{interface="d",queue="1",reason="no_conn"} 50
xvs_xdp_packets_total{verdict="redirected"} 1500
xvs_xdp_packets_total{verdict="passed"} 3
`
	got := ParseXVSDMetrics(text)
	if got.RX != 1500 || got.TX != 1200 || got.Drops["xvsd drop no_conn"] != 300 || got.Drops["xvsd xdp passed"] != 3 || len(got.Drops) != 2 {
		t.Errorf("ParseXVSDMetrics = %+v", got)
	}
}

func TestForwardedNothing(t *testing.T) {
	for _, tc := range []struct {
		ss      []Sample
		err, na bool
	}{
		{nil, false, false},
		{[]Sample{{Forwarded: 0}, {Forwarded: 3}}, false, false},
		{[]Sample{{Drops: map[string]uint64{"xvsd drop method": 10, "dir rx_drops": 2}}}, true, true},
		{[]Sample{{Drops: map[string]uint64{"xvsd drop no_dest": 10}}}, true, false},
	} {
		err := forwardedNothing(tc.ss)
		if (err != nil) != tc.err || errors.Is(err, ErrNotAvailable) != tc.na {
			t.Errorf("forwardedNothing(%+v) = %v; want error %v, not available %v", tc.ss, err, tc.err, tc.na)
		}
	}
}
