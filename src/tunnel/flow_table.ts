/**
 * The flow table in the kernel: masks, the flow index, tunnel keys, ids
 * and counters, kept consistent by one writer at a time (the caller holds
 * the datapath lock).
 *
 * Single changes go into the live table in an order that never lets a
 * packet see a half-made flow: tunnel keys before the entry that names
 * them, a mask before its first flow, a raised priority bound before the
 * flow that needs it. `apply` builds a whole new table (index and masks)
 * aside and makes it live with one write of the generation number.
 *
 * A writer that dies midway (SIGKILL, a power cut) can leave the live
 * table right but its bookkeeping behind: ids or key references taken and
 * not written back, counters not yet cleared. Every change therefore sets
 * `WR_CFG_WRITING` in the configuration before its first write and clears
 * it with its last; the next writer that finds it set repairs the
 * bookkeeping from the live table before doing anything (`#repair`).
 *
 * Everything that walks the whole table works on the kernel's bytes, read
 * in batches, and decodes only what it returns, so a million flows stay a
 * matter of seconds and of tens of megabytes. What the table learns from
 * the kernel (masks, the id bitmap, tunnel key reference counts) is kept
 * between calls while the configuration's change counter says nobody else
 * wrote in between.
 *
 * @module
 */

import { BpfMap } from "../bpf/map.ts";
import { MapType } from "../bpf/info.ts";
import { u32 } from "../maps/codec.ts";
import { encodeWith } from "../maps/typed_map.ts";
import {
  actionCodec,
  type ActionEntry,
  ActionOp,
  type Config,
  ConfigFlag,
  decodeFlowKey,
  encodeFlowKey,
  flowEntryCodec,
  flowIndexKeyCodec,
  type FlowKey,
  flowKeyCodec,
  maskCodec,
  maskSetCodec,
  MAX_MASKS,
  NO_TUN_KEY,
  TunFlag,
  tunKeyCodec,
  type TunKeyEntry,
  TunKeySet,
} from "../maps/layouts.ts";
import {
  type ActionMemo,
  type CompiledFlow,
  CompileError,
  compileFlow,
  decompileActions,
  encodeMatch,
} from "./compile.ts";
import type { PortLookup } from "./compile.ts";
import type { Addr } from "./addr.ts";
import type { Match } from "./fields.ts";
import type { ActionSpec, FlowSpec } from "./flow_syntax.ts";
import { byteString, FlowSet, FlowState, type MaskShape, maskShape } from "./flow_set.ts";
import { failpoint } from "./failpoint.ts";
import { IdBitmap } from "./ids.ts";
import type { DatapathMaps } from "./pins.ts";
import { TunKeySlots } from "./tun_keys.ts";

/** A flow's counters, summed over CPUs. */
export interface FlowCounters {
  /** Packets that hit the flow. */
  packets: bigint;
  /** Their bytes. */
  bytes: bigint;
  /** Boot-clock time of the last hit in ns, 0 for never. */
  usedNs: bigint;
  /** Every TCP flag seen. */
  tcpFlags: number;
}

/** A flow as installed. */
export interface InstalledFlow {
  /** Its counters' index. */
  flowId: number;
  /** Priority. */
  priority: number;
  /** The user's cookie. */
  cookie: bigint;
  /** The match (in_port as a number). */
  match: Match;
  /** The actions, as they run (locals, tunnels, pass). */
  actions: ActionSpec[];
  /** Counters, when asked for. */
  counters?: FlowCounters;
}

/** Every flow id's counters, summed over CPUs, in arrays indexed by flow id. */
export interface CounterArrays {
  /** Packets. */
  packets: BigUint64Array;
  /** Bytes. */
  bytes: BigUint64Array;
  /** Boot-clock ns of the last hit, 0 for never. */
  usedNs: BigUint64Array;
  /** TCP flags seen. */
  tcpFlags: Uint16Array;
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
}

/** What `add` did. */
export interface AddResult {
  /** Flows that were new. */
  added: number;
  /** Flows that replaced one with the same match and priority. */
  replaced: number;
  /** Every tunnel remote the flows send to. */
  remotes: Addr[];
}

/** What `apply` changes (or, in a dry run, would change). */
export interface FlowDiff {
  /** How many flows are new. */
  added: number;
  /** How many change their actions or cookie (counters kept). */
  modified: number;
  /** How many go. */
  removed: number;
  /** How many stay as they are. */
  unchanged: number;
  /** The first new flows (at most `listLimit`). */
  add: FlowSpec[];
  /** The first modified flows, as they will be. */
  modify: FlowSpec[];
  /** The first flows that go. */
  remove: InstalledFlow[];
  /** Every tunnel remote the new table sends to. */
  remotes: Addr[];
}

/** Progress of long work: which phase, how far. */
export interface Progress {
  /** "compile" (reading flows), "compare" (with the installed table), "install". */
  phase: "compile" | "compare" | "install";
  /** Flows done. */
  done: number;
  /** Flows in all, when known. */
  total?: number;
}

/** Options of {@link FlowTable.apply}. */
export interface ApplyOptions {
  /** Only say what would change. */
  dryRun?: boolean;
  /** Called every 65 536 flows of each phase. */
  progress?: (p: Progress) => void;
  /** How many flows of each kind the diff lists (default 1000). */
  listLimit?: number;
}

/** FlowTableError is a change the table cannot take. */
export class FlowTableError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "FlowTableError";
  }
}

const offsets = (c: { fields: readonly { name: string; offset: number }[] }) =>
  Object.fromEntries(c.fields.map((f) => [f.name, f.offset]));
const KEY_SIZE = flowKeyCodec.size;
const IK_SIZE = flowIndexKeyCodec.size;
const IK_KEY = offsets(flowIndexKeyCodec).key;
const ENTRY_SIZE = flowEntryCodec.size;
const E = offsets(flowEntryCodec);
const ACTION_SIZE = actionCodec.size;
const FK = offsets(flowKeyCodec);
const M = offsets(maskCodec);
const MASK_SIZE = maskCodec.size;
const MASKS_AT = offsets(maskSetCodec).masks;
const CHUNK = 16384;
const LE = true;

/** A live mask: its shape and what the datapath knows of it. */
interface LiveMask extends MaskShape {
  id: number;
  maxPriority: number;
  flows: number;
  decoded?: FlowKey;
}

