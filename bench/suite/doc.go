// Package suite owns the benchmark runs behind `xvs-bench run`: the packet
// lab (generator namespace ↔ director namespace on one veth pair, no
// bridge, one or two queues), the forwarders measured in it (xdp-fwd,
// xsk-null with its own AF_XDP ring code, xsk-asavie, and xvsd in DR, TUN
// and NAT), CPU placement, loss accounting, the share run that judges a
// scheduler's spread over real servers, the end-to-end runs (wrk
// against nginx real servers through kernel forwarding, HAProxy and the
// device under test) and the report table with pass/short against the
// project's targets.
package suite
