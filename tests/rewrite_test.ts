/**
 * Rewrite actions (mod_dl_*, mod_nw_*, mod_tp_*, dec_ttl, VLAN tags,
 * set_field on packet fields whole or in part, IPv6 addresses, in_port,
 * load:0->in_port): through BPF_PROG_TEST_RUN byte for byte against Scapy,
 * which computes every checksum afresh; and through real traffic between
 * namespaces, NAT-like rewrites of IPv4 address and port and of IPv6
 * address that ping and TCP must survive, checksums judged by the
 * receiving kernel, and VLAN rewrites captured on the receiving device byte
 * for byte (test-run keeps a frame's tags in its bytes, while a device's
 * frame has its outermost tag held aside in the skb, where a pushed tag
 * goes too).
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab, type Workload } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { scapyMany, toHex } from "./helpers/scapy.ts";
import {
  addFlows,
  nonZeroStats,
  pinNeighbor,
  runPinned,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  upWithPorts,
} from "./helpers/lab.ts";
import { macOf } from "../src/lab/netns.ts";
import { Workloads } from "./helpers/workloads.ts";
import { ping, RawSender, tcpdump, tcpTransfer } from "./helpers/traffic.ts";
import { readPcap } from "./helpers/frames.ts";
import { formatActions, parseActions } from "../src/tunnel/flow_actions.ts";
import {
  type ActionMemo,
  compileActions,
  compileFlow,
  decompileActions,
  type PortLookup,
} from "../src/tunnel/compile.ts";
import { parseFlow } from "../src/tunnel/flow_syntax.ts";
import { ACTF_HAIRPIN, ACTF_LAST, ActionOp, tunKeyCodec } from "../src/maps/layouts.ts";
import type { Port } from "../src/tunnel/port.ts";

const web: Port = { kind: "local", name: "web", number: 1, device: "d1", xdp: true, net: 0 };
const PORTS: PortLookup = {
  byName: (n) => n === "web" ? web : undefined,
  byNumber: (n) => n === 1 ? web : undefined,
};
const NAMES = {
  number: (n: string) => n === "web" ? 1 : undefined,
  name: (n: number) => n === 1 ? "web" : undefined,
};

Deno.test("rewrites compile in the order written and read back as written", () => {
  for (
    const text of [
      "mod_dl_src:02:00:00:00:00:aa,output:web,mod_dl_dst:0a:0b:0c:0d:0e:0f," +
      "mod_nw_src:192.0.2.7,mod_nw_dst:198.51.100.9,mod_nw_tos:184,in_port",
      "mod_nw_ecn:3,mod_nw_ttl:9,dec_ttl,mod_tp_src:1,mod_tp_dst:65535,in_port",
      "push_vlan:0x88a8,mod_vlan_vid:4095,mod_vlan_pcp:7,output:web,strip_vlan," +
      "set_field:0x1005->vlan_tci,in_port",
      "set_field:2001:db8::7->ipv6_src,set_field:::99/::ffff->ipv6_dst," +
      "set_field:02:00:00:00:00:00/ff:00:00:00:00:00->eth_src,set_field:10.0.0.0/255.0.0.0->nw_dst," +
      "set_field:0xf/0xf->tp_dst,in_port",
      "set_field:0.0.0.5/0.0.0.255->nw_src,set_field:0->in_port,output:web",
    ]
  ) {
    const c = compileActions(parseActions(text), PORTS);
    // Wide values and masks go in tunnel key slots, as the maps would hold them.
    const slots = c.tunKeyBytes.map((b) => tunKeyCodec.decode(b));
    assertEquals(formatActions(decompileActions(c.actions, (k) => slots[k], PORTS), NAMES), text);
    // The last output takes the packet; no XDP shortcut past the rewrites.
    const last = text.includes("->in_port") ? ACTF_LAST | ACTF_HAIRPIN : ACTF_LAST;
    assertEquals(c.actions.map((a) => a.flags), [
      ...new Array(c.actions.length - 1).fill(0),
      last,
    ]);
    assertEquals(c.flags, 0);
  }
  // Rewrites with no output after them change nothing anyone sees.
  assertEquals(compileActions(parseActions("output:web,dec_ttl"), PORTS).actions.length, 2);
  assertEquals(compileActions(parseActions("mod_tp_dst:5"), PORTS).actions.map((a) => a.op), [
    ActionOp.DROP,
  ]);
});

Deno.test("rewrites OVS spells otherwise mean the same, or are refused with the reason", () => {
  const same = (a: string, b: string) =>
    assertEquals(formatActions(parseActions(a), NAMES), formatActions(parseActions(b), NAMES));
  same("set_field:02:00:00:00:00:aa->dl_src", "mod_dl_src:02:00:00:00:00:aa");
  same("set_field:10.0.0.1->ip_dst", "mod_nw_dst:10.0.0.1");
  same("set_field:46->ip_dscp", "mod_nw_tos:184");
  same("set_field:184->nw_tos", "mod_nw_tos:184");
  same("load:0x2->NXM_NX_IP_ECN[]", "mod_nw_ecn:2");
  same("load:5->NXM_NX_IP_TTL[]", "mod_nw_ttl:5");
  same("set_field:80->udp_src", "mod_tp_src:80");
  same("output:in_port", "IN_PORT");
  same(
    "load:0x20010db8000000000000000000000007->NXM_NX_IPV6_SRC[]",
    "set_field:2001:db8::7->ipv6_src",
  );
  same("load:0x63->NXM_NX_IPV6_DST[0..15]", "set_field:::63/::ffff->ipv6_dst");
  same("load:0x5->NXM_OF_IP_SRC[0..7]", "set_field:0.0.0.5/0.0.0.255->ip_src");
  same("set_field:10.0.0.0/8->nw_dst", "set_field:10.0.0.0/255.0.0.0->nw_dst");
  same("load:0xf->NXM_OF_TCP_DST[0..3]", "set_field:15/15->tcp_dst");
  same("set_field:0xffff/0xffff->udp_src", "mod_tp_src:65535");
  same("load:0->NXM_OF_IN_PORT[]", "set_field:0->in_port");
  for (
    const [bad, why] of [
      ["mod_nw_tos:5", /ECN bits must be 0/],
      ["mod_nw_ecn:4", /does not fit 2 bits/],
      ["mod_nw_dst:2001:db8::1", /not an IPv4 address/],
      ["set_field:10.0.0.1/8->ip_dst", /bits outside the mask/],
      ["set_field:4/12->ip_dscp", /some bits of Ethernet and IP addresses/],
      ["set_field:3->in_port", /sets it to 0 only/],
      ["set_field:10.0.0.1->ipv6_src", /not an IPv6 address/],
      ["load:1->NXM_OF_TCP_DST[8..16]", /not within its 16 bits/],
      ["set_field:1->sctp_dst", /CRC32c/],
      ["mod_vlan_vid:5000", /not a valid VLAN VID/],
      ["push_vlan:0x9100", /not a VLAN TPID/],
      ["dec_ttl(1,2)", /no controller/],
    ] as const
  ) assert.throws(() => parseActions(bad), why);
  same("pop_vlan", "strip_vlan");
  same("set_field:0->vlan_tci", "strip_vlan");
  same("load:0x1005->NXM_OF_VLAN_TCI[]", "set_field:0x1005->vlan_tci");
  assert.throws(
    () => compileActions(parseActions("output:web,pass,mod_dl_src:02:00:00:00:00:01"), PORTS),
    /after pass/,
  );
  assert.throws(() => compileActions(parseActions("pass,strip_vlan"), PORTS), /after pass/);
  assert.throws(
    () => compileActions(parseActions("load:0->in_port,in_port"), PORTS),
    /port 0, which is none/,
  );
  // Open vSwitch's prerequisite for an IPv6 address: the match says ipv6.
  const flow = (text: string) => compileFlow(parseFlow(text, NAMES), PORTS);
  assert.throws(() => flow("ip actions=set_field:::1->ipv6_dst,output:web"), /needs ipv6/);
  assertEquals(flow("tcp6 actions=set_field:::1->ipv6_dst,output:web").actions.length, 2);
  // Through a memo too: a list compiled once for an ipv6 flow is still refused for an ip one.
  const memo: ActionMemo = new Map();
  const memoized = (text: string) => compileFlow(parseFlow(text, NAMES), PORTS, memo);
  assertEquals(memoized("ipv6 actions=set_field:::1->ipv6_dst,output:web").actions.length, 2);
  assertEquals(memo.size, 1);
  assert.throws(() => memoized("ip actions=set_field:::1->ipv6_dst,output:web"), /needs ipv6/);
  // An output to the flow's own in_port is taken: the datapath skips it, as Open vSwitch does.
  assertEquals(flow("in_port=web actions=output:web").actions.length, 1);
});

const ETH = "Ether(src='02:00:00:00:00:0a',dst='02:00:00:00:00:0b')";
const DATA = "Raw(b'warren'*10)";

/** A frame, the actions applied to it, and the frame Scapy says comes out. */
interface Case {
  name: string;
  /** Match fields besides in_port, for rewrites with a prerequisite. */
  match?: string;
  actions: string;
  before: string;
  after: string;
}

