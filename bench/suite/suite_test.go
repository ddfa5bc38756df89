package suite

import (
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
	c := KeepalivedConf("eth0", VIPs(2), 80, Reals(3), "mh")
	for _, want := range []string{"xvs_interface eth0", "virtual_server 198.18.0.101 80 {", "lb_algo mh", "lb_kind DR", "protocol UDP", "real_server 198.18.1.3 80 {"} {
		if !strings.Contains(c, want) {
			t.Errorf("config lacks %q", want)
		}
	}
	if n := strings.Count(c, "real_server"); n != 2*2*3 {
		t.Errorf("%d real_server blocks, want 12", n)
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
