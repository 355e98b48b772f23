/**
 * Match fields in Open vSwitch's words, and how each maps onto the
 * datapath's flow key: `nw_dst=10.1.0.0/16` sets `ip_dst` and its mask,
 * `dl_vlan=10` sets twelve bits of `vlan_tci` and the "tagged" bit.
 *
 * A {@link Match} is a flow key and a mask of the same shape; every field
 * is an exact value or a value under a mask, and anything unset is
 * wildcarded.
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

/** MatchError is a field value that cannot be parsed or is not allowed. */
export class MatchError extends Error {
  /** The field name. */
  readonly field: string;

  /** Builds the error for `field`. */
  constructor(field: string, message: string) {
    super(message);
    this.name = "MatchError";
    this.field = field;
  }
}

type IntMember =
  | "in_port"
  | "tun_flags"
  | "tun_tos"
  | "tun_ttl"
  | "ip_proto"
  | "ip_tos"
  | "ip_frag"
  | "eth_type"
  | "vlan_tci"
  | "tp_src"
  | "tp_dst"
  | "gnv_class"
  | "gnv_type";
type AddrMember = "tun_src" | "tun_dst" | "ip_src" | "ip_dst";
type MacMember = "eth_src" | "eth_dst";

/** What a field needs the packet to be, checked once the whole match is read. */
interface Prereq {
  /** Allowed EtherTypes (the match must pin eth_type to one of them). */
  eth?: readonly number[];
  /** Allowed IP protocols (the match must pin ip_proto to one of them). */
  proto?: readonly number[];
  /** How to say it in an error. */
  what: string;
}

/** One match field. */
export interface FieldDef {
  /** Open vSwitch's name. */
  name: string;
  /** Other accepted names. */
  aliases?: readonly string[];
  /** What the value means, for --help and errors. */
  help: string;
  /** What the packet must be for the field to make sense. */
  prereq?: Prereq;
  /** Sets the field in `m` from its text. */
  parse(m: Match, text: string, ports: PortNames): void;
  /** The field's text in `m`, or undefined when it is wildcarded. */
  format(m: Match, ports: PortNames): string | undefined;
}

const ETH_IP = 0x0800;
const ETH_IPV6 = 0x86dd;
const ETH_ARP = 0x0806;
const IP_ANY = [ETH_IP, ETH_IPV6] as const;
const TP = { proto: [6, 17, 132], what: "tcp, udp or sctp" };
const VLAN_PRESENT = 0x1000;

/** Parses a non-negative integer in decimal or 0x hex, at most `max`. */
export function parseInt(field: string, text: string, max: number): number {
  if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(text)) {
    throw new MatchError(field, `${field}: "${text}" is not a number`);
  }
  const n = Number(text);
  if (n > max) throw new MatchError(field, `${field}: ${text} is larger than ${max}`);
  return n;
}

function splitMask(text: string): [string, string | undefined] {
  const i = text.indexOf("/");
  return i < 0 ? [text, undefined] : [text.slice(0, i), text.slice(i + 1)];
}

/** An integer field: `width` bits at `shift` within a key member. */
function intField(
  name: string,
  member: IntMember,
  width: number,
  help: string,
  options: { shift?: number; prereq?: Prereq; aliases?: string[]; extra?: (m: Match) => void } = {},
): FieldDef {
  const shift = options.shift ?? 0;
  const full = (2 ** width - 1) * 2 ** shift;
  return {
    name,
    aliases: options.aliases,
    help,
    prereq: options.prereq,
    parse(m, text) {
      const [v, mk] = splitMask(text);
      const value = parseInt(name, v, 2 ** width - 1);
      const mask = mk === undefined ? 2 ** width - 1 : parseInt(name, mk, 2 ** width - 1);
      const bits = (mask * 2 ** shift) & full;
      m.mask[member] = (m.mask[member] & ~full) | bits;
      m.key[member] = (m.key[member] & ~full) | ((value * 2 ** shift) & bits);
      options.extra?.(m);
    },
    format(m) {
      const mask = (m.mask[member] & full) / 2 ** shift;
      if (mask === 0) return undefined;
      const value = (m.key[member] & full) / 2 ** shift;
      return mask === 2 ** width - 1
        ? `${name}=${value}`
        : `${name}=0x${hex(value)}/0x${hex(mask)}`;
    },
  };
}

function hex(n: number | bigint): string {
  return n.toString(16);
}

