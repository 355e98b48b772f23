/**
 * A BPF map at the level of bytes: keys and values are `Uint8Array`s of the
 * map's sizes. `src/maps` builds typed maps on top of this.
 *
 * For per-CPU maps a value buffer holds one slot per possible CPU, each slot
 * the value size rounded up to 8 bytes (the kernel's stride).
 *
 * @module
 */

import { followDirMode } from "./pin_mode.ts";
import { Errno } from "./errno.ts";
import { batchUpdateError, BpfError, check, KeyExistsError, KeyNotFoundError } from "./errors.ts";
import { Fd } from "./fd.ts";
import { cstr, libbpf } from "./ffi.ts";
import { type MapInfo, mapInfo, PER_CPU_MAP_TYPES } from "./info.ts";
import { libbpfMessageMark, libbpfMessagesSince } from "./log.ts";
import { opts } from "./opts.ts";

const { ENOENT, EEXIST, ENOSPC } = Errno;

/** How an update treats an existing key. */
export type UpdateMode = "any" | "noexist" | "exist";

const UPDATE_FLAGS: Record<UpdateMode, bigint> = { any: 0n, noexist: 1n, exist: 2n };

let possibleCpus: number | undefined;

/** The number of possible CPUs, the slot count of per-CPU values. */
export function numPossibleCpus(): number {
  possibleCpus ??= check("count possible CPUs", () => libbpf().libbpf_num_possible_cpus());
  return possibleCpus;
}

/** What {@link BpfMap.create} makes. */
export interface MapSpec {
  /** `enum bpf_map_type`. */
  type: number;
  /** Up to 15 bytes. */
  name: string;
  /** Key size in bytes. */
  keySize: number;
  /** Value size in bytes. */
  valueSize: number;
  /** Capacity. */
  maxEntries: number;
  /** `BPF_F_*` flags, such as `BPF_F_NO_PREALLOC` (1). */
  flags?: number;
  /** For maps of maps: a map with the inner maps' type and sizes. */
  innerMap?: BpfMap;
}

/** One chunk of a batch lookup. */
export interface BatchChunk {
  /** `count` keys, back to back. */
  keys: Uint8Array;
  /** `count` values, back to back (per-CPU: `count` value buffers). */
  values: Uint8Array;
  /** How many entries this chunk holds. */
  count: number;
}

/** BpfMap owns a map's file descriptor and speaks bytes. */
export class BpfMap implements Disposable {
  /** The map's name (from the object, or the kernel's 15-byte one). */
  readonly name: string;
  /** What the kernel said about the map when it was opened. */
  readonly info: MapInfo;
  /** Whether values are stored once per possible CPU. */
  readonly perCpu: boolean;
  /** Bytes of one value as the syscalls move it (all CPUs for per-CPU maps). */
  readonly valueBufferSize: number;
  /** Bytes between CPU slots in a per-CPU value buffer. */
  readonly cpuStride: number;
  readonly #fd: Fd;

  /** Wraps `fd`, taking ownership. */
  constructor(name: string, fd: Fd) {
    this.#fd = fd;
    this.info = mapInfo(fd.value);
    this.name = name || this.info.name;
    this.perCpu = PER_CPU_MAP_TYPES.has(this.info.type);
    this.cpuStride = this.perCpu ? Math.ceil(this.info.valueSize / 8) * 8 : this.info.valueSize;
    this.valueBufferSize = this.perCpu ? this.cpuStride * numPossibleCpus() : this.info.valueSize;
  }

  /** Opens the map pinned at `path`. */
  static fromPin(path: string): BpfMap {
    return BpfMap.#adopt(check(`open pinned map ${path}`, () => libbpf().bpf_obj_get(cstr(path))));
  }

  /** Opens the map with kernel id `id`. */
  static fromId(id: number): BpfMap {
    return BpfMap.#adopt(check(`open map id ${id}`, () => libbpf().bpf_map_get_fd_by_id(id)));
  }

  /** Creates a map outside any object (for example an inner map). */
  static create(spec: MapSpec): BpfMap {
    const o = opts(
      48,
      [24, "u32", spec.innerMap?.fd ?? 0],
      [28, "u32", spec.flags ?? 0],
    );
    const fd = check(`create map "${spec.name}"`, () =>
      libbpf().bpf_map_create(
        spec.type,
        cstr(spec.name.slice(0, 15)),
        spec.keySize,
        spec.valueSize,
        spec.maxEntries,
        o,
      ));
    const owned = new Fd(fd);
    try {
      return new BpfMap(spec.name, owned);
    } catch (err) {
      owned.close();
      throw err;
    }
  }

