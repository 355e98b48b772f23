/**
 * Layout version 3, as warren at commit ce8daad pinned it: the structs of
 * its `bpf/include/warren.h` that a migration reads, field for field. Only
 * data: which maps hold what is the same as in every later version (see
 * `mod.ts`); the port and the flow key had no network yet, and there were
 * no replication groups.
 *
 * Opening a pinned map checks these codecs against the map's own BTF, so
 * a mistake here fails loudly instead of misreading.
 *
 * @module
 */

import { array, bytes, mac, pad, struct, u16, u16be, u32, u64, u64be, u8 } from "../codec.ts";
import type { PastLayout } from "./past_layout.ts";

const flowKey = struct("wr_flow_key", {
  in_port: u16,
  tun_flags: u8,
  tun_tos: u8,
  tun_ttl: u8,
  ip_proto: u8,
  ip_tos: u8,
  ip_frag: u8,
  tun_id: u64be,
  tun_src: bytes(16),
  tun_dst: bytes(16),
  eth_src: bytes(6),
  eth_dst: bytes(6),
  eth_type: u16be,
  vlan_tci: u16be,
  ip_src: bytes(16),
  ip_dst: bytes(16),
  tp_src: u16be,
  tp_dst: u16be,
  gnv_class: u16be,
  gnv_type: u8,
  gnv_len: u8,
  gnv_data: bytes(8),
});

const mask = struct("wr_mask", {
  bits: flowKey,
  id: u32,
  max_priority: u16,
  pad0: pad(2),
  flows: u32,
  pad1: pad(4),
});

const action = struct("wr_action", { op: u8, flags: u8, port: u16, arg: u32 });

const endpointKey = struct("wr_endpoint_key", {
  addr: bytes(16),
  ipproto: u8,
  v6: u8,
  dst_port: u16be,
  pad0: pad(4),
});

/** Layout version 3 (warren at ce8daad). */
export const v3: PastLayout = {
  version: 3,
  config: struct("wr_config", {
    layout_version: u32,
    gen: u32,
    max_flows: u32,
    max_tun_keys: u32,
    flags: u32,
    underlay_ifindex: u32,
    miss_local: u8,
    miss_tunnel: u8,
    fwd_saved: u8,
    pad0: pad(1),
    stt_timeout_ms: u32,
    seq: u64,
    local_v4: bytes(16),
    local_v6: bytes(16),
  }),
  port: struct("wr_port", {
    ifindex: u32,
    kind: u8,
    proto: u8,
    flags: u16,
    dst_port: u16be,
    ttl: u8,
    tos: u8,
    mtu: u16,
    pad0: pad(2),
    key_in: u64be,
    key_out: u64be,
    remote: bytes(16),
    local: bytes(16),
    nh_mac: mac,
    local_mac: mac,
    gre_seq: u32,
  }),
  portInfo: struct("wr_port_info", { name: bytes(16), device: bytes(16) }),
  endpointKey,
  endpoint: struct("wr_endpoint", {
    port: u16,
    fixed_remotes: u8,
    proto: u8,
    pad0: pad(4),
  }),
  tunKey: struct("wr_tun_key", {
    tun_id: u64be,
    dst: bytes(16),
    src: bytes(16),
    tos: u8,
    ttl: u8,
    flags: u8,
    set: u8,
    gnv_len: u8,
    pad0: pad(3),
    gnv_opts: bytes(32),
  }),
  maskSet: struct("wr_mask_set", {
    count: u32,
    pad0: pad(4),
    masks: array(mask, 32),
  }),
  flowIndexKey: struct("wr_flow_index_key", {
    mask_id: u32,
    pad0: pad(4),
    key: flowKey,
  }),
  flowEntry: struct("wr_flow_entry", {
    flow_id: u32,
    priority: u16,
    n_actions: u8,
    flags: u8,
    cookie: u64,
    actions: array(action, 8),
  }),
  flowStats: struct("wr_flow_stats", {
    packets: u64,
    bytes: u64,
    used_ns: u64,
    tcp_flags: u16,
    pad0: pad(2),
    pad1: pad(4),
  }),
  portStats: struct("wr_port_stats", {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    drops: u64,
  }),
  // enum wr_stat had the same slots as now, two drop reasons fewer.
  statSlots: 64,
};
