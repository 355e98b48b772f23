/**
 * Ports: local ports (a netdev such as a workload's veth) and tunnel ports
 * (a protocol and its options). A port-based tunnel is a tunnel port with
 * fixed options; `flow` for remote_ip or key takes them from the flow's
 * set_tunnel instead, as in Open vSwitch.
 *
 * @module
 */

import { formatMac, parseMac } from "../maps/codec.ts";
import { type PortEntry, PortFlag, type PortInfo, PortKind, Proto } from "../maps/layouts.ts";
import { type Addr, formatAddr, isZero, parseAddr } from "./addr.ts";
import { reservedPort } from "./match.ts";

/** Tunnel protocols. */
export type Protocol = "vxlan" | "geneve" | "gre" | "stt";

/** Every protocol, in order. */
export const PROTOCOLS: readonly Protocol[] = ["vxlan", "geneve", "gre", "stt"];

/** The protocols carried in UDP, whose checksum RFC 8200 requires over IPv6. */
const UDP_PROTOCOLS: readonly Protocol[] = ["vxlan", "geneve"];

/** The IANA destination port of each protocol (GRE has none). */
export const DEFAULT_DST_PORT: Readonly<Record<Protocol, number>> = {
  vxlan: 4789,
  geneve: 6081,
  gre: 0,
  stt: 7471,
};

const PROTO_NUMBER: Record<Protocol, number> = {
  vxlan: Proto.VXLAN,
  geneve: Proto.GENEVE,
  gre: Proto.GRE,
  stt: Proto.STT,
};

/** A local port: packets enter from and leave to a netdev. */
export interface LocalPort {
  /** Kind marker. */
  kind: "local";
  /** Port name, unique in the datapath. */
  name: string;
  /** Port number, 1..255. */
  number: number;
  /** The netdev. */
  device: string;
  /** Its peer takes XDP redirects (GRO on, or an XDP program). */
  xdp: boolean;
  /** The network it stamps on every packet it receives; 0 for none. */
  net: number;
}

/** A tunnel port and its options. */
export interface TunnelPort {
  /** Kind marker. */
  kind: "tunnel";
  /** Port name, unique in the datapath. */
  name: string;
  /** Port number, 1..255. */
  number: number;
  /** The protocol. */
  proto: Protocol;
  /** The underlay device. */
  device: string;
  /** A fixed remote endpoint, or "flow". */
  remote: Addr | "flow";
  /** A fixed local endpoint; undefined takes the route's source. */
  local?: Addr;
  /** The key incoming packets must carry, or "flow" for any. */
  keyIn: bigint | "flow";
  /** The key sent, "flow" for the flow's, or "none" (GRE without key). */
  keyOut: bigint | "flow" | "none";
  /** UDP (or STT's TCP) destination port. */
  dstPort: number;
  /** Outer TTL, or inherited from the inner packet. */
  ttl: number | "inherit";
  /** Outer DSCP in TOS position, or inherited. ECN always follows RFC 6040. */
  tos: number | "inherit";
  /** Set DF on the outer header. */
  df: boolean;
  /**
   * Checksum the outer UDP or GRE header; undefined (VXLAN and Geneve only)
   * chooses by each packet's outer family, as Open vSwitch does: a checksum
   * over IPv6, where RFC 8200 requires one, none over IPv4. See
   * {@link csumOver}.
   */
  csum?: boolean;
  /** GRE sequence numbers. */
  seq: boolean;
  /** Clamp the MSS of TCP SYNs to what fits the tunnel. */
  mssClamp: boolean;
  /** Path MTU override; undefined uses the device's. */
  mtu?: number;
  /** A neighbour MAC to use when the kernel has none for the next hop. */
  neighbor?: string;
  /** The network it stamps: fixed (0 for none), or the packet's tunnel key ("flow"). */
  net: number | "flow";
}

/** Either kind of port. */
export type Port = LocalPort | TunnelPort;

/** PortError is a port definition that cannot be used. */
export class PortError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "PortError";
  }
}

/**
 * Checks a port name: 1 to 15 letters, digits, `-`, `_` or `.`, and not
 * what flow text reads otherwise (a port number, or a reserved port such
 * as LOCAL).
 */
