/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Encapsulation at TC. The outer header is built in a per-CPU scratch
 * buffer and stored in one go. IP packets grow with bpf_skb_adjust_room's
 * encapsulation flags, so the kernel records inner offsets and the tunnel
 * GSO type and TSO/GSO keeps working through the tunnel; other frames (ARP)
 * grow at the head.
 *
 * Precedence, as in Open vSwitch: a port's fixed remote, local address and
 * key win over the flow's; TTL and TOS come from the flow's set_tunnel when
 * it gives them, else from the port (fixed, or inherited from the inner IP
 * header). ECN always follows the inner packet (RFC 6040, normal mode).
 *
 * The steps every tunnel output shares close the file: build_outer routes
 * the frame and builds its outer header, output_done sends the packet or
 * a clone of it; tunnel_output (actions.h) and stt_output (stt_tx.h) do
 * what lies between for their protocols.
 */
#ifndef WR_ENCAP_H
#define WR_ENCAP_H

#include "clock.h"
#include "csum.h"
#include "maps.h"
#include "parse.h"
#include "tunnel.h"

#define OUTER_MAX 128
/* The source port range, as `ip link add … type vxlan srcport 49152 65535`
 * gives the kernel's vxlan device. */
#define UDP_SPORT_MIN 49152
#define UDP_SPORT_MAX 65535

/* encap_out.neigh: how the MACs get filled in. */
#define NEIGH_NONE 0	/* the FIB gave them: bpf_redirect */
#define NEIGH_VIA 1	/* bpf_redirect_neigh to the next hop the FIB named */
#define NEIGH_ROUTE 2	/* bpf_redirect_neigh, the kernel routes too */

/* Whether the device will fill in skb's checksum left partial before the
 * wire (the control plane asked the underlay: WR_CFG_DEV_CSUM), so that
 * the bytes an outer checksum covers change after BPF has summed them. */
static __always_inline int device_completes(struct __sk_buff *skb)
{
	struct wr_config *cfg = config();

	return cfg && (cfg->flags & WR_CFG_DEV_CSUM) && skb_ip_summed(skb) == CHECKSUM_PARTIAL;
}

/* Where the outer packet goes, once routed. */
struct encap_out {
	__be64 tun_id;		/* the key the tunnel header carries */
	__u32 ifindex;
	__u16 hdr_len;		/* outer headers incl. Ethernet, without the inner copy */
	__u16 mtu;		/* of the egress path */
	__u8 neigh;		/* NEIGH_* */
	__u8 v6;
	__u8 csum;		/* fill in the outer UDP/GRE checksum */
	__u8 pad;
	__u32 hsum;		/* IPv4: sum of the header's words no packet changes */
	__u32 hash;		/* this packet's flow hash: source port, flow label */
	__u8 nh[16];		/* next hop, for bpf_redirect_neigh */
};

struct scratch {
	__u8 hdr[OUTER_MAX];	/* outer header under construction */
	struct bpf_fib_lookup fib;
	struct encap_out out;	/* where it goes (off the stack, which is short) */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} wr_scratch SEC(".maps");

/*
 * The flow hash that picks the outer source port and flow label: the
 * skb's own when it has one (a sending socket's txhash, a NIC's receive
 * hash), as the kernel's vxlan device takes it; else a hash of the inner
 * frame's MACs, addresses, protocol and ports (key words 6 to 12), the same
 * for every packet of a flow whatever its TTL, ECN or TCP flags. That hash
 * becomes the skb's, so a device the packet goes to (gso.h) and the rest of
 * the stack see the same one. No flow dissection per packet: the kernel's
 * (bpf_get_hash_recalc) costs about a fifth of an encapsulation.
 */
static __always_inline __u32 tunnel_flow_hash(struct __sk_buff *skb, const struct wr_flow_key *key)
{
	const __u64 *w = (const __u64 *)key;
	__u32 h = skb->hash;
	__u64 sum;

	if (h || ablated(ABL_HASH))
		return h;
	/* Word 12's low half holds the ports, word 0's byte 5 the protocol. */
	sum = ((w[0] >> 40) & 0xff) + hash_word(w[12] & 0xffffffff, 12);
#pragma unroll
	for (int i = 6; i < 12; i++)
		sum += hash_word(w[i], i);
	h = hash_fold(sum);
	bpf_set_hash(skb, h);
	return h;
}
_Static_assert(__builtin_offsetof(struct wr_flow_key, eth_src) == 6 * 8 &&
		       __builtin_offsetof(struct wr_flow_key, tp_src) == 12 * 8 &&
		       __builtin_offsetof(struct wr_flow_key, ip_proto) == 5,
	       "tunnel_flow_hash reads the key by words");

