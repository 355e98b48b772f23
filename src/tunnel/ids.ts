/**
 * Allocation of flow ids and tunnel key slots from bitmaps kept in BPF
 * maps, so every process sees the same allocation. The bitmaps are a cache
 * of what the flow table uses: `rebuild` recomputes them from the table,
 * which is how a crash between allocating and installing heals.
 *
 * @module
 */

import type { TypedMap } from "../maps/typed_map.ts";

/** IdBitmap is one bitmap map, read whole, changed in memory, written back. */
export class IdBitmap {
  readonly #map: TypedMap<number, bigint>;
  readonly #words: BigUint64Array;
  readonly #dirty = new Set<number>();
  /** How many ids exist. */
  readonly capacity: number;
  #hint = 0;

  /** Reads the bitmap stored in `map` (one u64 per 64 ids). */
  constructor(map: TypedMap<number, bigint>) {
    this.#map = map;
    this.capacity = map.raw.info.maxEntries * 64;
    this.#words = new BigUint64Array(map.raw.info.maxEntries);
    for (const [i, w] of map.entries()) this.#words[i] = w;
  }

  /** Whether `id` is taken. */
  has(id: number): boolean {
    return ((this.#words[id >> 6] >> BigInt(id & 63)) & 1n) === 1n;
  }

  /** Takes `count` free ids; throws when there are not enough. */
  allocate(count: number): number[] {
    const out: number[] = [];
    const words = this.#words.length;
    for (let scanned = 0; out.length < count && scanned <= words; scanned++) {
      const w = (this.#hint + scanned) % words;
      let word = this.#words[w];
      if (word === 0xffffffffffffffffn) continue;
      for (let b = 0; b < 64 && out.length < count; b++) {
        const bit = 1n << BigInt(b);
        if (word & bit) continue;
        word |= bit;
        out.push(w * 64 + b);
      }
      this.#words[w] = word;
      this.#dirty.add(w);
      if (out.length < count) continue;
      this.#hint = w;
    }
    if (out.length < count) {
      this.free(out);
      throw new RangeError(
        `only ${out.length} of ${count} ids are free (capacity ${this.capacity})`,
      );
    }
    return out;
  }

  /** Gives ids back. */
  free(ids: Iterable<number>): void {
    for (const id of ids) {
      const w = id >> 6;
      this.#words[w] &= ~(1n << BigInt(id & 63));
      this.#dirty.add(w);
    }
  }

  /** Replaces the bitmap with exactly `used`. */
  rebuild(used: Iterable<number>): void {
    const fresh = new BigUint64Array(this.#words.length);
    for (const id of used) fresh[id >> 6] |= 1n << BigInt(id & 63);
    for (let w = 0; w < fresh.length; w++) {
      if (fresh[w] !== this.#words[w]) {
        this.#words[w] = fresh[w];
        this.#dirty.add(w);
      }
    }
  }

  /** How many ids are taken. */
  used(): number {
    let n = 0;
    for (const w of this.#words) {
      let x = w;
      while (x) {
        x &= x - 1n;
        n++;
      }
    }
    return n;
  }

  /** Writes the changed words back to the map. */
  flush(): void {
    const entries: [number, bigint][] = [...this.#dirty].sort((a, b) => a - b).map((
      w,
    ) => [w, this.#words[w]]);
    this.#map.setMany(entries);
    this.#dirty.clear();
  }
}
