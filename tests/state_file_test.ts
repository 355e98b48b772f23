/**
 * State files streamed, at the size the issue names: the same million-flow
 * table from JSON, YAML and the line form gives byte-identical kernel
 * tables; a file with one bad flow on line 700 000 is refused whole,
 * naming that line, with nothing applied.
 */
import { createHash } from "node:crypto";
import { assert, assertEquals, assertThrows } from "./helpers/assert.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { warren, warrenOk } from "./helpers/cli.ts";
import { readStateFile } from "../src/tunnel/state_file.ts";
import type { FlowSource } from "../src/tunnel/apply.ts";
import { PortError } from "../src/tunnel/port.ts";

const N = 1_000_000;
const BAD_LINE = 700_000;

function flowText(i: number): string {
  return `priority=10,in_port=web,ip,nw_dst=10.${(i >> 16) & 255}.${(i >> 8) & 255}.${
    i & 255
  } actions=set_tunnel(id=${(i % 1000) + 1},dst=192.0.2.2),output:vx0`;
}

/** Each form: the lines before its first flow, and how it writes one flow and ends. */
const FORMS: Record<string, { head: string; line: (flow: string) => string; tail: string }> = {
  json: {
    head: JSON.stringify({
      ports: [{ name: "web", device: "wl0" }],
      tunnels: [{ name: "vx0", proto: "vxlan", options: { remote_ip: "flow", key: "flow" } }],
    }).slice(0, -1) + ',"flows":[\n',
    line: (f) => JSON.stringify(f) + ",\n",
    tail: "]}\n",
  },
  yaml: {
    head: "ports:\n  - { name: web, device: wl0 }\n" +
      "tunnels:\n  - { name: vx0, proto: vxlan, options: { remote_ip: flow, key: flow } }\n" +
      "flows:\n",
    line: (f) => `  - ${f}\n`,
    tail: "",
  },
  flows: { head: "# the table\n", line: (f) => f + "\n", tail: "" },
};

/**
 * Writes the table in `form` to `file`, a chunk at a time; with `bad`, the
 * flow on line BAD_LINE names a port that does not exist.
 */
async function writeState(file: string, form: string, bad: boolean): Promise<void> {
  const { head, line, tail } = FORMS[form];
  const firstLine = head.split("\n").length;
  using f = await Deno.open(file, { write: true, create: true, truncate: true });
  const enc = new TextEncoder();
  let chunk = head;
  for (let i = 0; i < N; i++) {
    const text = bad && firstLine + i === BAD_LINE ? "in_port=nowhere actions=drop" : flowText(i);
    // JSON has no comma after its last item.
    chunk += form === "json" && i === N - 1 ? line(text).replace(/,\n$/, "\n") : line(text);
    if (chunk.length > 1 << 20) {
      await f.write(enc.encode(chunk));
      chunk = "";
    }
  }
  await f.write(enc.encode(chunk + tail));
}

/**
 * The live flow index: how many entries, and a SHA-256 over every entry's
 * key and value bytes in key order, so two tables compare byte for byte
 * without holding a million strings each.
 */
function kernelTable(lab: Lab, h: LabHost): Promise<{ count: number; sha256: string }> {
  return lab.datapath(h, (dp) => {
    const cfg = dp.maps.config.read();
    using index = dp.maps.flowIndex(cfg.gen & 1)!;
    // Each entry as a one-byte string: key bytes first, so they sort by key.
    const entries: string[] = [];
    for (const c of index.raw.lookupBatch(4096)) {
      const ks = c.keys.length / c.count, vs = c.values.length / c.count;
      for (let i = 0; i < c.count; i++) {
        entries.push(
          String.fromCharCode(...c.keys.subarray(i * ks, (i + 1) * ks)) +
            String.fromCharCode(...c.values.subarray(i * vs, (i + 1) * vs)),
        );
      }
    }
    entries.sort();
    const hash = createHash("sha256");
    for (const e of entries) hash.update(e, "latin1");
    return { count: entries.length, sha256: hash.digest("hex") };
  });
}

