/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * A flow's rewrite actions, at TC: Ethernet addresses, VLAN tags, IPv4
 * addresses, TOS/traffic class, TTL/hop limit, TCP and UDP ports. Checksums
 * are fixed incrementally by the kernel's helpers, which also keep a checksum still
 * to be filled in (CHECKSUM_PARTIAL) and the receive checksum
 * (CHECKSUM_COMPLETE) right. A rewrite of a layer the packet has not (an
 * IPv4 address of an IPv6 or ARP packet, a port of a later fragment or of
 * ICMP) is skipped, as Open vSwitch skips it. Flows that rewrite never
 * finish at XDP (see the compiler), so nothing here runs there.
 */
#ifndef WR_REWRITE_H
#define WR_REWRITE_H

#include "parse.h"

/* Where an IPv4 field's 16-bit checksum word starts, for one-byte fields. */
#define IP4_TOS_WORD 0
#define IP4_TTL_WORD 8

/* Replaces the 16-bit word at `off` with `new`, fixing the IPv4 header
 * checksum at l3. */
static __always_inline int ip4_word(struct __sk_buff *skb, __u32 l3, __u32 off, __u16 new)
{
	__u16 old;

	if (bpf_skb_load_bytes(skb, l3 + off, &old, 2) || old == new)
		return 0;
	if (bpf_skb_store_bytes(skb, l3 + off, &new, 2, 0))
		return -1;
	return bpf_l3_csum_replace(skb, l3 + offsetof(struct iphdr, check), old, new, 2);
}

/* Where the TCP or UDP checksum of the packet is, or 0 when it has none
 * (another protocol, or no L4 header in this fragment). `flags` gets
 * BPF_F_MARK_MANGLED_0 for UDP: a computed 0 goes as 0xffff, and over
 * IPv4 a zero means "no checksum" and stays; over IPv6 the checksum is
 * mandatory (RFC 8200), so it is fixed whatever it is (BPF_F_MARK_ENFORCE). */
static __always_inline __u32 l4_csum_off(const struct frame_info *fi, __u64 *flags)
{
	if (!fi->l4_off)
		return 0;
	if (fi->ip_proto_l4 == IPPROTO_TCP)
		return fi->l4_off + offsetof(struct tcphdr, check);
	if (fi->ip_proto_l4 == IPPROTO_UDP) {
		*flags |= BPF_F_MARK_MANGLED_0 | (fi->ip_version == 6 ? BPF_F_MARK_ENFORCE : 0);
		return fi->l4_off + offsetof(struct udphdr, check);
	}
	return 0;
}

/* Where the checksum over the IPv6 pseudo-header is: TCP's, UDP's or
 * ICMPv6's (which, unlike ICMP's, covers the addresses too), or 0. */
static __always_inline __u32 pseudo6_csum_off(const struct frame_info *fi, __u64 *flags)
{
	if (fi->l4_off && fi->ip_proto_l4 == IPPROTO_ICMPV6)
		return fi->l4_off + offsetof(struct icmp6hdr, icmp6_cksum);
	return l4_csum_off(fi, flags);
}

/* The IPv4 source or destination: the header checksum and the TCP/UDP
 * pseudo-header's share of the L4 checksum. */
static __always_inline int set_ip4(struct __sk_buff *skb, const struct frame_info *fi, __u32 off,
				   __be32 new)
{
	__u32 l3 = fi->l3_off, csum;
	__u64 flags = BPF_F_PSEUDO_HDR | sizeof(new);
	__be32 old;

	if (fi->ip_version != 4 || bpf_skb_load_bytes(skb, l3 + off, &old, 4) || old == new)
		return 0;
	if (bpf_skb_store_bytes(skb, l3 + off, &new, 4, 0) ||
	    bpf_l3_csum_replace(skb, l3 + offsetof(struct iphdr, check), old, new, 4))
		return -1;
	csum = l4_csum_off(fi, &flags);
	return csum ? bpf_l4_csum_replace(skb, csum, old, new, flags) : 0;
}

/* The IPv6 source or destination, at `off` in the header, to the bits of
 * `v` in `m` (network order, v within m): the L4 checksum takes the
 * pseudo-header's difference. The address is stored with the receive
 * checksum fixed (BPF_F_RECOMPUTE_CSUM) and the L4 checksum's change
 * updates it back: no IP header checksum makes up for the address, so
 * the two together leave it as it was, as they should. */
