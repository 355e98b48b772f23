/**
 * The sorted dump: the flows a filter covers, highest priority first, then
 * by flow id. One pass over the kernel table keeps each selected flow in a
 * few compact columns (the key only where its mask has bits, each distinct
 * action list once); flows are decoded one at a time as they are yielded,
 * so a million flows cost tens of megabytes, not gigabytes.
 *
 * @module
 */

import { decodeFlowKey } from "../../maps/layouts.ts";
import { decompileActions } from "../compile.ts";
import type { ActionSpec } from "../flow_actions.ts";
import type { CounterArrays } from "./counters.ts";
import { decodeActions, type Entry, KEY_SIZE, visible } from "./entry.ts";
import { byteString, KeyArena } from "./flow_set.ts";
import type { TableContext } from "./journal.ts";
import { type LiveMask, masksById } from "./masks.ts";
import { type FlowFilter, type InstalledFlow, selector, tunKeyReader } from "./queries.ts";

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
  #listOf = new Map<string, number>();
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
    const raw = e.actionBytes();
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
    this.#keys.keyInto(this.keyAt[n], this.maskOf[n].offsets, out, 0);
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
    this.owner = grow(this.owner, new Uint16Array(size));
    this.actions = grow(this.actions, new Uint32Array(size));
  }
}

/**
 * The installed flows the filter covers, highest priority first (then by
 * flow id), with the counters of `options.counters` when given.
 */
export function* sorted(
  t: TableContext,
  filter: FlowFilter = {},
  options: { counters?: CounterArrays } = {},
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
      owner: st.owners.name(rows.owner[r]),
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
