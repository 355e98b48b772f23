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
 * @module
 */

import { BpfMap } from "../bpf/map.ts";
import { MapType } from "../bpf/info.ts";
import {
  ActionOp,
  type Config,
  type FlowEntry,
  flowEntryCodec,
  type FlowIndexKey,
  flowIndexKeyCodec,
  flowKeyCodec,
  type FlowStats,
  type MaskEntry,
  MAX_MASKS,
  NO_TUN_KEY,
  tunKeyCodec,
  type TunKeyEntry,
} from "../maps/layouts.ts";
import { TypedMap } from "../maps/typed_map.ts";
import {
  type CompiledFlow,
  CompileError,
  compileFlow,
  decompileActions,
  type PortLookup,
} from "./compile.ts";
import { emptyKey, type Match } from "./fields.ts";
import type { ActionSpec, FlowSpec } from "./flow_syntax.ts";
import { IdBitmap } from "./ids.ts";
import type { DatapathMaps, FlowIndex } from "./pins.ts";

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

/** What `apply` changes. */
export interface FlowDiff {
  /** New flows. */
  add: FlowSpec[];
  /** Flows whose actions or cookie change (counters kept). */
  modify: FlowSpec[];
  /** Flows that go. */
  remove: InstalledFlow[];
  /** Flows left as they are. */
  unchanged: number;
}

/** FlowTableError is a change the table cannot take. */
export class FlowTableError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "FlowTableError";
  }
}

const hexOf = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** The identity of a flow: mask, masked key and priority. */
function identity(maskBytes: Uint8Array, keyBytes: Uint8Array, priority: number): string {
  return `${priority}/${hexOf(maskBytes)}/${hexOf(keyBytes)}`;
}