/*
 * The outer source port of a frame whose flow hash (tunnel_flow_hash) is hash,
 * spread over the range exactly as the kernel's udp_flow_src_port does,
 * so that a flow keeps one source port (one ECMP path, no reordering)
 * whether warren or the kernel's vxlan device encapsulates its frames.
 */
static __always_inline __be16 tunnel_sport(__u32 hash)
{
	hash ^= hash << 16;
	return bpf_htons(UDP_SPORT_MIN + (((__u64)hash * (UDP_SPORT_MAX - UDP_SPORT_MIN)) >> 32));
}

/* Whether the output to `port` with the flow's tunnel key tk (may be
 * NULL) leaves over IPv6. */
static __always_inline int tunnel_v6(const struct wr_port *port, const struct wr_tun_key *tk)
{
	if (port->flags & WR_PORTF_REMOTE_FLOW)
		return tk && (tk->flags & WR_TUNF_V6);
	return !!(port->flags & WR_PORTF_V6);
}

/* Whether that output gets an outer checksum: the port's setting for the
 * outer family (a UDP tunnel's default is on over IPv6 only), or the
 * flow's set_tunnel(flags=csum). */
static __always_inline int tunnel_csum(const struct wr_port *port, const struct wr_tun_key *tk,
				       int v6)
{
	return (port->flags & (v6 ? WR_PORTF_CSUM6 : WR_PORTF_CSUM)) ||
	       (tk && (tk->flags & WR_TUNF_CSUM));
}

/* The next GRE sequence number of `port`, in network order. Sequence
 * numbers are per tunnel port, shared by CPUs: the one atomic on the
 * packet path, only with seq on. */
static __always_inline __be32 gre_next_seq(struct wr_port *port)
{
	return bpf_htonl(wr_dry_run ? port->gre_seq : __sync_fetch_and_add(&port->gre_seq, 1));
}

/* Bytes of Geneve options tk emits: a multiple of 4, at most the maximum. */
static __always_inline __u32 gnv_optlen(const struct wr_tun_key *tk)
{
	__u32 n = tk ? tk->gnv_len : 0;

	return (n > WR_GENEVE_OPT_MAX ? WR_GENEVE_OPT_MAX : n) & ~3U;
}

static __always_inline __u32 tunnel_hdr_len(__u8 proto, __u16 flags, const struct wr_tun_key *tk,
					     __u16 port_flags)
{
	switch (proto) {
	case WR_PROTO_VXLAN:
		return sizeof(struct udphdr) + sizeof(struct vxlanhdr);
	case WR_PROTO_GENEVE:
		return sizeof(struct udphdr) + sizeof(struct genevehdr) + gnv_optlen(tk);
	case WR_PROTO_GRE:
		return sizeof(struct grehdr) + ((flags & WR_TUNF_CSUM) ? 4 : 0) +
		       ((port_flags & WR_PORTF_NO_KEY) ? 0 : 4) +
		       ((port_flags & WR_PORTF_SEQ) ? 4 : 0);
	case WR_PROTO_STT:
		return sizeof(struct tcphdr) + WR_STT_HDR_LEN;
	}
	return 0;
}

/* Writes tunnel key `id` into the outer header at h (IP header l3len
 * bytes long) built for port with tunnel flags `flags`: STT's goes in
 * with its own header (stt_fill_hdr). */
static __always_inline void put_tun_id(__u8 *h, __u32 l3len, const struct wr_port *port, __u8 flags,
				       __be64 id)
{
	__u8 *t = h + sizeof(struct ethhdr) + (l3len == sizeof(struct ipv6hdr) ?
						       sizeof(struct ipv6hdr) : sizeof(struct iphdr));
	__u32 key = (__u32)bpf_be64_to_cpu(id);

	if (port->proto == WR_PROTO_GRE) {
		if (!(port->flags & WR_PORTF_NO_KEY))
			*(__be32 *)(t + sizeof(struct grehdr) + ((flags & WR_TUNF_CSUM) ? 4 : 0)) =
				bpf_htonl(key);
	} else if (port->proto == WR_PROTO_VXLAN) {
		((struct vxlanhdr *)(t + sizeof(struct udphdr)))->vni = bpf_htonl(key << 8);
	} else if (port->proto == WR_PROTO_GENEVE) {
		((struct genevehdr *)(t + sizeof(struct udphdr)))->vni = bpf_htonl(key << 8);
	}
}

/* The MTU of the path a tunnel output takes, from the port or the device. */
static __always_inline __u32 path_mtu(struct __sk_buff *skb, const struct encap_out *out)
{
	__u32 mtu = 0;

	if (out->mtu)
		return out->mtu;
	if (ablated(ABL_MTU))
		return 0;
	bpf_check_mtu(skb, out->ifindex, &mtu, 0, 0);
	return mtu;
}

