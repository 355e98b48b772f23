/**
 * `deno task bench [--quick] [--only SECTION,…]`: warren measured against
 * baselines in the same run, every figure a ratio of medians.
 *
 * Sections: kernel (per-packet cost through test-run), live (forwarding
 * through veths from a live-frames generator, against the kernel's vxlan
 * device), tcp (iperf3 through the tunnel, against the kernel's vxlan
 * devices), control (installs, a million flows applied and dumped, against
 * bpftool and raw batch writes), memory (peak resident memory and kernel
 * memory per flow).
 *
 * Writes the table to the terminal, `bench/results.json`, and
 * `docs/benchmarks.md`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { libbpf } from "../src/bpf/ffi.ts";
import { kernelCosts } from "./kernel.ts";
import { liveForwarding } from "./live.ts";
import { tcpThroughput } from "./tcp.ts";
import { controlPlane } from "./control.ts";
import { type Figure, machine, say } from "./lib.ts";
import { writeReport } from "./report.ts";

const SECTIONS = ["kernel", "live", "tcp", "control"] as const;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  console.log(`deno task bench [--quick] [--only ${SECTIONS.join(",")}]

  --quick   a first look in under two minutes: fewer repeats and runs, smaller tables
  --only    run only these sections`);
  Deno.exit(0);
}
if (Deno.uid() !== 0) {
  console.error("bench: needs root (network namespaces, BPF programs)");
  Deno.exit(1);
}
const quick = values.quick;
const only = new Set(values.only ? values.only.split(",") : SECTIONS);
for (const s of only) {
  if (!SECTIONS.includes(s as typeof SECTIONS[number])) {
    console.error(`bench: no section "${s}" (${SECTIONS.join(", ")})`);
    Deno.exit(2);
  }
}

const started = performance.now();
const figures: Figure[] = [];
if (only.has("kernel")) {
  figures.push(
    ...await kernelCosts({
      repeat: quick ? 200_000 : 1_000_000,
      single: quick ? 20_000 : 200_000,
      runs: quick ? 3 : 5,
      flowCounts: quick ? [1, 1000] : [1, 1000, 100_000],
    }),
  );
}
if (only.has("live")) {
  figures.push(
    ...await liveForwarding({ frames: quick ? 500_000 : 2_000_000, runs: quick ? 3 : 5 }),
  );
}
if (only.has("tcp")) {
  figures.push(...await tcpThroughput({ seconds: quick ? 2 : 5, runs: quick ? 1 : 3 }));
}
if (only.has("control")) {
  figures.push(
    ...await controlPlane({
      singles: quick ? 5_000 : 50_000,
      bpftool: quick ? 30 : 200,
      flows: quick ? 100_000 : 1_000_000,
      runs: quick ? 1 : 3,
    }),
  );
}
const seconds = (performance.now() - started) / 1000;
say(`done in ${seconds.toFixed(0)} s`);

const lib = `${libbpf().libbpf_major_version()}.${libbpf().libbpf_minor_version()}`;
await writeReport({
  figures,
  machine: await machine(lib),
  command: `deno task bench${quick ? " --quick" : ""}${
    values.only ? ` --only ${values.only}` : ""
  }`,
  seconds,
  date: new Date().toISOString(),
});
