/**
 * Faults in the control plane: warren killed (SIGKILL, through failpoints)
 * in the middle of every multi-step change and run again; programs
 * upgraded under a ping flood; pins of another layout; and the errors of a
 * missing bpffs, a vanished device and a full table. Every time: the exact
 * wanted state afterwards, and no ping lost that both states allowed.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { overlay, overlayState, warren, warrenFails, warrenJson, warrenOk } from "./helpers/cli.ts";
import { ping, pingDuring } from "./helpers/traffic.ts";
import { ConfigFlag, FlowVis } from "../src/maps/layouts.ts";
import { runRaw } from "../src/lab/run.ts";
import { BpfMap } from "../src/bpf/map.ts";
import { lockPath } from "../src/tunnel/lock.ts";

interface DumpedFlow {
  flow_id: number;
  owner: string;
  priority: number;
  match: string;
  actions: string;
  packets: number;
}

/** A flow table as text, one line per flow, in a fixed order. */
async function table(h: LabHost): Promise<string[]> {
  const flows = await warrenJson<DumpedFlow[]>(h, ["flow", "dump"]);
  return flows.map((f) => `priority=${f.priority},${f.match} actions=${f.actions}`).sort();
}

/**
 * Everything a crashed writer could have left wrong, checked against the
 * live table: the flows are exactly `want` and the groups `groups`, each
 * flow with its own id; the id bitmap, the tunnel key references (of
 * flows and groups) and the table size agree with them; no change is
 * marked under way.
 */
async function assertExactly(
  lab: Lab,
  h: LabHost,
  want: string[],
  groups: string[] = [],
): Promise<void> {
  const flows = await warrenJson<DumpedFlow[]>(h, ["flow", "dump"]);
  const got = flows.map((f) => `priority=${f.priority},${f.match} actions=${f.actions}`).sort();
  assertSameFlows(got, want);
  assertEquals(new Set(flows.map((f) => f.flow_id)).size, flows.length, "ids are unique");
  await assertGroups(h, groups);
  const keys = new Set(
    [...flows.map((f) => f.actions), ...groups]
      .flatMap((a) => a.match(/set_tunnel\([^)]*\)/g) ?? []),
  );
  const { usage, flags } = await lab.datapath(
    h,
    (dp) => ({ usage: dp.flows.usage(), flags: dp.maps.config.read().flags }),
  );
  assertEquals(
    [usage.flows, usage.flowIds.used, usage.tunKeys.used, flags & ConfigFlag.WRITING],
    [flows.length, flows.length, keys.size, 0],
    "table size, ids taken, tunnel keys referenced, writing mark",
  );
  const buckets = groups.reduce((n, g) => n + g.split(",bucket=").length - 1, 0);
  assertEquals(
    [usage.groups.used, usage.buckets.used],
    [groups.length, buckets],
    "groups, buckets",
  );
  const owners = new Map<string, number>();
  for (const f of flows) if (f.owner) owners.set(f.owner, (owners.get(f.owner) ?? 0) + 1);
  assertEquals(await ownedSets(lab, h), owners, "each named owner's set lists its flows");
}

/**
 * Each registered owner and how many index keys its set holds, checking
 * that every entry is seen by both generations and no stand-in is left.
 */
async function ownedSets(lab: Lab, h: LabHost): Promise<Map<string, number>> {
  return await lab.datapath(h, (dp) => {
    using index = dp.maps.flowIndex(dp.maps.config.read().gen & 1)!;
    for (const [ik, e] of index.entries()) {
      assertEquals([ik.alt, e.vis], [0, FlowVis.BOTH], "a settled entry");
    }
    const out = new Map<string, number>();
    for (const [id, o] of dp.maps.owners.entries()) {
      const name = new TextDecoder().decode(o.name).replace(/\0+$/, "");
      if (!name) continue;
      using set = BpfMap.fromPin(`${h.pinDir}/maps/owned/${id}`);
      out.set(name, [...set.keys()].length);
    }
    return out;
  });
}

