/**
 * State files read as streams: JSON, YAML, or the line form (one flow per
 * line, `#` comments, as `ovs-ofctl add-flows` reads). Ports, tunnels and
 * groups are few and read whole; flows are read from the file as they
 * are wanted, one at a time, each with its file and line, so a table of a
 * million flows is never held as text or objects. JSON goes through
 * `@streamparser/json`, except flow items on one line each (a string
 * literal and its comma), which `JSON.parse` reads; YAML through the
 * `yaml` parser, a few hundred flow items at a time (the file is split
 * only where a top-level key or a flow item starts), except items on one
 * line that YAML reads as the plain string they show, which are taken as
 * they are.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import type { FlowSource } from "./apply.ts";
 * import { readStateFile } from "./state_file.ts";
 *
 * const file = Deno.makeTempFileSync({ suffix: ".flows" });
 * Deno.writeTextFileSync(file, "# web\nin_port=1 actions=drop\n");
 * const flows = readStateFile(file).flows as FlowSource;
 * assert.deepEqual([...flows.texts()].map((f) => [f.text, f.where]), [
 *   ["in_port=1 actions=drop", `${file}:2`],
 * ]);
 * Deno.removeSync(file);
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { JSONParser, TokenType } from "@streamparser/json";
import { parse as parseYaml } from "yaml";
import type { DesiredState, FlowSource, FlowText } from "./apply.ts";
import { PortError } from "./port.ts";

/** The kinds of state file. */
export type StateFormat = "json" | "yaml" | "lines";

const SECTIONS = ["ports", "tunnels", "groups", "flows"];
// Files are read 16 KiB at a time: every line of a chunk keeps its string
// alive, and a bigger one outliving young GCs makes V8 grow its young
// generation (64 KiB took a million-flow YAML read's heap from 43 to 73 MiB).
const CHUNK = 1 << 14;
// YAML flow items parsed per call of the YAML parser.
const YAML_BATCH = 512;

/**
 * The state file at `path`: its ports, tunnels and groups, and its flows
 * as a source that reads the file again each time it is iterated. The
 * format is `format`, else guessed from the first thing in the file (`{`
 * is JSON, a `key:` or `---` is YAML, anything else the line form). A line
 * form file holds only flows: ports, tunnels and groups are left as they
 * are.
 */
export function readStateFile(path: string, format?: StateFormat): DesiredState {
  const kind = format ?? stateFormat(path);
  if (kind === "lines") return { flows: source(path, () => lineFlows(path)) };
  const state: DesiredState = {};
  const skip = (_: FlowText) => {};
  if (kind === "json") { for (const _ of jsonItems(path, state)) skip(_); }
  else for (const _ of yamlItems(path, state)) skip(_);
  for (const key of ["flows", "groups"] as const) {
    for (const f of state[key] as unknown[] ?? []) {
      if (typeof f !== "string") {
        throw new PortError(
          `${key} are strings in ${key.slice(0, -1)} syntax, not ${JSON.stringify(f)}`,
        );
      }
    }
  }
  state.flows = source(path, () => kind === "json" ? jsonItems(path) : yamlItems(path));
  return state;
}

/**
 * The flows of the file at `path`, read by `texts`; the file's bytes hashed
 * for their digest. The digest and the flows come from separate reads: a
 * file changed in between (its size, modification time or inode moved)
 * would be noted under bytes it no longer holds, so reading its flows then
 * fails, before anything is applied.
 */
function source(path: string, texts: () => Iterable<FlowText>): FlowSource {
  let hashed: string | undefined;
  const stamp = () => {
    const s = Deno.statSync(path);
    return `${s.size}:${s.mtime?.getTime()}:${s.ino}`;
  };
  const digest = () => {
    hashed = stamp();
    const h = createHash("sha256");
    using f = Deno.openSync(path);
    const buf = new Uint8Array(CHUNK * 16);
    for (let n; (n = f.readSync(buf)) !== null;) h.update(buf.subarray(0, n));
    return h.digest("hex");
  };
  return {
    *texts() {
      yield* texts();
      if (hashed !== undefined && stamp() !== hashed) {
        throw new PortError(`${path} changed while it was being applied: nothing applied`);
      }
    },
    digest,
  };
}

/**
 * LineFlow is a flow's text read at line `line` of the file at `path`.
 * Where it was read becomes text only when asked for (by an error): a
 * line number made into a string for each of a million flows is held by
 * V8's cache of number strings through the next young collections (some
 * 200 KB at each), and what they keep grows the young generation (by
 * 32 MB or more over a million flows).
 */
class LineFlow implements FlowText {
  /** Reads flow `text` at line `line` of `path`. */
  constructor(readonly text: string, readonly path: string, readonly line: number) {}

