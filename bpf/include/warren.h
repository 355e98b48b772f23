/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every struct that both the BPF programs and warren's TypeScript read.
 *
 * Rules, because src/maps/layouts.ts mirrors this file field by field and
 * tests/object_test.ts checks it against the object's BTF, without root:
 *   - fixed-width types only, no bool, no enums in structs;
 *   - every hole filled by an explicit pad field, sizes a multiple of 8;
 *   - byte order stated per field: host order unless the type is __be*
 *     or the comment says "network order";
 *   - constants TypeScript copies are enumerators, not #defines, and each
 *     enum is named in struct wr_constants (at the end): BTF records
 *     types, never macros.
 *
 * Addresses are 16 bytes wide for both families: an IPv4 address sits in
 * the first 4 bytes, the rest zero, and a flag elsewhere says which family.
 */
#ifndef WARREN_H
#define WARREN_H

#include <linux/types.h>

/* Bumped whenever a pinned map's layout changes meaning. warren refuses to
 * reuse pins written under another version (see src/tunnel/pins.ts). */
enum wr_layout_version {
	WR_LAYOUT_VERSION = 4,
};

/* ---- Demo and test counters (counter.bpf.c) ---------------------------- */

/* Packets and bytes seen by one hook on one CPU. */
struct wr_counter {
	__u64 packets;
	__u64 bytes;
};

/* Slots of the demo/test counter map. */
enum wr_counter_slot {
	WR_SLOT_XDP = 0,
	WR_SLOT_TC = 1,
	WR_SLOT_XDP_V2 = 2,
	WR_SLOT_MAX = 4,
};

/* ---- Sizes ------------------------------------------------------------- */

enum wr_size {
	WR_MAX_PORTS = 256,
	WR_MAX_MASKS = 32,
	WR_MAX_ACTIONS = 8,
	WR_GENEVE_OPT_MAX = 32,	/* bytes of Geneve options a tunnel key emits */
	WR_DEFAULT_MAX_FLOWS = 65536,
	WR_DEFAULT_MAX_TUN_KEYS = 65536,
	WR_MAX_OWNERS = 1024,	/* owners of flows, the operator's (0) included */
	WR_IFINDEX_DIRECT = 4096,	/* local ports' ifindexes below it: wr_ifindex_ports */
};

/* STT: the header before the inner frame, and reassembly's bounds. A
 * frame's length travels in 16 bits of the TCP sequence number. */
enum wr_stt_size {
	WR_STT_HDR_LEN = 18,
	WR_STT_FRAME_MAX = 65535,
	WR_STT_SLOTS_PER_CPU = 16,	/* frames each CPU reassembles at once */
	WR_STT_MAX_SEGS = 64,		/* segments of one frame */
	WR_STT_DEFAULT_TIMEOUT_MS = 1000,	/* an incomplete frame's life */
};

/* ---- Ports ------------------------------------------------------------- */

enum wr_port_kind {
	WR_PORT_NONE = 0,
	WR_PORT_LOCAL = 1,	/* a netdev: a workload's veth, a tap ... */
	WR_PORT_TUNNEL = 2,
};

enum wr_proto {
	WR_PROTO_NONE = 0,
	WR_PROTO_VXLAN = 1,
	WR_PROTO_GENEVE = 2,
	WR_PROTO_GRE = 3,
	WR_PROTO_STT = 4,
};

