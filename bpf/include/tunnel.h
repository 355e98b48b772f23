/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Tunnel headers on the wire, and recognising a tunnel packet addressed to
 * one of our endpoints: outer IP, UDP or GRE, then the VXLAN (RFC 7348),
 * Geneve (RFC 8926) or GRE (RFC 2784/2890) header, every length and flag
 * checked. The result fills the tunnel half of a flow key.
 */
#ifndef WR_TUNNEL_H
#define WR_TUNNEL_H

#include "csum.h"
#include "maps.h"
#include "parse.h"

struct vxlanhdr {
	__be32 flags;		/* I flag: 0x08000000 */
	__be32 vni;		/* VNI << 8 */
};
#define VXLAN_I bpf_htonl(0x08000000)

/* VXLAN: returns 0 or PARSE_SHORT (see parse.h for the convention). */
static __always_inline int parse_vxlanhdr(struct cursor *c, struct vxlanhdr **vh)
{
	struct vxlanhdr *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return PARSE_SHORT;
	c->pos = h + 1;
	*vh = h;
	return 0;
}

struct genevehdr {
	__u8 ver_optlen;	/* version (2 bits), option length in words (6) */
	__u8 flags;		/* O (0x80), C (0x40) */
	__be16 proto;
	__be32 vni;		/* VNI << 8 */
};
#define GENEVE_O 0x80
#define GENEVE_C 0x40

struct geneve_opt {
	__be16 class;
	__u8 type;		/* critical when 0x80 is set */
	__u8 len;		/* data length in words (5 bits) */
};
#define GENEVE_MAX_OPTS 8

struct grehdr {
	__be16 flags;
	__be16 proto;
};
#define GRE_C 0x8000
#define GRE_K 0x2000
#define GRE_S 0x1000
#define GRE_VERSION 0x0007
/* Routing, strict source route, recursion and the reserved flags. */
#define GRE_UNSUPPORTED 0x4ff8

/* STT (draft-davie-stt-08): the header after the fake TCP header, on the
 * first segment of a frame only. */
struct stt_hdr {
	__u8 version;
	__u8 flags;		/* STT_F_* */
	__u8 l4_off;		/* inner L4 header, from the inner Ethernet header */
	__u8 reserved;
	__be16 mss;		/* the inner packet's MSS, for resegmenting */
	__be16 vlan_tci;	/* PCP, V (STT_VLAN_V), VID */
	__be64 context;		/* the tunnel key */
	__be16 pad;		/* aligns the inner IP header */
} __attribute__((packed));
#define STT_F_CSUM_VERIFIED 0x01
#define STT_F_CSUM_PARTIAL 0x02	/* the inner L4 checksum holds only its pseudo-header sum */
#define STT_F_IPV4 0x04
#define STT_F_TCP 0x08
#define STT_F_RESERVED 0xf0
#define STT_VLAN_V 0x1000

/* Verdicts of parse_tunnel besides a WR_DROP_* reason (> 0). */
#define TUN_OK 0
#define TUN_NOT_OURS -1
#define TUN_FRAGMENT -2
#define TUN_RECHECK -3	/* XDP: outer checksum unverified, let TC decide */
#define TUN_STT_SEGMENT -4	/* one segment of an STT frame: reassemble */

/* What decapsulation needs beyond the flow key. */
struct decap {
	__u16 outer_len;	/* bytes before the inner Ethernet header */
	__u16 l3_end;		/* where the outer IP packet ends */
	__u8 outer_ecn;
	__u8 proto;		/* enum wr_proto */
	__u16 in_port;
	/* STT */
	__u16 stt_payload;	/* where the segment's share of the frame starts */
	__u16 stt_seg_len;	/* its length */
	__u16 stt_seg_off;	/* its offset in the frame */
	__u16 stt_total;	/* the frame's length */
	__u32 stt_id;		/* the frame's identifier (TCP acknowledgement) */
	__u16 stt_sport;
	__u8 stt_flags;		/* STT_F_*, of a whole frame */
	__u8 stt_l4off;
	__u16 stt_vlan;		/* host order, V bit included */
	__u16 pad;
};

