/**
 * Retry delays: exponential, capped, with full jitter. When etcd comes back
 * after an outage every agent of the fleet is retrying; with fixed delays
 * they would all arrive in the same instant and etcd answers such a herd
 * with "too many requests" (cilium/cilium#22037). Full jitter (a uniform
 * draw between zero and the exponential step) spreads them over the whole
 * step. The cap bounds how late an agent notices the store is back: with
 * the default 1 s cap, a change made while etcd was down is seen within
 * about a second of its return plus one round trip.
 *
 * @module
 */

/** Options of {@link Backoff}. */
export interface BackoffOptions {
  /** The first step, in milliseconds (default 50). */
  initialMs?: number;
  /** The largest step (default 1000). */
  maxMs?: number;
  /** A uniform draw in [0, 1) (default Math.random; tests pass their own). */
  random?: () => number;
}

/** Backoff yields jittered, exponentially growing, capped delays. */
export class Backoff {
  #initial: number;
  #max: number;
  #random: () => number;
  #attempt = 0;

  /** Creates a backoff at its first step. */
  constructor(options: BackoffOptions = {}) {
    this.#initial = options.initialMs ?? 50;
    this.#max = options.maxMs ?? 1000;
    this.#random = options.random ?? Math.random;
  }

  /** The delay before the next try, in milliseconds. */
  next(): number {
    const step = Math.min(this.#max, this.#initial * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    return this.#random() * step;
  }

  /** Back to the first step, after a success. */
  reset(): void {
    this.#attempt = 0;
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
