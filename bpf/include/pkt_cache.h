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
 * UDP. For it, pkt_gather loads the few fixed-offset words of the packet
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

/*
 * Loads the words of the frame from data to end into pk. Returns 0, or -1
 * when the frame is not of the shape served (pk->io is then 0).
 */
static __always_inline int pkt_gather(void *data, void *end, struct pkt_key *pk)
{
	struct iphdr *ip = data + sizeof(struct ethhdr), *iip;
	__u64 *w = pk->w;
	__u64 m2 = ~0ULL, m3 = ~0ULL;
	__u32 io;

	pk->io = 0;
	/* The words of the deepest shape served: one bound for all of them. */
	if (data + PKT_IO_UDP + PKT_INNER_WORDS_END > end)
		return -1;
	if (((struct ethhdr *)data)->h_proto != bpf_htons(ETH_P_IP) || *(__u8 *)ip != 0x45)
		return -1;
	if (ip->protocol == IPPROTO_UDP) {
		io = PKT_IO_UDP;
		/* Addresses; then UDP's destination port and checksum. */
		m2 = KEEP(0, 6);
		m3 = KEEP(2, 4) | KEEP(6, 8);
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
	iip = data + io + sizeof(struct ethhdr);
	if (*(__be16 *)(data + io + 12) != bpf_htons(ETH_P_IP) || *(__u8 *)iip != 0x45 ||
	    ipv4_is_fragment(iip))
		return -1;
	if (iip->protocol == IPPROTO_TCP) {
		if (data + io + PKT_INNER_TCP > end)
			return -1;
		/* TCP's data offset and flags, not its sequence numbers. */
		w[10] = load64(data, io + 40) & KEEP(6, 8);
	} else if (iip->protocol == IPPROTO_UDP) {
		w[10] = 0;
	} else {
		return -1;
	}
	/* Outer: EtherType, version, TOS; fragment bits, TTL, protocol. */
	w[0] = load64(data, 12) & KEEP(0, 4);
	w[1] = load64(data, 20) & (KEEP(0, 4) | KEEP(6, 8));
	w[2] = load64(data, 28) & m2;
	w[3] = load64(data, 34) & m3;
	/* The tunnel header (GRE's again, with what precedes it). */
	w[4] = load64(data, io - 8);
	/* Inner: Ethernet, version, TOS; fragment bits, TTL, protocol;
	 * addresses; ports. */
	w[5] = load64(data, io);
	w[6] = load64(data, io + 8);
	w[7] = load64(data, io + 16) & KEEP(4, 8);
	w[8] = load64(data, io + 24) & KEEP(2, 8);
	w[9] = load64(data, io + 32) & KEEP(0, 6);
	w[11] = io;
	/* The words that differ most between flows pick the slots; all of
	 * them are compared. The inner ports' and TCP's flags' bytes do not
	 * overlap, so one word holds both; the outer and inner addresses
	 * share one multiply. */
	pk->hash = hash_fold(hash_word(w[2] ^ w[8], 2) + hash_word(w[4], 4) +
			     hash_word(w[9] | w[10], 9));
	pk->io = io;
	return 0;
}

/* Slot i (taken modulo PKT_CACHE_SLOTS) of this CPU's packet cache. */
static __always_inline struct pkt_cache_slot *pkt_cache_slot(__u32 i)
{
	i &= PKT_CACHE_SLOTS - 1;
	return bpf_map_lookup_elem(&wr_pkt_cache, &i);
}

/* Whether slot s holds pk's words under pk->tag. The words that tell
 * flows of one tunnel apart (inner addresses and ports) and tunnels apart
 * come first, so a slot of another flow is left after three words. */
static __always_inline int pkt_slot_holds(const struct pkt_cache_slot *s,
					  const struct pkt_key *pk)
{
	if (!s || s->tag != pk->tag ||
	    ((s->w[9] ^ pk->w[9]) | (s->w[8] ^ pk->w[8]) | (s->w[4] ^ pk->w[4])))
		return 0;
	return words_equal(s->w, pk->w, PKT_WORDS);
}

/* The slot of one of pk's two ways that holds pk's words under pk->tag, or NULL. */
static __always_inline struct pkt_cache_slot *pkt_probe(const struct pkt_key *pk)
{
	struct pkt_cache_slot *s = pkt_cache_slot(pk->hash);

	if (pkt_slot_holds(s, pk))
		return s;
	s = pkt_cache_slot(pk->hash >> 16);
	return pkt_slot_holds(s, pk) ? s : NULL;
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
 * The packet cache's hit path at XDP: the frame, if its words are cached,
 * decapsulated and forwarded (or dropped) as its flow says, counted as the
 * full path counts it. Returns the XDP verdict, or -1 for the full path
 * (then l->pk holds the frame's words for pkt_fill, or nothing to fill).
 */
static __always_inline int pkt_fast_path(struct xdp_md *ctx, struct lookup *l,
					 struct wr_stat_block *c)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct udphdr *uh = (void *)(ip + 1);
	struct pkt_key *pk = &l->pk;
	struct pkt_cache_slot *s;
	struct wr_config *cfg;
	__u32 len, inner;

	pk->tag = 0;
	if (wr_dry_run || ablated(ABL_CACHE))
		return -1;
	cfg = config();
	if (!cfg)
		return -1;
	/* Before the packet: see the flow cache's invalidation. */
	pk->tag = cfg->seq + 1;
	if (pkt_gather(data, end, pk) || ablated(ABL_CACHE_HIT))
		return -1;
	s = pkt_probe(pk);
	if (!s || (void *)(uh + 1) > end)
		return -1;
	/* What the words leave out: the full path checks it (decap.h). A
	 * whole frame in one buffer, with no padding, as XDP redirects it. */
	len = frame_len(ctx, 1);
	if (len != end - data || len != sizeof(struct ethhdr) + bpf_ntohs(ip->tot_len))
		return -1;
	if (ip->protocol == IPPROTO_UDP && bpf_ntohs(uh->len) != len - sizeof(struct ethhdr) - sizeof(*ip))
		return -1;
	/* The header's checksum (decap.h checks ipv4_header_csum): the
	 * slot's sum of the words compared, and the three left out. */
	if (!ablated(ABL_CSUM) &&
	    csum_fold32((__u32)s->ip_sum + *(__u16 *)&ip->tot_len + *(__u16 *)&ip->id +
			*(__u16 *)&ip->check) != 0xffff)
		return -1;
	inner = len - pk->io;
	if (!s->out_port) {
		bump(c, WR_STAT_DECAP);
		port_rx(s->in_port, inner);
		flow_count(s->flow_id, inner, s->tcp_flags);
		drop(WR_DROP_ACTION, s->in_port);
		if (c)
			c->cache.flow_hits++;
		return XDP_DROP;
	}
	if (xdp_redirect_port(s->out_port) != XDP_REDIRECT)
		return -1;
	if (bpf_xdp_adjust_head(ctx, pk->io)) {
		drop(WR_DROP_DECAP, s->in_port);
		return XDP_DROP;
	}
	bump(c, WR_STAT_DECAP);
	port_rx(s->in_port, inner);
	flow_count(s->flow_id, inner, s->tcp_flags);
	port_tx(s->out_port, inner);
	bump(c, WR_STAT_XDP_REDIRECT);
	if (c)
		c->cache.flow_hits++;
	return XDP_REDIRECT;
}

#endif /* WR_PKT_CACHE_H */
