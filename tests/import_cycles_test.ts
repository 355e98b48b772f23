/**
 * The import-cycle check of `deno task check`: it finds every cycle, only
 * cycles, and names the files of a cycle introduced into real modules.
 */
import fc from "fast-check";
import { dirname } from "node:path";
import { assert, assertEquals } from "./helpers/assert.ts";
import { findCycles, type ImportGraph } from "../scripts/import_cycles.ts";

const SCRIPT = new URL("../scripts/import_cycles.ts", import.meta.url).pathname;

/** Whether `g` has no cycle, by Kahn's algorithm: a different method from the one tested. */
function acyclic(g: ImportGraph): boolean {
  const into = new Map([...g.keys()].map((n) => [n, 0]));
  for (const tos of g.values()) for (const t of tos) into.set(t, (into.get(t) ?? 0) + 1);
  const ready = [...into].filter(([, n]) => n === 0).map(([m]) => m);
  let done = 0;
  while (ready.length) {
    const n = ready.pop()!;
    done++;
    for (const t of g.get(n) ?? []) {
      into.set(t, into.get(t)! - 1);
      if (into.get(t) === 0) ready.push(t);
    }
  }
  return done === into.size;
}

const graphs = fc.array(fc.tuple(fc.nat(7), fc.nat(7)), { maxLength: 20 }).map((edges) => {
  const g: ImportGraph = new Map();
  for (const [a, b] of edges) {
    for (const n of [`m${a}`, `m${b}`]) if (!g.has(n)) g.set(n, new Set());
    g.get(`m${a}`)!.add(`m${b}`);
  }
  return g;
});

Deno.test("findCycles reports a cycle exactly when there is one, each a real one", () => {
  fc.assert(fc.property(graphs, (g) => {
    const cycles = findCycles(g);
    assertEquals(cycles.length === 0, acyclic(g));
    const seen = new Set<string>();
    for (const c of cycles) {
      assertEquals(c.path[0], c.path[c.path.length - 1]);
      for (let i = 0; i + 1 < c.path.length; i++) {
        assert.ok(g.get(c.path[i])!.has(c.path[i + 1]), `${c.path[i]} does not import the next`);
        assert.ok(c.modules.has(c.path[i]));
      }
      // Each module belongs to one group at most.
      for (const m of c.modules) {
        assert.ok(!seen.has(m), `${m} is in two groups`);
        seen.add(m);
      }
    }
  }));
});

/** Runs the check on `entries` in a directory of `files`. */
async function check(files: Record<string, string>, entries: string[]) {
  const dir = await Deno.makeTempDir();
  try {
    for (const [name, text] of Object.entries(files)) {
      await Deno.mkdir(dirname(`${dir}/${name}`), { recursive: true });
      await Deno.writeTextFile(`${dir}/${name}`, text);
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", "--allow-run", SCRIPT, ...entries],
      cwd: dir,
    }).output();
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// The shape of the cycle the CLI had: the entry registers a command whose
// file imports a helper back from the entry.
const CLI = {
  "cli/main.ts": 'import { register } from "./commands/flow.ts";\nexport const toInt = Number;\n',
  "cli/commands/flow.ts": 'import { toInt } from "../main.ts";\nexport const register = toInt;\n',
  "lib.ts": "export type Flow = number;\n",
};

Deno.test("the check names the files of a cycle and fails", async () => {
  const r = await check(CLI, ["cli/main.ts"]);
  assertEquals(r.code, 1, r.stderr);
  assertEquals(r.stderr.trim(), "import cycle: cli/main.ts -> cli/commands/flow.ts -> cli/main.ts");
});

Deno.test("import type and dynamic import() close cycles too", async () => {
  const r = await check({
    "a.ts": 'import type { B } from "./b.ts";\nexport type A = B;\n',
    "b.ts": 'export type B = number;\nexport const a = () => import("./a.ts");\n',
  }, ["a.ts"]);
  assertEquals(r.code, 1, r.stderr);
  assertEquals(r.stderr.trim(), "import cycle: a.ts -> b.ts -> a.ts");
});

Deno.test("the check passes once the shared helper has its own module", async () => {
  const r = await check({
    "cli/main.ts": 'import { register } from "./commands/flow.ts";\nregister("1");\n',
    "cli/common.ts": "export const toInt = Number;\n",
    "cli/commands/flow.ts":
      'import { toInt } from "../common.ts";\nexport const register = toInt;\n',
  }, ["cli/main.ts"]);
  assertEquals(r.code, 0, r.stderr);
});
