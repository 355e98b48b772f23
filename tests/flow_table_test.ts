/**
 * The flow table's bookkeeping against the kernel maps: shared tunnel key
 * slots and their reference counts, ids and counters kept across `apply`,
 * all-or-nothing batches, and healing of what a crashed writer left.
 */
import { assert, assertEquals, assertRejects } from "./helpers/assert.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { addFlows, oneHost } from "./helpers/lab.ts";
import type { Datapath } from "../src/tunnel/datapath.ts";
import { parseFlow, parseMatch } from "../src/tunnel/flow_syntax.ts";
import { FlowTableError } from "../src/tunnel/flow_table.ts";
import { CompileError, compileFlow, namesOf, type PortLookup } from "../src/tunnel/compile.ts";
import { FlowSet } from "../src/tunnel/flows/flow_set.ts";
import type { Port } from "../src/tunnel/port.ts";
import { ConfigFlag } from "../src/maps/layouts.ts";

function table(dp: Datapath, name: string) {
  return dp.status().tables.find((t) => t.name === name)!;
}

/** Every used slot and its reference count, read from the kernel map. */
function refs(dp: Datapath): Map<number, number> {
  const out = new Map<number, number>();
  for (const [slot, n] of dp.maps.tunKeyRefs.entries()) if (n) out.set(slot, n);
  return out;
}

function flowIds(dp: Datapath): Map<string, number> {
  return new Map(dp.dumpFlows().map((f) => [dp.describeMatch(f.match), f.flowId]));
}

privilegedTest(
  "flows that set the same tunnel key share one slot; the last user frees it",
  async () => {
    await using lab = await oneHost();
    const [a] = lab.hosts;
    await lab.datapath(a, async (dp) => {
      await addFlows(
        dp,
        "in_port=web,udp actions=set_tunnel(id=5,dst=192.0.2.2),output:t0",
        "in_port=web,tcp actions=set_tunnel(id=5,dst=192.0.2.2),output:t0",
        "in_port=web,icmp actions=set_tunnel(id=6,dst=192.0.2.2),output:t0",
      );
      assertEquals(table(dp, "tunnel_keys").used, 2);
      assertEquals([...refs(dp).values()].sort(), [1, 2]);
      const del = (m: string) => dp.deleteFlows(parseMatch(m, dp.portNames()), true);
      assertEquals(del("in_port=web,udp"), 1);
      assertEquals([...refs(dp).values()].sort(), [1, 1]);
      // Moving the icmp flow to id 5 drops the id 6 key.
      assertEquals(
        await dp.modifyFlow(
          parseFlow(
            "in_port=web,icmp actions=set_tunnel(id=5,dst=192.0.2.2),output:t0",
            dp.portNames(),
          ),
        ),
        1,
      );
      assertEquals([...refs(dp).values()], [2]);
      assertEquals(del("in_port=web,tcp"), 1);
      assertEquals(del("in_port=web,icmp"), 1);
      assertEquals(refs(dp).size, 0);
      assertEquals(table(dp, "tunnel_keys").used, 0);
      // The content index forgets freed keys too.
      assertEquals([...dp.maps.tunKeySlots.keys()].length, 0);
    });
  },
);

/** A flow of in_port web matching `m`, sent over t0 with tunnel id `id`. */
function flow(m: string, id: number): string {
  return `in_port=web,${m} actions=set_tunnel(id=${id},dst=192.0.2.2),output:t0`;
}

/** Gives each flow id 7 packets per CPU, as traffic would. */
function countSeven(dp: Datapath, ids: Iterable<number>): void {
  for (const id of ids) {
    dp.maps.flowStats.set(id, { packets: 7n, bytes: 700n, used_ns: 1n, tcp_flags: 0 });
  }
}

