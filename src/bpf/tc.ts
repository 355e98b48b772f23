/**
 * Attaching at TC the best way the kernel offers: a TCX link where the kernel
 * has TCX (6.6+), a clsact filter otherwise.
 *
 * @module
 */

import { attachClsact, ClsactFilter, type ClsactOptions } from "./clsact.ts";
import type { Link } from "./link.ts";
import type { Program } from "./program.ts";
import { attachTcx, type Direction, haveTcx } from "./tcx.ts";

/** How to attach at TC. */
export type TcMethod = "auto" | "tcx" | "clsact";

/** A program attached at TC, by either method. */
export type TcAttachment = { kind: "tcx"; link: Link } | { kind: "clsact"; filter: ClsactFilter };

/** What `method` comes to on this kernel: `auto` is TCX where the kernel has it. */
export function tcMethod(method: TcMethod): "tcx" | "clsact" {
  if (method !== "auto") return method;
  return haveTcx() ? "tcx" : "clsact";
}

/**
 * Attaches `program` at TC `direction` of `ifindex`. With `auto` (default),
 * TCX where the kernel has it ({@link haveTcx}), clsact otherwise.
 */
export function attachTc(
  program: Program,
  ifindex: number,
  direction: Direction,
  method: TcMethod = "auto",
  clsact: ClsactOptions = {},
): TcAttachment {
  if (tcMethod(method) === "tcx") {
    return { kind: "tcx", link: attachTcx(program, ifindex, direction) };
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
