/**
 * The names in warren's BPF object (`bpf/build/warren.bpf.o`), typed once:
 * its programs, its maps (pinned, or private to one load) and its
 * read-only constants. The datapath manager, the pins and the tests take
 * their names from here, and {@link WarrenNames} makes a misspelt name a
 * type error wherever the object is opened.
 *
 * Written by hand rather than generated from the object (as bpf2go does):
 * which maps are pinned is a decision, not something the object says, and
 * these lists carry it with a comment each. `tests/object_test.ts` opens
 * the built object without loading it (no root) and fails unless the lists
 * are exactly the object's programs, maps and `.rodata` variables.
 *
 * @module
 */

/** The programs, in the order a packet meets them. */
export const PROGRAMS = ["wr_xdp_underlay", "wr_tc_underlay", "wr_tc_local"] as const;

/** A program of warren's object. */
export type ProgramName = typeof PROGRAMS[number];

/**
 * The maps holding the datapath's state, pinned under `<pin dir>/maps/` so
 * that every warren process, and every later load of the programs, shares
 * them.
 */
export const PINNED_MAPS = [
  "wr_config",
  "wr_ports",
  "wr_port_info",
  "wr_ifindex_ports",
  "wr_ifindex_ports_far",
  "wr_xdp_ports",
  "wr_endpoints",
  "wr_remotes",
  "wr_geneve_known",
  "wr_tun_keys",
  "wr_masks",
  "wr_flow_tables",
  "wr_flow_stats",
  "wr_port_stats",
  "wr_stats",
  "wr_flow_ids",
  "wr_tun_key_refs",
  "wr_tun_key_slots",
  "wr_group_slots",
  "wr_groups",
  "wr_buckets",
  "wr_group_stats",
  "wr_bucket_stats",
  "wr_owners",
] as const;

/** A pinned map's name. */
export type PinnedMap = typeof PINNED_MAPS[number];

/**
 * The maps only the programs of one load use: per-CPU scratch space, the
 * exact-match flow cache, the packet cache in front of it and the next-hop cache, STT's reassembly buffers
 * and the buffer of frames sent in segments. Never pinned; an upgrade
 * starts them afresh.
 */
export const PRIVATE_MAPS = [
  "wr_flow_cache",
  "wr_pkt_cache",
  "wr_nh_cache",
  "wr_scratch",
  "wr_scratch_exec",
  "wr_scratch_decap",
  "wr_scratch_lookup",
  "wr_scratch_csum",
  "wr_scratch_group",
  "wr_stt_frames",
  "wr_stt_hdr",
  "wr_tx_buf",
  "wr_seg",
  "wr_stt_send",
  "wr_stt_emit",
] as const;

/** A private map's name. */
export type PrivateMap = typeof PRIVATE_MAPS[number];

/**
 * The `const volatile` globals (`.rodata`) set before load:
 * `wr_dry_run` (non-zero: the programs change no shared state, for trace);
 * `wr_jiffy_ns` and `wr_jiffy_base`, the line from jiffies to the coarse
 * clock (bpf/include/clock.h; 0: read the clock helper).
 */
export const CONSTANTS = ["wr_dry_run", "wr_jiffy_ns", "wr_jiffy_base"] as const;

/** A read-only constant's name. */
export type ConstantName = typeof CONSTANTS[number];

/** The names warren's object goes by, for `BpfObject<WarrenNames>`. */
export interface WarrenNames {
  /** Its programs. */
  program: ProgramName;
  /** Its maps. */
  map: PinnedMap | PrivateMap;
  /** Its `.rodata` constants. */
  constant: ConstantName;
}
