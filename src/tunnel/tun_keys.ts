/**
 * Tunnel key slots, shared: every action that sets the same tunnel key
 * (id, remote, source, TOS, TTL, flags, Geneve options) names one slot of
 * `wr_tun_keys`. A million flows towards a thousand remotes take a
 * thousand slots, and two flows set the same key exactly when they name
 * the same slot, which is what lets `apply` compare flows without reading
 * tunnel keys back.
 *
 * `wr_tun_key_slots` finds a key's slot by its bytes; `wr_tun_key_refs`
 * counts the actions naming each slot (0 = free). Like the flow id bitmap,
 * the counts are a cache of the flow table: `apply` recounts them.
 *
 * A slot's content never changes while any flow names it, and a freed slot
 * is reused last (allocation goes round robin), so a packet in flight that
 * read an old flow entry still finds the key that entry meant.
 *
 * @module
 */

import { TunFlag, tunKeyCodec, TunKeySet } from "../maps/layouts.ts";
import { fieldOffsets, u32 } from "../maps/codec.ts";
import { encodeWith } from "../maps/typed_map.ts";
import type { Addr } from "./addr.ts";
import type { DatapathMaps } from "./pins.ts";

const SIZE = tunKeyCodec.size;
/** Entries per batch read or written. */
const BATCH = 65536;
const TK = fieldOffsets(tunKeyCodec);

/** A key's bytes as a string, for JavaScript maps. */
function sig(bytes: Uint8Array): string {
  return String.fromCharCode.apply(null, bytes as unknown as number[]);
}

// The string of a compiled tunnel key, made once: every flow sharing an
// action list shares its keys' bytes (see ActionMemo), and one install at
// a time spent a sixth of its time making and hashing this string again.
// Compiled keys are never changed afterwards.
const compiledSigs = new WeakMap<Uint8Array, string>();

function compiledSig(bytes: Uint8Array): string {
  let s = compiledSigs.get(bytes);
  if (s === undefined) compiledSigs.set(bytes, s = sig(bytes));
  return s;
}

/** TunKeySlots holds the reference counts in memory between flushes. */
export class TunKeySlots {
  readonly #maps: DatapathMaps;
  /** Actions naming each slot. */
  readonly refs: Uint32Array;
  readonly #dirty = new Set<number>();
  // Slots looked up or written in this process, by content.
  readonly #known = new Map<string, number>();
  // Slots reserved and not yet filled.
  #reserved: { slot: number; bytes: Uint8Array }[] = [];
  #hint = 0;
  #used = 0;

  /** Reads the reference counts. */
  constructor(maps: DatapathMaps) {
    this.#maps = maps;
    const raw = maps.tunKeyRefs.raw;
    this.refs = new Uint32Array(raw.info.maxEntries);
    for (const c of raw.lookupBatch(BATCH)) {
      const keys = new Uint32Array(c.keys.buffer, c.keys.byteOffset, c.count);
      const vals = new Uint32Array(c.values.buffer, c.values.byteOffset, c.count);
      for (let i = 0; i < c.count; i++) this.refs[keys[i]] = vals[i];
    }
    for (const r of this.refs) if (r) this.#used++;
  }

  /** How many slots exist. */
  get capacity(): number {
    return this.refs.length;
  }

  /** How many slots are in use. */
  used(): number {
    return this.#used;
  }

  /** The slot holding exactly `bytes` (a compiled key, never changed), or undefined. */
  find(bytes: Uint8Array): number | undefined {
    const s = compiledSig(bytes);
    let slot = this.#known.get(s);
    if (slot === undefined) {
      const v = this.#maps.tunKeySlots.raw.lookup(bytes);
      if (!v) return undefined;
      slot = new DataView(v.buffer).getUint32(0, true);
      this.#known.set(s, slot);
    }
    return this.refs[slot] ? slot : undefined;
  }

  /**
   * The slot for `bytes` (a compiled key, never changed), taking one reference: the existing one, or a
   * free slot filled with the key before anything can name it.
   */
  acquire(bytes: Uint8Array): number {
    const slot = this.reserve(bytes);
    this.writeReserved();
    return slot;
  }

  /**
   * {@link acquire} with a new key's slot filled only by the next
   * {@link writeReserved}: until then nothing is written to the kernel, so
   * a change refused meanwhile leaves it as it was (this object is then
   * dropped, not used again).
   */
  reserve(bytes: Uint8Array): number {
    let slot = this.find(bytes);
    if (slot === undefined) {
      slot = this.#free();
      this.#reserved.push({ slot, bytes });
      this.#known.set(compiledSig(bytes), slot);
      this.#used++;
    }
    this.refs[slot]++;
    this.#dirty.add(slot);
    return slot;
  }

  /** Fills the slots {@link reserve} took with their keys, before anything names them. */
  writeReserved(): void {
    for (const { slot, bytes } of this.#reserved) {
      this.#maps.tunKeys.raw.update(encodeWith(u32, slot), bytes);
      this.#maps.tunKeySlots.raw.update(bytes, encodeWith(u32, slot));
    }
    this.#reserved = [];
  }

