/**
 * Flows written the way Open vSwitch users write them:
 *
 * ```text
 * priority=100,in_port=web1,ip,nw_dst=10.1.0.0/16 actions=set_tunnel(id=42,dst=192.0.2.2),output:vx0
 * tun_id=42,in_port=vx0 actions=output:web1
 * ```
 *
 * Fields are separated by commas or spaces; `actions=` starts the action
 * list. A syntax error names the offending token and its column.
 *
 * @module
 */

import { type Addr, formatAddr, parseAddr } from "./addr.ts";
import {
  applyShorthand,
  checkPrerequisites,
  emptyMatch,
  field,
  type FieldDef,
  formatMatch,
  type Match,
  MatchError,
  parseInt,
  type PortNames,
} from "./fields.ts";

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
  | { type: "output"; port: string }
  | SetTunnel
  | { type: "drop" }
  | { type: "pass" };

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

interface Token {
  text: string;
  at: number;
}

/** Splits on `seps` outside parentheses, keeping each piece's offset. */
function split(text: string, base: number, seps: string): Token[] {
  const out: Token[] = [];
  const sep = Array.from(seps, (c) => c.charCodeAt(0));
  let depth = 0;
  let start = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : -1;
    if (c === 0x28) depth++;
    else if (c === 0x29) depth--;
    if (c === -1 || (depth === 0 && sep.includes(c))) {
      if (i > start) out.push({ text: text.slice(start, i), at: base + start });
      start = i + 1;
    }
  }
  if (depth !== 0) throw new FlowSyntaxError(text, base, "parentheses do not balance");
  return out;
}

function matchItems(items: Token[], ports: PortNames) {
  const match = emptyMatch();
  const used: FieldDef[] = [];
  let priority: number | undefined;
  let cookie: bigint | undefined;
  for (const { text, at } of items) {
    const eq = text.indexOf("=");
    const name = eq < 0 ? text : text.slice(0, eq);
    const value = eq < 0 ? "" : text.slice(eq + 1);
    try {
      if (eq < 0) {
        if (!applyShorthand(match, name)) {
          throw new FlowSyntaxError(
            text,
            at,
            field(name)
              ? `${name} needs a value (${name}=…)`
              : "not a field or a shorthand (ip, tcp, udp, arp, ipv6 …)",
          );
        }
        continue;
      }
      if (name === "priority") {
        priority = parseInt("priority", value, 65535);
        continue;
      }
      if (name === "cookie") {
        if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(value) || BigInt(value) >= 2n ** 64n) {
          throw new FlowSyntaxError(text, at, "cookie is a 64-bit number");
        }
        cookie = BigInt(value);
        continue;
      }
      const f = field(name);
      if (!f) throw new FlowSyntaxError(text, at, `"${name}" is not a match field`);
      f.parse(match, value, ports);
      used.push(f);
    } catch (err) {
      if (err instanceof MatchError) throw new FlowSyntaxError(text, at, err.message);
      throw err;
    }
  }
  return { match, used, priority, cookie };
}

/** Splits flow text into its match and actions parts. */
function halves(text: string): { match: Token[]; actions?: Token } {
  const m = /(^|[\s,])actions=/.exec(text);
  if (!m) return { match: split(text, 0, ", \t") };
  const start = m.index + m[1].length;
  return {
    match: split(text.slice(0, m.index), 0, ", \t"),
    actions: { text: text.slice(start + "actions=".length), at: start + "actions=".length },
  };
}

/**
 * The match half of `text` (with priority= and cookie=), its prerequisites
 * checked; a missing one is reported at its column in `text`.
 */