/* wr_port.flags */
enum wr_port_flag {
	WR_PORTF_XDP		= 0x0001,	/* local: its peer takes XDP redirects */
	WR_PORTF_REMOTE_FLOW	= 0x0002,	/* tunnel: remote_ip=flow */
	WR_PORTF_KEY_IN_FLOW	= 0x0004,	/* tunnel: in_key=flow (any key accepted) */
	WR_PORTF_KEY_OUT_FLOW	= 0x0008,	/* tunnel: out_key=flow (from set_tunnel) */
	WR_PORTF_TTL_INHERIT	= 0x0010,
	WR_PORTF_TOS_INHERIT	= 0x0020,
	WR_PORTF_DF		= 0x0040,	/* set DF on the outer header */
	WR_PORTF_CSUM		= 0x0080,	/* UDP/GRE checksum on transmit over IPv4 */
	WR_PORTF_SEQ		= 0x0100,	/* GRE sequence numbers */
	WR_PORTF_V6		= 0x0200,	/* remote and local are IPv6 */
	WR_PORTF_NO_KEY		= 0x0400,	/* GRE: no key field at all */
	WR_PORTF_NH_MAC		= 0x0800,	/* nh_mac is a configured neighbour */
	WR_PORTF_MSS_CLAMP	= 0x1000,	/* clamp TCP MSS of encapsulated SYNs */
	WR_PORTF_NET_FLOW	= 0x2000,	/* tunnel: net=flow, the packet's tun_id is its net */
	WR_PORTF_CSUM6		= 0x4000,	/* UDP/GRE checksum on transmit over IPv6 */
};

/* A port, indexed by port number (1..WR_MAX_PORTS-1; 0 means none). */
struct wr_port {
	__u32 ifindex;		/* local: its device; tunnel: underlay device, 0 = by route */
	__u8 kind;		/* enum wr_port_kind */
	__u8 proto;		/* enum wr_proto, tunnels only */
	__u16 flags;		/* WR_PORTF_* */
	__be16 dst_port;	/* UDP (or STT's TCP) destination port */
	__u8 ttl;		/* outer TTL unless TTL_INHERIT */
	__u8 tos;		/* outer DSCP<<2 unless TOS_INHERIT */
	__u16 mtu;		/* underlay MTU override, 0 = the device's */
	__u16 pad0;
	__be64 key_in;		/* key a packet must carry unless KEY_IN_FLOW */
	__be64 key_out;		/* key sent unless KEY_OUT_FLOW */
	__u8 remote[16];	/* fixed remote unless REMOTE_FLOW */
	__u8 local[16];		/* local endpoint, all zero = the route's source */
	__u8 nh_mac[6];		/* neighbour MAC when NH_MAC and the FIB has none */
	__u8 local_mac[6];	/* the underlay device's MAC, for NH_MAC */
	__u32 gre_seq;		/* next GRE sequence number (datapath-owned) */
	__u32 net;		/* the network it stamps on what it receives, 0 = none */
	__u32 gso_ifindex;	/* VXLAN: the kernel device for GSO packets with a checksum, 0 = none */
};

/* Names of a port, for people; the datapath never reads them. */
struct wr_port_info {
	__u8 name[16];		/* the port's name, NUL-padded */
	__u8 device[16];	/* local: its netdev; tunnel: the underlay device */
};

/* Which tunnel port a packet arriving at a local endpoint belongs to. An
 * entry with ipproto 0 and dst_port 0 only says "this address is a local
 * endpoint", so malformed packets to it count as ours. */
struct wr_endpoint_key {
	__u8 addr[16];		/* the local endpoint address (outer destination) */
	__u8 ipproto;		/* IPPROTO_UDP, IPPROTO_GRE or IPPROTO_TCP (STT) */
	__u8 v6;		/* 1 when addr is IPv6 */
	__be16 dst_port;	/* 0 for GRE */
	__u32 pad0;
};

struct wr_endpoint {
	__u16 port;		/* the flow-based (remote_ip=flow) port, 0 = none */
	__u8 fixed_remotes;	/* ports with a fixed remote exist: ask wr_remotes */
	__u8 proto;		/* enum wr_proto spoken on this endpoint */
	__u32 pad0;
};

/* Port-based tunnels: (endpoint, remote) -> port. */
struct wr_remote_key {
	struct wr_endpoint_key ep;
	__u8 remote[16];
};

/* ---- Tunnel keys ------------------------------------------------------- */

