/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Receiving STT: all an STT packet goes through, from its fake TCP header
 * to the inner frame handed to the flow table.
 *
 * A frame that arrives in one segment is decapsulated like any tunnel
 * packet, and what its STT header asks is done after (a VLAN tag put back,
 * a checksum the sender left partial completed). Segments are copied into
 * a reassembly slot; when the last byte arrives, the inner frame is
 * delivered from the slot: whole, or, for a TCP frame larger than its MSS,
 * cut back into MSS-sized TCP segments with their own headers and
 * checksums, as GSO would have.
 *
 * Reassembly slots belong to CPUs (segments of one frame share a TCP
 * 4-tuple, so one receive queue and one CPU take them all), which needs
 * no locks: each CPU has WR_STT_SLOTS_PER_CPU slots. A frame that has not
 * completed after the configured timeout is expired when its slot is
 * wanted; when every slot is busy the oldest frame is evicted. Duplicates
 * are ignored, overlapping or inconsistent segments abandon the frame.
 *
 * Decapsulation (decap.h) and the programs call in here: parse_stt when a
 * packet comes to an STT port; stt_tag_room and stt_fixup_xdp or
 * stt_fixup_skb when a whole frame is stripped; stt_segment_xdp or
 * stt_segment_skb for a segment; stt_deliver for a reassembled frame.
 */
#ifndef WR_STT_RX_H
#define WR_STT_RX_H

#include "buf.h"
#include "classify.h"
#include "parse.h"
#include "stt.h"
#include "tunnel.h"

/* Largest frame delivered in one piece: what TC ingress can grow an skb to. */
#define STT_WHOLE_MAX 16000
/* Headers of an inner frame that resegmenting copies: Ethernet, one VLAN
 * tag, IPv4 with options or IPv6, TCP with options. */
#define STT_HDRS_MAX 160

/* A frame being reassembled. */
struct wr_stt_frame {
	__u64 started_ns;
	__u8 src[16];		/* outer source */
	__u8 dst[16];		/* outer destination */
	__u32 id;		/* frame identifier (TCP acknowledgement) */
	__u16 sport;
	__u16 total;		/* frame length, 0 = slot free */
	__u32 received;		/* bytes so far */
	__u32 nsegs;
	__u16 seg_off[WR_STT_MAX_SEGS];
	__u16 seg_len[WR_STT_MAX_SEGS];
	__u8 data[BUF_SIZE];
};

/* Reassembly slots: WR_STT_SLOTS_PER_CPU per possible CPU (the control
 * plane sizes the map when it loads the programs). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, WR_STT_SLOTS_PER_CPU);
	__type(key, __u32);
	__type(value, struct wr_stt_frame);
} wr_stt_frames SEC(".maps");

/* Headers under construction while resegmenting. */
struct stt_hdrbuf {
	__u8 b[256];		/* room for the furthest header the masks allow */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stt_hdrbuf);
} wr_stt_hdr SEC(".maps");

/* ---- A segment as it arrives --------------------------------------------- */

/*
 * An STT segment: the fake TCP header, its sequence number (frame length
 * << 16 | offset) and checksum, and on a frame that arrived whole the STT
 * header. Returns TUN_OK for a whole frame (ready to decapsulate),
 * TUN_STT_SEGMENT for a piece to reassemble, or a drop reason.
 */
static __always_inline int parse_stt(void *ctx, int is_xdp, __u32 l4_off, __u32 l3_end, int v6,
				     struct wr_flow_key *key, struct decap *d)
{
	struct tcphdr th;
	struct stt_hdr h;
	__u32 seq, total, off, len, payload;

