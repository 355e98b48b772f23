/**
 * An apply of the same text as the last one, with the datapath as that
 * apply left it, neither parses nor compiles a flow (counted by
 * `applyStats`), and leaves the kernel table byte for byte what a fresh
 * apply makes; any change of the datapath since, or a note that is not
 * warren's, makes it compile and compare in full.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { warrenOk } from "./helpers/cli.ts";
import { applyState } from "../src/tunnel/apply.ts";
import type { Datapath } from "../src/tunnel/datapath.ts";
import { applyStats } from "../src/tunnel/flows/apply.ts";
import { appliedPath } from "../src/tunnel/lock.ts";
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

/** Applies `file` to `host`'s datapath: the plan's flow counts, and how many flows were compiled. */
function applyFile(lab: Lab, host: LabHost, file: string) {
  return lab.datapath(host, async (dp) => {
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

      // k flows of the file changed: all compiled again, the change made.
      const k = 3;
      for (let i = 0; i < k; i++) flows[i * 1000] = flow(i * 1000, 4000 + i);
      await writeState(file, flows);
      assertEquals(await applyFile(lab, a, file), {
        added: 0,
        modified: k,
        removed: 0,
        unchanged: N - k,
        compiled: N,
      });
      assertEquals((await applyFile(lab, a, file)).compiled, 0, "and then recognised");
    }),
);

privilegedTest(
  "a flow, a port or the change counter changed outside apply makes it compile and compare in full",
  () =>
    withLab(async (lab, a, file) => {
      const flows = Array.from({ length: 200 }, (_, i) => flow(i));
      await writeState(file, flows);
      await applyFile(lab, a, file);
      const table = await lab.datapath(a, rawTable);
      const full = { added: 0, modified: 0, removed: 0, unchanged: 200, compiled: 200 };
      const skip = { ...full, compiled: 0 };
      assertEquals(await applyFile(lab, a, file), skip);

      // A flow added, then one modified, behind apply's back.
      await warrenOk(a, [
        "flow",
        "add",
        "priority=5,in_port=web,ip,nw_dst=10.200.0.1 actions=drop",
      ]);
      assertEquals(await applyFile(lab, a, file), { ...full, removed: 1 });
      assertEquals(await applyFile(lab, a, file), skip);
      await warrenOk(a, [
        "flow",
        "mod",
        `${flows[5].replace(/ actions=.*/, "")} actions=drop`,
      ]);
      assertEquals(await applyFile(lab, a, file), { ...full, modified: 1, unchanged: 199 });
      assertEquals(await lab.datapath(a, rawTable), table);

      // A port added (it takes the next number) and deleted.
      await warrenOk(a, ["tunnel", "add", "spare", "gre", "remote_ip=192.0.2.9"]);
      await warrenOk(a, ["tunnel", "del", "spare"]);
      assertEquals(await applyFile(lab, a, file), full);

      // The change counter alone moved (as a repaired writer moves it).
      await lab.datapath(a, (dp) => {
        dp.maps.config.bump();
      });
      assertEquals(await applyFile(lab, a, file), full);
      assertEquals(await applyFile(lab, a, file), skip);

      // The same flows in the line form: another text, so compiled once, then recognised.
      const lines = file.replace(/yaml$/, "flows");
      await Deno.writeTextFile(lines, flows.join("\n") + "\n");
      assertEquals(await applyFile(lab, a, lines), full);
      assertEquals(await applyFile(lab, a, lines), skip);
      assertEquals(await lab.datapath(a, rawTable), table);
    }),
);

privilegedTest(
  "a note that is not warren's is ignored, with a warning, and the apply is still right",
  () =>
    withLab(async (lab, a, file) => {
      await writeState(file, Array.from({ length: 100 }, (_, i) => flow(i)));
      await applyFile(lab, a, file);
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
        const warned: string[] = [];
        const warn = console.warn;
        console.warn = (...args: unknown[]) => warned.push(args.join(" "));
        try {
          assertEquals(await applyFile(lab, a, file), {
            added: 0,
            modified: 0,
            removed: 0,
            unchanged: 100,
            compiled: 100,
          });
        } finally {
          console.warn = warn;
        }
        assertEquals(warned, [`warren: ${note} is not a note of an apply: ignored`], text);
        assertEquals(await lab.datapath(a, rawTable), table);
      }
      // And the apply wrote a good note again.
      assert((await applyFile(lab, a, file)).compiled === 0);
    }),
);
