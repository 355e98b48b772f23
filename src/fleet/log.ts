/**
 * Logs that stay bounded whatever the store does. flannel once wrote
 * gigabytes a day because a watch retried a compacted revision forever and
 * logged each try (flannel-io/flannel#2470); an agent here logs a recurring
 * failure when it starts, at most once a minute while it lasts, and when it
 * ends, and a bad value once, with a cap on how many distinct ones it
 * remembers.
 *
 * @module
 */

/** Where log lines go: one line per call. */
export type LogSink = (line: string) => void;

/** Writes a line to stderr with a timestamp. */
export const stderrSink: LogSink = (line) => console.error(`${new Date().toISOString()} ${line}`);

/**
 * OnceLog logs a line once per id (a key and its revision, say). It
 * remembers at most `max` ids; past that it forgets them all and counts
 * what it forgot, so memory stays bounded and a flood of distinct bad
 * values costs one line each at worst, never one per retry.
 */
export class OnceLog {
  #seen = new Set<string>();
  #sink: LogSink;
  #max: number;

  /** Creates a log over `sink` remembering up to `max` ids. */
  constructor(sink: LogSink, max = 10_000) {
    this.#sink = sink;
    this.#max = max;
  }

  /** Logs `line` unless `id` was logged before; returns whether it logged. */
  once(id: string, line: string): boolean {
    if (this.#seen.has(id)) return false;
    if (this.#seen.size >= this.#max) this.#seen.clear();
    this.#seen.add(id);
    this.#sink(line);
    return true;
  }
}

/**
 * Throttle reports a condition that recurs on every retry (a store that
 * cannot be reached): the first failure, then at most one line per
 * `intervalMs` saying how many tries failed since, then the recovery with
 * the count and the time it took.
 */
export class Throttle {
  #sink: LogSink;
  #what: string;
  #intervalMs: number;
  #now: () => number;
  #since?: number;
  #lastLine = 0;
  #failures = 0;

  /** Creates a throttle for `what` ("watching etcd", say). */
  constructor(sink: LogSink, what: string, intervalMs = 60_000, now: () => number = Date.now) {
    this.#sink = sink;
    this.#what = what;
    this.#intervalMs = intervalMs;
    this.#now = now;
  }

  /** Whether the condition is on. */
  get failing(): boolean {
    return this.#since !== undefined;
  }

  /** One more failure, for `reason`. */
  failed(reason: string): void {
    const now = this.#now();
    this.#failures++;
    if (this.#since === undefined) {
      this.#since = now;
      this.#lastLine = now;
      this.#sink(`${this.#what}: ${reason}; retrying`);
    } else if (now - this.#lastLine >= this.#intervalMs) {
      this.#lastLine = now;
      const s = ((now - this.#since) / 1000).toFixed(0);
      this.#sink(`${this.#what}: still failing after ${this.#failures} tries in ${s}s: ${reason}`);
    }
  }

  /** The condition ended (a try succeeded). */
  recovered(): void {
    if (this.#since === undefined) return;
    const s = ((this.#now() - this.#since) / 1000).toFixed(1);
    this.#sink(`${this.#what}: recovered after ${this.#failures} failed tries in ${s}s`);
    this.#since = undefined;
    this.#failures = 0;
  }
}
