//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The real server's XDP program for TUN mode on hosts without the kernel's
// ipip/ip6_tunnel modules: strip the outer IPv4 or IPv6 header the director
// prepended and hand the inner packet to the stack, as if it had arrived
// unencapsulated.
//
// Decapsulated:
//   - an IPv4 packet, not a fragment, with protocol 4 (IPv4 in IPv4) or 41
//     (IPv6 in IPv4), whose outer destination is in `decap_locals` (this
//     host's own IPv4 addresses);
//   - an IPv6 packet whose next header is 4 (IPv4 in IPv6) or 41 (IPv6 in
//     IPv6) directly, without extension headers (RFC 2473 as Linux IPVS
//     sends it), whose outer destination is in `decap_locals6`;
// in both cases only when the inner destination is in `decap_vips` (or
// `decap_vips6`). The outer header is removed with bpf_xdp_adjust_head and
// the Ethernet header rewritten in front of the inner packet, MACs kept and
// the EtherType set to the inner packet's. A Congestion Experienced mark on
// the outer header is copied to an ECN-capable inner packet (RFC 6040).
// Passed untouched: everything else, including tunnelled packets for other
// hosts or other addresses and IPv6 tunnels behind extension headers, and
// malformed packets (which the stack drops).
// The program never reads past the end of the packet.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Fragment bits of iphdr.frag_off (host order; the kernel's are in net/ip.h).
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

enum decap_counter {
	DECAP_DECAPSULATED = 0, // outer header stripped, inner packet passed
	DECAP_PASSED = 1,       // not a tunnelled packet for a local VIP: untouched
	DECAP_MALFORMED = 2,    // truncated or invalid outer/inner headers: untouched
	DECAP_MAX,
};

// IPv4 VIPs, network byte order as on the wire.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} decap_vips SEC(".maps");

// IPv6 VIPs reached through IPv6 in IPv4 or in IPv6 (next header 41).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct in6_addr);
	__type(value, __u8);
} decap_vips6 SEC(".maps");

// This host's IPv4 addresses: only tunnels addressed to the host itself are
// opened, never transit traffic the host would route onwards.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} decap_locals SEC(".maps");

// This host's IPv6 addresses, the destinations of IPv4/IPv6-in-IPv6 tunnels.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct in6_addr);
	__type(value, __u8);
} decap_locals6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DECAP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} decap_stats SEC(".maps");

static __always_inline int verdict(__u32 counter)
{
	__u64 *v = bpf_map_lookup_elem(&decap_stats, &counter);
	if (v)
		*v += 1;
	return XDP_PASS;
}

// ip_header_ok checks the header checksum over ihl bytes (20 to 60; the
// caller has checked they are inside the packet). The outer header never
// reaches the stack, so this is the only place it is verified.
static __always_inline int ip_header_ok(struct iphdr *ip, __u32 ihl, void *end)
{
	__u32 sum = 0;

	for (__u32 off = 0; off < 60; off += 2) {
		if (off >= ihl)
			break;
		__u16 *w = (void *)ip + off;
		// Keep clang from folding the bound into pkt_end arithmetic, which
		// the verifier refuses.
		barrier_var(w);
		if ((void *)(w + 1) > end)
			return 0;
		sum += *w;
	}
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum == 0xffff;
}

#define ECN_MASK 0x03
#define ECN_CE 0x03

// ipv4_set_ce marks an ECN-capable inner packet Congestion Experienced and
// updates its header checksum incrementally (RFC 1624, eqn. 3).
static __always_inline void ipv4_set_ce(struct iphdr *ip)
{
	__u16 *w = (__u16 *)ip; // version/ihl and tos
	__u16 old = *w;
	ip->tos |= ECN_CE;
	__u32 sum = (__u16)~ip->check + (__u16)~old + (__u32)*w;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	ip->check = (__u16)~sum;
}

// open_inner checks the packet of payload bytes at inner, carried with
// protocol / next header next: a well-formed IPv4 (4) or IPv6 (41) packet to
// a VIP gets the outer CE mark if ce and it is ECN-capable, its EtherType
// goes to *proto, and the result is DECAP_DECAPSULATED; otherwise the result
// is the counter of the packet's verdict. The caller has checked that
// payload bytes from inner are inside the packet.
static __always_inline __u32 open_inner(void *inner, __u32 payload, __u8 next, int ce, void *end,
					__u16 *proto)
{
	if (next == IPPROTO_IPIP) {
		struct iphdr *in = inner;
		if ((void *)(in + 1) > end || payload < sizeof(*in))
			return DECAP_MALFORMED;
		if (in->version != 4 || in->ihl < 5 || bpf_ntohs(in->tot_len) > payload ||
		    bpf_ntohs(in->tot_len) < in->ihl * 4)
			return DECAP_MALFORMED;
		if (!bpf_map_lookup_elem(&decap_vips, &in->daddr))
			return DECAP_PASSED;
		// RFC 6040: congestion marked on the outer header reaches the
		// inner packet if it is ECN-capable (a Not-ECT inner packet is
		// passed unmarked, where the RFC would drop it).
		if (ce && (in->tos & ECN_MASK))
			ipv4_set_ce(in);
		*proto = bpf_htons(ETH_P_IP);
		return DECAP_DECAPSULATED;
	}
	struct ipv6hdr *in6 = inner;
	if ((void *)(in6 + 1) > end || payload < sizeof(*in6))
		return DECAP_MALFORMED;
	if (in6->version != 6 || bpf_ntohs(in6->payload_len) > payload - sizeof(*in6))
		return DECAP_MALFORMED;
	if (!bpf_map_lookup_elem(&decap_vips6, &in6->daddr))
		return DECAP_PASSED;
	// The ECN bits are the low two of the traffic class, which straddles
	// the version byte and flow_lbl[0]: here bits 4-5.
	if (ce && (in6->flow_lbl[0] & 0x30))
		in6->flow_lbl[0] |= 0x30;
	*proto = bpf_htons(ETH_P_IPV6);
	return DECAP_DECAPSULATED;
}

