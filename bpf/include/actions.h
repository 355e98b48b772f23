/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Carrying out a flow's actions at TC.
 *
 * The control plane has already ordered them (see warren.h): rewrites
 * (rewrite.h) and outputs to local ports first, in the order written, each
 * output a clone of the packet as rewritten so far; then tunnel outputs:
 * the packet is encapsulated once and, for each further remote (head-end
 * replication), its outer header is rewritten in place. The action marked
 * last takes the packet itself. Nothing is counted or sorted here, which
 * keeps the verifier's work small.
 */
#ifndef WR_ACTIONS_H
#define WR_ACTIONS_H

#include "classify.h"
#include "encap.h"
#include "gso.h"
#include "icmp.h"
#include "rewrite.h"
#include "stt_tx.h"

#define TCP_MSS_OPT_MAX 40

struct mss_walk {
	__u8 opts[TCP_MSS_OPT_MAX];
	__u32 i;		/* next option */
	__u32 n;		/* option bytes */
	__u32 found;		/* offset of the MSS value, or 0 */
	__u32 pad;
};

/* One TCP option per bpf_loop step: stops at the end, at EOL, at a broken
 * length, or at the MSS option (kind 2, length 4). */
static long mss_step(__u32 step, void *arg)
{
	struct mss_walk *w = arg;
	__u32 i = w->i;
	__u8 kind, len;

	if (i >= w->n || i >= TCP_MSS_OPT_MAX - 1)
		return 1;
	kind = w->opts[i];
	if (kind == 0)
		return 1;
	if (kind == 1) {
		w->i = i + 1;
		return 0;
	}
	len = w->opts[i + 1];
	if (len < 2)
		return 1;
	if (kind == 2 && len == 4 && i + 4 <= w->n) {
		w->found = i + 2;
		return 1;
	}
	w->i = i + len;
	return 0;
}

/* Lowers the MSS option of a TCP SYN to `mss` if it is larger; returns 1
 * when it did. A global function: verified once, not at every call site. */
__noinline int clamp_mss(struct __sk_buff *skb, const struct frame_info *fi, __u16 mss)
{
	struct mss_walk w = {};
	__u32 off, at;
	__be16 old, new;

	if (!fi || !(fi->tcp_flags & 0x02) || fi->l4_hlen <= sizeof(struct tcphdr))
		return 0;
	off = fi->l4_off + sizeof(struct tcphdr);
	w.n = fi->l4_hlen - sizeof(struct tcphdr);
	if (w.n > TCP_MSS_OPT_MAX || off > 0xffff)
		return 0;
	if (bpf_skb_load_bytes(skb, off, w.opts, w.n))
		return 0;
	bpf_loop(TCP_MSS_OPT_MAX, mss_step, &w, 0);
	at = w.found;
	if (!at || at > TCP_MSS_OPT_MAX - 2)
		return 0;
	if (((w.opts[at] << 8) | w.opts[at + 1]) <= mss)
		return 0;
	old = *(__be16 *)&w.opts[at];
	new = bpf_htons(mss);
	if (bpf_skb_store_bytes(skb, off + at, &new, 2, 0))
		return 0;
	/* With a checksum left to the device (CHECKSUM_PARTIAL) the helper
	 * knows not to touch it. */
	bpf_l4_csum_replace(skb, fi->l4_off + offsetof(struct tcphdr, check), old, new, 2);
	stat_inc(WR_STAT_MSS_CLAMPED);
	return 1;
}

/*
 * Fills in the outer UDP or GRE checksum of a freshly encapsulated packet
 * whose frame, as fi describes it, starts hdr_len bytes in: after the outer
 * header and the tag the kernel held aside, if the frame now carries it. A
 * global function; returns 0, or -1 when the checksum is left out.
 *
 * An inner TCP/UDP checksum still to be filled in (CHECKSUM_PARTIAL) holds
 * only the inner pseudo-header sum; once filled in, the inner L4 segment
 * sums to the complement of that, so the outer sum is the bytes up to the
 * inner L4 header plus that complement (local checksum offload, as the
 * kernel computes it). Otherwise the outer sum covers the bytes as they are.
 * GSO packets never come here: the kernel cannot checksum BPF-built tunnels
 * per segment, so they leave another way (gso.h).
 */