static __always_inline int set_ip6(struct __sk_buff *skb, const struct frame_info *fi, __u32 off,
				   const __be32 *v, const __be32 *m)
{
	__u64 flags = BPF_F_PSEUDO_HDR;
	__be32 old[4], new[4];
	__u32 csum, same = 1;
	__s64 diff;

	if (fi->ip_version != 6 || bpf_skb_load_bytes(skb, fi->l3_off + off, old, 16))
		return 0;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		new[i] = (old[i] & ~m[i]) | v[i];
		same &= new[i] == old[i];
	}
	if (same)
		return 0;
	if (bpf_skb_store_bytes(skb, fi->l3_off + off, new, 16, BPF_F_RECOMPUTE_CSUM))
		return -1;
	csum = pseudo6_csum_off(fi, &flags);
	if (!csum)
		return 0;
	diff = bpf_csum_diff(old, 16, new, 16, 0);
	return bpf_l4_csum_replace(skb, csum, 0, diff, flags);
}

/* A TCP or UDP port, at `off` in the L4 header. */
static __always_inline int set_port(struct __sk_buff *skb, const struct frame_info *fi, __u32 off,
				    __be16 new)
{
	__u64 flags = sizeof(new);
	__u32 csum = l4_csum_off(fi, &flags);
	__be16 old;

	if (!csum || bpf_skb_load_bytes(skb, fi->l4_off + off, &old, 2) || old == new)
		return 0;
	if (bpf_skb_store_bytes(skb, fi->l4_off + off, &new, 2, 0))
		return -1;
	return bpf_l4_csum_replace(skb, csum, old, new, flags);
}

/* The IPv6 header's first two bytes hold the traffic class between the
 * version and the flow label; no checksum covers them, but the receive
 * checksum does (BPF_F_RECOMPUTE_CSUM). */
static __always_inline int set_tclass6(struct __sk_buff *skb, __u32 l3, __u8 mask, __u8 bits)
{
	__u8 b[2], tc;

	if (bpf_skb_load_bytes(skb, l3, b, 2))
		return 0;
	tc = (__u8)((b[0] << 4) | (b[1] >> 4));
	tc = (tc & ~mask) | (bits & mask);
	b[0] = (b[0] & 0xf0) | (tc >> 4);
	b[1] = (b[1] & 0x0f) | (__u8)(tc << 4);
	return bpf_skb_store_bytes(skb, l3, b, 2, BPF_F_RECOMPUTE_CSUM);
}

/* The IPv4 TOS bits in `mask` to `bits`, or the IPv6 traffic class's. */
static __always_inline int set_tos(struct __sk_buff *skb, const struct frame_info *fi,
				   struct wr_flow_key *key, __u8 mask, __u8 bits)
{
	__u32 l3 = fi->l3_off;
	__u8 b[2];

	key->ip_tos = (key->ip_tos & ~mask) | (bits & mask);
	if (fi->ip_version == 6)
		return set_tclass6(skb, l3, mask, bits);
	if (fi->ip_version != 4 || bpf_skb_load_bytes(skb, l3 + IP4_TOS_WORD, b, 2))
		return 0;
	b[1] = (b[1] & ~mask) | (bits & mask);
	return ip4_word(skb, l3, IP4_TOS_WORD, *(__u16 *)b);
}

/* The TTL or hop limit to `ttl`; with `dec`, to one less than it was,
 * except that a packet whose TTL is 0 or 1 is dropped (returns 1): it
 * must not be forwarded, and warren sends no ICMP time exceeded. */
static __always_inline int set_ttl(struct __sk_buff *skb, const struct frame_info *fi,
				   struct wr_flow_key *key, __u8 ttl, int dec)
{
	__u32 l3 = fi->l3_off;
	__u8 b[2];

	if (fi->ip_version == 6) {
		if (bpf_skb_load_bytes(skb, l3 + offsetof(struct ipv6hdr, hop_limit), b, 1))
			return 0;
		if (dec && b[0] <= 1)
			return 1;
		b[0] = dec ? b[0] - 1 : ttl;
		key->nw_ttl = b[0];
		return bpf_skb_store_bytes(skb, l3 + offsetof(struct ipv6hdr, hop_limit), b, 1,
					   BPF_F_RECOMPUTE_CSUM) ? -1 : 0;
	}
	if (fi->ip_version != 4 || bpf_skb_load_bytes(skb, l3 + IP4_TTL_WORD, b, 2))
		return 0;
	if (dec && b[0] <= 1)
		return 1;
	b[0] = dec ? b[0] - 1 : ttl;
	key->nw_ttl = b[0];
	return ip4_word(skb, l3, IP4_TTL_WORD, *(__u16 *)b);
}

/* Where a frame's outermost VLAN tag is: held aside in the skb, as the
 * kernel holds it for every frame a device takes in; or in the bytes after
 * the MACs, as in a decapsulated frame (and at test-run). */