// strip drops the hdrlen bytes of outer header after the Ethernet header
// and writes the Ethernet header back in front of the inner packet, MACs
// kept and the EtherType set to proto.
static __always_inline int strip(struct xdp_md *ctx, struct ethhdr *eth, int hdrlen, __u16 proto)
{
	__u8 macs[2 * ETH_ALEN];
	__builtin_memcpy(macs, eth, sizeof(macs));
	if (bpf_xdp_adjust_head(ctx, hdrlen))
		return verdict(DECAP_PASSED);
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end) // cannot happen: the inner header follows
		return verdict(DECAP_MALFORMED);
	__builtin_memcpy(eth, macs, sizeof(macs));
	eth->h_proto = proto;
	return verdict(DECAP_DECAPSULATED);
}

// decap4 handles an IPv4 outer header.
static __always_inline int decap4(struct xdp_md *ctx, struct ethhdr *eth, void *end)
{
	struct iphdr *outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > end)
		return verdict(DECAP_MALFORMED);
	if (outer->protocol != IPPROTO_IPIP && outer->protocol != IPPROTO_IPV6)
		return verdict(DECAP_PASSED);
	if (outer->version != 4 || outer->ihl < 5)
		return verdict(DECAP_MALFORMED);
	__u32 ihl = outer->ihl * 4;
	__u32 tot = bpf_ntohs(outer->tot_len);
	if (tot < ihl || (void *)outer + tot > end)
		return verdict(DECAP_MALFORMED);
	// A fragment holds only part of the inner packet; without ipip the stack
	// cannot reassemble and decapsulate it either, so it is not ours.
	if (outer->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return verdict(DECAP_PASSED);
	if (!bpf_map_lookup_elem(&decap_locals, &outer->daddr))
		return verdict(DECAP_PASSED);
	if (!ip_header_ok(outer, ihl, end))
		return verdict(DECAP_MALFORMED);

	__u16 proto = 0;
	__u32 c = open_inner((void *)outer + ihl, tot - ihl, outer->protocol,
			     (outer->tos & ECN_MASK) == ECN_CE, end, &proto);
	if (c != DECAP_DECAPSULATED)
		return verdict(c);
	return strip(ctx, eth, (int)ihl, proto);
}

// decap6 handles an IPv6 outer header. Only a tunnel right behind the fixed
// header is opened: RFC 2473 allows a tunnel encapsulation limit option
// (a destination options header), which Linux IPVS does not send; packets
// with any extension header are left to the stack.
static __always_inline int decap6(struct xdp_md *ctx, struct ethhdr *eth, void *end)
{
	struct ipv6hdr *outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > end)
		return verdict(DECAP_MALFORMED);
	if (outer->nexthdr != IPPROTO_IPIP && outer->nexthdr != IPPROTO_IPV6)
		return verdict(DECAP_PASSED);
	if (outer->version != 6)
		return verdict(DECAP_MALFORMED);
	__u32 plen = bpf_ntohs(outer->payload_len);
	if ((void *)(outer + 1) + plen > end)
		return verdict(DECAP_MALFORMED);
	if (!bpf_map_lookup_elem(&decap_locals6, &outer->daddr))
		return verdict(DECAP_PASSED);

	// The traffic class's ECN bits are bits 4-5 of flow_lbl[0].
	__u16 proto = 0;
	__u32 c = open_inner(outer + 1, plen, outer->nexthdr,
			     ((outer->flow_lbl[0] >> 4) & ECN_MASK) == ECN_CE, end, &proto);
	if (c != DECAP_DECAPSULATED)
		return verdict(c);
	return strip(ctx, eth, sizeof(*outer), proto);
}

SEC("xdp")
int xvs_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return verdict(DECAP_PASSED);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return decap4(ctx, eth, end);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return decap6(ctx, eth, end);
	return verdict(DECAP_PASSED);
}

char __license[] SEC("license") = "Dual BSD/GPL";