/** Runs `warren args` with failpoint `fp` armed: it must die by SIGKILL. */
async function crash(
  lab: Lab,
  h: LabHost,
  fp: string,
  args: string[],
  stdin?: string,
): Promise<void> {
  const r = await warren(h, args, stdin, { WARREN_FAILPOINTS: fp });
  assertEquals(r.code, 137, `warren ${args[0]} with ${fp} armed: ${r.stderr}`);
  const flags = await lab.datapath(h, (dp) => dp.maps.config.read().flags);
  if (fp.startsWith("flow.") || fp.startsWith("group.")) {
    assert.ok(flags & ConfigFlag.WRITING, `${fp}: the change was cut short`);
  }
}

const BASE = (peer: string) => [
  `priority=100,in_port=web,icmp actions=set_tunnel(id=42,dst=${peer}),output:vx0`,
  `priority=90,in_port=web actions=set_tunnel(id=42,dst=${peer}),output:vx0`,
  "priority=100,in_port=vx0,icmp,tun_id=42 actions=output:web",
  "priority=90,in_port=vx0,tun_id=42 actions=output:web",
];

/** `n` flows to 10.0.0.0/16 from `from` on, with keys `key0`.. `key0+99`. */
function extra(from: number, n: number, key0: number, peer: string): string[] {
  return Array.from({ length: n }, (_, j) => {
    const i = from + j;
    return `priority=10,in_port=web,ip,nw_dst=10.0.${i >> 8}.${i & 255} ` +
      `actions=set_tunnel(id=${key0 + i % 100},dst=${peer}),output:vx0`;
  });
}

privilegedTest(
  "killed in the middle of apply, flow add, flow del, port and tunnel add: the rerun ends exact, pings never stop",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a, b] = lab.hosts;
    const base = BASE(b.ip);
    // Old and new tables of 40 000 extra flows each, three install batches:
    // 20 000 the same, 10 000 with other actions, 10 000 only in one.
    const oldFlows = [...base, ...extra(0, 40000, 1000, b.ip)];
    const newFlows = [
      ...base,
      ...extra(10000, 20000, 1000, b.ip),
      ...extra(30000, 10000, 2000, b.ip),
      ...extra(40000, 10000, 3000, b.ip),
    ];
    const dir = await Deno.makeTempDir();
    const [oldFile, newFile] = [`${dir}/old.json`, `${dir}/new.json`];
    await Deno.writeTextFile(oldFile, overlayState(oldFlows));
    await Deno.writeTextFile(newFile, overlayState(newFlows));

    const run = await pingDuring(a.workload, b.workload.ip, async () => {
      await warrenOk(a, ["apply", oldFile]);
      const wantOld = await table(a);
      await warrenOk(a, ["apply", newFile]);
      const wantNew = await table(a);
      assertEquals([wantOld.length, wantNew.length], [40004, 40004]);

      // apply dies after two of three batches of the new index: the old
      // table is still the live one, and the rerun makes the new one.
      await warrenOk(a, ["apply", oldFile]);
      await crash(lab, a, "flow.apply.installing@2", ["apply", newFile]);
      await assertTable(a, wantOld);
      await warrenOk(a, ["apply", newFile]);
      await assertExactly(lab, a, wantNew);

      // apply dies just after publishing: the new table is live, the
      // bookkeeping is not; the rerun changes nothing and repairs it.
      await crash(lab, a, "flow.apply.published", ["apply", oldFile]);
      await assertTable(a, wantOld);
      const again = await warrenJson<{ flows: Record<string, number> }>(a, ["apply", oldFile]);
      assertEquals([again.flows.added, again.flows.modified, again.flows.removed], [0, 0, 0]);
      await assertExactly(lab, a, wantOld);

      // flow del dies after its first batch of deletions.
      await crash(lab, a, "flow.delete.deleted", ["flow", "del", "ip,nw_dst=10.0.0.0/16"]);
      const left = (await table(a)).length;
      assert.ok(left > 4 && left < 40004, `${left} flows left`);
      assertEquals(
        (await warrenOk(a, ["flow", "del", "ip,nw_dst=10.0.0.0/16"])).trim(),
        `${left - 4} deleted`,
      );
      await assertExactly(lab, a, [...base].sort());

      // flow add dies after writing 1 000 of 2 000 flows: the rerun
      // replaces those and adds the rest.
      const adds = extra(500, 2000, 4000, b.ip);
      await crash(lab, a, "flow.add.written@1000", ["flow", "add", "--file", "-"], adds.join("\n"));
      assertEquals((await table(a)).length, 1004);
      assertEquals(
        (await warrenOk(a, ["flow", "add", "--file", "-"], adds.join("\n"))).trim(),
        "1000 added, 1000 replaced",
      );
      await assertExactly(lab, a, [...base, ...adds].sort());

      // A tunnel and a port whose writer died before their entry: not
      // there, and adding them again works.
      await crash(lab, a, "port.written", ["tunnel", "add", "gn0", "geneve", "remote_ip=flow"]);
      await crash(lab, a, "port.written", ["port", "add", "spare", await spareDevice(a)]);
      const names = async () =>
        [
          ...await warrenJson<{ name: string }[]>(a, ["port", "list"]),
          ...await warrenJson<{ name: string }[]>(a, ["tunnel", "list"]),
        ].map((p) => p.name).sort();
      assertEquals(await names(), ["vx0", "web"]);
      // The port first: it takes the number the dead tunnel's endpoint
      // still names, which must not pass for a live tunnel port.
      await warrenOk(a, ["port", "add", "spare", await spareDevice(a)]);
      await warrenOk(a, ["tunnel", "add", "gn0", "geneve", "remote_ip=flow"]);
      assertEquals(await names(), ["gn0", "spare", "vx0", "web"]);
      await assertExactly(lab, a, [...base, ...adds].sort());
    });
    assert.ok(run.sent > 200, `only ${run.sent} pings sent`);
    assertEquals(run.lost, [], `pings lost of ${run.sent}`);
    await Deno.remove(dir, { recursive: true });

    // And down leaves nothing, after all of it.
    const ids = await programIds(a);
    await warrenOk(a, ["down"]);
    await assertNothingLeft(a, ids);
  },
);

