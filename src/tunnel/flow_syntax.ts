/**
 * Flows written the way Open vSwitch users write them:
 *
 * ```text
 * priority=100,in_port=web1,ip,nw_dst=10.1.0.0/16 actions=set_tunnel(id=42,dst=192.0.2.2),output:vx0
 * tun_id=42,in_port=vx0 actions=output:web1
 * in_port=1 actions=set_tunnel:5001,set_field:192.168.1.1->tun_dst,3
 * ```
 *
 * Fields are separated by commas or spaces; `actions=` (or `action=`)
 * starts the action list, whose actions are separated the same way. Ports
 * go by name or by number. A syntax error names the offending token, as
 * the user wrote it, and its column.
 *
 * Open vSwitch's language is larger than what warren does; what warren
 * refuses it refuses with a sentence saying why and, where there is one,
 * what to write instead (the README's Flows section lists it all).
 *
 * @module
 */

import { type Addr, addrFromBigint, formatAddr, parseAddr } from "./addr.ts";
import { absentField, field, isFieldName, needsIcmpType, resolveField } from "./fields.ts";
import {
  emptyMatch,
  type Match,
  MatchError,
  own,
  parseU64,
  parseUint,
  type PortNames,
  portNumber,
  reservedPort,
} from "./match.ts";
import { formatMatch } from "./match_format.ts";
import {
  applyShorthand,
  type Context,
  contextOf,
  shorthandContext,
  SHORTHANDS,
} from "./prereqs.ts";

/** The priority a flow gets when none is given (Open vSwitch's default). */
export const DEFAULT_PRIORITY = 32768;

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

/** One action, as written. */
export type ActionSpec =
  /** To the port of that name, or number when `port` is digits. */
  | { type: "output"; port: string }
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

/** A flow: priority, match and actions. */
export interface FlowSpec {
  /** 0..65535; higher wins. */
  priority: number;
  /** The user's opaque 64-bit cookie. */
  cookie: bigint;
  /** What the flow matches. */
  match: Match;
  /** What it does, in the order written. */
  actions: ActionSpec[];
}

/** FlowSyntaxError is flow text that cannot be read. */
export class FlowSyntaxError extends Error {
  /** The token that could not be read. */
  readonly token: string;
  /** Its column in the flow text, from 1. */
  readonly column: number;

  /** Builds the error for `token` at 0-based offset `offset`. */
  constructor(token: string, offset: number, reason: string) {
    super(`at column ${offset + 1}, "${token}": ${reason}`);
    this.name = "FlowSyntaxError";
    this.token = token;
    this.column = offset + 1;
  }
}

/** A piece of flow or group text and its 0-based offset in the whole. */
export interface Token {
  /** The text. */
  text: string;
  /** Where it starts. */
  at: number;
}

/** Splits on `seps` outside parentheses and brackets, keeping each piece's offset. */
export function split(text: string, base: number, seps: string): Token[] {
  const out: Token[] = [];
  const sep = Array.from(seps, (c) => c.charCodeAt(0));
  let depth = 0;
  let start = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : -1;
    if (c === 0x28 || c === 0x5b) depth++;
    else if (c === 0x29 || c === 0x5d) depth--;
    if (c === -1 || (depth === 0 && sep.includes(c))) {
      if (i > start) out.push({ text: text.slice(start, i), at: base + start });
      start = i + 1;
    }
  }
  if (depth !== 0) throw new FlowSyntaxError(text, base, "parentheses or brackets do not balance");
  return out;
}

/** What separates the items of flow and group text. */
export const SEPARATORS = ", \t";

/**
 * Open vSwitch's flow-line words other than priority and cookie: the value
 * warren takes (the only one that means what warren does), or why it takes
 * none.
 */
const FLOW_WORDS = new Map<string, { only?: number; why: string }>(Object.entries({
  table: { only: 0, why: "warren has one table, table 0" },
  idle_timeout: { only: 0, why: "warren's flows do not expire: give 0 or leave it out" },
  hard_timeout: { only: 0, why: "warren's flows do not expire: give 0 or leave it out" },
  importance: { only: 0, why: "warren never evicts flows: give 0 or leave it out" },
  send_flow_rem: { why: "warren sends no flow-removed messages (it has no controller)" },
  check_overlap: {
    why: "warren refuses a flow that hides another anyway (same match, other priority)",
  },
  reset_counts: { why: "a flow added again in warren keeps its counters only with flow mod" },
  no_packet_counts: { why: "warren always counts packets" },
  no_byte_counts: { why: "warren always counts bytes" },
  out_port: { why: "use flow dump --port to select flows by port" },
  out_group: { why: "use flow dump --group to select flows by group" },
}));

