/**
 * Owned flow sets: an owner's `apply` replaces its flows and no other's,
 * atomically for packets, in place; `flow add|mod|del|dump` by owner and by
 * cookie; two owners applying at once; bad input refused whole.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { oneHost } from "./helpers/lab.ts";
import {
  mixtures,
  OPERATOR_FLOW,
  PACKETS,
  role,
  type Seen,
  versionFlows,
  whileChecking,
} from "./helpers/versions.ts";
import {
  overlay,
  overlayState,
  warren,
  warrenCommand,
  warrenFails,
  warrenJson,
  warrenOk,
} from "./helpers/cli.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { trace } from "../src/tunnel/trace.ts";
import type { Datapath } from "../src/tunnel/datapath.ts";
import { parseFlow, parseMatch } from "../src/tunnel/flow_syntax.ts";

/** `flows` as specs of `dp`. */
function specs(dp: Datapath, flows: string[]) {
  return flows.map((f) => parseFlow(f, dp.portNames()));
}

/** Every flow as `owner text`, sorted. */
function table(dp: Datapath): string[] {
  return dp.dumpFlows().map((f) => `${f.owner || "-"} ${dp.describeFlow(f)}`).sort();
}

const tunnel = (id: number, m: string, p = 100) =>
  `priority=${p},in_port=web,${m} actions=set_tunnel(id=${id},dst=192.0.2.2),output:t0`;

privilegedTest("an owner's apply replaces its flows and leaves the operator's", async () => {
  await using lab = await oneHost();
  await lab.datapath(lab.hosts[0], async (dp) => {
    await dp.addFlows(specs(dp, [tunnel(1, "udp"), "in_port=t0 actions=output:web"]));
    const d1 = await dp.applyFlows(specs(dp, [tunnel(2, "tcp"), tunnel(3, "icmp")]), {
      owner: "fleet",
    });
    assertEquals([d1.added, d1.modified, d1.removed, d1.unchanged], [2, 0, 0, 0]);
    const ids = new Map(dp.dumpFlows().map((f) => [dp.describeMatch(f.match), f.flowId]));
    // The next set: one the same, one other actions, one new, one gone.
    const d2 = await dp.applyFlows(
      specs(dp, [tunnel(2, "tcp"), tunnel(4, "icmp"), tunnel(5, "sctp")]),
      { owner: "fleet" },
    );
    assertEquals([d2.added, d2.modified, d2.removed, d2.unchanged], [1, 1, 0, 1]);
    assertEquals(table(dp), [
      "- priority=100,in_port=web,udp actions=set_tunnel(id=1,dst=192.0.2.2),output:t0",
      "- priority=32768,in_port=t0 actions=output:web",
      "fleet priority=100,in_port=web,icmp actions=set_tunnel(id=4,dst=192.0.2.2),output:t0",
      "fleet priority=100,in_port=web,sctp actions=set_tunnel(id=5,dst=192.0.2.2),output:t0",
      "fleet priority=100,in_port=web,tcp actions=set_tunnel(id=2,dst=192.0.2.2),output:t0",
    ]);
    const after = new Map(dp.dumpFlows().map((f) => [dp.describeMatch(f.match), f.flowId]));
    assertEquals(
      after.get("in_port=web,icmp"),
      ids.get("in_port=web,icmp"),
      "modified keeps its id",
    );
    // The operator's apply leaves the owner's flows.
    const d3 = await dp.applyFlows(specs(dp, [tunnel(1, "udp")]));
    assertEquals([d3.added, d3.modified, d3.removed, d3.unchanged], [0, 0, 1, 1]);
    assertEquals(dp.dumpFlows({ owner: "fleet" }).length, 3);
    assertEquals(dp.dumpFlows({ owner: "" }).length, 1);
    // An empty set removes the owner's flows and the owner.
    const d4 = await dp.applyFlows([], { owner: "fleet" });
    assertEquals(d4.removed, 3);
    assertEquals(table(dp), [
      "- priority=100,in_port=web,udp actions=set_tunnel(id=1,dst=192.0.2.2),output:t0",
    ]);
    assertEquals([...dp.maps.owners.entries()].filter(([, o]) => o.name[0]).length, 0);
    assertEquals(dp.flows.usage().flowIds.used, 1);
  });
});

/** How many versions `seen` holds, over every packet. */
function versionsSeen(seen: Seen): number {
  return new Set(seen.ids.flat().map(([id]) => id >> 4)).size;
}

