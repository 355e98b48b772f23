/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The datapath's maps. src/tunnel/pins.ts pins each under the instance's
 * bpffs directory by the name given here; src/maps/layouts.ts holds the
 * codec of every key and value.
 */
#ifndef WR_MAPS_H
#define WR_MAPS_H

#include "common.h"

/* Set to 1 by `warren trace` in its private copy of the programs, which
 * shares every map with the live datapath: a traced packet then leaves no
 * trace of its own (no counter moves, no GRE sequence number is used). The
 * verifier sees a constant, so the live programs carry no cost for it. */
const volatile __u32 wr_dry_run = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct wr_config);
} wr_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WR_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct wr_port);
} wr_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WR_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct wr_port_info);
} wr_port_info SEC(".maps");

/* ifindex of a local port's device -> its port number (0: none), for the
 * ifindexes below WR_IFINDEX_DIRECT: an array, which every packet a local
 * port sends indexes where a hash map would hash its key. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WR_IFINDEX_DIRECT);
	__type(key, __u32);
	__type(value, __u32);
} wr_ifindex_ports SEC(".maps");

/* The same for the ifindexes from WR_IFINDEX_DIRECT up, which a host gets
 * to after making many devices. The control plane keeps each ifindex in
 * one of the two maps, by its value. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WR_MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} wr_ifindex_ports_far SEC(".maps");

/* Local ports whose peers take XDP redirects, by port number -> ifindex.
 * XDP redirects through it: the map holds the device itself, where a
 * redirect by ifindex looks the device up for every packet. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, WR_MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} wr_xdp_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct wr_endpoint_key);
	__type(value, struct wr_endpoint);
} wr_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct wr_remote_key);
	__type(value, __u32);
} wr_remotes SEC(".maps");

/* Geneve options (class << 8 | type) that warren understands: a packet with
 * a critical option not listed here is dropped, as RFC 8926 requires. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} wr_geneve_known SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WR_DEFAULT_MAX_TUN_KEYS);
	__type(key, __u32);
	__type(value, struct wr_tun_key);
} wr_tun_keys SEC(".maps");

/* One mask set per table generation. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct wr_mask_set);
} wr_masks SEC(".maps");

/* The flow index of a generation: (mask id, masked key) -> flow. The control
 * plane creates these tables and swaps them in whole. */
struct wr_flow_table {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WR_DEFAULT_MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct wr_flow_index_key);
	__type(value, struct wr_flow_entry);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct wr_flow_table);
} wr_flow_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WR_DEFAULT_MAX_FLOWS);
	__type(key, __u32);
	__type(value, struct wr_flow_stats);
} wr_flow_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WR_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct wr_port_stats);
} wr_port_stats SEC(".maps");

/* The datapath-wide counters, one block per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct wr_stat_block);
} wr_stats SEC(".maps");

/* Replication groups (see warren.h): a group id's slot, each slot's bucket
 * lists and counters, and the buckets themselves with theirs. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WR_DEFAULT_MAX_GROUPS);
	__type(key, __u32);
	__type(value, __u32);
} wr_group_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WR_DEFAULT_MAX_GROUPS);
	__type(key, __u32);
	__type(value, struct wr_group);
} wr_groups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WR_DEFAULT_MAX_GROUPS);
	__type(key, __u32);
	__type(value, struct wr_group_stats);
} wr_group_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WR_DEFAULT_MAX_BUCKETS);
	__type(key, __u32);
	__type(value, struct wr_action);
} wr_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WR_DEFAULT_MAX_BUCKETS);
	__type(key, __u32);
	__type(value, struct wr_group_stats);
} wr_bucket_stats SEC(".maps");

/* Control plane only, kept here so that every process sees the same
 * allocation. wr_flow_ids: a bitmap of the flow ids in use. Tunnel keys are
 * shared: flows that set the same tunnel key use one slot, found through
 * wr_tun_key_slots, and wr_tun_key_refs counts the actions naming each slot
 * (0 = free). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WR_DEFAULT_MAX_FLOWS / 64);
	__type(key, __u32);
	__type(value, __u64);
} wr_flow_ids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WR_DEFAULT_MAX_TUN_KEYS);
	__type(key, __u32);
	__type(value, __u32);
} wr_tun_key_refs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WR_DEFAULT_MAX_TUN_KEYS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct wr_tun_key);
	__type(value, __u32);
} wr_tun_key_slots SEC(".maps");

/* Control plane only: the names of owners of flows and groups, by owner id. Each
 * named owner's flows are also listed (their index keys) in a hash map of
 * its own, pinned as maps/owned/<owner id>, so that replacing them costs
 * what they are, not what the table is. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WR_MAX_OWNERS);
	__type(key, __u32);
	__type(value, struct wr_owner);
} wr_owners SEC(".maps");

/* Whether this build counts nothing: trace's dry run, or an ablation. A
 * constant to the verifier, which then leaves out every branch on it. */