/* Tunnel flags, in wr_flow_key.tun_flags and wr_tun_key.flags. */
enum wr_tun_flag {
	WR_TUNF_KEY	= 0x01,	/* the tunnel header carries a key */
	WR_TUNF_CSUM	= 0x02,	/* checksum present (UDP non-zero, GRE C bit) */
	WR_TUNF_DF	= 0x04,	/* outer DF set */
	WR_TUNF_OAM	= 0x08,	/* Geneve O bit */
	WR_TUNF_V6	= 0x40,	/* outer header is IPv6 */
	WR_TUNF_PRESENT	= 0x80,	/* the packet arrived through a tunnel */
};

/* wr_tun_key.set: which optional fields a set_tunnel gave. */
enum wr_tun_key_set {
	WR_TKSET_TOS	= 0x01,
	WR_TKSET_TTL	= 0x02,
	WR_TKSET_DST	= 0x04,
	WR_TKSET_SRC	= 0x08,
	WR_TKSET_ID	= 0x10,
	WR_TKSET_GNV_CRIT = 0x20,	/* gnv_opts holds a critical option */
	WR_TKSET_ID_PKT = 0x40,	/* no ID: the id is the packet's, as a masked set_field left it */
};

/* What set_tunnel(...) sets, indexed by the action's arg. A
 * WR_ACT_SET_FIELD's value and mask use a slot too, in dst and src, the
 * rest zero: slots are shared by content and counted alike. */
struct wr_tun_key {
	__be64 tun_id;
	__u8 dst[16];
	__u8 src[16];		/* all zero: the port's local, else the route's */
	__u8 tos;
	__u8 ttl;
	__u8 flags;		/* WR_TUNF_KEY/CSUM/DF/OAM/V6 */
	__u8 set;		/* WR_TKSET_* */
	__u8 gnv_len;		/* bytes of gnv_opts used, a multiple of 4 */
	__u8 pad0[3];
	__u8 gnv_opts[WR_GENEVE_OPT_MAX];	/* Geneve option TLVs, wire format */
};

/* ---- Flows ------------------------------------------------------------- */

/* wr_flow_key.ip_frag: bit 0 "is a fragment", bit 1 "not the first", so
 * that yes/no/first/later/not_later are each one value under one mask. */
enum wr_frag {
	WR_FRAG_NONE	= 0,
	WR_FRAG_FIRST	= 1,
	WR_FRAG_LATER	= 3,
};

/* Everything a flow can match on. Header fields are in network order, as
 * in the packet; a mask of the same struct selects the bits that matter. */
struct wr_flow_key {
	__u16 in_port;
	__u8 tun_flags;		/* WR_TUNF_* */
	__u8 tun_tos;
	__u8 tun_ttl;
	__u8 ip_proto;		/* ARP: the opcode's low byte */
	__u8 ip_tos;		/* DSCP << 2 | ECN */
	__u8 ip_frag;		/* WR_FRAG_* */
	__be64 tun_id;
	__u8 tun_src[16];
	__u8 tun_dst[16];
	__u8 eth_src[6];
	__u8 eth_dst[6];
	__be16 eth_type;	/* after VLAN tags */
	__be16 vlan_tci;	/* first tag, with 0x1000 set when tagged */
	__u8 ip_src[16];	/* ARP: sender protocol address */
	__u8 ip_dst[16];	/* ARP: target protocol address */
	__be16 tp_src;		/* ICMP: type */
	__be16 tp_dst;		/* ICMP: code */
	__be16 gnv_class;	/* first Geneve option: class */
	__u8 gnv_type;		/* ... its type */
	__u8 gnv_len;		/* ... its data length in bytes */
	__u8 gnv_data[8];	/* ... its first data bytes */
	__u32 net;		/* the network, stamped by the ingress port (or set_field) */
	__be32 ipv6_label;	/* IPv6 flow label, 20 bits */
	__u8 nd_target[16];	/* ICMPv6 ND (type 135/136, code 0): target */
	__u8 arp_sha[6];	/* ARP: sender MAC; ND: source link-layer option */
	__u8 arp_tha[6];	/* ARP: target MAC; ND: target link-layer option */
	__be16 tcp_flags;	/* TCP flags, 12 bits */
	__u8 nw_ttl;		/* IPv4 TTL or IPv6 hop limit */
	__u8 pad0;
};