  static #adopt(raw: number): BpfMap {
    const fd = new Fd(raw);
    try {
      return new BpfMap("", fd);
    } catch (err) {
      fd.close();
      throw err;
    }
  }

  /** The file descriptor. */
  get fd(): number {
    return this.#fd.value;
  }

  /** Key size in bytes. */
  get keySize(): number {
    return this.info.keySize;
  }

  /** The value stored under `key`, or undefined when there is none. */
  lookup(key: Uint8Array, out?: Uint8Array): Uint8Array | undefined {
    this.#checkKey(key);
    const value = out ?? new Uint8Array(this.valueBufferSize);
    const mark = libbpfMessageMark();
    const ret = libbpf().bpf_map_lookup_elem(
      this.fd,
      key as Uint8Array<ArrayBuffer>,
      value as Uint8Array<ArrayBuffer>,
    );
    if (ret === -ENOENT) return undefined;
    if (ret < 0) {
      throw new BpfError(`look up in map "${this.name}"`, -ret, {
        libbpfLog: libbpfMessagesSince(mark),
      });
    }
    return value;
  }

  /**
   * Stores `value` under `key`. With `noexist` an existing key throws
   * {@link KeyExistsError}; with `exist` a missing key throws
   * {@link KeyNotFoundError}.
   */
  update(key: Uint8Array, value: Uint8Array, mode: UpdateMode = "any"): void {
    this.#update(key, value, mode, false);
  }

  /**
   * Stores `value` under `key` unless the key is there (`BPF_NOEXIST`);
   * false when it was, the map unchanged. One system call where a lookup
   * and an update would be two.
   */
  insert(key: Uint8Array, value: Uint8Array): boolean {
    return this.#update(key, value, "noexist", true);
  }

  // A flow installed one at a time pays this per call: the error's text is
  // made only when there is an error.
  #update(key: Uint8Array, value: Uint8Array, mode: UpdateMode, existsOk: boolean): boolean {
    this.#checkKey(key);
    if (value.length !== this.valueBufferSize) {
      throw new RangeError(
        `map "${this.name}": value is ${value.length} bytes, want ${this.valueBufferSize}`,
      );
    }
    const mark = libbpfMessageMark();
    const ret = libbpf().bpf_map_update_elem(
      this.fd,
      key as Uint8Array<ArrayBuffer>,
      value as Uint8Array<ArrayBuffer>,
      UPDATE_FLAGS[mode],
    );
    if (ret >= 0) return true;
    if (ret === -EEXIST && existsOk) return false;
    const op = `update map "${this.name}" (${mode})`;
    const o = { libbpfLog: libbpfMessagesSince(mark) };
    throw ret === -EEXIST
      ? new KeyExistsError(op, EEXIST, o)
      : ret === -ENOENT
      ? new KeyNotFoundError(op, ENOENT, o)
      : new BpfError(op, -ret, o);
  }

  /** Removes `key`; false when it was not there. */
  delete(key: Uint8Array): boolean {
    this.#checkKey(key);
    const ret = libbpf().bpf_map_delete_elem(this.fd, key as Uint8Array<ArrayBuffer>);
    if (ret === -ENOENT) return false;
    check(`delete from map "${this.name}"`, () => ret);
    return true;
  }

  /** The key after `key` (the first key for null), or undefined at the end. */
  nextKey(key: Uint8Array | null): Uint8Array | undefined {
    if (key) this.#checkKey(key);
    const next = new Uint8Array(this.keySize);
    const ret = libbpf().bpf_map_get_next_key(this.fd, key as Uint8Array<ArrayBuffer> | null, next);
    if (ret === -ENOENT) return undefined;
    check(`iterate map "${this.name}"`, () => ret);
    return next;
  }

  /** Every key, one syscall each. Prefer {@link lookupBatch} for big maps. */
  *keys(): Generator<Uint8Array> {
    for (let key = this.nextKey(null); key; key = this.nextKey(key)) yield key;
  }

  /**
   * Every entry, `chunkSize` at a time, with `BPF_MAP_LOOKUP_BATCH`.
   * The chunk's buffers are reused between iterations: copy what you keep.
   */
  *lookupBatch(chunkSize = 4096): Generator<BatchChunk> {
    const walk = new BatchWalk(this, chunkSize);
    let into = walk.buffers();
    while (!walk.done) {
      const chunk = walk.result(libbpf().bpf_map_lookup_batch(...walk.args(into)), into);
      if (chunk === GROWN) into = walk.buffers();
      else if (chunk) yield chunk;
    }
  }

  /**
   * {@link lookupBatch} with the kernel's copies made off the JavaScript
   * thread: the next chunk is read, into a second set of buffers, while
   * the caller works on this one. As there, a chunk is valid until the
   * next is asked for.
   */
  async *lookupBatchAsync(chunkSize = 4096): AsyncGenerator<BatchChunk> {
    const walk = new BatchWalk(this, chunkSize);
    let into = walk.buffers(), spare = walk.buffers();
    let reading = libbpf().bpf_map_lookup_batch_async(...walk.args(into));
    try {
      for (;;) {
        const chunk = walk.result(await reading, into);
        if (chunk === GROWN) [into, spare] = [walk.buffers(), walk.buffers()];
        else if (walk.done) {
          if (chunk) yield chunk;
          return;
        } else [into, spare] = [spare, into];
        reading = libbpf().bpf_map_lookup_batch_async(...walk.args(into));
        if (chunk && chunk !== GROWN) yield chunk;
      }
    } finally {
      // The kernel writes into the buffers until its call returns, even
      // when the caller stopped early: they must live until then.
      await reading;
    }
  }

  /**
   * Stores `count` entries with `BPF_MAP_UPDATE_BATCH`, inserting or
   * replacing (the kernel takes no per-element noexist/exist flag in
   * batches). On failure the kernel may have applied a prefix; the error
   * says how many.
   */
  updateBatch(keys: Uint8Array, values: Uint8Array, count: number): void {
    if (count === 0) return;
    if (keys.length < count * this.keySize || values.length < count * this.valueBufferSize) {
      throw new RangeError(`map "${this.name}": batch buffers too small for ${count} entries`);
    }
    const n = new Uint32Array([count]);
    check(
      `batch update of ${count} entries in map "${this.name}"`,
      () =>
        libbpf().bpf_map_update_batch(
          this.fd,
          keys as Uint8Array<ArrayBuffer>,
          values as Uint8Array<ArrayBuffer>,
          new Uint8Array(n.buffer),
          opts(24),
        ),
      (_op, errno, opt) => batchUpdateError(this.name, count, n[0], errno, opt),
    );
  }

  /** Removes `count` keys with `BPF_MAP_DELETE_BATCH`; all must exist. */
  deleteBatch(keys: Uint8Array, count: number): void {
    if (count === 0) return;
    const n = new Uint32Array([count]);
    check(
      `batch delete of ${count} entries in map "${this.name}"`,
      () =>
        libbpf().bpf_map_delete_batch(
          this.fd,
          keys as Uint8Array<ArrayBuffer>,
          new Uint8Array(n.buffer),
          opts(24),
        ),
      (op, errno, opt) => new BpfError(n[0] < count ? `${op} (${n[0]} deleted)` : op, errno, opt),
    );
  }

  /** Pins the map at `path` on a bpffs. */
  pin(path: string): void {
    check(`pin map "${this.name}" at ${path}`, () => libbpf().bpf_obj_pin(this.fd, cstr(path)));
    followDirMode(path);
  }

  /** Releases the file descriptor; the map lives on while pinned or used. */
  close(): void {
    this.#fd.close();
  }

  /** Same as `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #checkKey(key: Uint8Array): void {
    if (key.length !== this.keySize) {
      throw new RangeError(`map "${this.name}": key is ${key.length} bytes, want ${this.keySize}`);
    }
  }
}

/** What {@link BatchWalk.result} says when one hash bucket did not fit: new buffers, the same call again. */
const GROWN = Symbol("grown");

