/**
 * A TCP forwarder on loopback between a client and a server, for the
 * network faults a real etcd cannot stage by itself:
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

interface Pair {
  a: Deno.TcpConn;
  b: Deno.TcpConn;
  frozen: boolean;
}

/** TcpProxy forwards 127.0.0.1:port to a target port. */
export class TcpProxy {
  /** The port clients connect to. */
  readonly port: number;
  #listener?: Deno.TcpListener;
  #target: number;
  #pairs = new Set<Pair>();
  #accepting?: Promise<void>;
  #pumps = new Set<Promise<void>>();

  private constructor(port: number, target: number) {
    this.port = port;
    this.#target = target;
  }

  /** Starts forwarding to `target` (a port on 127.0.0.1). */
  static start(target: number): TcpProxy {
    const p = new TcpProxy(freePort(), target);
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
    const l = Deno.listen({ hostname: "127.0.0.1", port: this.port });
    this.#listener = l;
    this.#accepting = (async () => {
      for await (const a of l) {
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
