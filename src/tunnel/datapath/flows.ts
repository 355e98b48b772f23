/**
 * Flows and groups as a `Datapath` changes and shows them: each change of
 * the flow table under the lock, with the ports read again first if someone
 * changed them; then the side effects a change of flows has on the rest
 * of the datapath (the Geneve options counted as understood, the next hops
 * of new remotes kept resolved); and flows as text, ports by name.
 *
 * @module
 */

import type { ActionMemo } from "../compile.ts";
import type { Match } from "../match.ts";
import { formatMatch } from "../match_format.ts";
import type {
  AddResult,
  ApplyOptions,
  FlowByText,
  FlowDiff,
  FlowFilter,
  FlowTable,
  GroupResult,
  InstalledFlow,
  InstalledGroup,
  OwnerName,
} from "../flow_table.ts";
import { type ActionSpec, formatAction } from "../flow_actions.ts";
import { type FlowSpec, formatFlow } from "../flow_syntax.ts";
import { formatGroup, type GroupSpec } from "../group_syntax.ts";
import type { DumpOptions } from "../flows/dump.ts";
import type { Changes } from "./changes.ts";
import type { PortList } from "./port_list.ts";
import type { PortRegistry } from "./port_registry.ts";
import type { SessionHold } from "./session.ts";
import type { Neighbors } from "./underlay.ts";

/** DatapathFlows is the flow side of a `Datapath`. */
export class DatapathFlows {
  readonly #table: FlowTable;
  readonly #ports: PortList;
  readonly #changes: Changes;
  readonly #registry: PortRegistry;
  readonly #neighbors: Neighbors;
  // Dumps share one frozen action list among every flow that has it: its
  // text, and that text with what followed it last (a dump line's end).
  readonly #actionText = new WeakMap<
    ActionSpec[],
    { text: string; after: string; joined: string }
  >();
  #held?: SessionHold;
  // A session's adds share compiled action lists: its ports stay.
  #memo?: ActionMemo;

  /** Changes `table`, whose flows name the ports of `ports`. */
  constructor(
    table: FlowTable,
    ports: PortList,
    changes: Changes,
    registry: PortRegistry,
    neighbors: Neighbors,
  ) {
    this.#table = table;
    this.#ports = ports;
    this.#changes = changes;
    this.#registry = registry;
    this.#neighbors = neighbors;
  }

