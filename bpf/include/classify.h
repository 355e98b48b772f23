/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Flow lookup: an exact-match cache per CPU (below), and behind it
 * tuple-space search, as Open vSwitch's classifier does it: one hash
 * lookup per mask, masks ordered by the highest priority of any flow under
 * them, so the search stops as soon as no later mask can hold a better
 * match. The search's cost is bounded by the number of masks (at most
 * WR_MAX_MASKS), not by the number of flows; a cache hit's by neither.
 *
 * The generation (wr_config.gen & 1), read once per packet, picks the mask
 * set and the flow index, and an entry counts only if it is part of that
 * generation (wr_flow_entry.vis). An owner's apply uses this to change many
 * entries of one index at once: it writes the next generation's entries
 * beside the live ones, then switches generations with one write (see
 * src/tunnel/flows/commit.ts).
 */
#ifndef WR_CLASSIFY_H
#define WR_CLASSIFY_H

#include "clock.h"
#include "maps.h"
#include "parse.h"
#include "tunnel.h"

/* Words of a tunnel frame that its flow key and decapsulation depend on,
 * as the packet cache (pkt_cache.h) keys its slots. */
#define PKT_WORDS 12

/* A frame's words, their hash, where its inner frame starts (0: nothing
 * to fill: a shape the packet cache does not serve, or a frame the full
 * path should not fill from), and the wr_config.seq + 1 read before them. */
struct pkt_key {
	__u64 w[PKT_WORDS];
	__u64 tag;
	__u32 hash;
	__u32 io;
};

/* Per-CPU scratch for a packet's flow key, its key under one mask, and
 * what parsing learnt of its frame at TC: too big for the 512-byte stack
 * beside everything else a program keeps there. Programs do not nest on a
 * CPU, so one slot per CPU is enough. */
struct lookup {
	struct wr_flow_key key;
	struct wr_flow_index_key ik;
	struct frame_info fi;
	/* The flow cache slot (FLOW_CACHE_SLOTS, below) that holds a copy
	 * of the flow found, META_NO_FLOW when none does, the flow's id and
	 * the wr_config.seq it was found under: what classify found, for
	 * XDP to hand TC in struct wr_meta; at TC, what XDP handed over,
	 * until frame_flow takes it. */
	__u64 hint_seq;
	__u32 hint_flow;
	__u32 hint_slot;
	/* The generation's wr_flow_entry.vis bit: kept here, not on the
	 * stack, as the group walk's call chain uses all 512 bytes. */
	__u8 vis;
	/* Kept from packet to packet, unlike the rest: the endpoint the
	 * last tunnel packet resolved to. */
	struct tun_memo memo;
	/* At XDP, the frame's words, for the packet cache's fill. */
	struct pkt_key pk;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lookup);
} wr_scratch_lookup SEC(".maps");

/* This CPU's scratch, as the last packet left it. */
static __always_inline struct lookup *scratch_as_left(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&wr_scratch_lookup, &zero);
}

/* Makes l ready for a packet: its flow key zeroed, no flow handed over. */
static __always_inline void lookup_reset(struct lookup *l)
{
	__builtin_memset(&l->key, 0, sizeof(l->key));
	l->hint_slot = META_NO_FLOW;
}

/* This CPU's scratch, ready for a packet. */
static __always_inline struct lookup *lookup_scratch(void)
{
	struct lookup *l = scratch_as_left();

	if (l)
		lookup_reset(l);
	return l;
}

/* Stamps the network of the packet's ingress port on key: the port's own,
 * or, for a tunnel port with net=flow, the packet's tunnel key (0, no
 * network, when it is wider than 32 bits). */
static __always_inline void stamp_net(struct wr_flow_key *key)
{
	__u32 p = key->in_port;
	struct wr_port *port = bpf_map_lookup_elem(&wr_ports, &p);

	key->net = port ? port_net(port->flags, port->net, key) : 0;
}

/* Whether flow e re-stamps the packet's network (set_field:N->net). */
static __always_inline int restamps(const struct wr_flow_entry *e)
{
	return e->n_actions == 1 && e->actions[0].op == WR_ACT_SET_NET;
}

/* The replacement staged under l->ik (alt 1) for an entry that is not part
 * of generation l->vis, if it is part of it; else NULL. */