privilegedTest(
  "apply keeps ids and counters of unchanged and modified flows, zeroes the rest",
  async () => {
    await using lab = await oneHost();
    const [a] = lab.hosts;
    await lab.datapath(a, async (dp) => {
      await addFlows(dp, flow("udp", 1), flow("tcp", 2), flow("icmp", 3));
      const before = flowIds(dp);
      countSeven(dp, before.values());
      const diff = await dp.applyFlows(
        [flow("udp", 1), flow("tcp", 9), flow("arp", 4)].map((f) => parseFlow(f, dp.portNames())),
      );
      assertEquals([diff.added, diff.modified, diff.removed, diff.unchanged], [1, 1, 1, 1]);
      assertEquals(dp.describeFlow(diff.remove[0]).includes("icmp"), true);
      const after = flowIds(dp);
      assertEquals(after.get("in_port=web,udp"), before.get("in_port=web,udp"));
      assertEquals(after.get("in_port=web,tcp"), before.get("in_port=web,tcp"));
      const counts = new Map(
        dp.dumpFlows({}, { counters: true }).map((f) => [
          dp.describeMatch(f.match),
          f.counters!.packets,
        ]),
      );
      assertEquals(counts.get("in_port=web,udp"), 7n * BigInt(dp.maps.flowStats.cpus));
      assertEquals(counts.get("in_port=web,tcp"), 7n * BigInt(dp.maps.flowStats.cpus));
      assertEquals(counts.get("in_port=web,arp"), 0n);
      // The removed flow's id was zeroed and given back.
      assertEquals(dp.flows.counters(before.get("in_port=web,icmp")!).packets, 0n);
      assertEquals(table(dp, "flows").used, 3);
      assertEquals([...refs(dp).values()].sort(), [1, 1, 1]);
      // Applying the same again changes nothing and keeps the generation.
      const gen = dp.status().generation;
      const again = await dp.applyFlows(
        [flow("udp", 1), flow("tcp", 9), flow("arp", 4)].map((f) => parseFlow(f, dp.portNames())),
        { dryRun: true },
      );
      assertEquals([again.added, again.modified, again.removed, again.unchanged], [0, 0, 0, 3]);
      assertEquals(dp.status().generation, gen);
      // Not a dry run either: nothing to change, nothing written.
      const seq = dp.maps.config.read().seq;
      const same = await dp.applyFlows(
        [flow("udp", 1), flow("tcp", 9), flow("arp", 4)].map((f) => parseFlow(f, dp.portNames())),
      );
      assertEquals([same.added, same.modified, same.removed, same.unchanged], [0, 0, 0, 3]);
      assertEquals([dp.status().generation, dp.maps.config.read().seq], [gen, seq]);
    });
  },
);

privilegedTest("a batch that cannot be installed whole installs nothing", async () => {
  await using lab = await oneHost("vxlan", {}, { maxFlows: 64 });
  const [a] = lab.hosts;
  await lab.datapath(a, async (dp) => {
    const flows = Array.from(
      { length: 60 },
      (_, i) =>
        `in_port=web,ip,nw_dst=10.9.0.${i} actions=set_tunnel(id=${i},dst=192.0.2.2),output:t0`,
    );
    await addFlows(dp, ...flows);
    const snapshot = () =>
      dp.dumpFlows().map((f) => `${f.flowId} ${dp.describeFlow(f)}`).join("\n");
    const before = snapshot();
    const refsBefore = refs(dp);
    // Too many new flows: refused before anything is written.
    const more = Array.from(
      { length: 10 },
      (_, i) =>
        `in_port=web,ip,nw_dst=10.8.0.${i} actions=set_tunnel(id=${
          100 + i
        },dst=192.0.2.2),output:t0`,
    );
    await assertRejects(() => addFlows(dp, ...more), FlowTableError, "the flow table is full");
    // A priority clash in the last flow of a batch: the first ones stay out too.
    await assertRejects(
      () => addFlows(dp, more[0], `priority=7,${flows[3]}`),
      FlowTableError,
      "installed at priority 32768",
    );
    // apply refuses a table that does not fit, and keeps the old one.
    await assertRejects(
      () => dp.applyFlows([...flows, ...more].map((f) => parseFlow(f, dp.portNames()))),
      FlowTableError,
      "the flow table is full",
    );
    // Nor one where a flow would hide another: the same match at two
    // priorities, the second last of all (the set is indexed by match only
    // when wanted, no longer as each flow is added).
    await assertRejects(
      () =>
        dp.applyFlows(
          [...flows, `priority=9,${flows[0]}`].map((f) => parseFlow(f, dp.portNames())),
        ),
      CompileError,
      "two flows have the same match (the second at priority 9)",
    );
    assertEquals(snapshot(), before);
    assertEquals(refs(dp), refsBefore);
    assertEquals(table(dp, "flows").used, 60);
  });
});

