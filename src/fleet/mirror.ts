/**
 * A local mirror of every key under a prefix, kept in step with etcd: list
 * once, then watch from the list's revision, and report each change.
 *
 * Failure semantics, each one a lesson from flannel, Cilium or etcd:
 *
 * - **Nothing is withdrawn for an outage.** While etcd cannot be reached
 *   the mirror keeps its last view and reports nothing; forwarding goes on
 *   from what was last derived.
 * - **Reconnects are paced by jittered exponential backoff** (`backoff.ts`),
 *   capped at 1 s, so agents do not return to etcd in one herd and a
 *   change made around etcd's return is seen within about a second of it.
 *   The failure is logged when it starts, once a minute while it lasts and
 *   when it ends (`log.ts`), never once per try.
 * - **A plain disconnect resumes the watch** from the last revision seen:
 *   no event is lost and nothing is read twice. Before resuming, a cheap
 *   read checks where the store is.
 * - **A compacted revision, a silent stream, a store whose revision went
 *   backwards or whose cluster id changed** cannot be resumed. The mirror
 *   relists and reports only the difference: every entry it holds is taken
 *   as stale, the list refreshes what is still there, and what stayed stale
 *   is reported deleted (Cilium's watchstore). An entry is unchanged only
 *   if its value and its revisions are, so after a restored snapshot, where
 *   revisions mean another history, no stale entry survives.
 * - **Silence is detected, not trusted away.** A watch stream can stop
 *   delivering without an error (etcd-io/etcd#8980). Every check interval
 *   the mirror asks the server for a progress report on the stream (etcd
 *   3.4's WatchProgressRequest); a stream that answers nothing for three
 *   intervals is dropped, the connection with it, and the mirror relists.
 * - **The first full list is announced** (`synced`): a consumer must not
 *   act on a half-known world (OVN waits for its first full computation
 *   before replacing flows).
 *
 * Events are applied idempotently by revision (an event older than the
 * entry it would change is ignored), so a resumed watch that repeats an
 * event changes nothing.
 *
 * @module
 */

import { Backoff, type BackoffOptions, sleep } from "./backoff.ts";
import {
  bytes,
  type Entry,
  entryOf,
  type EtcdClient,
  type StoreHeader,
  storeHeader,
  type WatchStream,
} from "./client.ts";
import { prefixEnd } from "./keys.ts";
import { type LogSink, stderrSink, Throttle } from "./log.ts";

/** One change: `next` is the new entry, undefined for a deletion. */
export interface Change {
  /** The key. */
  key: string;
  /** What the mirror held before, if anything. */
  prev?: Entry;
  /** What it holds now; undefined once deleted. */
  next?: Entry;
}

/** Why a batch of changes was reported. */
export type ChangeCause = "list" | "watch";

/** Options of {@link Mirror}. */
export interface MirrorOptions {
  /** The prefix mirrored (every key starting with it). */
  prefix: string;
  /** Makes a connection; called again after one is dropped. */
  connect: () => Promise<EtcdClient>;
  /** Called with each batch of changes, in order. */
  onChange: (changes: Change[], cause: ChangeCause) => void;
  /** How often to ask a watch for progress, in ms (default 2000). */
  checkIntervalMs?: number;
  /** Reconnect pacing (default 50 ms doubling to 1 s, full jitter). */
  backoff?: BackoffOptions;
  /** Where log lines go (default stderr). */
  log?: LogSink;
}

/** What the mirror has done, for tests and `status` lines. */
export interface MirrorStats {
  /** Full lists read (the first one included). */
  lists: number;
  /** Watches created (each resume is one). */
  watches: number;
  /** Lists forced by a compacted revision. */
  compactions: number;
  /** Watches dropped because they went silent. */
  silences: number;
  /** Full resyncs forced by a revision going backwards or a new cluster id. */
  resyncs: number;
  /** When each watch was (re)established, ms since the epoch. */
  watchingSince: number;
}

class Compacted extends Error {}
class Silent extends Error {}

