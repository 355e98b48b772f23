/**
 * Real traffic between two namespace hosts, each running warren, with a
 * workload behind each: ping across the path-MTU limit, TCP bulk with GSO
 * on and off, UDP, path MTU discovery, replication; payloads compared and
 * flow counters checked against what was sent.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab, type LabHost, type LabOptions } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { addFlows, nonZeroStats, upWithPorts } from "./helpers/lab.ts";
import { PortError } from "../src/tunnel/port.ts";
import { attachXdpRecorded } from "../src/tunnel/attach.ts";
import { ifindex } from "../src/bpf/netif.ts";
import { Program } from "../src/bpf/program.ts";
import { ipv4Fragments, ping, tcpdump, tcpTransfer, udpBurst } from "./helpers/traffic.ts";

type Proto = "vxlan" | "geneve" | "gre";

/** Both hosts up, a tunnel each way, per-protocol flows counting ICMP, TCP and UDP apart. */
async function overlay(
  proto: Proto,
  options: LabOptions & { tunnel?: Record<string, string>; v6Underlay?: boolean } = {},
): Promise<Lab> {
  const lab = await Lab.create(options);
  try {
    for (const h of lab.hosts) {
      const peer = lab.peer(h);
      const dst = options.v6Underlay ? peer.ip6 : peer.ip;
      await upWithPorts(lab, h, proto, options.tunnel);
      await lab.datapath(h, async (dp) => {
        const out = `actions=set_tunnel(id=42,dst=${dst}),output:t0`;
        await addFlows(
          dp,
          `priority=100,in_port=web,icmp ${out}`,
          `priority=100,in_port=web,tcp ${out}`,
          `priority=100,in_port=web,udp ${out}`,
          `priority=10,in_port=web ${out}`,
          "tun_id=42,in_port=t0 actions=output:web",
        );
      });
    }
    return lab;
  } catch (err) {
    await lab[Symbol.asyncDispose]();
    throw err;
  }
}

async function flowCounters(lab: Lab, host: LabHost, match: string) {
  return await lab.datapath(host, (dp) => {
    const flows = dp.dumpFlows({}, { counters: true });
    const f = flows.find((x) => dp.describeMatch(x.match).includes(match));
    if (!f) throw new Error(`no flow matching ${match}`);
    return { packets: Number(f.counters!.packets), bytes: Number(f.counters!.bytes) };
  });
}

for (const proto of ["vxlan", "geneve", "gre"] as const) {
  privilegedTest(
    `${proto}: ping at 56, 1600 and 3200 bytes; flow counters equal the frames sent`,
    async () => {
      // Workload MTU 1400 leaves room for every protocol's overhead.
      const mtu = 1400;
      await using lab = await overlay(proto, { workloadMtu: mtu, ipv6: false });
      const [a, b] = lab.hosts;
      let frames: number[] = [];
      for (const size of [56, 1600, 3200]) {
        const r = await ping(a.workload, b.workload.ip, { count: 4, size });
        assertEquals([r.sent, r.received, r.duplicates], [4, 4, 0], r.output);
        for (let i = 0; i < 4; i++) frames = frames.concat(ipv4Fragments(20 + 8 + size, mtu));
      }
      const sent = await flowCounters(lab, a, "icmp");
      assertEquals(sent, { packets: frames.length, bytes: frames.reduce((x, y) => x + y, 0) });
      // B's side decapsulated every one, matched on tun_id after XDP handed
      // the frame to TC (web takes no XDP redirects), and replied as often.
      const received = await flowCounters(lab, b, "tun_id=42");
      assert.ok(received.packets >= frames.length, `B's tunnel flow saw ${received.packets}`);
      assertEquals(await flowCounters(lab, b, "icmp"), sent);
      const stats = await lab.datapath(b, nonZeroStats);
      assert.ok(stats.xdp_pass >= frames.length, JSON.stringify(stats));
      assertEquals(Object.keys(stats).filter((k) => k.startsWith("drop_")), []);
    },
  );

  privilegedTest(`${proto}: TCP bulk with GSO on and off, payloads identical`, async () => {
    await using lab = await overlay(proto, { workloadMtu: 1400, ipv6: false });
    const [a, b] = lab.hosts;
    const big = await tcpTransfer(a.workload, b.workload, 16 << 20);
    assertEquals(big.received, big.sent);
    for (const w of [a.workload, b.workload]) {
      await w.ns.run(["ethtool", "-K", w.dev, "tso", "off", "gso", "off", "gro", "off"]);
    }
    const small = await tcpTransfer(b.workload, a.workload, 4 << 20);
    assertEquals(small.received, small.sent);
    const tcp = await flowCounters(lab, a, "tcp");
    assert.ok(tcp.bytes > 16 << 20, `A's tcp flow counted ${tcp.bytes} bytes`);
  });
}

