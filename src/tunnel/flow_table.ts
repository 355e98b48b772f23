/**
 * The flow table in the kernel: masks, the flow index, tunnel keys, ids
 * and counters, kept consistent by one writer at a time (the caller holds
 * the datapath lock). {@link FlowTable} is the one door to it; each of its
 * concerns lives in its own module under `flows/`:
 *
 * - `entry.ts`: the index entry layout, read in place, and one `scan()`;
 * - `masks.ts`: the mask set, its two generations, the mask limit;
 * - `journal.ts`: what is known of the kernel between calls, and every
 *   change's writing mark, commit, and the repair after a writer died;
 * - `owners.ts`: who owns each flow, and each named owner's set of flows;
 * - `counters.ts`: per-flow counters, summed and cleared;
 * - `queries.ts`, `dump.ts`: filters, lookups, usage, the sorted dump;
 * - `edits.ts`: add, modify, delete in the live table, with undo;
 * - `apply.ts` (with `flow_set.ts`): the operator's flows replaced
 *   atomically, the table rebuilt aside;
 * - `owned.ts` (with `commit.ts`): a named owner's flows replaced
 *   atomically, in place, at the cost of the change;
 * - `group_state.ts`, `groups.ts`: replication groups, read and changed.
 *
 * Everything that walks the whole table works on the kernel's bytes, read
 * in batches, and decodes only what it returns, so a million flows stay a
 * matter of seconds and of tens of megabytes.
 *
 * @module
 */

import type { FlowKey } from "../maps/layouts.ts";
import { type ActionMemo, CompileError, compileGroup, type PortLookup } from "./compile.ts";
import type { FlowSpec } from "./flow_syntax.ts";
import type { GroupSpec } from "./group_syntax.ts";
import type { DatapathMaps } from "./pins.ts";
import {
  apply,
  type ApplyOptions,
  type FlowByText,
  type FlowDiff,
  specsOf,
} from "./flows/apply.ts";
import {
  type CounterArrays,
  counterArrays,
  counterArraysAsync,
  type FlowCounters,
  flowCounters,
} from "./flows/counters.ts";
import { type DumpOptions, eachSorted, sorted } from "./flows/dump.ts";
import { groupIds } from "./flows/group_state.ts";
import {
  type GroupCounters,
  type GroupResult,
  type InstalledGroup,
  installGroups,
  listGroups,
  removeGroups,
} from "./flows/groups.ts";
import { add, type AddResult, modify, remove } from "./flows/edits.ts";
import { Journal, type TableContext } from "./flows/journal.ts";
import { applyOwned } from "./flows/owned.ts";
import type { OwnerName } from "./flows/owners.ts";
import {
  count,
  type FlowFilter,
  geneveOptions,
  installed,
  type InstalledFlow,
  lookup,
  type Usage,
  usage,
} from "./flows/queries.ts";

export type {
  AddResult,
  ApplyOptions,
  CounterArrays,
  FlowCounters,
  FlowDiff,
  FlowFilter,
  GroupCounters,
  GroupResult,
  InstalledFlow,
  InstalledGroup,
  OwnerName,
  Usage,
};
export type { FlowByText, Progress } from "./flows/apply.ts";
export { FlowTableError } from "./flows/error.ts";
export { CompileError };

/** FlowTable reads and changes the datapath's flows. */
export class FlowTable {
  readonly #t: TableContext;

  /** Works on `maps`, naming ports through `ports`. */
  constructor(maps: DatapathMaps, ports: PortLookup) {
    this.#t = { maps, ports, journal: new Journal(maps) };
  }

  /** The change counter as this table last wrote or read it. */
  get lastSeq(): bigint | undefined {
    return this.#t.journal.lastSeq;
  }

  /**
   * Holds changes open until {@link release} (the caller holds the lock):
   * each stays all or nothing, and the bookkeeping is written back once.
   */
  hold(): void {
    this.#t.journal.hold();
  }

  /** Writes back what changes held open left. */
  release(): void {
    this.#t.journal.release();
  }

  /** Forgets what was read from the kernel (after a failure midway, or another writer). */
  invalidate(): void {
    this.#t.journal.close();
  }

  /** Closes what the table keeps open. */
  close(): void {
    this.#t.journal.close();
  }

