/**
 * The fleet as etcd describes it, in validated, typed form: networks,
 * hosts, and every claim of a MAC in a network. It is fed the mirror's
 * changes and decodes each key once per revision; a value that fails
 * validation is logged once and left out, as if it were not there.
 *
 * Conflicts are resolved by rules every host applies to the same data, so
 * every host reaches the same answer without talking to the others:
 *
 * - **A MAC claimed by two hosts in one network**: the newest claim (the
 *   higher create revision, etcd's global order of key creations) wins. A
 *   workload that moves from host A to host B is claimed by B after A, so
 *   B wins at once, whether or not A has withdrawn yet. Rewriting a claim's
 *   value (its addresses) does not make it newer, so two claims never flap.
 *   Every claim stays visible, and duplicates are reported.
 * - **An IP claimed by two MACs in one network**: the newest claim wins, for
 *   the ARP steering that uses it; also reported.
 * - **Two networks with one VNI** (possible only by writing etcd around
 *   `fleet net add`): the older network keeps it, the newer is skipped and
 *   reported.
 *
 * @module
 */

import type { Entry } from "./client.ts";
import { parseKey } from "./keys.ts";
import type { OnceLog } from "./log.ts";
import type { Change } from "./mirror.ts";
import {
  decodeEndpoint,
  decodeHost,
  decodeNetwork,
  decodeVniClaim,
  type Endpoint,
  type HostRecord,
  type Network,
  ValueError,
} from "./validate.ts";

/** An endpoint with the revisions that order claims. */
export interface Claim extends Endpoint {
  /** When the claim was made. */
  createRevision: number;
  /** When it last changed. */
  modRevision: number;
}

/** A conflict the rules resolved, for logs and `fleet endpoints`. */
export interface Conflict {
  /** What is claimed twice: `mac`, `ip` or `vni`. */
  kind: "mac" | "ip" | "vni";
  /** The network (for mac and ip) or the VNI. */
  scope: string;
  /** The MAC, IP or VNI. */
  what: string;
  /** Who won (host, MAC or network). */
  winner: string;
  /** Who lost. */
  losers: string[];
}

/** The validated fleet. */
export interface FleetView {
  /** Networks by name (VNI conflicts resolved). */
  networks: ReadonlyMap<string, Network>;
  /** Registered hosts by name. */
  hosts: ReadonlyMap<string, HostRecord>;
  /** Per network, per MAC, its claims, the winner first. */
  claims: ReadonlyMap<string, ReadonlyMap<string, readonly Claim[]>>;
  /** Per network, per IP, the winning claim that holds it. */
  ips: ReadonlyMap<string, ReadonlyMap<string, Claim>>;
  /** Conflicts resolved while building this view. */
  conflicts: readonly Conflict[];
  /** Keys skipped because their value is invalid, with the reason. */
  invalid: ReadonlyMap<string, string>;
}

type Decoded =
  | { kind: "network"; rec: Network; createRevision: number }
  | { kind: "host"; rec: HostRecord }
  | { kind: "endpoint"; rec: Claim }
  | { kind: "vni" };

/** Newest first: the winner of a claim comes first. */
const newestFirst = (a: { createRevision: number }, b: { createRevision: number }) =>
  b.createRevision - a.createRevision;

/** FleetState holds the decoded fleet and builds views of it. */
export class FleetState {
  #decoded = new Map<string, Decoded>();
  #invalid = new Map<string, string>();
  #log: OnceLog;
  #view?: FleetView;

  /** Creates an empty state; bad values are reported through `log`. */
  constructor(log: OnceLog) {
    this.#log = log;
  }

  /** Applies a batch of mirror changes. */
  apply(changes: readonly Change[]): void {
    for (const c of changes) {
      this.#decoded.delete(c.key);
      this.#invalid.delete(c.key);
      if (c.next) this.#decode(c.next);
    }
    this.#view = undefined;
  }

