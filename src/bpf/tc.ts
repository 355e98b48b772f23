/**
 * Attaching at TC the best way the kernel offers: a TCX link where the kernel
 * has TCX (6.6+), a clsact filter otherwise.
 *
 * @module
 */

import { attachClsact, ClsactFilter, type ClsactOptions } from "./clsact.ts";
import { Errno } from "./errno.ts";
import { BpfError } from "./errors.ts";
import type { Link } from "./link.ts";
import type { Program } from "./program.ts";
import { attachTcx, type Direction } from "./tcx.ts";

/** How to attach at TC. */
export type TcMethod = "auto" | "tcx" | "clsact";

/** A program attached at TC, by either method. */
export type TcAttachment = { kind: "tcx"; link: Link } | { kind: "clsact"; filter: ClsactFilter };

const { EINVAL } = Errno;

/**
 * Attaches `program` at TC `direction` of `ifindex`. With `auto` (default),
 * TCX is tried first and clsact used when the kernel does not know TCX.
 */
export function attachTc(
  program: Program,
  ifindex: number,
  direction: Direction,
  method: TcMethod = "auto",
  clsact: ClsactOptions = {},
): TcAttachment {
  if (method !== "clsact") {
    try {
      return { kind: "tcx", link: attachTcx(program, ifindex, direction) };
    } catch (err) {
      // Kernels before 6.6 reject the unknown attach type with EINVAL.
      if (method === "tcx" || !(err instanceof BpfError) || err.errno !== EINVAL) throw err;
    }
  }
  return { kind: "clsact", filter: attachClsact(program, ifindex, direction, clsact) };
}

/** Replaces the program of a TC attachment atomically. */
export function updateTc(attachment: TcAttachment, program: Program): void {
  if (attachment.kind === "tcx") attachment.link.update(program);
  else attachment.filter.update(program);
}

/** Detaches a TC attachment. */
export function detachTc(attachment: TcAttachment): void {
  if (attachment.kind === "tcx") attachment.link.detach();
  else attachment.filter.detach();
}

export { ClsactFilter };
