/**
 * What one host's datapath should hold, derived from the fleet view and the
 * host's own configuration. The result is a pure function of the two: no
 * etcd, no datapath, no clock, so it is tested as a table of cases, and
 * every host that sees the same view derives the same decisions about the
 * fleet.
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
 * **Incrementally.** A fleet of a thousand hosts gives a host thousands of
 * flows, while a change (a host joining, a workload moving) touches a few.
 * The {@link Deriver} keeps the derived state per network, with what each
 * part rests on: per member host its route (the action that reaches it),
 * per MAC its winning claim, per IP its owner, and which flows send to
 * which host. A change re-derives what it touches: a MAC's claims, its
 * flow and its IPs' steering; a host's registration, its route and the
 * flows and bucket that use it; a network's definition, that network. The
 * parts are journals (`journal.ts`), so what changed since the last apply
 * comes out without comparing whole states. {@link derive} is the same
 * code run once over a whole view, and a property test holds the two to
 * the same result.
 *
 * @module
 */

import type { DesiredPort, DesiredTunnel } from "../tunnel/apply.ts";
import {
  type Claim,
  entryIn,
  type FleetView,
  IpClaims,
  newestFirst,
  type ViewChange,
} from "./view.ts";
import type { HostRecord, Network, TunnelEndpoint } from "./validate.ts";
import { parseAddr } from "../tunnel/addr.ts";
import { Counted, type Diff, emptyDiff, Journal } from "./journal.ts";

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

/** What changed in a {@link FleetDatapathState}: each of its lists as a difference. */
export type FleetDelta = { [K in keyof FleetDatapathState]: Diff<FleetDatapathState[K][number]> };

/** How many items each list of a {@link FleetDatapathState} holds. */
export type FleetSize = { [K in keyof FleetDatapathState]: number };

/** The derivation's result: the state, and what it had to leave out and why. */
export interface Derived {
  /** The state to apply. */
  state: FleetDatapathState;
  /** Sentences naming what was skipped (for a bounded log). */
  problems: string[];
}

/** Flow priorities: steering beats unicast beats flooding. */
export const PRIORITY = { arp: 200, unicast: 100, flood: 10 } as const;

/**
 * The prefix of the tunnel ports' names: the agent owns every port so
 * named, and a configuration may not give it to a local port.
 */
export const FLEET_PORT_PREFIX = "fl-";

/** The name of the tunnel port for `protocol` to destination `port`. */
export function tunnelName(t: TunnelEndpoint): string {
  const name = t.protocol === "gre" ? "gre" : `${t.protocol}-${t.port}`;
  return FLEET_PORT_PREFIX + name;
}

/** The tunnel port that sends with `t`'s protocol to `t`'s port, taking everything from the flow. */
function tunnelPort(t: TunnelEndpoint): DesiredTunnel {
  const options: Record<string, string> = { remote_ip: "flow", key: "flow", net: "flow" };
  if (t.protocol !== "gre") options.dst_port = String(t.port);
  return { name: tunnelName(t), proto: t.protocol, options };
}

/** Derives this host's whole state from the fleet view, from scratch. */
export function derive(view: FleetView, self: SelfConfig): Derived {
  const d = new Deriver(self);
  d.rebuild(view);
  return { state: d.state(), problems: d.problems() };
}

/** How to reach one member host of a network: the action that sends there, or why there is none. */
interface Route {
  action?: string;
  /** The group bucket that sends there. */
  bucket?: string;
  /** The underlay address sent to (a neighbour entry). */
  dst?: string;
  /** The tunnel port sent through. */
  tunnel?: DesiredTunnel;
  problem?: string;
}

/** The flow key of a network's flooding flow; the others are keyed by MAC or IPv4 address. */
const FLOOD = "*";

