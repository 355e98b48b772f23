/**
 * The datapath through BPF_PROG_TEST_RUN, byte for byte against Scapy:
 * encapsulation for each protocol and underlay family, decapsulation at
 * XDP and at TC, flow misses, masks and priorities.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab } from "../src/lab/topology.ts";
import { macOf } from "../src/lab/netns.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { IFINDEX_DIRECT, META_MAGIC, metaCodec, TunFlag } from "../src/maps/layouts.ts";
import { ifindex } from "../src/bpf/netif.ts";
import { formatAddr } from "../src/tunnel/addr.ts";
import { scapy, toHex } from "./helpers/scapy.ts";
import {
  addFlows,
  nonZeroStats,
  pinNeighbor,
  runPinned,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  upWithPorts,
  XDP_DROP,
  XDP_PASS,
  XDP_REDIRECT,
} from "./helpers/lab.ts";

type Proto = "vxlan" | "geneve" | "gre";

const INNER =
  "Ether(src='02:00:00:00:00:0a',dst='02:00:00:00:00:0b')/IP(src='10.1.0.1',dst='10.1.0.2',tos=0x2a)/UDP(sport=1000,dport=2000)/Raw(b'warren'*10)";

/**
 * Scapy text of the tunnel layers between the outer IP header and the
 * inner frame. With `csum`, Scapy computes the UDP or GRE checksum itself.
 */
function tunnelLayers(proto: Proto, sport: number, id: number, geneve = "", csum = false): string {
  const udpCsum = csum ? "" : ",chksum=0";
  switch (proto) {
    case "vxlan":
      return `UDP(sport=${sport},dport=4789${udpCsum})/VXLAN(vni=${id},flags=0x08)`;
    case "geneve":
      return `UDP(sport=${sport},dport=6081${udpCsum})/GENEVE(vni=${id},proto=0x6558${geneve})`;
    case "gre":
      return `GRE(${csum ? "chksum_present=1," : ""}key_present=1,key=${id},proto=0x6558)`;
  }
}

function outerIp(v6: boolean, src: string, dst: string, extra = ""): string {
  return v6
    ? `IPv6(src='${src}',dst='${dst}',hlim=64,tc=0x02${extra})`
    : `IP(src='${src}',dst='${dst}',ttl=64,flags='DF',id=0,tos=0x02)`;
}

async function labWithTunnel(proto: Proto, options: Record<string, string> = {}, ipv6 = true) {
  const lab = await Lab.create({ ipv6 });
  await upWithPorts(lab, lab.hosts[0], proto, options, { xdp: "native" });
  return lab;
}

