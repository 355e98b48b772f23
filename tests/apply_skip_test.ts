/**
 * An apply of the same text as the last one, with the datapath as that
 * apply left it, neither parses nor compiles a flow (counted by
 * `applyStats`), and leaves the kernel table byte for byte what a fresh
 * apply makes; any change of the datapath since, or a note that is not
 * warren's, makes it compare in full. Of a text with k flows changed, k
 * are compiled, the others taken as the last apply compiled their texts,
 * unless the ports or groups changed; a note of compiled texts that is
 * not warren's is ignored, with a warning.
 */
import { createHash } from "node:crypto";
import { assert, assertEquals, assertRejects } from "./helpers/assert.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { warrenOk } from "./helpers/cli.ts";
import { applyState } from "../src/tunnel/apply.ts";
import type { Datapath } from "../src/tunnel/datapath.ts";
import { applyStats } from "../src/tunnel/flows/apply.ts";
import { textDigest, TextDigests } from "../src/tunnel/flows/noted_texts.ts";
import { appliedPath, notedTextsPath } from "../src/tunnel/lock.ts";
import { readStateFile, stateFormat } from "../src/tunnel/state_file.ts";

const N = 5000;

const flow = (i: number, id = i % 50 + 1) =>
  `priority=10,in_port=web,ip,nw_dst=10.0.${i >> 8}.${
    i & 255
  } actions=set_tunnel(id=${id},dst=192.0.2.${i % 7 + 2}),output:vx0`;

const STATE = "ports:\n  - { name: web, device: wl0 }\n" +
  "tunnels:\n  - { name: vx0, proto: vxlan, options: { remote_ip: flow, key: flow } }\n" +
  "groups:\n  - group_id=42,type=all,bucket=set_tunnel(id=42,dst=192.0.2.2),output:vx0\n" +
  "flows:\n";

/** The live flow index's entries, key and value in hex, sorted. */
function rawTable(dp: Datapath): string[] {
  const cfg = dp.maps.config.read();
  using index = dp.maps.flowIndex(cfg.gen & 1)!;
  const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  const out: string[] = [];
  for (const c of index.raw.lookupBatch(4096)) {
    const k = c.keys.length / c.count, v = c.values.length / c.count;
    for (let i = 0; i < c.count; i++) {
      out.push(
        hex(c.keys.subarray(i * k, (i + 1) * k)) + hex(c.values.subarray(i * v, (i + 1) * v)),
      );
    }
  }
  return out.sort();
}

/**
 * Applies `file` to `host`'s datapath: the plan's flow counts, and how
 * many flows were compiled; with `compileAll`, the note of compiled texts
 * is removed first, so that every flow the apply reads is compiled.
 */