static __always_inline __u32 frame_len(void *ctx, int is_xdp, struct packet *p)
{
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
					struct wr_flow_key *key, struct decap *d)
{
	struct cursor c = cursor_of(p);
	struct wr_endpoint_key ek = {};
	struct wr_endpoint *ep;
	struct wr_port *port;
	struct ethhdr *eth;
	__u32 len = frame_len(ctx, is_xdp, p);
	__u32 l4_off, l3_end;
	__u32 port_no;
	int v6, r, next;

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
			if (ipv4_header_csum(ip) != 0)
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
		ep = bpf_map_lookup_elem(&wr_endpoints, &ek);
		if (!ep)
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
		if (ep->proto == WR_PROTO_VXLAN) {
			struct vxlanhdr *vh;

			if (parse_vxlanhdr(&c, &vh) < 0)
				return WR_DROP_TRUNCATED;
			if (!(vh->flags & VXLAN_I))
				return WR_DROP_VXLAN_FLAGS;
			key->tun_id = bpf_cpu_to_be64(bpf_ntohl(vh->vni) >> 8);
			key->tun_flags |= WR_TUNF_KEY;
			d->outer_len = c.pos - p->data;
			r = TUN_OK;
		} else if (ep->proto == WR_PROTO_GENEVE) {
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
		ep = bpf_map_lookup_elem(&wr_endpoints, &ek);
		if (!ep || ep->proto != WR_PROTO_STT)
			return TUN_NOT_OURS;
		r = parse_stt(ctx, is_xdp, l4_off, l3_end, v6, key, d);
	} else {
		ek.dst_port = 0;
		ep = bpf_map_lookup_elem(&wr_endpoints, &ek);
		if (!ep || ep->proto != WR_PROTO_GRE)
			return TUN_NOT_OURS;
		d->l3_end = l3_end;
		r = parse_gre(ctx, is_xdp, p, &c, l3_end, key, d);
	}
	if (r != TUN_OK && r != TUN_STT_SEGMENT)
		return r;
	d->proto = ep->proto;

	port_no = ep->port;
	if (ep->fixed_remotes) {
		struct wr_remote_key rk = { .ep = ek };
		__u32 *fixed;

		addr_copy(rk.remote, key->tun_src);
		fixed = bpf_map_lookup_elem(&wr_remotes, &rk);
		if (fixed)
			port_no = *fixed;
	}
	port = bpf_map_lookup_elem(&wr_ports, &port_no);
	if (!port_no || !port || port->kind != WR_PORT_TUNNEL)
		return WR_DROP_NO_PORT;
	d->in_port = port_no;
	key->in_port = port_no;
	key->tun_flags |= WR_TUNF_PRESENT;
	/* A segment's key is in the frame's first segment: checked once whole. */
	if (r == TUN_STT_SEGMENT)
		return r;
	if (!(port->flags & WR_PORTF_KEY_IN_FLOW) && key->tun_id != port->key_in)
		return WR_DROP_KEY_MISMATCH;
	if (d->outer_len + sizeof(struct ethhdr) > d->l3_end)
		return WR_DROP_TRUNCATED;
	return TUN_OK;
}

/*
 * RFC 6040 decapsulation of ECN into the inner IP header at l3 (version
 * 4 or 6). Returns -1 when the packet must be dropped (CE on not-ECT).
 */
static __always_inline int ecn_decap(struct packet *p, __u32 l3_off, __u8 version, __u8 outer_ecn,
				     struct wr_flow_key *key)
{
	__u8 inner, result;

	if (outer_ecn != ECN_CE && outer_ecn != ECN_ECT1)
		return 0;
	if (version == 4) {
		struct iphdr *ip = p->data + (l3_off & 0xff);
		__u16 old, new;

		if ((void *)(ip + 1) > p->end)
			return 0;
		inner = ip->tos & ECN_MASK;
		if (inner == ECN_NOT_ECT)
			return outer_ecn == ECN_CE ? -1 : 0;
		result = outer_ecn == ECN_CE ? ECN_CE : (inner == ECN_ECT0 ? ECN_ECT1 : inner);
		if (result == inner)
			return 0;
		old = *(__u16 *)ip;
		ip->tos = (ip->tos & ~ECN_MASK) | result;
		new = *(__u16 *)ip;
		ip->check = csum_replace16(ip->check, old, new);
		key->ip_tos = ip->tos;
	} else if (version == 6) {
		struct ipv6hdr *ip6 = p->data + (l3_off & 0xff);
		__u8 tclass;

		if ((void *)(ip6 + 1) > p->end)
			return 0;
		tclass = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
		inner = tclass & ECN_MASK;
		if (inner == ECN_NOT_ECT)
			return outer_ecn == ECN_CE ? -1 : 0;
		result = outer_ecn == ECN_CE ? ECN_CE : (inner == ECN_ECT0 ? ECN_ECT1 : inner);
		tclass = (tclass & ~ECN_MASK) | result;
		ip6->flow_lbl[0] = (ip6->flow_lbl[0] & 0x0f) | (tclass << 4);
		key->ip_tos = tclass;
	}
	return 0;
}

/*
 * parse_tunnel for each program type, as global functions: the verifier
 * checks each once, on its own, instead of once per path that reaches it.
 * (Global functions cannot take packet pointers; they derive them.)
 */
__noinline int parse_tunnel_xdp(struct xdp_md *ctx, struct wr_flow_key *key, struct decap *d)
{
	struct packet p = { (void *)(long)ctx->data, (void *)(long)ctx->data_end };

	if (!key || !d)
		return TUN_NOT_OURS;
	return parse_tunnel(ctx, 1, &p, key, d);
}

__noinline int parse_tunnel_skb(struct __sk_buff *skb, struct wr_flow_key *key, struct decap *d)
{
	struct packet p = { (void *)(long)skb->data, (void *)(long)skb->data_end };

	if (!key || !d)
		return TUN_NOT_OURS;
	return parse_tunnel(skb, 0, &p, key, d);
}

#endif /* WR_TUNNEL_H */