function checkedMatch(
  items: Token[],
  text: string,
  ports: PortNames,
): { match: Match; priority?: number; cookie?: bigint } {
  const { match, used, priority, cookie } = matchItems(items, ports);
  try {
    checkPrerequisites(match, used);
  } catch (err) {
    if (err instanceof MatchError) {
      throw new FlowSyntaxError(err.field, Math.max(0, text.indexOf(err.field)), err.message);
    }
    throw err;
  }
  return { match, priority, cookie };
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
  return checkedMatch(h.match, text, ports);
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
  const { match, priority, cookie } = checkedMatch(h.match, text, ports);
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

/** Reads an action list such as `set_tunnel(id=42,dst=192.0.2.2),output:vx0`. */
export function parseActions(text: string, base = 0): ActionSpec[] {
  const items = split(text.trim(), base + (text.length - text.trimStart().length), ",");
  if (items.length === 0) {
    throw new FlowSyntaxError(text, base, "no actions (use actions=drop to drop)");
  }
  const out: ActionSpec[] = [];
  for (const item of items) out.push(parseAction(item));
  return out;
}

function parseAction({ text, at }: Token): ActionSpec {
  const t = text.trim();
  if (t === "drop") return { type: "drop" };
  if (t === "pass" || t === "LOCAL" || t === "local") return { type: "pass" };
  let m = /^output:(.+)$/.exec(t) ?? /^output\(port=([^)]+)\)$/.exec(t);
  if (m) {
    if (!/^[A-Za-z0-9_.:-]+$/.test(m[1])) throw new FlowSyntaxError(t, at, "not a port name");
    return { type: "output", port: m[1] };
  }
  m = /^set_tunnel(?:64)?:(.+)$/.exec(t);
  if (m) return { type: "set_tunnel", id: bigOf(m[1], t, at, "tunnel id") };
  m = /^set_field:(.+)->(tun_id|tun_dst|tun_src|tun_tos|tun_ttl)$/.exec(t);
  if (m) {
    const [, value, target] = m;
    const key = target.slice(4) as "id" | "dst" | "src" | "tos" | "ttl";
    return setTunnelFields([[key, value, at + "set_field:".length]], t, at);
  }
  m = /^set_tunnel\((.*)\)$/.exec(t);
  if (m) {
    const args = split(m[1], at + "set_tunnel(".length, ",").map(({ text: kv, at: kat }) => {
      const eq = kv.indexOf("=");
      if (eq < 0) throw new FlowSyntaxError(kv, kat, "set_tunnel takes key=value arguments");
      return [kv.slice(0, eq), kv.slice(eq + 1), kat] as [string, string, number];
    });
    return setTunnelFields(args, t, at);
  }
  throw new FlowSyntaxError(t, at, "not an action (output:PORT, set_tunnel(...), drop, pass)");
}

function bigOf(text: string, token: string, at: number, what: string): bigint {
  if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(text) || BigInt(text) >= 2n ** 64n) {
    throw new FlowSyntaxError(token, at, `${what} "${text}" is not a 64-bit number`);
  }
  return BigInt(text);
}

function setTunnelFields(args: [string, string, number][], token: string, at: number): SetTunnel {
  const st: SetTunnel = { type: "set_tunnel" };
  for (const [k, v, kat] of args) {
    const bad = (why: string) => new FlowSyntaxError(`${k}=${v}`, kat, why);
    switch (k) {
      case "id":
      case "key":
        st.id = bigOf(v, `${k}=${v}`, kat, "tunnel id");
        break;
      case "dst":
      case "src":
        try {
          st[k] = parseAddr(v);
        } catch {
          throw bad(`"${v}" is not an IP address`);
        }
        break;
      case "tos":
      case "ttl":
        if (!/^(0x[0-9a-fA-F]{1,2}|\d+)$/.test(v) || Number(v) > 255) throw bad(`${k} is 0..255`);
        st[k] = Number(v);
        if (k === "tos" && st.tos! & 3) {
          throw bad("tos takes DSCP bits only; ECN follows the inner packet");
        }
        break;
      case "flags":
        for (const f of v.split("|")) {
          if (f !== "df" && f !== "csum" && f !== "oam") {
            throw bad(`"${f}" is not a flag (df, csum, oam)`);
          }
          st[f] = true;
        }
        break;
      case "geneve": {
        const g = /^(0x[0-9a-fA-F]{1,4}|\d+):(0x[0-9a-fA-F]{1,2}|\d+):0x((?:[0-9a-fA-F]{8})*)$/
          .exec(v);
        if (!g || Number(g[1]) > 0xffff || Number(g[2]) > 0xff) {
          throw bad("geneve=CLASS:TYPE:0xDATA with data a multiple of 4 bytes");
        }
        (st.geneve ??= []).push({
          class: Number(g[1]),
          type: Number(g[2]),
          data: Uint8Array.from(g[3].match(/../g) ?? [], (h) => Number.parseInt(h, 16)),
        });
        break;
      }
      default:
        throw bad("set_tunnel takes id, dst, src, tos, ttl, flags and geneve");
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
  actions = f.actions.map(formatAction).join(",") || "drop",
): string {
  const match = formatMatch(f.match, ports);
  const cookie = f.cookie ? `cookie=0x${f.cookie.toString(16)},` : "";
  return `${cookie}priority=${f.priority}${match ? `,${match}` : ""} actions=${actions}`;
}

/** An action as text, the inverse of parsing. */
export function formatAction(a: ActionSpec): string {
  switch (a.type) {
    case "drop":
    case "pass":
      return a.type;
    case "output":
      return `output:${a.port}`;
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
