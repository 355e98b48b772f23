/**
 * Tunnel options and header details through test-run, against Scapy:
 * inherited and flow-given TTL/TOS, RFC 6040 ECN on decapsulation, GRE
 * sequence numbers, the configured-neighbour fallback, and a table of
 * 100 000 flows.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab } from "../src/lab/topology.ts";
import { macOf } from "../src/lab/netns.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { scapy, toHex } from "./helpers/scapy.ts";
import {
  addFlows,
  nonZeroStats,
  oneHost,
  pinNeighbor,
  runPinned,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  XDP_DROP,
  XDP_PASS,
} from "./helpers/lab.ts";
import { metaCodec } from "../src/maps/layouts.ts";
import { parseFlow } from "../src/tunnel/flow_syntax.ts";

/** The outer IPv4 header's TOS and TTL of an encapsulated frame. */
function outerTosTtl(frame: Uint8Array): [number, number] {
  return [frame[15], frame[22]];
}

privilegedTest("ttl and tos: inherited from the inner packet, or given by the flow", async () => {
  await using lab = await oneHost("vxlan", { ttl: "inherit", tos: "inherit" });
  const [a, b] = lab.hosts;
  await pinNeighbor(lab, a);
  await lab.datapath(a, (dp) =>
    addFlows(
      dp,
      `in_port=web,udp,tp_dst=1 actions=set_tunnel(id=1,dst=${b.ip}),output:t0`,
      `in_port=web,udp,tp_dst=2 actions=set_tunnel(id=1,dst=${b.ip},tos=0x20,ttl=9),output:t0`,
    ));
  const frame = (dport: number, tos: number) =>
    scapy(
      `Ether()/IP(src='10.1.0.1',dst='10.1.0.2',ttl=17,tos=${tos})/UDP(dport=${dport})/Raw(b'x'*8)`,
    );
  const run = async (
    f: Uint8Array,
  ) => (await a.ns.within(() => runPinned(a, "wr_tc_local", f, a.workload.port)));
  // DSCP 46 (EF) with ECT(0): DSCP copied, ECN copied.
  const inherited = await run(await frame(1, 0xba));
  assertEquals(inherited.retval, TC_ACT_REDIRECT);
  assertEquals(outerTosTtl(inherited.data), [0xba, 17]);
  // The flow's values win; ECN still follows the inner packet.
  const given = await run(await frame(2, 0xba));
  assertEquals(outerTosTtl(given.data), [0x22, 9]);
  // RFC 6040: an inner CE never becomes an outer CE, but ECT(0).
  const ce = await run(await frame(1, 0xbb));
  assertEquals(outerTosTtl(ce.data), [0xba, 17]);
});

privilegedTest(
  "RFC 6040 on decapsulation: outer CE marks an ECT inner packet, drops a not-ECT one",
  async () => {
    await using lab = await oneHost();
    const [a, b] = lab.hosts;
    await lab.datapath(a, (dp) => addFlows(dp, "tun_id=7,in_port=t0 actions=output:web"));
    const mac = await macOf(a.ns, a.underlay);
    const wrap = (outerTos: number, inner: string) =>
      scapy(
        `Ether(dst='${mac}')/IP(src='${b.ip}',dst='${a.ip}',tos=${outerTos})/UDP(sport=1,dport=4789,chksum=0)/VXLAN(vni=7)/${inner}`,
      );
    const inner = (tos: number) =>
      `Ether()/IP(src='10.1.0.2',dst='10.1.0.1',tos=${tos})/UDP()/Raw(b'y'*8)`;
    const xdp = async (p: Uint8Array) =>
      await a.ns.within(() => runPinned(a, "wr_xdp_underlay", p, a.underlay));
    // Outer CE over inner ECT(0): the inner frame leaves marked CE, its IPv4
    // checksum patched (Scapy computes the expected one afresh).
    const marked = await xdp(await wrap(0x03, inner(0x02)));
    assertEquals(marked.retval, XDP_PASS);
    assertEquals(toHex(marked.data.subarray(metaCodec.size)), toHex(await scapy(inner(0x03))));
    // Outer ECT(1) over inner ECT(0): ECT(1).
    const ect1 = await xdp(await wrap(0x01, inner(0x02)));
    assertEquals(toHex(ect1.data.subarray(metaCodec.size)), toHex(await scapy(inner(0x01))));
    // Outer CE over not-ECT: dropped, counted as such.
    const dropped = await xdp(await wrap(0x03, inner(0x00)));
    assertEquals(dropped.retval, XDP_DROP);
    assert.ok((await lab.datapath(a, nonZeroStats)).drop_ecn === 1);
  },
);

