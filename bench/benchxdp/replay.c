//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The replay generator's XDP program. The Go side runs it with BPF_PROG_RUN
// in live-frames mode (BPF_F_TEST_XDP_LIVE_FRAMES) on a veth: every run
// writes the next frame of the trace into the kernel's packet buffer and
// returns XDP_TX, which the kernel turns into a transmit out of that veth to
// its peer. The frames live in an array map; a per-CPU cursor cycles
// through them, so one syscall emits millions of distinct packets.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

// MAX_FRAME bounds a stored frame (an Ethernet frame without FCS, 1514
// bytes, fits); a power of two keeps the verifier's bound simple.
#define MAX_FRAME 2048

struct frame {
	__u32 len;
	__u32 pad;
	__u8 data[MAX_FRAME];
};

// The Go side sizes this map to the number of frames before loading.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frame);
} frames SEC(".maps");

enum {
	ST_CURSOR = 0,  // index of the next frame
	ST_EMITTED = 1, // runs that returned XDP_TX
	ST_ERRORS = 2,  // runs that could not build their frame (XDP_ABORTED)
	ST_NEXT_NS = 3, // pacing: earliest time of the next frame
	ST_MAX,
};

// Set by the Go side before each replay. PACE_INTERVAL: at most one frame
// per that many ns (0 = no limit); runs before the next frame's time
// return XDP_DROP without counting as emitted, so the kernel loop spins at
// full speed and frames leave evenly spaced, never in bursts that would
// overflow the peer's 256-frame ring. PACE_LIMIT: emit no more than that
// many frames (0 = no limit), so a paced replay of a count can ask for
// long calls without overshooting.
enum {
	PACE_INTERVAL = 0,
	PACE_LIMIT = 1,
	PACE_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PACE_MAX);
	__type(key, __u32);
	__type(value, __u64);
} pace SEC(".maps");

// A late generator may catch up by at most this many frames at once.
#define PACE_BURST 64

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ST_MAX);
	__type(key, __u32);
	__type(value, __u64);
} state SEC(".maps");

// Set by the loader: how many frames the map holds, and how many leading
// bytes of each frame to write per packet. Bytes past copy_len keep what the
// page held from the start (zeros): the loader picks a short copy_len only
// when every frame is zero past it, so the wire sees the trace exactly.
volatile const __u32 nframes = 1;
volatile const __u32 copy_len = MAX_FRAME;

static __always_inline void bump(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&state, &idx);
	if (v)
		*v += 1;
}

SEC("xdp")
int xvs_replay(struct xdp_md *ctx)
{
	__u32 pk = PACE_LIMIT;
	__u64 *limit = bpf_map_lookup_elem(&pace, &pk);
	if (limit && *limit) {
		__u32 ke = ST_EMITTED;
		__u64 *emitted = bpf_map_lookup_elem(&state, &ke);
		if (emitted && *emitted >= *limit)
			return XDP_DROP;
	}
	pk = PACE_INTERVAL;
	__u64 *interval = bpf_map_lookup_elem(&pace, &pk);
	if (interval && *interval) {
		__u32 kn = ST_NEXT_NS;
		__u64 *next_ns = bpf_map_lookup_elem(&state, &kn);
		if (!next_ns)
			return XDP_ABORTED;
		__u64 now = bpf_ktime_get_ns();
		if (now < *next_ns)
			return XDP_DROP;
		__u64 floor = now - PACE_BURST * *interval;
		*next_ns = (*next_ns < floor ? floor : *next_ns) + *interval;
	}

	__u32 k = ST_CURSOR;
	__u64 *cur = bpf_map_lookup_elem(&state, &k);
	if (!cur)
		return XDP_ABORTED;
	__u32 i = *cur;
	__u32 next = i + 1;
	if (next >= nframes)
		next = 0;
	*cur = next;

	struct frame *f = bpf_map_lookup_elem(&frames, &i);
	if (!f)
		goto fail;
	__u32 len = f->len;
	if (len < 14 || len > MAX_FRAME)
		goto fail;
	int have = ctx->data_end - ctx->data;
	if (have != (int)len && bpf_xdp_adjust_tail(ctx, (int)len - have))
		goto fail;
	__u32 n = len < copy_len ? len : copy_len;
	if (n < 1 || n > MAX_FRAME)
		goto fail;
	if (bpf_xdp_store_bytes(ctx, 0, f->data, n))
		goto fail;
	bump(ST_EMITTED);
	return XDP_TX;
fail:
	bump(ST_ERRORS);
	return XDP_ABORTED;
}

char __license[] SEC("license") = "Dual BSD/GPL";
