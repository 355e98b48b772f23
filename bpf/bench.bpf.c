// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Baselines for `deno task bench`, measured beside warren in the same run:
 *
 *   bench_xdp_drop   XDP_DROP and nothing else: the cost of running at all.
 *   bench_xdp_floor  parses Ethernet, IPv4 and UDP and bumps a per-CPU
 *                    counter: the least any tunnel endpoint must do.
 *   bench_tc_floor   the same at TC.
 *   bench_xdp_redirect  redirects every frame to one device: what an XDP
 *                    redirect costs by itself.
 *   bench_tc_clone   hands a copy of every frame to one device's transmit
 *                    and drops the frame: feeds a kernel vxlan device from
 *                    a test-run, its replication timed with it.
 *   bench_xdp_floor_redirect  the floor, then a redirect to the same device:
 *                    the least a decapsulating endpoint that forwards must
 *                    do, the baseline of warren's decapsulation figures.
 *   bench_xdp_tx     sends every frame back out (XDP_TX): the live-frames
 *                    traffic generator.
 *   bench_xdp_count  counts what arrives and drops it: the receiver.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "counter.h"

/* Ethernet, IPv4, UDP, each bounds-checked: 1 when the frame is UDP. */
static __always_inline int parse_udp(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *uh;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_UDP)
		return 0;
	uh = (void *)ip + ip->ihl * 4;
	if ((void *)(uh + 1) > end)
		return 0;
	return uh->dest != 0;
}

SEC("xdp")
int bench_xdp_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("xdp")
int bench_xdp_floor(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;

	if (parse_udp(data, end))
		count(WR_SLOT_XDP, end - data);
	return XDP_DROP;
}

SEC("tc")
int bench_tc_floor(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;

	if (parse_udp(data, end))
		count(WR_SLOT_TC, skb->len);
	return TC_ACT_SHOT;
}

/* Set before load: where bench_xdp_redirect sends frames. */
const volatile __u32 bench_redirect_ifindex = 0;

SEC("xdp")
int bench_xdp_redirect(struct xdp_md *ctx)
{
	return bpf_redirect(bench_redirect_ifindex, 0);
}

SEC("tc")
int bench_tc_clone(struct __sk_buff *skb)
{
	bpf_clone_redirect(skb, bench_redirect_ifindex, 0);
	return TC_ACT_SHOT;
}

SEC("xdp")
int bench_xdp_floor_redirect(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;

	if (!parse_udp(data, end))
		return XDP_DROP;
	count(WR_SLOT_XDP, end - data);
	return bpf_redirect(bench_redirect_ifindex, 0);
}

SEC("xdp")
int bench_xdp_tx(struct xdp_md *ctx)
{
	return XDP_TX;
}

SEC("xdp")
int bench_xdp_count(struct xdp_md *ctx)
{
	count(WR_SLOT_XDP_V2, ctx->data_end - ctx->data);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