const CASES: Case[] = [
  {
    name: "Ethernet addresses",
    actions: "mod_dl_src:02:00:00:00:00:aa,set_field:02:00:00:00:00:bb->eth_dst",
    before: `${ETH}/IP(src='10.1.0.1',dst='10.1.0.2')/UDP(sport=1000,dport=2000)/${DATA}`,
    after:
      `Ether(src='02:00:00:00:00:aa',dst='02:00:00:00:00:bb')/IP(src='10.1.0.1',dst='10.1.0.2')/UDP(sport=1000,dport=2000)/${DATA}`,
  },
  {
    name: "UDP over IPv4: addresses and ports",
    actions: "mod_nw_src:192.0.2.7,mod_nw_dst:198.51.100.9,mod_tp_src:1234,mod_tp_dst:53",
    before: `${ETH}/IP(src='10.1.0.1',dst='10.1.0.2')/UDP(sport=1000,dport=2000)/${DATA}`,
    after: `${ETH}/IP(src='192.0.2.7',dst='198.51.100.9')/UDP(sport=1234,dport=53)/${DATA}`,
  },
  {
    name: "TCP over IPv4: addresses and ports, by set_field",
    actions: "set_field:10.9.9.9->ip_dst,set_field:8080->tcp_dst,set_field:4000->tp_src",
    before:
      `${ETH}/IP(src='10.1.0.1',dst='10.1.0.2',id=7)/TCP(sport=40000,dport=80,flags='S',seq=99)/${DATA}`,
    after:
      `${ETH}/IP(src='10.1.0.1',dst='10.9.9.9',id=7)/TCP(sport=4000,dport=8080,flags='S',seq=99)/${DATA}`,
  },
  {
    name: "UDP without a checksum keeps none",
    actions: "mod_nw_dst:10.1.0.99,mod_tp_dst:7",
    before: `${ETH}/IP(src='10.1.0.1',dst='10.1.0.2')/UDP(sport=1000,dport=2000,chksum=0)/${DATA}`,
    after: `${ETH}/IP(src='10.1.0.1',dst='10.1.0.99')/UDP(sport=1000,dport=7,chksum=0)/${DATA}`,
  },
  {
    name: "ICMP: the address changes, the ICMP checksum has no pseudo-header",
    actions: "mod_nw_dst:10.1.0.99,mod_tp_dst:7",
    before: `${ETH}/IP(src='10.1.0.1',dst='10.1.0.2')/ICMP(id=5,seq=1)/${DATA}`,
    after: `${ETH}/IP(src='10.1.0.1',dst='10.1.0.99')/ICMP(id=5,seq=1)/${DATA}`,
  },
  {
    name: "IPv4 DSCP, ECN, TTL",
    actions: "mod_nw_tos:0x28,mod_nw_ecn:1,mod_nw_ttl:9,dec_ttl",
    before: `${ETH}/IP(src='10.1.0.1',dst='10.1.0.2',tos=0xb2,ttl=64)/UDP()/${DATA}`,
    after: `${ETH}/IP(src='10.1.0.1',dst='10.1.0.2',tos=0x29,ttl=8)/UDP()/${DATA}`,
  },
  {
    name: "IPv4 dec_ttl, ip_dscp by set_field",
    actions: "dec_ttl,set_field:46->ip_dscp",
    before: `${ETH}/IP(src='10.1.0.1',dst='10.1.0.2',tos=0x03,ttl=2)/TCP()/${DATA}`,
    after: `${ETH}/IP(src='10.1.0.1',dst='10.1.0.2',tos=0xbb,ttl=1)/TCP()/${DATA}`,
  },
  {
    name: "IPv6 traffic class and hop limit, TCP port",
    actions: "mod_nw_tos:0xb8,set_field:2->nw_ecn,dec_ttl,mod_tp_dst:443",
    before:
      `${ETH}/IPv6(src='fd00::1',dst='fd00::2',tc=0x01,fl=0x12345,hlim=64)/TCP(dport=80)/${DATA}`,
    after:
      `${ETH}/IPv6(src='fd00::1',dst='fd00::2',tc=0xba,fl=0x12345,hlim=63)/TCP(dport=443)/${DATA}`,
  },
  // Tags in the bytes, as test-run has them (a device's frame has its
  // outermost tag held aside: see the traffic test below).
  {
    name: "mod_vlan_vid keeps the PCP and the TPID, clears DEI",
    actions: "mod_vlan_vid:20",
    before: `${ETH}/Dot1AD(prio=5,id=1,vlan=10)/IP(src='10.1.0.1',dst='10.1.0.2')/UDP()/${DATA}`,
    after: `${ETH}/Dot1AD(prio=5,vlan=20)/IP(src='10.1.0.1',dst='10.1.0.2')/UDP()/${DATA}`,
  },
  {
    name: "mod_vlan_pcp and set_field on vlan_pcp, vlan_vid and vlan_tci: the outer tag only",
    actions: "mod_vlan_pcp:3,set_field:0x1009->vlan_vid,set_field:0xf00b->vlan_tci,mod_vlan_pcp:6",
    before: `${ETH}/Dot1AD(vlan=7)/Dot1Q(prio=1,vlan=9)/ARP(psrc='10.1.0.1')`,
    after: `${ETH}/Dot1AD(prio=6,vlan=11)/Dot1Q(prio=1,vlan=9)/ARP(psrc='10.1.0.1')`,
  },
  {
    name: "strip_vlan, then rewrites find the headers where they now are",
    actions: "strip_vlan,mod_nw_dst:10.1.0.99,mod_tp_dst:7,dec_ttl",
    before: `${ETH}/Dot1Q(prio=2,vlan=10)/IP(src='10.1.0.1',dst='10.1.0.2')/UDP(dport=5)/${DATA}`,
    after: `${ETH}/IP(src='10.1.0.1',dst='10.1.0.99',ttl=63)/UDP(dport=7)/${DATA}`,
  },
  {
    // The kernel holds the inner tag aside once the outer is off: the
    // bytes shrink by both (the traffic test sees the inner one on the wire).
    name: "strip_vlan of two tags' outer one",
    actions: "strip_vlan,mod_tp_src:9",
    before:
      `${ETH}/Dot1AD(vlan=7)/Dot1Q(vlan=9)/IPv6(src='fd00::1',dst='fd00::2')/TCP(sport=1)/${DATA}`,
    after: `${ETH}/IPv6(src='fd00::1',dst='fd00::2')/TCP(sport=9)/${DATA}`,
  },
  {
    name: "strip_vlan of an untagged frame changes nothing",
    actions: "strip_vlan,mod_nw_src:10.1.0.98",
    before: `${ETH}/IP(src='10.1.0.1',dst='10.1.0.2')/UDP()/${DATA}`,
    after: `${ETH}/IP(src='10.1.0.98',dst='10.1.0.2')/UDP()/${DATA}`,
  },
  {
    name: "IPv6 addresses of TCP: the pseudo-header's share of the checksum",
    match: "ipv6",
    actions: "set_field:2001:db8::7->ipv6_src,set_field:2001:db8:ffff::9->ipv6_dst",
    before:
      `${ETH}/IPv6(src='fd00::1',dst='fd00::2',fl=0x12345)/TCP(sport=40000,dport=80,flags='S')/${DATA}`,
    after:
      `${ETH}/IPv6(src='2001:db8::7',dst='2001:db8:ffff::9',fl=0x12345)/TCP(sport=40000,dport=80,flags='S')/${DATA}`,
  },
  {
    name: "IPv6 addresses and a port of UDP, some bits of each",
    match: "ipv6",
    actions: "load:0x99->NXM_NX_IPV6_SRC[0..15],set_field:fd00:aa::/ffff:ffff::->ipv6_dst," +
      "load:0xf->NXM_OF_UDP_DST[0..3]",
    before: `${ETH}/IPv6(src='fd00::1',dst='fd00::2')/UDP(sport=1000,dport=2000)/${DATA}`,
    after: `${ETH}/IPv6(src='fd00::99',dst='fd00:aa::2')/UDP(sport=1000,dport=2015)/${DATA}`,
  },
  {
    name: "ICMPv6: its checksum covers the pseudo-header too",
    match: "icmp6",
    actions: "set_field:fd00::99->ipv6_dst",
    before: `${ETH}/IPv6(src='fd00::1',dst='fd00::2')/ICMPv6EchoRequest(id=5,seq=1,data=b'warren')`,
    after: `${ETH}/IPv6(src='fd00::1',dst='fd00::99')/ICMPv6EchoRequest(id=5,seq=1,data=b'warren')`,
  },
  {
    name: "some bits of Ethernet and IPv4 addresses and of a TCP port",
    actions: "set_field:0a:00:00:00:00:00/ff:00:00:00:00:00->eth_src," +
      "set_field:0.0.0.99/0.0.0.255->nw_dst,set_field:192.168.0.0/16->nw_src," +
      "set_field:0x100/0xff00->tcp_src",
    before: `${ETH}/IP(src='10.1.0.1',dst='10.1.0.2')/TCP(sport=40000,dport=80)/${DATA}`,
    after:
      `Ether(src='0a:00:00:00:00:0a',dst='02:00:00:00:00:0b')/IP(src='192.168.0.1',dst='10.1.0.99')/TCP(sport=320,dport=80)/${DATA}`,
  },
  {
    name: "IPv4 rewrites leave IPv6 and ARP alone",
    actions: "mod_nw_dst:10.1.0.99,mod_nw_src:10.1.0.98",
    before: `${ETH}/ARP(psrc='10.1.0.1',pdst='10.1.0.2')`,
    after: `${ETH}/ARP(psrc='10.1.0.1',pdst='10.1.0.2')`,
  },
];

