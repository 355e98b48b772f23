/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Sending STT (draft-davie-stt-08): all a frame goes through on its way
 * into an STT tunnel, from stt_output, which exec_one (actions.h) calls
 * for an output to an STT port.
 *
 * build_outer (encap.h) routes the frame and writes the outer Ethernet and
 * IP headers as for any tunnel; stt_fill_hdr adds the fake TCP header and
 * the STT header (18 bytes, then the frame). A frame that fits one
 * underlay segment is encapsulated in place and its TCP checksum filled in
 * (stt_tcp_csum). One that does not (a 64 KB GSO packet, say) is copied
 * into a per-CPU buffer and sent as several segments, each built in turn
 * in the same skb and sent as a clone (stt_segment): sequence number
 * (frame length << 16 | offset), acknowledgement (the frame's identifier)
 * and a TCP checksum each, the STT header only in the first.
 */
#ifndef WR_STT_TX_H
#define WR_STT_TX_H

#include "buf.h"
#include "encap.h"
#include "stt.h"

/* The kernel's sk_buff fields STT's header describes. */
struct sk_buff___stt {
	__u8 ip_summed:2;
	__u16 csum_start;
	__u16 csum_offset;
	__u16 mac_header;
	unsigned char *head;
	unsigned char *data;
} __attribute__((preserve_access_index));

/* The STT header's flags and L4 offset for the frame in ctx (fi parsed
 * it), written into the header at sh. `complete`: the frame goes in one
 * STT segment through a device that fills in its TCP/UDP checksum left
 * partial (device_completes), so the checksum is complete on the wire and
 * nothing is left to the receiver (no partial flag, L4 offset or MSS). */
static __always_inline void stt_flags_of(struct __sk_buff *ctx, const struct frame_info *fi,
					 struct stt_hdr *sh, __u32 complete)
{
	struct sk_buff___stt *skb = bpf_cast_to_kern_ctx(ctx);
	__u8 f = 0, state = BPF_CORE_READ_BITFIELD(skb, ip_summed);

	if (fi->ip_version == 4)
		f |= STT_F_IPV4;
	if (fi->ip_proto_l4 == IPPROTO_TCP)
		f |= STT_F_TCP;
	sh->l4_off = 0;
	if (state == CHECKSUM_PARTIAL && complete && fi->l4_off &&
	    (fi->ip_proto_l4 == IPPROTO_TCP || fi->ip_proto_l4 == IPPROTO_UDP)) {
		/* Neither partial nor verified: as any checksummed frame. */
	} else if (state == CHECKSUM_PARTIAL) {
		/* The checksum still holds only its pseudo-header sum: STT
		 * says so, and the receiver completes it. */
		__u32 at = (__u32)skb->csum_start - skb->mac_header;

		if (at < 256) {
			f |= STT_F_CSUM_PARTIAL;
			sh->l4_off = at;
		}
	} else if (state == CHECKSUM_UNNECESSARY) {
		f |= STT_F_CSUM_VERIFIED;
	}
	sh->flags = f;
}

/*
 * Writes the fake TCP header and the STT header of the output st is doing
 * after the outer IP header that build_outer put in the scratch header:
 * the frame length and offset in the sequence number, a frame identifier
 * in the acknowledgement; `complete` as stt_flags_of's. A global
 * function: its frame sits beside the deeper ones of stt_output, not under
 * them. Returns 0 or a WR_DROP_*.
 */
__noinline int stt_fill_hdr(struct __sk_buff *skb, const struct frame_info *fi,
			    const struct exec_state *st, __u32 complete)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&wr_scratch, &zero);
	struct wr_port *port;
	struct tcphdr *th;
	struct stt_hdr *sh;

	if (!fi || !st || !s)
		return WR_DROP_ENCAP;
	port = bpf_map_lookup_elem(&wr_ports, &st->port_no);
	if (!port)
		return WR_DROP_NO_PORT;
	th = (void *)(s->hdr + sizeof(struct ethhdr) +
		      (s->out.v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr)));
	sh = (void *)(th + 1);
	__builtin_memset(th, 0, sizeof(*th));
	th->source = tunnel_sport(s->out.hash);
	th->dest = port->dst_port;
	th->seq = bpf_htonl((WR_STT_HDR_LEN + st->inner_len) << 16);
	th->ack_seq = bpf_get_prandom_u32();
	th->doff = 5;
	th->ack = 1;
	th->psh = 1;
	th->window = bpf_htons(65535);
	sh->version = 0;
	stt_flags_of(skb, fi, sh, complete);
	sh->reserved = 0;
	/* The MSS goes with a TCP checksum left partial: the receiver
	 * resegments and fills in the checksums of each segment. A UDP GSO
	 * packet's datagrams go one frame each (stt_datagrams). */
	sh->mss = (sh->flags & STT_F_CSUM_PARTIAL) && (sh->flags & STT_F_TCP) ?
			  bpf_htons(skb->gso_size) : 0;
	sh->vlan_tci = skb->vlan_present ? bpf_htons(skb->vlan_tci | STT_VLAN_V) : 0;
	sh->context = s->out.tun_id;
	sh->pad = 0;
	return 0;
}

