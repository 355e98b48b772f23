/**
 * Attaching a program at TC through a TCX link, and asking whether the
 * kernel has TCX at all.
 *
 * Requires at least Linux 6.6. libbpf 1.1 has no `bpf_program__attach_tcx`,
 * so this goes through `bpf_link_create` with the TCX attach types. The
 * program is appended after any already attached; several coexist.
 *
 * @module
 */

import { Errno } from "./errno.ts";
import { BpfError, check } from "./errors.ts";
import { Fd } from "./fd.ts";
import { cstr, libbpf } from "./ffi.ts";
import { AttachType, ProgType } from "./info.ts";
import { createLink, type Link } from "./link.ts";
import { ifname } from "./netif.ts";
import { Program } from "./program.ts";

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

let tcx: boolean | undefined;

/**
 * Whether the kernel has TCX (Linux 6.6+). Probed on first use and
 * remembered, as cilium/ebpf's `haveTCX()` does: see {@link tcxProbeVerdict}.
 * Needs what attaching needs (CAP_BPF and CAP_NET_ADMIN); without them the
 * probe throws rather than guess.
 */
export function haveTcx(): boolean {
  tcx ??= probeTcx();
  return tcx;
}

/** `mov r0, 0; exit`: a program that does nothing, to link. */
const RETURN_ZERO = new Uint8Array([0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0]);

/** An ifindex no device has: the kernel reads the -1 given as 0xffffffff. */
const NO_DEVICE = -1;

function probeTcx(): boolean {
  const fd = check(
    "load a program to probe for TCX",
    () =>
      libbpf().bpf_prog_load(
        ProgType.SCHED_CLS,
        cstr("wr_tcx_probe"),
        cstr("GPL"),
        RETURN_ZERO,
        BigInt(RETURN_ZERO.length / 8),
        null,
      ),
  );
  using probe = new Program("wr_tcx_probe", new Fd(fd));
  try {
    createLink("tcx ingress on no device", probe, NO_DEVICE, AttachType.TCX_INGRESS).close();
    return true;
  } catch (err) {
    if (!(err instanceof BpfError)) throw err;
    return tcxProbeVerdict(err);
  }
}

/**
 * What the TCX probe's failure says: linking at TCX ingress of a device
 * that does not exist fails with ENODEV on a kernel that knows TCX (it got
 * as far as looking the device up) and with EINVAL on one that does not
 * (it refused the attach type). Any other errno is no answer: it is thrown.
 */
export function tcxProbeVerdict(err: BpfError): boolean {
  if (err.errno === Errno.ENODEV) return true;
  if (err.errno === Errno.EINVAL) return false;
  throw err;
}
