/**
 * Declarative state: the ports, tunnels, groups and flows a datapath
 * should have, made so in one step. Ports are added or changed in place
 * first (a port keeps its number, so flows naming it stay valid), then
 * groups (each switching to its new buckets in one write), the flow table
 * is then replaced atomically, and groups and ports no longer wanted go
 * last, when no flow uses them any more. Running it again after a crash
 * finishes the job: every step is idempotent.
 *
 * The flows are one owner's: the operator's by default, or a named
 * owner's (`owner`), and other owners' flows stay as they are. Under a
 * named owner, the file's ports and tunnels are added or changed but no
 * other port is removed: ports belong to nobody in particular.
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
 *   groups: ["group_id=42,type=all,bucket=output:web1,bucket=set_tunnel(id=42,dst=192.0.2.2),output:vx0"],
 *   flows: ["in_port=web1 actions=set_tunnel(id=42,dst=192.0.2.2),output:vx0"],
 * });
 * assert.deepEqual(plan.ports.add, ["web1", "vx0"]);
 * assert.equal(plan.flows.added, 1);
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { LAYOUT_VERSION, tunKeyCodec } from "../maps/layouts.ts";
import denoJson from "../../deno.json" with { type: "json" };
import {
  type CompiledGroup,
  compileGroup,
  decompileActions,
  namesOf,
  type PortLookup,
} from "./compile.ts";
import type { Datapath, PortSpec } from "./datapath.ts";
import type { PortNames } from "./match.ts";
import { type FlowSpec, formatFlow, parseFlowAt } from "./flow_syntax.ts";
import type {
  ApplyOptions,
  FlowByText,
  FlowDiff,
  InstalledGroup,
  OwnerName,
} from "./flow_table.ts";
import { whose } from "./flows/owners.ts";
import { formatGroup, parseGroupAt } from "./group_syntax.ts";
import { parseNet, type Port, PortError, tunnelOptions, tunnelPort } from "./port.ts";

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

/** A flow's text and where it was read (a file's line, a list's index), for errors. */
export interface FlowText {
  /** The flow, in flow syntax. */
  text: string;
  /** Where it comes from. */
  where: string;
}

/**
 * Flows read as they are wanted (from a file, say), so a million are never
 * held at once; each call of `texts` reads them afresh.
 */
export interface FlowSource {
  /** The flows, in order. */
  texts(): Iterable<FlowText>;
  /**
   * A digest of the bytes the flows are read from (and whatever else they
   * hold), cheaper to make than reading the flows: the same digest, the
   * same flows. Without it, the flows' texts are hashed.
   */
  digest?(): string;
}

/** Everything a datapath should have. */
export interface DesiredState {
  /** Local ports. */
  ports?: DesiredPort[];
  /** Tunnel ports. */
  tunnels?: DesiredTunnel[];
  /** Replication groups, in group syntax (`group_id=ID,type=all,bucket=…`). */
  groups?: string[];
  /** Flows, in flow syntax, or a source reading them as they are wanted. */
  flows?: string[] | FlowSource;
}

/** What applying changes (or, in a dry run, would change). */
export interface ApplyPlan {
  /** Ports and tunnels by name. */
  ports: { add: string[]; change: string[]; remove: string[] };
  /** Groups by id. */
  groups: { add: number[]; change: number[]; remove: number[] };
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
  /** Whose flows the state's are ("" or unset: the operator's). */
  owner?: OwnerName;
  /**
   * The state gives flows alone (a line form file): ports and groups stay
   * as they are, and the state's ports, tunnels and groups are ignored.
   */
  flowsOnly?: boolean;
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
    throw new PortError("a state file holds ports, tunnels, groups and flows");
  }
  for (const key of Object.keys(doc)) {
    if (!["ports", "tunnels", "groups", "flows"].includes(key)) {
      throw new PortError(`"${key}" is not part of a state file (ports, tunnels, groups, flows)`);
    }
  }
  const state = doc as DesiredState;
  for (const [key, list] of Object.entries(state)) {
    if (!Array.isArray(list)) throw new PortError(`${key} must be a list`);
  }
  for (const key of ["flows", "groups"] as const) {
    for (const f of (state[key] ?? []) as unknown[]) {
      if (typeof f !== "string") {
        throw new PortError(
          `${key} are strings in ${key.slice(0, -1)} syntax, not ${JSON.stringify(f)}`,
        );
      }
    }
  }
  return state;
}

function options(t: DesiredTunnel): Record<string, string> {
  return Object.fromEntries(Object.entries(t.options ?? {}).map(([k, v]) => [k, String(v)]));
}

