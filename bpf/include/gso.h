/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * GSO packets whose every segment needs something of its own: an outer
 * checksum (csum, and a UDP tunnel's default over IPv6) or a GRE sequence
 * number (seq).
 *
 * bpf_skb_adjust_room gives an encapsulated GSO packet the tunnel GSO
 * types without checksum (SKB_GSO_UDP_TUNNEL, SKB_GSO_GRE), and no helper,
 * kfunc or writable field asks for the _CSUM ones: segmentation copies the
 * outer header BPF wrote to every segment unchanged, one checksum (zero,
 * or wrong) and one sequence number for all. So such packets leave another
 * way, chosen per output by gso_path:
 *
 *   - VXLAN: whole, through the kernel's vxlan device in metadata mode that
 *     the control plane keeps for the port's destination port
 *     (wr_port.gso_ifindex). The tunnel key goes in with
 *     bpf_skb_set_tunnel_key (a checksum unless BPF_F_ZERO_CSUM_TX); the
 *     device asks for SKB_GSO_UDP_TUNNEL_CSUM, and whoever segments (a NIC,
 *     or the kernel in software) checksums every segment. TSO is kept. The
 *     device routes the packet itself and picks the source port as
 *     tunnel_sport does.
 *   - anything else (Geneve and GRE checksums, GRE sequence numbers, VXLAN
 *     without its device): segmented here, as GSO would, TCP by its MSS
 *     and UDP by its datagrams: the frame copied into the send buffer, then
 *     each segment built in the skb in turn (inner headers patched, the
 *     outer header with its lengths, checksum and sequence number) and sent
 *     as a clone; the last one goes as the packet itself. The inner
 *     checksum stays as the packet had it: left to the device (the outer
 *     one then counts it as local checksum offload does), or complete.
 *
 * Each output decides for itself, so a packet replicated to several
 * outputs goes right in any order: once an output has segmented it, the skb
 * holds a segment and the frame waits in the buffer (exec_state.held), and
 * every later output segments from there too.
 */
#ifndef WR_GSO_H
#define WR_GSO_H

#include "buf.h"
#include "encap.h"
#include "stt.h"

/* gso_path's answers. */
#define GSO_IN_PLACE 0	/* no GSO packet, or one whose segments may share a header */
#define GSO_DEVICE 1	/* through the kernel's vxlan device */
#define GSO_SEGMENT 2	/* segmented here */

/* What tunnel_output returns for a packet to segment: exec_actions calls
 * segment_output, whose deep frames then sit beside tunnel_output's and
 * exec_one's, not under them (the verifier bounds the stack of a whole
 * call chain). */
#define OUTPUT_SEGMENT -2

/* How a GSO packet leaves through `port`, with an outer checksum or not,
 * when it is as it came. */
static __always_inline int gso_want(const struct wr_port *port, int csum)
{
	if (port->proto == WR_PROTO_STT)
		return GSO_SEGMENT;
	if (!csum && !(port->proto == WR_PROTO_GRE && (port->flags & WR_PORTF_SEQ)))
		return GSO_IN_PLACE;
	return port->proto == WR_PROTO_VXLAN && port->gso_ifindex ? GSO_DEVICE : GSO_SEGMENT;
}

/* How the output st is doing, whose header build_outer made into out,
 * sends the packet. Once the skb has been segmented, or when the outputs
 * cannot run in gso_order's order (a group's), every output segments; the
 * device takes only a frame still without an outer header. */
static __always_inline int gso_path(const struct exec_state *st, const struct wr_port *port,
				    const struct encap_out *out)
{
	int want;

	if (!st->gso_size)
		return GSO_IN_PLACE;
	if (st->held || st->segment)
		return GSO_SEGMENT;
	want = gso_want(port, out->csum);
	return want == GSO_DEVICE && st->tk_done ? GSO_SEGMENT : want;
}

/* Where a GSO packet's action a runs in gso_order: 0 not a tunnel output,
 * 1 through a device, 2 segmented, 3 in place. */
static __always_inline __u8 gso_rank(const struct wr_action *a)
{
	const struct wr_tun_key *tk = NULL;
	struct wr_port *port;
	__u32 p = a->port, idx = a->arg;

	if (a->op != WR_ACT_TUNNEL)
		return 0;
	port = bpf_map_lookup_elem(&wr_ports, &p);
	if (!port)
		return 3;
	if (idx != WR_NO_TUN_KEY)
		tk = bpf_map_lookup_elem(&wr_tun_keys, &idx);
	switch (gso_want(port, tunnel_csum(port, tk, tunnel_v6(port, tk)))) {
	case GSO_DEVICE:
		return 1;
	case GSO_SEGMENT:
		return 2;
	}
	return 3;
}

/*
 * The order a GSO packet's actions run in, into st->order: outputs to
 * local ports first (a flow has them first anyway), then tunnel outputs
 * through a device, then those that segment, then those that put the
 * outer header in place. The kernel segments nothing a tunnel output
 * encapsulated in place (bpf_skb_change_tail refuses an skb marked as
 * encapsulated), and the device needs the frame as it came; once a packet
 * is segmented, the outputs after segment too. So every output is right
 * in this order, and as fast as it can be. A global function.
 */
__noinline int gso_order(const struct wr_flow_entry *e, struct exec_state *st)
{
	__u8 rank[WR_MAX_ACTIONS] = {};
	__u32 n, k = 0;

	if (!e || !st)
		return -1;
	n = e->n_actions;
	for (__u32 i = 0; i < WR_MAX_ACTIONS && i < n; i++)
		rank[i] = gso_rank(&e->actions[i]);
	for (__u8 r = 0; r < 4; r++) {
		for (__u32 i = 0; i < WR_MAX_ACTIONS && i < n; i++) {
			if (rank[i] == r && k < WR_MAX_ACTIONS)
				st->order[k++] = i;
		}
	}
	return 0;
}

/* The action of e that runs i-th, st->last set for it: a GSO packet's in
 * gso_order's order, any other's as the flow has them. */
static __always_inline const struct wr_action *exec_pick(const struct wr_flow_entry *e,
							 struct exec_state *st, __u32 i)
{
	const struct wr_action *a;

	if (st->gso_size && e->n_actions > 1) {
		st->last = i + 1 == e->n_actions;
		return &e->actions[st->order[i & (WR_MAX_ACTIONS - 1)] & (WR_MAX_ACTIONS - 1)];
	}
	a = &e->actions[i & (WR_MAX_ACTIONS - 1)];
	st->last = a->flags & WR_ACTF_LAST;
	return a;
}

/*
 * Sends the GSO packet in skb, untouched, through the kernel's vxlan
 * device ifindex, with the tunnel key of the outer header build_outer made
 * (addresses, VNI, TTL, TOS with ECN, flow label, DF). Returns a TC
 * verdict, or -1 to go on.
 */
__noinline long device_output(struct __sk_buff *skb, struct exec_state *st, __u32 ifindex)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&wr_scratch, &zero);
	struct bpf_tunnel_key k = {};
	struct encap_out *out;
	__u64 flags = 0;
	int r = 0;

	if (!s || !st)
		return TC_ACT_SHOT;
	out = &s->out;
	k.tunnel_id = (__u32)bpf_be64_to_cpu(out->tun_id);
	if (out->v6) {
		struct ipv6hdr *ip6 = (void *)(s->hdr + sizeof(struct ethhdr));

		__builtin_memcpy(k.remote_ipv6, ip6->daddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(k.local_ipv6, ip6->saddr.in6_u.u6_addr8, 16);
		k.tunnel_tos = ipv6_tclass(ip6);
		k.tunnel_ttl = ip6->hop_limit;
		k.tunnel_label = bpf_ntohl(*(__be32 *)ip6) & 0xfffff;
		flags |= BPF_F_TUNINFO_IPV6;
	} else {
		struct iphdr *ip = (void *)(s->hdr + sizeof(struct ethhdr));

		k.remote_ipv4 = bpf_ntohl(ip->daddr);
		k.local_ipv4 = bpf_ntohl(ip->saddr);
		k.tunnel_tos = ip->tos;
		k.tunnel_ttl = ip->ttl;
		if (ip->frag_off & bpf_htons(IP_DF))
			flags |= BPF_F_DONT_FRAGMENT;
	}
	if (bpf_skb_set_tunnel_key(skb, &k, sizeof(k), flags))
		r = WR_DROP_ENCAP;
	else
		stat_inc(WR_STAT_GSO_DEVICE);
	out->ifindex = ifindex;
	out->neigh = NEIGH_NONE;
	return output_done(skb, st, out, 0, r);
}