static __always_inline struct wr_flow_entry *stand_in(void *table, struct lookup *l)
{
	struct wr_flow_entry *e;

	l->ik.alt = 1;
	e = bpf_map_lookup_elem(table, &l->ik);
	l->ik.alt = 0;
	return e && (e->vis & l->vis) ? e : NULL;
}

/* The highest-priority flow matching key in cfg's live table, or NULL. */
static __always_inline struct wr_flow_entry *search(const struct wr_flow_key *key,
						    struct lookup *l, const struct wr_config *cfg)
{
	struct wr_flow_entry *best = NULL;
	struct wr_mask_set *set;
	__u32 gen, count;
	void *table;
	__u32 best_prio = 0;

	gen = cfg->gen & 1;
	l->vis = 1 << gen;
	set = bpf_map_lookup_elem(&wr_masks, &gen);
	table = bpf_map_lookup_elem(&wr_flow_tables, &gen);
	if (!set || !table)
		return NULL;
	count = set->count;
	l->ik.alt = 0;

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
		if (e && !(e->vis & l->vis))
			e = stand_in(table, l);
		if (e && (!best || e->priority > best_prio)) {
			best = e;
			best_prio = e->priority;
		}
	}
	return best;
}

/*
 * The exact-match flow cache, in front of the search, as Open vSwitch's EMC
 * sits in front of its megaflow subtables (lib/dpif-netdev-private-dfc.h).
 *
 * Each CPU has FLOW_CACHE_SLOTS slots. A packet's whole flow key hashes to
 * two of them (two ways, so that two busy flows rarely evict each other);
 * a slot holds a key, a copy of the flow the search found for it, and the
 * configuration's change counter (wr_config.seq) at the time. A hit costs a
 * hash of the key, one or two slot reads and a key comparison, whatever
 * the number of masks and flows.
 *
 * Invalidation needs no sweep: a slot is valid only while the change
 * counter is the one it was made under, and every control plane change
 * moves the counter before its first write (Journal.begin) and again after
 * its last (Journal.commit). The counter is read before the search, so a
 * slot filled from a table that a change was already rewriting carries a
 * counter that is stale by the time the change is done. While a change is
 * under way (WR_CFG_WRITING), packets are searched and nothing is cached,
 * so no half-written state outlives the write. An owner's apply is such a
 * change from its first staged entry to its last stand-in deleted, and its
 * generation switch moves the counter too: a flow its staging hides from
 * the live generation is hidden from the cache as well.
 *
 * trace's dry-run copy neither reads nor fills the cache, and counts
 * nothing: it sees what the search sees, which is what a valid slot holds.
 */
#define FLOW_CACHE_SLOTS 4096	/* per CPU, a power of two */

struct flow_cache_slot {
	__u64 tag;		/* wr_config.seq + 1 when filled; 0: never */
	struct wr_flow_key key;
	struct wr_flow_entry flow;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FLOW_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct flow_cache_slot);
} wr_flow_cache SEC(".maps");

/* Whether the n words at a and b are equal: n is a constant, the
 * comparison unrolled, one branch at the end. */
