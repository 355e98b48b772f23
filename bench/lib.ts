/**
 * What every benchmark section shares: figures, medians over interleaved
 * runs, the machine's description.
 *
 * Every figure is measured beside its baseline in the same run, the two
 * alternating run after run, and reported as medians and their ratio: on a
 * shared, noisy machine an absolute time means little, a ratio measured side
 * by side a good deal more.
 *
 * @module
 */

import type { Program } from "../src/bpf/program.ts";
import { skbContext, testRun } from "../src/bpf/test_run.ts";
import { parseAddr } from "../src/tunnel/addr.ts";
import { emptyMatch } from "../src/tunnel/match.ts";
import { buildPacket, encapsulate } from "../src/tunnel/packet.ts";
import { DEFAULT_DST_PORT, type Protocol } from "../src/tunnel/port.ts";
import type { Lab } from "../src/lab/topology.ts";

/** One figure of `bench/results.json`. */
export interface Figure {
  /** What was measured. */
  name: string;
  /** Its median. */
  value: number;
  /** Its unit. */
  unit: string;
  /** What it is compared with. */
  baseline: string;
  /** The baseline's median, in the same unit. */
  baseline_value: number;
  /** value / baseline_value, or the median of the per-run ratios when {@link Figure.spread} is given. */
  ratio: number;
  /** The per-run ratios' interquartile range, when the ratio is their median. */
  spread?: [number, number];
  /** How many runs each median is over. */
  runs: number;
  /** Whether a lower or a higher ratio is better. */
  better: "lower" | "higher";
  /** The target the issue sets, in words, when there is one. */
  target?: string;
  /** Whether the target is met. */
  met?: boolean;
  /** What limits the figure, when it misses or needs explaining. */
  note?: string;
}

/** The baseline of the ablation builds' figures (bench/kernel.ts, bench/report.ts). */
export const FULL_BUILD = "the full build";

/** The median of `xs`. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The `p`th percentile of `xs` (0 < p <= 100), by nearest rank: a value that occurred. */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)];
}

/** A subject measured against its baseline: see {@link sideBySide}. */
export interface SideBySide {
  /** The subject's median. */
  value: number;
  /** The baseline's median. */
  base: number;
  /** The median of the ratios of each run's pair. */
  ratio: number;
  /** Those ratios' interquartile range. */
  spread: [number, number];
}

/**
 * Runs `subject` and `baseline` alternately `runs` times and returns their
 * medians, and the median and spread of each run's ratio: a pair measured
 * back to back shares the machine's load of the moment, so its ratio
 * varies less than either time.
 */
export async function sideBySide(
  runs: number,
  subject: () => number | Promise<number>,
  baseline: () => number | Promise<number>,
): Promise<SideBySide> {
  const a: number[] = [], b: number[] = [], r: number[] = [];
  for (let i = 0; i < runs; i++) {
    let x: number, y: number;
    // Alternate which goes first, so neither always gets the warm cache.
    if (i % 2) {
      y = await baseline();
      x = await subject();
    } else {
      x = await subject();
      y = await baseline();
    }
    a.push(x);
    b.push(y);
    r.push(x / y);
  }
  return {
    value: median(a),
    base: median(b),
    ratio: median(r),
    spread: [percentile(r, 25), percentile(r, 75)],
  };
}

/** A figure from medians; its ratio is theirs unless the median of per-run ratios is given. */
export function figure(
  f: Omit<Figure, "ratio" | "met"> & {
    ratio?: number;
    check?: (ratio: number, value: number) => boolean;
  },
): Figure {
  const ratio = f.ratio ?? (f.baseline_value ? f.value / f.baseline_value : NaN);
  const { check, spread, ...rest } = f;
  const out: Figure = { ...rest, ratio: round(ratio, 3) };
  out.value = round(f.value, 3);
  out.baseline_value = round(f.baseline_value, 3);
  if (spread) out.spread = [round(spread[0], 3), round(spread[1], 3)];
  if (check) out.met = check(ratio, f.value);
  return out;
}

function round(x: number, digits: number): number {
  const p = 10 ** digits;
  return Math.round(x * p) / p;
}

/** The machine a run happened on. */
export interface Machine {
  /** CPU model. */
  cpu: string;
  /** Online CPUs. */
  cpus: number;
  /** Memory in GiB. */
  memory_gib: number;
  /** `uname -r`. */
  kernel: string;
  /** Deno's version. */
  deno: string;
  /** libbpf's version. */
  libbpf: string;
}

/** Describes this machine. */
export async function machine(libbpfVersion: string): Promise<Machine> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo");
  const meminfo = await Deno.readTextFile("/proc/meminfo");
  return {
    cpu: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? "unknown",
    cpus: navigator.hardwareConcurrency,
    memory_gib: Math.round(Number(/MemTotal:\s*(\d+)/.exec(meminfo)?.[1] ?? 0) / 1048576 * 10) /
      10,
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    libbpf: libbpfVersion,
  };
}

/** Milliseconds `fn` takes. */
export async function timed(fn: () => unknown): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/** ns per packet of `prog`, one fresh skb per run (on device `ifi`), as the kernel timed them. */
export function single(prog: Program, pkt: Uint8Array, ifi: number, n: number): number {
  const ctx = skbContext(ifi);
  let sum = 0;
  // Room for the packet and any outer header: a smaller buffer fails the run (ENOSPC).
  const dataOutSize = pkt.length + 512;
  for (let i = 0; i < n; i++) sum += testRun(prog, { data: pkt, ctx, dataOutSize }).durationNs;
  return sum / n;
}

/** Prints a progress line on stderr. */
export function say(text: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(`bench: ${text}\n`));
}

/**
 * The inner frame every measurement carries: Ethernet, IPv4 and UDP to
 * `dport`, `payload` bytes of payload (64 by default), every checksum
 * right (a bridge with netfilter checks them).
 */
export function innerFrame(dstMac: string, dport = 9, payload = 64): Uint8Array {
  const m = emptyMatch();
  m.key.eth_type = 0x0800;
  m.mask.eth_type = 0xffff;
  m.key.ip_proto = 17;
  m.mask.ip_proto = 0xff;
  m.key.ip_src = parseAddr("10.1.0.2").bytes;
  m.mask.ip_src.fill(0xff, 0, 4);
  m.key.ip_dst = parseAddr("10.1.0.1").bytes;
  m.mask.ip_dst.fill(0xff, 0, 4);
  m.key.tp_dst = dport;
  m.mask.tp_dst = 0xffff;
  m.key.eth_dst = Uint8Array.from(dstMac.split(":"), (h) => parseInt(h, 16));
  m.mask.eth_dst.fill(0xff);
  return buildPacket(m, { payload });
}

/**
 * `inner` as host B's underlay sends it to A's over `proto`, tunnel key 42:
 * the frame the decapsulation figures feed. `dstMac` is A's underlay MAC.
 */
export function tunnelledToA(
  lab: Lab,
  proto: Protocol,
  inner: Uint8Array,
  dstMac: string,
): Uint8Array {
  const [a, b] = lab.hosts;
  return encapsulate(inner, {
    proto,
    dstPort: DEFAULT_DST_PORT[proto],
    src: parseAddr(b.ip).bytes,
    dst: parseAddr(a.ip).bytes,
    v6: false,
    tunId: 42n,
    tos: 0,
    ttl: 64,
    dstMac,
  });
}