function applyFile(lab: Lab, host: LabHost, file: string, compileAll = false) {
  return lab.datapath(host, async (dp) => {
    if (compileAll) {
      try {
        Deno.removeSync(notedTextsPath(host.pinDir));
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
    const before = applyStats.compiled;
    const plan = await applyState(dp, readStateFile(file), {
      flowsOnly: stateFormat(file) === "lines",
    });
    const { added, modified, removed, unchanged } = plan.flows;
    return { added, modified, removed, unchanged, compiled: applyStats.compiled - before };
  });
}

/**
 * Runs `fn` in a new lab, its first host's datapath up, with a state
 * file's path in a directory of its own.
 */
async function withLab(fn: (lab: Lab, a: LabHost, file: string) => Promise<void>) {
  await using lab = await Lab.create({ ipv6: false });
  const [a] = lab.hosts;
  await warrenOk(a, ["up", "--underlay", "u0"]);
  const dir = await Deno.makeTempDir();
  try {
    await fn(lab, a, `${dir}/state.yaml`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Applies `file` (100 flows, as installed) to `host`'s datapath (as
 * {@link applyFile} with `compileAll`), checking that every flow was
 * compiled and none changed: the warnings it gave.
 */
async function compiledInFull(lab: Lab, host: LabHost, file: string, compileAll: boolean) {
  const warned: string[] = [];
  const warn = console.warn;
  console.warn = (...args: unknown[]) => warned.push(args.join(" "));
  try {
    assertEquals(await applyFile(lab, host, file, compileAll), {
      added: 0,
      modified: 0,
      removed: 0,
      unchanged: 100,
      compiled: 100,
    });
  } finally {
    console.warn = warn;
  }
  return warned;
}

/** `note` (of compiled texts) claiming a million flows, its checksum made to match. */
function misshapen(note: Uint8Array): Uint8Array {
  // The magic (8 bytes), the context's digest, the checksum, then the payload.
  const out = note.slice();
  new DataView(out.buffer).setUint32(72, 1e6, true);
  out.set(createHash("sha256").update(out.subarray(72)).digest(), 40);
  return out;
}

/** The id of `host`'s live flow index: a full apply makes a new one, changes in place do not. */
const liveIndex = (lab: Lab, host: LabHost) =>
  lab.datapath(host, (dp) => dp.maps.flowIndexId(dp.maps.config.read().gen & 1));

const writeState = (file: string, flows: string[]) =>
  Deno.writeTextFile(file, STATE + flows.map((f) => `  - ${f}\n`).join(""));

privilegedTest(
  "the same file again compiles nothing and leaves the table a fresh apply makes",
  () =>
    withLab(async (lab, a, file) => {
      const flows = Array.from({ length: N }, (_, i) => flow(i));
      await writeState(file, flows);
      assertEquals(await applyFile(lab, a, file), {
        added: N,
        modified: 0,
        removed: 0,
        unchanged: 0,
        compiled: N,
      });
      const seq = () => lab.datapath(a, (dp) => dp.maps.config.read().seq);
      const before = await seq();
      assertEquals(await applyFile(lab, a, file), {
        added: 0,
        modified: 0,
        removed: 0,
        unchanged: N,
        compiled: 0,
      });
      assertEquals(await seq(), before, "nothing written");
      const skipped = await lab.datapath(a, rawTable);
      assertEquals(skipped.length, N);

      // A fresh datapath, the file applied once: the same bytes.
      await warrenOk(a, ["down"]);
      await warrenOk(a, ["up", "--underlay", "u0"]);
      assertEquals((await applyFile(lab, a, file)).compiled, N);
      assertEquals(await lab.datapath(a, rawTable), skipped);

      // `earlier` applied to a fresh datapath, then `file`, its texts
      // taken as noted or (`compileAll`) all compiled: the plan, and the table.
      const earlier = file.replace(/yaml$/, "earlier.yaml");
      const change = async (compileAll: boolean) => {
        await warrenOk(a, ["down"]);
        await warrenOk(a, ["up", "--underlay", "u0"]);
        assertEquals((await applyFile(lab, a, earlier)).compiled, N, "down took the notes");
        const index = await liveIndex(lab, a);
        const plan = await applyFile(lab, a, file, compileAll);
        // Changes alone are written in place; without the note, a new index.
        assertEquals(await liveIndex(lab, a) === index, !compileAll);
        assertEquals((await applyFile(lab, a, file)).compiled, 0, "and then recognised");
        return { plan, table: await lab.datapath(a, rawTable) };
      };

      // k flows of the file changed: those alone compiled, the table byte
      // for byte what compiling them all makes.
      await Deno.copyFile(file, earlier);
      const k = 3;
      for (let i = 0; i < k; i++) flows[i * 1000] = flow(i * 1000, 4000 + i);
      await writeState(file, flows);
      const modified = { added: 0, modified: k, removed: 0, unchanged: N - k };
      const noted = await change(false);
      assertEquals(noted.plan, { ...modified, compiled: k });
      const full = await change(true);
      assertEquals(full.plan, { ...modified, compiled: N });
      assertEquals(noted.table, full.table);

      // One flow gone and one new: the new one alone compiled.
      await Deno.copyFile(file, earlier);
      flows.splice(4321, 1);
      flows.push(flow(N));
      await writeState(file, flows);
      const moved = { added: 1, modified: 0, removed: 1, unchanged: N - 1 };
      const notedMove = await change(false);
      assertEquals(notedMove.plan, { ...moved, compiled: 1 });
      const fullMove = await change(true);
      assertEquals(fullMove.plan, { ...moved, compiled: N });
      assertEquals(notedMove.table, fullMove.table);

      // The same flows in another order: each found in the note by its
      // digest, not in turn; none compiled, the table as it was.
      await writeState(file, flows.toReversed());
      const reordered = { added: 0, modified: 0, removed: 0, unchanged: N };
      assertEquals(await applyFile(lab, a, file), { ...reordered, compiled: 0 });
      assertEquals(await lab.datapath(a, rawTable), fullMove.table);
    }),
);

privilegedTest(
  "a changed port or tunnel makes every flow compile again, and the table is still right",
  () =>
    withLab(async (lab, a, file) => {
      const flows = Array.from({ length: 300 }, (_, i) => flow(i));
      await writeState(file, flows);
      await applyFile(lab, a, file);
      flows[7] = flow(7, 999);
      await writeState(file, flows);
      assertEquals((await applyFile(lab, a, file)).compiled, 1);

      // A tunnel's options changed, then a tunnel added: every text compiled again.
      const tunnel = "options: { remote_ip: flow, key: flow }";
      const state = await Deno.readTextFile(file);
      await Deno.writeTextFile(file, state.replace(tunnel, `${tunnel.slice(0, -2)}, ttl: 9 }`));
      assertEquals((await applyFile(lab, a, file)).compiled, 300);
      const ported = (await Deno.readTextFile(file)).replace(
        "groups:",
        "  - { name: gr0, proto: gre, options: { remote_ip: 192.0.2.9 } }\ngroups:",
      );
      await Deno.writeTextFile(file, ported);
      assertEquals((await applyFile(lab, a, file)).compiled, 300);
      const table = await lab.datapath(a, rawTable);
      assertEquals((await applyFile(lab, a, file, true)).compiled, 0, "the whole file noted");
      Deno.removeSync(appliedPath(a.pinDir));
      assertEquals((await applyFile(lab, a, file, true)).compiled, 300);
      assertEquals(await lab.datapath(a, rawTable), table);
    }),
);

privilegedTest(
  "a note of compiled texts that is not warren's is ignored, with a warning, and every flow compiled",
  () =>
    withLab(async (lab, a, file) => {
      const flows = Array.from({ length: 100 }, (_, i) => flow(i));
      await writeState(file, flows);
      await applyFile(lab, a, file);
      const path = notedTextsPath(a.pinDir);
      const good = await Deno.readFile(path);
      flows[3] = flow(3, 77);
      await writeState(file, flows);
      assertEquals((await applyFile(lab, a, file)).compiled, 1);
      const table = await lab.datapath(a, rawTable);
      const flipped = good.slice();
      flipped[flipped.length - 1] ^= 1;
      const hostile: [Uint8Array, string][] = [
        [new TextEncoder().encode("{not a note"), ""],
        [good.slice(0, 60), ""],
        [flipped, " (its checksum is wrong)"],
        [good.slice(0, good.length - 8), " (its checksum is wrong)"],
        [misshapen(good), " (its sizes do not add up)"],
      ];
      for (const [bytes, why] of hostile) {
        await Deno.writeFile(path, bytes);
        Deno.removeSync(appliedPath(a.pinDir));
        const warned = await compiledInFull(lab, a, file, false);
        assertEquals(warned, [`warren: ${path} is not a note of compiled flows${why}: ignored`]);
        assertEquals(await lab.datapath(a, rawTable), table);
      }
    }),
);

privilegedTest(
  "a flow, a port or the change counter changed outside apply makes it compile and compare in full",
  () =>
    withLab(async (lab, a, file) => {
      const flows = Array.from({ length: 200 }, (_, i) => flow(i));
      await writeState(file, flows);
      await applyFile(lab, a, file, true);
      const table = await lab.datapath(a, rawTable);
      const full = { added: 0, modified: 0, removed: 0, unchanged: 200, compiled: 200 };
      const skip = { ...full, compiled: 0 };
      assertEquals(await applyFile(lab, a, file, true), skip);

      // A flow added, then one modified, behind apply's back.
      await warrenOk(a, [
        "flow",
        "add",
        "priority=5,in_port=web,ip,nw_dst=10.200.0.1 actions=drop",
      ]);
      assertEquals(await applyFile(lab, a, file, true), { ...full, removed: 1 });
      assertEquals(await applyFile(lab, a, file, true), skip);
      await warrenOk(a, [
        "flow",
        "mod",
        `${flows[5].replace(/ actions=.*/, "")} actions=drop`,
      ]);
      assertEquals(await applyFile(lab, a, file, true), { ...full, modified: 1, unchanged: 199 });
      assertEquals(await lab.datapath(a, rawTable), table);

      // A port added (it takes the next number) and deleted.
      await warrenOk(a, ["tunnel", "add", "spare", "gre", "remote_ip=192.0.2.9"]);
      await warrenOk(a, ["tunnel", "del", "spare"]);
      assertEquals(await applyFile(lab, a, file, true), full);

      // The change counter alone moved (as a repaired writer moves it).
      await lab.datapath(a, (dp) => {
        dp.maps.config.bump();
      });
      assertEquals(await applyFile(lab, a, file, true), full);
      assertEquals(await applyFile(lab, a, file, true), skip);

      // The same flows in the line form: another text, so compiled once, then recognised.
      const lines = file.replace(/yaml$/, "flows");
      await Deno.writeTextFile(lines, flows.join("\n") + "\n");
      assertEquals(await applyFile(lab, a, lines, true), full);
      assertEquals(await applyFile(lab, a, lines, true), skip);
      assertEquals(await lab.datapath(a, rawTable), table);
    }),
);

privilegedTest(
  "a note that is not warren's is ignored, with a warning, and the apply is still right",
  () =>
    withLab(async (lab, a, file) => {
      await writeState(file, Array.from({ length: 100 }, (_, i) => flow(i)));
      await applyFile(lab, a, file, true);
      const table = await lab.datapath(a, rawTable);
      const note = appliedPath(a.pinDir);
      const good = JSON.parse(await Deno.readTextFile(note));
      const hostile = [
        "{not json",
        JSON.stringify({ ...good, source: { ...good.source, flows: -1 } }),
        JSON.stringify({ ...good, source: { ...good.source, remotes: ["4:zz"] } }),
        JSON.stringify({ ...good, seq: 7 }),
        "null",
      ];
      for (const text of hostile) {
        await Deno.writeTextFile(note, text);
        const warned = await compiledInFull(lab, a, file, true);
        assertEquals(warned, [`warren: ${note} is not a note of an apply: ignored`], text);
        assertEquals(await lab.datapath(a, rawTable), table);
      }
      // And the apply wrote a good note again.
      assert((await applyFile(lab, a, file, true)).compiled === 0);
    }),
);

privilegedTest(
  "lines deleted are made in place, exactly their flows gone; a changed match that another flow has refuses the file, nothing applied",
  () =>
    withLab(async (lab, a, file) => {
      // Another owner's flow (its port once the file made it), kept by
      // the operator's applies.
      const owned = file.replace(/yaml$/, "fleet.flows");
      const fleet = "priority=10,in_port=web,ip,nw_dst=10.99.0.1 actions=drop";
      await Deno.writeTextFile(owned, fleet + "\n");
      const flows = Array.from({ length: N }, (_, i) => flow(i));
      await writeState(file, flows);
      await applyFile(lab, a, file);
      await warrenOk(a, ["apply", "--owner", "fleet", owned]);
      // Compared in full once, the owner's apply having moved the counter.
      assertEquals((await applyFile(lab, a, file)).unchanged, N);
      const index = await liveIndex(lab, a);
      const before = await lab.datapath(a, rawTable);
      const dump = () => warrenOk(a, ["flow", "dump"]);

      // One line deleted, then a block of 40 (more than the note is
      // followed over without its index): those flows alone go, in place.
      const applied = async (wanted: string[], removed: number) => {
        const earlier = await lab.datapath(a, rawTable);
        await writeState(file, wanted);
        assertEquals(await applyFile(lab, a, file), {
          added: 0,
          modified: 0,
          removed,
          unchanged: wanted.length,
          compiled: 0,
        });
        assertEquals(await liveIndex(lab, a), index, "changed in place");
        const now = await lab.datapath(a, rawTable);
        assertEquals(now.length, earlier.length - removed);
        assert(now.every((e) => earlier.includes(e)), "every other entry as it was");
      };
      const one = flows.toSpliced(1234, 1);
      await applied(one, 1);
      assert(!(await dump()).includes("nw_dst=10.0.4.210 "), "flow 1234 gone");
      assert((await dump()).includes("nw_dst=10.0.4.211 "), "flow 1235 kept");
      const block = one.toSpliced(100, 40);
      await applied(block, 40);
      const table = await lab.datapath(a, rawTable);

      // A changed flow with the match of a flow that stays, or of the
      // other owner's, and a line given twice: refused, nothing applied.
      const refused = async (wanted: string[], why: string) => {
        await writeState(file, wanted);
        await assertRejects(() => applyFile(lab, a, file), Error, why);
        assertEquals(await lab.datapath(a, rawTable), table);
        assertEquals(await liveIndex(lab, a), index);
      };
      const same = "two flows have the same match";
      await refused(block.with(10, flow(20, 33)), same);
      await refused(block.with(10, fleet), `owner "fleet"'s`);
      await refused([...block, block[7]], same);

      // The file as first applied: the flows back, in place, and the
      // table what a fresh apply of it makes but for their ids.
      await writeState(file, flows);
      assertEquals(await applyFile(lab, a, file), {
        added: 41,
        modified: 0,
        removed: 0,
        unchanged: N - 41,
        compiled: 41,
      });
      assertEquals(await liveIndex(lab, a), index);
      assertEquals((await lab.datapath(a, rawTable)).length, before.length);
    }),
);

Deno.test("the texts' digests an apply keeps for its note come back whole and in order, past what it holds in memory", () => {
  const count = 40000;
  const want = new Uint32Array(3 * count);
  using kept = new TextDigests(true);
  for (let n = 0; n < count; n++) {
    const text = flow(n);
    textDigest(text, want, n);
    textDigest(text, kept.words, kept.slot(n));
  }
  const got: number[] = [];
  for (const part of kept.parts(count)) got.push(...part);
  assertEquals(new Uint32Array(got), want);
  // A dry run's are not kept: no note can be made of them.
  using dry = new TextDigests(false);
  for (let n = 0; n < count; n++) textDigest(flow(n), dry.words, dry.slot(n));
  assert.throws(() => [...dry.parts(count)]);
});
