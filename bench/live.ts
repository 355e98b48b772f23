/**
 * Live forwarding: frames per second a host delivers from VXLAN on its
 * underlay veth to a workload's veth.
 *
 * Host B runs a live-frames generator (BPF_PROG_TEST_RUN of an XDP_TX
 * program on its underlay veth, each repeat a fresh frame sent for real);
 * host A decapsulates, with warren's XDP path in one lab and the kernel's
 * vxlan device bridged to the workload's veth in the other, the two labs
 * measured alternately. An XDP program on the workload's side counts what
 * arrives.
 *
 * @module
 */

import bench from "../bpf/build/bench.bpf.o" with { type: "bytes" };
import { attachXdp, BpfObject, ifindex, type Link, testRun, xdpContext } from "../src/bpf/mod.ts";
import { counterCodec, CounterSlot, PerCpuMap, u32 } from "../src/maps/mod.ts";
import { macOf } from "../src/lab/netns.ts";
import { Lab } from "../src/lab/topology.ts";
import { parseFlow } from "../src/tunnel/flow_syntax.ts";
import { type Figure, figure, innerFrame, say, sideBySide, tunnelledToA } from "./lib.ts";

/** How much traffic each run sends. */
export interface LiveOptions {
  /** Frames per run. */
  frames: number;
  /** Runs per median. */
  runs: number;
}

/** bench_xdp_count's slot. */
const COUNT_SLOT = CounterSlot.XDP_V2;

/** One lab: two hosts, a counter on A's workload, a generator on B. */
async function rig(kind: "warren" | "kernel") {
  const lab = await Lab.create({ ipv6: false });
  const [a, b] = lab.hosts;
  const obj = BpfObject.openMemory(bench, "bench");
  obj.load();
  const counter = obj.program("bench_xdp_count");
  const tx = obj.program("bench_xdp_tx");
  const counters = new PerCpuMap(obj.map("counters"), u32, counterCodec);
  const links: Link[] = [];
  links.push(
    await a.workload.ns.within(() =>
      attachXdp(counter, ifindex(a.workload.dev), { mode: "native" })
    ),
  );
  if (kind === "warren") {
    await lab.up(a, { xdp: "native" });
    await lab.datapath(a, async (dp) => {
      await dp.addLocalPort("web", a.workload.port, { xdp: true });
      await dp.addTunnelPort("vx0", "vxlan", { remote_ip: "flow", key: "flow" });
      await dp.addFlows([parseFlow("tun_id=42,in_port=vx0 actions=output:web", dp.portNames())]);
    });
  } else {
    // The kernel's way: a vxlan device and a bridge; GRO on the underlay
    // veth gives it the NAPI that receiving XDP_TX frames needs.
    await a.ns.sh(`
      ip link add vx42 type vxlan id 42 dstport 4789 local ${a.ip} nolearning
      ip link add br0 type bridge
      ip link set wl0 master br0
      ip link set vx42 master br0
      ip link set vx42 up
      ip link set br0 up
      ethtool -K ${a.underlay} gro on
      # The strongest kernel baseline: no netfilter on bridged frames.
      sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 || true`);
  }
  // The generator's veth needs an XDP program of its own to transmit from.
  links.push(await b.ns.within(() => attachXdp(counter, ifindex(b.underlay), { mode: "native" })));
  const frame = tunnelledToA(
    lab,
    "vxlan",
    innerFrame(a.workload.mac),
    await macOf(a.ns, a.underlay),
  );
  const underB = await b.ns.within(() => ifindex(b.underlay));
  const delivered = () => Number(counters.sum(COUNT_SLOT)?.packets ?? 0n);

  /** Sends `frames` and returns the frames per second delivered. */
  const run = async (frames: number): Promise<number> => {
    const before = delivered();
    const ctx = xdpContext(underB, frame.length);
    const t = performance.now();
    await b.ns.within(() =>
      testRun(tx, { data: frame, ctx, repeat: frames, liveFrames: true, batchSize: 64 })
    );
    // Let what is in flight arrive.
    let last = -1;
    while (delivered() !== last) {
      last = delivered();
      await new Promise((r) => setTimeout(r, 20));
    }
    const seconds = (performance.now() - t - 20) / 1000;
    return (delivered() - before) / seconds;
  };
  return {
    run,
    async [Symbol.asyncDispose]() {
      for (const l of links) l.close();
      counters.close();
      tx.close();
      counter.close();
      obj.close();
      await lab[Symbol.asyncDispose]();
    },
  };
}

/** Measures section 2; returns its figures. */
export async function liveForwarding(o: LiveOptions): Promise<Figure[]> {
  say("live: warren's XDP path against the kernel's vxlan device");
  await using warren = await rig("warren");
  await using kernel = await rig("kernel");
  // A first run of each warms caches and pages.
  await warren.run(Math.min(o.frames, 100_000));
  await kernel.run(Math.min(o.frames, 100_000));
  const r = await sideBySide(o.runs, () => warren.run(o.frames), () => kernel.run(o.frames));
  return [figure({
    name: "live forwarding: VXLAN from the underlay to a workload veth",
    value: r.value / 1e6,
    unit: "Mpps",
    baseline: "kernel vxlan device + bridge",
    baseline_value: r.base / 1e6,
    runs: o.runs,
    better: "higher",
    target: "≥ 5× the kernel vxlan device",
    check: (ratio) => ratio >= 5,
    note:
      "one generator CPU drives both paths; the figure is what the receiving host delivers, lost frames excluded",
  })];
}
