/**
 * Open vSwitch's userspace datapath as a peer (tests/helpers/ovs.ts): first
 * proven against the peers this kernel has (the kernel's vxlan device at its
 * defaults; OVS against OVS for Geneve, an option set by each side and
 * matched by the other through `tun_metadata0`, and GRE with key, csum,
 * seq), then the independent peer of warren for the protocols this kernel
 * cannot peer with: VXLAN, Geneve with options both ways and GRE with key,
 * csum and seq, over IPv4 and IPv6 underlays, OVS validating every
 * checksum warren sends. Each test starts OVS once and changes tunnels and
 * flows between steps.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab } from "../src/lab/topology.ts";
import { macOf } from "../src/lab/netns.ts";
import type { Workload } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { OvsHost, type OvsTunnelOptions, withOvsDiagnostics } from "./helpers/ovs.ts";
import { bothWays, udpCsumErrors } from "./helpers/traffic.ts";
import { nonZeroStats, pinNeighbor } from "./helpers/lab.ts";
import { parseFlow } from "../src/tunnel/flow_syntax.ts";

/**
 * The workloads' MTU: with 1500 on the underlay it leaves room for the
 * largest encapsulation here (Geneve with a 4-byte option over IPv6, 78
 * bytes; OVS does not fragment what it encapsulates). Larger pings fragment
 * at the workload.
 */
const MTU = 1400;

/** Pings both ways at 56, 1600 and 3000 bytes, then 20 MiB over TCP each way. */
function traffic(a: Workload, b: Workload): Promise<void> {
  return bothWays(a, b, [56, 1600, 3000], 20 << 20);
}

privilegedTest(
  "OVS userspace VXLAN and the kernel's vxlan device at its defaults, over IPv4 and IPv6",
  async (t) => {
    await using lab = await Lab.create({ workloadMtu: MTU });
    const [a, b] = lab.hosts;
    await using ovs = await OvsHost.start(a.ns, { underlay: a.underlay, ports: [a.workload.port] });
    const bMac = await macOf(b.ns, b.underlay);
    for (const ip of [b.ip, b.ip6]) await ovs.setNeighbor(ip, bMac);
    await b.ns.sh(`
      ip link add br0 type bridge
      ip link set ${b.workload.port} master br0
      ip link set br0 up`);
    for (const v6 of [false, true]) {
      await t.step(`IPv${v6 ? 6 : 4} underlay`, () =>
        withOvsDiagnostics([ovs], async () => {
          const [here, there] = v6 ? [a.ip6, b.ip6] : [a.ip, b.ip];
          await b.ns.sh(`
            ip link del vx42 2>/dev/null || true
            ip link add vx42 type vxlan id 42 local ${there} remote ${here} dstport 4789 dev ${b.underlay}
            ip link set vx42 master br0 up`);
          // Defaults: IPv6 frames without a UDP checksum are dropped.
          const details = await b.ns.run(["ip", "-d", "link", "show", "vx42"]);
          assert.ok(details.includes(" noudp6zerocsumrx"), details);
          await ovs.addTunnel("t0", "vxlan", { remote_ip: there, key: 42 });
          await ovs.delFlows();
          await ovs.addFlows("in_port=wl0 actions=output:t0", "in_port=t0 actions=output:wl0");
          await traffic(a.workload, b.workload);
          assertEquals(await udpCsumErrors(b.ns), { UdpInCsumErrors: 0, Udp6InCsumErrors: 0 });
        }));
    }
    // Stopped, OVS leaves the host as it found it: its devices and run
    // directory gone, the underlay's addresses back.
    await ovs.stop();
    const addrs = await a.ns.run(["ip", "-br", "addr"]);
    assert.ok(!/br-phy|br-int|ovs-netdev/.test(addrs), addrs);
    assert.match(addrs, new RegExp(`^${a.underlay}\\S* .* ${a.ip}/24 ${a.ip6}/64`, "m"));
    await assert.rejects(Deno.stat(ovs.dir));
  },
);

/** One OVS-to-OVS case: a tunnel type, its options, the push header it makes. */
interface Case {
  name: string;
  type: "geneve" | "gre";
  options: OvsTunnelOptions;
  /** What A's tunnel header looks like in `ovs-appctl dpctl/dump-flows`. */
  header: string;
}

/** The Geneve option each side sets; the other side matches it. */
const OPTION = { A: "0xa1a1a1a1", B: "0xb2b2b2b2" };