__noinline int outer_csum(struct __sk_buff *skb, const struct frame_info *fi, __u32 hdr_len, __u32 v6,
			  __u32 proto)
{
	__u32 l4 = sizeof(struct ethhdr) + (v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr));
	__u32 field = proto == WR_PROTO_GRE ? l4 + 4 : l4 + 6;
	__u32 zero = 0, len = skb->len, inner_l4 = 0;
	struct scratch *s = bpf_map_lookup_elem(&wr_scratch, &zero);
	__s64 sum;
	__u16 check;

	if (!fi || !s || skb->gso_segs > 1 || skb->gso_size || hdr_len > OUTER_MAX || hdr_len <= l4)
		return -1;
	if (skb_ip_summed(skb) == CHECKSUM_PARTIAL &&
	    (fi->ip_proto_l4 == IPPROTO_TCP || fi->ip_proto_l4 == IPPROTO_UDP)) {
		inner_l4 = hdr_len + fi->l4_off;
		if (inner_l4 > 512)
			return -1;
	}
	sum = tx_sum(skb, l4, inner_l4, inner_l4 + (fi->ip_proto_l4 == IPPROTO_TCP ? 16 : 6));
	if (sum < 0)
		return -1;
	if (proto == WR_PROTO_GRE) {
		check = ~csum_fold32(sum);
	} else {
		__u8 *ip = s->hdr + sizeof(struct ethhdr);

		if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), ip, v6 ? 40 : 20))
			return -1;
		sum += v6 ? pseudo_sum(ip + 8, ip + 24, 1, len - l4, IPPROTO_UDP) :
			    pseudo_sum(ip + 12, ip + 16, 0, len - l4, IPPROTO_UDP);
		check = ~csum_fold32(sum);
		/* UDP sends a computed 0 as all ones (0 means "no checksum"). */
		if (check == 0)
			check = 0xffff;
	}
	return bpf_skb_store_bytes(skb, field, &check, 2, 0) ? -1 : 0;
}

/* Whether the frame, encapsulated with hdr_len more bytes, exceeds mtu. */
static __always_inline int too_big(struct __sk_buff *skb, const struct frame_info *fi, __u32 hdr_len,
				   __u32 mtu)
{
	__u32 l3 = skb->len - sizeof(struct ethhdr) + hdr_len;

	if (skb->gso_segs > 1 || skb->gso_size) {
		/* Each segment carries its own headers. */
		l3 = skb->gso_size + fi->l4_off + fi->l4_hlen - sizeof(struct ethhdr) + hdr_len;
	}
	return l3 > mtu;
}

/*
 * One tunnel output. Returns a TC verdict when the packet is finished with
 * (its last output, or turned into ICMP), -1 to go on, or OUTPUT_SEGMENT
 * for a GSO packet the caller must segment (gso.h).
 */