/** A chunk's key and value buffers. */
interface BatchBuffers {
  keys: Uint8Array<ArrayBuffer>;
  values: Uint8Array<ArrayBuffer>;
}

/**
 * One walk of a map with `BPF_MAP_LOOKUP_BATCH`, a call at a time: where
 * the kernel is, how big a chunk is, and what each call's result means.
 */
class BatchWalk {
  readonly #map: BpfMap;
  #in: Uint8Array<ArrayBuffer> | null = null;
  readonly #out: Uint8Array<ArrayBuffer>;
  readonly #count = new Uint32Array(1);
  readonly #opts = opts(24);
  #size: number;
  #mark = 0;
  /** Whether the last call read the map's last entries. */
  done = false;

  constructor(map: BpfMap, chunkSize: number) {
    this.#map = map;
    // A hash map's batch token is a bucket index; an array's is a key.
    this.#out = new Uint8Array(Math.max(map.keySize, 8));
    this.#size = chunkSize;
  }

  /** Buffers for a chunk of the current size. */
  buffers(): BatchBuffers {
    return {
      keys: new Uint8Array(this.#size * this.#map.keySize),
      values: new Uint8Array(this.#size * this.#map.valueBufferSize),
    };
  }

  /** The arguments of the next call, reading into `b`. */
  args(b: BatchBuffers) {
    this.#count[0] = b.keys.length / this.#map.keySize;
    this.#mark = libbpfMessageMark();
    return [
      this.#map.fd,
      this.#in,
      this.#out,
      b.keys,
      b.values,
      new Uint8Array(this.#count.buffer),
      this.#opts,
    ] as const;
  }

  /** The chunk the call that read into `b` returned `ret` for: undefined for none, GROWN to call again. */
  result(ret: number, b: BatchBuffers): BatchChunk | undefined | typeof GROWN {
    const count = this.#count[0];
    if (ret === -ENOSPC && count === 0) {
      // One hash bucket holds more entries than fit: grow and retry.
      this.#size *= 2;
      return GROWN;
    }
    if (ret < 0 && ret !== -ENOENT) {
      throw new BpfError(`batch look up in map "${this.#map.name}"`, -ret, {
        libbpfLog: libbpfMessagesSince(this.#mark),
      });
    }
    if (ret === -ENOENT) this.done = true;
    else {
      this.#in ??= new Uint8Array(this.#out.length);
      this.#in.set(this.#out);
    }
    if (count === 0) return undefined;
    return {
      keys: b.keys.subarray(0, count * this.#map.keySize),
      values: b.values.subarray(0, count * this.#map.valueBufferSize),
      count,
    };
  }
}