const CASES: Case[] = [
  {
    name: "Geneve with an option each way",
    type: "geneve",
    options: {},
    header: `geneve(vni=0x2a,options({class=0xffff,type=0,len=4,${OPTION.A}}))`,
  },
  {
    name: "GRE with a key",
    type: "gre",
    options: {},
    header: "gre((flags=0x2000,proto=0x6558),key=0x2a)",
  },
  {
    name: "GRE with a key and csum",
    type: "gre",
    options: { csum: true },
    header: "gre((flags=0xa000,proto=0x6558),csum=0x0,key=0x2a)",
  },
  {
    name: "GRE with a key and seq",
    type: "gre",
    options: { seq: true },
    header: "gre((flags=0x3000,proto=0x6558),key=0x2a,seq=",
  },
];

privilegedTest(
  "OVS to OVS: Geneve options through tun_metadata0, GRE with key, csum, seq; IPv4 and IPv6",
  async (t) => {
    await using lab = await Lab.create({ workloadMtu: MTU });
    const [a, b] = lab.hosts;
    await using ovsA = await OvsHost.start(a.ns, {
      underlay: a.underlay,
      ports: [a.workload.port],
    });
    await using ovsB = await OvsHost.start(b.ns, {
      underlay: b.underlay,
      ports: [b.workload.port],
    });
    const sides = [
      { ovs: ovsA, peer: ovsB, mine: OPTION.A, theirs: OPTION.B },
      { ovs: ovsB, peer: ovsA, mine: OPTION.B, theirs: OPTION.A },
    ];
    for (const { ovs, peer } of sides) {
      for (const ip of peer.ips) await ovs.setNeighbor(ip, peer.mac);
      await ovs.addTlvMap("{class=0xffff,type=0,len=4}->tun_metadata0");
    }
    await assert.rejects(
      ovsA.addTunnel("t0", "gre", { remote_ip: b.ip, key: 42, csum: true, seq: true }),
      /before it writes the sequence number/,
    );
    for (const v6 of [false, true]) {
      for (const c of CASES) {
        await t.step(
          `${c.name} over IPv${v6 ? 6 : 4}`,
          () =>
            withOvsDiagnostics([ovsA, ovsB], async () => {
              for (const { ovs, peer, mine, theirs } of sides) {
                const remote = peer.ips.find((ip) => ip.includes(":") === v6)!;
                await ovs.addTunnel("t0", c.type, { remote_ip: remote, key: 42, ...c.options });
                await ovs.delFlows();
                await ovs.addFlows(
                  ...c.type === "geneve"
                    ? [
                      `in_port=wl0 actions=set_field:${mine}->tun_metadata0,output:t0`,
                      `in_port=t0,tun_metadata0=${theirs} actions=output:wl0`,
                    ]
                    : ["in_port=wl0 actions=output:t0", "in_port=t0 actions=output:wl0"],
                );
              }
              await traffic(a.workload, b.workload);
              assert.ok((await ovsA.appctl("dpctl/dump-flows")).includes(c.header), c.header);
              // Each side's flow from the tunnel took at least every data
              // segment of the transfer towards it.
              for (const { ovs } of sides) {
                const from = (await ovs.flows()).find((f) => f.match.includes("in_port=t0"));
                assert.ok(from && from.packets >= (20 << 20) / MTU, JSON.stringify(from));
              }
            }),
        );
      }
    }
  },
);

/** One warren-to-OVS case: the tunnel on each side, what warren's GSO packets take. */
interface WarrenCase {
  name: string;
  type: "vxlan" | "geneve" | "gre";
  /** warren's tunnel options (remote and key come from the flows). */
  warren: Record<string, string>;
  /** OVS's (remote_ip and key are added). */
  ovs: OvsTunnelOptions;
  /** The warren counter that shows how its GSO packets left, over IPv4 and IPv6. */
  gso: [string | undefined, string | undefined];
}

const WARREN_CASES: WarrenCase[] = [
  // Both sides at their defaults: no checksum over IPv4, one over IPv6.
  { name: "VXLAN", type: "vxlan", warren: {}, ovs: {}, gso: [undefined, "gso_device"] },
  {
    name: "Geneve with an option each way",
    type: "geneve",
    warren: {},
    ovs: {},
    gso: [undefined, "gso_segmented"],
  },
  {
    name: "GRE with a key and csum",
    type: "gre",
    warren: { csum: "true" },
    ovs: { csum: true },
    gso: ["gso_segmented", "gso_segmented"],
  },
  {
    name: "GRE with a key and seq",
    type: "gre",
    warren: { seq: "true" },
    ovs: { seq: true },
    gso: ["gso_segmented", "gso_segmented"],
  },
  // OVS cannot send both (see OvsHost.addTunnel), but takes them.
  {
    name: "GRE with a key, csum and seq from warren, csum from OVS",
    type: "gre",
    warren: { csum: "true", seq: "true" },
    ovs: { csum: true },
    gso: ["gso_segmented", "gso_segmented"],
  },
];