#define TAG_NONE 0
#define TAG_ASIDE 1
#define TAG_BYTES 2
#define VLAN_TCI_OFF (2 * ETH_ALEN + 2)
/* Bit 12 of a tag's TCI, DEI, is where Open vSwitch's TCI says "tagged":
 * a tag it writes has DEI 0, and so has warren's. */
#define VLAN_DEI 0x1000

/* Where the outermost tag is, with its TCI (host order) in *tci. */
static __always_inline int outer_tag(struct __sk_buff *skb, __u16 *tci)
{
	__be16 h[2];

	if (skb->vlan_present) {
		*tci = skb->vlan_tci;
		return TAG_ASIDE;
	}
	if (bpf_skb_load_bytes(skb, 2 * ETH_ALEN, h, sizeof(h)) || !eth_is_vlan(h[0]))
		return TAG_NONE;
	*tci = bpf_ntohs(h[1]);
	return TAG_BYTES;
}

/* Takes the outermost tag off. The kernel's helper takes one held aside,
 * or one in the bytes while skb->protocol names a tag; then it holds the
 * next tag aside, if any, so the bytes may shrink. A decapsulated frame's
 * skb->protocol names the outer network layer, and the helper would do
 * nothing: the 4 bytes after the TPID go (room at the MAC layer is made or
 * taken after the first 14 bytes), and the EtherType after the tag takes
 * the TPID's place. */
static __always_inline int pop_vlan(struct __sk_buff *skb)
{
	__be16 type;
	__u16 tci;
	int where = outer_tag(skb, &tci);

	if (where == TAG_NONE)
		return 0;
	if (where == TAG_ASIDE || eth_is_vlan(skb->protocol))
		return bpf_skb_vlan_pop(skb);
	if (bpf_skb_load_bytes(skb, VLAN_TCI_OFF + 2, &type, 2) ||
	    bpf_skb_adjust_room(skb, -(int)sizeof(struct vlan_hdr), BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO))
		return -1;
	return bpf_skb_store_bytes(skb, 2 * ETH_ALEN, &type, 2, 0);
}

/* The outermost TCI's bits in `mask` to `bits`. A tag held aside is
 * replaced (taken off, then pushed anew: no helper rewrites it); an
 * untagged frame gets an 802.1Q tag, as Open vSwitch's mod_vlan_vid and
 * mod_vlan_pcp give it. */
static __always_inline int set_vlan(struct __sk_buff *skb, __u16 mask, __u16 bits)
{
	__be16 proto = bpf_htons(ETH_P_8021Q), wire;
	__u16 tci = 0;
	int where = outer_tag(skb, &tci);

	bits = ((tci & ~mask) | (bits & mask)) & ~VLAN_DEI;
	if (where == TAG_BYTES) {
		/* After the first 14 bytes: a receive checksum covers it. */
		wire = bpf_htons(bits);
		return bpf_skb_store_bytes(skb, VLAN_TCI_OFF, &wire, 2, BPF_F_RECOMPUTE_CSUM);
	}
	if (where == TAG_ASIDE) {
		if (tci == bits)
			return 0;
		proto = skb->vlan_proto;
		if (bpf_skb_vlan_pop(skb))
			return -1;
	}
	return bpf_skb_vlan_push(skb, proto, bits);
}

/* The bytes moved by `delta` where a VLAN rewrite grew or shrank them. */
static __always_inline void vlan_moved(struct frame_info *fi, __s32 delta)
{
	if (fi->l3_off)
		fi->l3_off += delta;
	if (fi->l4_off)
		fi->l4_off += delta;
}

/* b's bits in m to those of v (v within m), n <= 16 bytes. */
static __always_inline void merge_bits(__u8 *b, const __u8 *v, const __u8 *m, __u32 n)
{
#pragma unroll
	for (__u32 i = 0; i < 16; i++) {
		if (i < n)
			b[i] = (b[i] & ~m[i]) | v[i];
	}
}

/* WR_ACT_SET_FIELD: the bits its wr_tun_keys slot gives of the field it
 * names, each through the setter of the whole field; the tunnel id is
 * key's, which tunnel outputs flagged WR_TKSET_ID_PKT send. */
static __always_inline int set_field(struct __sk_buff *skb, const struct frame_info *fi,
				     struct wr_flow_key *key, const struct wr_action *a)
{
	__u32 slot = a->arg, off;
	const struct wr_tun_key *w = bpf_map_lookup_elem(&wr_tun_keys, &slot);
	__u8 b[ETH_ALEN];