#define WR_FLOW_KEY_WORDS (sizeof(struct wr_flow_key) / 8)

/* A mask, with what the lookup needs to know about it. */
struct wr_mask {
	struct wr_flow_key bits;
	__u32 id;		/* stable id, part of every flow index key under it */
	__u16 max_priority;	/* no flow under this mask has a higher priority */
	__u16 pad0;
	__u32 flows;		/* flows under this mask (control plane bookkeeping) */
	__u32 pad1;
};

/* The masks of one table generation, highest max_priority first. */
struct wr_mask_set {
	__u32 count;
	__u32 pad0;
	struct wr_mask masks[WR_MAX_MASKS];
};

/* Key of the flow index: a packet's key under one mask. An entry that is
 * not part of the live generation may have a stand-in under the same key
 * with alt 1: the replacement an owner's apply staged (see
 * src/tunnel/flows/commit.ts). */
struct wr_flow_index_key {
	__u32 mask_id;
	__u32 alt;		/* 0; 1: a staged replacement */
	struct wr_flow_key key;
};

/* Actions, as the control plane compiles them: run in order. Rewrites and
 * outputs to local ports come first, in the order written, then tunnel
 * outputs (each with its set_tunnel), and exactly one output or pass is
 * marked last; every output before it works on a clone. A drop stands
 * alone. A rewrite of a layer the packet has not is skipped (a VLAN TCI
 * rewrite pushes a tag instead, as Open vSwitch's mod_vlan_vid does), and
 * so is an output to the port the packet came in on, unless it is
 * WR_ACT_IN_PORT or flagged WR_ACTF_HAIRPIN, as in Open vSwitch. (A GSO
 * packet's tunnel outputs run in an order of their own, the last of it on
 * the packet: gso.h.) */
enum wr_action_op {
	WR_ACT_NONE = 0,
	WR_ACT_OUTPUT = 1,	/* to local port `port` */
	WR_ACT_TUNNEL = 2,	/* to tunnel port `port`, arg = wr_tun_keys index or WR_NO_TUN_KEY */
	WR_ACT_DROP = 3,
	WR_ACT_PASS = 4,	/* hand the packet to the kernel stack */
	WR_ACT_GROUP = 5,	/* a copy to each bucket of group `arg` (alone in a flow) */
	WR_ACT_SET_NET = 6,	/* net = `arg`, then look the packet up again (alone in a flow) */
	WR_ACT_IN_PORT = 7,	/* to the local port the packet came in on */
	WR_ACT_SET_ETH_SRC = 8,	/* the 6 bytes of `port` and `arg` */
	WR_ACT_SET_ETH_DST = 9,
	WR_ACT_SET_IP4_SRC = 10,/* `arg`, in network order */
	WR_ACT_SET_IP4_DST = 11,
	WR_ACT_SET_TOS = 12,	/* the IPv4 TOS or IPv6 traffic class bits in `port` to `arg` */
	WR_ACT_SET_TTL = 13,	/* IPv4 TTL or IPv6 hop limit = `arg` */
	WR_ACT_DEC_TTL = 14,	/* one less; a packet it would take to 0 is dropped */
	WR_ACT_SET_TP_SRC = 15,	/* TCP or UDP port = `arg` */
	WR_ACT_SET_TP_DST = 16,
	WR_ACT_PUSH_VLAN = 17,	/* a new outermost tag: TPID `port`, TCI `arg` (host order) */
	WR_ACT_POP_VLAN = 18,	/* the outermost tag off, if any */
	WR_ACT_SET_VLAN = 19,	/* the outermost TCI's bits in `port` to `arg` (untagged: a new 802.1Q tag) */
	/* A field too wide for an action, or some bits of one: `port` names
	 * it (enum wr_set_field); wr_tun_keys slot `arg` holds the value in
	 * `dst` and the bits it sets in `src`, in network order. */
	WR_ACT_SET_FIELD = 24,
};