/**
 * Makes `dp` hold exactly `state`. With `dryRun`, changes nothing and says
 * what would change. Groups and flows are checked against the ports the
 * state will have, and flows against its groups, before anything is
 * touched.
 */
export async function applyState(
  dp: Datapath,
  state: DesiredState,
  opts: ApplyStateOptions = {},
): Promise<ApplyPlan> {
  const limit = opts.listLimit ?? 1000;
  if (opts.flowsOnly) return await applyFlowsOnly(dp, state, opts, limit);
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
    groups: { add: [], change: [], remove: [] },
    flows: { added: 0, modified: 0, removed: 0, unchanged: 0, add: [], modify: [], remove: [] },
  };
  for (const [name, want] of wantPorts) {
    const old = have.get(name);
    if (!old) plan.ports.add.push(name);
    else if (!sameDesired(old, want)) plan.ports.change.push(name);
  }
  const owner = opts.owner ?? "";
  const installedGroups = dp.groups();
  if (!owner) {
    for (const [name, port] of have) {
      if (wantPorts.has(name)) continue;
      // The operator's flows and groups go with the port; another owner's would not.
      const flow = dp.flows.installed({ port: port.number }).find((f) => f.owner !== "");
      const group = installedGroups.find((g) =>
        g.owner !== "" &&
        g.buckets.some((b) => b.some((a) => a.type === "output" && a.port === name))
      );
      const other = flow
        ? `${whose(flow.owner)} flows use`
        : group && `${whose(group.owner)} group ${group.id} sends to`;
      if (other) {
        throw new PortError(
          `port ${name} is not in the state, but ${other} it: keep it in the state`,
        );
      }
      plan.ports.remove.push(name);
    }
  }

  // Groups and flows name ports: check them against the ports the state
  // will have, numbering new ports as they will be numbered, before
  // touching any. A named owner's state keeps the ports it does not name.
  const kept = owner ? [...have.values()].filter((p) => !wantPorts.has(p.name)) : [];
  const future = futurePorts(dp, wantPorts, plan.ports.add, kept);
  const names = namesOf(future);
  const groups = planGroups(dp, state.groups ?? [], future, plan, owner, installedGroups);
  // Flows may send to the state's groups, and to other owners' groups, which stay.
  const groupIds = new Set([
    ...groups.map((g) => g.spec.id),
    ...installedGroups.filter((g) => g.owner !== owner).map((g) => g.id),
  ]);
  const parsed = byText(state.flows, groupIds);
  // Flows must all be good before ports or groups change: a read of its
  // own first when any will (the flow table itself is all or nothing).
  const changes = plan.ports.add.length + plan.ports.change.length + plan.groups.add.length +
    plan.groups.change.length;
  if (changes > 0 && !opts.dryRun) {
    for (const f of parsed(names)) f.parse();
  }

  if (plan.ports.add.length === 0 && plan.ports.change.length === 0) {
    // The ports stay: the flow table's own diff says it all.
    if (!opts.dryRun) await dp.setGroups(groups.map((g) => g.spec), "any", { owner });
    const diff = await dp.applyFlows(parsed(dp.portNames()), {
      dryRun: opts.dryRun,
      progress: opts.progress,
      listLimit: limit,
      comingGroups: new Set(groups.map((g) => g.spec.id)),
      owner: opts.owner,
      source: owner ? undefined : sourceDigest(state, opts),
      context: flowContext(dp, groupIds),
    });
    plan.flows = describeDiff(dp, diff);
    if (!opts.dryRun) removeUnwanted(dp, plan, owner);
    return plan;
  }
  if (opts.dryRun) {
    // New ports have no kernel numbers yet: compare canonical text, keyed
    // by priority and match (cookies are not part of a flow's identity).
    const canon = (f: FlowSpec, actions?: string) =>
      formatFlow({ ...f, cookie: 0n }, names, actions);
    const want = new Map<string, string>();
    for (const { parse } of parsed(names)) {
      const f = parse();
      want.set(canon(f, ""), canon(f));
    }
    const installed = new Map<string, string>();
    for (const f of dp.flows.installed({ owner: opts.owner ?? "" })) {
      installed.set(canon(f, ""), canon(f));
    }
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
  for (const name of [...plan.ports.add, ...plan.ports.change]) {
    await dp.upsertPort(wantPorts.get(name)!);
  }
  await dp.setGroups(groups.map((g) => g.spec), "any", { owner });
  const diff = await dp.applyFlows(parsed(dp.portNames()), {
    progress: opts.progress,
    listLimit: limit,
    owner: opts.owner,
    source: owner ? undefined : sourceDigest(state, opts),
    context: flowContext(dp, groupIds),
  });
  plan.flows = describeDiff(dp, diff);
  removeUnwanted(dp, plan, owner);
  return plan;
}

