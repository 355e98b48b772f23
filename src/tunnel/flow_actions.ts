/**
 * Actions written the way Open vSwitch users write them: outputs to ports
 * by name or number, `in_port`, `set_tunnel(...)`, `set_tunnel:ID`,
 * `set_field` and `load` on tunnel fields, `set_field` on `net`,
 * `group:ID`, `drop`, `pass` (or `LOCAL`), `load:0->in_port`, and the
 * rewrites `mod_dl_*`, `mod_nw_*`, `mod_tp_*`, `dec_ttl`, `push_vlan`,
 * `strip_vlan` (`pop_vlan`) and `mod_vlan_*` (or `set_field` and `load` on
 * those fields, and on `ipv6_src`/`ipv6_dst`; masked, or into some bits of
 * a field, on addresses, ports and tun_id). What warren does not do is
 * refused with a sentence saying why and, where there is one, what to
 * write instead.
 *
 * @module
 */

import {
  type Addr,
  addrFromBigint,
  bigintBytes,
  bigintOfBytes,
  formatAddr,
  parseAddr,
} from "./addr.ts";
import { formatMac, parseMac } from "../maps/codec.ts";
import { absentField } from "./fields.ts";
import { FlowSyntaxError, SEPARATORS, split, type Token } from "./flow_tokens.ts";
import {
  type Match,
  MatchError,
  own,
  parseU64,
  parseUint,
  type PortNames,
  portNumber,
  reservedPort,
} from "./match.ts";

/** A Geneve option a tunnel key emits: class, type and data. */
export interface GeneveOption {
  /** Option class. */
  class: number;
  /** Option type; 0x80 set means critical. */
  type: number;
  /** Data, a multiple of 4 bytes. */
  data: Uint8Array;
}

/** set_tunnel: the tunnel fields an output to a flow-based port uses. */
export interface SetTunnel {
  /** Kind marker. */
  type: "set_tunnel";
  /** Tunnel key (VNI, GRE key, STT context). */
  id?: bigint;
  /**
   * The bits of `id` set, when not all: the others are the packet's own
   * (Open vSwitch's `set_field:ID/MASK->tun_id`). Only `id` goes with it.
   */
  idMask?: bigint;
  /** Remote endpoint. */
  dst?: Addr;
  /** Local endpoint. */
  src?: Addr;
  /** Outer TOS (DSCP bits; ECN follows the inner packet). */
  tos?: number;
  /** Outer TTL. */
  ttl?: number;
  /** Set DF on the outer header. */
  df?: boolean;
  /** Checksum the outer UDP/GRE header. */
  csum?: boolean;
  /** Geneve OAM bit. */
  oam?: boolean;
  /** Geneve options to emit. */
  geneve?: GeneveOption[];
}

/** A packet field a rewrite action sets, by the name warren prints it under. */
export type RewriteField =
  | "eth_src"
  | "eth_dst"
  | "nw_src"
  | "nw_dst"
  | "ipv6_src"
  | "ipv6_dst"
  | "ip_dscp"
  | "nw_ecn"
  | "nw_ttl"
  | "tp_src"
  | "tp_dst"
  | "vlan_vid"
  | "vlan_pcp"
  | "vlan_tci";

/**
 * A rewrite: `field` of the packet takes `value` (an address as a number),
 * or only its bits in `mask`, the others kept. The VLAN fields are those
 * of the outermost tag, and a frame without one gets an 802.1Q tag with the
 * rest of its TCI 0, as Open vSwitch's mod_vlan_vid and mod_vlan_pcp do;
 * vlan_tci's value is Open vSwitch's, 0x1000 (a tag is present) included.
 */
export interface SetField {
  /** Kind marker. */
  type: "set_field";
  /** The field. */
  field: RewriteField;
  /** Its new value, within the field's width (and within `mask`). */
  value: bigint;
  /**
   * Written as `set_field` on vlan_vid or vlan_pcp, which Open vSwitch
   * takes only where the packet is sure to have a tag (see {@link checkVlanActions}).
   */
  tagged?: true;
  /** The bits set, when not all: Open vSwitch's `set_field:V/M` and `load:V->F[a..b]`. */
  mask?: bigint;
}

/** One action, as written. */
export type ActionSpec =
  /** To the port of that name, or number when `port` is digits. */
  | { type: "output"; port: string }
  /** Back out of the (local) port the packet came in on. */
  | { type: "in_port" }
  /** `load:0->in_port`: the outputs after it may go to the port the packet came in on. */
  | { type: "clear_in_port" }
  | SetField
  /** One off the IP TTL or hop limit; the packet is dropped when it runs out. */
  | { type: "dec_ttl" }
  /** A new outermost VLAN tag with TPID `tpid`, its TCI 0. */
  | { type: "push_vlan"; tpid: number }
  /** The outermost VLAN tag off, if there is one. */
  | { type: "strip_vlan" }
  | SetTunnel
  | { type: "drop" }
  | { type: "pass" }
  /** A copy to each bucket of a replication group. */
  | { type: "group"; group: number }
  /** `set_field:N->net`: the packet takes network N and is looked up again. */
  | { type: "set_net"; net: number };