/**
 * What a change that wrote nothing leaves of an empty table: no flow, no
 * id or tunnel key taken, no key in the content index, no change marked
 * and the change counter at `seq`.
 */
async function assertUntouched(lab: Lab, h: LabHost, seq: bigint): Promise<void> {
  const got = await lab.datapath(h, (dp) => {
    const usage = dp.flows.usage();
    const cfg = dp.maps.config.read();
    return [
      usage.flows,
      usage.flowIds.used,
      usage.tunKeys.used,
      [...dp.maps.tunKeySlots.raw.keys()].length,
      cfg.flags & ConfigFlag.WRITING,
      cfg.seq,
    ];
  });
  assertEquals(got, [0, 0, 0, 0, 0, seq], "flows, ids, keys, key index, writing mark, counter");
}

privilegedTest(
  "apply to an empty table, which writes its new index while it compiles: refused by a late flow or killed midway, nothing is left or marked; the rerun ends exact",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a, b] = lab.hosts;
    // Three batches of the new index; the bad flow comes after two of them.
    const flows = [...BASE(b.ip), ...extra(0, 40000, 1000, b.ip)];
    const dir = await Deno.makeTempDir();
    const [good, bad] = [`${dir}/good.json`, `${dir}/bad.json`];
    await Deno.writeTextFile(good, overlayState(flows));
    await Deno.writeTextFile(bad, overlayState(flows.with(35000, "in_port=nowhere actions=drop")));
    try {
      await warrenOk(a, ["flow", "del"]);
      const seq = await lab.datapath(a, (dp) => dp.maps.config.read().seq);
      await assertUntouched(lab, a, seq);
      await warrenFails(a, ["apply", bad], 1, "nowhere");
      await assertUntouched(lab, a, seq);
      // Killed after the second batch: before anything but the new index was written.
      const r = await warren(a, ["apply", good], undefined, {
        WARREN_FAILPOINTS: "flow.apply.installing@2",
      });
      assertEquals(r.code, 137, r.stderr);
      await assertUntouched(lab, a, seq);
      await warrenOk(a, ["apply", good]);
      await assertExactly(lab, a, flows);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

privilegedTest(
  "killed in the middle of group add, mod, del and an apply with groups: the rerun ends exact, pings never stop",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a, b] = lab.hosts;
    const base = BASE(b.ip);
    // Three groups, each a local bucket and two tunnel buckets with keys
    // of their own; flows send UDP to them, which the pings never meet.
    const groups = (key0: number) =>
      [1, 2, 3].map((g) =>
        `group_id=${g},type=all,bucket=output:web,` +
        `bucket=set_tunnel(id=${key0 + g},dst=${b.ip}),output:vx0,` +
        `bucket=set_tunnel(id=${key0 + g},dst=192.0.2.${50 + g}),output:vx0`
      );
    const groupFlows = [1, 2, 3].map((g) =>
      `priority=5,in_port=web,udp,tp_dst=${1000 + g} actions=group:${g}`
    );
    const file = await Deno.makeTempFile({ suffix: ".json" });
    const run = await pingDuring(a.workload, b.workload.ip, async () => {
      // add dies with the second group written but not yet named: only
      // the first exists, and the rerun adds the others.
      const first = groups(100);
      await crash(lab, a, "group.written@2", ["group", "add", ...first]);
      await assertGroups(a, first.slice(0, 1));
      assertEquals(await warrenOk(a, ["group", "add", ...first]), "2 added, 1 unchanged\n");
      await assertExactly(lab, a, base, first);
      await warrenOk(a, ["flow", "add", ...groupFlows]);

      // mod dies with the new buckets written, before the flip: the old
      // ones stay live, and the rerun switches.
      const second = groups(200);
      await crash(lab, a, "group.written", ["group", "mod", second[1]]);
      await assertGroups(a, first);
      await warrenOk(a, ["group", "mod", second[1]]);
      const modded = [first[0], second[1], first[2]];
      await assertExactly(lab, a, [...base, ...groupFlows], modded);

      // del --force dies after the first group (its flows went first).
      await crash(lab, a, "group.deleted", ["group", "del", "1", "2", "3", "--force"]);
      await assertGroups(a, modded.slice(1));
      await assertTable(a, base);
      assertEquals(await warrenOk(a, ["group", "del", "1", "2", "3", "--force"]), "2 deleted\n");
      await assertExactly(lab, a, base);

      // apply dies between its groups; the rerun makes groups and flows.
      const third = groups(300);
      await Deno.writeTextFile(
        file,
        JSON.stringify({
          ...JSON.parse(overlayState([...base, ...groupFlows])),
          groups: third,
        }),
      );
      await crash(lab, a, "group.written@3", ["apply", file]);
      await assertGroups(a, third.slice(0, 2));
      await assertTable(a, base);
      await warrenOk(a, ["apply", file]);
      await assertExactly(lab, a, [...base, ...groupFlows], third);
    });
    await Deno.remove(file);
    assert.ok(run.sent > 100, `only ${run.sent} pings sent`);
    assertEquals(run.lost, [], `pings lost of ${run.sent}`);
  },
);