/** applyState for flows alone: the ports and groups the datapath has stay. */
async function applyFlowsOnly(
  dp: Datapath,
  state: DesiredState,
  opts: ApplyStateOptions,
  limit: number,
): Promise<ApplyPlan> {
  const groupIds = new Set(dp.groups().map((g) => g.id));
  const diff = await dp.applyFlows(byText(state.flows, groupIds)(dp.portNames()), {
    dryRun: opts.dryRun,
    progress: opts.progress,
    listLimit: limit,
    owner: opts.owner,
    source: opts.owner ? undefined : sourceDigest(state, opts),
    context: flowContext(dp, groupIds),
  });
  return {
    ports: { add: [], change: [], remove: [] },
    groups: { add: [], change: [], remove: [] },
    flows: describeDiff(dp, diff),
  };
}

/**
 * Deletes the groups (`owner`'s), then the ports, the plan no longer wants
 * (no flow uses them now).
 */
function removeUnwanted(dp: Datapath, plan: ApplyPlan, owner: OwnerName): void {
  if (plan.groups.remove.length) dp.deleteGroups(plan.groups.remove, { owner });
  for (const name of plan.ports.remove) dp.deletePort(name);
}

/**
 * The ports `dp` will have once the wanted ones are made: those kept, as
 * wanted, new ones numbered as they will be, and `kept` as they are. A
 * tunnel's options are checked here.
 */
function futurePorts(
  dp: Datapath,
  want: Map<string, PortSpec>,
  added: string[],
  kept: Port[],
): PortLookup {
  const numbers = new Map(
    dp.ports().filter((p) => want.has(p.name)).map((p) => [p.name, p.number]),
  );
  let next = 1;
  const taken = new Set(dp.ports().map((p) => p.number));
  for (const name of added) {
    while (taken.has(next)) next++;
    numbers.set(name, next);
    taken.add(next);
  }
  const ports: Port[] = [
    ...kept,
    ...want.values().map((w): Port => {
      const number = numbers.get(w.name)!;
      if (w.kind === "local") {
        return {
          kind: "local",
          name: w.name,
          number,
          device: w.device,
          xdp: !!w.xdp,
          net: w.net ?? 0,
        };
      }
      // The underlay device does not change what a flow or group means.
      return { ...tunnelPort(w.name, w.proto, "", w.options), number };
    }),
  ];
  return {
    byName: (name) => ports.find((p) => p.name === name),
    byNumber: (n) => ports.find((p) => p.number === n),
  };
}

/**
 * The state's groups, `owner`'s, compiled against `ports` (the ports the
 * state will have), with what changes in `plan`: each compared with the
 * installed group (of `installed`) as canonical text. Only `owner`'s
 * groups are changed or removed: a group of another owner in the state,
 * or one to remove that another owner's flows send to, is refused.
 */
function planGroups(
  dp: Datapath,
  texts: string[],
  ports: PortLookup,
  plan: ApplyPlan,
  owner: OwnerName,
  installed: InstalledGroup[],
): CompiledGroup[] {
  const groups = texts.map((t, i) => {
    const spec = parseGroupAt(t, `groups[${i}]`);
    try {
      return compileGroup(spec, ports);
    } catch (err) {
      if (err instanceof Error) err.message = `groups[${i}]: ${err.message}`;
      throw err;
    }
  });
  const byId = new Map(installed.map((g) => [g.id, g]));
  const seen = new Set<number>();
  groups.forEach((g, i) => {
    const id = g.spec.id;
    if (seen.has(id)) throw new PortError(`groups: group ${id} is given twice`);
    seen.add(id);
    const buckets = g.buckets.map((a) =>
      decompileActions([a], (k) => tunKeyCodec.decode(g.tunKeyBytes[k]), ports)
    );
    const old = byId.get(id);
    if (old && old.owner !== owner) {
      throw new PortError(
        `groups[${i}]: group ${id} is ${whose(old.owner)}, and one owner never changes another's`,
      );
    }
    if (old === undefined) plan.groups.add.push(id);
    else if (dp.describeGroup(old) !== formatGroup({ id, buckets }, namesOf(ports))) {
      plan.groups.change.push(id);
    }
  });
  for (const g of installed) {
    if (g.owner !== owner || seen.has(g.id)) continue;
    // Scans the flows: only when a group goes.
    const user = dp.flows.installed({ group: g.id }).find((f) => f.owner !== owner);
    if (user) {
      throw new PortError(
        `group ${g.id} is not in the state, but ${
          whose(user.owner)
        } flows send to it: keep it in the state`,
      );
    }
    plan.groups.remove.push(g.id);
  }
  return groups;
}

