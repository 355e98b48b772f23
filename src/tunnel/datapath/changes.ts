/**
 * The change counter and the lock, as one `Datapath` object sees them.
 *
 * Writers take the datapath lock (`lock.ts`); this keeps its file open so
 * that a script taking it for every single change pays two syscalls a
 * time, and a caller may hold it across many changes.
 *
 * What the object caches from the pins (its list of ports) stays valid
 * while `wr_config`'s change counter is the one it last saw: every change,
 * by any process, moves the counter, so one map read tells whether to read
 * them again.
 *
 * @module
 */

import type { ConfigMap } from "../config.ts";
import { DatapathLock, openLockFile } from "../lock.ts";

/** Changes holds the lock file and the change counter last seen. */
export class Changes {
  readonly #pinDir: string;
  readonly #config: ConfigMap;
  readonly #reload: () => void;
  #known?: bigint;
  #lockFile?: Deno.FsFile;

  /**
   * For the datapath pinned at `pinDir`, whose settings are `config`;
   * `reload` reads what the object caches again.
   */
  constructor(pinDir: string, config: ConfigMap, reload: () => void) {
    this.#pinDir = pinDir;
    this.#config = config;
    this.#reload = reload;
  }

  /** The lock every change takes; hold it across several changes. */
  lock(): DatapathLock {
    this.#lockFile ??= openLockFile(this.#pinDir);
    return DatapathLock.acquire(this.#pinDir, this.#lockFile);
  }

  /** Takes the lock and brings the caches up to date: how every change starts. */
  begin(): DatapathLock {
    const lock = this.lock();
    try {
      this.refresh();
    } catch (err) {
      lock.release();
      throw err;
    }
    return lock;
  }

  /**
   * Reads the caches again unless nothing changed since this object last
   * looked. One syscall when nothing did.
   */
  refresh(): void {
    const seq = this.#config.read().seq;
    if (seq === this.#known) return;
    this.#reload();
    this.#known = seq;
  }

  /** Notes the counter as `seq`, when known: a change of this object's own. */
  seen(seq: bigint | undefined): void {
    this.#known = seq ?? this.#known;
  }

  /** After writing what the caches hold: counts the change for everyone and reads them again. */
  bump(): void {
    const { seq } = this.#config.bump();
    this.#reload();
    this.#known = seq;
  }

  /** Closes the lock file. */
  close(): void {
    this.#lockFile?.close();
    this.#lockFile = undefined;
  }
}
