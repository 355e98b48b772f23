/**
 * `deno task bench [--quick] [--only SECTION,…]`: warren measured against
 * baselines in the same run, every figure a ratio of medians.
 *
 * Sections: kernel (per-packet cost through test-run), ablation (the same
 * with one cost item left out of warren's build at a time), live (forwarding
 * through veths from a live-frames generator, against the kernel's vxlan
 * device), replication (a broadcast to a group's buckets, against the
 * kernel's vxlan device flooding to an all-zeros FDB list), tcp (iperf3 through the tunnel, against the kernel's vxlan
 * devices), control (installs, a million flows applied and dumped, against
 * bpftool and raw batch writes; peak resident memory and kernel memory per
 * flow), fleet (a thousand simulated hosts in etcd and three real agents:
 * joins against etcd's own latency, steady-state writes, a relist, memory).
 *
 * Prints the table, and merges the figures of the sections run into
 * `bench/results.json` and `docs/benchmarks.md` (see `report.ts`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { libbpf } from "../src/bpf/ffi.ts";
import { ablationCosts, kernelCosts } from "./kernel.ts";
import { liveForwarding } from "./live.ts";
import { tcpThroughput } from "./tcp.ts";
import { controlPlane } from "./control.ts";
import { fleetScale } from "./fleet.ts";
import { replicationCosts } from "./replication.ts";
import { type Figure, machine, say } from "./lib.ts";
import { writeReport } from "./report.ts";

/** Every section, in the order they run and are reported, at full size or `--quick`. */
const SECTIONS: Record<string, (quick: boolean) => Promise<Figure[]>> = {
  kernel: (quick) =>
    kernelCosts({
      repeat: quick ? 40_000 : 200_000,
      rounds: quick ? 15 : 25,
      single: quick ? 20_000 : 200_000,
      runs: quick ? 3 : 5,
      flowCounts: quick ? [1, 1000] : [1, 1000, 100_000],
    }),
  ablation: (quick) =>
    ablationCosts({
      repeat: quick ? 40_000 : 200_000,
      rounds: quick ? 15 : 25,
      single: quick ? 20_000 : 200_000,
      runs: quick ? 3 : 5,
    }),
  live: (quick) => liveForwarding({ frames: quick ? 500_000 : 2_000_000, runs: quick ? 3 : 5 }),
  replication: (quick) =>
    replicationCosts({ single: quick ? 200 : 2000, runs: quick ? 3 : 5, fanouts: [16, 1024] }),
  tcp: (quick) => tcpThroughput({ seconds: quick ? 2 : 5, runs: quick ? 1 : 3 }),
  control: (quick) =>
    controlPlane({
      singles: quick ? 5_000 : 50_000,
      bpftool: quick ? 30 : 200,
      flows: quick ? 100_000 : 1_000_000,
      runs: quick ? 1 : 3,
    }),
  fleet: (quick) =>
    fleetScale({
      hosts: quick ? 200 : 1000,
      endpointsPerHost: 24,
      networks: 8,
      watchers: quick ? 10 : 50,
      joins: quick ? 20 : 100,
      idleSeconds: quick ? 5 : 20,
      relistRuns: quick ? 1 : 5,
    }),
};
const NAMES = Object.keys(SECTIONS);

const { values } = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(`deno task bench [--quick] [--only ${NAMES.join(",")}]

  --quick   a first look in a few minutes: fewer repeats and runs, smaller tables; written to
            bench/out/results.json only
  --only    run only these sections; the others keep their figures from earlier runs`);
  Deno.exit(0);
}
if (Deno.uid() !== 0) {
  console.error("bench: needs root (network namespaces, BPF programs)");
  Deno.exit(1);
}
const quick = values.quick;
const only = values.only ? values.only.split(",") : NAMES;
for (const s of only) {
  if (!NAMES.includes(s)) {
    console.error(`bench: no section "${s}" (${NAMES.join(", ")})`);
    Deno.exit(2);
  }
}
const sections = NAMES.filter((s) => only.includes(s));
/** The 1-minute load average: what else kept the CPUs busy during the run. */
const loadAverage = () => Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
const loadAtStart = loadAverage();

const started = performance.now();
const figures = [];
for (const section of sections) {
  for (const f of await SECTIONS[section](quick)) figures.push({ section, ...f });
}
const seconds = (performance.now() - started) / 1000;
say(`done in ${seconds.toFixed(0)} s`);

const lib = `${libbpf().libbpf_major_version()}.${libbpf().libbpf_minor_version()}`;
await writeReport(
  {
    command: `deno task bench${quick ? " --quick" : ""}${
      values.only ? ` --only ${values.only}` : ""
    }`,
    date: new Date().toISOString(),
    seconds,
    sections,
    machine: await machine(lib),
    load: [loadAtStart, loadAverage()],
  },
  figures,
  NAMES,
  { quick },
);