privilegedTest(
  "vxlan: UDP datagrams arrive, one by one and as a UDP GSO packet; the udp flow counts each packet",
  async () => {
    await using lab = await overlay("vxlan", { workloadMtu: 1400, ipv6: false });
    const [a, b] = lab.hosts;
    const arrived = await udpBurst(a.workload, b.workload, 200, 1000);
    assertEquals(arrived, 200);
    assertEquals(await flowCounters(lab, a, "udp"), {
      packets: 200,
      bytes: 200 * (14 + 20 + 8 + 1000),
    });
    // Ten datagrams in one send (UDP_SEGMENT): one GSO packet that keeps
    // its datagram size through the tunnel.
    assertEquals(await udpBurst(a.workload, b.workload, 10, 1000, { gso: true }), 10);
    assertEquals(await flowCounters(lab, a, "udp"), {
      packets: 201,
      bytes: 200 * (14 + 20 + 8 + 1000) + 14 + 20 + 8 + 10 * 1000,
    });
  },
);

privilegedTest("vxlan over an IPv6 underlay: ping and TCP, IPv4 and IPv6 workloads", async () => {
  await using lab = await overlay("vxlan", { workloadMtu: 1380, v6Underlay: true });
  const [a, b] = lab.hosts;
  const r = await ping(a.workload, b.workload.ip, { count: 3, size: 3200 });
  assertEquals(r.received, 3, r.output);
  const r6 = await ping(a.workload, b.workload.ip6, { count: 3, size: 1600 });
  assertEquals(r6.received, 3, r6.output);
  const t = await tcpTransfer(b.workload, a.workload, 4 << 20, a.workload.ip6);
  assertEquals(t.received, t.sent);
});

privilegedTest(
  "path MTU: too big with DF gets ICMP back with the MTU left; TCP then fits itself",
  async () => {
    // Workloads at 1500 over a 1500 underlay: VXLAN leaves 1450.
    await using lab = await overlay("vxlan", { ipv6: true });
    const [a, b] = lab.hosts;
    const r = await ping(a.workload, b.workload.ip, { count: 1, size: 1472, dontFragment: true });
    assert.match(r.output, /Frag needed and DF set \(mtu = 1450\)/);
    const r6 = await ping(a.workload, b.workload.ip6, { count: 1, size: 1452 });
    assert.match(r6.output, /Packet too big: mtu=1450/);
    // The sender now knows; a full-size DF ping fits, and TCP finds its MSS.
    const fits = await ping(a.workload, b.workload.ip, {
      count: 2,
      size: 1422,
      dontFragment: true,
    });
    assertEquals(fits.received, 2, fits.output);
    const t = await tcpTransfer(a.workload, b.workload, 4 << 20);
    assertEquals(t.received, t.sent);
    const stats = await lab.datapath(a, nonZeroStats);
    assert.ok(
      stats.icmp_sent >= 2 && stats.drop_too_big === stats.icmp_sent,
      JSON.stringify(stats),
    );
  },
);

