//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// xdp-fwd, the in-kernel baseline: the same work as a DR director's packet
// path without the load-balancing state. IPv4 TCP/UDP frames get the
// destination MAC of a real server chosen by hashing the flow (flow_hash,
// mirrored in Go by FlowHash) and the director's MAC as source, and leave
// through the interface they came in on (XDP_TX), as DR does on one wire.
// Everything else is passed to the kernel.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_REALS 1024

struct mac {
	__u8 addr[6];
	__u16 pad;
};

// The Go side sizes nothing here: it fills the first nreals slots.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_REALS);
	__type(key, __u32);
	__type(value, struct mac);
} reals SEC(".maps");

enum {
	FW_RX = 0,
	FW_TX = 1,
	FW_PASS = 2,
	FW_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

volatile const __u32 nreals = 1;
volatile const __u8 director_mac[6] = {};

static __always_inline void bump(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += 1;
}

// flow_hash mixes the 5-tuple with murmur3's 32-bit finaliser. Addresses
// and ports are taken as the host-order values of their wire bytes.
static __always_inline __u32 flow_hash(__u32 saddr, __u32 daddr, __u16 sport, __u16 dport, __u8 proto)
{
	__u32 h = saddr * 0x9e3779b1u;
	h ^= daddr + 0x7f4a7c15u + (h << 6) + (h >> 2);
	h ^= ((__u32)sport << 16 | dport) + 0x7f4a7c15u + (h << 6) + (h >> 2);
	h ^= proto;
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h;
}

SEC("xdp")
int xvs_fwd(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	bump(FW_RX);
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		goto pass;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5)
		goto pass;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		goto pass;
	__u16 *ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 2) > end)
		goto pass;

	__u32 h = flow_hash(bpf_ntohl(ip->saddr), bpf_ntohl(ip->daddr), bpf_ntohs(ports[0]),
			    bpf_ntohs(ports[1]), ip->protocol);
	__u32 n = nreals;
	if (n == 0)
		goto pass;
	__u32 idx = h % n;
	struct mac *m = bpf_map_lookup_elem(&reals, &idx);
	if (!m)
		goto pass;
	__builtin_memcpy(eth->h_dest, m->addr, 6);
	// Byte by byte: a memcpy would drop the volatile and let the compiler
	// fold in the zero initialiser instead of the loader's value.
#pragma unroll
	for (int i = 0; i < 6; i++)
		eth->h_source[i] = director_mac[i];
	bump(FW_TX);
	return XDP_TX;
pass:
	bump(FW_PASS);
	return XDP_PASS;
}

char __license[] SEC("license") = "Dual BSD/GPL";
