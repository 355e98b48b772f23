/**
 * The connection to etcd, through the npm `etcd3` client (gRPC over
 * `@grpc/grpc-js`), used at the level of etcd's own RPCs: ranges at a
 * revision, transactions, raw watch streams and lease calls. The fleet code
 * needs what the client's higher layers hide: the response header (cluster
 * id and revision, to notice a restored snapshot), progress requests on a
 * watch stream (to notice a silent one), and an existing lease's id (to
 * keep a restarted agent's keys alive).
 *
 * The client's own fault handling is switched off: its circuit breaker
 * refuses every call for 5 s after three failures, which would delay the
 * return to a recovered etcd past the fleet's 2 s promise, and its retries
 * would multiply an outage's load. The callers retry instead, with
 * jittered backoff (`backoff.ts`). Every unary call has a deadline, so a
 * frozen server cannot hang a caller, and gRPC keepalive pings make a dead
 * connection fail instead of staying silent.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { noop } from "cockatiel";
import {
  Etcd3,
  type IDuplexStream,
  type IKeyValue,
  type IOptions,
  type IResponseHeader,
  type ITxnRequest,
  type ITxnResponse,
  type IWatchRequest,
  type IWatchResponse,
} from "etcd3";

/** TLS material, as file paths. */
export interface EtcdTls {
  /** The CA that signed etcd's certificate (PEM). */
  ca: string;
  /** This client's certificate (PEM), when etcd asks for one. */
  cert?: string;
  /** Its private key (PEM). */
  key?: string;
}

/** How to reach etcd. */
export interface EtcdOptions {
  /** Client URLs, http:// or https://. */
  endpoints: string[];
  /** TLS material; https endpoints without it trust the system's CAs. */
  tls?: EtcdTls;
  /** A user and password, when etcd has authentication on. */
  auth?: { username: string; password: string };
  /** Deadline of each unary call, in milliseconds (default 5000). */
  callTimeoutMs?: number;
}

/** A key and its value with etcd's metadata. */
export interface Entry {
  /** The key. */
  key: string;
  /**
   * The value: its text, or its raw bytes when they are not UTF-8 (a
   * value no reader accepts). A mirror holds tens of thousands of values,
   * and text takes a fraction of the memory of a byte array.
   */
  value: string | Uint8Array;
  /** The revision that created the key (a later re-creation is a new one). */
  createRevision: number;
  /** The revision of its last change. */
  modRevision: number;
  /** The lease it is attached to, "0" for none. */
  lease: string;
}

/** Where the store is: which cluster and at which revision. */
export interface StoreHeader {
  /** The cluster's id; a restored snapshot may bring another. */
  clusterId: string;
  /** The store's revision when the request was served. */
  revision: number;
}

/** A watch stream as the client gives it (a gRPC duplex stream, an EventEmitter). */
export type WatchStream = IDuplexStream<IWatchRequest, IWatchResponse> & {
  removeAllListeners(): unknown;
};

