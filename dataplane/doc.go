// Package dataplane owns xvs's packet path: AF_XDP sockets and their rings,
// one worker per RX queue of every served interface, packet views over frame
// bytes, the shared lock-free conn table with the LVS TCP state machines and
// persistence templates, the services snapshot the control plane publishes,
// real-server next hops (MAC, port, MTU), DR, TUN (IPIP/6in4) and NAT
// forwarding with ICMP translation and "too big" answers, cross-interface
// transmission, and the per-queue, per-service and per-real-server counters.
//
// The packet path (Parse, the conn table, the forwarders, the worker batch
// loop) allocates nothing, takes no mutex and never blocks except in poll(2)
// when there is no work. Control state reaches it only as immutable
// Snapshots through an atomic.Pointer, loaded once per batch.
//
// Checksum helpers implement RFC 1071 (full) and RFC 1624 (incremental).
package dataplane
