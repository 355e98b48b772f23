/**
 * TCP throughput between two namespace hosts' workloads with iperf3, GSO on:
 * through warren's VXLAN at both ends, against the kernel's vxlan devices
 * (bridged to the workloads' veths) at both ends; warren's VXLAN with
 * native XDP on the underlay veth against TC only; STT against VXLAN on the
 * same topology; and what the tunnel options that hold for every frame
 * cost (a checksum, GRE sequence numbers: bpf/include/gso.h), each against
 * the same tunnel without it.
 *
 * @module
 */

import { Lab } from "../src/lab/topology.ts";
import { parseFlow } from "../src/tunnel/flow_syntax.ts";
import { type Figure, figure, say, sideBySide } from "./lib.ts";

/** How long each transfer lasts. */
export interface TcpOptions {
  /** Seconds per iperf3 run. */
  seconds: number;
  /** Runs per median. */
  runs: number;
}

/** A warren tunnel's underlay family and options, beyond remote and key from the flows. */
interface Tunnel {
  v6?: boolean;
  options?: Record<string, string>;
}

async function rig(
  kind: "vxlan" | "geneve" | "gre" | "stt" | "kernel",
  xdp: "native" | "off" = "off",
  tunnel: Tunnel = {},
) {
  const lab = await Lab.create({ ipv6: tunnel.v6 ?? false });
  for (const h of lab.hosts) {
    const peer = lab.peer(h);
    const dst = tunnel.v6 ? peer.ip6 : peer.ip;
    // Each host knows the other's MAC: no first-packet neighbour wait.
    await h.ns.run(["ping", "-c", "1", "-W", "2", peer.ip]);
    if (kind === "kernel") {
      await h.ns.sh(`
        ip link add vx42 type vxlan id 42 local ${h.ip} remote ${peer.ip} dstport 4789 dev u0
        ip link add br0 type bridge
        ip link set wl0 master br0
        ip link set vx42 master br0
        ip link set vx42 up
        ip link set br0 up
        sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 || true`);
      continue;
    }
    await lab.up(h, { xdp });
    await lab.datapath(h, async (dp) => {
      await dp.addLocalPort("web", h.workload.port);
      await dp.addTunnelPort("t0", kind, { remote_ip: "flow", key: "flow", ...tunnel.options });
      await dp.addFlows([
        `in_port=web actions=set_tunnel(id=42,dst=${dst}),output:t0`,
        "tun_id=42,in_port=t0 actions=output:web",
      ].map((f) => parseFlow(f, dp.portNames())));
    });
  }
  // The tunnel takes its overhead off the workloads' MTU (50 bytes, 70
  // over IPv6), as anyone running it would (warren would say so by ICMP
  // otherwise). STT carries whole frames in segments and needs no such cut.
  if (kind !== "stt") {
    for (const h of lab.hosts) {
      const mtu = tunnel.v6 ? "1430" : "1450";
      await h.workload.ns.run(["ip", "link", "set", h.workload.dev, "mtu", mtu]);
    }
  }
  const [a, b] = lab.hosts;

  /** Gbit/s of one iperf3 run from A's workload to B's. */
  const run = async (seconds: number): Promise<number> => {
    const server = new Deno.Command("ip", {
      args: ["netns", "exec", b.workload.ns.name, "iperf3", "-s", "-1", "-p", "5201"],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      for (let i = 0; i < 50; i++) {
        const probe = await b.workload.ns.runRaw(["sh", "-c", "ss -ltn | grep -q :5201"]);
        if (probe.code === 0) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const out = await a.workload.ns.run([
        "iperf3",
        "-c",
        b.workload.ip,
        "-p",
        "5201",
        "-t",
        String(seconds),
        "-J",
      ]);
      const j = JSON.parse(out);
      return j.end.sum_received.bits_per_second / 1e9;
    } catch (err) {
      // A client that never connected leaves the server waiting for good.
      server.kill();
      throw err;
    } finally {
      await server.status;
    }
  };
  return { run, [Symbol.asyncDispose]: () => lab[Symbol.asyncDispose]() };
}

/** Measures section 3; returns its figures. */
export async function tcpThroughput(o: TcpOptions): Promise<Figure[]> {
  say("tcp: iperf3 through warren VXLAN and STT and the kernel's vxlan");
  await using kernel = await rig("kernel");
  await using vxlan = await rig("vxlan");
  await using stt = await rig("stt");
  const out: Figure[] = [];
  const m = await sideBySide(o.runs, () => vxlan.run(o.seconds), () => kernel.run(o.seconds));
  out.push(figure({
    name:
      "TCP throughput over warren VXLAN, TC on the underlay (up --xdp auto or off; iperf3, GSO on)",
    value: m.value,
    unit: "Gbit/s",
    baseline: "kernel vxlan devices at both ends",
    baseline_value: m.base,
    runs: o.runs,
    better: "higher",
    target: "≥ 1.0× the kernel vxlan devices",
    check: (ratio) => ratio >= 1,
  }));
  out.push(await xdpCost(o, vxlan));
  const s = await sideBySide(o.runs, () => stt.run(o.seconds), () => vxlan.run(o.seconds));
  out.push(figure({
    name: "TCP over warren STT / TCP over warren VXLAN, same topology (iperf3, GSO on, TC only)",
    value: s.value,
    unit: "Gbit/s",
    baseline: "warren VXLAN on the same topology",
    baseline_value: s.base,
    runs: o.runs,
    better: "higher",
    target: "≥ 0.5× warren VXLAN",
    check: (ratio) => ratio >= 0.5,
    note: STT_NOTE,
  }));
  out.push(...await optionCosts(o));
  return out;
}

/** Why STT moves a fraction of what VXLAN does (README, STT). */
const STT_NOTE =
  "VXLAN hands each 64 KB GSO packet on whole (the veth, like a NIC's TSO, keeps it one skb to the receiver); " +
  "STT must be cut into MTU-sized TCP segments and reassembled by BPF, which copies and checksums every byte " +
  "in software at both ends, and the receiver cuts the frame back into MSS-sized segments, each through the " +
  "flow table: ~45 packets per 64 KB each way instead of one. The kernel cannot segment or coalesce it for BPF: " +
  "no helper sets csum_start/csum_offset or the GSO type for an outer TCP header (README, STT)";

/**
 * Native XDP on the veth underlay against TC only, the measurement behind
 * `--xdp auto` choosing TC only on a veth: a veth hands its XDP program
 * every GSO packet copied into an XDP buffer.
 */
async function xdpCost(
  o: TcpOptions,
  tcOnly: { run: (seconds: number) => Promise<number> },
): Promise<Figure> {
  say("tcp: VXLAN with native XDP on the underlay");
  await using r = await rig("vxlan", "native");
  const m = await sideBySide(o.runs, () => r.run(o.seconds), () => tcOnly.run(o.seconds));
  return figure({
    name:
      "TCP throughput over warren VXLAN, native XDP on the veth underlay (up --xdp native; iperf3, GSO on)",
    value: m.value,
    unit: "Gbit/s",
    baseline: "the same with TC only on the underlay (what up --xdp auto chooses on a veth)",
    baseline_value: m.base,
    runs: o.runs,
    better: "higher",
    note:
      "a veth with an XDP program copies every GSO packet it receives into an XDP buffer; on a real NIC, XDP sees wire-sized frames and GRO comes after it",
  });
}

/**
 * Each option that holds for every frame against the same tunnel without
 * it, today's zero-checksum path: the kernel segments the tunnel warren
 * built, copying one header to every segment. The veth underlay takes
 * tunnel GSO packets whole, as a NIC with tunnel TSO would; where the
 * underlay segments anyway (a NIC without tunnel offloads), segmenting in
 * BPF costs no more than the kernel's segmentation.
 */
async function optionCosts(o: TcpOptions): Promise<Figure[]> {
  const cases = [
    {
      name:
        "VXLAN over IPv6 with a checksum, the default: GSO packets through the kernel's vxlan device",
      kind: "vxlan",
      v6: true,
      on: {},
      off: { csum: "false" },
    },
    {
      name: "Geneve, csum=true: GSO packets segmented in BPF",
      kind: "geneve",
      v6: false,
      on: { csum: "true" },
      off: {},
    },
    {
      name: "GRE, csum=true: GSO packets segmented in BPF",
      kind: "gre",
      v6: false,
      on: { csum: "true" },
      off: {},
    },
    {
      name: "GRE, seq=true: GSO packets segmented in BPF",
      kind: "gre",
      v6: false,
      on: { seq: "true" },
      off: {},
    },
  ] as const;
  const out: Figure[] = [];
  for (const c of cases) {
    say(`tcp: ${c.name}`);
    await using on = await rig(c.kind, "off", { v6: c.v6, options: c.on });
    await using off = await rig(c.kind, "off", { v6: c.v6, options: c.off });
    const m = await sideBySide(o.runs, () => on.run(o.seconds), () => off.run(o.seconds));
    out.push(figure({
      name: `TCP throughput over warren ${c.name} (iperf3, GSO on, up --xdp off)`,
      value: m.value,
      unit: "Gbit/s",
      baseline:
        "the same tunnel without the option: no checksum or one sequence number per GSO packet",
      baseline_value: m.base,
      runs: o.runs,
      better: "higher",
      note: c.kind === "vxlan"
        ? "the kernel device keeps TSO; over IPv6 the baseline is what a default Linux peer drops"
        : "every segment is built and sent by itself; the receiver handles ~45 frames per 64 KB instead of one",
    }));
  }
  return out;
}