for (const proto of ["vxlan", "geneve", "gre"] as const) {
  for (const [v6, csum] of [[false, false], [true, false], [false, true], [true, true]]) {
    privilegedTest(
      `${proto} over IPv${v6 ? 6 : 4}${
        csum ? " with checksums" : ""
      }: encapsulation equals Scapy's packet byte for byte`,
      async () => {
        await using lab = await labWithTunnel(proto, { csum: String(csum) });
        const [a, b] = lab.hosts;
        const peerMac = await pinNeighbor(lab, a, v6);
        const myMac = await macOf(a.ns, a.underlay);
        const dst = v6 ? b.ip6 : b.ip;
        const src = v6 ? a.ip6 : a.ip;
        const gnvOpt = proto === "geneve" ? ",geneve=0x0102:0x80:0xdeadbeef" : "";
        await lab.datapath(
          a,
          (dp) =>
            addFlows(dp, `in_port=web actions=set_tunnel(id=42,dst=${dst}${gnvOpt}),output:t0`),
        );
        const inner = await scapy(INNER);
        const out = await a.ns.within(() => runPinned(a, "wr_tc_local", inner, a.workload.port));
        assertEquals(out.retval, TC_ACT_REDIRECT);
        // The UDP source port is a hash of the inner flow, the flow label too:
        // take them from the packet and check the rest of it against Scapy.
        const l4 = 14 + (v6 ? 40 : 20);
        const sport = proto === "gre" ? 0 : (out.data[l4] << 8) | out.data[l4 + 1];
        const label = v6 ? ((out.data[15] & 0x0f) << 16) | (out.data[16] << 8) | out.data[17] : 0;
        const geneve = proto === "geneve"
          ? ",critical=1,options=[GeneveOptions(classid=0x0102,type=0x80,length=1,data=b'\\xde\\xad\\xbe\\xef')]"
          : "";
        const expected = await scapy(
          `Ether(dst='${peerMac}',src='${myMac}')/${outerIp(v6, src, dst, `,fl=${label}`)}/${
            tunnelLayers(proto, sport, 42, geneve, csum)
          }/${INNER}`,
        );
        assertEquals(toHex(out.data), toHex(expected));
        if (proto !== "gre") {
          assert.ok(sport >= 49152, `source port ${sport} is in the dynamic range`);
        }
        // The same flow always gets the same source port (ECMP stays in order).
        const again = await a.ns.within(() => runPinned(a, "wr_tc_local", inner, a.workload.port));
        assertEquals(toHex(again.data), toHex(out.data));
      },
    );

    if (csum) continue;
    privilegedTest(
      `${proto} over IPv${v6 ? 6 : 4}: decapsulation gives back the inner frame, at XDP and at TC`,
      async () => {
        await using lab = await labWithTunnel(proto);
        const [a, b] = lab.hosts;
        await lab.datapath(a, (dp) => addFlows(dp, "tun_id=42,in_port=t0 actions=output:web"));
        const myMac = await macOf(a.ns, a.underlay);
        const dst = v6 ? a.ip6 : a.ip;
        const src = v6 ? b.ip6 : b.ip;
        const packet = await scapy(
          `Ether(dst='${myMac}',src='02:00:00:00:00:99')/${outerIp(v6, src, dst)}/${
            tunnelLayers(proto, 50000, 42)
          }/${INNER}`,
        );
        const inner = await scapy(INNER);
        // XDP hands the frame to TC (web takes no XDP redirects), the tunnel
        // key in front of it as metadata (test-run returns both).
        const xdp = await a.ns.within(() => runPinned(a, "wr_xdp_underlay", packet, a.underlay));
        assertEquals(xdp.retval, XDP_PASS);
        const meta = metaCodec.decode(xdp.data);
        const t0 = await lab.datapath(a, (dp) => dp.portNames().number("t0"));
        assertEquals(
          [meta.magic, meta.in_port, meta.tun_id, meta.tun_flags, meta.tun_ttl],
          [META_MAGIC, t0, 42n, TunFlag.PRESENT | TunFlag.KEY | (v6 ? TunFlag.V6 : TunFlag.DF), 64],
        );
        assertEquals(formatAddr(meta.tun_src, v6), src);
        assertEquals(formatAddr(meta.tun_dst, v6), dst);
        assertEquals(toHex(xdp.data.subarray(metaCodec.size)), toHex(inner));
        // An XDP-capable port takes the frame straight from XDP.
        await lab.datapath(a, async (dp) => {
          dp.deleteFlows({}, false);
          dp.deletePort("web");
          await dp.addLocalPort("web", a.workload.port, { xdp: true });
          await addFlows(dp, "tun_id=42,in_port=t0 actions=output:web");
        });
        const redirected = await a.ns.within(() =>
          runPinned(a, "wr_xdp_underlay", packet, a.underlay)
        );
        assertEquals(redirected.retval, XDP_REDIRECT);
        assertEquals(toHex(redirected.data), toHex(inner));
        // Without XDP on the underlay, TC decapsulates by itself.
        await lab.up(a, { xdp: "off" });
        const tc = await a.ns.within(() => runPinned(a, "wr_tc_underlay", packet, a.underlay));
        assertEquals(tc.retval, TC_ACT_REDIRECT);
        assertEquals(toHex(tc.data), toHex(inner));
        const stats = await lab.datapath(a, (dp) => nonZeroStats(dp));
        assertEquals(stats.decap, 3);
        assertEquals(stats.tc_decap, 1);
        assertEquals(stats.xdp_redirect, 1);
      },
    );
  }
}

privilegedTest("a flow miss takes the default action and bumps exactly one counter", async () => {
  await using lab = await labWithTunnel("vxlan", {}, false);
  const [a, b] = lab.hosts;
  const myMac = await macOf(a.ns, a.underlay);
  const packet = await scapy(
    `Ether(dst='${myMac}')/${outerIp(false, b.ip, a.ip)}/${
      tunnelLayers("vxlan", 50000, 7)
    }/${INNER}`,
  );
  const inner = await scapy(INNER);
  const [xdp, local] = await a.ns.within(() => [
    runPinned(a, "wr_xdp_underlay", packet, a.underlay),
    runPinned(a, "wr_tc_local", inner, a.workload.port),
  ]);
  assertEquals(xdp.retval, XDP_DROP);
  assertEquals(local.retval, TC_ACT_SHOT);
  assertEquals(await lab.datapath(a, nonZeroStats), { drop_no_flow: 2, decap: 1 });
  // With the default action pass, a miss goes to the stack and counts once.
  await lab.up(a, { missLocal: "pass" });
  const passed = await a.ns.within(() => runPinned(a, "wr_tc_local", inner, a.workload.port));
  assertEquals(passed.retval, 0);
  assertEquals(await lab.datapath(a, nonZeroStats), { drop_no_flow: 2, decap: 1, miss_pass: 1 });
});