/*
 * Routes the outer packet for `port` (and the flow's tunnel key tk, may be
 * NULL) and writes into s->hdr every outer header field that depends only
 * on the port, the tunnel key and the route: what the next-hop cache keeps.
 * Fields of each packet (lengths, TOS, TTL, IP id and checksum, source
 * port, flow label, GRE sequence number) are encap_patch's. `flags` are the
 * tunnel flags the packet goes with. Returns 0 or a WR_DROP_* reason.
 */
static __always_inline int encap_route(struct __sk_buff *skb, const struct wr_port *port,
				       const struct wr_tun_key *tk, const struct frame_info *fi,
				       struct scratch *s, struct encap_out *out, __u8 flags)
{
	struct bpf_fib_lookup *fib = &s->fib;
	__u8 *h = s->hdr;
	__u16 pflags = port->flags;
	__u8 v6 = !!(pflags & WR_PORTF_V6);
	__u32 l3len;
	const __u8 *dst, *src;
	long rc;

	if (pflags & WR_PORTF_REMOTE_FLOW) {
		if (!tk || !(tk->set & WR_TKSET_DST))
			return WR_DROP_NO_ROUTE;
		dst = tk->dst;
		v6 = !!(tk->flags & WR_TUNF_V6);
	} else {
		dst = port->remote;
	}
	l3len = v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	src = port->local;
	if (addr_is_zero(src) && tk && (tk->set & WR_TKSET_SRC))
		src = tk->src;
	out->tun_id = (pflags & WR_PORTF_KEY_OUT_FLOW) ? (tk ? tk->tun_id : 0) : port->key_out;
	out->v6 = v6;
	out->csum = !!(flags & WR_TUNF_CSUM);
	out->hdr_len = tunnel_hdr_len(port->proto, flags, tk, pflags);
	if (!out->hdr_len)
		return WR_DROP_NO_PORT;
	out->hdr_len += sizeof(struct ethhdr) + l3len;

