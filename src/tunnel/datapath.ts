/**
 * The datapath manager: loads warren's programs, pins their maps under a
 * bpffs directory, attaches them, and keeps ports and flows. Everything it
 * knows lives in the pins, so any process can pick up where another left
 * off; writers take the datapath lock.
 *
 * {@link Datapath} is the one door for reads and writes alike; each
 * concern lives in its own module under `datapath/`:
 *
 * - `object.ts`: the BPF object, sized, its programs pinned, a dry-run copy;
 * - `lifecycle.ts`: up and down;
 * - `underlay.ts`: forwarding and neighbours;
 * - `changes.ts`: the change counter and the lock;
 * - `endpoints.ts`: local endpoint addresses;
 * - `port_list.ts`, `port_registry.ts`: the ports as known, and their writes;
 * - `flows.ts`: flow changes under the lock, with their side effects;
 * - `status.ts`: what `status` reports.
 *
 * @example Bring up a datapath and add a tunnel
 * ```ts ignore
 * // Needs root: tests/docs_test.ts runs this example in a network namespace.
 * import assert from "node:assert";
 * import { Datapath } from "./datapath.ts";
 *
 * using dp = await Datapath.up({ underlay: "eth0" });
 * await dp.addTunnelPort("vx0", "vxlan", { remote_ip: "flow", key: "flow" });
 * assert.equal(dp.portNames().number("vx0"), 1);
 * ```
 *
 * @module
 */

import type { Addr } from "./addr.ts";
import type { PortLookup } from "./compile.ts";
import type { Match, PortNames } from "./match.ts";
import {
  type AddResult,
  type ApplyOptions,
  type FlowByText,
  type FlowDiff,
  type FlowFilter,
  FlowTable,
  type GroupResult,
  type InstalledFlow,
  type InstalledGroup,
  type OwnerName,
} from "./flow_table.ts";
import type { FlowSpec } from "./flow_syntax.ts";
import type { GroupSpec } from "./group_syntax.ts";
import type { FlowKey } from "../maps/layouts.ts";
import type { DatapathLock } from "./lock.ts";
import { DatapathMaps } from "./pins.ts";
import { type LocalPort, type Port, tunnelNotes, type TunnelPort } from "./port.ts";
import { readStats, type Stats } from "./stats.ts";
import { Changes } from "./datapath/changes.ts";
import { localIps } from "./datapath/endpoints.ts";
import { DatapathFlows } from "./datapath/flows.ts";
import { FlowSession } from "./datapath/session.ts";
import { DEFAULT_PIN_DIR, down, exists, up, type UpOptions } from "./datapath/lifecycle.ts";
import { dryRunPrograms, type Programs } from "./datapath/object.ts";
import { devicePresent, PortList } from "./datapath/port_list.ts";
import { PortRegistry, type PortSpec } from "./datapath/port_registry.ts";
import { readStatus, type Status } from "./datapath/status.ts";
import { Neighbors } from "./datapath/underlay.ts";

export { DEFAULT_PIN_DIR, type PortSpec, type Status, type UpOptions };

/** Datapath is one pinned warren datapath. */
export class Datapath implements Disposable {
  /** The pin directory. */
  readonly pinDir: string;
  /** The shared maps. */
  readonly maps: DatapathMaps;
  /** The flows. */
  readonly flows: FlowTable;
  readonly #ports: PortList;
  readonly #changes: Changes;
  readonly #registry: PortRegistry;
  readonly #flows: DatapathFlows;

