/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Header parsers on a cursor, one per header, in the manner of
 * xdp-tutorial's common/parsing_helpers.h: each checks that its header's
 * fixed part lies before the end, moves the cursor past the header and
 * returns what comes next (or a PARSE_* failure). What a header means to
 * its caller (a flow key field, a drop reason, a verdict) stays with the
 * caller; how the header is laid out and read is here only.
 *
 * They read through direct pointers and never write, so XDP and TC share
 * them, and so do the outer headers of a tunnel packet (decap.h), the
 * frame inside it (parse_frame below) and STT's look at a frame it
 * reassembled in a map buffer (stt_plan), whose offsets are bounded.
 *
 * parse_frame reads an Ethernet frame into a flow key, one step per layer,
 * so that a new match field is a line in the step of its header.
 */
#ifndef WR_PARSE_H
#define WR_PARSE_H

#include "common.h"

/* Where the next header starts, and where the bytes end. */
struct cursor {
	void *pos;
	void *end;
};

/* A cursor over a whole packet, at offset 0. */
static __always_inline struct cursor cursor_of(const struct packet *p)
{
	return (struct cursor){ p->data, p->end };
}

/* Parser failures: negative, so that they never collide with a protocol
 * number, an EtherType or a length. */
#define PARSE_SHORT -1		/* the header's fixed part is past the end */
#define PARSE_BAD -2		/* the header says it is shorter than its fixed part */

#define MAX_VLAN_TAGS 2
#define MAX_IPV6_EXT 4
#define IPV6_FLOWLABEL_MASK 0x000fffff	/* of the IPv6 header's first word */

/* The SCTP common header (RFC 9260, 3.1); linux/sctp.h has none. */
struct sctphdr {
	__be16 source;
	__be16 dest;
	__be32 vtag;
	__le32 checksum;
};

/* ARP for IPv4 over Ethernet (RFC 826), the only kind a flow matches.
 * The protocol addresses are bytes: they sit at offsets 14 and 24. */
struct arp_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
};
_Static_assert(sizeof(struct arp_ipv4) == 28, "ARP for IPv4 over Ethernet is 28 bytes");

/* What a flow key takes from ICMP and ICMPv6: the first two bytes. */
struct icmp_type_code {
	__u8 type;
	__u8 code;
};

/* ICMPv6 neighbour solicitation and advertisement (RFC 4861, 4.3 and 4.4):
 * the target after four reserved (or flag) bytes, then options. */
#define ND_SOLICIT 135
#define ND_ADVERT 136
#define ND_OPT_SLL 1		/* source link-layer address */
#define ND_OPT_TLL 2		/* target link-layer address */
#define MAX_ND_OPTS 4

struct nd_msg {
	struct icmp_type_code tc;
	__be16 checksum;
	__be32 flags;
	__u8 target[16];
};

/* An ND option; a link-layer address option for Ethernet is 8 bytes. */
struct nd_opt {
	__u8 type;
	__u8 len;		/* in units of 8 bytes */
	__u8 mac[ETH_ALEN];
};

/* Ethernet: returns the EtherType (network order) or PARSE_SHORT. */
static __always_inline int parse_ethhdr(struct cursor *c, struct ethhdr **eth)
{
	struct ethhdr *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return PARSE_SHORT;
	c->pos = h + 1;
	*eth = h;
	return h->h_proto;
}

/* Whether an EtherType announces an 802.1Q or 802.1ad tag. */
static __always_inline int eth_is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/* One VLAN tag: returns the EtherType after it or PARSE_SHORT. */
static __always_inline int parse_vlanhdr(struct cursor *c, struct vlan_hdr **vh)
{
	struct vlan_hdr *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return PARSE_SHORT;
	c->pos = h + 1;
	*vh = h;
	return h->proto;
}

/*
 * IPv4: returns the protocol, with the cursor past the header and its
 * options (whose bytes are not checked: the next parser checks its own);
 * PARSE_SHORT; or PARSE_BAD when the header length is below 20, with *iph
 * set all the same, for callers whose verdict depends on the header.
 */