/** The largest group id, as in Open vSwitch (ids above it are reserved). */
export const MAX_GROUP_ID = 0xfffffeff;

/** A group id written in flow or group text. */
export function parseGroupId(text: string): number {
  return parseUint(text, MAX_GROUP_ID);
}

// Big tables repeat a few action lists a million times: parse each once.
// The lists handed out are frozen, since flows share them.
const actionCache = new Map<string, readonly ActionSpec[]>();

/** The actions of `text` (at offset `base` of its flow), each list parsed once. */
export function cachedActions(text: string, base: number): ActionSpec[] {
  let actions = actionCache.get(text);
  if (!actions) {
    actions = Object.freeze(parseActions(text, base).map((a) => Object.freeze(a)));
    if (actionCache.size >= 4096) actionCache.clear();
    actionCache.set(text, actions);
  }
  return actions as ActionSpec[];
}

/**
 * Reads an action list such as `set_tunnel(id=42,dst=192.0.2.2),output:vx0`.
 * An empty list is drop, as in Open vSwitch.
 */
export function parseActions(text: string, base = 0): ActionSpec[] {
  const items = split(text, base, SEPARATORS);
  if (items.length === 0) return [{ type: "drop" }];
  return items.map(parseAction);
}

/** What warren does have, for the end of "not an action" errors. */
const ACTIONS_HELP =
  "warren's actions are output:PORT (or a port number), in_port, set_tunnel(...), " +
  "set_tunnel:ID, set_field:VALUE->tun_id|tun_src|tun_dst|tun_ipv6_src|tun_ipv6_dst|tun_tos|" +
  "tun_ttl|net, mod_dl_src|mod_dl_dst:MAC, mod_nw_src|mod_nw_dst:IPv4, mod_nw_tos:TOS, " +
  "mod_nw_ecn:ECN, mod_nw_ttl:TTL, mod_tp_src|mod_tp_dst:PORT, dec_ttl, push_vlan:TPID, " +
  "strip_vlan, mod_vlan_vid:VID, mod_vlan_pcp:PCP, set_field:IPv6->ipv6_src|ipv6_dst, " +
  "set_field:VALUE/MASK->FIELD, load:0->in_port, group:ID, drop and pass";

/** Why warren has no such port to send to, and what to write instead. */
const RESERVED_OUTPUTS: Readonly<Record<string, string>> = {
  NORMAL:
    "warren has no NORMAL port (it is no learning switch): output to the ports the traffic should reach, for example output:web",
  FLOOD:
    "warren has no FLOOD port: list the ports, for example output:web1,output:web2 (several outputs replicate the packet)",
  ALL:
    "warren has no ALL port: list the ports, for example output:web1,output:web2 (several outputs replicate the packet)",
  CONTROLLER:
    "warren has no controller: pass hands a packet to the host's network stack, drop drops it",
  TABLE: "warren has one table, so there is none to send a packet through again",
  ANY: "ANY is no port to send to",
  NONE: "NONE is no port to send to",
};

/** Open vSwitch actions warren has no counterpart for, and why. */
const ABSENT_ACTIONS: readonly [RegExp, string][] = [
  [
    /^dec_ttl$/,
    "dec_ttl(ID,...) names controllers, and warren has no controller: write dec_ttl, " +
    "which drops (and counts) a packet whose TTL runs out",
  ],
  [
    /^(push_mpls|pop_mpls|set_mpls_label|set_mpls_tc|set_mpls_ttl|dec_mpls_ttl)$/,
    "warren does not do MPLS",
  ],
  [/^(resubmit|goto_table|write_metadata|clear_actions|write_actions)$/, "warren has one table"],
  [
    /^(bundle|bundle_load|select)$/,
    "warren has no bundles (outputs chosen by a hash): list the outputs, or use a group of type all",
  ],
  [/^(ct|ct_clear|nat)$/, "warren does not track connections"],
  [/^(enqueue|set_queue|pop_queue|meter)$/, "warren has no queues or meters"],
  [/^controller$/, RESERVED_OUTPUTS.CONTROLLER],
  [/^(move|push|pop)$/, "warren has no registers to move fields through"],
];

