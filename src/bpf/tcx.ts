/**
 * Attaching a program at TC through a TCX link.
 *
 * Requires at least Linux 6.6. libbpf 1.1 has no `bpf_program__attach_tcx`,
 * so this goes through `bpf_link_create` with the TCX attach types. The
 * program is appended after any already attached; several coexist.
 *
 * @module
 */

import { AttachType } from "./info.ts";
import { createLink, type Link } from "./link.ts";
import { ifname } from "./netif.ts";
import type { Program } from "./program.ts";

/** Which way the packets go through the device. */
export type Direction = "ingress" | "egress";

/** Attaches `program` at TC `direction` of device `ifindex`. */
export function attachTcx(program: Program, ifindex: number, direction: Direction): Link {
  const type = direction === "ingress" ? AttachType.TCX_INGRESS : AttachType.TCX_EGRESS;
  return createLink(
    `tcx ${direction} on ${ifname(ifindex) ?? `ifindex ${ifindex}`}`,
    program,
    ifindex,
    type,
  );
}
