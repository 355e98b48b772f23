/**
 * Replication: what one broadcast frame sent to a group of N buckets
 * costs, against the kernel's vxlan device flooding the same frame to the
 * same N remotes through an all-zeros FDB list (`bridge fdb append
 * 00:00:00:00:00:00 dev vxlan0 dst IP`, N times).
 *
 * Both run on host A of one lab, towards remotes 10.200.x.y routed through
 * B (whose MAC is pinned): warren as one test-run of its local program per
 * frame, the flow sending to the group; the kernel as one test-run of
 * bench_tc_clone per frame, which hands the frame to the vxlan device's
 * transmit. The time the kernel reports for each test-run covers every
 * copy's trip onto the underlay veth (test-run leaves only warren's last
 * redirect undone). The cost of a copy is the slope between two fan-outs,
 * which cancels what a frame costs once.
 *
 * @module
 */

import bench from "../bpf/build/bench.bpf.o" with { type: "bytes" };
import { BpfObject, ifindex, Program } from "../src/bpf/mod.ts";
import { macOf } from "../src/lab/netns.ts";
import { Lab } from "../src/lab/topology.ts";
import { parseFlow } from "../src/tunnel/flow_syntax.ts";
import { parseGroup } from "../src/tunnel/group_syntax.ts";
import { type Figure, figure, innerFrame, say, sideBySide, single } from "./lib.ts";

/** How much work a run does. */
export interface ReplicationOptions {
  /** Test-runs (frames) per measurement. */
  single: number;
  /** Runs per median. */
  runs: number;
  /** The two fan-outs measured: a small one and the big one. */
  fanouts: [number, number];
}

/** Remote `i` of a fan-out. */
function remote(i: number): string {
  return `10.200.${i >> 8}.${i & 255}`;
}

/** Measures the replication section; returns its figures. */
export async function replicationCosts(o: ReplicationOptions): Promise<Figure[]> {
  await using lab = await Lab.create({ ipv6: false });
  const [a, b] = lab.hosts;
  await lab.up(a, { xdp: "native" });
  const bMac = await macOf(b.ns, b.underlay);
  await a.ns.sh(`ip neigh replace ${b.ip} lladdr ${bMac} dev ${a.underlay} nud permanent
    ip route add 10.200.0.0/16 via ${b.ip}`);
  // Each fan-out n: a group n and its flow (UDP to port n), and a kernel
  // vxlan device kvxn with VNI n flooding to the same n remotes.
  await lab.datapath(a, async (dp) => {
    await dp.addLocalPort("web", a.workload.port);
    await dp.addTunnelPort("vx0", "vxlan", { remote_ip: "flow", key: "flow" });
    for (const n of o.fanouts) {
      const buckets = Array.from(
        { length: n },
        (_, i) => `bucket=set_tunnel(id=${n},dst=${remote(i)}),output:vx0`,
      );
      await dp.setGroups([parseGroup(`group_id=${n},type=all,${buckets.join(",")}`)], "add");
      await dp.addFlows([
        parseFlow(`in_port=web,udp,tp_dst=${n} actions=group:${n}`, dp.portNames()),
      ]);
    }
  });
  const fdb = await Deno.makeTempFile({ suffix: ".bridge" });
  try {
    for (const n of o.fanouts) {
      await a.ns.sh(`ip link add kvx${n} type vxlan id ${n} dstport 4789 local ${a.ip} nolearning
        ip link set kvx${n} up`);
      await Deno.writeTextFile(
        fdb,
        Array.from(
          { length: n },
          (_, i) => `fdb append 00:00:00:00:00:00 dev kvx${n} dst ${remote(i)}\n`,
        ).join(""),
      );
      await a.ns.run(["bridge", "-batch", fdb]);
    }
  } finally {
    await Deno.remove(fdb);
  }

  const costs = new Map<number, { value: number; base: number }>();
  await a.ns.within(async () => {
    using prog = Program.fromPin(`${a.pinDir}/progs/wr_tc_local`);
    const web = ifindex(a.workload.port);
    for (const n of o.fanouts) {
      using obj = BpfObject.openMemory(bench, "bench");
      obj.setConstant("bench_redirect_ifindex", ifindex(`kvx${n}`));
      obj.load();
      using clone = obj.program("bench_tc_clone");
      const frame = innerFrame("ff:ff:ff:ff:ff:ff", n);
      say(`replication: a broadcast to ${n} remotes`);
      // A first round of each warms routes, neighbours and caches.
      single(prog, frame, web, 10);
      single(clone, frame, web, 10);
      costs.set(
        n,
        await sideBySide(
          o.runs,
          () => single(prog, frame, web, o.single),
          () => single(clone, frame, web, o.single),
        ),
      );
    }
  });
  const [small, big] = o.fanouts;
  const s = costs.get(small)!, g = costs.get(big)!;
  const kernel = `kernel vxlan device, all-zeros FDB list of ${big} remotes`;
  return [
    figure({
      name: `broadcast to a group of ${big} tunnel buckets (one frame, every copy sent)`,
      value: g.value / 1000,
      unit: "µs/frame",
      baseline: kernel,
      baseline_value: g.base / 1000,
      runs: o.runs,
      better: "lower",
      note: "one test-run per frame at TC; the copies cross the underlay veth to B",
    }),
    figure({
      name: `cost per replicated copy (slope from ${small} to ${big} buckets)`,
      value: (g.value - s.value) / (big - small),
      unit: "ns/copy",
      baseline: `kernel vxlan device, all-zeros FDB list (${small} to ${big} remotes)`,
      baseline_value: (g.base - s.base) / (big - small),
      runs: o.runs,
      better: "lower",
    }),
  ];
}
