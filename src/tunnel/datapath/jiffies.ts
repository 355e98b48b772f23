/**
 * The line from the kernel's jiffies to its monotonic clock, which lets
 * the datapath stamp a flow's last use without a helper call per packet
 * (bpf/include/clock.h): ns = jiffies64 * nsPerJiffy + base, the start of
 * the jiffy on CLOCK_MONOTONIC.
 *
 * The kernel counts jiffies in ticks of TICK_NSEC on CLOCK_MONOTONIC from
 * a start fixed at boot (tick_do_update_jiffies64): the line holds as long
 * as the machine runs. User space cannot read jiffies, so clock.bpf.c
 * reads both clocks at once, run by BPF_PROG_TEST_RUN over a few ticks.
 * The tick's length is the median step of the coarse clock, which moves
 * by a tick's length at each tick however late it is read, rounded to a HZ
 * that Linux offers; the base is the earliest a jiffy was seen to start on
 * CLOCK_MONOTONIC, late by the tick's own delay (microseconds) and by how
 * long after it the probe first ran. A stamp so made is never
 * after the packet and at most one jiffy before it, as the coarse clock
 * (CLOCK_MONOTONIC_COARSE) would have been.
 *
 * @module
 */

import clockObject from "../../../bpf/build/clock.bpf.o" with { type: "bytes" };
import { BpfObject } from "../../bpf/object.ts";
import { testRun } from "../../bpf/test_run.ts";

/** The kernel's jiffies on its monotonic clock. */
export interface JiffyClock {
  /** The kernel's HZ: jiffies per second. */
  hz: number;
  /** TICK_NSEC: the nanoseconds one jiffy stands for. */
  nsPerJiffy: bigint;
  /** CLOCK_MONOTONIC at jiffy 0, modulo 2^64 (jiffies start near 2^32). */
  base: bigint;
}

/** Every HZ a Linux architecture offers (kernel/Kconfig.hz and the arches' own). */
const HZ_CHOICES = [24, 48, 100, 128, 200, 250, 256, 300, 500, 1000, 1024];
/** Coarse clock steps to take the median of. */
const STEPS = 3;
/** Give up after this long (a stalled tick); the datapath then reads the helper. */
const GIVE_UP_MS = 500;

let measured: JiffyClock | null | undefined;

/**
 * The line for this boot, measured once per process; null when it cannot
 * be (a kernel without bpf_jiffies64, or ticks too irregular to find HZ):
 * the datapath then stamps with the clock helper.
 */
export function jiffyClock(): JiffyClock | null {
  if (measured === undefined) measured = measure();
  return measured;
}

/** TICK_NSEC for `hz`, as the kernel rounds it. */
function tickNs(hz: number): bigint {
  return (1_000_000_000n + BigInt(hz >> 1)) / BigInt(hz);
}

function measure(): JiffyClock | null {
  let read: Samples;
  try {
    read = samples();
  } catch {
    return null;
  }
  if (read.steps.length < STEPS) return null;
  const step = read.steps.sort((a, b) => a - b)[read.steps.length >> 1];
  const hz = HZ_CHOICES.reduce((a, b) =>
    Math.abs(1e9 / b - step) < Math.abs(1e9 / a - step) ? b : a
  );
  const nsPerJiffy = tickNs(hz);
  if (Math.abs(Number(nsPerJiffy) - step) > step * 0.01) return null;
  return { hz, nsPerJiffy, base: BigInt.asUintN(64, read.base(nsPerJiffy)) };
}

/** What the probe read. */
interface Samples {
  /** The coarse clock's steps, per jiffy that passed with them. */
  steps: number[];
  /** The earliest start of a jiffy seen, for a jiffy `nsPerJiffy` long. */
  base(nsPerJiffy: bigint): bigint;
}

/**
 * Reads the clocks until the coarse clock has stepped STEPS times with
 * jiffies. (A read between a tick's two updates has the new jiffies and
 * the old coarse time: the steps on either side of it are left out.)
 */
function samples(): Samples {
  using obj = BpfObject.openMemory(clockObject, "warren_clock");
  obj.load();
  using probe = obj.program("wr_clock_probe");
  const steps: number[] = [];
  const starts: [bigint, bigint][] = [];
  const data = new Uint8Array(24);
  const end = Date.now() + GIVE_UP_MS;
  let last: bigint[] | undefined;
  while (steps.length < STEPS && Date.now() < end) {
    const out = new DataView(testRun(probe, { data, dataOutSize: 24 }).data.buffer);
    const now = [0, 8, 16].map((at) => out.getBigUint64(at, true));
    const [j, t, c] = now;
    if (last && j !== last[0]) {
      // The first read of a new jiffy: the closest to its start.
      starts.push([j, t]);
      if (c !== last[2]) steps.push(Number(c - last[2]) / Number(j - last[0]));
    }
    last = now;
  }
  return {
    steps,
    base: (nsPerJiffy) =>
      starts.map(([j, t]) => t - j * nsPerJiffy).reduce((a, b) => (b < a ? b : a)),
  };
}