static __always_inline int parse_iphdr(struct cursor *c, struct iphdr **iph)
{
	struct iphdr *ip = c->pos;
	__u32 hlen;

	if ((void *)(ip + 1) > c->end)
		return PARSE_SHORT;
	*iph = ip;
	hlen = ip->ihl * 4;
	if (hlen < sizeof(*ip))
		return PARSE_BAD;
	c->pos = (void *)ip + hlen;
	return ip->protocol;
}

/* Whether the IPv4 packet is a fragment, first or later. */
static __always_inline int ipv4_is_fragment(const struct iphdr *ip)
{
	return !!(ip->frag_off & bpf_htons(IP_MF | IP_OFFSET));
}

/* IPv6: returns the next header or PARSE_SHORT. */
static __always_inline int parse_ip6hdr(struct cursor *c, struct ipv6hdr **ip6h)
{
	struct ipv6hdr *ip6 = c->pos;

	if ((void *)(ip6 + 1) > c->end)
		return PARSE_SHORT;
	c->pos = ip6 + 1;
	*ip6h = ip6;
	return ip6->nexthdr;
}

/* The IPv6 traffic class: DSCP << 2 | ECN, like the IPv4 TOS byte. */
static __always_inline __u8 ipv6_tclass(const struct ipv6hdr *ip6)
{
	return (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
}

/*
 * Walks the IPv6 extension headers from `next` (the IPv6 header's next
 * header), at most MAX_IPV6_EXT of them: hop-by-hop, routing and
 * destination options are skipped, and so is the fragment header of a
 * first fragment. The walk stops past the fragment header of a later
 * fragment, and past any fragment header with stop_at_frag: it then
 * returns 1 (0 otherwise, PARSE_SHORT when a header is cut short). *proto
 * gets the header after the walk (unless cut short) and *frag (WR_FRAG_*)
 * the packet as a fragment, written as they are found.
 */
static __always_inline int parse_ip6_exts(struct cursor *c, __u8 next, __u8 *proto, __u8 *frag,
					  int stop_at_frag)
{
#pragma unroll
	for (int i = 0; i < MAX_IPV6_EXT; i++) {
		__u8 *ext = c->pos;

		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING &&
		    next != IPPROTO_DSTOPTS && next != IPPROTO_FRAGMENT)
			break;
		if ((void *)(ext + 8) > c->end)
			return PARSE_SHORT;
		if (next == IPPROTO_FRAGMENT) {
			__be16 off = *(__be16 *)(ext + 2);

			next = ext[0];
			c->pos = ext + 8;
			if (off & bpf_htons(0xfff8)) {
				*frag = WR_FRAG_LATER;
				*proto = next;
				return 1;
			}
			if (off & bpf_htons(1))
				*frag = WR_FRAG_FIRST;
			if (stop_at_frag) {
				*proto = next;
				return 1;
			}
			continue;
		}
		next = ext[0];
		c->pos = ext + (ext[1] + 1) * 8;
	}
	*proto = next;
	return 0;
}

/* TCP: returns the header length its data offset gives (the cursor moves
 * past that much), PARSE_SHORT, or PARSE_BAD below 20 bytes (*th set). */
static __always_inline int parse_tcphdr(struct cursor *c, struct tcphdr **th)
{
	struct tcphdr *h = c->pos;
	__u32 hlen;

	if ((void *)(h + 1) > c->end)
		return PARSE_SHORT;
	*th = h;
	hlen = h->doff * 4;
	if (hlen < sizeof(*h))
		return PARSE_BAD;
	c->pos = (void *)h + hlen;
	return hlen;
}

/* The TCP flags: the low 12 bits of the header's 13th and 14th bytes. */
static __always_inline __u16 tcp_flags(const struct tcphdr *th)
{
	return bpf_ntohs(((const __be16 *)th)[6]) & 0x0fff;
}