privilegedTest("apply heals ids and key references a crashed writer left behind", async () => {
  await using lab = await oneHost();
  const [a] = lab.hosts;
  await lab.datapath(a, async (dp) => {
    const flows = [
      "in_port=web,udp actions=set_tunnel(id=5,dst=192.0.2.2),output:t0",
      "in_port=web,tcp actions=set_tunnel(id=5,dst=192.0.2.2),output:t0",
    ];
    await addFlows(dp, ...flows);
    // A writer that died between allocating and installing: stray bits
    // and references.
    dp.maps.flowIds.set(100, 0xffffffffffffffffn);
    dp.maps.tunKeyRefs.set(999, 3);
    dp.flows.invalidate();
    assert.ok(table(dp, "tunnel_keys").used > 1);
    await dp.applyFlows(flows.map((f) => parseFlow(f, dp.portNames())));
    assertEquals(dp.flows.usage().flowIds.used, 2);
    assertEquals([...refs(dp)].map(([, n]) => n), [2]);
    assertEquals(table(dp, "tunnel_keys").used, 1);
  });
});

privilegedTest(
  "dumps come highest priority first, then by id, and filter by port, key and match",
  async () => {
    await using lab = await oneHost();
    const [a] = lab.hosts;
    await lab.datapath(a, async (dp) => {
      await addFlows(
        dp,
        "priority=5,in_port=web actions=set_tunnel(id=1,dst=192.0.2.2),output:t0",
        "priority=50,in_port=web,udp actions=set_tunnel(id=2,dst=192.0.2.2),output:t0",
        "priority=50,in_port=web,tcp actions=drop",
        "priority=70,tun_id=9,in_port=t0 actions=output:web",
        "priority=60,tun_id=8,in_port=t0,ip actions=output:web",
      );
      const text = (fs: { priority: number; flowId: number }[]) => fs.map((f) => f.priority);
      const all = dp.dumpFlows();
      assertEquals(text(all), [70, 60, 50, 50, 5]);
      assert.ok(all[2].flowId < all[3].flowId);
      const web = dp.portNames().number("web")!;
      assertEquals(dp.dumpFlows({ port: web }).length, 5);
      const t0 = dp.portNames().number("t0")!;
      assertEquals(text(dp.dumpFlows({ port: t0 })), [70, 60, 50, 5]);
      assertEquals(text(dp.dumpFlows({ tunId: 8n })), [60]);
      const m = parseMatch("in_port=web,ip", dp.portNames()).match;
      assertEquals(text(dp.dumpFlows({ match: m })), [50, 50]);
      assertEquals(dp.flows.count({ priority: 50 }), 2);
    });
  },
);

privilegedTest(
  "a tunnel key slot a crashed writer took and never used is not handed to another key",
  async () => {
    await using lab = await oneHost();
    const [a] = lab.hosts;
    await lab.datapath(a, async (dp) => {
      const f1 = "in_port=web,udp actions=set_tunnel(id=5,dst=192.0.2.2),output:t0";
      const f2 = "in_port=web,tcp actions=set_tunnel(id=6,dst=192.0.2.2),output:t0";
      await addFlows(dp, f1);
      const [slot] = [...refs(dp).keys()];
      // A writer took this slot for f2's key and died before writing f2;
      // f1's key then took the free slot. The content index still names
      // it for f2's key.
      const key2 = compileFlow(parseFlow(f2, dp.portNames()), dp.portLookup()).tunKeyBytes[0];
      dp.maps.tunKeySlots.raw.update(key2, new Uint8Array(new Uint32Array([slot]).buffer));
      dp.maps.config.bump((c) => ({ flags: c.flags | ConfigFlag.WRITING }));
      dp.flows.invalidate();
      await addFlows(dp, f2);
      assertEquals(
        dp.dumpFlows().map((f) => dp.describeFlow(f)).sort(),
        [`priority=32768,${f1}`, `priority=32768,${f2}`].sort(),
      );
      assertEquals([...refs(dp).values()], [1, 1]);
    });
  },
);