	if (l4_off + sizeof(th) > l3_end)
		return WR_DROP_TRUNCATED;
	if (is_xdp ? bpf_xdp_load_bytes(ctx, l4_off, &th, sizeof(th)) :
		     bpf_skb_load_bytes(ctx, l4_off, &th, sizeof(th)))
		return WR_DROP_TRUNCATED;
	/* No options, no handshake: ACK (and PSH on a frame's last segment). */
	if (th.doff != 5 || !th.ack || th.syn || th.rst || th.fin || th.urg)
		return WR_DROP_STT;
	payload = l4_off + sizeof(th);
	len = l3_end - payload;
	seq = bpf_ntohl(th.seq);
	total = seq >> 16;
	off = seq & 0xffff;
	if (len == 0 || total < WR_STT_HDR_LEN + sizeof(struct ethhdr) || off + len > total)
		return WR_DROP_STT;
	if (!csum_trusted(ctx, is_xdp)) {
		__s64 sum = packet_sum(ctx, is_xdp, l4_off, l3_end);

		if (sum < 0)
			return WR_DROP_TRUNCATED;
		sum += pseudo_sum(key->tun_src, key->tun_dst, v6, l3_end - l4_off, IPPROTO_TCP);
		if (csum_fold32(sum) != 0xffff)
			return is_xdp ? TUN_RECHECK : WR_DROP_BAD_CSUM;
	}
	key->tun_flags |= WR_TUNF_CSUM;
	d->l3_end = l3_end;
	d->stt_payload = payload;
	d->stt_seg_len = len;
	d->stt_seg_off = off;
	d->stt_total = total;
	d->stt_id = th.ack_seq;
	d->stt_sport = th.source;
	if (off != 0 || len != total)
		return TUN_STT_SEGMENT;
	if (is_xdp ? bpf_xdp_load_bytes(ctx, payload, &h, sizeof(h)) :
		     bpf_skb_load_bytes(ctx, payload, &h, sizeof(h)))
		return WR_DROP_TRUNCATED;
	if (h.version != 0 || (h.flags & STT_F_RESERVED))
		return WR_DROP_STT;
	/* A partial checksum is completed after the outer headers are gone:
	 * its field must lie inside the frame, or the drop would come too
	 * late to leave the packet as it arrived. */
	if ((h.flags & STT_F_CSUM_PARTIAL) &&
	    h.l4_off + ((h.flags & STT_F_TCP) ? 18 : 8) > total - WR_STT_HDR_LEN)
		return WR_DROP_STT;
	key->tun_id = h.context;
	key->tun_flags |= WR_TUNF_KEY;
	d->stt_flags = h.flags;
	d->stt_l4off = h.l4_off;
	d->stt_vlan = bpf_ntohs(h.vlan_tci);
	d->outer_len = payload + sizeof(h);
	return TUN_OK;
}

/* ---- Reassembly ---------------------------------------------------------- */

/* Verdicts of stt_reassemble besides a slot number (>= 0). */
#define STT_CONSUMED -1		/* kept (or a duplicate): nothing more to do */

struct stt_find {
	const __u8 *src;
	const __u8 *dst;
	__u64 now;
	__u64 timeout;
	__u64 oldest_ns;
	__u32 id;
	__u32 base;		/* this CPU's first slot */
	__u32 match;		/* slot + 1 of the frame, or 0 */
	__u32 free;		/* slot + 1 of a free slot, or 0 */
	__u32 oldest;		/* slot + 1 of the oldest frame */
	__u16 sport;
	__u16 pad;
};

static __always_inline int same16(const __u8 *a, const __u8 *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1];
}

/* One of this CPU's slots per step: the frame's own, a free one, the oldest;
 * frames past their time are expired on the way. */
static long stt_find_step(__u32 i, void *arg)
{
	struct stt_find *f = arg;
	__u32 slot = f->base + i;
	struct wr_stt_frame *fr = bpf_map_lookup_elem(&wr_stt_frames, &slot);

	if (!fr)
		return 1;
	if (fr->total && f->now - fr->started_ns > f->timeout) {
		fr->total = 0;
		stat_inc(WR_STAT_STT_EXPIRED);
	}
	if (!fr->total) {
		if (!f->free)
			f->free = slot + 1;
		return 0;
	}
	if (fr->id == f->id && fr->sport == f->sport && same16(fr->src, f->src) &&
	    same16(fr->dst, f->dst)) {
		f->match = slot + 1;
		return 1;
	}
	/* A complete frame waits for TC to deliver it: never evicted (only
	 * expired, should TC never come). */
	if (fr->received >= fr->total)
		return 0;
	if (!f->oldest || fr->started_ns < f->oldest_ns) {
		f->oldest = slot + 1;
		f->oldest_ns = fr->started_ns;
	}
	return 0;
}

struct stt_segcheck {
	struct wr_stt_frame *fr;
	__u32 off;
	__u32 len;
	__u32 verdict;		/* 0 new, 1 duplicate, 2 overlap */
};

static long stt_segcheck_step(__u32 i, void *arg)
{
	struct stt_segcheck *c = arg;
	__u32 o, l;

	if (i >= WR_STT_MAX_SEGS)
		return 1;
	o = c->fr->seg_off[i];
	l = c->fr->seg_len[i];
	if (o == c->off && l == c->len) {
		c->verdict = 1;
		return 1;
	}
	if (c->off < o + l && o < c->off + c->len) {
		c->verdict = 2;
		return 1;
	}
	return 0;
}