privilegedTest("MSS clamping: SYNs leave with an MSS that fits the tunnel", async () => {
  await using lab = await overlay("vxlan", { ipv6: false, tunnel: { mss_clamp: "true" } });
  const [a, b] = lab.hosts;
  // Capture what B's workload receives and read the SYN's MSS.
  const cap = await tcpdump(b.workload.ns.name, {
    dev: "eth0",
    filter: "tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0",
    count: 1,
  });
  const t = await tcpTransfer(a.workload, b.workload, 1 << 20);
  assertEquals(t.received, t.sent);
  const syn = new TextDecoder().decode((await cap.output()).stdout);
  // 1500 - 50 (VXLAN) - 20 (IP) - 20 (TCP).
  assert.match(syn, /mss 1410/);
  assert.ok((await lab.datapath(a, nonZeroStats)).mss_clamped >= 1);
});

privilegedTest("head-end replication: one flow, two copies over the tunnel", async () => {
  await using lab = await overlay("vxlan", { ipv6: false });
  const [a, b] = lab.hosts;
  await lab.datapath(a, (dp) =>
    addFlows(
      dp,
      `priority=200,in_port=web,icmp,icmp_type=8 actions=set_tunnel(id=42,dst=${b.ip}),output:t0,output:t0`,
    ));
  const r = await ping(a.workload, b.workload.ip, { count: 3 });
  // Each request arrives twice, so B answers twice. ping stops at its third
  // answer, so it may miss the last duplicate; B's own counter does not.
  assertEquals(r.received, 3, r.output);
  assert.ok(r.duplicates >= 2, r.output);
  await new Promise((ok) => setTimeout(ok, 200));
  assertEquals((await flowCounters(lab, b, "icmp")).packets, 6);
  for (const h of lab.hosts) {
    const stats = await lab.datapath(h, nonZeroStats);
    assertEquals(
      Object.keys(stats).filter((k) => k.startsWith("drop_")),
      [],
      JSON.stringify(stats),
    );
  }
});

privilegedTest(
  "up --xdp generic is refused and changes nothing; an upgrade takes off generic XDP an older warren attached; VXLAN flows count what was sent",
  async () => {
    await using lab = await overlay("vxlan", { ipv6: false });
    const [a, b] = lab.hosts;
    for (const h of lab.hosts) {
      await assert.rejects(
        lab.up(h, { xdp: "generic" }),
        (e) => e instanceof PortError && e.message.startsWith("--xdp generic is refused"),
      );
      const link = await h.ns.run(["ip", "link", "show", h.underlay]);
      assert.match(link, /prog\/xdp id/, link);
      assert.doesNotMatch(link, /xdpgeneric/, link);
    }
    const r = await ping(a.workload, b.workload.ip, { count: 4 });
    assertEquals([r.sent, r.received, r.duplicates], [4, 4, 0], r.output);
    const sent = { packets: 4, bytes: 4 * (14 + 20 + 8 + 56) };
    assertEquals(await flowCounters(lab, a, "icmp"), sent);
    assertEquals(await flowCounters(lab, b, "icmp"), sent);
    assert.ok((await lab.datapath(b, nonZeroStats)).xdp_pass >= 4);

    // Generic XDP an older warren attached: an upgrade takes it off, and
    // TC alone carries the traffic.
    for (const h of lab.hosts) {
      await h.ns.within(() => {
        using p = Program.fromPin(`${h.pinDir}/progs/wr_xdp_underlay`);
        attachXdpRecorded(h.pinDir, ifindex(h.underlay), p, "generic");
      });
      assert.match(await h.ns.run(["ip", "link", "show", h.underlay]), /xdpgeneric/);
      await lab.up(h, { xdp: undefined });
      assert.doesNotMatch(await h.ns.run(["ip", "link", "show", h.underlay]), /xdp/);
    }
    const again = await ping(a.workload, b.workload.ip, { count: 4 });
    assertEquals([again.received, again.duplicates], [4, 0], again.output);
    const twice = { packets: 8, bytes: 8 * (14 + 20 + 8 + 56) };
    assertEquals(await flowCounters(lab, a, "icmp"), twice);
    assertEquals(await flowCounters(lab, b, "icmp"), twice);
    assert.ok((await lab.datapath(b, nonZeroStats)).tc_decap >= 4);
  },
);