privilegedTest("rewrites through test-run equal Scapy's packets byte for byte", async () => {
  await using lab = await Lab.create({ ipv6: false });
  const a = lab.hosts[0];
  await lab.up(a);
  await lab.datapath(a, (dp) => dp.addLocalPort("web", a.workload.port));
  const frames = await scapyMany(CASES.flatMap((c) => [c.before, c.after]));
  for (const [i, c] of CASES.entries()) {
    // in_port sends the packet back to web, the port it came in on.
    // Each case's flow alone: their matches differ.
    const match = `in_port=web${c.match ? `,${c.match}` : ""}`;
    await lab.datapath(a, (dp) => {
      dp.deleteFlows({}, false);
      return addFlows(dp, `${match} actions=${c.actions},in_port`);
    });
    const out = await a.ns.within(() =>
      runPinned(a, "wr_tc_local", frames[2 * i], a.workload.port)
    );
    assertEquals(out.retval, TC_ACT_REDIRECT, c.name);
    assertEquals(toHex(out.data), toHex(frames[2 * i + 1]), c.name);
  }
});

privilegedTest(
  "dec_ttl drops a packet whose TTL or hop limit runs out, and counts it",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const a = lab.hosts[0];
    await lab.up(a);
    await lab.datapath(a, async (dp) => {
      await dp.addLocalPort("web", a.workload.port);
      await addFlows(dp, "in_port=web actions=dec_ttl,in_port");
    });
    const frames = await scapyMany([
      `${ETH}/IP(ttl=1)/UDP()`,
      `${ETH}/IP(ttl=0)/UDP()`,
      `${ETH}/IPv6(hlim=1)/UDP()`,
      // Not IP: nothing to decrement, and it goes on.
      `${ETH}/ARP()`,
    ]);
    const verdicts = await a.ns.within(() =>
      frames.map((f) => runPinned(a, "wr_tc_local", f, a.workload.port).retval)
    );
    assertEquals(verdicts, [TC_ACT_SHOT, TC_ACT_SHOT, TC_ACT_SHOT, TC_ACT_REDIRECT]);
    const stats = await lab.datapath(a, (dp) => nonZeroStats(dp));
    assertEquals(stats.drop_ttl, 3);
  },
);

