/**
 * Keeping the calling thread on one CPU: BPF_PROG_TEST_RUN runs on the
 * caller's CPU, so STT segments fed one test-run at a time reassemble on
 * the same one (tests), and a measurement and its baseline run where the
 * softirqs their redirects raise do (bench).
 *
 * @module
 */

import { libc } from "../bpf/ffi.ts";

/** The CPU the calling thread runs on now. */
export function currentCpu(): number {
  return libc().sched_getcpu();
}

/**
 * Runs `fn` with the calling thread (pid 0 means the thread itself) pinned
 * to `cpu`, then restores its affinity.
 */
export async function onCpu<T>(cpu: number, fn: () => T | Promise<T>): Promise<T> {
  const old = new Uint8Array(128);
  if (libc().sched_getaffinity(0, 128n, old) !== 0) {
    throw new Error("sched_getaffinity failed");
  }
  const mask = new Uint8Array(128);
  mask[cpu >> 3] |= 1 << (cpu & 7);
  if (libc().sched_setaffinity(0, 128n, mask) !== 0) {
    throw new Error("sched_setaffinity failed");
  }
  try {
    return await fn();
  } finally {
    libc().sched_setaffinity(0, 128n, old);
  }
}
