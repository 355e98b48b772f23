/**
 * warren's BPF object, as a datapath loads it: opened from the bytes built
 * into warren, sized for this host and for the capacities the first `up`
 * asks for, its programs pinned under `<pin dir>/progs/` (the pins are
 * what later processes open), and a private dry-run copy for `trace`.
 *
 * @module
 */

import warrenObject from "../../../bpf/build/warren.bpf.o" with { type: "bytes" };
import { NotFoundError } from "../../bpf/errors.ts";
import { numPossibleCpus } from "../../bpf/map.ts";
import { BpfObject } from "../../bpf/object.ts";
import { ensurePinDir, isPinned, unpin } from "../../bpf/pin.ts";
import { Program } from "../../bpf/program.ts";
import {
  DEFAULT_MAX_BUCKETS,
  DEFAULT_MAX_FLOWS,
  DEFAULT_MAX_GROUPS,
  DEFAULT_MAX_TUN_KEYS,
  MAX_GROUP_BUCKETS,
  STT_SLOTS_PER_CPU,
} from "../../maps/layouts.ts";
import { type ProgramName, PROGRAMS, type WarrenNames } from "../../maps/names.ts";
import type { DatapathMaps } from "../pins.ts";
import { jiffyClock } from "./jiffies.ts";

/** One loaded instance of each program. */
export type Programs = Record<ProgramName, Program>;

/** `BPF_F_XDP_HAS_FRAGS`: the XDP program takes multi-buffer frames (GRO/GSO). */
const F_XDP_HAS_FRAGS = 1 << 5;

/**
 * The datapath object, opened from the bytes built into warren (or from
 * `bytes`, another build of the same source, such as the bench's ablation
 * builds) and sized for this host: STT keeps WR_STT_SLOTS_PER_CPU
 * reassembly slots and one send buffer per possible CPU. Its clock reads
 * jiffies as the coarse clock by this boot's line between the two
 * (jiffies.ts), or the clock helper where that could not be measured.
 * With `dryRun`, the programs change no shared state (trace's copy).
 */
export function openDatapathObject(
  bytes: Uint8Array = warrenObject,
  dryRun = false,
): BpfObject<WarrenNames> {
  const obj = BpfObject.openMemory<WarrenNames>(bytes, "warren");
  try {
    obj.setProgramFlags("wr_xdp_underlay", F_XDP_HAS_FRAGS);
    const cpus = numPossibleCpus();
    obj.setMaxEntries("wr_stt_frames", STT_SLOTS_PER_CPU * cpus);
    obj.setMaxEntries("wr_tx_buf", cpus);
    if (dryRun) {
      obj.setConstant("wr_dry_run", 1);
      // A dry run neither reads nor fills the caches (nor reads the
      // clock): no room for them.
      obj.setMaxEntries("wr_flow_cache", 1);
      obj.setMaxEntries("wr_pkt_cache", 1);
      obj.setMaxEntries("wr_nh_cache", 1);
    } else {
      const clock = jiffyClock();
      if (clock) {
        obj.setConstant("wr_jiffy_ns", clock.nsPerJiffy);
        obj.setConstant("wr_jiffy_base", clock.base);
      }
    }
    return obj;
  } catch (err) {
    obj.close();
    throw err;
  }
}

/** The capacities a datapath's first `up` sets; each has a default. */
export interface Capacities {
  /** Flows, a multiple of 64 (one id bitmap word each). */
  maxFlows?: number;
  /** Distinct tunnel keys. */
  maxTunKeys?: number;
  /** Replication groups. */
  maxGroups?: number;
  /** Buckets of all groups together, with room to change the largest. */
  maxBuckets?: number;
}

/** Sizes a new datapath's tables; the sizes are fixed from then on. */
export function sizeTables(obj: BpfObject<WarrenNames>, c: Capacities = {}): void {
  const maxFlows = c.maxFlows ?? DEFAULT_MAX_FLOWS;
  const maxTunKeys = c.maxTunKeys ?? DEFAULT_MAX_TUN_KEYS;
  const maxGroups = c.maxGroups ?? DEFAULT_MAX_GROUPS;
  const maxBuckets = c.maxBuckets ?? DEFAULT_MAX_BUCKETS;
  if (maxFlows % 64 || maxFlows < 64) {
    throw new RangeError("the flow capacity is a multiple of 64");
  }
  if (maxTunKeys < 1 || maxGroups < 1) {
    throw new RangeError("the tunnel key and group capacities are at least 1");
  }
  if (maxBuckets < 2 * MAX_GROUP_BUCKETS) {
    // A group of the largest size must fit twice: its old buckets and its new.
    throw new RangeError(`the bucket capacity is at least ${2 * MAX_GROUP_BUCKETS}`);
  }
  obj.setMaxEntries("wr_flow_stats", maxFlows);
  obj.setMaxEntries("wr_flow_ids", maxFlows / 64);
  obj.setMaxEntries("wr_tun_keys", maxTunKeys);
  obj.setMaxEntries("wr_tun_key_refs", maxTunKeys);
  obj.setMaxEntries("wr_tun_key_slots", maxTunKeys);
  obj.setMaxEntries("wr_group_slots", maxGroups);
  obj.setMaxEntries("wr_groups", maxGroups);
  obj.setMaxEntries("wr_group_stats", maxGroups);
  obj.setMaxEntries("wr_buckets", maxBuckets);
  obj.setMaxEntries("wr_bucket_stats", maxBuckets);
}

/** Each program of a loaded object (close them when done). */
export function programsOf(obj: BpfObject<WarrenNames>): Programs {
  return Object.fromEntries(PROGRAMS.map((n) => [n, obj.program(n)])) as Programs;
}

function programPin(pinDir: string, name: ProgramName): string {
  return `${pinDir}/progs/${name}`;
}

/** Pins `programs` under `pinDir`, each replacing its old pin in one rename. */
export function pinPrograms(pinDir: string, programs: Programs): void {
  ensurePinDir(`${pinDir}/progs`);
  for (const [name, p] of Object.entries(programs)) {
    const pin = programPin(pinDir, name as ProgramName);
    // Pin the new program aside, then move it over the old pin. bpffs
    // refuses names with a dot.
    const fresh = `${pin}-new`;
    unpin(fresh);
    p.pin(fresh);
    Deno.renameSync(fresh, pin);
  }
}

/** Program `name` as pinned under `pinDir` (close it when done). */
export function pinnedProgram(pinDir: string, name: ProgramName): Program {
  const pin = programPin(pinDir, name);
  if (!isPinned(pin)) {
    throw new NotFoundError(`program ${name} is not pinned under ${pinDir}`);
  }
  return Program.fromPin(pin);
}

/**
 * A private copy of the programs that shares every map of `maps`, loaded
 * from `bytes` (default: warren's own build), attached nowhere. Close each
 * program when done.
 */
export function sharedPrograms(
  maps: DatapathMaps,
  options: { bytes?: Uint8Array; dryRun?: boolean } = {},
): Programs {
  using obj = openDatapathObject(options.bytes, options.dryRun);
  for (const [name, map] of maps.all()) obj.reuseMap(name, map);
  obj.load();
  return programsOf(obj);
}

/**
 * A private copy of the programs that shares every map of `maps` but
 * changes none of them: counters stay still and GRE sequence numbers are
 * not used up. Close each program when done.
 */
export function dryRunPrograms(maps: DatapathMaps): Programs {
  return sharedPrograms(maps, { dryRun: true });
}
