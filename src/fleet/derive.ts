/**
 * What one host's datapath should hold, derived from the fleet view and the
 * host's own configuration. A pure function: no etcd, no datapath, no
 * clock, so it is tested as a table of cases, and every host that sees the
 * same view derives the same decisions about the fleet.
 *
 * For each network a local port belongs to (VNI V, used as the datapath's
 * `net` and as the tunnel key), the host owns:
 *
 * - **delivery**: `net=V,dl_dst=M actions=output:P` for each local MAC M;
 * - **unicast to remote hosts**:
 *   `net=V,dl_dst=M actions=set_tunnel(id=V,dst=H),output:T` for each MAC M
 *   whose winning claim is host H's;
 * - **ARP steering**: an ARP request for an IPv4 address that a known MAC
 *   holds goes to that MAC's host (or port) only, instead of everywhere;
 * - **broadcast and unknown unicast**: `net=V actions=group:V`, group V
 *   holding a bucket per local port of the network and per member host
 *   (every other host with a claim in it). The datapath keeps split
 *   horizon: no copy back out of the port it came in on, none from a
 *   tunnel into a tunnel.
 *
 * Local ports stamp their network (`net: V`) and the tunnel ports, one per
 * protocol and destination port in use, stamp the packet's tunnel key as
 * its network (`net=flow`). `neighbours` lists the remote underlay
 * addresses the flows send to, so their MACs can be resolved ahead of the
 * first packet (flannel's lesson: pre-filled entries survive restarts).
 *
 * This host's own configuration is the truth about its own workloads: a
 * local MAC not yet in etcd counts as the newest claim (it is about to be
 * published), and a claim of this host's in etcd that its configuration no
 * longer has counts as withdrawn.
 *
 * @module
 */

import type { DesiredPort, DesiredTunnel } from "../tunnel/apply.ts";
import { type Claim, type FleetView, ipOwners } from "./view.ts";
import type { HostRecord, TunnelEndpoint } from "./validate.ts";
import { parseAddr } from "../tunnel/addr.ts";

/** A workload port of this host, as its configuration gives it. */
export interface LocalPort {
  /** Port name in the datapath. */
  name: string;
  /** Its netdev (the workload's veth, say). */
  device: string;
  /** The network it belongs to, by name. */
  net: string;
  /** The workload's MAC. */
  mac: string;
  /** The workload's addresses. */
  ips: string[];
  /** The device's peer takes XDP redirects. */
  xdp?: boolean;
}

/** This host, as the derivation needs it. */
export interface SelfConfig {
  /** Its name in the fleet. */
  host: string;
  /** Its underlay addresses. */
  underlay: string[];
  /** The tunnels it accepts. */
  tunnels: TunnelEndpoint[];
  /** Its workload ports. */
  ports: LocalPort[];
}

/** A local port stamped with its network. */
export interface NetPort extends DesiredPort {
  /** The network's VNI, stamped on every packet the port receives. */
  net: number;
}

/** What this host's fleet-owned part of the datapath should be. */
export interface FleetDatapathState {
  /** Local ports, with their network. */
  ports: NetPort[];
  /** Tunnel ports, one per protocol and destination port in use. */
  tunnels: DesiredTunnel[];
  /** Flows, in flow syntax, sorted. */
  flows: string[];
  /** Replication groups, in group syntax, sorted. */
  groups: string[];
  /** Remote underlay addresses the flows send to, sorted. */
  neighbours: string[];
}

/** The derivation's result: the state, and what it had to leave out and why. */
export interface Derived {
  /** The state to apply. */
  state: FleetDatapathState;
  /** Sentences naming what was skipped (for a bounded log). */
  problems: string[];
}

/** Flow priorities: steering beats unicast beats flooding. */
export const PRIORITY = { arp: 200, unicast: 100, flood: 10 } as const;

/** The name of the tunnel port for `protocol` to destination `port`. */
export function tunnelName(t: TunnelEndpoint): string {
  return t.protocol === "gre" ? "fl-gre" : `fl-${t.protocol}-${t.port}`;
}

/** Where to send to a host: one of its addresses in a family this host has. */
function reachable(self: SelfConfig, h: HostRecord): string | undefined {
  const families = new Set(self.underlay.map((a) => parseAddr(a).v6));
  return h.underlay.find((a) => families.has(parseAddr(a).v6));
}