/** NXM and OXM field names, as `load:` writes them, by Open vSwitch's name. */
const NXM_NAMES: Readonly<Record<string, string>> = {
  NXM_NX_TUN_ID: "tun_id",
  NXM_NX_TUN_IPV4_SRC: "tun_src",
  NXM_NX_TUN_IPV4_DST: "tun_dst",
  NXM_NX_TUN_IPV6_SRC: "tun_ipv6_src",
  NXM_NX_TUN_IPV6_DST: "tun_ipv6_dst",
  NXM_NX_TUN_FLAGS: "tun_flags",
  NXM_OF_IN_PORT: "in_port",
  NXM_OF_ETH_SRC: "eth_src",
  NXM_OF_ETH_DST: "eth_dst",
  NXM_OF_VLAN_TCI: "vlan_tci",
  NXM_OF_IP_TOS: "nw_tos",
  NXM_OF_IP_SRC: "nw_src",
  NXM_OF_IP_DST: "nw_dst",
  NXM_NX_IPV6_SRC: "ipv6_src",
  NXM_NX_IPV6_DST: "ipv6_dst",
  OXM_OF_ETH_SRC: "eth_src",
  OXM_OF_ETH_DST: "eth_dst",
  OXM_OF_IPV4_SRC: "nw_src",
  OXM_OF_IPV4_DST: "nw_dst",
  OXM_OF_IPV6_SRC: "ipv6_src",
  OXM_OF_IPV6_DST: "ipv6_dst",
  OXM_OF_TCP_SRC: "tcp_src",
  OXM_OF_TCP_DST: "tcp_dst",
  OXM_OF_UDP_SRC: "udp_src",
  OXM_OF_UDP_DST: "udp_dst",
  NXM_NX_IP_ECN: "nw_ecn",
  NXM_NX_IP_TTL: "nw_ttl",
  NXM_OF_TCP_SRC: "tcp_src",
  NXM_OF_TCP_DST: "tcp_dst",
  NXM_OF_UDP_SRC: "udp_src",
  NXM_OF_UDP_DST: "udp_dst",
  NXM_NX_PKT_MARK: "pkt_mark",
};

/** Tunnel fields an action can set, and their widths in bits. */
const SETTABLE: Readonly<Record<string, number>> = {
  tun_id: 64,
  tunnel_id: 64,
  tun_src: 32,
  tun_dst: 32,
  tun_ipv6_src: 128,
  tun_ipv6_dst: 128,
  tun_tos: 8,
  tun_ttl: 8,
};

/** Packet fields the datapath rewrites, by every name `set_field` and `load` take. */
const REWRITES: Readonly<Record<string, RewriteField>> = {
  eth_src: "eth_src",
  dl_src: "eth_src",
  eth_dst: "eth_dst",
  dl_dst: "eth_dst",
  ip_src: "nw_src",
  nw_src: "nw_src",
  ip_dst: "nw_dst",
  nw_dst: "nw_dst",
  ipv6_src: "ipv6_src",
  ipv6_dst: "ipv6_dst",
  ip_dscp: "ip_dscp",
  nw_tos: "ip_dscp",
  nw_ecn: "nw_ecn",
  ip_ecn: "nw_ecn",
  nw_ttl: "nw_ttl",
  tp_src: "tp_src",
  tcp_src: "tp_src",
  udp_src: "tp_src",
  tp_dst: "tp_dst",
  tcp_dst: "tp_dst",
  udp_dst: "tp_dst",
};

/** The VLAN fields `set_field` and `load` rewrite. */
const VLAN_FIELDS: Readonly<Record<string, RewriteField>> = {
  vlan_vid: "vlan_vid",
  vlan_pcp: "vlan_pcp",
  vlan_tci: "vlan_tci",
};

/** Each rewritten field's width in bits. */
const REWRITE_WIDTH: Readonly<Record<RewriteField, number>> = {
  eth_src: 48,
  eth_dst: 48,
  nw_src: 32,
  nw_dst: 32,
  ipv6_src: 128,
  ipv6_dst: 128,
  ip_dscp: 6,
  nw_ecn: 2,
  nw_ttl: 8,
  tp_src: 16,
  tp_dst: 16,
  vlan_vid: 12,
  vlan_pcp: 3,
  vlan_tci: 16,
};

/** The VLAN TCI's "a tag is present" bit in Open vSwitch's notation (DEI on the wire). */
const VLAN_PRESENT = 0x1000n;

/** The TPIDs push_vlan takes: 802.1Q's and 802.1ad's. */
const VLAN_TPIDS = [0x8100, 0x88a8];

/**
 * A VLAN rewrite: `mod_vlan_vid` and `mod_vlan_pcp` (`how` "mod"), or
 * `set_field` and whole-field `load` on vlan_vid, vlan_pcp or vlan_tci.
 * set_field's vlan_vid is OpenFlow's, with the present bit 0x1000; a
 * vlan_tci without it means no tag, as in Open vSwitch: strip_vlan.
 */
function setVlan(field: RewriteField, text: string, how: "mod" | "set"): ActionSpec {
  if (text.includes("/")) throw new MatchError(MASKED_SET);
  if (how === "mod") {
    const max = field === "vlan_vid" ? 4095 : 7;
    if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(text) || BigInt(text) > max) {
      throw new MatchError(`${text}: not a valid VLAN ${field === "vlan_vid" ? "VID" : "PCP"}`);
    }
    return { type: "set_field", field, value: BigInt(text) };
  }
  const value = parseU64Wide(text, field === "vlan_vid" ? 13 : REWRITE_WIDTH[field]);
  if (field === "vlan_tci") {
    return value & VLAN_PRESENT ? { type: "set_field", field, value } : { type: "strip_vlan" };
  }
  if (field === "vlan_pcp") return { type: "set_field", field, value, tagged: true };
  if (!(value & VLAN_PRESENT)) {
    throw new MatchError(
      `set_field's vlan_vid is OpenFlow's: 0x1000 (a tag is present) plus the VID, ` +
        `as set_field:0x${
          (0x1000n | value).toString(16)
        }->vlan_vid; or write mod_vlan_vid:${value}`,
    );
  }
  return { type: "set_field", field, value: value & ~VLAN_PRESENT, tagged: true };
}

