// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A VLAN device for a workload, where the kernel has no 8021q module: at
 * TC egress of the workload's device every frame gets tag 10 in the skb's
 * metadata, as a VLAN device over a device with VLAN offload leaves it (a
 * GSO packet stays whole); at TC ingress the frames of VLAN 10 lose their
 * tag and go on, counted, and every other frame is dropped, counted too: a
 * frame that lost its tag on the way never arrives.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define VID 10

/* [0]: frames of VLAN 10 received, [1]: other frames dropped. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} vlan_counts SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *n = bpf_map_lookup_elem(&vlan_counts, &i);

	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("tc")
int tag_egress(struct __sk_buff *skb)
{
	return bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), VID) ? TC_ACT_SHOT : TC_ACT_OK;
}

SEC("tc")
int untag_ingress(struct __sk_buff *skb)
{
	if (!skb->vlan_present || (skb->vlan_tci & 0xfff) != VID || bpf_skb_vlan_pop(skb)) {
		count(1);
		return TC_ACT_SHOT;
	}
	count(0);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
