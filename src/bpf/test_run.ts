/**
 * BPF_PROG_TEST_RUN: run a loaded program on a packet built in memory.
 *
 * The kernel runs the program `repeat` times on the same input and reports
 * the return value, the output packet and the mean time per run. XDP's
 * live-frames mode instead hands every run a fresh copy of the packet and
 * carries out the verdict for real (redirects and transmits happen), which
 * makes it a packet generator.
 *
 * @module
 */

import { check } from "./errors.ts";
import { libbpf } from "./ffi.ts";
import { addressOf, opts } from "./opts.ts";
import type { Program } from "./program.ts";

/** `BPF_F_TEST_RUN_ON_CPU`: run on `cpu` instead of the calling CPU. */
const F_TEST_RUN_ON_CPU = 1 << 0;
/** `BPF_F_TEST_XDP_LIVE_FRAMES`: XDP only, requires Linux 5.18. */
const F_TEST_XDP_LIVE_FRAMES = 1 << 1;
/** sizeof(struct bpf_test_run_opts) in libbpf 1.1. */
const OPTS_SIZE = 80;

/** What to run the program on. */
export interface TestRunInput {
  /** The packet (from the Ethernet header). */
  data: Uint8Array;
  /** The context, if any: {@link xdpContext} or {@link skbContext}. */
  ctx?: Uint8Array;
  /** Runs; the reported duration is the mean. Default 1. */
  repeat?: number;
  /** Room for the output packet; default the input size plus 512 bytes. */
  dataOutSize?: number;
  /** Room for the output context; default the input context's size. */
  ctxOutSize?: number;
  /** Run on this CPU (Linux 5.10+; not with live frames). */
  cpu?: number;
  /**
   * XDP live-frames mode (Linux 5.18+): each run gets a fresh frame and the
   * verdict is carried out. No output packet or context is returned.
   */
  liveFrames?: boolean;
  /** Live frames: how many frames the kernel builds at a time (default 64). */
  batchSize?: number;
}

/** What the program did. */
export interface TestRunResult {
  /** The program's return value (XDP_* or TC_ACT_*). */
  retval: number;
  /** The output packet; empty in live-frames mode. */
  data: Uint8Array;
  /** The output context, when a context was given. */
  ctx?: Uint8Array;
  /** Mean duration of one run, in nanoseconds. */
  durationNs: number;
}

/**
 * The `struct xdp_md` fields (linux/bpf.h) a test-run context sets: byte
 * offsets, and the size test-run takes. tests/object_test.ts checks them
 * against the BTF of warren's object.
 */
export const XDP_MD = { size: 24, data: 0, data_end: 4, ingress_ifindex: 12 } as const;

/** The `struct __sk_buff` fields a test-run context sets, as {@link XDP_MD}. */
export const SK_BUFF = { size: 192, mark: 8, ifindex: 40 } as const;

/**
 * A `struct xdp_md` for a packet of `length` bytes arriving on device
 * `ifindex`: test-run needs `data_end`, and the device for redirects and,
 * in live-frames mode, to transmit from. With `metaLength`, the packet's
 * first `metaLength` bytes (a multiple of 4) are its metadata, which an
 * XDP_PASS hands on to TC as `skb->data_meta`.
 */
export function xdpContext(ifindex: number, length: number, metaLength = 0): Uint8Array {
  const ctx = new Uint8Array(XDP_MD.size);
  const v = new DataView(ctx.buffer);
  v.setUint32(XDP_MD.data, metaLength, true);
  v.setUint32(XDP_MD.data_end, length, true);
  v.setUint32(XDP_MD.ingress_ifindex, ifindex, true);
  return ctx;
}

/** A `struct __sk_buff` for a packet arriving on device `ifindex`, with skb mark `mark`. */
export function skbContext(ifindex: number, mark = 0): Uint8Array {
  const ctx = new Uint8Array(SK_BUFF.size);
  const v = new DataView(ctx.buffer);
  v.setUint32(SK_BUFF.mark, mark, true);
  v.setUint32(SK_BUFF.ifindex, ifindex, true);
  return ctx;
}

function build(input: TestRunInput) {
  const dataIn = new Uint8Array(input.data);
  const live = input.liveFrames ?? false;
  const dataOut = new Uint8Array(live ? 0 : (input.dataOutSize ?? dataIn.length + 512));
  const ctxIn = input.ctx ? new Uint8Array(input.ctx) : undefined;
  const ctxOut = ctxIn && !live ? new Uint8Array(input.ctxOutSize ?? ctxIn.length) : undefined;
  let flags = 0;
  if (live) flags |= F_TEST_XDP_LIVE_FRAMES;
  if (input.cpu !== undefined) flags |= F_TEST_RUN_ON_CPU;
  const o = opts(
    OPTS_SIZE,
    [8, "ptr", addressOf(dataIn)],
    [16, "ptr", live ? null : addressOf(dataOut)],
    [24, "u32", dataIn.length],
    [28, "u32", dataOut.length],
    [32, "ptr", ctxIn ? addressOf(ctxIn) : null],
    [40, "ptr", ctxOut ? addressOf(ctxOut) : null],
    [48, "u32", ctxIn?.length ?? 0],
    [52, "u32", ctxOut?.length ?? 0],
    [60, "i32", input.repeat ?? 1],
    [68, "u32", flags],
    [72, "u32", input.cpu ?? 0],
    [76, "u32", live ? (input.batchSize ?? 64) : 0],
  );
  // Keep the buffers reachable until the call returns.
  return { o, keep: [dataIn, dataOut, ctxIn, ctxOut] as const };
}

function result(o: Uint8Array<ArrayBuffer>, keep: ReturnType<typeof build>["keep"]): TestRunResult {
  const v = new DataView(o.buffer);
  const [, dataOut, , ctxOut] = keep;
  return {
    retval: v.getUint32(56, true),
    data: dataOut.slice(0, v.getUint32(28, true)),
    ctx: ctxOut?.slice(0, v.getUint32(52, true)),
    durationNs: v.getUint32(64, true),
  };
}

/** Runs `program` on `input` and returns what it did. */
export function testRun(program: Program, input: TestRunInput): TestRunResult {
  const { o, keep } = build(input);
  check(`test-run program "${program.name}"`, () => libbpf().bpf_prog_test_run_opts(program.fd, o));
  return result(o, keep);
}

/**
 * Same as {@link testRun}, off the JavaScript thread, for long runs (a
 * million repeats) that should not block timers or other work.
 */
export async function testRunAsync(program: Program, input: TestRunInput): Promise<TestRunResult> {
  const { o, keep } = build(input);
  const ret = await libbpf().bpf_prog_test_run_opts_async(program.fd, o);
  check(`test-run program "${program.name}"`, () => ret);
  return result(o, keep);
}
