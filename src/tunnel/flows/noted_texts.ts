/**
 * What each flow text of the last apply compiled to, so that the next
 * apply takes a text it has seen as its noted compiled form instead of
 * parsing and compiling it again: k flows changed of a million, k
 * compiled.
 *
 * A flow's compiled form depends on its text and on nothing else but
 * the ports it names, the groups its state has, warren's version and the
 * map layout: the caller gives their digest (the context), and a note of
 * another context is not used. It does not depend on the table, so the
 * note stays true whatever happened to the table since; the comparison
 * with the installed table is made in full as ever. Texts are known by a
 * 64-bit digest and their length.
 *
 * The note, beside the apply's (`applied.ts`), is written aside and
 * renamed after a successful apply. A note whose checksum or shape is not
 * what warren writes is ignored, with a warning, and every flow compiled.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { actionCodec, flowKeyCodec, tunKeyCodec } from "../../maps/layouts.ts";
import { notedTextsPath } from "../lock.ts";
import type { DatapathMaps } from "../pins.ts";
import {
  type ActionSet,
  type CompiledColumns,
  type FlowSet,
  KeyArena,
  type MaskShape,
  maskShape,
} from "./flow_set.ts";

const KEY_SIZE = flowKeyCodec.size;
const ACTION_SIZE = actionCodec.size;
const TUN_KEY_SIZE = tunKeyCodec.size;
const MAGIC = new TextEncoder().encode("WRTEXT02");
/** The size of the id of the table a note's flows made (sha256 or random). */
const TABLE_SIZE = 32;
/** The magic, the context's digest, the payload's checksum. */
const HEADER = MAGIC.length + 32 + 32;

/**
 * Writes `text`'s digest and length at `3 * n` of `out`: two 32-bit
 * lanes, each a multiply and a shift per two UTF-16 units (every step a
 * bijection of the lane, so texts that differ in one place differ in
 * both). A unit at a time, as FNV-1a goes, made the digest most of what
 * an apply of a few changes to a million texts costs.
 */
export function textDigest(text: string, out: Uint32Array, n: number): void {
  let a = 0x811c9dc5, b = 0x9747b28c;
  const pairs = text.length - 1;
  let i = 0;
  for (; i < pairs; i += 2) {
    const k = text.charCodeAt(i) | (text.charCodeAt(i + 1) << 16);
    a = Math.imul(a ^ k, 0x01000193);
    a ^= a >>> 15;
    b = Math.imul(b ^ k, 0x5bd1e995);
    b ^= b >>> 13;
  }
  if (i < text.length) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
  }
  out[3 * n] = a;
  out[3 * n + 1] = b;
  out[3 * n + 2] = text.length;
}

/** The flows of a set as an earlier apply noted them, found by their texts' digests. */
export class NotedFlows implements CompiledColumns {
  /** The set's masks. */
  masks: MaskShape[] = [];
  /** The masked keys, as the set's arena held them. */
  keys = new KeyArena();
  /** Per flow: its text's digest and length (three words). */
  texts = new Uint32Array(0);
  /** Per flow: its mask's index. */
  maskIndex = new Uint8Array(0);
  /** Per flow: where its key starts in `keys`. */
  keyAt = new Uint32Array(0);
  /** Per flow: priority. */
  priority = new Uint16Array(0);
  /** Per flow: cookie. */
  cookie = new BigUint64Array(0);
  /** Per flow: its action list's index. */
  actionSet = new Uint32Array(0);
  /** Per action list: flags, actions and tunnel keys, back to back. */
  setRaw: Uint8Array[] = [];
  /** Per action list: how many actions. */
  setCount = new Uint32Array(0);
  /**
   * The id of the table these flows made (hex): the digest of their set,
   * or a random id after an apply of changes. While the last apply's note
   * (`applied.ts`) names it and the datapath is unchanged since, the
   * operator's installed flows are exactly these.
   */
  table = "";
  /** The bytes the columns view, when they are a note's. */
  buffer?: ArrayBuffer;
  #table?: Int32Array;
  #next = 0;

  /** How many flows. */
  get count(): number {
    return this.maskIndex.length;
  }