/*
 * Takes the segment d describes (key holds the outer addresses) into this
 * CPU's reassembly. Returns the slot of a frame that is now complete,
 * STT_CONSUMED, or minus the WR_DROP_* reason to drop the segment for
 * (counted by the caller).
 */
static __always_inline long stt_reassemble(void *ctx, int is_xdp, const struct decap *d,
					   const struct wr_flow_key *key)
{
	struct wr_config *cfg = config();
	struct stt_find f = {
		.src = key->tun_src,
		.dst = key->tun_dst,
		.id = d->stt_id,
		.sport = d->stt_sport,
		.now = bpf_ktime_get_ns(),
		.base = bpf_get_smp_processor_id() * WR_STT_SLOTS_PER_CPU,
	};
	struct stt_segcheck c = { .off = d->stt_seg_off, .len = d->stt_seg_len };
	struct wr_stt_frame *fr;
	__u32 slot, n;

	f.timeout = (cfg && cfg->stt_timeout_ms ? cfg->stt_timeout_ms : WR_STT_DEFAULT_TIMEOUT_MS) *
		    1000000ULL;
	bpf_loop(WR_STT_SLOTS_PER_CPU, stt_find_step, &f, 0);
	if (f.match) {
		slot = f.match - 1;
		fr = bpf_map_lookup_elem(&wr_stt_frames, &slot);
		/* A retransmission of a frame already complete and on its way. */
		if (fr && fr->received >= fr->total) {
			stat_inc(WR_STAT_STT_DUPLICATE);
			return STT_CONSUMED;
		}
	} else {
		slot = (f.free ? f.free : f.oldest) - 1;
		if (!f.free && !f.oldest)
			return -WR_DROP_STT_REASM;
	}
	fr = bpf_map_lookup_elem(&wr_stt_frames, &slot);
	if (!fr)
		return -WR_DROP_STT_REASM;
	if (!f.match) {
		if (!f.free)
			stat_inc(WR_STAT_STT_EVICTED);
		fr->started_ns = f.now;
		addr_copy(fr->src, key->tun_src);
		addr_copy(fr->dst, key->tun_dst);
		fr->id = d->stt_id;
		fr->sport = d->stt_sport;
		fr->total = d->stt_total;
		fr->received = 0;
		fr->nsegs = 0;
	} else if (fr->total != d->stt_total) {
		/* Segments that disagree on the frame's length: give it up. */
		fr->total = 0;
		return -WR_DROP_STT_REASM;
	}
	n = fr->nsegs;
	if (n) {
		c.fr = fr;
		bpf_loop(n < WR_STT_MAX_SEGS ? n : WR_STT_MAX_SEGS, stt_segcheck_step, &c, 0);
		if (c.verdict == 1) {
			stat_inc(WR_STAT_STT_DUPLICATE);
			return STT_CONSUMED;
		}
		if (c.verdict == 2 || n >= WR_STT_MAX_SEGS) {
			fr->total = 0;
			return -WR_DROP_STT_REASM;
		}
	}
	if (pkt_to_buf(ctx, is_xdp, d->stt_payload, fr->data, d->stt_seg_off, d->stt_seg_len)) {
		fr->total = 0;
		return -WR_DROP_STT_REASM;
	}
	if (n < WR_STT_MAX_SEGS) {
		fr->seg_off[n] = d->stt_seg_off;
		fr->seg_len[n] = d->stt_seg_len;
	}
	fr->nsegs = n + 1;
	fr->received += d->stt_seg_len;
	stat_inc(WR_STAT_STT_SEGMENTS);
	if (fr->received < fr->total)
		return STT_CONSUMED;
	stat_inc(WR_STAT_STT_REASSEMBLED);
	return slot;
}

__noinline long stt_reassemble_xdp(struct xdp_md *ctx, const struct decap *d,
				   const struct wr_flow_key *key)
{
	if (!d || !key)
		return -WR_DROP_STT_REASM;
	return stt_reassemble(ctx, 1, d, key);
}

__noinline long stt_reassemble_skb(struct __sk_buff *skb, const struct decap *d,
				   const struct wr_flow_key *key)
{
	if (!d || !key)
		return -WR_DROP_STT_REASM;
	return stt_reassemble(skb, 0, d, key);
}

