/**
 * Validation of everything read from etcd. A fleet's store is written by
 * many hosts and operators, so a value is untrusted input until it has
 * passed here: a name that could break a key apart or a flow's syntax, a
 * VNI outside 24 bits, a multicast or malformed MAC, an address that is not
 * one, an unknown protocol, an absurd MTU or an oversized list. A value that
 * fails becomes a {@link ValueError} naming the key and the reason; the
 * reader logs it (bounded) and skips it, so it never crashes an agent and
 * never becomes a flow.
 *
 * Values are JSON objects; fields this version does not know are ignored,
 * so a later version may add fields without breaking older readers.
 * Addresses come out canonical (RFC 5952 for IPv6), so two spellings of one
 * address are one address.
 *
 * @module
 */

import ipaddr from "ipaddr.js";
import { formatMac, parseMac } from "../maps/codec.ts";
import { formatAddr, parseAddr } from "../tunnel/addr.ts";
import { DEFAULT_DST_PORT, type Protocol, PROTOCOLS } from "../tunnel/port.ts";

/** A value (or key) that is not what the layout says. */
export class ValueError extends Error {
  /** Creates the error for `key`. */
  constructor(readonly key: string, reason: string) {
    super(`${key}: ${reason}`);
    this.name = "ValueError";
  }
}

/** The largest value warren reads; anything bigger is refused unread. */
export const MAX_VALUE_BYTES = 4096;
/** The largest VNI: 24 bits, as VXLAN and Geneve carry. */
export const MAX_VNI = 2 ** 24 - 1;
/** At most this many addresses per endpoint or host. */
export const MAX_ADDRESSES = 16;
/** At most this many tunnel entries per host. */
export const MAX_TUNNELS = 8;
/** MTU bounds: IPv4's minimum datagram to a jumbo frame's. */
export const MTU_RANGE = [576, 9216] as const;

/** A network, as operators define it. */
export interface Network {
  /** Its name. */
  name: string;
  /** Its VNI: tunnel key on the wire and `net` in the datapath. */
  vni: number;
  /** The tunnel protocol its traffic travels in. */
  protocol: Protocol;
  /** The MTU its workloads should use. */
  mtu: number;
}

/** A tunnel a host accepts: protocol and destination port (none for GRE). */
export interface TunnelEndpoint {
  /** vxlan, geneve, gre or stt. */
  protocol: Protocol;
  /** UDP (STT: TCP) port; 0 for GRE. */
  port: number;
}

/** A host's registration. */
export interface HostRecord {
  /** Its name. */
  name: string;
  /** Its underlay addresses, canonical. */
  underlay: string[];
  /** The tunnels it accepts. */
  tunnels: TunnelEndpoint[];
}

