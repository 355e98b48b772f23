/**
 * The agent's state applied to a warren datapath: what `warren agent` does
 * unless told to write a state file.
 *
 * One apply, in the order that keeps every step valid for packets and
 * safe to interrupt:
 *
 * 1. **Ports and tunnels** the state wants are added, or changed in place
 *    (a port keeps its number, so flows naming it stay valid). A port
 *    already as wanted is not touched. A local port whose device does not
 *    exist yet (a workload not started) is left out, and so are the flows
 *    and group buckets that send to it, for this apply: the rest of the
 *    fleet is applied, then the apply fails naming the port, and the
 *    agent's retry (backoff capped at 1 s) adds it once the device comes.
 * 2. **Flows and groups** are replaced as the fleet's own set, atomically
 *    for packets, leaving every flow and group an operator added by hand
 *    as it is: groups first (a group switches to its new buckets in one
 *    write), then the flow table in one switch, then groups no flow of the
 *    fleet's sends to any more.
 * 3. **Ports and tunnels no longer wanted** are deleted, now that no flow
 *    uses them. The agent deletes only ports it owns: tunnel ports named
 *    `fl-…` (the derivation's names, which agent configurations may not
 *    use for local ports) and the local ports its configuration names or
 *    that it applied in this run. A port dropped from the configuration
 *    while the agent was stopped is not known as the fleet's: `warren port
 *    del` removes it.
 *
 * Neighbour entries for the remote underlay addresses are the datapath's
 * own business: it keeps the next hop of every remote a flow or group
 * sends to resolved (managed entries), as for flows added by hand.
 *
 * The fleet's flows and groups are those of the datapath's owner
 * {@link FLEET_OWNER} (`apply --owner fleet`): an operator's, and any
 * other owner's, are left as they are.
 *
 * Every step is idempotent, so a crash anywhere (failpoints
 * `fleet.apply.ports`, after step 1, and `fleet.apply.flows`, after step 2,
 * and those of the datapath's own writes) is healed by the next apply of
 * the same state; a restarted agent's first apply on an unchanged datapath
 * changes nothing, and flows and groups keep their counters.
 *
 * Only what changed is written: an update that carries a difference
 * leaves the flow table alone when no flow of the fleet's changed (a
 * member host joining changes a group's buckets, say), and the groups
 * when no group did. A full resync (the agent's first apply, and every
 * one after a failure) writes both.
 *
 * @module
 */

import type { Applier, FleetUpdate } from "./applier.ts";
import { FLEET_PORT_PREFIX } from "./derive.ts";
import type { LogSink } from "./log.ts";
import { ifindex, ifname } from "../bpf/netif.ts";
import { sameDesired } from "../tunnel/apply.ts";
import { Datapath, type PortSpec } from "../tunnel/datapath.ts";
import { failpoint } from "../tunnel/failpoint.ts";
import type { ActionSpec } from "../tunnel/flow_actions.ts";
import { type FlowSpec, parseFlowAt } from "../tunnel/flow_syntax.ts";
import { type GroupSpec, parseGroup } from "../tunnel/group_syntax.ts";

/** The owner of every flow and group the fleet agent installs. */
export const FLEET_OWNER = "fleet";

/** What one apply changed, for logs and tests. */
export interface DatapathApplied {
  /** Ports and tunnels added or changed, by name. */
  ports: string[];
  /** Ports and tunnels deleted, by name. */
  removed: string[];
  /** Flows added, modified and removed. */
  flows: { added: number; modified: number; removed: number };
  /** Groups added or changed, and deleted. */
  groups: { changed: number; removed: number };
  /** Local ports left out because their device does not exist yet. */
  waiting: string[];
  /** How long each step took, ms: ports, groups, flows (the table switch), the rest. */
  ms: { ports: number; groups: number; flows: number; rest: number };
}

/** Options of {@link DatapathApplier}. */
export interface DatapathApplierOptions {
  /** The local ports the agent's configuration names: the fleet's, present or not. */
  ownPorts?: Iterable<string>;
  /** Called after each apply with what it changed. */
  onApplied?: (applied: DatapathApplied) => void;
  /** Where to say what an apply left out. */
  log?: LogSink;
}

/** DatapathApplier makes the fleet's part of a datapath exactly a derived state. */
export class DatapathApplier implements Applier {
  readonly #dp: Datapath;
  readonly #own: Set<string>;
  readonly #opts: DatapathApplierOptions;

  /** Applies to `dp`, which stays open as long as the applier is used. */
  constructor(dp: Datapath, options: DatapathApplierOptions = {}) {
    this.#dp = dp;
    this.#own = new Set(options.ownPorts ?? []);
    this.#opts = options;
  }

  /** Adds local ports the configuration now names (after a reload). */
  ownPorts(names: Iterable<string>): void {
    for (const n of names) this.#own.add(n);
  }

  /** Whether port `name` is the fleet's to delete. */
  owns(name: string): boolean {
    return name.startsWith(FLEET_PORT_PREFIX) || this.#own.has(name);
  }

