/**
 * Every match field against real traffic: for each field of the field
 * table, a packet that a workload sends through a real veth (and, for the
 * tunnel's fields, through a real Geneve tunnel from the other host) hits
 * a flow that matches on that field alone, one that differs in the field
 * alone misses it, and `trace` with the same fields names the same flow.
 *
 * The cases are a table keyed by field: a field the language takes and no
 * case covers fails the test, so a new field comes with its traffic.
 * Packets are built by Scapy and sent as they are from the workload's
 * namespace through an AF_PACKET socket, so the kernel delivers them to
 * warren as it delivers any workload's traffic (a VLAN tag, for one, is
 * taken off into the skb before TC runs). One lab serves every case: host
 * B holds each case's flow in turn, above a catch-all, and its counters
 * say which flow each packet took. Tunnelled packets are decapsulated at
 * XDP, then, with XDP off, at TC.
 *
 * @module
 */

import { assert, assertEquals } from "./helpers/assert.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { scapyMany } from "./helpers/scapy.ts";
import { RawSender } from "./helpers/traffic.ts";
import { pinNeighbor, upWithPorts } from "./helpers/lab.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { Datapath } from "../src/tunnel/datapath.ts";
import { FIELDS } from "../src/tunnel/fields.ts";
import { parseFlow, parseMatch } from "../src/tunnel/flow_syntax.ts";
import { Tracer } from "../src/tunnel/trace.ts";

/** A packet of a case: a frame (Scapy), sent by B's workload or by A's through the tunnel. */
interface Send {
  /** B's own workload (in_port=web on B), or A's, tunnelled to B (in_port=t0). */
  from: "local" | "tunnel";
  /** The frame, a Scapy expression. */
  frame: string;
  /** set_tunnel's arguments on A, beside id=42 and dst=B (tunnelled packets). */
  tunnel?: Record<string, string>;
}

/** One field against traffic. */
interface Case {
  /** The field of the field table the case is for. */
  field: string;
  /** The flow's match on B: the field, and only the prerequisites it needs. */
  match: string;
  /** A packet the flow matches. */
  hit: Send;
  /** A packet that differs from `hit` in the field alone: the flow misses it. */
  miss: Send;
}

/** An Ethernet header, as B's workload sends it unless a case says otherwise. */
const E = "Ether(src='02:00:00:00:00:0b',dst='02:00:00:00:00:0c')";
const UDP4 = "IP(src='10.1.0.2',dst='10.1.0.9')/UDP(sport=4000,dport=9)/Raw(b'x'*8)";
const V6 = "IPv6(src='fd00:1::2',dst='fd00:1::9')";

/** A frame field: B's workload sends `hit` and `miss` (each after E unless it has its own). */
function frame(field: string, match: string, hit: string, miss: string): Case {
  const full = (f: string) => f.startsWith("Ether(") ? f : `${E}/${f}`;
  return {
    field,
    match,
    hit: { from: "local", frame: full(hit) },
    miss: { from: "local", frame: full(miss) },
  };
}

/** A tunnel field: A's workload sends one frame, tunnelled with `hit`'s or `miss`'s set_tunnel. */
function tunnel(
  field: string,
  match: string,
  hit: Record<string, string>,
  miss: Record<string, string>,
): Case {
  const f = `Ether(src='02:00:00:00:00:0a',dst='02:00:00:00:00:0c')/${UDP4}`;
  return {
    field,
    match,
    hit: { from: "tunnel", frame: f, tunnel: hit },
    miss: { from: "tunnel", frame: f, tunnel: miss },
  };
}

/** set_tunnel's arguments for B's IPv6 endpoint. */
const V6_TUNNEL = { dst: "2001:db8::2" };

/** The network of B's web port. */
const B_NET = 7;

const NS = (tgt: string, opts = "") => `${V6}/ICMPv6ND_NS(tgt='${tgt}')${opts}`;
const NA = (tgt: string, opts = "") => `${V6}/ICMPv6ND_NA(tgt='${tgt}')${opts}`;