  #decode(e: Entry): void {
    const k = parseKey(e.key);
    // Keys of other layouts or versions are not ours to judge.
    if (!k) return;
    try {
      switch (k.kind) {
        case "network":
          this.#decoded.set(e.key, {
            kind: "network",
            rec: decodeNetwork(e.key, k.net, e.value),
            createRevision: e.createRevision,
          });
          break;
        case "host":
          this.#decoded.set(e.key, { kind: "host", rec: decodeHost(e.key, k.host, e.value) });
          break;
        case "endpoint": {
          const ep = decodeEndpoint(e.key, k.net, k.host, k.mac, e.value);
          const rec = { ...ep, createRevision: e.createRevision, modRevision: e.modRevision };
          this.#decoded.set(e.key, { kind: "endpoint", rec });
          break;
        }
        case "vni":
          decodeVniClaim(e.key, k.vni, e.value);
          this.#decoded.set(e.key, { kind: "vni" });
          break;
      }
    } catch (err) {
      if (!(err instanceof ValueError)) throw err;
      this.#invalid.set(e.key, err.message);
      this.#log.once(`${e.key}@${e.modRevision}`, `skipping ${err.message}`);
    }
  }

  /** The fleet as it stands, conflicts resolved (cached until the next change). */
  view(): FleetView {
    return this.#view ??= this.#build();
  }

  #build(): FleetView {
    const conflicts: Conflict[] = [];
    const byVni = new Map<number, { rec: Network; createRevision: number }[]>();
    const hosts = new Map<string, HostRecord>();
    const claims = new Map<string, Map<string, Claim[]>>();
    for (const d of this.#decoded.values()) {
      if (d.kind === "network") {
        const list = byVni.get(d.rec.vni) ?? [];
        list.push(d);
        byVni.set(d.rec.vni, list);
      } else if (d.kind === "host") {
        hosts.set(d.rec.name, d.rec);
      } else if (d.kind === "endpoint") {
        const perNet = claims.get(d.rec.net) ?? new Map<string, Claim[]>();
        claims.set(d.rec.net, perNet);
        const list = perNet.get(d.rec.mac) ?? [];
        list.push(d.rec);
        perNet.set(d.rec.mac, list);
      }
    }
    const networks = new Map<string, Network>();
    for (const [vni, list] of byVni) {
      // The older network keeps a VNI claimed twice.
      list.sort((a, b) => a.createRevision - b.createRevision);
      networks.set(list[0].rec.name, list[0].rec);
      if (list.length > 1) {
        conflicts.push({
          kind: "vni",
          scope: String(vni),
          what: String(vni),
          winner: list[0].rec.name,
          losers: list.slice(1).map((n) => n.rec.name),
        });
      }
    }
    const ips = new Map<string, Map<string, Claim>>();
    for (const [net, perNet] of claims) {
      for (const [mac, list] of perNet) {
        list.sort(newestFirst);
        if (list.length > 1) {
          conflicts.push({
            kind: "mac",
            scope: net,
            what: mac,
            winner: list[0].host,
            losers: list.slice(1).map((c) => c.host),
          });
        }
      }
      ips.set(net, ipOwners(net, perNet, conflicts));
    }
    for (const c of conflicts) {
      this.#log.once(
        `conflict ${c.kind} ${c.scope} ${c.what} ${c.winner} ${c.losers}`,
        `${c.kind} ${c.what} is claimed more than once${
          c.kind === "vni" ? "" : ` in network ${c.scope}`
        }: ${c.winner} wins over ${c.losers.join(", ")}`,
      );
    }
    return { networks, hosts, claims, ips, conflicts, invalid: new Map(this.#invalid) };
  }
}

/**
 * The winning claim of each IP in one network: the newest claim among the
 * winning MACs' claims (each list in `perNet` newest first). Conflicts go
 * to `conflicts` when given.
 */
export function ipOwners(
  net: string,
  perNet: ReadonlyMap<string, readonly Claim[]>,
  conflicts?: Conflict[],
): Map<string, Claim> {
  const byIp = new Map<string, Claim[]>();
  for (const list of perNet.values()) {
    const winner = list[0];
    for (const ip of winner.ips) {
      const l = byIp.get(ip) ?? [];
      l.push(winner);
      byIp.set(ip, l);
    }
  }
  const out = new Map<string, Claim>();
  for (const [ip, list] of byIp) {
    list.sort(newestFirst);
    out.set(ip, list[0]);
    if (list.length > 1) {
      conflicts?.push({
        kind: "ip",
        scope: net,
        what: ip,
        winner: list[0].mac,
        losers: list.slice(1).map((c) => c.mac),
      });
    }
  }
  return out;
}
