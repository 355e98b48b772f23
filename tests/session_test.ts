/**
 * Sessions: many flow changes under one lock, from the library and from
 * `flow add|del --file -` reading stdin as a stream. Killed midway, the
 * same script run again ends exact; two at once are serialized and lose
 * nothing. The next hops of the remotes a session's flows name are
 * resolved in batches in the background, and all of them by its end.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { parseFlow } from "../src/tunnel/flow_syntax.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { warren, warrenCommand, warrenOk } from "./helpers/cli.ts";
import { run } from "../src/lab/run.ts";

function flowText(i: number): string {
  return `priority=10,in_port=web,ip,nw_dst=10.0.${i >> 8}.${i & 255} ` +
    `actions=set_tunnel(id=${1 + i % 50},dst=192.0.2.2),output:vx0`;
}

/** The flows installed, as `flow dump --no-counters` prints them, sorted. */
async function table(h: LabHost): Promise<string[]> {
  return (await warrenOk(h, ["flow", "dump", "--no-counters"])).split("\n").filter(Boolean)
    .sort();
}

async function setUp(lab: Lab): Promise<LabHost> {
  const [a] = lab.hosts;
  await warrenOk(a, ["up", "--underlay", "u0"]);
  await warrenOk(a, ["port", "add", "web", "wl0"]);
  await warrenOk(a, ["tunnel", "add", "vx0", "vxlan", "remote_ip=flow", "key=flow"]);
  return a;
}

privilegedTest("a session installs flows one call at a time under one lock", async () => {
  await using lab = await Lab.create({ ipv6: false });
  const a = await setUp(lab);
  await lab.datapath(a, async (dp) => {
    const names = dp.portNames();
    const s = await dp.session();
    let other;
    try {
      for (let i = 0; i < 500; i++) await s.addFlows([parseFlow(flowText(i), names)]);
      assertEquals(s.deleteFlows({ match: parseFlow(flowText(7), names).match }, true), 1);
      // Another writer waits for the session: the lock is held.
      other = warren(a, ["flow", "add", flowText(900)]);
      let done = false;
      other.then(() => done = true);
      await new Promise((r) => setTimeout(r, 1500));
      assertEquals(done, false, "a writer went ahead during the session");
    } finally {
      s.close();
    }
    assertEquals((await other).code, 0);
    assertEquals(dp.flows.usage().flows, 500);
  });
});

privilegedTest(
  "a session's remotes: every next hop kept once it ends, each install done when its call returns",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const a = await setUp(lab);
    // Each flow names a remote of its own on the underlay's subnet.
    const remotes = Array.from({ length: 120 }, (_, i) => `192.0.2.${10 + i}`);
    const text = (i: number) =>
      `priority=10,in_port=web,ip,nw_dst=10.9.0.${i} ` +
      `actions=set_tunnel(id=7,dst=${remotes[i]}),output:vx0`;
    await lab.datapath(a, async (dp) => {
      const names = dp.portNames();
      {
        await using s = await dp.session();
        for (let i = 0; i < remotes.length; i++) {
          await s.addFlows([parseFlow(text(i), names)]);
          // The flow is in before the call returns, whatever its next hop.
          assertEquals(dp.flows.usage().flows, i + 1);
        }
      }
      const neigh = JSON.parse(
        await run(["ip", "-n", a.ns.name, "-j", "neigh", "show", "dev", "u0"]),
      ) as { dst: string; managed?: null }[];
      const managed = new Set(neigh.filter((n) => "managed" in n).map((n) => n.dst));
      assertEquals(remotes.filter((r) => !managed.has(r)), []);
    });
  },
);

privilegedTest(
  "flow add|del --file - stream stdin a line at a time; a bad line stops there, naming it",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const a = await setUp(lab);
    const lines = Array.from({ length: 300 }, (_, i) => flowText(i));
    const r = await warren(
      a,
      ["flow", "add", "--file", "-"],
      [...lines.slice(0, 200), "# a comment", "in_port=nowhere actions=drop", ...lines.slice(200)]
        .join("\n"),
    );
    assertEquals(r.code, 1);
    assert.match(r.stderr, /stdin:202: .*nowhere/);
    // Each line is its own change: the first 200 are in.
    assertEquals((await table(a)).length, 200);
    assert.match(
      await warrenOk(a, ["flow", "add", "--file", "-"], lines.join("\n") + "\n"),
      /^100 added, 200 replaced/,
    );
    const del = lines.slice(0, 250).map((l) => l.split(" actions=")[0]);
    assert.match(
      await warrenOk(a, ["flow", "del", "--strict", "--file", "-"], del.join("\n")),
      /^250 deleted/,
    );
    assertEquals(await table(a), lines.slice(250).sort());
  },
);

privilegedTest(
  "a session killed midway, then the same script again: exactly the wanted state; two at once lose nothing",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const a = await setUp(lab);
    const lines = Array.from({ length: 400 }, (_, i) => flowText(i));
    const script = lines.join("\n") + "\n";
    // Killed inside a write of its 150th change: the journal repairs it.
    const killed = await warren(a, ["flow", "add", "--file", "-"], script, {
      WARREN_FAILPOINTS: "flow.add.written@150",
    });
    assertEquals(killed.code, 137, killed.stderr);
    assert.match(await warrenOk(a, ["flow", "add", "--file", "-"], script), /added/);
    const want = await table(a);
    assertEquals(want.length, 400);
    assertEquals(want, lines.sort());

    // Two scripts at once, each its own half of new flows: serialized,
    // both whole.
    await warrenOk(a, ["flow", "del"]);
    const halves = [lines.slice(0, 200), lines.slice(200)];
    const children = halves.map(() =>
      warrenCommand(a, ["flow", "add", "--file", "-"], true).spawn()
    );
    const enc = new TextEncoder();
    const writers = children.map((c) => c.stdin.getWriter());
    // Interleaved lines: the second waits for the first's lock meanwhile.
    for (let i = 0; i < 200; i++) {
      for (const [k, w] of writers.entries()) await w.write(enc.encode(halves[k][i] + "\n"));
    }
    for (const w of writers) await w.close();
    const outs = await Promise.all(children.map((c) => c.output()));
    for (const o of outs) assertEquals(o.code, 0, new TextDecoder().decode(o.stderr));
    assertEquals(await table(a), lines.sort());
  },
);
