/**
 * The flow index's entry layout: a `struct wr_flow_index_key` (a mask id,
 * a key masked by it, and whether it is a staged replacement) names a
 * `struct wr_flow_entry` (flow id, priority, flags, cookie, owner, the
 * generations that see it, actions). Everything that walks the table works
 * on these bytes as the kernel's batch reads leave them and decodes only
 * what it returns, so this module is the one place that knows where a
 * field sits: {@link Entry} reads an entry in place, {@link scan} walks a
 * whole index with one cursor ({@link visible} only what one generation
 * sees), {@link entryBytes} and {@link EntryBatch}
 * write new ones. A new field of the entry is one accessor and one writer
 * here.
 *
 * @module
 */

import { BackgroundBatchWrites } from "../../bpf/background_writes.ts";
import { type BatchChunk, BpfMap } from "../../bpf/map.ts";
import { fieldOffsets } from "../../maps/codec.ts";
import { MapType } from "../../bpf/info.ts";
import {
  actionCodec,
  type ActionEntry,
  ActionOp,
  flowEntryCodec,
  flowIndexKeyCodec,
  flowKeyCodec,
  FlowVis,
  NO_TUN_KEY,
} from "../../maps/layouts.ts";
import { FlowTableError } from "./error.ts";

/** Bytes of a `struct wr_flow_key`. */
export const KEY_SIZE = flowKeyCodec.size;
/** Bytes of a `struct wr_flow_index_key`. */
export const INDEX_KEY_SIZE = flowIndexKeyCodec.size;
/** Bytes of a `struct wr_flow_entry`. */
export const ENTRY_SIZE = flowEntryCodec.size;
/** Where a flow key's fields sit in a `struct wr_flow_key`. */
export const KEY_FIELD = fieldOffsets(flowKeyCodec);
/** Entries per batch read or written: big enough to amortise the syscall, small enough to stream. */
export const CHUNK = 16384;
/**
 * Entries per batch written in the background: a quarter of {@link CHUNK},
 * as the two sets of buffers shared with the worker are memory a million
 * flows' apply adds to its peak (2 MiB instead of 8).
 */
const BACKGROUND_CHUNK = CHUNK / 4;

const ACTION_SIZE = actionCodec.size;
const IK = fieldOffsets(flowIndexKeyCodec);
const E = fieldOffsets(flowEntryCodec);
const A = fieldOffsets(actionCodec);
const LE = true;

/** Creates an empty flow index for `maxFlows` flows. */
export function createIndex(maxFlows: number): BpfMap {
  return BpfMap.create({
    type: MapType.HASH,
    name: "wr_flow_index",
    keySize: INDEX_KEY_SIZE,
    valueSize: ENTRY_SIZE,
    maxEntries: maxFlows,
    flags: 1, // BPF_F_NO_PREALLOC: memory only for flows that exist
  });
}

/** Refuses (and closes) an index whose key or entry is not this warren's. */
export function checkIndexLayout(map: BpfMap): BpfMap {
  if (map.keySize !== INDEX_KEY_SIZE || map.info.valueSize !== ENTRY_SIZE) {
    map.close();
    throw new FlowTableError("the flow index has another layout than this warren's");
  }
  return map;
}

/**
 * The index key of `keyBytes` (a masked `struct wr_flow_key`) under mask
 * `maskId`, written into `out` (every byte of it) when given.
 */
export function indexKey(
  maskId: number,
  keyBytes: Uint8Array,
  out: Uint8Array = new Uint8Array(INDEX_KEY_SIZE),
): Uint8Array {
  // Little-endian by hand: a DataView per key was a tenth of an install.
  out[IK.mask_id] = maskId & 0xff;
  out[IK.mask_id + 1] = (maskId >>> 8) & 0xff;
  out[IK.mask_id + 2] = (maskId >>> 16) & 0xff;
  out[IK.mask_id + 3] = maskId >>> 24;
  out.fill(0, IK.alt, IK.alt + 4);
  out.set(keyBytes, IK.key);
  return out;
}

/** A copy of index key `ik` naming its staged replacement (alt 1), or the flow itself (alt 0). */
export function altKey(ik: Uint8Array, alt: 0 | 1 = 1): Uint8Array {
  const out = ik.slice();
  new DataView(out.buffer).setUint32(IK.alt, alt, LE);
  return out;
}