/* UDP: returns the UDP length field (host order) or PARSE_SHORT. */
static __always_inline int parse_udphdr(struct cursor *c, struct udphdr **uh)
{
	struct udphdr *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return PARSE_SHORT;
	c->pos = h + 1;
	*uh = h;
	return bpf_ntohs(h->len);
}

/* SCTP: returns 0 or PARSE_SHORT. */
static __always_inline int parse_sctphdr(struct cursor *c, struct sctphdr **sh)
{
	struct sctphdr *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return PARSE_SHORT;
	c->pos = h + 1;
	*sh = h;
	return 0;
}

/* ICMP or ICMPv6, as far as type and code: returns 0 or PARSE_SHORT. */
static __always_inline int parse_icmp_type_code(struct cursor *c, struct icmp_type_code **ih)
{
	struct icmp_type_code *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return PARSE_SHORT;
	c->pos = h + 1;
	*ih = h;
	return 0;
}

/* An ND message up to its target: returns 0 or PARSE_SHORT, with the
 * cursor past the target, at the options. */
static __always_inline int parse_nd_msg(struct cursor *c, struct nd_msg **nd)
{
	struct nd_msg *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return PARSE_SHORT;
	c->pos = h + 1;
	*nd = h;
	return 0;
}

/* One ND option: returns its length in bytes (PARSE_BAD for 0, which
 * RFC 4861 forbids) or PARSE_SHORT, with the cursor past the option. */
static __always_inline int parse_nd_opt(struct cursor *c, struct nd_opt **opt)
{
	struct nd_opt *h = c->pos;
	__u32 len;

	if ((void *)(h + 1) > c->end)
		return PARSE_SHORT;
	len = h->len * 8;
	if (!len)
		return PARSE_BAD;
	if (c->pos + len > c->end)
		return PARSE_SHORT;
	c->pos += len;
	*opt = h;
	return len;
}

/* ARP for IPv4 over Ethernet: returns 0 or PARSE_SHORT. */
static __always_inline int parse_arp_ipv4(struct cursor *c, struct arp_ipv4 **ah)
{
	struct arp_ipv4 *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return PARSE_SHORT;
	c->pos = h + 1;
	*ah = h;
	return 0;
}

/* ---- The flow key of a frame --------------------------------------------- */

/* What the parser learned beyond the flow key, for the actions. */
struct frame_info {
	__u16 l3_off;		/* offset of the IP/ARP header, 0 if none */
	__u16 l4_off;		/* offset of the L4 header, 0 if none */
	__u16 tcp_flags;	/* TCP flags of this segment */
	__u8 ip_version;	/* 4, 6 or 0 */
	__u8 pad0;
	__u16 ip_len;		/* IPv4 total length or 40 + IPv6 payload length */
	__u8 ipv4_df;		/* the IPv4 DF bit is set */
	__u8 l4_hlen;		/* TCP header length (with options), UDP 8 */
	__u8 ip_proto_l4;	/* the L4 protocol at l4_off, 0 if none */
	__u8 pad[3];
};

/* The IPv4 header's fields. Returns 1 when an L4 header follows. */
static __always_inline int key_ipv4(struct cursor *c, struct wr_flow_key *key, struct frame_info *fi)
{
	struct iphdr *ip;

	if (parse_iphdr(c, &ip) < 0)
		return 0;
	fi->ip_version = 4;
	key->nw_ttl = ip->ttl;
	fi->ip_len = bpf_ntohs(ip->tot_len);
	fi->ipv4_df = !!(ip->frag_off & bpf_htons(IP_DF));
	key->ip_proto = ip->protocol;
	key->ip_tos = ip->tos;
	addr_set4(key->ip_src, ip->saddr);
	addr_set4(key->ip_dst, ip->daddr);
	if (ip->frag_off & bpf_htons(IP_OFFSET)) {
		key->ip_frag = WR_FRAG_LATER;
		return 0;
	}
	if (ip->frag_off & bpf_htons(IP_MF))
		key->ip_frag = WR_FRAG_FIRST;
	return 1;
}

