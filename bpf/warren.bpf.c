// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * warren's datapath: flow-based tunneling.
 *
 *   wr_xdp_underlay  XDP on the underlay device. Recognises tunnel packets
 *                    for our endpoints, validates them, decapsulates and
 *                    classifies. Finishes what it can (redirect to an
 *                    XDP-capable local port, drop); hands the rest to TC
 *                    with the tunnel key in the packet's metadata.
 *   wr_tc_underlay   TC ingress on the underlay. Runs the flow of a packet
 *                    XDP handed over, matching on the tunnel key from the
 *                    metadata; without XDP it decapsulates by itself.
 *   wr_tc_local      TC ingress on local ports (the host side of workload
 *                    veths). Classifies and encapsulates.
 */
#include "actions.h"
#include "classify.h"
#include "parse.h"
#include "stt.h"
#include "tunnel.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Flow key fields that come from the tunnel, from metadata or decap. */
static __always_inline void key_from_meta(struct wr_flow_key *key, const struct wr_meta *m)
{
	key->in_port = m->in_port;
	key->tun_flags = m->tun_flags;
	key->tun_tos = m->tun_tos;
	key->tun_ttl = m->tun_ttl;
	key->tun_id = m->tun_id;
	addr_copy(key->tun_src, m->tun_src);
	addr_copy(key->tun_dst, m->tun_dst);
	key->gnv_class = m->gnv_class;
	key->gnv_type = m->gnv_type;
	key->gnv_len = m->gnv_len;
	__builtin_memcpy(key->gnv_data, m->gnv_data, sizeof(key->gnv_data));
}

static __always_inline void meta_from_key(struct wr_meta *m, const struct wr_flow_key *key)
{
	m->magic = WR_META_MAGIC;
	m->in_port = key->in_port;
	m->tun_flags = key->tun_flags;
	m->tun_tos = key->tun_tos;
	m->tun_ttl = key->tun_ttl;
	m->tun_id = key->tun_id;
	addr_copy(m->tun_src, key->tun_src);
	addr_copy(m->tun_dst, key->tun_dst);
	m->gnv_class = key->gnv_class;
	m->gnv_type = key->gnv_type;
	m->gnv_len = key->gnv_len;
	__builtin_memcpy(m->gnv_data, key->gnv_data, sizeof(m->gnv_data));
}