privilegedTest(
  "an owner's apply is atomic for packets: test-runs throughout never see a mixture; flow by flow they do",
  async () => {
    await using lab = await oneHost();
    const [a] = lab.hosts;
    const N = 40;
    await lab.datapath(a, async (dp) => {
      await dp.addFlows(specs(dp, [OPERATOR_FLOW]));
      await dp.applyFlows(specs(dp, versionFlows(1)), { owner: "fleet" });
    });
    const operator = await lab.datapath(a, (dp) => dp.dumpFlows({ owner: "" })[0]);

    const atomic = await whileChecking(a.ns.name, a.pinDir, a.workload.port, async () => {
      await lab.datapath(a, async (dp) => {
        for (let v = 2; v <= N + 1; v++) {
          await dp.applyFlows(specs(dp, versionFlows(v)), { owner: "fleet" });
        }
      });
    });
    assertEquals(mixtures(atomic), [], `${atomic.runs} test-runs`);
    // The checker ran throughout: it saw most versions go by.
    assert.ok(versionsSeen(atomic) >= N / 2, `${versionsSeen(atomic)} versions seen`);
    await lab.datapath(a, (dp) => {
      assertEquals(
        table(dp),
        [
          `- ${OPERATOR_FLOW}`,
          ...versionFlows(N + 1).map((f) => `fleet ${f}`),
        ].sort(),
      );
      assertEquals(dp.dumpFlows({ owner: "" }), [operator], "the operator's flow, untouched");
    });

    // The same changes made flow by flow: the checker sees the mixtures.
    const byFlow = await whileChecking(a.ns.name, a.pinDir, a.workload.port, async () => {
      await lab.datapath(a, async (dp) => {
        for (let v = N + 2; v <= N + 11; v++) {
          for (const f of versionFlows(v - 1)) {
            dp.deleteFlows({
              ...parseMatch(f.split(" actions=")[0], dp.portNames()),
              owner: "fleet",
            }, true);
          }
          for (const f of versionFlows(v)) await dp.addFlows(specs(dp, [f]), { owner: "fleet" });
        }
      });
    });
    assert.ok(mixtures(byFlow).length > 0, `no mixture in ${byFlow.runs} test-runs`);
  },
);

