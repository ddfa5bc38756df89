// Package suite owns the benchmark runs behind `xvs-bench run`: the packet
// lab (generator namespace ↔ director namespace on one veth pair, no
// bridge), the forwarders measured in it (xdp-fwd, xsk-null and the device
// under test), CPU placement, loss accounting, the end-to-end runs (wrk
// against nginx real servers through kernel forwarding, HAProxy and the
// device under test) and the report table with pass/short against the
// project's targets.
package suite