SEC("xdp")
int wr_xdp_underlay(struct xdp_md *ctx)
{
	struct packet p = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };
	struct lookup *l = lookup_scratch();
	struct frame_info fi = {};
	struct decap d = {};
	struct wr_flow_key *key;
	struct wr_flow_entry *e;
	struct wr_config *cfg;
	__u32 len;
	int r;

	if (!l)
		return XDP_PASS;
	key = &l->key;
	r = parse_tunnel_xdp(ctx, key, &d);
	if (r == TUN_NOT_OURS) {
		stat_inc(WR_STAT_NOT_OURS);
		return XDP_PASS;
	}
	if (r == TUN_FRAGMENT) {
		stat_inc(WR_STAT_FRAGMENT);
		return XDP_PASS;
	}
	if (r == TUN_RECHECK) {
		/* TC knows whether the checksum is still to be filled in. */
		if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(__u32)) == 0) {
			__u32 *m = (void *)(long)ctx->data_meta;

			if ((void *)(m + 1) <= (void *)(long)ctx->data) {
				*m = WR_META_RECHECK;
				return XDP_PASS;
			}
		}
		drop(WR_DROP_BAD_CSUM, d.in_port);
		return XDP_DROP;
	}
	if (r == TUN_STT_SEGMENT) {
		/* Kept for reassembly; the segment that completes its frame
		 * goes up to TC, which delivers the frame from its slot. */
		long slot = stt_reassemble_xdp(ctx, &d, key);

		if (slot == STT_CONSUMED)
			return XDP_DROP;
		if (slot < 0) {
			drop(-slot, d.in_port);
			return XDP_DROP;
		}
		if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct wr_meta)) == 0) {
			struct wr_meta *m = (void *)(long)ctx->data_meta;

			if ((void *)(m + 1) <= (void *)(long)ctx->data) {
				meta_from_key(m, key);
				m->magic = WR_META_STT;
				m->stt_slot = slot;
				m->stt_id = d.stt_id;
				return XDP_PASS;
			}
		}
		stt_release(slot);
		drop(WR_DROP_DECAP, d.in_port);
		return XDP_DROP;
	}
	if (r != TUN_OK) {
		drop(r, d.in_port);
		return XDP_DROP;
	}

	/* Trim Ethernet padding past the IP packet, then strip the outer
	 * headers (all but four bytes when STT's VLAN tag goes back in). */
	len = bpf_xdp_get_buff_len(ctx);
	if (len > d.l3_end && bpf_xdp_adjust_tail(ctx, -(int)(len - d.l3_end))) {
		drop(WR_DROP_DECAP, d.in_port);
		return XDP_DROP;
	}
	if (d.proto == WR_PROTO_STT && (d.stt_vlan & STT_VLAN_V))
		d.outer_len -= sizeof(struct vlan_hdr);
	if (bpf_xdp_adjust_head(ctx, d.outer_len)) {
		drop(WR_DROP_DECAP, d.in_port);
		return XDP_DROP;
	}
	if (d.proto == WR_PROTO_STT && stt_fixup_xdp(ctx, &d)) {
		drop(WR_DROP_STT, d.in_port);
		return XDP_DROP;
	}
	stat_inc(WR_STAT_DECAP);
	p.data = (void *)(long)ctx->data;
	p.end = (void *)(long)ctx->data_end;
	len = bpf_xdp_get_buff_len(ctx);
	port_rx(d.in_port, len);

	if (parse_frame(&p, key, &fi) < 0) {
		drop(WR_DROP_TRUNCATED, d.in_port);
		return XDP_DROP;
	}
	if (ecn_decap(&p, fi.l3_off, fi.ip_version, d.outer_ecn, key) < 0) {
		drop(WR_DROP_ECN, d.in_port);
		return XDP_DROP;
	}

	e = classify(key, l);
	if (!e) {
		cfg = config();
		if (cfg && cfg->miss_tunnel == WR_MISS_PASS) {
			stat_inc(WR_STAT_MISS_PASS);
			return XDP_PASS;
		}
		drop(WR_DROP_NO_FLOW, d.in_port);
		return XDP_DROP;
	}
	if (e->n_actions == 1 && e->actions[0].op == WR_ACT_DROP) {
		flow_hit(e, len, fi.tcp_flags);
		drop(WR_DROP_ACTION, d.in_port);
		return XDP_DROP;
	}
	/* A frame bigger than one page came from GRO/GSO: the skb path keeps
	 * its segmentation, an XDP redirect would not. */
	if ((e->flags & WR_FLOWF_LOCAL_XDP) && len == (__u32)(p.end - p.data)) {
		__u32 out = e->actions[0].port;
		struct wr_port *port = bpf_map_lookup_elem(&wr_ports, &out);

		if (port && port->kind == WR_PORT_LOCAL) {
			flow_hit(e, len, fi.tcp_flags);
			port_tx(out, len);
			stat_inc(WR_STAT_XDP_REDIRECT);
			return bpf_redirect(port->ifindex, 0);
		}
	}

	/* Everything else finishes at TC, which matches again with the tunnel
	 * key carried in the metadata. */
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct wr_meta)) == 0) {
		struct wr_meta *m = (void *)(long)ctx->data_meta;

		if ((void *)(m + 1) <= (void *)(long)ctx->data) {
			meta_from_key(m, key);
			stat_inc(WR_STAT_XDP_PASS);
			return XDP_PASS;
		}
	}
	drop(WR_DROP_DECAP, d.in_port);
	return XDP_DROP;
}

/* The decapsulation state of wr_tc_underlay: off its stack, which the
 * calls below it need. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct decap);
} wr_scratch_decap SEC(".maps");

/* finish_at_tc's `how`: */
#define FIN_TUNNEL 0x01		/* the frame came out of a tunnel */
#define FIN_ECN(outer) ((((outer) & ECN_MASK) + 1) << 4)	/* RFC 6040 with this outer ECN */

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
	if (parse_frame(&p, key, fi) < 0)
		return WR_DROP_TRUNCATED;
	if (ecn && ecn_decap(&p, fi->l3_off, fi->ip_version, ecn - 1, key) < 0)
		return WR_DROP_ECN;
	return 0;
}

/* Classifies and acts on a frame whose tunnel fields l->key already holds.
 * A global function, shared by both TC programs and verified once. */
