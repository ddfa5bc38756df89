//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The benchmark sink: attached to the veth that stands for the real
// servers' side of the wire, it counts every frame by destination MAC (one
// MAC per real server) and drops it, so receiving costs little and the
// spread across real servers is measured too.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); // destination MAC in the low six bytes, wire order
	__type(value, __u64);
} by_mac SEC(".maps");

enum {
	SK_FRAMES = 0, // every frame seen
	SK_SHORT = 1,  // shorter than an Ethernet header
	SK_OVERFLOW = 2, // by_mac full: counted in SK_FRAMES only
	SK_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SK_MAX);
	__type(key, __u32);
	__type(value, __u64);
} totals SEC(".maps");

static __always_inline void bump(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&totals, &idx);
	if (v)
		*v += 1;
}

SEC("xdp")
int xvs_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	bump(SK_FRAMES);
	if (data + 14 > end) {
		bump(SK_SHORT);
		return XDP_DROP;
	}
	__u64 mac = 0;
	__builtin_memcpy(&mac, data, 6);
	__u64 *v = bpf_map_lookup_elem(&by_mac, &mac);
	if (v) {
		*v += 1;
		return XDP_DROP;
	}
	__u64 one = 1;
	if (bpf_map_update_elem(&by_mac, &mac, &one, BPF_NOEXIST)) {
		// Another CPU inserted it meanwhile, or the map is full.
		v = bpf_map_lookup_elem(&by_mac, &mac);
		if (v)
			*v += 1;
		else
			bump(SK_OVERFLOW);
	}
	return XDP_DROP;
}

char __license[] SEC("license") = "Dual BSD/GPL";