const CASES: Case[] = [
  {
    field: "in_port",
    match: "in_port=web",
    hit: { from: "local", frame: `${E}/${UDP4}` },
    miss: { from: "tunnel", frame: `${E}/${UDP4}` },
  },
  {
    // The network B's web port stamps; tunnelled packets come in on t0, of no network.
    field: "net",
    match: `net=${B_NET}`,
    hit: { from: "local", frame: `${E}/${UDP4}` },
    miss: { from: "tunnel", frame: `${E}/${UDP4}` },
  },
  tunnel("tun_id", "tun_id=42", {}, { id: "43" }),
  tunnel("tun_src", "tun_src=192.0.2.1", { src: "192.0.2.1" }, { src: "192.0.2.11" }),
  tunnel("tun_dst", "tun_dst=192.0.2.12", { dst: "192.0.2.12" }, {}),
  tunnel(
    "tun_ipv6_src",
    "tun_ipv6_src=2001:db8::1",
    { dst: "2001:db8::2", src: "2001:db8::1" },
    { dst: "2001:db8::2", src: "2001:db8::11" },
  ),
  tunnel("tun_ipv6_dst", "tun_ipv6_dst=2001:db8::12", { dst: "2001:db8::12" }, {
    dst: "2001:db8::2",
  }),
  tunnel("tun_tos", "tun_tos=32", { tos: "32" }, { tos: "36" }),
  tunnel("tun_ttl", "tun_ttl=33", { ttl: "33" }, { ttl: "34" }),
  tunnel("tun_flags", "tun_flags=+oam", { flags: "oam" }, {}),
  tunnel("tun_flags", "tun_flags=+csum", { flags: "csum" }, {}),
  tunnel("geneve_class", "geneve_class=0x0102", { geneve: "0x0102:0x05:0x0a0b0c0d" }, {
    geneve: "0x0103:0x05:0x0a0b0c0d",
  }),
  tunnel("geneve_type", "geneve_type=5", { geneve: "0x0102:0x05:0x0a0b0c0d" }, {
    geneve: "0x0102:0x06:0x0a0b0c0d",
  }),
  tunnel("geneve_data", "geneve_data=0x0a0b0c0d", { geneve: "0x0102:0x05:0x0a0b0c0d" }, {
    geneve: "0x0102:0x05:0x0a0b0c0e",
  }),
  frame(
    "dl_src",
    "dl_src=02:00:00:00:aa:01",
    `Ether(src='02:00:00:00:aa:01',dst='02:00:00:00:00:0c')/${UDP4}`,
    `Ether(src='02:00:00:00:aa:02',dst='02:00:00:00:00:0c')/${UDP4}`,
  ),
  frame(
    "dl_dst",
    "dl_dst=02:00:00:00:aa:03",
    `Ether(src='02:00:00:00:00:0b',dst='02:00:00:00:aa:03')/${UDP4}`,
    `Ether(src='02:00:00:00:00:0b',dst='02:00:00:00:aa:04')/${UDP4}`,
  ),
  frame(
    "dl_type",
    "dl_type=0x88b5",
    "Ether(src='02:00:00:00:00:0b',dst='02:00:00:00:00:0c',type=0x88b5)/Raw(b'x'*46)",
    "Ether(src='02:00:00:00:00:0b',dst='02:00:00:00:00:0c',type=0x88b6)/Raw(b'x'*46)",
  ),
  frame(
    "vlan_tci",
    "vlan_tci=0x300a",
    `Dot1Q(prio=1,vlan=10)/${UDP4}`,
    `Dot1Q(prio=1,vlan=11)/${UDP4}`,
  ),
  frame("dl_vlan", "dl_vlan=10", `Dot1Q(vlan=10)/${UDP4}`, `Dot1Q(vlan=11)/${UDP4}`),
  frame("dl_vlan", "dl_vlan=0xffff", UDP4, `Dot1Q(vlan=0)/${UDP4}`),
  // An 802.1ad tag is the first tag as much as an 802.1Q one.
  frame(
    "dl_vlan",
    "dl_vlan=20",
    `Dot1AD(vlan=20)/Dot1Q(vlan=30)/${UDP4}`,
    `Dot1AD(vlan=30)/Dot1Q(vlan=20)/${UDP4}`,
  ),
  {
    // Through the tunnel the tag travels in the inner frame, and B's XDP
    // reads it there.
    field: "dl_vlan",
    match: "dl_vlan=10",
    hit: { from: "tunnel", frame: `${E}/Dot1Q(vlan=10)/${UDP4}` },
    miss: { from: "tunnel", frame: `${E}/Dot1Q(vlan=11)/${UDP4}` },
  },
  {
    // A frame shorter than an IPv6 header, out of an IPv6 tunnel.
    field: "arp_op",
    match: "arp,arp_op=2",
    hit: { from: "tunnel", frame: `${E}/ARP(op=2,pdst='10.1.0.9')`, tunnel: V6_TUNNEL },
    miss: { from: "tunnel", frame: `${E}/ARP(op=1,pdst='10.1.0.9')`, tunnel: V6_TUNNEL },
  },
  frame("vlan_vid", "vlan_vid=0x100a", `Dot1Q(vlan=10)/${UDP4}`, `Dot1Q(vlan=11)/${UDP4}`),
  frame(
    "dl_vlan_pcp",
    "dl_vlan_pcp=5",
    `Dot1Q(prio=5,vlan=7)/${UDP4}`,
    `Dot1Q(prio=4,vlan=7)/${UDP4}`,
  ),
  frame(
    "nw_src",
    "ip,nw_src=10.1.0.7",
    "IP(src='10.1.0.7',dst='10.1.0.9')/UDP()",
    "IP(src='10.1.0.8',dst='10.1.0.9')/UDP()",
  ),
  frame(
    "nw_dst",
    "ip,nw_dst=10.1.0.7",
    "IP(src='10.1.0.2',dst='10.1.0.7')/UDP()",
    "IP(src='10.1.0.2',dst='10.1.0.8')/UDP()",
  ),
  frame(
    "ipv6_src",
    "ipv6,ipv6_src=fd00:1::7",
    "IPv6(src='fd00:1::7',dst='fd00:1::9')/UDP()",
    "IPv6(src='fd00:1::8',dst='fd00:1::9')/UDP()",
  ),
  frame(
    "ipv6_dst",
    "ipv6,ipv6_dst=fd00:1::7",
    "IPv6(src='fd00:1::2',dst='fd00:1::7')/UDP()",
    "IPv6(src='fd00:1::2',dst='fd00:1::8')/UDP()",
  ),
  frame(
    "ipv6_label",
    "ipv6,ipv6_label=0x12345",
    `IPv6(src='fd00:1::2',dst='fd00:1::9',fl=0x12345)/UDP()`,
    `IPv6(src='fd00:1::2',dst='fd00:1::9',fl=0x12346)/UDP()`,
  ),
  frame(
    "arp_spa",
    "arp,arp_spa=10.1.0.7",
    "ARP(psrc='10.1.0.7',pdst='10.1.0.9')",
    "ARP(psrc='10.1.0.8',pdst='10.1.0.9')",
  ),
  frame(
    "arp_tpa",
    "arp,arp_tpa=10.1.0.7",
    "ARP(psrc='10.1.0.2',pdst='10.1.0.7')",
    "ARP(psrc='10.1.0.2',pdst='10.1.0.8')",
  ),
  frame("arp_op", "arp,arp_op=2", "ARP(op=2,pdst='10.1.0.9')", "ARP(op=1,pdst='10.1.0.9')"),
  frame(
    "arp_sha",
    "arp,arp_sha=02:00:00:00:bb:01",
    "ARP(hwsrc='02:00:00:00:bb:01',pdst='10.1.0.9')",
    "ARP(hwsrc='02:00:00:00:bb:02',pdst='10.1.0.9')",
  ),
  frame(
    "arp_tha",
    "arp,arp_tha=02:00:00:00:bb:03",
    "ARP(op=2,hwdst='02:00:00:00:bb:03',pdst='10.1.0.9')",
    "ARP(op=2,hwdst='02:00:00:00:bb:04',pdst='10.1.0.9')",
  ),
  frame(
    "nw_proto",
    "ip,nw_proto=99",
    "IP(dst='10.1.0.9',proto=99)/Raw(b'x'*8)",
    "IP(dst='10.1.0.9',proto=98)/Raw(b'x'*8)",
  ),
  frame(
    "nw_tos",
    "ip,nw_tos=32",
    "IP(dst='10.1.0.9',tos=32)/UDP()",
    "IP(dst='10.1.0.9',tos=36)/UDP()",
  ),
  frame(
    "ip_dscp",
    "ip,ip_dscp=9",
    "IP(dst='10.1.0.9',tos=36)/UDP()",
    "IP(dst='10.1.0.9',tos=32)/UDP()",
  ),
  frame(
    "nw_ecn",
    "ip,nw_ecn=2",
    "IP(dst='10.1.0.9',tos=2)/UDP()",
    "IP(dst='10.1.0.9',tos=1)/UDP()",
  ),
  frame(
    "nw_ttl",
    "ip,nw_ttl=33",
    "IP(dst='10.1.0.9',ttl=33)/UDP()",
    "IP(dst='10.1.0.9',ttl=34)/UDP()",
  ),
  frame(
    "nw_ttl",
    "ipv6,nw_ttl=33",
    "IPv6(dst='fd00:1::9',hlim=33)/UDP()",
    "IPv6(dst='fd00:1::9',hlim=34)/UDP()",
  ),
  frame(
    "nw_frag",
    "ip,nw_frag=first",
    "IP(dst='10.1.0.9',flags='MF')/UDP()/Raw(b'x'*32)",
    "IP(dst='10.1.0.9')/UDP()/Raw(b'x'*32)",
  ),
  frame(
    "tp_src",
    "udp,tp_src=1234",
    "IP(dst='10.1.0.9')/UDP(sport=1234)",
    "IP(dst='10.1.0.9')/UDP(sport=1235)",
  ),
  frame(
    "tp_dst",
    "tcp,tp_dst=80",
    "IP(dst='10.1.0.9')/TCP(dport=80)",
    "IP(dst='10.1.0.9')/TCP(dport=81)",
  ),
  frame(
    "tp_dst",
    "sctp,tp_dst=5000",
    "IP(dst='10.1.0.9')/SCTP(dport=5000)",
    "IP(dst='10.1.0.9')/SCTP(dport=5001)",
  ),
  frame("tp_src", "sctp6,tp_src=5000", `${V6}/SCTP(sport=5000)`, `${V6}/SCTP(sport=5001)`),
  frame(
    "tcp_flags",
    "tcp,tcp_flags=+syn-ack",
    "IP(dst='10.1.0.9')/TCP(flags='S')",
    "IP(dst='10.1.0.9')/TCP(flags='SA')",
  ),
  frame("tcp_flags", "tcp6,tcp_flags=fin|ack", `${V6}/TCP(flags='FA')`, `${V6}/TCP(flags='FPA')`),
  frame(
    "icmp_type",
    "icmp,icmp_type=13",
    "IP(dst='10.1.0.9')/ICMP(type=13)",
    "IP(dst='10.1.0.9')/ICMP(type=14)",
  ),
  frame(
    "icmp_code",
    "icmp,icmp_code=3",
    "IP(dst='10.1.0.9')/ICMP(type=3,code=3)",
    "IP(dst='10.1.0.9')/ICMP(type=3,code=4)",
  ),
  frame(
    "icmpv6_type",
    "icmp6,icmpv6_type=200",
    `${V6}/ICMPv6Unknown(type=200)`,
    `${V6}/ICMPv6Unknown(type=201)`,
  ),
  frame(
    "icmpv6_code",
    "icmp6,icmpv6_code=5",
    `${V6}/ICMPv6DestUnreach(code=5)`,
    `${V6}/ICMPv6DestUnreach(code=4)`,
  ),
  frame(
    "nd_target",
    "icmp6,icmp_type=135,nd_target=fd00:99::1",
    NS("fd00:99::1"),
    NS("fd00:99::2"),
  ),
  frame(
    "nd_target",
    "icmp6,icmp_type=136,nd_target=fd00:99::1",
    NA("fd00:99::1"),
    NA("fd00:99::2"),
  ),
  frame(
    "nd_sll",
    "icmp6,icmp_type=135,nd_sll=02:00:00:00:cc:01",
    NS("fd00:99::1", "/ICMPv6NDOptSrcLLAddr(lladdr='02:00:00:00:cc:01')"),
    NS("fd00:99::1", "/ICMPv6NDOptSrcLLAddr(lladdr='02:00:00:00:cc:02')"),
  ),
  frame(
    "nd_tll",
    "icmp6,icmp_type=136,nd_tll=02:00:00:00:cc:03",
    NA("fd00:99::1", "/ICMPv6NDOptDstLLAddr(lladdr='02:00:00:00:cc:03')"),
    NA("fd00:99::1", "/ICMPv6NDOptDstLLAddr(lladdr='02:00:00:00:cc:04')"),
  ),
];

