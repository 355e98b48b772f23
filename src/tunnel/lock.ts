/**
 * One writer at a time per datapath, across processes: an exclusive
 * `flock` on a file under /run/warren named after the pin directory. The
 * kernel drops the lock when its holder exits, even by SIGKILL.
 *
 * @module
 */

/** Where lock files live. */
export const LOCK_DIR = "/run/warren";

/** The lock file of the datapath pinned at `pinDir`. */
export function lockPath(pinDir: string): string {
  return `${LOCK_DIR}/${pinDir.replace(/^\/+/, "").replace(/\//g, "-")}.lock`;
}

/** A held lock; release it with `using` or `release()`. */
export class DatapathLock implements Disposable {
  #file: Deno.FsFile | undefined;

  private constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  /** Waits for and takes the lock of the datapath at `pinDir`. */
  static acquire(pinDir: string): DatapathLock {
    Deno.mkdirSync(LOCK_DIR, { recursive: true, mode: 0o700 });
    const file = Deno.openSync(lockPath(pinDir), { create: true, write: true, mode: 0o600 });
    try {
      file.lockSync(true);
    } catch (err) {
      file.close();
      throw err;
    }
    return new DatapathLock(file);
  }

  /** Releases the lock; later calls do nothing. */
  release(): void {
    if (!this.#file) return;
    this.#file.unlockSync();
    this.#file.close();
    this.#file = undefined;
  }

  /** Same as `release()`, for `using`. */
  [Symbol.dispose](): void {
    this.release();
  }
}
