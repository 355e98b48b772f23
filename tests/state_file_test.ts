/**
 * State files streamed: the same table from JSON, YAML and the line form
 * gives byte-identical kernel tables; a bad flow deep in a file is refused
 * whole, naming its line, with nothing applied. (At a million flows these
 * are the bench's business; 20 000 keep the suite quick.)
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { warren, warrenOk } from "./helpers/cli.ts";

const N = 20000;
const BAD = 15000;

function flowText(i: number): string {
  return `priority=10,in_port=web,ip,nw_dst=10.${(i >> 16) & 255}.${(i >> 8) & 255}.${
    i & 255
  } actions=set_tunnel(id=${(i % 1000) + 1},dst=192.0.2.2),output:vx0`;
}

/** The table in `form`, with flow `bad` (if any) made wrong; and that flow's line. */
function stateText(form: string, bad = -1): { text: string; badLine: number } {
  const flows = Array.from(
    { length: N },
    (_, i) => i === bad ? "in_port=nowhere actions=drop" : flowText(i),
  );
  if (form === "json") {
    const head = JSON.stringify({
      ports: [{ name: "web", device: "wl0" }],
      tunnels: [{ name: "vx0", proto: "vxlan", options: { remote_ip: "flow", key: "flow" } }],
    }).slice(0, -1) + ',"flows":[';
    return {
      text: head + "\n" + flows.map((f) => JSON.stringify(f)).join(",\n") + "\n]}\n",
      badLine: bad + 2,
    };
  }
  if (form === "yaml") {
    return {
      text: "ports:\n  - { name: web, device: wl0 }\n" +
        "tunnels:\n  - { name: vx0, proto: vxlan, options: { remote_ip: flow, key: flow } }\n" +
        "flows:\n" + flows.map((f) => `  - ${f}\n`).join(""),
      badLine: bad + 6,
    };
  }
  return { text: "# the table\n" + flows.join("\n") + "\n", badLine: bad + 2 };
}

/** The live flow index, every entry as hex, sorted. */
function kernelTable(lab: Lab, h: LabHost): Promise<string[]> {
  return lab.datapath(h, (dp) => {
    const cfg = dp.maps.config.read();
    using index = dp.maps.flowIndex(cfg.gen & 1)!;
    const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    const out: string[] = [];
    for (const c of index.raw.lookupBatch(4096)) {
      const ks = c.keys.length / c.count, vs = c.values.length / c.count;
      for (let i = 0; i < c.count; i++) {
        out.push(
          hex(c.keys.subarray(i * ks, (i + 1) * ks)) + hex(c.values.subarray(i * vs, (i + 1) * vs)),
        );
      }
    }
    return out.sort();
  });
}

privilegedTest(
  "the same table from JSON, YAML and the line form: byte-identical kernel tables; a bad flow is refused whole, naming its line",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a] = lab.hosts;
    await warrenOk(a, ["up", "--underlay", "u0"]);
    const dir = await Deno.makeTempDir();
    try {
      const tables: string[][] = [];
      for (const form of ["json", "yaml", "flows"]) {
        const file = `${dir}/state.${form}`;
        await Deno.writeTextFile(file, stateText(form).text);
        // The line form keeps the ports the others made.
        await warrenOk(a, ["flow", "del"]);
        assert.match(
          await warrenOk(a, ["apply", file]),
          new RegExp(`flows: ${N} added, 0 modified, 0 removed, 0 unchanged`),
        );
        tables.push(await kernelTable(lab, a));
      }
      assertEquals(tables[0].length, N);
      assertEquals(tables[1], tables[0]);
      assertEquals(tables[2], tables[0]);

      // Every form: the bad flow names its line, nothing changes.
      await warrenOk(a, ["flow", "del", "ip,nw_dst=10.0.0.0/24"]);
      const before = await kernelTable(lab, a);
      for (const form of ["json", "yaml", "flows"]) {
        const file = `${dir}/bad.${form}`;
        const { text, badLine } = stateText(form, BAD);
        await Deno.writeTextFile(file, text);
        const r = await warren(a, ["apply", file]);
        assertEquals(r.code, 1, r.stdout);
        assert.ok(r.stderr.includes(`${file}:${badLine}: `), r.stderr);
        assert.match(r.stderr, /nowhere/);
        assertEquals(await kernelTable(lab, a), before, form);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
