/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Decapsulation: recognising a tunnel packet addressed to one of our
 * endpoints, and stripping its outer headers. parse_tunnel reads the outer
 * IP header and UDP, GRE or TCP with the parsers of parse.h, then the
 * VXLAN, Geneve or GRE header (or hands an STT segment to stt_rx.h),
 * every length and flag checked; the result fills the tunnel half of a
 * flow key and a struct decap. xdp_decap and tc_decap then strip the outer
 * headers at either hook.
 */
#ifndef WR_DECAP_H
#define WR_DECAP_H

#include "csum.h"
#include "maps.h"
#include "parse.h"
#include "stt_rx.h"
#include "tunnel.h"

/* The packet's length, non-linear part included. */
static __always_inline __u32 frame_len(void *ctx, int is_xdp)
{
	/* Loads of their own, that the compiler does not merge with the
	 * program's (which would narrow how it keeps the packet pointers). */
	if (is_xdp && ablated(ABL_BUFLEN))
		return *(volatile __u32 *)&((struct xdp_md *)ctx)->data_end -
		       *(volatile __u32 *)&((struct xdp_md *)ctx)->data;
	if (is_xdp)
		return bpf_xdp_get_buff_len(ctx);
	return ((struct __sk_buff *)ctx)->len;
}

/* Whether addr is one of our endpoints on any protocol or port. */
static __always_inline int is_endpoint_addr(const __u8 *addr, int v6)
{
	struct wr_endpoint_key ek = { .v6 = v6 };

	addr_copy(ek.addr, addr);
	return bpf_map_lookup_elem(&wr_endpoints, &ek) != NULL;
}

/* Malformed: a drop if addressed to us, someone else's problem otherwise. */
static __always_inline int malformed(const __u8 *dst, int v6, int reason)
{
	return is_endpoint_addr(dst, v6) ? reason : TUN_NOT_OURS;
}

struct gnv_walk {
	void *ctx;
	struct wr_flow_key *key;
	__u32 off;		/* next option */
	__u32 end;		/* end of the options */
	__u32 index;
	int verdict;		/* TUN_OK or a WR_DROP_* reason */
};

/* One Geneve option per bpf_loop step, read through the load helpers. */
static __always_inline long gnv_step(struct gnv_walk *w, int is_xdp)
{
	struct {
		struct geneve_opt hdr;
		__u8 data[8];
	} o = {};
	__u32 olen, id;
	long err;

	if (w->off >= w->end)
		return 1;
	if (w->off + sizeof(o.hdr) > w->end) {
		w->verdict = WR_DROP_GENEVE_OPTLEN;
		return 1;
	}
	err = is_xdp ? bpf_xdp_load_bytes(w->ctx, w->off, &o.hdr, sizeof(o.hdr)) :
		       bpf_skb_load_bytes(w->ctx, w->off, &o.hdr, sizeof(o.hdr));
	if (err) {
		w->verdict = WR_DROP_GENEVE_OPTLEN;
		return 1;
	}
	olen = sizeof(o.hdr) + (o.hdr.len & 0x1f) * 4;
	if (w->off + olen > w->end) {
		w->verdict = WR_DROP_GENEVE_OPTLEN;
		return 1;
	}
	if (w->index == 0) {
		/* Data lengths are whole words: 0, 4, or 8 and more. */
		__u32 n = olen - sizeof(o.hdr) >= 8 ? 8 : olen - sizeof(o.hdr);

		w->key->gnv_class = o.hdr.class;
		w->key->gnv_type = o.hdr.type;
		w->key->gnv_len = olen - sizeof(o.hdr);
		if (n == 8 || n == 4) {
			err = is_xdp ? bpf_xdp_load_bytes(w->ctx, w->off + sizeof(o.hdr), o.data, n) :
				       bpf_skb_load_bytes(w->ctx, w->off + sizeof(o.hdr), o.data, n);
			if (err) {
				w->verdict = WR_DROP_GENEVE_OPTLEN;
				return 1;
			}
			__builtin_memcpy(w->key->gnv_data, o.data, sizeof(o.data));
		}
	}
	if (o.hdr.type & 0x80) {
		id = (bpf_ntohs(o.hdr.class) << 8) | o.hdr.type;
		if (!bpf_map_lookup_elem(&wr_geneve_known, &id)) {
			w->verdict = WR_DROP_GENEVE_CRITICAL;
			return 1;
		}
	}
	w->off += olen;
	w->index++;
	return 0;
}

static long gnv_step_xdp(__u32 i, void *arg)
{
	return gnv_step(arg, 1);
}