	/* Route to the remote endpoint. With forwarding enabled on the
	 * underlay the FIB answers with next hop and MACs; otherwise the packet
	 * goes to bpf_redirect_neigh and the kernel routes and resolves it. */
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = v6 ? 10 /* AF_INET6 */ : 2 /* AF_INET */;
	fib->l4_protocol = port->proto == WR_PROTO_GRE ? IPPROTO_GRE :
			   port->proto == WR_PROTO_STT ? IPPROTO_TCP : IPPROTO_UDP;
	fib->ifindex = port->ifindex ? port->ifindex : skb->ifindex;
	if (v6) {
		__builtin_memcpy(fib->ipv6_dst, dst, 16);
		__builtin_memcpy(fib->ipv6_src, src, 16);
	} else {
		fib->ipv4_dst = *(__be32 *)dst;
		fib->ipv4_src = *(__be32 *)src;
	}
	rc = ablated(ABL_FIB) ? BPF_FIB_LKUP_RET_SUCCESS :
	     bpf_fib_lookup(skb, fib, sizeof(*fib),
			    BPF_FIB_LOOKUP_OUTPUT | (addr_is_zero(src) ? BPF_FIB_LOOKUP_SRC : 0));
	out->ifindex = port->ifindex ? port->ifindex : fib->ifindex;
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		out->ifindex = fib->ifindex;
	} else if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* The FIB left the next hop (gateway or remote) in dst. */
		out->ifindex = fib->ifindex;
		out->neigh = NEIGH_VIA;
		if (v6)
			__builtin_memcpy(out->nh, fib->ipv6_dst, 16);
		else
			*(__be32 *)out->nh = fib->ipv4_dst;
	} else if (rc == BPF_FIB_LKUP_RET_BLACKHOLE || rc == BPF_FIB_LKUP_RET_UNREACHABLE ||
		   rc == BPF_FIB_LKUP_RET_PROHIBIT || !port->ifindex) {
		return WR_DROP_NO_ROUTE;
	} else {
		out->neigh = NEIGH_ROUTE;
	}
	if (out->neigh && (pflags & WR_PORTF_NH_MAC)) {
		__builtin_memcpy(fib->dmac, port->nh_mac, ETH_ALEN);
		__builtin_memcpy(fib->smac, port->local_mac, ETH_ALEN);
		out->neigh = NEIGH_NONE;
	}
	/* bpf_redirect_neigh only takes IP packets (by skb->protocol, which
	 * for an encapsulated ARP frame is still ARP). The control plane keeps
	 * managed neighbour entries for known remotes so this stays rare. */
	if (out->neigh && !fi->ip_version)
		return WR_DROP_NO_NEIGH;
	/* The source: the port's, the flow's, the FIB's, or the default. */
	if (addr_is_zero(src)) {
		struct wr_config *cfg = config();
		const __u8 *fallback = cfg ? (v6 ? cfg->local_v6 : cfg->local_v4) : src;

		if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
			if (v6 ? (fib->ipv6_src[0] | fib->ipv6_src[1] | fib->ipv6_src[2] | fib->ipv6_src[3]) == 0 :
				 fib->ipv4_src == 0)
				src = fallback;
			else
				src = v6 ? (const __u8 *)fib->ipv6_src : (const __u8 *)&fib->ipv4_src;
		} else {
			src = fallback;
		}
		if (addr_is_zero(src))
			return WR_DROP_NO_ROUTE;
	}
	out->mtu = port->mtu;
	if (!out->neigh)
		out->mtu = path_mtu(skb, out);

	/* Ethernet */
	__builtin_memcpy(h, fib->dmac, ETH_ALEN);
	__builtin_memcpy(h + 6, fib->smac, ETH_ALEN);
	*(__be16 *)(h + 12) = bpf_htons(v6 ? ETH_P_IPV6 : ETH_P_IP);

	/* IP */
	if (v6) {
		struct ipv6hdr *ip6 = (void *)(h + sizeof(struct ethhdr));

		ip6->nexthdr = fib->l4_protocol;
		__builtin_memcpy(ip6->saddr.in6_u.u6_addr8, src, 16);
		__builtin_memcpy(ip6->daddr.in6_u.u6_addr8, dst, 16);
	} else {
		struct iphdr *ip = (void *)(h + sizeof(struct ethhdr));
		const __u16 *w = (const __u16 *)ip;

		ip->frag_off = (flags & WR_TUNF_DF) ? bpf_htons(IP_DF) : 0;
		ip->protocol = fib->l4_protocol;
		ip->saddr = *(__be32 *)src;
		ip->daddr = *(__be32 *)dst;
		/* Version and protocol go in with each packet's words. */
		out->hsum = w[3] + w[6] + w[7] + w[8] + w[9];
	}

	/* Tunnel */
	__u8 *t = h + sizeof(struct ethhdr) + l3len;
	if (port->proto == WR_PROTO_GRE) {
		struct grehdr *g = (void *)t;
		__u16 gflags = 0;
		__u8 *f = t + sizeof(*g);

		if (flags & WR_TUNF_CSUM)
			gflags |= GRE_C;
		if (!(pflags & WR_PORTF_NO_KEY))
			gflags |= GRE_K;
		if (pflags & WR_PORTF_SEQ)
			gflags |= GRE_S;
		g->flags = bpf_htons(gflags);
		g->proto = bpf_htons(ETH_P_TEB);
		/* Checksum and reserved, filled in by outer_csum. */
		if (gflags & GRE_C)
			*(__u32 *)f = 0;
	} else if (port->proto != WR_PROTO_STT) {
		/* VXLAN or Geneve. */
		struct udphdr *uh = (void *)t;

		uh->dest = port->dst_port;
		uh->check = 0;
		if (port->proto == WR_PROTO_VXLAN) {
			struct vxlanhdr *vh = (void *)(uh + 1);

			vh->flags = VXLAN_I;
		} else {
			struct genevehdr *gh = (void *)(uh + 1);
			__u32 optlen = gnv_optlen(tk);

			gh->ver_optlen = optlen / 4;
			gh->flags = ((flags & WR_TUNF_OAM) ? GENEVE_O : 0) |
				    ((tk && (tk->set & WR_TKSET_GNV_CRIT)) ? GENEVE_C : 0);
			gh->proto = bpf_htons(ETH_P_TEB);
			if (tk && optlen)
				__builtin_memcpy(gh + 1, tk->gnv_opts, WR_GENEVE_OPT_MAX);
		}
	}
	put_tun_id(h, l3len, port, flags, out->tun_id);
	/* STT's TCP and STT headers are STT's to write (stt_fill_hdr). */
	return 0;
}

/*
 * Writes into the header encap_route made (s->hdr) the fields of this
 * packet: IP version, TOS, TTL, lengths (total: the outer frame's), id and
 * checksum (from the route's constant sum: incremental), the UDP source port
 * and the IPv6 flow label from out->hash, GRE's sequence number.
 */