/** What the table knows of the kernel, valid while the change counter is `cfg.seq`. */
interface State {
  cfg: Config;
  gen: number;
  /** The live flow index, once opened. */
  index?: BpfMap;
  masks: LiveMask[];
  flowIds: IdBitmap;
  slots: TunKeySlots;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A growable array of u32. */
class U32List {
  items = new Uint32Array(1024);
  length = 0;
  push(x: number): void {
    if (this.length === this.items.length) {
      const bigger = new Uint32Array(this.items.length * 2);
      bigger.set(this.items);
      this.items = bigger;
    }
    this.items[this.length++] = x;
  }
  view(): Uint32Array {
    return this.items.subarray(0, this.length);
  }
}

/** The tunnel key slots named by the entry at `eo` of `vals`. */
function entrySlots(vals: Uint8Array, dv: DataView, eo: number, out: (slot: number) => void): void {
  const n = vals[eo + E.n_actions];
  for (let a = 0; a < n; a++) {
    const at = eo + E.actions + a * ACTION_SIZE;
    if (vals[at] !== ActionOp.TUNNEL) continue;
    const slot = dv.getUint32(at + 4, LE);
    if (slot !== NO_TUN_KEY) out(slot);
  }
}

/** Selected flows of a dump, in compact columns. */
class DumpRows {
  count = 0;
  maskOf: LiveMask[] = [];
  keyAt = new Uint32Array(1024);
  flowId = new Uint32Array(1024);
  priority = new Uint16Array(1024);
  cookie = new BigUint64Array(1024);
  actions = new Uint32Array(1024);
  /** Each distinct action list's raw `struct wr_action`s. */
  actionLists: Uint8Array[] = [];
  #listOf = new Map<string, number>();
  #arena = new Uint8Array(1 << 16);
  #used = 0;
  readonly #maxFlows: number;

  constructor(maxFlows: number) {
    this.#maxFlows = maxFlows;
  }

  add(mask: LiveMask, keys: Uint8Array, k: number, vals: Uint8Array, vdv: DataView, eo: number) {
    if (this.count === this.flowId.length) this.#grow();
    const n = this.count++;
    const width = mask.offsets.length;
    if (this.#used + width > this.#arena.length) {
      const bigger = new Uint8Array(this.#arena.length * 2);
      bigger.set(this.#arena);
      this.#arena = bigger;
    }
    for (let j = 0; j < width; j++) this.#arena[this.#used + j] = keys[k + mask.offsets[j]];
    this.keyAt[n] = this.#used;
    this.#used += width;
    this.maskOf[n] = mask;
    this.flowId[n] = vdv.getUint32(eo + E.flow_id, LE);
    this.priority[n] = vdv.getUint16(eo + E.priority, LE);
    this.cookie[n] = vdv.getBigUint64(eo + E.cookie, LE);
    const raw = vals.subarray(
      eo + E.actions,
      eo + E.actions + vals[eo + E.n_actions] * ACTION_SIZE,
    );
    const sig = byteString(raw);
    let list = this.#listOf.get(sig);
    if (list === undefined) {
      list = this.actionLists.length;
      this.actionLists.push(raw.slice());
      this.#listOf.set(sig, list);
    }
    this.actions[n] = list;
  }

  /** Row `n`'s full masked key into `out`. */
  keyInto(n: number, out: Uint8Array): void {
    out.fill(0);
    const offsets = this.maskOf[n].offsets;
    const at = this.keyAt[n];
    for (let j = 0; j < offsets.length; j++) out[offsets[j]] = this.#arena[at + j];
  }

  /** Rows by priority (highest first), then flow id. */
  *order(): Generator<number> {
    // One number per row orders both ways at once; a native sort of
    // numbers beats a comparator over a million rows many times over.
    const sortKeys = new Float64Array(this.count);
    const rowOf = new Int32Array(this.#maxFlows);
    for (let n = 0; n < this.count; n++) {
      sortKeys[n] = (65535 - this.priority[n]) * 2 ** 32 + this.flowId[n];
      rowOf[this.flowId[n]] = n;
    }
    sortKeys.sort();
    for (const k of sortKeys) yield rowOf[k % 2 ** 32];
  }

  #grow(): void {
    const size = this.flowId.length * 2;
    const grow = <T extends Uint32Array | Uint16Array | BigUint64Array>(a: T, b: T): T => {
      b.set(a as never);
      return b;
    };
    this.keyAt = grow(this.keyAt, new Uint32Array(size));
    this.flowId = grow(this.flowId, new Uint32Array(size));
    this.priority = grow(this.priority, new Uint16Array(size));
    this.cookie = grow(this.cookie, new BigUint64Array(size));
    this.actions = grow(this.actions, new Uint32Array(size));
  }
}

/** FlowTable reads and changes the datapath's flows. */
export class FlowTable {
  readonly #maps: DatapathMaps;
  readonly #ports: PortLookup;
  #state?: State;

  /** Works on `maps`, naming ports through `ports`. */
  constructor(maps: DatapathMaps, ports: PortLookup) {
    this.#maps = maps;
    this.#ports = ports;
  }

  /** Creates an empty flow index sized for the datapath. */
  createIndex(maxFlows = this.#maps.config.read().max_flows): BpfMap {
    return BpfMap.create({
      type: MapType.HASH,
      name: "wr_flow_index",
      keySize: IK_SIZE,
      valueSize: ENTRY_SIZE,
      maxEntries: maxFlows,
      flags: 1, // BPF_F_NO_PREALLOC: memory only for flows that exist
    });
  }

  /** Forgets what was read from the kernel (after a failure midway). */
  invalidate(): void {
    this.close();
  }

  /** The change counter as this table last wrote or read it. */
  get lastSeq(): bigint | undefined {
    return this.#state?.cfg.seq;
  }

  // ---- State ------------------------------------------------------------

  #load(): State {
    const cfg = this.#maps.config.read();
    const gen = cfg.gen & 1;
    const st = this.#state;
    if (st && st.cfg.seq === cfg.seq && st.gen === gen) {
      st.cfg = cfg;
      return st;
    }
    st?.index?.close();
    this.#state = {
      cfg,
      gen,
      masks: this.#readMasks(gen),
      flowIds: new IdBitmap(this.#maps.flowIds.raw),
      slots: new TunKeySlots(this.#maps),
    };
    return this.#state;
  }

  /**
   * The state for a change: when a writer died midway (its mark is still
   * set), the bookkeeping is repaired first.
   */
  #loadForWrite(): State {
    const st = this.#load();
    if (st.cfg.flags & ConfigFlag.WRITING) this.#repair(st);
    return st;
  }

  /** Marks a change under way, before its first write. */
  #markWriting(st: State): void {
    st.cfg = this.#maps.config.bump((c) => ({ flags: c.flags | ConfigFlag.WRITING }));
  }

