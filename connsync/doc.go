// Package connsync owns connection synchronisation between directors: the
// IPVS sync daemon's protocol and its two roles. The master sends its conn
// table to the backups; a backup imports what it hears, so that a director
// taking over after a VRRP failover already knows every established
// connection's real server (and, in NAT, its reply path).
//
// # Wire format
//
// Version 1 of the IPVS sync protocol (Linux net/netfilter/ipvs/ip_vs_sync.c),
// so xvs and kernel IPVS directors can sync each other: UDP datagrams to a
// multicast group (IPv4 224.0.0.81 unless configured; IPv6 only when an IPv6
// group is configured, as IPVS has no default), port 8848, TTL 1, multicast
// loop off. Each datagram is an 8-byte header (reserved 0, syncid, size,
// nr_conns, version 1, spare 0) and up to 255 conns, each 32-bit aligned:
// 36 bytes for IPv4, 72 for IPv6 (type, protocol, version/size, flags,
// state, client/virtual/dest ports, fwmark, timeout in seconds, the three
// addresses), optionally followed by type-length-value parameters
// (sequence-adjust data, persistence-engine data and name). The decoder also
// reads version 0 messages (IPv4 only, no timeout) as IPVS backups do. The
// sender never sends options: xvs has no sequence adjustment or persistence
// engines. A received conn with persistence-engine data or an unknown
// mandatory parameter is skipped, as IPVS skips it.
//
// Only multicast: neither IPVS nor keepalived has a unicast sync peer.
//
// # What the master sends, and when
//
// IPVS syncs from the packet path: a conn is queued on its 3rd packet and
// every 50th after (sync_threshold, sync_period), or, in its
// sync_refresh_period mode, when its expiry has moved by more than the
// period; TCP conns only in ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT and
// TIME_WAIT, immediately on a change between those states; templates with
// their conns. xvs's packet path must not block or allocate, so the Sender
// instead walks the conn table (the Table interface) every Interval
// (default 500 ms, stretched to 20× the walk's own duration so the walk
// costs at most ~5% of a core) and sends, in table order:
//
//   - a conn or template it has not sent before (new, or forgotten: see
//     below), in the states IPVS syncs (TCP as above, UDP, templates);
//   - a conn whose real server or state changed since it was last sent;
//   - a conn whose expiry moved by at least min(RefreshPeriod,
//     max(timeout/2, 10 s)) since it was last sent (IPVS's refresh rule):
//     a conn that carries traffic is re-sent about every RefreshPeriod
//     (default 30 s); an idle one is not, and expires on both directors
//     alike.
//
// The timeout sent is the entry's remaining life, rounded up to a second;
// a backup keeps the entry that long unless told again.
//
// Conns are packed into messages of at most MaxLen bytes (default 1472, a
// 1500-byte MTU less IPv4 and UDP headers, as IPVS's master does); the last,
// partial message of a walk is sent at its end, so a change reaches the
// backups within one Interval plus the walk. Bandwidth is bounded by a token
// bucket (MaxRate bytes per second counting IP and UDP headers, default
// 1 MiB/s, burst one second): when it runs dry the walk stops, and the next
// walk starts where this one stopped, so every entry gets its turn.
//
// What was sent is remembered in a fixed-size, 8-way set-associative table
// of fingerprints (CacheSlots × 16 bytes; default 65536 slots = 1 MiB,
// xvsd sizes it to half its conn table within 64 Ki..1 Mi slots): a 64-bit
// hash of the conn's key and a 32-bit hash of its real server and
// state, with the expiry sent. A full set evicts its entry that expires
// first. Memory is therefore bounded whatever the conn table's size; the
// price of more live conns than slots is re-sending forgotten ones, which
// the token bucket caps. Costs, measured on this project's 2-core VM: the
// walk reads every conn-table slot (~4 ns a slot, 5 ms for xvsd's default
// 2^20-flow table: 1% of a core at the 500 ms interval, director's
// BenchmarkSyncWalkEmpty), plus ~200 ns per live entry for its hash and
// cache probe (BenchmarkSenderPass: 20 ms for 100,000 conns; the walk
// stretching above caps the total near 5% of a core), and 36 bytes on the
// wire per synced IPv4 conn, 40 conns to a datagram.
//
// # Backup
//
// The Receiver reads datagrams, drops those with another syncid (unless its
// own is 0, which accepts all, as IPVS does), refuses malformed ones whole,
// checks each conn's protocol and state, fills in IPVS's default timeout
// when a version 0 message carried none, and hands the conn to an
// Importer. All outcomes are counted in Counters.
//
// # What a backup does with a conn it already has
//
// IPVS updates an existing entry's state, flags and timeout from each sync
// message (and replaces it when the real server differs). xvs's importer,
// dataplane.ImportConn, leaves an existing entry alone, so on an xvs backup
// an entry keeps the state and expiry of its first import; a re-send only
// re-creates it after it expired there. A conn open longer than its
// timeout (15 minutes ESTABLISHED) can therefore be missing on the backup
// for up to the refresh period.
package connsync