privilegedTest(
  "killed in the middle of an owner's apply, staged, committed or settled, or at its groups: the rerun ends exact, the rest untouched, pings never stop",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a, b] = lab.hosts;
    // Owner "fleet" goes from old to new and back: of 4 000 flows, 1 000
    // stay, 1 000 change actions, 1 000 change priority, 1 000 go and
    // 1 000 come; of its groups, 1 changes, 2 goes and 3 comes. Owner
    // "other" (its group 9 too) and the operator's flows stay throughout.
    const group = (g: number, key: number) =>
      `group_id=${g},type=all,bucket=output:web,bucket=set_tunnel(id=${key},dst=${b.ip}),output:vx0`;
    const sends = (g: number) => `priority=5,in_port=web,udp,tp_dst=${1000 + g} actions=group:${g}`;
    const groupsOld = [group(1, 501), group(2, 502)];
    const groupsNew = [group(1, 511), group(3, 513)];
    const otherGroups = [group(9, 509)];
    const old = [...extra(0, 4000, 1000, b.ip), sends(1), sends(2)];
    const changed = [
      ...old.slice(0, 1000),
      ...extra(1000, 1000, 2000, b.ip),
      ...old.slice(2000, 3000).map((f) => f.replace("priority=10,", "priority=11,")),
      ...extra(4000, 1000, 1000, b.ip),
      sends(1),
      sends(3),
    ];
    const dir = await Deno.makeTempDir();
    const files = {
      old: `${dir}/old.json`,
      changed: `${dir}/new.json`,
      other: `${dir}/o.json`,
      none: `${dir}/none.json`,
    };
    await Deno.writeTextFile(files.none, JSON.stringify({ flows: [] }));
    await Deno.writeTextFile(files.old, JSON.stringify({ groups: groupsOld, flows: old }));
    await Deno.writeTextFile(files.changed, JSON.stringify({ groups: groupsNew, flows: changed }));
    await Deno.writeTextFile(
      files.other,
      JSON.stringify({ groups: otherGroups, flows: [...extra(6000, 100, 3000, b.ip), sends(9)] }),
    );
    const apply = (file: string, owner = "fleet") => ["apply", "--owner", owner, file];

    const run = await pingDuring(a.workload, b.workload.ip, async () => {
      await warrenOk(a, apply(files.other, "other"));
      const without = await table(a);
      await warrenOk(a, apply(files.old));
      const wantOld = await table(a);
      await warrenOk(a, apply(files.changed));
      const wantNew = await table(a);
      assertEquals([wantOld.length, wantNew.length], [4107, 4107]);
      const groupsThen = [...otherGroups, ...groupsNew];
      await assertExactly(lab, a, wantNew, groupsThen);
      // Dead before the flows' switch: the old flows; after it, the new
      // ones. Groups change before the flows, and go after them.
      const cases: [string, string[], string[]][] = [
        ["group.written", wantOld, groupsOld],
        ["group.written@2", wantOld, [groupsNew[0], groupsOld[1]]],
        ["flow.owner.staged", wantOld, [...groupsNew, groupsOld[1]]],
        ["flow.owner.committed", wantNew, [...groupsNew, groupsOld[1]]],
        ["flow.owner.settled", wantNew, [...groupsNew, groupsOld[1]]],
        ["group.deleted", wantNew, groupsNew],
      ];
      for (const [fp, flows, groups] of cases) {
        await warrenOk(a, apply(files.old));
        await crash(lab, a, fp, apply(files.changed));
        await assertTable(a, flows);
        await assertGroups(a, [...otherGroups, ...groups]);
        await warrenOk(a, apply(files.changed));
        await assertExactly(lab, a, wantNew, groupsThen);
      }
      // Dead while removing every flow of an owner: the rerun forgets it,
      // and its groups.
      await crash(lab, a, "flow.owner.committed", apply(files.none));
      await warrenOk(a, apply(files.none));
      await assertExactly(lab, a, without, otherGroups);
    });
    assert.ok(run.sent > 200, `only ${run.sent} pings sent`);
    assertEquals(run.lost, [], `pings lost of ${run.sent}`);
    await Deno.remove(dir, { recursive: true });
  },
);