  /** Drops one reference to `slot`; the last one frees it. */
  release(slot: number): void {
    if (!this.refs[slot]) return;
    if (--this.refs[slot] === 0) this.#forget(slot);
    this.#dirty.add(slot);
  }

  /**
   * Sets every count from scratch (`counts[slot]` actions name `slot`),
   * freeing the slots no action names any more.
   */
  recount(counts: Uint32Array): void {
    for (let slot = 0; slot < this.refs.length; slot++) {
      if (this.refs[slot] === counts[slot]) continue;
      if (this.refs[slot] && !counts[slot]) this.#forget(slot);
      else if (!this.refs[slot] && counts[slot]) this.#used++;
      this.refs[slot] = counts[slot];
      this.#dirty.add(slot);
    }
  }

  /**
   * Drops every entry of the content index that names a free slot, or a
   * slot holding other content: what a writer that died between taking a
   * slot and using it leaves behind. Left there, it would hand its content
   * the slot once another key fills it.
   */
  prune(): void {
    const keys = this.#maps.tunKeys.raw;
    const held = new Map<number, string>();
    for (const c of keys.lookupBatch(BATCH)) {
      const slots = new Uint32Array(c.keys.buffer, c.keys.byteOffset, c.count);
      for (let i = 0; i < c.count; i++) {
        if (this.refs[slots[i]]) {
          held.set(slots[i], sig(c.values.subarray(i * SIZE, (i + 1) * SIZE)));
        }
      }
    }
    const index = this.#maps.tunKeySlots.raw;
    const stale: Uint8Array[] = [];
    for (const c of index.lookupBatch(BATCH)) {
      const slots = new Uint32Array(c.values.buffer, c.values.byteOffset, c.count);
      for (let i = 0; i < c.count; i++) {
        const content = c.keys.subarray(i * SIZE, (i + 1) * SIZE);
        if (held.get(slots[i]) !== sig(content)) stale.push(content.slice());
      }
    }
    for (const k of stale) {
      index.delete(k);
      this.#known.delete(sig(k));
    }
  }

  /** How many free slots remain. */
  free(): number {
    return this.refs.length - this.#used;
  }

  /** Writes the changed counts back. */
  flush(): void {
    if (this.#dirty.size === 0) return;
    const slots = [...this.#dirty].sort((a, b) => a - b);
    for (let i = 0; i < slots.length; i += BATCH) {
      const part = slots.slice(i, i + BATCH);
      const vals = Uint32Array.from(part, (s) => this.refs[s]);
      this.#maps.tunKeyRefs.raw.updateBatch(
        new Uint8Array(new Uint32Array(part).buffer),
        new Uint8Array(vals.buffer),
        part.length,
      );
    }
    this.#dirty.clear();
  }

  #free(): number {
    const n = this.refs.length;
    for (let scanned = 0; scanned < n; scanned++) {
      const slot = (this.#hint + scanned) % n;
      if (this.refs[slot] === 0) {
        this.#hint = (slot + 1) % n;
        return slot;
      }
    }
    throw new RangeError(
      `all ${n} tunnel key slots are in use (warren up --max-tun-keys sets how many distinct keys fit)`,
    );
  }

  /** Removes a freed slot's content from the index (the slot keeps it). */
  #forget(slot: number): void {
    this.#used--;
    const bytes = this.#maps.tunKeys.raw.lookup(encodeWith(u32, slot));
    if (!bytes) return;
    const s = sig(bytes);
    if (this.#known.get(s) === slot) this.#known.delete(s);
    // Only if the index still names this slot for the content.
    const v = this.#maps.tunKeySlots.raw.lookup(bytes);
    if (v && new DataView(v.buffer).getUint32(0, true) === slot) {
      this.#maps.tunKeySlots.raw.delete(bytes);
    }
  }
}

/** The size of one tunnel key in bytes. */
export const TUN_KEY_SIZE = SIZE;

// The remote of a compiled tunnel key and its string, made once per key.
const compiledRemotes = new WeakMap<Uint8Array, { sig: string; addr: Addr } | null>();

function remoteOf(key: Uint8Array): { sig: string; addr: Addr } | null {
  let r = compiledRemotes.get(key);
  if (r === undefined) {
    r = null;
    if (key[TK.set] & TunKeySet.DST) {
      const dst = key.slice(TK.dst, TK.dst + 16);
      r = { sig: sig(dst), addr: { v6: (key[TK.flags] & TunFlag.V6) !== 0, bytes: dst } };
    }
    compiledRemotes.set(key, r);
  }
  return r;
}

/** Remotes collects the distinct remotes tunnel keys send to. */
export class Remotes {
  readonly #bySig = new Map<string, Addr>();

  /**
   * Notes the remote of compiled tunnel key `key` (`struct wr_tun_key`
   * bytes, never changed), if it sets one.
   */
  add(key: Uint8Array): void {
    const r = remoteOf(key);
    if (r && !this.#bySig.has(r.sig)) this.#bySig.set(r.sig, r.addr);
  }

  /** Every remote noted, in the order first seen. */
  list(): Addr[] {
    return [...this.#bySig.values()];
  }
}
