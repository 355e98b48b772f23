/**
 * The port registry: adding, changing and deleting ports, and everything
 * a port owns outside its own slot of `wr_ports`.
 *
 * A local port owns its device's `wr_ifindex_ports` entry and the local
 * program's attachment there. A tunnel port owns its endpoints
 * (`wr_endpoints`: a local address, protocol and port, which the
 * underlay programs accept tunnel packets on) and, with a fixed remote,
 * its `wr_remotes` entry; it may share an endpoint with others. Ports that
 * use Geneve make the options flows match on count as understood.
 *
 * A port's own entry is written last: until it exists the rest is inert,
 * and a writer that dies before it leaves a port that does not exist yet,
 * which adding it again completes once the stale references it left at
 * its endpoints are dropped. Every change takes the lock, reads the ports
 * again if someone changed them, and counts itself in the change counter.
 *
 * @module
 */

import {
  ConfigFlag,
  type Endpoint,
  type EndpointKey,
  MAX_PORTS,
  PortKind,
} from "../../maps/layouts.ts";
import { formatAddr } from "../addr.ts";
import { attachTcRecorded, detachDevice } from "../attach.ts";
import { failpoint } from "../failpoint.ts";
import type { FlowTable } from "../flow_table.ts";
import type { ActionSpec } from "../flow_actions.ts";
import { device, keepNeighbors } from "../host.ts";
import type { DatapathMaps } from "../pins.ts";
import {
  checkPortName,
  encodePort,
  ipProtoOf,
  type LocalPort,
  parseNet,
  type Port,
  PortError,
  protoNumber,
  type TunnelPort,
  tunnelPort,
} from "../port.ts";
import type { Changes } from "./changes.ts";
import { dropGsoDevices, ensureGsoDevice } from "./gso_devices.ts";
import { localIps } from "./endpoints.ts";
import { pinnedProgram } from "./object.ts";
import type { PortList } from "./port_list.ts";
import { underlayName } from "./underlay.ts";

/**
 * A port as `upsert` takes it: a local device, or a tunnel's protocol and
 * options. `number` is the number a new port takes if it is free (a
 * migration keeps every port's); the lowest free one otherwise.
 */
export type PortSpec = {
  kind: "local";
  name: string;
  device: string;
  xdp?: boolean;
  net?: number;
  number?: number;
} | {
  kind: "tunnel";
  name: string;
  proto: string;
  options: Record<string, string>;
  number?: number;
};

/** PortRegistry writes ports. */
export class PortRegistry {
  readonly #pinDir: string;
  readonly #maps: DatapathMaps;
  readonly #ports: PortList;
  readonly #changes: Changes;
  readonly #flows: FlowTable;
  readonly #attach: boolean;

  /**
   * Writes the ports of the datapath at `pinDir`, known through `ports`.
   * Without `attach` (a datapath built aside, whose programs are swapped
   * into the live attachments later) local ports are written but not
   * attached.
   */
  constructor(
    pinDir: string,
    maps: DatapathMaps,
    ports: PortList,
    changes: Changes,
    flows: FlowTable,
    attach = true,
  ) {
    this.#pinDir = pinDir;
    this.#maps = maps;
    this.#ports = ports;
    this.#changes = changes;
    this.#flows = flows;
    this.#attach = attach;
  }

  /**
   * Adds a local port on `deviceName` and attaches the local program to
   * its ingress. `xdp` says its peer takes XDP redirects; `net` is the
   * network it stamps on what it receives.
   */
  async addLocal(
    name: string,
    deviceName: string,
    options: { xdp?: boolean; net?: number } = {},
  ): Promise<LocalPort> {
    const dev = await device(deviceName);
    using _lock = this.#changes.begin();
    this.#checkNewName(name);
    const port: LocalPort = {
      kind: "local",
      name,
      number: this.#freeNumber(),
      device: dev.name,
      xdp: options.xdp ?? false,
      net: localNet(name, options.net),
    };
    this.#writeLocal(port, dev.ifindex);
    this.#changed();
    return port;
  }