privilegedTest(
  "killed in the middle of the operator's apply of a few changes, staged, committed or settled: the rerun ends exact, pings never stop",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a, b] = lab.hosts;
    // Of 4 004 flows, 5 change actions, 5 change priority, 5 go and 5
    // come: few enough that the apply writes them in place.
    const old = [...BASE(b.ip), ...extra(0, 4000, 1000, b.ip)];
    const changed = old.flatMap((f, i) =>
      i % 200 !== 7
        ? [f]
        : i < 1000
        ? [f.replace("output:vx0", "output:web")]
        : i < 2000
        ? [f.replace("priority=10,", "priority=11,")]
        : i < 3000
        ? []
        : [f, ...extra(5000 + i, 1, 3000, b.ip)]
    );
    const dir = await Deno.makeTempDir();
    const [oldFile, newFile] = [`${dir}/old.json`, `${dir}/new.json`];
    await Deno.writeTextFile(oldFile, overlayState(old));
    await Deno.writeTextFile(newFile, overlayState(changed));
    const index = () => lab.datapath(a, (dp) => dp.maps.flowIndexId(dp.maps.config.read().gen & 1));

    const run = await pingDuring(a.workload, b.workload.ip, async () => {
      await warrenOk(a, ["apply", oldFile]);
      const wantOld = await table(a);
      const live = await index();
      const diff = await warrenJson<{ flows: Record<string, number> }>(a, ["apply", newFile]);
      assertEquals(
        [diff.flows.added, diff.flows.modified, diff.flows.removed, await index()],
        [10, 5, 10, live],
        "the changes alone, in place",
      );
      const wantNew = await table(a);
      await assertExactly(lab, a, wantNew);
      // Dead before the switch: the old flows; after it, the new ones.
      const cases: [string, string[]][] = [
        ["flow.owner.staged", wantOld],
        ["flow.owner.committed", wantNew],
        ["flow.owner.settled", wantNew],
      ];
      for (const [fp, flows] of cases) {
        const before = await index();
        await warrenOk(a, ["apply", oldFile]);
        assertEquals(await index(), before, `${fp}: the old flows back in place`);
        await crash(lab, a, fp, ["apply", newFile]);
        await assertTable(a, flows);
        await warrenOk(a, ["apply", newFile]);
        await assertExactly(lab, a, wantNew);
      }
    });
    assert.ok(run.sent > 200, `only ${run.sent} pings sent`);
    assertEquals(run.lost, [], `pings lost of ${run.sent}`);
    await Deno.remove(dir, { recursive: true });
  },
);