/** One item of a match: a shorthand, or a field with its value. */
type MatchOp = { shorthand: string } | {
  name: string;
  value: string;
  /** `name[lo..hi]=value`: the bits a subfield sets. */
  bits?: [number, number | undefined];
  token: Token;
};

/** `name` or `name[lo..hi]` (OVS subfield syntax: `udp_dst[12]=1`). */
const SUBFIELD = /^([A-Za-z0-9_]+)\[(?:(\d+)(?:\.\.(\d+))?)?\]$/;

function matchItems(items: Token[], ports: PortNames) {
  const ops: MatchOp[] = [];
  const shorthands: string[] = [];
  let priority: number | undefined;
  let cookie: bigint | undefined;
  // Shorthands, dl_type and nw_proto say what the packet is, which decides
  // what the other names mean: read ahead, then the fields in order.
  let typed = false;
  for (const token of items) {
    const { text, at } = token;
    const eq = text.indexOf("=");
    if (eq < 0) {
      if (!own(SHORTHANDS, text)) throw bareWord(token);
      ops.push({ shorthand: text });
      shorthands.push(text);
      continue;
    }
    const name = text.slice(0, eq);
    const value = text.slice(eq + 1);
    try {
      if (name === "priority") {
        priority = parseUint(value, 65535);
        continue;
      }
      if (name === "cookie") {
        if (value.includes("/")) throw new MatchError("a mask selects flows; a flow has none");
        cookie = parseU64(value);
        continue;
      }
      const word = FLOW_WORDS.get(name);
      if (word) {
        if (word.only === undefined || parseUint(value, 0xffffffff) !== word.only) {
          throw new MatchError(word.why);
        }
        continue;
      }
      const sub = name.endsWith("]") ? SUBFIELD.exec(name) : null;
      const base = sub?.[1] ?? name;
      const op: MatchOp = { name: base, value, token };
      if (sub) {
        op.bits = [
          Number(sub[2] ?? 0),
          sub[2] === undefined ? undefined : Number(sub[3] ?? sub[2]),
        ];
      }
      ops.push(op);
      typed ||= TYPE_FIELDS.has(base) || needsIcmpType(base);
    } catch (err) {
      if (err instanceof MatchError) throw new FlowSyntaxError(text, at, whose(name, err));
      throw err;
    }
  }
  const c = typed ? typedContext(ops, ports) : shorthandContext(shorthands);
  const match = emptyMatch();
  for (const op of ops) {
    if ("shorthand" in op) {
      applyShorthand(match, op.shorthand);
      continue;
    }
    try {
      setField(match, op, resolveField(op.name, c, op.token.text), ports);
    } catch (err) {
      if (err instanceof MatchError) {
        throw new FlowSyntaxError(op.token.text, op.token.at, whose(op.name, err));
      }
      throw err;
    }
  }
  return { match, priority, cookie };
}

/** Why a word without a value, which is no shorthand, cannot be read. */
function bareWord({ text, at }: Token): FlowSyntaxError {
  const word = FLOW_WORDS.get(text);
  if (word) return new FlowSyntaxError(text, at, `${text}: ${word.why}`);
  try {
    // A bare field is Open vSwitch's "present" match, on fields warren lacks.
    if (isFieldName(text) && !field(text)) resolveField(text, {}, text);
  } catch (err) {
    if (err instanceof MatchError) return new FlowSyntaxError(text, at, whose(text, err));
    throw err;
  }
  return new FlowSyntaxError(
    text,
    at,
    isFieldName(text)
      ? `${text} needs a value (${text}=…)`
      : "not a field or a shorthand (ip, tcp, udp, arp, ipv6 …)",
  );
}

/** Fields that say what the packet is, as shorthands do. */
const TYPE_FIELDS = new Set(["dl_type", "eth_type", "nw_proto", "ip_proto"]);
/** ICMP's type and code, by every name: what neighbour discovery's fields need. */
const ICMP_FIELDS = new Set([
  "icmp_type",
  "icmp_code",
  "icmpv6_type",
  "icmpv6_code",
  "tp_src",
  "tp_dst",
]);