export function checkPortName(name: string): string {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) {
    throw new PortError(`"${name}" is not a port name (1 to 15 letters, digits, "-", "_" or ".")`);
  }
  if (/^(0x[0-9a-fA-F]+|\d+)$/.test(name) || reservedPort(name)) {
    throw new PortError(
      `"${name}" is not a port name: flows would read it as a port ${
        reservedPort(name) ? "Open vSwitch reserves" : "number"
      }`,
    );
  }
  return name;
}

/** The largest network number: `net` is 32 bits, 0 meaning none. */
export const MAX_NET = 0xffffffff;

/**
 * A network number from a port's settings (`port add --net`, a state
 * file's `net:`, the tunnel option `net=`): 1..2^32-1. `what` names the
 * setting in the error.
 */
export function parseNet(value: string | number, what: string): number {
  const text = String(value);
  if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(text)) {
    throw new PortError(`${what}: "${text}" is not a network number (1..${MAX_NET})`);
  }
  const n = Number(text);
  if (n < 1 || n > MAX_NET) {
    throw new PortError(`${what}: ${text} is out of range (a network is 1..${MAX_NET})`);
  }
  return n;
}

/** The tunnel options a user may give, with what they take. */
export const TUNNEL_OPTIONS: Readonly<Record<string, string>> = {
  remote_ip: "remote endpoint address, or flow",
  local_ip: "local endpoint address (default: the route's source)",
  key: "tunnel key for both directions: a number, or flow",
  in_key: "key incoming packets must carry: a number, or flow",
  out_key: "key sent: a number, flow, or none (GRE only)",
  dst_port: "UDP (STT: TCP) destination port",
  ttl: "outer TTL 1..255, or inherit (default 64)",
  tos: "outer DSCP as a TOS byte (multiple of 4), or inherit (default 0)",
  df: "set DF on the outer header: true or false (default true)",
  df_default: "Open vSwitch's name for df",
  csum:
    "checksum the outer UDP or GRE header: true or false (default: VXLAN and Geneve over IPv6 true, else false)",
  seq: "GRE sequence numbers: true or false (default false)",
  mss_clamp: "clamp TCP MSS to fit the tunnel: true or false (default false)",
  mtu: "path MTU to assume instead of the device's",
  neighbor: "next-hop MAC to use when the kernel has none",
  net: "the network packets from the tunnel belong to: a number, or flow (their tunnel key)",
};

function bool(name: string, v: string): boolean {
  if (v === "true" || v === "1" || v === "yes") return true;
  if (v === "false" || v === "0" || v === "no") return false;
  throw new PortError(`option ${name}: "${v}" is not true or false`);
}

function key(name: string, v: string, allowNone: boolean): bigint | "flow" | "none" {
  if (v === "flow") return "flow";
  if (v === "none" && allowNone) return "none";
  if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(v)) {
    throw new PortError(`option ${name}: "${v}" is not a key, or flow`);
  }
  return BigInt(v);
}

/**
 * Builds a tunnel port from Open vSwitch-style options. Unknown options,
 * bad values and combinations the protocol cannot do are errors.
 */