/**
 * Refuses VLAN actions that cannot mean anything, as Open vSwitch does:
 * `set_field` on vlan_vid or vlan_pcp where the packet may have no tag
 * (neither the match, `dl_vlan` or `vlan_tci` with 0x1000, nor an action
 * before it, push_vlan or mod_vlan_*, gives it one); strip_vlan where the
 * match says there is no tag; a push onto a packet known to have two tags
 * (Open vSwitch keeps at most two).
 */
export function checkVlanActions(match: Match, actions: readonly ActionSpec[]): void {
  const said = match.mask.vlan_tci & 0x1000;
  // Tags the packet is known to have; -1: known to have none.
  let tags = said ? (match.key.vlan_tci & 0x1000 ? 1 : -1) : 0;
  for (const a of actions) {
    if (a.type === "push_vlan") {
      tags = Math.max(tags, 0) + 1;
      if (tags > 2) {
        throw new MatchError(
          "push_vlan onto a packet with two VLAN tags: Open vSwitch keeps at most two, " +
            "and so does warren",
        );
      }
    } else if (a.type === "strip_vlan") {
      if (tags < 0) {
        throw new MatchError(
          "strip_vlan where the match says the packet has no VLAN tag: there is none to take off",
        );
      }
      tags = 0;
    } else if (a.type === "set_field" && a.field.startsWith("vlan")) {
      if (a.tagged && tags <= 0) {
        throw new MatchError(
          `set_field on ${a.field} needs a VLAN tag, which the match does not say the packet has ` +
            "(match dl_vlan=VID or vlan_tci=0x1000/0x1000 first, or write mod_vlan_vid or " +
            "mod_vlan_pcp, which push a tag onto an untagged packet)",
        );
      }
      tags = Math.max(tags, 1);
    }
  }
}

/** Fields warren's datapath does not rewrite, and why. */
const NOT_REWRITTEN: readonly [RegExp, string][] = [
  [
    /^(dl_vlan|dl_vlan_pcp)$/,
    "dl_vlan and dl_vlan_pcp are names to match on: set vlan_vid, vlan_pcp or vlan_tci, " +
    "or write mod_vlan_vid:VID or mod_vlan_pcp:PCP",
  ],
  [
    /^(sctp_src|sctp_dst)$/,
    "warren does not recompute SCTP's CRC32c, so it rewrites TCP and UDP ports only",
  ],
];

/** Fields a masked set (or a `load` into some of their bits) rewrites. */
const MASKABLE: ReadonlySet<RewriteField> = new Set([
  "eth_src",
  "eth_dst",
  "nw_src",
  "nw_dst",
  "ipv6_src",
  "ipv6_dst",
  "tp_src",
  "tp_dst",
]);

/**
 * `set_field:VALUE[/MASK]->FIELD` (or `load`'s value, with `bits` the mask
 * of the bits it loads) for a packet field, as a rewrite. A mask of every
 * bit is the whole field; as Open vSwitch, a value with bits outside its
 * mask is refused.
 */
function setPacketField(name: string, text: string, numeric = false, bits?: bigint): SetField {
  const field = REWRITES[name];
  const width = REWRITE_WIDTH[field];
  const full = 2n ** BigInt(width) - 1n;
  const [v, m] = text.split("/");
  let value: bigint;
  if (name === "nw_tos") {
    const tos = parseUint(v, 255);
    if (tos & 3) throw new MatchError(`${v} is not a TOS: its two ECN bits must be 0`);
    value = BigInt(tos >> 2);
  } else value = numeric ? parseU64Wide(v, width) : fieldValue(field, v);
  let mask = bits ??
    (m === undefined ? full : numeric ? parseU64Wide(m, width) : maskValue(field, m));
  if (bits !== undefined) value <<= BigInt(lowestBit(bits));
  if (mask === full) return { type: "set_field", field, value };
  if (!MASKABLE.has(field)) throw new MatchError(`${field}: ${MASKED_SET}`);
  if (value & ~mask) {
    throw new MatchError(`${text}: the value has bits outside the mask, which sets none of them`);
  }
  mask &= full;
  return { type: "set_field", field, value, mask };
}

/** The lowest set bit of a non-zero mask, counted from 0. */
function lowestBit(mask: bigint): number {
  let i = 0;
  while (!((mask >> BigInt(i)) & 1n)) i++;
  return i;
}