  /** Adds a tunnel port of `proto` with Open vSwitch-style `options`. */
  async addTunnel(
    name: string,
    proto: string,
    options: Record<string, string>,
  ): Promise<TunnelPort> {
    const dev = await device(underlayName(this.#maps.config));
    const spec = tunnelPort(name, proto, dev.name, options);
    using _lock = this.#changes.begin();
    this.#checkNewName(name);
    const port: TunnelPort = { ...spec, number: this.#freeNumber() };
    this.#writeTunnel(port, dev.ifindex, dev.mac);
    this.#changed();
    if (port.remote !== "flow") await keepNeighbors(dev.name, [port.remote]);
    return port;
  }

  /**
   * Makes port `port.name` exactly `port` (added if new), keeping its
   * number so the flows that name it stay valid. Returns what it did.
   */
  async upsert(port: PortSpec): Promise<"added" | "changed" | "unchanged"> {
    const dev = await device(
      port.kind === "local" ? port.device : underlayName(this.#maps.config),
    );
    const wanted: Omit<LocalPort, "number"> | Omit<TunnelPort, "number"> = port.kind === "local"
      ? {
        kind: "local",
        name: port.name,
        device: dev.name,
        xdp: port.xdp ?? false,
        net: localNet(port.name, port.net),
      }
      : tunnelPort(port.name, port.proto, dev.name, port.options);
    using _lock = this.#changes.begin();
    const old = this.#ports.byName(port.name);
    if (old && samePort(old, wanted)) return "unchanged";
    if (!old) this.#checkNewName(port.name);
    const full = { ...wanted, number: old?.number ?? this.#freeNumber(port.number) } as Port;
    if (old) this.#unwrite(old);
    if (full.kind === "local") this.#writeLocal(full, dev.ifindex);
    else this.#writeTunnel(full, dev.ifindex, dev.mac);
    this.#changed();
    if (full.kind === "tunnel" && full.remote !== "flow") {
      await keepNeighbors(dev.name, [full.remote]);
    }
    return old ? "changed" : "added";
  }

  /**
   * Deletes port `name`. Refuses while flows or groups use it, unless
   * `force`, which deletes those flows and drops its buckets from those
   * groups.
   */
  remove(name: string, options: { force?: boolean } = {}): void {
    using _lock = this.#changes.begin();
    const port = this.#ports.byName(name);
    if (!port) throw new PortError(`there is no port named "${name}"`);
    const users = this.#flows.count({ port: port.number });
    const sendsHere = (b: ActionSpec[]) => b.some((a) => a.type === "output" && a.port === name);
    const groups = this.#flows.groups().filter((g) => g.buckets.some(sendsHere));
    if ((users || groups.length) && !options.force) {
      const who = [
        ...users ? [`${users} flow(s)`] : [],
        ...groups.length ? [`group(s) ${groups.map((g) => g.id).join(", ")}`] : [],
      ];
      throw new PortError(
        `${who.join(" and ")} use port ${name}; delete ${
          groups.length ? "or change " : ""
        }them first, or use --force`,
      );
    }
    if (users) this.#flows.delete({ port: port.number }, false);
    // Each owner's groups change as that owner's.
    for (const owner of new Set(groups.map((g) => g.owner))) {
      const kept = groups.filter((g) => g.owner === owner).map((g) => ({
        id: g.id,
        buckets: g.buckets.filter((b) => !sendsHere(b)),
      }));
      this.#flows.setGroups(kept, "modify", owner);
    }
    this.#unwrite(port);
    const entry = this.#maps.ports.get(port.number)!;
    this.#maps.ports.set(port.number, { ...entry, kind: PortKind.NONE, flags: 0 });
    this.#maps.portInfo.set(port.number, { name: new Uint8Array(16), device: new Uint8Array(16) });
    this.#changed();
  }

  /**
   * The Geneve options flows match on count as understood (RFC 8926): a
   * critical option some flow matches is not dropped as unknown. `changed`
   * says whether the flows may have changed that set.
   */
  learnGeneve(changed: boolean): void {
    if (!changed || !this.#ports.all().some((p) => p.kind === "tunnel" && p.proto === "geneve")) {
      return;
    }
    const known = this.#flows.geneveOptions();
    const map = this.#maps.geneveKnown;
    for (const k of map.keys()) if (!known.has(k)) map.delete(k);
    for (const k of known) map.set(k, 1);
  }

  /**
   * After writing ports: marks the change for everyone, re-reads them and
   * deletes the GSO devices no VXLAN port uses any more.
   */
  #changed(): void {
    this.#flows.invalidate();
    this.#changes.bump();
    dropGsoDevices(
      this.#pinDir,
      new Set(
        this.#ports.all().flatMap((p) =>
          p.kind === "tunnel" && p.proto === "vxlan" ? [p.dstPort] : []
        ),
      ),
    );
  }

  #freeNumber(wanted?: number): number {
    if (wanted !== undefined && wanted > 0 && wanted < MAX_PORTS && !this.#ports.byNumber(wanted)) {
      return wanted;
    }
    for (let n = 1; n < MAX_PORTS; n++) if (!this.#ports.byNumber(n)) return n;
    throw new PortError(`all ${MAX_PORTS - 1} port numbers are taken`);
  }

  #checkNewName(name: string): void {
    checkPortName(name);
    if (this.#ports.byName(name)) throw new PortError(`a port named "${name}" exists already`);
  }

  #writeLocal(port: LocalPort, ifindex: number): void {
    if (
      this.#ports.all().some((p) =>
        p.kind === "local" && p.device === port.device && p.number !== port.number
      )
    ) {
      throw new PortError(`${port.device} is already a port`);
    }
    const cfg = this.#maps.config.read();
    if (ifindex === cfg.underlay_ifindex) {
      throw new PortError(`${port.device} is the underlay; it cannot be a local port`);
    }
    // Until the entry exists, a frame of the device classifies under a
    // port no flow names.
    const { entry, info } = encodePort(port, { ifindex });
    this.#maps.portInfo.set(port.number, info);
    if (this.#attach) {
      using program = pinnedProgram(this.#pinDir, "wr_tc_local");
      attachTcRecorded(
        this.#pinDir,
        ifindex,
        program,
        cfg.flags & ConfigFlag.CLSACT ? "clsact" : "tcx",
      );
    }
    try {
      this.#maps.ifindexPorts.set(ifindex, port.number);
      failpoint("port.written");
      this.#maps.ports.set(port.number, entry);
      if (port.xdp) this.#maps.xdpPorts.set(port.number, ifindex);
    } catch (err) {
      this.#maps.xdpPorts.delete(port.number);
      this.#maps.ifindexPorts.delete(ifindex);
      detachDevice(this.#pinDir, ifindex);
      throw err;
    }
  }

  #writeTunnel(port: TunnelPort, ifindex: number, mac: string): void {
    const endpoints = this.#endpointsOf(port);
    this.#dropStaleRefs(endpoints);
    const maps = this.#maps;
    // Check every endpoint before writing any.
    for (const key of endpoints) {
      const ep = maps.endpoints.get(key);
      if (ep && ep.proto !== protoNumber(port.proto)) {
        throw new PortError(`${endpointText(key)} already speaks another protocol`);
      }
      if (ep && port.remote === "flow" && ep.port && ep.port !== port.number) {
        const other = this.#ports.byNumber(ep.port)?.name ?? ep.port;
        throw new PortError(`${endpointText(key)} already has a flow-based port (${other})`);
      }
      if (port.remote !== "flow") {
        const fixed = maps.remotes.get({ ep: key, remote: port.remote.bytes });
        if (fixed && fixed !== port.number) {
          throw new PortError(
            `${endpointText(key)} already has a port for remote ${
              formatAddr(port.remote.bytes, port.remote.v6)
            }`,
          );
        }
      }
    }
    // A packet steered to a port without an entry is dropped as no_port
    // until the entry is written.
    const gso = port.proto === "vxlan" ? ensureGsoDevice(this.#pinDir, port.dstPort) : undefined;
    const { entry, info } = encodePort(port, {
      ifindex,
      deviceMac: mac,
      gsoIfindex: gso && "ifindex" in gso ? gso.ifindex : 0,
    });
    maps.portInfo.set(port.number, info);
    for (const key of endpoints) {
      const ep: Endpoint = maps.endpoints.get(key) ??
        { port: 0, fixed_remotes: 0, proto: protoNumber(port.proto) };
      if (port.remote === "flow") ep.port = port.number;
      else {
        maps.remotes.set({ ep: key, remote: port.remote.bytes }, port.number);
        ep.fixed_remotes = 1;
      }
      maps.endpoints.set(key, ep);
    }
    failpoint("port.written");
    maps.ports.set(port.number, entry);
    if (port.proto === "geneve") this.learnGeneve(true);
  }

  /** Undoes what writing `port` did outside its own slot. */
  #unwrite(port: Port): void {
    const entry = this.#maps.ports.get(port.number)!;
    if (port.kind === "local") {
      this.#maps.xdpPorts.delete(port.number);
      this.#maps.ifindexPorts.delete(entry.ifindex);
      detachDevice(this.#pinDir, entry.ifindex);
      return;
    }
    for (const key of this.#endpointsOf(port)) {
      const ep = this.#maps.endpoints.get(key);
      if (!ep) continue;
      if (port.remote !== "flow") this.#maps.remotes.delete({ ep: key, remote: port.remote.bytes });
      if (ep.port === port.number) this.#maps.endpoints.set(key, { ...ep, port: 0 });
      this.#settleEndpoint(key);
    }
  }

  /** The endpoint keys a tunnel port listens on: its local addresses. */
  #endpointsOf(port: TunnelPort): EndpointKey[] {
    const family = port.remote !== "flow" ? port.remote.v6 : port.local?.v6;
    const addrs = port.local
      ? [port.local]
      : localIps(this.#maps).filter((a) => family === undefined || a.v6 === family);
    if (addrs.length === 0) {
      throw new PortError(
        `no local endpoint address of the tunnel's family; bring warren up with --local-ip`,
      );
    }
    return addrs.map((a) => ({
      addr: a.bytes,
      ipproto: ipProtoOf(port.proto),
      v6: a.v6 ? 1 : 0,
      dst_port: port.proto === "gre" ? 0 : port.dstPort,
    }));
  }

  /**
   * Drops what a writer that died midway left at endpoints `keys`:
   * references to tunnel ports that do not exist (their entry is written
   * last). Garbage to everything else, they would otherwise block adding
   * the port again.
   */
  #dropStaleRefs(keys: EndpointKey[]): void {
    const live = new Set(
      this.#ports.all().flatMap((p) => p.kind === "tunnel" ? [p.number] : []),
    );
    const stale = new Set<EndpointKey>();
    for (const [k, n] of [...this.#maps.remotes.entries()]) {
      const key = keys.find((key) => sameKey(key, k.ep));
      if (key && !live.has(n)) {
        this.#maps.remotes.delete(k);
        stale.add(key);
      }
    }
    for (const key of keys) {
      const ep = this.#maps.endpoints.get(key);
      if (ep?.port && !live.has(ep.port)) {
        ep.port = 0;
        this.#maps.endpoints.set(key, ep);
        stale.add(key);
      }
    }
    for (const key of stale) this.#settleEndpoint(key);
  }

  /** Recounts endpoint `key`'s fixed remotes; deletes it when unused. */
  #settleEndpoint(key: EndpointKey): void {
    const ep = this.#maps.endpoints.get(key);
    if (!ep) return;
    ep.fixed_remotes = [...this.#maps.remotes.keys()].some((k) => sameKey(k.ep, key)) ? 1 : 0;
    if (ep.port === 0 && ep.fixed_remotes === 0) this.#maps.endpoints.delete(key);
    else this.#maps.endpoints.set(key, ep);
  }
}

/** The network local port `name` is given, checked; none (0) when not given. */
function localNet(name: string, net: number | undefined): number {
  return net === undefined ? 0 : parseNet(net, `port ${name}: net`);
}

function endpointText(k: EndpointKey): string {
  const proto = k.ipproto === 17 ? "udp" : k.ipproto === 47 ? "gre" : "tcp";
  return `${formatAddr(k.addr, k.v6 === 1)} ${proto}${k.dst_port ? `/${k.dst_port}` : ""}`;
}

/** Whether a port already is what `want` describes. */
function samePort(
  have: Port,
  want: Omit<LocalPort, "number"> | Omit<TunnelPort, "number">,
): boolean {
  const strip = (p: object) => toComparable({ ...p, number: 0 });
  return strip(have) === strip(want);
}

function toComparable(v: unknown): string {
  return JSON.stringify(
    v,
    (_k, x) => typeof x === "bigint" ? `${x}n` : x instanceof Uint8Array ? Array.from(x) : x,
  );
}

function sameKey(a: EndpointKey, b: EndpointKey): boolean {
  return a.ipproto === b.ipproto && a.v6 === b.v6 && a.dst_port === b.dst_port &&
    a.addr.every((x, i) => x === b.addr[i]);
}