  /** Makes the fleet's part of the datapath exactly what `update` wants (see the module's steps). */
  async apply(update: FleetUpdate): Promise<void> {
    const dp = this.#dp;
    const state = update.state();
    const delta = update.delta;
    const done: DatapathApplied = {
      ports: [],
      removed: [],
      flows: { added: 0, modified: 0, removed: 0 },
      groups: { changed: 0, removed: 0 },
      waiting: [],
      ms: { ports: 0, groups: 0, flows: 0, rest: 0 },
    };
    let t = performance.now();
    const lap = (step: keyof DatapathApplied["ms"]) => {
      const now = performance.now();
      done.ms[step] += now - t;
      t = now;
    };

    // 1. Ports and tunnels.
    const wanted: PortSpec[] = [
      ...state.ports.map((p): PortSpec => ({ kind: "local", ...p })),
      ...state.tunnels.map((t): PortSpec => ({
        kind: "tunnel",
        name: t.name,
        proto: t.proto,
        options: Object.fromEntries(
          Object.entries(t.options ?? {}).map(([k, v]) => [k, String(v)]),
        ),
      })),
    ];
    for (const p of wanted) this.#own.add(p.name);
    const have = new Map(dp.ports().map((p) => [p.name, p]));
    const missing = new Set<string>();
    for (const want of wanted) {
      const old = have.get(want.name);
      if (old && sameDesired(old, want)) continue;
      if (want.kind === "local" && !deviceExists(want.device)) {
        missing.add(want.name);
        continue;
      }
      await dp.upsertPort(want);
      done.ports.push(want.name);
    }
    done.waiting = [...missing];
    lap("ports");
    failpoint("fleet.apply.ports");

    // 2. Flows and groups, the fleet's own set.
    const sendsToMissing = (actions: ActionSpec[]) =>
      actions.some((a) => a.type === "output" && missing.has(a.port));
    const names = dp.portNames();
    const flows = state.flows.map((f) => parseFlowAt(f, names))
      .filter((f) => !sendsToMissing(f.actions));
    const groups = state.groups.map(parseGroup).map((g) => ({
      id: g.id,
      buckets: g.buckets.filter((b) => !sendsToMissing(b)),
    }));
    lap("rest");
    const changed = (d: { added: unknown[]; removed: unknown[] }) =>
      d.added.length > 0 || d.removed.length > 0;
    // A port set anew may have a new number: flows and groups naming it are written again.
    const all = !delta || done.ports.length > 0;
    const write = {
      groups: all || changed(delta.groups),
      flows: all || changed(delta.flows),
    };
    await this.#replaceOwned(groups, flows, write, done, lap);
    failpoint("fleet.apply.flows");

    // 3. Ports no longer wanted.
    const keep = new Set(wanted.map((p) => p.name));
    for (const p of dp.ports()) {
      if (keep.has(p.name) || !this.owns(p.name)) continue;
      try {
        dp.deletePort(p.name);
        done.removed.push(p.name);
      } catch (err) {
        // An operator's flow or group uses it: theirs to remove first.
        this.#opts.log?.(`fleet port ${p.name} is no longer wanted but stays: ${errText(err)}`);
      }
    }
    lap("rest");
    this.#opts.onApplied?.(done);
    if (missing.size) {
      throw new Error(
        `port(s) ${[...missing].join(", ")} wait for their device(s); the rest is applied`,
      );
    }
  }

  /**
   * Makes the fleet's groups exactly `groups` and its flows exactly
   * `flows`, writing only what `write` says changed, as the datapath's
   * owner {@link FLEET_OWNER}: the one place that knows how the fleet's
   * own set is told apart. Groups are set before the flows that send to
   * them, and deleted after; the flow table switches in one step.
   */
  async #replaceOwned(
    groups: GroupSpec[],
    flows: FlowSpec[],
    write: { groups: boolean; flows: boolean },
    done: DatapathApplied,
    lap: (step: "groups" | "flows") => void,
  ): Promise<void> {
    const dp = this.#dp;
    const owner = FLEET_OWNER;
    if (write.groups) {
      const g = await dp.setGroups(groups, "any", { owner });
      done.groups.changed = g.added + g.modified;
    }
    lap("groups");
    if (write.flows) {
      const diff = await dp.applyFlows(flows, { owner });
      done.flows = { added: diff.added, modified: diff.modified, removed: diff.removed };
    }
    lap("flows");
    if (!write.groups) return;
    const wanted = new Set(groups.map((g) => g.id));
    const stale = dp.groups({ owner }).map((g) => g.id).filter((id) => !wanted.has(id));
    if (stale.length) done.groups.removed = dp.deleteGroups(stale, { owner });
  }
}

/** What an apply changed, in a few words (`warren agent --verbose`). */
export function appliedText(d: DatapathApplied): string {
  const f = d.flows;
  const g = d.groups;
  return `datapath: ports ${d.ports.length} set, ${d.removed.length} deleted; flows +${f.added} ` +
    `~${f.modified} -${f.removed}; groups ${g.changed} set, ${g.removed} deleted (ms: ` +
    Object.entries(d.ms).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(", ") + ")";
}

/**
 * Opens the datapath the agent applies to, pinned at `pinDir`; when the
 * configuration names the underlay `device`, checks the datapath runs on
 * it. Errors say what to do.
 */
export function openFleetDatapath(pinDir: string, device?: string): Datapath {
  if (!Datapath.exists(pinDir)) {
    throw new Error(
      `no warren datapath is pinned at ${pinDir}: run warren up first (or give --state-file)`,
    );
  }
  const dp = Datapath.open(pinDir);
  if (device !== undefined) {
    const on = ifname(dp.maps.config.read().underlay_ifindex);
    if (on !== device) {
      dp.close();
      throw new Error(
        `the datapath at ${pinDir} runs on ${on ?? "a device that is gone"}, ` +
          `not on the configuration's underlay ${device}`,
      );
    }
  }
  return dp;
}

function deviceExists(name: string): boolean {
  try {
    ifindex(name);
    return true;
  } catch {
    return false;
  }
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
