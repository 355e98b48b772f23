/**
 * What the kernel says about a loaded program, map or link
 * (`BPF_OBJ_GET_INFO_BY_FD`), and the kernel's enum values warren names.
 *
 * @module
 */

import { check } from "./errors.ts";
import { libbpf } from "./ffi.ts";

/** `enum bpf_prog_type` values warren meets. */
export const ProgType = {
  XDP: 6,
  SCHED_CLS: 3,
} as const;

/** `enum bpf_map_type` values warren creates or reads. */
export const MapType = {
  HASH: 1,
  ARRAY: 2,
  PROG_ARRAY: 3,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  ARRAY_OF_MAPS: 12,
  HASH_OF_MAPS: 13,
  DEVMAP: 14,
  DEVMAP_HASH: 25,
} as const;

/** `enum bpf_attach_type` values warren attaches with. */
export const AttachType = {
  XDP: 37,
  /** Requires at least Linux 6.6. */
  TCX_INGRESS: 46,
  /** Requires at least Linux 6.6. */
  TCX_EGRESS: 47,
} as const;

/** `enum bpf_link_type` values warren creates. */
export const LinkType = {
  XDP: 6,
  TCX: 11,
} as const;

/** Map types whose values are stored once per possible CPU. */
export const PER_CPU_MAP_TYPES: ReadonlySet<number> = new Set([
  MapType.PERCPU_HASH,
  MapType.PERCPU_ARRAY,
  MapType.LRU_PERCPU_HASH,
]);

/** A loaded program, as the kernel describes it. */
export interface ProgramInfo {
  /** `enum bpf_prog_type`. */
  type: number;
  /** The kernel-wide program id. */
  id: number;
  /** The program tag, hex. */
  tag: string;
  /** The name, truncated by the kernel to 15 bytes. */
  name: string;
  /** BTF object id, 0 without BTF. */
  btfId: number;
  /** Total run time in ns, when `kernel.bpf_stats_enabled` is on. */
  runTimeNs: bigint;
  /** Run count, when `kernel.bpf_stats_enabled` is on. */
  runCount: bigint;
  /** Instructions the verifier processed. */
  verifiedInsns: number;
}

/** A map, as the kernel describes it. */
export interface MapInfo {
  /** `enum bpf_map_type`. */
  type: number;
  /** The kernel-wide map id. */
  id: number;
  /** Key size in bytes. */
  keySize: number;
  /** Value size in bytes (per CPU, for per-CPU maps). */
  valueSize: number;
  /** Capacity. */
  maxEntries: number;
  /** `BPF_F_*` creation flags. */
  flags: number;
  /** The name, truncated by the kernel to 15 bytes. */
  name: string;
  /** BTF object id, 0 without BTF. */
  btfId: number;
  /** BTF type id of the key, 0 without BTF. */
  btfKeyTypeId: number;
  /** BTF type id of the value, 0 without BTF. */
  btfValueTypeId: number;
}

/** A link, as the kernel describes it. */
export interface LinkInfo {
  /** `enum bpf_link_type`. */
  type: number;
  /** The kernel-wide link id. */
  id: number;
  /** The program the link runs. */
  progId: number;
  /** The device, for XDP and TCX links; 0 otherwise. */
  ifindex: number;
  /** The attach type, for TCX links; 0 otherwise. */
  attachType: number;
}

const decoder = new TextDecoder();

function cName(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return decoder.decode(end < 0 ? bytes : bytes.subarray(0, end));
}

function infoBytes(fd: number, size: number, what: string): DataView {
  const info = new Uint8Array(size);
  const len = new Uint32Array([size]);
  check(
    `read ${what} info`,
    () => libbpf().bpf_obj_get_info_by_fd(fd, info, new Uint8Array(len.buffer)),
  );
  return new DataView(info.buffer);
}

/** Describes the program behind `fd`. */
export function programInfo(fd: number): ProgramInfo {
  const v = infoBytes(fd, 232, "program");
  const tag = new Uint8Array(v.buffer, 8, 8);
  return {
    type: v.getUint32(0, true),
    id: v.getUint32(4, true),
    tag: Array.from(tag, (b) => b.toString(16).padStart(2, "0")).join(""),
    name: cName(new Uint8Array(v.buffer, 64, 16)),
    btfId: v.getUint32(128, true),
    runTimeNs: v.getBigUint64(192, true),
    runCount: v.getBigUint64(200, true),
    verifiedInsns: v.getUint32(216, true),
  };
}

/** Describes the map behind `fd`. */
export function mapInfo(fd: number): MapInfo {
  const v = infoBytes(fd, 88, "map");
  return {
    type: v.getUint32(0, true),
    id: v.getUint32(4, true),
    keySize: v.getUint32(8, true),
    valueSize: v.getUint32(12, true),
    maxEntries: v.getUint32(16, true),
    flags: v.getUint32(20, true),
    name: cName(new Uint8Array(v.buffer, 24, 16)),
    btfId: v.getUint32(64, true),
    btfKeyTypeId: v.getUint32(68, true),
    btfValueTypeId: v.getUint32(72, true),
  };
}

/** Describes the link behind `fd`. */
export function linkInfo(fd: number): LinkInfo {
  const v = infoBytes(fd, 48, "link");
  const type = v.getUint32(0, true);
  const attached = type === LinkType.XDP || type === LinkType.TCX;
  return {
    type,
    id: v.getUint32(4, true),
    progId: v.getUint32(8, true),
    ifindex: attached ? v.getUint32(16, true) : 0,
    attachType: type === LinkType.TCX ? v.getUint32(20, true) : 0,
  };
}

/** The kind of BPF object a file descriptor refers to, from its fdinfo. */
export function objectKind(fd: number): "program" | "map" | "link" | "unknown" {
  const text = Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`);
  if (/^link_type:/m.test(text)) return "link";
  if (/^prog_type:/m.test(text)) return "program";
  if (/^map_type:/m.test(text)) return "map";
  return "unknown";
}
