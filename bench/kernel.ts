/**
 * Per-packet cost in the kernel, through BPF_PROG_TEST_RUN.
 *
 * Decapsulation changes the packet, so it runs in live-frames mode: every
 * repeat gets a fresh copy of the frame and its verdict is carried out for
 * real (the redirect to the workload's veth happens). Encapsulation runs
 * at TC, where live frames do not exist; the equivalent is one test-run
 * per packet (a fresh skb each time), averaging the in-kernel duration the
 * kernel reports for each. Baselines are measured the same way, in the
 * same run: XDP_DROP, the floor (parse Ethernet/IPv4/UDP, bump a per-CPU
 * counter), a bare redirect, and the floor at TC.
 *
 * @module
 */

import bench from "../bpf/build/bench.bpf.o" with { type: "bytes" };
import {
  attachXdp,
  BpfObject,
  ifindex,
  type Link,
  Program,
  testRun,
  xdpContext,
} from "../src/bpf/mod.ts";
import { macOf } from "../src/lab/netns.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import type { Datapath } from "../src/tunnel/datapath.ts";
import { parseFlow } from "../src/tunnel/flow_syntax.ts";
import { type Protocol, PROTOCOLS } from "../src/tunnel/port.ts";
import { type Figure, figure, innerFrame, say, sideBySide, single, tunnelledToA } from "./lib.ts";

/** How much work a run does. */
export interface KernelOptions {
  /** Test-run repeats per live-frames measurement (at least 1 000 000 in a full run). */
  repeat: number;
  /** Single-packet test-runs per TC measurement. */
  single: number;
  /** Runs per median. */
  runs: number;
  /** Flow counts to measure decapsulation with. */
  flowCounts: number[];
}

/** ns per packet of `prog` on fresh copies of `pkt` (live frames). */
function live(prog: Program, pkt: Uint8Array, ifi: number, repeat: number): number {
  const t = performance.now();
  const r = testRun(prog, {
    data: pkt,
    ctx: xdpContext(ifi, pkt.length),
    repeat,
    liveFrames: true,
  });
  // The kernel reports the mean; the wall clock is the fallback.
  return r.durationNs || (performance.now() - t) * 1e6 / repeat;
}

async function addFlows(dp: Datapath, flows: string[]): Promise<void> {
  await dp.applyFlows(
    (function* () {
      for (const f of flows) yield parseFlow(f, dp.portNames());
    })(),
  );
}