/** One network this host has ports in: what is derived for it, and what that rests on. */
class Part {
  /** The network, while this host serves it. */
  net?: Network;
  /** Why it is not served. */
  problem?: string;
  /** The tunnel port this host receives the network on. */
  mine?: DesiredTunnel;
  /** This host's ports in it, in configuration order. */
  local: LocalPort[] = [];
  localByMac = new Map<string, LocalPort>();
  /** Per member host (not this one), how to reach it. */
  readonly routes = new Map<string, Route>();
  /** Per MAC, its winning claim, this host's configuration counted in. */
  readonly winners = new Map<string, Claim>();
  /** Per IP, the winning claims holding it, the owner first. */
  ips = new IpClaims();
  /** Per remote host, the flows (by key) that send to it. */
  readonly targets = new Map<string, Set<string>>();
  /** Per flow key, the remote host it sends to. */
  readonly targetOf = new Map<string, string>();
  /** Local ports by name. */
  readonly ports = new Journal<NetPort>(samePort);
  /** Flows by key: a MAC (unicast or delivery), an IPv4 address (ARP steering), or {@link FLOOD}. */
  readonly flows = new Journal<string>();
  /** The replication group, under the key "". */
  readonly group = new Journal<Group>(sameGroup);

  constructor(readonly name: string) {}

  /** Takes this host's ports in the network. */
  setLocal(local: LocalPort[]): void {
    this.local = local;
    this.localByMac = new Map(local.map((p) => [p.mac, p]));
  }
}

/**
 * Deriver keeps this host's derived state and brings it up to date with
 * each change of the view: {@link rebuild} derives everything (the first
 * time, and when this host's configuration changes), {@link update} what a
 * {@link ViewChange} touched. {@link delta} is what changed since the last
 * {@link commit}; {@link state} is the whole state.
 */
export class Deriver {
  #self: SelfConfig;
  #families = new Set<boolean>();
  #report: (problem: string) => void;
  #parts = new Map<string, Part>();
  /** Parts of networks this host left since the last commit: their removal is still to hand on. */
  #retired: Part[] = [];
  #tunnels = new Counted<DesiredTunnel>((a, b) => a.name === b.name);
  #neighbours = new Counted<string>();

  /** Creates a deriver for `self`; each problem met is passed to `report` when it arises. */
  constructor(self: SelfConfig, report: (problem: string) => void = () => {}) {
    this.#self = self;
    this.#report = report;
  }