/** Tunnel ids packets 1 to 3 get from `trace`: the TypeScript lookup's and test-run's. */
async function traced(dp: Datapath): Promise<{ lookup: number[]; kernel: number[] }> {
  const out = { lookup: [] as number[], kernel: [] as number[] };
  for (const m of PACKETS) {
    const r = await trace(dp, parseMatch(m, dp.portNames()).match);
    out.lookup.push(Number(/set_tunnel\(id=(\d+)/.exec(r.flow?.actions ?? "")?.[1] ?? -1));
    const vxlan = r.steps[0].output.find((l) => l.name === "VXLAN");
    out.kernel.push(Number(vxlan?.fields.vni ?? -1));
  }
  return out;
}

/** The tunnel ids version `v` gives packets 1 to 3. */
const idsOf = (v: number) => [0, 1, 2].map((p) => v * 16 + role(p, v));

privilegedTest(
  "trace's lookup and the datapath agree halfway through a commit, and the rerun ends exact",
  async () => {
    await using lab = await oneHost();
    const [a] = lab.hosts;
    const dir = await Deno.makeTempDir();
    const file = async (v: number) => {
      const path = `${dir}/v${v}.json`;
      await Deno.writeTextFile(path, JSON.stringify({ flows: versionFlows(v) }));
      return path;
    };
    await warrenOk(a, ["flow", "add", OPERATOR_FLOW]);
    await warrenOk(a, ["apply", "--owner", "fleet", await file(1)]);
    // Staged, not committed: everything still says the old version;
    // committed, not settled: the new one, stand-ins and all.
    for (
      const [fp, v, want] of [
        ["flow.owner.staged", 2, 1],
        ["flow.owner.committed", 2, 2],
        ["flow.owner.settled", 3, 3],
      ] as const
    ) {
      const r = await warren(a, ["apply", "--owner", "fleet", await file(v)], undefined, {
        WARREN_FAILPOINTS: fp,
      });
      assertEquals(r.code, 137, `${fp}: ${r.stderr}`);
      await lab.datapath(a, async (dp) => {
        assertEquals(await traced(dp), { lookup: idsOf(want), kernel: idsOf(want) }, fp);
        assertEquals(
          table(dp),
          [`- ${OPERATOR_FLOW}`, ...versionFlows(want).map((f) => `fleet ${f}`)].sort(),
          fp,
        );
      });
    }
    const rerun = await warrenOk(a, ["apply", "--owner", "fleet", await file(3)]);
    assert.match(rerun, /flows: 0 added, 0 modified, 0 removed, 3 unchanged/);
    await lab.datapath(a, (dp) => {
      assertEquals(dp.flows.usage().flowIds.used, 4);
      assertEquals(dp.flows.usage().flows, 4);
    });
    await Deno.remove(dir, { recursive: true });
  },
);

interface Dumped {
  owner: string;
  cookie: number;
  priority: number;
  match: string;
  actions: string;
}

/** `h`'s flows as `owner priority,match`, sorted. */
async function owned(h: LabHost, ...args: string[]): Promise<string[]> {
  const flows = await warrenJson<Dumped[]>(h, ["flow", "dump", ...args]);
  return flows.map((f) => `${f.owner || "-"} priority=${f.priority},${f.match}`).sort();
}

privilegedTest(
  "flow add, mod, del and dump by owner and by cookie; one owner never changes another's flow",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a] = lab.hosts;
    const base = await owned(a);
    await warrenOk(a, [
      "flow",
      "add",
      "--owner",
      "fleet",
      "cookie=0x12,in_port=web,udp actions=drop",
    ]);
    await warrenOk(a, [
      "flow",
      "add",
      "--owner",
      "fleet",
      "cookie=0x13,in_port=web,tcp actions=drop",
    ]);
    await warrenOk(a, ["flow", "add", "cookie=0x22,in_port=web,sctp actions=drop"]);
    assertEquals(await owned(a, "--owner", "fleet"), [
      "fleet priority=32768,in_port=web,tcp",
      "fleet priority=32768,in_port=web,udp",
    ]);
    assertEquals((await owned(a, "--owner", "")).length, base.length + 1);
    assertEquals(await owned(a, "cookie=0x10/0xf0"), await owned(a, "--owner", "fleet"));
    assertEquals(await owned(a, "cookie=0x22"), ["- priority=32768,in_port=web,sctp"]);
    assertEquals(await owned(a, "cookie=0x12/-1"), ["fleet priority=32768,in_port=web,udp"]);
    // The text dump names a named owner after the flow, before its counters.
    assert.match(
      await warrenOk(a, ["flow", "dump", "--owner", "fleet", "udp"]),
      /^cookie=0x12,priority=32768,in_port=web,udp actions=drop owner:fleet packets:0 /,
    );
    assert.match(
      await warrenOk(a, ["flow", "dump", "--owner", "fleet", "udp", "--no-counters"]),
      /^cookie=0x12,priority=32768,in_port=web,udp actions=drop\n$/,
    );

    // One owner's flow is not another's to replace, change or apply over.
    await warrenFails(
      a,
      ["flow", "add", "in_port=web,udp actions=pass"],
      1,
      `the flow with this match is owner "fleet"'s`,
    );
    await warrenFails(
      a,
      ["flow", "mod", "in_port=web,tcp actions=pass"],
      1,
      `owner "fleet"'s`,
    );
    await warrenFails(
      a,
      ["flow", "mod", "--owner", "fleet", "in_port=web,sctp actions=pass"],
      1,
      "the operator's",
    );
    assertEquals(
      (await warrenOk(a, [
        "flow",
        "mod",
        "--owner",
        "fleet",
        "cookie=0x14,in_port=web,tcp actions=pass",
      ])).trim(),
      "1 modified",
    );
    const before = await owned(a);
    const dir = await Deno.makeTempDir();
    const file = `${dir}/fleet.json`;
    await Deno.writeTextFile(
      file,
      JSON.stringify({ flows: ["in_port=web,udp actions=drop", "in_port=web,sctp actions=drop"] }),
    );
    await warrenFails(
      a,
      ["apply", "--owner", "fleet", file],
      1,
      "priority=32768,in_port=web,sctp actions=drop: the flow with this match is the operator's",
    );
    await Deno.writeTextFile(file, JSON.stringify({ flows: ["in_port=web,tcp actions=drop"] }));
    await warrenFails(a, ["apply", "--owner", "other", file], 1, `owner "fleet"'s`);
    // The operator's apply keeps fleet's flows, and refuses a match of one.
    await Deno.writeTextFile(file, overlayState(["in_port=web,tcp actions=drop"]));
    await warrenFails(a, ["apply", file], 1, `owner "fleet"'s`);
    // Odd owner names, two flows with one match: named, nothing applied.
    for (const name of ["a b", "x/y", "é", "n".repeat(64)]) {
      await warrenFails(a, ["apply", "--owner", name, file], 1, `owner ${JSON.stringify(name)}:`);
      await warrenFails(
        a,
        ["flow", "add", "--owner", name, "in_port=web,arp actions=drop"],
        1,
        `owner ${JSON.stringify(name)}: an owner's name is 1 to 63 letters`,
      );
    }
    await Deno.writeTextFile(
      file,
      JSON.stringify({
        flows: ["in_port=web,arp actions=drop", "priority=9,in_port=web,arp actions=drop"],
      }),
    );
    await warrenFails(
      a,
      ["apply", "--owner", "fleet", file],
      1,
      "priority=9,in_port=web,arp actions=drop: two flows have the same match",
    );
    assertEquals(await owned(a), before, "nothing applied");

    // Deletes: by owner, by cookie; the rest stays.
    assertEquals(
      (await warrenOk(a, ["flow", "del", "--owner", "fleet", "udp"])).trim(),
      "1 deleted",
    );
    assertEquals((await warrenOk(a, ["flow", "del", "cookie=0x22/0xff"])).trim(), "1 deleted");
    assertEquals(await owned(a), [...base, "fleet priority=32768,in_port=web,tcp"].sort());
    assertEquals((await warrenOk(a, ["flow", "del", "--owner", "fleet"])).trim(), "1 deleted");
    assertEquals(await owned(a), base);
    await Deno.remove(dir, { recursive: true });
  },
);

