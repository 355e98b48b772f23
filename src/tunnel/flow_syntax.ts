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
 * what to write instead (the README's Flows section lists it all). This
 * module reads the flow line and its match; flow_actions.ts the actions.
 *
 * @module
 */

import { type ActionSpec, cachedActions, checkVlanActions, formatActions } from "./flow_actions.ts";
import { field, isFieldName, needsIcmpType, resolveField } from "./fields.ts";
import {
  emptyMatch,
  type Match,
  MatchError,
  own,
  parseU64,
  parseUint,
  plainMatch,
  type PortNames,
} from "./match.ts";
import { formatMatch } from "./match_format.ts";
import {
  applyShorthand,
  type Context,
  contextOf,
  shorthandContext,
  SHORTHANDS,
} from "./prereqs.ts";
import { FlowSyntaxError, SEPARATORS, split, type Token } from "./flow_tokens.ts";

/** The priority a flow gets when none is given (Open vSwitch's default). */
export const DEFAULT_PRIORITY = 32768;

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

/**
 * The items of a match. `cookie=V/MASK` selects flows by their cookie's
 * bits, as ovs-ofctl's does: a match that `selects` takes it (`cookie=V`
 * selecting one cookie exactly), a flow's match refuses it.
 */
function matchItems(items: Token[], ports: PortNames, selects = false) {
  const ops: MatchOp[] = [];
  const shorthands: string[] = [];
  let priority: number | undefined;
  let cookie: { value: bigint; mask: bigint } | undefined;
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
        const slash = value.indexOf("/");
        const v = slash < 0 ? value : value.slice(0, slash);
        const m = slash < 0 ? undefined : value.slice(slash + 1);
        if (m !== undefined && !selects) {
          throw new MatchError("a mask selects flows; a flow has none");
        }
        const mask = m === undefined || m === "-1" ? 2n ** 64n - 1n : parseU64(m);
        cookie = { value: parseU64(v) & mask, mask };
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
 * Reads a match (with optional priority= and cookie=V[/MASK], a mask of
 * -1 for all bits), as `flow del` and `flow dump` take them.
 */
export function parseMatch(
  text: string,
  ports: PortNames,
): { match: Match; priority?: number; cookie?: { value: bigint; mask: bigint } } {
  const h = halves(text);
  if (h.actions) {
    throw new FlowSyntaxError("actions=", h.actions.at - 8, "a match takes no actions");
  }
  const read = matchItems(h.match, ports, true);
  read.match = plainMatch(read.match);
  return read;
}

/**
 * parseFlow for warren's own readers of many flows, which hand the match
 * straight to the compiler: its keys' byte fields are made only when read
 * (see emptyFlowKey), so a spread or a deep comparison of them sees no
 * bytes. An error starts with `where` (a file's line, an argument's
 * number), if given, for a flow read from somewhere the user must be
 * pointed to.
 */
export function parseFlowAt(text: string, ports: PortNames, where?: string): FlowSpec {
  if (where === undefined) return readFlow(text, ports);
  try {
    return readFlow(text, ports);
  } catch (err) {
    if (err instanceof Error) err.message = `${where}: ${err.message}`;
    throw err;
  }
}

/**
 * Reads a whole flow: `[priority=N,][cookie=N,]match actions=…`. Its
 * match's keys are plain objects, every field its own property, so a
 * caller may spread, clone or compare them.
 */
export function parseFlow(text: string, ports: PortNames): FlowSpec {
  const f = readFlow(text, ports);
  f.match = plainMatch(f.match);
  return f;
}

/** parseFlow with the match as the parser built it (see parseFlowAt). */
function readFlow(text: string, ports: PortNames): FlowSpec {
  const h = halves(text.trim());
  if (!h.actions) {
    throw new FlowSyntaxError(
      text.trim().split(/\s+/).pop() ?? "",
      text.length,
      "a flow needs actions=… (use actions=drop to drop)",
    );
  }
  const { match, priority, cookie } = matchItems(h.match, ports);
  const actions = cachedActions(h.actions.text, h.actions.at);
  try {
    checkVlanActions(match, actions);
  } catch (err) {
    if (err instanceof MatchError) {
      throw new FlowSyntaxError(h.actions.text, h.actions.at, err.message);
    }
    throw err;
  }
  return {
    priority: priority ?? DEFAULT_PRIORITY,
    cookie: cookie?.value ?? 0n,
    match,
    actions,
  };
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