static long gnv_step_skb(__u32 i, void *arg)
{
	return gnv_step(arg, 0);
}

static __always_inline int parse_geneve(void *ctx, int is_xdp, struct packet *p, struct cursor *c,
					__u32 l3_end_off, struct wr_flow_key *key, struct decap *d)
{
	struct genevehdr *gh = c->pos;
	struct gnv_walk w = { .ctx = ctx, .key = key };
	__u32 optlen;

	if ((void *)(gh + 1) > c->end)
		return WR_DROP_TRUNCATED;
	if (gh->ver_optlen >> 6)
		return WR_DROP_GENEVE_VERSION;
	if (gh->proto != bpf_htons(ETH_P_TEB))
		return WR_DROP_PAYLOAD;
	optlen = (gh->ver_optlen & 0x3f) * 4;
	w.off = (void *)(gh + 1) - p->data;
	w.end = w.off + optlen;
	if (w.end > l3_end_off)
		return WR_DROP_GENEVE_OPTLEN;
	key->tun_id = bpf_cpu_to_be64(bpf_ntohl(gh->vni) >> 8);
	key->tun_flags |= WR_TUNF_KEY;
	if (gh->flags & GENEVE_O)
		key->tun_flags |= WR_TUNF_OAM;
	if (optlen) {
		bpf_loop(GENEVE_MAX_OPTS, is_xdp ? gnv_step_xdp : gnv_step_skb, &w, 0);
		if (w.verdict)
			return w.verdict;
		/* Options we did not walk may hide a critical one the C bit announces. */
		if (w.off < w.end && (gh->flags & GENEVE_C))
			return WR_DROP_GENEVE_CRITICAL;
	}
	d->outer_len = w.end;
	return TUN_OK;
}

static __always_inline int parse_gre(void *ctx, int is_xdp, struct packet *p, struct cursor *c,
				     __u32 l3_end_off, struct wr_flow_key *key, struct decap *d)
{
	struct grehdr *g = c->pos;
	__u16 flags;
	__u32 off = c->pos - p->data;
	__u32 *field;

	if ((void *)(g + 1) > c->end)
		return WR_DROP_TRUNCATED;
	flags = bpf_ntohs(g->flags);
	if (flags & GRE_VERSION)
		return WR_DROP_GRE_VERSION;
	if (flags & GRE_UNSUPPORTED)
		return WR_DROP_GRE_FLAGS;
	if (g->proto != bpf_htons(ETH_P_TEB))
		return WR_DROP_PAYLOAD;
	field = (__u32 *)(g + 1);
	if (flags & GRE_C) {
		__s64 sum;

		if ((void *)(field + 1) > c->end)
			return WR_DROP_TRUNCATED;
		if (!csum_trusted(ctx, is_xdp)) {
			sum = packet_sum(ctx, is_xdp, off, l3_end_off);
			if (sum < 0 || csum_fold32(sum) != 0xffff)
				return is_xdp ? TUN_RECHECK : WR_DROP_BAD_CSUM;
		}
		key->tun_flags |= WR_TUNF_CSUM;
		field++;
	}
	if (flags & GRE_K) {
		if ((void *)(field + 1) > c->end)
			return WR_DROP_TRUNCATED;
		key->tun_id = bpf_cpu_to_be64(bpf_ntohl(*field));
		key->tun_flags |= WR_TUNF_KEY;
	}
	/* The length as a number: pointer arithmetic here compiles to 32-bit
	 * operations the verifier refuses. */
	d->outer_len = off + sizeof(*g) + ((flags & GRE_C) ? 4 : 0) + ((flags & GRE_K) ? 4 : 0) +
		       ((flags & GRE_S) ? 4 : 0);
	return TUN_OK;
}

static __always_inline int endpoint_keys_equal(const struct wr_endpoint_key *a,
					       const struct wr_endpoint_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return !((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]));
}

/*
 * Resolves endpoint ek (the packet's outer destination, protocol and
 * port), for a packet from key->tun_src, into *tp. Returns 0, or -1 when
 * ek is none of our endpoints.
 *
 * The endpoint's hash lookup is most of what resolving costs, and a host's
 * tunnel packets mostly arrive on one endpoint: so each CPU keeps the last
 * answer (memo), valid only while the configuration's change counter is
 * the one it was made under, as the flow cache's slots are (classify.h).
 * Every change of endpoints, remotes or ports moves the counter once
 * written (port_registry.ts), so a memo outlives no change. Not kept while
 * a change is under way, in trace's dry run, or for an endpoint whose
 * ports have fixed remotes (the port depends on the packet's source).
 */
