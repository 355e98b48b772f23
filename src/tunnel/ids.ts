/**
 * Allocation of flow ids from a bitmap kept in a BPF array map (one u64
 * word per 64 ids), so every process sees the same allocation. The bitmap
 * is a cache of what the flow table uses: `rebuild` recomputes it from the
 * table, which is how a crash between allocating and installing heals.
 *
 * Ids are handed out round robin from where the last allocation stopped,
 * so an id freed a moment ago is the last to be taken again: a packet
 * still counting against a just-deleted flow cannot land on a new one.
 *
 * @module
 */

import type { BpfMap } from "../bpf/map.ts";

/** IdBitmap is one bitmap map, read whole, changed in memory, written back. */
export class IdBitmap {
  readonly #map: BpfMap;
  // Two u32 halves per u64 word, little-endian as the map stores them.
  readonly #bits: Uint32Array;
  readonly #dirty = new Set<number>();
  /** How many ids exist. */
  readonly capacity: number;
  #hint = 0;
  #used = 0;

  /** Reads the bitmap stored in `map`. */
  constructor(map: BpfMap) {
    this.#map = map;
    const words = map.info.maxEntries;
    this.capacity = words * 64;
    this.#bits = new Uint32Array(words * 2);
    for (const c of map.lookupBatch(65536)) {
      const keys = new Uint32Array(c.keys.buffer, c.keys.byteOffset, c.count);
      const vals = new Uint32Array(c.values.buffer, c.values.byteOffset, c.count * 2);
      for (let i = 0; i < c.count; i++) {
        this.#bits[keys[i] * 2] = vals[i * 2];
        this.#bits[keys[i] * 2 + 1] = vals[i * 2 + 1];
      }
    }
    for (const x of this.#bits) this.#used += popcount(x);
  }

  /** Whether `id` is taken. */
  has(id: number): boolean {
    return (this.#bits[id >>> 5] & (1 << (id & 31))) !== 0;
  }

  /** How many ids are free. */
  free(): number {
    return this.capacity - this.#used;
  }

  /** Takes one free id; throws when there is none. */
  allocate(): number {
    const n = this.#bits.length;
    for (let scanned = 0; scanned <= n; scanned++) {
      const w = (this.#hint + scanned) % n;
      const x = this.#bits[w];
      if (x === 0xffffffff) continue;
      const b = 31 - Math.clz32(~x & (x + 1)); // lowest clear bit
      this.#set(w * 32 + b);
      this.#hint = w;
      return w * 32 + b;
    }
    throw new RangeError(`all ${this.capacity} ids are taken`);
  }

  /** Gives ids back. */
  release(ids: Iterable<number>): void {
    for (const id of ids) {
      const w = id >>> 5, bit = 1 << (id & 31);
      if (!(this.#bits[w] & bit)) continue;
      this.#bits[w] &= ~bit;
      this.#used--;
      this.#dirty.add(w >>> 1);
    }
  }

  /** Replaces the bitmap with exactly the ids in `used`. */
  rebuild(used: Iterable<number>): void {
    const fresh = new Uint32Array(this.#bits.length);
    for (const id of used) fresh[id >>> 5] |= 1 << (id & 31);
    this.#used = 0;
    for (let w = 0; w < fresh.length; w++) {
      if (fresh[w] !== this.#bits[w]) {
        this.#bits[w] = fresh[w];
        this.#dirty.add(w >>> 1);
      }
      this.#used += popcount(fresh[w]);
    }
  }

  /** How many ids are taken. */
  used(): number {
    return this.#used;
  }

  /** Writes the changed words back to the map. */
  flush(): void {
    if (this.#dirty.size === 0) return;
    const words = [...this.#dirty].sort((a, b) => a - b);
    const chunk = 16384;
    for (let i = 0; i < words.length; i += chunk) {
      const part = words.slice(i, i + chunk);
      const keys = new Uint32Array(part);
      const vals = new Uint32Array(part.length * 2);
      part.forEach((w, j) => {
        vals[j * 2] = this.#bits[w * 2];
        vals[j * 2 + 1] = this.#bits[w * 2 + 1];
      });
      this.#map.updateBatch(
        new Uint8Array(keys.buffer),
        new Uint8Array(vals.buffer),
        part.length,
      );
    }
    this.#dirty.clear();
  }

  #set(id: number): void {
    this.#bits[id >>> 5] |= 1 << (id & 31);
    this.#used++;
    this.#dirty.add(id >>> 6);
  }
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** U32List is a growable list of ids, four bytes each however many. */
export class U32List {
  #items = new Uint32Array(1024);
  #length = 0;

  /** Appends `x`. */
  push(x: number): void {
    if (this.#length === this.#items.length) {
      const bigger = new Uint32Array(this.#items.length * 2);
      bigger.set(this.#items);
      this.#items = bigger;
    }
    this.#items[this.#length++] = x;
  }

  /** How many there are. */
  get length(): number {
    return this.#length;
  }

  /** The ids, in the order pushed (a view, valid until the next push). */
  view(): Uint32Array {
    return this.#items.subarray(0, this.#length);
  }
}
