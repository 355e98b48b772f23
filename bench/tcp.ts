/**
 * TCP throughput between two namespace hosts' workloads with iperf3, GSO on:
 * through warren's VXLAN and STT at both ends, against the kernel's vxlan
 * devices (bridged to the workloads' veths) at both ends.
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

async function rig(kind: "vxlan" | "stt" | "kernel", xdp: "auto" | "off" = "off") {
  const lab = await Lab.create({ ipv6: false });
  for (const h of lab.hosts) {
    const peer = lab.peer(h);
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
      await dp.addTunnelPort("t0", kind, { remote_ip: "flow", key: "flow" });
      await dp.addFlows([
        `in_port=web actions=set_tunnel(id=42,dst=${peer.ip}),output:t0`,
        "tun_id=42,in_port=t0 actions=output:web",
      ].map((f) => parseFlow(f, dp.portNames())));
    });
  }
  // VXLAN takes 50 bytes off the workloads' MTU, as anyone running it
  // would (warren would say so by ICMP otherwise). STT carries whole
  // frames in segments and needs no such cut.
  if (kind !== "stt") {
    for (const h of lab.hosts) {
      await h.workload.ns.run(["ip", "link", "set", h.workload.dev, "mtu", "1450"]);
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
  await using vxlanXdp = await rig("vxlan", "auto");
  await using stt = await rig("stt");
  const out: Figure[] = [];
  const cases = [
    ["VXLAN, TC on the underlay (up --xdp off)", vxlan, true, undefined],
    [
      "VXLAN, XDP on the underlay",
      vxlanXdp,
      false,
      "a veth with an XDP program copies every GSO packet it receives into an XDP buffer; on a real NIC, XDP sees wire-sized frames and GRO comes after it",
    ],
    [
      "STT, TC on the underlay (up --xdp off)",
      stt,
      false,
      "segmenting 64 KB frames and reassembling them in BPF copies and checksums every byte in software, where a NIC's TSO and LRO would do it in hardware",
    ],
  ] as const;
  for (const [name, r, target, note] of cases) {
    const m = await sideBySide(o.runs, () => r.run(o.seconds), () => kernel.run(o.seconds));
    out.push(figure({
      name: `TCP throughput over warren ${name} (iperf3, GSO on)`,
      value: m.value,
      unit: "Gbit/s",
      baseline: "kernel vxlan devices at both ends",
      baseline_value: m.base,
      runs: o.runs,
      better: "higher",
      target: target ? "≥ 1.0× the kernel vxlan devices" : undefined,
      check: target ? (ratio) => ratio >= 1 : undefined,
      note,
    }));
  }
  return out;
}