  /**
   * Makes the bookkeeping agree with the live table again after a writer
   * died midway: the id bitmap and the key references are recomputed from
   * the flows; counters of ids that no flow holds are cleared (a delete
   * may have died before clearing them); mask flow counts are recounted,
   * and masks left without flows are dropped; index entries under no live
   * mask, which no packet can reach, are deleted.
   */
  #repair(st: State): void {
    const index = this.#index(st);
    const masks = new Map(st.masks.map((m) => [m.id, { ...m, flows: 0 }]));
    const ids = new U32List();
    const counts = new Uint32Array(st.slots.capacity);
    const orphans: Uint8Array[] = [];
    for (const c of index.lookupBatch(CHUNK)) {
      const kdv = new DataView(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength);
      const vdv = new DataView(c.values.buffer, c.values.byteOffset, c.values.byteLength);
      for (let i = 0; i < c.count; i++) {
        const mask = masks.get(kdv.getUint32(i * IK_SIZE, LE));
        if (!mask) {
          orphans.push(c.keys.slice(i * IK_SIZE, (i + 1) * IK_SIZE));
          continue;
        }
        mask.flows++;
        ids.push(vdv.getUint32(i * ENTRY_SIZE + E.flow_id, LE));
        entrySlots(c.values, vdv, i * ENTRY_SIZE, (s) => s < counts.length && counts[s]++);
      }
    }
    for (const ik of orphans) index.delete(ik);
    const held = new Uint8Array(st.flowIds.capacity);
    for (const id of ids.view()) held[id] = 1;
    const stale: number[] = [];
    for (let id = 0; id < held.length; id++) if (!held[id] && st.flowIds.has(id)) stale.push(id);
    this.#zeroCounters(stale);
    st.flowIds.rebuild(ids.view());
    st.slots.recount(counts);
    const left = [...masks.values()].filter((m) => m.flows > 0);
    if (left.length < masks.size) this.#publish(st, left, index);
    else {
      st.masks = st.masks.map((m) => masks.get(m.id)!);
      this.#writeMasks(st.gen, st.masks);
    }
    this.#commit(st);
  }

