/**
 * Pin modes. The kernel makes every pin readable and writable by its owner
 * only (0600 less the umask), and warren makes its directories 0700. A
 * datapath can instead be shared with one group: its directories are then
 * set-group-id (so pins made in them later belong to that group too) and
 * group-writable, and every pin made in such a directory is given to the
 * group as well, by {@link followDirMode}.
 *
 * @module
 */

/** The set-group-id bit: a directory's new entries take its group. */
const S_ISGID = 0o2000;

/** The mode of a shared datapath's directories. */
export const SHARED_DIR_MODE = 0o2770;
/** The mode of a shared datapath's pins. */
export const SHARED_PIN_MODE = 0o660;

/** The directory holding `path`. */
export function parentOf(path: string): string {
  return path.replace(/\/+[^/]+\/*$/, "") || "/";
}

/** Whether `dir` is a shared datapath directory. */
export function isSharedDir(dir: string): boolean {
  try {
    return ((Deno.statSync(dir).mode ?? 0) & S_ISGID) !== 0;
  } catch {
    return false;
  }
}

/** Gives the pin just made at `path` to its directory's group, when shared. */
export function followDirMode(path: string): void {
  if (isSharedDir(parentOf(path))) Deno.chmodSync(path, SHARED_PIN_MODE);
}

/** The mode a new directory under `parent` takes: shared if `parent` is. */
export function dirModeUnder(parent: string): number {
  return isSharedDir(parent) ? SHARED_DIR_MODE : 0o700;
}

/**
 * Shares everything under `dir` with group `gid`: directories
 * {@link SHARED_DIR_MODE}, pins {@link SHARED_PIN_MODE}.
 */
export function shareWithGroup(dir: string, gid: number): void {
  Deno.chownSync(dir, null, gid);
  Deno.chmodSync(dir, SHARED_DIR_MODE);
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) shareWithGroup(p, gid);
    else {
      Deno.chownSync(p, null, gid);
      Deno.chmodSync(p, SHARED_PIN_MODE);
    }
  }
}
