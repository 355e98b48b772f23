/**
 * The clock of the datapath's timestamps, for turning them into "how
 * long ago".
 *
 * The datapath stamps a flow's last packet with CLOCK_MONOTONIC to one
 * jiffy, read from jiffies with no helper call per packet (see
 * bpf/include/clock.h; earlier builds called bpf_ktime_get_coarse_ns(),
 * and a loader that cannot measure jiffies still does). User space reads
 * CLOCK_MONOTONIC_COARSE, the same clock to the same resolution, so a
 * timestamp needs no conversion and is right to one scheduler tick (1/HZ,
 * 4 ms at HZ=250), which {@link coarseResolutionNs} reports.
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