static __always_inline void encap_patch(struct wr_port *port, struct scratch *s,
					const struct encap_out *out, __u8 flags, __u8 ttl, __u8 tos,
					__u32 total)
{
	__u8 *h = s->hdr;
	__u32 l3len = out->v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	__u8 *t = h + sizeof(struct ethhdr) + l3len;

	if (out->v6) {
		struct ipv6hdr *ip6 = (void *)(h + sizeof(struct ethhdr));

		*(__be32 *)ip6 = bpf_htonl(0x60000000 | ((__u32)tos << 20) | (out->hash & 0xfffff));
		ip6->payload_len = bpf_htons(total - sizeof(struct ethhdr) - sizeof(*ip6));
		ip6->hop_limit = ttl;
	} else {
		struct iphdr *ip = (void *)(h + sizeof(struct ethhdr));
		__u16 *w = (__u16 *)ip;
		/* Whole words, summed from registers: reading back bytes just
		 * stored one at a time would stall on store forwarding. */
		__u16 w0 = bpf_htons(0x4500 | tos), w1 = bpf_htons(total - sizeof(struct ethhdr));
		/* RFC 6864: with DF the ID has no use; without, it must vary. */
		__u16 w2 = (flags & WR_TUNF_DF) ? 0 : (__u16)bpf_get_prandom_u32();
		__u16 w4 = bpf_htons(((__u16)ttl << 8) | ip->protocol);

		w[0] = w0;
		w[1] = w1;
		w[2] = w2;
		w[4] = w4;
		ip->check = ~csum_fold32(out->hsum + w0 + w1 + w2 + w4);
	}
	if (port->proto == WR_PROTO_GRE) {
		if (port->flags & WR_PORTF_SEQ) {
			__u32 at = sizeof(struct grehdr) + (out->csum ? 4 : 0) +
				   ((port->flags & WR_PORTF_NO_KEY) ? 0 : 4);

			*(__be32 *)(t + (at & 0xf)) = gre_next_seq(port);
		}
	} else if (port->proto != WR_PROTO_STT) {
		struct udphdr *uh = (void *)t;

		uh->source = tunnel_sport(out->hash);
		uh->len = bpf_htons(total - sizeof(struct ethhdr) - l3len);
	}
}

/*
 * The next-hop cache: what routing a port's output with one tunnel key
 * gave (outer MACs, output device, source address, MTU) and the outer
 * header built from it, so that the FIB is not asked for every packet and
 * each packet only patches its own fields in (encap_patch). Per CPU,
 * direct-mapped by (port, tunnel key). GSO packets use it as any other:
 * their header is the same, and what their segments need more (a checksum
 * and a sequence number each) is gso.h's, on its own copy.
 *
 * A slot is valid while wr_config.seq is the one it was made under (a port
 * or a tunnel key changed: at once, as the flow cache) and for at most
 * NH_MAX_AGE_NS after it was made (clock.h's clock, to one jiffy, so up
 * to a jiffy more): routes and neighbours change in the kernel without telling the
 * datapath, and that is how soon a change takes effect. Only answers with
 * the MACs known are kept; one that leaves them to bpf_redirect_neigh asks
 * the FIB again with the next packet, which is how a new neighbour is
 * found. trace's dry run neither reads nor fills it.
 */
#define NH_CACHE_SLOTS 1024	/* per CPU, a power of two */
#define NH_MAX_AGE_NS (20 * 1000 * 1000ULL)

struct nh_cache_slot {
	__u64 tag;		/* wr_config.seq + 1; 0: never filled */
	__u64 made_ns;		/* coarse_now() when routed */
	__u32 port_no;
	__u32 tk_idx;
	struct encap_out out;
	__u8 hdr[OUTER_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NH_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, struct nh_cache_slot);
} wr_nh_cache SEC(".maps");

/* Copies an outer header of len bytes: its words only, not all OUTER_MAX
 * bytes, which for VXLAN over IPv4 would be twice the lines to touch. */
static __always_inline void hdr_copy(__u8 *dst, const __u8 *src, __u32 len)
{
#pragma unroll
	for (__u32 i = 0; i < OUTER_MAX / 8; i++)
		if (i * 8 < len)
			((__u64 *)dst)[i] = ((const __u64 *)src)[i];
}

/*
 * Builds the outer header for `port` (port_no; the flow's tunnel key tk,
 * slot tk_idx, may be NULL) into s->hdr and routes it: from the next-hop
 * cache, or routed and cached. inner_len is the frame's length without any
 * outer header (a replica's skb already carries one). Returns 0 or a
 * WR_DROP_* reason.
 */
static __always_inline int encap_build(struct __sk_buff *skb, struct wr_port *port,
				       __u32 port_no, const struct wr_tun_key *tk, __u32 tk_idx,
				       const struct frame_info *fi, const struct wr_flow_key *key,
				       struct scratch *s, struct encap_out *out, __u32 inner_len)
{
	struct wr_stat_block *c = counters();
	struct wr_cache_stats *cs = c ? &c->cache : NULL;
	struct wr_config *cfg = config();
	struct nh_cache_slot *slot = NULL;
	__u8 flags = 0, ttl, tos, ecn;
	__u32 i;
	__u64 now = 0, tag;
	__u16 pflags;
	int r;