/* Frees a slot whose frame will not be delivered. */
static __always_inline void stt_release(__u32 slot)
{
	struct wr_stt_frame *fr = bpf_map_lookup_elem(&wr_stt_frames, &slot);

	if (fr)
		fr->total = 0;
}

/*
 * Takes a segment at XDP into reassembly. The segment that completes its
 * frame goes up to TC with the frame's slot in its metadata, and TC
 * delivers the frame from there; the others are kept. Returns the XDP
 * verdict.
 */
static __always_inline int stt_segment_xdp(struct xdp_md *ctx, const struct decap *d,
					   const struct wr_flow_key *key)
{
	long slot = stt_reassemble_xdp(ctx, d, key);
	struct wr_meta *m;

	if (slot == STT_CONSUMED)
		return XDP_DROP;
	if (slot < 0) {
		drop(-slot, d->in_port);
		return XDP_DROP;
	}
	m = xdp_meta_push(ctx, sizeof(*m));
	if (m) {
		meta_from_key(m, key);
		m->magic = WR_META_STT;
		m->stt_slot = slot;
		m->stt_id = d->stt_id;
		return XDP_PASS;
	}
	stt_release(slot);
	drop(WR_DROP_DECAP, d->in_port);
	return XDP_DROP;
}

/* Takes a segment at TC into reassembly. Returns the slot of the frame it
 * completed (for stt_deliver), or -1 when there is nothing more to do:
 * the segment was kept, or dropped and counted. */
static __always_inline long stt_segment_skb(struct __sk_buff *skb, const struct decap *d,
					    const struct wr_flow_key *key)
{
	long slot = stt_reassemble_skb(skb, d, key);

	if (slot == STT_CONSUMED)
		return -1;
	if (slot < 0) {
		drop(-slot, d->in_port);
		return -1;
	}
	return slot;
}

/* ---- Frames that arrive whole -------------------------------------------- */

/*
 * Completes the inner L4 checksum the STT header marks partial, the inner
 * L4 header at l4 of a packet of len bytes: the field (at 16 for TCP, 6
 * for UDP) holds the pseudo-header sum, and summing it in with the rest
 * completes it. Returns 0 or -1.
 */
static __always_inline int stt_complete_partial(void *ctx, int is_xdp, const struct decap *d,
						__u32 l4, __u32 len)
{
	__u32 field = l4 + ((d->stt_flags & STT_F_TCP) ? 16 : 6);
	__u16 check;
	__s64 sum;

	if (field + 2 > len)
		return -1;
	sum = packet_sum(ctx, is_xdp, l4, len);
	if (sum < 0)
		return -1;
	check = ~csum_fold32(sum);
	/* UDP sends a computed 0 as all ones (0 means "no checksum"). */
	if (!(d->stt_flags & STT_F_TCP) && check == 0)
		check = 0xffff;
	return (is_xdp ? bpf_xdp_store_bytes(ctx, field, &check, 2) :
			 bpf_skb_store_bytes(ctx, field, &check, 2, 0)) ? -1 : 0;
}

/* Bytes of outer header that stripping leaves in front of a whole frame
 * at XDP: room for the VLAN tag STT's header carries, which stt_fixup_xdp
 * puts back into the frame. */
static __always_inline __u32 stt_tag_room(const struct decap *d)
{
	return d->proto == WR_PROTO_STT && (d->stt_vlan & STT_VLAN_V) ? sizeof(struct vlan_hdr) : 0;
}

/*
 * What the STT header asks of a frame that arrived whole, once XDP has
 * stripped the outer headers (all but four bytes when the header carries
 * a VLAN tag, which goes back into the frame here), and a checksum the
 * sender left partial. Returns 0 or -1.
 */
__noinline int stt_fixup_xdp(struct xdp_md *ctx, const struct decap *d)
{
	__u32 vlan_len = 0;

	if (!d)
		return -1;
	if (d->stt_vlan & STT_VLAN_V) {
		void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
		__u8 macs[12];

		if (data + 16 > end)
			return -1;
		__builtin_memcpy(macs, data + 4, sizeof(macs));
		__builtin_memcpy(data, macs, sizeof(macs));
		*(__be16 *)(data + 12) = bpf_htons(ETH_P_8021Q);
		*(__be16 *)(data + 14) = bpf_htons(d->stt_vlan & ~STT_VLAN_V);
		vlan_len = sizeof(struct vlan_hdr);
	}
	if (!(d->stt_flags & STT_F_CSUM_PARTIAL))
		return 0;
	return stt_complete_partial(ctx, 1, d, d->stt_l4off + vlan_len, bpf_xdp_get_buff_len(ctx));
}

