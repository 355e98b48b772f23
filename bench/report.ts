/**
 * The bench's output: a table on the terminal, `bench/results.json`, and
 * `docs/benchmarks.md`.
 *
 * A run may measure only some sections (`--only`). Its figures replace
 * those sections' figures from earlier runs and leave every other
 * section's as they were, so the committed files always hold the latest
 * full-size figures of every section, each with the run that measured it.
 * A `--quick` run is a first look at smaller sizes: it goes to
 * `bench/out/results.json` and never replaces committed figures.
 *
 * @module
 */

import { type Figure, FULL_BUILD, type Machine } from "./lib.ts";

/** One run of the bench: what it measured, how, where and when. */
export interface Run {
  /** The command that produced it. */
  command: string;
  /** When. */
  date: string;
  /** How long it took. */
  seconds: number;
  /** The sections it measured whose figures are still the latest. */
  sections: string[];
  /** Where it ran. */
  machine: Machine;
  /**
   * The 1-minute load average at its start and end (/proc/loadavg): other
   * work sharing the CPUs, which slows absolute figures more than ratios.
   * Runs recorded before it was kept have a `note` instead, or nothing.
   */
  load?: [number, number];
  /** What else is known of the conditions of a run, in words. */
  note?: string;
}

/** A figure as `bench/results.json` keeps it: with the section that measured it. */
export type Recorded = Figure & { section: string };

/** What `bench/results.json` holds. */
export interface Results {
  /** The runs whose figures are kept, oldest first. */
  runs: Run[];
  /** Every section's latest figures, in the order of the sections. */
  results: Recorded[];
}

/**
 * merge puts `run` and its figures over `old`: the sections it measured
 * lose their old figures and their place in older runs (a run left with no
 * section is dropped); every other section keeps its figures. Figures are
 * ordered by `order`, the bench's list of sections.
 */
export function merge(
  old: Results | undefined,
  run: Run,
  figures: Recorded[],
  order: readonly string[],
): Results {
  const fresh = new Set(run.sections);
  const runs = (old?.runs ?? [])
    .map((r) => ({ ...r, sections: r.sections.filter((s) => !fresh.has(s)) }))
    .filter((r) => r.sections.length > 0);
  const kept = (old?.results ?? []).filter((f) => !fresh.has(f.section));
  const rank = (f: Recorded) => {
    const i = order.indexOf(f.section);
    return i < 0 ? order.length : i;
  };
  // A stable sort: within a section, figures keep the order they were measured in.
  return { runs: [...runs, run], results: [...kept, ...figures].sort((a, b) => rank(a) - rank(b)) };
}

const fmt = (x: number) =>
  Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2);

/** A figure's ratio, and the spread of its rounds' ratios when it has one. */
const ratioCell = (f: Figure) =>
  `${fmt(f.ratio)}×` + (f.spread ? ` (${fmt(f.spread[0])}–${fmt(f.spread[1])})` : "");

function rows(figures: Figure[]): string[][] {
  return figures.map((f) => [
    f.name,
    `${fmt(f.value)} ${f.unit}`,
    `${f.baseline}: ${fmt(f.baseline_value)}`,
    ratioCell(f),
    f.target ? `${f.target} ${f.met ? "met" : "MISSED"}` : "",
  ]);
}

const HEADER = ["figure", "value", "baseline", "ratio", "target"];

const here = new URL(".", import.meta.url).pathname;

/** Reads `path` as results, or undefined when there is none yet. */
async function readResults(path: string): Promise<Results | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}

async function writeJson(path: string, results: Results): Promise<void> {
  await Deno.writeTextFile(path, JSON.stringify(results, null, 2) + "\n");
}

/**
 * Prints the run's table; merges it into `bench/results.json` and writes
 * `docs/benchmarks.md` from the merged figures (a quick run: only
 * `bench/out/results.json`). `order` is the bench's list of sections.
 */