  /** Derives everything again from `view`, for `self` (default: the configuration it has). */
  rebuild(view: FleetView, self: SelfConfig = this.#self): void {
    this.#self = self;
    this.#families = new Set(self.underlay.map((a) => parseAddr(a).v6));
    const byNet = new Map<string, LocalPort[]>();
    for (const p of self.ports) entryIn(byNet, p.net, () => []).push(p);
    for (const [name, part] of this.#parts) {
      if (byNet.has(name)) continue;
      this.#teardown(part);
      this.#parts.delete(name);
      this.#retired.push(part);
    }
    for (const [name, local] of byNet) {
      const part = entryIn(this.#parts, name, () => new Part(name));
      part.setLocal(local);
      this.#serve(part, view);
    }
  }

  /** Derives again what `change` touched in `view`. */
  update(view: FleetView, change: ViewChange): void {
    for (const [name, part] of this.#parts) {
      if (change.networks.has(name)) {
        this.#serve(part, view);
        continue;
      }
      if (!part.net) continue;
      let regroup = false;
      for (const host of change.hosts) {
        if (part.routes.has(host)) regroup = this.#reroute(part, view, host) || regroup;
      }
      for (const host of change.members.get(name) ?? []) {
        regroup = this.#reroute(part, view, host) || regroup;
      }
      const ips = new Set<string>();
      for (const mac of change.macs.get(name) ?? []) this.#claim(part, view, mac, ips);
      for (const ip of ips) this.#steer(part, ip);
      if (regroup) this.#regroup(part);
    }
  }

  /** The whole state, sorted. */
  state(): FleetDatapathState {
    const parts = [...this.#parts.values()];
    return {
      ports: parts.flatMap((p) => [...p.ports.values()]).sort((a, b) =>
        a.name.localeCompare(b.name)
      ),
      tunnels: [...this.#tunnels.journal.values()].sort((a, b) => a.name.localeCompare(b.name)),
      flows: parts.flatMap((p) => [...p.flows.values()]).sort(),
      groups: parts.flatMap((p) => [...p.group.values()].map(groupText)).sort(),
      neighbours: [...this.#neighbours.journal.values()].sort(),
    };
  }

  /** How many items the state holds, without building it. */
  size(): FleetSize {
    let ports = 0, flows = 0, groups = 0;
    for (const p of this.#parts.values()) {
      ports += p.ports.size;
      flows += p.flows.size;
      groups += p.group.size;
    }
    return {
      ports,
      tunnels: this.#tunnels.journal.size,
      flows,
      groups,
      neighbours: this.#neighbours.journal.size,
    };
  }

  /** What changed in the state since the last commit (nothing changed: every list empty). */
  delta(): FleetDelta {
    const [ports, flows, groups] = [emptyDiff<NetPort>(), emptyDiff<string>(), emptyDiff<Group>()];
    for (const p of [...this.#parts.values(), ...this.#retired]) {
      p.ports.diffInto(ports);
      p.flows.diffInto(flows);
      p.group.diffInto(groups);
    }
    const [tunnels, neighbours] = [emptyDiff<DesiredTunnel>(), emptyDiff<string>()];
    this.#tunnels.journal.diffInto(tunnels);
    this.#neighbours.journal.diffInto(neighbours);
    return {
      ports,
      tunnels,
      flows,
      groups: { added: groups.added.map(groupText), removed: groups.removed.map(groupText) },
      neighbours,
    };
  }

  /** Takes the state as it is now as applied: the next delta starts here. */
  commit(): void {
    for (const p of this.#parts.values()) {
      p.ports.commit();
      p.flows.commit();
      p.group.commit();
    }
    this.#retired = [];
    this.#tunnels.journal.commit();
    this.#neighbours.journal.commit();
  }

  /** Every problem the state has now, by network, then host. */
  problems(): string[] {
    const out: string[] = [];
    for (const part of [...this.#parts.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      if (part.problem) out.push(part.problem);
      for (const host of [...part.routes.keys()].sort()) {
        const p = part.routes.get(host)!.problem;
        if (p) out.push(p);
      }
    }
    return out;
  }

  #problem(p: string): string {
    this.#report(p);
    return p;
  }

  /** Derives a network's part from scratch. */
  #serve(part: Part, view: FleetView): void {
    this.#teardown(part);
    const net = view.networks.get(part.name);
    if (!net) {
      part.problem = this.#problem(
        `network ${part.name} is not defined in etcd: ports ${
          part.local.map((p) => p.name).join(", ")
        } wait`,
      );
      return;
    }
    const mine = this.#self.tunnels.find((t) => t.protocol === net.protocol);
    if (!mine) {
      part.problem = this.#problem(
        `network ${part.name} uses ${net.protocol}, which this host does not accept`,
      );
      return;
    }
    part.net = net;
    part.mine = tunnelPort(mine);
    this.#tunnels.add(part.mine.name, part.mine);
    for (const p of part.local) {
      const port: NetPort = { name: p.name, device: p.device, net: net.vni };
      if (p.xdp) port.xdp = true;
      part.ports.set(p.name, port);
    }
    for (const host of view.members.get(part.name)?.keys() ?? []) this.#reroute(part, view, host);
    const ips = new Set<string>();
    for (const mac of view.claims.get(part.name)?.keys() ?? []) this.#claim(part, view, mac, ips);
    for (const p of part.local) if (!part.winners.has(p.mac)) this.#claim(part, view, p.mac, ips);
    for (const ip of ips) this.#steer(part, ip);
    this.#regroup(part);
    part.flows.set(FLOOD, `priority=${PRIORITY.flood},net=${net.vni} actions=group:${net.vni}`);
  }

  /** Withdraws everything a part derived. */
  #teardown(part: Part): void {
    for (const key of part.ports.keys()) part.ports.set(key, undefined);
    for (const key of part.flows.keys()) part.flows.set(key, undefined);
    part.group.set("", undefined);
    if (part.mine) this.#tunnels.remove(part.mine.name);
    for (const r of part.routes.values()) this.#unuse(r);
    part.routes.clear();
    part.winners.clear();
    part.ips = new IpClaims();
    part.targets.clear();
    part.targetOf.clear();
    part.net = part.mine = part.problem = undefined;
  }

  /**
   * Brings the route to `host` up to date (it may have joined or left the
   * network, or changed its registration); the flows sending to it follow.
   * Returns whether the group must be built again.
   */
  #reroute(part: Part, view: FleetView, host: string): boolean {
    const member = host !== this.#self.host && view.members.get(part.name)?.has(host);
    const old = part.routes.get(host);
    const route = member ? this.#route(part.net!, view.hosts.get(host), host) : undefined;
    if (old) this.#unuse(old);
    if (route) {
      if (route.dst) this.#neighbours.add(route.dst, route.dst);
      if (route.tunnel) this.#tunnels.add(route.tunnel.name, route.tunnel);
      part.routes.set(host, route);
    } else part.routes.delete(host);
    if (!old !== !route || old?.action !== route?.action) {
      for (const key of [...part.targets.get(host) ?? []]) {
        if (part.winners.has(key)) this.#unicast(part, key);
        else this.#steer(part, key);
      }
      return true;
    }
    return false;
  }