/**
 * A client and a server behind one host, on ports cli and srv: the client
 * talks to a service address, which the flows `setUp` gives (after giving
 * the workloads what addresses and neighbours it needs) turn into the
 * server's and back. Ping and TCP must reach the server, the replies coming
 * from the service address as `replies` says; nothing is dropped.
 */
async function throughNat(
  setUp: (client: Workload, server: Workload) => Promise<{ service: string; flows: string[] }>,
  tcpPort: number,
  replies: RegExp,
): Promise<void> {
  await using lab = await Lab.create({ ipv6: false });
  await using extra = new Workloads();
  const a = lab.hosts[0];
  await lab.up(a);
  const client = await extra.add(a, "wcli", "10.50.0.1");
  const server = await extra.add(a, "wsrv", "10.50.0.2");
  const { service, flows } = await setUp(client, server);
  await lab.datapath(a, async (dp) => {
    await dp.addLocalPort("cli", client.port);
    await dp.addLocalPort("srv", server.port);
    await addFlows(dp, ...flows);
  });
  const p = await ping(client, service, { count: 3 });
  assertEquals(p.received, 3, JSON.stringify(p));
  assertEquals(p.output.match(replies)?.length, 3, p.output);
  const t = await tcpTransfer(client, server, 1 << 20, service, tcpPort);
  assertEquals(t.received, t.sent);
  const stats = await lab.datapath(a, (dp) => nonZeroStats(dp));
  assert.ok(!stats.drop_action && !stats.drop_no_port, JSON.stringify(stats));
}

