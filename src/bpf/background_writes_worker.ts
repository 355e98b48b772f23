/**
 * The worker of `BackgroundBatchWrites` (background_writes.ts): each message is one batch
 * to write with `BPF_MAP_UPDATE_BATCH`; it says it is done through the
 * batch's shared state, which the writer waits on.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import type { BatchWrite } from "./background_writes.ts";
import { libbpf } from "./ffi.ts";
import { opts } from "./opts.ts";

const batchOpts = opts(24);

self.onmessage = (e: MessageEvent<BatchWrite>) => {
  const w = e.data;
  const count = new Uint32Array([w.count]);
  const state = new Int32Array(w.state);
  let result: number;
  try {
    result = libbpf().bpf_map_update_batch(
      w.fd,
      new Uint8Array(w.keys) as unknown as Uint8Array<ArrayBuffer>,
      new Uint8Array(w.values) as unknown as Uint8Array<ArrayBuffer>,
      new Uint8Array(count.buffer),
      batchOpts,
    );
  } catch {
    result = -22; // EINVAL: the call could not be made at all
  }
  state[1] = result;
  state[2] = count[0];
  Atomics.store(state, 0, 1);
  Atomics.notify(state, 0);
};