	if (!cfg)
		return WR_DROP_NO_PORT;
	/* The change counter before the port is read, as classify takes it
	 * before its search: a change written meanwhile leaves the slot's tag
	 * behind. The barrier keeps the compiler from reading the port first. */
	tag = cfg->seq + 1;
	asm volatile("" ::: "memory");
	pflags = port->flags;
	if (pflags & WR_PORTF_DF)
		flags |= WR_TUNF_DF;
	if (tunnel_csum(port, tk, tunnel_v6(port, tk)))
		flags |= WR_TUNF_CSUM;
	if (tk)
		flags |= tk->flags & (WR_TUNF_DF | WR_TUNF_OAM);

	if (tk && (tk->set & WR_TKSET_TTL))
		ttl = tk->ttl;
	else if ((pflags & WR_PORTF_TTL_INHERIT) && fi->ip_version)
		ttl = key->nw_ttl;
	else
		ttl = port->ttl;
	if (tk && (tk->set & WR_TKSET_TOS))
		tos = tk->tos & ~ECN_MASK;
	else if ((pflags & WR_PORTF_TOS_INHERIT) && fi->ip_version)
		tos = key->ip_tos & ~ECN_MASK;
	else
		tos = port->tos & ~ECN_MASK;
	/* RFC 6040 normal mode: copy ECN, but never put CE on the outside. */
	ecn = fi->ip_version ? (key->ip_tos & ECN_MASK) : ECN_NOT_ECT;
	if (ecn == ECN_CE)
		ecn = ECN_ECT0;
	tos |= ecn;

	if (!wr_dry_run && !ablated(ABL_NH_CACHE)) {
		i = (port_no * 0x9e3779b1U + tk_idx * 0x85ebca6bU) >> 22;
		slot = bpf_map_lookup_elem(&wr_nh_cache, &i);
		now = coarse_now();
	}
	if (slot && slot->tag == tag && slot->port_no == port_no &&
	    slot->tk_idx == tk_idx && now - slot->made_ns < NH_MAX_AGE_NS) {
		*out = slot->out;
		hdr_copy(s->hdr, slot->hdr, out->hdr_len);
		if (cs)
			cs->nh_hits++;
	} else {
		r = encap_route(skb, port, tk, fi, s, out, flags);
		if (r)
			return r;
		if (cs)
			cs->nh_misses++;
		if (slot && !out->neigh && !(cfg->flags & WR_CFG_WRITING)) {
			slot->tag = tag;
			slot->made_ns = now;
			slot->port_no = port_no;
			slot->tk_idx = tk_idx;
			slot->out = *out;
			hdr_copy(slot->hdr, s->hdr, out->hdr_len);
		}
	}
	/* The packet's own id (as received, or as a masked set_field left
	 * it): the cached header has another packet's. */
	if (tk && (tk->set & WR_TKSET_ID_PKT) && (pflags & WR_PORTF_KEY_OUT_FLOW)) {
		out->tun_id = key->tun_id;
		put_tun_id(s->hdr, out->v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr), port, flags,
			   out->tun_id);
	}
	out->hash = tunnel_flow_hash(skb, key);
	encap_patch(port, s, out, flags, ttl, tos, inner_len + out->hdr_len);
	return 0;
}

/*
 * The bytes of the VLAN tag the kernel holds aside in skb (see
 * parse_inner_skb) that an encapsulated frame carries inside: the receiver
 * finds it nowhere else. STT's header has a field for it instead, and a
 * frame with a second tag is left as it is.
 */
static __always_inline __u32 aside_tag_len(const struct __sk_buff *skb, __u8 proto)
{
	return skb->vlan_present && proto != WR_PROTO_STT && !eth_is_vlan(skb->protocol) ?
		       sizeof(struct vlan_hdr) : 0;
}

/*
 * Writes the outer header at h (hlen bytes) at the start of a frame just
 * grown by hlen + tag bytes, and after it the frame's Ethernet header,
 * taken from where the growing left it (`at`), with the tag the kernel
 * holds aside (tag 4) put in after its MACs. By direct access, no helper
 * call: the grown head is linear and nothing shares it (bpf_skb_adjust_room
 * and bpf_skb_change_head unshare it), and whole words go in, the last
 * one ending at the end and overlapping the one before. A function of its
 * own: its few registers do not add to the deep callers' spills. Returns 0
 * or -1.
 */
