/**
 * The sorted dump: the flows a filter covers, highest priority first, then
 * by flow id. One pass over the kernel table keeps each selected flow in a
 * few compact columns (the key only where its mask has bits, each distinct
 * action list once); flows are decoded one at a time as they are yielded,
 * so a million flows cost tens of megabytes, not gigabytes.
 *
 * @module
 */

import type { BpfMap } from "../../bpf/map.ts";
import { decodeFlowKey, type FlowKey, FlowKeyBuffer } from "../../maps/layouts.ts";
import { decompileActions } from "../compile.ts";
import type { ActionSpec } from "../flow_actions.ts";
import type { CounterArrays } from "./counters.ts";
import { decodeActions, eachVisible, eachVisibleAsync, type Entry, KEY_SIZE } from "./entry.ts";
import { gatherKey, KeyArena, scatterKey } from "./flow_set.ts";
import type { TableContext } from "./journal.ts";
import { type LiveMask, masksById } from "./masks.ts";
import { type FlowFilter, type InstalledFlow, selector, tunKeyReader } from "./queries.ts";

// Entries read per system call: the largest batch that helped (a million
// flows read 8% faster than in the default 16 384) at 16 MiB of buffers.
const DUMP_CHUNK = 65536;

// A row's words in DumpRows' records, 32 bytes per flow id.
const R_MASK = 0; // its mask's index in DumpRows.masks plus one, 0 for no row
const R_PRIORITY = 1; // its priority, and its owner in the high 16 bits
const R_ACTIONS = 2; // its action list's index
const R_COOKIE = 3; // its cookie's low 32 bits, then its high 32 bits
const R_KEY = 5; // its key's bytes, or where they start in the arena
const STRIDE = 8;
// Bytes of a key held in its record rather than in the arena: the words
// from R_KEY to the record's end.
const INLINE = (STRIDE - R_KEY) * 4;

/**
 * Selected flows of a dump, a record each, indexed by flow id. Rows come
 * in the kernel's hash order, so each is one write at random (a record
 * is half a cache line; in separate columns it was a miss per column);
 * read back in dump order, which within a priority is flow id order, the
 * records are walked from start to end. A key of up to {@link INLINE}
 * bytes under its mask (a /32 and a port or two) is kept in the record:
 * in the arena, which fills in hash order, each key read back in dump
 * order was a miss of its own.
 */
class DumpRows {
  count = 0;
  /** The masks rows refer to. */
  readonly masks: LiveMask[] = [];
  readonly #rec: Uint32Array;
  readonly #recBytes: Uint8Array;
  /**
   * A bit per flow id with a row: a test that stays in the cache, where
   * the record's own word was a read at random before each write.
   */
  readonly #has: Uint32Array;
  /** Each distinct action list's raw `struct wr_action`s. */
  actionLists: Uint8Array[] = [];
  /** Each of {@link actionLists} as words, to compare entries' actions with. */
  readonly #listWords: Uint32Array[] = [];
  #listsByHash = new Map<number, number[]>();
  readonly #keys = new KeyArena();
  /** Rows per priority, at 65536 - priority (highest first). */
  readonly #perPriority = new Uint32Array(65537);
  /** The buffer {@link keyInto} wrote last, and the mask of the key it wrote. */
  #lastOut?: Uint8Array;
  #lastMask?: LiveMask;

  constructor(maxFlows: number) {
    this.#rec = new Uint32Array(maxFlows * STRIDE);
    this.#recBytes = new Uint8Array(this.#rec.buffer);
    this.#has = new Uint32Array((maxFlows + 31) >>> 5);
  }

