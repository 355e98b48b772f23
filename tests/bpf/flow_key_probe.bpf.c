// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Runs the datapath's frame parser (parse_frame in parse.h) on a test-run
 * packet and leaves the flow key it extracted in a map, so a test can
 * compare it with the key the TypeScript side computes for the same frame.
 * Once at XDP and once at TC: each hook sees the frame as its own test-run
 * delivers it.
 */
#include "parse.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct wr_flow_key);
} probe_key SEC(".maps");

static __always_inline int probe(void *data, void *end)
{
	struct packet p = { .data = data, .end = end };
	struct frame_info fi = {};
	struct wr_flow_key *key;
	__u32 zero = 0;

	key = bpf_map_lookup_elem(&probe_key, &zero);
	if (!key)
		return -1;
	__builtin_memset(key, 0, sizeof(*key));
	return parse_frame(&p, key, &fi);
}

SEC("xdp")
int xdp_probe(struct xdp_md *ctx)
{
	return probe((void *)(long)ctx->data, (void *)(long)ctx->data_end) ? XDP_DROP : XDP_PASS;
}

SEC("tc")
int tc_probe(struct __sk_buff *skb)
{
	return probe((void *)(long)skb->data, (void *)(long)skb->data_end) ? TC_ACT_SHOT : TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