  private constructor(pinDir: string, maps: DatapathMaps, attach: boolean) {
    this.pinDir = pinDir;
    this.maps = maps;
    const ports = new PortList(maps);
    this.#ports = ports;
    this.#changes = new Changes(pinDir, maps.config, () => ports.reload());
    this.flows = new FlowTable(maps, ports.lookup());
    this.#registry = new PortRegistry(pinDir, maps, ports, this.#changes, this.flows, attach);
    this.#flows = new DatapathFlows(
      this.flows,
      ports,
      this.#changes,
      this.#registry,
      new Neighbors(maps.config),
    );
  }

  /**
   * Opens the datapath pinned at `pinDir`; a clear error when there is
   * none, or when it was made under another layout version.
   */
  static open(pinDir = DEFAULT_PIN_DIR): Datapath {
    return Datapath.#over(pinDir, DatapathMaps.fromPins(pinDir));
  }

  /**
   * Opens a datapath built aside at `pinDir` (by a migration): its local
   * ports are written but never attached to their devices, because its
   * programs are swapped into the live datapath's attachments once it is
   * complete.
   */
  static openAside(pinDir: string): Datapath {
    return Datapath.#over(pinDir, DatapathMaps.fromPins(pinDir), false);
  }

  /** Whether a datapath is pinned at `pinDir`. */
  static exists(pinDir = DEFAULT_PIN_DIR): boolean {
    return exists(pinDir);
  }

  /**
   * Loads, pins and attaches the datapath. Idempotent: when it is already
   * up, the programs are replaced in place (the links swap them
   * atomically, so traffic never stops) and the maps are kept. Pins of a
   * past layout version are refused: `migrate` them first, as `warren up`
   * does.
   */
  static async up(options: UpOptions): Promise<Datapath> {
    const { pinDir, maps } = await up(options);
    return Datapath.#over(pinDir, maps);
  }

  /**
   * Detaches everything and removes every pin: afterwards no program,
   * link, pin or qdisc of this datapath remains. Safe to run twice, and
   * after a crash.
   */
  static down(pinDir = DEFAULT_PIN_DIR): Promise<void> {
    return down(pinDir);
  }

  static #over(pinDir: string, maps: DatapathMaps, attach = true): Datapath {
    try {
      return new Datapath(pinDir, maps, attach);
    } catch (err) {
      maps.close();
      throw err;
    }
  }

  /** Port names and numbers, for parsing and printing flows. */
  portNames(): PortNames {
    return this.#ports.names();
  }

  /** Ports by name and number, for flows. */
  portLookup(): PortLookup {
    return this.#ports.lookup();
  }

  /** A match as flow text, ports by name. */
  describeMatch(m: Match): string {
    return this.#flows.describeMatch(m);
  }

  /**
   * A flow as `flow add` would take it: priority, match and actions, then
   * `after`, which a dump line ends with (its owner and counters): joined
   * to a shared action list's text once, while the next flow with that
   * list has the same `after`, rather than to each flow's text.
   */
  describeFlow(f: FlowSpec, after = ""): string {
    return this.#flows.describeFlow(f, after);
  }

  /**
   * Adds flows of `options.owner` (the operator's by default; see
   * FlowTable.add), keeping their remotes' next hops resolved.
   */
  addFlows(specs: FlowSpec[], options: { owner?: OwnerName } = {}): Promise<AddResult> {
    return this.#flows.add(specs, options.owner);
  }

  /** Changes the actions of a flow of `options.owner` (see FlowTable.modify). */
  modifyFlow(spec: FlowSpec, options: { owner?: OwnerName } = {}): Promise<number> {
    return this.#flows.modify(spec, options.owner);
  }

  /**
   * A session: the lock taken once for many changes, one call at a time,
   * for scripts. Each change keeps its own guarantees (all or nothing,
   * repaired after a crash); other writers wait until it is disposed:
   * `await using s = await dp.session()`, then `await s.addFlows([f])`
   * per flow (tests/session_test.ts). The next hops of new remotes are
   * seen to in the background, in batches; `await using` waits for them
   * at the end (a plain `using` does not).
   */
  session(): Promise<FlowSession> {
    return Promise.resolve(new FlowSession(this, this.#flows.hold()));
  }

  /** Deletes flows (see FlowTable.delete). */
  deleteFlows(filter: FlowFilter, strict: boolean): number {
    return this.#flows.delete(filter, strict);
  }

  /** The flows the filter covers, highest priority first. */
  dumpFlows(filter: FlowFilter = {}, options: { counters?: boolean } = {}): InstalledFlow[] {
    return [...this.eachFlow(filter, options)];
  }

  /**
   * Makes the flows of `options.owner` (the operator's by default) exactly
   * `specs`, atomically for packets, leaving other owners' flows alone
   * (see FlowTable.apply); `specs` may be a generator, read once.
   *
   * @example Replace the fleet agent's flows, and only those
   * ```ts ignore
   * // Needs root: tests/docs_test.ts runs this example in a network namespace.
   * import assert from "node:assert";
   * import { Datapath } from "./datapath.ts";
   * import { parseFlow } from "./flow_syntax.ts";
   *
   * using dp = await Datapath.up({ underlay: "eth0" });
   * await dp.addLocalPort("web1", "veth-web1");
   * const flows = (...texts: string[]) => texts.map((t) => parseFlow(t, dp.portNames()));
   * await dp.addFlows(flows("priority=1,in_port=web1 actions=drop"));
   * await dp.applyFlows(flows("in_port=web1,arp actions=pass"), { owner: "fleet" });
   * const diff = await dp.applyFlows(flows("in_port=web1,ip actions=pass"), { owner: "fleet" });
   * assert.deepEqual([diff.added, diff.removed], [1, 1]);
   * // The operator's flow is still there.
   * assert.deepEqual(dp.dumpFlows().map((f) => f.owner), ["fleet", ""]);
   * ```
   */
  applyFlows(
    specs: Iterable<FlowSpec | FlowByText>,
    options: ApplyOptions = {},
  ): Promise<FlowDiff> {
    return this.#flows.apply(specs, options);
  }

  /** A group as `group add` would take it, ports by name. */
  describeGroup(g: GroupSpec): string {
    return this.#flows.describeGroup(g);
  }

  /**
   * Every replication group, by id (only `owner`'s when given, "" for the
   * operator's); with `counters`, each one's and its buckets'.
   */
  groups(options: { counters?: boolean; owner?: OwnerName } = {}): InstalledGroup[] {
    return this.#flows.groups(options);
  }

  /**
   * Installs replication groups of `options.owner` (the operator's by
   * default): "add" refuses one that exists, "modify" one that does not,
   * "any" takes both; another owner's group is refused (see
   * FlowTable.setGroups).
   */
  setGroups(
    specs: GroupSpec[],
    mode: "add" | "modify" | "any",
    options: { owner?: OwnerName } = {},
  ): Promise<GroupResult> {
    return this.#flows.setGroups(specs, mode, options.owner);
  }

  /**
   * Deletes replication groups. Refuses while flows send to one, unless
   * `force`, which deletes those flows too; with `owner`, refuses a group
   * of another owner.
   */
  deleteGroups(ids: number[], options: { force?: boolean; owner?: OwnerName } = {}): number {
    return this.#flows.deleteGroups(ids, options.force ?? false, options.owner);
  }

  /** Local endpoint addresses. */
  localIps(): Addr[] {
    return localIps(this.maps);
  }

  /** Every port, by number. */
  ports(): Port[] {
    return this.#ports.all();
  }

  /** What a user must know about tunnel port `t` (see {@link tunnelNotes}). */
  tunnelNotes(t: TunnelPort): string[] {
    return tunnelNotes(t, this.maps.ports.get(t.number)?.gso_ifindex !== 0);
  }

  /**
   * Whether local port `port`'s device still exists (a port outlives its
   * device until deleted).
   */
  devicePresent(port: LocalPort): boolean {
    return devicePresent(this.maps, port);
  }

  /**
   * Adds a local port on `deviceName` and attaches the local program to
   * its ingress. `xdp` says its peer takes XDP redirects; `net` is the
   * network it stamps on every packet it receives.
   */
  addLocalPort(
    name: string,
    deviceName: string,
    options: { xdp?: boolean; net?: number } = {},
  ): Promise<LocalPort> {
    return this.#registry.addLocal(name, deviceName, options);
  }

  /** Adds a tunnel port of `proto` with Open vSwitch-style `options`. */
  addTunnelPort(
    name: string,
    proto: string,
    options: Record<string, string>,
  ): Promise<TunnelPort> {
    return this.#registry.addTunnel(name, proto, options);
  }

  /**
   * Makes port `port.name` exactly `port` (added if new), keeping its
   * number so the flows that name it stay valid. Returns what it did.
   */
  upsertPort(port: PortSpec): Promise<"added" | "changed" | "unchanged"> {
    return this.#registry.upsert(port);
  }

  /**
   * Deletes port `name`. Refuses while flows use it, unless `force`, which
   * deletes those flows too.
   */
  deletePort(name: string, options: { force?: boolean } = {}): void {
    this.#registry.remove(name, options);
  }

  /** Reports what is attached where, the pins, and how full each table is. */
  status(): Status {
    return readStatus(this.pinDir, this.maps, this.flows, this.#ports.all().length);
  }

  /**
   * A private copy of the programs that shares every map with the live
   * datapath but changes none of them: counters stay still and GRE
   * sequence numbers are not used up. `warren trace` runs packets through
   * these, so tracing never disturbs what the counters say about real
   * traffic. Close each program when done.
   */
  dryRunPrograms(): Programs {
    return dryRunPrograms(this.maps);
  }

  // Reads beside the writes above, so that callers (the CLI, watch,
  // metrics, trace) reach the tables through this object alone.

  /**
   * The flows the filter covers, highest priority first, one at a time: a
   * dump of a million flows never holds them all. With `counters`, every
   * flow's counters are read once, before the first flow. With `reuse`,
   * every flow yielded is the same object, overwritten by the next: for a
   * caller done with each flow before it asks for the next.
   */
  eachFlow(
    filter: FlowFilter = {},
    options: { counters?: boolean; reuse?: boolean } = {},
  ): Generator<InstalledFlow> {
    return this.#flows.each(filter, options);
  }

  /**
   * {@link eachFlow}'s flows handed to `fn` one at a time, in the same
   * order and with the same options: what a caller that prints a million
   * flows uses, without a generator's step per flow. The kernel's
   * copies of the table and its counters are made off the JavaScript
   * thread, while it sorts what they gave before.
   */
  forEachFlow(
    filter: FlowFilter,
    options: { counters?: boolean; reuse?: boolean },
    fn: (f: InstalledFlow) => void,
  ): Promise<void> {
    return this.#flows.forEach(filter, options, fn);
  }

  /** The flow a packet with flow key `key` hits, as the kernel's lookup picks it. */
  lookupFlow(key: FlowKey): InstalledFlow | undefined {
    return this.flows.lookup(key);
  }

  /** Every counter: per port, per group and bucket, per drop reason, per event, summed over CPUs. */
  stats(): Stats {
    return readStats(this.maps, this.#ports.all(), this.groups({ counters: true }));
  }

  /** The lock every change takes; hold it across several changes. */
  lock(): DatapathLock {
    return this.#changes.lock();
  }

  /** Releases every descriptor; the datapath stays up. */
  close(): void {
    this.flows.close();
    this.#changes.close();
    this.maps.close();
  }

  /** Same as `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
