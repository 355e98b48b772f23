/**
 * Match fields in Open vSwitch's words, and how each maps onto the
 * datapath's flow key: `nw_dst=10.1.0.0/16` sets `ip_dst` and its mask,
 * `dl_vlan=10` sets twelve bits of `vlan_tci` and the "tagged" bit.
 *
 * A {@link Match} is a flow key and a mask of the same shape; every field
 * is an exact value or a value under a mask, and anything unset is
 * wildcarded.
 *
 * Several fields share a member of the key, as in Open vSwitch's own flow
 * structure: `nw_src`, `ipv6_src` and `arp_spa` are all `ip_src`; `tp_src`,
 * `icmp_type` and `icmpv6_type` are all `tp_src`. Which one a member means
 * follows from what the match says the packet is (its EtherType and IP
 * protocol), so a name is resolved against that: `nw_src` under `arp` is
 * `arp_spa`, `tp_src` under `icmp` is `icmp_type`. A field whose
 * prerequisite the match lacks is refused, naming it, where Open vSwitch
 * would silently drop the field.
 *
 * Fields Open vSwitch has and the datapath does not match on yet are in
 * {@link PENDING_FIELDS}: refused with a sentence, each to move into
 * {@link FIELDS} once the flow key carries it.
 *
 * Longer than most modules: the field tables ({@link FIELDS},
 * {@link PENDING_FIELDS}) stay with the parsers, printers and
 * prerequisite rules their rows are built from, so that a field is defined
 * in exactly one place.
 *
 * @module
 */

import { formatMac, parseMac } from "../maps/codec.ts";
import { emptyFlowKey, type FlowKey, Frag, TunFlag } from "../maps/layouts.ts";
import { formatAddr, maskPrefix, parseAddr, prefixMask } from "./addr.ts";

/** A flow key and a mask of the same shape. */
export interface Match {
  /** Values, already masked. */
  key: FlowKey;
  /** 1 bits matter. */
  mask: FlowKey;
}

/** An all-zero flow key: a match of nothing, or a mask of everything wild. */
export function emptyKey(): FlowKey {
  return emptyFlowKey();
}

/** A match with every field wildcarded. */
export function emptyMatch(): Match {
  return { key: emptyKey(), mask: emptyKey() };
}

/** Port names and numbers, for in_port. */
export interface PortNames {
  /** The number of the port named `name`, or undefined. */
  number(name: string): number | undefined;
  /** The name of port `n`, or undefined. */
  name(n: number): string | undefined;
}

/**
 * MatchError is a field value that cannot be parsed or is not allowed. Its
 * message says why, without the field's name: the caller knows how the
 * user spelled it.
 */
export class MatchError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "MatchError";
  }
}

/**
 * Open vSwitch's reserved port names (any case), which no warren port may
 * take: in flow text they mean these, never a port.
 */
export const RESERVED_PORTS: readonly string[] = [
  "LOCAL",
  "IN_PORT",
  "NORMAL",
  "FLOOD",
  "ALL",
  "CONTROLLER",
  "TABLE",
  "ANY",
  "NONE",
];

const RESERVED = new RegExp(`^(${RESERVED_PORTS.join("|")})$`, "i");

/** The reserved port `text` names (upper case), or undefined. */
export function reservedPort(text: string): string | undefined {
  return RESERVED.test(text) ? text.toUpperCase() : undefined;
}

/** The highest port number a flow may name (Open vSwitch's OpenFlow 1.0 range). */
export const MAX_PORT_NUMBER = 0xfeff;

/** A port number written in flow text, or undefined when `text` is no number. */
export function portNumber(text: string): number | undefined {
  if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(text)) return undefined;
  const n = Number(text);
  if (n < 1 || n > MAX_PORT_NUMBER) {
    throw new MatchError(`${text} is not a port number (1..${MAX_PORT_NUMBER})`);
  }
  return n;
}

/** `r[k]` when `k` is one of r's own keys: user text never reaches Object's properties. */
export function own<T>(r: Readonly<Record<string, T>>, k: string): T | undefined {
  return Object.hasOwn(r, k) ? r[k] : undefined;
}

const ETH_IP = 0x0800;
const ETH_IPV6 = 0x86dd;
const ETH_ARP = 0x0806;
const VLAN_PRESENT = 0x1000;

/** Shorthands: a word that sets dl_type and maybe nw_proto. */
export const SHORTHANDS: Readonly<Record<string, { eth: number; proto?: number }>> = {
  ip: { eth: ETH_IP },
  ipv6: { eth: ETH_IPV6 },
  arp: { eth: ETH_ARP },
  tcp: { eth: ETH_IP, proto: 6 },
  udp: { eth: ETH_IP, proto: 17 },
  sctp: { eth: ETH_IP, proto: 132 },
  icmp: { eth: ETH_IP, proto: 1 },
  tcp6: { eth: ETH_IPV6, proto: 6 },
  udp6: { eth: ETH_IPV6, proto: 17 },
  sctp6: { eth: ETH_IPV6, proto: 132 },
  icmp6: { eth: ETH_IPV6, proto: 58 },
};