privilegedTest("GRE with seq: each packet carries the next sequence number", async () => {
  await using lab = await oneHost("gre", { seq: "true" });
  const [a, b] = lab.hosts;
  const peerMac = await pinNeighbor(lab, a);
  const myMac = await macOf(a.ns, a.underlay);
  await lab.datapath(
    a,
    (dp) => addFlows(dp, `in_port=web actions=set_tunnel(id=5,dst=${b.ip}),output:t0`),
  );
  const inner = "Ether()/IP(src='10.1.0.1',dst='10.1.0.2')/UDP()/Raw(b'z'*8)";
  const frame = await scapy(inner);
  for (const seq of [0, 1, 2]) {
    const out = await a.ns.within(() => runPinned(a, "wr_tc_local", frame, a.workload.port));
    const expected = await scapy(
      `Ether(dst='${peerMac}',src='${myMac}')/IP(src='${a.ip}',dst='${b.ip}',flags='DF',id=0,ttl=64)/` +
        `GRE(key_present=1,key=5,seqnum_present=1,seqence_number=${seq},proto=0x6558)/${inner}`,
    );
    assertEquals(toHex(out.data), toHex(expected));
  }
});

privilegedTest(
  "without forwarding, a port's configured neighbour serves frames the kernel cannot route (ARP)",
  async () => {
    const neighbor = "02:aa:bb:cc:dd:ee";
    await using lab = await oneHost("vxlan", {}, { forwarding: false });
    const [a, b] = lab.hosts;
    await lab.datapath(a, async (dp) => {
      await dp.addTunnelPort("t1", "vxlan", {
        remote_ip: b.ip,
        key: "9",
        dst_port: "4790",
        neighbor,
      });
      await addFlows(
        dp,
        "in_port=web,arp actions=output:t1",
        `in_port=web actions=set_tunnel(id=1,dst=${b.ip}),output:t0`,
      );
    });
    const arp = await scapy(
      "Ether(dst='ff:ff:ff:ff:ff:ff',src='02:00:00:00:00:0a')/ARP(psrc='10.1.0.1',pdst='10.1.0.2')",
    );
    const out = await a.ns.within(() => runPinned(a, "wr_tc_local", arp, a.workload.port));
    assertEquals(out.retval, TC_ACT_REDIRECT);
    const myMac = await macOf(a.ns, a.underlay);
    assertEquals(toHex(out.data.subarray(0, 12)), (neighbor + myMac).replaceAll(":", ""));
    // Through t0, which has no neighbour configured, the same ARP frame has
    // no way out: dropped and counted as such.
    await lab.datapath(a, (dp) => dp.deleteFlows({}, false));
    await lab.datapath(
      a,
      (dp) => addFlows(dp, `in_port=web actions=set_tunnel(id=1,dst=${b.ip}),output:t0`),
    );
    const stuck = await a.ns.within(() => runPinned(a, "wr_tc_local", arp, a.workload.port));
    assertEquals(stuck.retval, TC_ACT_SHOT);
    assertEquals((await lab.datapath(a, nonZeroStats)).drop_no_neigh, 1);
  },
);

privilegedTest("100 000 flows under 2 masks: each packet finds its own flow", async () => {
  await using lab = await Lab.create({ ipv6: false });
  const [a, b] = lab.hosts;
  // Every flow below sets a tunnel key of its own.
  await lab.up(a, { maxFlows: 131072, maxTunKeys: 131072 });
  await pinNeighbor(lab, a);
  const n = 100000;
  await lab.datapath(a, async (dp) => {
    await dp.addLocalPort("web", a.workload.port);
    await dp.addTunnelPort("t0", "vxlan", { remote_ip: b.ip, key: "flow" });
    const names = dp.portNames();
    const flows = [];
    for (let i = 0; i < n; i++) {
      const ip = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
      flows.push(
        parseFlow(
          `priority=10,in_port=web,ip,nw_dst=${ip} actions=set_tunnel(id=${i + 1}),output:t0`,
          names,
        ),
      );
    }
    flows.push(parseFlow("priority=5,in_port=web,ip,nw_dst=10.0.0.0/8 actions=drop", names));
    const diff = await dp.applyFlows(flows);
    assertEquals(diff.added, n + 1);
    assertEquals(dp.status().tables.find((t) => t.name === "masks")!.used, 2);
  });
  for (const i of [0, 4242, 65535, 99999]) {
    const ip = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
    const f = await scapy(`Ether()/IP(src='10.200.0.1',dst='${ip}')/UDP()`);
    const out = await a.ns.within(() => runPinned(a, "wr_tc_local", f, a.workload.port));
    assertEquals(out.retval, TC_ACT_REDIRECT);
    // The VNI is the flow's own: id i + 1.
    const vni = (out.data[46] << 16) | (out.data[47] << 8) | out.data[48];
    assertEquals(vni, i + 1);
  }
  const miss = await scapy(`Ether()/IP(src='10.200.0.1',dst='10.250.0.1')/UDP()`);
  assertEquals(
    (await a.ns.within(() => runPinned(a, "wr_tc_local", miss, a.workload.port))).retval,
    TC_ACT_SHOT,
  );
});