privilegedTest("masks and priorities: the highest-priority match wins, across masks", async () => {
  await using lab = await Lab.create({ ipv6: false });
  const [a] = lab.hosts;
  await lab.up(a);
  const frame = (dst: string, dport: number) =>
    scapy(
      `Ether(src='02:00:00:00:00:0a')/IP(src='10.1.0.1',dst='${dst}')/UDP(sport=1,dport=${dport})`,
    );
  const verdict = async (dst: string, dport: number) =>
    (await a.ns.within(async () =>
      runPinned(a, "wr_tc_local", await frame(dst, dport), a.workload.port)
    )).retval;
  await lab.datapath(a, async (dp) => {
    await dp.addLocalPort("web", a.workload.port);
    await dp.addLocalPort("lo1", "lo"); // any device serves as an output here
    await addFlows(
      dp,
      "priority=10,in_port=web actions=drop",
      "priority=20,in_port=web,ip,nw_dst=10.9.0.0/16 actions=output:lo1",
      "priority=30,in_port=web,udp,nw_dst=10.9.1.0/24,tp_dst=53 actions=drop",
      "priority=5,in_port=web,udp,tp_dst=53 actions=output:lo1",
    );
  });
  assertEquals(await verdict("10.8.0.1", 80), TC_ACT_SHOT); // only the catch-all
  assertEquals(await verdict("10.9.5.5", 80), TC_ACT_REDIRECT); // /16 beats catch-all
  assertEquals(await verdict("10.9.1.1", 53), TC_ACT_SHOT); // /24 + port 53 beats /16
  assertEquals(await verdict("10.9.2.1", 53), TC_ACT_REDIRECT); // /16 at 20 beats port 53 at 5
  assertEquals(await verdict("10.7.0.1", 53), TC_ACT_SHOT); // catch-all at 10 beats port 53 at 5
  const counts = await lab.datapath(
    a,
    (dp) =>
      dp.dumpFlows({}, { counters: true }).map((f) => [f.priority, Number(f.counters!.packets)]),
  );
  assertEquals(counts, [[30, 1], [20, 2], [10, 2], [5, 0]]);
});

privilegedTest(
  "a local port is found by its device's ifindex: in the array below IFINDEX_DIRECT, in the hash map beyond",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a] = lab.hosts;
    await lab.up(a);
    const farIndex = IFINDEX_DIRECT + 7;
    await a.ns.run(
      ["ip", "link", "add", "far0", "index", `${farIndex}`, "type", "veth", "peer", "name", "far1"],
    );
    const inner = await scapy(INNER);
    const verdicts = () =>
      a.ns.within(() =>
        [a.workload.port, "far0"].map((dev) => runPinned(a, "wr_tc_local", inner, dev).retval)
      );
    await lab.datapath(a, async (dp) => {
      await dp.addLocalPort("web", a.workload.port);
      await dp.addLocalPort("far", "far0");
      await addFlows(dp, "in_port=web actions=drop", "in_port=far actions=drop");
      const names = dp.portNames();
      const near = await a.ns.within(() => ifindex(a.workload.port));
      assert(near < IFINDEX_DIRECT);
      assertEquals(dp.maps.ifindexPorts.direct.get(near), names.number("web"));
      assertEquals(dp.maps.ifindexPorts.far.get(farIndex), names.number("far"));
      assertEquals([...dp.maps.ifindexPorts.far.keys()], [farIndex]);
    });
    assertEquals(await verdicts(), [TC_ACT_SHOT, TC_ACT_SHOT]);
    assertEquals(await lab.datapath(a, nonZeroStats), { drop_action: 2 });
    // Deleted, neither device is a port: their frames pass, uncounted.
    await lab.datapath(a, (dp) => {
      dp.deletePort("web", { force: true });
      dp.deletePort("far", { force: true });
      assertEquals([...dp.maps.ifindexPorts.far.keys()], []);
    });
    assertEquals(await verdicts(), [TC_ACT_OK, TC_ACT_OK]);
    assertEquals(await lab.datapath(a, nonZeroStats), { drop_action: 2 });
  },
);