privilegedTest(
  "warren and OVS's userspace datapath: VXLAN, Geneve options set and matched both ways, GRE key, csum, seq; IPv4 and IPv6",
  async (t) => {
    await using lab = await Lab.create({ workloadMtu: MTU });
    const [a, b] = lab.hosts;
    await lab.up(a);
    await lab.datapath(a, (dp) => dp.addLocalPort("web", a.workload.port));
    await using ovs = await OvsHost.start(b.ns, { underlay: b.underlay, ports: [b.workload.port] });
    const aMac = await macOf(a.ns, a.underlay);
    for (const ip of [a.ip, a.ip6]) await ovs.setNeighbor(ip, aMac);
    for (const v6 of [false, true]) await pinNeighbor(lab, a, v6);
    await ovs.addTlvMap("{class=0xffff,type=0,len=4}->tun_metadata0");
    // warren's workload hands it GSO packets: the harness turned TSO off
    // at A's underlay, which still takes them and segments them in
    // software, as a NIC without tunnel offloads would.
    assert.match(
      await a.workload.ns.run(["ethtool", "-k", a.workload.dev]),
      /^tcp-segmentation-offload: on/m,
    );
    for (const v6 of [false, true]) {
      for (const c of WARREN_CASES) {
        await t.step(
          `${c.name} over IPv${v6 ? 6 : 4}`,
          () =>
            withOvsDiagnostics([ovs], async () => {
              const [here, there] = v6 ? [a.ip6, b.ip6] : [a.ip, b.ip];
              const geneve = c.type === "geneve";
              await lab.datapath(a, async (dp) => {
                await dp.upsertPort({
                  kind: "tunnel",
                  name: "t0",
                  proto: c.type,
                  options: { remote_ip: "flow", key: "flow", ...c.warren },
                });
                await dp.applyFlows(
                  [
                    `in_port=web actions=set_tunnel(id=42,dst=${there}${
                      geneve ? `,geneve=0xffff:0:${OPTION.A}` : ""
                    }),output:t0`,
                    `tun_id=42,in_port=t0${
                      geneve ? `,geneve_class=0xffff,geneve_type=0,geneve_data=${OPTION.B}` : ""
                    } actions=output:web`,
                  ].map((f) => parseFlow(f, dp.portNames())),
                );
              });
              await ovs.addTunnel("t0", c.type, { remote_ip: here, key: 42, ...c.ovs });
              await ovs.delFlows();
              await ovs.addFlows(
                ...geneve
                  ? [
                    `in_port=wl0 actions=set_field:${OPTION.B}->tun_metadata0,output:t0`,
                    `in_port=t0,tun_metadata0=${OPTION.A} actions=output:wl0`,
                  ]
                  : ["in_port=wl0 actions=output:t0", "in_port=t0 actions=output:wl0"],
              );
              const before = await lab.datapath(a, nonZeroStats);
              await traffic(a.workload, b.workload);
              const after = await lab.datapath(a, nonZeroStats);
              // warren's GSO packets left the way the tunnel needs.
              const gso = c.gso[v6 ? 1 : 0];
              if (gso) {
                assert.ok(
                  (after[gso] ?? 0) > (before[gso] ?? 0),
                  `${gso}: ${JSON.stringify(after)}`,
                );
              }
              const drops = Object.keys(after).filter((k) =>
                k.startsWith("drop_") && after[k] !== (before[k] ?? 0)
              );
              assertEquals(drops, []);
              // Each side's flow from the tunnel took every data segment
              // towards it: OVS matched warren's option, warren OVS's.
              const fromWarren = (await ovs.flows()).find((f) => f.match.includes("in_port=t0"));
              assert.ok(
                fromWarren && fromWarren.packets >= (20 << 20) / MTU,
                JSON.stringify(fromWarren),
              );
              const fromOvs = await lab.datapath(a, (dp) =>
                dp.dumpFlows({}, { counters: true }).find((f) =>
                  dp.describeMatch(f.match).includes("in_port=t0")
                ));
              assert.ok(
                Number(fromOvs!.counters!.packets) >= (20 << 20) / MTU / 4,
                "warren's flow",
              );
            }),
        );
      }
    }
  },
);
