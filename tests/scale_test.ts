/**
 * A million flows through the command line: `apply` with progress, a
 * streamed `flow dump`, filtered dumps, `stats` and `status`, and an
 * `apply` of the same table that changes nothing. How fast is the bench's
 * business (`deno task bench`); this proves it all works at that size.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { warren, warrenCommand, warrenJson, warrenOk } from "./helpers/cli.ts";

const N = 1_000_000;

function flowText(i: number): string {
  return `priority=10,in_port=web,ip,nw_dst=10.${(i >> 16) & 255}.${(i >> 8) & 255}.${
    i & 255
  } actions=set_tunnel(id=${(i % 1000) + 1},dst=192.0.2.2),output:vx0`;
}

privilegedTest(
  "a million flows: apply with progress, streamed dump, filters, a no-op apply",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a] = lab.hosts;
    await warrenOk(a, ["up", "--underlay", "u0", "--max-flows", String(1 << 20)]);
    const file = await Deno.makeTempFile({ suffix: ".json" });
    try {
      const f = await Deno.open(file, { write: true });
      const enc = new TextEncoder();
      await f.write(enc.encode(
        '{"ports":[{"name":"web","device":"wl0"}],' +
          '"tunnels":[{"name":"vx0","proto":"vxlan","options":{"remote_ip":"flow","key":"flow"}}],' +
          '"flows":[\n',
      ));
      for (let i = 0; i < N; i += 10000) {
        const part = Array.from({ length: 10000 }, (_, j) => JSON.stringify(flowText(i + j)));
        await f.write(enc.encode(part.join(",\n") + (i + 10000 < N ? ",\n" : "\n]}\n")));
      }
      f.close();

      const applied = await warren(a, ["apply", file]);
      assertEquals(applied.code, 0, applied.stderr);
      assert.match(applied.stdout, /flows: 1000000 added, 0 modified, 0 removed, 0 unchanged/);
      // Long work says how far it got.
      assert.match(applied.stderr, /compile: 1000000\/1000000 flows/);
      assert.match(applied.stderr, /install: 1000000\/1000000 flows/);

      // The dump streams: count its lines as they come.
      const child = warrenCommand(a, ["flow", "dump"]).spawn();
      let lines = 0, first = "";
      const dec = new TextDecoder();
      for await (const chunk of child.stdout) {
        for (const b of chunk) if (b === 10) lines++;
        if (!first) first = dec.decode(chunk.subarray(0, 200));
      }
      assertEquals((await child.status).code, 0);
      assertEquals(lines, N);
      assert.match(
        first,
        /^priority=10,in_port=web,ip,nw_dst=10\.0\.0\.0 actions=set_tunnel\(id=1,dst=192\.0\.2\.2\),output:vx0 packets:0 bytes:0 used:never flags:none\n/,
      );

      const some = await warrenJson<{ match: string }[]>(a, [
        "flow",
        "dump",
        "ip,nw_dst=10.3.0.0/16",
      ]);
      assertEquals(some.length, 65536);
      assert.ok(some.every((f) => f.match.startsWith("in_port=web,ip,nw_dst=10.3.")));
      const status = await warrenJson<{ tables: { name: string; used: number }[] }>(a, ["status"]);
      const used = (n: string) => status.tables.find((t) => t.name === n)!.used;
      assertEquals([used("flows"), used("masks"), used("tunnel_keys")], [N, 1, 1000]);
      assert.match(await warrenOk(a, ["stats"]), /web\s+0\s+0/);

      const again = await warren(a, ["apply", file]);
      assertEquals(again.code, 0, again.stderr);
      assert.match(again.stdout, /flows: 0 added, 0 modified, 0 removed, 1000000 unchanged/);
    } finally {
      await Deno.remove(file);
    }
  },
);