/* wr_action.port of WR_ACT_SET_FIELD: the field set, and so how many
 * bytes of the value and mask count. */
enum wr_set_field {
	WR_SF_ETH_SRC = 1,	/* 6 bytes */
	WR_SF_ETH_DST = 2,
	WR_SF_IP4_SRC = 3,	/* 4 bytes */
	WR_SF_IP4_DST = 4,
	WR_SF_IP6_SRC = 5,	/* 16 bytes */
	WR_SF_IP6_DST = 6,
	WR_SF_TP_SRC = 7,	/* 2 bytes */
	WR_SF_TP_DST = 8,
	WR_SF_TUN_ID = 9,	/* 8 bytes: the packet's tunnel id, for the outputs after it */
};

/* wr_action.flags */
enum wr_action_flag {
	WR_ACTF_LAST = 0x01,	/* the packet itself goes here, not a clone */
	/* An output that may go to the port the packet came in on (it follows
	 * Open vSwitch's load:0->in_port); any other output there is skipped. */
	WR_ACTF_HAIRPIN = 0x02,
};

/* wr_action.arg of a tunnel output without set_tunnel. Alone in its enum:
 * it does not fit an int, and so makes its enum unsigned. */
enum wr_no_tun_key {
	WR_NO_TUN_KEY = 0xffffffff,
};

struct wr_action {
	__u8 op;		/* enum wr_action_op */
	__u8 flags;		/* WR_ACTF_* */
	__u16 port;
	__u32 arg;
};

/* wr_flow_entry.flags */
enum wr_flow_flag {
	WR_FLOWF_LOCAL_XDP	= 0x01,	/* only output is an XDP-capable local port */
};

/* wr_flow_entry.vis: the table generations (wr_config.gen & 1) whose
 * packets see the entry. Every entry is in both but while an owner's apply
 * makes its next generation, and after a writer died doing so. */
enum wr_flow_vis {
	WR_VIS_GEN0 = 0x01,
	WR_VIS_GEN1 = 0x02,
	WR_VIS_BOTH = 0x03,
};

/* What a flow does; the value of the flow index. */
struct wr_flow_entry {
	__u32 flow_id;		/* index of its counters and of its slot in wr_flow_ids */
	__u16 priority;
	__u8 n_actions;
	__u8 flags;		/* WR_FLOWF_* */
	__u64 cookie;		/* the user's, opaque */
	__u16 owner;		/* wr_owners index; 0: the operator's */
	__u8 vis;		/* WR_VIS_* */
	__u8 pad0;
	__u32 pad1;
	struct wr_action actions[WR_MAX_ACTIONS];
};

/* ---- Replication groups ------------------------------------------------ */

/* A group is a list of buckets, each a struct wr_action (an OUTPUT, or a
 * TUNNEL with its key), kept back to back in wr_buckets: outputs to local
 * ports first. A group id names a slot (wr_group_slots), whose entry in
 * wr_groups holds two lists, one live: a change writes its new buckets
 * into free ones and the other list, then flips `live` with one write, so
 * a packet walks the old list or the new one. */
enum wr_group_size {
	WR_MAX_GROUP_BUCKETS = 4096,	/* buckets of one group */
	WR_DEFAULT_MAX_GROUPS = 4096,
	WR_DEFAULT_MAX_BUCKETS = 65536,	/* buckets of all groups, and room to change them */
};

/* Where a group's buckets sit in wr_buckets. */
struct wr_bucket_list {
	__u32 first;		/* its first bucket */
	__u16 n_buckets;
	__u16 n_local;		/* the first n_local are outputs to local ports */
};