/** Mirror keeps every key under a prefix in step with etcd. */
export class Mirror {
  #opts: MirrorOptions;
  #entries = new Map<string, Entry>();
  #client?: EtcdClient;
  #clusterId?: string;
  /** The revision the mirror is consistent with; 0 before the first list. */
  #revision = 0;
  #listed = false;
  #mustList = true;
  #abort = new AbortController();
  #stream?: WatchStream;
  #running?: Promise<void>;
  #synced = Promise.withResolvers<void>();
  #throttle: Throttle;
  #checkMs: number;
  /** Counters of what happened. */
  readonly stats: MirrorStats = {
    lists: 0,
    watches: 0,
    compactions: 0,
    silences: 0,
    resyncs: 0,
    watchingSince: 0,
  };

  /** Creates a mirror; `start` runs it. */
  constructor(options: MirrorOptions) {
    this.#opts = options;
    this.#checkMs = options.checkIntervalMs ?? 2000;
    this.#throttle = new Throttle(options.log ?? stderrSink, `watching ${options.prefix} in etcd`);
  }

  /** Every entry the mirror holds, by key. */
  get entries(): ReadonlyMap<string, Entry> {
    return this.#entries;
  }

  /** The revision the mirror is consistent with. */
  get revision(): number {
    return this.#revision;
  }

  /** Resolves once the first full list is in. */
  get synced(): Promise<void> {
    return this.#synced.promise;
  }

  /** Whether the first full list is in. */
  get isSynced(): boolean {
    return this.#listed;
  }

  /** Starts following etcd. */
  start(): void {
    this.#running ??= this.#run();
  }

  /** Stops following etcd and closes the connection. */
  async close(): Promise<void> {
    this.#abort.abort();
    this.#endStream();
    await this.#running;
    this.#dropClient();
  }

  async #run(): Promise<void> {
    const backoff = new Backoff(this.#opts.backoff);
    const signal = this.#abort.signal;
    while (!signal.aborted) {
      try {
        this.#client ??= await this.#opts.connect();
        await this.#catchUp(this.#client);
        await this.#watch(this.#client, backoff);
      } catch (err) {
        if (signal.aborted) break;
        if (err instanceof Compacted) {
          // Not a failure of etcd: relist at once, quietly.
          this.stats.compactions++;
          this.#mustList = true;
          continue;
        }
        if (err instanceof Silent) {
          this.stats.silences++;
          this.#mustList = true;
        }
        // A fresh connection after any failure: a channel that broke (or
        // went silent) is never trusted again.
        this.#dropClient();
        this.#throttle.failed(err instanceof Error ? err.message : String(err));
      }
      await sleep(backoff.next(), signal);
    }
  }