  /** A match as flow text, ports by name. */
  describeMatch(m: Match): string {
    return formatMatch(m, this.#ports.names());
  }

  /**
   * A flow as `flow add` would take it: priority, match and actions, then
   * `after` (see Datapath.describeFlow).
   */
  describeFlow(f: FlowSpec, after = ""): string {
    return formatFlow(f, this.#ports.names(), this.#describeActions(f.actions, after));
  }

  #describeActions(actions: ActionSpec[], after: string): string {
    let t = this.#actionText.get(actions);
    if (t === undefined) {
      const text = actions.map(formatAction).join(",") || "drop";
      t = { text, after, joined: text + after };
      if (Object.isFrozen(actions)) this.#actionText.set(actions, t);
    } else if (t.after !== after) {
      t.after = after;
      t.joined = t.text + after;
    }
    return t.joined;
  }

  /** Adds flows (see FlowTable.add), keeping their remotes' next hops resolved. */
  async add(specs: FlowSpec[], owner: OwnerName = ""): Promise<AddResult> {
    const result = this.#locked(() => {
      const r = this.#table.add(specs, owner, this.#memo);
      this.#registry.learnGeneve(
        specs.some((s) => s.match.mask.gnv_class || s.match.mask.gnv_type),
      );
      return r;
    });
    const pending = this.#neighbors.keep(result.remotes);
    if (pending) await pending;
    return result;
  }

  /** Changes the actions of flows (see FlowTable.modify). */
  async modify(spec: FlowSpec, owner: OwnerName = ""): Promise<number> {
    const n = this.#locked(() => this.#table.modify(spec, owner));
    const remotes = spec.actions.flatMap((a) => a.type === "set_tunnel" && a.dst ? [a.dst] : []);
    await this.#neighbors.keep(remotes);
    return n;
  }

  /** Deletes flows (see FlowTable.delete). */
  delete(filter: FlowFilter, strict: boolean): number {
    return this.#locked(() => {
      const n = this.#table.delete(filter, strict);
      this.#registry.learnGeneve(n > 0);
      return n;
    });
  }

  /**
   * The flows the filter covers, highest priority first, one at a time;
   * with `counters`, every flow's counters are read once, first.
   */
  each(
    filter: FlowFilter,
    options: { counters?: boolean; reuse?: boolean },
  ): Generator<InstalledFlow> {
    // The table's own generator, not one around it: a step less per flow.
    return this.#table.sorted(filter, this.#dumpOptions(options));
  }

  /**
   * {@link each}'s flows handed to `fn` one at a time, without a
   * generator's step per flow; the counters and the index are read at
   * once, off the JavaScript thread.
   */
  forEach(
    filter: FlowFilter,
    options: { counters?: boolean; reuse?: boolean },
    fn: (f: InstalledFlow) => void,
  ): Promise<void> {
    return this.#table.eachSorted(filter, {
      counters: options.counters ? this.#table.counterArraysAsync() : undefined,
      reuse: options.reuse,
    }, fn);
  }

  #dumpOptions(options: { counters?: boolean; reuse?: boolean }): DumpOptions {
    return {
      counters: options.counters ? this.#table.counterArrays() : undefined,
      reuse: options.reuse,
    };
  }

  /**
   * Makes the flows of `options.owner` (the operator's by default) exactly
   * `specs`, atomically (see FlowTable.apply); `specs` may be a generator,
   * read once.
   */
  async apply(
    specs: Iterable<FlowSpec | FlowByText>,
    options: ApplyOptions = {},
  ): Promise<FlowDiff> {
    const diff = this.#locked(() => {
      const d = this.#table.apply(specs, options);
      if (!options.dryRun) this.#registry.learnGeneve(true);
      return d;
    });
    if (!options.dryRun) await this.#neighbors.keep(diff.remotes);
    return diff;
  }

  /** A group as `group add` would take it, ports by name. */
  describeGroup(g: GroupSpec): string {
    return formatGroup(g, this.#ports.names());
  }

  /** Every group (see FlowTable.groups). */
  groups(options: { counters?: boolean; owner?: OwnerName }): InstalledGroup[] {
    return this.#table.groups(options);
  }

  /** Installs groups (see FlowTable.setGroups), keeping their remotes' next hops resolved. */
  async setGroups(
    specs: GroupSpec[],
    mode: "add" | "modify" | "any",
    owner?: OwnerName,
  ): Promise<GroupResult> {
    const result = this.#locked(() => this.#table.setGroups(specs, mode, owner));
    await this.#neighbors.keep(result.remotes);
    return result;
  }

  /** Deletes groups (see FlowTable.deleteGroups). */
  deleteGroups(ids: number[], force: boolean, owner?: OwnerName): number {
    return this.#locked(() => this.#table.deleteGroups(ids, force, owner));
  }

  /**
   * Takes the lock until the result is disposed: changes meanwhile take
   * it no more, read nothing again (no one else can change a thing), and
   * leave the journal's bookkeeping to be written once, at the end. Each
   * change is still all or nothing; a crash meanwhile is repaired by the
   * next writer. The next hops of new remotes are seen to in the
   * background meanwhile, in batches (see `Neighbors`).
   */
  hold(): SessionHold {
    if (this.#held) throw new RangeError("this datapath already holds a session");
    const lock = this.#changes.begin();
    this.#table.hold();
    this.#memo = new Map();
    this.#neighbors.batch(true);
    const held: SessionHold = {
      settled: () => this.#neighbors.settled(),
      [Symbol.dispose]: () => {
        if (this.#held !== held) return;
        this.#held = undefined;
        this.#memo = undefined;
        this.#neighbors.batch(false);
        try {
          this.#table.release();
          this.#changes.seen(this.#table.lastSeq);
        } finally {
          lock.release();
        }
      },
    };
    this.#held = held;
    return held;
  }

  #locked<T>(fn: () => T): T {
    if (this.#held) {
      const result = fn();
      this.#changes.seen(this.#table.lastSeq);
      return result;
    }
    using _lock = this.#changes.begin();
    const result = fn();
    // The flow table counted its change; the ports are as they were.
    this.#changes.seen(this.#table.lastSeq);
    return result;
  }
}