/** What a match pins down about the packet: its EtherType and IP protocol. */
export interface Context {
  /** The EtherType, when the match gives it exactly. */
  eth?: number;
  /** The IP protocol, when the match gives it exactly (IP and IPv6 only). */
  proto?: number;
}

function context(eth: number | undefined, proto: number | undefined): Context {
  return { eth, proto: eth === ETH_IP || eth === ETH_IPV6 ? proto : undefined };
}

/** The context of a match. */
export function contextOf(m: Match): Context {
  return context(
    m.mask.eth_type === 0xffff ? m.key.eth_type : undefined,
    m.mask.ip_proto === 0xff ? m.key.ip_proto : undefined,
  );
}

/** The context shorthands give, applied in order as to a match. */
export function shorthandContext(words: readonly string[]): Context {
  let eth: number | undefined;
  let proto: number | undefined;
  for (const w of words) {
    eth = SHORTHANDS[w].eth;
    proto = SHORTHANDS[w].proto ?? proto;
  }
  return context(eth, proto);
}

/** The shorthands a field accepts: it makes sense under any of them. */
type Prereq = readonly string[];

const IP4: Prereq = ["ip"];
const IP6: Prereq = ["ipv6"];
const IP_ANY: Prereq = ["ip", "ipv6"];
const ARP: Prereq = ["arp"];
const TP: Prereq = ["tcp", "udp", "sctp", "tcp6", "udp6", "sctp6"];
const ICMP4: Prereq = ["icmp"];
const ICMP6: Prereq = ["icmp6"];

function holds(p: Prereq | undefined, c: Context): boolean {
  if (!p) return true;
  return p.some((word) => {
    const s = SHORTHANDS[word];
    return c.eth === s.eth && (s.proto === undefined || c.proto === s.proto);
  });
}

/** One match field: how it reads into a {@link Match}, and how it prints. */
export interface FieldDef {
  /** Open vSwitch's name, the one dumps print. */
  name: string;
  /** Other names for the same field. */
  aliases?: readonly string[];
  /** What the value means. */
  help: string;
  /** The shorthands the field makes sense under; none for any packet. */
  prereq?: Prereq;
  /** The width in bits of an integer field, which makes `name[a..b]=v` work. */
  bits?: number;
  /** Sets the field in `m` from its text; throws a MatchError. */
  parse(m: Match, text: string, ports: PortNames): void;
  /**
   * The field's text in `m`, or undefined when it is wildcarded. A field
   * another one prints for (`dl_vlan`, printed by `vlan_tci`) has none.
   */
  format?(m: Match, ports: PortNames): string | undefined;
}

/** Parses a non-negative integer in decimal or 0x hex, at most `max`. */
export function parseUint(text: string, max: number): number {
  if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(text)) throw new MatchError(`"${text}" is not a number`);
  const n = Number(text);
  if (n > max) throw new MatchError(`${text} is larger than ${max}`);
  return n;
}

/** Parses a 64-bit integer in decimal or 0x hex. */
export function parseU64(text: string): bigint {
  if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(text)) throw new MatchError(`"${text}" is not a number`);
  const n = BigInt(text);
  if (n >= 2n ** 64n) throw new MatchError(`${text} does not fit 64 bits`);
  return n;
}

function splitMask(text: string): [string, string | undefined] {
  const i = text.indexOf("/");
  return i < 0 ? [text, undefined] : [text.slice(0, i), text.slice(i + 1)];
}

function hex(n: number | bigint): string {
  return n.toString(16);
}

/** The members of the flow key that are numbers. */
export type IntMember = {
  [K in keyof FlowKey]: FlowKey[K] extends number ? K : never;
}[keyof FlowKey];
type AddrMember = "tun_src" | "tun_dst" | "ip_src" | "ip_dst";
type MacMember = "eth_src" | "eth_dst";

/** Sets `width` bits at `shift` of an integer member to `value` under `mask`. */
function setBits(
  m: Match,
  member: IntMember,
  shift: number,
  width: number,
  value: number,
  mask: number,
): void {
  // `>>> 0` keeps 32-bit members (net) unsigned through JavaScript's bit operators.
  const full = (2 ** width - 1) * 2 ** shift;
  const bits = (mask * 2 ** shift) & full;
  m.mask[member] = ((m.mask[member] & ~full) | bits) >>> 0;
  m.key[member] = ((m.key[member] & ~full) | ((value * 2 ** shift) & bits)) >>> 0;
}

interface IntOptions {
  /** Where the field's bits start in the member. */
  shift?: number;
  prereq?: Prereq;
  aliases?: string[];
  /** Runs after the field is set: a VLAN field also says "tagged". */
  implies?: (m: Match) => void;
  /** The value is written in place (nw_tos's 0xfc bits), not shifted down. */
  inPlace?: boolean;
  /** Prints exact values in hex (dl_type). */
  hex?: boolean;
  /** No format: another field prints these bits. */
  printedBy?: string;
}