/** The `WR_VIS_*` bit of table generation `gen` (0 or 1). */
export function visBit(gen: number): number {
  return gen ? FlowVis.GEN1 : FlowVis.GEN0;
}

/** A copy of entry bytes `entry` seen by the generations of `vis`. */
export function withVis(entry: Uint8Array, vis: number): Uint8Array {
  const out = entry.slice();
  out[E.vis] = vis;
  return out;
}

/** What a new entry holds. */
export interface EntryFields {
  /** Its counters' index. */
  flowId: number;
  /** Priority. */
  priority: number;
  /** The user's cookie. */
  cookie: bigint;
  /** WR_FLOWF_* flags. */
  flags: number;
  /** Its owner's id (0: the operator's). */
  owner: number;
  /** The generations that see it (`WR_VIS_*`; default both). */
  vis?: number;
  /** `struct wr_action` × n, tunnel keys named by slot (see {@link resolveActions}). */
  actions: Uint8Array;
}

function writeEntry(out: Uint8Array, dv: DataView, eo: number, f: EntryFields): void {
  out.fill(0, eo, eo + ENTRY_SIZE);
  dv.setUint32(eo + E.flow_id, f.flowId, LE);
  dv.setUint16(eo + E.priority, f.priority, LE);
  out[eo + E.n_actions] = f.actions.length / ACTION_SIZE;
  out[eo + E.flags] = f.flags;
  dv.setBigUint64(eo + E.cookie, f.cookie, LE);
  dv.setUint16(eo + E.owner, f.owner, LE);
  out[eo + E.vis] = f.vis ?? FlowVis.BOTH;
  out.set(f.actions, eo + E.actions);
}

/** A fresh entry holding `f`. */
export function entryBytes(f: EntryFields): Uint8Array {
  const out = new Uint8Array(ENTRY_SIZE);
  writeEntry(out, new DataView(out.buffer), 0, f);
  return out;
}

const shared = new Uint8Array(ENTRY_SIZE);
const sharedView = new DataView(shared.buffer);

/**
 * Entry `f` in one buffer every call reuses, valid until the next call:
 * for a write, which copies it (a flow installed at a time otherwise
 * allocates a buffer and a view per write).
 */
export function sharedEntry(f: EntryFields): Uint8Array {
  writeEntry(shared, sharedView, 0, f);
  return shared;
}

/** Actions as the kernel holds them, in `struct wr_action` bytes. */
export function actionBytes(actions: ActionEntry[]): Uint8Array {
  const out = new Uint8Array(actions.length * ACTION_SIZE);
  const dv = new DataView(out.buffer);
  actions.forEach((a, i) => actionCodec.write(dv, i * ACTION_SIZE, a));
  return out;
}

/** Raw actions, decoded. */
export function decodeActions(raw: Uint8Array): ActionEntry[] {
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out: ActionEntry[] = [];
  for (let at = 0; at < raw.length; at += ACTION_SIZE) out.push(actionCodec.read(dv, at));
  return out;
}

/** Whether an action with op `op` names a tunnel key slot in its arg (a SET_FIELD its value's). */
function hasSlot(op: number): boolean {
  return op === ActionOp.TUNNEL || op === ActionOp.SET_FIELD;
}

/**
 * A copy of raw `actions` whose TUNNEL and SET_FIELD actions name the slot
 * `slotOf` gives for their argument (an index into the flow's tunnel
 * keys), or undefined when it gives none for one of them.
 */
export function resolveActions(
  actions: Uint8Array,
  slotOf: (key: number) => number | undefined,
): Uint8Array | undefined {
  const out = actions.slice();
  const dv = new DataView(out.buffer);
  for (let at = 0; at < out.length; at += ACTION_SIZE) {
    if (!hasSlot(out[at])) continue;
    const slot = slotOf(dv.getUint32(at + A.arg, LE));
    if (slot === undefined) return undefined;
    dv.setUint32(at + A.arg, slot, LE);
  }
  return out;
}

/** Calls `fn` with each tunnel key slot of the `n` actions at `at` of `bytes`. */
function eachSlot(
  bytes: Uint8Array,
  dv: DataView,
  at: number,
  n: number,
  fn: (slot: number) => void,
): void {
  for (let a = at; a < at + n * ACTION_SIZE; a += ACTION_SIZE) {
    if (!hasSlot(bytes[a])) continue;
    const slot = dv.getUint32(a + A.arg, LE);
    if (slot !== NO_TUN_KEY) fn(slot);
  }
}