/* A group, by its slot. */
struct wr_group {
	__u32 live;		/* which list packets walk: 0 or 1 */
	__u16 owner;		/* wr_owners index; 0: the operator's (control plane only) */
	__u16 pad0;
	struct wr_bucket_list lists[2];
};

/* Per group (packets that hit it) and per bucket (copies sent), per CPU. */
struct wr_group_stats {
	__u64 packets;
	__u64 bytes;
};

/* Who owns flows and groups, by owner id (1..WR_MAX_OWNERS-1; 0 is the
 * operator and has no entry). Control plane only. */
struct wr_owner {
	__u8 name[64];		/* NUL-padded; all zero: the id is free */
};

/* Per flow, per CPU. */
struct wr_flow_stats {
	__u64 packets;
	__u64 bytes;
	__u64 used_ns;		/* CLOCK_MONOTONIC ns of the last packet, to one jiffy (clock.h) */
	__u16 tcp_flags;	/* every TCP flag seen */
	__u16 pad0;
	__u32 pad1;
};

/* Per port, per CPU. */
struct wr_port_stats {
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 drops;
};

/* Datapath-wide counters, per CPU, indexed by enum wr_stat. Every packet
 * warren drops bumps exactly one WR_DROP_* counter. */
enum wr_stat {
	WR_STAT_NONE = 0,
	/* drops */
	WR_DROP_NO_FLOW,	/* flow miss with the default action drop */
	WR_DROP_ACTION,		/* a flow's drop action */
	WR_DROP_NO_PORT,	/* output to a port that does not exist */
	WR_DROP_BAD_IP,		/* outer IP header length or total length wrong */
	WR_DROP_BAD_UDP,	/* UDP length wrong */
	WR_DROP_BAD_CSUM,	/* outer IPv4 header, UDP or GRE checksum wrong */
	WR_DROP_VXLAN_FLAGS,	/* VXLAN without the I flag (reserved bits are ignored, RFC 7348) */
	WR_DROP_GENEVE_VERSION,
	WR_DROP_GENEVE_OPTLEN,	/* options longer than the packet */
	WR_DROP_GENEVE_CRITICAL,/* a critical option warren does not know */
	WR_DROP_GRE_VERSION,
	WR_DROP_GRE_FLAGS,	/* routing or reserved flags set */
	WR_DROP_KEY_MISMATCH,	/* key differs from the port's fixed in_key */
	WR_DROP_TRUNCATED,	/* tunnel or inner header cut short */
	WR_DROP_ECN,		/* outer CE on a not-ECT inner packet (RFC 6040) */
	WR_DROP_NO_ROUTE,	/* no route or neighbour to the remote endpoint */
	WR_DROP_TOO_BIG,	/* too big for the path, ICMP sent back */
	WR_DROP_ENCAP,		/* the kernel refused to grow the packet */
	WR_DROP_DECAP,		/* the kernel refused to shrink the packet */
	WR_DROP_STT,		/* STT header or segment unusable */
	WR_DROP_STT_REASM,	/* STT reassembly gave up on a frame */
	WR_DROP_LOOP,		/* more actions or recirculations than allowed */
	WR_DROP_PAYLOAD,	/* tunnel payload is not Ethernet */
	WR_DROP_NO_NEIGH,	/* next hop unresolved and the frame is not IP */
	WR_DROP_NO_GROUP,	/* a flow's group does not exist */
	WR_DROP_GROUP_EMPTY,	/* a group left no bucket for the packet (split horizon) */
	WR_DROP_TTL,		/* dec_ttl on a TTL or hop limit of 0 or 1 */
	WR_DROP_IN_PORT = 28,	/* its only output was to the port it came in on, which is skipped */
	WR_DROP_MAX_,
	/* other events */
	WR_STAT_DECAP = 32,	/* tunnel packets decapsulated */
	WR_STAT_ENCAP,		/* packets encapsulated */
	WR_STAT_XDP_REDIRECT,	/* finished at XDP */
	WR_STAT_XDP_PASS,	/* decapsulated at XDP, finished at TC */
	WR_STAT_TC_DECAP,	/* decapsulated at TC (no XDP) */
	WR_STAT_MISS_PASS,	/* flow miss with the default action pass */
	WR_STAT_NOT_OURS,	/* underlay packets passed untouched */
	WR_STAT_FRAGMENT,	/* tunnel-looking fragments passed untouched */
	WR_STAT_ICMP_SENT,	/* ICMP too-big messages generated */
	WR_STAT_MSS_CLAMPED,
	WR_STAT_STT_SEGMENTS,	/* STT segments accepted for reassembly */
	WR_STAT_STT_REASSEMBLED,/* STT frames completed from segments */
	WR_STAT_STT_EXPIRED,	/* STT frames that never completed */
	WR_STAT_STT_EVICTED,	/* STT frames evicted for memory */
	WR_STAT_STT_DUPLICATE,	/* STT segments already seen */
	WR_STAT_GSO_DEVICE,	/* GSO packets sent through a kernel vxlan device (gso.h) */
	WR_STAT_GSO_SEGMENTED,	/* GSO packets segmented in BPF (gso.h) */
	WR_STAT_MAX = 64,
};