  add(mask: LiveMask, e: Entry): void {
    const id = e.flowId;
    const at = id * STRIDE;
    const rec = this.#rec;
    const bit = 1 << (id & 31);
    if ((this.#has[id >>> 5] & bit) === 0) {
      this.#has[id >>> 5] |= bit;
      this.count++;
    } else this.#perPriority[65536 - (rec[at + R_PRIORITY] & 0xffff)]--;
    let m = this.masks.indexOf(mask);
    if (m < 0) m = this.masks.push(mask) - 1;
    rec[at + R_MASK] = m + 1;
    const offsets = mask.offsets;
    if (offsets.length <= INLINE) {
      gatherKey(e.keys, e.keyAt, offsets, this.#recBytes, (at + R_KEY) * 4);
    } else rec[at + R_KEY] = this.#keys.push(e.keys, e.keyAt, offsets);
    const priority = e.priority;
    rec[at + R_PRIORITY] = priority | (e.owner << 16);
    this.#perPriority[65536 - priority]++;
    e.cookieInto(rec, at + R_COOKIE);
    rec[at + R_ACTIONS] = this.#listIndex(e);
  }

  /** Flow `id`'s priority. */
  priority(id: number): number {
    return this.#rec[id * STRIDE + R_PRIORITY] & 0xffff;
  }

  /** Flow `id`'s owner's number. */
  owner(id: number): number {
    return this.#rec[id * STRIDE + R_PRIORITY] >>> 16;
  }

  /** Flow `id`'s cookie: a BigInt made only for one that is not 0, as few are. */
  cookie(id: number): bigint {
    const lo = this.#rec[id * STRIDE + R_COOKIE], hi = this.#rec[id * STRIDE + R_COOKIE + 1];
    return lo === 0 && hi === 0 ? 0n : (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** Flow `id`'s action list's index in {@link actionLists}. */
  actions(id: number): number {
    return this.#rec[id * STRIDE + R_ACTIONS];
  }

  /** The index of `e`'s action list in {@link actionLists}, added if new. */
  #listIndex(e: Entry): number {
    // By a hash of the bytes, then the bytes: no string made per flow.
    const h = e.actionHash();
    const candidates = this.#listsByHash.get(h);
    for (const list of candidates ?? []) if (e.sameActions(this.#listWords[list])) return list;
    const list = this.actionLists.length;
    this.actionLists.push(e.actionBytes().slice());
    this.#listWords.push(e.actionWords());
    if (candidates) candidates.push(list);
    else this.#listsByHash.set(h, [list]);
    return list;
  }

  /** Flow `id`'s mask. */
  maskOf(id: number): LiveMask {
    return this.masks[this.#rec[id * STRIDE + R_MASK] - 1];
  }

  /** Flow `id`'s full masked key into `out`, which only these calls write. */
  keyInto(id: number, out: Uint8Array): void {
    const mask = this.maskOf(id);
    // Under the mask of the key before, the bytes outside the mask are 0 already.
    const clear = out !== this.#lastOut || mask !== this.#lastMask;
    const at = id * STRIDE + R_KEY;
    if (mask.offsets.length <= INLINE) {
      scatterKey(this.#recBytes, at * 4, mask.offsets, out, 0, clear);
    } else this.#keys.keyInto(this.#rec[at], mask.offsets, out, 0, clear);
    this.#lastOut = out;
    this.#lastMask = mask;
  }

  /** The flow ids of the rows by priority (highest first), then flow id. */
  order(): Uint32Array {
    // A counting sort: priorities are 16 bits, and a walk of the flow ids
    // in order gives each priority's flows in flow id order; a comparison
    // sort of a million rows took a twentieth of the dump.
    const start = new Uint32Array(this.#perPriority.length);
    for (let p = 1; p < start.length; p++) start[p] = start[p - 1] + this.#perPriority[p - 1];
    // In an array, not yielded: a million steps of a generator cost more than the array.
    const ids = new Uint32Array(this.count);
    const rec = this.#rec;
    for (let id = 0, at = 0; at < rec.length; id++, at += STRIDE) {
      if (rec[at + R_MASK] !== 0) ids[start[65536 - (rec[at + R_PRIORITY] & 0xffff)]++] = id;
    }
    return ids;
  }
}

/** How {@link sorted} gives its flows. */
export interface DumpOptions {
  /** Every flow id's counters, to go with each flow. */
  counters?: CounterArrays;
  /**
   * Each flow yielded is the same object, overwritten by the next: for a
   * caller that is done with a flow before asking for the next, a dump of
   * a million flows without a million objects to make and collect.
   */
  reuse?: boolean;
}

/**
 * The installed flows the filter covers, highest priority first (then by
 * flow id), with the counters of `options.counters` when given.
 */
export function* sorted(
  t: TableContext,
  filter: FlowFilter = {},
  options: DumpOptions = {},
): Generator<InstalledFlow> {
  const { order, flowAt } = prepare(t, filter, options);
  for (const id of order) yield flowAt(id);
}

/**
 * {@link sorted}'s flows handed to `fn` one at a time: a loop over a
 * million flows without a generator's step per flow. The kernel's copies
 * of the flow index, and of the counters when `counters` is a promise
 * still reading them, are made off the JavaScript thread while it sorts
 * what came before.
 */
export async function eachSorted(
  t: TableContext,
  filter: FlowFilter,
  options: Omit<DumpOptions, "counters"> & { counters?: Promise<CounterArrays> },
  fn: (f: InstalledFlow) => void,
): Promise<void> {
  // Awaited once the index is read; a failure meanwhile is not unhandled.
  options.counters?.catch(() => {});
  const s = selection(t, filter);
  await eachVisibleAsync(s.index, s.st.gen, s.add, DUMP_CHUNK);
  const { order, flowAt } = dumpOrder(t, s, { ...options, counters: await options.counters });
  for (const id of order) fn(flowAt(id));
}

/** The selected flow ids in dump order, and how to make a flow of them. */
function prepare(
  t: TableContext,
  filter: FlowFilter,
  options: DumpOptions,
): { order: Uint32Array; flowAt: (flowId: number) => InstalledFlow } {
  const s = selection(t, filter);
  eachVisible(s.index, s.st.gen, s.add, DUMP_CHUNK);
  return dumpOrder(t, s, options);
}

/** What a dump starts from: the table's state, its index, and the rows `add` keeps of the entries the filter selects. */
interface Selection {
  st: ReturnType<TableContext["journal"]["load"]>;
  index: BpfMap;
  rows: DumpRows;
  add: (e: Entry) => void;
}

/** The start of a dump of the flows `filter` covers. */
function selection(t: TableContext, filter: FlowFilter): Selection {
  const st = t.journal.load();
  const masks = masksById(st.masks);
  const select = selector(filter, st.owners);
  const rows = new DumpRows(st.cfg.max_flows);
  const add = (e: Entry) => {
    const mask = masks.get(e.maskId);
    if (mask && select(mask, e)) rows.add(mask, e);
  };
  return { st, index: t.journal.index(st), rows, add };
}

/** The rows of `s` in dump order, and how to make a flow of them. */
function dumpOrder(
  t: TableContext,
  { st, rows }: Selection,
  options: DumpOptions,
): { order: Uint32Array; flowAt: (flowId: number) => InstalledFlow } {
  const tunKey = tunKeyReader(t.maps, st);
  const actionLists = rows.actionLists.map((raw) =>
    // Shared by every flow with this list: frozen.
    Object.freeze(decompileActions(decodeActions(raw), tunKey, t.ports).map(Object.freeze))
  );
  const c = options.counters;
  const shared = options.reuse ? new FlowKeyBuffer() : undefined;
  const key = shared?.bytes ?? new Uint8Array(KEY_SIZE);
  let reused: InstalledFlow | undefined;
  const flowAt = (flowId: number): InstalledFlow => {
    const mask = rows.maskOf(flowId);
    mask.decoded ??= decodeFlowKey(mask.bytes);
    rows.keyInto(flowId, key);
    const f = shared ? (reused ??= blank(shared.key)) : blank(decodeFlowKey(key));
    shared?.load();
    f.flowId = flowId;
    f.priority = rows.priority(flowId);
    f.cookie = rows.cookie(flowId);
    f.owner = st.owners.name(rows.owner(flowId));
    f.match.mask = mask.decoded;
    f.actions = actionLists[rows.actions(flowId)] as ActionSpec[];
    if (c) {
      const counts = f.counters ??= { packets: 0n, bytes: 0n, usedNs: 0n, tcpFlags: 0 };
      const hit = c.hit[flowId] === 1;
      counts.packets = hit ? c.packets[flowId] : 0n;
      counts.bytes = hit ? c.bytes[flowId] : 0n;
      counts.usedNs = hit ? c.usedNs[flowId] : 0n;
      counts.tcpFlags = c.tcpFlags[flowId];
    }
    return f;
  };
  return { order: rows.order(), flowAt };
}

/** A flow with key `key`, to be filled in; its fields in the order a dump has always given them. */
function blank(key: FlowKey): InstalledFlow {
  return { flowId: 0, priority: 0, cookie: 0n, owner: "", match: { key, mask: key }, actions: [] };
}
