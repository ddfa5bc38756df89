package director

import (
	"net/netip"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xvs-lb/xvs/dataplane"
	"github.com/xvs-lb/xvs/vrrp"
)

// collector reads the dataplane's counters and the control-plane state at
// scrape time, so the packet path keeps only its own atomic counters.
type collector struct{ d *Director }

var (
	svcLabels  = []string{"protocol", "vip", "port"}
	destLabels = []string{"protocol", "vip", "port", "server"}

	descSvcPackets  = prometheus.NewDesc("xvs_service_packets_total", "Packets forwarded for a virtual service.", svcLabels, nil)
	descSvcBytes    = prometheus.NewDesc("xvs_service_bytes_total", "Bytes forwarded for a virtual service.", svcLabels, nil)
	descSvcConns    = prometheus.NewDesc("xvs_service_connections_total", "New connections scheduled for a virtual service.", svcLabels, nil)
	descDestPackets = prometheus.NewDesc("xvs_real_server_packets_total", "Packets forwarded to a real server.", destLabels, nil)
	descDestBytes   = prometheus.NewDesc("xvs_real_server_bytes_total", "Bytes forwarded to a real server.", destLabels, nil)
	descDestConns   = prometheus.NewDesc("xvs_real_server_connections_total", "New connections scheduled to a real server.", destLabels, nil)
	descDestActive  = prometheus.NewDesc("xvs_real_server_active_connections", "ESTABLISHED connections (ipvsadm ActiveConn).", destLabels, nil)
	descDestInact   = prometheus.NewDesc("xvs_real_server_inactive_connections", "Other connections (ipvsadm InActConn).", destLabels, nil)
	descDestUp      = prometheus.NewDesc("xvs_real_server_up", "1 when the real server takes new connections (health checks pass, MAC known).", destLabels, nil)
	descDestWeight  = prometheus.NewDesc("xvs_real_server_weight", "The real server's live weight.", destLabels, nil)
	descVRRP        = prometheus.NewDesc("xvs_vrrp_state", "VRRP instance state: 0 init, 1 backup, 2 master, 3 fault.", []string{"instance"}, nil)
	descDrops       = prometheus.NewDesc("xvs_dataplane_drops_total", "Packets the dataplane dropped, by reason.", []string{"interface", "queue", "reason"}, nil)
	descRX          = prometheus.NewDesc("xvs_dataplane_rx_packets_total", "Packets received on an AF_XDP socket.", []string{"interface", "queue"}, nil)
	descTX          = prometheus.NewDesc("xvs_dataplane_tx_packets_total", "Packets transmitted on an AF_XDP socket.", []string{"interface", "queue"}, nil)
	descXSKDrops    = prometheus.NewDesc("xvs_xsk_rx_drops_total", "Packets the kernel dropped on their way into an AF_XDP socket (XDP_STATISTICS): ring_full, the RX ring was full (the worker fell behind); dropped, no free frame (fill ring empty) or another reason.", []string{"interface", "queue", "reason"}, nil)
	descICMP        = prometheus.NewDesc("xvs_icmp_errors_sent_total", "ICMP errors the dataplane answered with, by type: time_exceeded (TTL 1 on arrival), frag_needed (too big for a TUN real server's path).", []string{"interface", "queue", "type"}, nil)
	descICMPLimited = prometheus.NewDesc("xvs_icmp_errors_ratelimited_total", "ICMP errors not sent for the rate limit (1000 a second per worker); their packets are dropped.", []string{"interface", "queue"}, nil)
	descBatch       = prometheus.NewDesc("xvs_dataplane_batches_total", "Receive batches by size bucket (not cumulative; size_max is the bucket's upper bound).", []string{"interface", "queue", "size_max"}, nil)
	descXDP         = prometheus.NewDesc("xvs_xdp_packets_total", "Director XDP program verdicts.", []string{"verdict"}, nil)
	descTableSlots  = prometheus.NewDesc("xvs_conn_table_slots", "Conn table capacity.", nil, nil)
	descTableFull   = prometheus.NewDesc("xvs_conn_table_full_total", "New flows forwarded without a conn table entry (table full).", nil, nil)
	descConns       = prometheus.NewDesc("xvs_conn_table_entries", "Live conn table entries (flows and persistence templates).", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	d.mu.Lock()
	fwd, dp := d.fwd, d.dp
	states := make(map[string]vrrp.State, len(d.vrrpStates))
	for k, v := range d.vrrpStates {
		states[k] = v
	}
	syncMaster, syncBackup := d.sync.master != nil, d.sync.backup != nil
	syncOn := d.sync.cfg != nil || syncMaster || syncBackup
	d.mu.Unlock()
	if syncOn {
		collectSync(ch, &d.sync.ctr, syncMaster, syncBackup)
	}
	for name, st := range states {
		ch <- prometheus.MustNewConstMetric(descVRRP, prometheus.GaugeValue, float64(vrrpStateValue(st)), name)
	}
	if fwd == nil {
		return
	}
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range fwd.ServiceStats() {
		proto := protoName(s.Key.Proto)
		sl := []string{proto, s.Key.Addr.String(), strconv.Itoa(int(s.Key.Port))}
		counter(descSvcPackets, s.Packets, sl...)
		counter(descSvcBytes, s.Bytes, sl...)
		counter(descSvcConns, s.Conns, sl...)
		for _, ds := range s.Dests {
			dl := append(sl[:3:3], netipPort(ds))
			counter(descDestPackets, ds.Packets, dl...)
			counter(descDestBytes, ds.Bytes, dl...)
			counter(descDestConns, ds.Conns, dl...)
			gauge(descDestActive, float64(ds.Active), dl...)
			gauge(descDestInact, float64(ds.Inactive), dl...)
			up := 0.0
			if ds.Up && ds.HasMAC {
				up = 1
			}
			gauge(descDestUp, up, dl...)
			gauge(descDestWeight, float64(ds.Weight), dl...)
		}
	}
	if dp == nil {
		return
	}
	st, err := dp.Stats()
	if err != nil {
		return
	}
	for _, q := range st.Queues {
		ql := []string{q.Interface, strconv.Itoa(q.Queue)}
		counter(descRX, q.RX, ql...)
		counter(descTX, q.TX, ql...)
		for r, v := range q.Drops {
			if r == 0 {
				continue
			}
			counter(descDrops, v, q.Interface, ql[1], dataplane.DropReason(r).String())
		}
		counter(descICMP, q.TimeExceeded, q.Interface, ql[1], "time_exceeded")
		counter(descICMP, q.TooBig, q.Interface, ql[1], "frag_needed")
		counter(descICMPLimited, q.ICMPLimited, q.Interface, ql[1])
		counter(descXSKDrops, q.KernelRXRingFull, q.Interface, ql[1], "ring_full")
		counter(descXSKDrops, q.KernelRXDropped, q.Interface, ql[1], "dropped")
		for i, v := range q.Batches {
			le := "+Inf"
			if i < len(dataplane.BatchBuckets) {
				le = strconv.Itoa(dataplane.BatchBuckets[i])
			}
			counter(descBatch, v, q.Interface, ql[1], le)
		}
	}
	counter(descXDP, st.Director.Redirected, "redirected")
	counter(descXDP, st.Director.Passed, "passed")
	counter(descXDP, st.Director.Malformed, "malformed")
	counter(descXDP, st.Director.NoSocket, "no_socket")
	gauge(descTableSlots, float64(st.Slots))
	counter(descTableFull, st.TableFull)
	n := 0
	dp.Conns(func(dataplane.ConnEntry) bool { n++; return true })
	gauge(descConns, float64(n))
}

func vrrpStateValue(s vrrp.State) int {
	switch s {
	case vrrp.StateBackup:
		return 1
	case vrrp.StateMaster:
		return 2
	case vrrp.StateInit:
		return 0
	}
	return 3
}

func protoName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	}
	return strconv.Itoa(int(p))
}

func netipPort(ds dataplane.DestStat) string {
	return netip.AddrPortFrom(ds.Addr, ds.Port).String()
}
