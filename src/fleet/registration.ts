/**
 * A host's registration: one lease, the host key under it, kept alive.
 *
 * - **One lease for everything the host writes.** If the host dies without
 *   leaving, etcd deletes its registration and endpoints together when the
 *   lease expires (within its TTL plus etcd's 500 ms expiry check), and
 *   every other host withdraws it.
 * - **A restart keeps the lease.** On start the agent reads its host key;
 *   if the key names a lease that is still alive, the agent adopts it and
 *   renews it. Its keys never vanish, so a restart looks like nothing to
 *   the rest of the fleet (Cilium's lesson #7214: a restart must not look
 *   like a node delete). A value that did not change is not rewritten.
 * - **The host key is written by compare-and-swap**: created only if it
 *   does not exist, or replaced only if it is still exactly what was read,
 *   so two writers never interleave.
 * - **Keep-alives every third of the TTL**; failures are retried with
 *   jittered backoff. If the lease is gone by the time etcd answers again
 *   (etcd was away longer than the TTL), the host registers anew with a new
 *   lease and the publisher writes its endpoints again: an agent never
 *   gives up or exits because a lease expired (flannel #1240).
 * - **A graceful leave revokes the lease**: every key goes at once and the
 *   fleet withdraws the host immediately, without waiting for the TTL.
 *
 * @module
 */

import { Backoff, type BackoffOptions, sleep } from "./backoff.ts";
import { bytes, entryOf, type EtcdClient } from "./client.ts";
import { hostKey } from "./keys.ts";
import { type LogSink, stderrSink, Throttle } from "./log.ts";
import type { HostRecord } from "./validate.ts";
import { failpoint } from "../tunnel/failpoint.ts";

/** Options of {@link Registration}. */
export interface RegistrationOptions {
  /** The connection. */
  client: EtcdClient;
  /** What to register. */
  record: HostRecord;
  /** Lease TTL in seconds (tens of seconds in production). */
  ttl: number;
  /** Called with each new lease (not with an adopted one). */
  onNewLease?: (lease: string) => void;
  /** Retry pacing. */
  backoff?: BackoffOptions;
  /** Where log lines go. */
  log?: LogSink;
}

/** The JSON value of a host key. */
export function hostValue(r: HostRecord): string {
  return JSON.stringify({ underlay: r.underlay, tunnels: r.tunnels });
}

/** Registration holds a host's lease and key. */
export class Registration {
  #opts: RegistrationOptions;
  #lease?: string;
  #abort = new AbortController();
  #loop?: Promise<void>;
  #throttle: Throttle;
  #wake?: () => void;
  #recheck = false;

  /** Creates a registration; `register` makes it real. */
  constructor(options: RegistrationOptions) {
    this.#opts = options;
    this.#throttle = new Throttle(
      options.log ?? stderrSink,
      `keeping host ${options.record.name} registered in etcd`,
    );
  }

  /** The lease the host's keys hang on, once registered. */
  get lease(): string | undefined {
    return this.#lease;
  }

  /** The host's name. */
  get host(): string {
    return this.#opts.record.name;
  }

  /** The host's key. */
  get key(): string {
    return hostKey(this.#opts.record.name);
  }

  /**
   * Registers the host, retrying until it succeeds or the registration is
   * closed, then keeps the lease alive in the background. Returns the lease.
   */
  async start(): Promise<string> {
    const backoff = new Backoff(this.#opts.backoff);
    const signal = this.#abort.signal;
    while (!signal.aborted) {
      try {
        const lease = await this.#register();
        this.#throttle.recovered();
        this.#loop ??= this.#keepAlive();
        return lease;
      } catch (err) {
        this.#throttle.failed(String(err instanceof Error ? err.message : err));
        await sleep(backoff.next(), signal);
      }
    }
    throw new Error("the registration was closed before it succeeded");
  }

  /**
   * Makes sure the host key exists under the current lease (after someone
   * deleted it, or a write found it gone); a new lease if this one is dead.
   */
  reassert(): void {
    this.#recheck = true;
    this.#wake?.();
  }

  async #register(): Promise<string> {
    const { client, record, ttl } = this.#opts;
    const key = this.key;
    const value = hostValue(record);
    for (;;) {
      const res = await client.raw.kv.range({ key: bytes(key) });
      const kv = res.kvs[0] ? entryOf(res.kvs[0]) : undefined;
      let lease = this.#lease ?? kv?.lease;
      let fresh = false;
      if (lease && lease !== "0" && await client.leaseTimeToLive(lease) > 0) {
        // Adopted (or still ours): renew at once so it has its full TTL.
        if (await client.leaseKeepAlive(lease) <= 0) lease = undefined;
      } else {
        lease = undefined;
      }
      if (!lease) {
        lease = await client.leaseGrant(ttl);
        fresh = true;
      }
      const unchanged = kv && kv.lease === lease && kv.value === value;
      if (!unchanged) {
        const ok = await client.txn({
          compare: kv
            ? [{ key: bytes(key), target: "Mod", result: "Equal", mod_revision: kv.modRevision }]
            : [{ key: bytes(key), target: "Version", result: "Equal", version: 0 }],
          success: [{ request_put: { key: bytes(key), value: bytes(value), lease } }],
        });
        if (!ok.succeeded) continue;
      }
      this.#lease = lease;
      failpoint("fleet.publish.registered");
      if (fresh) this.#opts.onNewLease?.(lease);
      return lease;
    }
  }

  async #keepAlive(): Promise<void> {
    const { client, ttl } = this.#opts;
    const backoff = new Backoff(this.#opts.backoff);
    const signal = this.#abort.signal;
    let delay = (ttl * 1000) / 3;
    while (!signal.aborted) {
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        sleep(delay, signal).then(resolve);
      });
      this.#wake = undefined;
      if (signal.aborted) break;
      const recheck = this.#recheck;
      this.#recheck = false;
      try {
        if (await client.leaseKeepAlive(this.#lease!) <= 0) {
          // The lease expired while etcd was away: register anew.
          this.#lease = undefined;
          await this.#register();
        } else if (recheck) {
          // Writes nothing if the key is still ours and unchanged.
          await this.#register();
        }
        this.#throttle.recovered();
        backoff.reset();
        delay = (ttl * 1000) / 3;
      } catch (err) {
        this.#recheck ||= recheck;
        this.#throttle.failed(String(err instanceof Error ? err.message : err));
        delay = backoff.next();
      }
    }
  }

  /** Stops the keep-alives and revokes the lease: the host leaves the fleet. */
  async leave(): Promise<void> {
    await this.close();
    if (this.#lease) await this.#opts.client.leaseRevoke(this.#lease);
    this.#lease = undefined;
  }

  /** Stops the keep-alives without revoking: the keys live out their TTL. */
  async close(): Promise<void> {
    this.#abort.abort();
    await this.#loop;
  }
}
