/**
 * The fleet as etcd describes it, in validated, typed form: networks,
 * hosts, and every claim of a MAC in a network. It is fed the mirror's
 * changes and decodes each key once per revision; a value that fails
 * validation is logged once and left out, as if it were not there. Each
 * change costs what it touches (one claim list, one IP's holders, one
 * VNI's networks), never a pass over the fleet, and says what it changed
 * ({@link ViewChange}) so that the derivation can follow it as cheaply.
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
import { type ParsedKey, parseKey } from "./keys.ts";
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

/**
 * The validated fleet. A view is live: its maps are the state's own and
 * change with the state's next `apply`, so a reader that keeps one across
 * changes sees them.
 */
export interface FleetView {
  /** Networks by name (VNI conflicts resolved). */
  networks: ReadonlyMap<string, Network>;
  /** Registered hosts by name. */
  hosts: ReadonlyMap<string, HostRecord>;
  /** Per network, per MAC, its claims, the winner first. */
  claims: ReadonlyMap<string, ReadonlyMap<string, readonly Claim[]>>;
  /** Per network, every host with claims in it and how many it has. */
  members: ReadonlyMap<string, ReadonlyMap<string, number>>;
  /** Conflicts the rules resolved, ordered by kind (vni, mac, ip), scope and what. */
  conflicts: readonly Conflict[];
  /** Keys skipped because their value is invalid, with the reason. */
  invalid: ReadonlyMap<string, string>;
}

/**
 * What batches of changes changed in the view: what an incremental reader
 * (the derivation) must look at again, and nothing else. It accumulates
 * over batches until the reader clears it.
 */
export class ViewChange {
  /** Networks defined, redefined or undefined (a VNI conflict won or lost included). */
  readonly networks = new Set<string>();
  /** Hosts whose registration appeared, changed or went. */
  readonly hosts = new Set<string>();
  /** Per network, the MACs whose claims changed. */
  readonly macs = new Map<string, Set<string>>();
  /** Per network, the hosts that started or stopped claiming anything in it. */
  readonly members = new Map<string, Set<string>>();

  /** Whether nothing changed. */
  get empty(): boolean {
    return !this.networks.size && !this.hosts.size && !this.macs.size && !this.members.size;
  }

  /** Forgets everything, once the reader has looked. */
  clear(): void {
    this.networks.clear();
    this.hosts.clear();
    this.macs.clear();
    this.members.clear();
  }
}

/** A network's definition, with the revision that orders claims of its VNI. */
type NetworkClaim = { rec: Network; createRevision: number };

/** Plain code-unit order, the same in every locale. */
const byText = (a: string, b: string) => a < b ? -1 : a > b ? 1 : 0;

/**
 * Newest first: the winner of a claim comes first. Claims made in one
 * transaction share a revision; they are ordered by host, then MAC, so the
 * order never depends on the order the changes came in.
 */
export function newestFirst(a: Claim, b: Claim): number {
  return b.createRevision - a.createRevision || byText(a.host, b.host) || byText(a.mac, b.mac);
}

/** Oldest first, then by name: the order in which networks hold a VNI. */
const oldestNetwork = (a: NetworkClaim, b: NetworkClaim) =>
  a.createRevision - b.createRevision || byText(a.rec.name, b.rec.name);

/**
 * Adds `item` to the list of `key` in `map`, kept sorted by `order`; returns
 * the list. Lists here hold a few items, most of them one: a new list is
 * made to measure.
 */
function insertInto<K, T>(map: Map<K, T[]>, key: K, item: T, order: (a: T, b: T) => number): T[] {
  const list = map.get(key);
  if (!list) {
    const made = [item];
    map.set(key, made);
    return made;
  }
  let i = list.length;
  while (i > 0 && order(list[i - 1], item) > 0) i--;
  list.splice(i, 0, item);
  return list;
}

/** Removes `item` (by identity) from `list`; whether it was there. */
function removeItem<T>(list: T[], item: T): boolean {
  const i = list.indexOf(item);
  if (i >= 0) list.splice(i, 1);
  return i >= 0;
}