/* The same at TC, after the outer headers are gone: the tag goes back as
 * the skb's VLAN tag. */
__noinline int stt_fixup_skb(struct __sk_buff *skb, const struct decap *d)
{
	if (!d)
		return -1;
	if ((d->stt_flags & STT_F_CSUM_PARTIAL) &&
	    stt_complete_partial(skb, 0, d, d->stt_l4off, skb->len))
		return -1;
	if (d->stt_vlan & STT_VLAN_V)
		bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), d->stt_vlan & ~STT_VLAN_V);
	return 0;
}

/* ---- A reassembled frame: how it goes out, and its segments -------------- */

/* How a reassembled frame goes out: whole, or resegmented. */
struct stt_plan {
	__u32 slot;
	__u32 len;		/* inner frame length */
	__u32 hdrs;		/* inner headers (resegmenting) */
	__u32 l3;		/* inner IP header offset */
	__u32 l4;		/* inner TCP header offset */
	__u32 mss;
	__u32 nseg;		/* segments, 1 = whole */
	__u32 ip_version;
	__u32 seq;		/* the inner TCP sequence number */
	__u16 ip_id;
	__u8 flags;		/* STT_F_* */
	__u8 l4off;		/* STT's L4 offset */
	__u16 vlan;		/* host order, V bit included */
	__u16 pad;
};

/*
 * Reads the STT header and the inner headers of the frame in slot and
 * decides how to deliver it. Returns 0 or a WR_DROP_* reason.
 */
static __always_inline int stt_plan(struct wr_stt_frame *fr, struct stt_plan *pl,
				    struct wr_flow_key *key)
{
	struct stt_hdr *h = (void *)fr->data;
	__u8 *in = fr->data + WR_STT_HDR_LEN;
	__u32 len = fr->total, l3, l4, payload;
	struct cursor c;
	struct ethhdr *eth;
	struct vlan_hdr *vh;
	struct tcphdr *th;
	int proto, thl;

	if (len < WR_STT_HDR_LEN + sizeof(struct ethhdr) || len > WR_STT_FRAME_MAX)
		return WR_DROP_STT_REASM;
	if (h->version != 0 || (h->flags & STT_F_RESERVED))
		return WR_DROP_STT;
	key->tun_id = h->context;
	key->tun_flags |= WR_TUNF_KEY;
	pl->len = len - WR_STT_HDR_LEN;
	pl->flags = h->flags;
	pl->l4off = h->l4_off;
	pl->vlan = bpf_ntohs(h->vlan_tci);
	pl->mss = bpf_ntohs(h->mss);
	pl->nseg = 1;
	/* As for a whole frame (parse_stt): the partial checksum's field
	 * must lie inside the frame. */
	if ((h->flags & STT_F_CSUM_PARTIAL) &&
	    pl->l4off + ((h->flags & STT_F_TCP) ? 18 : 8) > pl->len)
		return WR_DROP_STT;
	if (!(h->flags & STT_F_TCP) || !pl->mss || pl->len <= 1514)
		return 0;
	/* A TCP frame bigger than one packet: find its headers, with the
	 * packet parsers over the buffer (every offset they reach is a few
	 * hundred bytes at most, inside it). */
	c = (struct cursor){ in, in + pl->len };
	proto = parse_ethhdr(&c, &eth);
	if (proto == bpf_htons(ETH_P_8021Q))
		proto = parse_vlanhdr(&c, &vh);
	l3 = c.pos - (void *)in;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip;

		if (parse_iphdr(&c, &ip) != IPPROTO_TCP || ip->version != 4 || ipv4_is_fragment(ip))
			return 0;
		pl->ip_version = 4;
		pl->ip_id = bpf_ntohs(ip->id);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6;

		if (parse_ip6hdr(&c, &ip6) != IPPROTO_TCP)
			return 0;
		pl->ip_version = 6;
	} else {
		return 0;
	}
	l4 = c.pos - (void *)in;
	thl = parse_tcphdr(&c, &th);
	if (thl == PARSE_SHORT)
		return 0;
	pl->seq = bpf_ntohl(th->seq);
	if (thl == PARSE_BAD || l4 + thl > STT_HDRS_MAX || l4 + thl >= pl->len)
		return 0;
	payload = pl->len - l4 - thl;
	if (payload <= pl->mss)
		return 0;
	pl->l3 = l3;
	pl->l4 = l4;
	pl->hdrs = l4 + thl;
	pl->nseg = (payload + pl->mss - 1) / pl->mss;
	return 0;
}