/** An etcd response's header in our terms. */
export function storeHeader(h: IResponseHeader): StoreHeader {
  return { clusterId: String(h.cluster_id), revision: Number(h.revision) };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A value as {@link Entry} holds it: text if it is UTF-8, else its bytes. */
export function valueOf(bytes: Uint8Array): string | Uint8Array {
  try {
    return utf8.decode(bytes);
  } catch {
    return new Uint8Array(bytes);
  }
}

/** An entry's value as text (bytes that are not UTF-8 replaced), to compare or show. */
export function valueText(value: string | Uint8Array): string {
  return typeof value === "string" ? value : new TextDecoder().decode(value);
}

/** A key-value from etcd in our terms. */
export function entryOf(kv: IKeyValue): Entry {
  return {
    key: kv.key.toString(),
    value: valueOf(kv.value),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    lease: String(kv.lease ?? "0"),
  };
}

/** A key as etcd takes it. */
export function bytes(s: string | Uint8Array): Buffer {
  return Buffer.from(s);
}

/** How many keys one range page reads (well under gRPC's 4 MiB message limit). */
const PAGE = 2000;

/** A connection to etcd. */
export class EtcdClient {
  /** The underlying client, for calls this class does not wrap. */
  readonly raw: Etcd3;
  #deadlineMs: number;

  private constructor(raw: Etcd3, deadlineMs: number) {
    this.raw = raw;
    this.#deadlineMs = deadlineMs;
  }

  /** Connects (lazily: the first call dials) with `options`. */
  static async connect(options: EtcdOptions): Promise<EtcdClient> {
    const deadlineMs = options.callTimeoutMs ?? 5000;
    const read = (p?: string) => p === undefined ? undefined : Deno.readFile(p).then(Buffer.from);
    const opts: IOptions = {
      hosts: options.endpoints,
      faultHandling: { host: () => noop, global: noop },
      grpcOptions: {
        "grpc.keepalive_time_ms": 10_000,
        "grpc.keepalive_timeout_ms": 5_000,
        "grpc.keepalive_permit_without_calls": 1,
        // A channel's own reconnect backoff grows to 2 minutes by default;
        // callers pace retries themselves.
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.max_reconnect_backoff_ms": 1000,
      },
      defaultCallOptions: (ctx) => ctx.isStream ? {} : { deadline: Date.now() + deadlineMs },
    };
    if (options.tls) {
      opts.credentials = {
        rootCertificate: (await read(options.tls.ca))!,
        certChain: await read(options.tls.cert),
        privateKey: await read(options.tls.key),
      };
    }
    if (options.auth) opts.auth = options.auth;
    return new EtcdClient(new Etcd3(opts), deadlineMs);
  }

  /** The deadline of unary calls, in milliseconds. */
  get deadlineMs(): number {
    return this.#deadlineMs;
  }

  /**
   * Where the store is now, from the cheapest read there is (one key that
   * does not exist): its header carries the cluster id and revision.
   */
  async header(probeKey: string): Promise<StoreHeader> {
    const res = await this.raw.kv.range({ key: bytes(probeKey), keys_only: true });
    return storeHeader(res.header);
  }

  /**
   * Every key in [start, end) at one revision (the newest when not given),
   * read in pages, with the header of the first page. A page reads at the
   * first page's revision, so the whole list is one consistent snapshot.
   */
  async list(start: string, end: string): Promise<{ header: StoreHeader; entries: Entry[] }> {
    const entries: Entry[] = [];
    let header: StoreHeader | undefined;
    let from = bytes(start);
    for (;;) {
      const res = await this.raw.kv.range({
        key: from,
        range_end: bytes(end),
        limit: PAGE,
        revision: header?.revision ?? 0,
      });
      header ??= storeHeader(res.header);
      for (const kv of res.kvs) entries.push(entryOf(kv));
      if (!res.more || res.kvs.length === 0) return { header, entries };
      // The next page starts just after the last key read.
      from = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])]);
    }
  }

  /** Runs a transaction. */
  txn(req: ITxnRequest): Promise<ITxnResponse> {
    return this.raw.kv.txn(req);
  }

  /** Opens a raw watch stream (watches are created on it by the caller). */
  async watchStream(): Promise<WatchStream> {
    return await this.raw.watchClient.watch() as WatchStream;
  }

  /** Grants a lease of `ttl` seconds; returns its id. */
  async leaseGrant(ttl: number): Promise<string> {
    const res = await this.raw.leaseClient.leaseGrant({ TTL: ttl, ID: 0 });
    return String(res.ID);
  }

  /** The seconds lease `id` has left; 0 or less once it is gone. */
  async leaseTimeToLive(id: string): Promise<number> {
    const res = await this.raw.leaseClient.leaseTimeToLive({ ID: id, keys: false });
    return Number(res.TTL);
  }

  /**
   * Renews lease `id` once, over a short-lived keep-alive stream; returns
   * the TTL etcd granted (0 or less: the lease is gone). A fresh stream per
   * renewal cannot be left half-dead by a broken connection, and costs one
   * HTTP/2 stream every third of a TTL.
   */
  async leaseKeepAlive(id: string): Promise<number> {
    const stream = await this.raw.leaseClient.leaseKeepAlive();
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await new Promise<number>((resolve, reject) => {
        timer = setTimeout(
          () => reject(new Error(`lease keep-alive got no answer in ${this.#deadlineMs} ms`)),
          this.#deadlineMs,
        );
        stream.on("data", (res) => resolve(Number(res.TTL)));
        stream.on("error", reject);
        stream.write({ ID: id });
      });
    } finally {
      clearTimeout(timer);
      // Cancelling reports CANCELLED on the stream; the promise is settled.
      stream.on("error", () => {});
      stream.cancel();
    }
  }

  /** Revokes lease `id`: every key attached to it goes at once. */
  async leaseRevoke(id: string): Promise<void> {
    await this.raw.leaseClient.leaseRevoke({ ID: id });
  }

  /** Closes every connection. */
  close(): void {
    this.raw.close();
  }

  /** Closes every connection. */
  [Symbol.dispose](): void {
    this.close();
  }
}