/*
 * Whether the GSO packet st is sending through an STT port leaves as its
 * datagrams, each an STT frame of one segment, through tunnel_output and
 * segment_output (gso.h) as for other tunnels. STT's MSS field asks a
 * receiver to cut a frame into TCP segments: a UDP frame with an MSS means
 * IP fragments to Open vSwitch (UFO), one datagram to warren, never the
 * datagrams a UDP_SEGMENT send made, so a UDP GSO packet is never sent
 * whole.
 */
static __always_inline int stt_datagrams(const struct exec_state *st, const struct frame_info *fi)
{
	return st->gso_size && fi->ip_proto_l4 == IPPROTO_UDP;
}

/* A frame being sent in segments: per CPU, beside its buffer. */
struct stt_send {
	__u32 ifindex;
	__u32 hlen;		/* Ethernet + IP + TCP */
	__u32 total;		/* STT frame length */
	__u32 seg;		/* payload bytes per segment */
	__u32 nseg;
	__u32 v6;
	__u32 failed;
	__u32 dev;		/* the device fills in the TCP checksum from byte
				 * dev - 1 of the TCP header on; 0: it does not */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stt_send);
} wr_stt_send SEC(".maps");

/* Builds segment j in the skb: headers from the scratch header (lengths,
 * sequence number, PSH and checksums set for it), bytes from the buffer.
 * Returns 0 or -1. */