privilegedTest(
  "two owners applying at once in two processes never lose each other's flows: the lock serializes them",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a, b] = lab.hosts;
    const base = await owned(a);
    const dir = await Deno.makeTempDir();
    const flows = (owner: number, round: number) =>
      Array.from(
        { length: 500 },
        (_, i) =>
          `priority=10,in_port=web,ip,nw_dst=10.${owner}.${round}.${i % 250},nw_tos=${
            (i / 250 | 0) * 4
          } ` +
          `actions=set_tunnel(id=${owner * 100 + round},dst=${b.ip}),output:vx0`,
      );
    const file = async (owner: number, round: number) => {
      const path = `${dir}/${owner}-${round}.json`;
      await Deno.writeTextFile(path, JSON.stringify({ flows: flows(owner, round) }));
      return path;
    };
    const want = (round: number) =>
      [
        ...base,
        ...[1, 2].flatMap((o) =>
          flows(o, round).map((f) => `owner${o} ${f.split(" actions=")[0]}`)
        ),
      ].sort();
    for (let round = 1; round <= 4; round++) {
      const runs = await Promise.all(
        [1, 2].map(async (o) => warren(a, ["apply", "--owner", `owner${o}`, await file(o, round)])),
      );
      for (const r of runs) assertEquals(r.code, 0, r.stderr);
      assertEquals(await owned(a), want(round), `round ${round}`);
    }
    // While another process holds the lock, both wait; then both land.
    const started = await lab.datapath(a, async (dp) => {
      using _lock = dp.lock();
      const children = await Promise.all(
        [1, 2].map(async (o) =>
          warrenCommand(a, ["apply", "--owner", `owner${o}`, await file(o, 5)]).spawn()
        ),
      );
      const early = await Promise.race([
        Promise.all(children.map((c) => c.status)).then(() => "done"),
        new Promise((r) => setTimeout(() => r("waiting"), 3000)),
      ]);
      assertEquals(early, "waiting", "both applies wait for the lock");
      assertEquals(await dp.flows.count({ owner: "owner1" }), 500, "round 4 still");
      return children;
    });
    for (const c of started) assertEquals((await c.output()).code, 0);
    assertEquals(await owned(a), want(5));
    const usage = await lab.datapath(a, (dp) => dp.flows.usage());
    assertEquals([usage.flows, usage.flowIds.used], [base.length + 1000, base.length + 1000]);
    await Deno.remove(dir, { recursive: true });
  },
);

