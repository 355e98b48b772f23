/**
 * The fast path's shortcuts keep every promise the slow path made: a
 * flow's last use, read from jiffies, is right to one jiffy; the
 * exact-match flow cache goes stale at once on any change, keeps counters
 * exact and is left alone by trace; the next-hop cache goes stale at once on
 * a port or tunnel key change, and within its bound on a neighbour change;
 * the endpoint memo goes stale at once on a port change.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { coarseNs, coarseResolutionNs } from "../src/bpf/clock.ts";
import { jiffyClock } from "../src/tunnel/datapath/jiffies.ts";
import { ifindex } from "../src/bpf/netif.ts";
import { BpfMap } from "../src/bpf/map.ts";
import { Program } from "../src/bpf/program.ts";
import { skbContext, testRun, type TestRunResult, xdpContext } from "../src/bpf/test_run.ts";
import { BpfObject } from "../src/bpf/object.ts";
import { metaCodec } from "../src/maps/layouts.ts";
import { COUNTER_OBJECT } from "./helpers/objects.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { runRaw } from "../src/lab/run.ts";
import { openDatapathObject } from "../src/tunnel/datapath/object.ts";
import type { Datapath } from "../src/tunnel/datapath.ts";
import { parseFlow, parseMatch } from "../src/tunnel/flow_syntax.ts";
import { buildPacket } from "../src/tunnel/packet.ts";
import { trace } from "../src/tunnel/trace.ts";
import { onCpu } from "../src/lab/cpu.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { scapy } from "./helpers/scapy.ts";
import { ping, pingDuring, tcpdump } from "./helpers/traffic.ts";
import { warren, warrenOk } from "./helpers/cli.ts";
import { dumpLine } from "../src/cli/commands/flow.ts";
import { macOf } from "../src/lab/netns.ts";
import {
  addFlows,
  nonZeroStats,
  oneHost,
  pinNeighbor,
  runPinned,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  upWithPorts,
  XDP_DROP,
  XDP_PASS,
  XDP_REDIRECT,
} from "./helpers/lab.ts";

/** The next-hop cache's bound: NH_MAX_AGE_NS in bpf/include/encap.h. */
const NH_MAX_AGE_S = 0.020;

/** A frame from the workload, UDP to `dport`. */
const fromWorkload = (dport = 9) =>
  scapy(`Ether(src='02:00:00:00:00:0a')/IP(src='10.1.0.1',dst='10.1.0.2')/UDP(dport=${dport})`);

/**
 * Runs the workload's frame through `run` three times, 20 ms apart, and
 * checks each stamp of the flow's last use with `check(before, stamp,
 * after)`, the coarse clock read before and after the packet.
 */
async function stamps(
  lab: Lab,
  run: (frame: Uint8Array) => Promise<TestRunResult>,
  check: (before: bigint, stamp: bigint, after: bigint) => void,
): Promise<void> {
  const [a] = lab.hosts;
  await lab.datapath(a, (dp) => addFlows(dp, "in_port=web actions=drop"));
  const frame = await fromWorkload();
  for (let i = 0; i < 3; i++) {
    const before = coarseNs();
    const r = await run(frame);
    const after = coarseNs();
    assertEquals(r.retval, TC_ACT_SHOT);
    check(
      before,
      await lab.datapath(a, (dp) => dp.dumpFlows({}, { counters: true })[0].counters!.usedNs),
      after,
    );
    await new Promise((r) => setTimeout(r, 20));
  }
}

privilegedTest(
  "a flow's last use is read from jiffies, the coarse clock at the packet to one jiffy",
  async () => {
    await using lab = await oneHost();
    const [a] = lab.hosts;
    // The line the datapath was loaded with (this process brought it up).
    const clock = jiffyClock();
    assert.ok(clock, "the jiffies line measured");
    // One tick: what the kernel says the coarse clock's resolution is.
    const res = coarseResolutionNs();
    assertEquals(clock.nsPerJiffy, res);
    await stamps(
      lab,
      (frame) => a.ns.within(() => runPinned(a, "wr_tc_local", frame, a.workload.port)),
      (before, stamp, after) => {
        // The same clock as user space reads, to one jiffy either way.
        assert.ok(
          before - res <= stamp && stamp <= after + res,
          `${before} <= ${stamp} <= ${after}`,
        );
        // On the jiffies line, not the clock helper's reading.
        assertEquals(BigInt.asUintN(64, stamp - clock.base) % clock.nsPerJiffy, 0n);
      },
    );
    // One tick: at most 10 ms (HZ=100), at least 1 ms (HZ=1000).
    assert.ok(res >= 1_000_000n && res <= 10_000_000n, `resolution ${res} ns`);
  },
);