  /** How many flows are installed, and how full the id and key tables are. */
  usage(): Usage {
    return usage(this.#t);
  }

  /** Every installed flow the filter covers, in table order, each decoded as it is reached. */
  installed(filter: FlowFilter = {}): Generator<InstalledFlow> {
    return installed(this.#t, filter);
  }

  /** How many installed flows the filter covers. */
  count(filter: FlowFilter = {}): number {
    return count(this.#t, filter);
  }

  /** (class << 8 | type) of every Geneve option some flow matches on. */
  geneveOptions(): Set<number> {
    return geneveOptions(this.#t);
  }

  /** The flow the datapath picks for `key` (the same search over the same tables). */
  lookup(key: FlowKey): InstalledFlow | undefined {
    return lookup(this.#t, key);
  }

  /** The counters of flow `flowId`, summed over CPUs. */
  counters(flowId: number): FlowCounters {
    return flowCounters(this.#t.maps, flowId);
  }

  /** Every flow id's counters in typed arrays: a few bytes per flow. */
  counterArrays(): CounterArrays {
    return counterArrays(this.#t.maps);
  }

  /** {@link counterArrays}, read off the JavaScript thread. */
  counterArraysAsync(): Promise<CounterArrays> {
    return counterArraysAsync(this.#t.maps);
  }

  /**
   * The installed flows the filter covers, highest priority first (then
   * by flow id), decoded one at a time: a million cost tens of megabytes.
   */
  sorted(
    filter: FlowFilter = {},
    options: DumpOptions = {},
  ): Generator<InstalledFlow> {
    return sorted(this.#t, filter, options);
  }

  /**
   * {@link sorted}'s flows handed to `fn` one at a time, without a
   * generator's step per flow; the kernel's copies are made off the
   * JavaScript thread, the counters' (from {@link counterArraysAsync})
   * while the index is read.
   */
  eachSorted(
    filter: FlowFilter,
    options: { counters?: Promise<CounterArrays>; reuse?: boolean },
    fn: (f: InstalledFlow) => void,
  ): Promise<void> {
    return eachSorted(this.#t, filter, options, fn);
  }

  /**
   * Adds flows of `owner` ("" for the operator). A flow with the same match
   * and priority as an installed one of the same owner replaces its
   * actions and restarts its counters, as Open vSwitch's add-flow does;
   * within `specs` the last of equal flows wins; another owner's flow with
   * the same match is refused. All or nothing. `memo` may carry compiled
   * action lists over from earlier adds against the same ports.
   */
  add(specs: FlowSpec[], owner: OwnerName = "", memo?: ActionMemo): AddResult {
    return add(this.#t, specs, owner, memo);
  }

  /**
   * Changes the actions (and cookie) of `owner`'s flow with exactly this
   * match and priority, keeping its counters. Returns how many changed (0
   * or 1).
   */
  modify(spec: FlowSpec, owner: OwnerName = ""): number {
    return modify(this.#t, spec, owner);
  }

  /**
   * Deletes flows: exactly this match (and priority, if given) with
   * `strict`, else every flow the filter covers. Returns how many went.
   */
  delete(filter: FlowFilter, strict: boolean): number {
    return remove(this.#t, filter, strict);
  }

  /**
   * Makes the flows of `options.owner` (default the operator's) exactly
   * `specs`, atomically for packets, leaving other owners' flows as they
   * are; unchanged and modified flows keep their ids and counters. The
   * operator's table is rebuilt aside and switched to; a named owner's
   * flows are changed in place, at the cost of the change. With `dryRun`,
   * only says what would change. `specs` is read once.
   */
  apply(specs: Iterable<FlowSpec | FlowByText>, options: ApplyOptions = {}): FlowDiff {
    return options.owner
      ? applyOwned(this.#t, options.owner, specsOf(specs), options)
      : apply(this.#t, specs, options);
  }

  /**
   * Every installed group, by id (only `owner`'s when given); with
   * `counters`, each one's and its buckets'.
   */
  groups(options: { counters?: boolean; owner?: OwnerName } = {}): InstalledGroup[] {
    return listGroups(this.#t, options);
  }

  /** The id of every installed group, in order. */
  groupIds(): number[] {
    return groupIds(this.#t.maps);
  }

  /**
   * Installs groups: "add" refuses one that exists, "modify" one that does
   * not, "any" takes both. A group that changes switches to its new
   * buckets in one write (a packet walks the old ones or the new ones),
   * keeping the counters of the buckets it keeps; the flows that send to
   * it are not touched. The groups are `owner`'s (default the operator's),
   * and another owner's group is refused. All are checked before the first
   * is written.
   */
  setGroups(specs: GroupSpec[], mode: "add" | "modify" | "any", owner?: OwnerName): GroupResult {
    const compiled = specs.map((s) => compileGroup(s, this.#t.ports));
    return installGroups(this.#t, compiled, mode, owner);
  }

  /**
   * Deletes groups. Refuses while flows send to one, unless `force`, which
   * deletes those flows too; with `owner`, refuses a group of another
   * owner. Returns how many went.
   */
  deleteGroups(ids: number[], force: boolean, owner?: OwnerName): number {
    return removeGroups(this.#t, ids, force, owner);
  }
}