/* The most header bytes of a frame each segment repeats: Ethernet (with a
 * VLAN tag), IP and TCP, options included. */
#define SEG_HDRS_MAX 128

/* A GSO packet being segmented, per CPU: the frame (set when it is copied
 * into the send buffer, kept for the outputs after), then the output. */
struct seg_state {
	__u8 hdrs[SEG_HDRS_MAX + 64];	/* its headers, patched for each segment (and
					 * slack, for the verifier) */
	__u32 hdrs_len;
	__u32 l3;		/* offset of its IP header */
	__u32 l4;		/* ... and of its TCP or UDP header */
	__u32 payload;		/* bytes after the headers */
	__u32 mss;		/* payload bytes per segment */
	__u32 nseg;
	__u32 tcp_seq;		/* host order */
	__u16 ip_id;		/* host order */
	__u8 ipv6;
	__u8 tcp;		/* TCP, else UDP */
	__u8 tcp_flags;
	__u8 partial;		/* its L4 checksum is left to the device */
	__u8 lco;		/* ... and the output's outer checksum counts it as
				 * the device fills it in (seg_lco) */
	__u8 pad;
	/* the output */
	__u32 hlen;		/* its outer header, in the scratch header */
	__u32 port_no;
	__u32 failed;
	__u32 pad1;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct seg_state);
} wr_seg SEC(".maps");