privilegedTest(
  "NAT-like rewrite between namespaces: ping and TCP reach a hidden address and port",
  () =>
    throughNat(
      async (client, server) => {
        const service = "10.50.0.100";
        await client.ns.run([
          "ip",
          "neigh",
          "replace",
          service,
          "lladdr",
          server.mac,
          "dev",
          "eth0",
        ]);
        await server.ns.run([
          "ip",
          "neigh",
          "replace",
          client.ip,
          "lladdr",
          client.mac,
          "dev",
          "eth0",
        ]);
        return {
          service,
          flows: [
            `in_port=cli,ip,nw_dst=${service} actions=mod_nw_dst:${server.ip},output:srv`,
            `priority=40000,in_port=cli,tcp,nw_dst=${service},tp_dst=80 actions=mod_nw_dst:${server.ip},mod_tp_dst:5001,output:srv`,
            `in_port=srv,ip,nw_src=${server.ip} actions=mod_nw_src:${service},dec_ttl,output:cli`,
            `priority=40000,in_port=srv,tcp,nw_src=${server.ip},tp_src=5001 actions=mod_nw_src:${service},mod_tp_src:80,output:cli`,
            "in_port=cli,arp actions=output:srv",
            "in_port=srv,arp actions=output:cli",
          ],
        };
      },
      80,
      /from 10\.50\.0\.100: icmp_seq=\d+ ttl=63 /g,
    ), // one hop older
);