/* The IPv6 header's fields and its extension headers'. Returns 1 when an
 * L4 header follows. */
static __always_inline int key_ipv6(struct cursor *c, struct wr_flow_key *key, struct frame_info *fi)
{
	struct ipv6hdr *ip6;
	int next = parse_ip6hdr(c, &ip6);

	if (next < 0)
		return 0;
	fi->ip_version = 6;
	key->nw_ttl = ip6->hop_limit;
	fi->ip_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
	key->ip_tos = ipv6_tclass(ip6);
	key->ipv6_label = *(__be32 *)ip6 & bpf_htonl(IPV6_FLOWLABEL_MASK);
	addr_copy(key->ip_src, ip6->saddr.in6_u.u6_addr8);
	addr_copy(key->ip_dst, ip6->daddr.in6_u.u6_addr8);
	/* A later fragment has no L4 header to read. */
	return parse_ip6_exts(c, next, &key->ip_proto, &key->ip_frag, 0) == 0;
}

/* ARP's opcode (its low byte), hardware and protocol addresses. */
static __always_inline void key_arp(struct cursor *c, struct wr_flow_key *key)
{
	struct arp_ipv4 *arp;

	if (parse_arp_ipv4(c, &arp) < 0)
		return;
	key->ip_proto = bpf_ntohs(arp->op) & 0xff;
	addr_set4(key->ip_src, *(__be32 *)arp->spa);
	addr_set4(key->ip_dst, *(__be32 *)arp->tpa);
	__builtin_memcpy(key->arp_sha, arp->sha, ETH_ALEN);
	__builtin_memcpy(key->arp_tha, arp->tha, ETH_ALEN);
}

/*
 * A neighbour solicitation's or advertisement's target and link-layer
 * address options, the cursor at its ICMPv6 header. As in Open vSwitch,
 * the source address option goes where ARP's sender MAC does and the
 * target's where ARP's target MAC does, and a message with either option
 * twice keys none of the three.
 */
static __always_inline void key_nd(struct cursor *c, struct wr_flow_key *key)
{
	struct nd_msg *nd;
	struct nd_opt *opt;
	__u8 seen = 0;
	int len;

	if (parse_nd_msg(c, &nd) < 0)
		return;
	addr_copy(key->nd_target, nd->target);
#pragma unroll
	for (int i = 0; i < MAX_ND_OPTS; i++) {
		len = parse_nd_opt(c, &opt);
		if (len < 0)
			return;
		if (len != sizeof(*opt) || (opt->type != ND_OPT_SLL && opt->type != ND_OPT_TLL))
			continue;
		if (seen & opt->type) {
			__builtin_memset(key->nd_target, 0, sizeof(key->nd_target));
			__builtin_memset(key->arp_sha, 0, ETH_ALEN);
			__builtin_memset(key->arp_tha, 0, ETH_ALEN);
			return;
		}
		seen |= opt->type;
		__builtin_memcpy(opt->type == ND_OPT_SLL ? key->arp_sha : key->arp_tha, opt->mac,
				 ETH_ALEN);
	}
}

/* The L4 header's fields: TCP, UDP or SCTP ports and TCP's flags (a
 * header cut short gives none, as Open vSwitch does), or ICMP's type and
 * code and what neighbour discovery says. */
