/**
 * The clock BPF programs read with bpf_ktime_get_boot_ns(), for turning
 * their timestamps into "how long ago".
 *
 * @module
 */

import { libc } from "./ffi.ts";

const CLOCK_BOOTTIME = 7;

/** CLOCK_BOOTTIME now, in nanoseconds. */
export function boottimeNs(): bigint {
  const ts = new BigInt64Array(2);
  if (libc().clock_gettime(CLOCK_BOOTTIME, new Uint8Array(ts.buffer)) !== 0) {
    throw new Error("clock_gettime(CLOCK_BOOTTIME) failed");
  }
  return ts[0] * 1000000000n + ts[1];
}