/* The TCP flags segment j of n keeps: FIN and PSH on the last only, CWR on
 * the first only, as tcp_gso_segment does. */
static __always_inline __u8 seg_tcp_flags(__u8 flags, __u32 j, __u32 n)
{
	if (j + 1 < n)
		flags &= ~0x09;
	if (j)
		flags &= ~0x80;
	return flags;
}

/*
 * Builds segment j of g in the skb: the frame's headers patched for it, the
 * outer header (its lengths, IPv4 ID, GRE sequence number, checksum)
 * patched in the scratch header, the payload from the send buffer.
 * Returns 0 or -1.
 */
static __always_inline int seg_build(struct __sk_buff *skb, __u32 j, struct seg_state *g,
				     struct scratch *s)
{
	__u32 off, plen, hlen, hl, l3, l4, ol4, total, outer, field = 0;
	struct tx_buf *tx = tx_buf();
	struct wr_port *port;
	__u64 sum, ps;
	__u16 check;
	__u8 *ih, *h;

	if (!tx)
		return -1;
	port = bpf_map_lookup_elem(&wr_ports, &g->port_no);
	if (!port)
		return -1;
	h = s->hdr;
	ih = g->hdrs;
	hlen = g->hlen;
	hl = g->hdrs_len;
	l3 = g->l3;
	l4 = g->l4;
	ol4 = sizeof(struct ethhdr) + (s->out.v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr));
	if (hlen > OUTER_MAX || hlen < ol4 + 4 || hl > SEG_HDRS_MAX || l4 + 8 > hl || l3 + 20 > l4 ||
	    l3 < sizeof(struct ethhdr) || hl - l4 > 60)
		return -1;
	off = j * g->mss;
	if (off >= g->payload || off > BUF_FRAME_MAX)
		return -1;
	plen = g->payload - off;
	if (plen > g->mss)
		plen = g->mss;
	if (plen > BUF_SEG_MAX)
		return -1;

	/* The frame's headers, as GSO makes them for this segment. */
	if (g->ipv6) {
		struct ipv6hdr *ip6 = (void *)(ih + (l3 & 0x7f));

		ip6->payload_len = bpf_htons(hl - l3 - sizeof(*ip6) + plen);
		ps = pseudo_sum(ip6->saddr.in6_u.u6_addr8, ip6->daddr.in6_u.u6_addr8, 1, hl - l4 + plen,
				g->tcp ? IPPROTO_TCP : IPPROTO_UDP);
	} else {
		struct iphdr *ip = (void *)(ih + (l3 & 0x7f));
		__u32 ihl = l4 - l3;

		ip->tot_len = bpf_htons(hl - l3 + plen);
		ip->id = bpf_htons(g->ip_id + j);
		ip->check = 0;
		if (ihl > 60)
			return -1;
		ip->check = ~csum_fold32(chunk_sum((__u8 *)ip, ihl));
		ps = pseudo_sum((__u8 *)&ip->saddr, (__u8 *)&ip->daddr, 0, hl - l4 + plen,
				g->tcp ? IPPROTO_TCP : IPPROTO_UDP);
	}
	if (g->tcp) {
		struct tcphdr *th = (void *)(ih + (l4 & 0x7f));

		th->seq = bpf_htonl(g->tcp_seq + off);
		((__u8 *)th)[13] = seg_tcp_flags(g->tcp_flags, j, g->nseg);
		th->check = 0;
		field = l4 + offsetof(struct tcphdr, check);
	} else {
		struct udphdr *uh = (void *)(ih + (l4 & 0x7f));

		uh->len = bpf_htons(hl - l4 + plen);
		uh->check = 0;
		field = l4 + offsetof(struct udphdr, check);
	}
	sum = 0;
	if (g->partial) {
		/* Left to the device, as the GSO packet's was: the pseudo-header sum. */
		check = csum_fold32(ps);
	} else {
		sum = chunk_sum(ih + (l4 & 0x7f), hl - l4) +
		      mem_sum_short(tx->data, TX_FRAME_AT + hl + off, plen);
		check = ~csum_fold32(sum + ps);
		if (!g->tcp && !check)
			check = 0xffff;
	}
	*(__u16 *)(ih + (field & 0x7f)) = check;

	/* The outer header's lengths, IPv4 ID and GRE sequence number. */
	total = hlen + hl + plen;
	if (s->out.v6) {
		struct ipv6hdr *ip6 = (void *)(h + sizeof(struct ethhdr));

		ip6->payload_len = bpf_htons(total - ol4);
	} else {
		struct iphdr *ip = (void *)(h + sizeof(struct ethhdr));

		ip->tot_len = bpf_htons(total - sizeof(struct ethhdr));
		/* RFC 6864: without DF the ID must vary. */
		if (!(ip->frag_off & bpf_htons(IP_DF)))
			ip->id = (__u16)bpf_get_prandom_u32();
		ip->check = 0;
		ip->check = ipv4_header_csum(ip);
	}
	if (port->proto == WR_PROTO_GRE) {
		struct grehdr *gh = (void *)(h + (ol4 & 0x3f));
		__u32 at = ol4 + sizeof(*gh) + ((gh->flags & bpf_htons(GRE_C)) ? 4 : 0) +
			   ((gh->flags & bpf_htons(GRE_K)) ? 4 : 0);

		if ((gh->flags & bpf_htons(GRE_S)) && at + 4 <= hlen)
			*(__be32 *)(h + (at & 0x7f)) = gre_next_seq(port);
		field = ol4 + 4;
	} else if (port->proto == WR_PROTO_STT) {
		/* Each datagram is an STT frame of one segment, its own. */
		struct tcphdr *th = (void *)(h + (ol4 & 0x3f));

		th->seq = bpf_htonl((WR_STT_HDR_LEN + hl + plen) << 16);
		th->ack_seq = bpf_get_prandom_u32();
		field = ol4 + offsetof(struct tcphdr, check);
	} else {
		((struct udphdr *)(h + (ol4 & 0x3f)))->len = bpf_htons(total - ol4);
		field = ol4 + offsetof(struct udphdr, check);
	}

	/* The outer checksum: the outer header from its L4 on, then the
	 * frame's headers up to its L4 header and, for a checksum left to the
	 * device, the complement of its seed (local checksum offload), else
	 * the rest of the segment as it is. STT's header tells its receiver
	 * to complete a checksum left partial, so on a device that passes the
	 * skb on as it is (a veth) the seed goes on the wire and the outer
	 * checksum covers the bytes as they are; a device that fills it in
	 * sends it complete (seg_lco). */
	if (s->out.csum || port->proto == WR_PROTO_STT) {
		outer = hlen - ol4;
		*(__u16 *)(h + (field & 0x7f)) = 0;
		if (outer > OUTER_MAX - 34)
			return -1;
		sum = chunk_sum(h + (ol4 & 0x3f), outer);
		if (g->lco)
			sum += chunk_sum(ih, l4 & 0x7f) + (__u16)~check;
		else
			sum += chunk_sum(ih, hl & 0x7f) +
			       mem_sum_short(tx->data, TX_FRAME_AT + hl + off, plen);
		if (port->proto == WR_PROTO_GRE) {
			check = ~csum_fold32(sum);
		} else {
			__u8 *ip = h + sizeof(struct ethhdr);
			__u8 proto = port->proto == WR_PROTO_STT ? IPPROTO_TCP : IPPROTO_UDP;

			sum += s->out.v6 ? pseudo_sum(ip + 8, ip + 24, 1, total - ol4, proto) :
					   pseudo_sum(ip + 12, ip + 16, 0, total - ol4, proto);
			check = ~csum_fold32(sum);
			/* UDP's zero means none; TCP's is a checksum like any. */
			if (!check && proto == IPPROTO_UDP)
				check = 0xffff;
		}
		*(__u16 *)(h + (field & 0x7f)) = check;
	}

	/* No-op masks: the verifier needs the bounds on these very values. */
	if (bpf_skb_change_tail(skb, total, 0) ||
	    bpf_skb_store_bytes(skb, 0, h, sizeof(struct ethhdr) + ((hlen - sizeof(struct ethhdr)) & 0x7f), 0) ||
	    bpf_skb_store_bytes(skb, hlen, ih, sizeof(struct ethhdr) + ((hl - sizeof(struct ethhdr)) & 0x7f), 0))
		return -1;
	return buf_to_skb_short(skb, hlen + hl, tx->data, TX_FRAME_AT + hl + off, plen);
}