/**
 * The context of shorthands with dl_type, nw_proto or a field that needs
 * the ICMPv6 type among them, values and masks read (wherever in the match
 * they are, as Open vSwitch reads them).
 */
function typedContext(ops: MatchOp[], ports: PortNames): Context {
  const scratch = emptyMatch();
  for (const op of ops) {
    if ("shorthand" in op) applyShorthand(scratch, op.shorthand);
    else if (TYPE_FIELDS.has(op.name) || ICMP_FIELDS.has(op.name)) {
      try {
        setField(scratch, op, field(op.name)!, ports);
      } catch (err) {
        if (err instanceof MatchError) {
          throw new FlowSyntaxError(op.token.text, op.token.at, whose(op.name, err));
        }
        throw err;
      }
    }
  }
  return contextOf(scratch);
}

/** An error's message with the name it is about in front, unless it starts with it. */
function whose(name: string, err: MatchError): string {
  return err.message.startsWith(`${name} `) ? err.message : `${name}: ${err.message}`;
}

/** Sets one field of `m`, a subfield as a value under a mask of its bits. */
function setField(
  m: Match,
  op: Extract<MatchOp, { name: string }>,
  f: ReturnType<typeof resolveField>,
  ports: PortNames,
): void {
  if (!op.bits) return f.parse(m, op.value, ports);
  const width = f.bits;
  if (width === undefined) throw new MatchError(`${op.name} takes no [bits]`);
  const [lo, hi = width - 1] = op.bits;
  if (lo > hi || hi >= width) {
    throw new MatchError(`[${lo}..${hi}] is not within ${op.name}'s ${width} bits`);
  }
  const n = hi - lo + 1;
  const value = parseU64(op.value);
  if (value >= 2n ** BigInt(n)) throw new MatchError(`${op.value} does not fit ${n} bits`);
  const mask = (2n ** BigInt(n) - 1n) << BigInt(lo);
  f.parse(m, `0x${(value << BigInt(lo)).toString(16)}/0x${mask.toString(16)}`, ports);
}

/** Splits flow text into its match and actions parts. */
function halves(text: string): { match: Token[]; actions?: Token } {
  const m = /(^|[\s,])(actions?=)/.exec(text);
  if (!m) return { match: split(text, 0, SEPARATORS) };
  const start = m.index + m[1].length + m[2].length;
  return {
    match: split(text.slice(0, m.index), 0, SEPARATORS),
    actions: { text: text.slice(start), at: start },
  };
}

/**
 * Reads a match (with optional priority= and cookie=), as `flow del` and
 * `flow dump` take them.
 */
export function parseMatch(
  text: string,
  ports: PortNames,
): { match: Match; priority?: number; cookie?: bigint } {
  const h = halves(text);
  if (h.actions) {
    throw new FlowSyntaxError("actions=", h.actions.at - 8, "a match takes no actions");
  }
  return matchItems(h.match, ports);
}

/**
 * parseFlow, for a flow read from somewhere the user must be pointed to:
 * an error starts with `where` (a file's line, an argument's number), if
 * given.
 */
export function parseFlowAt(text: string, ports: PortNames, where?: string): FlowSpec {
  if (where === undefined) return parseFlow(text, ports);
  try {
    return parseFlow(text, ports);
  } catch (err) {
    if (err instanceof Error) err.message = `${where}: ${err.message}`;
    throw err;
  }
}

/** Reads a whole flow: `[priority=N,][cookie=N,]match actions=…`. */
export function parseFlow(text: string, ports: PortNames): FlowSpec {
  const h = halves(text.trim());
  if (!h.actions) {
    throw new FlowSyntaxError(
      text.trim().split(/\s+/).pop() ?? "",
      text.length,
      "a flow needs actions=… (use actions=drop to drop)",
    );
  }
  const { match, priority, cookie } = matchItems(h.match, ports);
  return {
    priority: priority ?? DEFAULT_PRIORITY,
    cookie: cookie ?? 0n,
    match,
    actions: cachedActions(h.actions.text, h.actions.at),
  };
}

// Big tables repeat a few action lists a million times: parse each once.
// The lists handed out are frozen, since flows share them.
const actionCache = new Map<string, readonly ActionSpec[]>();