/** Derives this host's state from the fleet view. */
export function derive(view: FleetView, self: SelfConfig): Derived {
  const problems: string[] = [];
  const ports: NetPort[] = [];
  const tunnels = new Map<string, DesiredTunnel>();
  const flows: string[] = [];
  const groups: string[] = [];
  const neighbours = new Set<string>();

  const useTunnel = (t: TunnelEndpoint) => {
    const name = tunnelName(t);
    const options: Record<string, string> = { remote_ip: "flow", key: "flow", net: "flow" };
    if (t.protocol !== "gre") options.dst_port = String(t.port);
    tunnels.set(name, { name, proto: t.protocol, options });
    return name;
  };

  const byNet = new Map<string, LocalPort[]>();
  for (const p of self.ports) byNet.set(p.net, [...byNet.get(p.net) ?? [], p]);

  for (const [netName, local] of [...byNet].sort(([a], [b]) => a.localeCompare(b))) {
    const net = view.networks.get(netName);
    if (!net) {
      problems.push(`network ${netName} is not defined in etcd: ports ${names(local)} wait`);
      continue;
    }
    const v = net.vni;
    const mine = self.tunnels.find((t) => t.protocol === net.protocol);
    if (!mine) {
      problems.push(`network ${netName} uses ${net.protocol}, which this host does not accept`);
      continue;
    }
    useTunnel(mine);
    for (const p of local) {
      const port: NetPort = { name: p.name, device: p.device, net: v };
      if (p.xdp) port.xdp = true;
      ports.push(port);
    }

    /** How to reach each remote host in this network, once per host. */
    const routes = new Map<string, string | undefined>();
    const routeTo = (host: string): string | undefined => {
      if (routes.has(host)) return routes.get(host);
      const h = view.hosts.get(host);
      const t = h?.tunnels.find((t) => t.protocol === net.protocol);
      const dst = h && reachable(self, h);
      let action: string | undefined;
      if (!h) problems.push(`host ${host} has endpoints in ${netName} but is not registered`);
      else if (!t) problems.push(`host ${host} does not accept ${net.protocol} for ${netName}`);
      else if (!dst) problems.push(`host ${host} has no underlay address of this host's families`);
      else {
        neighbours.add(dst);
        action = `set_tunnel(id=${v},dst=${dst}),output:${useTunnel(t)}`;
      }
      routes.set(host, action);
      return action;
    };

    const claims = effectiveClaims(view.claims.get(netName), self.host, local);
    const portOf = new Map(local.map((p) => [p.mac, p.name]));
    const members = new Set<string>();
    for (const [mac, list] of claims) {
      for (const c of list) if (c.host !== self.host) members.add(c.host);
      const w = list[0];
      const action = w.host === self.host ? `output:${portOf.get(mac)}` : routeTo(w.host);
      if (action) {
        flows.push(`priority=${PRIORITY.unicast},net=${v},dl_dst=${mac} actions=${action}`);
      }
    }
    for (const [ip, w] of ipOwners(netName, claims)) {
      if (parseAddr(ip).v6) continue;
      const action = w.host === self.host ? `output:${portOf.get(w.mac)}` : routeTo(w.host);
      if (action) {
        flows.push(
          `priority=${PRIORITY.arp},net=${v},arp,arp_op=1,arp_tpa=${ip} actions=${action}`,
        );
      }
    }
    const buckets = local.map((p) => `bucket=output:${p.name}`).sort();
    for (const host of [...members].sort()) {
      const action = routeTo(host);
      if (action) buckets.push(`bucket=${action}`);
    }
    groups.push(`group_id=${v},type=all,${buckets.join(",")}`);
    flows.push(`priority=${PRIORITY.flood},net=${v} actions=group:${v}`);
  }
  return {
    state: {
      ports: ports.sort((a, b) => a.name.localeCompare(b.name)),
      tunnels: [...tunnels.values()].sort((a, b) => a.name.localeCompare(b.name)),
      flows: flows.sort(),
      groups: groups.sort(),
      neighbours: [...neighbours].sort(),
    },
    problems,
  };
}

/**
 * The claims of one network with this host's configuration as the truth
 * about itself, each list newest first.
 */
function effectiveClaims(
  fromEtcd: ReadonlyMap<string, readonly Claim[]> | undefined,
  self: string,
  local: LocalPort[],
): Map<string, Claim[]> {
  const localMacs = new Map(local.map((p) => [p.mac, p]));
  const out = new Map<string, Claim[]>();
  for (const [mac, list] of fromEtcd ?? []) {
    const kept = list.filter((c) => c.host !== self || localMacs.has(mac));
    if (kept.length) out.set(mac, [...kept]);
  }
  for (const p of local) {
    const list = out.get(p.mac) ?? [];
    const i = list.findIndex((c) => c.host === self);
    // Not yet published: about to be, so it is the newest claim.
    const createRevision = i >= 0 ? list[i].createRevision : Number.MAX_SAFE_INTEGER;
    const claim: Claim = {
      net: p.net,
      host: self,
      mac: p.mac,
      ips: p.ips,
      createRevision,
      modRevision: createRevision,
    };
    if (i >= 0) list[i] = claim;
    else list.push(claim);
    list.sort((a, b) => b.createRevision - a.createRevision);
    out.set(p.mac, list);
  }
  return out;
}

function names(ports: LocalPort[]): string {
  return ports.map((p) => p.name).join(", ");
}