__noinline long tunnel_output(struct __sk_buff *skb, const struct frame_info *fi,
			      const struct wr_flow_key *key, struct exec_state *st)
{
	struct encap_out *out;
	struct wr_port *port;
	struct scratch *s;
	__u32 zero = 0, port_no, grow;
	int last, r;

	if (!fi || !key || !st)
		return TC_ACT_SHOT;
	port_no = st->port_no;
	last = st->last;
	port = bpf_map_lookup_elem(&wr_ports, &port_no);
	s = bpf_map_lookup_elem(&wr_scratch, &zero);
	if (!port || !s || port->kind != WR_PORT_TUNNEL) {
		drop(WR_DROP_NO_PORT, st->in_port);
		return last ? TC_ACT_SHOT : -1;
	}
	out = &s->out;
	r = build_outer(skb, fi, key, st, out);
	if (!r && port->proto == WR_PROTO_STT)
		/* Only a UDP GSO packet's datagrams come this way (stt_datagrams):
		 * one STT segment each. */
		r = stt_fill_hdr(skb, fi, st, device_completes(skb));
	/* What the frame grows by: the outer headers, and its tag if the
	 * kernel holds it aside. */
	grow = out->hdr_len + st->tag;
	if (!r) {
		__u32 mtu = path_mtu(skb, out);

		if (!st->tk_done && mtu && too_big(skb, fi, grow, mtu)) {
			/* IPv4 without DF could be fragmented, but not here. */
			if (last && (fi->ip_version == 6 || fi->ipv4_df) &&
			    !icmp_too_big(skb, fi, mtu - grow)) {
				drop(WR_DROP_TOO_BIG, st->in_port);
				stat_inc(WR_STAT_ICMP_SENT);
				return bpf_redirect(skb->ifindex, 0);
			}
			r = WR_DROP_TOO_BIG;
		}
	}
	if (!r && (port->flags & WR_PORTF_MSS_CLAMP) && !st->tk_done && key->ip_proto == IPPROTO_TCP) {
		__u32 mtu = path_mtu(skb, out);
		__u32 ip = fi->ip_version == 6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);

		/* The inner Ethernet header takes the place of the outer one. */
		if (mtu > grow + ip + sizeof(struct tcphdr))
			clamp_mss(skb, fi, mtu - grow - ip - sizeof(struct tcphdr));
	}
	if (!r) {
		switch (gso_path(st, port, out)) {
		case GSO_DEVICE:
			return device_output(skb, st, port->gso_ifindex);
		case GSO_SEGMENT:
			/* STT's header carries the tag (stt_fill_hdr), and the
			 * segments must not carry it outside. */
			if (port->proto == WR_PROTO_STT && skb->vlan_present)
				bpf_skb_vlan_pop(skb);
			return OUTPUT_SEGMENT;
		}
		if (!st->tk_done) {
			r = encap_push(skb, s, out, port->proto, fi);
			st->inner_tag |= st->tag;
		} else if (out->hdr_len != st->out_hdr_len) {
			/* A replica with a longer or shorter outer header cannot be
			 * made from the same encapsulated packet. */
			r = WR_DROP_ENCAP;
		} else {
			__u32 len = out->hdr_len;

			if (len < sizeof(struct ethhdr) || len > OUTER_MAX)
				r = WR_DROP_ENCAP;
			/* A no-op mask: the verifier needs the bound on this very value. */
			else if (bpf_skb_store_bytes(skb, 0, s->hdr,
						     sizeof(struct ethhdr) + ((len - sizeof(struct ethhdr)) & 0x7f), 0))
				r = WR_DROP_ENCAP;
		}
	}
	if (!r && out->csum)
		outer_csum(skb, fi, out->hdr_len + st->inner_tag, out->v6, port->proto);
	return output_done(skb, st, out, out->hdr_len, r);
}

/* Carries out action a, the last output when st->last says so. Returns a
 * TC verdict when the packet is finished with, -1 to go on, or
 * OUTPUT_SEGMENT (tunnel_output). */
static __always_inline long output_one(struct __sk_buff *skb, const struct wr_action *a,
				       const struct wr_flow_key *key, const struct frame_info *fi,
				       struct exec_state *st)
{
	struct wr_port *port;
	__u32 p;
	int last;

	if (!a || !key || !fi || !st)
		return TC_ACT_SHOT;
	last = st->last;
	p = a->port;
	switch (a->op) {
	case WR_ACT_DROP:
		drop(WR_DROP_ACTION, st->in_port);
		return TC_ACT_SHOT;
	case WR_ACT_PASS:
		return TC_ACT_OK;
	case WR_ACT_OUTPUT:
		port = bpf_map_lookup_elem(&wr_ports, &p);
		if (!port || port->kind != WR_PORT_LOCAL || !port->ifindex) {
			drop(WR_DROP_NO_PORT, st->in_port);
			return last ? TC_ACT_SHOT : -1;
		}
		port_tx(p, skb->len);
		if (last)
			return bpf_redirect(port->ifindex, 0);
		if (bpf_clone_redirect(skb, port->ifindex, 0))
			drop(WR_DROP_NO_PORT, st->in_port);
		return -1;
	case WR_ACT_TUNNEL:
		st->port_no = p;
		st->tk_idx = a->arg;
		port = bpf_map_lookup_elem(&wr_ports, &p);
		if (port && port->proto == WR_PROTO_STT && !stt_datagrams(st, fi))
			return stt_output(skb, fi, key, st);
		return tunnel_output(skb, fi, key, st);
	}
	return -1;
}

/* One of a flow's actions, as a global function: the verifier checks one
 * action once instead of every sequence of eight. in_port is an output to
 * the port the packet came in on, which is dropped unless that is local;
 * any other output there is skipped, as Open vSwitch skips it, unless
 * load:0->in_port came before it (WR_ACTF_HAIRPIN). A skipped last output
 * finishes the packet, a drop if no copy of it went anywhere. key is the
 * lookup's own (see exec_actions), so rewrites update it. */