/** An integer field: `width` bits at `shift` within a key member. */
function intField(
  name: string,
  member: IntMember,
  width: number,
  help: string,
  options: IntOptions = {},
): FieldDef {
  const shift = options.shift ?? 0;
  const max = 2 ** width - 1;
  // In place, a value is the member's bits: nw_tos=0x20 is DSCP 8.
  const scale = options.inPlace ? 2 ** shift : 1;
  const read = (t: string) => {
    const n = parseUint(t, max * scale);
    if (n % scale) {
      throw new MatchError(
        `${t} has bits outside 0x${hex(max * scale)}${
          name === "nw_tos" ? " (ECN bits: use nw_ecn for those)" : ""
        }`,
      );
    }
    return n / scale;
  };
  const def: FieldDef = {
    name,
    aliases: options.aliases,
    help,
    prereq: options.prereq,
    bits: options.inPlace ? undefined : width,
    parse(m, text) {
      const [v, mk] = splitMask(text);
      setBits(m, member, shift, width, read(v), mk === undefined ? max : read(mk));
      options.implies?.(m);
    },
  };
  if (!options.printedBy) {
    def.format = (m) => {
      const mask = ((m.mask[member] / 2 ** shift) & max) >>> 0;
      if (mask === 0) return undefined;
      const value = ((m.key[member] / 2 ** shift) & max) >>> 0;
      if (mask !== max) return `${name}=0x${hex(value * scale)}/0x${hex(mask * scale)}`;
      return `${name}=${options.hex ? `0x${hex(value * scale).padStart(4, "0")}` : value * scale}`;
    };
  }
  return def;
}

/**
 * An address field. `family` says which addresses it takes: a tunnel
 * address field takes either (the family is the V6 flag's business) and
 * prints only when the flag says its own family.
 */
function addrField(
  name: string,
  member: AddrMember,
  family: 4 | 6 | "any",
  help: string,
  prereq?: Prereq,
  aliases?: string[],
): FieldDef {
  const tunnel = member === "tun_src" || member === "tun_dst";
  return {
    name,
    aliases,
    help,
    prereq,
    parse(m, text) {
      const [a, p] = splitMask(text);
      let addr;
      try {
        addr = parseAddr(a);
      } catch {
        throw new MatchError(`"${a}" is not an IP address`);
      }
      if ((family === 4 && addr.v6) || (family === 6 && !addr.v6)) {
        throw new MatchError(`"${a}" is not an IPv${family} address`);
      }
      let mask: Uint8Array;
      if (p === undefined) {
        mask = prefixMask(addr.v6 ? 128 : 32);
      } else if (/^\d+$/.test(p)) {
        const prefix = Number(p);
        if (prefix > (addr.v6 ? 128 : 32)) {
          throw new MatchError(`prefix /${p} is too long for ${a}`);
        }
        mask = prefixMask(prefix);
      } else {
        try {
          const mAddr = parseAddr(p);
          if (mAddr.v6 !== addr.v6) throw new Error();
          mask = mAddr.bytes;
        } catch {
          throw new MatchError(`"${p}" is neither a prefix length nor a mask`);
        }
      }
      const other = member === "tun_src" ? "tun_dst" : "tun_src";
      const otherSet = tunnel && m.mask[other].some((b) => b !== 0);
      if (
        otherSet && mask.some((b) => b !== 0) &&
        ((m.key.tun_flags & TunFlag.V6) !== 0) !== addr.v6
      ) {
        throw new MatchError(
          `${a} is IPv${addr.v6 ? 6 : 4} and the other tunnel address is not: ` +
            "a tunnel's outer header has one family",
        );
      }
      for (let i = 0; i < 16; i++) addr.bytes[i] &= mask[i];
      m.mask[member] = mask;
      m.key[member] = addr.bytes;
      if (tunnel) {
        // One outer header, one family: the V6 flag says which, matched
        // exactly while either address is.
        const v6 = otherSet ? (m.key.tun_flags & TunFlag.V6) !== 0 : addr.v6;
        const matched = otherSet || mask.some((b) => b !== 0);
        m.mask.tun_flags = matched ? m.mask.tun_flags | TunFlag.V6 : m.mask.tun_flags & ~TunFlag.V6;
        m.key.tun_flags = matched && v6
          ? m.key.tun_flags | TunFlag.V6
          : m.key.tun_flags & ~TunFlag.V6;
      }
    },
    format(m) {
      const mask = m.mask[member];
      if (mask.every((b) => b === 0)) return undefined;
      const v6 = tunnel ? (m.key.tun_flags & TunFlag.V6) !== 0 : family === 6;
      if (tunnel && v6 !== (family === 6)) return undefined;
      const value = formatAddr(m.key[member], v6);
      const prefix = maskPrefix(mask, v6);
      if (prefix === (v6 ? 128 : 32)) return `${name}=${value}`;
      return prefix === undefined
        ? `${name}=${value}/${formatAddr(mask, v6)}`
        : `${name}=${value}/${prefix}`;
    },
  };
}