export function tunnelPort(
  name: string,
  proto: string,
  device: string,
  options: Record<string, string>,
): Omit<TunnelPort, "number"> {
  checkPortName(name);
  if (!PROTOCOLS.includes(proto as Protocol)) {
    throw new PortError(`"${proto}" is not a tunnel protocol (${PROTOCOLS.join(", ")})`);
  }
  const p = proto as Protocol;
  for (const k of Object.keys(options)) {
    if (!(k in TUNNEL_OPTIONS)) {
      throw new PortError(
        `"${k}" is not a tunnel option (${Object.keys(TUNNEL_OPTIONS).join(", ")})`,
      );
    }
  }
  if (options.remote_ip === undefined) {
    throw new PortError(`tunnel ${name} needs remote_ip (an address, or flow)`);
  }
  const addr = (o: string, v: string) => {
    try {
      return parseAddr(v);
    } catch {
      throw new PortError(`option ${o}: "${v}" is not an IP address`);
    }
  };
  const remote = options.remote_ip === "flow" ? "flow" : addr("remote_ip", options.remote_ip);
  const local = options.local_ip === undefined ? undefined : addr("local_ip", options.local_ip);
  if (local && remote !== "flow" && local.v6 !== remote.v6) {
    throw new PortError(`tunnel ${name}: local_ip and remote_ip are of different families`);
  }
  // Each error names the option the user gave: key stands for both.
  const keyOption = (o: string) =>
    options[o] === undefined && options.key !== undefined ? "key" : o;
  const both = options.key ?? "0";
  const keyIn = key(keyOption("in_key"), options.in_key ?? both, false) as bigint | "flow";
  const keyOut = key(keyOption("out_key"), options.out_key ?? both, p === "gre");
  const limit = p === "gre" ? 2n ** 32n : p === "stt" ? 2n ** 64n : 2n ** 24n;
  for (const k of [keyIn, keyOut]) {
    if (typeof k === "bigint" && k >= limit) {
      throw new PortError(`tunnel ${name}: key ${k} does not fit ${p} (less than ${limit})`);
    }
  }
  const dstPort = options.dst_port === undefined ? DEFAULT_DST_PORT[p] : Number(options.dst_port);
  if (p === "gre" && options.dst_port !== undefined) {
    throw new PortError("GRE has no destination port");
  }
  if (p !== "gre" && !(Number.isInteger(dstPort) && dstPort > 0 && dstPort < 65536)) {
    throw new PortError(`option dst_port: "${options.dst_port}" is not a port (1..65535)`);
  }
  const ttl = options.ttl === undefined
    ? 64
    : options.ttl === "inherit"
    ? "inherit"
    : Number(options.ttl);
  if (ttl !== "inherit" && !(Number.isInteger(ttl) && ttl >= 1 && ttl <= 255)) {
    throw new PortError(`option ttl: "${options.ttl}" is not 1..255 or inherit`);
  }
  const tos = options.tos === undefined
    ? 0
    : options.tos === "inherit"
    ? "inherit"
    : Number(options.tos);
  if (tos !== "inherit" && !(Number.isInteger(tos) && tos >= 0 && tos <= 255 && tos % 4 === 0)) {
    throw new PortError(
      `option tos: "${options.tos}" is not a TOS byte with ECN bits clear, or inherit`,
    );
  }
  const seq = bool("seq", options.seq ?? "false");
  if (seq && p !== "gre") throw new PortError("seq is a GRE option");
  const mtu = options.mtu === undefined ? undefined : Number(options.mtu);
  if (mtu !== undefined && !(Number.isInteger(mtu) && mtu >= 576 && mtu <= 65535)) {
    throw new PortError(`option mtu: "${options.mtu}" is not 576..65535`);
  }
  let neighbor: string | undefined;
  if (options.neighbor !== undefined) {
    try {
      neighbor = formatMac(parseMac(options.neighbor));
    } catch {
      throw new PortError(`option neighbor: "${options.neighbor}" is not a MAC address`);
    }
  }
  let net: number | "flow" = 0;
  if (options.net === "flow") {
    if (keyIn !== "flow") {
      throw new PortError(
        `tunnel ${name}: net=flow takes the network from the packet's key, so it needs key=flow`,
      );
    }
    net = "flow";
  } else if (options.net !== undefined) net = parseNet(options.net, `tunnel ${name}: option net`);
  return {
    kind: "tunnel",
    name,
    proto: p,
    device,
    remote,
    local,
    keyIn,
    keyOut,
    dstPort,
    ttl,
    tos,
    df: bool("df", options.df ?? options.df_default ?? "true"),
    csum: options.csum !== undefined
      ? bool("csum", options.csum)
      : UDP_PROTOCOLS.includes(p)
      ? undefined
      : false,
    seq,
    mssClamp: bool("mss_clamp", options.mss_clamp ?? "false"),
    mtu,
    neighbor,
    net,
  };
}