  /** Decides between resuming and relisting, and relists if needed. */
  async #catchUp(client: EtcdClient): Promise<void> {
    const end = prefixEnd(this.#opts.prefix);
    if (this.#listed && !this.#mustList) {
      const h = await client.header(this.#opts.prefix);
      if (!this.#sameHistory(h)) this.#mustList = true;
    }
    if (!this.#mustList) return;
    const { header, entries } = await client.list(this.#opts.prefix, end);
    if (this.#listed && !this.#sameHistory(header)) this.stats.resyncs++;
    this.stats.lists++;
    this.#clusterId = header.clusterId;
    this.#revision = header.revision;
    this.#mustList = false;
    this.#sweep(entries);
    if (!this.#listed) {
      this.#listed = true;
      this.#synced.resolve();
    }
  }

  /** Whether `h` continues the history the mirror followed. */
  #sameHistory(h: StoreHeader): boolean {
    return h.clusterId === this.#clusterId && h.revision >= this.#revision;
  }

  /** Replaces the mirror's entries with a full list, reporting the difference. */
  #sweep(listed: Entry[]): void {
    const stale = new Map(this.#entries);
    const changes: Change[] = [];
    for (const next of listed) {
      const prev = stale.get(next.key);
      stale.delete(next.key);
      if (prev && sameEntry(prev, next)) continue;
      this.#entries.set(next.key, next);
      changes.push({ key: next.key, prev, next });
    }
    for (const [key, prev] of stale) {
      this.#entries.delete(key);
      changes.push({ key, prev });
    }
    // The first list is reported even when empty: it is what says "synced".
    if (changes.length || this.stats.lists === 1) this.#opts.onChange(changes, "list");
  }

  /** Watches from the mirror's revision until the stream fails; throws why. */
  async #watch(client: EtcdClient, backoff: Backoff): Promise<void> {
    const stream = await client.watchStream();
    this.#stream = stream;
    const signal = this.#abort.signal;
    // Closed while the stream was opening: no abort event will come for it.
    if (signal.aborted) return this.#endStream();
    await new Promise<void>((resolve, reject) => {
      let heard = Date.now();
      const stop = () => {
        clearInterval(timer);
        signal.removeEventListener("abort", aborted);
        this.#endStream();
      };
      const aborted = () => {
        stop();
        resolve();
      };
      const fail = (err: Error) => {
        stop();
        reject(err);
      };
      const timer = setInterval(() => {
        if (Date.now() - heard > 3 * this.#checkMs) {
          return fail(new Silent(`the watch stream was silent for ${Date.now() - heard} ms`));
        }
        stream.write({ progress_request: {} });
      }, this.#checkMs);
      signal.addEventListener("abort", aborted, { once: true });
      stream.on("data", (res) => {
        heard = Date.now();
        if (res.canceled) {
          return fail(
            Number(res.compact_revision) > 0
              ? new Compacted(`revision ${this.#revision + 1} was compacted`)
              : new Error(`etcd canceled the watch: ${res.cancel_reason || "no reason given"}`),
          );
        }
        if (res.created) {
          const h = storeHeader(res.header);
          if (!this.#sameHistory(h)) {
            this.#mustList = true;
            return fail(
              new Error(`etcd's history changed (cluster ${h.clusterId}, revision ${h.revision})`),
            );
          }
          this.stats.watches++;
          this.stats.watchingSince = Date.now();
          backoff.reset();
          this.#throttle.recovered();
          return;
        }
        this.#apply(res.events.map((ev) => ({ type: ev.type, kv: entryOf(ev.kv) })));
      });
      stream.on("error", (err: Error) => fail(err));
      stream.on("end", () => fail(new Error("etcd ended the watch stream")));
      stream.write({
        create_request: {
          key: bytes(this.#opts.prefix),
          range_end: bytes(prefixEnd(this.#opts.prefix)),
          start_revision: this.#revision + 1,
        },
      });
    });
  }

  /** Applies a watch response's events, skipping any already reflected. */
  #apply(events: { type: string; kv: Entry }[]): void {
    const changes: Change[] = [];
    for (const { type, kv } of events) {
      const prev = this.#entries.get(kv.key);
      this.#revision = Math.max(this.#revision, kv.modRevision);
      if (prev && prev.modRevision >= kv.modRevision) continue;
      if (type === "Delete") {
        if (!prev) continue;
        this.#entries.delete(kv.key);
        changes.push({ key: kv.key, prev });
      } else {
        this.#entries.set(kv.key, kv);
        changes.push({ key: kv.key, prev, next: kv });
      }
    }
    if (changes.length) this.#opts.onChange(changes, "watch");
  }

  #endStream(): void {
    const s = this.#stream;
    if (!s) return;
    this.#stream = undefined;
    s.removeAllListeners();
    // Cancelling reports CANCELLED on the stream; nobody listens any more.
    s.on("error", () => {});
    s.cancel();
  }

  #dropClient(): void {
    this.#client?.close();
    this.#client = undefined;
  }
}

/** Whether two entries of one key are the same value in the same history. */
function sameEntry(a: Entry, b: Entry): boolean {
  return a.modRevision === b.modRevision && a.createRevision === b.createRevision &&
    a.lease === b.lease && sameValue(a.value, b.value);
}

/** Whether two values are one (text, or bytes that are not UTF-8). */
function sameValue(a: string | Uint8Array, b: string | Uint8Array): boolean {
  if (typeof a === "string" || typeof b === "string") return a === b;
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