  #readMasks(gen: number): LiveMask[] {
    const raw = this.#maps.masks.raw.lookup(encodeWith(u32, gen));
    if (!raw) return [];
    const dv = new DataView(raw.buffer);
    const count = dv.getUint32(0, LE);
    const out: LiveMask[] = [];
    for (let i = 0; i < count; i++) {
      const at = MASKS_AT + i * MASK_SIZE;
      out.push({
        ...maskShape(raw.slice(at + M.bits, at + M.bits + KEY_SIZE)),
        id: dv.getUint32(at + M.id, LE),
        maxPriority: dv.getUint16(at + M.max_priority, LE),
        flows: dv.getUint32(at + M.flows, LE),
      });
    }
    return out;
  }

  #writeMasks(gen: number, masks: LiveMask[]): void {
    const raw = new Uint8Array(maskSetCodec.size);
    const dv = new DataView(raw.buffer);
    dv.setUint32(0, masks.length, LE);
    masks.forEach((m, i) => {
      const at = MASKS_AT + i * MASK_SIZE;
      raw.set(m.bytes, at + M.bits);
      dv.setUint32(at + M.id, m.id, LE);
      dv.setUint16(at + M.max_priority, m.maxPriority, LE);
      dv.setUint32(at + M.flows, Math.max(m.flows, 0), LE);
    });
    this.#maps.masks.raw.update(encodeWith(u32, gen), raw);
  }

  /** The live flow index, opened once per state (callers do not close it). */
  #index(st: State): BpfMap {
    if (st.index) return st.index;
    const id = this.#maps.flowIndexId(st.gen);
    if (!id) throw new FlowTableError("the datapath has no flow table (run warren up again)");
    const map = this.#maps.openFlowIndex(id);
    if (map.keySize !== IK_SIZE || map.info.valueSize !== ENTRY_SIZE) {
      map.close();
      throw new FlowTableError("the flow index has another layout than this warren's");
    }
    st.index = map;
    return map;
  }

  /** Closes what the table keeps open. */
  close(): void {
    this.#state?.index?.close();
    this.#state = undefined;
  }

  /**
   * Makes `masks` (sorted here) and `index` the live generation in one
   * write: packets see the old table or the new one, never a mixture.
   */
  #publish(st: State, masks: LiveMask[], index: BpfMap): void {
    if (masks.length > MAX_MASKS) {
      throw new FlowTableError(
        `the flows need ${masks.length} masks; the datapath searches at most ${MAX_MASKS}`,
      );
    }
    const next = st.gen ^ 1;
    const sorted = [...masks].sort((a, b) => b.maxPriority - a.maxPriority || a.id - b.id);
    this.#writeMasks(next, sorted);
    this.#maps.setFlowIndex(next, index);
    st.cfg = this.#maps.config.bump(() => ({ gen: next }));
    st.gen = next;
    st.masks = sorted;
    if (st.index && st.index.info.id !== index.info.id) {
      st.index.close();
      st.index = undefined;
    }
  }

  /** Writes back ids and reference counts and marks the change done. */
  #commit(st: State): void {
    st.flowIds.flush();
    st.slots.flush();
    st.cfg = this.#maps.config.bump((c) => ({ flags: c.flags & ~ConfigFlag.WRITING }));
  }

  #nextMaskId(masks: { id: number }[]): number {
    const used = new Set(masks.map((m) => m.id));
    let id = 1;
    while (used.has(id)) id++;
    return id;
  }

  #entryBytes(c: CompiledFlow, flowId: number, slots: number[]): Uint8Array {
    const out = new Uint8Array(ENTRY_SIZE);
    const dv = new DataView(out.buffer);
    dv.setUint32(E.flow_id, flowId, LE);
    dv.setUint16(E.priority, c.spec.priority, LE);
    out[E.n_actions] = c.actions.length;
    out[E.flags] = c.flags;
    dv.setBigUint64(E.cookie, c.spec.cookie, LE);
    c.actions.forEach((a, i) => {
      const arg = a.op === ActionOp.TUNNEL ? slots[a.arg] ?? NO_TUN_KEY : a.arg;
      actionCodec.write(dv, E.actions + i * ACTION_SIZE, { ...a, arg });
    });
    return out;
  }

  #ik(maskId: number, keyBytes: Uint8Array): Uint8Array {
    const ik = new Uint8Array(IK_SIZE);
    new DataView(ik.buffer).setUint32(0, maskId, LE);
    ik.set(keyBytes, IK_KEY);
    return ik;
  }

  #zeroCounters(ids: Uint32Array | number[]): void {
    if (ids.length === 0) return;
    const raw = this.#maps.flowStats.raw;
    const chunk = Math.min(ids.length, 4096);
    const zeros = new Uint8Array(chunk * raw.valueBufferSize);
    for (let i = 0; i < ids.length; i += chunk) {
      const part = Uint32Array.from(ids.slice(i, i + chunk) as ArrayLike<number>);
      raw.updateBatch(new Uint8Array(part.buffer), zeros, part.length);
    }
  }

  // ---- Reading ------------------------------------------------------------

  /** How many flows are installed, and how full the id and key tables are. */
  usage(): {
    flows: number;
    masks: number;
    tunKeys: { used: number; capacity: number };
    flowIds: { used: number; capacity: number };
  } {
    const st = this.#load();
    const index = this.#index(st);
    let flows = 0;
    for (const c of index.lookupBatch(CHUNK)) flows += c.count;
    return {
      flows,
      masks: st.masks.length,
      tunKeys: { used: st.slots.used(), capacity: st.slots.capacity },
      flowIds: { used: st.flowIds.used(), capacity: st.flowIds.capacity },
    };
  }

  /** A reader of tunnel keys by slot, reading the whole table when many are needed. */
  #tunKeyReader(st: State): (slot: number) => TunKeyEntry | undefined {
    const cache = new Map<number, TunKeyEntry | undefined>();
    let all: Uint8Array | undefined;
    if (st.slots.used() > 4096) {
      const raw = this.#maps.tunKeys.raw;
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
          : this.#maps.tunKeys.raw.lookup(encodeWith(u32, slot));
        cache.set(slot, bytes && tunKeyCodec.decode(bytes));
      }
      return cache.get(slot);
    };
  }

  /** Decodes the flow whose index entry is at (`ko`, `eo`). */
  #flowAt(
    mask: LiveMask,
    keys: Uint8Array,
    ko: number,
    vals: Uint8Array,
    vdv: DataView,
    eo: number,
    tunKey: (slot: number) => TunKeyEntry | undefined,
  ): InstalledFlow {
    mask.decoded ??= decodeFlowKey(mask.bytes);
    const actions: ActionEntry[] = [];
    for (let a = 0; a < vals[eo + E.n_actions]; a++) {
      actions.push(actionCodec.read(vdv, eo + E.actions + a * ACTION_SIZE));
    }
    return {
      flowId: vdv.getUint32(eo + E.flow_id, LE),
      priority: vdv.getUint16(eo + E.priority, LE),
      cookie: vdv.getBigUint64(eo + E.cookie, LE),
      match: { key: decodeFlowKey(keys, ko + IK_KEY), mask: mask.decoded },
      actions: decompileActions(actions, tunKey, this.#ports),
    };
  }

  /** A test of raw index entries against `filter`. */
  #selector(
    filter: FlowFilter,
  ): (
    mask: LiveMask,
    keys: Uint8Array,
    ko: number,
    vals: Uint8Array,
    vdv: DataView,
    eo: number,
  ) => boolean {
    const fm = filter.match && encodeMatch(filter.match);
    const tunId = filter.tunId !== undefined ? new Uint8Array(8) : undefined;
    if (tunId) new DataView(tunId.buffer).setBigUint64(0, filter.tunId!);
    return (mask, keys, ko, vals, vdv, eo) => {
      if (filter.priority !== undefined && vdv.getUint16(eo + E.priority, LE) !== filter.priority) {
        return false;
      }
      const k = ko + IK_KEY;
      if (tunId) {
        for (let i = 0; i < 8; i++) {
          if (mask.bytes[FK.tun_id + i] !== 0xff || keys[k + FK.tun_id + i] !== tunId[i]) {
            return false;
          }
        }
      }
      if (filter.port !== undefined) {
        const inMask = mask.bytes[FK.in_port] | mask.bytes[FK.in_port + 1];
        const inPort = keys[k + FK.in_port] | (keys[k + FK.in_port + 1] << 8);
        let uses = inMask !== 0 && inPort === filter.port;
        const n = vals[eo + E.n_actions];
        for (let a = 0; a < n && !uses; a++) {
          const at = eo + E.actions + a * ACTION_SIZE;
          const op = vals[at];
          if (
            (op === ActionOp.OUTPUT || op === ActionOp.TUNNEL) &&
            vdv.getUint16(at + 2, LE) === filter.port
          ) {
            uses = true;
          }
        }
        if (!uses) return false;
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

  /**
   * Every installed flow the filter covers, in table order, each decoded
   * as it is reached.
   */
  *installed(filter: FlowFilter = {}): Generator<InstalledFlow> {
    const st = this.#load();
    const index = this.#index(st);
    const masks = new Map(st.masks.map((m) => [m.id, m]));
    const select = this.#selector(filter);
    const tunKey = this.#tunKeyReader(st);
    for (const c of index.lookupBatch(CHUNK)) {
      const kdv = new DataView(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength);
      const vdv = new DataView(c.values.buffer, c.values.byteOffset, c.values.byteLength);
      const flows: InstalledFlow[] = [];
      for (let i = 0; i < c.count; i++) {
        const mask = masks.get(kdv.getUint32(i * IK_SIZE, LE));
        if (!mask || !select(mask, c.keys, i * IK_SIZE, c.values, vdv, i * ENTRY_SIZE)) continue;
        flows.push(this.#flowAt(mask, c.keys, i * IK_SIZE, c.values, vdv, i * ENTRY_SIZE, tunKey));
      }
      // The batch buffers are reused by the next read: decode before yielding.
      yield* flows;
    }
  }

  /** How many installed flows the filter covers. */
  count(filter: FlowFilter = {}): number {
    const st = this.#load();
    const index = this.#index(st);
    const masks = new Map(st.masks.map((m) => [m.id, m]));
    const select = this.#selector(filter);
    let n = 0;
    for (const c of index.lookupBatch(CHUNK)) {
      const kdv = new DataView(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength);
      const vdv = new DataView(c.values.buffer, c.values.byteOffset, c.values.byteLength);
      for (let i = 0; i < c.count; i++) {
        const mask = masks.get(kdv.getUint32(i * IK_SIZE, LE));
        if (mask && select(mask, c.keys, i * IK_SIZE, c.values, vdv, i * ENTRY_SIZE)) n++;
      }
    }
    return n;
  }

  /** (class << 8 | type) of every Geneve option some flow matches on. */
  geneveOptions(): Set<number> {
    const st = this.#load();
    const out = new Set<number>();
    const gnv = st.masks.filter((m) =>
      m.bytes[FK.gnv_class] | m.bytes[FK.gnv_class + 1] | m.bytes[FK.gnv_type]
    );
    if (gnv.length === 0) return out;
    const ids = new Set(gnv.map((m) => m.id));
    const index = this.#index(st);
    for (const c of index.lookupBatch(CHUNK)) {
      const kdv = new DataView(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength);
      for (let i = 0; i < c.count; i++) {
        if (!ids.has(kdv.getUint32(i * IK_SIZE, LE))) continue;
        const k = i * IK_SIZE + IK_KEY;
        out.add((kdv.getUint16(k + FK.gnv_class) << 8) | c.keys[k + FK.gnv_type]);
      }
    }
    return out;
  }

  /**
   * The flow the datapath picks for `key`: the same search over the same
   * kernel tables (masks in order, one index lookup each, early exit).
   */
  lookup(key: FlowKey): InstalledFlow | undefined {
    const st = this.#load();
    const index = this.#index(st);
    const whole = new Uint8Array(KEY_SIZE);
    encodeFlowKey(key, whole);
    let best: { mask: LiveMask; ik: Uint8Array; entry: Uint8Array; priority: number } | undefined;
    for (const mask of st.masks) {
      if (best && best.priority >= mask.maxPriority) break;
      const masked = whole.map((b, i) => b & mask.bytes[i]);
      const ik = this.#ik(mask.id, masked);
      const entry = index.lookup(ik);
      if (!entry) continue;
      const priority = new DataView(entry.buffer).getUint16(E.priority, LE);
      if (!best || priority > best.priority) best = { mask, ik, entry, priority };
    }
    if (!best) return undefined;
    return this.#flowAt(
      best.mask,
      best.ik,
      0,
      best.entry,
      new DataView(best.entry.buffer),
      0,
      this.#tunKeyReader(st),
    );
  }

  /** The counters of flow `flowId`, summed over CPUs. */
  counters(flowId: number): FlowCounters {
    const out: FlowCounters = { packets: 0n, bytes: 0n, usedNs: 0n, tcpFlags: 0 };
    for (const s of this.#maps.flowStats.get(flowId) ?? []) {
      out.packets += s.packets;
      out.bytes += s.bytes;
      if (s.used_ns > out.usedNs) out.usedNs = s.used_ns;
      out.tcpFlags |= s.tcp_flags;
    }
    return out;
  }

  /** Every flow id's counters in typed arrays: a few bytes per flow. */
  counterArrays(): CounterArrays {
    const raw = this.#maps.flowStats.raw;
    const n = raw.info.maxEntries;
    const out: CounterArrays = {
      packets: new BigUint64Array(n),
      bytes: new BigUint64Array(n),
      usedNs: new BigUint64Array(n),
      tcpFlags: new Uint16Array(n),
    };
    const cpus = raw.valueBufferSize / raw.cpuStride;
    for (const c of raw.lookupBatch(CHUNK)) {
      const keys = new Uint32Array(c.keys.buffer, c.keys.byteOffset, c.count);
      const words = new Uint32Array(c.values.buffer, c.values.byteOffset, c.values.byteLength / 4);
      const vals = new DataView(c.values.buffer, c.values.byteOffset, c.values.byteLength);
      for (let i = 0; i < c.count; i++) {
        const id = keys[i];
        for (let cpu = 0; cpu < cpus; cpu++) {
          const at = i * raw.valueBufferSize + cpu * raw.cpuStride;
          // Most flows are idle: test the packet count's words before any BigInt.
          if (words[at / 4] === 0 && words[at / 4 + 1] === 0) continue;
          out.packets[id] += vals.getBigUint64(at, LE);
          out.bytes[id] += vals.getBigUint64(at + 8, LE);
          const used = vals.getBigUint64(at + 16, LE);
          if (used > out.usedNs[id]) out.usedNs[id] = used;
          out.tcpFlags[id] |= vals.getUint16(at + 24, LE);
        }
      }
    }
    return out;
  }

  /**
   * The installed flows the filter covers, highest priority first (then
   * by flow id). One pass over the kernel table keeps each selected flow
   * in a few compact columns (the key only where its mask has bits, each
   * distinct action list once); flows are decoded one at a time as they
   * are yielded, so a million flows cost tens of megabytes, not gigabytes.
   */
  *sorted(
    filter: FlowFilter = {},
    options: { counters?: CounterArrays } = {},
  ): Generator<InstalledFlow> {
    const st = this.#load();
    const index = this.#index(st);
    const masks = new Map(st.masks.map((m) => [m.id, m]));
    const select = this.#selector(filter);
    const rows = new DumpRows(st.cfg.max_flows);
    for (const c of index.lookupBatch(CHUNK)) {
      const kdv = new DataView(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength);
      const vdv = new DataView(c.values.buffer, c.values.byteOffset, c.values.byteLength);
      for (let i = 0; i < c.count; i++) {
        const mask = masks.get(kdv.getUint32(i * IK_SIZE, LE));
        if (!mask || !select(mask, c.keys, i * IK_SIZE, c.values, vdv, i * ENTRY_SIZE)) continue;
        rows.add(mask, c.keys, i * IK_SIZE + IK_KEY, c.values, vdv, i * ENTRY_SIZE);
      }
    }
    const tunKey = this.#tunKeyReader(st);
    const actionLists = rows.actionLists.map((raw) => {
      const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      const entries: ActionEntry[] = [];
      for (let a = 0; a < raw.length / ACTION_SIZE; a++) {
        entries.push(actionCodec.read(dv, a * ACTION_SIZE));
      }
      // Shared by every flow with this list: frozen.
      return Object.freeze(decompileActions(entries, tunKey, this.#ports).map(Object.freeze));
    });
    const c = options.counters;
    const key = new Uint8Array(KEY_SIZE);
    for (const r of rows.order()) {
      const mask = rows.maskOf[r];
      mask.decoded ??= decodeFlowKey(mask.bytes);
      rows.keyInto(r, key);
      const flowId = rows.flowId[r];
      const f: InstalledFlow = {
        flowId,
        priority: rows.priority[r],
        cookie: rows.cookie[r],
        match: { key: decodeFlowKey(key), mask: mask.decoded },
        actions: actionLists[rows.actions[r]] as ActionSpec[],
      };
      if (c) {
        f.counters = {
          packets: c.packets[flowId],
          bytes: c.bytes[flowId],
          usedNs: c.usedNs[flowId],
          tcpFlags: c.tcpFlags[flowId],
        };
      }
      yield f;
    }
  }

  // ---- Changing -------------------------------------------------------------

  /**
   * Adds flows. A flow with the same match and priority as an installed
   * one replaces its actions and restarts its counters, as Open vSwitch's
   * add-flow does; within `specs` the last of equal flows wins. Every flow
   * is checked before any is written, and a failure midway undoes what
   * was written.
   */
  add(specs: FlowSpec[]): AddResult {
    const byIdentity = new Map<string, CompiledFlow>();
    const memo: ActionMemo = new Map();
    for (const s of specs) {
      const c = compileFlow(s, this.#ports, memo);
      byIdentity.set(byteString(c.maskBytes) + byteString(c.keyBytes), c);
    }
    const compiled = [...byIdentity.values()];
    const st = this.#loadForWrite();
    const index = this.#index(st);

    // Check everything first: masks, conflicts, room.
    const bySig = new Map(st.masks.map((m) => [m.sig, m]));
    const newMasks = new Set<string>();
    const olds: (Uint8Array | undefined)[] = [];
    let fresh = 0;
    for (const c of compiled) {
      const sig = byteString(c.maskBytes);
      const mask = bySig.get(sig);
      if (!mask) newMasks.add(sig);
      const old = mask ? index.lookup(this.#ik(mask.id, c.keyBytes)) : undefined;
      if (old) {
        const p = new DataView(old.buffer).getUint16(E.priority, LE);
        if (p !== c.spec.priority) {
          throw new FlowTableError(
            `a flow with this match is installed at priority ${p}; it would hide or be hidden by one at ${c.spec.priority}: delete it first`,
          );
        }
      } else fresh++;
      olds.push(old);
    }
    if (st.masks.length + newMasks.size > MAX_MASKS) {
      throw new FlowTableError(
        `the flows need ${
          st.masks.length + newMasks.size
        } masks; the datapath searches at most ${MAX_MASKS}`,
      );
    }
    if (fresh > st.flowIds.free()) {
      throw new FlowTableError(
        `the flow table is full: ${fresh} new flows, room for ${st.flowIds.free()} (warren up --max-flows sets the size)`,
      );
    }
    const newKeys = new Set<string>();
    for (const c of compiled) {
      for (const k of c.tunKeyBytes) if (st.slots.find(k) === undefined) newKeys.add(byteString(k));
    }
    if (newKeys.size > st.slots.free()) {
      throw new FlowTableError(
        `${newKeys.size} new tunnel keys, room for ${st.slots.free()} (warren up --max-tun-keys sets how many)`,
      );
    }

    // Then write, remembering how to undo.
    const undo: (() => void)[] = [];
    let added = 0, replaced = 0;
    const remotes = new Map<string, Addr>();
    this.#markWriting(st);
    try {
      compiled.forEach((c, i) => {
        const sig = byteString(c.maskBytes);
        let mask = st.masks.find((m) => m.sig === sig);
        // A new mask, or a higher priority under an old one, is published
        // before the flow that needs it.
        if (!mask || mask.maxPriority < c.spec.priority) {
          const updated: LiveMask = {
            ...maskShape(c.maskBytes),
            id: mask?.id ?? this.#nextMaskId(st.masks),
            maxPriority: Math.max(mask?.maxPriority ?? 0, c.spec.priority),
            flows: mask?.flows ?? 0,
          };
          this.#publish(st, [...st.masks.filter((m) => m.id !== updated.id), updated], index);
          mask = updated;
        }
        const ik = this.#ik(mask.id, c.keyBytes);
        const old = olds[i];
        const slots = c.tunKeyBytes.map((k) => st.slots.acquire(k));
        undo.push(() => slots.forEach((s) => st.slots.release(s)));
        const oldDv = old && new DataView(old.buffer);
        const flowId = oldDv ? oldDv.getUint32(E.flow_id, LE) : st.flowIds.allocate();
        if (!old) undo.push(() => st.flowIds.release([flowId]));
        index.update(ik, this.#entryBytes(c, flowId, slots));
        if (old) {
          undo.push(() => index.update(ik, old));
          entrySlots(old, oldDv!, 0, (s) => st.slots.release(s));
          this.#zeroCounters([flowId]);
          replaced++;
        } else {
          undo.push(() => index.delete(ik));
          const m = mask;
          m.flows++;
          undo.push(() => m.flows--);
          added++;
        }
        for (const t of c.tunKeyBytes) addRemote(remotes, t);
        failpoint("flow.add.written");
      });
    } catch (err) {
      for (const u of undo.reverse()) {
        try {
          u();
        } catch { /* keep undoing */ }
      }
      try {
        // Masks published for flows that are gone again go too.
        const left = st.masks.filter((m) => m.flows > 0);
        if (left.length < st.masks.length) this.#publish(st, left, index);
        else this.#writeMasks(st.gen, st.masks);
        this.#commit(st);
      } finally {
        this.invalidate();
      }
      throw err;
    }
    this.#writeMasks(st.gen, st.masks);
    this.#commit(st);
    return { added, replaced, remotes: [...remotes.values()] };
  }

  /**
   * Changes the actions (and cookie) of the flow with exactly this match
   * and priority, keeping its counters. Returns how many changed (0 or 1).
   */
  modify(spec: FlowSpec): number {
    const c = compileFlow(spec, this.#ports);
    const st = this.#loadForWrite();
    const index = this.#index(st);
    const sig = byteString(c.maskBytes);
    const mask = st.masks.find((m) => m.sig === sig);
    if (!mask) return 0;
    const ik = this.#ik(mask.id, c.keyBytes);
    const old = index.lookup(ik);
    if (!old) return 0;
    const dv = new DataView(old.buffer);
    if (dv.getUint16(E.priority, LE) !== spec.priority) return 0;
    this.#markWriting(st);
    const slots = c.tunKeyBytes.map((k) => st.slots.acquire(k));
    try {
      index.update(ik, this.#entryBytes(c, dv.getUint32(E.flow_id, LE), slots), "exist");
    } catch (err) {
      slots.forEach((s) => st.slots.release(s));
      this.#commit(st);
      throw err;
    }
    entrySlots(old, dv, 0, (s) => st.slots.release(s));
    this.#commit(st);
    return 1;
  }

  /**
   * Deletes flows: exactly this match (and priority, if given) with
   * `strict`, else every flow the filter covers. Returns how many went.
   */
  delete(filter: FlowFilter, strict: boolean): number {
    const st = this.#loadForWrite();
    const index = this.#index(st);
    const victims: { ik: Uint8Array; entry: Uint8Array; mask: LiveMask }[] = [];
    if (strict) {
      if (!filter.match) throw new FlowTableError("a strict delete needs a match");
      const { keyBytes, maskBytes } = encodeMatch(filter.match);
      const sig = byteString(maskBytes);
      const mask = st.masks.find((m) => m.sig === sig);
      const ik = mask && this.#ik(mask.id, keyBytes);
      const entry = ik && index.lookup(ik);
      if (
        mask && ik && entry &&
        (filter.priority === undefined ||
          new DataView(entry.buffer).getUint16(E.priority, LE) === filter.priority)
      ) victims.push({ ik, entry, mask });
    } else {
      const masks = new Map(st.masks.map((m) => [m.id, m]));
      const select = this.#selector(filter);
      for (const c of index.lookupBatch(CHUNK)) {
        const kdv = new DataView(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength);
        const vdv = new DataView(c.values.buffer, c.values.byteOffset, c.values.byteLength);
        for (let i = 0; i < c.count; i++) {
          const mask = masks.get(kdv.getUint32(i * IK_SIZE, LE));
          if (!mask || !select(mask, c.keys, i * IK_SIZE, c.values, vdv, i * ENTRY_SIZE)) continue;
          victims.push({
            ik: c.keys.slice(i * IK_SIZE, (i + 1) * IK_SIZE),
            entry: c.values.slice(i * ENTRY_SIZE, (i + 1) * ENTRY_SIZE),
            mask,
          });
        }
      }
    }
    if (victims.length === 0) return 0;
    this.#markWriting(st);
    for (let i = 0; i < victims.length; i += CHUNK) {
      const part = victims.slice(i, i + CHUNK);
      const keys = new Uint8Array(part.length * IK_SIZE);
      part.forEach((v, j) => keys.set(v.ik, j * IK_SIZE));
      index.deleteBatch(keys, part.length);
      failpoint("flow.delete.deleted");
    }
    const ids: number[] = [];
    for (const v of victims) {
      const dv = new DataView(v.entry.buffer);
      entrySlots(v.entry, dv, 0, (s) => st.slots.release(s));
      ids.push(dv.getUint32(E.flow_id, LE));
      v.mask.flows--;
    }
    this.#zeroCounters(ids);
    st.flowIds.release(ids);
    const left = st.masks.filter((m) => m.flows > 0);
    // A mask with no flows left costs every packet a lookup: drop it.
    if (left.length < st.masks.length) this.#publish(st, left, index);
    else this.#writeMasks(st.gen, st.masks);
    this.#commit(st);
    return victims.length;
  }

  /**
   * Makes the installed flows exactly `specs`. The new table is built
   * aside and switched to atomically; unchanged and modified flows keep
   * their ids and counters. With `dryRun`, only says what would change.
   * `specs` is read once, so a generator can stream a million flows
   * without holding them.
   */
  apply(specs: Iterable<FlowSpec>, options: ApplyOptions = {}): FlowDiff {
    const limit = options.listLimit ?? 1000;
    const progress = options.progress;
    const set = new FlowSet();
    const memo: ActionMemo = new Map();
    for (const s of specs) {
      set.add(compileFlow(s, this.#ports, memo));
      if (set.count % 65536 === 0) progress?.({ phase: "compile", done: set.count });
    }
    progress?.({ phase: "compile", done: set.count, total: set.count });
    const st = options.dryRun ? this.#load() : this.#loadForWrite();
    const oldIndex = this.#index(st);

    // Old masks by id, as masks of the set (or none).
    const setMaskOf = new Map<number, number>();
    for (const m of st.masks) {
      const i = set.masks.findIndex((s) => s.sig === m.sig);
      if (i >= 0) setMaskOf.set(m.id, i);
    }
    // Action lists whose keys all have slots already can be compared as bytes.
    for (const a of set.actionSets) this.#resolve(a, st.slots, false);

    // Walk the installed table once, raw.
    const oldIds = new U32List();
    const oldCounts = new Uint32Array(st.slots.capacity);
    const removedIds = new U32List();
    const removeSample: InstalledFlow[] = [];
    const tunKey = this.#tunKeyReader(st);
    const masksById = new Map(st.masks.map((m) => [m.id, m]));
    let seen = 0;
    for (const c of oldIndex.lookupBatch(CHUNK)) {
      const kdv = new DataView(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength);
      const vdv = new DataView(c.values.buffer, c.values.byteOffset, c.values.byteLength);
      for (let i = 0; i < c.count; i++) {
        const ko = i * IK_SIZE, eo = i * ENTRY_SIZE;
        const flowId = vdv.getUint32(eo + E.flow_id, LE);
        oldIds.push(flowId);
        entrySlots(c.values, vdv, eo, (s) => s < oldCounts.length && oldCounts[s]++);
        const mi = setMaskOf.get(kdv.getUint32(ko, LE));
        const j = mi === undefined ? -1 : set.find(mi, c.keys, ko + IK_KEY);
        const priority = vdv.getUint16(eo + E.priority, LE);
        if (j < 0 || set.priority[j] !== priority) {
          removedIds.push(flowId);
          const mask = masksById.get(kdv.getUint32(ko, LE));
          if (removeSample.length < limit && mask) {
            removeSample.push(this.#flowAt(mask, c.keys, ko, c.values, vdv, eo, tunKey));
          }
          continue;
        }
        set.oldId[j] = flowId;
        const a = set.actionSets[set.actionSet[j]];
        const same = a.resolved !== undefined &&
          vdv.getBigUint64(eo + E.cookie, LE) === set.cookie[j] &&
          c.values[eo + E.flags] === a.flags && c.values[eo + E.n_actions] === a.count &&
          sameBytes(
            c.values.subarray(eo + E.actions, eo + E.actions + a.count * ACTION_SIZE),
            a.resolved,
          );
        set.state[j] = same ? FlowState.UNCHANGED : FlowState.MODIFIED;
      }
      seen += c.count;
      progress?.({ phase: "compare", done: seen });
    }

    const diff = this.#describe(set, removedIds.length, removeSample, limit);
    if (options.dryRun) return diff;

    this.#markWriting(st);
    try {
      // Room: ids and slots as the old table leaves them, then the new
      // flows' needs.
      st.flowIds.rebuild(oldIds.view());
      st.slots.recount(oldCounts);
      if (diff.added > st.flowIds.free()) {
        throw new FlowTableError(
          `the flow table is full: ${diff.added} new flows, room for ${st.flowIds.free()} (warren up --max-flows sets the size)`,
        );
      }
      const missing = new Set<string>();
      for (const a of set.actionSets) {
        if (a.resolved) continue;
        for (const k of a.tunKeys) if (st.slots.find(k) === undefined) missing.add(byteString(k));
      }
      if (missing.size > st.slots.free()) {
        throw new FlowTableError(
          `${missing.size} new tunnel keys, room for ${st.slots.free()} (warren up --max-tun-keys sets how many)`,
        );
      }
      if (set.masks.length > MAX_MASKS) {
        throw new FlowTableError(
          `the flows need ${set.masks.length} masks; the datapath searches at most ${MAX_MASKS}`,
        );
      }
      // New keys get slots (free ones: no packet can be reading them).
      for (const a of set.actionSets) if (!a.resolved) this.#resolve(a, st.slots, true);

      // Masks keep their ids; new ones take free ids.
      const live: LiveMask[] = [];
      for (const m of set.masks) {
        const old = st.masks.find((o) => o.sig === m.sig);
        live.push({ ...m, id: old?.id ?? 0, decoded: undefined });
      }
      for (const m of live) if (!m.id) m.id = this.#nextMaskId(live);

      // The new index, written in batches.
      const newIndex = this.createIndex(st.cfg.max_flows);
      try {
        const newCounts = new Uint32Array(st.slots.capacity);
        const keys = new Uint8Array(CHUNK * IK_SIZE);
        const vals = new Uint8Array(CHUNK * ENTRY_SIZE);
        const kdv = new DataView(keys.buffer);
        const vdv = new DataView(vals.buffer);
        let n = 0;
        for (let j = 0; j < set.count; j++) {
          const ko = n * IK_SIZE, eo = n * ENTRY_SIZE;
          kdv.setUint32(ko, live[set.maskIndex[j]].id, LE);
          kdv.setUint32(ko + 4, 0, LE);
          set.keyInto(j, keys, ko + IK_KEY);
          const a = set.actionSets[set.actionSet[j]];
          vals.fill(0, eo, eo + ENTRY_SIZE);
          const flowId = set.oldId[j] >= 0 ? set.oldId[j] : st.flowIds.allocate();
          vdv.setUint32(eo + E.flow_id, flowId, LE);
          vdv.setUint16(eo + E.priority, set.priority[j], LE);
          vals[eo + E.n_actions] = a.count;
          vals[eo + E.flags] = a.flags;
          vdv.setBigUint64(eo + E.cookie, set.cookie[j], LE);
          vals.set(a.resolved!, eo + E.actions);
          entrySlots(vals, vdv, eo, (s) => newCounts[s]++);
          if (++n === CHUNK || j === set.count - 1) {
            newIndex.updateBatch(keys, vals, n);
            n = 0;
            progress?.({ phase: "install", done: j + 1, total: set.count });
            failpoint("flow.apply.installing");
          }
        }
        this.#publish(st, live, newIndex);
        failpoint("flow.apply.published");
        // The old generation's slot still names the old index; point it at
        // the new one too, so the old index is freed once no packet uses it.
        this.#maps.setFlowIndex(st.gen ^ 1, newIndex);
        st.slots.recount(newCounts);
      } finally {
        newIndex.close();
      }
      // Only now may the old table's ids be reused.
      this.#zeroCounters(removedIds.view());
      st.flowIds.release(removedIds.view());
      this.#commit(st);
    } catch (err) {
      this.invalidate();
      throw err;
    }
    return diff;
  }

  /** Gives action list `a` its kernel form, with slots; `take` allocates missing keys. */
  #resolve(
    a: { actions: Uint8Array; count: number; tunKeys: Uint8Array[]; resolved?: Uint8Array },
    slots: TunKeySlots,
    take: boolean,
  ): void {
    const out = a.actions.slice();
    const dv = new DataView(out.buffer);
    for (let i = 0; i < a.count; i++) {
      const at = i * ACTION_SIZE;
      if (out[at] !== ActionOp.TUNNEL) continue;
      const key = a.tunKeys[dv.getUint32(at + 4, LE)];
      let slot = slots.find(key);
      if (slot === undefined) {
        if (!take) return;
        slot = slots.acquire(key);
      }
      dv.setUint32(at + 4, slot, LE);
    }
    a.resolved = out;
  }

  /** The diff of `set` against the table, with up to `limit` flows of each kind. */
  #describe(set: FlowSet, removed: number, removeSample: InstalledFlow[], limit: number): FlowDiff {
    const diff: FlowDiff = {
      added: 0,
      modified: 0,
      removed,
      unchanged: 0,
      add: [],
      modify: [],
      remove: removeSample,
      remotes: [],
    };
    const remotes = new Map<string, Addr>();
    for (const a of set.actionSets) {
      for (const k of a.tunKeys) {
        addRemote(remotes, k);
      }
    }
    diff.remotes = [...remotes.values()];
    const key = new Uint8Array(KEY_SIZE);
    const spec = (j: number): FlowSpec => {
      set.keyInto(j, key, 0);
      const a = set.actionSets[set.actionSet[j]];
      const dv = new DataView(a.actions.buffer);
      const entries: ActionEntry[] = [];
      for (let i = 0; i < a.count; i++) {
        entries.push(actionCodec.read(dv, i * ACTION_SIZE));
      }
      return {
        priority: set.priority[j],
        cookie: set.cookie[j],
        match: {
          key: decodeFlowKey(key),
          mask: decodeFlowKey(set.masks[set.maskIndex[j]].bytes),
        },
        actions: decompileActions(entries, (i) => tunKeyCodec.decode(a.tunKeys[i]), this.#ports),
      };
    };
    for (let j = 0; j < set.count; j++) {
      if (set.state[j] === FlowState.NEW || set.oldId[j] < 0) {
        diff.added++;
        if (diff.add.length < limit) diff.add.push(spec(j));
      } else if (set.state[j] === FlowState.MODIFIED) {
        diff.modified++;
        if (diff.modify.length < limit) diff.modify.push(spec(j));
      } else diff.unchanged++;
    }
    return diff;
  }
}

const TK = offsets(tunKeyCodec);

/** Notes the remote a tunnel key (as bytes) sends to. */
function addRemote(remotes: Map<string, Addr>, t: Uint8Array): void {
  if (!(t[TK.set] & TunKeySet.DST)) return;
  const dst = t.slice(TK.dst, TK.dst + 16);
  const sig = byteString(dst);
  if (!remotes.has(sig)) remotes.set(sig, { v6: (t[TK.flags] & TunFlag.V6) !== 0, bytes: dst });
}

export { CompileError };
