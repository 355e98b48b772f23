/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Parsing an Ethernet frame into a flow key. The same code serves XDP and
 * TC: it reads through direct packet pointers and never writes.
 */
#ifndef WR_PARSE_H
#define WR_PARSE_H

#include "common.h"

/* What the parser learned beyond the flow key, for the actions. */
struct frame_info {
	__u16 l3_off;		/* offset of the IP/ARP header, 0 if none */
	__u16 l4_off;		/* offset of the L4 header, 0 if none */
	__u16 tcp_flags;	/* TCP flags of this segment */
	__u8 ip_version;	/* 4, 6 or 0 */
	__u8 ttl;		/* IPv4 TTL or IPv6 hop limit */
	__u16 ip_len;		/* IPv4 total length or 40 + IPv6 payload length */
	__u8 ipv4_df;		/* the IPv4 DF bit is set */
	__u8 l4_hlen;		/* TCP header length (with options), UDP 8 */
	__u8 ip_proto_l4;	/* the L4 protocol at l4_off, 0 if none */
	__u8 pad[3];
};

#define MAX_VLAN_TAGS 2
#define MAX_IPV6_EXT 4

/* Parses the frame at p into key (which must be zeroed except for the
 * metadata fields) and fi. Returns 0, or -1 when not even Ethernet fits. */
static __always_inline int parse_frame(struct packet *p, struct wr_flow_key *key,
				       struct frame_info *fi)
{
	struct ethhdr *eth = p->data;
	void *pos = p->data + sizeof(*eth);
	__be16 proto;

	if ((void *)(eth + 1) > p->end)
		return -1;
	__builtin_memcpy(key->eth_src, eth->h_source, ETH_ALEN);
	__builtin_memcpy(key->eth_dst, eth->h_dest, ETH_ALEN);
	proto = eth->h_proto;

#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		struct vlan_hdr *vh = pos;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > p->end)
			return 0;
		if (i == 0)
			key->vlan_tci = vh->tci | bpf_htons(VLAN_TAG_PRESENT);
		proto = vh->proto;
		pos = vh + 1;
	}
	key->eth_type = proto;
	fi->l3_off = pos - p->data;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = pos;
		__u32 ihl;

		if ((void *)(ip + 1) > p->end)
			return 0;
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return 0;
		fi->ip_version = 4;
		fi->ttl = ip->ttl;
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
		pos += ihl;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = pos;
		__u8 next;

		if ((void *)(ip6 + 1) > p->end)
			return 0;
		fi->ip_version = 6;
		fi->ttl = ip6->hop_limit;
		fi->ip_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
		key->ip_tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
		addr_copy(key->ip_src, ip6->saddr.in6_u.u6_addr8);
		addr_copy(key->ip_dst, ip6->daddr.in6_u.u6_addr8);
		next = ip6->nexthdr;
		pos = ip6 + 1;
#pragma unroll
		for (int i = 0; i < MAX_IPV6_EXT; i++) {
			__u8 *ext = pos;

			if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING &&
			    next != IPPROTO_DSTOPTS && next != IPPROTO_FRAGMENT)
				break;
			if ((void *)(ext + 8) > p->end)
				return 0;
			if (next == IPPROTO_FRAGMENT) {
				__be16 off = *(__be16 *)(ext + 2);

				next = ext[0];
				pos = ext + 8;
				if (off & bpf_htons(0xfff8)) {
					key->ip_proto = next;
					key->ip_frag = WR_FRAG_LATER;
					return 0;
				}
				if (off & bpf_htons(1))
					key->ip_frag = WR_FRAG_FIRST;
				continue;
			}
			next = ext[0];
			pos = ext + (ext[1] + 1) * 8;
		}
		key->ip_proto = next;
	} else if (proto == bpf_htons(ETH_P_ARP)) {
		/* Ethernet/IPv4 ARP: opcode, sender and target addresses. */
		__u8 *arp = pos;

		if ((void *)(arp + 28) > p->end)
			return 0;
		key->ip_proto = arp[7];
		addr_set4(key->ip_src, *(__be32 *)(arp + 14));
		addr_set4(key->ip_dst, *(__be32 *)(arp + 24));
		return 0;
	} else {
		return 0;
	}

	fi->l4_off = pos - p->data;
	fi->ip_proto_l4 = key->ip_proto;
	switch (key->ip_proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = pos;

		if ((void *)(th + 1) > p->end)
			return 0;
		key->tp_src = th->source;
		key->tp_dst = th->dest;
		fi->tcp_flags = bpf_ntohs(((__be16 *)th)[6]) & 0x0fff;
		fi->l4_hlen = th->doff * 4;
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = pos;

		if ((void *)(uh + 1) > p->end)
			return 0;
		key->tp_src = uh->source;
		key->tp_dst = uh->dest;
		fi->l4_hlen = sizeof(*uh);
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 *icmp = pos;

		if ((void *)(icmp + 2) > p->end)
			return 0;
		key->tp_src = bpf_htons(icmp[0]);
		key->tp_dst = bpf_htons(icmp[1]);
		break;
	}
	}
	return 0;
}

#endif /* WR_PARSE_H */