static __always_inline void key_l4(struct cursor *c, struct wr_flow_key *key, struct frame_info *fi)
{
	switch (key->ip_proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th;

		if (parse_tcphdr(c, &th) == PARSE_SHORT)
			return;
		key->tp_src = th->source;
		key->tp_dst = th->dest;
		fi->tcp_flags = tcp_flags(th);
		key->tcp_flags = bpf_htons(fi->tcp_flags);
		fi->l4_hlen = th->doff * 4;
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh;

		if (parse_udphdr(c, &uh) < 0)
			return;
		key->tp_src = uh->source;
		key->tp_dst = uh->dest;
		fi->l4_hlen = sizeof(*uh);
		break;
	}
	case IPPROTO_SCTP: {
		struct sctphdr *sh;

		if (parse_sctphdr(c, &sh) < 0)
			return;
		key->tp_src = sh->source;
		key->tp_dst = sh->dest;
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		struct icmp_type_code *ih;

		if (parse_icmp_type_code(c, &ih) < 0)
			return;
		key->tp_src = bpf_htons(ih->type);
		key->tp_dst = bpf_htons(ih->code);
		if (key->ip_proto == IPPROTO_ICMPV6 && !ih->code &&
		    (ih->type == ND_SOLICIT || ih->type == ND_ADVERT)) {
			c->pos = ih;
			key_nd(c, key);
		}
		break;
	}
	}
}

/* Parses the frame at p into key (which must be zeroed except for the
 * metadata fields: the tunnel's, and the VLAN tag when the kernel holds
 * the frame's first tag aside) and fi. Returns 0, or -1 when not even
 * Ethernet fits. */
static __always_inline int parse_frame(struct packet *p, struct wr_flow_key *key,
				       struct frame_info *fi)
{
	struct cursor c = cursor_of(p);
	struct ethhdr *eth;
	struct vlan_hdr *vh;
	int proto, l4;

	proto = parse_ethhdr(&c, &eth);
	if (proto < 0)
		return -1;
	__builtin_memcpy(key->eth_src, eth->h_source, ETH_ALEN);
	__builtin_memcpy(key->eth_dst, eth->h_dest, ETH_ALEN);
	if (ablated(ABL_PARSE))
		return 0;

#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		if (!eth_is_vlan(proto))
			break;
		proto = parse_vlanhdr(&c, &vh);
		if (proto < 0)
			return 0;
		/* The first tag, unless the kernel took it off (then this
		 * one is the second, which no field matches). */
		if (i == 0 && !key->vlan_tci)
			key->vlan_tci = vh->tci | bpf_htons(VLAN_TAG_PRESENT);
	}
	key->eth_type = proto;
	fi->l3_off = c.pos - p->data;

	if (proto == bpf_htons(ETH_P_IP)) {
		l4 = key_ipv4(&c, key, fi);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		l4 = key_ipv6(&c, key, fi);
	} else {
		if (proto == bpf_htons(ETH_P_ARP))
			key_arp(&c, key);
		return 0;
	}
	if (!l4)
		return 0;
	fi->l4_off = c.pos - p->data;
	fi->ip_proto_l4 = key->ip_proto;
	key_l4(&c, key, fi);
	return 0;
}

/* The network a port with `flags` and `net` stamps on key (see stamp_net
 * in classify.h), key's tunnel fields set. */
static __always_inline __u32 port_net(__u16 flags, __u32 net, const struct wr_flow_key *key)
{
	__u64 id;

	if (!(flags & WR_PORTF_NET_FLOW))
		return net;
	id = bpf_be64_to_cpu(key->tun_id);
	return id >> 32 ? 0 : id;
}

/* Word i's share of a key hash: the word times an odd constant of its own
 * (so that swapped fields hash apart). */
static __always_inline __u64 hash_word(__u64 w, int i)
{
	return w * (0x9e3779b97f4a7c15ULL * (2 * i + 1));
}

/* A key hash from the sum of its words' shares, mixed so that the top
 * bits depend on all (the high halves reach the low ones in the fold). */
static __always_inline __u32 hash_fold(__u64 h)
{
	h ^= h >> 32;
	h *= 0xff51afd7ed558ccdULL;
	return h >> 32;
}

/* A cheap hash of the whole flow key, for the flow cache's slots. */
static __always_inline __u32 flow_key_hash(const struct wr_flow_key *key)
{
	const __u64 *w = (const __u64 *)key;
	__u64 h = 0;

#pragma unroll
	for (int i = 0; i < WR_FLOW_KEY_WORDS; i++)
		h += hash_word(w[i], i);
	return hash_fold(h);
}

#endif /* WR_PARSE_H */
