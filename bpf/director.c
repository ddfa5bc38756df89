//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The director's XDP program: hand the dataplane exactly the packets it must
// see, and leave everything else to the kernel.
//
// Redirected to the AF_XDP socket of the receiving queue:
//   - packets whose destination (address, protocol, port) is in `services`
//     (port 0 in the map = every port of that address), and
//   - packets whose source (address, protocol, port) is in `nat_reals`
//     (replies from NAT real servers; port 0 = any port of that real server).
// Passed to the kernel: packets to the director's own addresses (the
// `local_addrs` map: health-check replies, management) unless a service
// claims them, ICMP from NAT real servers other than errors (ping replies),
// and everything else (ARP, VRRP, ICMP to the VIP,
// management traffic, health-check replies) and malformed headers, which are
// never read past the end of the packet.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_QUEUES 64

// A key for both maps. Addresses are IPv6 or IPv4-mapped IPv6
// (::ffff:a.b.c.d); the port is in network byte order as on the wire.
struct flow_key {
	__u8 addr[16];
	__u16 port;
	__u8 proto;
	__u8 pad;
};

enum counter {
	CNT_REDIRECTED = 0,
	CNT_PASSED = 1,
	CNT_MALFORMED = 2,
	CNT_NO_SOCKET = 3,
	CNT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct flow_key);
	__type(value, __u32);
} services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, __u32);
} nat_reals SEC(".maps");

// The director's own addresses (IPv4-mapped or IPv6), as struct flow_key's
// addr: replies to its own health checks come from NAT real servers' service
// ports and must reach the kernel, not the dataplane.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u8[16]);
	__type(value, __u32);
} local_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define IPPROTO_SCTP_ 132
#define IP_MF_ 0x2000
#define IP_OFFSET_ 0x1FFF

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += 1;
}

static __always_inline int pass(void)
{
	count(CNT_PASSED);
	return XDP_PASS;
}

static __always_inline int malformed(void)
{
	count(CNT_MALFORMED);
	return XDP_PASS;
}

static __always_inline void set_v4(__u8 *dst, __be32 a)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &a, 4);
}

// lookup tries the exact (addr, proto, port) and then the any-port entry.
static __always_inline int lookup(void *map, struct flow_key *k)
{
	if (bpf_map_lookup_elem(map, k))
		return 1;
	if (k->port == 0)
		return 0;
	k->port = 0;
	return bpf_map_lookup_elem(map, k) != 0;
}

SEC("xdp")
int xvs_director(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct flow_key dk = {}, sk = {};
	__u16 eth_proto;
	__u8 l4;
	void *l4p;
	int first_frag = 1;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return malformed();
	eth_proto = eth->h_proto;
	void *l3 = eth + 1;
	if (eth_proto == bpf_htons(ETH_P_8021Q_) || eth_proto == bpf_htons(ETH_P_8021AD_)) {
		// One tag: TCI (2 bytes) then the inner ethertype.
		if (l3 + 4 > end)
			return malformed();
		eth_proto = *(__be16 *)(l3 + 2);
		l3 += 4;
	}

	if (eth_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end)
			return malformed();
		if (ip->version != 4 || ip->ihl < 5)
			return malformed();
		l4p = l3 + ip->ihl * 4;
		if (l4p > end)
			return malformed();
		l4 = ip->protocol;
		set_v4(dk.addr, ip->daddr);
		set_v4(sk.addr, ip->saddr);
		// Later fragments carry no ports: only an any-port service can
		// claim them.
		if (ip->frag_off & bpf_htons(IP_OFFSET_))
			first_frag = 0;
	} else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return malformed();
		if (ip6->version != 6)
			return malformed();
		l4 = ip6->nexthdr;
		l4p = ip6 + 1;
		__builtin_memcpy(dk.addr, &ip6->daddr, 16);
		__builtin_memcpy(sk.addr, &ip6->saddr, 16);
		// Skip up to four extension headers (hop-by-hop, routing,
		// destination options, fragment).
#pragma unroll
		for (int i = 0; i < 4; i++) {
			if (l4 == IPPROTO_HOPOPTS || l4 == IPPROTO_ROUTING || l4 == IPPROTO_DSTOPTS) {
				__u8 *eh = l4p;
				if ((void *)(eh + 2) > end)
					return malformed();
				l4 = eh[0];
				l4p += (eh[1] + 1) * 8;
			} else if (l4 == IPPROTO_FRAGMENT) {
				__u8 *eh = l4p;
				if ((void *)(eh + 8) > end)
					return malformed();
				l4 = eh[0];
				if ((eh[2] << 8 | eh[3]) & 0xFFF8)
					first_frag = 0;
				l4p += 8;
			}
		}
		if (l4p > end)
			return malformed();
	} else {
		return pass();
	}

	if (l4 == IPPROTO_TCP || l4 == IPPROTO_UDP || l4 == IPPROTO_SCTP_) {
		if (first_frag) {
			// Ports are the first four bytes of all three headers; check
			// the whole fixed header so the dataplane gets sane packets.
			__u32 hl = l4 == IPPROTO_TCP ? sizeof(struct tcphdr) : l4 == IPPROTO_UDP ? sizeof(struct udphdr) : 12;
			if (l4p + hl > end)
				return malformed();
			__be16 *ports = l4p;
			sk.port = ports[0];
			dk.port = ports[1];
		}
	} else if (l4 == IPPROTO_ICMP || l4 == IPPROTO_ICMPV6) {
		// Only ICMP errors concern a NATed flow: destination unreachable,
		// time exceeded, parameter problem (ICMPv6: types 1-4).
		__u8 *icmp = l4p;
		if ((void *)(icmp + 1) > end)
			return malformed();
		__u8 t = icmp[0];
		int err = l4 == IPPROTO_ICMP ? (t == 3 || t == 11 || t == 12) : (t >= 1 && t <= 4);
		if (!err)
			return pass();
	} else {
		return pass();
	}
	dk.proto = l4;
	sk.proto = l4;

	// ICMP to a VIP stays with the kernel (ping the VIP); ICMP errors from
	// a NAT real server go to the dataplane to be translated.
	int hit = 0;
	if (l4 != IPPROTO_ICMP && l4 != IPPROTO_ICMPV6)
		hit = lookup(&services, &dk);
	if (!hit) {
		if (bpf_map_lookup_elem(&local_addrs, dk.addr))
			return pass();
		hit = lookup(&nat_reals, &sk);
	}
	if (!hit)
		return pass();

	__u32 q = ctx->rx_queue_index;
	if (!bpf_map_lookup_elem(&xsks, &q)) {
		count(CNT_NO_SOCKET);
		return XDP_PASS;
	}
	count(CNT_REDIRECTED);
	return bpf_redirect_map(&xsks, q, XDP_PASS);
}

char __license[] SEC("license") = "Dual BSD/GPL";
