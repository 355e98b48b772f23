// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The smallest useful warren programs: count what passes at XDP and at TC on
 * per-CPU counters, plus a packet rewriter whose output the tests compare byte
 * for byte. The first demo and the loader's privileged tests run these.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "counter.h"

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	count(WR_SLOT_XDP, ctx->data_end - ctx->data);
	return XDP_PASS;
}

/* A second version of xdp_count, so tests can replace one program with another
 * while attached and see which one the kernel runs. */
SEC("xdp")
int xdp_count_v2(struct xdp_md *ctx)
{
	count(WR_SLOT_XDP_V2, ctx->data_end - ctx->data);
	return XDP_PASS;
}

SEC("tc")
int tc_count(struct __sk_buff *skb)
{
	count(WR_SLOT_TC, skb->len);
	return TC_ACT_OK;
}

/* Bounce an IPv4 frame back where it came from: swap the MAC addresses,
 * decrement the TTL and patch the header checksum incrementally (RFC 1624).
 * Anything that is not IPv4 with a TTL above 1 passes untouched. */
SEC("xdp")
int xdp_reflect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	__u8 mac[ETH_ALEN];
	__u32 sum;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->ttl <= 1)
		return XDP_PASS;

	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);

	/* TTL is the high byte of its 16-bit word, so it weighs 0x0100. A sum
	 * of 0xffff folds to 0, the form a checksum computed afresh takes. */
	ip->ttl--;
	sum = (__u32)ip->check + bpf_htons(0x0100);
	ip->check = (__u16)(sum + (sum >= 0xffff));
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