static __noinline int put_outer(struct __sk_buff *skb, __u8 *h, __u32 hlen, __u32 tag, __u32 at)
{
	void *d = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	__u8 *inner;
	__u32 len, last;

	if (hlen < sizeof(struct ethhdr) ||
	    hlen > OUTER_MAX - sizeof(struct ethhdr) - sizeof(struct vlan_hdr))
		return -1;
	/* No-op masks: the verifier needs the bounds on these very values. */
	hlen &= 0x7f;
	tag &= sizeof(struct vlan_hdr);
	at &= 0x7f;
	if (d + at + sizeof(struct ethhdr) > end)
		return -1;
	inner = h + hlen;
	*(__u64 *)inner = *(__u64 *)(d + at);
	*(__u32 *)(inner + 8) = *(__u32 *)(d + at + 8);
	*(__u16 *)(inner + 12) = *(__u16 *)(d + at + 12);
	if (tag) {
		__be16 *type = (__be16 *)(inner + 2 * ETH_ALEN);

		type[2] = type[0];
		type[0] = skb->vlan_proto;
		type[1] = bpf_htons(skb->vlan_tci);
	}
	len = hlen + sizeof(struct ethhdr) + tag;
#pragma unroll
	for (__u32 i = 0; i < OUTER_MAX / 8; i++) {
		if ((i + 1) * 8 > len)
			break;
		if (d + (i + 1) * 8 > end)
			return -1;
		((__u64 *)d)[i] = ((__u64 *)h)[i];
	}
	last = (len - 8) & 0x7f;
	if (d + last + 8 > end)
		return -1;
	*(__u64 *)(d + last) = *(__u64 *)(h + last);
	return 0;
}

/*
 * Puts the outer header built by encap_build in front of the frame fi
 * describes, and the tag the kernel holds aside back into the frame.
 * Returns 0 or a WR_DROP_* reason.
 */
static __always_inline int encap_push(struct __sk_buff *skb, struct scratch *s,
				      const struct encap_out *out, __u8 proto,
				      const struct frame_info *fi)
{
	__u32 hlen = out->hdr_len;
	__u32 tag = aside_tag_len(skb, proto);

	if (hlen < sizeof(struct ethhdr) ||
	    hlen > OUTER_MAX - sizeof(struct ethhdr) - sizeof(struct vlan_hdr))
		return WR_DROP_ENCAP;
	if (fi->ip_version) {
		__u64 flags = (out->v6 ? BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 : BPF_F_ADJ_ROOM_ENCAP_L3_IPV4) |
			      (proto == WR_PROTO_GRE ? BPF_F_ADJ_ROOM_ENCAP_L4_GRE :
						       BPF_F_ADJ_ROOM_ENCAP_L4_UDP) |
			      BPF_F_ADJ_ROOM_ENCAP_L2_ETH |
			      BPF_F_ADJ_ROOM_ENCAP_L2(sizeof(struct ethhdr) + tag);

		/* A UDP GSO packet's gso_size is the size of its datagrams,
		 * which the room must not change (the kernel refuses to grow
		 * one otherwise); tunnel_output checked that they fit. */
		if (skb->gso_size && fi->ip_proto_l4 == IPPROTO_UDP)
			flags |= BPF_F_ADJ_ROOM_FIXED_GSO;
		/* STT is a TCP segment the kernel has no GSO type for: it only
		 * ever takes frames that need no segmenting down this path. */
		if (proto == WR_PROTO_STT)
			flags = 0;

		/* The room goes after the original Ethernet header, which
		 * becomes the inner one at the end of the room. */
		if (bpf_skb_adjust_room(skb, hlen + tag, BPF_ADJ_ROOM_MAC, flags) ||
		    put_outer(skb, s->hdr, hlen, tag, 0))
			return WR_DROP_ENCAP;
	} else {
		/* Other frames (ARP) grow at the head, their Ethernet header
		 * where it was. */
		if (bpf_skb_change_head(skb, hlen + tag, 0) ||
		    put_outer(skb, s->hdr, hlen, tag, hlen + tag))
			return WR_DROP_ENCAP;
	}
	/* The tag is in the frame now; skb->protocol, the outer one or not
	 * a VLAN's, keeps the pop from taking another off the bytes. */
	if (tag && bpf_skb_vlan_pop(skb))
		return WR_DROP_ENCAP;
	return 0;
}