/* Completes a checksum the sender left partial, in the buffer. */
static __always_inline void stt_complete_csum(struct wr_stt_frame *fr, const struct stt_plan *pl)
{
	__u32 l4 = WR_STT_HDR_LEN + pl->l4off;
	__u32 field = l4 + ((pl->flags & STT_F_TCP) ? 16 : 6);
	__u32 end = WR_STT_HDR_LEN + pl->len;
	__u16 check;

	if (!(pl->flags & STT_F_CSUM_PARTIAL) || field + 2 > end || field > 0xfff0)
		return;
	/* The field holds the pseudo-header sum: summing it in completes it. */
	check = ~csum_fold32(mem_sum(fr->data, l4, end));
	if (!(pl->flags & STT_F_TCP) && check == 0)
		check = 0xffff;
	*(__u16 *)(fr->data + (field & 0xffff)) = check;
}

/*
 * Makes skb inner segment j of the frame in fr (or the whole frame when
 * pl->nseg is 1): headers copied from the frame with this segment's
 * lengths, sequence number, flags and checksums, then its payload.
 * Returns 0 or a WR_DROP_* reason.
 */
__noinline int stt_build(struct __sk_buff *skb, struct stt_plan *pl, __u32 j)
{
	__u32 zero = 0, hdrs, first, plen, seglen, in = WR_STT_HDR_LEN;
	struct wr_stt_frame *fr;
	struct stt_hdrbuf *hb;
	__u8 *b;

	if (!pl)
		return WR_DROP_STT_REASM;
	fr = bpf_map_lookup_elem(&wr_stt_frames, &pl->slot);
	hb = bpf_map_lookup_elem(&wr_stt_hdr, &zero);
	if (!fr || !hb)
		return WR_DROP_STT_REASM;
	b = hb->b;
	if (pl->nseg <= 1) {
		if (pl->len > STT_WHOLE_MAX)
			return WR_DROP_STT_REASM;
		if (bpf_skb_change_tail(skb, pl->len, 0) || buf_to_skb(skb, 0, fr->data, in, pl->len))
			return WR_DROP_DECAP;
		return 0;
	}
	hdrs = pl->hdrs;
	if (hdrs > STT_HDRS_MAX || pl->l4 + sizeof(struct tcphdr) > hdrs || pl->l3 > 18)
		return WR_DROP_STT_REASM;
	first = hdrs + j * pl->mss;
	if (first >= pl->len)
		return WR_DROP_STT_REASM;
	plen = pl->len - first;
	if (plen > pl->mss)
		plen = pl->mss;
	seglen = hdrs + plen;
	if (seglen > STT_WHOLE_MAX)
		return WR_DROP_STT_REASM;

	/* Headers, adjusted for this segment. */
	__builtin_memcpy(b, fr->data + in, STT_HDRS_MAX);
	if (pl->ip_version == 4) {
		struct iphdr *ip = (void *)(b + (pl->l3 & 0x1f));
		__u32 ihl = (pl->l4 - pl->l3) & 0x3c;

		ip->tot_len = bpf_htons(seglen - pl->l3);
		ip->id = bpf_htons(pl->ip_id + j);
		ip->check = 0;
		ip->check = ~csum_fold32(ihl >= 20 ? (__u32)bpf_csum_diff(0, 0, (__be32 *)ip, ihl, 0) : 0);
	} else {
		struct ipv6hdr *ip6 = (void *)(b + (pl->l3 & 0x1f));

		ip6->payload_len = bpf_htons(seglen - pl->l4);
	}
	{
		struct tcphdr *th = (void *)(b + (pl->l4 & 0x7f));
		__u32 thl = (hdrs - pl->l4) & 0x7c;
		__u64 sum;

		th->seq = bpf_htonl(pl->seq + j * pl->mss);
		/* FIN and PSH belong to the last segment, CWR to the first. */
		if (j + 1 < pl->nseg) {
			th->fin = 0;
			th->psh = 0;
		}
		if (j)
			th->cwr = 0;
		th->check = 0;
		sum = thl >= 20 ? (__u32)bpf_csum_diff(0, 0, (__be32 *)th, thl, 0) : 0;
		sum += mem_sum(fr->data, in + first, in + first + plen);
		if (pl->ip_version == 4) {
			struct iphdr *ip = (void *)(b + (pl->l3 & 0x1f));

			sum += pseudo_sum((__u8 *)&ip->saddr, (__u8 *)&ip->daddr, 0, thl + plen, IPPROTO_TCP);
		} else {
			struct ipv6hdr *ip6 = (void *)(b + (pl->l3 & 0x1f));

			sum += pseudo_sum(ip6->saddr.in6_u.u6_addr8, ip6->daddr.in6_u.u6_addr8, 1, thl + plen,
					  IPPROTO_TCP);
		}
		th->check = ~csum_fold32(sum);
	}
	if (bpf_skb_change_tail(skb, seglen, 0))
		return WR_DROP_DECAP;
	if (bpf_skb_store_bytes(skb, 0, b, hdrs & 0xff, 0))
		return WR_DROP_DECAP;
	if (buf_to_skb(skb, hdrs, fr->data, in + first, plen))
		return WR_DROP_DECAP;
	return 0;
}

