/**
 * The fast path's shortcuts keep every promise the slow path made: the
 * coarse clock of a flow's last use is right to its resolution; the
 * exact-match flow cache goes stale at once on any change, keeps counters
 * exact and is left alone by trace.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { coarseNs, coarseResolutionNs } from "../src/bpf/clock.ts";
import { ifindex } from "../src/bpf/netif.ts";
import { Program } from "../src/bpf/program.ts";
import { skbContext, testRun } from "../src/bpf/test_run.ts";
import { Lab } from "../src/lab/topology.ts";
import type { Datapath } from "../src/tunnel/datapath.ts";
import { parseFlow, parseMatch } from "../src/tunnel/flow_syntax.ts";
import { buildPacket } from "../src/tunnel/packet.ts";
import { trace } from "../src/tunnel/trace.ts";
import { onCpu } from "./helpers/cpu.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { scapy } from "./helpers/scapy.ts";
import { ping } from "./helpers/traffic.ts";
import {
  addFlows,
  nonZeroStats,
  oneHost,
  runPinned,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  upWithPorts,
} from "./helpers/lab.ts";

/** A frame from the workload, UDP to `dport`. */
const fromWorkload = (dport = 9) =>
  scapy(`Ether(src='02:00:00:00:00:0a')/IP(src='10.1.0.1',dst='10.1.0.2')/UDP(dport=${dport})`);