static __always_inline int resolve_port(const struct wr_endpoint_key *ek,
					const struct wr_flow_key *key, struct tun_memo *memo,
					struct tun_port *tp)
{
	struct wr_config *cfg = config();
	struct wr_endpoint *ep;
	struct wr_port *port;
	__u64 tag = 0;
	__u32 port_no;

	/* Read before the maps: a change that lands after this read leaves
	 * the memo made now stale once it moves the counter. */
	if (cfg && !wr_dry_run && !(cfg->flags & WR_CFG_WRITING))
		tag = cfg->seq + 1;
	if (tag && memo->tag == tag && endpoint_keys_equal(&memo->ek, ek)) {
		*tp = memo->tp;
		return 0;
	}
	ep = bpf_map_lookup_elem(&wr_endpoints, ek);
	if (!ep)
		return -1;
	__builtin_memset(tp, 0, sizeof(*tp));
	tp->proto = ep->proto;
	port_no = ep->port;
	if (ep->fixed_remotes) {
		struct wr_remote_key rk = { .ep = *ek };
		__u32 *fixed;

		addr_copy(rk.remote, key->tun_src);
		fixed = bpf_map_lookup_elem(&wr_remotes, &rk);
		if (fixed)
			port_no = *fixed;
		tag = 0;
	}
	port = bpf_map_lookup_elem(&wr_ports, &port_no);
	if (port_no && port && port->kind == WR_PORT_TUNNEL) {
		tp->port = port_no;
		tp->flags = port->flags;
		tp->key_in = port->key_in;
		tp->net = port->net;
	}
	if (tag) {
		memo->tag = tag;
		memo->ek = *ek;
		memo->tp = *tp;
	}
	return 0;
}

/* Whether an IP protocol can carry one of our tunnels: UDP (VXLAN,
 * Geneve), GRE, or TCP (STT). */
static __always_inline int tunnel_ipproto(__u8 proto)
{
	return proto == IPPROTO_UDP || proto == IPPROTO_GRE || proto == IPPROTO_TCP;
}

/*
 * Decides whether the frame at p is a tunnel packet for one of our ports
 * and fills key's tunnel fields and in_port. Returns TUN_OK, TUN_NOT_OURS,
 * TUN_FRAGMENT, or the WR_DROP_* reason to drop it for.
 */
static __always_inline int parse_tunnel(void *ctx, int is_xdp, struct packet *p,
					struct wr_flow_key *key, struct decap *d, struct tun_memo *memo)
{
	struct cursor c = cursor_of(p);
	struct wr_endpoint_key ek = {};
	struct tun_port tp;
	struct ethhdr *eth;
	__u32 len = frame_len(ctx, is_xdp);
	__u32 l4_off, l3_end;
	int v6, r, next;

	d->len = len;
	next = parse_ethhdr(&c, &eth);
	if (next < 0)
		return TUN_NOT_OURS;

