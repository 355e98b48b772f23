/**
 * The control plane: flows installed one at a time through the library
 * against a loop of `bpftool map update`; a table of a million flows
 * applied from a stream of specs against raw batch writes of the same
 * entries; ten of one owner's flows replaced in that table against a full
 * apply of it; the table applied again from an unchanged file against its
 * first apply; dumped by `warren flow dump` against `bpftool map dump`;
 * and the memory all that takes, in the process and in the kernel.
 *
 * @module
 */

import { BpfMap } from "../src/bpf/map.ts";
import { MapType } from "../src/bpf/info.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { run } from "../src/lab/run.ts";
import { parseAddr } from "../src/tunnel/addr.ts";
import { emptyKey } from "../src/tunnel/match.ts";
import type { ActionSpec } from "../src/tunnel/flow_actions.ts";
import type { FlowSpec } from "../src/tunnel/flow_syntax.ts";
import { flowEntryCodec, flowIndexKeyCodec } from "../src/maps/layouts.ts";
import { notedTextsPath } from "../src/tunnel/lock.ts";
import { type Figure, figure, median, say, timed } from "./lib.ts";

/** How much work a run does. */
export interface ControlOptions {
  /** Flows installed one at a time. */
  singles: number;
  /** bpftool invocations in the baseline loop. */
  bpftool: number;
  /** The big table's size. */
  flows: number;
  /** Runs per median. */
  runs: number;
}

const CLI = new URL("../src/cli/main.ts", import.meta.url).pathname;

/** The mask of every flow of the big table: in_port, ip, nw_dst/32. */
const MASK = (() => {
  const m = emptyKey();
  m.in_port = 0xffff;
  m.eth_type = 0xffff;
  m.ip_dst.fill(0xff, 0, 4);
  return m;
})();

/**
 * Flow i of the big table: one /32 destination, one of 1000 remotes. Its
 * mask is shared, as a program making a million flows of one shape would
 * share it (and as the parser shares action lists): a key of byte views is
 * made per flow, not two.
 */
function spec(i: number, inPort: number, actions: ActionSpec[][]): FlowSpec {
  const key = emptyKey();
  key.in_port = inPort;
  key.eth_type = 0x0800;
  key.ip_dst[0] = 10;
  key.ip_dst[1] = (i >> 16) & 255;
  key.ip_dst[2] = (i >> 8) & 255;
  key.ip_dst[3] = i & 255;
  return {
    priority: 10,
    cookie: 0n,
    match: { key, mask: MASK },
    actions: actions[i % actions.length],
  };
}

/** A thousand remotes' action lists, shared (frozen) as the parser shares them. */
function remotes(): ActionSpec[][] {
  return Array.from({ length: 1000 }, (_, r) =>
    Object.freeze([
      Object.freeze({
        type: "set_tunnel",
        id: BigInt(r + 1),
        dst: parseAddr(`192.0.${2 + (r >> 8)}.${r & 255}`),
      }),
      Object.freeze({ type: "output", port: "vx0" }),
    ]) as ActionSpec[]);
}

/** Runs `warren args` on host h, peak resident memory polled from /proc. */
async function warrenPeak(h: LabHost, args: string[]): Promise<{ ms: number; peakKiB: number }> {
  const t = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "--netns", h.ns.name, "--pin-dir", h.pinDir, ...args],
    stdout: "null",
    stderr: "null",
  }).spawn();
  let peak = 0;
  const poll = setInterval(() => {
    try {
      const status = Deno.readTextFileSync(`/proc/${child.pid}/status`);
      peak = Math.max(peak, Number(/VmHWM:\s*(\d+)/.exec(status)?.[1] ?? 0));
    } catch { /* gone */ }
  }, 5);
  const s = await child.status;
  clearInterval(poll);
  if (!s.success) throw new Error(`warren ${args.join(" ")} failed`);
  return { ms: performance.now() - t, peakKiB: peak };
}