/* How often the fast path's caches answered. Apart from the drops, which
 * count packets: these count lookups. */
struct wr_cache_stats {
	__u64 flow_hits;	/* flow lookups the exact-match cache answered */
	__u64 flow_misses;	/* flow lookups that searched the table */
	__u64 nh_hits;		/* tunnel outputs the next-hop cache routed */
	__u64 nh_misses;	/* tunnel outputs that asked the FIB */
};

/* The datapath-wide counters of one CPU: wr_stats' only entry. One block,
 * so that a packet looks it up once and bumps each counter through it.
 * The caches' counters come first: a maybe-NULL block is then a maybe-NULL
 * cache_stats with no test in between for the verifier to split on. */
struct wr_stat_block {
	struct wr_cache_stats cache;
	__u64 stat[WR_STAT_MAX];	/* by enum wr_stat */
};

/* wr_config.flags */
enum wr_config_flag {
	WR_CFG_XDP_UNDERLAY = 0x01,	/* XDP runs on the underlay: TC sees only its leftovers */
	WR_CFG_CLSACT = 0x02,	/* TC programs hang off clsact (no TCX); control plane only */
	WR_CFG_WRITING = 0x04,	/* a flow change is under way; left set, its writer died:
				 * the next one repairs (control plane only) */
	WR_CFG_XDP_AUTO = 0x08,	/* up --xdp auto chose the underlay's XDP mode (control plane only) */
	WR_CFG_XDP_WHY = 0x30,	/* ... and why, a reason << 4 (control plane only) */
	WR_CFG_DEV_CSUM = 0x40,	/* the underlay fills in a checksum left partial before the
				 * wire (any device but a veth with TX checksum offload on,
				 * which hands its peer the skb still partial) */
};

/* wr_config.fwd_saved: per-device forwarding warren enabled on the underlay */
enum wr_fwd {
	WR_FWD_V4 = 0x01,
	WR_FWD_V6 = 0x02,
};

/* wr_config.miss_* */
enum wr_miss {
	WR_MISS_DROP = 0,
	WR_MISS_PASS = 1,
};

/* Datapath-wide settings, one entry. */
struct wr_config {
	__u32 layout_version;	/* WR_LAYOUT_VERSION of whoever wrote the pins */
	__u32 gen;		/* live table generation, 0 or 1 */
	__u32 max_flows;
	__u32 max_tun_keys;
	__u32 flags;		/* WR_CFG_* */
	__u32 underlay_ifindex;	/* the device tunnel packets leave and arrive on */
	__u8 miss_local;	/* WR_MISS_*: flow miss on a local port */
	__u8 miss_tunnel;	/* WR_MISS_*: flow miss after decapsulation */
	__u8 fwd_saved;		/* WR_FWD_*: forwarding warren turned on, to undo */
	__u8 pad0;
	__u32 stt_timeout_ms;	/* how long an incomplete STT frame waits */
	__u64 seq;		/* bumped by every control plane change */
	__u8 local_v4[16];	/* default outer source, IPv4 (first 4 bytes) */
	__u8 local_v6[16];	/* default outer source, IPv6 */
};

