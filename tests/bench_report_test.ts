/**
 * The bench's report: a run of some sections replaces only their figures
 * and keeps every other section's, with the run that measured it.
 */

import { assertEquals } from "./helpers/assert.ts";
import { merge, type Recorded, type Results, type Run } from "../bench/report.ts";
import type { Machine } from "../bench/lib.ts";

const machine: Machine = {
  cpu: "test",
  cpus: 2,
  memory_gib: 1,
  kernel: "6.1",
  deno: "2.9.6",
  libbpf: "1.1",
};
const ORDER = ["kernel", "live", "control", "fleet"];

const run = (command: string, sections: string[]): Run => ({
  command,
  date: "2026-01-01T00:00:00.000Z",
  seconds: 1,
  sections,
  machine,
});

const fig = (section: string, name: string, value = 1): Recorded => ({
  section,
  name,
  value,
  unit: "ms",
  baseline: "b",
  baseline_value: 1,
  ratio: value,
  runs: 1,
  better: "lower",
});

Deno.test("bench report: a partial run replaces its sections' figures and keeps the others", () => {
  const full: Results = merge(undefined, run("deno task bench", ["kernel", "live", "control"]), [
    fig("kernel", "k1"),
    fig("kernel", "k2"),
    fig("live", "l1"),
    fig("control", "c1"),
  ], ORDER);

  // A new section: everything else stays, the new figures go in their place.
  const withFleet = merge(
    full,
    run("deno task bench --only fleet", ["fleet"]),
    [fig("fleet", "f1"), fig("fleet", "f2")],
    ORDER,
  );
  assertEquals(withFleet.results.map((f) => f.name), ["k1", "k2", "l1", "c1", "f1", "f2"]);
  assertEquals(withFleet.runs.map((r) => [r.command, r.sections]), [
    ["deno task bench", ["kernel", "live", "control"]],
    ["deno task bench --only fleet", ["fleet"]],
  ]);

  // Rerunning a section drops all its old figures, even ones no longer measured.
  const again = merge(
    withFleet,
    run("deno task bench --only kernel", ["kernel"]),
    [fig("kernel", "k1", 2)],
    ORDER,
  );
  assertEquals(again.results.map((f) => [f.name, f.value]), [
    ["k1", 2],
    ["l1", 1],
    ["c1", 1],
    ["f1", 1],
    ["f2", 1],
  ]);
  assertEquals(again.runs.map((r) => [r.command, r.sections]), [
    ["deno task bench", ["live", "control"]],
    ["deno task bench --only fleet", ["fleet"]],
    ["deno task bench --only kernel", ["kernel"]],
  ]);

  // A run of everything leaves no older run behind.
  const all = merge(again, run("deno task bench", ORDER), [fig("live", "l2")], ORDER);
  assertEquals(all.runs.map((r) => r.command), ["deno task bench"]);
  assertEquals(all.results.map((f) => f.name), ["l2"]);
});
