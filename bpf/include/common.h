/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Includes and constants every datapath file needs. The uapi headers come
 * from the build host (Debian's are Linux 6.1); anything newer is defined
 * here, with the kernel version that brought it.
 */
#ifndef WR_COMMON_H
#define WR_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#pragma clang diagnostic push
#pragma clang diagnostic error "-Wpadded"
#include "warren.h"
#pragma clang diagnostic pop
#include "ablate.h"

#ifndef BPF_FIB_LOOKUP_SKIP_NEIGH
#define BPF_FIB_LOOKUP_SKIP_NEIGH (1U << 2)	/* Linux 6.3 */
#endif
#ifndef BPF_FIB_LOOKUP_SRC
#define BPF_FIB_LOOKUP_SRC (1U << 4)		/* Linux 6.7 */
#endif
/* bpf_skb_adjust_room flags of Linux 6.3, absent from older uapi headers. */
#define WR_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)
#define WR_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#ifndef BPF_F_XDP_HAS_FRAGS
#define BPF_F_XDP_HAS_FRAGS (1U << 5)		/* Linux 5.18 */
#endif

#define ETH_P_TEB 0x6558	/* Transparent Ethernet Bridging */
#define VLAN_TAG_PRESENT 0x1000	/* in wr_flow_key.vlan_tci, as Open vSwitch does */
#define IP_MF 0x2000
#define IP_DF 0x4000
#define IP_OFFSET 0x1fff
#define ECN_MASK 0x03
#define ECN_NOT_ECT 0x00
#define ECN_ECT1 0x01
#define ECN_ECT0 0x02
#define ECN_CE 0x03

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Same in XDP and TC: the packet as the verifier knows it. */
struct packet {
	void *data;
	void *end;
};

struct vlan_hdr {
	__be16 tci;
	__be16 proto;
};

/* 16-byte address helpers: IPv4 sits in the first word. */
static __always_inline void addr_copy(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, 16);
}

static __always_inline void addr_set4(__u8 *dst, __be32 a)
{
	__u32 *w = (__u32 *)dst;

	w[0] = a;
	w[1] = 0;
	w[2] = 0;
	w[3] = 0;
}

static __always_inline int addr_is_zero(const __u8 *a)
{
	const __u64 *w = (const __u64 *)a;

	return (w[0] | w[1]) == 0;
}

#endif /* WR_COMMON_H */
