/**
 * The note of the last apply: the same file applied again reads and writes
 * nothing, and a table changed behind apply's back is still compared and
 * repaired; YAML flow items taken without the YAML parser read as it would
 * read them.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { warren, warrenJson, warrenOk } from "./helpers/cli.ts";
import { parse as parseYaml } from "yaml";
import type { FlowSource } from "../src/tunnel/apply.ts";
import { PortError } from "../src/tunnel/port.ts";
import { readStateFile } from "../src/tunnel/state_file.ts";

const N = 20000;

privilegedTest(
  "an apply of the same file again reads and writes nothing; a table changed behind its back is still repaired",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a] = lab.hosts;
    await warrenOk(a, ["up", "--underlay", "u0"]);
    const dir = await Deno.makeTempDir();
    try {
      const file = `${dir}/state.yaml`;
      const flows = Array.from(
        { length: N },
        (_, i) =>
          `priority=10,in_port=web,ip,nw_dst=10.0.${i >> 8}.${i & 255} actions=set_tunnel(id=${
            i % 100 + 1
          },dst=192.0.2.2),output:vx0`,
      );
      await Deno.writeTextFile(
        file,
        "ports:\n  - { name: web, device: wl0 }\n" +
          "tunnels:\n  - { name: vx0, proto: vxlan, options: { remote_ip: flow, key: flow } }\n" +
          "flows:\n" + flows.map((f) => `  - ${f}\n`).join(""),
      );
      await warrenOk(a, ["apply", file]);
      // The table as text, without flow ids (a flow added again takes a new one).
      const table = async () =>
        (await warrenJson<{ priority: number; match: string; actions: string }[]>(a, [
          "flow",
          "dump",
        ])).map((f) => `priority=${f.priority},${f.match} actions=${f.actions}`).sort();
      const want = await table();
      assertEquals(want.length, N);
      const live = () =>
        lab.datapath(a, (dp) => {
          const cfg = dp.maps.config.read();
          return { seq: cfg.seq, index: dp.maps.flowIndexId(cfg.gen & 1) };
        });
      const before = await live();
      // Armed where apply would read the table: the same apply never gets there.
      const compare = { WARREN_FAILPOINTS: "flow.apply.compare" };
      const again = await warren(a, ["apply", file], undefined, compare);
      assertEquals(again.code, 0, again.stderr);
      assert.match(
        again.stdout,
        new RegExp(`flows: 0 added, 0 modified, 0 removed, ${N} unchanged`),
      );
      assertEquals(await live(), before, "no write: the change counter and the index stay");

      // Behind apply's back: one flow more, one of the file's deleted.
      await warrenOk(a, [
        "flow",
        "add",
        "priority=5,in_port=web,ip,nw_dst=10.200.0.1 actions=drop",
      ]);
      await warrenOk(a, ["flow", "del", "--strict", "priority=10,in_port=web,ip,nw_dst=10.0.0.7"]);
      const changed = await warren(a, ["apply", file], undefined, compare);
      assertEquals(changed.code, 137, "the changed table is compared");
      assert.match(
        await warrenOk(a, ["apply", file]),
        new RegExp(`flows: 1 added, 0 modified, 1 removed, ${N - 1} unchanged`),
      );
      assertEquals(await table(), want, "the file's table again");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("YAML flow items read as the YAML parser reads them, however each is written", () => {
  const items = [
    "priority=10,ip actions=drop",
    "'ip,nw_dst=10.0.0.1 actions=drop'",
    "ip,nw_dst=10.0.0.2 actions=drop # a comment",
    '"tcp,tp_dst=80 actions=drop"',
    "ip,nw_dst=10.0.0.3 actions=output:vx0   ",
    "ip,nw_dst=10.0.0.4\n    actions=drop",
    "ip,nw_dst=10.0.0.5 actions=drop\t",
    "-ip,nw_dst=10.0.0.6 actions=drop",
  ];
  const text = "flows:\n" + items.map((i) => `  - ${i}\n`).join("");
  const file = Deno.makeTempFileSync({ suffix: ".yaml" });
  try {
    Deno.writeTextFileSync(file, text);
    const read = () => [...(readStateFile(file).flows as FlowSource).texts()];
    const want = (parseYaml(text) as { flows: unknown[] }).flows;
    assertEquals(read().map((f) => f.text), want);
    // One YAML reads as a mapping: refused, naming its line.
    Deno.writeTextFileSync(file, text + "  - ip,nw_dst=10.0.0.7 actions=drop:\n");
    assert.throws(read, PortError, `${file}:11: flows are strings in flow syntax, not {`);
  } finally {
    Deno.removeSync(file);
  }
});
