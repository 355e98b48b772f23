/**
 * Typed maps: a {@link BpfMap} read and written through codecs, its layout
 * checked against BTF once, when wrapped.
 *
 * @example
 * ```ts ignore
 * // Needs root: tests/docs_test.ts runs this example in a network namespace.
 * import assert from "node:assert";
 * import counterObject from "../../bpf/build/counter.bpf.o" with { type: "bytes" };
 * import { BpfObject } from "../bpf/object.ts";
 * import { counterCodec } from "./layouts.ts";
 * import { u32 } from "./codec.ts";
 * import { PerCpuMap } from "./typed_map.ts";
 *
 * using obj = BpfObject.openMemory(counterObject, "counter");
 * obj.load();
 * using counters = new PerCpuMap(obj.map("counters"), u32, counterCodec);
 * const total = counters.sum(0); // { packets, bytes } over every CPU
 * assert.deepEqual(total, { packets: 0n, bytes: 0n });
 * ```
 *
 * @module
 */

import type { BpfMap, UpdateMode } from "../bpf/map.ts";
import type { Codec } from "./codec.ts";
import { checkMapLayout } from "./layout.ts";

/** Options of typed maps. */
export interface TypedMapOptions {
  /** Check sizes and BTF layout when wrapping; default true. */
  checkLayout?: boolean;
}

/** The bytes of `value` under `codec`. */
export function encodeWith<T>(codec: Codec<T>, value: T): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(codec.size);
  codec.write(new DataView(out.buffer), 0, value);
  return out;
}

/** The value under `codec` at `offset` of `bytes`. */
export function decodeWith<T>(codec: Codec<T>, bytes: Uint8Array, offset = 0): T {
  return codec.read(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), offset);
}

/** Packs `items` back to back under `codec` into one buffer. */
function pack<T>(codec: Codec<T>, items: T[], stride = codec.size): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(items.length * stride);
  const view = new DataView(out.buffer);
  items.forEach((item, i) => codec.write(view, i * stride, item));
  return out;
}

abstract class Typed<K, V> implements Disposable {
  /** The map underneath. */
  readonly raw: BpfMap;
  /** How keys are encoded. */
  readonly key: Codec<K>;
  /** How values are encoded. */
  readonly value: Codec<V>;

  constructor(raw: BpfMap, key: Codec<K>, value: Codec<V>, options: TypedMapOptions) {
    this.raw = raw;
    this.key = key;
    this.value = value;
    if (options.checkLayout ?? true) checkMapLayout(raw, key, value);
  }

  /** Removes `key`; false when it was not there. */
  delete(key: K): boolean {
    return this.raw.delete(encodeWith(this.key, key));
  }

  /** Every key, one syscall each. */
  *keys(): Generator<K> {
    for (const k of this.raw.keys()) yield decodeWith(this.key, k);
  }

  /** Removes `keys` in batches of `chunk`; every key must exist. */
  deleteMany(keys: K[], chunk = 4096): void {
    for (let i = 0; i < keys.length; i += chunk) {
      const part = keys.slice(i, i + chunk);
      this.raw.deleteBatch(pack(this.key, part), part.length);
    }
  }

  /** Releases the map's descriptor. */
  close(): void {
    this.raw.close();
  }

  /** Same as `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** TypedMap is a map with one value per key. */
export class TypedMap<K, V> extends Typed<K, V> {
  /** Wraps `raw`; throws a LayoutError when the codecs do not match it. */
  constructor(raw: BpfMap, key: Codec<K>, value: Codec<V>, options: TypedMapOptions = {}) {
    if (raw.perCpu) throw new TypeError(`map "${raw.name}" is per-CPU: use PerCpuMap`);
    super(raw, key, value, options);
  }

  /** The value under `key`, or undefined. */
  get(key: K): V | undefined {
    const bytes = this.raw.lookup(encodeWith(this.key, key));
    return bytes && decodeWith(this.value, bytes);
  }

  /** Stores `value` under `key`; see {@link BpfMap.update} for `mode`. */
  set(key: K, value: V, mode: UpdateMode = "any"): void {
    this.raw.update(encodeWith(this.key, key), encodeWith(this.value, value), mode);
  }

