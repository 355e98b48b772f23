/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-CPU packet and byte counters by slot, for the programs that only
 * count: the test fixtures (counter.bpf.c) and the benchmark's floor
 * (bench.bpf.c). User space reads them with counterCodec.
 */
#ifndef WR_COUNTER_H
#define WR_COUNTER_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "warren.h"

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WR_SLOT_MAX);
	__type(key, __u32);
	__type(value, struct wr_counter);
} counters SEC(".maps");

/* Counts one packet of len bytes in slot. */
static __always_inline void count(__u32 slot, __u64 len)
{
	struct wr_counter *c = bpf_map_lookup_elem(&counters, &slot);

	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

#endif /* WR_COUNTER_H */
