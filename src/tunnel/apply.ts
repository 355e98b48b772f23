/**
 * Declarative state: the ports, tunnels and flows a datapath should have,
 * made so in one step. Ports are added or changed in place first (a port
 * keeps its number, so flows naming it stay valid), the flow table is then
 * built aside and switched to atomically, and ports no longer wanted go
 * last, when no flow uses them any more. Running it again after a crash
 * finishes the job: every step is idempotent.
 *
 * @example
 * ```ts ignore
 * // Needs root: tests/docs_test.ts runs this example in a network namespace.
 * import assert from "node:assert";
 * import { applyState } from "./apply.ts";
 * import { Datapath } from "./datapath.ts";
 *
 * using dp = await Datapath.up({ underlay: "eth0" });
 * const plan = await applyState(dp, {
 *   ports: [{ name: "web1", device: "veth-web1" }],
 *   tunnels: [{ name: "vx0", proto: "vxlan", options: { remote_ip: "flow", key: "flow" } }],
 *   flows: ["in_port=web1 actions=set_tunnel(id=42,dst=192.0.2.2),output:vx0"],
 * });
 * assert.deepEqual(plan.ports.add, ["web1", "vx0"]);
 * assert.equal(plan.flows.added, 1);
 * ```
 *
 * @module
 */

import type { Datapath } from "./datapath.ts";
import type { Match, PortNames } from "./fields.ts";
import { type ActionSpec, type FlowSpec, formatFlow, parseFlowAt } from "./flow_syntax.ts";
import type { ApplyOptions, FlowDiff } from "./flow_table.ts";
import { parseNet, type Port, PortError, tunnelOptions } from "./port.ts";
import type { PortSpec } from "./datapath.ts";

/** A local port as a state file gives it. */
export interface DesiredPort {
  /** Port name. */
  name: string;
  /** Its netdev. */
  device: string;
  /** Its peer takes XDP redirects. */
  xdp?: boolean;
  /** The network it stamps on what it receives (1..2^32-1). */
  net?: number;
}

/** A tunnel port as a state file gives it. */
export interface DesiredTunnel {
  /** Port name. */
  name: string;
  /** vxlan, geneve, gre or stt. */
  proto: string;
  /** Open vSwitch-style options, as `tunnel add` takes them. */
  options?: Record<string, string | number | boolean>;
}

/** Everything a datapath should have. */
export interface DesiredState {
  /** Local ports. */
  ports?: DesiredPort[];
  /** Tunnel ports. */
  tunnels?: DesiredTunnel[];
  /** Flows, in flow syntax. */
  flows?: string[];
}

/** What applying changes (or, in a dry run, would change). */
export interface ApplyPlan {
  /** Ports and tunnels by name. */
  ports: { add: string[]; change: string[]; remove: string[] };
  /**
   * Flows: how many of each kind, and the first `listLimit` of each as
   * text.
   */
  flows: {
    added: number;
    modified: number;
    removed: number;
    unchanged: number;
    add: string[];
    modify: string[];
    remove: string[];
  };
}

/** Options of {@link applyState}. */
export interface ApplyStateOptions {
  /** Change nothing; say what would change. */
  dryRun?: boolean;
  /** Progress of the flow table's phases. */
  progress?: ApplyOptions["progress"];
  /** How many flows of each kind the plan lists (default 1000). */
  listLimit?: number;
}