/** A value of `field` in its own notation (a MAC, an address) or as a number. */
function fieldValue(field: RewriteField, text: string): bigint {
  if (field.startsWith("eth")) {
    try {
      return bigintOfBytes(parseMac(text));
    } catch {
      throw new MatchError(`"${text}" is not a MAC address`);
    }
  }
  if (field === "nw_src" || field === "nw_dst") return ipAddr(text, false);
  if (field === "ipv6_src" || field === "ipv6_dst") return ipAddr(text, true);
  return parseU64Wide(text, REWRITE_WIDTH[field]);
}

/** A mask of `field`: in its notation, or a prefix length for an address. */
function maskValue(field: RewriteField, text: string): bigint {
  const width = REWRITE_WIDTH[field];
  if (!/^\d+$/.test(text) || !/^(nw|ipv6)_/.test(field)) return fieldValue(field, text);
  const len = parseUint(text, width);
  return ((1n << BigInt(len)) - 1n) << BigInt(width - len);
}

/** An IPv4 or IPv6 address as a number. */
function ipAddr(text: string, v6: boolean): bigint {
  let a: Addr | undefined;
  try {
    a = parseAddr(text);
  } catch {
    // said below
  }
  if (!a || a.v6 !== v6) {
    throw new MatchError(`"${text}" is not an ${v6 ? "IPv6" : "IPv4"} address`);
  }
  return bigintOfBytes(a.bytes.subarray(0, v6 ? 16 : 4));
}

/** `mod_*:VALUE`: Open vSwitch's OpenFlow 1.0 rewrites, by the field each sets. */
const MOD_ACTIONS: Readonly<Record<string, string>> = {
  mod_dl_src: "eth_src",
  mod_dl_dst: "eth_dst",
  mod_nw_src: "nw_src",
  mod_nw_dst: "nw_dst",
  mod_nw_tos: "nw_tos",
  mod_nw_ecn: "nw_ecn",
  mod_nw_ttl: "nw_ttl",
  mod_tp_src: "tp_src",
  mod_tp_dst: "tp_dst",
};

/** One action, from its token. */
export function parseAction({ text: t, at }: Token): ActionSpec {
  const fail = (why: string) => new FlowSyntaxError(t, at, why);
  try {
    if (t === "drop") return { type: "drop" };
    if (t === "pass") return { type: "pass" };
    let m = /^output:(.+)$/.exec(t) ?? /^output\(port=([^,)]+)\)$/.exec(t);
    if (m) return outputTo(m[1]);
    if (/^output\(/.test(t)) {
      throw new MatchError("output with max_len: warren does not truncate copies");
    }
    if (/^[A-Za-z_]+$/.test(t) && reservedPort(t)) return outputTo(t);
    if (t === "dec_ttl" || t === "dec_ttl()") return { type: "dec_ttl" };
    if (t === "strip_vlan" || t === "pop_vlan") return { type: "strip_vlan" };
    m = /^push_vlan:(.+)$/.exec(t);
    if (m) return pushVlan(m[1]);
    m = /^(mod_[a-z_]+):(.+)$/.exec(t);
    if (m && own(MOD_ACTIONS, m[1])) return setPacketField(MOD_ACTIONS[m[1]], m[2]);
    m = /^mod_(vlan_vid|vlan_pcp):(.+)$/.exec(t);
    if (m) return setVlan(m[1] as RewriteField, m[2], "mod");
    if (/^(0x[0-9a-fA-F]+|\d+)$/.test(t)) return outputTo(t);
    m = /^group:(.+)$/.exec(t);
    if (m) return { type: "group", group: parseGroupId(m[1]) };
    m = /^set_field:(.+)->(net|metadata)$/.exec(t);
    if (m) return setNet(m[1]);
    m = /^set_tunnel(?:64)?:(.+)$/.exec(t);
    if (m) return { type: "set_tunnel", id: parseU64(m[1]) };
    m = /^set_field:(.+)->([A-Za-z0-9_]+)$/.exec(t);
    if (m) return setTunnelField(m[2], m[1]);
    m = /^load:(.+)->([A-Za-z0-9_]+)(?:\[(?:(\d+)(?:\.\.(\d+))?)?\])?$/.exec(t);
    if (m) return loadTunnelField(m[2], m[1], m[3], m[4]);
    m = /^set_tunnel\((.*)\)$/.exec(t);
    if (m) {
      const args = split(m[1], at + "set_tunnel(".length, ",").map(({ text: kv, at: kat }) => {
        const eq = kv.indexOf("=");
        if (eq < 0) throw new FlowSyntaxError(kv, kat, "set_tunnel takes key=value arguments");
        return [kv.slice(0, eq), kv.slice(eq + 1), kat] as [string, string, number | undefined];
      });
      return setTunnelFields(args, t, at);
    }
    const word = /^[A-Za-z_0-9]+/.exec(t)?.[0] ?? t;
    const absent = ABSENT_ACTIONS.find(([re]) => re.test(word));
    if (absent) throw new MatchError(`${word}: ${absent[1]}`);
    throw new MatchError(`not an action warren has; ${ACTIONS_HELP}`);
  } catch (err) {
    if (err instanceof MatchError) throw fail(err.message);
    throw err;
  }
}