function addrField(
  name: string,
  member: AddrMember,
  family: "4" | "6" | "any",
  help: string,
  prereq?: Prereq,
  aliases?: string[],
): FieldDef {
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
        throw new MatchError(name, `${name}: "${a}" is not an IP address`);
      }
      if ((family === "4" && addr.v6) || (family === "6" && !addr.v6)) {
        throw new MatchError(name, `${name}: "${a}" is not an IPv${family} address`);
      }
      let mask: Uint8Array;
      if (p === undefined) {
        mask = prefixMask(addr.v6 ? 128 : 32);
      } else if (/^\d+$/.test(p)) {
        const prefix = Number(p);
        if (prefix > (addr.v6 ? 128 : 32)) {
          throw new MatchError(name, `${name}: prefix /${p} is too long for ${a}`);
        }
        mask = prefixMask(prefix);
      } else {
        try {
          const mAddr = parseAddr(p);
          if (mAddr.v6 !== addr.v6) throw new Error();
          mask = mAddr.bytes;
        } catch {
          throw new MatchError(name, `${name}: "${p}" is neither a prefix length nor a mask`);
        }
      }
      m.mask[member] = mask;
      for (let i = 0; i < 16; i++) addr.bytes[i] &= mask[i];
      m.key[member] = addr.bytes;
      if (member === "tun_src" || member === "tun_dst") {
        // The family of a tunnel address is the V6 flag's business.
        m.mask.tun_flags |= TunFlag.V6;
        m.key.tun_flags = addr.v6 ? m.key.tun_flags | TunFlag.V6 : m.key.tun_flags & ~TunFlag.V6;
      }
    },
    format(m) {
      const mask = m.mask[member];
      if (mask.every((b) => b === 0)) return undefined;
      const v6 = member.startsWith("tun_")
        ? (m.key.tun_flags & TunFlag.V6) !== 0
        : m.key.eth_type === ETH_IPV6;
      const value = formatAddr(m.key[member], v6);
      const prefix = maskPrefix(mask, v6);
      if (prefix === (v6 ? 128 : 32)) return `${name}=${value}`;
      return prefix === undefined
        ? `${name}=${value}/${formatAddr(mask, v6)}`
        : `${name}=${value}/${prefix}`;
    },
  };
}