/** Reads a state file: YAML or JSON (JSON is YAML; an object in JSON is read as JSON). */
export async function parseState(text: string): Promise<DesiredState> {
  // JSON is YAML, but JSON.parse reads a table of a million flows in a
  // fraction of the time and memory a YAML parser needs. The YAML parser
  // is loaded only for YAML: every other command starts without it.
  const json = /^\s*\{/.test(text);
  let doc;
  try {
    doc = (json ? JSON.parse(text) : (await import("yaml")).parse(text)) ?? {};
  } catch (err) {
    throw new PortError(`not valid ${json ? "JSON" : "YAML"}: ${(err as Error).message}`);
  }
  if (typeof doc !== "object" || Array.isArray(doc)) {
    throw new PortError("a state file holds ports, tunnels and flows");
  }
  for (const key of Object.keys(doc)) {
    if (!["ports", "tunnels", "flows"].includes(key)) {
      throw new PortError(`"${key}" is not part of a state file (ports, tunnels, flows)`);
    }
  }
  const state = doc as DesiredState;
  for (const [key, list] of Object.entries(state)) {
    if (!Array.isArray(list)) throw new PortError(`${key} must be a list`);
  }
  for (const f of state.flows ?? []) {
    if (typeof f !== "string") {
      throw new PortError(`flows are strings in flow syntax, not ${JSON.stringify(f)}`);
    }
  }
  return state;
}

function options(t: DesiredTunnel): Record<string, string> {
  return Object.fromEntries(Object.entries(t.options ?? {}).map(([k, v]) => [k, String(v)]));
}

/**
 * Makes `dp` hold exactly `state`. With `dryRun`, changes nothing and says
 * what would change. Flows are checked against the ports the state will
 * have before anything is touched.
 */
export async function applyState(
  dp: Datapath,
  state: DesiredState,
  opts: ApplyStateOptions = {},
): Promise<ApplyPlan> {
  const limit = opts.listLimit ?? 1000;
  const wantPorts = new Map<string, PortSpec>();
  (state.ports ?? []).forEach((p, i) => {
    const net = p.net === undefined ? undefined : parseNet(p.net, `ports[${i}] (${p.name}): net`);
    wantPorts.set(p.name, { kind: "local", name: p.name, device: p.device, xdp: p.xdp, net });
  });
  for (const t of state.tunnels ?? []) {
    if (wantPorts.has(t.name)) throw new PortError(`"${t.name}" is both a port and a tunnel`);
    wantPorts.set(t.name, { kind: "tunnel", name: t.name, proto: t.proto, options: options(t) });
  }
  const have = new Map(dp.ports().map((p) => [p.name, p]));
  const plan: ApplyPlan = {
    ports: { add: [], change: [], remove: [] },
    flows: { added: 0, modified: 0, removed: 0, unchanged: 0, add: [], modify: [], remove: [] },
  };
  for (const [name, want] of wantPorts) {
    const old = have.get(name);
    if (!old) plan.ports.add.push(name);
    else if (!sameDesired(old, want)) plan.ports.change.push(name);
  }
  for (const name of have.keys()) if (!wantPorts.has(name)) plan.ports.remove.push(name);
  const flowTexts = state.flows ?? [];
  // Parsed as they are read: a million flows are never all held as objects.
  const parsed = (names: PortNames) =>
    (function* () {
      for (let i = 0; i < flowTexts.length; i++) {
        yield parseFlowAt(flowTexts[i], names, `flows[${i}]`);
      }
    })();

  if (plan.ports.add.length === 0 && plan.ports.change.length === 0) {
    // The ports stay: the flow table's own diff says it all.
    const diff = await dp.applyFlows(parsed(dp.portNames()), {
      dryRun: opts.dryRun,
      progress: opts.progress,
      listLimit: limit,
    });
    plan.flows = describeDiff(dp, diff);
    if (!opts.dryRun) { for (const name of plan.ports.remove) dp.deletePort(name); }
    return plan;
  }

  // Flows name ports: check them against the ports the state will have,
  // numbering new ports as they will be numbered, before touching any.
  const numbers = new Map(
    [...have.values()].filter((p) => wantPorts.has(p.name)).map((p) => [p.name, p.number]),
  );
  let next = 1;
  const taken = new Set(dp.ports().map((p) => p.number));
  for (const name of plan.ports.add) {
    while (taken.has(next)) next++;
    numbers.set(name, next);
    taken.add(next);
  }
  const names: PortNames = {
    number: (n: string) => numbers.get(n),
    name: (n: number) => [...numbers].find(([, v]) => v === n)?.[0],
  };
  if (opts.dryRun) {
    // New ports have no kernel numbers yet: compare canonical text, keyed
    // by priority and match (cookies are not part of a flow's identity).
    const canon = (f: FlowSpec, actions?: string) =>
      formatFlow({ ...f, cookie: 0n }, names, actions);
    const want = new Map<string, string>();
    for (const f of parsed(names)) want.set(canon(f, ""), canon(f));
    const installed = new Map<string, string>();
    for (const f of dp.flows.installed()) installed.set(canon(f, ""), canon(f));
    const list = (l: string[], t: string) => l.length < limit && l.push(t);
    for (const [id, text] of want) {
      const old = installed.get(id);
      if (old === undefined) plan.flows.added++, list(plan.flows.add, text);
      else if (old !== text) plan.flows.modified++, list(plan.flows.modify, text);
      else plan.flows.unchanged++;
    }
    for (const [id, text] of installed) {
      if (!want.has(id)) plan.flows.removed++, list(plan.flows.remove, text);
    }
    return plan;
  }
  for (const _ of parsed(names)) { /* every flow must parse before any port changes */ }
  for (const name of [...plan.ports.add, ...plan.ports.change]) {
    await dp.upsertPort(wantPorts.get(name)!);
  }
  const diff = await dp.applyFlows(parsed(dp.portNames()), {
    progress: opts.progress,
    listLimit: limit,
  });
  plan.flows = describeDiff(dp, diff);
  for (const name of plan.ports.remove) dp.deletePort(name);
  return plan;
}

function describeDiff(dp: Datapath, diff: FlowDiff): ApplyPlan["flows"] {
  const text = (f: { priority: number; cookie: bigint; match: Match; actions: ActionSpec[] }) =>
    dp.describeFlow({ flowId: 0, ...f });
  return {
    added: diff.added,
    modified: diff.modified,
    removed: diff.removed,
    unchanged: diff.unchanged,
    add: diff.add.map(text),
    modify: diff.modify.map(text),
    remove: diff.remove.map(text),
  };
}

function sameDesired(have: Port, want: PortSpec): boolean {
  if (have.kind === "local" || want.kind === "local") {
    return have.kind === "local" && want.kind === "local" && have.device === want.device &&
      have.xdp === (want.xdp ?? false) && have.net === (want.net ?? 0);
  }
  if (have.proto !== want.proto) return false;
  // Compare as `tunnel add` would store them: defaults filled in.
  const current = tunnelOptions(have);
  const wanted = want.options ?? {};
  return Object.entries(wanted).every(([k, v]) => normalize(k, current, v)) &&
    Object.keys(current).every((k) => k in wanted || isDefault(k, current[k], have.proto));
}

function normalize(k: string, current: Record<string, string>, v: string): boolean {
  if (k === "key") return current.key === v || (current.in_key === v && current.out_key === v);
  if (k === "df_default") return current.df === v;
  return current[k] === v;
}

const DEFAULTS: Record<string, string> = {
  ttl: "64",
  tos: "0",
  df: "true",
  csum: "false",
  seq: "false",
  mss_clamp: "false",
  key: "0",
};

function isDefault(k: string, v: string, proto: string): boolean {
  if (k === "dst_port") {
    return v === String({ vxlan: 4789, geneve: 6081, stt: 7471, gre: 0 }[proto]);
  }
  return DEFAULTS[k] === v;
}