/** `push_vlan:TPID`. */
function pushVlan(text: string): ActionSpec {
  const tpid = /^(0x[0-9a-fA-F]+|\d+)$/.test(text) ? Number(text) : NaN;
  if (!VLAN_TPIDS.includes(tpid)) {
    throw new MatchError(
      `${text}: not a VLAN TPID; push_vlan takes 0x8100 (802.1Q) or 0x88a8 (802.1ad)`,
    );
  }
  return { type: "push_vlan", tpid };
}

/** An output to `port`: a name, a number, or a reserved port. */
function outputTo(port: string): ActionSpec {
  const reserved = reservedPort(port);
  if (reserved === "LOCAL") return { type: "pass" };
  if (reserved === "IN_PORT") return { type: "in_port" };
  if (reserved) throw new MatchError(`${reserved}: ${RESERVED_OUTPUTS[reserved]}`);
  const n = portNumber(port);
  if (n !== undefined) return { type: "output", port: String(n) };
  if (!/^[A-Za-z0-9_.-]+$/.test(port)) {
    throw new MatchError(
      /^[A-Za-z0-9_]+\[/.test(port)
        ? "an output port read from a field needs registers, which warren has not"
        : "not a port name",
    );
  }
  return { type: "output", port };
}

/** Why `target` cannot be set, when it is neither a tunnel field nor a rewritten one. */
function unsettable(target: string): MatchError {
  const not = NOT_REWRITTEN.find(([re]) => re.test(target));
  if (not) return new MatchError(`${target}: ${not[1]}`);
  if (target === "tun_flags") {
    return new MatchError("set the oam flag with set_tunnel(flags=oam)");
  }
  if (target === "in_port") {
    return new MatchError(
      "setting in_port: warren sets it to 0 only (load:0->in_port, so that the outputs after " +
        "it may go to the port the packet came in on); to send a packet back there, write in_port",
    );
  }
  return absentField(target) ?? new MatchError(`warren cannot set ${target}; ${ACTIONS_HELP}`);
}

const MASKED_SET = "warren's datapath sets some bits of Ethernet and IP addresses, of " +
  "TCP and UDP ports and of tun_id only; set the whole field";

/** Some bits of the tunnel id: `value` within `mask`, as Open vSwitch refuses others. */
function maskedTunId(text: string, value: bigint, mask: bigint): SetTunnel {
  if (value & ~mask) {
    throw new MatchError(`${text}: the value has bits outside the mask, which sets none of them`);
  }
  return mask === 2n ** 64n - 1n
    ? { type: "set_tunnel", id: value }
    : { type: "set_tunnel", id: value, idMask: mask };
}

/** Open vSwitch's `load:0->in_port` (or `set_field:`), which lets later outputs go back. */
function clearInPort(text: string): ActionSpec {
  if (!/^(0x0*|0+)$/.test(text)) throw unsettable("in_port");
  return { type: "clear_in_port" };
}

/** `set_field:VALUE->TARGET` for a tunnel field. */
function setTunnelField(target: string, text: string): ActionSpec {
  if (own(VLAN_FIELDS, target)) return setVlan(VLAN_FIELDS[target], text, "set");
  if (target === "in_port") return clearInPort(text);
  if (own(REWRITES, target)) return setPacketField(target, text);
  if (own(SETTABLE, target) === undefined) throw unsettable(target);
  const slash = text.indexOf("/");
  let value = text;
  if (slash >= 0) {
    value = text.slice(0, slash);
    const width = SETTABLE[target];
    const mask = text.slice(slash + 1);
    if (target === "tun_id" || target === "tunnel_id") {
      return maskedTunId(text, parseU64Wide(value, width), parseU64Wide(mask, width));
    }
    if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(mask) || BigInt(mask) !== 2n ** BigInt(width) - 1n) {
      throw new MatchError(`${target}: ${MASKED_SET}`);
    }
  }
  return setTunnelFields([[target, value, undefined]], text, 0);
}

/** `set_field:N->net` (or `->metadata`): the whole field, 32 bits. */
function setNet(text: string): ActionSpec {
  const [value, mask] = text.split("/");
  if (mask !== undefined) {
    if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(mask) || BigInt(mask) !== 0xffffffffn) {
      throw new MatchError(MASKED_SET);
    }
  }
  return { type: "set_net", net: Number(parseU64Wide(value, 32)) };
}