/* wr_meta.magic: what XDP hands TC in the packet's metadata. */
enum wr_meta_magic {
	/* Decapsulated: the metadata's tunnel fields are the outer headers'. */
	WR_META_MAGIC = 0x57524e31,	/* "WRN1" */
	/* Alone in the metadata: a tunnel packet for us whose outer checksum
	 * XDP could not verify (on a veth it may still be offloaded); TC
	 * decides with the skb's checksum state. */
	WR_META_RECHECK = 0x57524e32,	/* "WRN2" */
	/* An STT frame XDP reassembled: it waits in wr_stt_frames at
	 * stt_slot, the metadata's tunnel fields are its outer headers'; TC
	 * delivers it. */
	WR_META_STT = 0x57524e33,	/* "WRN3" */
};

/* skb->mark of packets `warren trace` runs through TC: decapsulate there
 * even though XDP serves the underlay (test-run cannot hand TC metadata). */
enum wr_mark {
	WR_TRACE_MARK = 0x57524e54,	/* "WRNT" */
};

struct wr_meta {
	__u32 magic;
	__u16 in_port;
	__u8 tun_flags;
	__u8 tun_tos;
	__u8 tun_ttl;
	__u8 gnv_type;
	__u8 gnv_len;
	__u8 pad0[5];
	__be64 tun_id;
	__u8 tun_src[16];
	__u8 tun_dst[16];
	__be16 gnv_class;
	__u16 pad1;
	__u8 gnv_data[8];
	__u32 stt_slot;		/* WR_META_STT: where the frame waits */
	__u32 stt_id;		/* ... and its identifier, to be sure it still does */
	/* WR_META_MAGIC: the flow XDP classified the frame to, so that TC
	 * does not search again: its id, the flow cache slot (of XDP's CPU)
	 * holding its copy (0xffffffff: none), and the
	 * wr_config.seq it was found under. TC searches again unless seq is
	 * still current and the slot still holds that flow under it. */
	__u32 flow_id;
	__u32 flow_slot;
	__u32 pad2;
	__u64 seq;
};

/*
 * Every enum above, for the object's BTF: BTF records only the types
 * something in the object uses, and code uses an enum's values, never its
 * type. The pointer below, never read, makes the object carry the enums,
 * so tests/object_test.ts compares the TypeScript copies with them without
 * loading anything. It costs the datapath object 8 bytes of .rodata (the
 * Makefile defines WR_CONSTANTS_IN_BTF for it alone, so the test fixtures
 * get no .rodata map); no struct or map layout changes.
 */
struct wr_constants {
	enum wr_layout_version layout_version;
	enum wr_counter_slot counter_slot;
	enum wr_size size;
	enum wr_stt_size stt_size;
	enum wr_port_kind port_kind;
	enum wr_proto proto;
	enum wr_port_flag port_flag;
	enum wr_tun_flag tun_flag;
	enum wr_tun_key_set tun_key_set;
	enum wr_frag frag;
	enum wr_action_op action_op;
	enum wr_action_flag action_flag;
	enum wr_set_field set_field;
	enum wr_no_tun_key no_tun_key;
	enum wr_flow_flag flow_flag;
	enum wr_group_size group_size;
	enum wr_flow_vis flow_vis;
	enum wr_stat stat;
	enum wr_config_flag config_flag;
	enum wr_fwd fwd;
	enum wr_miss miss;
	enum wr_meta_magic meta_magic;
	enum wr_mark mark;
};

#ifdef WR_CONSTANTS_IN_BTF
const struct wr_constants *const wr_constants = 0;
#endif

#endif /* WARREN_H */
