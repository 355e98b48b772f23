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
 * counter), the floor that then redirects to the same veth as warren does
 * (the decapsulation figures' baseline), a bare redirect, and the floor at
 * TC.
 *
 * Every live-frames run happens in host A's namespace: the kernel finds
 * the receiving device and the redirect's target by ifindex in the
 * namespace of the caller. A live-frames figure and its baseline alternate
 * in many short rounds, the thread pinned to one CPU for the whole row (the
 * redirect's target is woken on the CPU that redirects, so its softirq
 * stays there too), and their ratio is the median of the rounds' ratios:
 * both sides measured the same way, under the same load of the moment.
 *
 * The ablation section measures warren's own builds with one cost item
 * left out each (`bpf/include/ablate.h`, `make -C bpf ablation`) beside
 * the full build, on the same packets: where a packet's time goes.
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
import { currentCpu, onCpu } from "../src/lab/cpu.ts";
import { macOf } from "../src/lab/netns.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import type { Datapath } from "../src/tunnel/datapath.ts";
import { type Programs, sharedPrograms } from "../src/tunnel/datapath/object.ts";
import { parseFlow } from "../src/tunnel/flow_syntax.ts";
import { type Protocol, PROTOCOLS } from "../src/tunnel/port.ts";
import {
  type Figure,
  figure,
  FULL_BUILD,
  innerFrame,
  say,
  type SideBySide,
  sideBySide,
  single,
  tunnelledToA,
} from "./lib.ts";

/** How much work a run does. */
export interface KernelOptions {
  /** Test-run repeats per live-frames round. */
  repeat: number;
  /** Alternating rounds per live-frames figure and its baseline. */
  rounds: number;
  /** Single-packet test-runs per TC measurement. */
  single: number;
  /** Runs per median. */
  runs: number;
  /** Flow counts to measure decapsulation with. */
  flowCounts: number[];
}

/**
 * Measures `subject` against `baseline`, both live frames: `rounds`
 * alternating rounds on one CPU (see the module's comment).
 */
function liveSideBySide(
  rounds: number,
  subject: () => Promise<number>,
  baseline: () => Promise<number>,
): Promise<SideBySide> {
  return onCpu(currentCpu(), () => sideBySide(rounds, subject, baseline));
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

/** The flow every decapsulation figure hits on `proto`'s port, with 1 flow and 1 mask. */
const decapFlow = (p: Protocol) => `tun_id=42,in_port=t_${p} actions=output:web`;

/** The inner UDP port of the frames {@link PASS_FLOW} takes. */
const PASS_PORT = 7;

/**
 * A flow XDP cannot finish (it hands the frame to the host's stack), so
 * that XDP decapsulates and classifies, and TC finishes: the path on which
 * XDP hands TC the flow it found.
 */
const PASS_FLOW = `priority=40000,tun_id=42,in_port=t_vxlan,udp,tp_dst=${PASS_PORT} actions=pass`;

/** The flows encapsulation figures hit: UDP to port 1000 + i goes out of PROTOCOLS[i], to 2000 out of t_csum. */
const encapFlows = (remote: string) =>
  PROTOCOLS.map((p, i) =>
    `in_port=web,udp,tp_dst=${1000 + i} actions=set_tunnel(id=42,dst=${remote}),output:t_${p}`
  ).concat(
    `in_port=web,udp,tp_dst=2000 actions=set_tunnel(id=42,dst=${remote}),output:t_csum`,
  );

/** The baseline programs of bench.bpf.c, loaded for host A. */
interface Baselines {
  drop: Program;
  floor: Program;
  floorRedirect: Program;
  redirect: Program;
  tcFloor: Program;
}

/**
 * Two lab hosts; A up with XDP, a local port on its workload (whose side
 * counts and drops what arrives) and a tunnel port per protocol. `run`
 * gives what measuring needs; everything is undone after.
 */
async function withRig<T>(
  run: (r: {
    lab: Lab;
    a: LabHost;
    b: LabHost;
    base: Baselines;
    /** Measures in A's namespace: `decap(prog, proto, repeat)` and so on. */
    decap: (prog: Program, proto: Protocol, repeat: number) => Promise<number>;
    /** VXLAN decapsulation at XDP of a frame whose flow ({@link PASS_FLOW}) finishes at TC. */
    decapToTc: (prog: Program, repeat: number) => Promise<number>;
    floor: (prog: Program, repeat: number) => Promise<number>;
    encap: (prog: Program, proto: Protocol, n: number) => Promise<number>;
    tcFloor: (n: number) => Promise<number>;
    /** Any frame from the workload, at TC. */
    tc: (prog: Program, pkt: Uint8Array, n: number) => Promise<number>;
  }) => Promise<T>,
): Promise<T> {
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
  const under = await a.ns.within(() => ifindex(a.underlay));
  const web = await a.ns.within(() => ifindex(a.workload.port));

  using obj = BpfObject.openMemory(bench, "bench");
  obj.setConstant("bench_redirect_ifindex", web);
  obj.load();
  using drop = obj.program("bench_xdp_drop");
  using floor = obj.program("bench_xdp_floor");
  using floorRedirect = obj.program("bench_xdp_floor_redirect");
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
    const packets = new Map(
      PROTOCOLS.map((p) => [p, tunnelledToA(lab, p, innerFrame(a.workload.mac), aMac)]),
    );
    const baseline = packets.get("vxlan")!;
    const toTc = tunnelledToA(lab, "vxlan", innerFrame(a.workload.mac, PASS_PORT), aMac);
    const tcBaseline = innerFrame(b.workload.mac);
    return await run({
      lab,
      a,
      b,
      base: { drop, floor, floorRedirect, redirect, tcFloor },
      decap: (prog, proto, repeat) =>
        a.ns.within(() => live(prog, packets.get(proto)!, under, repeat)),
      decapToTc: (prog, repeat) => a.ns.within(() => live(prog, toTc, under, repeat)),
      floor: (prog, repeat) => a.ns.within(() => live(prog, baseline, under, repeat)),
      encap: (prog, proto, n) =>
        a.ns.within(() =>
          single(prog, innerFrame(b.workload.mac, 1000 + PROTOCOLS.indexOf(proto)), web, n)
        ),
      tcFloor: (n) => a.ns.within(() => single(tcFloor, tcBaseline, web, n)),
      tc: (prog, pkt, n) => a.ns.within(() => single(prog, pkt, web, n)),
    });
  } finally {
    link.close();
  }
}

/** A program of A's live datapath, by its pin. */
function pinned(a: LabHost, name: keyof Programs): Promise<Program> {
  return a.ns.within(() => Program.fromPin(`${a.pinDir}/progs/${name}`));
}

/** The baseline of every decapsulation figure. */
const FLOOR_REDIRECT = "floor + redirect (XDP, live frames)";

/** Measures section 1; returns its figures. */
export function kernelCosts(o: KernelOptions): Promise<Figure[]> {
  return withRig(async ({ lab, a, b, base, decap, floor, encap, tcFloor, tc }) => {
    const out: Figure[] = [];
    const baseRow = async (name: string, prog: Program) => {
      const r = await liveSideBySide(
        o.rounds,
        () => floor(prog, o.repeat),
        () => floor(base.drop, o.repeat),
      );
      out.push(figure({
        name,
        value: r.value,
        unit: "ns/packet",
        baseline: "XDP_DROP",
        baseline_value: r.base,
        ratio: r.ratio,
        spread: r.spread,
        runs: o.rounds,
        better: "lower",
      }));
    };
    say("kernel: baselines");
    await baseRow("floor: parse Ethernet/IPv4/UDP, count (XDP, live frames)", base.floor);
    await baseRow("bare XDP redirect to the workload's veth (live frames)", base.redirect);
    await baseRow(
      "floor + redirect: parse, count, redirect to the workload's veth (XDP, live frames)",
      base.floorRedirect,
    );

    using xdp = await pinned(a, "wr_xdp_underlay");
    /** Decapsulation of `proto` against the floor + redirect, with the flows in place. */
    const decapRow = async (name: string, proto: Protocol, target?: [string, number]) => {
      const r = await liveSideBySide(
        o.rounds,
        () => decap(xdp, proto, o.repeat),
        () => floor(base.floorRedirect, o.repeat),
      );
      out.push(figure({
        name,
        value: r.value,
        unit: "ns/packet",
        baseline: FLOOR_REDIRECT,
        baseline_value: r.base,
        ratio: r.ratio,
        spread: r.spread,
        runs: o.rounds,
        better: "lower",
        target: target?.[0],
        check: target ? (ratio) => ratio <= target[1] : undefined,
        note: "the same frame every time: after the first, the exact-match flow cache answers",
      }));
    };
    for (const p of PROTOCOLS) {
      await lab.datapath(a, (dp) => addFlows(dp, [decapFlow(p)]));
      say(`kernel: ${p} decapsulation`);
      await decapRow(
        `${p} decap + flow hit + redirect, 1 flow, 1 mask`,
        p,
        p === "stt" ? ["≤ 3× the floor + redirect", 3] : ["≤ 1.5× the floor + redirect", 1.5],
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
        await lab.datapath(a, (dp) => addFlows(dp, flows));
        say(`kernel: vxlan decapsulation, ${flows.length} flows, ${masks} masks`);
        await decapRow(
          `vxlan decap + flow hit + redirect, ${flows.length} flows, ${masks} masks`,
          "vxlan",
          masks === 8 && n >= 100000
            ? ["≤ 1.6× the floor + redirect", 1.6]
            : masks === 1
            ? ["≤ 1.5× the floor + redirect", 1.5]
            : undefined,
        );
      }
    }

    // The same frame again and again hits the flow cache; its miss costs
    // what a build whose every probe misses costs (search and fill), with
    // the last table above in place.
    {
      const bytes = await Deno.readFile(new URL("warren-abl-cache_hit.bpf.o", BUILD_DIR));
      const progs = await lab.datapath(a, (dp) => sharedPrograms(dp.maps, { bytes }));
      try {
        const masks = 8, flows = Math.max(...o.flowCounts);
        say(`kernel: vxlan decapsulation, a cache miss every packet, ${flows} flows, 8 masks`);
        const r = await liveSideBySide(
          o.rounds,
          () => decap(progs.wr_xdp_underlay, "vxlan", o.repeat),
          () => floor(base.floorRedirect, o.repeat),
        );
        out.push(figure({
          name: `vxlan decap + flow cache miss + redirect, ${flows} flows, ${masks} masks`,
          value: r.value,
          unit: "ns/packet",
          baseline: FLOOR_REDIRECT,
          baseline_value: r.base,
          ratio: r.ratio,
          spread: r.spread,
          runs: o.rounds,
          better: "lower",
          note: "every packet misses the exact-match cache (a build whose probes never match), " +
            "searches every mask and fills a slot",
        }));
      } finally {
        for (const p of Object.values(progs)) p.close();
      }
    }

    // Encapsulation, per protocol, one fresh skb per run.
    await lab.datapath(a, (dp) => addFlows(dp, encapFlows(b.ip)));
    using tcProg = await pinned(a, "wr_tc_local");
    for (const p of PROTOCOLS) {
      say(`kernel: ${p} encapsulation`);
      const r = await sideBySide(
        o.runs,
        () => encap(tcProg, p, o.single),
        () => tcFloor(o.single),
      );
      const limit = p === "stt" ? 5 : 3;
      out.push(figure({
        name: `${p} encap (classify, set_tunnel, build, route)`,
        value: r.value,
        unit: "ns/packet",
        baseline: "floor at TC (one skb per run)",
        baseline_value: r.base,
        runs: o.runs,
        better: "lower",
        target: `≤ ${limit}× the floor`,
        check: (ratio) => ratio <= limit,
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
      () => tc(tcProg, summed, o.single),
      () => tc(tcProg, plain, o.single),
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
    return out;
  });
}

/** How much work the ablation section does. */
export interface AblationOptions {
  /** Test-run repeats per live-frames round. */
  repeat: number;
  /** Alternating rounds per live-frames figure and its baseline. */
  rounds: number;
  /** Single-packet test-runs per TC measurement. */
  single: number;
  /** Runs per median. */
  runs: number;
}

/**
 * The ablation builds (`bpf/include/ablate.h`): what each leaves out, and
 * which of the two paths measured (decapsulation at XDP, encapsulation at
 * TC) it touches.
 */
const ABLATIONS: {
  build: string;
  without: string;
  decap: boolean;
  encap: boolean;
  /** It touches decapsulation at XDP finished at TC ({@link PASS_FLOW}). */
  toTc?: boolean;
}[] = [
  {
    build: "clock",
    without: "jiffies for the clock (the coarse clock helper instead, as before)",
    decap: true,
    encap: true,
  },
  { build: "counters", without: "any counter", decap: true, encap: true },
  { build: "cache", without: "the exact-match flow cache", decap: true, encap: true },
  { build: "csum", without: "the outer IPv4 header checksum check", decap: true, encap: false },
  { build: "buflen", without: "the frame length helper", decap: true, encap: false },
  { build: "parse", without: "parsing the inner frame past Ethernet", decap: true, encap: false },
  { build: "nh_cache", without: "the next-hop cache", decap: false, encap: true },
  { build: "fib", without: "the FIB lookup", decap: false, encap: true },
  { build: "hash", without: "the flow hash", decap: false, encap: true },
  { build: "mtu", without: "the MTU lookup", decap: false, encap: true },
  { build: "devmap", without: "the device map (a redirect by ifindex)", decap: true, encap: false },
  {
    build: "meta_flow",
    without: "the flow XDP hands TC (TC classifies again)",
    decap: false,
    encap: false,
    toTc: true,
  },
];

/** Where the ablation builds are. */
const BUILD_DIR = new URL("../bpf/build/", import.meta.url);

/** Measures the ablation section; returns its figures. */
export function ablationCosts(o: AblationOptions): Promise<Figure[]> {
  return withRig(async ({ lab, a, b, base, decap, decapToTc, floor, encap, tcFloor }) => {
    const out: Figure[] = [];
    await lab.datapath(
      a,
      (dp) => addFlows(dp, [decapFlow("vxlan"), PASS_FLOW, ...encapFlows(b.ip)]),
    );
    using fullXdp = await pinned(a, "wr_xdp_underlay");
    using fullTc = await pinned(a, "wr_tc_local");

    // The full build against its floors first: the whole that the rows below divide.
    say("ablation: the full build");
    const d = await liveSideBySide(
      o.rounds,
      () => decap(fullXdp, "vxlan", o.repeat),
      () => floor(base.floorRedirect, o.repeat),
    );
    const e = await sideBySide(
      o.runs,
      () => encap(fullTc, "vxlan", o.single),
      () => tcFloor(o.single),
    );
    /** A row; a live-frames one (`live`) has its ratio from its rounds. */
    const row = (name: string, r: SideBySide, baseline: string, live: boolean) =>
      out.push(figure({
        name,
        value: r.value,
        unit: "ns/packet",
        baseline,
        baseline_value: r.base,
        ...(live ? { ratio: r.ratio, spread: r.spread } : {}),
        runs: live ? o.rounds : o.runs,
        better: "lower",
      }));
    row("ablation: vxlan decap, the full build", d, FLOOR_REDIRECT, true);
    row("ablation: vxlan encap, the full build", e, "floor at TC (one skb per run)", false);

    for (const abl of ABLATIONS) {
      const bytes = await Deno.readFile(new URL(`warren-abl-${abl.build}.bpf.o`, BUILD_DIR));
      const progs = await lab.datapath(a, (dp) => sharedPrograms(dp.maps, { bytes }));
      try {
        if (abl.decap) {
          say(`ablation: vxlan decap without ${abl.without}`);
          const r = await liveSideBySide(
            o.rounds,
            () => decap(progs.wr_xdp_underlay, "vxlan", o.repeat),
            () => decap(fullXdp, "vxlan", o.repeat),
          );
          row(`ablation: vxlan decap without ${abl.without}`, r, FULL_BUILD, true);
        }
        if (abl.encap) {
          say(`ablation: vxlan encap without ${abl.without}`);
          const r = await sideBySide(
            o.runs,
            () => encap(progs.wr_tc_local, "vxlan", o.single),
            () => encap(fullTc, "vxlan", o.single),
          );
          row(`ablation: vxlan encap without ${abl.without}`, r, FULL_BUILD, false);
        }
        if (abl.toTc) {
          say(`ablation: vxlan decap finished at TC without ${abl.without}`);
          const r = await liveSideBySide(
            o.rounds,
            () => decapToTc(progs.wr_xdp_underlay, o.repeat),
            () => decapToTc(fullXdp, o.repeat),
          );
          row(`ablation: vxlan decap finished at TC without ${abl.without}`, r, FULL_BUILD, true);
        }
      } finally {
        for (const p of Object.values(progs)) p.close();
      }
    }
    return out;
  });
}