Deno.test("every field of the field table has a real-traffic case", () => {
  const missing = FIELDS.map((f) => f.name).filter((n) => !CASES.some((c) => c.field === n));
  assertEquals(missing, [], "fields without a case in tests/field_traffic_test.ts");
  for (const c of CASES) assert.ok(FIELDS.some((f) => f.name === c.field), c.field);
});

/** Flow counters, by the flow's priority (each case has two flows). */
function packetsByPriority(dp: Datapath): Map<number, bigint> {
  return new Map(
    dp.dumpFlows({}, { counters: true }).map((f) => [f.priority, f.counters!.packets]),
  );
}

/**
 * Waits until `dp`'s flows have counted at least one packet more than
 * `before` (2 s at most); returns what each counted since.
 */
async function oneMore(dp: Datapath, before: Map<number, bigint>): Promise<Map<number, bigint>> {
  for (let i = 0;; i++) {
    const counts = packetsByPriority(dp);
    const since = new Map([...counts].map(([p, n]) => [p, n - (before.get(p) ?? 0n)]));
    if ([...since.values()].some((n) => n > 0n) || i === 100) return since;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** B's tunnel endpoints: its first and second address of each family. */
const B_ENDPOINTS = ["192.0.2.2", "192.0.2.12", "2001:db8::2", "2001:db8::12"];

/** Two hosts with Geneve between them, second addresses on each underlay, B's web in network {@link B_NET}. */
async function twoHosts(): Promise<Lab> {
  const lab = await Lab.create({ ipv6: false });
  try {
    const [a, b] = lab.hosts;
    for (
      const [h, addrs] of [[a, ["192.0.2.11/24", "2001:db8::1/64", "2001:db8::11/64"]], [
        b,
        ["192.0.2.12/24", "2001:db8::2/64", "2001:db8::12/64"],
      ]] as const
    ) {
      // IPv6 on the underlay only: the workloads send nothing on their own.
      await h.ns.run(["sysctl", "-qw", `net.ipv6.conf.${h.underlay}.disable_ipv6=0`]);
      for (const addr of addrs) {
        await h.ns.run(["ip", "addr", "add", addr, "dev", h.underlay, "nodad"]);
      }
    }
    await upWithPorts(lab, a, "geneve");
    await lab.up(b, { localIps: B_ENDPOINTS });
    await lab.datapath(b, async (dp) => {
      await dp.addLocalPort("web", b.workload.port, { net: B_NET });
      await dp.addTunnelPort("t0", "geneve", { remote_ip: "flow", key: "flow" });
    });
    for (const ip of B_ENDPOINTS) {
      await pinNeighbor(lab, a, false, ip);
    }
    return lab;
  } catch (err) {
    await lab[Symbol.asyncDispose]();
    throw err;
  }
}

/** A's flow for a tunnelled packet: set_tunnel with id 42 to B, and the case's arguments. */
function aFlow(b: LabHost, args: Record<string, string> = {}): string {
  const all = { id: "42", dst: b.ip, ...args };
  const list = Object.entries(all).map(([k, v]) => `${k}=${v}`).join(",");
  return `in_port=web actions=set_tunnel(${list}),output:t0`;
}

async function replaceFlows(dp: Datapath, flows: string[]): Promise<void> {
  await dp.applyFlows(flows.map((f) => parseFlow(f, dp.portNames())));
}

privilegedTest(
  "every field: real traffic hits the flow that matches on it alone, and trace names that flow",
  async () => {
    await using lab = await twoHosts();
    const [a, b] = lab.hosts;
    const frames = await scapyMany(CASES.flatMap((c) => [c.hit.frame, c.miss.frame]));
    await using fromA = RawSender.start(a.workload.ns, a.workload.dev);
    await using fromB = RawSender.start(b.workload.ns, b.workload.dev);
    const failures: string[] = [];
    // With XDP on B's underlay a tunnelled packet is decapsulated there;
    // without, at TC. The tunnelled cases run both ways.
    for (const xdp of ["native", "off"] as const) {
      if (xdp === "off") await lab.up(b, { xdp, localIps: B_ENDPOINTS });
      // One datapath of B's, and one copy of its programs for every trace,
      // with this thread in B's namespace; A's flows are changed in A's.
      await b.ns.within(async () => {
        using dp = Datapath.open(b.pinDir);
        using tracer = new Tracer(dp);
        for (const [i, c] of CASES.entries()) {
          if (xdp === "off" && c.hit.from === "local" && c.miss.from === "local") continue;
          const name = `${c.field} (${c.match}, XDP ${xdp})`;
          await replaceFlows(dp, [
            `priority=100,${c.match} actions=drop`,
            "priority=1 actions=drop",
          ]);
          const send = async (s: Send, bytes: Uint8Array) => {
            if (s.from === "local") return await fromB.send(bytes);
            await lab.datapath(a, (dpA) => replaceFlows(dpA, [aFlow(b, s.tunnel)]));
            await fromA.send(bytes);
          };
          // Each packet moves one counter by one: the case's flow (priority
          // 100) for the packet it matches, the catch-all (1) for the other.
          const sends = [[c.hit, frames[2 * i], 100], [c.miss, frames[2 * i + 1], 1]] as const;
          for (const [s, bytes, want] of sends) {
            const before = packetsByPriority(dp);
            await send(s, bytes);
            const since = await oneMore(dp, before);
            if (since.get(want) !== 1n || since.get(101 - want) !== 0n) {
              const took = [...since].filter(([, n]) => n).map(([p, n]) => `${n} at priority ${p}`);
              failures.push(
                `${name}: the packet it ${want === 100 ? "matches" : "does not match"} counted ${
                  took.join(", ") || "nothing"
                }`,
              );
            }
          }
          const inPort = c.hit.from === "local" ? "web" : "t0";
          const t = await tracer.trace(
            parseMatch(`in_port=${inPort},${c.match}`, dp.portNames()).match,
          );
          const want = dp.describeMatch(dp.dumpFlows().find((f) => f.priority === 100)!.match);
          if (t.flow?.match !== want) {
            failures.push(`${name}: trace names ${t.flow?.match ?? "no flow"}, not ${want}`);
          }
        }
      });
    }
    assertEquals(failures, []);
  },
);