/** The options of a tunnel port, as `tunnel add` takes them. */
export function tunnelOptions(t: TunnelPort): Record<string, string> {
  const a = (x: Addr) => formatAddr(x.bytes, x.v6);
  const out: Record<string, string> = { remote_ip: t.remote === "flow" ? "flow" : a(t.remote) };
  if (t.local) out.local_ip = a(t.local);
  if (t.keyIn === t.keyOut) out.key = String(t.keyIn);
  else {
    out.in_key = String(t.keyIn);
    out.out_key = String(t.keyOut);
  }
  if (t.proto !== "gre") out.dst_port = String(t.dstPort);
  out.ttl = String(t.ttl);
  out.tos = String(t.tos);
  out.df = String(t.df);
  if (t.csum !== undefined) out.csum = String(t.csum);
  if (t.proto === "gre") out.seq = String(t.seq);
  out.mss_clamp = String(t.mssClamp);
  if (t.mtu !== undefined) out.mtu = String(t.mtu);
  if (t.neighbor) out.neighbor = t.neighbor;
  if (t.net) out.net = String(t.net);
  return out;
}

/** What encoding a port needs to know about the host. */
export interface PortHost {
  /** The port's device ifindex (local) or the underlay's (tunnel). */
  ifindex: number;
  /** The underlay device's MAC, for the neighbour fallback. */
  deviceMac?: string;
  /** VXLAN: the kernel device that sends its GSO packets with a checksum (gso_devices.ts). */
  gsoIfindex?: number;
}

const ZERO16 = new Uint8Array(16);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function name16(s: string): Uint8Array {
  const b = new Uint8Array(16);
  b.set(encoder.encode(s).subarray(0, 15));
  return b;
}

function unname16(b: Uint8Array): string {
  const end = b.indexOf(0);
  return decoder.decode(end < 0 ? b : b.subarray(0, end));
}

/** The kernel's entries for `port`. */
export function encodePort(port: Port, host: PortHost): { entry: PortEntry; info: PortInfo } {
  const info = { name: name16(port.name), device: name16(port.device) };
  if (port.kind === "local") {
    return {
      info,
      entry: {
        ifindex: host.ifindex,
        kind: PortKind.LOCAL,
        proto: Proto.NONE,
        flags: port.xdp ? PortFlag.XDP : 0,
        dst_port: 0,
        ttl: 0,
        tos: 0,
        mtu: 0,
        key_in: 0n,
        key_out: 0n,
        remote: ZERO16,
        local: ZERO16,
        nh_mac: "00:00:00:00:00:00",
        local_mac: "00:00:00:00:00:00",
        gre_seq: 0,
        net: port.net,
        gso_ifindex: 0,
      },
    };
  }
  let flags = 0;
  const v6 = port.remote !== "flow" ? port.remote.v6 : port.local?.v6 ?? false;
  if (port.remote === "flow") flags |= PortFlag.REMOTE_FLOW;
  if (port.keyIn === "flow") flags |= PortFlag.KEY_IN_FLOW;
  if (port.keyOut === "flow") flags |= PortFlag.KEY_OUT_FLOW;
  if (port.keyOut === "none") flags |= PortFlag.NO_KEY;
  if (port.ttl === "inherit") flags |= PortFlag.TTL_INHERIT;
  if (port.tos === "inherit") flags |= PortFlag.TOS_INHERIT;
  if (port.df) flags |= PortFlag.DF;
  if (csumOver(port, false)) flags |= PortFlag.CSUM;
  if (csumOver(port, true)) flags |= PortFlag.CSUM6;
  if (port.seq) flags |= PortFlag.SEQ;
  if (v6) flags |= PortFlag.V6;
  if (port.neighbor) flags |= PortFlag.NH_MAC;
  if (port.mssClamp) flags |= PortFlag.MSS_CLAMP;
  if (port.net === "flow") flags |= PortFlag.NET_FLOW;
  return {
    info,
    entry: {
      ifindex: host.ifindex,
      kind: PortKind.TUNNEL,
      proto: PROTO_NUMBER[port.proto],
      flags,
      dst_port: port.dstPort,
      ttl: port.ttl === "inherit" ? 0 : port.ttl,
      tos: port.tos === "inherit" ? 0 : port.tos,
      mtu: port.mtu ?? 0,
      key_in: typeof port.keyIn === "bigint" ? port.keyIn : 0n,
      key_out: typeof port.keyOut === "bigint" ? port.keyOut : 0n,
      remote: port.remote === "flow" ? ZERO16 : port.remote.bytes,
      local: port.local?.bytes ?? ZERO16,
      nh_mac: port.neighbor ?? "00:00:00:00:00:00",
      local_mac: host.deviceMac ?? "00:00:00:00:00:00",
      gre_seq: 0,
      net: port.net === "flow" ? 0 : port.net,
      gso_ifindex: host.gsoIfindex ?? 0,
    },
  };
}