privilegedTest(
  "a datapath loaded without the jiffies line stamps with the coarse clock's helper",
  async () => {
    await using lab = await oneHost();
    const [a] = lab.hosts;
    // The line's constants at 0, as a loader that could not measure (or
    // an older one) leaves them.
    using programs = await lab.datapath(a, (dp) => {
      const obj = openDatapathObject();
      obj.setConstant("wr_jiffy_ns", 0);
      obj.setConstant("wr_jiffy_base", 0);
      for (const [name, map] of dp.maps.all()) obj.reuseMap(name, map);
      obj.load();
      return obj;
    });
    using p = programs.program("wr_tc_local");
    await stamps(
      lab,
      (frame) =>
        a.ns.within(() => testRun(p, { data: frame, ctx: skbContext(ifindex(a.workload.port)) })),
      // The same clock on both sides: the stamp lies between the two reads.
      (before, stamp, after) =>
        assert.ok(before <= stamp && stamp <= after, `${before} <= ${stamp} <= ${after}`),
    );
  },
);

privilegedTest(
  "flow dump's used: is the time since a flow's last packet to one jiffy, under real traffic",
  async () => {
    await using lab = await overlay();
    const [a, b] = lab.hosts;
    const sent = coarseNs();
    const r = await ping(a.workload, b.workload.ip, { count: 1 });
    const answered = coarseNs();
    assertEquals(r.received, 1, r.output);
    await new Promise((r) => setTimeout(r, 1000));
    // flow dump's lines, at the time flow dump reads the clock.
    const now = coarseNs();
    const lines = await lab.datapath(
      a,
      (dp) => dp.dumpFlows({}, { counters: true }).map((f) => dumpLine(dp, f, now)),
    );
    // Each flow's last packet (the request out, the reply in) went between
    // `sent` and `answered`; used: may be one jiffy off either way, and is
    // cut to a millisecond.
    const res = coarseResolutionNs();
    const lo = Number(now - answered - res) / 1e6 - 1;
    const hi = Number(now - sent + res) / 1e6;
    assertEquals(lines.length, 2);
    for (const line of lines) {
      const m = / packets:([1-9]\d*) .* used:(?:(\d+)ms|(\d+\.\d+)s) /.exec(line);
      assert.ok(m, line);
      const ms = m[2] ? Number(m[2]) : Number(m[3]) * 1000;
      assert.ok(lo <= ms && ms <= hi, `${lo} <= ${ms} <= ${hi}: ${line}`);
    }
  },
);