/** `load:VALUE->FIELD[lo..hi]` for a tunnel field: a number into it, whole. */
function loadTunnelField(
  name: string,
  text: string,
  lo: string | undefined,
  hi: string | undefined,
): ActionSpec {
  const target = own(NXM_NAMES, name) ?? name;
  if (own(VLAN_FIELDS, target)) {
    const width = REWRITE_WIDTH[VLAN_FIELDS[target]];
    if (lo !== undefined && (Number(lo) !== 0 || Number(hi ?? lo) !== width - 1)) {
      throw new MatchError(MASKED_SET);
    }
    return setVlan(VLAN_FIELDS[target], text, "set");
  }
  if (target === "in_port" && lo === undefined) return clearInPort(text);
  const rewrite = own(REWRITES, target);
  if (rewrite) {
    const whole = lo === undefined || (target === "nw_tos" && Number(lo) === 0 && Number(hi) === 7);
    if (whole) return setPacketField(target, text, true);
    if (target === "nw_tos") throw new MatchError(`ip_dscp: ${MASKED_SET}`);
    const from = Number(lo), to = Number(hi ?? lo);
    if (to < from || to >= REWRITE_WIDTH[rewrite]) {
      throw new MatchError(
        `${name}[${lo}..${hi ?? lo}] is not within its ${REWRITE_WIDTH[rewrite]} bits`,
      );
    }
    const bits = ((1n << BigInt(to - from + 1)) - 1n) << BigInt(from);
    const n = parseU64Wide(text, to - from + 1);
    return setPacketField(target, `0x${n.toString(16)}`, true, bits);
  }
  const width = own(SETTABLE, target);
  if (width === undefined) throw unsettable(target);
  if (lo !== undefined && (Number(lo) !== 0 || Number(hi ?? lo) !== width - 1)) {
    const from = Number(lo), to = Number(hi ?? lo);
    if ((target !== "tun_id" && target !== "tunnel_id") || to < from || to >= width) {
      throw new MatchError(`${target}[${lo}..${hi ?? lo}]: ${MASKED_SET}`);
    }
    const n = parseU64Wide(text, to - from + 1);
    const bits = ((1n << BigInt(to - from + 1)) - 1n) << BigInt(from);
    return maskedTunId(text, n << BigInt(from), bits);
  }
  const n = parseU64Wide(text, width);
  const st: SetTunnel = { type: "set_tunnel" };
  switch (target) {
    case "tun_id":
    case "tunnel_id":
      st.id = n;
      break;
    case "tun_src":
    case "tun_dst":
      st[target === "tun_src" ? "src" : "dst"] = addrFromBigint(n, false);
      break;
    case "tun_ipv6_src":
    case "tun_ipv6_dst":
      st[target === "tun_ipv6_src" ? "src" : "dst"] = addrFromBigint(n, true);
      break;
    default:
      st[target === "tun_tos" ? "tos" : "ttl"] = Number(n);
  }
  return checkedTos(st);
}

/** A number of up to `width` bits, in decimal or 0x hex. */
function parseU64Wide(text: string, width: number): bigint {
  if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(text)) throw new MatchError(`"${text}" is not a number`);
  const n = BigInt(text);
  if (n >= 2n ** BigInt(width)) throw new MatchError(`${text} does not fit ${width} bits`);
  return n;
}

function checkedTos(st: SetTunnel): SetTunnel {
  if (st.tos !== undefined && st.tos & 3) {
    throw new MatchError("tos takes DSCP bits only; ECN follows the inner packet");
  }
  return st;
}

/**
 * set_tunnel's fields from key=value arguments; an argument with an offset
 * is pointed at on error, else the whole action is.
 */
function setTunnelFields(
  args: [string, string, number | undefined][],
  token: string,
  at: number,
): SetTunnel {
  const st: SetTunnel = { type: "set_tunnel" };
  for (const [k, v, kat] of args) {
    try {
      switch (k) {
        case "id":
        case "key":
        case "tun_id":
        case "tunnel_id":
          st.id = parseU64(v);
          break;
        case "dst":
        case "src":
        case "tun_src":
        case "tun_dst":
        case "tun_ipv6_src":
        case "tun_ipv6_dst": {
          let a: Addr;
          try {
            a = parseAddr(v);
          } catch {
            throw new MatchError(`"${v}" is not an IP address`);
          }
          // An IPv6 address under tun_dst is warren's older spelling, and unambiguous.
          if (k.startsWith("tun_ipv6") && !a.v6) {
            throw new MatchError(`"${v}" is not an IPv6 address`);
          }
          st[k.endsWith("src") ? "src" : "dst"] = a;
          break;
        }
        case "tos":
        case "ttl":
        case "tun_tos":
        case "tun_ttl":
          st[k.endsWith("tos") ? "tos" : "ttl"] = parseUint(v, 255);
          checkedTos(st);
          break;
        case "flags":
          for (const f of v.split("|")) {
            if (f !== "df" && f !== "csum" && f !== "oam") {
              throw new MatchError(`"${f}" is not a flag (df, csum, oam)`);
            }
            st[f] = true;
          }
          break;
        case "geneve": {
          const g = /^(0x[0-9a-fA-F]{1,4}|\d+):(0x[0-9a-fA-F]{1,2}|\d+):0x((?:[0-9a-fA-F]{8})*)$/
            .exec(v);
          if (!g || Number(g[1]) > 0xffff || Number(g[2]) > 0xff) {
            throw new MatchError("geneve=CLASS:TYPE:0xDATA with data a multiple of 4 bytes");
          }
          (st.geneve ??= []).push({
            class: Number(g[1]),
            type: Number(g[2]),
            data: Uint8Array.from(g[3].match(/../g) ?? [], (h) => Number.parseInt(h, 16)),
          });
          break;
        }
        default:
          throw new MatchError("set_tunnel takes id, dst, src, tos, ttl, flags and geneve");
      }
    } catch (err) {
      if (err instanceof MatchError && kat !== undefined) {
        throw new FlowSyntaxError(`${k}=${v}`, kat, err.message);
      }
      throw err;
    }
  }
  if (args.length === 0) {
    throw new FlowSyntaxError(token, at, "set_tunnel needs at least one field");
  }
  return st;
}

