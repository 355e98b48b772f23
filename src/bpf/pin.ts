/**
 * Pins: BPF objects given a path on a bpffs, so they outlive the process
 * that made them and other processes can open them again.
 *
 * @module
 */

import { check, NotFoundError } from "./errors.ts";
import { dirModeUnder, parentOf } from "./pin_mode.ts";
import { Fd } from "./fd.ts";
import { cstr, libbpf } from "./ffi.ts";
import { objectKind } from "./info.ts";
import { Link } from "./link.ts";
import { BpfMap } from "./map.ts";
import { Program } from "./program.ts";

/** The mount point of the bpffs holding `path`, or undefined if none does. */
export function bpffsMountOf(path: string): string | undefined {
  let best: string | undefined;
  for (const line of Deno.readTextFileSync("/proc/self/mounts").split("\n")) {
    const [, mountPoint, fsType] = line.split(" ");
    if (fsType !== "bpf" || !mountPoint) continue;
    const prefix = mountPoint.endsWith("/") ? mountPoint : `${mountPoint}/`;
    if (
      (path === mountPoint || path.startsWith(prefix)) && (!best || mountPoint.length > best.length)
    ) {
      best = mountPoint;
    }
  }
  return best;
}

/**
 * Makes sure `dir` exists on a bpffs. A directory made here is owner-only
 * (0700), or shared as its parent is (see pin_mode.ts); one that exists
 * keeps its mode. Throws a clear error when no bpffs is mounted there.
 */
export function ensurePinDir(dir: string): void {
  if (!bpffsMountOf(dir)) {
    throw new NotFoundError(
      `${dir} is not on a bpffs; mount one with: mount -t bpf bpf /sys/fs/bpf ` +
        `(under "ip netns exec", /sys is remounted and hides it: use warren --netns NAME instead)`,
    );
  }
  if (!isPinned(dir)) makePinDir(dir);
}

/** Makes `dir` and what is missing above it, each with the mode it takes. */
function makePinDir(dir: string): void {
  const parent = parentOf(dir);
  if (!isPinned(parent)) makePinDir(parent);
  const mode = dirModeUnder(parent);
  Deno.mkdirSync(dir, { mode });
  // mkdir's mode passes through the umask; set it exactly.
  Deno.chmodSync(dir, mode);
}

/** Whether something is pinned at `path`. */
export function isPinned(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Removes the pin at `path`; false when there was none. */
export function unpin(path: string): boolean {
  try {
    Deno.removeSync(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Opens whatever is pinned at `path`: a program, a map or a link. */
export function openPinned(path: string): Program | BpfMap | Link {
  const fd = new Fd(check(`open pin ${path}`, () => libbpf().bpf_obj_get(cstr(path))));
  try {
    switch (objectKind(fd.value)) {
      case "program":
        return Program.fromPin(path);
      case "map":
        return BpfMap.fromPin(path);
      case "link":
        return Link.fromPin(path);
      default:
        throw new NotFoundError(`${path} is not a BPF program, map or link`);
    }
  } finally {
    fd.close();
  }
}
