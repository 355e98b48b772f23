/**
 * The sorted dump: the flows a filter covers, highest priority first, then
 * by flow id. One pass over the kernel table keeps each selected flow in a
 * few compact columns (the key only where its mask has bits, each distinct
 * action list once); flows are decoded one at a time as they are yielded,
 * so a million flows cost tens of megabytes, not gigabytes.
 *
 * @module
 */

import { decodeFlowKey, type FlowKey, FlowKeyBuffer } from "../../maps/layouts.ts";
import { decompileActions } from "../compile.ts";
import type { ActionSpec } from "../flow_actions.ts";
import type { CounterArrays } from "./counters.ts";
import { decodeActions, eachVisible, type Entry, KEY_SIZE } from "./entry.ts";
import { KeyArena } from "./flow_set.ts";
import type { TableContext } from "./journal.ts";
import { type LiveMask, masksById } from "./masks.ts";
import { type FlowFilter, type InstalledFlow, selector, tunKeyReader } from "./queries.ts";

// Entries read per system call: the largest batch that helped (a million
// flows read 8% faster than in the default 16 384) at 16 MiB of buffers.
const DUMP_CHUNK = 65536;

/**
 * Selected flows of a dump, in compact columns indexed by flow id: read
 * back in dump order, which within a priority is flow id order, the
 * columns are walked from start to end instead of at random (a million
 * rows in the kernel's hash order cost a cache miss per column per flow).
 */
class DumpRows {
  count = 0;
  /** The masks rows refer to, by their index plus one in {@link maskAt}. */
  readonly masks: LiveMask[] = [];
  /** Per flow id: its mask's index in {@link masks} plus one, 0 for no row. */
  readonly maskAt: Uint8Array;
  readonly keyAt: Uint32Array;
  readonly priority: Uint16Array;
  readonly cookie: BigUint64Array;
  readonly owner: Uint16Array;
  readonly actions: Uint32Array;
  /** Each distinct action list's raw `struct wr_action`s. */
  actionLists: Uint8Array[] = [];
  #listsByHash = new Map<number, number[]>();
  readonly #keys = new KeyArena();
  /** Rows per priority, at 65536 - priority (highest first). */
  readonly #perPriority = new Uint32Array(65537);

  constructor(maxFlows: number) {
    this.maskAt = new Uint8Array(maxFlows);
    this.keyAt = new Uint32Array(maxFlows);
    this.priority = new Uint16Array(maxFlows);
    this.cookie = new BigUint64Array(maxFlows);
    this.owner = new Uint16Array(maxFlows);
    this.actions = new Uint32Array(maxFlows);
  }

  add(mask: LiveMask, e: Entry): void {
    const id = e.flowId;
    if (this.maskAt[id] === 0) this.count++;
    else this.#perPriority[65536 - this.priority[id]]--;
    let m = this.masks.indexOf(mask);
    if (m < 0) m = this.masks.push(mask) - 1;
    this.maskAt[id] = m + 1;
    this.keyAt[id] = this.#keys.push(e.keys, e.keyAt, mask.offsets);
    this.priority[id] = e.priority;
    this.#perPriority[65536 - e.priority]++;
    this.cookie[id] = e.cookie;
    this.owner[id] = e.owner;
    this.actions[id] = this.#listIndex(e);
  }

  /** The index of `e`'s action list in {@link actionLists}, added if new. */
  #listIndex(e: Entry): number {
    // By a hash of the bytes, then the bytes: no string made per flow.
    const h = e.actionHash();
    const candidates = this.#listsByHash.get(h);
    for (const list of candidates ?? []) if (e.sameActions(this.actionLists[list])) return list;
    const list = this.actionLists.length;
    this.actionLists.push(e.actionBytes().slice());
    if (candidates) candidates.push(list);
    else this.#listsByHash.set(h, [list]);
    return list;
  }

  /** Flow `id`'s mask. */
  maskOf(id: number): LiveMask {
    return this.masks[this.maskAt[id] - 1];
  }

  /** Flow `id`'s full masked key into `out`. */
  keyInto(id: number, out: Uint8Array): void {
    this.#keys.keyInto(this.keyAt[id], this.maskOf(id).offsets, out, 0);
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
    for (let id = 0; id < this.maskAt.length; id++) {
      if (this.maskAt[id] !== 0) ids[start[65535 - this.priority[id]]++] = id;
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
 * million flows without a generator's step per flow.
 */
export function eachSorted(
  t: TableContext,
  filter: FlowFilter,
  options: DumpOptions,
  fn: (f: InstalledFlow) => void,
): void {
  const { order, flowAt } = prepare(t, filter, options);
  for (const id of order) fn(flowAt(id));
}

/** The selected flow ids in dump order, and how to make a flow of them. */
function prepare(
  t: TableContext,
  filter: FlowFilter,
  options: DumpOptions,
): { order: Uint32Array; flowAt: (flowId: number) => InstalledFlow } {
  const st = t.journal.load();
  const masks = masksById(st.masks);
  const select = selector(filter, st.owners);
  const rows = new DumpRows(st.cfg.max_flows);
  eachVisible(t.journal.index(st), st.gen, (e) => {
    const mask = masks.get(e.maskId);
    if (mask && select(mask, e)) rows.add(mask, e);
  }, DUMP_CHUNK);
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
    f.priority = rows.priority[flowId];
    f.cookie = rows.cookie[flowId];
    f.owner = st.owners.name(rows.owner[flowId]);
    f.match.mask = mask.decoded;
    f.actions = actionLists[rows.actions[flowId]] as ActionSpec[];
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
