/**
 * Reading the flow table: which flows a filter covers, decoded as they are
 * reached; the flow the datapath would pick for a key; how full the table
 * is. Filters test the raw entries (see `entry.ts`), so a walk decodes
 * only the flows it returns.
 *
 * @module
 */

import { u32 } from "../../maps/codec.ts";
import {
  decodeFlowKey,
  encodeFlowKey,
  type FlowKey,
  tunKeyCodec,
  type TunKeyEntry,
} from "../../maps/layouts.ts";
import { encodeWith } from "../../maps/typed_map.ts";
import { decompileActions, encodeMatch, type PortLookup } from "../compile.ts";
import type { Match } from "../match.ts";
import type { ActionSpec } from "../flow_actions.ts";
import type { DatapathMaps } from "../pins.ts";
import type { FlowCounters } from "./counters.ts";
import {
  altKey,
  CHUNK,
  countEntries,
  decodeActions,
  Entry,
  indexKey,
  KEY_FIELD as FK,
  KEY_SIZE,
  visBit,
  visible,
} from "./entry.ts";
import { groupUsage } from "./group_state.ts";
import type { TableContext, TableState } from "./journal.ts";
import { type LiveMask, masksById } from "./masks.ts";
import { checkOwnerName, type OwnerName, type Owners } from "./owners.ts";

/** A flow as installed. */
export interface InstalledFlow {
  /** Its counters' index. */
  flowId: number;
  /** Priority. */
  priority: number;
  /** The user's cookie. */
  cookie: bigint;
  /** Its owner's name ("" for the operator). */
  owner: OwnerName;
  /** The match (in_port as a number). */
  match: Match;
  /** The actions, as they run (locals, tunnels, pass). */
  actions: ActionSpec[];
  /** Counters, when asked for. */
  counters?: FlowCounters;
}

/** Which flows a dump or delete covers. */
export interface FlowFilter {
  /** Flows at least as specific as this match and agreeing with it. */
  match?: Match;
  /** Only this priority. */
  priority?: number;
  /** Flows coming in on, or sending to, this port number. */
  port?: number;
  /** Flows matching exactly this tunnel id. */
  tunId?: bigint;
  /** Flows matching exactly this network. */
  net?: number;
  /** Flows sending to this group. */
  group?: number;
  /** Only this owner's flows ("" for the operator's). */
  owner?: OwnerName;
  /** Flows whose cookie has these bits (`cookie=V/MASK`, as ovs-ofctl selects). */
  cookie?: { value: bigint; mask: bigint };
}

/** How full the table is. */
export interface Usage {
  /** Flows installed. */
  flows: number;
  /** Live masks. */
  masks: number;
  /** Tunnel key slots in use, of how many. */
  tunKeys: { used: number; capacity: number };
  /** Flow ids taken, of how many. */
  flowIds: { used: number; capacity: number };
  /** Replication groups, of how many. */
  groups: { used: number; capacity: number };
  /** Buckets the groups' live lists hold, of how many all groups share. */
  buckets: { used: number; capacity: number };
}

/**
 * A test of an index entry under `mask` against `filter`, on its raw
 * bytes; owners are named as `owners` knows them.
 */
export function selector(
  filter: FlowFilter,
  owners: Owners,
): (mask: LiveMask, e: Entry) => boolean {
  const fm = filter.match && encodeMatch(filter.match);
  const tunId = filter.tunId !== undefined ? new Uint8Array(8) : undefined;
  if (tunId) new DataView(tunId.buffer).setBigUint64(0, filter.tunId!);
  const net = filter.net !== undefined ? new Uint8Array(4) : undefined;
  if (net) new DataView(net.buffer).setUint32(0, filter.net!, true);
  if (filter.owner) checkOwnerName(filter.owner);
  const owner = filter.owner === undefined ? undefined : owners.id(filter.owner) ?? -1;
  const cookie = filter.cookie;
  return (mask, e) => {
    if (filter.priority !== undefined && e.priority !== filter.priority) return false;
    if (owner !== undefined && e.owner !== owner) return false;
    if (cookie && ((e.cookie ^ cookie.value) & cookie.mask) !== 0n) return false;
    const keys = e.keys, k = e.keyAt;
    if (tunId) {
      for (let i = 0; i < 8; i++) {
        if (mask.bytes[FK.tun_id + i] !== 0xff || keys[k + FK.tun_id + i] !== tunId[i]) {
          return false;
        }
      }
    }
    if (net) {
      for (let i = 0; i < 4; i++) {
        if (mask.bytes[FK.net + i] !== 0xff || keys[k + FK.net + i] !== net[i]) return false;
      }
    }
    if (filter.group !== undefined && !e.sendsToGroup(filter.group)) return false;
    if (filter.port !== undefined) {
      const inMask = mask.bytes[FK.in_port] | mask.bytes[FK.in_port + 1];
      const inPort = keys[k + FK.in_port] | (keys[k + FK.in_port + 1] << 8);
      if (!(inMask !== 0 && inPort === filter.port) && !e.outputsTo(filter.port)) return false;
    }
    if (fm) {
      for (let i = 0; i < KEY_SIZE; i++) {
        if ((fm.maskBytes[i] & ~mask.bytes[i]) !== 0) return false;
        if ((keys[k + i] & fm.maskBytes[i]) !== fm.keyBytes[i]) return false;
      }
    }
    return true;
  };
}