/* Sends the encapsulated packet on its way: a verdict for TC. */
static __always_inline long encap_redirect(const struct encap_out *out)
{
	if (out->neigh == NEIGH_ROUTE)
		return bpf_redirect_neigh(out->ifindex, NULL, 0, 0);
	if (out->neigh == NEIGH_VIA) {
		struct bpf_redir_neigh nh = {};

		nh.nh_family = out->v6 ? 10 : 2;
		if (out->v6)
			__builtin_memcpy(&nh.ipv6_nh, out->nh, 16);
		else
			nh.ipv4_nh = *(__be32 *)out->nh;
		return bpf_redirect_neigh(out->ifindex, &nh, sizeof(nh), 0);
	}
	return bpf_redirect(out->ifindex, 0);
}

/* ---- One tunnel output --------------------------------------------------- */

/* The state of a flow's actions while they are carried out (actions.h):
 * what a tunnel output needs to know of those before it. */
struct exec_state {
	__u16 in_port;
	__u8 tk_done;		/* the skb carries an outer header already */
	__u8 counted;		/* the packet counted as encapsulated */
	__u32 out_hdr_len;	/* outer header length in place */
	__u32 port_no;		/* the output being done */
	__u32 tk_idx;		/* its set_tunnel's key, or WR_NO_TUN_KEY */
	__u32 last;		/* it is the last output */
	__u32 segment;		/* a GSO packet: every tunnel output segments it (a group's, gso.h) */
	__u32 inner_len;	/* the frame's length without outer headers */
	__u32 gso_size;		/* the frame's GSO size as it came, 0 if it is no GSO packet */
	__u32 held;		/* the frame waits whole in wr_tx_buf; the skb is a segment (gso.h) */
	__u8 order[WR_MAX_ACTIONS];	/* a GSO packet's actions, in the order they run (gso.h) */
	__u32 tag;		/* bytes of the tag the kernel holds aside that the output puts in the frame */
	__u32 inner_tag;	/* bytes of that tag the frame carries already, which fi leaves out */
	__u32 sent;		/* an output has taken the packet or a copy of it */
};

/* Starts the actions on skb, a frame as it came: nothing done yet. */
static __always_inline void exec_begin(struct exec_state *st, struct __sk_buff *skb, __u16 in_port)
{
	__builtin_memset(st, 0, sizeof(*st));
	st->in_port = in_port;
	st->gso_size = skb->gso_size;
}

/* encap_build for the output st describes, as a global function: its frame
 * sits beside the ICMP path's, not under it. Returns 0 or a WR_DROP_*. */
__noinline int build_outer(struct __sk_buff *skb, const struct frame_info *fi,
			   const struct wr_flow_key *key, struct exec_state *st,
			   struct encap_out *out)
{
	const struct wr_tun_key *tk = NULL;
	struct wr_port *port;
	struct scratch *s;
	__u32 zero = 0;

	if (!fi || !key || !st || !out)
		return WR_DROP_ENCAP;
	port = bpf_map_lookup_elem(&wr_ports, &st->port_no);
	s = bpf_map_lookup_elem(&wr_scratch, &zero);
	if (!port || !s)
		return WR_DROP_NO_PORT;
	__builtin_memset(out, 0, sizeof(*out));
	st->tag = aside_tag_len(skb, port->proto);
	/* A replica's skb already carries the last remote's outer header; a
	 * held frame waits whole in the send buffer (gso.h). */
	if (!st->held)
		st->inner_len = skb->len + st->tag - (st->tk_done ? st->out_hdr_len : 0);
	if (st->tk_idx != WR_NO_TUN_KEY)
		tk = bpf_map_lookup_elem(&wr_tun_keys, &st->tk_idx);
	return encap_build(skb, port, st->port_no, tk, st->tk_idx, fi, key, s, out, st->inner_len);
}

/*
 * Finishes a tunnel output whose outer header (hlen bytes) is in place
 * (hlen 0: a device puts it on, gso.h), or which failed with drop reason
 * r: counts it, then sends the packet (the flow's last output) or a clone
 * of it. Returns a TC verdict, or -1 to go on.
 */
static __always_inline long output_done(struct __sk_buff *skb, struct exec_state *st,
					const struct encap_out *out, __u32 hlen, int r)
{
	if (r) {
		drop(r, st->in_port);
		return st->last ? TC_ACT_SHOT : -1;
	}
	if (!st->counted)
		stat_inc(WR_STAT_ENCAP);
	st->counted = 1;
	if (hlen) {
		st->tk_done = 1;
		st->out_hdr_len = hlen;
	}
	port_tx(st->port_no, st->inner_len);
	if (st->last)
		return encap_redirect(out);
	if (out->neigh) {
		/* A clone cannot wait for neighbour resolution; count it lost. */
		drop(WR_DROP_NO_ROUTE, st->in_port);
		return -1;
	}
	if (bpf_clone_redirect(skb, out->ifindex, 0))
		drop(WR_DROP_ENCAP, st->in_port);
	return -1;
}

#endif /* WR_ENCAP_H */