/* ---- A reassembled frame through the flow table, at TC ------------------- */

/* What delivering a reassembled STT frame keeps while its segments go out:
 * in a map, not on the stack, which the actions below need. */
struct stt_emit_state {
	struct stt_plan pl;
	struct wr_meta tun;	/* the tunnel half of the flow key */
	__u32 ecn;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stt_emit_state);
} wr_stt_emit SEC(".maps");

/*
 * finish_at_tc for an inner segment of a resegmented STT frame, all but
 * the last: every output takes a clone, since the skb goes on to become
 * the next segment. Such a frame goes to local ports and the stack; a flow
 * that would send it into another tunnel or a group drops it (counted), which keeps
 * this path shallow enough for the verifier's stack.
 */
__noinline long finish_clone_at_tc(struct __sk_buff *skb, struct lookup *l, __u32 outer_ecn)
{
	struct wr_flow_key *key;
	struct frame_info fi = {};
	struct wr_flow_entry *e;
	__u32 n;
	int pass;

	if (!l)
		return TC_ACT_SHOT;
	key = &l->key;
	e = frame_flow(skb, l, &fi, (outer_ecn & ECN_MASK) + 1, 1, &pass);
	if (!e) {
		if (!pass)
			return TC_ACT_SHOT;
		bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS);
		return TC_ACT_OK;
	}
	n = e->n_actions;
	for (__u32 i = 0; i < WR_MAX_ACTIONS && i < n; i++) {
		const struct wr_action *a = &e->actions[i];
		__u32 out = a->port;
		struct wr_port *port;

		switch (a->op) {
		case WR_ACT_OUTPUT:
			port = bpf_map_lookup_elem(&wr_ports, &out);
			if (!port || port->kind != WR_PORT_LOCAL || !port->ifindex ||
			    bpf_clone_redirect(skb, port->ifindex, 0)) {
				drop(WR_DROP_NO_PORT, key->in_port);
				continue;
			}
			port_tx(out, skb->len);
			break;
		case WR_ACT_PASS:
			bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS);
			break;
		case WR_ACT_DROP:
			drop(WR_DROP_ACTION, key->in_port);
			return TC_ACT_SHOT;
		case WR_ACT_TUNNEL:
		case WR_ACT_GROUP:
			drop(WR_DROP_ENCAP, key->in_port);
			break;
		}
	}
	return TC_ACT_OK;
}

/* Builds and sends inner segment j (never the last) of a reassembled frame. */
static long stt_emit_step(__u32 j, void *arg)
{
	struct __sk_buff *skb = ((struct skb_arg *)arg)->skb;
	__u32 zero = 0;
	struct stt_emit_state *w = bpf_map_lookup_elem(&wr_stt_emit, &zero);
	struct lookup *l;
	int r;

	if (!w || j + 1 >= w->pl.nseg)
		return 1;
	r = stt_build(skb, &w->pl, j);
	l = lookup_scratch();
	if (!l)
		return 1;
	key_from_meta(&l->key, &w->tun);
	if (r) {
		drop(r, l->key.in_port);
		return 0;
	}
	port_rx(l->key.in_port, skb->len);
	if (w->pl.vlan & STT_VLAN_V)
		bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), w->pl.vlan & ~STT_VLAN_V);
	finish_clone_at_tc(skb, l, w->ecn);
	return 0;
}

