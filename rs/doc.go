// Package rs owns the real-server side of xvs: what cmd/xvs-rs does to make
// a host serve a VIP behind a director in DR or TUN mode — the "realserver"
// script of the LVS tutorials, with its state kept so it can be undone.
//
// # up
//
//   - Each VIP goes on lo as a host address (/32, /128), so the host accepts
//     packets to it while the director alone answers for it on the wire.
//   - For IPv4 VIPs, net.ipv4.conf.{all,lo}.arp_ignore=1 (never answer ARP
//     for the VIP, which is not on the interface asked) and arp_announce=2
//     (never use the VIP as the source of an ARP request). Stricter values
//     already set are kept.
//   - With --tun, the director's tunnelled packets (outer destination: this
//     host; inner destination: a VIP) are opened: by the kernel's fallback
//     tunnel tunl0 where the ipip module is present, else by the decap XDP
//     program (../bpf/decap.c) attached to the interfaces of the default
//     route or --dev. rp_filter is relaxed from strict (1) to loose (2) on
//     all and on those interfaces (and tunl0): decapsulated packets carry
//     the client's address, which strict mode may reject. The decap program
//     accepts tunnels addressed to this host's addresses as they were when
//     up ran (run up again after they change): its IPv4 addresses outside
//     127/8 for an IPv4 outer header (IPv4 in IPv4, and IPv6 in IPv4,
//     protocol 41, for IPv6 VIPs), and its global and unique-local IPv6
//     addresses, never link-local ones, for an IPv6 outer header (4in6 and
//     6in6, RFC 2473, as a director sends to a real server it knows by an
//     IPv6 address). The VIPs on lo are among those addresses, but do not
//     count as the host's own: up refuses a host with no other address.
//     tunl0 opens IPv4 in IPv4 only; up does not set up the kernel's sit0
//     or ip6tnl0, so use the decap program (--tun-mode xdp) for the others.
//
// up records every original value and every address it adds in a state file
// (/run/xvs-rs/state.json, --state) before changing anything; running it
// twice changes nothing the second time. down restores exactly the recorded
// values, removes only the VIPs up added (a VIP already on lo stays), and
// detaches the decap program. A state file is tied to its network
// namespace: hosts in different namespaces need different --state paths.
//
// While the decap program runs on a veth in driver mode, the kernel turns
// off TSO/GSO on the veth's peer (the program does not take multi-buffer
// frames) until down detaches it; bulk TCP to the host keeps working,
// segmented earlier. The kernel refuses driver mode on a veth whose peer's
// MTU exceeds about 3.5 kB; --xdp-mode auto then falls back to generic.
//
// The decap program is attached through netlink rather than a link pinned in
// bpffs: it stays on the interface after xvs-rs exits, also when xvs-rs runs
// under `ip netns exec`, whose private mount namespace would take a pin
// (and the attachment) away with it.
//
// # IPv6 VIPs
//
// Nothing like arp_ignore/arp_announce is needed for IPv6. Linux answers a
// neighbour solicitation only for addresses on the interface that received
// it (ndisc_recv_ns looks the target up on that device), so a /128 on lo is
// never announced on the wire, and a solicitation's source is an address of
// the sending interface (TestLabVIPNotAnnounced checks both families). up
// adds IPv6 VIPs with nodad (lo does no duplicate address detection anyway)
// and preferred lifetime 0: deprecated, the address stays valid for
// connections to it, but source address selection avoids it (RFC 6724 rule
// 3) for connections the host opens itself. ipip's tunl0 carries IPv4 only; IPv6 in
// TUN mode needs the decap program (6in4, protocol 41, or 6in6).
//
// # Checksums on veth
//
// A packet a local stack sends over a veth keeps a partial checksum
// (CHECKSUM_PARTIAL: the L4 checksum is left for "hardware" to finish); the
// receiving stack trusts it, but a director that forwards such a packet from
// XDP or AF_XDP sends it on with a wrong checksum and the real server drops
// it. In labs and containers, turn tx checksum offload off on the client
// side's veths so packets leave with full checksums, as from a real NIC:
//
//	ethtool -K IFACE tx off
//
// Real servers need nothing for this: the decap program does not touch the
// inner packet, and partial checksums on packets they receive locally are
// accepted by their stack.
package rs