  /** How to reach host `name` (its registration `h`) in network `net`. */
  #route(net: Network, h: HostRecord | undefined, name: string): Route {
    const t = h?.tunnels.find((t) => t.protocol === net.protocol);
    const dst = h?.underlay.find((a) => this.#families.has(parseAddr(a).v6));
    if (!h) {
      return {
        problem: this.#problem(`host ${name} has endpoints in ${net.name} but is not registered`),
      };
    }
    if (!t) {
      return {
        problem: this.#problem(`host ${name} does not accept ${net.protocol} for ${net.name}`),
      };
    }
    if (!dst) {
      return {
        problem: this.#problem(`host ${name} has no underlay address of this host's families`),
      };
    }
    const action = `set_tunnel(id=${net.vni},dst=${dst}),output:${tunnelName(t)}`;
    return {
      action,
      bucket: `bucket=${action}`,
      dst,
      tunnel: tunnelPort(t),
    };
  }

  /** A route no longer taken: its neighbour entry and tunnel port lose a holder. */
  #unuse(r: Route): void {
    if (r.dst) this.#neighbours.remove(r.dst);
    if (r.tunnel) this.#tunnels.remove(r.tunnel.name);
  }

  /**
   * Brings MAC `mac`'s winner and flow up to date; the IPs whose owners may
   * have changed go to `ips`.
   */
  #claim(part: Part, view: FleetView, mac: string, ips: Set<string>): void {
    const w = this.#winner(part, view.claims.get(part.name)?.get(mac), mac);
    const old = part.winners.get(mac);
    if (!sameClaim(old, w)) {
      if (old) part.ips.remove(old, ips);
      if (w) {
        part.ips.add(w, ips);
        part.winners.set(mac, w);
      } else part.winners.delete(mac);
    }
    this.#unicast(part, mac);
  }

  /**
   * The winning claim of `mac` among `claims` (newest first), with this
   * host's configuration as the truth about itself.
   */
  #winner(part: Part, claims: readonly Claim[] | undefined, mac: string): Claim | undefined {
    const self = this.#self.host;
    const other = claims?.find((c) => c.host !== self);
    const port = part.localByMac.get(mac);
    if (!port) return other;
    // Not yet published: about to be, so it is the newest claim.
    const createRevision = claims?.find((c) => c.host === self)?.createRevision ??
      Number.MAX_SAFE_INTEGER;
    const own: Claim = {
      net: port.net,
      host: self,
      mac,
      ips: port.ips,
      createRevision,
      modRevision: createRevision,
    };
    return other && newestFirst(other, own) < 0 ? other : own;
  }

  /** The action that sends to `host`, or to this host's port of `mac`. */
  #action(part: Part, host: string, mac: string): string | undefined {
    return host === this.#self.host
      ? `output:${part.localByMac.get(mac)!.name}`
      : part.routes.get(host)?.action;
  }

  /** Brings MAC `mac`'s unicast (or delivery) flow up to date. */
  #unicast(part: Part, mac: string): void {
    const w = part.winners.get(mac);
    const action = w && this.#action(part, w.host, mac);
    part.flows.set(
      mac,
      action && `priority=${PRIORITY.unicast},net=${part.net!.vni},dl_dst=${mac} actions=${action}`,
    );
    this.#target(part, mac, w?.host);
  }

  /** Brings the ARP steering of IP `ip` up to date (IPv4 only: ARP has no IPv6). */
  #steer(part: Part, ip: string): void {
    if (parseAddr(ip).v6) return;
    const w = part.ips.owner(ip);
    const action = w && this.#action(part, w.host, w.mac);
    part.flows.set(
      ip,
      action &&
        `priority=${PRIORITY.arp},net=${
          part.net!.vni
        },arp,arp_op=1,arp_tpa=${ip} actions=${action}`,
    );
    this.#target(part, ip, w?.host);
  }

  /** Records which remote host flow `key` sends to (none for this host). */
  #target(part: Part, key: string, host: string | undefined): void {
    const remote = host === this.#self.host ? undefined : host;
    const old = part.targetOf.get(key);
    if (old === remote) return;
    if (old) {
      const keys = part.targets.get(old)!;
      keys.delete(key);
      if (!keys.size) part.targets.delete(old);
    }
    if (remote) {
      part.targetOf.set(key, remote);
      entryIn(part.targets, remote, () => new Set()).add(key);
    } else part.targetOf.delete(key);
  }

  /** Builds the network's replication group again: a bucket per local port and reachable member. */
  #regroup(part: Part): void {
    const buckets = part.local.map((p) => `bucket=output:${p.name}`).sort();
    for (const host of [...part.routes.keys()].sort()) {
      const bucket = part.routes.get(host)!.bucket;
      if (bucket) buckets.push(bucket);
    }
    part.group.set("", { id: part.net!.vni, buckets });
  }
}

/**
 * A replication group: kept as its buckets, and made text only when it is
 * handed on. A network of a thousand hosts has a group of tens of KiB; a
 * join changes one bucket, and keeping the text would leave the old one
 * behind as garbage on every change.
 */
interface Group {
  id: number;
  buckets: readonly string[];
}

/** A group in group syntax. */
function groupText(g: Group): string {
  return `group_id=${g.id},type=all,${g.buckets.join(",")}`;
}

/** Whether two groups are one. */
function sameGroup(a: Group, b: Group): boolean {
  return a.id === b.id && a.buckets.length === b.buckets.length &&
    a.buckets.every((x, i) => x === b.buckets[i]);
}

/** Whether two claims of one MAC are the same for the derivation: same host, age and IPs. */
function sameClaim(a: Claim | undefined, b: Claim | undefined): boolean {
  if (a === b) return true;
  return !!a && !!b && a.host === b.host && a.createRevision === b.createRevision &&
    a.ips.length === b.ips.length && a.ips.every((ip, i) => ip === b.ips[i]);
}

/** Whether two port entries are one. */
function samePort(a: NetPort, b: NetPort): boolean {
  return a.name === b.name && a.device === b.device && a.net === b.net && a.xdp === b.xdp;
}
