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
#include "decap.h"
#include "parse.h"
#include "pkt_cache.h"
#include "stt_rx.h"
#include "tunnel.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("xdp")
int wr_xdp_underlay(struct xdp_md *ctx)
{
	struct packet p = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };
	struct wr_stat_block *c = counters();
	struct frame_info fi;
	struct decap d;
	struct wr_flow_key *key;
	struct wr_flow_entry *e;
	struct wr_config *cfg;
	struct wr_meta *m;
	struct lookup *l;
	__u32 len;
	int r;

	if (!c && !uncounted())
		return XDP_PASS;
	r = pkt_fast_path(ctx, c);
	if (r >= 0)
		return r;
	/* Zeroed here, not where declared: the hit path above needs neither. */
	__builtin_memset(&fi, 0, sizeof(fi));
	__builtin_memset(&d, 0, sizeof(d));
	l = scratch_as_left();
	if (!l)
		return XDP_PASS;
	lookup_reset(l);
	key = &l->key;
	r = parse_tunnel_xdp(ctx, key, &d, &l->memo);
	if (r == TUN_NOT_OURS) {
		bump(c, WR_STAT_NOT_OURS);
		return XDP_PASS;
	}
	if (r == TUN_FRAGMENT) {
		bump(c, WR_STAT_FRAGMENT);
		return XDP_PASS;
	}
	if (r == TUN_RECHECK) {
		/* TC knows whether the checksum is still to be filled in. */
		__u32 *magic = xdp_meta_push(ctx, sizeof(*magic));

		if (magic) {
			*magic = WR_META_RECHECK;
			return XDP_PASS;
		}
		drop(WR_DROP_BAD_CSUM, d.in_port);
		return XDP_DROP;
	}
	if (r == TUN_STT_SEGMENT)
		return stt_segment_xdp(ctx, &d, key);
	if (r != TUN_OK) {
		drop(r, d.in_port);
		return XDP_DROP;
	}

	r = xdp_decap(ctx, &d);
	if (r) {
		drop(r, d.in_port);
		return XDP_DROP;
	}
	bump(c, WR_STAT_DECAP);
	p.data = (void *)(long)ctx->data;
	p.end = (void *)(long)ctx->data_end;
	len = d.len;
	port_rx(d.in_port, len);

	if (parse_frame(&p, key, &fi) < 0) {
		drop(WR_DROP_TRUNCATED, d.in_port);
		return XDP_DROP;
	}
	if (ecn_decap(&p, fi.l3_off, fi.ip_version, d.outer_ecn, key) < 0) {
		drop(WR_DROP_ECN, d.in_port);
		return XDP_DROP;
	}

	/* parse_tunnel stamped the network of the port it found. */
	e = classify(key, l, c);
	if (!e) {
		cfg = config();
		if (cfg && cfg->miss_tunnel == WR_MISS_PASS) {
			bump(c, WR_STAT_MISS_PASS);
			return XDP_PASS;
		}
		drop(WR_DROP_NO_FLOW, d.in_port);
		return XDP_DROP;
	}
	if (e->n_actions == 1 && e->actions[0].op == WR_ACT_DROP) {
		pkt_fill(l, &d, e->flow_id, 0, fi.tcp_flags);
		flow_hit(e, len, fi.tcp_flags);
		drop(WR_DROP_ACTION, d.in_port);
		return XDP_DROP;
	}
	/* A frame bigger than one page came from GRO/GSO: the skb path keeps
	 * its segmentation, an XDP redirect would not. */
	if ((e->flags & WR_FLOWF_LOCAL_XDP) && len == (__u32)(p.end - p.data)) {
		__u32 out = e->actions[0].port;

		if (xdp_redirect_port(out) == XDP_REDIRECT) {
			pkt_fill(l, &d, e->flow_id, out, fi.tcp_flags);
			flow_hit(e, len, fi.tcp_flags);
			port_tx(out, len);
			bump(c, WR_STAT_XDP_REDIRECT);
			return XDP_REDIRECT;
		}
	}

	/* Everything else finishes at TC, with the tunnel key carried in the
	 * metadata, and the flow found, which TC takes unless the
	 * configuration changed in between. */
	m = xdp_meta_push(ctx, sizeof(*m));
	if (m) {
		meta_from_key(m, key);
		m->flow_slot = l->hint_slot;
		m->flow_id = l->hint_flow;
		m->seq = l->hint_seq;
		bump(c, WR_STAT_XDP_PASS);
		return XDP_PASS;
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

/* Classifies and acts on a frame whose tunnel fields l->key already holds.
 * A global function, shared by both TC programs and verified once. */
__noinline long finish_at_tc(struct __sk_buff *skb, struct lookup *l, __u32 how)
{
	struct wr_flow_entry *e;
	int pass;

	if (!l)
		return TC_ACT_SHOT;
	__builtin_memset(&l->fi, 0, sizeof(l->fi));
	e = frame_flow(skb, l, &l->fi, how >> 4, how & FIN_TUNNEL, &pass);
	if (!e)
		return pass ? TC_ACT_OK : TC_ACT_SHOT;
	if (e->actions[0].op == WR_ACT_GROUP)
		return exec_group(skb, e->actions[0].arg, l);
	return exec_actions(skb, e, &l->key, &l->fi);
}

SEC("tc")
int wr_tc_underlay(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	struct wr_meta *m = (void *)(long)skb->data_meta;
	struct lookup *l = lookup_scratch();
	struct wr_stat_block *c;
	struct wr_config *cfg;
	struct decap *dp;
	__u32 zero = 0, slot, id, ecn;
	long r;

	dp = bpf_map_lookup_elem(&wr_scratch_decap, &zero);
	if (!l || !dp)
		return TC_ACT_OK;
	__builtin_memset(dp, 0, sizeof(*dp));
	if ((void *)(m + 1) <= data && m->magic == WR_META_MAGIC) {
		key_from_meta(&l->key, m);
		l->hint_slot = m->flow_slot;
		l->hint_flow = m->flow_id;
		l->hint_seq = m->seq;
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
	r = parse_tunnel_skb(skb, &l->key, dp, &l->memo);
	if (r == TUN_NOT_OURS) {
		stat_inc(WR_STAT_NOT_OURS);
		return TC_ACT_OK;
	}
	if (r == TUN_FRAGMENT) {
		stat_inc(WR_STAT_FRAGMENT);
		return TC_ACT_OK;
	}
	if (r == TUN_STT_SEGMENT) {
		r = stt_segment_skb(skb, dp, &l->key);
		if (r < 0)
			return TC_ACT_SHOT;
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
	c = counters();
	bump(c, WR_STAT_DECAP);
	bump(c, WR_STAT_TC_DECAP);
	port_rx(dp->in_port, skb->len);
	return finish_at_tc(skb, l, FIN_TUNNEL | FIN_ECN(dp->outer_ecn));

stt:
	/* A reassembled STT frame: its segments go through the flow table. */
	l = stt_deliver(skb, l, slot, id, &ecn);
	if (!l)
		return TC_ACT_SHOT;
	return finish_at_tc(skb, l, FIN_TUNNEL | FIN_ECN(ecn));
}

SEC("tc")
int wr_tc_local(struct __sk_buff *skb)
{
	__u32 port = ifindex_port(skb->ifindex);
	struct lookup *l;

	if (!port)
		return TC_ACT_OK;
	l = lookup_scratch();
	if (!l)
		return TC_ACT_OK;
	l->key.in_port = port;
	port_rx(port, skb->len);
	return finish_at_tc(skb, l, 0);
}
