/**
 * Batch writes into a map made on a worker thread: JavaScript fills the
 * next batch while the kernel copies the last one in (for a million
 * flows, the kernel's copies are a second or so that need not wait for
 * the compile, nor it for them).
 *
 * A nonblocking FFI call would also run off the JavaScript thread, but
 * only an `await` learns it is done; a caller that must stay synchronous
 * (a change made under the datapath's lock, all or nothing) learns it
 * from the worker through shared memory instead, waiting with
 * `Atomics.wait` only when it wants a buffer the kernel still reads.
 *
 * @module
 */

import type { BpfMap } from "./map.ts";
import { batchUpdateError, type BpfError } from "./errors.ts";

/** One set of buffers and its write's state: [done, result, applied]. */
interface Slot {
  keys: Uint8Array;
  values: Uint8Array;
  state: Int32Array;
  count: number;
}

/** What the worker is sent for each batch. */
export interface BatchWrite {
  /** The map's file descriptor (the process's: threads share them). */
  fd: number;
  /** The batch's keys and values. */
  keys: SharedArrayBuffer;
  values: SharedArrayBuffer;
  /** How many entries. */
  count: number;
  /** Where the worker says it is done: [done, libbpf's result, entries applied]. */
  state: SharedArrayBuffer;
}

/**
 * BackgroundBatchWrites writes batches of `chunk` entries into a map on a
 * worker thread, through `depth` sets of buffers used in turn.
 */
export class BackgroundBatchWrites {
  readonly #map: BpfMap;
  readonly #worker: Worker;
  readonly #slots: Slot[] = [];
  #next = 0;
  #failure?: BpfError;

  /** Starts the worker; `map` must stay open until {@link close}. */
  constructor(map: BpfMap, chunk: number, depth = 2) {
    this.#map = map;
    for (let i = 0; i < depth; i++) {
      this.#slots.push({
        keys: new Uint8Array(new SharedArrayBuffer(chunk * map.keySize)),
        values: new Uint8Array(new SharedArrayBuffer(chunk * map.valueBufferSize)),
        state: new Int32Array(new SharedArrayBuffer(12)).fill(1, 0, 1),
        count: 0,
      });
    }
    this.#worker = new Worker(new URL("./background_writes_worker.ts", import.meta.url), {
      type: "module",
    });
  }

  /**
   * The buffers the next batch is to be put in, once the kernel is done
   * with what they held. Throws a write that failed meanwhile.
   */
  buffers(): { keys: Uint8Array; values: Uint8Array } {
    const slot = this.#slots[this.#next];
    this.#wait(slot);
    this.#throwFailure();
    return slot;
  }

  /** Writes the first `count` entries of the buffers {@link buffers} gave, in the background. */
  submit(count: number): void {
    const slot = this.#slots[this.#next];
    this.#next = (this.#next + 1) % this.#slots.length;
    if (count === 0) return;
    slot.count = count;
    Atomics.store(slot.state, 0, 0);
    const write: BatchWrite = {
      fd: this.#map.fd,
      keys: slot.keys.buffer as SharedArrayBuffer,
      values: slot.values.buffer as SharedArrayBuffer,
      count,
      state: slot.state.buffer as SharedArrayBuffer,
    };
    this.#worker.postMessage(write);
  }

  /** Waits for every write submitted; throws the first that failed. */
  finish(): void {
    for (const s of this.#slots) this.#wait(s);
    this.#throwFailure();
  }

  /** Waits for every write submitted (whatever became of them) and stops the worker. */
  close(): void {
    for (const s of this.#slots) this.#wait(s);
    this.#worker.terminate();
  }

  /** Same as `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #wait(slot: Slot): void {
    while (Atomics.load(slot.state, 0) === 0) Atomics.wait(slot.state, 0, 0);
    const result = slot.state[1];
    if (result < 0 && !this.#failure) {
      this.#failure = batchUpdateError(this.#map.name, slot.count, slot.state[2], result);
    }
    slot.state[1] = 0;
  }

  #throwFailure(): void {
    const failure = this.#failure;
    if (!failure) return;
    this.#failure = undefined;
    throw failure;
  }
}