/** `got` and `want` hold the same flows; else the first few that differ. */
function assertSameFlows(got: string[], want: string[]): void {
  const g = new Set(got), w = new Set(want);
  const extra = got.filter((f) => !w.has(f)).slice(0, 3);
  const missing = want.filter((f) => !g.has(f)).slice(0, 3);
  assertEquals({ extra, missing, count: got.length }, {
    extra: [],
    missing: [],
    count: want.length,
  });
}

/** The groups are exactly `want` (bookkeeping not judged). */
async function assertGroups(h: LabHost, want: string[]): Promise<void> {
  const listed = (await warrenOk(h, ["group", "list", "--no-counters"])).split("\n");
  assertEquals(listed.filter(Boolean).sort(), [...want].sort(), "groups");
}

/** The live flows are exactly `want` (bookkeeping not judged). */
async function assertTable(h: LabHost, want: string[]): Promise<void> {
  assertSameFlows(await table(h), want);
}

/** A veth in `h`'s namespace that can become a port. */
async function spareDevice(h: LabHost): Promise<string> {
  const r = await h.ns.runRaw(["ip", "link", "show", "sp0"]);
  if (r.code !== 0) {
    await h.ns.run(["ip", "link", "add", "sp0", "type", "veth", "peer", "name", "sp1"]);
    await h.ns.run(["ip", "link", "set", "sp0", "up"]);
  }
  return "sp0";
}

/** The ids of `h`'s programs. */
async function programIds(h: LabHost): Promise<number[]> {
  return (await warrenJson<{ programs: { id: number }[] }>(h, ["status"])).programs.map((p) =>
    p.id
  );
}

/** The ifindex of `device` in `h`'s namespace. */
async function ifindexOf(h: LabHost, device: string): Promise<number> {
  return JSON.parse(await h.ns.run(["ip", "-j", "link", "show", device]))[0].ifindex;
}

/** The hooks `status` lists on `ifindex`. */
async function hooksOn(h: LabHost, ifindex: number): Promise<string[]> {
  const st = await warrenJson<{ attachments: { hook: string; ifindex: number }[] }>(h, [
    "status",
  ]);
  return st.attachments.filter((a) => a.ifindex === ifindex).map((a) => a.hook);
}

/** No pin, hook or qdisc of warren left in `h`'s namespace; `ids` unloaded. */
async function assertNothingLeft(h: LabHost, ids: number[]): Promise<void> {
  assertEquals((await runRaw(["test", "-e", h.pinDir])).code, 1, `${h.pinDir} is gone`);
  const lock = lockPath(h.pinDir);
  assertEquals((await runRaw(["test", "-e", lock])).code, 1, `${lock} is gone`);
  assertEquals(await h.ns.run(["ip", "link", "show", "type", "vxlan"]), "", "no vxlan device");
  assertEquals((await h.ns.run(["bpftool", "net", "show"])).includes("wr_"), false);
  assert.doesNotMatch(await h.ns.run(["ip", "-d", "link", "show"]), /prog\/xdp/);
  for (const dev of ["u0", "wl0"]) {
    const r = await h.ns.runRaw(["tc", "qdisc", "show", "dev", dev]);
    assert.doesNotMatch(r.stdout, /clsact/);
  }
  for (const id of ids) {
    const r = await runRaw(["bpftool", "prog", "show", "id", String(id)]);
    assert.notEqual(r.code, 0, `program ${id} is unloaded`);
  }
}

