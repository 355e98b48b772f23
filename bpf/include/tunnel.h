/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What every tunnel shares, both ways: the wire formats of VXLAN (RFC
 * 7348), Geneve (RFC 8926) and GRE (RFC 2784/2890) (STT's is in stt.h);
 * what recognising a tunnel packet yields (struct decap, decap.h makes
 * it); and the hand-over of a decapsulated frame: its tunnel fields from
 * XDP to TC in the packet's metadata, and its ECN (RFC 6040).
 */
#ifndef WR_TUNNEL_H
#define WR_TUNNEL_H

#include "csum.h"
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
	/* The frame's length, non-linear part included: read once, by
	 * parse_tunnel, and kept up to date by xdp_decap. */
	__u32 len;
};

/* What an endpoint and a packet's remote resolve to: the endpoint's
 * protocol, and the tunnel port the packet arrives on (0: none takes it)
 * with what decapsulation needs of that port. */
struct tun_port {
	__be64 key_in;		/* wr_port.key_in */
	__u32 net;		/* wr_port.net */
	__u16 port;
	__u16 flags;		/* wr_port.flags */
	__u8 proto;		/* enum wr_proto, the endpoint's */
	__u8 pad[7];
};

/* The last endpoint a CPU resolved (see resolve_port in decap.h). */
struct tun_memo {
	__u64 tag;		/* wr_config.seq + 1 when filled; 0: never */
	struct wr_endpoint_key ek;
	struct tun_port tp;
};

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
		tclass = ipv6_tclass(ip6);
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

/* wr_meta.flow_slot: XDP hands TC no flow. */
#define META_NO_FLOW 0xffffffff

/* The flow key's tunnel fields, from XDP's metadata (and back, with no
 * flow). */
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
	m->flow_slot = META_NO_FLOW;
}

/* Room for size bytes of metadata in front of the XDP frame, for TC to
 * read; NULL when there is none. */
static __always_inline void *xdp_meta_push(struct xdp_md *ctx, __u32 size)
{
	void *m;

	if (bpf_xdp_adjust_meta(ctx, -(int)size))
		return NULL;
	m = (void *)(long)ctx->data_meta;
	if (m + size > (void *)(long)ctx->data)
		return NULL;
	return m;
}

#endif /* WR_TUNNEL_H */