  /** The file and line, as an error names them. */
  get where(): string {
    return `${this.path}:${this.line}`;
  }
}

/** The format of the state file at `path`, from its first line that says something. */
export function stateFormat(path: string): StateFormat {
  for (const { text } of lines(path)) {
    const t = text.trim();
    if (t === "" || t.startsWith("#")) continue;
    if (t.startsWith("{") || t.startsWith("[")) return "json";
    return /^(---|[A-Za-z_]+\s*:)/.test(t) ? "yaml" : "lines";
  }
  return "lines";
}

/** The file's lines, numbered from 1, read a chunk at a time. */
function* lines(path: string): Generator<{ text: string; line: number }> {
  using f = Deno.openSync(path);
  const dec = new TextDecoder("utf-8", { fatal: true });
  const buf = new Uint8Array(CHUNK);
  let rest = "";
  let line = 1;
  for (let n; (n = f.readSync(buf)) !== null;) {
    const parts = (rest + dec.decode(buf.subarray(0, n), { stream: true })).split("\n");
    rest = parts.pop()!;
    for (const text of parts) yield { text, line: line++ };
  }
  rest += dec.decode();
  if (rest) yield { text: rest, line };
}

function* lineFlows(path: string): Generator<FlowText> {
  for (const { text, line } of lines(path)) {
    const t = text.trim();
    if (t && !t.startsWith("#")) yield new LineFlow(t, path, line);
  }
}

/**
 * A JSON state file's flows, each with its line. With `into`, its other
 * sections are gathered there and the top level is checked.
 *
 * A line that is one string literal and its comma, after a comma between
 * items of the top-level flows list, is taken as a flow without the
 * streaming parser (a byte at a time in JavaScript, 2.5 µs a flow against
 * 0.3): its literal is read by `JSON.parse`, and the parser, which such a
 * line would leave as it found it, goes on from the next line. Not after
 * the list's `[`: there the parser would take a `]` that the skipped
 * comma makes a trailing one. Everything else, and a literal `JSON.parse`
 * refuses, goes through the parser.
 */
function* jsonItems(path: string, into?: DesiredState): Generator<FlowText> {
  // Only the sections' items are built and emitted: a path that emits a
  // section (or the whole document) would keep every flow of it. The top
  // level is checked from the tokens instead.
  const parser = new JSONParser({ paths: ["$.*.*"], keepStack: false });
  const found: FlowText[] = [];
  let line = 1;
  let depth = 0;
  let key: string | undefined;
  let afterColon = false;
  // The parser stands after a comma between the flows list's items, made
  // from a line's last byte that is not white space (`tail`), so no token
  // was begun after it.
  let awaitsFlow = false;
  let tail = false;
  parser.onToken = ({ token, value }) => {
    if (depth === 0 && token !== TokenType.LEFT_BRACE) {
      throw new PortError(`${path}: a state file holds ports, tunnels, groups and flows`);
    }
    if (depth === 1) {
      if (afterColon) {
        if (!SECTIONS.includes(key!)) {
          throw new PortError(
            `${path}:${line}: "${key}" is not part of a state file (ports, tunnels, groups, flows)`,
          );
        }
        if (token !== TokenType.LEFT_BRACKET) {
          throw new PortError(`${path}:${line}: ${key} must be a list`);
        }
        afterColon = false;
      } else if (token === TokenType.STRING) key = value as string;
      else if (token === TokenType.COLON) afterColon = true;
    }
    if (token === TokenType.LEFT_BRACE || token === TokenType.LEFT_BRACKET) depth++;
    else if (token === TokenType.RIGHT_BRACE || token === TokenType.RIGHT_BRACKET) depth--;
    awaitsFlow = tail && token === TokenType.COMMA && depth === 2 && key === "flows";
  };
  parser.onValue = ({ value, stack }) => {
    const section = stack[1].key as keyof DesiredState;
    if (section === "flows") {
      if (typeof value !== "string") {
        throw new PortError(
          `${path}:${line}: flows are strings in flow syntax, not ${JSON.stringify(value)}`,
        );
      }
      found.push(new LineFlow(value, path, line));
    } else if (into) {
      ((into[section] ??= []) as unknown[]).push(value);
    }
  };
  const enc = new TextEncoder();
  try {
    for (const l of lines(path)) {
      line = l.line;
      // The parser stops at the document's end: only blank lines may follow.
      if (parser.isEnded) {
        if (l.text.trim() === "") continue;
        throw new PortError(`${path}:${line}: not valid JSON: text after the end of the document`);
      }
      const last = lastNonBlank(l.text);
      if (awaitsFlow) {
        const flow = flowItem(l.text, last);
        if (flow !== undefined) {
          if (!into) yield new LineFlow(flow, path, line);
          continue;
        }
      }
      const bytes = enc.encode(line === 1 ? l.text : "\n" + l.text);
      // A blank line leaves the parser where it was; any other is read
      // from scratch, and a comma that ends it goes alone, so a token it
      // makes is known to be the line's last.
      if (last >= 0) awaitsFlow = false;
      if (l.text.charCodeAt(last) === 44) {
        const end = bytes.length - (l.text.length - last);
        parser.write(bytes.subarray(0, end));
        tail = true;
        parser.write(bytes.subarray(end));
        tail = false;
      } else parser.write(bytes);
      if (found.length) {
        if (!into) yield* found;
        found.length = 0;
      }
    }
    if (!parser.isEnded) parser.end();
  } catch (err) {
    if (err instanceof PortError) throw err;
    // The tokenizer's positions count the bytes it was given: lines read
    // without it, and a line's comma given alone, would make them wrong.
    const why = (err as Error).message.replace(/ at chunk position "\d+" \(.*?\)/, "");
    throw new PortError(`${path}:${line}: not valid JSON: ${why}`);
  }
}

