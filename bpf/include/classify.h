/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow lookup by tuple-space search, as Open vSwitch's classifier does it:
 * one hash lookup per mask, masks ordered by the highest priority of any
 * flow under them, so the search stops as soon as no later mask can hold a
 * better match. The cost per packet is bounded by the number of masks
 * (at most WR_MAX_MASKS), not by the number of flows.
 */
#ifndef WR_CLASSIFY_H
#define WR_CLASSIFY_H

#include "maps.h"

/* Per-CPU scratch for a packet's flow key and its key under one mask: too
 * big for the 512-byte stack beside everything else a program keeps there.
 * Programs do not nest on a CPU, so one slot per CPU is enough. */
struct lookup {
	struct wr_flow_key key;
	struct wr_flow_index_key ik;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lookup);
} wr_scratch_lookup SEC(".maps");

/* This CPU's scratch, its flow key zeroed. */
static __always_inline struct lookup *lookup_scratch(void)
{
	__u32 zero = 0;
	struct lookup *l = bpf_map_lookup_elem(&wr_scratch_lookup, &zero);

	if (l)
		__builtin_memset(&l->key, 0, sizeof(l->key));
	return l;
}

/* The highest-priority flow matching key, or NULL. */
static __always_inline struct wr_flow_entry *classify(const struct wr_flow_key *key,
						      struct lookup *l)
{
	struct wr_flow_entry *best = NULL;
	struct wr_config *cfg = config();
	struct wr_mask_set *set;
	__u32 gen, count;
	void *table;
	__u32 best_prio = 0;

	if (!cfg)
		return NULL;
	gen = cfg->gen & 1;
	set = bpf_map_lookup_elem(&wr_masks, &gen);
	table = bpf_map_lookup_elem(&wr_flow_tables, &gen);
	if (!set || !table)
		return NULL;
	count = set->count;
	l->ik.pad0 = 0;

	for (__u32 i = 0; i < WR_MAX_MASKS; i++) {
		const struct wr_mask *m;
		const __u64 *k = (const __u64 *)key;
		const __u64 *mk;
		__u64 *out = (__u64 *)&l->ik.key;
		struct wr_flow_entry *e;

		if (i >= count)
			break;
		m = &set->masks[i];
		/* Masks are sorted by max_priority: none left can do better. */
		if (best && best_prio >= m->max_priority)
			break;
		mk = (const __u64 *)&m->bits;
#pragma unroll
		for (int w = 0; w < WR_FLOW_KEY_WORDS; w++)
			out[w] = k[w] & mk[w];
		l->ik.mask_id = m->id;
		e = bpf_map_lookup_elem(table, &l->ik);
		if (e && (!best || e->priority > best_prio)) {
			best = e;
			best_prio = e->priority;
		}
	}
	return best;
}

/* Accounts a packet to flow e. */
static __always_inline void flow_hit(const struct wr_flow_entry *e, __u64 bytes, __u16 tcp_flags)
{
	__u32 id = e->flow_id;
	struct wr_flow_stats *s;

	if (wr_dry_run)
		return;
	s = bpf_map_lookup_elem(&wr_flow_stats, &id);
	if (s) {
		s->packets++;
		s->bytes += bytes;
		s->used_ns = bpf_ktime_get_boot_ns();
		s->tcp_flags |= tcp_flags;
	}
}

#endif /* WR_CLASSIFY_H */