function macField(name: string, member: MacMember, help: string, aliases: string[]): FieldDef {
  return {
    name,
    aliases,
    help,
    parse(m, text) {
      const [v, mk] = splitMask(text);
      let value: Uint8Array, mask: Uint8Array;
      try {
        value = parseMac(v);
        mask = mk === undefined ? new Uint8Array(6).fill(0xff) : parseMac(mk);
      } catch {
        throw new MatchError(`"${text}" is not a MAC address (with an optional /mask)`);
      }
      m.mask[member] = mask;
      m.key[member] = value.map((b, i) => b & mask[i]);
    },
    format(m) {
      const mask = m.mask[member];
      if (mask.every((b) => b === 0)) return undefined;
      const value = formatMac(m.key[member]);
      return mask.every((b) => b === 0xff)
        ? `${name}=${value}`
        : `${name}=${value}/${formatMac(mask)}`;
    },
  };
}

/**
 * tun_flags as Open vSwitch numbers them: bit 0 is oam, the only flag it
 * names. warren also matches key, csum and df, by name only.
 */
const TUN_FLAG_NAMES: [string, number][] = [
  ["oam", TunFlag.OAM],
  ["df", TunFlag.DF],
  ["csum", TunFlag.CSUM],
  ["key", TunFlag.KEY],
];
const TUN_FLAGS_HELP = "give +flag or -flag (oam, df, csum, key), or a number (bit 0 is oam)";

function parseTunFlags(m: Match, text: string): void {
  if (/^(0x[0-9a-fA-F]+|\d+)(\/(0x[0-9a-fA-F]+|\d+))?$/.test(text)) {
    const [v, mk] = splitMask(text);
    const value = parseUint(v, 0xffff);
    const mask = mk === undefined ? 0xffff : parseUint(mk, 0xffff);
    if ((value | (mk === undefined ? 0 : mask)) & ~1) {
      throw new MatchError(`${text}: only bit 0 (oam) has a number; ${TUN_FLAGS_HELP}`);
    }
    if (mask & 1) {
      m.mask.tun_flags |= TunFlag.OAM;
      m.key.tun_flags = value & 1 ? m.key.tun_flags | TunFlag.OAM : m.key.tun_flags & ~TunFlag.OAM;
    }
    return;
  }
  // A bare name is +name, as in Open vSwitch.
  const re = /([+-]?)(oam|df|csum|key)/y;
  if (!text) throw new MatchError(TUN_FLAGS_HELP);
  for (let at = 0; at < text.length;) {
    re.lastIndex = at;
    const r = re.exec(text);
    if (!r || (r[1] === "" && at > 0)) {
      throw new MatchError(`"${text.slice(at)}" is not +flag or -flag; ${TUN_FLAGS_HELP}`);
    }
    const bit = TUN_FLAG_NAMES.find(([n]) => n === r[2])![1];
    m.mask.tun_flags |= bit;
    m.key.tun_flags = r[1] === "-" ? m.key.tun_flags & ~bit : m.key.tun_flags | bit;
    at = re.lastIndex;
  }
}

function parseGeneveData(m: Match, text: string): void {
  const [v, mk] = splitMask(text);
  const bytesOf = (t: string) => {
    if (!/^0x([0-9a-fA-F]{2}){1,8}$/.test(t)) {
      throw new MatchError(`"${t}" is not 0x followed by 1 to 8 bytes of hex`);
    }
    const out = new Uint8Array(8);
    out.set(Uint8Array.from(t.slice(2).match(/../g)!, (h) => Number.parseInt(h, 16)));
    return { out, len: (t.length - 2) / 2 };
  };
  const value = bytesOf(v);
  let mask: Uint8Array;
  if (mk === undefined) {
    mask = new Uint8Array(8);
    mask.fill(0xff, 0, value.len);
  } else mask = bytesOf(mk).out;
  m.mask.gnv_data = mask;
  m.key.gnv_data = value.out.map((b, i) => b & mask[i]);
}

function formatGeneveData(m: Match): string | undefined {
  const mask = m.mask.gnv_data;
  if (mask.every((b) => b === 0)) return undefined;
  const last = mask.findLastIndex((b) => b !== 0) + 1;
  const h = (b: Uint8Array) =>
    "0x" + Array.from(b.subarray(0, last), (x) => x.toString(16).padStart(2, "0")).join("");
  return mask.subarray(0, last).every((b) => b === 0xff)
    ? `geneve_data=${h(m.key.gnv_data)}`
    : `geneve_data=${h(m.key.gnv_data)}/${h(mask)}`;
}

/**
 * The VLAN tag as Open vSwitch prints it: dl_vlan and dl_vlan_pcp for a
 * tagged frame matched on whole fields, vlan_tci for anything else (no
 * tag, "any tag", partial masks).
 */
