/**
 * Attaching a program at TC the classic way: a direct-action filter on a
 * clsact qdisc, over netlink (libbpf's `bpf_tc_*`). For kernels without TCX
 * (before 6.6). The filter outlives the process by itself; no pin needed.
 *
 * @module
 */

import { Errno } from "./errno.ts";
import { BpfError, check } from "./errors.ts";
import { libbpf } from "./ffi.ts";
import { ifname } from "./netif.ts";
import { opts } from "./opts.ts";
import type { Program } from "./program.ts";
import type { Direction } from "./tcx.ts";

/** `BPF_TC_INGRESS`, `BPF_TC_EGRESS` (`enum bpf_tc_attach_point`). */
const ATTACH_POINT: Record<Direction, number> = { ingress: 1, egress: 2 };
/** `BPF_TC_F_REPLACE`. */
const F_REPLACE = 1;
const { EEXIST, EINVAL, ENOENT } = Errno;

/** Where warren's filter sits in the qdisc's filter list by default. */
const DEFAULT_HANDLE = 0x57;
const DEFAULT_PRIORITY = 1;

/** Options of {@link attachClsact}. */
export interface ClsactOptions {
  /** Filter handle; default 0x57. */
  handle?: number;
  /** Filter priority; default 1. */
  priority?: number;
}

function hook(ifindex: number, direction: Direction): Uint8Array<ArrayBuffer> {
  return opts(24, [8, "i32", ifindex], [12, "u32", ATTACH_POINT[direction]]);
}

/** ClsactFilter is one BPF filter on a device's clsact qdisc. */
export class ClsactFilter {
  /** The device. */
  readonly ifindex: number;
  /** Ingress or egress. */
  readonly direction: Direction;
  /** The filter handle. */
  readonly handle: number;
  /** The filter priority. */
  readonly priority: number;
  /** Whether attaching created the clsact qdisc (so detaching may remove it). */
  readonly createdQdisc: boolean;

  /** Describes a filter (warren's handle and priority by default); {@link attachClsact} creates one. */
  constructor(
    ifindex: number,
    direction: Direction,
    handle = DEFAULT_HANDLE,
    priority = DEFAULT_PRIORITY,
    createdQdisc = false,
  ) {
    this.ifindex = ifindex;
    this.direction = direction;
    this.handle = handle;
    this.priority = priority;
    this.createdQdisc = createdQdisc;
  }

  /** A label for messages. */
  get label(): string {
    return `clsact ${this.direction} on ${ifname(this.ifindex) ?? `ifindex ${this.ifindex}`}`;
  }

  /** The id of the program the filter runs, or undefined if it is gone. */
  programId(): number | undefined {
    const o = opts(32, [20, "u32", this.handle], [24, "u32", this.priority]);
    const ret = libbpf().bpf_tc_query(hook(this.ifindex, this.direction), o);
    if (ret === -ENOENT) return undefined;
    check(`query ${this.label}`, () => ret);
    return new DataView(o.buffer).getUint32(16, true);
  }

  /** Replaces the filter's program; netlink swaps it in one message. */
  update(program: Program): void {
    const o = opts(
      32,
      [8, "i32", program.fd],
      [12, "u32", F_REPLACE],
      [20, "u32", this.handle],
      [24, "u32", this.priority],
    );
    check(
      `replace the program of ${this.label}`,
      () => libbpf().bpf_tc_attach(hook(this.ifindex, this.direction), o),
    );
  }

  /** Removes the filter (the qdisc stays; see {@link removeClsactQdisc}). */
  detach(): void {
    const o = opts(32, [20, "u32", this.handle], [24, "u32", this.priority]);
    const ret = libbpf().bpf_tc_detach(hook(this.ifindex, this.direction), o);
    if (ret !== -ENOENT) check(`detach ${this.label}`, () => ret);
  }
}

/** Attaches `program` as a direct-action filter, creating clsact if needed. */
export function attachClsact(
  program: Program,
  ifindex: number,
  direction: Direction,
  options: ClsactOptions = {},
): ClsactFilter {
  const h = hook(ifindex, direction);
  const created = libbpf().bpf_tc_hook_create(h);
  if (created < 0 && created !== -EEXIST) {
    throw new BpfError(`create clsact qdisc on ${ifname(ifindex) ?? ifindex}`, -created);
  }
  const filter = new ClsactFilter(
    ifindex,
    direction,
    options.handle ?? DEFAULT_HANDLE,
    options.priority ?? DEFAULT_PRIORITY,
    created === 0,
  );
  const o = opts(32, [8, "i32", program.fd], [20, "u32", filter.handle], [
    24,
    "u32",
    filter.priority,
  ]);
  check(`attach "${program.name}" as ${filter.label}`, () => libbpf().bpf_tc_attach(h, o));
  return filter;
}

/** Deletes the clsact qdisc of `ifindex` with every filter on it. */
export function removeClsactQdisc(ifindex: number): void {
  // Both attach points together name the qdisc itself.
  const h = opts(24, [8, "i32", ifindex], [12, "u32", ATTACH_POINT.ingress | ATTACH_POINT.egress]);
  const ret = libbpf().bpf_tc_hook_destroy(h);
  if (ret !== -ENOENT && ret !== -EINVAL) {
    check(`remove clsact qdisc from ifindex ${ifindex}`, () => ret);
  }
}
