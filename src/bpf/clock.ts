/**
 * The clock BPF programs read with bpf_ktime_get_coarse_ns(), for turning
 * their timestamps into "how long ago".
 *
 * The datapath stamps a flow's last packet with the kernel's coarse
 * monotonic clock: one cheap helper call and no hardware clock read per
 * packet (bpf_ktime_get_boot_ns() costs about ten times as much). User
 * space reads the same clock as CLOCK_MONOTONIC_COARSE, so a timestamp
 * needs no conversion, and is right to the clock's resolution: one
 * scheduler tick (1/HZ, 4 ms at HZ=250), which
 * {@link coarseResolutionNs} reports.
 *
 * @module
 */

import { libc } from "./ffi.ts";

const CLOCK_MONOTONIC_COARSE = 6;

function timespec(call: "clock_gettime" | "clock_getres"): bigint {
  const ts = new BigInt64Array(2);
  if (libc()[call](CLOCK_MONOTONIC_COARSE, new Uint8Array(ts.buffer)) !== 0) {
    throw new Error(`${call}(CLOCK_MONOTONIC_COARSE) failed`);
  }
  return ts[0] * 1000000000n + ts[1];
}

/** CLOCK_MONOTONIC_COARSE now, in nanoseconds: the datapath's timestamps' clock. */
export function coarseNs(): bigint {
  return timespec("clock_gettime");
}

/** The resolution of {@link coarseNs} and of the datapath's timestamps, in nanoseconds. */
export function coarseResolutionNs(): bigint {
  return timespec("clock_getres");
}