__noinline long finish_at_tc(struct __sk_buff *skb, struct lookup *l, __u32 how)
{
	int tunnel = how & FIN_TUNNEL;
	struct wr_flow_key *key;
	struct frame_info fi = {};
	struct wr_flow_entry *e;
	struct wr_config *cfg;
	int r;

	if (!l)
		return TC_ACT_SHOT;
	key = &l->key;
	r = parse_inner_skb(skb, key, &fi, how >> 4);
	if (r) {
		drop(r, key->in_port);
		return TC_ACT_SHOT;
	}
	e = classify(key, l);
	if (!e) {
		cfg = config();
		if (cfg && (tunnel ? cfg->miss_tunnel : cfg->miss_local) == WR_MISS_PASS) {
			stat_inc(WR_STAT_MISS_PASS);
			return TC_ACT_OK;
		}
		drop(WR_DROP_NO_FLOW, key->in_port);
		return TC_ACT_SHOT;
	}
	flow_hit(e, skb->len, fi.tcp_flags);
	return exec_actions(skb, e, key, &fi);
}

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
 * that would send it into another tunnel drops it (counted), which keeps
 * this path shallow enough for the verifier's stack.
 */
__noinline long finish_clone_at_tc(struct __sk_buff *skb, struct lookup *l, __u32 outer_ecn)
{
	struct wr_flow_key *key;
	struct frame_info fi = {};
	struct wr_flow_entry *e;
	struct wr_config *cfg;
	__u32 n;
	int r;

	if (!l)
		return TC_ACT_SHOT;
	key = &l->key;
	r = parse_inner_skb(skb, key, &fi, (outer_ecn & ECN_MASK) + 1);
	if (r) {
		drop(r, key->in_port);
		return TC_ACT_SHOT;
	}
	e = classify(key, l);
	if (!e) {
		cfg = config();
		if (cfg && cfg->miss_tunnel == WR_MISS_PASS) {
			stat_inc(WR_STAT_MISS_PASS);
			bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS);
			return TC_ACT_OK;
		}
		drop(WR_DROP_NO_FLOW, key->in_port);
		return TC_ACT_SHOT;
	}
	flow_hit(e, skb->len, fi.tcp_flags);
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
			drop(WR_DROP_ENCAP, key->in_port);
			break;
		}
	}
	return TC_ACT_OK;
}

struct skb_arg {
	struct __sk_buff *skb;
};

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
 * Strips the outer headers (everything from the outer IP header to the
 * inner Ethernet header) of the tunnel packet d describes, puts the inner
 * Ethernet header where the outer was, and applies STT's header. Returns
 * 0, or the WR_DROP_* reason.
 */
__noinline int tc_decap(struct __sk_buff *skb, const struct decap *d, __u32 outer_v6)
{
	struct ethhdr inner;
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO;
	__u32 pad;

	if (!d)
		return WR_DROP_DECAP;
	if (skb->len > d->l3_end && bpf_skb_change_tail(skb, d->l3_end, 0))
		return WR_DROP_DECAP;
	if (bpf_skb_load_bytes(skb, d->outer_len, &inner, sizeof(inner)))
		return WR_DROP_DECAP;
	/* Tell the kernel when the inner IP version differs (Linux 6.3). */
	if (inner.h_proto == bpf_htons(ETH_P_IPV6) && !outer_v6)
		flags |= WR_ADJ_ROOM_DECAP_L3_IPV6;
	else if (inner.h_proto == bpf_htons(ETH_P_IP) && outer_v6)
		flags |= WR_ADJ_ROOM_DECAP_L3_IPV4;
	/* The kernel will not shrink below one header of the outer family
	 * (40 bytes for IPv6): pad a shorter frame (ARP) for the shrink and
	 * trim it back after. */
	pad = sizeof(struct ethhdr) + (outer_v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr));
	pad = skb->len - d->outer_len < pad ? pad - (skb->len - d->outer_len) : 0;
	if (pad && bpf_skb_change_tail(skb, skb->len + pad, 0))
		return WR_DROP_DECAP;
	if (bpf_skb_adjust_room(skb, -(int)d->outer_len, BPF_ADJ_ROOM_MAC, flags) ||
	    bpf_skb_store_bytes(skb, 0, &inner, sizeof(inner), 0))
		return WR_DROP_DECAP;
	if (pad && bpf_skb_change_tail(skb, skb->len - pad, 0))
		return WR_DROP_DECAP;
	if (d->proto == WR_PROTO_STT && stt_fixup_skb(skb, d))
		return WR_DROP_STT;
	return 0;
}