static __always_inline int words_equal(const __u64 *a, const __u64 *b, const int n)
{
	__u64 diff = 0;

#pragma unroll
	for (int i = 0; i < n; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

static __always_inline int flow_keys_equal(const struct wr_flow_key *a, const struct wr_flow_key *b)
{
	return words_equal((const __u64 *)a, (const __u64 *)b, WR_FLOW_KEY_WORDS);
}

/* Slot i (taken modulo FLOW_CACHE_SLOTS) of this CPU's cache. */
static __always_inline struct flow_cache_slot *flow_cache_slot(__u32 i)
{
	i &= FLOW_CACHE_SLOTS - 1;
	return bpf_map_lookup_elem(&wr_flow_cache, &i);
}

/* Which of a key's two ways (s0, s1: a slot whose first field is its tag)
 * to fill under tag: a stale or empty one if there is one; else hash picks. */
static __always_inline void *cache_way(void *s0, void *s1, __u64 tag, __u32 hash)
{
	if (!s0 || *(__u64 *)s0 != tag)
		return s0;
	if (!s1 || *(__u64 *)s1 != tag)
		return s1;
	return (hash >> 31) ? s1 : s0;
}

/* Records in l that slot i holds flow e, made under tag. */
static __always_inline struct wr_flow_entry *cached_in(struct lookup *l, __u32 i,
						       struct flow_cache_slot *s, __u64 tag)
{
	l->hint_seq = tag - 1;
	l->hint_flow = s->flow.flow_id;
	l->hint_slot = i & (FLOW_CACHE_SLOTS - 1);
	return &s->flow;
}

/* The highest-priority flow matching key, or NULL: from the cache, or
 * searched and then cached. l->hint_* says which slot holds it; c is the
 * packet's counter block (NULL: nothing counted). */
static __always_inline struct wr_flow_entry *classify(const struct wr_flow_key *key,
						      struct lookup *l, struct wr_stat_block *c)
{
	struct flow_cache_slot *s0 = NULL, *s1 = NULL, *fill;
	struct wr_config *cfg = config();
	struct wr_cache_stats *cs = c ? &c->cache : NULL;
	struct wr_flow_entry *e;
	__u64 tag;
	__u32 hash;

	l->hint_slot = META_NO_FLOW;
	if (!cfg)
		return NULL;
	if (wr_dry_run || ablated(ABL_CACHE))
		return search(key, l, cfg);
	/* Before the search: see above. */
	tag = cfg->seq + 1;
	hash = flow_key_hash(key);
	/* The comparisons below read the key again: kept from the hash, its
	 * 19 words would be spilled to the stack and read back from there. */
	asm volatile("" ::: "memory");
	s0 = flow_cache_slot(hash);
	if (s0 && s0->tag == tag && flow_keys_equal(&s0->key, key) && !ablated(ABL_CACHE_HIT)) {
		if (cs)
			cs->flow_hits++;
		return cached_in(l, hash, s0, tag);
	}
	s1 = flow_cache_slot(hash >> 16);
	if (s1 && s1->tag == tag && flow_keys_equal(&s1->key, key) && !ablated(ABL_CACHE_HIT)) {
		if (cs)
			cs->flow_hits++;
		return cached_in(l, hash >> 16, s1, tag);
	}
	if (cs)
		cs->flow_misses++;
	e = search(key, l, cfg);
	if (!e || (cfg->flags & WR_CFG_WRITING))
		return e;
	fill = cache_way(s0, s1, tag, hash);
	if (!fill)
		return e;
	fill->tag = tag;
	fill->key = *key;
	fill->flow = *e;
	return cached_in(l, fill == s0 ? hash : hash >> 16, fill, tag);
}

/*
 * The flow XDP classified this frame to (l->hint_*, from struct wr_meta),
 * taken once: NULL unless the configuration is still the one XDP found it
 * under and XDP's cache slot still holds it (the slot is per CPU, and
 * other frames may have refilled it in between). A copy made under the
 * current wr_config.seq is what the search would find: see the cache's
 * invalidation above.
 */
static __always_inline struct wr_flow_entry *xdp_flow(struct lookup *l)
{
	struct flow_cache_slot *s;
	struct wr_config *cfg;
	__u32 i = l->hint_slot;

	l->hint_slot = META_NO_FLOW;
	if (i == META_NO_FLOW || wr_dry_run || ablated(ABL_META_FLOW))
		return NULL;
	cfg = config();
	if (!cfg || cfg->seq != l->hint_seq)
		return NULL;
	s = flow_cache_slot(i);
	if (!s || s->tag != l->hint_seq + 1 || s->flow.flow_id != l->hint_flow)
		return NULL;
	return &s->flow;
}

/* classify in a frame of its own: TC's deepest call chains (the actions)
 * run beside it, not under it. It takes the counter block itself: handed
 * in maybe-NULL, the block costs the verifier ~10% more states. */
static __noinline struct wr_flow_entry *classify_apart(const struct wr_flow_key *key,
						       struct lookup *l)
{
	return classify(key, l, counters());
}

/* Accounts a packet to flow counters s (NULL: nothing). Counting or not is
 * the caller's to decide. */
static __always_inline void count_flow(struct wr_flow_stats *s, __u64 bytes, __u16 tcp_flags)
{
	if (s) {
		s->packets++;
		s->bytes += bytes;
		s->tcp_flags |= tcp_flags;
		/* Last: nothing but s lives across the fallback's helper
		 * call, which keeps finish_at_tc's frame at 32 bytes, in the
		 * verifier's 512 of combined stack. */
		s->used_ns = coarse_now();
	}
}

/* Accounts a packet to the flow whose id is id. */
static __always_inline void flow_count(__u32 id, __u64 bytes, __u16 tcp_flags)
{
	if (!uncounted())
		count_flow(bpf_map_lookup_elem(&wr_flow_stats, &id), bytes, tcp_flags);
}

/* Accounts a packet to flow e. */
static __always_inline void flow_hit(const struct wr_flow_entry *e, __u64 bytes, __u16 tcp_flags)
{
	flow_count(e->flow_id, bytes, tcp_flags);
}

/*
 * Parses the frame in skb into key (its tunnel fields already set) and fi;
 * with ecn = the outer ECN + 1 (0: none), decapsulates ECN into it (RFC
 * 6040). Returns 0, or the WR_DROP_* reason to drop it for.
 */
static __always_inline int parse_inner_skb(struct __sk_buff *skb, struct wr_flow_key *key,
					   struct frame_info *fi, __u32 ecn)
{
	struct packet p;

	/* Headers the parser reads must be in the linear part. */
	if (skb->data_end - skb->data < 128 && skb->len > skb->data_end - skb->data)
		bpf_skb_pull_data(skb, skb->len < 128 ? skb->len : 128);
	p.data = (void *)(long)skb->data;
	p.end = (void *)(long)skb->data_end;
	/* The kernel takes a frame's first 802.1Q or 802.1ad tag off into the
	 * skb before TC runs (with or without VLAN offload on the device), so
	 * it is read there; test-run leaves it in the bytes. */
	if (skb->vlan_present)
		key->vlan_tci = bpf_htons(skb->vlan_tci | VLAN_TAG_PRESENT);
	if (parse_frame(&p, key, fi) < 0)
		return WR_DROP_TRUNCATED;
	if (ecn && ecn_decap(&p, fi->l3_off, fi->ip_version, ecn - 1, key) < 0)
		return WR_DROP_ECN;
	return 0;
}

/*
 * The flow of the frame in skb, whose tunnel fields l->key already holds:
 * parsed into l->key and fi (ecn as parse_inner_skb takes it), stamped
 * with its network, looked up (once more after a set_field:N->net), and
 * the hit counted. NULL when there is none to run, counted: a frame
 * dropped, or a miss; *pass then says whether the miss goes to the stack
 * (as the miss_tunnel or, without `tunnel`, the miss_local setting says).
 */
static __always_inline struct wr_flow_entry *frame_flow(struct __sk_buff *skb, struct lookup *l,
							 struct frame_info *fi, __u32 ecn,
							 int tunnel, int *pass)
{
	struct wr_flow_key *key = &l->key;
	struct wr_flow_entry *e;
	struct wr_config *cfg;
	int r;

	*pass = 0;
	r = parse_inner_skb(skb, key, fi, ecn);
	if (r) {
		drop(r, key->in_port);
		return NULL;
	}
	stamp_net(key);
	e = xdp_flow(l);
	if (!e)
		e = classify_apart(key, l);
	if (e && restamps(e)) {
		/* Looked up once more in its new network; a second re-stamp
		 * would be a loop. */
		flow_hit(e, skb->len, fi->tcp_flags);
		key->net = e->actions[0].arg;
		e = classify_apart(key, l);
		if (e && restamps(e)) {
			drop(WR_DROP_LOOP, key->in_port);
			return NULL;
		}
	}
	if (!e) {
		cfg = config();
		if (cfg && (tunnel ? cfg->miss_tunnel : cfg->miss_local) == WR_MISS_PASS) {
			stat_inc(WR_STAT_MISS_PASS);
			*pass = 1;
			return NULL;
		}
		drop(WR_DROP_NO_FLOW, key->in_port);
		return NULL;
	}
	flow_hit(e, skb->len, fi->tcp_flags);
	return e;
}

#endif /* WR_CLASSIFY_H */