privilegedTest(
  "an output to the port the packet came in on is skipped, as in Open vSwitch, but after load:0->in_port",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await using extra = new Workloads();
    const a = lab.hosts[0];
    await lab.up(a);
    const other = await extra.add(a, "wother", "10.50.0.9");
    await lab.datapath(a, async (dp) => {
      await dp.addLocalPort("web", a.workload.port);
      await dp.addLocalPort("other", other.port);
      await addFlows(
        dp,
        // in_port is wild: web's own packets are not sent back to it.
        "udp,tp_dst=1 actions=output:web",
        "udp,tp_dst=2 actions=output:other,output:web",
        "udp,tp_dst=3 actions=load:0->in_port,output:web",
        "in_port=web,udp,tp_dst=4 actions=output:web",
      );
    });
    const frames = await scapyMany(
      [1, 2, 3, 4].map((p) => `${ETH}/IP(src='10.1.0.1',dst='10.1.0.2')/UDP(dport=${p})`),
    );
    const verdicts = await a.ns.within(() =>
      frames.map((f) => runPinned(a, "wr_tc_local", f, a.workload.port).retval)
    );
    assertEquals(verdicts, [TC_ACT_SHOT, TC_ACT_SHOT, TC_ACT_REDIRECT, TC_ACT_SHOT]);
    const stats = await lab.datapath(a, (dp) => nonZeroStats(dp));
    // The second went to other: a copy left, so no drop is counted for it.
    assertEquals(stats.drop_in_port, 2, JSON.stringify(stats));
    const sent = await lab.datapath(a, (dp) => dp.stats().ports.map((p) => [p.name, p.tx_packets]));
    assertEquals(Object.fromEntries(sent), { web: 1n, other: 1n });
  },
);

privilegedTest(
  "IPv6 NAT-like rewrite between namespaces: ping and TCP reach a hidden address",
  () =>
    throughNat(
      async (client, server) => {
        const [cli6, srv6, service] = ["fd50::1", "fd50::2", "fd50::100"];
        // Fixed neighbours: no neighbour discovery crosses the rewriting flows.
        const sides = [[client, cli6, service, server.mac], [
          server,
          srv6,
          cli6,
          client.mac,
        ]] as const;
        for (const [w, ip, peer, mac] of sides) {
          await w.ns.run(["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"]);
          await w.ns.run(["ip", "-6", "addr", "add", `${ip}/64`, "dev", "eth0", "nodad"]);
          await w.ns.run(["ip", "-6", "neigh", "replace", peer, "lladdr", mac, "dev", "eth0"]);
        }
        return {
          service,
          flows: [
            `in_port=cli,ipv6,ipv6_dst=${service} actions=set_field:${srv6}->ipv6_dst,output:srv`,
            `in_port=srv,ipv6,ipv6_src=${srv6} actions=set_field:${service}->ipv6_src,output:cli`,
          ],
        };
      },
      5001,
      /from fd50::100: icmp_seq=\d+ /g,
    ),
);