static __always_inline int stt_send_build(struct __sk_buff *skb, __u32 j)
{
	__u32 zero = 0, off, plen, l4, hl;
	struct stt_send *s = bpf_map_lookup_elem(&wr_stt_send, &zero);
	struct scratch *sc = bpf_map_lookup_elem(&wr_scratch, &zero);
	struct tx_buf *tx = tx_buf();
	struct tcphdr *th;
	__u8 *h;
	__u64 sum;

	if (!s || !sc || !tx)
		return -1;
	h = sc->hdr;
	hl = s->hlen;
	if (hl < sizeof(struct ethhdr) + 20 + 20 || hl > sizeof(struct ethhdr) + 40 + 20)
		return -1;
	l4 = hl - sizeof(struct tcphdr);
	off = j * s->seg;
	if (off >= s->total)
		return -1;
	plen = s->total - off;
	if (plen > s->seg)
		plen = s->seg;
	if (plen > BUF_SEG_MAX)
		return -1;
	if (s->v6) {
		struct ipv6hdr *ip6 = (void *)(h + sizeof(struct ethhdr));

		ip6->payload_len = bpf_htons(sizeof(struct tcphdr) + plen);
		sum = pseudo_sum(ip6->saddr.in6_u.u6_addr8, ip6->daddr.in6_u.u6_addr8, 1,
				 sizeof(struct tcphdr) + plen, IPPROTO_TCP);
	} else {
		struct iphdr *ip = (void *)(h + sizeof(struct ethhdr));

		ip->tot_len = bpf_htons(sizeof(*ip) + sizeof(struct tcphdr) + plen);
		ip->check = 0;
		ip->check = ipv4_header_csum(ip);
		sum = pseudo_sum((__u8 *)&ip->saddr, (__u8 *)&ip->daddr, 0, sizeof(struct tcphdr) + plen,
				 IPPROTO_TCP);
	}
	th = (void *)(h + l4);
	th->seq = bpf_htonl((s->total << 16) | off);
	th->psh = j + 1 == s->nseg;
	th->check = 0;
	if (s->dev) {
		/* The seed: what the device's sum leaves out. */
		th->check = csum_fold32(sum + chunk_sum((__u8 *)th, (s->dev - 1) & 0x1f));
	} else {
		sum += (__u32)bpf_csum_diff(0, 0, (__be32 *)th, sizeof(*th), 0);
		sum += mem_sum_short(tx->data, off, plen);
		th->check = ~csum_fold32(sum);
	}
	if (bpf_skb_change_tail(skb, hl + plen, 0))
		return -1;
	if (bpf_skb_store_bytes(skb, 0, h, hl, 0))
		return -1;
	return buf_to_skb_short(skb, hl, tx->data, off, plen);
}

static long stt_send_step(__u32 j, void *arg)
{
	struct __sk_buff *skb = ((struct skb_arg *)arg)->skb;
	__u32 zero = 0;
	struct stt_send *s = bpf_map_lookup_elem(&wr_stt_send, &zero);

	if (!s || j + 1 >= s->nseg)
		return 1;	/* the last goes back to the caller */
	if (stt_send_build(skb, j) || bpf_clone_redirect(skb, s->ifindex, 0)) {
		s->failed = 1;
		return 1;
	}
	return 0;
}

/*
 * Points the device's fill-in of skb's checksum left partial at the TCP
 * checksum of the segments stt_segment builds (Ethernet, an IP header of
 * l3 bytes, TCP): the device sums from csum_start on and writes the
 * checksum csum_offset bytes after it, which, left where it is, lands on
 * some other byte of every segment. csum_start moves with the bytes after
 * the MAC header, so room made or taken there moves it to csum_offset
 * bytes before the TCP checksum field. Returns s->dev: 1 + the bytes of
 * the TCP header before csum_start, or 0 when it cannot.
 */
static __always_inline __u32 stt_aim_csum(struct __sk_buff *ctx, __u32 l3)
{
	struct sk_buff___stt *skb = bpf_cast_to_kern_ctx(ctx);
	__u32 off = skb->csum_offset, at, want;

	if (off > offsetof(struct tcphdr, check) || (off & 1))
		return 0;
	at = skb->csum_start - (__u32)((unsigned long)skb->data - (unsigned long)skb->head);
	want = sizeof(struct ethhdr) + l3 + offsetof(struct tcphdr, check) - off;
	if (want != at && bpf_skb_adjust_room(ctx, (__s32)want - (__s32)at, BPF_ADJ_ROOM_MAC,
					      BPF_F_ADJ_ROOM_FIXED_GSO))
		return 0;
	return 1 + offsetof(struct tcphdr, check) - off;
}

/*
 * Sends the frame of the output st is doing (in skb, or held already in
 * the send buffer) as an STT frame of several segments, along the path
 * build_outer chose. The scratch header holds the STT packet header
 * encap_build made (Ethernet, IP, TCP, STT header). Every segment but the
 * last leaves as a clone; the skb becomes the last. Returns 0 or a
 * WR_DROP_* reason.
 */