/** The value of `key` in `map`, made with `make` when missing. */
export function entryIn<K, V>(map: Map<K, V>, key: K, make: () => V): V {
  let v = map.get(key);
  if (v === undefined) map.set(key, v = make());
  return v;
}

/** Adds `item` to the set of `key` in `map`. */
function addTo(map: Map<string, Set<string>>, key: string, item: string): void {
  entryIn(map, key, () => new Set()).add(item);
}

/**
 * IpClaims holds, for each IP of one network, the claims holding it,
 * newest first: the first owns the IP. Only MACs' winning claims go in,
 * so an IP follows its MAC's winner. An IP held once (nearly every one)
 * is kept as its claim alone, not a list.
 */
export class IpClaims {
  #byIp = new Map<string, Claim | Claim[]>();

  /** How many IPs it holds. */
  get size(): number {
    return this.#byIp.size;
  }

  /** The claim that owns `ip`. */
  owner(ip: string): Claim | undefined {
    const held = this.#byIp.get(ip);
    return Array.isArray(held) ? held[0] : held;
  }

  /** The claims holding `ip`, the owner first. */
  claims(ip: string): readonly Claim[] {
    const held = this.#byIp.get(ip);
    return Array.isArray(held) ? held : held ? [held] : [];
  }

  /** Adds a MAC's winning claim, noting each of its IPs in `touched`. */
  add(c: Claim, touched?: Set<string>): void {
    for (const ip of c.ips) {
      const held = this.#byIp.get(ip);
      if (!held) this.#byIp.set(ip, c);
      else if (Array.isArray(held)) {
        insertInto(this.#byIp as Map<string, Claim[]>, ip, c, newestFirst);
      } else this.#byIp.set(ip, [held, c].sort(newestFirst));
      touched?.add(ip);
    }
  }

  /** Removes a claim added before, noting each of its IPs in `touched`. */
  remove(c: Claim, touched?: Set<string>): void {
    for (const ip of c.ips) {
      const held = this.#byIp.get(ip);
      if (held === c) this.#byIp.delete(ip);
      else if (!Array.isArray(held) || !removeItem(held, c)) continue;
      else if (held.length === 1) this.#byIp.set(ip, held[0]);
      touched?.add(ip);
    }
  }
}

/**
 * FleetState holds the decoded fleet and keeps its view up to date change
 * by change: a change costs what it touches (a claim list, an IP's owners,
 * a VNI's holders), never a pass over the whole fleet.
 */
export class FleetState {
  #invalid = new Map<string, string>();
  #log: OnceLog;
  /** Each network key's definition, by name, whether or not it holds its VNI. */
  #defined = new Map<string, NetworkClaim>();
  #byVni = new Map<number, NetworkClaim[]>();
  #networks = new Map<string, Network>();
  #hosts = new Map<string, HostRecord>();
  #claims = new Map<string, Map<string, Claim[]>>();
  #members = new Map<string, Map<string, number>>();
  #ips = new Map<string, IpClaims>();
  #conflicts = new Map<string, Conflict>();
  #conflictList?: Conflict[];
  /** What the batch being applied touched, to look at its conflicts once it is in. */
  #touched = {
    vnis: new Set<number>(),
    macs: new Map<string, Set<string>>(),
    ips: new Map<string, Set<string>>(),
  };

  /** Creates an empty state; bad values and conflicts are reported through `log`. */
  constructor(log: OnceLog) {
    this.#log = log;
  }

  /**
   * Applies a batch of mirror changes; returns `into` (a fresh
   * {@link ViewChange} by default) with what they changed added to it.
   */
  apply(changes: readonly Change[], into: ViewChange = new ViewChange()): ViewChange {
    for (const c of changes) {
      this.#invalid.delete(c.key);
      // Keys of other layouts or versions are not ours to judge.
      const k = parseKey(c.key);
      if (k) this.#change(k, c.key, c.next, into);
    }
    this.#settleConflicts();
    return into;
  }