function formatVlan(m: Match): string | undefined {
  const mask = m.mask.vlan_tci;
  if (!mask) return undefined;
  const key = m.key.vlan_tci;
  const vid = mask & 0x0fff;
  const pcp = mask & 0xe000;
  if (
    mask & key & VLAN_PRESENT && (vid === 0 || vid === 0x0fff) && (pcp === 0 || pcp === 0xe000) &&
    (vid || pcp)
  ) {
    const parts = [];
    if (vid) parts.push(`dl_vlan=${key & 0x0fff}`);
    if (pcp) parts.push(`dl_vlan_pcp=${key >> 13}`);
    return parts.join(",");
  }
  const h4 = (n: number) => `0x${hex(n).padStart(4, "0")}`;
  return mask === 0xffff ? `vlan_tci=${h4(key)}` : `vlan_tci=${h4(key)}/${h4(mask)}`;
}

function tagged(m: Match): void {
  m.mask.vlan_tci |= VLAN_PRESENT;
  m.key.vlan_tci |= VLAN_PRESENT;
}

/**
 * The TOS byte as Open vSwitch prints it: nw_tos for the whole DSCP,
 * ip_dscp under a partial mask, nw_ecn for the ECN bits.
 */
function formatTos(m: Match): string | undefined {
  const parts = [];
  const dscp = m.mask.ip_tos & 0xfc;
  const key = m.key.ip_tos;
  if (dscp === 0xfc) parts.push(`nw_tos=${key & 0xfc}`);
  else if (dscp) parts.push(`ip_dscp=0x${hex((key & 0xfc) >> 2)}/0x${hex(dscp >> 2)}`);
  const ecn = m.mask.ip_tos & 0x03;
  if (ecn === 0x03) parts.push(`nw_ecn=${key & 0x03}`);
  else if (ecn) parts.push(`nw_ecn=0x${hex(key & 0x03)}/0x${hex(ecn)}`);
  return parts.length ? parts.join(",") : undefined;
}

const FRAG_NAMES: Record<string, [number, number]> = {
  no: [0, 1],
  yes: [1, 1],
  first: [Frag.FIRST, 3],
  later: [Frag.LATER, 3],
  not_later: [0, 2],
};

const NET = intField(
  "net",
  "net",
  32,
  "the network, stamped by the port the packet came in on (set_field may change it), " +
    "0 for none; Open vSwitch's metadata, when it fits 32 bits",
  { aliases: ["metadata"] },
);

