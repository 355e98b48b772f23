/**
 * Flow text in pieces: tokens with their offsets, so that an error names
 * the token the user wrote and its column ({@link FlowSyntaxError}). The
 * match (flow_syntax.ts) and the actions (flow_actions.ts) are read from
 * the same pieces.
 *
 * @module
 */

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

/** A piece of flow text and its offset in the whole. */
export interface Token {
  text: string;
  at: number;
}

/** Splits on `seps` outside parentheses and brackets, keeping each piece's offset. */
export function split(text: string, base: number, seps: string): Token[] {
  const out: Token[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : -1;
    if (c === 0x28 || c === 0x5b) depth++;
    else if (c === 0x29 || c === 0x5d) depth--;
    if (c === -1 || (depth === 0 && isSep(seps, c))) {
      if (i > start) out.push({ text: text.slice(start, i), at: base + start });
      start = i + 1;
    }
  }
  if (depth !== 0) throw new FlowSyntaxError(text, base, "parentheses or brackets do not balance");
  return out;
}

// A loop over the string, not an array of its codes and `includes`: a
// flow table splits a million texts, a character at a time.
function isSep(seps: string, c: number): boolean {
  for (let k = 0; k < seps.length; k++) if (seps.charCodeAt(k) === c) return true;
  return false;
}

/** What separates fields and actions: commas, spaces or tabs. */
export const SEPARATORS = ", \t";
