/**
 * A datapath pinned under a past layout version, read into the model: its
 * settings, ports, groups and flows as the current warren describes them,
 * and, apart, its counters. Each value is read with the past version's
 * codec (see `src/maps/past/`), upgraded to the current struct's shape
 * (fields the version lacked are zero) and decoded by the current code, so
 * a flow reads back exactly as `flow dump` would show it.
 *
 * @module
 */

import { BpfMap } from "../../bpf/map.ts";
import type { StructCodec } from "../../maps/codec.ts";
import { u32, u64 } from "../../maps/codec.ts";
import {
  type ActionEntry,
  type Config,
  configCodec,
  type FlowKey,
  flowKeyCodec,
  type FlowStats,
  flowStatsCodec,
  portCodec,
  portInfoCodec,
  PortKind,
  type PortStats,
  portStatsCodec,
  tunKeyCodec,
} from "../../maps/layouts.ts";
import type { PastLayout } from "../../maps/past/mod.ts";
import { encodeWith, PerCpuMap, TypedMap } from "../../maps/typed_map.ts";
import type { Addr } from "../addr.ts";
import { decompileActions, type PortLookup } from "../compile.ts";
import type { InstalledFlow } from "../flow_table.ts";
import type { OwnerName } from "../flows/owners.ts";
import type { GroupSpec } from "../group_syntax.ts";
import { mapPin } from "../pins.ts";
import { decodePort, type Port } from "../port.ts";

/** A datapath's configuration, as the model knows it. */
export interface Configuration {
  /** The layout version it was read from. */
  version: number;
  /** Its settings (`wr_config`). */
  config: Config;
  /** Its local endpoint addresses. */
  localIps: Addr[];
  /** Its ports, by number. */
  ports: Port[];
  /** Its replication groups, each with its owner ("" for the operator). */
  groups: (GroupSpec & { owner: OwnerName })[];
  /** Its flows, each with its owner; `flowId` is the id they have there. */
  flows: InstalledFlow[];
}

/** A datapath's counters, per CPU, as the current structs hold them. */
export interface Counters {
  /** Per flow, by flow id. */
  flows: Map<number, FlowStats[]>;
  /** Per port, by port number. */
  ports: Map<number, PortStats[]>;
  /** `wr_stats`, by slot. */
  stats: Map<number, bigint[]>;
}

/** `old`, a value of a past struct, in the shape of the current struct `codec`. */
function upgrade<T>(codec: StructCodec<T>, old: Record<string, unknown>): T {
  return { ...codec.decode(new Uint8Array(codec.size)), ...old };
}

/** Opens map `name` pinned under `dir`, its values read with `codec` (checked against its BTF). */
function open<V>(dir: string, name: string, value: StructCodec<V>): TypedMap<number, V> {
  return new TypedMap(BpfMap.fromPin(mapPin(dir, name)), u32, value);
}

/** Reads the configuration of the datapath pinned under `dir` with `layout`. */
export function readPast(dir: string, layout: PastLayout): Configuration {
  using configMap = open(dir, "wr_config", layout.config);
  const config = upgrade(configCodec, configMap.get(0)!);
  const ports = readPorts(dir, layout);
  const lookup: PortLookup = {
    byName: (name) => ports.find((p) => p.name === name),
    byNumber: (n) => ports.find((p) => p.number === n),
  };
  return {
    version: layout.version,
    config,
    localIps: readLocalIps(dir, layout),
    ports,
    groups: [],
    flows: readFlows(dir, layout, config.gen, lookup),
  };
}

function readPorts(dir: string, layout: PastLayout): Port[] {
  using entries = open(dir, "wr_ports", layout.port);
  using infos = open(dir, "wr_port_info", layout.portInfo);
  const out: Port[] = [];
  for (const [n, raw] of entries.entries()) {
    const entry = upgrade(portCodec, raw);
    if (entry.kind === PortKind.NONE) continue;
    const info = infos.get(n);
    const port = info && decodePort(n, entry, upgrade(portInfoCodec, info));
    if (port) out.push(port);
  }
  return out.sort((a, b) => a.number - b.number);
}