  /** The fleet as it stands, conflicts resolved: a live view. */
  view(): FleetView {
    this.#conflictList ??= [...this.#conflicts.values()].sort((a, b) =>
      KIND_ORDER[a.kind] - KIND_ORDER[b.kind] || byText(a.scope, b.scope) ||
      byText(a.what, b.what)
    );
    return {
      networks: this.#networks,
      hosts: this.#hosts,
      claims: this.#claims,
      members: this.#members,
      conflicts: this.#conflictList,
      invalid: this.#invalid,
    };
  }

  /**
   * Replaces what key `key` (parsed: `k`) put in the view by what `next`
   * puts there. The key says where its value lives in the view, so no
   * other record of it is kept.
   */
  #change(k: ParsedKey, key: string, next: Entry | undefined, into: ViewChange): void {
    switch (k.kind) {
      case "network": {
        const old = this.#defined.get(k.net);
        if (old) this.#undefine(old, into);
        const rec = next && this.#valid(next, () => decodeNetwork(key, k.net, next.value));
        if (rec) this.#define({ rec, createRevision: next.createRevision }, into);
        break;
      }
      case "host": {
        if (this.#hosts.delete(k.host)) into.hosts.add(k.host);
        const rec = next && this.#valid(next, () => decodeHost(key, k.host, next.value));
        if (rec) {
          this.#hosts.set(rec.name, rec);
          into.hosts.add(rec.name);
        }
        break;
      }
      case "endpoint": {
        const old = this.#claims.get(k.net)?.get(k.mac)?.find((c) => c.host === k.host);
        if (old) this.#removeClaim(old, into);
        const ep = next &&
          this.#valid(next, () => decodeEndpoint(key, k.net, k.host, k.mac, next.value));
        if (ep) {
          this.#addClaim({
            // One string per network and host, not one per claim.
            net: this.#defined.get(ep.net)?.rec.name ?? ep.net,
            host: this.#hosts.get(ep.host)?.name ?? ep.host,
            mac: ep.mac,
            ips: ep.ips,
            createRevision: next.createRevision,
            modRevision: next.modRevision,
          }, into);
        }
        break;
      }
      case "vni":
        // Only checked: the network's own key says which VNI it has.
        if (next) this.#valid(next, () => decodeVniClaim(key, k.vni, next.value));
        break;
    }
  }

  /** What `decode` makes of `e`, or undefined (logged once) if it is invalid. */
  #valid<T>(e: Entry, decode: () => T): T | undefined {
    try {
      return decode();
    } catch (err) {
      if (!(err instanceof ValueError)) throw err;
      this.#invalid.set(e.key, err.message);
      this.#log.once(`${e.key}@${e.modRevision}`, `skipping ${err.message}`);
      return undefined;
    }
  }

  #define(n: NetworkClaim, into: ViewChange): void {
    this.#defined.set(n.rec.name, n);
    insertInto(this.#byVni, n.rec.vni, n, oldestNetwork);
    this.#settleVni(n.rec.vni, into);
  }

  #undefine(n: NetworkClaim, into: ViewChange): void {
    this.#defined.delete(n.rec.name);
    this.#setNetwork(n.rec.name, undefined, into);
    const list = this.#byVni.get(n.rec.vni)!;
    removeItem(list, n);
    if (!list.length) this.#byVni.delete(n.rec.vni);
    this.#settleVni(n.rec.vni, into);
  }

  /** Gives VNI `vni` to its oldest network, and takes it from the others. */
  #settleVni(vni: number, into: ViewChange): void {
    this.#touched.vnis.add(vni);
    this.#byVni.get(vni)?.forEach((n, i) =>
      this.#setNetwork(n.rec.name, i ? undefined : n.rec, into)
    );
  }

  #setNetwork(name: string, rec: Network | undefined, into: ViewChange): void {
    if (this.#networks.get(name) === rec) return;
    if (rec) this.#networks.set(name, rec);
    else this.#networks.delete(name);
    into.networks.add(name);
  }

  #addClaim(c: Claim, into: ViewChange): void {
    const perNet = entryIn(this.#claims, c.net, () => new Map<string, Claim[]>());
    const before = perNet.get(c.mac)?.[0];
    this.#rewin(c.net, before, insertInto(perNet, c.mac, c, newestFirst)[0]);
    const members = entryIn(this.#members, c.net, () => new Map());
    const n = members.get(c.host) ?? 0;
    members.set(c.host, n + 1);
    if (!n) addTo(into.members, c.net, c.host);
    addTo(into.macs, c.net, c.mac);
    addTo(this.#touched.macs, c.net, c.mac);
  }

  #removeClaim(c: Claim, into: ViewChange): void {
    const perNet = this.#claims.get(c.net)!;
    const list = perNet.get(c.mac)!;
    const before = list[0];
    removeItem(list, c);
    if (!list.length) perNet.delete(c.mac);
    if (!perNet.size) this.#claims.delete(c.net);
    this.#rewin(c.net, before, list[0]);
    const members = this.#members.get(c.net)!;
    const n = members.get(c.host)! - 1;
    if (n) members.set(c.host, n);
    else {
      members.delete(c.host);
      if (!members.size) this.#members.delete(c.net);
      addTo(into.members, c.net, c.host);
    }
    addTo(into.macs, c.net, c.mac);
    addTo(this.#touched.macs, c.net, c.mac);
  }

  /** A MAC's winner changed from `before` to `after`: its IPs follow. */
  #rewin(net: string, before: Claim | undefined, after: Claim | undefined): void {
    if (before === after) return;
    const ips = entryIn(this.#ips, net, () => new IpClaims());
    const touched = entryIn(this.#touched.ips, net, () => new Set());
    if (before) ips.remove(before, touched);
    if (after) ips.add(after, touched);
    if (!ips.size) this.#ips.delete(net);
  }

  /** Records (and logs, once) the conflicts among what the batch touched. */
  #settleConflicts(): void {
    const t = this.#touched;
    for (const vni of t.vnis) {
      const list = this.#byVni.get(vni) ?? [];
      this.#conflict("vni", String(vni), String(vni), list.map((n) => n.rec.name));
    }
    for (const [net, macs] of t.macs) {
      const perNet = this.#claims.get(net);
      for (const mac of macs) {
        this.#conflict("mac", net, mac, (perNet?.get(mac) ?? []).map((c) => c.host));
      }
    }
    for (const [net, ips] of t.ips) {
      const held = this.#ips.get(net);
      for (const ip of ips) {
        this.#conflict("ip", net, ip, (held?.claims(ip) ?? []).map((c) => c.mac));
      }
    }
    t.vnis.clear();
    t.macs.clear();
    t.ips.clear();
  }

  /** Records whether `what` is claimed by more than one of `claimants`, the winner first. */
  #conflict(kind: Conflict["kind"], scope: string, what: string, claimants: string[]): void {
    const id = `${kind} ${scope} ${what}`;
    const had = this.#conflicts.get(id);
    if (claimants.length < 2) {
      if (had) {
        this.#conflicts.delete(id);
        this.#conflictList = undefined;
      }
      return;
    }
    const [winner, ...losers] = claimants;
    if (had?.winner === winner && had.losers.join() === losers.join()) return;
    const c: Conflict = { kind, scope, what, winner, losers };
    this.#conflicts.set(id, c);
    this.#conflictList = undefined;
    this.#log.once(
      `conflict ${kind} ${scope} ${what} ${winner} ${losers}`,
      `${kind} ${what} is claimed more than once${
        kind === "vni" ? "" : ` in network ${scope}`
      }: ${winner} wins over ${losers.join(", ")}`,
    );
  }
}

/** The order conflicts are listed in. */
const KIND_ORDER = { vni: 0, mac: 1, ip: 2 } as const;