	if (!w)
		return -1;
	switch (a->port) {
	case WR_SF_ETH_SRC:
	case WR_SF_ETH_DST:
		off = a->port == WR_SF_ETH_SRC ? ETH_ALEN : 0;
		if (bpf_skb_load_bytes(skb, off, b, ETH_ALEN))
			return 0;
		merge_bits(b, w->dst, w->src, ETH_ALEN);
		return bpf_skb_store_bytes(skb, off, b, ETH_ALEN, 0);
	case WR_SF_IP4_SRC:
	case WR_SF_IP4_DST:
		off = a->port == WR_SF_IP4_SRC ? offsetof(struct iphdr, saddr) :
						 offsetof(struct iphdr, daddr);
		if (fi->ip_version != 4 || bpf_skb_load_bytes(skb, fi->l3_off + off, b, 4))
			return 0;
		merge_bits(b, w->dst, w->src, 4);
		return set_ip4(skb, fi, off, *(__be32 *)b);
	case WR_SF_IP6_SRC:
	case WR_SF_IP6_DST:
		off = a->port == WR_SF_IP6_SRC ? offsetof(struct ipv6hdr, saddr) :
						 offsetof(struct ipv6hdr, daddr);
		return set_ip6(skb, fi, off, (const __be32 *)w->dst, (const __be32 *)w->src);
	case WR_SF_TP_SRC:
	case WR_SF_TP_DST:
		off = a->port == WR_SF_TP_SRC ? 0 : 2;
		if (!fi->l4_off || bpf_skb_load_bytes(skb, fi->l4_off + off, b, 2))
			return 0;
		merge_bits(b, w->dst, w->src, 2);
		return set_port(skb, fi, off, *(__be16 *)b);
	case WR_SF_TUN_ID:
		key->tun_id = (key->tun_id & ~*(const __be64 *)w->src) | *(const __be64 *)w->dst;
		return 0;
	}
	return 0;
}

/*
 * Carries out rewrite action a on skb. Returns -1 to go on with the next
 * action, or TC_ACT_SHOT when the packet was dropped (dec_ttl on an expired
 * TTL, or a helper that failed half way, which leaves a packet no one
 * should get). key's TOS and TTL follow, for a tunnel that inherits them;
 * fi follows the bytes a VLAN rewrite moved, for the rewrites and outputs
 * after it. A global function: the verifier checks it once.
 */
__noinline long rewrite(struct __sk_buff *skb, const struct wr_action *a, struct wr_flow_key *key,
			struct frame_info *fi, __u32 in_port)
{
	__u32 len = skb->len;
	int r = 0;

	/* The verifier checks every argument of a global function, and a build
	 * without counters (ablate.h) reads in_port nowhere: clang would then
	 * leave its register unset at the call. */
	asm volatile("" : : "r"(in_port));
	if (!a || !key || !fi)
		return TC_ACT_SHOT;
	switch (a->op) {
	case WR_ACT_SET_ETH_SRC:
	case WR_ACT_SET_ETH_DST:
		r = bpf_skb_store_bytes(skb, a->op == WR_ACT_SET_ETH_SRC ? ETH_ALEN : 0, &a->port,
					ETH_ALEN, 0);
		break;
	case WR_ACT_SET_IP4_SRC:
		r = set_ip4(skb, fi, offsetof(struct iphdr, saddr), a->arg);
		break;
	case WR_ACT_SET_IP4_DST:
		r = set_ip4(skb, fi, offsetof(struct iphdr, daddr), a->arg);
		break;
	case WR_ACT_SET_TOS:
		r = set_tos(skb, fi, key, a->port, a->arg);
		break;
	case WR_ACT_SET_TTL:
	case WR_ACT_DEC_TTL:
		r = set_ttl(skb, fi, key, a->arg, a->op == WR_ACT_DEC_TTL);
		if (r > 0) {
			drop(WR_DROP_TTL, in_port);
			return TC_ACT_SHOT;
		}
		break;
	case WR_ACT_SET_TP_SRC:
		r = set_port(skb, fi, 0, bpf_htons(a->arg));
		break;
	case WR_ACT_SET_TP_DST:
		r = set_port(skb, fi, 2, bpf_htons(a->arg));
		break;
	case WR_ACT_PUSH_VLAN:
		r = bpf_skb_vlan_push(skb, bpf_htons(a->port), a->arg);
		break;
	case WR_ACT_POP_VLAN:
		r = pop_vlan(skb);
		break;
	case WR_ACT_SET_VLAN:
		r = set_vlan(skb, a->port, a->arg);
		break;
	case WR_ACT_SET_FIELD:
		r = set_field(skb, fi, key, a);
		break;
	}
	vlan_moved(fi, skb->len - len);
	if (r) {
		drop(WR_DROP_ACTION, in_port);
		return TC_ACT_SHOT;
	}
	return -1;
}

#endif /* WR_REWRITE_H */