/* Builds segment j and sends it as a clone, but for the last, which the
 * skb stays. */
static long seg_step(__u32 j, void *arg)
{
	struct __sk_buff *skb = ((struct skb_arg *)arg)->skb;
	__u32 zero = 0;
	struct seg_state *g = bpf_map_lookup_elem(&wr_seg, &zero);
	struct scratch *s = bpf_map_lookup_elem(&wr_scratch, &zero);

	if (!g || !s || j >= g->nseg)
		return 1;
	if (seg_build(skb, j, g, s) || (j + 1 < g->nseg && bpf_clone_redirect(skb, s->out.ifindex, 0))) {
		g->failed = 1;
		return 1;
	}
	return 0;
}

/* Writes into eth the frame's MACs (at `at` in skb) and then the tag the
 * kernel holds aside, as encap_push puts it in the frame. Returns 0 or -1. */
static __always_inline int seg_tag(struct __sk_buff *skb, __u32 at, __u8 *eth)
{
	__be16 *type = (__be16 *)(eth + 2 * ETH_ALEN);

	if (bpf_skb_load_bytes(skb, at, eth, 2 * ETH_ALEN))
		return -1;
	type[0] = skb->vlan_proto;
	type[1] = bpf_htons(skb->vlan_tci);
	return 0;
}