export async function writeReport(
  run: Run,
  figures: Recorded[],
  order: readonly string[],
  options: { quick: boolean },
): Promise<void> {
  const table = [HEADER, ...rows(figures)];
  const widths = HEADER.map((_, i) => Math.max(...table.map((row) => row[i].length)));
  for (const row of table) console.log(row.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
  if (options.quick) {
    await Deno.mkdir(`${here}out`, { recursive: true });
    await writeJson(`${here}out/results.json`, merge(undefined, run, figures, order));
    return;
  }
  const json = `${here}results.json`;
  const results = merge(await readResults(json), run, figures, order);
  await writeJson(json, results);
  const doc = `${here}../docs/benchmarks.md`;
  await Deno.writeTextFile(doc, markdown(results) + "\n");
  // Committed as `deno fmt` leaves it, so `deno task check` stays clean.
  await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", doc] }).output();
}

/** docs/benchmarks.md for `r`. */
export function markdown(r: Results): string {
  const produced = r.runs.map((run) =>
    `\`${run.command}\` (${Math.round(run.seconds)} s${
      run.load ? `, load average ${run.load[0]} at its start and ${run.load[1]} at its end` : ""
    }${run.note ? `; ${run.note}` : ""}) on ${run.date.slice(0, 10)} for ${run.sections.join(", ")}`
  );
  const machine = (m: Machine) =>
    `${m.cpu}, ${m.cpus} CPUs, ${m.memory_gib} GiB; Linux ${m.kernel}; Deno ${m.deno}; libbpf ${m.libbpf}`;
  // Which sections ran on which machine, when runs were made on more than one.
  const machines = Map.groupBy(r.runs, (run) => machine(run.machine));
  const where = machines.size === 1
    ? [...machines.keys()][0]
    : [...machines].map(([m, runs]) => `${m} (${runs.flatMap((x) => x.sections).join(", ")})`)
      .join("; ");
  return [
    "# Benchmarks",
    "",
    `Produced by ${
      produced.join("; ")
    }; generated by \`bench/report.ts\`, the same figures are in \`bench/results.json\`.`,
    "",
    `Machine: ${where}.`,
    "",
    "Every figure is measured beside its baseline in the same run, and the ratio is value / baseline.",
    "Most are medians of several runs, measured alternately with their baseline; the fleet's join",
    "latencies are percentiles over many joins. A ratio followed by a range is instead the median of",
    "the ratios of many short rounds, each a measurement and its baseline back to back, and the range",
    "their interquartile range. A target marked (absolute) is on the value, not on the ratio. The",
    "machine is shared and noisy: read ratios, not absolute times.",
    "",
    ...table(HEADER, rows(r.results.filter((f) => f.section !== ABLATION))),
    "",
    ...ablationTable(r.results.filter((f) => f.section === ABLATION)),
    "## Notes",
    "",
    ...r.results.filter((f) => f.note).map((f) => `- **${f.name}**: ${f.note}`),
    "",
    ...missed(r.results),
    MEANING,
  ].join("\n");
}

/** The section whose figures are the ablation builds' (bench/kernel.ts). */
const ABLATION = "ablation";

/** A markdown table. */
function table(header: string[], body: string[][]): string[] {
  return [
    "| " + header.join(" | ") + " |",
    "| " + header.map(() => "---").join(" | ") + " |",
    ...body.map((row) => "| " + row.join(" | ") + " |"),
  ];
}

/**
 * Where the time goes: each ablation build (one cost item left out)
 * against the full build, and the time the item takes (the difference).
 */
function ablationTable(figures: Figure[]): string[] {
  if (!figures.length) return [];
  return [
    "## Where the time goes (ablation)",
    "",
    "`deno task bench --only ablation` builds the datapath once more per cost item with that item",
    "left out (`bpf/include/ablate.h`) and measures each build beside the full one on the same",
    "packets. The first rows are the full build against its floors, and the time it takes above",
    "them; in the others, the time an item costs is the full build's less the build's without it",
    "(within the noise of a shared machine, it may come out below zero).",
    "",
    ...table(
      ["build", "value", "baseline", "ratio", "time"],
      figures.map((f) => [
        f.name.replace(/^ablation: /, ""),
        `${fmt(f.value)} ${f.unit}`,
        `${f.baseline}: ${fmt(f.baseline_value)}`,
        ratioCell(f),
        `${
          fmt(f.baseline === FULL_BUILD ? f.baseline_value - f.value : f.value - f.baseline_value)
        } ${f.unit}`,
      ]),
    ),
    "",
  ];
}

/** Why a target is missed, by the figures it concerns. */
const WHY: [RegExp, string][] = [
  [
    /decap \+ flow (hit|cache miss) \+ redirect/,
    "the floor + redirect parses three headers, bumps a counter and redirects. On a hit of the " +
    "packet cache (bpf/include/pkt_cache.h) warren also loads and compares twelve masked words " +
    "of the frame, checks the outer IPv4 checksum and the frame's lengths, strips the outer " +
    "headers and bumps per-flow, per-port and event counters; it no longer builds, hashes or " +
    "compares a 19-word flow key, which took these rows from 2.2-2.3× to about 1.55×. The hit " +
    "then stopped storing the words in a scratch to read them back (which spilled a dozen " +
    "registers), tests once whether to count instead of at every counter, and looks no " +
    "scratch up, and leaves to a miss the shape checks that the compared words make anyway: " +
    "0.91-0.95× the time of the build before, alternating in one run, and 1.42-1.48× the " +
    "floor in two quick runs under load. Of what is left, in the ablation " +
    "table: the counters about 8% (a port's receive and transmit counts are in the " +
    "per-port map, beside the one per-CPU block of event counters: one block per packet would " +
    "change the stats layout), the clock nothing measurable now that it is jiffies, the " +
    "checksum and the frame length helper 1-2% each; the rest is the words' loads and " +
    "compare, the head adjustment and the redirect through the device map. STT takes the full " +
    "path: XDP gets no checksum verdict from the device, so its outer TCP checksum is summed " +
    "over every byte of payload, which no cache of header words can skip. The sum reads the " +
    "frame's first buffer in place now (it copied each 512-byte chunk to a map first): STT " +
    "went from 3.14-3.37× to 2.88-3.03× in alternating quick runs under load (load about 3). " +
    "The sum is still about 0.3 floors (against a build without it, alternating); it and " +
    "the reassembly bookkeeping keep STT near 3×. A miss (the cache-miss row) also gathers " +
    "the words and fills a packet cache slot",
  ],
  [
    /encap/,
    "the floor at TC only parses and counts; encapsulation also classifies, counts, carries out " +
    "the actions, copies the next-hop cache's prebuilt outer header and patches it, grows the " +
    "headroom and writes the header in. perf record -a -g over a tight loop of single-skb test-runs " +
    "of VXLAN (no JavaScript between runs) split the in-kernel time into the test-run's own timer " +
    "reads and setup (about a quarter, the floor's too), warren's BPF code (about half: the " +
    "exact-match cache probe and per-flow counters, parsing, per-port and event counters, the " +
    "action loop, the header copy and patch, no line above 5%) and the helpers that grow the room " +
    "and stored the header (bpf_skb_adjust_room, skb_store_bytes, about a sixth). The kernel's " +
    "flow dissection for the source port (bpf_get_hash_recalc on a skb with no hash, as a " +
    "test-run's) was a fifth more and is gone. Builds stopped after each stage (temporary, in " +
    "alternating runs against the floor) split VXLAN's time above the floor, in floors: entering " +
    "the program, finding the port and counting it 0.2; parsing 0.25; the network stamp and the " +
    "exact-match cache probe 0.6; the flow's counters and clock 0.3; the action loop down to the " +
    "output's port, tunnel key and counter block 0.35; the next-hop cache hit 0.35; the flow hash " +
    "0.1; the header patch 0.3; growing the room and storing the header 1.0; the output's counters " +
    "and redirect 0.15. No stage holds the rest, and few take as long as their instructions " +
    "would: one test-run per packet likely starts with caches that the JavaScript between runs " +
    "has evicted (this VM exposes no counters of misses), so every line of data and code a packet " +
    "touches costs, where the floor touches one counter. The header now goes in by direct packet access " +
    "(bpf_skb_load_bytes and bpf_skb_store_bytes gone) and only its own bytes are copied out of " +
    "the cache: against the build before, alternating in one run (21 runs of 10 000, load about " +
    "7), the median packet took 0.3 floors less for VXLAN, 0.35-0.45 for GRE and Geneve. STT " +
    "also pays a reallocation here: its 72 bytes of outer " +
    "headers exceed the 64 bytes of headroom (NET_SKB_PAD) of a test-run skb, so every run copies " +
    "the frame (pskb_expand_head, about a fifth of STT's time), which a TCP sender's skb (with " +
    "MAX_TCP_HEADER of headroom) does not. The other way round, a workload's UDP socket sends " +
    "skbs with less headroom than a test-run's, so live VXLAN traffic pays that reallocation " +
    "too (a fifth of wr_tc_local's time in a profile of a UDP flood): a veth reserves more " +
    "only when the kernel asks it to (ndo_set_rx_headroom, which Open vSwitch's datapath calls), " +
    "and no netlink setting was found that does",
  ],
  [
    /^TCP throughput over warren VXLAN, TC on the underlay/,
    "0.99×, within the run-to-run spread of iperf3 on this machine (runs before this one gave " +
    "1.0× and above): warren's TC path adds its classification and encapsulation to each GSO " +
    "packet, the kernel's device its own; neither segments here",
  ],
  [
    /^TCP over warren STT \/ TCP over warren VXLAN/,
    "a profile of an STT iperf3 run (perf record -a -g) puts the cost in the copies STT needs " +
    "from BPF: each segment is a clone (bpf_clone_redirect), which un-clones the original's head " +
    "(pskb_expand_head about 4% of all CPU, skb_release_data 4%), the send loop (stt_segment) 6%, " +
    "delivery of reassembled frames 5%, and the receiving TCP stack handles about 45 MSS segments " +
    "per 64 KB instead of one GSO packet; checksums are about 1%. The kernel cannot segment or " +
    "coalesce STT for warren (see README, STT), so no cut found reaches 0.5×",
  ],
  [
    /one at a time through a session/,
    "within 2% of the ratio, a third short of the rate. New remotes' next hops are resolved in " +
    "the background, many per ip run, and each install's own work was cut to about a third of " +
    "its CPU time this round (36-53 µs to 13-15 µs per install, 100 000 installs profiled under " +
    "load): a new flow is one write with BPF_NOEXIST instead of a lookup and an update, its mask " +
    "is found by its bytes, its tunnel key's slot and remote by the compiled key, its action " +
    "bytes resolved once per list, and its key, mask and entry built in reused buffers. What is " +
    "left, profiled: the write, a system call through FFI (about a sixth), encoding the match " +
    "(a sixth), building the entry and index key (a sixth), finding the mask and tunnel key and " +
    "noting the remote (a sixth). Writing consecutive calls' entries in one batch would weaken " +
    "the guarantee that a flow is in the kernel when its call returns",
  ],
  [
    /applied again, unchanged/,
    "the table is neither read nor written: the flows' digest matches the last apply's note " +
    "and the change counter has not moved. But a stream of specs is read once, so the digest " +
    "is known only at its end and every spec is still encoded into the set it is taken from " +
    "(the set is no longer indexed by match unless it is compared with the table). Measured " +
    "at a million as CPU time of the process (2 cores at load 9 to 14, so not wall time): " +
    "1.5-2.2 s (median of 4: 2.0), of it making the bench's specs 0.3-0.5 s and encoding " +
    "each spec's key and mask into the set the rest; 3.1-3.8 s (3.4) interleaved with it " +
    "before, when the specs made two keys of ten byte views each, each key was encoded " +
    "through a DataView and masked in a pass of its own, and the set hashed every flow as it " +
    "came. Since, compiling reads a key's byte fields only where its mask has bits (the mask " +
    "says which as it is encoded), looks the flow's in_port up once, and keeps a shared " +
    "action list's IPv6 check with its compiled form: making, compiling and adding a million " +
    "of the bench's specs to the set went from 1.45 to 0.96 s of CPU (the least of 5 runs, in " +
    "three processes of each alternating, load 4 to 5), of it making the specs 0.3 s and " +
    "encoding the matches 0.45 (most of it the mask's bytes, which every flow repeats); the " +
    "no-op apply of a million from 1.5-2.5 s (median of 6: 2.2) to 1.2-2.1 s (1.8) of wall " +
    "time, a scratch script alternating the two at load 2 to 5. Flows read from a file are recognised " +
    "from its bytes instead, before any is parsed (the row of the line form applied again). " +
    "Full runs: 1.37 s against raw writes of 0.81 s, then 1.81 s against 0.87 on a slower " +
    "machine (bpftool's dump 31.6 s against 22.2), then 1.27 s against 0.81 with the " +
    "cheaper compile. The quiet control-only run after it gave 1.71 s against 0.99 (the " +
    "raw writes themselves 22% slower than in the run before); the code before and after " +
    "this round, alternating in one scratch script at load 0.2-1.2, gave no-op applies of " +
    "1.1-2.1 s and 1.0-2.1 s: the machine's noise, not a change in the code",
  ],
  [
    /resident memory of warren apply \(\d+ flows from (a YAML file|the line form)\)/,
    "split at a million flows (Deno.memoryUsage at each phase of a first apply): Deno and " +
    "warren's code take some 70 MiB, the worker writing the new index's batches 15; V8's heap " +
    "about 50 MiB; the compiled set and its index 31-35 MiB. V8 doubles its young generation " +
    "once what its scavenges keep adds up to its size: each flow's file and line, made into a " +
    "string, was held by V8's cache of number strings through the next scavenge (some 200 KiB " +
    "kept at each), which took it to two 32 MiB semi-spaces (heap 80-100 MiB); made only for " +
    "an error now, a scavenge keeps about 25 KiB and the semi-spaces stay at 16 MiB. The " +
    "texts' digests for the note go to an unnamed temporary file as they are made (12 MB), and " +
    "the set holds no cookies unless a flow has one, nor old ids for an empty table (13 MB): " +
    "YAML 229 → 162 MiB, the line form 229 → 161 (medians of three runs, load 3-5)",
  ],
  [
    /^live forwarding/,
    "each frame is decapsulated, classified and redirected at XDP. warren delivered 4.35 Mpps " +
    "in the full run before the packet cache and 4.17 Mpps in this one, while the decap rows " +
    "fell from 2.2-2.3× to about 1.55× the floor + redirect: the rate is bounded by more than " +
    "warren's per-packet cost (one generator CPU drives both paths, and the receiving veth's " +
    "redirect is most of the floor). The ratio moved with the kernel's device and bridge, " +
    "1.33 Mpps then and 0.91 now. After the hit path's rework the next full run gave 6.67 " +
    "Mpps against 1.21 (5.54×)",
  ],
  [
    /flow installs, one at a time/,
    "each install is a whole transaction: the lock file, a read of the configuration, compiling, " +
    "then the index entry, the id bitmap, the tunnel key reference, the masks and the change " +
    "marks, each a system call through FFI. In batches (apply, the next row) a million flows " +
    "take seconds",
  ],
  [
    /flows installed \(apply/,
    "the raw baseline is the writes alone. Split of one million-flow apply to an empty table " +
    "(timers around each phase, a scratch script doing what the bench does, at load 1, before " +
    "the change below): making the bench's specs 0.3-0.4 s, compiling them into the set " +
    "1.1-1.3 s (compileFlowInto 0.8-1.0, adding to the set 0.25-0.3), indexing by match 0.04, " +
    "the digest 0.02, building the entries 0.2, the kernel's batch writes 0.85 (the raw " +
    "baseline's 0.81-0.89 in the same runs), publishing, recounting and committing 0.04; the " +
    "journal's mark and the note a few milliseconds, no fsync and no diff (the table is " +
    "empty). Since then an apply to an empty table writes each flow as it compiles it, the " +
    "kernel's copies on a worker thread (BackgroundBatchWrites), and publishes the index only " +
    "once the whole input is read and checked, so the writes overlap the compile when a second " +
    "core is free. What is left is the compile on the JavaScript thread, specs included: for " +
    "1.5× it would have to take about a second for a million flows. Since, that compile takes " +
    "a third less CPU (see the row applied again): making, compiling and adding a million of " +
    "the bench's specs to the set 0.96 s (1.45 s before); a scratch script applying a million " +
    "to an empty table, alternating with the code before at load 2 to 5, took 4.1-5.3 s " +
    "(median of 6: 4.6) against 3.4-5.9 s (5.1): on a loaded machine the writes hardly " +
    "overlap. In the full run after it: 2.07 s against raw writes of 0.81 s (2.55×), from " +
    "2.76 s and 3.17× in the run before; since, 2.13 s against 0.99 (2.15×), 2.36 against " +
    "1.01 (2.33×) on another machine, and 2.18 against 1.26 (1.73×) in the control run of " +
    "2026-12-02: the apply itself 2.1-2.4 s on each, the ratio moving with the raw writes' " +
    "time. A table that is not empty is still compared first, " +
    "its writes overlapping only the building of its entries. Where the JavaScript thread's " +
    "time goes (perf at 1999 Hz with V8's jitdump over the apply's window, load 4: 3 400 " +
    "samples on it, 2 400 on the worker's writes): making the bench's specs a quarter (each " +
    "key is ten byte views), encoding masks 15% (the shared mask is read again for every " +
    "flow: a caller may change it between flows, so only its contents say it is the same, and " +
    "reading them costs what copying them does), keys 7%, writing the entries 13%, adding to " +
    "the set 7%, indexing by match 5%. Doing the same stores with fewer builtin calls (no " +
    "fill, no set into shared memory, DataView word copies, a mask's place read whole) moved " +
    "the time into compiled code without lowering it (alternating runs at load 3-6, and " +
    "microbenchmarks); only work left out counts: the compiled key is handed to the writer " +
    "rather than read back from the set (60-70 ns a flow) and in_port is looked up in an " +
    "array. Below 1.5× needs the JavaScript thread under the writes' CPU, so less work per " +
    "flow than spec objects allow",
  ],
  [
    /flows applied from (a JSON file|a YAML file|the line form) \(warren apply, a whole process\)/,
    "a whole process and a first apply of its texts (no earlier apply's note holds them: " +
    "nothing before the JSON apply applies these texts, and the note it leaves is removed " +
    "before the YAML and line-form applies), where the raw baseline only writes bytes already made: each of the million " +
    "flow texts is parsed and compiled, and parsing flow text is most of it. A scratch script " +
    "parsing 300 000 of the bench's texts in one process took 7.1 µs of CPU a flow (median " +
    "of 6, load 1-3); after this round's cuts, 3.4 µs: an address field no longer makes " +
    "three typed arrays (each a malloc in Deno, 0.4-0.9 µs), the tokenizer no longer builds " +
    "its separators per call, and a prerequisite's packet types are found once. What is left " +
    "per flow, profiled: the empty match (twenty byte views, 0.8-1.0 µs), splitting the text " +
    "into tokens (0.65-0.9 µs), and V8's builtins and garbage collection (about 60%, " +
    "unsymbolised). Since, a parsed key's byte fields are views made only when read (the " +
    "bench's texts read two of the twenty) and the encoder copies a key's bytes from its " +
    "slab: the same script, alternating with the code before at load 3-4, 5.1 µs a flow to " +
    "4.1 (medians of 5 processes of 7 runs; 0.6-1.8 µs less in each pair, 0.2-0.75 in an " +
    "earlier set). JSON's one-line flow items are read with JSON.parse, not the streaming " +
    "parser, which tokenized a byte at a time (the file's two reads alone, in one process, " +
    "4.8-5.5 s to 0.75). Control-only runs gave JSON 8.25 s, YAML 8.77 and the line form " +
    "6.25 against raw writes of 0.99 s before the lazy views; a full run on another machine " +
    "after them (load 1) 8.98, 9.36 and 9.26 against 1.01; the control run of 2026-12-02 " +
    "8.30, 8.04 and 7.26 against 1.26. Split of the line form's whole process, timers in a " +
    "scratch build on that run's machine (the two steady runs of three, 6.2 and 6.4 s, load " +
    "1): Deno's start and warren's modules 0.14-0.27 s; the command, the pins and the " +
    "table's state 0.44-0.47 s; the loop over the million flows 5.1-5.3 s; after it, the " +
    "last batches and publishing 0.14-0.16 s, the notes 0.08-0.12 s, the exit 0.15 s. The " +
    "kernel's writes (1.26 s raw), on the worker thread, are done when the loop is. Of the " +
    "loop's timed work per flow (one flow in eight timed, the timers' own 130 ns taken off): " +
    "parsing the text half (2.9-3.0 µs a flow inside the process, 1.6-1.8 µs in a script " +
    "that only parses 300 000 of the texts), adding the flow to the set 18%, compiling it " +
    "12%, handing it to the writer 10-12%, its text's digest for the note 7-8%. The same " +
    "file applied again is recognised from its bytes (0.52 s in that run) and a changed one " +
    "compiles only its changed texts (1.67 s for 3 of a million): only a first apply pays " +
    "the loop. Below 3 s needs the loop under 2.5 s: parsing near 1 µs a flow, and the " +
    "set's and the writer's work per flow halved",
  ],
  [
    /flows dumped/,
    "full runs gave 1.60 s, then 2.00 s on a slower machine (bpftool's dump 31.6 s against " +
    "22.2), then 1.61 s; it takes 2.2-2.5 s of CPU at a million (the kernel's copy of the " +
    "index 0.5-0.7 s of it, whatever the batch size), so when the other core is busy its wall " +
    "time follows its CPU time. " +
    "CPU profiles of the whole command at a million flows (2 cores at load 10 " +
    "to 18, so shares moved by up to ten points between runs): collecting rows 23–31% (the " +
    "first read of each entry the kernel copied, a write at random per flow into the records, " +
    "finding its action list), waiting for the kernel's copies of the index and the counters " +
    "12–26% (made off the JavaScript thread while it collects the chunk before), formatting " +
    "9–20%, start-up 5–18% (Deno, the Node compatibility layer commander needs, the modules), " +
    "garbage collection 4–8%, decoding keys 4–8%, printing 3–8%, sorting under 3%. This round: " +
    "keys of up to 12 bytes kept in their records (read back from the arena in flow id order " +
    "each was a cache miss), a bitmap of the rows, the output encoded into one reused buffer, " +
    "the kernel's copies made while JavaScript works, and no view, callback or closure made " +
    "per address or match in formatting: 0.86× the CPU time and 0.73× the wall time of the " +
    "code before (5 interleaved runs at load 18), about 167 MiB at peak (a second set of " +
    "batch buffers). Left: a few hundred ns per flow each for collecting and formatting in " +
    "JavaScript, and 50–70 ms of Node compatibility start-up that commander brings",
  ],
  [
    /resident memory of warren apply/,
    "flows are read as a stream, but ports, tunnels and groups whole (JSON's first read grows " +
    "the heap to some 27 MiB), and the compiled set (about 35 bytes a flow with its index) is " +
    "held for the diff; the texts' digests for the note go to a temporary file as they are " +
    "made. Each flow's file and line made into a string grew V8's young generation to two " +
    "32 MiB semi-spaces until it was made only for an error: JSON 223 → 160 MiB (medians of " +
    "three runs, load 3-5)",
  ],
  [
    /^fleet: a join applied/,
    "each agent derives only what a change touches (about a millisecond), but the state file it " +
    "applies to holds the whole state and is written whole on every change; the join row's note " +
    "splits an agent's time into deriving and writing. Three agents, etcd and the simulated " +
    "fleet share the machine's 2 CPUs, so the slowest of the three waits for the others",
  ],
  [
    /^fleet: agent peak resident memory/,
    "an agent following an empty fleet already takes the baseline (Deno, V8, the gRPC client and " +
    "warren's code); the fleet's keys, its view and the derived state stay (\"resident now\" in the " +
    "note, after collections, against the baseline). The rest is V8's heap between collections: the " +
    "note gives the peak while 25 000 keys register in seconds and over the joins after it. A " +
    "young generation larger than the unit's --max-semi-space-size would add tens of MiB",
  ],
];

/** The missed targets, grouped by why. */
function missed(figures: Figure[]): string[] {
  const groups = new Map<string, Figure[]>();
  for (const f of figures.filter((f) => f.target && !f.met)) {
    const why = WHY.find(([re]) => re.test(f.name))?.[1] ?? "not known yet";
    groups.set(why, [...groups.get(why) ?? [], f]);
  }
  const lines = [...groups].map(([why, fs]) =>
    `- ${fs.map((f) => `**${f.name}** (${f.target})`).join(", ")}: ${why}.`
  );
  return lines.length ? ["## Targets missed, and why", "", ...lines, ""] : [];
}

const MEANING = `## What each figure means

- **Per-packet cost** (kernel section): BPF_PROG_TEST_RUN on realistic packets (an inner
  Ethernet/IPv4/UDP frame with 64 bytes of payload). Decapsulation changes the packet, so it runs
  in live-frames mode: each of the repeats gets a fresh frame and its verdict is carried out, so the
  redirect really sends the inner frame across the workload's veth. The baselines run the same way,
  in the same namespace: XDP_DROP (the cost of being run at all), the floor (parse Ethernet, IPv4 and
  UDP and bump a per-CPU counter), a bare redirect to the same veth, and the floor followed by that
  redirect, which decapsulation figures are compared with. Each live-frames figure and its baseline
  alternate in many short rounds (15 of 40 000 frames with \`--quick\`, 25 of 200 000 in a full run), the
  measuring thread pinned to one CPU for the whole figure (the veth that a redirect feeds is woken on
  the redirecting CPU, so its softirq runs there as well), and the ratio is the median of the
  rounds' ratios, shown with their interquartile range: one round's pair shares the load of its
  moment, which the medians of separate runs did not (the floor + redirect moved from 67 to 131 ns
  between rows of one run). Encapsulation runs at TC, where live frames do not
  exist: one test-run per packet, each on a fresh skb, averaging the in-kernel time the kernel
  reports (which includes its timer reads, for warren and the floor alike). "N flows, M masks" puts
  the matching flow at the lowest priority, so every mask is searched.
- **Live forwarding** (live section): a live-frames generator on host B sends VXLAN frames out of its
  underlay veth; host A decapsulates and delivers them to the workload's veth, where an XDP program
  counts them. warren's XDP path against the kernel's vxlan device and a bridge doing the same job on
  the same topology. Frames per second delivered.
- **Replication** (replication section): one broadcast frame per test-run, at TC on a local port,
  sent to a group of N tunnel buckets (remotes 10.200.x.y, routed through host B), against
  \`bench_tc_clone\` handing the same frame to a kernel vxlan device whose all-zeros FDB list floods
  it to the same N remotes. The time the kernel reports for each test-run covers every copy's trip
  onto the underlay veth (test-run leaves only warren's last redirect undone); the cost per copy is
  the slope between 16 and 1024 buckets, which cancels what a frame costs once.
- **TCP throughput** (tcp section): iperf3 between the two workloads, GSO on, through warren's VXLAN
  and STT and through the kernel's vxlan devices at both ends; warren's VXLAN with native XDP
  on the underlay veth against TC only (why \`up --xdp auto\` chooses TC only on a veth);
  STT against VXLAN on the same topology. warren segments and reassembles STT in BPF because the
  kernel cannot do it for a BPF datapath: no helper or kfunc points \`csum_start\`/\`csum_offset\` at an
  outer TCP header or sets the outer \`SKB_GSO_TCPV4\`/\`TCPV6\`, so \`tcp_gso_segment\` drops such a GSO
  packet; and after GRO merges STT's segments, no \`bpf_skb_adjust_room\` flag resets the GSO and
  checksum state \`tcp_gro_complete\` left (README, STT).
- **Control plane** (control section): flows installed one at a time through the library (each call
  takes the lock, compiles, writes) against a loop of \`bpftool map update\` on the same kind of map;
  a million flows applied from a stream of specs against raw batch writes of the same entries, and
  from a JSON, a YAML and a line form file by \`warren apply\` as whole processes (Deno's start and
  reading the text included) against the same raw writes; a million flows dumped with their per-CPU
  counters by \`warren flow dump\` (text, to /dev/null) against \`bpftool map dump\` of the flow index.
- **Memory**: peak resident memory of \`warren flow dump\` and \`warren apply\` with the million flows,
  against \`warren status\`; kernel memory per flow (index entry, per-CPU counters, id bitmap) against
  a bare hash map of the same key and value sizes.
- **Fleet** (fleet section): one etcd holding a thousand simulated hosts (a lease each, renewed
  every 10 s, a host key and 24 endpoints over 8 networks: 25 000 keys, written in transactions of
  128 operations), 50 of them also watching the whole fleet, and three real \`warren agent\`
  processes (writing their state to files until the datapath takes networks and groups), every host
  in the agents' network. A join is a new host's key and endpoint written in one transaction; it is
  applied once every agent has logged (\`--verbose\`) a state of its revision, against the time etcd
  takes to deliver the same write to a watcher. Steady-state writes are etcd's puts and deletes over
  an idle window (its metrics; its revision must not move), against its lease renewals. The relist
  is a fresh mirror listing every key and building the validated view, against a bare paged range
  read. Memory is the agents' peak resident memory over the run against an agent in an empty fleet,
  and etcd's against etcd with an empty store; etcd's database size against the live keys and
  values.`;
