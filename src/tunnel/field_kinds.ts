/**
 * How each kind of match field reads its text into a {@link Match} and
 * prints it back: integers under a mask (at a shift within a key member),
 * addresses with a prefix or a mask, MACs, and the fields with a syntax of
 * their own (flag sets, Geneve option data, the VLAN tag and TOS byte as
 * Open vSwitch prints them).
 *
 * @module
 */

import { formatMac, parseMac } from "../maps/codec.ts";
import { TunFlag } from "../maps/layouts.ts";
import { formatAddr, isZero, maskPrefix, prefixMask, readAddr } from "./addr.ts";
import {
  hex,
  type IntMember,
  type Match,
  MatchError,
  parseUint,
  type PortNames,
  setBits,
  splitMask,
} from "./match.ts";
import type { Prereq } from "./prereqs.ts";

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

type AddrMember = "tun_src" | "tun_dst" | "ip_src" | "ip_dst" | "nd_target";
type MacMember = "eth_src" | "eth_dst" | "arp_sha" | "arp_tha";

const VLAN_PRESENT = 0x1000;

/** How {@link intField} places and prints an integer field. */
export interface IntOptions {
  /** Where the field's bits start in the member. */
  shift?: number;
  prereq?: Prereq;
  aliases?: string[];
  /** Runs after the field is set: a VLAN field also says "tagged". */
  implies?: (m: Match) => void;
  /** The value is written in place (nw_tos's 0xfc bits), not shifted down. */
  inPlace?: boolean;
  /** Prints values in hex with this many digits (dl_type, ipv6_label). */
  hexDigits?: number;
  /** No format: another field prints these bits. */
  printedBy?: string;
}

/** An integer field: `width` bits at `shift` within a key member. */
export function intField(
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
      const h = (n: number) => `0x${hex(n * scale).padStart(options.hexDigits ?? 0, "0")}`;
      if (mask !== max) return `${name}=${h(value)}/${h(mask)}`;
      return `${name}=${options.hexDigits ? h(value) : value * scale}`;
    };
  }
  return def;
}

// An address and its mask are read here, then copied into the match's
// own arrays once the field is accepted: a refused one leaves the match as
// it was, and no typed array is made per flow (each is a malloc).
const ADDR = new Uint8Array(16);
const ADDR_MASK = new Uint8Array(16);

/**
 * An address field. `family` says which addresses it takes: a tunnel
 * address field takes either (the family is the V6 flag's business) and
 * prints only when the flag says its own family.
 */