/*
 * Takes the frame (st->inner_len bytes after st's outer header, if any)
 * into the send buffer and learns what its segments repeat. The tag the
 * kernel holds aside for it (st->tag) goes into the frame there, since
 * segments are built from the buffer alone, and leaves the skb, whose
 * segments would carry it outside. Returns 0 or a WR_DROP_* reason. Not
 * inline: its frame sits beside seg_step's, not above it (the verifier's
 * stack limit, under a group's walk).
 */
static __noinline int seg_hold(struct __sk_buff *skb, const struct frame_info *fi,
			       struct exec_state *st, struct seg_state *g, struct tx_buf *tx)
{
	/* No-op masks: the verifier needs the bounds on these very values. */
	__u32 add = st->tag & sizeof(struct vlan_hdr);
	__u32 tag = add | (st->inner_tag & sizeof(struct vlan_hdr));
	__u32 room = st->tk_done ? st->out_hdr_len : 0, hl = fi->l4_off + fi->l4_hlen + tag;
	__u8 th[14];

	if ((fi->ip_proto_l4 != IPPROTO_TCP && fi->ip_proto_l4 != IPPROTO_UDP) || !fi->l4_off ||
	    hl > SEG_HDRS_MAX || hl < sizeof(struct ethhdr) + 28 || hl >= st->inner_len ||
	    !st->gso_size || room > OUTER_MAX)
		return WR_DROP_ENCAP;
	if (pkt_to_buf(skb, 0, room, tx->data, TX_FRAME_AT + add, st->inner_len - add))
		return WR_DROP_ENCAP;
	if (add) {
		if (bpf_skb_load_bytes(skb, room, g->hdrs + sizeof(struct vlan_hdr),
				       hl - sizeof(struct vlan_hdr)) ||
		    seg_tag(skb, room, tx->data + TX_FRAME_AT) || seg_tag(skb, room, g->hdrs) ||
		    bpf_skb_vlan_pop(skb))
			return WR_DROP_ENCAP;
	} else if (bpf_skb_load_bytes(skb, room, g->hdrs, hl)) {
		return WR_DROP_ENCAP;
	}
	st->inner_tag = tag;
	g->hdrs_len = hl;
	g->l3 = fi->l3_off + tag;
	g->l4 = fi->l4_off + tag;
	g->payload = st->inner_len - hl;
	g->mss = st->gso_size;
	g->nseg = (g->payload + g->mss - 1) / g->mss;
	g->ipv6 = fi->ip_version == 6;
	g->tcp = fi->ip_proto_l4 == IPPROTO_TCP;
	g->partial = skb_ip_summed(skb) == CHECKSUM_PARTIAL;
	if (g->tcp) {
		if (bpf_skb_load_bytes(skb, room + fi->l4_off + tag - add, th, sizeof(th)))
			return WR_DROP_ENCAP;
		g->tcp_seq = bpf_ntohl(*(__be32 *)(th + 4));
		g->tcp_flags = th[13];
	}
	if (!g->ipv6) {
		struct iphdr *ip = (void *)(g->hdrs + (g->l3 & 0x7f));

		if ((void *)(ip + 1) > (void *)(g->hdrs + SEG_HDRS_MAX))
			return WR_DROP_ENCAP;
		g->ip_id = bpf_ntohs(ip->id);
	}
	st->held = 1;
	return 0;
}