function emptyMask(): MaskEntry {
  return { bits: emptyKey(), id: 0, max_priority: 0, flows: 0 };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Whether flow (key, mask) is covered by filter (fkey, fmask). */
function covers(
  flowMask: Uint8Array,
  flowKey: Uint8Array,
  fMask: Uint8Array,
  fKey: Uint8Array,
): boolean {
  for (let i = 0; i < fMask.length; i++) {
    if ((fMask[i] & ~flowMask[i]) !== 0) return false;
    if ((flowKey[i] & fMask[i]) !== (fKey[i] & fMask[i])) return false;
  }
  return true;
}

/** FlowTable reads and changes the datapath's flows. */
export class FlowTable {
  readonly #maps: DatapathMaps;
  readonly #ports: PortLookup;

  /** Works on `maps`, naming ports through `ports`. */
  constructor(maps: DatapathMaps, ports: PortLookup) {
    this.#maps = maps;
    this.#ports = ports;
  }

  #config(): Config {
    return this.#maps.readConfig();
  }

  #masks(gen: number): MaskEntry[] {
    const set = this.#maps.masks.get(gen);
    return set ? set.masks.slice(0, set.count) : [];
  }

  #liveIndex(): { gen: number; index: FlowIndex } {
    const gen = this.#config().gen & 1;
    const index = this.#maps.flowIndex(gen);
    if (!index) throw new FlowTableError("the datapath has no flow table (run warren up again)");
    return { gen, index };
  }

  /** Creates an empty flow index sized for the datapath. */
  createIndex(maxFlows = this.#config().max_flows): BpfMap {
    return BpfMap.create({
      type: MapType.HASH,
      name: "wr_flow_index",
      keySize: flowIndexKeyCodec.size,
      valueSize: flowEntryCodec.size,
      maxEntries: maxFlows,
      flags: 1, // BPF_F_NO_PREALLOC: memory only for flows that exist
    });
  }

  /**
   * Makes `masks` (sorted here) and `index` the live generation in one
   * write: packets see the old table or the new one, never a mixture.
   */
  #publish(masks: MaskEntry[], index: BpfMap): void {
    if (masks.length > MAX_MASKS) {
      throw new FlowTableError(
        `the flows need ${masks.length} masks; the datapath searches at most ${MAX_MASKS}`,
      );
    }
    const cfg = this.#config();
    const next = (cfg.gen & 1) ^ 1;
    const sorted = [...masks].sort((a, b) => b.max_priority - a.max_priority || a.id - b.id);
    this.#maps.masks.set(next, {
      count: sorted.length,
      masks: [...sorted, ...Array.from({ length: MAX_MASKS - sorted.length }, emptyMask)],
    });
    this.#maps.setFlowIndex(next, index);
    this.#maps.config.set(0, { ...cfg, gen: next, seq: cfg.seq + 1n });
  }

  /** Rewrites the live mask set in place (only counts change, not order). */
  #rewriteMasks(gen: number, masks: MaskEntry[]): void {
    this.#maps.masks.set(gen, {
      count: masks.length,
      masks: [...masks, ...Array.from({ length: MAX_MASKS - masks.length }, emptyMask)],
    });
  }

  /**
   * Every installed flow (in table order), read in batches; with
   * `priorities`, only those in that band, the rest skipped undecoded.
   */
  *installed(
    options: { counters?: boolean; priorities?: [number, number] } = {},
  ): Generator<InstalledFlow> {
    const { gen, index } = this.#liveIndex();
    using _ = index;
    const masks = new Map(this.#masks(gen).map((m) => [m.id, m]));
    const tunKeys = new Map<number, TunKeyEntry | undefined>();
    const tunKey = (slot: number) => {
      if (!tunKeys.has(slot)) tunKeys.set(slot, this.#maps.tunKeys.get(slot));
      return tunKeys.get(slot);
    };
    const [lo, hi] = options.priorities ?? [0, 65535];
    const kSize = flowIndexKeyCodec.size;
    const vSize = flowEntryCodec.size;
    for (const c of index.raw.lookupBatch(16384)) {
      const vals = new DataView(c.values.buffer, c.values.byteOffset, c.values.byteLength);
      for (let i = 0; i < c.count; i++) {
        const priority = vals.getUint16(i * vSize + 4, true);
        if (priority < lo || priority > hi) continue;
        const ik = flowIndexKeyCodec.decode(c.keys, i * kSize);
        const entry = flowEntryCodec.decode(c.values, i * vSize);
        const flow = this.#flowOf(ik, entry, masks, tunKey, options.counters ?? false);
        if (flow) yield flow;
      }
    }
  }

  #flowOf(
    ik: FlowIndexKey,
    entry: FlowEntry,
    masks: Map<number, MaskEntry>,
    tunKey: (slot: number) => TunKeyEntry | undefined,
    counters: boolean,
  ): InstalledFlow | undefined {
    {
      const mask = masks.get(ik.mask_id);
      if (!mask) return undefined;
      const flow: InstalledFlow = {
        flowId: entry.flow_id,
        priority: entry.priority,
        cookie: entry.cookie,
        match: { key: ik.key, mask: mask.bits },
        actions: decompileActions(entry.actions.slice(0, entry.n_actions), tunKey, this.#ports),
      };
      if (counters) flow.counters = this.counters(entry.flow_id);
      return flow;
    }
  }

  /**
   * The flow the datapath picks for `key`: the same search over the same
   * kernel tables (masks in order, one index lookup each, early exit).
   */
  lookup(key: import("../maps/layouts.ts").FlowKey): InstalledFlow | undefined {
    const { gen, index } = this.#liveIndex();
    using _ = index;
    const keyBytes = flowKeyCodec.encode(key);
    let best: { ik: FlowIndexKey; entry: FlowEntry; mask: MaskEntry } | undefined;
    for (const mask of this.#masks(gen)) {
      if (best && best.entry.priority >= mask.max_priority) break;
      const maskBytes = flowKeyCodec.encode(mask.bits);
      const ik = {
        mask_id: mask.id,
        key: flowKeyCodec.decode(keyBytes.map((b, i) => b & maskBytes[i])),
      };
      const entry = index.get(ik);
      if (entry && (!best || entry.priority > best.entry.priority)) best = { ik, entry, mask };
    }
    if (!best) return undefined;
    return this.#flowOf(
      best.ik,
      best.entry,
      new Map([[best.mask.id, best.mask]]),
      (s) => this.#maps.tunKeys.get(s),
      false,
    );
  }

  /** The counters of flow `flowId`, summed over CPUs. */
  counters(flowId: number): FlowCounters {
    const per = this.#maps.flowStats.get(flowId) ?? [];
    return sumStats(per);
  }

  /** The installed flows the filter covers, highest priority first. */
  dump(filter: FlowFilter = {}, options: { counters?: boolean } = {}): InstalledFlow[] {
    return [
      ...this.sorted(filter, { counters: options.counters ? this.counterArrays() : undefined }),
    ];
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
    for (const c of raw.lookupBatch(16384)) {
      const keys = new DataView(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength);
      const vals = new DataView(c.values.buffer, c.values.byteOffset, c.values.byteLength);
      for (let i = 0; i < c.count; i++) {
        const id = keys.getUint32(i * 4, true);
        for (let cpu = 0; cpu < cpus; cpu++) {
          const at = i * raw.valueBufferSize + cpu * raw.cpuStride;
          const packets = vals.getBigUint64(at, true);
          if (!packets) continue;
          out.packets[id] += packets;
          out.bytes[id] += vals.getBigUint64(at + 8, true);
          const used = vals.getBigUint64(at + 16, true);
          if (used > out.usedNs[id]) out.usedNs[id] = used;
          out.tcpFlags[id] |= vals.getUint16(at + 24, true);
        }
      }
    }
    return out;
  }

  /**
   * The installed flows the filter covers, highest priority first, never
   * more than `window` of them decoded at once: a large table is read in
   * several passes, each over a band of priorities.
   */
  *sorted(
    filter: FlowFilter = {},
    options: { counters?: CounterArrays; window?: number } = {},
  ): Generator<InstalledFlow> {
    const window = options.window ?? 200000;
    const fm = filter.match &&
      { key: flowKeyCodec.encode(filter.match.key), mask: flowKeyCodec.encode(filter.match.mask) };
    const histogram = this.#priorityHistogram();
    const total = histogram.reduce((a, b) => a + b, 0);
    const bands: [number, number][] = [];
    if (total <= window) bands.push([0, 65535]);
    else {
      let hi = 65535, count = 0;
      for (let p = 65535; p >= 0; p--) {
        count += histogram[p];
        if (count >= window || p === 0) {
          bands.push([p, hi]);
          hi = p - 1;
          count = 0;
        }
      }
    }
    const c = options.counters;
    for (const [lo, hi] of bands) {
      const batch: InstalledFlow[] = [];
      for (const f of this.installed({ priorities: [lo, hi] })) {
        if (!this.#selected(f, filter, fm)) continue;
        if (c) {
          f.counters = {
            packets: c.packets[f.flowId],
            bytes: c.bytes[f.flowId],
            usedNs: c.usedNs[f.flowId],
            tcpFlags: c.tcpFlags[f.flowId],
          };
        }
        batch.push(f);
      }
      batch.sort((a, b) => b.priority - a.priority || a.flowId - b.flowId);
      yield* batch;
    }
  }

  /** How many flows sit at each priority, from the entries' raw bytes. */
  #priorityHistogram(): Uint32Array {
    const histogram = new Uint32Array(65536);
    const { index } = this.#liveIndex();
    using _ = index;
    const size = flowEntryCodec.size;
    for (const c of index.raw.lookupBatch(16384)) {
      const vals = new DataView(c.values.buffer, c.values.byteOffset, c.values.byteLength);
      for (let i = 0; i < c.count; i++) histogram[vals.getUint16(i * size + 4, true)]++;
    }
    return histogram;
  }

  #selected(
    f: InstalledFlow,
    filter: FlowFilter,
    fm?: { key: Uint8Array; mask: Uint8Array },
  ): boolean {
    if (filter.priority !== undefined && f.priority !== filter.priority) return false;
    if (
      filter.tunId !== undefined &&
      !(f.match.mask.tun_id === 2n ** 64n - 1n && f.match.key.tun_id === filter.tunId)
    ) {
      return false;
    }
    if (filter.port !== undefined) {
      const name = this.#ports.byNumber(filter.port)?.name;
      const inPort = f.match.mask.in_port !== 0 && f.match.key.in_port === filter.port;
      const outPort = f.actions.some((a) => a.type === "output" && a.port === name);
      if (!inPort && !outPort) return false;
    }
    if (fm) {
      const mask = flowKeyCodec.encode(f.match.mask);
      const key = flowKeyCodec.encode(f.match.key);
      if (!covers(mask, key, fm.mask, fm.key)) return false;
    }
    return true;
  }

  /** Allocates tunnel key slots for `c` and writes the keys. */
  #writeTunKeys(c: CompiledFlow, slots: IdBitmap): number[] {
    if (c.tunKeys.length === 0) return [];
    const ids = slots.allocate(c.tunKeys.length);
    this.#maps.tunKeys.setMany(ids.map((id, i) => [id, c.tunKeys[i]]));
    return ids;
  }

  #entry(c: CompiledFlow, flowId: number, slotIds: number[]): FlowEntry {
    const actions = c.actions.map((a) =>
      a.op === ActionOp.TUNNEL ? { ...a, arg: slotIds[a.arg] ?? NO_TUN_KEY } : a
    );
    return {
      flow_id: flowId,
      priority: c.spec.priority,
      n_actions: actions.length,
      flags: c.flags,
      cookie: c.spec.cookie,
      actions: [
        ...actions,
        ...Array.from({ length: 8 - actions.length }, () => ({ op: 0, flags: 0, port: 0, arg: 0 })),
      ],
    };
  }

  #tunSlots(entry: FlowEntry): number[] {
    return entry.actions.slice(0, entry.n_actions)
      .filter((a) => a.op === ActionOp.TUNNEL && a.arg !== NO_TUN_KEY)
      .map((a) => a.arg);
  }

  /**
   * Adds flows. A flow with the same match and priority as an installed
   * one replaces its actions and restarts its counters, as Open vSwitch's
   * add-flow does. Returns how many were new and how many replaced.
   */
  add(specs: FlowSpec[]): { added: number; replaced: number } {
    const compiled = specs.map((s) => compileFlow(s, this.#ports));
    const flowIds = new IdBitmap(this.#maps.flowIds);
    const slots = new IdBitmap(this.#maps.tunKeyIds);
    const { gen, index } = this.#liveIndex();
    using _ = index;
    let masks = this.#masks(gen);
    let added = 0, replaced = 0;
    const freedSlots: number[] = [];
    for (const c of compiled) {
      let mask = masks.find((m) => sameBytes(flowKeyCodec.encode(m.bits), c.maskBytes));
      // A new mask, or a higher priority under an old one, is published
      // before the flow that needs it.
      if (!mask || mask.max_priority < c.spec.priority) {
        const id = mask?.id ?? nextMaskId(masks);
        const updated: MaskEntry = {
          bits: flowKeyCodec.decode(c.maskBytes),
          id,
          max_priority: Math.max(mask?.max_priority ?? 0, c.spec.priority),
          flows: mask?.flows ?? 0,
        };
        masks = [...masks.filter((m) => m.id !== id), updated];
        this.#publish(masks, index.raw);
        mask = updated;
      }
      const ik: FlowIndexKey = { mask_id: mask.id, key: flowKeyCodec.decode(c.keyBytes) };
      const old = index.get(ik);
      if (old && old.priority !== c.spec.priority) {
        throw new FlowTableError(
          `a flow with this match is installed at priority ${old.priority}; it would hide or be hidden by one at ${c.spec.priority}: delete it first`,
        );
      }
      const slotIds = this.#writeTunKeys(c, slots);
      const flowId = old ? old.flow_id : flowIds.allocate(1)[0];
      index.set(ik, this.#entry(c, flowId, slotIds));
      if (old) {
        freedSlots.push(...this.#tunSlots(old));
        this.#zeroCounters([flowId]);
        replaced++;
      } else {
        mask.flows++;
        added++;
      }
    }
    slots.free(freedSlots);
    flowIds.flush();
    slots.flush();
    const live = this.#config().gen & 1;
    this.#rewriteMasks(live, sortMasks(masks));
    return { added, replaced };
  }

  /**
   * Changes the actions (and cookie) of flows with exactly this match and
   * priority, keeping their counters. Returns how many changed.
   */
  modify(spec: FlowSpec): number {
    const c = compileFlow(spec, this.#ports);
    const { gen, index } = this.#liveIndex();
    using _ = index;
    const mask = this.#masks(gen).find((m) => sameBytes(flowKeyCodec.encode(m.bits), c.maskBytes));
    if (!mask) return 0;
    const ik: FlowIndexKey = { mask_id: mask.id, key: flowKeyCodec.decode(c.keyBytes) };
    const old = index.get(ik);
    if (!old || old.priority !== spec.priority) return 0;
    const slots = new IdBitmap(this.#maps.tunKeyIds);
    const slotIds = this.#writeTunKeys(c, slots);
    index.set(ik, this.#entry(c, old.flow_id, slotIds), "exist");
    slots.free(this.#tunSlots(old));
    slots.flush();
    return 1;
  }

  /**
   * Deletes flows: exactly this match (and priority, if given) with
   * `strict`, else every flow the filter covers. Returns how many went.
   */
  delete(filter: FlowFilter, strict: boolean): number {
    const { gen, index } = this.#liveIndex();
    using _ = index;
    let masks = this.#masks(gen);
    const fm = filter.match &&
      { key: flowKeyCodec.encode(filter.match.key), mask: flowKeyCodec.encode(filter.match.mask) };
    const victims: [FlowIndexKey, FlowEntry][] = [];
    for (const [ik, entry] of index.entries()) {
      const mask = masks.find((m) => m.id === ik.mask_id);
      if (!mask) continue;
      const maskBytes = flowKeyCodec.encode(mask.bits);
      const keyBytes = flowKeyCodec.encode(ik.key);
      if (strict) {
        if (
          !fm || !sameBytes(maskBytes, fm.mask) ||
          !sameBytes(keyBytes, fm.key.map((b, i) => b & fm.mask[i]))
        ) continue;
        if (filter.priority !== undefined && entry.priority !== filter.priority) continue;
      } else {
        const f: InstalledFlow = {
          flowId: entry.flow_id,
          priority: entry.priority,
          cookie: entry.cookie,
          match: { key: ik.key, mask: mask.bits },
          actions: decompileActions(
            entry.actions.slice(0, entry.n_actions),
            () => undefined,
            this.#ports,
          ),
        };
        if (!this.#selected(f, filter, fm)) continue;
      }
      victims.push([ik, entry]);
    }
    if (victims.length === 0) return 0;
    index.deleteMany(victims.map(([ik]) => ik));
    const flowIds = new IdBitmap(this.#maps.flowIds);
    const slots = new IdBitmap(this.#maps.tunKeyIds);
    for (const [ik, entry] of victims) {
      const m = masks.find((x) => x.id === ik.mask_id);
      if (m) m.flows--;
      slots.free(this.#tunSlots(entry));
    }
    const ids = victims.map(([, e]) => e.flow_id);
    this.#zeroCounters(ids);
    flowIds.free(ids);
    flowIds.flush();
    slots.flush();
    const emptied = masks.some((m) => m.flows <= 0);
    masks = masks.filter((m) => m.flows > 0);
    if (emptied) this.#publish(masks, index.raw);
    else this.#rewriteMasks(gen, sortMasks(masks));
    return victims.length;
  }

  #zeroCounters(ids: number[]): void {
    const zero: FlowStats = { packets: 0n, bytes: 0n, used_ns: 0n, tcp_flags: 0 };
    for (const id of ids) this.#maps.flowStats.set(id, zero);
  }

  /**
   * Makes the installed flows exactly `specs`. The new table is built
   * aside and switched to atomically; unchanged and modified flows keep
   * their counters. With `dryRun`, only says what would change.
   */
  apply(
    specs: FlowSpec[],
    options: { dryRun?: boolean; progress?: (done: number, total: number) => void } = {},
  ): FlowDiff {
    const compiled = new Map<string, CompiledFlow>();
    for (const s of specs) {
      const c = compileFlow(s, this.#ports);
      const id = identity(c.maskBytes, c.keyBytes, s.priority);
      if (compiled.has(id)) {
        throw new CompileError(
          `the file has two flows with the same match at priority ${s.priority}`,
        );
      }
      compiled.set(id, c);
    }
    const { gen, index: oldIndex } = this.#liveIndex();
    using _ = oldIndex;
    const oldMasks = this.#masks(gen);
    const maskById = new Map(oldMasks.map((m) => [m.id, m]));
    const installed = new Map<
      string,
      { ik: FlowIndexKey; entry: FlowEntry; maskBytes: Uint8Array }
    >();
    for (const [ik, entry] of oldIndex.entries()) {
      const mask = maskById.get(ik.mask_id);
      if (!mask) continue;
      const maskBytes = flowKeyCodec.encode(mask.bits);
      installed.set(identity(maskBytes, flowKeyCodec.encode(ik.key), entry.priority), {
        ik,
        entry,
        maskBytes,
      });
    }

    const tunKeyOf = (slot: number) => this.#maps.tunKeys.get(slot);
    const diff: FlowDiff = { add: [], modify: [], remove: [], unchanged: 0 };
    const keep = new Map<string, FlowEntry>();
    for (const [id, c] of compiled) {
      const old = installed.get(id);
      if (!old) {
        diff.add.push(c.spec);
      } else if (sameActions(c, old.entry, tunKeyOf)) {
        diff.unchanged++;
        keep.set(id, old.entry);
      } else {
        diff.modify.push(c.spec);
      }
    }
    for (const [id, old] of installed) {
      if (compiled.has(id)) continue;
      diff.remove.push({
        flowId: old.entry.flow_id,
        priority: old.entry.priority,
        cookie: old.entry.cookie,
        match: { key: old.ik.key, mask: flowKeyCodec.decode(old.maskBytes) },
        actions: decompileActions(
          old.entry.actions.slice(0, old.entry.n_actions),
          tunKeyOf,
          this.#ports,
        ),
      });
    }
    if (options.dryRun) return diff;

    // Ids: the bitmaps are rebuilt from what the old table holds, which
    // frees anything a crashed writer left allocated. The old table's ids
    // and slots stay taken until the switch: packets still use them.
    const flowIds = new IdBitmap(this.#maps.flowIds);
    const slots = new IdBitmap(this.#maps.tunKeyIds);
    const oldSlots = new Set<number>();
    for (const { entry } of installed.values()) {
      for (const s of this.#tunSlots(entry)) oldSlots.add(s);
    }
    flowIds.rebuild([...installed.values()].map(({ entry }) => entry.flow_id));
    slots.rebuild(oldSlots);

    const masks = new Map<string, MaskEntry>();
    const newIndex = this.createIndex();
    using newTable = new TypedMap(newIndex, flowIndexKeyCodec, flowEntryCodec);
    const batch: [FlowIndexKey, FlowEntry][] = [];
    let done = 0;
    for (const [id, c] of compiled) {
      const maskHex = hexOf(c.maskBytes);
      let mask = masks.get(maskHex);
      if (!mask) {
        const existing = oldMasks.find((m) => sameBytes(flowKeyCodec.encode(m.bits), c.maskBytes));
        mask = {
          bits: flowKeyCodec.decode(c.maskBytes),
          id: existing?.id ?? 0,
          max_priority: 0,
          flows: 0,
        };
        masks.set(maskHex, mask);
      }
      mask.flows++;
      mask.max_priority = Math.max(mask.max_priority, c.spec.priority);
      let entry = keep.get(id);
      if (!entry) {
        const old = installed.get(id);
        const flowId = old ? old.entry.flow_id : flowIds.allocate(1)[0];
        entry = this.#entry(c, flowId, this.#writeTunKeys(c, slots));
      }
      batch.push([{ mask_id: 0, key: flowKeyCodec.decode(c.keyBytes) }, entry]);
      if (++done % 65536 === 0) options.progress?.(done, compiled.size);
    }
    // Masks new to the table get fresh ids.
    const used = new Set([...masks.values()].map((m) => m.id).filter((x) => x));
    let next = 1;
    for (const m of masks.values()) {
      if (m.id) continue;
      while (used.has(next)) next++;
      m.id = next;
      used.add(next);
    }
    let i = 0;
    for (const c of compiled.values()) batch[i++][0].mask_id = masks.get(hexOf(c.maskBytes))!.id;
    newTable.setMany(batch);
    options.progress?.(compiled.size, compiled.size);

    const removedIds = diff.remove.map((f) => f.flowId);
    this.#publish([...masks.values()], newIndex);
    // The old generation's slot still names the old index; point it at the
    // new one too, so the old index is freed once no packet uses it.
    this.#maps.setFlowIndex(gen, newIndex);

    // Only now may the old table's slots and ids be reused.
    const liveSlots = new Set<number>();
    for (const [, e] of batch) for (const s of this.#tunSlots(e)) liveSlots.add(s);
    slots.free([...oldSlots].filter((s) => !liveSlots.has(s)));
    this.#zeroCounters(removedIds);
    flowIds.free(removedIds);
    flowIds.flush();
    slots.flush();
    return diff;
  }
}

function nextMaskId(masks: MaskEntry[]): number {
  const used = new Set(masks.map((m) => m.id));
  let id = 1;
  while (used.has(id)) id++;
  return id;
}

function sortMasks(masks: MaskEntry[]): MaskEntry[] {
  return [...masks].sort((a, b) => b.max_priority - a.max_priority || a.id - b.id);
}

function sameActions(
  c: CompiledFlow,
  entry: FlowEntry,
  tunKey: (slot: number) => TunKeyEntry | undefined,
): boolean {
  if (
    entry.cookie !== c.spec.cookie || entry.flags !== c.flags ||
    entry.n_actions !== c.actions.length
  ) return false;
  return c.actions.every((a, i) => {
    const b = entry.actions[i];
    if (a.op !== b.op || a.flags !== b.flags || a.port !== b.port) return false;
    if (a.op !== ActionOp.TUNNEL) return true;
    const old = b.arg === NO_TUN_KEY ? undefined : tunKey(b.arg);
    return !!old && sameBytes(tunKeyCodec.encode(old), tunKeyCodec.encode(c.tunKeys[a.arg]));
  });
}

function sumStats(per: FlowStats[]): FlowCounters {
  const out: FlowCounters = { packets: 0n, bytes: 0n, usedNs: 0n, tcpFlags: 0 };
  for (const s of per) {
    out.packets += s.packets;
    out.bytes += s.bytes;
    if (s.used_ns > out.usedNs) out.usedNs = s.used_ns;
    out.tcpFlags |= s.tcp_flags;
  }
  return out;
}
