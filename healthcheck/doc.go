// Package healthcheck owns the real-server health checkers of xvs: the
// keepalived checkers (TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK, PING_CHECK,
// UDP_CHECK, DNS_CHECK, SMTP_CHECK) plus a data-path check that probes a
// DR/TUN real server with the VIP as destination, and the Pool that runs
// them: retries, alpha/omega, inhibit_on_failure, quorum with hysteresis,
// sorry servers, ha_suspend, notify scripts and their safety rules.
//
// The package does not read keepalived.conf; its option structs mirror the
// keywords so the daemon maps config → []Service and calls Update.
//
// # API
//
//	p := healthcheck.NewPool(healthcheck.PoolOptions{Logger: log}, func(t healthcheck.Transition) {
//		// build a new scheduler snapshot from t (or from p.State())
//	})
//	p.Update(services) // declarative: the whole desired set; unchanged checks keep running
//	p.State()          // every real server (and sorry server) with its health and weight
//	p.Suspend(); p.Resume() // ha_suspend: pause checkers of services marked HASuspend
//	p.Close()          // stops every checker; with omega runs the down notifiers
//
// A Transition is published when a server first appears (its initial state,
// so the caller can build a table from transitions alone), when its health
// changes, when its programmed weight changes (misc_dynamic,
// inhibit_on_failure) and when quorum loss swaps real servers for the sorry
// server. Transitions are delivered in order from one goroutine; a slow
// callback delays later transitions but never a check.
//
// # keepalived.conf → option structs
//
//	virtual_server IP PORT | fwmark N  Service.VIP, Port, FWMark (protocol → Protocol)
//	quorum, hysteresis              Service.Quorum, Hysteresis
//	quorum_up, quorum_down          Service.QuorumUp, QuorumDown
//	sorry_server IP PORT            Service.Sorry (sorry_server_inhibit → Sorry.Inhibit)
//	ha_suspend, alpha, omega        Service.HASuspend, Alpha, Omega
//	virtualhost                     Service.VirtualHost, RealServer.VirtualHost, HTTPOptions.VirtualHost, URL.VirtualHost
//	real_server IP PORT, weight     RealServer.Addr, Port, Weight (weight 0 → NoWeight)
//	inhibit_on_failure              RealServer.InhibitOnFailure (the daemon copies a
//	                                virtual_server-level setting down to its servers)
//	notify_up, notify_down          RealServer.NotifyUp, NotifyDown
//	TCP_CHECK … SMTP_CHECK          Checker.Type
//	connect_ip, connect_port        Checker.ConnectIP, ConnectPort
//	bindto, bind_port, bind_if      Checker.BindTo, BindPort, BindIf
//	fwmark (in a checker)           Checker.FWMark
//	connect_timeout, delay_loop     Checker.ConnectTimeout, DelayLoop (a virtual_server
//	                                or real_server level value is copied down by the daemon)
//	retry, nb_get_retry             Checker.Retry
//	delay_before_retry, warmup      Checker.DelayBeforeRetry, Warmup
//	alpha, log_all_failures         Checker.Alpha, LogAllFailures
//	url { path digest status_code regex regex_no_match }  HTTPOptions.URLs (ParseStatusCodes)
//	http_protocol, enable_sni       HTTPOptions.Protocol, EnableSNI
//	misc_path, misc_timeout, misc_dynamic  MiscOptions
//	payload, require_reply, min_reply_length, max_reply_length  UDPOptions (ParseHexString)
//	type, name (DNS_CHECK)          DNSOptions
//	helo_name                       SMTPOptions.HeloName
//	xvs_via_vip                  Checker.ViaVIP (addressing filled by the daemon)
//	enable_script_security          the default; PoolOptions.InsecureScripts opts out
//
// Not supported: BFD_CHECK, FILE_CHECK, fast_recovery, regex_options and
// the regex offsets (regex is RE2, not PCRE), SSL client certificates,
// script user/group (scripts run as the daemon's user).
//
// # Keepalived semantics kept
//
//   - A check of an alive server that fails is repeated `retry` more times,
//     `delay_before_retry` apart, before the checker is declared down; a
//     failing check of a down server is not retried. One success brings a
//     checker up. A real server is up when all its checkers are up.
//   - Defaults: delay_loop 60s, connect_timeout 5s, retry 1 (3 for
//     DNS_CHECK, 0 for MISC_CHECK), delay_before_retry 3s for HTTP_GET and
//     SSL_GET, delay_loop for DNS_CHECK, 1s otherwise, warmup = delay_loop
//     (the first check starts at a random point in [0, warmup), which is
//     also what keeps 1000 checks from firing together), status_code
//     200-299, misc_timeout = delay_loop, DNS type SOA and name ".".
//   - delay_loop is counted from when the previous check was due
//     (keepalived counts from its end), so a slow server does not slow
//     the check rate; with a delay_loop of 1 s or more, wake-ups are
//     rounded up to a 20 ms grid so checks due together share a wake-up.
//     TCP_CHECK closes its connection with a RST rather than a FIN, so the
//     director does not collect TIME_WAIT sockets.
//   - One goroutine schedules every checker (a heap of due times). It runs
//     TCP_CHECK itself on non-blocking sockets in an epoll set, so 1000
//     TCP_CHECKs cost no goroutines; other checkers probe on a goroutine
//     that lives only as long as the probe, bounded by its timeout.
//   - alpha: the server starts down. omega: Close runs notify_down of up
//     servers and quorum_down of services with quorum.
//   - Quorum is the sum of the weights of live servers; it is gained at
//     quorum+hysteresis and lost below quorum-hysteresis. With a sorry
//     server, losing quorum removes the remaining live servers and adds the
//     sorry server (as keepalived does); without one the live servers stay.
//   - Scripts (misc_path, notify_*, quorum_*) are checked before each run as
//     keepalived's enable_script_security does: the script and each directory
//     on its path must be owned by root or the running user and not writable
//     by group (unless the group is root) or others (a directory with the
//     sticky bit, like /tmp, is accepted), and the script must be
//     executable. An unsafe script is refused and the reason logged, unless
//     PoolOptions.InsecureScripts opts in.
//
// # Data-path check (xvs extension)
//
// In a checker block, the keyword
//
//	xvs_via_vip
//
// (Checker.ViaVIP) makes the checker send a TCP SYN to VIP:port framed to the
// real server's MAC on the egress interface (DR), or inside an IPIP header to
// the real server (TUN), and wait for the SYN/ACK from VIP:port. A real
// server that lacks the VIP on lo (or has no decap) does not answer, so the
// check fails although a plain TCP_CHECK to its own address would pass. The
// kernel answers the unexpected SYN/ACK with a RST, which closes the
// half-open connection on the real server.
package healthcheck