function readLocalIps(dir: string, layout: PastLayout): Addr[] {
  using endpoints = new TypedMap(
    BpfMap.fromPin(mapPin(dir, "wr_endpoints")),
    layout.endpointKey,
    layout.endpoint,
  );
  const out: Addr[] = [];
  for (const k of endpoints.keys()) {
    if (k.ipproto === 0 && k.dst_port === 0) {
      out.push({ v6: k.v6 === 1, bytes: k.addr as Uint8Array });
    }
  }
  return out;
}

/** The flow index of generation `gen`: through its pin, as warren has always pinned it. */
function openIndex(dir: string, gen: number): BpfMap | undefined {
  using tables = BpfMap.fromPin(mapPin(dir, "wr_flow_tables"));
  const id = tables.lookup(encodeWith(u32, gen));
  if (!id) return undefined;
  const n = new DataView(id.buffer).getUint32(0, true);
  try {
    return BpfMap.fromPin(mapPin(dir, `flow_index/${n}`));
  } catch {
    return BpfMap.fromId(n);
  }
}

function readFlows(
  dir: string,
  layout: PastLayout,
  gen: number,
  ports: PortLookup,
): InstalledFlow[] {
  using maskMap = open(dir, "wr_masks", layout.maskSet);
  const set = maskMap.get(gen);
  const masks = new Map<number, FlowKey>();
  for (const m of (set?.masks ?? []) as Record<string, unknown>[]) {
    masks.set(m.id as number, upgrade(flowKeyCodec, m.bits as Record<string, unknown>));
  }
  using tunKeys = open(dir, "wr_tun_keys", layout.tunKey);
  const tunKey = (slot: number) => {
    const raw = tunKeys.get(slot);
    return raw && upgrade(tunKeyCodec, raw);
  };
  using index = openIndex(dir, gen);
  if (!index) return [];
  if (
    index.keySize !== layout.flowIndexKey.size ||
    index.info.valueSize !== layout.flowEntry.size
  ) {
    throw new RangeError(
      `the flow index under ${dir} is not laid out as layout ${layout.version} says`,
    );
  }
  const flows: InstalledFlow[] = [];
  for (const c of index.lookupBatch(16384)) {
    for (let i = 0; i < c.count; i++) {
      const k = layout.flowIndexKey.decode(c.keys, i * layout.flowIndexKey.size);
      const e = layout.flowEntry.decode(c.values, i * layout.flowEntry.size);
      const mask = masks.get(k.mask_id as number);
      if (!mask) continue;
      const actions = (e.actions as ActionEntry[]).slice(0, e.n_actions as number);
      flows.push({
        flowId: e.flow_id as number,
        priority: e.priority as number,
        cookie: e.cookie as bigint,
        match: { key: upgrade(flowKeyCodec, k.key as Record<string, unknown>), mask },
        actions: decompileActions(actions, tunKey, ports),
        owner: "",
      });
    }
  }
  return flows.sort((a, b) => b.priority - a.priority || a.flowId - b.flowId);
}

/** Reads the counters of the datapath pinned under `dir` with `layout`, per CPU. */
export function readPastCounters(dir: string, layout: PastLayout): Counters {
  const perCpu = <V>(
    name: string,
    codec: StructCodec<Record<string, unknown>>,
    current: StructCodec<V>,
  ) => {
    using map = new PerCpuMap(BpfMap.fromPin(mapPin(dir, name)), u32, codec);
    const out = new Map<number, V[]>();
    for (const [k, per] of map.entries()) {
      // Only what counted something: most slots of a big table are zero.
      if (per.some((v) => Object.values(v).some((x) => x !== 0 && x !== 0n))) {
        out.set(k, per.map((v) => upgrade(current, v)));
      }
    }
    return out;
  };
  using stats = new PerCpuMap(BpfMap.fromPin(mapPin(dir, "wr_stats")), u32, u64);
  const statMap = new Map<number, bigint[]>();
  for (const [k, per] of stats.entries()) {
    if (k < layout.statSlots && per.some((v) => v !== 0n)) statMap.set(k, per);
  }
  return {
    flows: perCpu("wr_flow_stats", layout.flowStats, flowStatsCodec),
    ports: perCpu("wr_port_stats", layout.portStats, portStatsCodec),
    stats: statMap,
  };
}
