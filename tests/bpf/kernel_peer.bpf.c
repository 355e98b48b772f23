// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Drives a kernel vxlan device in external (collect_md) mode from TC, the
 * way the kernel's own tunnel selftests do, so interop tests can talk to
 * the kernel's metadata-based tunnel: frames from the workload get a tunnel
 * key and go to the vxlan device; frames from it must carry the expected
 * key and go to the workload.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct peer_config {
	__u32 vxlan_ifindex;
	__u32 workload_ifindex;
	__u32 remote;		/* IPv4, host order as bpf_tunnel_key wants */
	__u32 vni;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct peer_config);
} peer_config SEC(".maps");

/* Frames the vxlan device delivered with the right key. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} peer_received SEC(".maps");

SEC("tc")
int to_tunnel(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct peer_config *c = bpf_map_lookup_elem(&peer_config, &zero);
	struct bpf_tunnel_key key = {};

	if (!c)
		return TC_ACT_SHOT;
	key.tunnel_id = c->vni;
	key.remote_ipv4 = c->remote;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), BPF_F_ZERO_CSUM_TX))
		return TC_ACT_SHOT;
	return bpf_redirect(c->vxlan_ifindex, 0);
}

SEC("tc")
int from_tunnel(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct peer_config *c = bpf_map_lookup_elem(&peer_config, &zero);
	struct bpf_tunnel_key key = {};
	__u64 *n;

	if (!c || bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) || key.tunnel_id != c->vni)
		return TC_ACT_SHOT;
	n = bpf_map_lookup_elem(&peer_received, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return bpf_redirect(c->workload_ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