/*
 * Prepares delivering the STT frame reassembled in `slot`, whose outer
 * headers' fields l->key holds: reads its STT header, checks its key, and
 * plans it whole or cut back into TCP segments of the frame's MSS; `id`
 * is the frame's identifier, checked against the slot's. Returns how many
 * segments, or 0 when it was dropped (and counted).
 */
__noinline __u32 stt_emit_begin(struct lookup *l, __u32 slot, __u32 id)
{
	__u32 zero = 0;
	struct stt_emit_state *w = bpf_map_lookup_elem(&wr_stt_emit, &zero);
	struct wr_stt_frame *fr = bpf_map_lookup_elem(&wr_stt_frames, &slot);
	struct wr_port *port;
	__u32 in_port;
	int r;

	if (!l || !fr || !w)
		return 0;
	in_port = l->key.in_port;
	/* The frame XDP completed must still be the one in the slot. */
	if (fr->id != id || !fr->total || fr->received < fr->total) {
		drop(WR_DROP_STT_REASM, in_port);
		return 0;
	}
	__builtin_memset(&w->pl, 0, sizeof(w->pl));
	w->pl.slot = slot;
	r = stt_plan(fr, &w->pl, &l->key);
	port = bpf_map_lookup_elem(&wr_ports, &in_port);
	if (!r && (!port || port->kind != WR_PORT_TUNNEL))
		r = WR_DROP_NO_PORT;
	if (!r && port && !(port->flags & WR_PORTF_KEY_IN_FLOW) && l->key.tun_id != port->key_in)
		r = WR_DROP_KEY_MISMATCH;
	if (r) {
		fr->total = 0;
		drop(r, in_port);
		return 0;
	}
	stat_inc(WR_STAT_DECAP);
	if (w->pl.nseg <= 1)
		stt_complete_csum(fr, &w->pl);
	meta_from_key(&w->tun, &l->key);
	w->ecn = l->key.tun_tos & ECN_MASK;
	return w->pl.nseg;
}

/*
 * Makes the skb the last segment (or the whole frame) of the frame
 * stt_emit_begin planned, frees its slot and puts the tunnel fields back
 * in l->key. Returns 0, or -1 when it was dropped (and counted).
 */
__noinline int stt_emit_last(struct __sk_buff *skb, struct lookup *l)
{
	__u32 zero = 0, slot;
	struct stt_emit_state *w = bpf_map_lookup_elem(&wr_stt_emit, &zero);
	int r;

	if (!l || !w)
		return -1;
	r = stt_build(skb, &w->pl, w->pl.nseg - 1);
	slot = w->pl.slot;
	stt_release(slot);
	__builtin_memset(&l->key, 0, sizeof(l->key));
	key_from_meta(&l->key, &w->tun);
	if (r) {
		drop(r, l->key.in_port);
		return -1;
	}
	port_rx(l->key.in_port, skb->len);
	if (w->pl.vlan & STT_VLAN_V)
		bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), w->pl.vlan & ~STT_VLAN_V);
	return 0;
}

/* The outer ECN of the STT frame being delivered, for finish_at_tc. */
static __always_inline __u32 stt_emit_ecn(void)
{
	__u32 zero = 0;
	struct stt_emit_state *w = bpf_map_lookup_elem(&wr_stt_emit, &zero);

	return w ? w->ecn : 0;
}

/*
 * Delivers the frame reassembled in slot (identifier id), whose outer
 * headers' fields l->key holds: every segment but the last goes through
 * the flow table as a clone, then the skb becomes the last (or the whole
 * frame). Returns the lookup scratch with the tunnel fields back in its
 * key, and in *ecn the outer ECN, for the flow table to take the skb; NULL
 * when the frame was dropped (and counted). Inlined into the program,
 * whose frame is the top one: the actions below need all the stack there
 * is.
 */
static __always_inline struct lookup *stt_deliver(struct __sk_buff *skb, struct lookup *l,
						  __u32 slot, __u32 id, __u32 *ecn)
{
	__u32 n = stt_emit_begin(l, slot, id);

	if (!n)
		return NULL;
	if (n > 1) {
		struct skb_arg a = { skb };

		bpf_loop(n - 1, stt_emit_step, &a, 0);
	}
	l = lookup_scratch();
	if (!l || stt_emit_last(skb, l))
		return NULL;
	*ecn = stt_emit_ecn();
	return l;
}

#endif /* WR_STT_RX_H */