SEC("tc")
int wr_tc_underlay(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	struct wr_meta *m = (void *)(long)skb->data_meta;
	struct lookup *l = lookup_scratch();
	struct wr_config *cfg;
	struct decap *dp;
	__u32 zero = 0, slot, id;
	long r;

	dp = bpf_map_lookup_elem(&wr_scratch_decap, &zero);
	if (!l || !dp)
		return TC_ACT_OK;
	__builtin_memset(dp, 0, sizeof(*dp));
	if ((void *)(m + 1) <= data && m->magic == WR_META_MAGIC) {
		key_from_meta(&l->key, m);
		return finish_at_tc(skb, l, FIN_TUNNEL);
	}
	if ((void *)(m + 1) <= data && m->magic == WR_META_STT) {
		slot = m->stt_slot;
		id = m->stt_id;
		key_from_meta(&l->key, m);
		goto stt;
	}
	/* With XDP on this device, anything left here is not a tunnel packet
	 * for us (XDP already said so, and counted it), unless XDP asks for
	 * the checksum to be judged here. */
	cfg = config();
	if (!cfg)
		return TC_ACT_OK;
	if ((cfg->flags & WR_CFG_XDP_UNDERLAY) && skb->mark != WR_TRACE_MARK &&
	    !((void *)m + sizeof(__u32) <= data && m->magic == WR_META_RECHECK))
		return TC_ACT_OK;

	if (skb->data_end - skb->data < 256 && skb->len > skb->data_end - skb->data)
		bpf_skb_pull_data(skb, skb->len < 256 ? skb->len : 256);
	r = parse_tunnel_skb(skb, &l->key, dp);
	if (r == TUN_NOT_OURS) {
		stat_inc(WR_STAT_NOT_OURS);
		return TC_ACT_OK;
	}
	if (r == TUN_FRAGMENT) {
		stat_inc(WR_STAT_FRAGMENT);
		return TC_ACT_OK;
	}
	if (r == TUN_STT_SEGMENT) {
		r = stt_reassemble_skb(skb, dp, &l->key);
		if (r == STT_CONSUMED)
			return TC_ACT_SHOT;
		if (r < 0) {
			drop(-r, dp->in_port);
			return TC_ACT_SHOT;
		}
		slot = r;
		id = dp->stt_id;
		goto stt;
	}
	if (r != TUN_OK) {
		drop(r, dp->in_port);
		return TC_ACT_SHOT;
	}
	r = tc_decap(skb, dp, !!(l->key.tun_flags & WR_TUNF_V6));
	if (r) {
		drop(r, dp->in_port);
		return TC_ACT_SHOT;
	}
	stat_inc(WR_STAT_DECAP);
	stat_inc(WR_STAT_TC_DECAP);
	port_rx(dp->in_port, skb->len);
	return finish_at_tc(skb, l, FIN_TUNNEL | FIN_ECN(dp->outer_ecn));

stt:
	/* A reassembled STT frame: every segment but the last goes out as a
	 * clone, then the skb itself. Driven from here, the top frame: the
	 * actions below need all the stack there is. */
	r = stt_emit_begin(l, slot, id);
	if (!r)
		return TC_ACT_SHOT;
	if (r > 1) {
		struct skb_arg a = { skb };

		bpf_loop(r - 1, stt_emit_step, &a, 0);
	}
	l = lookup_scratch();
	if (!l || stt_emit_last(skb, l))
		return TC_ACT_SHOT;
	return finish_at_tc(skb, l, FIN_TUNNEL | FIN_ECN(stt_emit_ecn()));
}

SEC("tc")
int wr_tc_local(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	__u32 *port = bpf_map_lookup_elem(&wr_ifindex_ports, &ifindex);
	struct lookup *l;

	if (!port)
		return TC_ACT_OK;
	l = lookup_scratch();
	if (!l)
		return TC_ACT_OK;
	l->key.in_port = *port;
	port_rx(*port, skb->len);
	return finish_at_tc(skb, l, 0);
}
