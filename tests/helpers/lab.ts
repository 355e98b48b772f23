/**
 * Shortcuts for datapath tests on the two-host lab.
 *
 * @module
 */

import { ifindex } from "../../src/bpf/netif.ts";
import { Program } from "../../src/bpf/program.ts";
import { skbContext, testRun, type TestRunResult, xdpContext } from "../../src/bpf/test_run.ts";
import { statName } from "../../src/maps/layouts.ts";
import type { ProgramName } from "../../src/maps/names.ts";
import { Lab, type LabHost } from "../../src/lab/topology.ts";
import type { Datapath, UpOptions } from "../../src/tunnel/datapath.ts";
import { parseFlow } from "../../src/tunnel/flow_syntax.ts";

/** TC verdicts and XDP actions by name. */
export const TC_ACT_OK = 0;
/** TC_ACT_SHOT. */
export const TC_ACT_SHOT = 2;
/** TC_ACT_REDIRECT. */
export const TC_ACT_REDIRECT = 7;
/** XDP_DROP. */
export const XDP_DROP = 1;
/** XDP_PASS. */
export const XDP_PASS = 2;
/** XDP_REDIRECT. */
export const XDP_REDIRECT = 4;

/** Adds flows written as text. */
export async function addFlows(dp: Datapath, ...flows: string[]): Promise<void> {
  await dp.addFlows(flows.map((f) => parseFlow(f, dp.portNames())));
}

/** Runs one of `host`'s pinned programs on `data` (call inside its namespace). */
export function runPinned(
  host: LabHost,
  program: ProgramName,
  data: Uint8Array,
  dev: string,
): TestRunResult {
  using p = Program.fromPin(`${host.pinDir}/progs/${program}`);
  const ctx = program === "wr_xdp_underlay"
    ? xdpContext(ifindex(dev), data.length)
    : skbContext(ifindex(dev));
  return testRun(p, { data, ctx });
}

/** The datapath's per-reason counters that are not zero, by name. */
export function nonZeroStats(dp: Datapath): Record<string, number> {
  const out: Record<string, number> = {};
  dp.maps.stats.sum(0)?.stat.forEach((v, i) => {
    if (v) out[statLabel(i)] = Number(v);
  });
  return out;
}

function statLabel(i: number): string {
  return (i < 32 ? "drop_" : "") + (statName(i) ?? String(i));
}

/**
 * Makes `peer`'s underlay MAC (or `mac`) known to `host` for good
 * (byte-exact tests), as the neighbour of its address of the family `v6`
 * says, or of `ip`. Returns the MAC.
 */
export async function pinNeighbor(
  lab: Lab,
  host: LabHost,
  v6 = false,
  ip?: string,
  mac?: string,
): Promise<string> {
  const peer = lab.peer(host);
  mac ??= (await peer.ns.run(["cat", `/sys/class/net/${peer.underlay}/address`])).trim();
  await host.ns.run([
    "ip",
    "neigh",
    "replace",
    ip ?? (v6 ? peer.ip6 : peer.ip),
    "lladdr",
    mac,
    "dev",
    host.underlay,
    "nud",
    "permanent",
  ]);
  return mac;
}

/**
 * Brings `host` up with port web on its workload and tunnel t0 of `proto`,
 * whose remote and key come from flows (`tunnel` adds or overrides
 * options).
 */
export async function upWithPorts(
  lab: Lab,
  host: LabHost,
  proto: string,
  tunnel: Record<string, string> = {},
  up: Partial<UpOptions> = {},
): Promise<void> {
  await lab.up(host, up);
  await lab.datapath(host, async (dp) => {
    await dp.addLocalPort("web", host.workload.port);
    await dp.addTunnelPort("t0", proto, { remote_ip: "flow", key: "flow", ...tunnel });
  });
}

/**
 * Brings both hosts up by {@link upWithPorts} with the two flows of a
 * tunnel between them: the workload's traffic into t0 under key 42, to
 * the peer's address `remote` gives, and key 42 from t0 back to the workload.
 */
export async function tunnelBothWays(
  lab: Lab,
  proto: string,
  tunnel: Record<string, string> | undefined,
  remote: (h: LabHost) => string,
): Promise<void> {
  for (const h of lab.hosts) {
    await upWithPorts(lab, h, proto, tunnel);
    await lab.datapath(h, (dp) =>
      addFlows(
        dp,
        `in_port=web actions=set_tunnel(id=42,dst=${remote(h)}),output:t0`,
        "tun_id=42,in_port=t0 actions=output:web",
      ));
  }
}

/** A lab (IPv4 only) with host A brought up by {@link upWithPorts}. */
export async function oneHost(
  proto = "vxlan",
  tunnel: Record<string, string> = {},
  up: Partial<UpOptions> = {},
): Promise<Lab> {
  const lab = await Lab.create({ ipv6: false });
  await upWithPorts(lab, lab.hosts[0], proto, tunnel, up);
  return lab;
}
