/**
 * One writer at a time per datapath, across processes: an exclusive
 * `flock` on a file under /run/warren named after the pin directory. The
 * kernel drops the lock when its holder exits, even by SIGKILL.
 *
 * `down` removes the file while it holds the lock, so that nothing of the
 * datapath is left behind. A process that was waiting for the lock then
 * holds it on a file no longer there, which a newcomer would not see: so
 * taking the lock checks that the file locked is still the one at its
 * path, and starts again on the new one when it is not.
 *
 * @module
 */

/** Where lock files live. */
export const LOCK_DIR = "/run/warren";

/** The lock file of the datapath pinned at `pinDir`. */
export function lockPath(pinDir: string): string {
  return `${LOCK_DIR}/${pinDir.replace(/^\/+/, "").replace(/\//g, "-")}.lock`;
}

/**
 * The file beside the lock file of the datapath at `pinDir` where `apply`
 * notes what it last made the table (`flows/applied.ts`).
 */
export function appliedPath(pinDir: string): string {
  return lockPath(pinDir).replace(/\.lock$/, ".applied");
}

/**
 * The file where the datapath at `pinDir`'s last apply notes what each
 * of its flow texts compiled to (`flows/noted_texts.ts`).
 */
export function notedTextsPath(pinDir: string): string {
  return `${appliedPath(pinDir)}.texts`;
}

/** Opens the lock file of the datapath at `pinDir`, for locking it many times. */
export function openLockFile(pinDir: string): Deno.FsFile {
  for (;;) {
    // Others may pass through, to the lock of a datapath shared with them.
    Deno.mkdirSync(LOCK_DIR, { recursive: true, mode: 0o711 });
    try {
      return Deno.openSync(lockPath(pinDir), { create: true, write: true, mode: 0o600 });
    } catch (err) {
      // Another datapath's `down` removed the directory in between.
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
}

/** Whether `file` is the lock file at its path, not one `down` removed. */
function isCurrent(pinDir: string, file: Deno.FsFile): boolean {
  try {
    return Deno.statSync(lockPath(pinDir)).ino === file.statSync().ino;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/**
 * Removes the lock file of the datapath at `pinDir` (call it holding the
 * lock) and the notes beside it, and the lock directory if no other
 * datapath has one there.
 */
export function removeLockFile(pinDir: string): void {
  const files = [[appliedPath(pinDir), []], [notedTextsPath(pinDir), []], [lockPath(pinDir), []], [
    LOCK_DIR,
    ["ENOTEMPTY"],
  ]];
  for (const [path, ignore] of files as [string, string[]][]) {
    try {
      Deno.removeSync(path);
    } catch (err) {
      const code = (err as { code?: string }).code ?? "";
      if (!(err instanceof Deno.errors.NotFound) && !ignore.includes(code)) {
        throw err;
      }
    }
  }
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
    for (let given = file;; given = undefined) {
      const f = given ?? openLockFile(pinDir);
      try {
        f.lockSync(true);
        if (isCurrent(pinDir, f)) return new DatapathLock(f, !given);
        f.unlockSync();
      } catch (err) {
        if (!given) f.close();
        throw err;
      }
      if (!given) f.close();
    }
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