/** Calls `fn` with each tunnel key slot that raw resolved `actions` name. */
export function actionSlots(actions: Uint8Array, fn: (slot: number) => void): void {
  const dv = new DataView(actions.buffer, actions.byteOffset, actions.byteLength);
  eachSlot(actions, dv, 0, actions.length / ACTION_SIZE, fn);
}

/**
 * Entry is one index entry read in place: its index key at `ko` of `keys`
 * and its entry at `eo` of `values`. From {@link scan} it is a cursor,
 * valid until the scan moves on; copy what must outlive it.
 */
export class Entry {
  /** The index keys it reads. */
  readonly keys: Uint8Array;
  /** The entries it reads. */
  readonly values: Uint8Array;
  /** Where its index key starts in `keys`. */
  ko = 0;
  /** Where it starts in `values`. */
  eo = 0;
  readonly #kdv: DataView;
  readonly #vdv: DataView;

  /** Reads the entries of `values` under the index keys of `keys`. */
  constructor(keys: Uint8Array, values: Uint8Array) {
    this.keys = keys;
    this.values = values;
    this.#kdv = new DataView(keys.buffer, keys.byteOffset, keys.byteLength);
    this.#vdv = new DataView(values.buffer, values.byteOffset, values.byteLength);
  }

  /** Moves to the `i`th entry of the buffers. */
  at(i: number): this {
    this.ko = i * INDEX_KEY_SIZE;
    this.eo = i * ENTRY_SIZE;
    return this;
  }

  /** The id of the mask its key is under. */
  get maskId(): number {
    return this.#kdv.getUint32(this.ko + IK.mask_id, LE);
  }

  /** 1 when it is a staged replacement, else 0. */
  get alt(): number {
    return this.#kdv.getUint32(this.ko + IK.alt, LE);
  }

  /** Where its masked flow key starts in `keys`. */
  get keyAt(): number {
    return this.ko + IK.key;
  }

  /** Its counters' index. */
  get flowId(): number {
    return this.#vdv.getUint32(this.eo + E.flow_id, LE);
  }

  /** Its priority. */
  get priority(): number {
    return this.#vdv.getUint16(this.eo + E.priority, LE);
  }

  /** The user's cookie. */
  get cookie(): bigint {
    return this.#vdv.getBigUint64(this.eo + E.cookie, LE);
  }

  /** Its cookie into `out[at]` (the low 32 bits) and `out[at + 1]`, without a BigInt made. */
  cookieInto(out: Uint32Array, at: number): void {
    out[at] = this.#vdv.getUint32(this.eo + E.cookie, LE);
    out[at + 1] = this.#vdv.getUint32(this.eo + E.cookie + 4, LE);
  }

  /** WR_FLOWF_* flags. */
  get flags(): number {
    return this.values[this.eo + E.flags];
  }

  /** Its owner's id (0: the operator's). */
  get owner(): number {
    return this.#vdv.getUint16(this.eo + E.owner, LE);
  }

  /** The generations that see it (`WR_VIS_*`). */
  get vis(): number {
    return this.values[this.eo + E.vis];
  }

  /** How many actions it has. */
  get actionCount(): number {
    return this.values[this.eo + E.n_actions];
  }

  /** Its raw actions, in place. */
  actionBytes(): Uint8Array {
    const at = this.eo + E.actions;
    return this.values.subarray(at, at + this.actionCount * ACTION_SIZE);
  }