/*
 * Whether the outer checksum of the output to port counts g's checksum
 * left partial as the device will fill it in (local checksum offload),
 * else as the bytes are. STT's header can leave it to the receiver, and
 * must when the device passes the skb on as it is (a veth): the outer
 * checksum then covers the seed. When the device fills it in
 * (device_completes), the STT header says it is complete (stt_flags_of).
 */
static __always_inline __u8 seg_lco(struct __sk_buff *skb, const struct seg_state *g,
				    const struct wr_port *port)
{
	if (!g->partial)
		return 0;
	return port->proto != WR_PROTO_STT || device_completes(skb);
}

/*
 * Sends the GSO packet of the output st is doing, whose outer header
 * build_outer made, as segments: each but the last as a clone, the last
 * through output_done (the packet itself when this is the flow's last
 * output). Clones cannot wait for neighbour resolution: the FIB must know
 * the next hop's MAC. Returns a TC verdict, or -1 to go on.
 */
__noinline long segment_output(struct __sk_buff *skb, const struct frame_info *fi,
			       struct exec_state *st)
{
	__u32 zero = 0, room;
	struct seg_state *g = bpf_map_lookup_elem(&wr_seg, &zero);
	struct scratch *s = bpf_map_lookup_elem(&wr_scratch, &zero);
	struct tx_buf *tx = tx_buf();
	struct skb_arg a = { skb };
	struct encap_out *out;
	struct wr_port *port;
	int r = 0;

	if (!g || !s || !tx || !fi || !st)
		return TC_ACT_SHOT;
	out = &s->out;
	if (out->neigh)
		r = WR_DROP_NO_NEIGH;
	else if (!st->held)
		r = seg_hold(skb, fi, st, g, tx);
	port = bpf_map_lookup_elem(&wr_ports, &st->port_no);
	if (!r && !port)
		r = WR_DROP_NO_PORT;
	if (!r) {
		g->hlen = out->hdr_len;
		g->port_no = st->port_no;
		g->lco = seg_lco(skb, g, port);
		g->failed = 0;
		/* Room for this output's outer header in front of the frame,
		 * where the skb's checksum state expects the frame to be. */
		room = st->tk_done ? st->out_hdr_len : 0;
		if (room != g->hlen &&
		    bpf_skb_adjust_room(skb, (__s32)g->hlen - (__s32)room, BPF_ADJ_ROOM_MAC,
					BPF_F_ADJ_ROOM_FIXED_GSO))
			r = WR_DROP_ENCAP;
	}
	if (!r) {
		/* From here on the skb holds a segment, whatever happens. */
		st->tk_done = 1;
		st->out_hdr_len = g->hlen;
		bpf_loop(g->nseg, seg_step, &a, 0);
		if (g->failed)
			r = WR_DROP_ENCAP;
		else
			stat_inc(WR_STAT_GSO_SEGMENTED);
	}
	return output_done(skb, st, out, g->hlen, r);
}

#endif /* WR_GSO_H */