privilegedTest(
  "a million flows from JSON, YAML and the line form: byte-identical kernel tables; a bad flow on line 700 000 is refused whole, naming its line",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a] = lab.hosts;
    await warrenOk(a, ["up", "--underlay", "u0", "--max-flows", String(N + 65536)]);
    const dir = await Deno.makeTempDir();
    try {
      const tables: { count: number; sha256: string }[] = [];
      for (const form of Object.keys(FORMS)) {
        const file = `${dir}/state.${form}`;
        await writeState(file, form, false);
        // The line form keeps the ports the others made.
        await warrenOk(a, ["flow", "del"]);
        assert.match(
          await warrenOk(a, ["apply", file]),
          new RegExp(`flows: ${N} added, 0 modified, 0 removed, 0 unchanged`),
        );
        await Deno.remove(file);
        tables.push(await kernelTable(lab, a));
      }
      assertEquals(tables[0].count, N);
      assertEquals(tables[1], tables[0]);
      assertEquals(tables[2], tables[0]);

      // Every form: the bad flow names its line, nothing changes.
      await warrenOk(a, ["flow", "del", "ip,nw_dst=10.0.0.0/24"]);
      const before = await kernelTable(lab, a);
      assertEquals(before.count, N - 256);
      for (const form of Object.keys(FORMS)) {
        const file = `${dir}/bad.${form}`;
        await writeState(file, form, true);
        const r = await warren(a, ["apply", file]);
        await Deno.remove(file);
        assertEquals(r.code, 1, r.stdout);
        assert.ok(r.stderr.includes(`${file}:${BAD_LINE}: `), r.stderr);
        assert.match(r.stderr, /nowhere/);
        assertEquals(await kernelTable(lab, a), before, form);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("a state file changed between its digest and its flows is refused, naming the file", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const path = `${dir}/state.flows`;
    Deno.writeTextFileSync(path, "priority=1,actions=drop\n");
    const read = (source: FlowSource) => [...source.texts()].map((f) => f.text);
    // Unchanged: the flows read after the digest are the file's.
    const same = readStateFile(path).flows as FlowSource;
    same.digest?.();
    assertEquals(read(same), ["priority=1,actions=drop"]);
    // Changed after the digest was taken: reading its flows fails.
    const changed = readStateFile(path).flows as FlowSource;
    changed.digest?.();
    Deno.writeTextFileSync(path, "priority=2,actions=drop\npriority=3,actions=drop\n");
    assertThrows(() => read(changed), Error, `${path} changed while it was being applied`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/** The state file `text` read as JSON: its ports and its flows with their lines. */
function readJson(text: string): { ports: unknown; flows: string[]; lines: number[] } {
  const file = Deno.makeTempFileSync({ suffix: ".json" });
  try {
    Deno.writeTextFileSync(file, text);
    const state = readStateFile(file);
    const flows = [...(state.flows as FlowSource).texts()];
    for (const f of flows) assert.ok(f.where.startsWith(`${file}:`), f.where);
    return {
      ports: state.ports,
      flows: flows.map((f) => f.text),
      lines: flows.map((f) => Number(f.where.slice(file.length + 1))),
    };
  } finally {
    Deno.removeSync(file);
  }
}

/** Reading the JSON state file `text` fails with `why` on `line`. */
function jsonRefused(text: string, line: number, why: string): void {
  const file = Deno.makeTempFileSync({ suffix: ".json" });
  try {
    Deno.writeTextFileSync(file, text);
    assertThrows(
      () => [...(readStateFile(file).flows as FlowSource).texts()],
      PortError,
      `${file}:${line}: ${why}`,
    );
  } finally {
    Deno.removeSync(file);
  }
}

Deno.test("JSON flow items read as JSON.parse reads them, however each is written", () => {
  const items = [
    "priority=1,ip actions=drop",
    'a \\"quoted\\" one, a \\\\ and a \\\\\\" too',
    "\\u0074ab\\t, \\u00e9, \\ud83d\\ude00 and ],[ inside",
    "non-ASCII é 😀 ],",
    "ends with a comma,",
    '  "spaced"\t ,  ',
    '"two", "on one line"',
    '"one" ,"then another"',
    '"ends with a string"',
    '"the last one" ',
  ].map((i) => i.startsWith('"') || i.startsWith(" ") ? i : `"${i}"`);
  const text = '{"ports": [{"name": "web", "device": "wl0", "flows": [\n' +
    '"x",\n"not a flow",\n"z"]}],\n"flows": [\n' +
    items.map((i, n) => n === items.length - 1 || /, *$/.test(i) ? i : `${i},`).join("\n") +
    "\n]}\n";
  const want = JSON.parse(text);
  const got = readJson(text);
  assertEquals(got.flows, want.flows.map(String));
  assertEquals(got.ports, want.ports);
  // Each flow on its own line, from line 6; two on lines 12 and 13.
  assertEquals(got.lines, [6, 7, 8, 9, 10, 11, 12, 12, 13, 13, 14, 15]);
});

Deno.test("JSON state files that are not valid JSON are refused, naming the line", () => {
  const head = '{"flows": [\n"x",\n';
  // An item without its comma, then one with.
  jsonRefused(head + '"a"\n"b",\n"c"]}\n', 4, "not valid JSON");
  // Trailing commas, after the list's `[` and after an item.
  jsonRefused('{"flows": [\n"a",\n]}\n', 3, "not valid JSON");
  jsonRefused(head + '"a",\n]}\n', 4, "not valid JSON");
  // A number or a string not ended on its line, then an item: the next
  // line ends them.
  jsonRefused(head + '12\n"b",\n"c"]}\n', 4, "flows are strings in flow syntax, not 12");
  jsonRefused(head + '"a\n"b",\n"c"]}\n', 4, "not valid JSON");
  jsonRefused(head + '"a", 12\n"b",\n"c"]}\n', 4, "flows are strings in flow syntax, not 12");
  // A string then something else; a bad escape; a raw control character.
  jsonRefused(head + '"a", x\n"c"]}\n', 3, 'not valid JSON: Unexpected "x" in state START');
  jsonRefused(head + '"a\\q",\n"c"]}\n', 3, "not valid JSON");
  jsonRefused(head + '"a\tb",\n"c"]}\n', 3, "not valid JSON");
  jsonRefused(head + '"a\\u12",\n"c"]}\n', 3, "not valid JSON");
  // A flow that is not a string, after items read without the parser.
  jsonRefused(
    head + '"a",\n{"b": 1},\n"c"]}\n',
    4,
    'flows are strings in flow syntax, not {"b":1}',
  );
  // The top level as before.
  jsonRefused(head + '"a",\n"b"], "floes": []}\n', 4, '"floes" is not part of a state file');
  jsonRefused(head + '"a",\n"b"], "ports": "web"}\n', 4, "ports must be a list");
  jsonRefused(head + '"a",\n"b"]}\n\n"c",\n', 6, "not valid JSON: text after the end");
  jsonRefused(head + '"a",\n"b",\n', 4, "not valid JSON");
});