  /**
   * A hash of its raw actions (FNV-1a over 32-bit words): a dump finds
   * each flow's shared action list by it without a view of the list made
   * per flow, or a multiply per byte.
   */
  actionHash(): number {
    const at = this.eo + E.actions;
    const end = at + this.actionCount * ACTION_SIZE;
    let h = 0x811c9dc5;
    for (let i = at; i < end; i += 4) h = Math.imul(h ^ this.#vdv.getUint32(i, LE), 0x01000193);
    return h;
  }

  /** Its raw actions as 32-bit words (little-endian), a copy: what {@link sameActions} compares with. */
  actionWords(): Uint32Array {
    const at = this.eo + E.actions;
    const words = new Uint32Array((this.actionCount * ACTION_SIZE) / 4);
    for (let i = 0; i < words.length; i++) words[i] = this.#vdv.getUint32(at + i * 4, LE);
    return words;
  }

  /**
   * Whether its raw actions are `words` (as {@link actionWords} gives
   * them): a word at a time, as a dump compares every flow's (a byte at
   * a time took nearly twice as long).
   */
  sameActions(words: Uint32Array): boolean {
    if (words.length * 4 !== this.actionCount * ACTION_SIZE) return false;
    const at = this.eo + E.actions;
    for (let i = 0; i < words.length; i++) {
      if (this.#vdv.getUint32(at + i * 4, LE) !== words[i]) return false;
    }
    return true;
  }

  /** Calls `fn` with each tunnel key slot its actions name. */
  eachSlot(fn: (slot: number) => void): void {
    eachSlot(this.values, this.#vdv, this.eo + E.actions, this.actionCount, fn);
  }

  /** Whether one of its actions sends to port number `port`. */
  outputsTo(port: number): boolean {
    const start = this.eo + E.actions;
    for (let at = start; at < start + this.actionCount * ACTION_SIZE; at += ACTION_SIZE) {
      const op = this.values[at];
      if (
        (op === ActionOp.OUTPUT || op === ActionOp.TUNNEL) &&
        this.#vdv.getUint16(at + A.port, LE) === port
      ) return true;
    }
    return false;
  }

  /** Whether its action is `group:group`. */
  sendsToGroup(group: number): boolean {
    const at = this.eo + E.actions;
    return this.actionCount > 0 && this.values[at] === ActionOp.GROUP &&
      this.#vdv.getUint32(at + A.arg, LE) === group;
  }

  /** A copy of its index key. */
  indexKey(): Uint8Array {
    return this.keys.slice(this.ko, this.ko + INDEX_KEY_SIZE);
  }

  /** A copy of the entry. */
  entry(): Uint8Array {
    return this.values.slice(this.eo, this.eo + ENTRY_SIZE);
  }
}

/**
 * Every entry of `index`, read in batches of {@link CHUNK}, through one
 * cursor per batch (see {@link Entry}); `batchDone` hears how many entries
 * each batch held once they have all been taken.
 */
export function* scan(index: BpfMap, batchDone?: (count: number) => void): Generator<Entry> {
  for (const c of index.lookupBatch(CHUNK)) {
    const e = new Entry(c.keys, c.values);
    for (let i = 0; i < c.count; i++) yield e.at(i);
    batchDone?.(c.count);
  }
}

/**
 * The flows of `index` that packets of generation `gen` see, as
 * {@link scan} gives them (outside an owner's apply, every entry): an
 * entry the generation sees, or for one it does not, its stand-in if the
 * generation sees that, as the kernel's lookup takes them.
 */
export function* visible(
  index: BpfMap,
  gen: number,
  batchDone?: (count: number) => void,
): Generator<Entry> {
  const bit = visBit(gen);
  for (const e of scan(index, batchDone)) {
    const seen = seenFor(index, e, bit);
    if (seen) yield seen;
  }
}

/**
 * {@link visible}'s flows handed to `fn` one at a time, read in batches of
 * `chunk`: for a loop over a million flows, a generator's steps (two per
 * flow) cost more than the work.
 */
export function eachVisible(
  index: BpfMap,
  gen: number,
  fn: (e: Entry) => void,
  chunk = CHUNK,
): void {
  for (const c of index.lookupBatch(chunk)) visibleIn(index, c, visBit(gen), fn);
}

/**
 * {@link eachVisible} with the kernel's copies made off the JavaScript
 * thread: the next chunk is read while `fn` works through this one.
 */
export async function eachVisibleAsync(
  index: BpfMap,
  gen: number,
  fn: (e: Entry) => void,
  chunk = CHUNK,
): Promise<void> {
  for await (const c of index.lookupBatchAsync(chunk)) visibleIn(index, c, visBit(gen), fn);
}

/** The flows of chunk `c` of `index` that the generation with visibility bit `bit` sees, handed to `fn`. */
function visibleIn(index: BpfMap, c: BatchChunk, bit: number, fn: (e: Entry) => void): void {
  const e = new Entry(c.keys, c.values);
  for (let i = 0; i < c.count; i++) {
    const seen = seenFor(index, e.at(i), bit);
    if (seen) fn(seen);
  }
}

/** What packets of the generation with visibility bit `bit` see of entry `e`: it, its stand-in or nothing. */
function seenFor(index: BpfMap, e: Entry, bit: number): Entry | undefined {
  if (e.alt) return undefined;
  if (e.vis & bit) return e;
  const ik = altKey(e.indexKey());
  const standIn = index.lookup(ik);
  return standIn && standIn[E.vis] & bit ? new Entry(ik, standIn) : undefined;
}

/** How many flows of `index` packets of generation `gen` see. */
export function countEntries(index: BpfMap, gen: number): number {
  let n = 0;
  for (const _ of visible(index, gen)) n++;
  return n;
}

/** Deletes `keys` (each an index key that is there) from `index`, a batch at a time. */
export function deleteKeys(index: BpfMap, keys: Uint8Array[], batchDone?: () => void): void {
  for (let i = 0; i < keys.length; i += CHUNK) {
    const part = keys.slice(i, i + CHUNK);
    const buf = new Uint8Array(part.length * INDEX_KEY_SIZE);
    part.forEach((k, j) => buf.set(k, j * INDEX_KEY_SIZE));
    index.deleteBatch(buf, part.length);
    batchDone?.();
  }
}

/**
 * EntryBatch writes entries into an index in batches of {@link CHUNK}.
 * With `background`, a table of more than one (smaller) batch has its batches
 * written on a worker thread while the next is filled (see
 * {@link BackgroundBatchWrites}): {@link finish} waits for them, and the
 * batch must be disposed of.
 */
export class EntryBatch {
  readonly #index: BpfMap;
  #background: boolean;
  readonly #chunk: number;
  #writer?: BackgroundBatchWrites;
  // Plain buffers first; a background writer's shared ones after.
  #keys: Uint8Array;
  #values: Uint8Array;
  #kdv: DataView;
  #vdv: DataView;
  #count = 0;

  /** Writes into `index`, in the background when `background`. */
  constructor(index: BpfMap, background = false) {
    this.#index = index;
    this.#background = background;
    this.#chunk = background ? BACKGROUND_CHUNK : CHUNK;
    this.#keys = new Uint8Array(this.#chunk * INDEX_KEY_SIZE);
    this.#values = new Uint8Array(this.#chunk * ENTRY_SIZE);
    this.#kdv = new DataView(this.#keys.buffer);
    this.#vdv = new DataView(this.#values.buffer);
  }

  /** How many entries it holds, not yet flushed. */
  get size(): number {
    return this.#count;
  }

  /**
   * Adds entry `f` under mask `maskId` and masked flow key `key`. Returns
   * whether the batch is full.
   */
  add(maskId: number, key: Uint8Array, f: EntryFields): boolean {
    const ko = this.#count * INDEX_KEY_SIZE;
    this.#kdv.setUint32(ko + IK.mask_id, maskId, LE);
    this.#kdv.setUint32(ko + IK.alt, 0, LE);
    this.#keys.set(key, ko + IK.key);
    writeEntry(this.#values, this.#vdv, this.#count * ENTRY_SIZE, f);
    return ++this.#count === this.#chunk;
  }

  /** Adds entry bytes `entry` under index key `ik`. Returns whether the batch is full. */
  put(ik: Uint8Array, entry: Uint8Array): boolean {
    this.#keys.set(ik, this.#count * INDEX_KEY_SIZE);
    this.#values.set(entry, this.#count * ENTRY_SIZE);
    return ++this.#count === this.#chunk;
  }

  /** Writes what the batch holds into the index (in the background: starts writing it). */
  flush(): void {
    if (this.#writer) this.#writer.submit(this.#count);
    else {
      this.#index.updateBatch(this.#keys, this.#values, this.#count);
      // A whole batch: more may come, worth a worker (a small table is not).
      if (this.#background && this.#count === this.#chunk) {
        this.#writer = new BackgroundBatchWrites(this.#index, this.#chunk);
      }
    }
    this.#count = 0;
    if (!this.#writer) return;
    const { keys, values } = this.#writer.buffers();
    this.#keys = keys;
    this.#values = values;
    this.#kdv = new DataView(keys.buffer);
    this.#vdv = new DataView(values.buffer);
  }

  /**
   * Waits for the writes made in the background, throws the first that
   * failed, and stops the worker (its memory is not held through the rest
   * of the change); later batches are written on this thread.
   */
  finish(): void {
    const writer = this.#writer;
    this.#writer = undefined;
    this.#background = false;
    try {
      writer?.finish();
    } finally {
      writer?.close();
    }
  }

  /** Waits for the writes made in the background, whatever became of them, and stops its worker. */
  [Symbol.dispose](): void {
    this.#writer?.close();
  }
}