/** Measures section 1; returns its figures. */
export async function kernelCosts(o: KernelOptions): Promise<Figure[]> {
  const out: Figure[] = [];
  await using lab = await Lab.create({ ipv6: false });
  const [a, b] = lab.hosts;
  await lab.up(a, { xdp: "native", maxFlows: 262144 });
  // B's underlay MAC, for good: encapsulation needs a resolved next hop.
  const bMac = await macOf(b.ns, b.underlay);
  await a.ns.run([
    "ip",
    "neigh",
    "replace",
    b.ip,
    "lladdr",
    bMac,
    "dev",
    a.underlay,
    "nud",
    "permanent",
  ]);
  const aMac = await macOf(a.ns, a.underlay);

  using obj = BpfObject.openMemory(bench, "bench");
  obj.setConstant("bench_redirect_ifindex", await a.ns.within(() => ifindex(a.workload.port)));
  obj.load();
  using drop = obj.program("bench_xdp_drop");
  using floor = obj.program("bench_xdp_floor");
  using redirect = obj.program("bench_xdp_redirect");
  using tcFloor = obj.program("bench_tc_floor");
  using counter = obj.program("bench_xdp_count");
  // The workload's side takes XDP redirects when an XDP program runs there.
  const link: Link = await a.workload.ns.within(() =>
    attachXdp(counter, ifindex(a.workload.dev), { mode: "native" })
  );
  try {
    await lab.datapath(a, async (dp) => {
      await dp.addLocalPort("web", a.workload.port, { xdp: true });
      for (const p of PROTOCOLS) {
        await dp.addTunnelPort(`t_${p}`, p, { remote_ip: "flow", key: "flow" });
      }
      await dp.addTunnelPort("t_csum", "vxlan", {
        ...{ remote_ip: "flow", key: "flow", csum: "true", dst_port: "4790" },
      });
    });
    const under = await a.ns.within(() => ifindex(a.underlay));
    const web = await a.ns.within(() => ifindex(a.workload.port));
    const packet = (proto: Protocol) => tunnelledToA(lab, proto, innerFrame(a.workload.mac), aMac);
    const baseline = packet("vxlan");

    const base = async (name: string, prog: Program) => {
      const r = await sideBySide(
        o.runs,
        () => live(prog, baseline, under, o.repeat),
        () => live(drop, baseline, under, o.repeat),
      );
      out.push(figure({
        name,
        value: r.value,
        unit: "ns/packet",
        baseline: "XDP_DROP",
        baseline_value: r.base,
        runs: o.runs,
        better: "lower",
      }));
      return r.value;
    };
    say("kernel: baselines");
    await base("floor: parse Ethernet/IPv4/UDP, count (XDP, live frames)", floor);
    await base("bare XDP redirect to the workload's veth (live frames)", redirect);

    /** Decapsulation of `proto` against the floor, with the flows in place. */
    const decap = async (
      name: string,
      proto: Protocol,
      target?: [string, number],
    ) => {
      const pkt = packet(proto);
      await a.ns.within(async () => {
        using prog = Program.fromPin(`${a.pinDir}/progs/wr_xdp_underlay`);
        const r = await sideBySide(
          o.runs,
          () => live(prog, pkt, under, o.repeat),
          () => live(floor, baseline, under, o.repeat),
        );
        out.push(figure({
          name,
          value: r.value,
          unit: "ns/packet",
          baseline: "floor (XDP, live frames)",
          baseline_value: r.base,
          runs: o.runs,
          better: "lower",
          target: target?.[0],
          check: target ? (ratio) => ratio <= target[1] : undefined,
          note: "includes carrying out the redirect: the frame crosses the veth to the workload",
        }));
      });
    };
    for (const p of PROTOCOLS) {
      await lab.datapath(a, (dp) => addFlows(dp, [`tun_id=42,in_port=t_${p} actions=output:web`]));
      say(`kernel: ${p} decapsulation`);
      await decap(
        `${p} decap + flow hit + redirect, 1 flow, 1 mask`,
        p,
        p === "vxlan" ? ["≤ 2.5× the floor", 2.5] : undefined,
      );
    }

    // VXLAN with many flows and masks. The flow that matches has the lowest
    // priority, so every mask is searched.
    for (const masks of [1, 8]) {
      for (const n of o.flowCounts) {
        if (n === 1 && masks === 1) continue;
        const flows = [
          "priority=1,tun_id=42,in_port=t_vxlan,ip,nw_dst=10.1.0.1 actions=output:web",
        ];
        // Mask m is /(32 - m); its flows start at (20 + m).0.0.0, one
        // prefix apart, so no two flows of a mask share a masked address.
        for (let i = 0; flows.length < Math.max(n, masks); i++) {
          const m = i % masks, k = Math.floor(i / masks);
          const v = (20 + m) * 2 ** 24 + k * 2 ** m;
          const addr = [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join(".");
          flows.push(
            `priority=10,tun_id=42,in_port=t_vxlan,ip,nw_dst=${addr}/${32 - m} actions=output:web`,
          );
        }
        const unique = flows;
        await lab.datapath(a, (dp) => addFlows(dp, unique));
        say(`kernel: vxlan decapsulation, ${unique.length} flows, ${masks} masks`);
        await decap(
          `vxlan decap + flow hit + redirect, ${unique.length} flows, ${masks} masks`,
          "vxlan",
          masks === 8 && n >= 100000
            ? ["≤ 4× the floor", 4]
            : masks === 1
            ? ["≤ 2.5× the floor", 2.5]
            : undefined,
        );
      }
    }

    // Encapsulation, per protocol, one fresh skb per run.
    await lab.datapath(a, (dp) =>
      addFlows(dp, [
        ...PROTOCOLS.map((p, i) =>
          `in_port=web,udp,tp_dst=${1000 + i} actions=set_tunnel(id=42,dst=${b.ip}),output:t_${p}`
        ),
        `in_port=web,udp,tp_dst=2000 actions=set_tunnel(id=42,dst=${b.ip}),output:t_csum`,
      ]));
    const tcBaseline = innerFrame(b.workload.mac);
    await a.ns.within(async () => {
      using prog = Program.fromPin(`${a.pinDir}/progs/wr_tc_local`);
      for (const [i, p] of PROTOCOLS.entries()) {
        say(`kernel: ${p} encapsulation`);
        const pkt = innerFrame(b.workload.mac, 1000 + i);
        const r = await sideBySide(
          o.runs,
          () => single(prog, pkt, web, o.single),
          () => single(tcFloor, tcBaseline, web, o.single),
        );
        out.push(figure({
          name: `${p} encap (classify, set_tunnel, build, route)`,
          value: r.value,
          unit: "ns/packet",
          baseline: "floor at TC (one skb per run)",
          baseline_value: r.base,
          runs: o.runs,
          better: "lower",
          target: "≤ 3× the floor",
          check: (ratio) => ratio <= 3,
          note:
            "one test-run per packet: each time includes the kernel's timer reads (also in the floor)",
        }));
      }
      // The outer checksum over a frame whose own checksum is complete
      // (forwarded traffic; a test-run skb's): every byte summed, 512 at a
      // time. Over a checksum left to the device (a local sender's) only
      // the headers are.
      say("kernel: vxlan encapsulation with a checksum over a complete frame");
      const payload = 1400 - 14 - 20 - 8;
      const plain = innerFrame(b.workload.mac, 1000, payload);
      const summed = innerFrame(b.workload.mac, 2000, payload);
      const r = await sideBySide(
        o.runs,
        () => single(prog, summed, web, o.single),
        () => single(prog, plain, web, o.single),
      );
      out.push(figure({
        name: "vxlan encap with csum=true, 1400-byte frame whose inner checksum is complete",
        value: r.value,
        unit: "ns/packet",
        baseline: "the same frame with csum=false",
        baseline_value: r.base,
        runs: o.runs,
        better: "lower",
        note:
          "the whole frame summed, in 512-byte steps (64-byte steps cost 2-5x as much); over a checksum left to the device only the headers are",
      }));
    });
  } finally {
    link.close();
  }
  return out;
}

/** A lab host, for sections that build their own topologies. */
export type { LabHost };