function macField(name: string, member: MacMember, help: string): FieldDef {
  return {
    name,
    help,
    parse(m, text) {
      const [v, mk] = splitMask(text);
      let value: Uint8Array, mask: Uint8Array;
      try {
        value = parseMac(v);
        mask = mk === undefined ? new Uint8Array(6).fill(0xff) : parseMac(mk);
      } catch {
        throw new MatchError(
          name,
          `${name}: "${text}" is not a MAC address (with an optional /mask)`,
        );
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

const TUN_FLAG_NAMES: [string, number][] = [["key", TunFlag.KEY], ["csum", TunFlag.CSUM], [
  "df",
  TunFlag.DF,
], [
  "oam",
  TunFlag.OAM,
]];

/** Every match field warren knows, in the order dumps print them. */
export const FIELDS: readonly FieldDef[] = [
  {
    name: "in_port",
    help: "the port the packet came in on, by name",
    parse(m, text, ports) {
      const n = ports.number(text);
      if (n === undefined) {
        throw new MatchError("in_port", `in_port: there is no port named "${text}"`);
      }
      m.key.in_port = n;
      m.mask.in_port = 0xffff;
    },
    format(m, ports) {
      if (m.mask.in_port === 0) return undefined;
      return `in_port=${ports.name(m.key.in_port) ?? m.key.in_port}`;
    },
  },
  {
    name: "tun_id",
    aliases: ["tunnel_id"],
    help: "the tunnel key: VXLAN/Geneve VNI, GRE key, STT context (value[/mask])",
    parse(m, text) {
      const [v, mk] = splitMask(text);
      const big = (t: string) => {
        if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(t)) {
          throw new MatchError("tun_id", `tun_id: "${t}" is not a number`);
        }
        const n = BigInt(t);
        if (n >= 2n ** 64n) throw new MatchError("tun_id", `tun_id: ${t} does not fit 64 bits`);
        return n;
      };
      const value = big(v);
      const mask = mk === undefined ? 2n ** 64n - 1n : big(mk);
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
  addrField("tun_src", "tun_src", "any", "the outer source address [/prefix]"),
  addrField("tun_dst", "tun_dst", "any", "the outer destination address [/prefix]"),
  intField("tun_tos", "tun_tos", 8, "the outer TOS byte"),
  intField("tun_ttl", "tun_ttl", 8, "the outer TTL"),
  {
    name: "tun_flags",
    help: "tunnel flags, each +set or -clear: key, csum, df, oam (tun_flags=+df-csum)",
    parse(m, text) {
      const re = /([+-])(key|csum|df|oam)/y;
      let at = 0;
      if (!text) {
        throw new MatchError("tun_flags", "tun_flags: give +flag or -flag (key, csum, df, oam)");
      }
      while (at < text.length) {
        re.lastIndex = at;
        const r = re.exec(text);
        if (!r) {
          throw new MatchError(
            "tun_flags",
            `tun_flags: "${text.slice(at)}" is not +flag or -flag (key, csum, df, oam)`,
          );
        }
        const bit = TUN_FLAG_NAMES.find(([n]) => n === r[2])![1];
        m.mask.tun_flags |= bit;
        m.key.tun_flags = r[1] === "+" ? m.key.tun_flags | bit : m.key.tun_flags & ~bit;
        at = re.lastIndex;
      }
    },
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
    parse(m, text) {
      const [v, mk] = splitMask(text);
      const bytesOf = (t: string) => {
        if (!/^0x([0-9a-fA-F]{2}){1,8}$/.test(t)) {
          throw new MatchError(
            "geneve_data",
            `geneve_data: "${t}" is not 0x followed by 1 to 8 bytes of hex`,
          );
        }
        const out = new Uint8Array(8);
        out.set(Uint8Array.from(t.slice(2).match(/../g)!, (h) => Number.parseInt(h, 16)));
        return { out, len: (t.length - 2) / 2 };
      };
      const value = bytesOf(v);
      const mask = mk === undefined
        ? (() => {
          const full = new Uint8Array(8);
          full.fill(0xff, 0, value.len);
          return full;
        })()
        : bytesOf(mk).out;
      m.mask.gnv_data = mask;
      m.key.gnv_data = value.out.map((b, i) => b & mask[i]);
    },
    format(m) {
      const mask = m.mask.gnv_data;
      if (mask.every((b) => b === 0)) return undefined;
      const last = mask.findLastIndex((b) => b !== 0) + 1;
      const h = (b: Uint8Array) =>
        "0x" + Array.from(b.subarray(0, last), (x) => x.toString(16).padStart(2, "0")).join("");
      return mask.subarray(0, last).every((b) => b === 0xff)
        ? `geneve_data=${h(m.key.gnv_data)}`
        : `geneve_data=${h(m.key.gnv_data)}/${h(mask)}`;
    },
  },
  macField("dl_src", "eth_src", "Ethernet source [/mask]"),
  macField("dl_dst", "eth_dst", "Ethernet destination [/mask]"),
  intField("dl_type", "eth_type", 16, "EtherType (after VLAN tags)", { aliases: ["eth_type"] }),
  intField(
    "vlan_tci",
    "vlan_tci",
    16,
    "the outer VLAN tag's TCI, 0x1000 set when tagged (value[/mask])",
  ),
  intField("dl_vlan", "vlan_tci", 12, "VLAN id of the outer tag (implies a tag)", {
    extra: (m) => {
      m.mask.vlan_tci |= VLAN_PRESENT;
      m.key.vlan_tci |= VLAN_PRESENT;
    },
  }),
  intField("dl_vlan_pcp", "vlan_tci", 3, "VLAN priority of the outer tag (implies a tag)", {
    shift: 13,
    extra: (m) => {
      m.mask.vlan_tci |= VLAN_PRESENT;
      m.key.vlan_tci |= VLAN_PRESENT;
    },
  }),
  addrField("nw_src", "ip_src", "4", "IPv4 source [/prefix]", { eth: [ETH_IP], what: "ip" }, [
    "ip_src",
  ]),
  addrField("nw_dst", "ip_dst", "4", "IPv4 destination [/prefix]", { eth: [ETH_IP], what: "ip" }, [
    "ip_dst",
  ]),
  addrField("ipv6_src", "ip_src", "6", "IPv6 source [/prefix]", { eth: [ETH_IPV6], what: "ipv6" }),
  addrField("ipv6_dst", "ip_dst", "6", "IPv6 destination [/prefix]", {
    eth: [ETH_IPV6],
    what: "ipv6",
  }),
  addrField("arp_spa", "ip_src", "4", "ARP sender address [/prefix]", {
    eth: [ETH_ARP],
    what: "arp",
  }),
  addrField("arp_tpa", "ip_dst", "4", "ARP target address [/prefix]", {
    eth: [ETH_ARP],
    what: "arp",
  }),
  intField("arp_op", "ip_proto", 8, "ARP opcode", { prereq: { eth: [ETH_ARP], what: "arp" } }),
  intField("nw_proto", "ip_proto", 8, "IP protocol", {
    prereq: { eth: IP_ANY, what: "ip or ipv6" },
    aliases: ["ip_proto"],
  }),
  {
    name: "nw_tos",
    help: "the TOS byte's DSCP bits, as the byte (a multiple of 4)",
    prereq: { eth: IP_ANY, what: "ip or ipv6" },
    parse(m, text) {
      const tos = parseInt("nw_tos", text, 255);
      if (tos % 4) {
        throw new MatchError("nw_tos", `nw_tos: ${tos} has ECN bits set; use nw_ecn for those`);
      }
      m.key.ip_tos = (m.key.ip_tos & 0x03) | tos;
      m.mask.ip_tos |= 0xfc;
    },
    format(m) {
      return (m.mask.ip_tos & 0xfc) === 0xfc ? `nw_tos=${m.key.ip_tos & 0xfc}` : undefined;
    },
  },
  intField("ip_dscp", "ip_tos", 6, "DSCP, 0..63", {
    shift: 2,
    prereq: { eth: IP_ANY, what: "ip or ipv6" },
  }),
  intField("nw_ecn", "ip_tos", 2, "ECN, 0..3", {
    prereq: { eth: IP_ANY, what: "ip or ipv6" },
    aliases: ["ip_ecn"],
  }),
  {
    name: "nw_frag",
    aliases: ["ip_frag"],
    help: "fragments: no, yes, first, later or not_later",
    prereq: { eth: IP_ANY, what: "ip or ipv6" },
    parse(m, text) {
      const table: Record<string, [number, number]> = {
        no: [0, 1],
        yes: [1, 1],
        first: [Frag.FIRST, 3],
        later: [Frag.LATER, 3],
        not_later: [0, 2],
      };
      const vm = table[text];
      if (!vm) {
        throw new MatchError(
          "nw_frag",
          `nw_frag: "${text}" is not no, yes, first, later or not_later`,
        );
      }
      m.key.ip_frag = vm[0];
      m.mask.ip_frag = vm[1];
    },
    format(m) {
      const k = `${m.key.ip_frag}/${m.mask.ip_frag}`;
      const names: Record<string, string> = {
        "0/1": "no",
        "1/1": "yes",
        "1/3": "first",
        "3/3": "later",
        "0/2": "not_later",
      };
      return m.mask.ip_frag ? `nw_frag=${names[k] ?? k}` : undefined;
    },
  },
  intField("tp_src", "tp_src", 16, "TCP/UDP/SCTP source port [/mask]", {
    prereq: TP,
    aliases: ["tcp_src", "udp_src"],
  }),
  intField("tp_dst", "tp_dst", 16, "TCP/UDP/SCTP destination port [/mask]", {
    prereq: TP,
    aliases: ["tcp_dst", "udp_dst"],
  }),
  intField("icmp_type", "tp_src", 8, "ICMP type", { prereq: { proto: [1], what: "icmp" } }),
  intField("icmp_code", "tp_dst", 8, "ICMP code", { prereq: { proto: [1], what: "icmp" } }),
  intField("icmpv6_type", "tp_src", 8, "ICMPv6 type", { prereq: { proto: [58], what: "icmp6" } }),
  intField("icmpv6_code", "tp_dst", 8, "ICMPv6 code", { prereq: { proto: [58], what: "icmp6" } }),
];

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

const BY_NAME = new Map<string, FieldDef>();
for (const f of FIELDS) {
  BY_NAME.set(f.name, f);
  for (const a of f.aliases ?? []) BY_NAME.set(a, f);
}

/** The field called `name` (or an alias), or undefined. */
export function field(name: string): FieldDef | undefined {
  return BY_NAME.get(name);
}

const SHORTHAND_LIST = Object.entries(SHORTHANDS).map(([name, s]) => ({ name, ...s }));

/** The shorthand that says EtherType `eth` (and protocol `proto`), if any. */
function shorthandOf(
  eth: number | undefined,
  proto: number | undefined,
): { name: string; eth: number; proto?: number } | undefined {
  if (eth === undefined) return undefined;
  return SHORTHAND_LIST.find((s) => s.eth === eth && s.proto === proto) ??
    SHORTHAND_LIST.find((s) => s.eth === eth && s.proto === undefined);
}

/** Applies a shorthand such as `tcp` to `m`. */
export function applyShorthand(m: Match, word: string): boolean {
  const s = SHORTHANDS[word];
  if (!s) return false;
  m.key.eth_type = s.eth;
  m.mask.eth_type = 0xffff;
  if (s.proto !== undefined) {
    m.key.ip_proto = s.proto;
    m.mask.ip_proto = 0xff;
  }
  return true;
}

/** Throws a MatchError for the first field whose prerequisites `m` lacks. */
export function checkPrerequisites(m: Match, used: FieldDef[]): void {
  for (const f of used) {
    const p = f.prereq;
    if (!p) continue;
    if (p.eth && !(m.mask.eth_type === 0xffff && p.eth.includes(m.key.eth_type))) {
      throw new MatchError(
        f.name,
        `${f.name} needs the match to say ${p.what} first (for example "${
          p.what.split(" ")[0]
        },${f.name}=…")`,
      );
    }
    if (p.proto && !(m.mask.ip_proto === 0xff && p.proto.includes(m.key.ip_proto))) {
      throw new MatchError(f.name, `${f.name} needs the match to say ${p.what} first`);
    }
  }
}

// Per mask, the fields it has bits for: a dump of a million flows under a
// few masks asks each field once per mask instead of once per flow.
const fieldsOfMask = new WeakMap<FlowKey, FieldDef[]>();
const NO_PORTS: PortNames = { number: () => undefined, name: () => undefined };

function maskedFields(mask: FlowKey): FieldDef[] {
  let list = fieldsOfMask.get(mask);
  if (!list) {
    // With the mask as the key every masked bit is set: a field prints
    // something exactly when the mask has bits for it.
    const probe: Match = { key: mask, mask };
    list = FIELDS.slice(1).filter((f) => f.format(probe, NO_PORTS) !== undefined);
    fieldsOfMask.set(mask, list);
  }
  return list;
}

/** The match as Open vSwitch-style text, shorthands first. */
export function formatMatch(m: Match, ports: PortNames): string {
  const parts: string[] = [];
  const inPort = FIELDS[0].format(m, ports);
  if (inPort) parts.push(inPort);
  const eth = m.mask.eth_type === 0xffff ? m.key.eth_type : undefined;
  const proto = m.mask.ip_proto === 0xff ? m.key.ip_proto : undefined;
  const short = shorthandOf(eth, proto);
  if (short) parts.push(short.name);
  for (const f of maskedFields(m.mask)) {
    // A shorthand already says the EtherType (and protocol).
    if (short && (f.name === "dl_type" || (short.proto && f.name === "nw_proto"))) continue;
    // ARP reuses ip_proto and the address members under its own names.
    if (eth === ETH_ARP && (f.name === "nw_src" || f.name === "nw_dst" || f.name === "nw_proto")) {
      continue;
    }
    if (eth !== ETH_ARP && f.name.startsWith("arp_")) continue;
    if (eth === ETH_IPV6 && (f.name === "nw_src" || f.name === "nw_dst")) continue;
    if (eth !== ETH_IPV6 && f.name.startsWith("ipv6_")) continue;
    if (f.name === "ip_dscp" || f.name === "vlan_tci") continue;
    if (
      f.name.startsWith("icmp") &&
      !(proto === 1 && f.name.startsWith("icmp_") || proto === 58 && f.name.startsWith("icmpv6"))
    ) {
      continue;
    }
    if ((proto === 1 || proto === 58) && (f.name === "tp_src" || f.name === "tp_dst")) continue;
    const text = f.format(m, ports);
    if (text) parts.push(text);
  }
  // dl_vlan and dl_vlan_pcp speak for tagged packets; anything else about
  // the tag (untagged only, odd masks) is shown raw.
  const vlanNamed = (m.mask.vlan_tci & VLAN_PRESENT) && (m.key.vlan_tci & VLAN_PRESENT) &&
    (m.mask.vlan_tci & ~(0x0fff | 0xe000 | VLAN_PRESENT)) === 0 &&
    [0, 0x0fff].includes(m.mask.vlan_tci & 0x0fff) &&
    [0, 0xe000].includes(m.mask.vlan_tci & 0xe000);
  if (m.mask.vlan_tci && !vlanNamed) {
    const i = parts.findIndex((p) => p.startsWith("dl_vlan"));
    parts.splice(
      i < 0 ? parts.length : i,
      0,
      `vlan_tci=0x${hex(m.key.vlan_tci)}/0x${hex(m.mask.vlan_tci)}`,
    );
    return parts.filter((p) => !p.startsWith("dl_vlan")).join(",");
  }
  return parts.join(",");
}