privilegedTest(
  "some bits of tun_id: decapsulated from one tunnel, its id with those bits set leaves through another",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a, b] = lab.hosts;
    await lab.up(a, { xdp: "off" });
    const peerMac = await pinNeighbor(lab, a);
    const myMac = await macOf(a.ns, a.underlay);
    await lab.datapath(a, async (dp) => {
      await dp.addLocalPort("web", a.workload.port);
      await dp.addTunnelPort("vx", "vxlan", { remote_ip: "flow", key: "flow" });
      await dp.addTunnelPort("gnv", "geneve", { remote_ip: "flow", key: "flow" });
      await addFlows(
        dp,
        `in_port=vx actions=set_field:0x500/0xff00->tun_id,set_tunnel(dst=${b.ip}),output:gnv`,
        // From a local port the packet's id is 0.
        `in_port=web actions=load:7->NXM_NX_TUN_ID[16..23],set_tunnel(dst=${b.ip}),output:vx`,
      );
    });
    const inner = "Ether(src='02:00:00:00:00:0a',dst='02:00:00:00:00:0b')/" +
      "IP(src='10.1.0.1',dst='10.1.0.2',tos=0x2a)/UDP(sport=1000,dport=2000)/Raw(b'warren'*10)";
    const outer = (src: string, dst: string) =>
      `IP(src='${src}',dst='${dst}',ttl=64,flags='DF',id=0,tos=0x02)`;
    const vxlan = (vni: number) =>
      `Ether(dst='${myMac}',src='${peerMac}')/${outer(b.ip, a.ip)}/` +
      `UDP(sport=50000,dport=4789,chksum=0)/VXLAN(vni=${vni},flags=0x08)/${inner}`;
    const [fromB, fromB2, local] = await scapyMany([vxlan(0x2a), vxlan(0x2b), inner]);
    // The second packet from B finds the outer header cached: with the first's id.
    const [relayed, relayed2, sent] = await a.ns.within(() => [
      runPinned(a, "wr_tc_underlay", fromB, a.underlay),
      runPinned(a, "wr_tc_underlay", fromB2, a.underlay),
      runPinned(a, "wr_tc_local", local, a.workload.port),
    ]);
    assertEquals(
      [relayed.retval, relayed2.retval, sent.retval],
      new Array(3).fill(TC_ACT_REDIRECT),
    );
    // VNI 0x2b, the same inner flow: the same packet but for its id's second byte.
    assertEquals(relayed2.data[48], 0x2b);
    relayed2.data[48] = 0x2a;
    assertEquals(toHex(relayed2.data), toHex(relayed.data));
    // The source port is a hash of the inner flow: taken from the packet.
    const sport = (p: Uint8Array) => (p[34] << 8) | p[35];
    const expected = await scapyMany([
      `Ether(dst='${peerMac}',src='${myMac}')/${outer(a.ip, b.ip)}/UDP(sport=${
        sport(relayed.data)
      },dport=6081,chksum=0)/GENEVE(vni=0x52a,proto=0x6558)/${inner}`,
      `Ether(dst='${peerMac}',src='${myMac}')/${outer(a.ip, b.ip)}/UDP(sport=${
        sport(sent.data)
      },dport=4789,chksum=0)/VXLAN(vni=0x70000,flags=0x08)/${inner}`,
    ]);
    assertEquals(toHex(relayed.data), toHex(expected[0]));
    assertEquals(toHex(sent.data), toHex(expected[1]));
  },
);

/** A frame a workload sends, the VLAN actions on it, and what the other receives. */
interface VlanCase {
  actions: string;
  /** Its layers between Ethernet and IP, before and after. */
  before: string;
  after: string;
  /** The IP destination and UDP port after, where the actions change them. */
  dst?: string;
  dport?: number;
}

const VLAN_CASES: VlanCase[] = [
  { actions: "mod_vlan_vid:10", before: "", after: "Dot1Q(vlan=10)/" },
  { actions: "mod_vlan_pcp:5", before: "", after: "Dot1Q(prio=5,vlan=0)/" },
  {
    actions: "push_vlan:0x88a8,set_field:0x1014->vlan_vid,mod_nw_dst:10.60.0.99",
    before: "",
    after: "Dot1AD(vlan=20)/",
    dst: "10.60.0.99",
  },
  // The tag held aside goes into the bytes under the pushed one: the
  // rewrites after find the headers 4 bytes on.
  {
    actions: "push_vlan:0x88a8,mod_vlan_vid:20,mod_nw_dst:10.60.0.99,mod_tp_dst:7",
    before: "Dot1Q(prio=3,vlan=10)/",
    after: "Dot1AD(vlan=20)/Dot1Q(prio=3,vlan=10)/",
    dst: "10.60.0.99",
    dport: 7,
  },
  { actions: "mod_vlan_vid:30", before: "Dot1Q(prio=3,vlan=10)/", after: "Dot1Q(prio=3,vlan=30)/" },
  {
    actions: "set_field:0xb00b->vlan_tci",
    before: "Dot1AD(vlan=10)/",
    after: "Dot1AD(prio=5,vlan=11)/",
  },
  { actions: "strip_vlan,mod_tp_dst:7", before: "Dot1Q(prio=3,vlan=10)/", after: "", dport: 7 },
  // The inner tag, in the bytes, is held aside once the outer is off.
  {
    actions: "strip_vlan,mod_nw_dst:10.60.0.99",
    before: "Dot1AD(vlan=7)/Dot1Q(prio=2,vlan=9)/",
    after: "Dot1Q(prio=2,vlan=9)/",
    dst: "10.60.0.99",
  },
];