/** The flow cache's counters of `dp`'s datapath, summed over CPUs. */
function cacheCounts(dp: Datapath): { hits: number; misses: number } {
  const s = dp.maps.stats.sum(0)!.cache;
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

// The cache is per CPU: one CPU for every packet, so that hits are known.
privilegedTest(
  "the flow cache: an owner's apply killed halfway is never answered from the cache",
  () =>
    onCpu(0, async () => {
      await using lab = await oneHost();
      const [a] = lab.hosts;
      await lab.datapath(a, (dp) => dp.addLocalPort("lo1", "lo"));
      const dir = await Deno.makeTempDir();
      const file = async (name: string, flows: string[]) => {
        const path = `${dir}/${name}.json`;
        await Deno.writeTextFile(path, JSON.stringify({ flows }));
        return path;
      };
      // v1 drops both packets, each by a flow of its own; v2 changes one
      // flow (its replacement a stand-in until settled) and removes the other.
      const v1 = await file("v1", [
        "priority=20,in_port=web,udp,tp_dst=9 actions=drop",
        "priority=10,in_port=web,udp actions=drop",
      ]);
      const v2 = await file("v2", ["priority=10,in_port=web,udp actions=output:lo1"]);
      await warrenOk(a, ["apply", "--owner", "fleet", v1]);
      const frames = await Promise.all([9, 8].map((p) => fromWorkload(p)));
      const send = () =>
        a.ns.within(() =>
          frames.map((f) => runPinned(a, "wr_tc_local", f, a.workload.port).retval)
        );
      const counted = () => lab.datapath(a, cacheCounts);
      assertEquals(await send(), [TC_ACT_SHOT, TC_ACT_SHOT]);
      assertEquals(await send(), [TC_ACT_SHOT, TC_ACT_SHOT]);
      assertEquals(await counted(), { hits: 2, misses: 2 });

      // Staged, not committed: v1 still, searched, and nothing cached.
      const staged = await warren(a, ["apply", "--owner", "fleet", v2], undefined, {
        WARREN_FAILPOINTS: "flow.owner.staged",
      });
      assertEquals(staged.code, 137, staged.stderr);
      assertEquals(await send(), [TC_ACT_SHOT, TC_ACT_SHOT]);
      assertEquals(await send(), [TC_ACT_SHOT, TC_ACT_SHOT]);
      assertEquals(await counted(), { hits: 2, misses: 6 });

      // Warmed again, then an apply killed once the generation switched:
      // the removed flow hidden, the changed one's stand-in live; the
      // cached v1 answers neither packet.
      await warrenOk(a, ["apply", "--owner", "fleet", v1]);
      assertEquals(await send(), [TC_ACT_SHOT, TC_ACT_SHOT]);
      assertEquals(await send(), [TC_ACT_SHOT, TC_ACT_SHOT]);
      assertEquals(await counted(), { hits: 4, misses: 8 });
      const committed = await warren(a, ["apply", "--owner", "fleet", v2], undefined, {
        WARREN_FAILPOINTS: "flow.owner.committed",
      });
      assertEquals(committed.code, 137, committed.stderr);
      assertEquals(await send(), [TC_ACT_REDIRECT, TC_ACT_REDIRECT]);
      assertEquals(await send(), [TC_ACT_REDIRECT, TC_ACT_REDIRECT]);
      assertEquals(await counted(), { hits: 4, misses: 12 });

      // The rerun ends the change: cached again, v2's answer.
      await warrenOk(a, ["apply", "--owner", "fleet", v2]);
      assertEquals(await send(), [TC_ACT_REDIRECT, TC_ACT_REDIRECT]);
      assertEquals(await send(), [TC_ACT_REDIRECT, TC_ACT_REDIRECT]);
      assertEquals(await counted(), { hits: 6, misses: 14 });
      await Deno.remove(dir, { recursive: true });
    }),
);

// The cache is per CPU, and so is what XDP hands TC: one CPU for every packet.
privilegedTest(
  "one classification per packet: TC takes the flow XDP found, unless the configuration changed since",
  () =>
    onCpu(0, async () => {
      await using lab = await oneHost();
      const [a, b] = lab.hosts;
      await lab.datapath(a, (dp) => addFlows(dp, "tun_id=42,in_port=t0 actions=output:web"));
      const aMac = await macOf(a.ns, a.underlay);
      const packet = await scapy(
        `Ether(dst='${aMac}',src='02:00:00:00:00:99')/IP(src='${b.ip}',dst='${a.ip}')/` +
          `UDP(sport=50000,dport=4789)/VXLAN(vni=42,flags=0x08)/` +
          `Ether(src='02:00:00:00:00:0a')/IP(src='10.1.0.1',dst='10.1.0.2')/UDP(dport=9)`,
      );
      const under = await a.ns.within(() => ifindex(a.underlay));
      const flowPackets = () => lab.datapath(a, packetsByFlow);

      // Decapsulated at XDP, finished at TC (web takes no XDP redirects),
      // in live frames (one batch, 64 at most): each packet looked up
      // once, and counted once.
      await a.ns.within(() => {
        using xdp = Program.fromPin(`${a.pinDir}/progs/wr_xdp_underlay`);
        const ctx = xdpContext(under, packet.length);
        testRun(xdp, { data: packet, ctx, repeat: 50, liveFrames: true });
      });
      assertEquals(await flowPackets(), [[32768, 50]]);
      assertEquals(await lab.datapath(a, cacheCounts), { hits: 49, misses: 1 });

      // What XDP hands over: the flow, the cache slot holding it, the
      // configuration it was found under.
      const xdp = await a.ns.within(() => runPinned(a, "wr_xdp_underlay", packet, a.underlay));
      assertEquals(xdp.retval, XDP_PASS);
      const meta = metaCodec.decode(xdp.data);
      const [flowId, seq] = await lab.datapath(
        a,
        (dp) => [[...dp.eachFlow()][0].flowId, dp.maps.config.read().seq],
      );
      assertEquals([meta.flow_id, meta.seq], [flowId, seq]);
      assert.ok(meta.flow_slot < 4096, `slot ${meta.flow_slot}`);
      assertEquals(await lab.datapath(a, cacheCounts), { hits: 50, misses: 1 });

      // TC fed that metadata by an XDP program that passes the frame on.
      const frame = xdp.data;
      const handOver = (m: typeof meta) =>
        a.ns.within(() => {
          using obj = BpfObject.openMemory(COUNTER_OBJECT, "counter");
          obj.load();
          using pass = obj.program("xdp_count");
          const data = new Uint8Array(frame);
          data.set(metaCodec.encode(m));
          const ctx = xdpContext(under, data.length, metaCodec.size);
          testRun(pass, { data, ctx, liveFrames: true });
        });
      await handOver(meta);
      assertEquals(await flowPackets(), [[32768, 51]]);
      assertEquals(await lab.datapath(a, cacheCounts), { hits: 50, misses: 1 });
      // Found under another configuration: TC looks the frame up again.
      await handOver({ ...meta, seq: meta.seq - 1n });
      assertEquals(await flowPackets(), [[32768, 52]]);
      assertEquals(await lab.datapath(a, cacheCounts), { hits: 51, misses: 1 });
      // A flow mod between XDP and TC: the frame takes the new actions.
      await lab.datapath(
        a,
        (dp) => dp.modifyFlow(parseFlow("tun_id=42,in_port=t0 actions=drop", dp.portNames())),
      );
      await handOver(meta);
      assertEquals(await flowPackets(), [[32768, 53]]);
      assertEquals(await lab.datapath(a, cacheCounts), { hits: 51, misses: 2 });
      assertEquals(await lab.datapath(a, nonZeroStats), {
        decap: 51,
        xdp_pass: 51,
        drop_action: 1,
      });
    }),
);

/** Two hosts up with VXLAN, each sending its workload's frames to the other's. */
async function overlay(): Promise<Lab> {
  const lab = await Lab.create({ ipv6: false });
  try {
    for (const h of lab.hosts) {
      await upWithPorts(lab, h, "vxlan");
      await lab.datapath(h, (dp) =>
        addFlows(
          dp,
          `in_port=web actions=set_tunnel(id=42,dst=${lab.peer(h).ip}),output:t0`,
          "tun_id=42,in_port=t0 actions=output:web",
        ));
    }
    return lab;
  } catch (err) {
    await lab[Symbol.asyncDispose]();
    throw err;
  }
}

privilegedTest(
  "the flow cache: real traffic takes a flow's new actions after flow mod",
  async () => {
    await using lab = await overlay();
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

privilegedTest(
  "the flow cache: a flow added under traffic takes the very next packets, counters exact",
  async () => {
    await using lab = await overlay();
    const [a, b] = lab.hosts;
    const icmp = "tun_id=42,in_port=t0,icmp";
    await lab.datapath(b, (dp) => addFlows(dp, `priority=40000,${icmp} actions=output:web`));
    // Pings every 10 ms; a flow that drops them goes in over the one that
    // answers them, which stays (and stays cached on every CPU).
    const r = await pingDuring(a.workload, b.workload.ip, async () => {
      await lab.datapath(
        b,
        (dp) => addFlows(dp, `priority=40001,${icmp},icmp_type=8 actions=drop`),
      );
      await new Promise((r) => setTimeout(r, 300));
    });
    // Lost: exactly the pings after the change, every one of them.
    const first = r.lost[0] ?? 1;
    assert.ok(first > 1 && r.lost.length > 0, `lost ${r.lost.length} of ${r.sent}`);
    assertEquals(r.lost, Array.from({ length: r.lost.length }, (_, i) => first + i));
    const packets = await lab.datapath(b, (dp) =>
      Object.fromEntries(
        dp.dumpFlows({}, { counters: true })
          .filter((f) => f.priority >= 40000)
          .map((f) => [f.priority, Number(f.counters!.packets)]),
      ));
    // Every echo request counted once, on the flow that took it.
    assertEquals(packets, { 40000: first - 1, 40001: r.sent - first + 1 });
  },
);

privilegedTest(
  "the next-hop cache: a neighbour change takes effect within its bound, under traffic",
  async () => {
    await using lab = await overlay();
    const [a, b] = lab.hosts;
    const dir = await Deno.makeTempDir({ prefix: "warren-nh-" });
    try {
      const old = await macOf(b.ns, b.underlay);
      const fresh = "02:00:00:00:77:77";
      const pcap = `${dir}/u0.pcap`;
      // On A's way out: B's XDP takes the frames before any capture could.
      const cap = await tcpdump(a.ns.name, {
        dev: a.underlay,
        filter: `udp dst port 4789 and dst host ${b.ip}`,
        file: pcap,
        // Stopped below once the pings end: the timeout only bounds a
        // capture left behind, and 1500 pings can outlast seconds under load.
        timeout: 120,
        bufferKiB: 8192,
      });
      // A frame to B every millisecond; half a second in, B's underlay
      // takes a new MAC and A's neighbour table learns it.
      const pinging = ping(a.workload, b.workload.ip, { count: 1500, interval: 0.001 });
      await new Promise((r) => setTimeout(r, 500));
      await b.ns.run(["ip", "link", "set", b.underlay, "address", fresh]);
      await pinNeighbor(lab, a, false, undefined, fresh);
      const changed = Date.now() / 1000;
      const r = await pinging;
      assert.ok(r.received > 1000, r.output);
      cap.kill("SIGINT");
      await cap.status;
      const frames = (await a.ns.run(["tcpdump", "-r", pcap, "-e", "-tt", "-nn"]))
        .split("\n")
        .map((line) => /^(\d+\.\d+) \S+ > (\S+),/.exec(line))
        .filter((m) => m !== null)
        .map((m) => ({ at: Number(m[1]), dst: m[2] }));
      const toOld = frames.filter((f) => f.dst === old && f.at > changed);
      const toNew = frames.filter((f) => f.dst === fresh);
      // Within the bound, one tick of the coarse clock and a little slack
      // for the capture's timestamps.
      const bound = changed + NH_MAX_AGE_S + Number(coarseResolutionNs()) / 1e9 + 0.005;
      const late = toOld.filter((f) => f.at > bound);
      assertEquals(
        late.length,
        0,
        `${toOld.length} frames to the old MAC after the change, ${late.length} late`,
      );
      assert.ok(toNew.length > 500, `${toNew.length} frames to the new MAC`);
      // The cache was in use: most tunnel outputs never asked the FIB.
      const s = await lab.datapath(a, (dp) => dp.maps.stats.sum(0)!.cache);
      assert.ok(s.nh_hits > s.nh_misses, `${s.nh_hits} hits, ${s.nh_misses} misses`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

/** The next-hop cache's counters of `dp`'s datapath, summed over CPUs. */
function nhCounts(dp: Datapath): { hits: number; misses: number } {
  const s = dp.maps.stats.sum(0)!.cache;
  return { hits: Number(s.nh_hits), misses: Number(s.nh_misses) };
}

// The cache is per CPU: one CPU for every packet, so that hits are known.
privilegedTest(
  "the next-hop cache: a port or tunnel key change makes it stale at once, a neighbour change within its bound",
  () =>
    onCpu(0, async () => {
      await using lab = await oneHost();
      const [a, b] = lab.hosts;
      const peerMac = await pinNeighbor(lab, a);
      const flow = (id: number) => `in_port=web actions=set_tunnel(id=${id},dst=${b.ip}),output:t0`;
      await lab.datapath(a, (dp) => addFlows(dp, flow(42)));
      const frame = await fromWorkload();
      // The outer destination MAC, UDP destination port and VNI of one packet.
      const send = async () => {
        const r = await a.ns.within(() => runPinned(a, "wr_tc_local", frame, a.workload.port));
        assertEquals(r.retval, TC_ACT_REDIRECT);
        const d = r.data;
        const l4 = 14 + 20;
        return {
          mac: [...d.subarray(0, 6)].map((x) => x.toString(16).padStart(2, "0")).join(":"),
          port: (d[l4 + 2] << 8) | d[l4 + 3],
          vni: (d[l4 + 12] << 16) | (d[l4 + 13] << 8) | d[l4 + 14],
        };
      };
      assertEquals(await send(), { mac: peerMac, port: 4789, vni: 42 });
      // Packets in one test-run of many repeats: all but the first routed
      // from the cache (a run lasts far less than the cache's bound).
      await a.ns.within(() => {
        using p = Program.fromPin(`${a.pinDir}/progs/wr_tc_local`);
        testRun(p, { data: frame, ctx: skbContext(ifindex(a.workload.port)), repeat: 1000 });
      });
      const cached = await lab.datapath(a, nhCounts);
      assert.ok(cached.hits >= 990 && cached.misses <= 11, JSON.stringify(cached));

      // A tunnel key change (flow mod): the very next packet has it.
      await lab.datapath(a, (dp) => dp.modifyFlow(parseFlow(flow(43), dp.portNames())));
      assertEquals(await send(), { mac: peerMac, port: 4789, vni: 43 });
      // A port change: the same.
      await lab.datapath(a, (dp) =>
        dp.upsertPort({
          kind: "tunnel",
          name: "t0",
          proto: "vxlan",
          options: { remote_ip: "flow", key: "flow", dst_port: "4790" },
        }));
      assertEquals(await send(), { mac: peerMac, port: 4790, vni: 43 });
      // trace neither reads, fills nor counts it.
      const before = await lab.datapath(a, nhCounts);
      const match = await lab.datapath(a, (dp) => parseMatch("in_port=web,udp", dp.portNames()));
      await lab.datapath(a, (dp) => trace(dp, match.match));
      assertEquals(await lab.datapath(a, nhCounts), before);

      // A neighbour change, which the datapath is not told of: in effect
      // once the bound (and a tick of the coarse clock) has passed.
      const fresh = "02:00:00:00:77:77";
      await pinNeighbor(lab, a, false, undefined, fresh);
      const wait = NH_MAX_AGE_S * 1000 + Number(coarseResolutionNs()) / 1e6 + 5;
      await new Promise((r) => setTimeout(r, wait));
      assertEquals(await send(), { mac: fresh, port: 4790, vni: 43 });
    }),
);

// The memo is per CPU: one CPU for every packet, so that it is warm.
privilegedTest(
  "the endpoint memo: a port change takes effect at the very next tunnel packet",
  () =>
    onCpu(0, async () => {
      await using lab = await oneHost("vxlan", {}, { xdp: "native" });
      const [a, b] = lab.hosts;
      await lab.datapath(a, (dp) => addFlows(dp, "tun_id=42,in_port=t0 actions=drop"));
      const myMac = await macOf(a.ns, a.underlay);
      const packet = await scapy(
        `Ether(dst='${myMac}')/IP(src='${b.ip}',dst='${a.ip}',flags='DF')/` +
          "UDP(sport=50000,dport=4789,chksum=0)/VXLAN(vni=42,flags=0x08)/" +
          "Ether(src='02:00:00:00:00:0a',dst='02:00:00:00:00:0b')/IP(src='10.1.0.1',dst='10.1.0.2')/UDP()",
      );
      const send = async () =>
        (await a.ns.within(() => runPinned(a, "wr_xdp_underlay", packet, a.underlay))).retval;
      const t0 = (options: Record<string, string>) =>
        lab.datapath(a, (dp) =>
          dp.upsertPort({
            kind: "tunnel",
            name: "t0",
            proto: "vxlan",
            options: { remote_ip: "flow", ...options },
          }));
      // Warm: the flow takes both, the second through the memo.
      assertEquals([await send(), await send()], [XDP_DROP, XDP_DROP]);
      assertEquals(await lab.datapath(a, nonZeroStats), { decap: 2, drop_action: 2 });
      // The port now takes key 7 only: the very next packet is refused.
      await t0({ key: "7" });
      assertEquals(await send(), XDP_DROP);
      assertEquals((await lab.datapath(a, nonZeroStats)).drop_key_mismatch, 1);
      // Key 42 again, on another UDP port: 4789 is no endpoint any more.
      await t0({ key: "42", dst_port: "4790" });
      assertEquals(await send(), XDP_PASS);
      assertEquals((await lab.datapath(a, nonZeroStats)).not_ours, 1);
      // Back on 4789, and the flow takes it again, counted on t0.
      await t0({ key: "flow" });
      assertEquals(await send(), XDP_DROP);
      assertEquals(await lab.datapath(a, nonZeroStats), {
        decap: 3,
        drop_action: 3,
        drop_key_mismatch: 1,
        not_ours: 1,
      });
    }),
);

/** Slots of the packet cache (bpf/include/pkt_cache.h) of `host`'s XDP program filled under `seq`, over all CPUs. */
async function packetCacheSlots(host: LabHost, seq: bigint): Promise<number> {
  const shown = await runRaw([
    "bpftool",
    "-j",
    "prog",
    "show",
    "pinned",
    `${host.pinDir}/progs/wr_xdp_underlay`,
  ]);
  assertEquals(shown.code, 0, shown.stderr);
  for (const id of JSON.parse(shown.stdout).map_ids as number[]) {
    using map = BpfMap.fromId(id);
    if (map.name !== "wr_pkt_cache") continue;
    let filled = 0;
    const key = new Uint8Array(4);
    const view = new DataView(key.buffer);
    for (let i = 0; i < map.info.maxEntries; i++) {
      view.setUint32(0, i, true);
      const value = map.lookup(key)!;
      const values = new DataView(value.buffer);
      for (let at = 0; at < value.length; at += map.cpuStride) {
        if (values.getBigUint64(at, true) === seq + 1n) filled++;
      }
    }
    return filled;
  }
  throw new Error("wr_xdp_underlay has no wr_pkt_cache");
}

// The caches are per CPU: one CPU for every packet, so that hits are known.
privilegedTest(
  "the packet cache: a hit is what the full path finds, byte for byte, and goes stale at once",
  () =>
    onCpu(0, async () => {
      await using lab = await oneHost("vxlan", {}, { xdp: "native" });
      const [a, b] = lab.hosts;
      await lab.datapath(a, async (dp) => {
        dp.deletePort("web");
        await dp.addLocalPort("web", a.workload.port, { xdp: true });
        await addFlows(
          dp,
          "priority=10,tun_id=42,in_port=t0,tcp actions=output:web",
          "priority=21,tun_id=42,in_port=t0,tcp,tp_dst=81 actions=drop",
          "priority=22,tun_id=43,in_port=t0 actions=drop",
          "priority=23,tun_id=42,in_port=t0,tun_ttl=9 actions=drop",
          "priority=24,tun_id=42,in_port=t0,tcp,tcp_flags=+syn actions=drop",
          "priority=25,tun_id=42,in_port=t0,udp actions=drop",
        );
      });
      const aMac = await macOf(a.ns, a.underlay);
      /** A VXLAN frame for A: these outer IP fields, VNI, inner IP and L4 headers, payload and padding bytes. */
      const frame = (
        over: {
          vni?: number;
          ip?: string;
          inner?: string;
          l4?: string;
          data?: number;
          pad?: number;
        } = {},
      ) =>
        scapy(
          `Ether(dst='${aMac}',src='02:00:00:00:00:99')/` +
            `IP(src='${b.ip}',dst='${a.ip}',flags='DF'${over.ip ?? ""})/` +
            `UDP(sport=50000,dport=4789,chksum=0)/VXLAN(vni=${over.vni ?? 42},flags=0x08)/` +
            "Ether(src='02:00:00:00:00:0a',dst='02:00:00:00:00:0b')/" +
            `${over.inner ?? "IP(src='10.1.0.1',dst='10.1.0.2')"}/` +
            `${over.l4 ?? "TCP(sport=1000,dport=80,flags='A')"}/Raw(b'x'*${over.data ?? 20})` +
            (over.pad ? `/Padding(b'\\0'*${over.pad})` : ""),
        );
      const send = async (packet: Uint8Array) =>
        (await a.ns.within(() => runPinned(a, "wr_xdp_underlay", packet, a.underlay))).retval;
      const twice = async (packet: Uint8Array) => [await send(packet), await send(packet)];
      const slots = async () =>
        packetCacheSlots(a, await lab.datapath(a, (dp) => dp.maps.config.read().seq));

      const base = await frame();
      assertEquals(await twice(base), [XDP_REDIRECT, XDP_REDIRECT]);
      // Per-packet fields no flow key takes hit the same slot (the outer
      // length, identification and checksum, which a hit sums itself).
      const again = await frame({
        ip: ",id=7",
        l4: "TCP(sport=1000,dport=80,flags='A',seq=99,ack=5)",
        data: 333,
      });
      assertEquals(await send(again), XDP_REDIRECT);
      assertEquals(await slots(), 1);
      // One byte apart, in each part of the frame: each takes its own flow.
      for (
        const other of [
          { l4: "TCP(sport=1000,dport=81,flags='A')" },
          { vni: 43 },
          { ip: ",ttl=9" },
          { l4: "TCP(sport=1000,dport=80,flags='S')" },
          { l4: "UDP(sport=1000,dport=80)" },
        ]
      ) {
        assertEquals(await twice(await frame(other)), [XDP_DROP, XDP_DROP], JSON.stringify(other));
      }
      assertEquals(await slots(), 6);
      // Shapes it does not serve take the full path and find their flows:
      // inner IP options (the same flow key as port 81's), an inner VLAN tag.
      const port81 = "TCP(sport=1000,dport=81,flags='A')";
      const options = await frame({
        inner: "IP(src='10.1.0.1',dst='10.1.0.2',options=[IPOption(b'\\x01\\x01\\x01\\x00')])",
        l4: port81,
      });
      const vlan = await frame({
        inner: "Dot1Q(vlan=5)/IP(src='10.1.0.1',dst='10.1.0.2')",
        l4: port81,
      });
      assertEquals(await twice(options), [XDP_DROP, XDP_DROP]);
      assertEquals(await twice(vlan), [XDP_DROP, XDP_DROP]);
      // What the words leave out is checked on every hit: the outer
      // checksum, and the frame's length (padding, which the full path trims).
      assertEquals(await send(await frame({ ip: ",chksum=0x1234" })), XDP_DROP);
      assertEquals(await send(await frame({ pad: 10 })), XDP_REDIRECT);
      assertEquals(await slots(), 6);
      assertEquals(await lab.datapath(a, nonZeroStats), {
        decap: 18,
        xdp_redirect: 4,
        drop_action: 14,
        drop_bad_csum: 1,
      });
      assertEquals(await lab.datapath(a, cacheCounts), { hits: 11, misses: 7 });
      // The tunnel port counts each frame in, and each a flow dropped, once: a
      // dropping hit counts on the port as the full path's drop does.
      const t0 = (await lab.datapath(a, (dp) => dp.stats())).ports.find((p) => p.name === "t0");
      assertEquals([t0?.rx_packets, t0?.drops], [18n, 14n]);

      // A flow mod: the very next frame takes the new actions, counted on
      // the flow; nothing cached before is valid any more.
      await lab.datapath(
        a,
        (dp) =>
          dp.modifyFlow(
            parseFlow("priority=10,tun_id=42,in_port=t0,tcp actions=drop", dp.portNames()),
          ),
      );
      assertEquals(await slots(), 0);
      assertEquals(await twice(base), [XDP_DROP, XDP_DROP]);
      assertEquals(await slots(), 1);
      assertEquals(
        (await lab.datapath(a, packetsByFlow)).sort(([x], [y]) => x - y),
        [[10, 6], [21, 6], [22, 2], [23, 2], [24, 2], [25, 2]],
      );
      assertEquals(await lab.datapath(a, cacheCounts), { hits: 12, misses: 8 });
    }),
);

for (const proto of ["geneve", "gre"] as const) {
  // The caches are per CPU: one CPU for every packet, so that hits are known.
  privilegedTest(
    `the packet cache: ${proto} frames one key apart take their own flows, its other shapes the full path`,
    () =>
      onCpu(0, async () => {
        await using lab = await oneHost(proto, {}, { xdp: "native" });
        const [a, b] = lab.hosts;
        await lab.datapath(a, (dp) =>
          addFlows(
            dp,
            "priority=10,tun_id=42,in_port=t0 actions=drop",
            "priority=20,tun_id=43,in_port=t0 actions=drop",
          ));
        const aMac = await macOf(a.ns, a.underlay);
        /** A frame for A with key `id`, the tunnel header given `extra`, which has another shape. */
        const frame = (id: number, extra = false) =>
          scapy(
            `Ether(dst='${aMac}')/IP(src='${b.ip}',dst='${a.ip}')/` +
              (proto === "gre"
                ? `GRE(${extra ? "chksum_present=1," : ""}key_present=1,key=${id},proto=0x6558)`
                : `UDP(sport=50000,dport=6081,chksum=0)/GENEVE(vni=${id},proto=0x6558${
                  extra
                    ? ",options=[GeneveOptions(classid=0x0102,type=0x01,length=1,data=b'\\x00\\x00\\x00\\x01')]"
                    : ""
                })`) +
              "/Ether(src='02:00:00:00:00:0a',dst='02:00:00:00:00:0b')/" +
              "IP(src='10.1.0.1',dst='10.1.0.2')/TCP(sport=1000,dport=80)/Raw(b'x'*20)",
          );
        const send = async (packet: Uint8Array) =>
          (await a.ns.within(() => runPinned(a, "wr_xdp_underlay", packet, a.underlay))).retval;
        for (const packet of [await frame(42), await frame(43), await frame(42, true)]) {
          assertEquals([await send(packet), await send(packet)], [XDP_DROP, XDP_DROP]);
        }
        const seq = await lab.datapath(a, (dp) => dp.maps.config.read().seq);
        assertEquals(await packetCacheSlots(a, seq), 2);
        assertEquals(
          (await lab.datapath(a, packetsByFlow)).sort(([x], [y]) => x - y),
          [[10, 4], [20, 2]],
        );
        assertEquals(await lab.datapath(a, nonZeroStats), { decap: 6, drop_action: 6 });
      }),
  );
}