__noinline int stt_segment(struct __sk_buff *skb, const struct exec_state *st, __u32 mtu)
{
	__u32 zero = 0, at, hdr_len, l3;
	struct tx_buf *tx = tx_buf();
	struct scratch *sc = bpf_map_lookup_elem(&wr_scratch, &zero);
	struct stt_send *s = bpf_map_lookup_elem(&wr_stt_send, &zero);
	struct skb_arg a = { skb };

	if (!tx || !sc || !s || !st)
		return WR_DROP_ENCAP;
	hdr_len = sc->out.hdr_len;
	l3 = sc->out.v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	if (hdr_len > OUTER_MAX || hdr_len < sizeof(struct ethhdr) + l3 + 38)
		return WR_DROP_ENCAP;
	s->ifindex = sc->out.ifindex;
	s->v6 = sc->out.v6;
	s->failed = 0;
	s->hlen = hdr_len - WR_STT_HDR_LEN;
	s->total = WR_STT_HDR_LEN + st->inner_len;
	if (s->total > WR_STT_FRAME_MAX || mtu < l3 + sizeof(struct tcphdr) + 64)
		return WR_DROP_ENCAP;
	s->seg = (mtu - l3 - sizeof(struct tcphdr)) & ~7U;
	if (s->seg > BUF_SEG_MAX)
		s->seg = BUF_SEG_MAX;
	s->nseg = (s->total + s->seg - 1) / s->seg;
	/* The STT header, then the whole inner frame, into the buffer. */
	at = s->hlen;
	if (at > OUTER_MAX - WR_STT_HDR_LEN)
		return WR_DROP_ENCAP;
	__builtin_memcpy(tx->data + TX_FRAME_AT - WR_STT_HDR_LEN, sc->hdr + at, WR_STT_HDR_LEN);
	if (!st->held && pkt_to_buf(skb, 0, 0, tx->data, TX_FRAME_AT, st->inner_len))
		return WR_DROP_ENCAP;
	/* The frame's checksum stays partial, as the STT header says: a device
	 * that would fill it in fills in each segment's TCP checksum instead. */
	s->dev = 0;
	if (device_completes(skb)) {
		s->dev = stt_aim_csum(skb, l3);
		if (!s->dev)
			return WR_DROP_ENCAP;
	}
	bpf_loop(s->nseg, stt_send_step, &a, 0);
	if (s->failed || stt_send_build(skb, s->nseg - 1))
		return WR_DROP_ENCAP;
	return 0;
}

/*
 * Fills in the TCP checksum of an STT packet sent in one segment, whose
 * Ethernet + IP + TCP headers are hlen bytes, and whose frame fi
 * describes. When the device fills in the frame's TCP/UDP checksum left
 * partial (device_completes), the checksum is complete on the wire, as the
 * STT header says (stt_flags_of), and the TCP checksum counts the frame's
 * checksum as the device leaves it (tx_sum). A global function.
 */
__noinline int stt_tcp_csum(struct __sk_buff *skb, const struct frame_info *fi, __u32 hlen, __u32 v6)
{
	__u32 zero = 0, l4 = hlen - sizeof(struct tcphdr), len = skb->len, inner_l4 = 0;
	struct scratch *s = bpf_map_lookup_elem(&wr_scratch, &zero);
	__s64 sum;
	__u16 check;
	__u8 *ip;

	if (!s || !fi || hlen > OUTER_MAX || l4 < sizeof(struct ethhdr) + 20)
		return -1;
	if (device_completes(skb) && fi->l4_off &&
	    (fi->ip_proto_l4 == IPPROTO_TCP || fi->ip_proto_l4 == IPPROTO_UDP)) {
		inner_l4 = hlen + WR_STT_HDR_LEN + fi->l4_off;
		if (inner_l4 > 512)
			return -1;
	}
	sum = tx_sum(skb, l4, inner_l4, inner_l4 + (fi->ip_proto_l4 == IPPROTO_TCP ? 16 : 6));
	if (sum < 0)
		return -1;
	ip = s->hdr + sizeof(struct ethhdr);
	sum += v6 ? pseudo_sum(ip + 8, ip + 24, 1, len - l4, IPPROTO_TCP) :
		    pseudo_sum(ip + 12, ip + 16, 0, len - l4, IPPROTO_TCP);
	check = ~csum_fold32(sum);
	return bpf_skb_store_bytes(skb, l4 + 16, &check, 2, 0) ? -1 : 0;
}