interface ListedGroup {
  group_id: number;
  owner: string;
  buckets: { actions: string }[];
}

/** `h`'s groups as `owner group_id=G:bucket|bucket`, sorted. */
async function groupsOf(h: LabHost, ...args: string[]): Promise<string[]> {
  const groups = await warrenJson<ListedGroup[]>(h, ["group", "list", ...args]);
  return groups.map((g) =>
    `${g.owner || "-"} ${g.group_id}:${g.buckets.map((b) => b.actions).join("|")}`
  ).sort();
}

privilegedTest(
  "an owner's apply replaces its groups with its flows and leaves the operator's; one owner never changes another's group",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a, b] = lab.hosts;
    const group = (id: number, key: number) =>
      `group_id=${id},type=all,bucket=output:web,bucket=set_tunnel(id=${key},dst=${b.ip}),output:vx0`;
    const sends = (id: number) =>
      `priority=5,in_port=web,udp,tp_dst=${1000 + id} actions=group:${id}`;
    // The operator's group 1 and a flow to it.
    await warrenOk(a, ["group", "add", group(1, 11)]);
    await warrenOk(a, ["flow", "add", sends(1)]);
    const operatorFlows = await owned(a, "--owner", "");
    const dir = await Deno.makeTempDir();
    const file = `${dir}/fleet.json`;
    const fleet = async (groups: string[], flows: string[], owner = "fleet") => {
      await Deno.writeTextFile(file, JSON.stringify({ groups, flows }));
      return await warren(a, ["apply", "--json", "--owner", owner, file]);
    };
    const groupPlan = (stdout: string) => JSON.parse(stdout).groups;

    // fleet's groups 2 and 3, its flows to them and to the operator's group 1.
    let r = await fleet([group(2, 21), group(3, 31)], [
      sends(2),
      sends(3),
      sends(4).replace("group:4", "group:1"),
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(groupPlan(r.stdout), { add: [2, 3], change: [], remove: [] });
    assertEquals(await groupsOf(a), [
      `- 1:output:web|set_tunnel(id=11,dst=${b.ip}),output:vx0`,
      `fleet 2:output:web|set_tunnel(id=21,dst=${b.ip}),output:vx0`,
      `fleet 3:output:web|set_tunnel(id=31,dst=${b.ip}),output:vx0`,
    ]);
    assertEquals((await groupsOf(a, "--owner", "fleet")).length, 2);
    assertEquals(await groupsOf(a, "--owner", ""), [
      `- 1:output:web|set_tunnel(id=11,dst=${b.ip}),output:vx0`,
    ]);
    assert.match(
      await warrenOk(a, ["group", "list", "2"]),
      /^group_id=2,type=all,bucket=output:web,bucket=set_tunnel\(id=21,dst=[\d.]+\),output:vx0 owner:fleet packets:0 bytes:0\n/,
    );

    // The next set: group 2 changed, 3 gone, 4 new; the operator's stay.
    r = await fleet([group(2, 22), group(4, 41)], [sends(2), sends(4)]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(groupPlan(r.stdout), { add: [4], change: [2], remove: [3] });
    assertEquals(await groupsOf(a), [
      `- 1:output:web|set_tunnel(id=11,dst=${b.ip}),output:vx0`,
      `fleet 2:output:web|set_tunnel(id=22,dst=${b.ip}),output:vx0`,
      `fleet 4:output:web|set_tunnel(id=41,dst=${b.ip}),output:vx0`,
    ]);
    assertEquals(await owned(a, "--owner", ""), operatorFlows);
    assertEquals(await owned(a, "--owner", "fleet"), [
      "fleet priority=5,in_port=web,udp,tp_dst=1002",
      "fleet priority=5,in_port=web,udp,tp_dst=1004",
    ]);
    // The operator's apply keeps fleet's groups and the flows to them.
    const opFlows = (await warrenOk(a, ["flow", "dump", "--owner", "", "--no-counters"]))
      .split("\n").filter(Boolean);
    const operatorState = (groups: string[]) =>
      JSON.stringify({ ...JSON.parse(overlayState(opFlows)), groups });
    await Deno.writeTextFile(`${dir}/op.json`, operatorState([group(1, 12)]));
    await warrenOk(a, ["apply", `${dir}/op.json`]);
    assertEquals(await groupsOf(a), [
      `- 1:output:web|set_tunnel(id=12,dst=${b.ip}),output:vx0`,
      `fleet 2:output:web|set_tunnel(id=22,dst=${b.ip}),output:vx0`,
      `fleet 4:output:web|set_tunnel(id=41,dst=${b.ip}),output:vx0`,
    ]);
    assertEquals((await owned(a, "--owner", "fleet")).length, 2);
    // The operator's flow to fleet's group 4.
    await warrenOk(a, ["flow", "add", "priority=5,in_port=web,udp,tp_dst=1104 actions=group:4"]);
    const before = { groups: await groupsOf(a), flows: await owned(a) };

    // Refusals, each naming the group, nothing applied.
    r = await fleet([group(1, 13)], []);
    assertEquals(r.code, 1);
    assert.match(
      r.stderr,
      /groups\[0\]: group 1 is the operator's .*one owner never changes another's/,
    );
    r = await fleet([group(2, 22)], [sends(2)]);
    assertEquals(r.code, 1);
    assert.match(
      r.stderr,
      /group 4 is not in the state, but the operator's .* flows send to it: keep it in the state/,
    );
    r = await fleet([group(2, 22), group(4, 41)], [sends(2), sends(5)]);
    assertEquals(r.code, 1);
    assert.match(r.stderr, /fleet\.json:\d+: .*actions=group:5: there is no group 5/);
    await Deno.writeTextFile(`${dir}/op.json`, operatorState([group(1, 12), group(2, 23)]));
    await warrenFails(a, ["apply", `${dir}/op.json`], 1, `groups[1]: group 2 is owner "fleet"'s`);
    await warrenFails(a, ["group", "mod", group(2, 24)], 1, `group 2 is owner "fleet"'s`);
    await warrenFails(
      a,
      ["group", "add", "--owner", "fleet", group(1, 14)],
      1,
      "group 1 is the operator's",
    );
    await warrenFails(
      a,
      ["group", "del", "--owner", "other", "2"],
      1,
      `group 2 is owner "fleet"'s`,
    );
    await warrenFails(
      a,
      ["group", "add", "--owner", "a b", group(9, 91)],
      1,
      `owner "a b": an owner's name is 1 to 63 letters`,
    );
    assertEquals({ groups: await groupsOf(a), flows: await owned(a) }, before, "nothing applied");

    // group mod and del as the owner; then an empty set: the owner is gone.
    assertEquals(
      await warrenOk(a, ["group", "mod", "--owner", "fleet", group(2, 25)]),
      "1 modified\n",
    );
    await warrenOk(a, ["flow", "del", "--strict", "priority=5,in_port=web,udp,tp_dst=1104"]);
    r = await fleet([], []);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(groupPlan(r.stdout), { add: [], change: [], remove: [2, 4] });
    assertEquals(await groupsOf(a), [`- 1:output:web|set_tunnel(id=12,dst=${b.ip}),output:vx0`]);
    assertEquals(await owned(a, "--owner", ""), operatorFlows);
    await lab.datapath(a, (dp) => {
      assertEquals([...dp.maps.owners.entries()].filter(([, o]) => o.name[0]).length, 0, "owners");
      assertEquals(dp.flows.usage().tunKeys.used, 2, "keys of the base flows and group 1");
    });
    // An owner with groups and no flows stays registered until its last group goes.
    await warrenOk(a, ["group", "add", "--owner", "solo", group(7, 71)]);
    assertEquals(await owned(a, "--owner", "solo"), []);
    assertEquals(await groupsOf(a, "--owner", "solo"), [
      `solo 7:output:web|set_tunnel(id=71,dst=${b.ip}),output:vx0`,
    ]);
    assertEquals(await warrenOk(a, ["group", "del", "--owner", "solo", "7"]), "1 deleted\n");
    await lab.datapath(a, (dp) => {
      assertEquals([...dp.maps.owners.entries()].filter(([, o]) => o.name[0]).length, 0, "owners");
    });
    // port del --force drops the port's buckets from every owner's groups, each kept its owner's.
    await warrenOk(a, ["group", "add", "--owner", "solo", group(8, 81)]);
    await warrenOk(a, ["port", "del", "--force", "web"]);
    assertEquals(await groupsOf(a), [
      `- 1:set_tunnel(id=12,dst=${b.ip}),output:vx0`,
      `solo 8:set_tunnel(id=81,dst=${b.ip}),output:vx0`,
    ]);
    await Deno.remove(dir, { recursive: true });
  },
);