__noinline long exec_one(struct __sk_buff *skb, const struct wr_action *a, struct wr_flow_key *key,
			 struct frame_info *fi, struct exec_state *st)
{
	struct wr_action out;

	if (!a || !st)
		return TC_ACT_SHOT;
	if (a->op >= WR_ACT_SET_ETH_SRC)
		return rewrite(skb, a, key, fi, st->in_port);
	out = *a;
	if (out.op == WR_ACT_IN_PORT) {
		out.op = WR_ACT_OUTPUT;
		out.port = st->in_port;
	} else if ((out.op == WR_ACT_OUTPUT || out.op == WR_ACT_TUNNEL) &&
		   out.port == st->in_port && !(out.flags & WR_ACTF_HAIRPIN)) {
		if (!st->last)
			return -1;
		if (!st->sent)
			drop(WR_DROP_IN_PORT, st->in_port);
		return TC_ACT_SHOT;
	}
	st->sent = 1;
	return output_one(skb, &out, key, fi, st);
}

/* The state of the actions being carried out: in a map, off the stack,
 * which the calls below need (a program runs once at a time per CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_state);
} wr_scratch_exec SEC(".maps");

/* ---- Replication groups -------------------------------------------------- */

/* A group's walk over its buckets, per CPU like the state above. */
struct group_walk {
	__u32 first;		/* the group's first bucket in wr_buckets */
	__u32 last;		/* the packet's last bucket, from first */
	__u32 len;		/* the frame's length, for the counters */
	__u32 segment;		/* a GSO packet some bucket must segment (gso_scan_step) */
	long verdict;		/* once the last bucket is done, or -1 */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct group_walk);
} wr_scratch_group SEC(".maps");

/* Bucket i, for a GSO packet: the walk must segment it when this bucket
 * has to (stops the scan then). */
static long gso_scan_step(__u32 i, void *arg)
{
	__u32 zero = 0, b;
	struct group_walk *w = bpf_map_lookup_elem(&wr_scratch_group, &zero);
	const struct wr_action *a;
	__u8 rank;

	if (!w)
		return 1;
	b = w->first + i;
	a = bpf_map_lookup_elem(&wr_buckets, &b);
	if (!a)
		return 1;
	rank = gso_rank(a);
	if (rank == 1 || rank == 2)
		w->segment = 1;
	return w->segment ? 1 : 0;
}

/* segment_output for a group's walk, with the state it keeps per CPU. */
static __noinline long group_segment(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct exec_state *st = bpf_map_lookup_elem(&wr_scratch_exec, &zero);
	struct lookup *l = bpf_map_lookup_elem(&wr_scratch_lookup, &zero);

	if (!st || !l)
		return TC_ACT_SHOT;
	return segment_output(skb, &l->fi, st);
}

/* Bucket i of the walk: skipped when it is the packet's own port (split
 * horizon), else counted and carried out like a flow's output (inline:
 * one call frame less under the callback, for the verifier's stack). */
static long group_step(__u32 i, void *arg)
{
	struct __sk_buff *skb = ((struct skb_arg *)arg)->skb;
	__u32 zero = 0, b;
	struct group_walk *w = bpf_map_lookup_elem(&wr_scratch_group, &zero);
	struct exec_state *st = bpf_map_lookup_elem(&wr_scratch_exec, &zero);
	struct lookup *l = bpf_map_lookup_elem(&wr_scratch_lookup, &zero);
	const struct wr_action *a;
	long verdict;

	if (!w || !st || !l)
		return 1;
	b = w->first + i;
	a = bpf_map_lookup_elem(&wr_buckets, &b);
	if (!a)
		return 1;
	if (a->port == st->in_port)
		return 0;
	group_count(bpf_map_lookup_elem(&wr_bucket_stats, &b), w->len);
	st->last = i == w->last;
	verdict = output_one(skb, a, &l->key, &l->fi, st);
	if (verdict == OUTPUT_SEGMENT)
		verdict = group_segment(skb);
	if (verdict < 0)
		return 0;
	/* Looked up again, not kept across the output: the verifier's stack
	 * limit leaves this callback's frame no room for another spill. */
	w = bpf_map_lookup_elem(&wr_scratch_group, &zero);
	if (w)
		w->verdict = verdict;
	return 1;
}