  /** The noted flow whose text has the digest at `3 * n` of `digests`, or -1. */
  find(digests: Uint32Array, n: number): number {
    const a = digests[3 * n], b = digests[3 * n + 1], len = digests[3 * n + 2];
    const t = this.texts;
    const same = (j: number) => t[3 * j] === a && t[3 * j + 1] === b && t[3 * j + 2] === len;
    // A file applied again mostly holds its flows in the order noted: the
    // flow after the last one found is tried first, and only a file that
    // moved its flows pays for the index.
    if (this.#next < this.count && same(this.#next)) return this.#next++;
    this.#table ??= this.#index();
    const size = this.#table.length;
    for (let slot = a & (size - 1);; slot = (slot + 1) & (size - 1)) {
      const j = this.#table[slot];
      if (j < 0) return -1;
      if (same(j)) {
        this.#next = j + 1;
        return j;
      }
    }
  }

  /**
   * The noted flow whose text has the digest at `3 * n` of `digests`, if it
   * is the one after the last found or a few after that (flows deleted
   * between), or -1: a file applied again in its noted order is matched
   * without the index {@link find} builds.
   */
  follow(digests: Uint32Array, n: number): number {
    const a = digests[3 * n], b = digests[3 * n + 1], len = digests[3 * n + 2];
    const t = this.texts;
    const end = Math.min(this.count, this.#next + FOLLOW);
    for (let j = this.#next; j < end; j++) {
      if (t[3 * j] === a && t[3 * j + 1] === b && t[3 * j + 2] === len) {
        this.#next = j + 1;
        return j;
      }
    }
    return -1;
  }

  /**
   * Whether the note holds at least as much again as its flows use (keys
   * and action lists of flows that went, kept by applies of changes): an
   * apply then writes it compactly anew.
   */
  wasteful(): boolean {
    let keyBytes = 0;
    const used = new Uint8Array(this.setRaw.length);
    const len = this.masks.map((m) => m.offsets.length);
    for (let j = 0; j < this.count; j++) {
      keyBytes += len[this.maskIndex[j]];
      used[this.actionSet[j]] = 1;
    }
    let sets = 0;
    for (const u of used) sets += u;
    return this.keys.bytes.length > 2 * keyBytes + 65536 || this.setRaw.length > 2 * sets + 1024;
  }

  /**
   * Frees the note's bytes and index at once (the columns are empty
   * after): they are as big as the set the apply builds from them, and
   * are not needed once it is built.
   */
  release(): void {
    this.buffer?.transfer(0);
    (this.#table?.buffer as ArrayBuffer | undefined)?.transfer(0);
  }

  /** The flows by their texts' digests: an open-addressed table of indexes. */
  #index(): Int32Array {
    const n = this.count;
    let size = 16;
    while (size < 2 * n) size *= 2;
    const table = new Int32Array(size).fill(-1);
    for (let j = 0; j < n; j++) {
      let slot = this.texts[3 * j] & (size - 1);
      while (table[slot] >= 0) slot = (slot + 1) & (size - 1);
      table[slot] = j;
    }
    return table;
  }
}

/** How far past the last flow found {@link NotedFlows.follow} looks. */
const FOLLOW = 16;

/** The payload's sections: each a typed array's bytes, 8-byte aligned. */
function sections(n: number, m: number, s: number, arena: number, raw: number) {
  const sizes = [
    24 + TABLE_SIZE,
    8 * n,
    12 * n,
    4 * n,
    4 * n,
    4 * s,
    4 * s,
    2 * n,
    n,
    m * KEY_SIZE,
    arena,
    raw,
  ];
  const at: number[] = [];
  let end = 0;
  for (const size of sizes) {
    at.push(end);
    end += Math.ceil(size / 8) * 8;
  }
  return { at, end };
}

/** A per-flow column of a note. */
export type NoteColumn = "cookie" | "texts" | "keyAt" | "actionSet" | "priority" | "maskIndex";

/**
 * The flows a note is written from, each section in parts: a set's own
 * arrays, or the last note's with an apply's changes between them, so
 * that the note is never a second copy of the flows in memory.
 */
export interface NoteSource {
  /** How many flows. */
  count: number;
  /** The masks' bytes. */
  masks: Uint8Array[];
  /** Per action list: flags, actions and tunnel keys, back to back. */
  raws: Uint8Array[];
  /** Per action list: how many actions. */
  actionCounts: Uint32Array;
  /** The masked keys, back to back as `keyAt` places them, in parts. */
  arena: Uint8Array[];
  /** A column ("texts": the texts' digests, three words a flow), in flow order, in parts. */
  column(name: NoteColumn): Iterable<ArrayBufferView>;
}

/** Action list `a` as a note holds it: flags, actions and tunnel keys, back to back. */
export function rawActions(a: ActionSet): Uint8Array {
  const raw = new Uint8Array(1 + a.actions.length + a.tunKeys.length * TUN_KEY_SIZE);
  raw[0] = a.flags;
  raw.set(a.actions, 1);
  a.tunKeys.forEach((k, i) => raw.set(k, 1 + a.actions.length + i * TUN_KEY_SIZE));
  return raw;
}

/** `set`'s flows, their texts' digests `texts` (in the set's order). */
export function setNote(set: FlowSet, texts: TextDigests): NoteSource {
  const n = set.count;
  return {
    count: n,
    masks: set.masks.map((m) => m.bytes),
    raws: set.actionSets.map(rawActions),
    actionCounts: Uint32Array.from(set.actionSets, (a) => a.count),
    arena: [set.arena],
    column: (name) =>
      name === "texts"
        ? texts.parts(n)
        : name === "cookie"
        ? set.cookies()
        : [set[name].subarray(0, n)],
  };
}

/** Texts whose digests {@link TextDigests} holds in memory at once. */
const DIGESTS_HELD = 1 << 14;

/**
 * TextDigests takes an apply's texts' digests in order, for its note (as
 * {@link textDigest} writes them, three words a text), holding only the
 * last few thousand in memory: the ones before go to a temporary file,
 * unnamed as soon as it is made, and are read back when the note is
 * written. Held whole, a million flows' digests are 12 MB at the apply's
 * peak, beside the compiled set; written, they cost the page cache, not
 * the process.
 */
export class TextDigests {
  /** The digests held: text `n`'s at {@link slot}`(n)`, times three. */
  readonly words = new Uint32Array(3 * DIGESTS_HELD);
  readonly #keep: boolean;
  #file?: Deno.FsFile;
  // The digests before, in memory, when no temporary file could be made.
  readonly #held: Uint32Array[] = [];
  // How many texts' digests went to the file (or #held).
  #before = 0;
  // A write failed: there is no note to write.
  #lost = false;

  /** Digests for a note when `keep`; else only the last text's is wanted (a dry run). */
  constructor(keep: boolean) {
    this.#keep = keep;
  }

  /**
   * Where text `n`'s digest goes in {@link words}: texts come in order,
   * each asked for once.
   */
  slot(n: number): number {
    const i = n - this.#before;
    if (i < DIGESTS_HELD) return i;
    if (this.#keep) this.#put();
    this.#before += DIGESTS_HELD;
    return 0;
  }

  /**
   * The digests of the first `count` texts, in parts (a part's words are
   * good until the next is asked for); throws when they were not kept.
   */
  *parts(count: number): Generator<Uint32Array> {
    if (!this.#keep || this.#lost) throw new Error("the texts' digests were not kept");
    yield* this.#held;
    const file = this.#file;
    if (file) {
      const buf = new Uint8Array(this.words.byteLength);
      file.seekSync(0, Deno.SeekMode.Start);
      for (let left = 12 * this.#before; left > 0;) {
        const want = Math.min(buf.length, left);
        for (let got = 0; got < want;) {
          const n = file.readSync(buf.subarray(got, want));
          if (n === null) throw new Error("the texts' digests were cut short");
          got += n;
        }
        yield new Uint32Array(buf.buffer, 0, want / 4);
        left -= want;
      }
    }
    yield this.words.subarray(0, 3 * (count - this.#before));
  }

  /** Puts the digests held after those before. */
  #put(): void {
    if (this.#lost) return;
    if (!this.#file && this.#held.length === 0) this.#file = unnamedFile();
    try {
      if (this.#file) writeAll(this.#file, new Uint8Array(this.words.buffer));
      else this.#held.push(this.words.slice());
    } catch {
      // No room left for them: no note this time (the apply goes on).
      this.#lost = true;
      this[Symbol.dispose]();
    }
  }

  /** Closes its file. */
  [Symbol.dispose](): void {
    this.#file?.close();
    this.#file = undefined;
  }
}

/**
 * A temporary file for reading and writing, its name removed at once: a
 * crash leaves nothing behind. Undefined when none can be made.
 */
function unnamedFile(): Deno.FsFile | undefined {
  let path;
  try {
    path = Deno.makeTempFileSync({ prefix: "warren-digests-" });
    return Deno.openSync(path, { read: true, write: true });
  } catch {
    return undefined;
  } finally {
    try {
      if (path) Deno.removeSync(path);
    } catch {
      // Left in the temporary directory: only digests.
    }
  }
}

/** Parts smaller than this are gathered before they are written. */
const GATHER = 1 << 16;

/**
 * Writes the note of `src`'s flows, which made table `table` (hex), in
 * context `context` (a sha256 digest in hex), to `file`: section by
 * section, the checksum summed as they go and written last.
 */
function writeNote(file: Deno.FsFile, src: NoteSource, context: string, table: string): void {
  const n = src.count, m = src.masks.length, s = src.raws.length;
  const length = (parts: Uint8Array[]) => parts.reduce((x, r) => x + r.length, 0);
  const arenaLen = length(src.arena), rawLen = length(src.raws);
  const { at, end } = sections(n, m, s, arenaLen, rawLen);
  const sum = createHash("sha256");
  let written = 0;
  // An apply of changes gives its columns in as many parts as runs of
  // flows it kept: the small ones go to the file together.
  const gathered = new Uint8Array(GATHER);
  let held = 0;
  const flush = () => {
    writeAll(file, gathered.subarray(0, held));
    held = 0;
  };
  const put = (parts: Iterable<ArrayBufferView>) => {
    for (const a of parts) {
      const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
      sum.update(bytes);
      written += bytes.length;
      if (held + bytes.length > GATHER) flush();
      if (bytes.length > GATHER) writeAll(file, bytes);
      else gathered.set(bytes, held), held += bytes.length;
    }
  };
  // Each section starts where sections() says: zeros pad up to it.
  const pad = (i: number) => put([new Uint8Array(i < at.length ? at[i] - written : end - written)]);
  file.seekSync(HEADER, Deno.SeekMode.Start);
  put([new Uint32Array([n, m, s, arenaLen, rawLen, 0]), Buffer.from(table, "hex")]);
  pad(1), put(src.column("cookie"));
  pad(2), put(src.column("texts"));
  pad(3), put(src.column("keyAt"));
  pad(4), put(src.column("actionSet"));
  pad(5), put([src.actionCounts]);
  pad(6), put([Uint32Array.from(src.raws, (r) => r.length)]);
  pad(7), put(src.column("priority"));
  pad(8), put(src.column("maskIndex"));
  pad(9), put(src.masks);
  pad(10), put(src.arena);
  pad(11), put(src.raws);
  pad(12);
  flush();
  file.seekSync(0, Deno.SeekMode.Start);
  writeAll(file, MAGIC);
  writeAll(file, Buffer.from(context, "hex"));
  writeAll(file, sum.digest());
}

/** Writes all of `bytes` to `file`, however few bytes a write takes. */
function writeAll(file: Deno.FsFile, bytes: Uint8Array): void {
  for (let i = 0; i < bytes.length;) i += file.writeSync(bytes.subarray(i));
}

/** The flows `bytes` note, if they are a sound note; throws a message if not. */
function decode(bytes: Uint8Array<ArrayBuffer>): NotedFlows {
  // Typed arrays view the sections in place: 8-byte aligned in the file,
  // and in memory as `bytes` starts its own buffer.
  const p = bytes.subarray(HEADER);
  const sum = createHash("sha256").update(p).digest();
  if (!sum.equals(bytes.subarray(MAGIC.length + 32, HEADER))) throw "its checksum is wrong";
  if (p.length < 24 + TABLE_SIZE) throw "it is too short";
  const b = p.buffer;
  const [n, m, s, arenaLen, rawLen] = new Uint32Array(b, p.byteOffset, 5);
  const { at: rel, end } = sections(n, m, s, arenaLen, rawLen);
  if (end !== p.length || m > 255) throw "its sizes do not add up";
  const at = rel.map((x) => x + p.byteOffset);
  const f = new NotedFlows();
  f.table = Buffer.from(p.subarray(24, 24 + TABLE_SIZE)).toString("hex");
  f.cookie = new BigUint64Array(b, at[1], n);
  f.texts = new Uint32Array(b, at[2], 3 * n);
  f.keyAt = new Uint32Array(b, at[3], n);
  f.actionSet = new Uint32Array(b, at[4], n);
  f.setCount = new Uint32Array(b, at[5], s);
  const setLen = new Uint32Array(b, at[6], s);
  f.priority = new Uint16Array(b, at[7], n);
  f.maskIndex = new Uint8Array(b, at[8], n);
  for (let i = 0; i < m; i++) {
    f.masks.push(maskShape(new Uint8Array(b, at[9] + i * KEY_SIZE, KEY_SIZE)));
  }
  f.keys.bytes = new Uint8Array(b, at[10], arenaLen);
  let r = at[11];
  for (let i = 0; i < s; i++) {
    const keys = setLen[i] - 1 - f.setCount[i] * ACTION_SIZE;
    if (keys < 0 || keys % TUN_KEY_SIZE !== 0 || r + setLen[i] > at[11] + rawLen) {
      throw "an action list is cut short";
    }
    f.setRaw.push(new Uint8Array(b, r, setLen[i]));
    r += setLen[i];
  }
  for (let j = 0; j < n; j++) {
    const mi = f.maskIndex[j];
    if (mi >= m || f.actionSet[j] >= s) throw "a flow names a mask or action list it lacks";
    if (f.keyAt[j] + f.masks[mi].offsets.length > arenaLen) throw "a flow's key is cut short";
  }
  f.buffer = b;
  return f;
}

/**
 * The bytes of the file at `path`, at the start of a buffer of their
 * size: the note's arrays view them for as long as the apply runs.
 */
function readNote(path: string): Uint8Array<ArrayBuffer> {
  using file = Deno.openSync(path);
  const bytes = new Uint8Array(file.statSync().size);
  let n = 0;
  for (let got; n < bytes.length && (got = file.readSync(bytes.subarray(n))) !== null;) n += got;
  return bytes.subarray(0, n);
}

/** The flows the last apply noted in context `context`, if any and sound. */
export function notedFlows(maps: DatapathMaps, context: string): NotedFlows | undefined {
  const dir = maps.pinDir;
  if (!dir) return undefined;
  const path = notedTextsPath(dir);
  let bytes;
  try {
    bytes = readNote(path);
  } catch {
    // None yet: every flow is compiled.
    return undefined;
  }
  if (bytes.length < HEADER || !MAGIC.every((x, i) => bytes[i] === x)) {
    console.warn(`warren: ${path} is not a note of compiled flows: ignored`);
    return undefined;
  }
  // Another context's flows may compile otherwise now: not a fault.
  if (Buffer.from(bytes.subarray(MAGIC.length, MAGIC.length + 32)).toString("hex") !== context) {
    return undefined;
  }
  try {
    return decode(bytes);
  } catch (why) {
    console.warn(`warren: ${path} is not a note of compiled flows (${why}): ignored`);
    return undefined;
  }
}

/**
 * Notes `src`'s flows, which made table `table` (hex), in context
 * `context`. Best effort: without the note, the next apply compiles every
 * flow.
 */
export function noteFlows(
  maps: DatapathMaps,
  src: NoteSource,
  context: string,
  table: string,
): void {
  const dir = maps.pinDir;
  if (!dir) return;
  const path = notedTextsPath(dir);
  try {
    // Written aside and renamed: a reader sees the old note or the new one.
    {
      using file = Deno.openSync(`${path}.new`, {
        write: true,
        create: true,
        truncate: true,
        mode: 0o600,
      });
      writeNote(file, src, context, table);
    }
    Deno.renameSync(`${path}.new`, path);
  } catch {
    // A user allowed the lock but not the lock directory: no note, no shortcut.
  }
}