/** Measures section 4 (and 5, memory); returns its figures. */
export async function controlPlane(o: ControlOptions): Promise<Figure[]> {
  const out: Figure[] = [];
  await using lab = await Lab.create({ ipv6: false });
  const [a] = lab.hosts;
  const maxFlows = Math.ceil((o.flows + o.singles + 1024) / 65536) * 65536;
  await lab.up(a, { maxFlows });
  const actions = remotes();
  let inPort = 0;
  let indexId = 0;
  await lab.datapath(a, async (dp) => {
    await dp.addLocalPort("web", a.workload.port);
    await dp.addTunnelPort("vx0", "vxlan", { remote_ip: "flow", key: "flow" });
    inPort = dp.portNames().number("web")!;
  });

  // ---- One at a time -----------------------------------------------------
  say(`control: ${o.singles} single installs against ${o.bpftool} bpftool updates`);
  const singleRates: number[] = [];
  const sessionRates: number[] = [];
  const bpftoolRates: number[] = [];
  for (let r = 0; r < o.runs; r++) {
    await lab.datapath(a, async (dp) => {
      await dp.applyFlows([]);
      const specs = Array.from({ length: o.singles }, (_, i) => spec(i, inPort, actions));
      // The remotes' next hops are looked after once per Datapath; warm that.
      await dp.addFlows([spec(o.singles, inPort, actions)]);
      const ms = await timed(async () => {
        for (const s of specs) await dp.addFlows([s]);
      });
      singleRates.push(o.singles / (ms / 1000));
      // The same installs through a session: the lock taken once.
      await dp.applyFlows([]);
      await dp.addFlows([spec(o.singles, inPort, actions)]);
      const sessionMs = await timed(async () => {
        await using s = await dp.session();
        for (const f of specs) await s.addFlows([f]);
      });
      sessionRates.push(o.singles / (sessionMs / 1000));
      const cfg = dp.maps.config.read();
      using index = dp.maps.flowIndex(cfg.gen & 1)!;
      indexId = index.raw.info.id;
    });
    // bpftool: one process per update, into the same kind of map.
    using scratch = BpfMap.create({
      type: MapType.HASH,
      name: "bench_bpftool",
      keySize: flowIndexKeyCodec.size,
      valueSize: flowEntryCodec.size,
      maxEntries: o.bpftool + 1,
      flags: 1,
    });
    const value = "00 ".repeat(flowEntryCodec.size).trim().split(" ");
    const ms = await timed(async () => {
      for (let i = 0; i < o.bpftool; i++) {
        const key = new Uint8Array(flowIndexKeyCodec.size);
        new DataView(key.buffer).setUint32(16, i);
        await run([
          "bpftool",
          "map",
          "update",
          "id",
          String(scratch.info.id),
          "key",
          "hex",
          ...Array.from(key, (b) => b.toString(16).padStart(2, "0")),
          "value",
          "hex",
          ...value,
        ]);
      }
    });
    bpftoolRates.push(o.bpftool / (ms / 1000));
  }
  out.push(figure({
    name: "flow installs, one at a time through the library",
    value: median(singleRates),
    unit: "flows/s",
    baseline: "a loop of bpftool map update",
    baseline_value: median(bpftoolRates),
    runs: o.runs,
    better: "higher",
  }));
  out.push(figure({
    name: "flow installs, one at a time through a session",
    value: median(sessionRates),
    unit: "flows/s",
    baseline: "a loop of bpftool map update",
    baseline_value: median(bpftoolRates),
    runs: o.runs,
    better: "higher",
    target: "≥ 100× the bpftool loop and ≥ 100 000/s",
    check: (ratio, value) => ratio >= 100 && value >= 100_000,
    note:
      "each install is still its own all-or-nothing change, in the kernel when its call returns, and a new flow one system call (a write with BPF_NOEXIST); the session saves the lock, reading the datapath's state again and writing the journal's bookkeeping per install, and sees to new remotes' next hops in the background, in batches (its end waits for them)",
  }));

  // ---- A million flows ------------------------------------------------------
  say(`control: ${o.flows} flows applied, against raw batch writes`);
  const applySeconds: number[] = [];
  const noopSeconds: number[] = [];
  const rawSeconds: number[] = [];
  for (let r = 0; r < o.runs; r++) {
    await lab.datapath(a, async (dp) => {
      await dp.applyFlows([]);
      const ms = await timed(() =>
        dp.applyFlows(
          (function* () {
            for (let i = 0; i < o.flows; i++) yield spec(i, inPort, actions);
          })(),
        )
      );
      applySeconds.push(ms / 1000);
      noopSeconds.push(
        (await timed(() =>
          dp.applyFlows(
            (function* () {
              for (let i = 0; i < o.flows; i++) yield spec(i, inPort, actions);
            })(),
          )
        )) / 1000,
      );
      // The same entries, as bytes, written raw into a fresh map.
      const cfg = dp.maps.config.read();
      using index = dp.maps.flowIndex(cfg.gen & 1)!;
      indexId = index.raw.info.id;
      const chunks: { keys: Uint8Array; values: Uint8Array; count: number }[] = [];
      for (const c of index.raw.lookupBatch(16384)) {
        chunks.push({ keys: c.keys.slice(), values: c.values.slice(), count: c.count });
      }
      using raw = BpfMap.create({
        type: MapType.HASH,
        name: "bench_raw",
        keySize: flowIndexKeyCodec.size,
        valueSize: flowEntryCodec.size,
        maxEntries: maxFlows,
        flags: 1,
      });
      rawSeconds.push(
        (await timed(() => {
          for (const c of chunks) raw.updateBatch(c.keys, c.values, c.count);
        })) / 1000,
      );
    });
  }
  out.push(figure({
    name: `${o.flows} flows installed (apply, a stream of specs)`,
    value: median(applySeconds),
    unit: "s",
    baseline: "raw batch writes of the same entries",
    baseline_value: median(rawSeconds),
    runs: o.runs,
    better: "lower",
    target: o.flows >= 1_000_000 ? "≤ 3 s and ≤ 1.5× the raw writes" : undefined,
    check: o.flows >= 1_000_000 ? (r, v) => v <= 3 && r <= 1.5 : undefined,
    note:
      "compiling each flow, writing the new table aside and switching to it; the table is empty first, so there is nothing to compare with and each batch of the new index is written on a worker thread while the next flows compile (the compile, on the JavaScript thread, is most of the time); the raw baseline only writes bytes already made",
  }));

  out.push(figure({
    name: `${o.flows} flows applied again, unchanged (apply, a stream of specs)`,
    value: median(noopSeconds),
    unit: "s",
    baseline: "raw batch writes of the same entries",
    baseline_value: median(rawSeconds),
    runs: o.runs,
    better: "lower",
    target: o.flows >= 1_000_000 ? "≤ 1.5 s" : undefined,
    check: o.flows >= 1_000_000 ? (_r, v) => v <= 1.5 : undefined,
    note:
      "every flow compiled; their digest matches the last apply's note and the change counter has not moved, so the table is neither read nor written",
  }));

  // ---- Ten of one owner's flows in the big table ------------------------------------
  say(`control: 10 of an owner's 1000 flows replaced among ${o.flows}, against a full apply`);
  // Round r's flows: all but ten the same as round r - 1's.
  const round = (from: number, count: number, vary: number, r: number) =>
    function* () {
      for (let i = 0; i < count - 10; i++) yield spec(from + i, inPort, actions);
      for (let k = 0; k < 10; k++) yield spec(vary + 10 * (r % 2) + k, inPort, actions);
    };
  const ownedMs: number[] = [];
  const fullMs: number[] = [];
  await lab.datapath(a, async (dp) => {
    const owned = (r: number) => round(o.flows, 1000, o.flows + 1000, r)();
    const operator = (r: number) => round(0, o.flows, 2 * o.flows, r)();
    await dp.applyFlows(owned(0), { owner: "fleet" });
    for (let r = 1; r <= 10; r++) {
      ownedMs.push(await timed(() => dp.applyFlows(owned(r), { owner: "fleet" })));
    }
    for (let r = 1; r <= o.runs; r++) fullMs.push(await timed(() => dp.applyFlows(operator(r))));
    const diff = await dp.applyFlows(owned(11), { owner: "fleet", dryRun: true });
    if (diff.added !== 10 || diff.removed !== 10 || diff.unchanged !== 990) {
      // Counts only: the diff's specs hold bigints, which JSON cannot write.
      const got = `${diff.added} added, ${diff.removed} removed, ${diff.unchanged} unchanged`;
      throw new Error(`an owner's round changes ${got}, not 10 flows`);
    }
    await dp.applyFlows([], { owner: "fleet" });
    const cfg = dp.maps.config.read();
    using index = dp.maps.flowIndex(cfg.gen & 1)!;
    indexId = index.raw.info.id;
  });
  out.push(figure({
    name: `10 of an owner's 1000 flows replaced in a table of ${o.flows} (apply --owner)`,
    value: median(ownedMs),
    unit: "ms",
    baseline: "a full apply of the same table, 10 flows replaced",
    baseline_value: median(fullMs),
    runs: ownedMs.length,
    better: "lower",
    target: o.flows >= 1_000_000 ? "well under 1 s: ≤ 200 ms" : undefined,
    check: o.flows >= 1_000_000 ? (_r, v) => v <= 200 : undefined,
    note:
      "in place: the owner's flows read from its own set, the change staged beside the live entries and switched to with one write; the time is mostly two or three waits for an RCU grace period. The full apply compares and rebuilds the whole table",
  }));

  // ---- Dumping them -------------------------------------------------------------
  say(`control: dumping ${o.flows} flows, against bpftool map dump`);
  const dumps: number[] = [];
  const bpftoolDumps: number[] = [];
  const dumpPeaks: number[] = [];
  for (let r = 0; r < o.runs; r++) {
    const d = await warrenPeak(a, ["flow", "dump"]);
    dumps.push(d.ms / 1000);
    dumpPeaks.push(d.peakKiB);
    bpftoolDumps.push(
      (await timed(() => run(["sh", "-c", `bpftool map dump id ${indexId} > /dev/null`]))) / 1000,
    );
  }
  out.push(figure({
    name: `${o.flows} flows dumped with their counters (warren flow dump)`,
    value: median(dumps),
    unit: "s",
    baseline: "bpftool map dump of the flow index",
    baseline_value: median(bpftoolDumps),
    runs: o.runs,
    better: "lower",
    target: o.flows >= 1_000_000 ? "≤ 2 s and ≥ 5× faster than bpftool" : undefined,
    check: o.flows >= 1_000_000 ? (ratio, v) => v <= 2 && ratio <= 0.2 : undefined,
    note:
      "a whole process: Deno's start, reading the table and the per-CPU counters, sorting by priority, printing every flow as text",
  }));

  // ---- Memory ---------------------------------------------------------------------
  say("memory: peak resident memory of dump and apply, kernel memory per flow");
  const dir = await Deno.makeTempDir();
  const file = `${dir}/state.json`;
  try {
    const text = (j: number) =>
      `priority=10,in_port=web,ip,nw_dst=10.${(j >> 16) & 255}.${(j >> 8) & 255}.${
        j & 255
      } actions=set_tunnel(id=${(j % 1000) + 1},dst=192.0.${2 + ((j % 1000) >> 8)}.${
        j % 1000 & 255
      }),output:vx0`;
    // The same table in each form: JSON, YAML, and one flow per line.
    const forms = {
      json: {
        head:
          '{"ports":[{"name":"web","device":"wl0"}],"tunnels":[{"name":"vx0","proto":"vxlan","options":{"remote_ip":"flow","key":"flow"}}],"flows":[\n',
        line: (j: number) => JSON.stringify(text(j)) + (j + 1 < o.flows ? ",\n" : "\n"),
        tail: "]}\n",
      },
      yaml: {
        head:
          "ports:\n  - { name: web, device: wl0 }\ntunnels:\n  - { name: vx0, proto: vxlan, options: { remote_ip: flow, key: flow } }\nflows:\n",
        line: (j: number) => `  - ${text(j)}\n`,
        tail: "",
      },
      flows: { head: "", line: (j: number) => text(j) + "\n", tail: "" },
      // The line form with three flows' actions changed.
      "changed.flows": {
        head: "",
        line: (j: number) =>
          (j % Math.ceil(o.flows / 3) === 0 ? text(j).replace(",dst=", "9,dst=") : text(j)) + "\n",
        tail: "",
      },
    };
    const enc = new TextEncoder();
    for (const [ext, form] of Object.entries(forms)) {
      const f = await Deno.open(`${dir}/state.${ext}`, { write: true, create: true });
      await f.write(enc.encode(form.head));
      for (let i = 0; i < o.flows; i += 10000) {
        const part = [];
        for (let j = i; j < Math.min(i + 10000, o.flows); j++) part.push(form.line(j));
        await f.write(enc.encode(part.join("")));
      }
      await f.write(enc.encode(form.tail));
      f.close();
    }
    await lab.datapath(a, (dp) => dp.applyFlows([]));
    const apply = await warrenPeak(a, ["apply", file]);
    const others: Record<string, { ms: number; peakKiB: number }> = {};
    for (const ext of ["yaml", "flows"]) {
      await lab.datapath(a, (dp) => dp.applyFlows([]));
      // A first apply of these texts too: the note the apply before left
      // would spare it every compile, which a file's first apply has to do.
      await Deno.remove(notedTextsPath(a.pinDir));
      others[ext] = await warrenPeak(a, ["apply", `${dir}/state.${ext}`]);
      const n = await lab.datapath(a, (dp) => dp.flows.usage().flows);
      if (n !== o.flows) throw new Error(`apply of the ${ext} file left ${n} flows`);
    }
    // The same applies as whole processes, against the raw writes above.
    const twice = "read twice (ports, tunnels and groups, then the flows, each text parsed)";
    const first = "every flow compiled (no note of compiled texts: the first apply of these texts)";
    for (
      const [what, took, how] of [
        ["a JSON file", apply, `${twice}, ${first}`],
        ["a YAML file", others.yaml, `${twice}, ${first}`],
        ["the line form", others.flows, `read once, ${first}`],
      ] as const
    ) {
      out.push(figure({
        name: `${o.flows} flows applied from ${what} (warren apply, a whole process)`,
        value: took.ms / 1000,
        unit: "s",
        baseline: "raw batch writes of the same entries",
        baseline_value: median(rawSeconds),
        runs: 1,
        better: "lower",
        target: o.flows >= 1_000_000 ? "≤ 3 s and ≤ 1.5× the raw writes" : undefined,
        check: o.flows >= 1_000_000 ? (r, v) => v <= 3 && r <= 1.5 : undefined,
        note:
          `a whole process to an empty table: Deno's start, the file hashed and ${how}, the table written`,
      }));
    }
    // The line form file again, unchanged: recognised from its bytes.
    const againMs: number[] = [];
    for (let r = 0; r < o.runs; r++) {
      againMs.push((await warrenPeak(a, ["apply", `${dir}/state.flows`])).ms);
    }
    out.push(figure({
      name: `${o.flows} flows applied again from the line form, unchanged (warren apply)`,
      value: median(againMs) / 1000,
      unit: "s",
      baseline: "the first apply of the same file",
      baseline_value: others.flows.ms / 1000,
      runs: o.runs,
      better: "lower",
      target: o.flows >= 1_000_000 ? "≤ 1.5 s" : undefined,
      check: o.flows >= 1_000_000 ? (_r, v) => v <= 1.5 : undefined,
      note:
        "a whole process: Deno's start, the file's bytes hashed and found in the last apply's note with the change counter unmoved; no flow parsed or compiled, the table neither read nor written",
    }));
    // Three flows changed, the file and its changed copy applied in turn:
    // the changed texts compiled, the others taken as the last apply noted
    // them; against the same with that note removed first (all compiled).
    const noted: number[] = [], all: number[] = [];
    const notedPeaks: number[] = [], allPeaks: number[] = [];
    for (let r = 0; r < 2 * o.runs; r++) {
      if (r % 2) await Deno.remove(notedTextsPath(a.pinDir));
      const ext = r % 2 ? "flows" : "changed.flows";
      const run = await warrenPeak(a, ["apply", `${dir}/state.${ext}`]);
      (r % 2 ? all : noted).push(run.ms);
      (r % 2 ? allPeaks : notedPeaks).push(run.peakKiB);
    }
    out.push(figure({
      name: `3 of ${o.flows} flows changed, applied from the line form (warren apply)`,
      value: median(noted) / 1000,
      unit: "s",
      baseline: "the same with the note of compiled texts removed first (every flow compiled)",
      baseline_value: median(all) / 1000,
      runs: o.runs,
      better: "lower",
      note:
        "a whole process: Deno's start, every line read and its text's digest followed through the last apply's note in its order, 3 flows parsed and compiled, the 3 flows they replace found from the note; only those 3 entries written, in place, with one commit; the note written again from its own columns",
    }));
    out.push(figure({
      name: `peak resident memory of a 3-of-${o.flows} apply from the line form (warren apply)`,
      value: median(notedPeaks) / 1024,
      unit: "MiB",
      baseline: "the same with the note of compiled texts removed first (every flow compiled)",
      baseline_value: median(allPeaks) / 1024,
      runs: o.runs,
      better: "lower",
      note:
        "the note read whole (about 40 bytes a flow) and a byte a flow for which texts took it; no set of the flows, no index of them, no new table",
    }));
    const status = await warrenPeak(a, ["status"]);
    const check = await lab.datapath(a, (dp) => dp.flows.usage().flows);
    if (check !== o.flows) throw new Error(`apply left ${check} flows, not ${o.flows}`);
    out.push(figure({
      name: `peak resident memory of warren apply (${o.flows} flows from a JSON file)`,
      value: apply.peakKiB / 1024,
      unit: "MiB",
      baseline: "warren status",
      baseline_value: status.peakKiB / 1024,
      runs: 1,
      better: "lower",
      target: o.flows >= 1_000_000 ? "≤ 256 MB" : undefined,
      check: o.flows >= 1_000_000 ? (_r, v) => v * 1.048576 <= 256 : undefined,
      note: `the whole run took ${(apply.ms / 1000).toFixed(1)} s, parsing the text included`,
    }));
    for (const [ext, what] of [["yaml", "a YAML file"], ["flows", "the line form"]]) {
      out.push(figure({
        name: `peak resident memory of warren apply (${o.flows} flows from ${what})`,
        value: others[ext].peakKiB / 1024,
        unit: "MiB",
        baseline: "warren status",
        baseline_value: status.peakKiB / 1024,
        runs: 1,
        better: "lower",
        target: o.flows >= 1_000_000 ? "≤ 256 MB" : undefined,
        check: o.flows >= 1_000_000 ? (_r, v) => v * 1.048576 <= 256 : undefined,
        note: `the whole run took ${
          (others[ext].ms / 1000).toFixed(1)
        } s, parsing the text included`,
      }));
    }
    out.push(figure({
      name: `peak resident memory of warren flow dump (${o.flows} flows)`,
      value: median(dumpPeaks) / 1024,
      unit: "MiB",
      baseline: "warren status",
      baseline_value: status.peakKiB / 1024,
      runs: o.runs,
      better: "lower",
      target: o.flows >= 1_000_000 ? "≤ 256 MB" : undefined,
      check: o.flows >= 1_000_000 ? (_r, v) => v * 1.048576 <= 256 : undefined,
    }));
    // Kernel memory: what the maps holding flows take, per flow.
    const mem = async (id: number) =>
      JSON.parse(await run(["bpftool", "-j", "map", "show", "id", String(id)]))
        .bytes_memlock as number;
    const perFlow = await lab.datapath(a, async (dp) => {
      const cfg = dp.maps.config.read();
      using index = dp.maps.flowIndex(cfg.gen & 1)!;
      const indexBytes = await mem(index.raw.info.id);
      const stats = await mem(dp.maps.flowStats.raw.info.id);
      const ids = await mem(dp.maps.flowIds.raw.info.id);
      // Counters and ids are sized for the table's capacity: per flow of it.
      return indexBytes / o.flows + (stats + ids) / cfg.max_flows;
    });
    using bare = BpfMap.create({
      type: MapType.HASH,
      name: "bench_bare",
      keySize: flowIndexKeyCodec.size,
      valueSize: flowEntryCodec.size,
      maxEntries: maxFlows,
      flags: 1,
    });
    await lab.datapath(a, (dp) => {
      const cfg = dp.maps.config.read();
      using index = dp.maps.flowIndex(cfg.gen & 1)!;
      for (const c of index.raw.lookupBatch(16384)) bare.updateBatch(c.keys, c.values, c.count);
    });
    const bareBytes = (await mem(bare.info.id)) / o.flows;
    out.push(figure({
      name: "kernel memory per flow (index entry, per-CPU counters, id bitmap)",
      value: perFlow,
      unit: "bytes",
      baseline: "a bare hash map of the same key and value",
      baseline_value: bareBytes,
      runs: 1,
      better: "lower",
      note:
        `counters are per CPU (${navigator.hardwareConcurrency} here) and sized for the table's capacity; tunnel keys are shared (1000 for the million flows) and not counted`,
    }));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return out;
}