/** Refuses a flow that sends to a group the state does not have, naming it. */
function checkFlowGroups(f: FlowSpec, names: PortNames, groups: ReadonlySet<number>): void {
  for (const a of f.actions) {
    if (a.type === "group" && !groups.has(a.group)) {
      throw new PortError(`${formatFlow(f, names)}: there is no group ${a.group} in the state`);
    }
  }
}

/**
 * The digest of `state` as `opts` apply it, for the operator's flows to be
 * recognised unchanged without being parsed: its flows' text (or the
 * bytes of the file they are read from), its ports, tunnels and groups,
 * and warren's version and map layout, which decide what the text
 * compiles to. What it compiles against in the datapath (port numbers,
 * groups) is the note's to check: any change of those moves the change
 * counter.
 */
function sourceDigest(state: DesiredState, opts: ApplyStateOptions): string {
  const h = createHash("sha256");
  const { ports, tunnels, groups, flows = [] } = state;
  h.update(
    JSON.stringify([denoJson.version, LAYOUT_VERSION, !!opts.flowsOnly, ports, tunnels, groups]),
  );
  if (!Array.isArray(flows) && flows.digest) {
    h.update(`\0file:${flows.digest()}`);
    return h.digest("hex");
  }
  // Length-prefixed: no two lists of texts hash alike; in chunks, as few calls as can be.
  let chunk = "\0texts:";
  for (const { text } of flowTexts(flows)()) {
    chunk += `${text.length}:${text}`;
    if (chunk.length >= 65536) h.update(chunk), chunk = "";
  }
  h.update(chunk);
  return h.digest("hex");
}

/**
 * A state's flows as texts, each parsed (against port names `names`) and
 * checked (its groups among `groupIds`) only when asked: a text the last
 * apply compiled is not parsed again, and a million flows are never all
 * held as objects.
 */
function byText(
  flows: DesiredState["flows"],
  groupIds: ReadonlySet<number>,
): (names: PortNames) => Iterable<FlowByText> {
  const texts = flowTexts(flows);
  return function* (names) {
    for (const flow of texts()) {
      const text = flow.text;
      yield {
        text,
        parse() {
          // Where it was read is asked for by an error only: a source may
          // make it when asked, not for each of a million flows.
          try {
            const f = parseFlowAt(text, names);
            checkFlowGroups(f, names, groupIds);
            return f;
          } catch (err) {
            if (err instanceof Error) err.message = `${flow.where}: ${err.message}`;
            throw err;
          }
        },
      };
    }
  };
}

/**
 * What flow texts compile against besides their text, as a digest: the
 * datapath's ports (names, numbers, kinds and options), the groups they
 * may name (`groupIds`), warren's version and the map layout.
 */
function flowContext(dp: Datapath, groupIds: ReadonlySet<number>): string {
  const plain = (_: string, v: unknown) =>
    typeof v === "bigint" ? `${v}n` : v instanceof Uint8Array ? Array.from(v) : v;
  return createHash("sha256").update(
    JSON.stringify(
      [denoJson.version, LAYOUT_VERSION, dp.ports(), [...groupIds].sort((a, b) => a - b)],
      plain,
    ),
  ).digest("hex");
}

/**
 * ListFlow is flow `index` of a list. As a file's flows do (state_file.ts),
 * it says where it is only when an error asks: an index made into a
 * string for each of a million flows grows V8's young generation.
 */
class ListFlow implements FlowText {
  /** Flow `index` of a list, `text`. */
  constructor(readonly text: string, readonly index: number) {}

  /** Its index, as an error names it. */
  get where(): string {
    return `flows[${this.index}]`;
  }
}

/** A state's flows as a source: a list's flows are named by their index. */
function flowTexts(flows: DesiredState["flows"] = []): () => Iterable<FlowText> {
  if (!Array.isArray(flows)) return () => flows.texts();
  return function* () {
    for (let i = 0; i < flows.length; i++) yield new ListFlow(flows[i], i);
  };
}

function describeDiff(dp: Datapath, diff: FlowDiff): ApplyPlan["flows"] {
  const text = (f: FlowSpec) => dp.describeFlow(f);
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

/**
 * Whether port `have` already is `want` (a tunnel's options compared as
 * `tunnel add` stores them, defaults filled in): what `apply` leaves alone.
 */
export function sameDesired(have: Port, want: PortSpec): boolean {
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
  // A UDP tunnel's default checksum depends on each packet's family, so
  // its csum is shown only when given, and false is not its default.
  if (k === "csum" && (proto === "vxlan" || proto === "geneve")) return false;
  return DEFAULTS[k] === v;
}