/** Every match field warren knows, in the order dumps print them. */
export const FIELDS: readonly FieldDef[] = [
  {
    name: "in_port",
    help: "the port the packet came in on, by name or number",
    parse(m, text, ports) {
      const reserved = reservedPort(text);
      if (reserved) {
        throw new MatchError(
          `${reserved} is no port packets come in on in warren (${
            reserved === "LOCAL" ? "there is no bridge port" : "an output-only name"
          }); name a port`,
        );
      }
      const n = portNumber(text) ?? ports.number(text);
      if (n === undefined) throw new MatchError(`there is no port named "${text}"`);
      m.key.in_port = n;
      m.mask.in_port = 0xffff;
    },
    format(m, ports) {
      if (m.mask.in_port === 0) return undefined;
      return `in_port=${ports.name(m.key.in_port) ?? m.key.in_port}`;
    },
  },
  {
    ...NET,
    parse(m, text, ports) {
      for (const t of text.split("/")) {
        if (/^(0x[0-9a-fA-F]+|\d+)$/.test(t) && BigInt(t) > 0xffffffffn) {
          throw new MatchError(`${t} does not fit net's 32 bits (Open vSwitch's metadata has 64)`);
        }
      }
      NET.parse(m, text, ports);
    },
  },
  {
    name: "tun_id",
    aliases: ["tunnel_id"],
    help: "the tunnel key: VXLAN/Geneve VNI, GRE key, STT context (value[/mask])",
    bits: 64,
    parse(m, text) {
      const [v, mk] = splitMask(text);
      const value = parseU64(v);
      const mask = mk === undefined ? 2n ** 64n - 1n : parseU64(mk);
      m.mask.tun_id = mask;
      m.key.tun_id = value & mask;
    },
    format(m) {
      if (m.mask.tun_id === 0n) return undefined;
      return m.mask.tun_id === 2n ** 64n - 1n
        ? `tun_id=${m.key.tun_id}`
        : `tun_id=0x${hex(m.key.tun_id)}/0x${hex(m.mask.tun_id)}`;
    },
  },
  // An IPv6 address under tun_src can only mean tun_ipv6_src: warren's
  // spelling from before it had Open vSwitch's, kept because it is
  // unambiguous.
  addrField("tun_src", "tun_src", "any", "the outer IPv4 source address [/prefix]"),
  addrField("tun_dst", "tun_dst", "any", "the outer IPv4 destination address [/prefix]"),
  addrField("tun_ipv6_src", "tun_src", 6, "the outer IPv6 source address [/prefix]"),
  addrField("tun_ipv6_dst", "tun_dst", 6, "the outer IPv6 destination address [/prefix]"),
  intField("tun_tos", "tun_tos", 8, "the outer TOS byte"),
  intField("tun_ttl", "tun_ttl", 8, "the outer TTL"),
  {
    name: "tun_flags",
    help: "tunnel flags, each +set or -clear: oam, df, csum, key (tun_flags=+df-csum)",
    parse: parseTunFlags,
    format(m) {
      const parts = TUN_FLAG_NAMES.filter(([, bit]) => m.mask.tun_flags & bit)
        .map(([n, bit]) => `${m.key.tun_flags & bit ? "+" : "-"}${n}`);
      return parts.length ? `tun_flags=${parts.join("")}` : undefined;
    },
  },
  intField("geneve_class", "gnv_class", 16, "class of the first Geneve option"),
  intField("geneve_type", "gnv_type", 8, "type of the first Geneve option"),
  {
    name: "geneve_data",
    help: "first bytes (up to 8) of the first Geneve option's data, hex (0xdeadbeef[/mask])",
    parse: parseGeneveData,
    format: formatGeneveData,
  },
  macField("dl_src", "eth_src", "Ethernet source [/mask]", ["eth_src"]),
  macField("dl_dst", "eth_dst", "Ethernet destination [/mask]", ["eth_dst"]),
  intField("dl_type", "eth_type", 16, "EtherType (after VLAN tags)", {
    aliases: ["eth_type"],
    hex: true,
  }),
  {
    ...intField("vlan_tci", "vlan_tci", 16, "the outer VLAN tag's TCI, 0x1000 set when tagged"),
    format: formatVlan,
  },
  {
    ...intField(
      "dl_vlan",
      "vlan_tci",
      12,
      "VLAN id of the outer tag (implies a tag), 0xffff for none",
      {
        implies: tagged,
        printedBy: "vlan_tci",
      },
    ),
    parse(m, text) {
      if (/^(0xffff|65535)$/i.test(text)) {
        // Open vSwitch's "no VLAN tag".
        m.key.vlan_tci = 0;
        m.mask.vlan_tci = 0xffff;
        return;
      }
      const [v, mk] = splitMask(text);
      setBits(
        m,
        "vlan_tci",
        0,
        12,
        parseUint(v, 0x0fff),
        mk === undefined ? 0x0fff : parseUint(mk, 0x0fff),
      );
      tagged(m);
    },
  },
  intField("vlan_vid", "vlan_tci", 13, "VLAN id with 0x1000 for tagged (OpenFlow 1.2's vlan_vid)", {
    printedBy: "vlan_tci",
  }),
  intField("dl_vlan_pcp", "vlan_tci", 3, "VLAN priority of the outer tag (implies a tag)", {
    shift: 13,
    aliases: ["vlan_pcp"],
    implies: tagged,
    printedBy: "vlan_tci",
  }),
  addrField("nw_src", "ip_src", 4, "IPv4 source [/prefix]", IP4, ["ip_src"]),
  addrField("nw_dst", "ip_dst", 4, "IPv4 destination [/prefix]", IP4, ["ip_dst"]),
  addrField("ipv6_src", "ip_src", 6, "IPv6 source [/prefix]", IP6),
  addrField("ipv6_dst", "ip_dst", 6, "IPv6 destination [/prefix]", IP6),
  addrField("arp_spa", "ip_src", 4, "ARP sender address [/prefix]", ARP),
  addrField("arp_tpa", "ip_dst", 4, "ARP target address [/prefix]", ARP),
  intField("arp_op", "ip_proto", 8, "ARP opcode", { prereq: ARP }),
  intField("nw_proto", "ip_proto", 8, "IP protocol", { prereq: IP_ANY, aliases: ["ip_proto"] }),
  {
    ...intField("nw_tos", "ip_tos", 6, "the TOS byte's DSCP bits, as the byte (a multiple of 4)", {
      shift: 2,
      inPlace: true,
      prereq: IP_ANY,
    }),
    format: formatTos,
  },
  intField("ip_dscp", "ip_tos", 6, "DSCP, 0..63", {
    shift: 2,
    prereq: IP_ANY,
    printedBy: "nw_tos",
  }),
  intField("nw_ecn", "ip_tos", 2, "ECN, 0..3", {
    prereq: IP_ANY,
    aliases: ["ip_ecn"],
    printedBy: "nw_tos",
  }),
  {
    name: "nw_frag",
    aliases: ["ip_frag"],
    help: "fragments: no, yes, first, later or not_later",
    prereq: IP_ANY,
    parse(m, text) {
      const vm = own(FRAG_NAMES, text);
      if (!vm) throw new MatchError(`"${text}" is not no, yes, first, later or not_later`);
      m.key.ip_frag = vm[0];
      m.mask.ip_frag = vm[1];
    },
    format(m) {
      if (!m.mask.ip_frag) return undefined;
      const name = Object.entries(FRAG_NAMES)
        .find(([, [k, mk]]) => k === m.key.ip_frag && mk === m.mask.ip_frag)?.[0];
      return `nw_frag=${name ?? `${m.key.ip_frag}/${m.mask.ip_frag}`}`;
    },
  },
  intField("tp_src", "tp_src", 16, "TCP/UDP/SCTP source port [/mask]", {
    prereq: TP,
    aliases: ["tcp_src", "udp_src", "sctp_src"],
  }),
  intField("tp_dst", "tp_dst", 16, "TCP/UDP/SCTP destination port [/mask]", {
    prereq: TP,
    aliases: ["tcp_dst", "udp_dst", "sctp_dst"],
  }),
  intField("icmp_type", "tp_src", 8, "ICMP type", { prereq: ICMP4, aliases: ["icmpv4_type"] }),
  intField("icmp_code", "tp_dst", 8, "ICMP code", { prereq: ICMP4, aliases: ["icmpv4_code"] }),
  intField("icmpv6_type", "tp_src", 8, "ICMPv6 type", { prereq: ICMP6 }),
  intField("icmpv6_code", "tp_dst", 8, "ICMPv6 code", { prereq: ICMP6 }),
];