	if (next == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip;
		__u32 ihl, tot;

		next = parse_iphdr(&c, &ip);
		if (next == PARSE_SHORT || !tunnel_ipproto(ip->protocol))
			return TUN_NOT_OURS;
		v6 = 0;
		addr_set4(ek.addr, ip->daddr);
		ihl = ip->ihl * 4;
		tot = bpf_ntohs(ip->tot_len);
		if (next == PARSE_BAD || ip->version != 4 || tot < ihl || sizeof(*eth) + tot > len)
			return malformed(ek.addr, 0, WR_DROP_BAD_IP);
		if (ipv4_is_fragment(ip))
			return TUN_FRAGMENT;
		if (ihl == sizeof(*ip)) {
			if (!ablated(ABL_CSUM) && ipv4_header_csum(ip) != 0)
				return malformed(ek.addr, 0, WR_DROP_BAD_CSUM);
		} else {
			__s64 sum = packet_sum(ctx, is_xdp, sizeof(*eth), sizeof(*eth) + ihl);

			if (sum < 0 || csum_fold32(sum) != 0xffff)
				return malformed(ek.addr, 0, WR_DROP_BAD_CSUM);
		}
		ek.ipproto = ip->protocol;
		key->tun_tos = ip->tos;
		key->tun_ttl = ip->ttl;
		d->outer_ecn = ip->tos & ECN_MASK;
		if (ip->frag_off & bpf_htons(IP_DF))
			key->tun_flags |= WR_TUNF_DF;
		addr_set4(key->tun_src, ip->saddr);
		addr_set4(key->tun_dst, ip->daddr);
		l4_off = sizeof(*eth) + ihl;
		l3_end = sizeof(*eth) + tot;
	} else if (next == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6;
		__u32 plen;
		__u8 frag;

		next = parse_ip6hdr(&c, &ip6);
		if (next < 0)
			return TUN_NOT_OURS;
		v6 = 1;
		addr_copy(ek.addr, ip6->daddr.in6_u.u6_addr8);
		/* Hop-by-hop, destination options and routing headers are
		 * skipped; a fragment header means a fragment. */
		r = parse_ip6_exts(&c, next, &ek.ipproto, &frag, 1);
		if (r < 0)
			return TUN_NOT_OURS;
		if (r)
			return tunnel_ipproto(ek.ipproto) ? TUN_FRAGMENT : TUN_NOT_OURS;
		if (!tunnel_ipproto(ek.ipproto))
			return TUN_NOT_OURS;
		plen = bpf_ntohs(ip6->payload_len);
		if (sizeof(*eth) + sizeof(*ip6) + plen > len ||
		    c.pos - p->data > sizeof(*eth) + sizeof(*ip6) + plen)
			return malformed(ek.addr, 1, WR_DROP_BAD_IP);
		ek.v6 = 1;
		key->tun_tos = ipv6_tclass(ip6);
		key->tun_ttl = ip6->hop_limit;
		key->tun_flags |= WR_TUNF_V6;
		d->outer_ecn = key->tun_tos & ECN_MASK;
		addr_copy(key->tun_src, ip6->saddr.in6_u.u6_addr8);
		addr_copy(key->tun_dst, ip6->daddr.in6_u.u6_addr8);
		l4_off = c.pos - p->data;
		l3_end = sizeof(*eth) + sizeof(*ip6) + plen;
	} else {
		return TUN_NOT_OURS;
	}

	/* The verifier only tracks packet pointers with a small variable
	 * offset; IPv4 options and usual IPv6 extension chains stay below. */
	if (l4_off > 255)
		return TUN_NOT_OURS;
	c.pos = p->data + l4_off;
	if (ek.ipproto == IPPROTO_UDP) {
		struct udphdr *uh;
		int ulen = parse_udphdr(&c, &uh);

		if (ulen < 0)
			return malformed(ek.addr, v6, WR_DROP_BAD_UDP);
		ek.dst_port = uh->dest;
		if (resolve_port(&ek, key, memo, &tp))
			return TUN_NOT_OURS;
		if (ulen < sizeof(*uh) || l4_off + ulen > l3_end)
			return WR_DROP_BAD_UDP;
		l3_end = l4_off + ulen;
		if (uh->check) {
			if (!csum_trusted(ctx, is_xdp)) {
				__s64 sum = packet_sum(ctx, is_xdp, l4_off, l3_end);

				if (sum < 0)
					return WR_DROP_BAD_UDP;
				sum += pseudo_sum(key->tun_src, key->tun_dst, v6, ulen, IPPROTO_UDP);
				if (csum_fold32(sum) != 0xffff)
					return is_xdp ? TUN_RECHECK : WR_DROP_BAD_CSUM;
			}
			key->tun_flags |= WR_TUNF_CSUM;
		}
		d->l3_end = l3_end;
		if (tp.proto == WR_PROTO_VXLAN) {
			struct vxlanhdr *vh;

			if (parse_vxlanhdr(&c, &vh) < 0)
				return WR_DROP_TRUNCATED;
			if (!(vh->flags & VXLAN_I))
				return WR_DROP_VXLAN_FLAGS;
			key->tun_id = bpf_cpu_to_be64(bpf_ntohl(vh->vni) >> 8);
			key->tun_flags |= WR_TUNF_KEY;
			d->outer_len = c.pos - p->data;
			r = TUN_OK;
		} else if (tp.proto == WR_PROTO_GENEVE) {
			r = parse_geneve(ctx, is_xdp, p, &c, l3_end, key, d);
		} else {
			return TUN_NOT_OURS;
		}
	} else if (ek.ipproto == IPPROTO_TCP) {
		struct tcphdr *th;

		/* Only STT's port on one of our endpoints is ours: every other
		 * TCP connection of the host passes untouched. */
		if (parse_tcphdr(&c, &th) == PARSE_SHORT)
			return TUN_NOT_OURS;
		ek.dst_port = th->dest;
		if (resolve_port(&ek, key, memo, &tp) || tp.proto != WR_PROTO_STT)
			return TUN_NOT_OURS;
		r = parse_stt(ctx, is_xdp, l4_off, l3_end, v6, key, d);
	} else {
		ek.dst_port = 0;
		if (resolve_port(&ek, key, memo, &tp) || tp.proto != WR_PROTO_GRE)
			return TUN_NOT_OURS;
		d->l3_end = l3_end;
		r = parse_gre(ctx, is_xdp, p, &c, l3_end, key, d);
	}
	if (r != TUN_OK && r != TUN_STT_SEGMENT)
		return r;
	d->proto = tp.proto;
	if (!tp.port)
		return WR_DROP_NO_PORT;
	d->in_port = tp.port;
	key->in_port = tp.port;
	key->tun_flags |= WR_TUNF_PRESENT;
	/* A segment's key is in the frame's first segment: checked once whole. */
	if (r == TUN_STT_SEGMENT)
		return r;
	if (!(tp.flags & WR_PORTF_KEY_IN_FLOW) && key->tun_id != tp.key_in)
		return WR_DROP_KEY_MISMATCH;
	if (d->outer_len + sizeof(struct ethhdr) > d->l3_end)
		return WR_DROP_TRUNCATED;
	key->net = port_net(tp.flags, tp.net, key);
	return TUN_OK;
}