/** One workload a host publishes in one network. */
export interface Endpoint {
  /** The network's name. */
  net: string;
  /** The publishing host. */
  host: string;
  /** The workload's MAC, lower-case `aa:bb:cc:dd:ee:ff`. */
  mac: string;
  /** Its addresses, canonical. */
  ips: string[];
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Checks a network or host name: 1 to 63 letters, digits, `_`, `.`, `-`, no `/`. */
export function checkName(key: string, what: string, name: string): string {
  if (!NAME.test(name)) {
    throw new ValueError(
      key,
      `${what} "${
        clip(name)
      }" is not a name (1 to 63 letters, digits, "_", "." or "-", starting with a letter or digit)`,
    );
  }
  return name;
}

/** Checks a VNI: a whole number in 1..2^24-1. */
export function checkVni(key: string, vni: unknown): number {
  if (typeof vni !== "number" || !Number.isInteger(vni) || vni < 1 || vni > MAX_VNI) {
    throw new ValueError(key, `vni ${clip(String(vni))} is not in 1..${MAX_VNI}`);
  }
  return vni;
}

/**
 * Checks a workload MAC: canonical text (lower case, two digits per byte,
 * so one MAC has one key), unicast, not all zeros.
 */
export function checkMac(key: string, mac: string): string {
  let bytes: Uint8Array;
  try {
    bytes = parseMac(mac);
  } catch {
    throw new ValueError(key, `"${clip(mac)}" is not a MAC address`);
  }
  if (formatMac(bytes) !== mac) {
    throw new ValueError(key, `MAC "${mac}" is not written as ${formatMac(bytes)}`);
  }
  if (bytes[0] & 1) throw new ValueError(key, `MAC ${mac} is multicast, not a workload's`);
  if (bytes.every((b) => b === 0)) throw new ValueError(key, "MAC 00:00:00:00:00:00 is no one's");
  return mac;
}

/** Ranges no workload or host can be: they would make nonsense flows. */
const NOT_UNICAST = new Set(["unspecified", "multicast", "broadcast"]);

/** Checks a unicast IPv4 or IPv6 address and returns it canonical. */
export function checkAddress(key: string, text: unknown): string {
  if (typeof text !== "string") {
    throw new ValueError(key, `${clip(JSON.stringify(text) ?? "")} is not an address`);
  }
  let canonical: string;
  try {
    const a = parseAddr(text);
    canonical = formatAddr(a.bytes, a.v6);
  } catch {
    throw new ValueError(key, `"${clip(text)}" is not an IP address`);
  }
  const range = ipaddr.parse(canonical).range();
  if (NOT_UNICAST.has(range)) throw new ValueError(key, `${canonical} is ${range}, not unicast`);
  return canonical;
}

/** Checks a tunnel protocol name. */
export function checkProtocol(key: string, p: unknown): Protocol {
  if (!PROTOCOLS.includes(p as Protocol)) {
    throw new ValueError(
      key,
      `protocol ${clip(String(p))} is not one of ${PROTOCOLS.join(", ")}`,
    );
  }
  return p as Protocol;
}

/** Checks an MTU. */
export function checkMtu(key: string, mtu: unknown): number {
  const [lo, hi] = MTU_RANGE;
  if (typeof mtu !== "number" || !Number.isInteger(mtu) || mtu < lo || mtu > hi) {
    throw new ValueError(key, `mtu ${clip(String(mtu))} is not in ${lo}..${hi}`);
  }
  return mtu;
}

/** Checks a list of addresses: at least `min`, at most MAX_ADDRESSES, no repeats. */
function addresses(key: string, field: string, v: unknown, min: number): string[] {
  if (!Array.isArray(v)) throw new ValueError(key, `${field} is not a list`);
  if (v.length < min || v.length > MAX_ADDRESSES) {
    throw new ValueError(key, `${field} has ${v.length} entries (${min}..${MAX_ADDRESSES})`);
  }
  const out = v.map((a) => checkAddress(key, a));
  if (new Set(out).size !== out.length) throw new ValueError(key, `${field} repeats an address`);
  return out;
}

/** Decodes a value's bytes into a JSON object, refusing oversize or non-objects. */
export function jsonObject(key: string, value: Uint8Array | string): Record<string, unknown> {
  // Text's UTF-8 size is at most three bytes a character: counted only when that could be too many.
  const size = typeof value !== "string"
    ? value.byteLength
    : 3 * value.length <= MAX_VALUE_BYTES
    ? value.length
    : new TextEncoder().encode(value).length;
  if (size > MAX_VALUE_BYTES) {
    throw new ValueError(key, `value of ${size} bytes is over ${MAX_VALUE_BYTES}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(
      typeof value === "string" ? value : new TextDecoder("utf-8", { fatal: true }).decode(value),
    );
  } catch {
    throw new ValueError(key, "value is not JSON");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ValueError(key, "value is not a JSON object");
  }
  return v as Record<string, unknown>;
}

/** Decodes network `name`'s value. */
export function decodeNetwork(key: string, name: string, value: Uint8Array | string): Network {
  checkName(key, "network", name);
  const v = jsonObject(key, value);
  return {
    name,
    vni: checkVni(key, v.vni),
    protocol: checkProtocol(key, v.protocol),
    mtu: checkMtu(key, v.mtu),
  };
}

/** Decodes a VNI claim: which network holds VNI `vni`. */
export function decodeVniClaim(key: string, vni: string, value: Uint8Array | string): string {
  if (!/^[1-9]\d{0,7}$/.test(vni)) throw new ValueError(key, `"${clip(vni)}" is not a VNI`);
  checkVni(key, Number(vni));
  const v = jsonObject(key, value);
  return checkName(key, "network", String(v.network));
}

/** Checks a tunnel entry: protocol, and a port (none for GRE; default the IANA one). */
export function checkTunnel(key: string, t: unknown): TunnelEndpoint {
  if (typeof t !== "object" || t === null) throw new ValueError(key, "a tunnel is not an object");
  const { protocol, port } = t as Record<string, unknown>;
  const p = checkProtocol(key, protocol);
  if (p === "gre") {
    if (port !== undefined && port !== 0) throw new ValueError(key, "gre has no port");
    return { protocol: p, port: 0 };
  }
  if (port === undefined) return { protocol: p, port: DEFAULT_DST_PORT[p] };
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ValueError(key, `${p} port ${clip(String(port))} is not in 1..65535`);
  }
  return { protocol: p, port };
}

/** Decodes host `name`'s registration. */
export function decodeHost(key: string, name: string, value: Uint8Array | string): HostRecord {
  checkName(key, "host", name);
  const v = jsonObject(key, value);
  if (!Array.isArray(v.tunnels) || v.tunnels.length < 1 || v.tunnels.length > MAX_TUNNELS) {
    throw new ValueError(key, `tunnels is not a list of 1..${MAX_TUNNELS} entries`);
  }
  const tunnels = v.tunnels.map((t) => checkTunnel(key, t));
  if (new Set(tunnels.map((t) => t.protocol)).size !== tunnels.length) {
    throw new ValueError(key, "tunnels names one protocol twice");
  }
  return { name, underlay: addresses(key, "underlay", v.underlay, 1), tunnels };
}

/** Decodes `host`'s endpoint `mac` in network `net`. */
export function decodeEndpoint(
  key: string,
  net: string,
  host: string,
  mac: string,
  value: Uint8Array | string,
): Endpoint {
  checkName(key, "network", net);
  checkName(key, "host", host);
  checkMac(key, mac);
  const v = jsonObject(key, value);
  return { net, host, mac, ips: addresses(key, "ips", v.ips ?? [], 0) };
}

/** Hostile text shortened for a log line. */
function clip(s: string): string {
  const printable = s.replace(/[^\x20-\x7e]/g, "?");
  return printable.length > 40 ? `${printable.slice(0, 40)}…` : printable;
}
