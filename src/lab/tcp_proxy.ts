/**
 * A TCP forwarder on loopback between a client and a server: from another
 * network namespace's loopback to this one's (how a namespace host of the
 * fleet lab reaches etcd, as a real host reaches it over its network), and
 * for the network faults a real etcd cannot stage by itself:
 *
 * - `freeze()`: every open connection stops carrying bytes but stays open,
 *   as behind a broken middlebox or a half-dead peer (the silent watch of
 *   etcd-io/etcd#8980), while new connections work;
 * - `cut()`: every open connection is closed and new ones are refused
 *   until `restore()`, as during a network partition.
 *
 * @module
 */

import { freePort } from "./etcd.ts";
import type { Netns } from "./netns.ts";

/** Options of {@link TcpProxy.start}. */
export interface TcpProxyOptions {
  /** Listen on this namespace's loopback (default: this process's namespace). */
  netns?: Netns;
  /** Listen on this port (default: a free one). */
  port?: number;
}

interface Pair {
  a: Deno.TcpConn;
  b: Deno.TcpConn;
  frozen: boolean;
}

/**
 * TcpProxy forwards 127.0.0.1:port, in its namespace, to a target port on
 * this process's 127.0.0.1.
 */
export class TcpProxy {
  /** The port clients connect to. */
  readonly port: number;
  /** When each connection a client opened was accepted (ms since the epoch). */
  readonly accepted: number[] = [];
  #listener?: Deno.TcpListener;
  #target: number;
  #netns?: Netns;
  #pairs = new Set<Pair>();
  #accepting?: Promise<void>;
  #pumps = new Set<Promise<void>>();

  private constructor(port: number, target: number, netns?: Netns) {
    this.port = port;
    this.#target = target;
    this.#netns = netns;
  }

  /** Starts forwarding to `target` (a port on 127.0.0.1). */
  static start(target: number, options: TcpProxyOptions = {}): TcpProxy {
    const p = new TcpProxy(options.port ?? freePort(), target, options.netns);
    p.restore();
    return p;
  }

  /** A URL of the proxy for a server URL's scheme. */
  url(scheme = "http"): string {
    return `${scheme}://127.0.0.1:${this.port}`;
  }

  /** Listens again after `cut`. */
  restore(): void {
    if (this.#listener) return;
    // Only the listening socket is made in the namespace, and synchronously:
    // nothing else this process does can run meanwhile and land there.
    const leave = this.#netns?.enter();
    let l: Deno.TcpListener;
    try {
      l = Deno.listen({ hostname: "127.0.0.1", port: this.port });
    } finally {
      leave?.();
    }
    this.#listener = l;
    this.#accepting = (async () => {
      for await (const a of l) {
        this.accepted.push(Date.now());
        let b: Deno.TcpConn;
        try {
          b = await Deno.connect({ hostname: "127.0.0.1", port: this.#target });
        } catch {
          a.close();
          continue;
        }
        const pair: Pair = { a, b, frozen: false };
        this.#pairs.add(pair);
        this.#pump(pair, a, b);
        this.#pump(pair, b, a);
      }
    })().catch(() => {});
  }

  #pump(pair: Pair, from: Deno.TcpConn, to: Deno.TcpConn): void {
    const p = (async () => {
      const buf = new Uint8Array(64 * 1024);
      try {
        for (;;) {
          const n = await from.read(buf);
          if (n === null) break;
          // A frozen pair swallows what arrives: the peer sees silence.
          if (pair.frozen) continue;
          let off = 0;
          while (off < n) off += await to.write(buf.subarray(off, n));
        }
      } catch {
        // Closed under us.
      }
      this.#close(pair);
    })();
    this.#pumps.add(p);
    p.finally(() => this.#pumps.delete(p));
  }

  #close(pair: Pair): void {
    if (!this.#pairs.delete(pair)) return;
    for (const c of [pair.a, pair.b]) {
      try {
        c.close();
      } catch {
        // Already closed.
      }
    }
  }

  /** Open connections stop carrying bytes (they stay open); new ones work. */
  freeze(): void {
    for (const p of this.#pairs) p.frozen = true;
  }

  /** Closes every connection and refuses new ones until `restore`. */
  async cut(): Promise<void> {
    this.#listener?.close();
    this.#listener = undefined;
    await this.#accepting;
    for (const p of [...this.#pairs]) this.#close(p);
  }

  /** Stops forwarding and closes everything. */
  async close(): Promise<void> {
    await this.cut();
    await Promise.all([...this.#pumps]);
  }

  /** Stops forwarding and closes everything. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
