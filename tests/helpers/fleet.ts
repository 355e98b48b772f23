/**
 * Fleet test helpers: an applier that records what it is given (and
 * checks every difference against the whole state), agent
 * configurations for test hosts, a log that keeps its lines, waiting for
 * a condition with a deadline, and (from the lab) `warren agent` processes.
 *
 * @module
 */

import type { Applier, FleetUpdate } from "../../src/fleet/applier.ts";
import type { EtcdOptions } from "../../src/fleet/client.ts";
import type { AgentConfig } from "../../src/fleet/config.ts";
import type { FleetDatapathState, FleetDelta, LocalPort } from "../../src/fleet/derive.ts";
import type { Diff } from "../../src/fleet/journal.ts";

/** One call of a {@link RecordingApplier}. */
export interface AppliedCall {
  /** When, by performance.now(). */
  at: number;
  /** The etcd revision it reflects. */
  revision: number;
  /** Whether it was a full resync rather than a difference. */
  full: boolean;
  /** The whole state after it. */
  state: FleetDatapathState;
}

/**
 * RecordingApplier keeps every state it is asked to apply, with the time.
 * It applies each difference to the state it holds, as a datapath would,
 * and records in `mismatches` every call where that did not give the
 * whole state the agent wanted.
 */
export class RecordingApplier implements Applier {
  /** Every call, in order. */
  readonly calls: AppliedCall[] = [];
  /** Calls whose difference, applied, was not the wanted state. */
  readonly mismatches: string[] = [];

  /** Records `update`. */
  apply(update: FleetUpdate): Promise<void> {
    const state = structuredClone(update.state());
    if (update.delta) {
      let mine: FleetDatapathState | string;
      try {
        mine = applyDelta(this.last!, update.delta);
      } catch (err) {
        mine = (err as Error).message;
      }
      if (JSON.stringify(mine) !== JSON.stringify(state)) {
        this.mismatches.push(`revision ${update.revision}: ${JSON.stringify(mine)}`);
      }
    }
    this.calls.push({
      at: performance.now(),
      revision: update.revision,
      full: !update.delta,
      state,
    });
    return Promise.resolve();
  }

  /** The last state applied. */
  get last(): FleetDatapathState | undefined {
    return this.calls.at(-1)?.state;
  }
}

/**
 * `state` with `delta` applied as an applier must (removals first), each
 * list sorted as the agent sorts it. Throws for a removal of what is not
 * there or an addition of what already is: a difference that does not
 * fit the state it is applied to.
 */
export function applyDelta(state: FleetDatapathState, delta: FleetDelta): FleetDatapathState {
  const patch = <T>(list: T[], d: Diff<T>, what: string): T[] => {
    const items = new Map(list.map((x) => [JSON.stringify(x), x]));
    for (const x of d.removed) {
      if (!items.delete(JSON.stringify(x))) {
        throw new Error(`${what}: removes absent ${JSON.stringify(x)}`);
      }
    }
    for (const x of d.added) {
      const k = JSON.stringify(x);
      if (items.has(k)) throw new Error(`${what}: adds present ${k}`);
      items.set(k, x);
    }
    return [...items.values()];
  };
  const byName = (a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name);
  return {
    ports: patch(state.ports, delta.ports, "ports").sort(byName),
    tunnels: patch(state.tunnels, delta.tunnels, "tunnels").sort(byName),
    flows: patch(state.flows, delta.flows, "flows").sort(),
    groups: patch(state.groups, delta.groups, "groups").sort(),
    neighbours: patch(state.neighbours, delta.neighbours, "neighbours").sort(),
  };
}

/** A log sink that keeps its lines. */
export class LineLog {
  /** Every line, in order. */
  readonly lines: string[] = [];
  /** The sink to pass as `log`. */
  readonly sink = (line: string): void => {
    this.lines.push(line);
  };

  /** Lines containing `text`. */
  matching(text: string): string[] {
    return this.lines.filter((l) => l.includes(text));
  }
}

/** Fast retries for tests (the production cap is the same 1 s). */
export const TEST_BACKOFF = { initialMs: 20, maxMs: 1000 };

/** The test host `n` (1-based): underlay 192.0.2.n, one workload per entry of `nets`. */
export function hostConfig(
  etcd: EtcdOptions,
  n: number,
  nets: string[] = ["blue"],
  overrides: Partial<AgentConfig> = {},
): AgentConfig {
  const ports: LocalPort[] = nets.map((net, i) => ({
    name: `w${n}${i}`,
    device: `veth-w${n}${i}`,
    net,
    mac: workloadMac(n, i),
    ips: [`10.${i}.0.${n}`],
  }));
  return {
    host: `h${n}`,
    etcd,
    leaseTtl: 3,
    checkIntervalMs: 300,
    underlay: { addresses: [`192.0.2.${n}`] },
    tunnels: [{ protocol: "vxlan", port: 4789 }],
    ports,
    ...overrides,
  };
}

/** The MAC of host `n`'s workload `i`. */
export function workloadMac(n: number, i = 0): string {
  return `02:00:00:00:${i.toString(16).padStart(2, "0")}:${n.toString(16).padStart(2, "0")}`;
}

/** Waits until `cond` holds (polling every 10 ms); throws after `ms` naming `what`. */
export async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  ms = 5000,
): Promise<number> {
  const start = performance.now();
  for (;;) {
    if (await cond()) return performance.now() - start;
    if (performance.now() - start > ms) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

export { AgentProcess, type AgentProcessOptions, configYaml } from "../../src/lab/fleet.ts";