/** Actions as text, ports written by number named when `ports` knows them. */
export function formatActions(actions: readonly ActionSpec[], ports: PortNames): string {
  return actions.map((a) => formatAction(byName(a, ports))).join(",");
}

/** `a` with a port written by number named, when `ports` knows it, as dumps name it. */
function byName(a: ActionSpec, ports: PortNames): ActionSpec {
  const name = a.type === "output" && /^\d+$/.test(a.port) ? ports.name(Number(a.port)) : undefined;
  return name === undefined ? a : { type: "output", port: name };
}

/** An action as text, the inverse of parsing. */
export function formatAction(a: ActionSpec): string {
  switch (a.type) {
    case "drop":
    case "pass":
    case "in_port":
    case "dec_ttl":
    case "strip_vlan":
      return a.type;
    case "push_vlan":
      return `push_vlan:0x${a.tpid.toString(16)}`;
    case "clear_in_port":
      return "set_field:0->in_port";
    case "set_field":
      return formatRewrite(a);
    case "output":
      return `output:${a.port}`;
    case "group":
      return `group:${a.group}`;
    case "set_net":
      return `set_field:${a.net}->net`;
    case "set_tunnel": {
      if (a.idMask !== undefined) {
        return `set_field:0x${a.id!.toString(16)}/0x${a.idMask.toString(16)}->tun_id`;
      }
      const parts: string[] = [];
      if (a.id !== undefined) parts.push(`id=${a.id}`);
      if (a.dst) parts.push(`dst=${addrText(a.dst)}`);
      if (a.src) parts.push(`src=${addrText(a.src)}`);
      if (a.tos !== undefined) parts.push(`tos=${a.tos}`);
      if (a.ttl !== undefined) parts.push(`ttl=${a.ttl}`);
      const flags = (["df", "csum", "oam"] as const).filter((f) => a[f]);
      if (flags.length) parts.push(`flags=${flags.join("|")}`);
      for (const g of a.geneve ?? []) {
        parts.push(
          `geneve=0x${g.class.toString(16).padStart(4, "0")}:0x${
            g.type.toString(16).padStart(2, "0")
          }:0x${Array.from(g.data, (b) => b.toString(16).padStart(2, "0")).join("")}`,
        );
      }
      return `set_tunnel(${parts.join(",")})`;
    }
  }
}

/**
 * A rewrite as Open vSwitch prints it (`mod_*`; `set_field` for IPv6
 * addresses and for some bits of a field), each value in its field's own
 * notation; a VLAN `set_field` as written, since it differs from
 * `mod_vlan_*` where a packet has no tag (see {@link checkVlanActions}).
 */
function formatRewrite({ field, value, tagged, mask }: SetField): string {
  if (tagged) {
    const v = field === "vlan_vid" ? `0x${(value | VLAN_PRESENT).toString(16)}` : value;
    return `set_field:${v}->${field}`;
  }
  if (mask !== undefined || field === "ipv6_src" || field === "ipv6_dst") {
    const text = (n: bigint) =>
      field.startsWith("eth")
        ? formatMac(bigintBytes(n, 6))
        : field.startsWith("ip")
        ? addrText(addrFromBigint(n, field.startsWith("ipv6")))
        : field.startsWith("nw")
        ? addrText(addrFromBigint(n, false))
        : `0x${n.toString(16)}`;
    return `set_field:${text(value)}${mask === undefined ? "" : `/${text(mask)}`}->${field}`;
  }
  switch (field) {
    case "eth_src":
    case "eth_dst":
      return `mod_dl_${field.slice(4)}:${formatMac(bigintBytes(value, 6))}`;
    case "nw_src":
    case "nw_dst":
      return `mod_${field}:${addrText(addrFromBigint(value, false))}`;
    case "ip_dscp":
      return `mod_nw_tos:${Number(value) << 2}`;
    case "vlan_tci":
      return `set_field:0x${value.toString(16).padStart(4, "0")}->vlan_tci`;
    default:
      return `mod_${field}:${value}`;
  }
}

function addrText(a: Addr): string {
  return formatAddr(a.bytes, a.v6);
}
