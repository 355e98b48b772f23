/**
 * Fails when a module of the repository imports itself through others.
 *
 * A cycle makes the order modules run in depend on which one is imported
 * first, and ties the modules in it together so that none can be read, moved
 * or tested alone. `deno task check` runs this over every entry point:
 *
 *     deno run --allow-read --allow-run scripts/import_cycles.ts [entry.ts ...]
 *
 * With no arguments the entries are the library, the CLI, the demo, the
 * bench and every test file. The module graph is Deno's own (`deno info
 * --json`), so imports resolve exactly as they do at run time; every local
 * import counts, `import type` and dynamic `import()` included, since each
 * ties one module to another. Each cycle is printed as the chain of files
 * that closes it.
 *
 * @module
 */

import { relative } from "node:path";

/** Local modules and the local modules each imports. */
export type ImportGraph = Map<string, Set<string>>;

/** One module of `deno info --json`, as far as this script reads it. */
interface InfoModule {
  specifier: string;
  dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[];
}

/** The local (file:) modules reachable from `entry` and their imports, added to `graph`. */
export async function addImports(graph: ImportGraph, entry: string): Promise<void> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`deno info ${entry} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    roots: string[];
    modules: InfoModule[];
  };
  // Entries first: a cycle is then told from the module nearest an entry.
  for (const r of info.roots) if (!graph.has(r)) graph.set(r, new Set());
  for (const m of info.modules) {
    if (!m.specifier.startsWith("file:")) continue;
    const to = graph.get(m.specifier) ?? new Set<string>();
    for (const d of m.dependencies ?? []) {
      for (const s of [d.code?.specifier, d.type?.specifier]) {
        if (s?.startsWith("file:")) to.add(s);
      }
    }
    graph.set(m.specifier, to);
  }
}

/** A group of modules that import each other, and one cycle through them. */
export interface Cycle {
  /** The modules along one cycle, the first repeated at the end. */
  path: string[];
  /** Every module of the group (a strongly connected component). */
  modules: Set<string>;
}

/** One cycle per group of modules that import each other (Tarjan's algorithm). */
export function findCycles(graph: ImportGraph): Cycle[] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: Cycle[] = [];
  // Iterative: a deep import chain must not overflow the call stack.
  for (const root of graph.keys()) {
    if (index.has(root)) continue;
    const work: { node: string; next: Iterator<string> }[] = [];
    const visit = (node: string) => {
      index.set(node, index.size);
      low.set(node, index.get(node)!);
      stack.push(node);
      onStack.add(node);
      work.push({ node, next: (graph.get(node) ?? new Set()).values() });
    };
    visit(root);
    while (work.length) {
      const top = work[work.length - 1];
      const step = top.next.next();
      if (!step.done) {
        const to = step.value;
        if (!index.has(to)) visit(to);
        else if (onStack.has(to)) low.set(top.node, Math.min(low.get(top.node)!, index.get(to)!));
        continue;
      }
      work.pop();
      if (work.length) {
        const parent = work[work.length - 1].node;
        low.set(parent, Math.min(low.get(parent)!, low.get(top.node)!));
      }
      if (low.get(top.node) !== index.get(top.node)) continue;
      const group = new Set<string>();
      let n: string;
      do {
        n = stack.pop()!;
        onStack.delete(n);
        group.add(n);
      } while (n !== top.node);
      if (group.size > 1 || graph.get(top.node)?.has(top.node)) {
        cycles.push({ path: cycleWithin(graph, group, top.node), modules: group });
      }
    }
  }
  return cycles;
}

/** A shortest path from `start` back to itself inside `group` (breadth first). */
function cycleWithin(graph: ImportGraph, group: Set<string>, start: string): string[] {
  const from = new Map<string, string>();
  const queue = [start];
  for (let i = 0; i < queue.length; i++) {
    for (const to of graph.get(queue[i]) ?? []) {
      if (!group.has(to)) continue;
      if (to === start) {
        const path = [start];
        for (let n = queue[i]; n !== start; n = from.get(n)!) path.splice(1, 0, n);
        return [...path, start];
      }
      if (!from.has(to)) {
        from.set(to, queue[i]);
        queue.push(to);
      }
    }
  }
  throw new Error(`${start} is in no cycle of its group`);
}

/** The default entries: library, CLI, demo, bench, and every test file. */
function defaultEntries(): string[] {
  const tests = [...Deno.readDirSync("tests")]
    .filter((e) => e.isFile && e.name.endsWith("_test.ts"))
    .map((e) => `tests/${e.name}`)
    .sort();
  return ["mod.ts", "src/cli/main.ts", "src/demo/main.ts", "bench/main.ts", ...tests];
}

/** Checks `entries` (default: every entry point); returns the exit code. */
export async function main(entries: string[]): Promise<number> {
  const graph: ImportGraph = new Map();
  const all = entries.length ? entries : defaultEntries();
  for (const e of all) await addImports(graph, e);
  const cycles = findCycles(graph);
  const name = (s: string) => relative(Deno.cwd(), new URL(s).pathname);
  for (const c of cycles) {
    const more = c.modules.size - (c.path.length - 1);
    console.error(
      `import cycle: ${c.path.map(name).join(" -> ")}` +
        (more ? ` (and ${more} more modules import each other with these)` : ""),
    );
  }
  if (cycles.length) return 1;
  console.log(`no import cycles among ${graph.size} modules from ${all.length} entries`);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
