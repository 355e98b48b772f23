/**
 * A compiled flow table held compactly in memory, for `apply` over a
 * million flows: a few typed-array columns per flow, the key's bytes only
 * where its mask has bits, and each distinct action list stored once.
 *
 * A flow's identity is its mask and masked key (the flow index holds one
 * entry per identity); {@link FlowSet.find} looks one up straight from the
 * bytes of a kernel index entry, without decoding it.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { actionCodec, flowKeyCodec, tunKeyCodec } from "../../maps/layouts.ts";
import { type CompiledFlow, CompileError } from "../compile.ts";

const KEY_SIZE = flowKeyCodec.size;
const ACTION_SIZE = actionCodec.size;
const TUN_KEY_SIZE = tunKeyCodec.size;

/** Whether the first `n` bytes of `a` and `b` are the same. */
export function sameBytes(a: Uint8Array, b: Uint8Array, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A string holding `bytes` one per character, for JavaScript maps. */
export function byteString(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192) as unknown as number[]);
  }
  return s;
}

/** The typed arrays the set's columns are. */
type Column = Uint8Array | Uint16Array | Uint32Array | Int32Array | BigUint64Array;

/**
 * `a` (a typed array over the whole of its buffer) with room for `length`
 * elements, the new ones zero. Its buffer is moved, not copied aside: the
 * old one is freed at once rather than at a later GC, so a column of a
 * million flows does not cost twice its size while it grows. `a` is
 * detached.
 */
export function grown<T extends Column>(a: T, length: number): T {
  const make = a.constructor as new (b: ArrayBuffer) => T;
  return new make((a.buffer as ArrayBuffer).transfer(length * a.BYTES_PER_ELEMENT));
}

/** A mask, with where its bits are. */
export interface MaskShape {
  /** The mask's bytes (a `struct wr_flow_key`). */
  bytes: Uint8Array;
  /** Offsets of the bytes that are not zero: where keys under it can differ. */
  offsets: Uint8Array;
  /** The bytes as a string, for maps. */
  sig: string;
}

/** The shape of mask `bytes`. */
export function maskShape(bytes: Uint8Array): MaskShape {
  const offsets: number[] = [];
  for (let i = 0; i < bytes.length; i++) if (bytes[i]) offsets.push(i);
  return { bytes, offsets: Uint8Array.from(offsets), sig: byteString(bytes) };
}

/** One distinct action list, with the tunnel keys it sets. */
export interface ActionSet {
  /** `struct wr_action` × n; a TUNNEL's arg indexes `tunKeys`. */
  actions: Uint8Array;
  /** How many actions. */
  count: number;
  /** WR_FLOWF_* flags. */
  flags: number;
  /** Each tunnel key, as `struct wr_tun_key` bytes. */
  tunKeys: Uint8Array[];
  /** The actions as the kernel holds them, once every key has a slot. */
  resolved?: Uint8Array;
}

/**
 * KeyArena holds masked flow keys back to back, each only where its mask
 * has bits (its {@link MaskShape.offsets}): a few bytes a flow instead of
 * a whole key.
 */
export class KeyArena {
  /** The stored bytes (replaced when it grows). */
  bytes = new Uint8Array(1 << 16);
  #used = 0;