  /** Every entry, read in batches. */
  *entries(chunk = 4096): Generator<[K, V]> {
    for (const c of this.raw.lookupBatch(chunk)) {
      const kv = new DataView(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength);
      const vv = new DataView(c.values.buffer, c.values.byteOffset, c.values.byteLength);
      for (let i = 0; i < c.count; i++) {
        yield [this.key.read(kv, i * this.key.size), this.value.read(vv, i * this.value.size)];
      }
    }
  }

  /** Stores every entry (inserting or replacing), in batches of `chunk`. */
  setMany(entries: [K, V][], chunk = 4096): void {
    for (let i = 0; i < entries.length; i += chunk) {
      const part = entries.slice(i, i + chunk);
      this.raw.updateBatch(
        pack(this.key, part.map((e) => e[0])),
        pack(this.value, part.map((e) => e[1])),
        part.length,
      );
    }
  }
}

/**
 * Adds two per-CPU values field by field, item by item in arrays: numbers
 * and bigints are summed, anything else is taken from the first.
 */
export function addFields<V>(a: V, b: V): V {
  if (typeof a === "bigint" && typeof b === "bigint") return (a + b) as V;
  if (typeof a === "number" && typeof b === "number") return (a + b) as V;
  if (Array.isArray(a) && Array.isArray(b)) return a.map((x, i) => addFields(x, b[i])) as V;
  if (a && typeof a === "object" && !(a instanceof Uint8Array)) {
    const out: Record<string, unknown> = { ...(a as Record<string, unknown>) };
    for (const [k, v] of Object.entries(b as Record<string, unknown>)) {
      out[k] = addFields((a as Record<string, unknown>)[k], v);
    }
    return out as V;
  }
  return a;
}

/** PerCpuMap is a map with one value per key per possible CPU. */
export class PerCpuMap<K, V> extends Typed<K, V> {
  /** Wraps `raw`; throws a LayoutError when the codecs do not match it. */
  constructor(raw: BpfMap, key: Codec<K>, value: Codec<V>, options: TypedMapOptions = {}) {
    if (!raw.perCpu) throw new TypeError(`map "${raw.name}" is not per-CPU: use TypedMap`);
    super(raw, key, value, options);
  }

  /** The number of CPU slots in each value. */
  get cpus(): number {
    return this.raw.valueBufferSize / this.raw.cpuStride;
  }

  /** Every CPU's value under `key`, or undefined. */
  get(key: K): V[] | undefined {
    const bytes = this.raw.lookup(encodeWith(this.key, key));
    return bytes && this.#split(bytes, 0);
  }

  /** The CPUs' values under `key` combined by `merge` (default: summed). */
  sum(key: K, merge: (a: V, b: V) => V = addFields): V | undefined {
    return this.get(key)?.reduce(merge);
  }

  /** Stores `values` (one per CPU, or one for every CPU) under `key`. */
  set(key: K, values: V | V[], mode: UpdateMode = "any"): void {
    const all = Array.isArray(values) ? values : Array.from({ length: this.cpus }, () => values);
    if (all.length !== this.cpus) {
      throw new RangeError(`${all.length} values for ${this.cpus} CPUs`);
    }
    this.raw.update(encodeWith(this.key, key), pack(this.value, all, this.raw.cpuStride), mode);
  }

  /** Every entry with every CPU's value, read in batches. */
  *entries(chunk = 4096): Generator<[K, V[]]> {
    for (const c of this.raw.lookupBatch(chunk)) {
      const kv = new DataView(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength);
      for (let i = 0; i < c.count; i++) {
        yield [
          this.key.read(kv, i * this.key.size),
          this.#split(c.values, i * this.raw.valueBufferSize),
        ];
      }
    }
  }

  #split(bytes: Uint8Array, base: number): V[] {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return Array.from(
      { length: this.cpus },
      (_, cpu) => this.value.read(view, base + cpu * this.raw.cpuStride),
    );
  }
}