/** A reader of tunnel keys by slot, reading the whole table when many are needed. */
export function tunKeyReader(
  maps: DatapathMaps,
  st: TableState,
): (slot: number) => TunKeyEntry | undefined {
  const cache = new Map<number, TunKeyEntry | undefined>();
  let all: Uint8Array | undefined;
  if (st.slots.used() > 4096) {
    const raw = maps.tunKeys.raw;
    all = new Uint8Array(raw.info.maxEntries * tunKeyCodec.size);
    for (const c of raw.lookupBatch(CHUNK)) {
      const keys = new Uint32Array(c.keys.buffer, c.keys.byteOffset, c.count);
      for (let i = 0; i < c.count; i++) {
        all.set(
          c.values.subarray(i * tunKeyCodec.size, (i + 1) * tunKeyCodec.size),
          keys[i] * tunKeyCodec.size,
        );
      }
    }
  }
  return (slot) => {
    if (!cache.has(slot)) {
      const bytes = all
        ? all.subarray(slot * tunKeyCodec.size, (slot + 1) * tunKeyCodec.size)
        : maps.tunKeys.raw.lookup(encodeWith(u32, slot));
      cache.set(slot, bytes && tunKeyCodec.decode(bytes));
    }
    return cache.get(slot);
  };
}

/** Decodes index entry `e`, under `mask`. */
export function decodeFlow(
  mask: LiveMask,
  e: Entry,
  tunKey: (slot: number) => TunKeyEntry | undefined,
  ports: PortLookup,
  owners: Owners,
): InstalledFlow {
  mask.decoded ??= decodeFlowKey(mask.bytes);
  return {
    flowId: e.flowId,
    priority: e.priority,
    cookie: e.cookie,
    owner: owners.name(e.owner),
    match: { key: decodeFlowKey(e.keys, e.keyAt), mask: mask.decoded },
    actions: decompileActions(decodeActions(e.actionBytes()), tunKey, ports),
  };
}

/** Every installed flow the filter covers, in table order, each decoded as it is reached. */
export function* installed(t: TableContext, filter: FlowFilter = {}): Generator<InstalledFlow> {
  const st = t.journal.load();
  const index = t.journal.index(st);
  const masks = masksById(st.masks);
  const select = selector(filter, st.owners);
  const tunKey = tunKeyReader(t.maps, st);
  for (const e of visible(index, st.gen)) {
    const mask = masks.get(e.maskId);
    if (mask && select(mask, e)) yield decodeFlow(mask, e, tunKey, t.ports, st.owners);
  }
}

/** How many installed flows the filter covers. */
export function count(t: TableContext, filter: FlowFilter = {}): number {
  const st = t.journal.load();
  const masks = masksById(st.masks);
  const select = selector(filter, st.owners);
  let n = 0;
  for (const e of visible(t.journal.index(st), st.gen)) {
    const mask = masks.get(e.maskId);
    if (mask && select(mask, e)) n++;
  }
  return n;
}

/** How many flows are installed, and how full the id, key, group and bucket tables are. */
export function usage(t: TableContext): Usage {
  const st = t.journal.load();
  return {
    flows: countEntries(t.journal.index(st), st.gen),
    masks: st.masks.length,
    tunKeys: { used: st.slots.used(), capacity: st.slots.capacity },
    flowIds: { used: st.flowIds.used(), capacity: st.flowIds.capacity },
    ...groupUsage(t.maps),
  };
}

/** (class << 8 | type) of every Geneve option some flow matches on. */
export function geneveOptions(t: TableContext): Set<number> {
  const st = t.journal.load();
  const out = new Set<number>();
  const gnv = st.masks.filter((m) =>
    m.bytes[FK.gnv_class] | m.bytes[FK.gnv_class + 1] | m.bytes[FK.gnv_type]
  );
  if (gnv.length === 0) return out;
  const ids = new Set(gnv.map((m) => m.id));
  for (const e of visible(t.journal.index(st), st.gen)) {
    if (!ids.has(e.maskId)) continue;
    const at = e.keyAt;
    const cls = (e.keys[at + FK.gnv_class] << 8) | e.keys[at + FK.gnv_class + 1];
    out.add((cls << 8) | e.keys[at + FK.gnv_type]);
  }
  return out;
}

/**
 * The flow the datapath picks for `key`: the same search over the same
 * kernel tables (masks in order, one index lookup each, only entries the
 * live generation sees or their stand-ins, early exit).
 */
export function lookup(t: TableContext, key: FlowKey): InstalledFlow | undefined {
  const st = t.journal.load();
  const index = t.journal.index(st);
  const bit = visBit(st.gen);
  const whole = new Uint8Array(KEY_SIZE);
  encodeFlowKey(key, whole);
  const found = (ik: Uint8Array) => {
    const entry = index.lookup(ik);
    return entry && new Entry(ik, entry);
  };
  let best: { mask: LiveMask; e: Entry } | undefined;
  for (const mask of st.masks) {
    if (best && best.e.priority >= mask.maxPriority) break;
    const ik = indexKey(mask.id, whole.map((b, i) => b & mask.bytes[i]));
    let e = found(ik);
    if (e && !(e.vis & bit)) e = found(altKey(ik));
    if (!e || !(e.vis & bit)) continue;
    if (!best || e.priority > best.e.priority) best = { mask, e };
  }
  return best && decodeFlow(best.mask, best.e, tunKeyReader(t.maps, st), t.ports, st.owners);
}
