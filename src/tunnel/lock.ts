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

/** Opens the lock file of the datapath at `pinDir`, for locking it many times. */
export function openLockFile(pinDir: string): Deno.FsFile {
  // Others may pass through, to the lock of a datapath shared with them.
  Deno.mkdirSync(LOCK_DIR, { recursive: true, mode: 0o711 });
  return Deno.openSync(lockPath(pinDir), { create: true, write: true, mode: 0o600 });
}

/** Lets group `gid` take the lock of the datapath at `pinDir`. */
export function shareLockFile(pinDir: string, gid: number): void {
  Deno.chmodSync(LOCK_DIR, 0o711);
  openLockFile(pinDir).close();
  Deno.chownSync(lockPath(pinDir), null, gid);
  Deno.chmodSync(lockPath(pinDir), 0o660);
}

/** A held lock; release it with `using` or `release()`. */
export class DatapathLock implements Disposable {
  #file: Deno.FsFile | undefined;
  readonly #owned: boolean;

  private constructor(file: Deno.FsFile, owned: boolean) {
    this.#file = file;
    this.#owned = owned;
  }

  /**
   * Waits for and takes the lock of the datapath at `pinDir`, through
   * `file` when given (kept open by its owner: two syscalls a lock instead
   * of five), else through a file opened for this lock alone.
   */
  static acquire(pinDir: string, file?: Deno.FsFile): DatapathLock {
    const f = file ?? openLockFile(pinDir);
    try {
      f.lockSync(true);
    } catch (err) {
      if (!file) f.close();
      throw err;
    }
    return new DatapathLock(f, !file);
  }

  /** Releases the lock; later calls do nothing. */
  release(): void {
    if (!this.#file) return;
    this.#file.unlockSync();
    if (this.#owned) this.#file.close();
    this.#file = undefined;
  }

  /** Same as `release()`, for `using`. */
  [Symbol.dispose](): void {
    this.release();
  }
}
