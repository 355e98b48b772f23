/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Path MTU: a packet from a local port that will not fit the tunnel is
 * turned, in place, into an ICMP "fragmentation needed" (RFC 792/1191) or
 * ICMPv6 "packet too big" (RFC 4443) back to its sender, quoting as much of
 * it as RFC 1812/4443 allow and carrying the MTU left after encapsulation.
 * The message comes from the packet's own destination, as the Linux vxlan
 * driver's does, so the sender's PMTU cache files it under that path.
 */
#ifndef WR_ICMP_H
#define WR_ICMP_H

#include "csum.h"
#include "encap.h"
#include "parse.h"

/* RFC 792's destination unreachable header, with RFC 1191's next-hop MTU.
 * (linux/icmp.h would pull in the C library's socket headers.) */
struct icmp4hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 unused;
	__be16 mtu;
};
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4

#define ICMP4_QUOTE_MAX (576 - sizeof(struct iphdr) - sizeof(struct icmp4hdr))
#define ICMP6_QUOTE_MAX (1280 - sizeof(struct ipv6hdr) - sizeof(struct icmp6hdr))

struct icmp4_reply {
	struct ethhdr eth;
	struct iphdr ip;
	struct icmp4hdr icmp;
} __attribute__((packed));

struct icmp6_reply {
	struct ethhdr eth;
	struct ipv6hdr ip6;
	struct icmp6hdr icmp6;
} __attribute__((packed));

/* Rewrites skb (untagged IPv4 or IPv6 from a local port) into the ICMP
 * error for `mtu`. Returns 0, or -1 if the packet cannot be turned. */
__noinline int icmp_too_big(struct __sk_buff *skb, const struct frame_info *fi, __u32 mtu)
{
	__u32 quoted = skb->len - sizeof(struct ethhdr);
	struct ethhdr eth;
	__s64 sum;

	if (!fi || fi->l3_off != sizeof(struct ethhdr) || skb->len <= sizeof(struct ethhdr))
		return -1;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)))
		return -1;

	/* The reply is built in the per-CPU scratch: the stack is spoken for
	 * by the callers. */
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&wr_scratch, &zero);

	if (!s)
		return -1;
	if (fi->ip_version == 4) {
		struct icmp4_reply *rp = (void *)s->hdr;
		struct iphdr orig, ip = {};

		__builtin_memset(rp, 0, sizeof(*rp));
		if (bpf_skb_load_bytes(skb, sizeof(eth), &orig, sizeof(orig)))
			return -1;
		if (quoted > ICMP4_QUOTE_MAX)
			quoted = ICMP4_QUOTE_MAX;
		if (bpf_skb_change_tail(skb, sizeof(eth) + quoted, 0) ||
		    bpf_skb_adjust_room(skb, sizeof(rp->ip) + sizeof(rp->icmp), BPF_ADJ_ROOM_MAC, 0))
			return -1;
		__builtin_memcpy(rp->eth.h_dest, eth.h_source, ETH_ALEN);
		__builtin_memcpy(rp->eth.h_source, eth.h_dest, ETH_ALEN);
		rp->eth.h_proto = bpf_htons(ETH_P_IP);
		ip.version = 4;
		ip.ihl = 5;
		ip.tos = 0xc0;	/* internetwork control */
		ip.tot_len = bpf_htons(sizeof(ip) + sizeof(rp->icmp) + quoted);
		ip.ttl = 64;
		ip.protocol = IPPROTO_ICMP;
		ip.saddr = orig.daddr;
		ip.daddr = orig.saddr;
		ip.check = ipv4_header_csum(&ip);
		rp->ip = ip;
		rp->icmp.type = ICMP_DEST_UNREACH;
		rp->icmp.code = ICMP_FRAG_NEEDED;
		rp->icmp.mtu = bpf_htons(mtu);
		if (bpf_skb_store_bytes(skb, 0, rp, sizeof(*rp), 0))
			return -1;
		sum = packet_sum(skb, 0, sizeof(eth) + sizeof(rp->ip), skb->len);
		if (sum < 0)
			return -1;
		rp->icmp.checksum = ~csum_fold32(sum);
		return bpf_skb_store_bytes(skb, offsetof(struct icmp4_reply, icmp.checksum),
					   &rp->icmp.checksum, 2, 0) ? -1 : 0;
	}
	if (fi->ip_version == 6) {
		struct icmp6_reply *rp = (void *)s->hdr;
		struct ipv6hdr orig;
		__u32 len;

		__builtin_memset(rp, 0, sizeof(*rp));
		if (bpf_skb_load_bytes(skb, sizeof(eth), &orig, sizeof(orig)))
			return -1;
		if (quoted > ICMP6_QUOTE_MAX)
			quoted = ICMP6_QUOTE_MAX;
		if (bpf_skb_change_tail(skb, sizeof(eth) + quoted, 0) ||
		    bpf_skb_adjust_room(skb, sizeof(rp->ip6) + sizeof(rp->icmp6), BPF_ADJ_ROOM_MAC, 0))
			return -1;
		len = sizeof(rp->icmp6) + quoted;
		__builtin_memcpy(rp->eth.h_dest, eth.h_source, ETH_ALEN);
		__builtin_memcpy(rp->eth.h_source, eth.h_dest, ETH_ALEN);
		rp->eth.h_proto = bpf_htons(ETH_P_IPV6);
		rp->ip6.version = 6;
		rp->ip6.payload_len = bpf_htons(len);
		rp->ip6.nexthdr = IPPROTO_ICMPV6;
		rp->ip6.hop_limit = 255;
		rp->ip6.saddr = orig.daddr;
		rp->ip6.daddr = orig.saddr;
		rp->icmp6.icmp6_type = ICMPV6_PKT_TOOBIG;
		rp->icmp6.icmp6_mtu = bpf_htonl(mtu);
		if (bpf_skb_store_bytes(skb, 0, rp, sizeof(*rp), 0))
			return -1;
		sum = packet_sum(skb, 0, sizeof(eth) + sizeof(rp->ip6), skb->len);
		if (sum < 0)
			return -1;
		sum += pseudo_sum(orig.daddr.in6_u.u6_addr8, orig.saddr.in6_u.u6_addr8, 1, len,
				  IPPROTO_ICMPV6);
		rp->icmp6.icmp6_cksum = ~csum_fold32(sum);
		return bpf_skb_store_bytes(skb, offsetof(struct icmp6_reply, icmp6.icmp6_cksum),
					   &rp->icmp6.icmp6_cksum, 2, 0) ? -1 : 0;
	}
	return -1;
}

#endif /* WR_ICMP_H */
