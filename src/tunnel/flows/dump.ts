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
import { decodeActions, type Entry, KEY_SIZE, visible } from "./entry.ts";
import { KeyArena, sameBytes } from "./flow_set.ts";
import type { TableContext } from "./journal.ts";
import { type LiveMask, masksById } from "./masks.ts";
import { type FlowFilter, type InstalledFlow, selector, tunKeyReader } from "./queries.ts";

// FNV-1a, 32 bits.
const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** Selected flows of a dump, in compact columns. */
class DumpRows {
  count = 0;
  maskOf: LiveMask[] = [];
  keyAt = new Uint32Array(1024);
  flowId = new Uint32Array(1024);
  priority = new Uint16Array(1024);
  cookie = new BigUint64Array(1024);
  owner = new Uint16Array(1024);
  actions = new Uint32Array(1024);
  /** Each distinct action list's raw `struct wr_action`s. */
  actionLists: Uint8Array[] = [];
  #listsByHash = new Map<number, number[]>();
  readonly #keys = new KeyArena();
  readonly #maxFlows: number;

  constructor(maxFlows: number) {
    this.#maxFlows = maxFlows;
  }

  add(mask: LiveMask, e: Entry): void {
    if (this.count === this.flowId.length) this.#grow();
    const n = this.count++;
    this.keyAt[n] = this.#keys.push(e.keys, e.keyAt, mask.offsets);
    this.maskOf[n] = mask;
    this.flowId[n] = e.flowId;
    this.priority[n] = e.priority;
    this.cookie[n] = e.cookie;
    this.owner[n] = e.owner;
    this.actions[n] = this.#listIndex(e.actionBytes());
  }

  /** The index of action list `raw` in {@link actionLists}, added if new. */
  #listIndex(raw: Uint8Array): number {
    // By a hash of the bytes, then the bytes: no string made per flow.
    let h = FNV_OFFSET;
    for (let i = 0; i < raw.length; i++) h = Math.imul(h ^ raw[i], FNV_PRIME);
    const candidates = this.#listsByHash.get(h);
    for (const list of candidates ?? []) {
      const known = this.actionLists[list];
      if (known.length === raw.length && sameBytes(known, raw, raw.length)) return list;
    }
    const list = this.actionLists.length;
    this.actionLists.push(raw.slice());
    if (candidates) candidates.push(list);
    else this.#listsByHash.set(h, [list]);
    return list;
  }

  /** Row `n`'s full masked key into `out`. */
  keyInto(n: number, out: Uint8Array): void {
    this.#keys.keyInto(this.keyAt[n], this.maskOf[n].offsets, out, 0);
  }

  /** Rows by priority (highest first), then flow id. */
  order(): Int32Array {
    // A counting sort: priorities are 16 bits and flow ids below the
    // table's size, so two linear passes order a million rows, where a
    // comparison sort of them took a twentieth of the dump.
    const rowOf = new Int32Array(this.#maxFlows).fill(-1);
    const start = new Uint32Array(65537);
    for (let n = 0; n < this.count; n++) {
      rowOf[this.flowId[n]] = n;
      start[65536 - this.priority[n]]++;
    }
    for (let p = 1; p < start.length; p++) start[p] += start[p - 1];
    // In an array, not yielded: a million steps of a generator cost more than the array.
    const rows = new Int32Array(this.count);
    for (let id = 0; id < rowOf.length; id++) {
      const n = rowOf[id];
      if (n >= 0) rows[start[65535 - this.priority[n]]++] = n;
    }
    return rows;
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
    this.owner = grow(this.owner, new Uint16Array(size));
    this.actions = grow(this.actions, new Uint32Array(size));
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
  const st = t.journal.load();
  const masks = masksById(st.masks);
  const select = selector(filter, st.owners);
  const rows = new DumpRows(st.cfg.max_flows);
  for (const e of visible(t.journal.index(st), st.gen)) {
    const mask = masks.get(e.maskId);
    if (mask && select(mask, e)) rows.add(mask, e);
  }
  const tunKey = tunKeyReader(t.maps, st);
  const actionLists = rows.actionLists.map((raw) =>
    // Shared by every flow with this list: frozen.
    Object.freeze(decompileActions(decodeActions(raw), tunKey, t.ports).map(Object.freeze))
  );
  const c = options.counters;
  const shared = options.reuse ? new FlowKeyBuffer() : undefined;
  const key = shared?.bytes ?? new Uint8Array(KEY_SIZE);
  let reused: InstalledFlow | undefined;
  for (const r of rows.order()) {
    const mask = rows.maskOf[r];
    mask.decoded ??= decodeFlowKey(mask.bytes);
    rows.keyInto(r, key);
    const f = shared ? (reused ??= blank(shared.key)) : blank(decodeFlowKey(key));
    shared?.load();
    const flowId = rows.flowId[r];
    f.flowId = flowId;
    f.priority = rows.priority[r];
    f.cookie = rows.cookie[r];
    f.owner = st.owners.name(rows.owner[r]);
    f.match.mask = mask.decoded;
    f.actions = actionLists[rows.actions[r]] as ActionSpec[];
    if (c) {
      const counts = f.counters ??= { packets: 0n, bytes: 0n, usedNs: 0n, tcpFlags: 0 };
      counts.packets = c.packets[flowId];
      counts.bytes = c.bytes[flowId];
      counts.usedNs = c.usedNs[flowId];
      counts.tcpFlags = c.tcpFlags[flowId];
    }
    yield f;
  }
}

/** A flow with key `key`, to be filled in; its fields in the order a dump has always given them. */
function blank(key: FlowKey): InstalledFlow {
  return { flowId: 0, priority: 0, cookie: 0n, owner: "", match: { key, mask: key }, actions: [] };
}
