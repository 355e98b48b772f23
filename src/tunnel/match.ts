/**
 * A match: a flow key and a mask of the same shape, as flows and dumps
 * hold it, and what every field's text is read with: numbers, value/mask
 * pairs, port names and numbers, and the error a bad value raises.
 *
 * Which fields there are lives in fields.ts, how each kind reads and
 * prints in field_kinds.ts.
 *
 * @module
 */

import { emptyFlowKey, type FlowKey, plainFlowKey } from "../maps/layouts.ts";

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

/**
 * `m` with plain keys, every field its own property: what a library
 * caller may spread, clone or compare (an {@link emptyMatch}'s keys make
 * their byte fields only when read).
 */
export function plainMatch(m: Match): Match {
  return { key: plainFlowKey(m.key), mask: plainFlowKey(m.mask) };
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

/** `value/mask` as its two halves, the mask undefined when there is none. */
export function splitMask(text: string): [string, string | undefined] {
  const i = text.indexOf("/");
  return i < 0 ? [text, undefined] : [text.slice(0, i), text.slice(i + 1)];
}

/** A number in hex, without 0x. */
export function hex(n: number | bigint): string {
  return n.toString(16);
}

/** The members of the flow key that are numbers. */
export type IntMember = {
  [K in keyof FlowKey]: FlowKey[K] extends number ? K : never;
}[keyof FlowKey];

/** Sets `width` bits at `shift` of an integer member to `value` under `mask`. */
export function setBits(
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