/*
 * An output to an STT port, whose header build_outer made. A frame that
 * fits one segment is encapsulated in place and its TCP checksum filled
 * in; a bigger one (a GSO packet) is sent as several segments, which only
 * the last output of a flow can do (the skb becomes the segments) and only
 * towards a next hop whose MAC the FIB knows (clones cannot wait for
 * neighbour resolution). A frame an earlier output left in the send
 * buffer (held) is sent from there. Returns a TC verdict, or -1 to go on.
 */
__noinline long stt_output(struct __sk_buff *skb, const struct frame_info *fi,
			   const struct wr_flow_key *key, struct exec_state *st)
{
	struct encap_out *out;
	struct scratch *s;
	__u32 zero = 0, mtu = 0, hlen, inner_len, replica = 0, one = 0;
	int last, r = 0;

	if (!fi || !key || !st)
		return TC_ACT_SHOT;
	last = st->last;
	s = bpf_map_lookup_elem(&wr_scratch, &zero);
	if (!s) {
		drop(WR_DROP_ENCAP, st->in_port);
		return last ? TC_ACT_SHOT : -1;
	}
	out = &s->out;
	r = build_outer(skb, fi, key, st, out);
	inner_len = st->inner_len;
	hlen = out->hdr_len;
	if (!r && (hlen < sizeof(struct ethhdr) + 20 + 38 || hlen > OUTER_MAX))
		r = WR_DROP_ENCAP;
	if (!r) {
		mtu = path_mtu(skb, out);
		if (!mtu)
			mtu = 1500;
		/* A replica (the same frame, another remote) or a frame that
		 * fits one segment goes in one; anything else in several
		 * (stt_segment). */
		replica = st->tk_done && !st->held;
		one = replica || (!st->gso_size && inner_len + hlen - sizeof(struct ethhdr) <= mtu);
		r = stt_fill_hdr(skb, fi, st, one && device_completes(skb));
	}
	if (r) {
		drop(r, st->in_port);
		return last ? TC_ACT_SHOT : -1;
	}
	if (WR_STT_HDR_LEN + inner_len > WR_STT_FRAME_MAX) {
		r = WR_DROP_ENCAP;
	} else if (replica) {
		/* A replica: the same frame, another remote. */
		if (hlen != st->out_hdr_len ||
		    bpf_skb_store_bytes(skb, 0, s->hdr,
					sizeof(struct ethhdr) + ((hlen - sizeof(struct ethhdr)) & 0x7f), 0) ||
		    stt_tcp_csum(skb, fi, hlen - WR_STT_HDR_LEN, out->v6))
			r = WR_DROP_ENCAP;
	} else if (one) {
		/* One segment. The VLAN tag travels in the STT header. */
		if (skb->vlan_present)
			bpf_skb_vlan_pop(skb);
		r = encap_push(skb, s, out, WR_PROTO_STT, fi);
		if (!r && stt_tcp_csum(skb, fi, hlen - WR_STT_HDR_LEN, out->v6))
			r = WR_DROP_ENCAP;
	} else if (!last) {
		r = WR_DROP_ENCAP;
	} else if (out->neigh) {
		r = WR_DROP_NO_NEIGH;
	} else {
		if (skb->vlan_present)
			bpf_skb_vlan_pop(skb);
		r = stt_segment(skb, st, mtu);
		st->held = 1;
	}
	return output_done(skb, st, out, hlen, r);
}

#endif /* WR_STT_TX_H */
