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
	if (r != TUN_OK) {
		drop(r, d.in_port);
		return XDP_DROP;
	}

	/* Trim Ethernet padding past the IP packet, then strip the outer headers. */
	len = bpf_xdp_get_buff_len(ctx);
	if (len > d.l3_end && bpf_xdp_adjust_tail(ctx, -(int)(len - d.l3_end))) {
		drop(WR_DROP_DECAP, d.in_port);
		return XDP_DROP;
	}
	if (bpf_xdp_adjust_head(ctx, d.outer_len)) {
		drop(WR_DROP_DECAP, d.in_port);
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

/* Classifies and acts on a frame whose tunnel fields l->key already holds.
 * A global function, shared by both TC programs and verified once. */
__noinline long finish_at_tc(struct __sk_buff *skb, struct lookup *l, int tunnel)
{
	struct wr_flow_key *key;
	struct packet p;
	struct frame_info fi = {};
	struct wr_flow_entry *e;
	struct wr_config *cfg;

	if (!l)
		return TC_ACT_SHOT;
	key = &l->key;
	/* Headers the parser reads must be in the linear part. */
	if (skb->data_end - skb->data < 128 && skb->len > skb->data_end - skb->data)
		bpf_skb_pull_data(skb, skb->len < 128 ? skb->len : 128);
	p.data = (void *)(long)skb->data;
	p.end = (void *)(long)skb->data_end;
	if (parse_frame(&p, key, &fi) < 0) {
		drop(WR_DROP_TRUNCATED, key->in_port);
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

SEC("tc")
int wr_tc_underlay(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	struct wr_meta *m = (void *)(long)skb->data_meta;
	struct lookup *l = lookup_scratch();
	struct wr_config *cfg;
	struct decap d = {};
	struct packet p;
	int r;

	if (!l)
		return TC_ACT_OK;
	if ((void *)(m + 1) <= data && m->magic == WR_META_MAGIC) {
		key_from_meta(&l->key, m);
		return finish_at_tc(skb, l, 1);
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
	p.data = (void *)(long)skb->data;
	p.end = (void *)(long)skb->data_end;
	r = parse_tunnel_skb(skb, &l->key, &d);
	if (r == TUN_NOT_OURS) {
		stat_inc(WR_STAT_NOT_OURS);
		return TC_ACT_OK;
	}
	if (r == TUN_FRAGMENT) {
		stat_inc(WR_STAT_FRAGMENT);
		return TC_ACT_OK;
	}
	if (r != TUN_OK) {
		drop(r, d.in_port);
		return TC_ACT_SHOT;
	}
	/* Strip everything from the outer IP header to the inner Ethernet
	 * header, then put the inner Ethernet header where the outer was. */
	{
		struct ethhdr inner;
		__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO;
		__u32 pad;
		int outer_v6 = !!(l->key.tun_flags & WR_TUNF_V6);

		if (skb->len > d.l3_end && bpf_skb_change_tail(skb, d.l3_end, 0)) {
			drop(WR_DROP_DECAP, d.in_port);
			return TC_ACT_SHOT;
		}
		if (bpf_skb_load_bytes(skb, d.outer_len, &inner, sizeof(inner)))
			goto fail;
		/* Tell the kernel when the inner IP version differs (Linux 6.3). */
		if (inner.h_proto == bpf_htons(ETH_P_IPV6) && !outer_v6)
			flags |= WR_ADJ_ROOM_DECAP_L3_IPV6;
		else if (inner.h_proto == bpf_htons(ETH_P_IP) && outer_v6)
			flags |= WR_ADJ_ROOM_DECAP_L3_IPV4;
		/* The kernel will not shrink below one header of the outer
		 * family (40 bytes for IPv6): pad a shorter frame (ARP) for
		 * the shrink and trim it back after. */
		pad = sizeof(struct ethhdr) + (outer_v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr));
		pad = skb->len - d.outer_len < pad ? pad - (skb->len - d.outer_len) : 0;
		if (pad && bpf_skb_change_tail(skb, skb->len + pad, 0))
			goto fail;
		if (bpf_skb_adjust_room(skb, -(int)d.outer_len, BPF_ADJ_ROOM_MAC, flags) ||
		    bpf_skb_store_bytes(skb, 0, &inner, sizeof(inner), 0))
			goto fail;
		if (pad && bpf_skb_change_tail(skb, skb->len - pad, 0))
			goto fail;
	}
	stat_inc(WR_STAT_DECAP);
	stat_inc(WR_STAT_TC_DECAP);
	port_rx(d.in_port, skb->len);
	p.data = (void *)(long)skb->data;
	p.end = (void *)(long)skb->data_end;
	{
		/* The ECN decision needs the inner header; finish_at_tc parses
		 * again after it, and only the IP fields change. */
		struct frame_info fi = {};

		if (parse_frame(&p, &l->key, &fi) == 0 &&
		    ecn_decap(&p, fi.l3_off, fi.ip_version, d.outer_ecn, &l->key) < 0) {
			drop(WR_DROP_ECN, d.in_port);
			return TC_ACT_SHOT;
		}
	}
	return finish_at_tc(skb, l, 1);
fail:
	drop(WR_DROP_DECAP, d.in_port);
	return TC_ACT_SHOT;
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