export function addrField(
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
      const key = ADDR, mask = ADDR_MASK;
      let v6;
      try {
        v6 = readAddr(a, key);
      } catch {
        throw new MatchError(`"${a}" is not an IP address`);
      }
      if ((family === 4 && v6) || (family === 6 && !v6)) {
        throw new MatchError(`"${a}" is not an IPv${family} address`);
      }
      if (p === undefined) {
        prefixMask(v6 ? 128 : 32, mask);
      } else if (/^\d+$/.test(p)) {
        const prefix = Number(p);
        if (prefix > (v6 ? 128 : 32)) {
          throw new MatchError(`prefix /${p} is too long for ${a}`);
        }
        prefixMask(prefix, mask);
      } else {
        try {
          if (readAddr(p, mask) !== v6) throw new Error();
        } catch {
          throw new MatchError(`"${p}" is neither a prefix length nor a mask`);
        }
      }
      const other = member === "tun_src" ? "tun_dst" : "tun_src";
      const otherSet = tunnel && !isZero(m.mask[other]);
      if (otherSet && !isZero(mask) && ((m.key.tun_flags & TunFlag.V6) !== 0) !== v6) {
        throw new MatchError(
          `${a} is IPv${v6 ? 6 : 4} and the other tunnel address is not: ` +
            "a tunnel's outer header has one family",
        );
      }
      const k = m.key[member], mk = m.mask[member];
      for (let i = 0; i < 16; i++) {
        k[i] = key[i] & mask[i];
        mk[i] = mask[i];
      }
      if (tunnel) {
        // One outer header, one family: the V6 flag says which, matched
        // exactly while either address is.
        const flag = otherSet ? (m.key.tun_flags & TunFlag.V6) !== 0 : v6;
        const matched = otherSet || !isZero(mask);
        m.mask.tun_flags = matched ? m.mask.tun_flags | TunFlag.V6 : m.mask.tun_flags & ~TunFlag.V6;
        m.key.tun_flags = matched && flag
          ? m.key.tun_flags | TunFlag.V6
          : m.key.tun_flags & ~TunFlag.V6;
      }
    },
    format(m) {
      const mask = m.mask[member];
      if (isZero(mask)) return undefined;
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

/** A MAC address field, with an optional /mask. */
export function macField(
  name: string,
  member: MacMember,
  help: string,
  aliases?: string[],
  prereq?: Prereq,
): FieldDef {
  return {
    name,
    aliases,
    help,
    prereq,
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
export const TUN_FLAG_NAMES: [string, number][] = [
  ["oam", TunFlag.OAM],
  ["df", TunFlag.DF],
  ["csum", TunFlag.CSUM],
  ["key", TunFlag.KEY],
];
const TUN_FLAGS_HELP = "give +flag or -flag (oam, df, csum, key), or a number (bit 0 is oam)";

/** tun_flags: +name-name, or a number (bit 0 is oam) with an optional mask. */
export function parseTunFlags(m: Match, text: string): void {
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
  for (const [set, bit] of signedFlags(text, TUN_FLAG_NAMES, TUN_FLAGS_HELP)) {
    m.mask.tun_flags |= bit;
    m.key.tun_flags = set ? m.key.tun_flags | bit : m.key.tun_flags & ~bit;
  }
}

/**
 * Flags written `+name-name…`, a bare first name being +name as in Open
 * vSwitch: each as whether it is set and its bit, in order.
 */
function signedFlags(
  text: string,
  names: readonly [string, number][],
  help: string,
): [boolean, number][] {
  const re = new RegExp(
    `([+-]?)(${names.map(([n]) => n.replace(/[[\]]/g, "\\$&")).join("|")})`,
    "y",
  );
  const out: [boolean, number][] = [];
  if (!text) throw new MatchError(help);
  for (let at = 0; at < text.length;) {
    re.lastIndex = at;
    const r = re.exec(text);
    if (!r || (r[1] === "" && at > 0)) {
      throw new MatchError(`"${text.slice(at)}" is not +flag or -flag; ${help}`);
    }
    out.push([r[1] !== "-", names.find(([n]) => n === r[2])![1]]);
    at = re.lastIndex;
  }
  return out;
}

/** TCP's flags by Open vSwitch's names, bit 0 first; the top three have none. */
const TCP_FLAG_NAMES: [string, number][] = [
  "fin",
  "syn",
  "rst",
  "psh",
  "ack",
  "urg",
  "ece",
  "cwr",
  "ns",
  "[200]",
  "[400]",
  "[800]",
].map((n, i) => [n, 1 << i]);
const TCP_FLAGS_ALL = 0x0fff;
const TCP_FLAGS_HELP =
  "give +flag-flag (fin, syn, rst, psh, ack, urg, ece, cwr, ns), flag|flag, or a 12-bit number[/mask]";

/**
 * tcp_flags as Open vSwitch reads them: `+syn-ack` for some flags (each
 * once), `syn|ack` or a number for all twelve bits, `value/mask`.
 */
export function parseTcpFlags(m: Match, text: string): void {
  let value = 0, mask = TCP_FLAGS_ALL;
  if (/^[+-]/.test(text)) {
    mask = 0;
    for (const [set, bit] of signedFlags(text, TCP_FLAG_NAMES, TCP_FLAGS_HELP)) {
      if (mask & bit) {
        const name = TCP_FLAG_NAMES.find(([, b]) => b === bit)![0];
        throw new MatchError(`${name} is given twice: each TCP flag can be given once`);
      }
      mask |= bit;
      if (set) value |= bit;
    }
  } else if (text.includes("/")) {
    const [v, mk] = splitMask(text);
    value = parseUint(v, TCP_FLAGS_ALL);
    mask = parseUint(mk!, TCP_FLAGS_ALL);
  } else {
    for (const part of text.split("|")) {
      const bit = TCP_FLAG_NAMES.find(([n]) => n === part)?.[1] ??
        (/^(0x[0-9a-fA-F]+|\d+)$/.test(part) ? parseUint(part, TCP_FLAGS_ALL) : undefined);
      if (bit === undefined) throw new MatchError(`"${part}" is not a TCP flag; ${TCP_FLAGS_HELP}`);
      value |= bit;
    }
  }
  m.mask.tcp_flags = mask;
  m.key.tcp_flags = value & mask;
}

/** tcp_flags as Open vSwitch prints them: `syn|ack` (or 0) for all bits, else `+syn-ack`. */
export function formatTcpFlags(m: Match): string | undefined {
  const mask = m.mask.tcp_flags;
  if (!mask) return undefined;
  const key = m.key.tcp_flags;
  if (mask === TCP_FLAGS_ALL) {
    return `tcp_flags=${TCP_FLAG_NAMES.filter(([, b]) => key & b).map(([n]) => n).join("|") || 0}`;
  }
  return `tcp_flags=${
    TCP_FLAG_NAMES.filter(([, b]) => mask & b).map(([n, b]) => (key & b ? "+" : "-") + n).join("")
  }`;
}

/** geneve_data: 1 to 8 bytes of hex, with an optional mask. */
export function parseGeneveData(m: Match, text: string): void {
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

/** geneve_data as it reads back: as many bytes as its mask covers. */
export function formatGeneveData(m: Match): string | undefined {
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
export function formatVlan(m: Match): string | undefined {
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

/** Marks `m` as matching tagged frames only: dl_vlan and dl_vlan_pcp imply a tag. */
export function tagged(m: Match): void {
  m.mask.vlan_tci |= VLAN_PRESENT;
  m.key.vlan_tci |= VLAN_PRESENT;
}

/**
 * The TOS byte as Open vSwitch prints it: nw_tos for the whole DSCP,
 * ip_dscp under a partial mask, nw_ecn for the ECN bits.
 */
export function formatTos(m: Match): string | undefined {
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
