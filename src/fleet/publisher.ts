/**
 * Publishing a host's endpoints: a coalescing writer in the manner of
 * Cilium's syncstore. The agent says what the endpoints should be whenever
 * it likes; the publisher writes only the difference between that and what
 * etcd is known to hold, merges requests that arrive while it writes, and
 * writes nothing at all when nothing changed: a fleet in steady state costs
 * etcd no writes beyond the lease keep-alives.
 *
 * Each batch is one transaction guarded by `Lease(host key) == our lease`:
 * endpoints are never written under a lease the host no longer holds, and
 * a failed guard makes the registration check itself (a new lease means
 * everything is written again). Failures are retried with jittered backoff
 * and logged without flooding.
 *
 * @module
 */

import { Backoff, type BackoffOptions, sleep } from "./backoff.ts";
import { bytes, type Entry, type EtcdClient, valueText } from "./client.ts";
import { endpointKey, parseKey } from "./keys.ts";
import { type LogSink, stderrSink, Throttle } from "./log.ts";
import type { Registration } from "./registration.ts";
import type { Endpoint } from "./validate.ts";
import { failpoint } from "../tunnel/failpoint.ts";
import type { IRequestOp } from "etcd3";

/** Options of {@link Publisher}. */
export interface PublisherOptions {
  /** The connection. */
  client: EtcdClient;
  /** The host's registration (its lease guards every write). */
  registration: Registration;
  /** Operations per transaction (etcd's default limit is 128). */
  batch?: number;
  /** Retry pacing. */
  backoff?: BackoffOptions;
  /** Where log lines go. */
  log?: LogSink;
}

/** The JSON value of an endpoint key. */
export function endpointValue(e: Pick<Endpoint, "ips">): string {
  return JSON.stringify({ ips: e.ips });
}

/** Publisher writes a host's endpoints to etcd, only what changed. */
export class Publisher {
  #opts: PublisherOptions;
  #desired = new Map<string, string>();
  /** What etcd holds for this host, as last read or written: value and lease. */
  #published = new Map<string, { value: string; lease: string }>();
  #dirty = false;
  #running?: Promise<void>;
  #abort = new AbortController();
  #throttle: Throttle;
  /** Transactions written so far (for tests: none in steady state). */
  writes = 0;

  /** Creates a publisher with nothing to publish. */
  constructor(options: PublisherOptions) {
    this.#opts = options;
    this.#throttle = new Throttle(options.log ?? stderrSink, "publishing endpoints to etcd");
  }

  /**
   * Takes what etcd holds for this host (its endpoint keys, as a full list
   * read them), so a restarted agent rewrites only what differs.
   */
  adopt(entries: Iterable<Entry>): void {
    this.#published.clear();
    for (const e of entries) {
      this.#published.set(e.key, { value: valueText(e.value), lease: e.lease });
    }
  }

  /** Forgets what was written under an old lease (it is gone with it). */
  forgetLease(): void {
    this.#published.clear();
  }

  /** Sets the endpoints the host should have published. */
  set(endpoints: Iterable<Omit<Endpoint, "host">>): void {
    const host = this.#opts.registration.host;
    this.#desired.clear();
    for (const e of endpoints) this.#desired.set(endpointKey(e.net, host, e.mac), endpointValue(e));
  }

  /**
   * Writes what differs, retrying until etcd holds exactly the wanted
   * endpoints (or the publisher is closed). Calls made while a flush runs
   * join it.
   */
  flush(): Promise<void> {
    this.#dirty = true;
    this.#running ??= this.#drain().finally(() => this.#running = undefined);
    return this.#running;
  }

  async #drain(): Promise<void> {
    const backoff = new Backoff(this.#opts.backoff);
    const signal = this.#abort.signal;
    while (this.#dirty && !signal.aborted) {
      this.#dirty = false;
      try {
        await this.#write();
        this.#throttle.recovered();
        backoff.reset();
      } catch (err) {
        this.#dirty = true;
        this.#throttle.failed(String(err instanceof Error ? err.message : err));
        await sleep(backoff.next(), signal);
      }
    }
  }

  async #write(): Promise<void> {
    const reg = this.#opts.registration;
    const lease = reg.lease;
    if (!lease) throw new Error("the host is not registered yet");
    const ops: { key: string; value?: string; op: IRequestOp }[] = [];
    for (const [key, value] of this.#desired) {
      const p = this.#published.get(key);
      if (p && p.value === value && p.lease === lease) continue;
      ops.push({
        key,
        value,
        op: { request_put: { key: bytes(key), value: bytes(value), lease } },
      });
    }
    for (const key of this.#published.keys()) {
      if (!this.#desired.has(key)) {
        ops.push({ key, op: { request_delete_range: { key: bytes(key) } } });
      }
    }
    // One network's keys per transaction: a network this host may not
    // join (etcd refuses the write) does not hold back the others.
    const size = this.#opts.batch ?? 64;
    const byNet = Map.groupBy(ops, (o) => {
      const k = parseKey(o.key);
      return k?.kind === "endpoint" ? k.net : "";
    });
    const failures: string[] = [];
    for (const [net, netOps] of byNet) {
      for (let i = 0; i < netOps.length; i += size) {
        const batch = netOps.slice(i, i + size);
        let res;
        try {
          res = await this.#opts.client.txn({
            compare: [{ key: bytes(reg.key), target: "Lease", result: "Equal", lease }],
            success: batch.map((b) => b.op),
          });
        } catch (err) {
          failures.push(`network ${net}: ${err instanceof Error ? err.message : err}`);
          break;
        }
        if (!res.succeeded) {
          reg.reassert();
          throw new Error(`host key ${reg.key} is no longer under lease ${lease}`);
        }
        this.writes++;
        for (const b of batch) {
          if (b.value === undefined) this.#published.delete(b.key);
          else this.#published.set(b.key, { value: b.value, lease });
        }
        failpoint("fleet.publish.batch");
      }
    }
    if (failures.length) throw new Error(failures.join("; "));
  }

  /**
   * Takes note of a change etcd reported on one of this host's keys: a key
   * someone else deleted or changed is written again by the next flush.
   */
  observe(key: string, entry: Entry | undefined): void {
    if (entry) {
      this.#published.set(key, { value: valueText(entry.value), lease: entry.lease });
    } else {
      this.#published.delete(key);
    }
  }

  /** Stops retrying. */
  async close(): Promise<void> {
    this.#abort.abort();
    await this.#running;
  }
}
