/**
 * warren: flow-based tunneling (VXLAN, Geneve, GRE, STT) in eBPF, managed
 * from Deno.
 *
 * A {@link Datapath} loads warren's precompiled programs through libbpf,
 * attaches them at XDP and TC, and keeps its ports, tunnels and flows in
 * pinned BPF maps, so any process can pick up where another left off.
 * Flows are Open vSwitch's: a priority, a match (the tunnel key and the
 * network a port stamps included) and actions such as `set_tunnel(...)`,
 * `output:PORT` and `group:ID`, a replication group (`parseGroup`).
 *
 * @example Bring up a datapath, add a tunnel and flows, read counters
 * ```ts ignore
 * // Needs root: tests/docs_test.ts runs this example in a network namespace.
 * import { Datapath, parseFlow } from "./mod.ts";
 *
 * // On a host whose underlay is eth0 and whose workload sits behind the
 * // veth veth-web1.
 * using dp = await Datapath.up({ underlay: "eth0" });
 * await dp.addLocalPort("web1", "veth-web1");
 * await dp.addTunnelPort("vx0", "vxlan", { remote_ip: "flow", key: "flow" });
 * await dp.addFlows([
 *   "in_port=web1 actions=set_tunnel(id=42,dst=192.0.2.2),output:vx0",
 *   "tun_id=42,in_port=vx0 actions=output:web1",
 * ].map((f) => parseFlow(f, dp.portNames())));
 * for (const f of dp.dumpFlows({}, { counters: true })) {
 *   console.log(dp.describeFlow(f), "packets:", f.counters!.packets);
 * }
 * ```
 *
 * @module
 */

export { Datapath, DEFAULT_PIN_DIR, type Status, type UpOptions } from "./src/tunnel/datapath.ts";
export {
  type ApplyPlan,
  applyState,
  type DesiredState,
  type FlowSource,
  type FlowText,
  parseState,
} from "./src/tunnel/apply.ts";
export { readStateFile, type StateFormat, stateFormat } from "./src/tunnel/state_file.ts";
export { migrate, type MigrateOptions, type Migration } from "./src/tunnel/migrate/migrate.ts";
export { readConfiguration, stateOf } from "./src/tunnel/migrate/export.ts";
export type { Configuration } from "./src/tunnel/migrate/read_past.ts";
export { type ActionSpec, formatAction, parseActions } from "./src/tunnel/flow_actions.ts";
export { type FlowSpec, parseFlow, parseMatch } from "./src/tunnel/flow_syntax.ts";
export { FlowSyntaxError } from "./src/tunnel/flow_tokens.ts";
export {
  type ApplyOptions,
  type FlowCounters,
  type FlowDiff,
  type FlowFilter,
  FlowTableError,
  type GroupCounters,
  type GroupResult,
  type InstalledFlow,
  type InstalledGroup,
  type OwnerName,
} from "./src/tunnel/flow_table.ts";
export { formatGroup, type GroupSpec, parseGroup } from "./src/tunnel/group_syntax.ts";
export { type Match, MatchError } from "./src/tunnel/match.ts";
export { formatMatch } from "./src/tunnel/match_format.ts";
export {
  type LocalPort,
  type Port,
  PortError,
  type Protocol,
  type TunnelPort,
} from "./src/tunnel/port.ts";
export { CompileError } from "./src/tunnel/compile.ts";
export type { PortCounters, Stats } from "./src/tunnel/stats.ts";
export { trace, type TraceResult, type TraceStep } from "./src/tunnel/trace.ts";
export type { BuildOptions } from "./src/tunnel/packet.ts";
export * as bpf from "./src/bpf/mod.ts";
export * as maps from "./src/maps/mod.ts";