/** The index of the last character of `text` that is not JSON white space, or -1. */
function lastNonBlank(text: string): number {
  let at = text.length - 1;
  while (at >= 0 && isBlank(text.charCodeAt(at))) at--;
  return at;
}

/** Whether `c` is JSON white space other than the line feed lines are split at. */
function isBlank(c: number): boolean {
  return c === 32 || c === 9 || c === 13;
}

/**
 * A JSON line that is one string literal and a comma (white space around
 * them), its last non-blank character at `last`: the literal's string, or
 * undefined when the streaming parser must read the line (`JSON.parse`
 * refuses it: several items, a bad escape, a control character).
 */
function flowItem(text: string, last: number): string | undefined {
  if (text.charCodeAt(last) !== 44) return undefined;
  let end = last - 1;
  while (end >= 0 && isBlank(text.charCodeAt(end))) end--;
  let start = 0;
  while (start < end && isBlank(text.charCodeAt(start))) start++;
  if (start >= end || text.charCodeAt(start) !== 34 || text.charCodeAt(end) !== 34) {
    return undefined;
  }
  try {
    return JSON.parse(text.slice(start, end + 1));
  } catch {
    return undefined;
  }
}

/**
 * A block sequence item on one line that YAML reads as the plain string it
 * shows (`  - priority=10,ip actions=drop`): its string, or undefined when
 * the YAML parser must say. Printable ASCII only; no indicator first; no
 * `: `, `:` last or ` #`, which make a mapping or a comment; and an `=`, so
 * that YAML resolves it to no number, boolean or null. Nearly every flow
 * is such an item, and the parser costs a flow some 100 µs and much
 * memory.
 */
function plainItem(item: string): string | undefined {
  // Tested, then cut by hand: a match's array and captures, a million
  // times over, would make V8 grow its young generation.
  if (!PLAIN_ITEM.test(item)) return undefined;
  let at = item.indexOf("-") + 1;
  while (item.charCodeAt(at) === 32) at++;
  const text = item.slice(at).trimEnd();
  if (!text.includes("=") || text.includes(": ") || text.includes(" #") || text.endsWith(":")) {
    return undefined;
  }
  return text;
}