/**
 * Names that mean another field under another packet type, as in Open
 * vSwitch, where they share storage: `arp,nw_src=…` is `arp_spa`,
 * `icmp,tp_src=…` is `icmp_type`, `icmp6,icmp_type=…` is `icmpv6_type`.
 */
const VIEWS: readonly [string, string][] = [
  ["nw_src", "arp_spa"],
  ["ip_src", "arp_spa"],
  ["nw_dst", "arp_tpa"],
  ["ip_dst", "arp_tpa"],
  ["nw_proto", "arp_op"],
  ["ip_proto", "arp_op"],
  ["tp_src", "icmp_type"],
  ["tp_src", "icmpv6_type"],
  ["tp_dst", "icmp_code"],
  ["tp_dst", "icmpv6_code"],
  ["icmp_type", "icmpv6_type"],
  ["icmp_code", "icmpv6_code"],
  ["icmpv6_type", "icmp_type"],
  ["icmpv6_code", "icmp_code"],
];

/**
 * Open vSwitch fields the datapath does not match on yet: their
 * prerequisites, and what each is. Each moves into {@link FIELDS} once the
 * flow key carries it.
 */
export const PENDING_FIELDS: Readonly<Record<string, { prereq: Prereq; what: string }>> = {
  nw_ttl: { prereq: IP_ANY, what: "the IP TTL or hop limit" },
  arp_sha: { prereq: ARP, what: "the ARP sender hardware address" },
  arp_tha: { prereq: ARP, what: "the ARP target hardware address" },
  ipv6_label: { prereq: IP6, what: "the IPv6 flow label" },
  nd_target: { prereq: ICMP6, what: "the neighbour discovery target" },
  nd_sll: { prereq: ICMP6, what: "the neighbour discovery source link-layer address" },
  nd_tll: { prereq: ICMP6, what: "the neighbour discovery target link-layer address" },
};

/** Open vSwitch fields warren has no counterpart for, and why. */
const ABSENT_FIELDS: readonly [RegExp, string][] = [
  [/^x{0,2}reg\d+$/, "warren has one table, so no registers to carry between tables"],
  [/^ct_/, "warren does not track connections"],
  [
    /^tun_metadata\d+$/,
    "warren matches the first Geneve option with geneve_class, geneve_type and geneve_data",
  ],
  [/^(mpls_|mpls$)/, "warren does not parse MPLS"],
  [/^(tun_gbp_|tun_erspan_|tun_gtpu_|gtpu_)/, "warren has no VXLAN-GBP, ERSPAN or GTP-U tunnels"],
  [/^tcp_flags$/, "warren does not match on TCP flags"],
  [
    /^(pkt_mark|skb_priority|recirc_id|dp_hash|conj_id|packet_type|actset_output|in_port_oxm)$/,
    "it is Open vSwitch's internal state, which warren does not have",
  ],
];

/** Why warren lacks the Open vSwitch field `name`, or undefined if it is none of those. */
export function absentField(name: string): MatchError | undefined {
  const absent = ABSENT_FIELDS.find(([re]) => re.test(name));
  return absent && new MatchError(`${name} is an Open vSwitch field warren lacks: ${absent[1]}`);
}

/** A name and the field it means under some packet type. */
interface Spelling {
  field: FieldDef;
  prereq?: Prereq;
}

const BY_NAME = new Map<string, FieldDef>();
const SPELLINGS = new Map<string, Spelling[]>();
for (const f of FIELDS) {
  BY_NAME.set(f.name, f);
  for (const name of [f.name, ...(f.aliases ?? [])]) {
    SPELLINGS.set(name, [{ field: f, prereq: f.prereq }]);
  }
}
for (const [name, target] of VIEWS) {
  const f = BY_NAME.get(target)!;
  SPELLINGS.get(name)!.push({ field: f, prereq: f.prereq });
}

/** The field called `name` (Open vSwitch's name or an alias), or undefined. */
export function field(name: string): FieldDef | undefined {
  return SPELLINGS.get(name)?.[0].field;
}