static __always_inline int uncounted(void)
{
	return wr_dry_run || ablated(ABL_COUNTERS);
}

/*
 * This CPU's counter block, or NULL when nothing may be counted. A
 * packet's fast path takes it once and bumps every counter through it.
 * The lookup never fails (the block always exists), so a program that
 * carries the block far may give up on NULL in a build that counts, and
 * the verifier then follows one state, not one with and one without it.
 */
static __always_inline struct wr_stat_block *counters(void)
{
	__u32 zero = 0;

	if (uncounted())
		return NULL;
	return bpf_map_lookup_elem(&wr_stats, &zero);
}

/* Counts `stat` (enum wr_stat) in block c; nothing when c is NULL. */
static __always_inline void bump(struct wr_stat_block *c, __u32 stat)
{
	if (!uncounted() && c)
		c->stat[stat & (WR_STAT_MAX - 1)]++;
}

/* Counts `stat` where no block is at hand: off the fast path. */
static __always_inline void stat_inc(__u32 stat)
{
	bump(counters(), stat);
}

/* Port port's counters. Counting or not is the caller's to decide. */
static __always_inline struct wr_port_stats *port_stats(__u32 port)
{
	return bpf_map_lookup_elem(&wr_port_stats, &port);
}

/* Counts a packet of `bytes` received in port counters s (NULL: nothing). */
static __always_inline void count_rx(struct wr_port_stats *s, __u64 bytes)
{
	if (s) {
		s->rx_packets++;
		s->rx_bytes += bytes;
	}
}

/* Counts a packet of `bytes` sent in port counters s (NULL: nothing). */
static __always_inline void count_tx(struct wr_port_stats *s, __u64 bytes)
{
	if (s) {
		s->tx_packets++;
		s->tx_bytes += bytes;
	}
}

static __always_inline void port_rx(__u32 port, __u64 bytes)
{
	if (!uncounted())
		count_rx(port_stats(port), bytes);
}

static __always_inline void port_tx(__u32 port, __u64 bytes)
{
	if (!uncounted())
		count_tx(port_stats(port), bytes);
}

/* Counts a drop: its reason, and the port it came in on. */
static __always_inline void drop(__u32 reason, __u32 in_port)
{
	struct wr_port_stats *s;

	if (uncounted())
		return;
	s = bpf_map_lookup_elem(&wr_port_stats, &in_port);
	stat_inc(reason);
	if (s)
		s->drops++;
}

/* Counts a packet of `bytes` in a group's or a bucket's counters. */
static __always_inline void group_count(struct wr_group_stats *s, __u64 bytes)
{
	if (wr_dry_run || !s)
		return;
	s->packets++;
	s->bytes += bytes;
}

/* The local port whose device is ifindex; 0 for none. Two calls the
 * compiler must not merge into one whose map is chosen at run time: the
 * verifier inlines an array lookup only where the call sees one map, and
 * an indirect call to the helper costs more than the rest of the lookup. */
static __always_inline __u32 ifindex_port(__u32 ifindex)
{
	__u32 *port;

	if (ifindex < WR_IFINDEX_DIRECT) {
		port = bpf_map_lookup_elem(&wr_ifindex_ports, &ifindex);
		return port ? *port : 0;
	}
	asm volatile("" ::: "memory");
	port = bpf_map_lookup_elem(&wr_ifindex_ports_far, &ifindex);
	return port ? *port : 0;
}

static __always_inline struct wr_config *config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&wr_config, &zero);
}

#endif /* WR_MAPS_H */