/*
 * parse_tunnel for each program type, as global functions: the verifier
 * checks each once, on its own, instead of once per path that reaches it.
 * (Global functions cannot take packet pointers; they derive them.)
 */
__noinline int parse_tunnel_xdp(struct xdp_md *ctx, struct wr_flow_key *key, struct decap *d,
				struct tun_memo *memo)
{
	struct packet p = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };

	if (!key || !d || !memo)
		return TUN_NOT_OURS;
	return parse_tunnel(ctx, 1, &p, key, d, memo);
}

__noinline int parse_tunnel_skb(struct __sk_buff *skb, struct wr_flow_key *key, struct decap *d,
				struct tun_memo *memo)
{
	struct packet p = { (void *)(long)skb->data, (void *)(long)skb->data_end };

	if (!key || !d || !memo)
		return TUN_NOT_OURS;
	return parse_tunnel(skb, 0, &p, key, d, memo);
}

/*
 * Strips at XDP the outer headers of the tunnel packet d describes, and
 * Ethernet padding past its IP packet, then does what STT's header asks of
 * a frame that arrived whole; d->len becomes the inner frame's length.
 * Returns 0 or the WR_DROP_* reason.
 */
static __always_inline int xdp_decap(struct xdp_md *ctx, struct decap *d)
{
	__u32 len = d->len, strip = d->outer_len - stt_tag_room(d);

	if (len > d->l3_end) {
		if (bpf_xdp_adjust_tail(ctx, -(int)(len - d->l3_end)))
			return WR_DROP_DECAP;
		len = d->l3_end;
	}
	if (bpf_xdp_adjust_head(ctx, strip))
		return WR_DROP_DECAP;
	d->len = len - strip;
	if (d->proto == WR_PROTO_STT && stt_fixup_xdp(ctx, d))
		return WR_DROP_STT;
	return 0;
}

/*
 * Strips the outer headers (everything from the outer IP header to the
 * inner Ethernet header) of the tunnel packet d describes at TC, puts the
 * inner Ethernet header where the outer was, and does what STT's header
 * asks of a frame that arrived whole. Returns 0, or the WR_DROP_* reason.
 */
__noinline int tc_decap(struct __sk_buff *skb, const struct decap *d, __u32 outer_v6)
{
	struct ethhdr inner;
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO;
	__u32 pad;

	if (!d)
		return WR_DROP_DECAP;
	/* A tag the kernel took off the outer frame goes with the outer
	 * headers: the skb's tag must be the inner frame's (parse_inner_skb). */
	if (skb->vlan_present && bpf_skb_vlan_pop(skb))
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
	/* The kernel will not shrink the packet below one network header:
	 * of the inner family when the flags name it, else of the outer one
	 * (40 bytes for IPv6). Pad a shorter frame (ARP) for the shrink and
	 * trim it back after. Only then: bpf_skb_change_tail refuses an skb
	 * the sender's encapsulation left marked (a veth keeps the mark), so
	 * a short IP frame padded needlessly was dropped. */
	pad = sizeof(struct ethhdr) +
	      ((flags & WR_ADJ_ROOM_DECAP_L3_IPV4) ? sizeof(struct iphdr) :
	       (flags & WR_ADJ_ROOM_DECAP_L3_IPV6) || outer_v6 ? sizeof(struct ipv6hdr) :
								   sizeof(struct iphdr));
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

#endif /* WR_DECAP_H */