function cachedActions(text: string, base: number): ActionSpec[] {
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
  "warren's actions are output:PORT (or a port number), set_tunnel(...), set_tunnel:ID, " +
  "set_field:VALUE->tun_id|tun_src|tun_dst|tun_ipv6_src|tun_ipv6_dst|tun_tos|tun_ttl|net, " +
  "group:ID, drop and pass";

/** Why warren has no such port to send to, and what to write instead. */
const RESERVED_OUTPUTS: Readonly<Record<string, string>> = {
  IN_PORT: "sending a packet back out of the port it came in on is not in warren's datapath yet",
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
    /^(mod_dl_src|mod_dl_dst|mod_vlan_vid|mod_vlan_pcp|strip_vlan|pop_vlan|push_vlan|mod_nw_src|mod_nw_dst|mod_nw_tos|mod_nw_ecn|mod_nw_ttl|dec_ttl|mod_tp_src|mod_tp_dst)$/,
    "rewriting packets is not in warren's datapath yet",
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

/** Fields whose rewrite comes with the datapath's rewrite actions. */
const REWRITABLE = new Set([
  "eth_src",
  "eth_dst",
  "dl_src",
  "dl_dst",
  "vlan_vid",
  "vlan_pcp",
  "dl_vlan",
  "dl_vlan_pcp",
  "vlan_tci",
  "ip_src",
  "ip_dst",
  "nw_src",
  "nw_dst",
  "ipv6_src",
  "ipv6_dst",
  "ip_dscp",
  "nw_tos",
  "nw_ecn",
  "ip_ecn",
  "nw_ttl",
  "tp_src",
  "tp_dst",
  "tcp_src",
  "tcp_dst",
  "udp_src",
  "udp_dst",
  "sctp_src",
  "sctp_dst",
]);

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

/** An output to `port`: a name, a number, or a reserved port. */
function outputTo(port: string): ActionSpec {
  const reserved = reservedPort(port);
  if (reserved === "LOCAL") return { type: "pass" };
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

/** Why `target` cannot be set, when it is no tunnel field. */
function unsettable(target: string): MatchError {
  if (REWRITABLE.has(target)) {
    return new MatchError(`rewriting ${target} is not in warren's datapath yet`);
  }
  if (target === "tun_flags") {
    return new MatchError("set the oam flag with set_tunnel(flags=oam)");
  }
  if (target === "in_port") {
    // Open vSwitch's way to send a packet back out of its input port.
    return new MatchError(`setting in_port: ${RESERVED_OUTPUTS.IN_PORT}`);
  }
  return absentField(target) ?? new MatchError(`warren cannot set ${target}; ${ACTIONS_HELP}`);
}

const MASKED_SET = "a masked set keeps the packet's other bits of the field, " +
  "which warren's datapath cannot do yet; set the whole field";

/** `set_field:VALUE->TARGET` for a tunnel field. */
function setTunnelField(target: string, text: string): SetTunnel {
  if (own(SETTABLE, target) === undefined) throw unsettable(target);
  const slash = text.indexOf("/");
  let value = text;
  if (slash >= 0) {
    value = text.slice(0, slash);
    const full = 2n ** BigInt(SETTABLE[target]) - 1n;
    const mask = text.slice(slash + 1);
    if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(mask) || BigInt(mask) !== full) {
      throw new MatchError(MASKED_SET);
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
): SetTunnel {
  const target = own(NXM_NAMES, name) ?? name;
  const width = own(SETTABLE, target);
  if (width === undefined) throw unsettable(target);
  if (lo !== undefined && (Number(lo) !== 0 || Number(hi ?? lo) !== width - 1)) {
    throw new MatchError(MASKED_SET);
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

/**
 * A flow as text, the inverse of parseFlow: cookie (when not 0), priority,
 * match with ports by name, and `actions` (its action list's text unless
 * given).
 */
export function formatFlow(
  f: FlowSpec,
  ports: PortNames,
  actions = formatActions(f.actions, ports) || "drop",
): string {
  const match = formatMatch(f.match, ports);
  const cookie = f.cookie ? `cookie=0x${f.cookie.toString(16)},` : "";
  return `${cookie}priority=${f.priority}${match ? `,${match}` : ""} actions=${actions}`;
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
      return a.type;
    case "output":
      return `output:${a.port}`;
    case "group":
      return `group:${a.group}`;
    case "set_net":
      return `set_field:${a.net}->net`;
    case "set_tunnel": {
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

function addrText(a: Addr): string {
  return formatAddr(a.bytes, a.v6);
}