privilegedTest("up killed halfway through attaching: down still leaves nothing", async () => {
  await using lab = await Lab.create({ ipv6: false });
  const [a] = lab.hosts;
  // XDP forced: auto chooses TC only on a veth, and XDP is the half that gets attached.
  const r = await warren(a, ["up", "--underlay", "u0", "--xdp", "native"], undefined, {
    WARREN_FAILPOINTS: "up.attached",
  });
  assertEquals(r.code, 137, r.stderr);
  // XDP is attached and pinned, TC is not: a datapath half up.
  assert.match(await a.ns.run(["ip", "-d", "link", "show", "u0"]), /prog\/xdp/);
  const xdpId = Number(
    /prog\/xdp id (\d+)/.exec(await a.ns.run(["ip", "-d", "link", "show", "u0"]))![1],
  );
  await warrenOk(a, ["down"]);
  await assertNothingLeft(a, [xdpId]);
  // And up then works as on a fresh host.
  await warrenOk(a, ["up", "--underlay", "u0"]);
  const ids = await programIds(a);
  await warrenOk(a, ["down"]);
  await assertNothingLeft(a, ids);
});

privilegedTest("upgrading the programs under a ping flood loses no packet", async () => {
  await using lab = await Lab.create({ ipv6: false });
  await overlay(lab);
  const [a, b] = lab.hosts;
  const seen = [await programIds(a)];
  const run = await pingDuring(a.workload, b.workload.ip, async () => {
    for (let i = 0; i < 3; i++) {
      for (const h of lab.hosts) await warrenOk(h, ["up", "--underlay", h.underlay]);
      seen.push(await programIds(a));
    }
  }, 0.005);
  assert.ok(run.sent > 300, `only ${run.sent} pings sent`);
  assertEquals(run.lost, [], `pings lost of ${run.sent}`);
  // Each up loaded new programs: every id differs from every earlier one.
  const all = seen.flat();
  assertEquals(new Set(all).size, all.length, JSON.stringify(seen));
  // The flows' counters were kept through the upgrades.
  const icmp = (await warrenJson<DumpedFlow[]>(a, ["flow", "dump", "icmp"]))
    .find((f) => f.match.includes("in_port=web"))!;
  assert.ok(icmp.packets >= run.sent, `${icmp.packets} counted, ${run.sent} sent`);
});

privilegedTest(
  "pins of another layout version are refused by every command but down, which removes them",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a] = lab.hosts;
    // What an older warren with the same map sizes would have left.
    const ids = await programIds(a);
    await lab.datapath(a, (dp) => {
      dp.maps.config.update(() => ({ layout_version: 2 }));
    });
    const refused = "uses layout version 2, this warren uses";
    await warrenFails(a, ["status"], 1, refused);
    await warrenFails(a, ["flow", "dump"], 1, refused);
    await warrenFails(a, ["flow", "add", "in_port=web actions=drop"], 1, refused);
    await warrenFails(a, ["up", "--underlay", "u0"], 1, refused);
    // The programs still run as they were (up changed nothing).
    assertEquals((await ping(a.workload, lab.hosts[1].workload.ip)).received, 3);
    await warrenOk(a, ["down"]);
    await assertNothingLeft(a, ids);
    await warrenOk(a, ["up", "--underlay", "u0"]);
    await warrenOk(a, ["down"]);
  },
);