const PLAIN_ITEM = /^ *- +[^\-?:,\[\]{}#&*!|>'"%@` ][\x20-\x7e]*$/;

/** A YAML mapping key at the start of a line: a section of the state file. */
const TOP_KEY = /^([A-Za-z_][\w-]*)\s*:(.*)$/;
/** A block sequence item: its indentation, then the rest. */
const ITEM = /^(\s*)-(\s|$)/;

/**
 * Whether `text` starts a block sequence item indented by `indent` (by
 * anything, when undefined): compared in place, a line a flow.
 */
function isItem(text: string, indent: string | undefined): boolean {
  if (indent === undefined) return ITEM.test(text);
  const at = indent.length;
  if (!text.startsWith(indent) || text.charCodeAt(at) !== 45) return false;
  return at + 1 === text.length || /\s/.test(text[at + 1]);
}

/**
 * A YAML state file's flows, each with its line. With `into`, its other
 * sections are gathered there and the top level is checked, and a block
 * of flows is skipped (the read that wants the flows checks them). The
 * file is cut where a top-level key starts; under `flows:`, where a block
 * item starts, so the YAML parser reads up to a few hundred flows at once.
 */
function* yamlItems(path: string, into?: DesiredState): Generator<FlowText> {
  let section: string | undefined;
  // The section is flows as a block sequence: cut item by item.
  let blockFlows = false;
  let head = "";
  let headLine = 0;
  let body: string[] = [];
  let indent: string | undefined;
  // Flow items the YAML parser must read, a batch at a time.
  let items: { text: string; line: number }[] = [];
  // The flow item being read (its lines so far) and its first line.
  let item: string | undefined;
  let itemLine = 0;

  const parse = (text: string, line: number): unknown => {
    try {
      return parseYaml(text);
    } catch (err) {
      const at = (err as { linePos?: { line: number }[] }).linePos?.[0]?.line;
      const where = at === undefined ? line : line + at - 1;
      // The parser's own position counts from the part it was given.
      const why = (err as Error).message.split(" at line ")[0];
      throw new PortError(`${path}:${where}: not valid YAML: ${why}`);
    }
  };
  // Items the YAML parser must read, a run at a time, in order with the rest.
  const parseRun = function* (run: { text: string; line: number }[]): Generator<FlowText> {
    if (run.length === 0) return;
    const first = run[0].line;
    const values = parse(run.map((i) => i.text).join("\n"), first);
    if (!Array.isArray(values) || values.length !== run.length) {
      throw new PortError(`${path}:${first}: flows must be a list of strings`);
    }
    for (let i = 0; i < run.length; i++) {
      const v = values[i];
      const flow = new LineFlow(v as string, path, run[i].line);
      if (typeof v !== "string") {
        throw new PortError(
          `${flow.where}: flows are strings in flow syntax, not ${JSON.stringify(v)}`,
        );
      }
      yield flow;
    }
  };
  // An item ends: its text if it is plain (it goes out at once, after
  // the items held before it), else held for the parser. Only those are
  // kept, so few objects outlive a young GC.
  const endItem = (): string | undefined => {
    const text = plainItem(item!);
    if (text === undefined) items.push({ text: item!, line: itemLine });
    item = undefined;
    return text;
  };
  const endSection = function* (): Generator<FlowText> {
    if (section === undefined) return;
    if (section === "flows" && indent !== undefined) {
      const line = itemLine;
      const text = item === undefined ? undefined : endItem();
      yield* parseRun(items);
      items = [];
      if (text !== undefined) yield new LineFlow(text, path, line);
    } else {
      const value = parse([head, ...body].join("\n"), headLine);
      const list = (value as Record<string, unknown> | null)?.[section] ?? [];
      if (!Array.isArray(list)) {
        throw new PortError(`${path}:${headLine}: ${section} must be a list`);
      }
      if (section === "flows") {
        for (const v of list) {
          if (typeof v !== "string") {
            throw new PortError(
              `${path}:${headLine}: flows are strings in flow syntax, not ${JSON.stringify(v)}`,
            );
          }
          yield new LineFlow(v, path, headLine);
        }
      } else if (into) {
        ((into[section as keyof DesiredState] ??= []) as unknown[]).push(...list);
      }
    }
    section = undefined;
    blockFlows = false;
    body = [];
    indent = undefined;
  };

  for (const { text, line } of lines(path)) {
    const top = text.length > 0 && !/^[\s#]/.test(text);
    if (top && (text === "---" || text === "...")) continue;
    if (top && !ITEM.test(text)) {
      yield* endSection();
      const m = TOP_KEY.exec(text);
      if (!m) throw new PortError(`${path}: a state file holds ports, tunnels, groups and flows`);
      if (!SECTIONS.includes(m[1])) {
        throw new PortError(
          `${path}:${line}: "${m[1]}" is not part of a state file (ports, tunnels, groups, flows)`,
        );
      }
      section = m[1];
      blockFlows = section === "flows" && m[2].trim() === "";
      head = text;
      headLine = line;
      continue;
    }
    if (section === undefined) {
      if (text.trim() === "" || text.trim().startsWith("#")) continue;
      throw new PortError(`${path}: a state file holds ports, tunnels, groups and flows`);
    }
    if (blockFlows) {
      // Gathering the other sections: the flows are the next read's.
      if (into) continue;
      if (isItem(text, indent)) {
        indent ??= ITEM.exec(text)![1];
        if (item !== undefined) {
          const at = itemLine;
          const plain = endItem();
          if (items.length > 0 && (plain !== undefined || items.length >= YAML_BATCH)) {
            yield* parseRun(items);
            items = [];
          }
          if (plain !== undefined) yield new LineFlow(plain, path, at);
        }
        item = text;
        itemLine = line;
        continue;
      }
      if (item !== undefined) {
        item += "\n" + text;
        continue;
      }
    }
    body.push(text);
  }
  yield* endSection();
}
