/**
 * Keeping the test's thread on one CPU: STT reassembles each frame on the
 * CPU its segments arrive on, and BPF_PROG_TEST_RUN runs on the caller's
 * CPU, so segments fed one test-run at a time must all run on the same one.
 *
 * @module
 */

const libc = Deno.dlopen("libc.so.6", {
  // int sched_setaffinity(pid_t pid, size_t cpusetsize, const cpu_set_t *mask)
  sched_setaffinity: { parameters: ["i32", "usize", "buffer"], result: "i32" },
  // int sched_getaffinity(pid_t pid, size_t cpusetsize, cpu_set_t *mask)
  sched_getaffinity: { parameters: ["i32", "usize", "buffer"], result: "i32" },
});

/**
 * Runs `fn` with the calling thread (pid 0 means the thread itself) pinned
 * to `cpu`, then restores its affinity.
 */
export async function onCpu<T>(cpu: number, fn: () => T | Promise<T>): Promise<T> {
  const old = new Uint8Array(128);
  if (libc.symbols.sched_getaffinity(0, 128n, old) !== 0) {
    throw new Error("sched_getaffinity failed");
  }
  const mask = new Uint8Array(128);
  mask[cpu >> 3] |= 1 << (cpu & 7);
  if (libc.symbols.sched_setaffinity(0, 128n, mask) !== 0) {
    throw new Error("sched_setaffinity failed");
  }
  try {
    return await fn();
  } finally {
    libc.symbols.sched_setaffinity(0, 128n, old);
  }
}