/*
 * Sends a copy of the frame in l (its key and frame_info parsed) to each
 * bucket of group gid: local ports first, each a clone of the untouched
 * frame, then tunnels, encapsulated once and re-addressed for each, as a
 * flow's own outputs are. Never back out of the port it came in on, never
 * from a tunnel into a tunnel (split horizon). The packet itself goes to
 * its last bucket. Returns the TC verdict. A global function beside
 * exec_actions, not under it: the walk's callback and the outputs under it
 * need the stack a call frame takes.
 */
__noinline long exec_group(struct __sk_buff *skb, __u32 gid, struct lookup *l)
{
	__u32 *slot = bpf_map_lookup_elem(&wr_group_slots, &gid);
	__u32 zero = 0, first, n, b, s;
	struct group_walk *w = bpf_map_lookup_elem(&wr_scratch_group, &zero);
	struct exec_state *st = bpf_map_lookup_elem(&wr_scratch_exec, &zero);
	struct skb_arg arg = { skb };
	const struct wr_bucket_list *list;
	const struct wr_action *a;
	struct wr_group *g;

	if (!w || !st || !l)
		return TC_ACT_SHOT;
	exec_begin(st, skb, l->key.in_port);
	s = slot ? *slot : 0;
	g = slot ? bpf_map_lookup_elem(&wr_groups, &s) : NULL;
	if (!g) {
		drop(WR_DROP_NO_GROUP, st->in_port);
		return TC_ACT_SHOT;
	}
	group_count(bpf_map_lookup_elem(&wr_group_stats, &s), skb->len);
	/* The live list, chosen once: a change writes the other one and only
	 * then flips `live`, and never touches a list a packet may walk. */
	list = &g->lists[*(volatile __u32 *)&g->live & 1];
	first = list->first;
	n = (l->key.tun_flags & WR_TUNF_PRESENT) ? list->n_local : list->n_buckets;
	if (n > WR_MAX_GROUP_BUCKETS)
		n = WR_MAX_GROUP_BUCKETS;
	/* A local port is in one bucket at most: when the last is the
	 * packet's own, the one before is its last, and the walk stops there. */
	b = first + n - 1;
	a = n ? bpf_map_lookup_elem(&wr_buckets, &b) : NULL;
	if (a && a->port == st->in_port)
		n--;
	if (!n) {
		drop(WR_DROP_GROUP_EMPTY, st->in_port);
		return TC_ACT_SHOT;
	}
	w->first = first;
	w->last = n - 1;
	w->len = skb->len;
	w->verdict = -1;
	/* A GSO packet: the buckets run in their order, not gso_order's, so
	 * if one tunnel must segment it, all do (gso_path). */
	if (st->gso_size) {
		w->segment = 0;
		bpf_loop(n, gso_scan_step, &arg, 0);
		st->segment = w->segment;
	}
	bpf_loop(n, group_step, &arg, 0);
	if (w->verdict >= 0)
		return w->verdict;
	drop(WR_DROP_GROUP_EMPTY, st->in_port);
	return TC_ACT_SHOT;
}

/* Carries out e's actions on skb. Returns the TC verdict. key and fi are
 * the lookup's, which rewrites change as they change the packet. */
__noinline long exec_actions(struct __sk_buff *skb, const struct wr_flow_entry *e,
			     struct wr_flow_key *key, struct frame_info *fi)
{
	__u32 zero = 0, n;
	struct exec_state *st = bpf_map_lookup_elem(&wr_scratch_exec, &zero);

	if (!e || !key || !fi || !st)
		return TC_ACT_SHOT;
	exec_begin(st, skb, key->in_port);
	n = e->n_actions;
	if (st->gso_size && n > 1 && gso_order(e, st))
		return TC_ACT_SHOT;
	for (__u32 i = 0; i < WR_MAX_ACTIONS && i < n; i++) {
		long verdict;

		verdict = exec_one(skb, exec_pick(e, st, i), key, fi, st);
		if (verdict == OUTPUT_SEGMENT)
			verdict = segment_output(skb, fi, st);
		if (verdict >= 0)
			return verdict;
	}
	/* No actions at all: Open vSwitch's meaning is drop. */
	drop(WR_DROP_ACTION, st->in_port);
	return TC_ACT_SHOT;
}

#endif /* WR_ACTIONS_H */