/** The port the kernel's entries describe, or undefined for an empty slot. */
export function decodePort(number: number, entry: PortEntry, info: PortInfo): Port | undefined {
  const name = unname16(info.name);
  const device = unname16(info.device);
  if (entry.kind === PortKind.LOCAL) {
    const xdp = (entry.flags & PortFlag.XDP) !== 0;
    return { kind: "local", name, number, device, xdp, net: entry.net };
  }
  if (entry.kind !== PortKind.TUNNEL) return undefined;
  const f = entry.flags;
  const v6 = (f & PortFlag.V6) !== 0;
  const proto = PROTOCOLS.find((p) => PROTO_NUMBER[p] === entry.proto) ?? "vxlan";
  return {
    kind: "tunnel",
    name,
    number,
    proto,
    device,
    remote: f & PortFlag.REMOTE_FLOW ? "flow" : { v6, bytes: entry.remote },
    local: isZero(entry.local) ? undefined : { v6, bytes: entry.local },
    keyIn: f & PortFlag.KEY_IN_FLOW ? "flow" : entry.key_in,
    keyOut: f & PortFlag.NO_KEY ? "none" : f & PortFlag.KEY_OUT_FLOW ? "flow" : entry.key_out,
    dstPort: entry.dst_port,
    ttl: f & PortFlag.TTL_INHERIT ? "inherit" : entry.ttl,
    tos: f & PortFlag.TOS_INHERIT ? "inherit" : entry.tos,
    df: (f & PortFlag.DF) !== 0,
    csum: f & PortFlag.CSUM ? true : f & PortFlag.CSUM6 ? undefined : false,
    seq: (f & PortFlag.SEQ) !== 0,
    mssClamp: (f & PortFlag.MSS_CLAMP) !== 0,
    mtu: entry.mtu || undefined,
    neighbor: f & PortFlag.NH_MAC ? entry.nh_mac : undefined,
    net: f & PortFlag.NET_FLOW ? "flow" : entry.net,
  };
}

/**
 * Whether tunnel `t` checksums the outer UDP or GRE header of the packets
 * it sends over an IPv6 (`v6`) or IPv4 underlay: `csum` when given, else
 * (VXLAN and Geneve) over IPv6 only. A flow's `set_tunnel(flags=csum)`
 * adds a checksum to its own packets besides.
 */
export function csumOver(t: Pick<TunnelPort, "proto" | "csum">, v6: boolean): boolean {
  return t.csum ?? (v6 && UDP_PROTOCOLS.includes(t.proto));
}

/**
 * What a user must know about tunnel `t`, one sentence each: a UDP tunnel
 * that may send over IPv6 with `csum=false` sends zero checksums there,
 * which peers drop unless told to take them; a VXLAN tunnel without the
 * kernel device that sends its GSO packets with a checksum (`gsoDevice`
 * false) segments them in BPF instead, much slower.
 */
export function tunnelNotes(t: TunnelPort, gsoDevice = true): string[] {
  const notes: string[] = [];
  const v6 = t.remote === "flow" ? t.local?.v6 ?? true : t.remote.v6;
  if (UDP_PROTOCOLS.includes(t.proto) && v6 && !csumOver(t, true)) {
    notes.push(
      `${t.name} sends a zero UDP checksum over IPv6 (csum=false): its peers must accept it ` +
        `(Linux vxlan or geneve: udp6zerocsumrx; Open vSwitch: csum=false) or they drop every packet`,
    );
  }
  if (t.proto === "vxlan" && !gsoDevice) {
    notes.push(
      `${t.name} has no kernel vxlan device for UDP port ${t.dstPort}: GSO packets that need ` +
        `a checksum are segmented in BPF, at a fraction of the throughput (warren up makes it again)`,
    );
  }
  return notes;
}

/** The IP protocol number of a tunnel protocol's outer header. */
export function ipProtoOf(proto: Protocol): number {
  return proto === "gre" ? 47 : proto === "stt" ? 6 : 17;
}

/** The wr_proto number of a protocol. */
export function protoNumber(proto: Protocol): number {
  return PROTO_NUMBER[proto];
}