privilegedTest(
  "in a session, an add over an installed flow replaces it: same id, new actions, counters restarted; a clash changes nothing",
  async () => {
    await using lab = await oneHost();
    const [a] = lab.hosts;
    await lab.datapath(a, async (dp) => {
      const spec = (f: string) => parseFlow(f, dp.portNames());
      await addFlows(dp, flow("udp", 1), flow("tcp", 2));
      const before = flowIds(dp);
      countSeven(dp, before.values());
      const snapshot = () =>
        dp.dumpFlows().map((f) => `${f.flowId} ${dp.describeFlow(f)}`).sort().join("\n");
      const cpus = BigInt(dp.maps.flowStats.cpus);
      {
        await using s = await dp.session();
        // Under the same mask as the installed ones: written without a
        // lookup first, and the write finds the one it replaces.
        const added = await s.addFlows([spec(flow("icmp", 3))]);
        assertEquals([added.added, added.replaced], [1, 0]);
        const r = await s.addFlows([spec(flow("udp", 5))]);
        assertEquals([r.added, r.replaced], [0, 1]);
        // In the kernel when the call returns: same id, new actions, counters from zero.
        assertEquals(flowIds(dp).get("in_port=web,udp"), before.get("in_port=web,udp"));
        assert.match(snapshot(), /udp actions=set_tunnel\(id=5,/);
        assertEquals(dp.flows.counters(before.get("in_port=web,udp")!).packets, 0n);
        assertEquals(dp.flows.counters(before.get("in_port=web,tcp")!).packets, 7n * cpus);
        // Clashes found the same way are refused, and change nothing.
        const unchanged = snapshot();
        await assertRejects(
          () => s.addFlows([spec(`priority=7,${flow("tcp", 6)}`)]),
          FlowTableError,
          "installed at priority 32768",
        );
        await assertRejects(
          () => s.addFlows([spec(flow("tcp", 6))], { owner: "other" }),
          FlowTableError,
          "one owner never changes another's",
        );
        assertEquals(snapshot(), unchanged);
        assertEquals(dp.flows.counters(before.get("in_port=web,tcp")!).packets, 7n * cpus);
        // The session goes on.
        assertEquals((await s.addFlows([spec(flow("arp", 4))])).added, 1);
      }
      assertEquals(table(dp, "flows").used, 4);
      // udp's old key (id 1) was let go; ids 5, 2, 3 and 4 are held once each.
      assertEquals([...refs(dp).values()].sort(), [1, 1, 1, 1]);
      assertEquals(table(dp, "tunnel_keys").used, 4);
    });
  },
);

Deno.test("a compiled set holds cookies only once a flow has one, and what each flow takes over only when tracked", () => {
  const web: Port = { kind: "local", name: "web", number: 1, device: "wl0", xdp: false, net: 0 };
  const ports: PortLookup = {
    byName: (n) => n === "web" ? web : undefined,
    byNumber: (n) => n === 1 ? web : undefined,
  };
  const build = (cookieAt: number) => {
    const set = new FlowSet();
    for (let i = 0; i < 20000; i++) {
      const cookie = i === cookieAt ? "cookie=0x12," : "";
      const text = `${cookie}priority=10,in_port=web,ip,nw_dst=10.0.${i >> 8}.${
        i & 255
      } actions=drop`;
      set.add(compileFlow(parseFlow(text, namesOf(ports)), ports));
    }
    return set;
  };
  const cookies = (set: FlowSet) => [...set.cookies()].flatMap((part) => [...part]);
  const none = build(-1);
  assertEquals(cookies(none), Array(20000).fill(0n));
  const one = build(15000);
  assertEquals(one.cookieOf(15000), 0x12n);
  assertEquals(one.cookieOf(14999), 0n);
  assertEquals(cookies(one), Array.from({ length: 20000 }, (_, i) => i === 15000 ? 0x12n : 0n));
  assert.notEqual(one.digest(), none.digest());
  assertEquals(build(-1).digest(), none.digest());
  // Untracked, every flow is new; tracked, each takes over none until told.
  assert.ok(none.isNew(0) && none.isNew(19999));
  none.track();
  assertEquals(none.oldId.length, 20000);
  none.oldId[7] = 42;
  none.state[7] = 1;
  assert.ok(!none.isNew(7) && none.isNew(8));
});