/** Whether `name` is a name a match field goes by, known or not to warren. */
export function isFieldName(name: string): boolean {
  return SPELLINGS.has(name) || Object.hasOwn(PENDING_FIELDS, name) ||
    ABSENT_FIELDS.some(([re]) => re.test(name));
}

/** The shorthand that says `c` exactly, or the EtherType's alone, if any. */
function shorthandOf(c: Context): string | undefined {
  if (c.eth === undefined) return undefined;
  const list = Object.entries(SHORTHANDS);
  return (list.find(([, s]) => s.eth === c.eth && s.proto === c.proto) ??
    list.find(([, s]) => s.eth === c.eth && s.proto === undefined))?.[0];
}

function describe(c: Context): string {
  const short = shorthandOf(c);
  const s = short ? SHORTHANDS[short] : undefined;
  const parts = [short ?? `dl_type=0x${hex(c.eth!).padStart(4, "0")}`];
  if (c.proto !== undefined && s?.proto !== c.proto) parts.push(`nw_proto=${c.proto}`);
  return parts.join(",");
}

function orList(words: readonly string[]): string {
  return words.length < 2
    ? words.join("")
    : `${words.slice(0, -1).join(", ")} or ${words[words.length - 1]}`;
}

/**
 * The field `name` means in context `c`, for the match item `token`
 * (`name=value`). Throws a MatchError saying what is missing: an unknown
 * field, one the datapath lacks, or a prerequisite.
 */
export function resolveField(name: string, c: Context, token: string): FieldDef {
  const spellings = SPELLINGS.get(name);
  if (!spellings) {
    const pending = own(PENDING_FIELDS, name);
    if (pending) {
      throw new MatchError(
        `warren's datapath does not match on ${pending.what} yet (it needs ${
          orList(pending.prereq)
        })`,
      );
    }
    const absent = absentField(name);
    if (absent) throw absent;
    throw new MatchError(`${name} is not a match field`);
  }
  const found = spellings.find((s) => holds(s.prereq, c));
  if (found) return found.field;
  const words = [...new Set(spellings.flatMap((s) => s.prereq ?? []))];
  const example = words.find((w) => name.startsWith(`${w}_`)) ?? words[0];
  throw new MatchError(
    `${name} needs ${orList(words)}, ${
      c.eth === undefined
        ? `which the match does not say (for example "${example},${token}")`
        : `and the match says ${describe(c)}`
    }`,
  );
}

/** Applies a shorthand such as `tcp` to `m`; false when `word` is none. */
export function applyShorthand(m: Match, word: string): boolean {
  const s = own(SHORTHANDS, word);
  if (!s) return false;
  m.key.eth_type = s.eth;
  m.mask.eth_type = 0xffff;
  if (s.proto !== undefined) {
    m.key.ip_proto = s.proto;
    m.mask.ip_proto = 0xff;
  }
  return true;
}

// Per mask, the fields that print something for it: a dump of a million
// flows under a few masks asks each field once per mask instead of once
// per flow.
const fieldsOfMask = new WeakMap<FlowKey, FieldDef[]>();
const NO_PORTS: PortNames = { number: () => undefined, name: () => undefined };
// in_port and net print first, before the shorthand: where the packet came
// from, then what it is.
const LEADING = FIELDS.slice(0, 2);
const PRINTERS = FIELDS.slice(2).filter((f) => f.format);

function maskedFields(mask: FlowKey): FieldDef[] {
  let list = fieldsOfMask.get(mask);
  if (!list) {
    // With the mask as the key every masked bit is set: a field prints
    // something exactly when the mask has bits for it. The V6 flag is
    // probed both ways, so both families' tunnel addresses are found.
    const probes: Match[] = [{ key: mask, mask }];
    if (mask.tun_flags & TunFlag.V6) {
      probes.push({ key: { ...mask, tun_flags: mask.tun_flags & ~TunFlag.V6 }, mask });
    }
    list = PRINTERS.filter((f) => probes.some((p) => f.format!(p, NO_PORTS) !== undefined));
    fieldsOfMask.set(mask, list);
  }
  return list;
}

/** The match as Open vSwitch-style text, shorthands first. */
export function formatMatch(m: Match, ports: PortNames): string {
  const parts: string[] = [];
  for (const f of LEADING) {
    const text = f.format!(m, ports);
    if (text) parts.push(text);
  }
  const c = contextOf(m);
  const short = shorthandOf(c);
  if (short) parts.push(short);
  const shortProto = short !== undefined && SHORTHANDS[short].proto !== undefined;
  for (const f of maskedFields(m.mask)) {
    // A shorthand already says the EtherType (and protocol).
    if (short && (f.name === "dl_type" || (shortProto && f.name === "nw_proto"))) continue;
    // Fields that share a member print by what the packet is.
    if (!holds(f.prereq, c)) continue;
    const text = f.format!(m, ports);
    if (text) parts.push(text);
  }
  return parts.join(",");
}