/**
 * Sends each case's frame from `from`, UDP source port `sport` + its index
 * (for the flows to tell them apart), and checks what `to` receives byte
 * for byte against Scapy's frame after the case's actions.
 */
async function vlanOnTheWire(
  from: Workload,
  to: Workload,
  cases: VlanCase[],
  sport: number,
): Promise<void> {
  const eth = `Ether(src='${from.mac}',dst='${to.mac}')`;
  const frame = (i: number, vlan: string, dst = to.ip, dport = 53) =>
    `${eth}/${vlan}IP(src='${from.ip}',dst='${dst}')/UDP(sport=${sport + i},dport=${dport})/` +
    "Raw(b'vlan'*16)";
  const frames = await scapyMany(
    cases.flatMap((c, i) => [frame(i, c.before), frame(i, c.after, c.dst, c.dport)]),
  );
  const pcap = await Deno.makeTempFile({ suffix: ".pcap" });
  try {
    const cap = await tcpdump(to.ns.name, {
      dev: to.dev,
      filter: `ether src ${from.mac}`,
      count: cases.length,
      file: pcap,
    });
    {
      await using send = RawSender.start(from.ns, from.dev);
      for (let i = 0; i < cases.length; i++) await send.send(frames[2 * i]);
    }
    await cap.status;
    const got = (await readPcap(pcap)).records.map((r) => toHex(r.data));
    assertEquals(got, cases.map((_, i) => toHex(frames[2 * i + 1])));
  } finally {
    await Deno.remove(pcap);
  }
}

privilegedTest(
  "VLAN rewrites on the wire: frames between namespaces captured byte for byte against Scapy",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await using extra = new Workloads();
    const a = lab.hosts[0];
    await lab.up(a);
    const client = await extra.add(a, "vcli", "10.60.0.1");
    const server = await extra.add(a, "vsrv", "10.60.0.2");
    await lab.datapath(a, async (dp) => {
      await dp.addLocalPort("cli", client.port);
      await dp.addLocalPort("srv", server.port);
      await addFlows(
        dp,
        ...VLAN_CASES.map((c, i) =>
          `in_port=cli,udp,tp_src=${2000 + i} actions=${c.actions},output:srv`
        ),
      );
    });
    await vlanOnTheWire(client, server, VLAN_CASES, 2000);
    const stats = await lab.datapath(a, (dp) => nonZeroStats(dp));
    assert.ok(!stats.drop_action && !stats.drop_no_port, JSON.stringify(stats));
  },
);

/** After decapsulation at TC, the tag is in the frame's bytes, not held aside. */
const DECAP_CASES: VlanCase[] = [
  { actions: "strip_vlan,mod_tp_dst:7", before: "Dot1Q(prio=3,vlan=10)/", after: "", dport: 7 },
  { actions: "mod_vlan_vid:30", before: "Dot1Q(prio=3,vlan=10)/", after: "Dot1Q(prio=3,vlan=30)/" },
  {
    actions: "push_vlan:0x88a8,mod_vlan_pcp:1,mod_tp_dst:7",
    before: "Dot1Q(vlan=10)/",
    after: "Dot1AD(prio=1,vlan=0)/Dot1Q(vlan=10)/",
    dport: 7,
  },
];

privilegedTest(
  "VLAN rewrites of frames decapsulated at TC, tags in their bytes, byte for byte on the wire",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a, b] = lab.hosts;
    await upWithPorts(lab, a, "vxlan");
    await upWithPorts(lab, b, "vxlan", {}, { xdp: "off" });
    await pinNeighbor(lab, a);
    await lab.datapath(
      a,
      (dp) => addFlows(dp, `in_port=web actions=set_tunnel(id=42,dst=${b.ip}),output:t0`),
    );
    await lab.datapath(b, (dp) =>
      addFlows(
        dp,
        ...DECAP_CASES.map((c, i) =>
          `in_port=t0,udp,tp_src=${3000 + i} actions=${c.actions},output:web`
        ),
      ));
    await vlanOnTheWire(a.workload, b.workload, DECAP_CASES, 3000);
    const stats = await lab.datapath(b, (dp) => nonZeroStats(dp));
    assert.ok(!stats.drop_action && !stats.drop_no_port, JSON.stringify(stats));
  },
);
