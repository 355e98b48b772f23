/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The packet cache: the flow cache's front at XDP, keyed by the tunnel
 * packet's own bytes, so that a hit neither parses the packet nor builds,
 * hashes or compares its 19-word flow key (classify.h), as Open vSwitch's
 * EMC takes its key from a miniflow instead of a full flow.
 *
 * It serves the common shape only: outer Ethernet + IPv4 without options +
 * UDP (VXLAN, or Geneve without options) or GRE (no flags, or the key
 * only), inner Ethernet + IPv4 without options, not a fragment, + TCP or
 * UDP. For it, pkt_word loads the few fixed-offset words of the packet
 * that everything decapsulation and the flow key take from it lies in,
 * each masked to those bytes: the outer IPv4 header but its length,
 * identification and checksum, UDP's destination port and checksum (not
 * its source port or length), the tunnel header, the inner frame's
 * Ethernet header, its IPv4 header but length, identification and
 * checksum, its ports, and TCP's flags. Every other byte is either checked
 * on each hit as the full path checks it (the outer checksum, lengths that
 * must agree with the frame's) or read by nothing the full path decides
 * (the outer MACs and UDP source port, TCP's sequence numbers, payload).
 * The bytes that tell the shapes apart are compared too (and the inner
 * frame's offset is a word of its own), so a frame of another shape (IPv6,
 * IP options, a VLAN tag, Geneve options, ICMP) never matches.
 *
 * A slot is filled where the full path finished a frame of that shape at
 * XDP, by a redirect to an XDP-capable port or a flow's drop, and only when
 * that path neither verified a checksum over the payload (a UDP checksum)
 * nor rewrote the frame (RFC 6040 ECN decapsulation, which outer ECT(1) or
 * CE asks for): the outer TOS byte is compared, so no hit needs either. A
 * slot keeps the flow's id, the ports in and out and the TCP flags: what a
 * hit needs to count and forward the frame exactly as the full path did.
 *
 * Validity is the flow cache's: a slot counts only under the wr_config.seq
 * read before the packet was looked at, no slot is filled while a change
 * is under way or in trace's dry run, and every change of flows, ports or
 * endpoints moves the counter. A hit counts as a flow cache hit; a miss
 * counts nothing of its own, and the full path's classify counts it.
 */
#ifndef WR_PKT_CACHE_H
#define WR_PKT_CACHE_H

#include "classify.h"
#include "csum.h"
#include "decap.h"

#define PKT_CACHE_SLOTS 4096	/* per CPU, a power of two */

/* Where the inner frame starts, after each outer shape served. */
#define PKT_IO_UDP 50		/* Ethernet, IPv4, UDP, VXLAN or Geneve */
#define PKT_IO_GRE_KEY 42	/* Ethernet, IPv4, GRE with a key */
#define PKT_IO_GRE 38		/* Ethernet, IPv4, GRE */

/* The inner frame's bytes the words reach to (TCP's flags), and those the
 * full path needs to key TCP's fields at all (a whole TCP header). */
#define PKT_INNER_WORDS_END 48
#define PKT_INNER_TCP (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct tcphdr))

/* Bytes [lo, hi) of an 8-byte word loaded from the packet, as a mask. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define KEEP(lo, hi) ((~0ULL >> (64 - 8 * ((hi) - (lo)))) << (8 * (lo)))
#else
#define KEEP(lo, hi) ((~0ULL >> (64 - 8 * ((hi) - (lo)))) << (8 * (8 - (hi))))
#endif

/* The 8 bytes of the packet at data + off, read at once. */
static __always_inline __u64 load64(const void *data, __u32 off)
{
	return *(const __u64 *)(data + off);
}

/* Redirects the frame at XDP to local port `port`, if its peer takes XDP
 * redirects: XDP_REDIRECT, else anything else (nothing is done). */
static __always_inline long xdp_redirect_port(__u32 port)
{
	struct wr_port *p;

	if (!ablated(ABL_DEVMAP))
		return bpf_redirect_map(&wr_xdp_ports, port, 0);
	p = bpf_map_lookup_elem(&wr_ports, &port);
	if (!p || p->kind != WR_PORT_LOCAL)
		return XDP_PASS;
	return bpf_redirect(p->ifindex, 0);
}

/* One slot: the words of the frame that filled it, and what its flow did. */
struct pkt_cache_slot {
	__u64 tag;		/* wr_config.seq + 1 when filled; 0: never */
	__u64 w[PKT_WORDS];
	__u32 flow_id;
	__u16 in_port;
	__u16 out_port;		/* the XDP-capable port it went to; 0: the flow dropped it */
	__u16 tcp_flags;
	__u16 ip_sum;		/* the outer IPv4 header's words that w holds, summed */
	__u16 pad0[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PKT_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct pkt_cache_slot);
} wr_pkt_cache SEC(".maps");

/* Where a frame's words are, and what masks them: what pkt_word needs. */
struct pkt_shape {
	__u64 m2, m3;		/* word 2's and 3's masks: UDP's, or GRE's (all) */
	__u64 w10;		/* TCP's data offset and flags; 0 for UDP */
	const void *in;		/* the inner frame */
	__u32 io;		/* where it starts: word 11 */
};

/*
 * The shape sh of the frame from data to end, as far as loading its words
 * needs: where its inner frame would start, by its outer protocol (and
 * GRE's flags), and TCP's flags if its inner protocol is TCP. Returns 0, or
 * -1 when the frame is certainly not of a shape served. The rest of what
 * a shape served is (IPv4 without options, in and out; not a fragment)
 * lies in the words: a frame that is not never matches a slot, which
 * only frames that pkt_served passed fill.
 */
static __always_inline int pkt_shape(void *data, void *end, struct pkt_shape *sh)
{
	struct iphdr *ip = data + sizeof(struct ethhdr);
	__u32 io;
	__u8 inner_proto;

	sh->m2 = ~0ULL;
	sh->m3 = ~0ULL;
	/* The words of the deepest shape served: one bound for all of them. */
	if (data + PKT_IO_UDP + PKT_INNER_WORDS_END > end)
		return -1;
	if (ip->protocol == IPPROTO_UDP) {
		io = PKT_IO_UDP;
		/* Addresses; then UDP's destination port and checksum. */
		sh->m2 = KEEP(0, 6);
		sh->m3 = KEEP(2, 4) | KEEP(6, 8);
	} else if (ip->protocol == IPPROTO_GRE) {
		__be16 flags = *(__be16 *)(ip + 1);

		if (flags == bpf_htons(GRE_K))
			io = PKT_IO_GRE_KEY;
		else if (flags == 0)
			io = PKT_IO_GRE;
		else
			return -1;
	} else {
		return -1;
	}
	inner_proto = ((struct iphdr *)(data + io + sizeof(struct ethhdr)))->protocol;
	if (inner_proto == IPPROTO_TCP) {
		if (data + io + PKT_INNER_TCP > end)
			return -1;
		/* TCP's data offset and flags, not its sequence numbers. */
		sh->w10 = load64(data, io + 40) & KEEP(6, 8);
	} else if (inner_proto == IPPROTO_UDP) {
		sh->w10 = 0;
	} else {
		return -1;
	}
	sh->io = io;
	sh->in = data + io;
	return 0;
}

/* Whether the frame at data, of shape sh (pkt_shape's), is of a shape
 * served: IPv4 without options outside and in, not an inner fragment. */
static __always_inline int pkt_served(const void *data, const struct pkt_shape *sh)
{
	const struct iphdr *iip = sh->in + sizeof(struct ethhdr);

	return *(__be16 *)(data + 12) == bpf_htons(ETH_P_IP) &&
	       *(__u8 *)(data + sizeof(struct ethhdr)) == 0x45 &&
	       *(__be16 *)(sh->in + 12) == bpf_htons(ETH_P_IP) && *(__u8 *)iip == 0x45 &&
	       !ipv4_is_fragment(iip);
}

/* Word i (a constant) of the frame at data, of shape sh: loaded from the
 * packet where it is compared or kept, not gathered first and read again. */
static __always_inline __u64 pkt_word(const void *data, const struct pkt_shape *sh, int i)
{
	switch (i) {
	/* Outer: EtherType, version, TOS; fragment bits, TTL, protocol. */
	case 0:
		return load64(data, 12) & KEEP(0, 4);
	case 1:
		return load64(data, 20) & (KEEP(0, 4) | KEEP(6, 8));
	case 2:
		return load64(data, 28) & sh->m2;
	case 3:
		return load64(data, 34) & sh->m3;
	/* The tunnel header (GRE's again, with what precedes it). */
	case 4:
		return load64(sh->in - 8, 0);
	/* Inner: Ethernet, version, TOS; fragment bits, TTL, protocol;
	 * addresses; ports. */
	case 5:
		return load64(sh->in, 0);
	case 6:
		return load64(sh->in, 8);
	case 7:
		return load64(sh->in, 16) & KEEP(4, 8);
	case 8:
		return load64(sh->in, 24) & KEEP(2, 8);
	case 9:
		return load64(sh->in, 32) & KEEP(0, 6);
	case 10:
		return sh->w10;
	default:
		return sh->io;
	}
}

/* The hash of the frame's words. The words that differ most between flows
 * pick the slots; all of them are compared. The inner ports' and TCP's
 * flags' bytes do not overlap, so one word holds both; the outer and inner
 * addresses share one multiply. */
static __always_inline __u32 pkt_hash(const void *data, const struct pkt_shape *sh)
{
	return hash_fold(hash_word(pkt_word(data, sh, 2) ^ pkt_word(data, sh, 8), 2) +
			 hash_word(pkt_word(data, sh, 4), 4) +
			 hash_word(pkt_word(data, sh, 9) | sh->w10, 9));
}

/* Keeps the frame's words, their hash and shape in pk, for pkt_fill. */
static __always_inline void pkt_keep(struct pkt_key *pk, const void *data,
				     const struct pkt_shape *sh, __u32 hash)
{
#pragma unroll
	for (int i = 0; i < PKT_WORDS; i++)
		pk->w[i] = pkt_word(data, sh, i);
	pk->hash = hash;
	pk->io = sh->io;
}

/* Slot i (taken modulo PKT_CACHE_SLOTS) of this CPU's packet cache. */
static __always_inline struct pkt_cache_slot *pkt_cache_slot(__u32 i)
{
	i &= PKT_CACHE_SLOTS - 1;
	return bpf_map_lookup_elem(&wr_pkt_cache, &i);
}

/* Whether slot s holds the words of the frame at data, of shape sh, under
 * tag: every word compared, with one branch for them all (a slot of
 * another flow is rare, and then the full path's cost dwarfs the rest). */
static __always_inline int pkt_slot_holds(const struct pkt_cache_slot *s, const void *data,
					  const struct pkt_shape *sh, __u64 tag)
{
	__u64 diff;

	if (!s)
		return 0;
	diff = s->tag ^ tag;
#pragma unroll
	for (int i = 0; i < PKT_WORDS; i++) {
		diff |= s->w[i] ^ pkt_word(data, sh, i);
		/* One word at a time: loaded all at once, they spill. */
		asm volatile("" : "+r"(diff) :: "memory");
	}
	return diff == 0;
}

/* The slot of one of the frame's two ways that holds its words under tag, or NULL. */
static __always_inline struct pkt_cache_slot *pkt_probe(const void *data,
							const struct pkt_shape *sh, __u32 hash,
							__u64 tag)
{
	struct pkt_cache_slot *s = pkt_cache_slot(hash);

	if (pkt_slot_holds(s, data, sh, tag))
		return s;
	s = pkt_cache_slot(hash >> 16);
	return pkt_slot_holds(s, data, sh, tag) ? s : NULL;
}

/* The one's complement sum of the outer IPv4 header's 16-bit words that
 * the words w hold (all but its length, identification and checksum, which
 * w masks out): a hit adds those three to it to check the header's
 * checksum, with no pass over the header. */
static __always_inline __u16 pkt_ip_sum(const __u64 *w)
{
	__u64 a = w[0] & KEEP(2, 4), b = w[1], c = w[2] & KEEP(0, 6);

	return csum_fold32((a & 0xffffffff) + (a >> 32) + (b & 0xffffffff) + (b >> 32) +
			   (c & 0xffffffff) + (c >> 32));
}

/*
 * The full path's flow e (its id), found for the frame whose words l->pk
 * holds and which d and l->key describe, went out on XDP-capable port out
 * (0: e dropped it): remembered for the frame's words, if the frame is one
 * a hit may stand for (see above).
 */
static __always_inline void pkt_fill(struct lookup *l, const struct decap *d, __u32 flow_id,
				     __u16 out, __u16 tcp_flags)
{
	struct pkt_key *pk = &l->pk;
	struct pkt_cache_slot *s0, *s1, *fill;
	struct wr_config *cfg = config();

	if (!pk->tag || !pk->io || !cfg || (cfg->flags & WR_CFG_WRITING))
		return;
	if (d->outer_len != pk->io || d->proto == WR_PROTO_STT || d->outer_ecn == ECN_CE ||
	    d->outer_ecn == ECN_ECT1 || (l->key.tun_flags & WR_TUNF_CSUM))
		return;
	s0 = pkt_cache_slot(pk->hash);
	s1 = pkt_cache_slot(pk->hash >> 16);
	fill = cache_way(s0, s1, pk->tag, pk->hash);
	if (!fill)
		return;
	fill->tag = pk->tag;
	__builtin_memcpy(fill->w, pk->w, sizeof(fill->w));
	fill->flow_id = flow_id;
	fill->in_port = d->in_port;
	fill->out_port = out;
	fill->tcp_flags = tcp_flags;
	fill->ip_sum = pkt_ip_sum(pk->w);
}

/*
 * Counts a hit on slot s of `bytes` (the inner frame's) as the full path
 * counts its frame: decapsulated, received, its flow's, and sent, unless
 * the flow drops it (which the caller counts). c is this CPU's block,
 * NULL when nothing may be counted (counters()): the test of a register
 * that a hit makes once, where port_rx and the others each load wr_dry_run.
 */
static __always_inline void pkt_count(struct wr_stat_block *c, const struct pkt_cache_slot *s,
				      __u32 bytes)
{
	__u32 flow_id = s->flow_id;

	if (!c)
		return;
	c->stat[WR_STAT_DECAP]++;
	c->cache.flow_hits++;
	count_rx(port_stats(s->in_port), bytes);
	count_flow(bpf_map_lookup_elem(&wr_flow_stats, &flow_id), bytes, s->tcp_flags);
	if (s->out_port) {
		count_tx(port_stats(s->out_port), bytes);
		c->stat[WR_STAT_XDP_REDIRECT]++;
	}
}

/*
 * Leaves the frame at data to the full path: its words (shape sh, hash,
 * made under tag) kept in this CPU's scratch for pkt_fill, or, with no sh,
 * nothing to fill. Returns -1, pkt_fast_path's "not finished". The hit
 * path does not look the scratch up at all.
 */
static __always_inline int pkt_miss(const void *data, const struct pkt_shape *sh, __u32 hash,
				    __u64 tag)
{
	struct lookup *l = scratch_as_left();

	if (!l)
		return -1;
	l->pk.io = 0;
	if (sh && pkt_served(data, sh)) {
		l->pk.tag = tag;
		pkt_keep(&l->pk, data, sh, hash);
	}
	return -1;
}

/*
 * The packet cache's hit path at XDP: the frame, if its words are cached,
 * decapsulated and forwarded (or dropped) as its flow says, counted as the
 * full path counts it. Returns the XDP verdict, or -1 for the full path
 * (then the scratch's pk holds the frame's words for pkt_fill, or nothing
 * to fill).
 */
static __always_inline int pkt_fast_path(struct xdp_md *ctx, struct wr_stat_block *c)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct udphdr *uh = (void *)(ip + 1);
	struct pkt_cache_slot *s = NULL;
	struct pkt_shape sh;
	struct wr_config *cfg;
	__u32 len, inner, hash;
	__u64 tag;

	if (wr_dry_run || ablated(ABL_CACHE))
		return pkt_miss(data, NULL, 0, 0);
	cfg = config();
	if (!cfg)
		return pkt_miss(data, NULL, 0, 0);
	/* Before the packet: see the flow cache's invalidation. */
	tag = cfg->seq + 1;
	if (pkt_shape(data, end, &sh))
		return pkt_miss(data, NULL, 0, 0);
	hash = pkt_hash(data, &sh);
	if (!ablated(ABL_CACHE_HIT))
		s = pkt_probe(data, &sh, hash, tag);
	if (!s)
		goto miss;
	/* What the words leave out: the full path checks it (decap.h). A
	 * whole frame in one buffer, with no padding, as XDP redirects it. */
	len = frame_len(ctx, 1);
	if (len != end - data || len != sizeof(struct ethhdr) + bpf_ntohs(ip->tot_len))
		goto miss;
	/* uh's bytes are within pkt_shape's bound, which the verifier knows. */
	if (ip->protocol == IPPROTO_UDP && bpf_ntohs(uh->len) != len - sizeof(struct ethhdr) - sizeof(*ip))
		goto miss;
	/* The header's checksum (decap.h checks ipv4_header_csum): the
	 * slot's sum of the words compared, and the three left out. */
	if (!ablated(ABL_CSUM) &&
	    csum_fold32((__u32)s->ip_sum + *(__u16 *)&ip->tot_len + *(__u16 *)&ip->id +
			*(__u16 *)&ip->check) != 0xffff)
		goto miss;
	inner = len - sh.io;
	if (!s->out_port) {
		pkt_count(c, s, inner);
		drop(WR_DROP_ACTION, s->in_port);
		return XDP_DROP;
	}
	if (xdp_redirect_port(s->out_port) != XDP_REDIRECT)
		goto miss;
	if (bpf_xdp_adjust_head(ctx, sh.io)) {
		drop(WR_DROP_DECAP, s->in_port);
		return XDP_DROP;
	}
	pkt_count(c, s, inner);
	return XDP_REDIRECT;
miss:
	return pkt_miss(data, &sh, hash, tag);
}

#endif /* WR_PKT_CACHE_H */