  /** The stored bytes, in the order stored. */
  get stored(): Uint8Array {
    return this.bytes.subarray(0, this.#used);
  }

  /** Stores the bytes of the key at `at` of `key` that `offsets` name; returns where they start. */
  push(key: Uint8Array, at: number, offsets: Uint8Array): number {
    this.#room(offsets.length);
    const start = this.#used;
    gatherKey(key, at, offsets, this.bytes, start);
    this.#used += offsets.length;
    return start;
  }

  /** Makes room for `size` bytes in all. */
  reserve(size: number): void {
    if (size > this.bytes.length) this.bytes = grown(this.bytes, size);
  }

  /** Stores `length` bytes of another arena's, from `start` of `bytes`; returns where they start. */
  copy(bytes: Uint8Array, start: number, length: number): number {
    this.#room(length);
    const at = this.#used;
    for (let j = 0; j < length; j++) this.bytes[at + j] = bytes[start + j];
    this.#used += length;
    return at;
  }

  #room(length: number): void {
    if (this.#used + length > this.bytes.length) {
      this.reserve(Math.max(this.bytes.length * 2, this.#used + length));
    }
  }

  /**
   * The whole masked key stored at `start` under `offsets`, written at `at`
   * of `out`; without `clear`, only the bytes `offsets` name are written
   * (`out` holds a key under the same mask already).
   */
  keyInto(start: number, offsets: Uint8Array, out: Uint8Array, at: number, clear = true): void {
    scatterKey(this.bytes, start, offsets, out, at, clear);
  }
}

/** Copies the bytes that `offsets` name of the key at `at` of `key` to `dst`, back to back from `start`. */
export function gatherKey(
  key: Uint8Array,
  at: number,
  offsets: Uint8Array,
  dst: Uint8Array,
  start: number,
): void {
  for (let j = 0; j < offsets.length; j++) dst[start + j] = key[at + offsets[j]];
}

/**
 * The inverse of {@link gatherKey}: the bytes from `start` of `src` back
 * where `offsets` name in the key at `at` of `out`, the rest of it
 * cleared first when `clear`.
 */
export function scatterKey(
  src: Uint8Array,
  start: number,
  offsets: Uint8Array,
  out: Uint8Array,
  at: number,
  clear: boolean,
): void {
  if (clear) out.fill(0, at, at + KEY_SIZE);
  for (let j = 0; j < offsets.length; j++) out[at + offsets[j]] = src[start + j];
}

/**
 * Flows an earlier set compiled, column by column as {@link FlowSet}
 * holds them, to be added again without compiling their text.
 */
export interface CompiledColumns {
  /** The masks. */
  masks: MaskShape[];
  /** The masked keys, as the set's arena held them. */
  keys: KeyArena;
  /** Per flow: its mask's index. */
  maskIndex: Uint8Array;
  /** Per flow: where its key starts in `keys`. */
  keyAt: Uint32Array;
  /** Per flow: priority. */
  priority: Uint16Array;
  /** Per flow: cookie. */
  cookie: BigUint64Array;
  /** Per flow: its action list's index. */
  actionSet: Uint32Array;
  /** Per action list: flags, actions and tunnel keys, back to back. */
  setRaw: Uint8Array[];
  /** Per action list: how many actions. */
  setCount: Uint32Array;
}

/** The error for a second flow with a match already given (the second at `priority`). */
export function sameMatch(priority: number): CompileError {
  return new CompileError(
    `two flows have the same match (the second at priority ${priority}): one would hide the other`,
  );
}

/** Where a flow of the set stands against the installed table. */
export const FlowState = { NEW: 0, UNCHANGED: 1, MODIFIED: 2 } as const;

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FlowSet is the compiled table, column by column. */
export class FlowSet {
  /** Distinct masks, in order of first use. */
  readonly masks: (MaskShape & { maxPriority: number; flows: number })[] = [];
  /** Distinct action lists. */
  readonly actionSets: ActionSet[] = [];
  /** How many flows. */
  count = 0;
  /** Per flow: its mask's index in `masks`. */
  maskIndex = new Uint8Array(1024);
  /** Per flow: where its projected key starts in the arena. */
  keyAt = new Uint32Array(1024);
  /** Per flow: priority. */
  priority = new Uint16Array(1024);
  /** Per flow: its action list's index in `actionSets`. */
  actionSet = new Uint32Array(1024);
  /**
   * Per flow, once {@link track} made it: the installed flow's id it takes
   * over, or -1.
   */
  oldId = new Int32Array(0);
  /** Per flow, once {@link track} made it: a {@link FlowState}. */
  state = new Uint8Array(0);
  // Per flow: cookie; made when the first flow with a cookie comes (a
  // million flows mostly have none: 8 MB of zeros).
  #cookie?: BigUint64Array;
  readonly #keys = new KeyArena();
  // The index by match, built when first wanted (see index()).
  #table = new Int32Array(0);
  #indexed = false;
  readonly #maskBySig = new Map<string, number>();
  #lastMask = -1;
  #lastWords: Uint32Array = new Uint32Array(0);
  #input?: Uint8Array;
  #inputWords?: Uint32Array;
  readonly #setOf = new WeakMap<object, number>();
  #scratch = new Uint8Array(1024);
  #setTable = new Int32Array(64).fill(-1);
  readonly #setRaw: Uint8Array[] = [];
  readonly #setHash: number[] = [];
  // Noted flows added: their masks' and action lists' indexes here.
  #noted?: CompiledColumns;
  #notedMask = new Int16Array(0);
  #notedSet = new Int32Array(0);

  /**
   * Adds a compiled flow; a second flow with the same match (at any
   * priority) is refused, since one would hide the other (once the set is
   * indexed: see {@link index}).
   */
  add(c: CompiledFlow): number {
    const mi = this.#maskOf(c.maskBytes);
    const at = this.#keys.push(c.keyBytes, 0, this.masks[mi].offsets);
    return this.#append(mi, at, c.spec.priority, c.spec.cookie, this.#intern(c));
  }

  /**
   * Adds flow `j` of `noted` (as an earlier set compiled it), as
   * {@link add} would add the flow it was compiled from: its masked key
   * copied as stored, its mask and action list looked up once per noted
   * one.
   */
  addNoted(noted: CompiledColumns, j: number): number {
    if (this.#noted !== noted) {
      this.#noted = noted;
      this.#notedMask = new Int16Array(noted.masks.length).fill(-1);
      this.#notedSet = new Int32Array(noted.setRaw.length).fill(-1);
    }
    const nm = noted.maskIndex[j];
    let mi = this.#notedMask[nm];
    if (mi < 0) mi = this.#notedMask[nm] = this.#maskOf(noted.masks[nm].bytes);
    const at = this.#keys.copy(noted.keys.bytes, noted.keyAt[j], noted.masks[nm].offsets.length);
    const s = noted.actionSet[j];
    let id = this.#notedSet[s];
    if (id < 0) {
      const raw = noted.setRaw[s];
      id = this.#notedSet[s] = this.#internRaw(raw, raw.length, noted.setCount[s]);
    }
    return this.#append(mi, at, noted.priority[j], noted.cookie[j], id);
  }

  /** The index of mask `maskBytes` in `masks`, added if new. */
  #maskOf(maskBytes: Uint8Array): number {
    // Flows come in runs under one mask: try the last one before hashing.
    let mi = this.#lastMask >= 0 && this.#sameAsLast(maskBytes)
      ? this.#lastMask
      : this.#maskBySig.get(byteString(maskBytes));
    if (mi === undefined) {
      if (this.masks.length === 255) {
        throw new CompileError("the flows use more than 255 masks");
      }
      mi = this.masks.length;
      // A copy: the caller may encode the next flow's mask into the same bytes.
      this.masks.push({ ...maskShape(maskBytes.slice()), maxPriority: 0, flows: 0 });
      this.#maskBySig.set(this.masks[mi].sig, mi);
    }
    if (mi !== this.#lastMask) {
      this.#lastMask = mi;
      this.#lastWords = new Uint32Array(this.masks[mi].bytes.buffer, 0, KEY_SIZE / 4);
    }
    return mi;
  }

  /**
   * Whether `maskBytes` is the last mask's bytes, compared a word at a
   * time: a million flows compiled one by one come in the same buffer.
   */
  #sameAsLast(maskBytes: Uint8Array): boolean {
    const last = this.masks[this.#lastMask].bytes;
    if (maskBytes !== this.#input) {
      this.#input = maskBytes;
      this.#inputWords = maskBytes.byteOffset % 4 === 0 && maskBytes.length === KEY_SIZE
        ? new Uint32Array(maskBytes.buffer, maskBytes.byteOffset, KEY_SIZE / 4)
        : undefined;
    }
    const a = this.#inputWords;
    if (!a) return sameBytes(last, maskBytes, maskBytes.length);
    const b = this.#lastWords;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }

  /** Appends a flow under mask `mi`, its key stored at `at` of the arena. */
  #append(mi: number, at: number, priority: number, cookie: bigint, actionSet: number): number {
    if (this.count === this.priority.length) this.reserve(this.count * 2);
    const n = this.count++;
    this.maskIndex[n] = mi;
    this.keyAt[n] = at;
    this.priority[n] = priority;
    if (cookie) (this.#cookie ??= new BigUint64Array(this.priority.length))[n] = cookie;
    this.actionSet[n] = actionSet;
    const mask = this.masks[mi];
    mask.flows++;
    if (priority > mask.maxPriority) mask.maxPriority = priority;
    if (this.#indexed) {
      if (this.count * 2 > this.#table.length) this.#rehash(this.#table.length * 2);
      else this.#insert(n);
    }
    return n;
  }

  /**
   * Indexes the flows by match, refusing a second flow with the match of
   * an earlier one. Made when first wanted: a set whose digest says it is
   * the table already installed (so it has no such pair) is never indexed.
   */
  index(): void {
    if (this.#indexed) return;
    let size = 2048;
    while (size < 2 * this.count) size *= 2;
    this.#rehash(size);
    this.#indexed = true;
  }

  /**
   * The flow whose mask is `masks[mi]` and whose key is the one at `at` of
   * `bytes` (a full `struct wr_flow_key`, masked), or -1.
   */
  find(mi: number, bytes: Uint8Array, at: number): number {
    this.index();
    const offsets = this.masks[mi].offsets;
    let h = FNV_OFFSET ^ mi;
    for (let j = 0; j < offsets.length; j++) {
      h = Math.imul(h ^ bytes[at + offsets[j]], FNV_PRIME);
    }
    const size = this.#table.length;
    const arena = this.#keys.bytes;
    for (let slot = (h >>> 0) & (size - 1);; slot = (slot + 1) & (size - 1)) {
      const n = this.#table[slot];
      if (n < 0) return -1;
      if (this.maskIndex[n] !== mi) continue;
      const k = this.keyAt[n];
      let same = true;
      for (let j = 0; j < offsets.length; j++) {
        if (arena[k + j] !== bytes[at + offsets[j]]) {
          same = false;
          break;
        }
      }
      if (same) return n;
    }
  }

  /**
   * A digest of the flows added, in order: their masks, keys, priorities,
   * cookies and action lists (before tunnel keys get slots). Flows with
   * the same digest make the same table. Hashed column by column, a few
   * calls for a million flows.
   */
  digest(): string {
    const h = createHash("sha256");
    const n = this.count;
    const add = (a: ArrayBufferView) =>
      h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    add(new Uint32Array([n, this.masks.length, this.actionSets.length]));
    for (const m of this.masks) add(m.bytes);
    for (const raw of this.#setRaw) add(new Uint32Array([raw.length])), add(raw);
    add(this.maskIndex.subarray(0, n));
    add(this.#keys.stored);
    add(this.priority.subarray(0, n));
    for (const part of this.cookies()) add(part);
    add(this.actionSet.subarray(0, n));
    return h.digest("hex");
  }

  /** Flow `n`'s cookie. */
  cookieOf(n: number): bigint {
    return this.#cookie ? this.#cookie[n] : 0n;
  }

  /** The flows' cookies, in order, in parts (zeros made a part at a time when none has one). */
  *cookies(): Generator<BigUint64Array> {
    const n = this.count;
    if (this.#cookie) return yield this.#cookie.subarray(0, n);
    const zeros = new BigUint64Array(Math.min(n, 8192));
    for (let at = 0; at < n; at += zeros.length) {
      yield zeros.subarray(0, Math.min(zeros.length, n - at));
    }
  }

  /**
   * Makes {@link oldId} and {@link state} for the flows added, which are
   * all there will be: only a comparison with an installed table needs
   * them (an apply to an empty table spares their 5 bytes a flow).
   */
  track(): void {
    this.oldId = new Int32Array(this.count).fill(-1);
    this.state = new Uint8Array(this.count);
  }

  /** Whether flow `n` takes over no installed flow: new. */
  isNew(n: number): boolean {
    return n >= this.oldId.length || this.state[n] === FlowState.NEW || this.oldId[n] < 0;
  }

  /** The flows' masked keys, back to back, as `keyAt` places them. */
  get arena(): Uint8Array {
    return this.#keys.stored;
  }

  /** Flow `n`'s full masked key, written at `at` of `out` (zeroed first). */
  keyInto(n: number, out: Uint8Array, at: number): void {
    this.#keys.keyInto(this.keyAt[n], this.masks[this.maskIndex[n]].offsets, out, at);
  }

  /** The index of `c`'s action list, stored once however many flows share it. */
  #intern(c: CompiledFlow): number {
    // Flows compiled through one memo share the very same arrays.
    let id = this.#setOf.get(c.actions);
    if (id === undefined) {
      id = this.#internBytes(c);
      this.#setOf.set(c.actions, id);
    }
    return id;
  }

  #internBytes(c: CompiledFlow): number {
    // Flags, actions and tunnel keys back to back: the list's identity.
    const size = 1 + c.actions.length * ACTION_SIZE + c.tunKeyBytes.length * TUN_KEY_SIZE;
    if (this.#scratch.length < size) this.#scratch = new Uint8Array(size * 2);
    const raw = this.#scratch;
    const view = new DataView(raw.buffer);
    raw[0] = c.flags;
    c.actions.forEach((a, i) => actionCodec.write(view, 1 + i * ACTION_SIZE, a));
    let at = 1 + c.actions.length * ACTION_SIZE;
    for (const k of c.tunKeyBytes) {
      raw.set(k, at);
      at += TUN_KEY_SIZE;
    }
    return this.#internRaw(raw, size, c.actions.length);
  }

  /** The index of the list whose flags, `count` actions and keys are the first `size` bytes of `raw`. */
  #internRaw(raw: Uint8Array, size: number, count: number): number {
    let h = FNV_OFFSET;
    for (let i = 0; i < size; i++) h = Math.imul(h ^ raw[i], FNV_PRIME);
    const table = this.#setTable;
    for (let slot = (h >>> 0) & (table.length - 1);; slot = (slot + 1) & (table.length - 1)) {
      const id = table[slot];
      if (id < 0) break;
      const other = this.#setRaw[id];
      if (other.length === size && sameBytes(other, raw, size)) return id;
    }
    const id = this.actionSets.length;
    const end = 1 + count * ACTION_SIZE;
    const tunKeys: Uint8Array[] = [];
    for (let at = end; at < size; at += TUN_KEY_SIZE) {
      tunKeys.push(raw.slice(at, at + TUN_KEY_SIZE));
    }
    this.actionSets.push({ actions: raw.slice(1, end), count, flags: raw[0], tunKeys });
    this.#setRaw.push(raw.slice(0, size));
    this.#setHash.push(h >>> 0);
    if (this.actionSets.length * 2 > table.length) {
      this.#setTable = new Int32Array(table.length * 2).fill(-1);
      this.#setHash.forEach((hh, i) => this.#placeSet(i, hh));
    } else this.#placeSet(id, h >>> 0);
    return id;
  }

  #placeSet(id: number, h: number): void {
    const table = this.#setTable;
    let slot = h & (table.length - 1);
    while (table[slot] >= 0) slot = (slot + 1) & (table.length - 1);
    table[slot] = id;
  }

  #hash(n: number): number {
    const offsets = this.masks[this.maskIndex[n]].offsets;
    const k = this.keyAt[n];
    const arena = this.#keys.bytes;
    let h = FNV_OFFSET ^ this.maskIndex[n];
    for (let j = 0; j < offsets.length; j++) h = Math.imul(h ^ arena[k + j], FNV_PRIME);
    return h >>> 0;
  }

  /** Puts flow `n` in the index; refuses it if an earlier flow there has its match. */
  #insert(n: number): void {
    const size = this.#table.length;
    const mi = this.maskIndex[n], len = this.masks[mi].offsets.length;
    const arena = this.#keys.bytes, k = this.keyAt[n];
    let slot = this.#hash(n) & (size - 1);
    for (let o; (o = this.#table[slot]) >= 0; slot = (slot + 1) & (size - 1)) {
      if (this.maskIndex[o] !== mi) continue;
      const ko = this.keyAt[o];
      let j = 0;
      while (j < len && arena[ko + j] === arena[k + j]) j++;
      if (j === len) throw sameMatch(this.priority[n]);
    }
    this.#table[slot] = n;
  }

  /** Builds the index again in `size` slots. */
  #rehash(size: number): void {
    // The old table is not read again: freed before the new one is made.
    (this.#table.buffer as ArrayBuffer).transfer(0);
    this.#table = new Int32Array(size).fill(-1);
    for (let n = 0; n < this.count; n++) this.#insert(n);
  }

  /**
   * Makes room for `flows` flows in all and `keyBytes` bytes of masked
   * keys: a caller that knows how many are coming spares the set its
   * growing.
   */
  reserve(flows: number, keyBytes = 0): void {
    this.#keys.reserve(keyBytes);
    const size = this.priority.length;
    if (flows > size) {
      this.maskIndex = grown(this.maskIndex, flows);
      this.keyAt = grown(this.keyAt, flows);
      this.priority = grown(this.priority, flows);
      if (this.#cookie) this.#cookie = grown(this.#cookie, flows);
      this.actionSet = grown(this.actionSet, flows);
    }
    if (!this.#indexed) return;
    let slots = this.#table.length;
    while (slots < 2 * flows) slots *= 2;
    if (slots > this.#table.length) this.#rehash(slots);
  }
}