privilegedTest(
  "a missing bpffs, a vanished device and a full table: a clear error, nothing half done",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a] = lab.hosts;
    const tmp = await Deno.makeTempDir();
    await warrenFails(
      { nsName: a.ns.name, pinDir: `${tmp}/pins` },
      ["up", "--underlay", "u0"],
      1,
      "is not on a bpffs; mount one with: mount -t bpf bpf /sys/fs/bpf",
    );
    assertEquals([...Deno.readDirSync(tmp)], [], "nothing was made");
    await Deno.remove(tmp);

    // A table of 64 flows: 65 at once is refused whole.
    await warrenOk(a, ["up", "--underlay", "u0", "--max-flows", "64"]);
    await warrenOk(a, ["port", "add", "web", "wl0"]);
    const ids = await programIds(a);
    const many = Array.from(
      { length: 65 },
      (_, i) => `in_port=web,ip,nw_dst=10.5.0.${i} actions=drop`,
    );
    await warrenFails(a, ["flow", "add", ...many], 1, "full");
    assertEquals((await table(a)).length, 0);
    await warrenOk(a, ["flow", "add", ...many.slice(0, 64)]);
    await warrenFails(a, ["flow", "add", many[64]], 1, "full");
    await assertExactly(lab, a, many.slice(0, 64).map((f) => `priority=32768,${f}`).sort());

    // The port's device vanishes: the port says so; up (an upgrade) goes
    // on without it and drops its defunct attachment; the port goes cleanly.
    const wl0 = await ifindexOf(a, "wl0");
    await a.ns.run(["ip", "link", "del", "wl0"]);
    const ports = await warrenJson<{ name: string; present: boolean }[]>(a, ["port", "list"]);
    assertEquals(ports.map((p) => [p.name, p.present]), [["web", false]]);
    assert.match(await warrenOk(a, ["port", "list"]), /web\s+1\s+wl0 \(gone\)/);
    await warrenOk(a, ["up", "--underlay", "u0"]);
    assertEquals(await hooksOn(a, wl0), []);
    assertEquals((await warrenJson<{ name: string }[]>(a, ["port", "list"])).length, 1);
    await warrenOk(a, ["flow", "del"]);
    await warrenOk(a, ["port", "del", "web"]);
    assertEquals(await warrenJson(a, ["port", "list"]), []);

    // The underlay vanishes: status says so; up names the device; down
    // still removes everything.
    // Another device cannot take the place of an underlay still there.
    await a.ns.run(["ip", "link", "add", "d0", "type", "veth"]);
    await a.ns.run(["ip", "addr", "add", "198.51.100.1/24", "dev", "d0"]);
    await warrenFails(a, ["up", "--underlay", "d0"], 1, "run warren down first");
    const u0 = await ifindexOf(a, "u0");
    await a.ns.run(["ip", "link", "del", "u0"]);
    assert.match(await warrenOk(a, ["status"]), /underlay:\s+\(gone\)/);
    await warrenFails(a, ["up", "--underlay", "u0"], 1, "u0");
    // A new u0 that happens to get the same ifindex (a namespace rebuilt,
    // say): the old links are defunct for good, and up attaches afresh.
    await a.ns.run(["ip", "link", "add", "u0", "index", String(u0), "type", "veth"]);
    await a.ns.run(["ip", "addr", "add", `${a.ip}/24`, "dev", "u0"]);
    await a.ns.run(["ip", "link", "set", "u0", "up"]);
    await warrenOk(a, ["up", "--underlay", "u0", "--xdp", "native"]);
    const live = await programIds(a);
    assertEquals((await hooksOn(a, u0)).sort(), ["tcx-ingress", "xdp-native"]);
    for (
      const h of await warrenJson<{ attachments: { programId: number }[] }>(a, ["status"]).then(
        (st) => st.attachments,
      )
    ) {
      assert.ok(live.includes(h.programId), "every attachment runs a program of this up");
    }
    // Gone again, and this time the new u0 has another ifindex: it takes
    // the old one's place.
    await a.ns.run(["ip", "link", "del", "u0"]);
    await a.ns.run(["ip", "link", "add", "u0", "type", "veth"]);
    await a.ns.run(["ip", "addr", "add", `${a.ip}/24`, "dev", "u0"]);
    await a.ns.run(["ip", "link", "set", "u0", "up"]);
    const moved = await ifindexOf(a, "u0");
    assert.notEqual(moved, u0);
    await warrenOk(a, ["up", "--underlay", "u0", "--xdp", "native"]);
    assertEquals(await hooksOn(a, u0), []);
    assertEquals((await hooksOn(a, moved)).sort(), ["tcx-ingress", "xdp-native"]);
    assert.match(
      await warrenOk(a, ["status"]),
      new RegExp(`underlay:\\s+u0 \\(ifindex ${moved}\\)`),
    );
    await warrenOk(a, ["down"]);
    await assertNothingLeft(a, [...ids, ...live]);
  },
);