privilegedTest(
  "a flow's last use is the coarse clock at the packet, as user space reads it",
  async () => {
    await using lab = await oneHost();
    const [a] = lab.hosts;
    await lab.datapath(a, (dp) => addFlows(dp, "in_port=web actions=drop"));
    const frame = await fromWorkload();
    const used = async () =>
      await lab.datapath(a, (dp) => dp.dumpFlows({}, { counters: true })[0].counters!.usedNs);
    for (let i = 0; i < 3; i++) {
      const before = coarseNs();
      const r = await a.ns.within(() => runPinned(a, "wr_tc_local", frame, a.workload.port));
      const after = coarseNs();
      assertEquals(r.retval, TC_ACT_SHOT);
      // The same clock on both sides: the stamp lies between the two reads.
      const stamp = await used();
      assert.ok(before <= stamp && stamp <= after, `${before} <= ${stamp} <= ${after}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    // One tick: at most 10 ms (HZ=100), at least 1 ms (HZ=1000).
    const res = coarseResolutionNs();
    assert.ok(res >= 1_000_000n && res <= 10_000_000n, `resolution ${res} ns`);
  },
);

/** The flow cache's counters of `dp`'s datapath, summed over CPUs. */
function cacheCounts(dp: Datapath): { hits: number; misses: number } {
  const s = dp.maps.cacheStats.sum(0)!;
  return { hits: Number(s.flow_hits), misses: Number(s.flow_misses) };
}

/** Each flow's priority and packet count. */
function packetsByFlow(dp: Datapath): [number, number][] {
  return dp.dumpFlows({}, { counters: true }).map((f) => [f.priority, Number(f.counters!.packets)]);
}

// The cache is per CPU: one CPU for every packet, so that hits are known.
privilegedTest(
  "the flow cache: a flow change makes cached entries stale at once",
  () =>
    onCpu(0, async () => {
      await using lab = await oneHost();
      const [a] = lab.hosts;
      await lab.datapath(a, async (dp) => {
        await dp.addLocalPort("lo1", "lo"); // any device serves as an output here
        await addFlows(dp, "priority=10,in_port=web,udp actions=drop");
      });
      const frame = await fromWorkload();
      const send = async () =>
        (await a.ns.within(() => runPinned(a, "wr_tc_local", frame, a.workload.port))).retval;
      assertEquals(await send(), TC_ACT_SHOT);
      assertEquals(await send(), TC_ACT_SHOT);
      assertEquals(await lab.datapath(a, cacheCounts), { hits: 1, misses: 1 });

      // flow mod: the next packet takes the new actions, found by a search.
      await lab.datapath(
        a,
        (dp) =>
          dp.modifyFlow(
            parseFlow("priority=10,in_port=web,udp actions=output:lo1", dp.portNames()),
          ),
      );
      assertEquals(await send(), TC_ACT_REDIRECT);
      assertEquals(await send(), TC_ACT_REDIRECT);
      assertEquals(await lab.datapath(a, cacheCounts), { hits: 2, misses: 2 });

      // A new flow that beats the cached one.
      await lab.datapath(a, (dp) =>
        addFlows(dp, "priority=20,in_port=web,udp,tp_dst=9 actions=drop"));
      assertEquals(await send(), TC_ACT_SHOT);
      // Its deletion: the old one again.
      await lab.datapath(
        a,
        (dp) =>
          dp.deleteFlows(parseMatch("priority=20,in_port=web,udp,tp_dst=9", dp.portNames()), true),
      );
      assertEquals(await send(), TC_ACT_REDIRECT);
      // A port change moves the counter too.
      await lab.datapath(
        a,
        (dp) =>
          dp.addTunnelPort("t1", "geneve", { remote_ip: "flow", key: "flow" }),
      );
      assertEquals(await send(), TC_ACT_REDIRECT);
      assertEquals(await lab.datapath(a, cacheCounts), { hits: 2, misses: 5 });
      // Every packet counted once, on the flow that took it.
      assertEquals(await lab.datapath(a, packetsByFlow), [[10, 6]]);
    }),
);

// The cache is per CPU: one CPU for every packet, so that hits are known.
privilegedTest(
  "the flow cache: counters stay exact, per flow and per key",
  () =>
    onCpu(0, async () => {
      await using lab = await oneHost();
      const [a] = lab.hosts;
      await lab.datapath(a, (dp) =>
        addFlows(
          dp,
          "priority=30,in_port=web,udp,tp_dst=1 actions=drop",
          "priority=20,in_port=web,udp actions=drop",
          "priority=10,in_port=web actions=drop",
        ));
      const frames = await Promise.all([1, 2, 3].map((p) => fromWorkload(p)));
      const len = frames[0].length;
      // Interleaved, repeated: each key's first packet misses, the rest hit.
      const n = 50;
      await a.ns.within(() => {
        for (let i = 0; i < n; i++) {
          for (const f of frames) {
            assertEquals(runPinned(a, "wr_tc_local", f, a.workload.port).retval, TC_ACT_SHOT);
          }
        }
      });
      // And in one test-run of many repeats, on one CPU.
      await a.ns.within(() => {
        using p = Program.fromPin(`${a.pinDir}/progs/wr_tc_local`);
        testRun(p, { data: frames[0], ctx: skbContext(ifindex(a.workload.port)), repeat: 1000 });
      });
      const flows = await lab.datapath(a, (dp) =>
        dp.dumpFlows({}, { counters: true }).map((f) => [
          f.priority,
          Number(f.counters!.packets),
          Number(f.counters!.bytes),
        ]));
      assertEquals(flows, [[30, n + 1000, (n + 1000) * len], [20, 2 * n, 2 * n * len], [10, 0, 0]]);
      assertEquals(await lab.datapath(a, cacheCounts), { hits: 3 * n + 1000 - 3, misses: 3 });
      assertEquals(await lab.datapath(a, nonZeroStats), { drop_action: 3 * n + 1000 });
    }),
);

// The cache is per CPU: one CPU for every packet, so that hits are known.
privilegedTest(
  "the flow cache: trace neither fills, reads nor counts it",
  () =>
    onCpu(0, async () => {
      await using lab = await oneHost();
      const [a] = lab.hosts;
      await lab.datapath(a, (dp) => addFlows(dp, "in_port=web,udp actions=drop"));
      const match = await lab.datapath(
        a,
        (dp) =>
          parseMatch("in_port=web,udp,nw_src=10.1.0.1,nw_dst=10.1.0.2,tp_dst=9", dp.portNames()),
      );
      // The very packet trace builds, sent for real.
      const frame = buildPacket(match.match);
      const send = () => a.ns.within(() => runPinned(a, "wr_tc_local", frame, a.workload.port));
      const traceIt = () => lab.datapath(a, (dp) => trace(dp, match.match));
      // Traced before any packet: nothing filled, so the first real packet misses.
      assertEquals((await traceIt()).flow?.actions, "drop");
      assertEquals(await lab.datapath(a, cacheCounts), { hits: 0, misses: 0 });
      await send();
      assertEquals(await lab.datapath(a, cacheCounts), { hits: 0, misses: 1 });
      // Traced after: nothing counted, and the cached slot still answers.
      await traceIt();
      await send();
      assertEquals(await lab.datapath(a, cacheCounts), { hits: 1, misses: 1 });
      assertEquals(await lab.datapath(a, packetsByFlow), [[32768, 2]]);
    }),
);

privilegedTest(
  "the flow cache: real traffic takes a flow's new actions after flow mod",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    for (const h of lab.hosts) {
      await upWithPorts(lab, h, "vxlan");
      await lab.datapath(h, (dp) =>
        addFlows(
          dp,
          `in_port=web actions=set_tunnel(id=42,dst=${lab.peer(h).ip}),output:t0`,
          "tun_id=42,in_port=t0 actions=output:web",
        ));
    }
    const [a, b] = lab.hosts;
    const answered = async (count: number) =>
      (await ping(a.workload, b.workload.ip, { count, interval: 0.01 })).received;
    assertEquals(await answered(20), 20);
    // B's decapsulation flow now drops: every ping after the change is lost.
    const modB = (actions: string) =>
      lab.datapath(
        b,
        (dp) => dp.modifyFlow(parseFlow(`tun_id=42,in_port=t0 actions=${actions}`, dp.portNames())),
      );
    await modB("drop");
    assertEquals(await answered(20), 0);
    assertEquals((await lab.datapath(b, nonZeroStats)).drop_action, 20);
    await modB("output:web");
    assertEquals(await answered(20), 20);
    // B's cache answered most of them.
    const counts = await lab.datapath(b, cacheCounts);
    assert.ok(counts.hits > counts.misses, JSON.stringify(counts));
  },
);
