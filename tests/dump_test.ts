/**
 * `flow dump` of a mixed table: 50 000 flows under 30 masks (every
 * kind of match field, tunnel fields of both families, masked and
 * prefixed values), a dozen kinds of action, priorities, cookies, two
 * owners and per-CPU counters written into the kernel's map. The dump's
 * fast path (columns by flow id, one reused flow, a callback per flow)
 * must print each flow exactly as its own text prints, with its counters
 * summed over CPUs, in priority then flow id order, and agree byte for
 * byte with the library's plain path (a new flow object per flow).
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { oneHost } from "./helpers/lab.ts";
import { warrenOk } from "./helpers/cli.ts";
import { dumpLine } from "../src/cli/commands/flow.ts";
import { parseFlow } from "../src/tunnel/flow_syntax.ts";
import type { FlowSpec } from "../src/tunnel/flow_syntax.ts";
import type { FlowStats } from "../src/maps/layouts.ts";
import type { Datapath } from "../src/tunnel/datapath.ts";
import { encodeMatch } from "../src/tunnel/compile.ts";
import { tcpFlags } from "../src/tunnel/packet.ts";

const N = 50_000;

/** A seeded generator (mulberry32): the same table every run. */
function random(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) % n);
  };
}

const r = random(15);
const byte = () => r(256);
const v4 = () => `${byte()}.${byte()}.${byte()}.${byte()}`;
const v6 = () => Array.from({ length: 8 }, () => r(65536).toString(16)).join(":");
const mac = () => Array.from({ length: 6 }, () => byte().toString(16).padStart(2, "0")).join(":");

// Each template is one mask; its values vary per flow.
const TEMPLATES: (() => string)[] = [
  () => `in_port=web,ip,nw_dst=${v4()}`,
  () => `ip,nw_src=${v4()}/24,nw_dst=${v4()}/16`,
  () => `tcp,tp_dst=${r(65536)}`,
  () => `udp,nw_dst=${v4()},tp_src=${r(256) << 8}/0xff00`,
  () => `in_port=t0,tun_id=${r(1 << 24)}`,
  () => `tun_id=0x${(r(65536) * 65536).toString(16)}/0xffff0000,tun_src=${v4()},tun_dst=${v4()}`,
  () => `tun_ipv6_src=${v6()},tun_ipv6_dst=${v6()}/64`,
  () => `tun_flags=+df-csum,tun_tos=${r(64) * 4},tun_ttl=${r(256)},tun_id=${r(1000)}`,
  () => `ipv6,ipv6_src=${v6()}/64,ipv6_dst=${v6()}`,
  () => `tcp6,tp_src=${r(65536)},tcp_flags=+syn-ack`,
  () => `udp6,ipv6_label=0x${r(1 << 20).toString(16)},tp_dst=${r(65536)}`,
  () => `arp,arp_spa=${v4()},arp_tpa=${v4()}/8,arp_op=${1 + r(2)},arp_tha=${mac()}`,
  () => `dl_src=${mac()},dl_dst=${mac()}/ff:ff:ff:00:00:00`,
  () => `dl_vlan=${r(4096)},dl_vlan_pcp=${r(8)}`,
  () => `vlan_tci=0x1000/0x1000,ip,nw_dst=${v4()}`,
  () => `icmp,icmp_type=${r(256)},icmp_code=${r(256)}`,
  () => `icmp6,icmp_type=135,nd_target=${v6()}`,
  () => `icmp6,icmp_type=136,nd_target=${v6()}/64`,
  () => `ip,nw_tos=${r(64) * 4},nw_ecn=${r(4)},nw_ttl=${r(256)}`,
  () => `ip,nw_frag=later,nw_src=${v4()}`,
  () => `sctp,tp_dst=${r(65536)},tp_src=${r(65536)}`,
  () => `net=${r(1 << 30)}`,
  () => `net=0x${r(256).toString(16)}/0xff,in_port=web`,
  () => `dl_type=0x${(0x9000 + r(256)).toString(16)}`,
  () => `tcp,tcp_flags=0x${r(4096).toString(16)}/0xfff,nw_dst=${v4()}`,
  () => `in_port=web,ipv6,ipv6_dst=${v6()}/48`,
  () => `udp,tun_dst=${v4()},tp_dst=${r(65536)}`,
  () => `arp,arp_sha=${mac()},arp_spa=${v4()}`,
  () => `ip,ip_dscp=${r(64)},nw_proto=${r(256)}`,
];

const ACTIONS: (() => string)[] = [
  () => "output:web",
  () => "drop",
  () => `set_tunnel(id=${r(1 << 24)},dst=${v4()}),output:t0`,
  () =>
    `set_tunnel(id=${r(50)},dst=192.0.2.${r(20)},tos=${r(64) * 4},ttl=${
      r(256)
    },flags=df),output:t0`,
  () => `output:web,set_tunnel(dst=${v4()},id=${r(1 << 24)}),output:t0`,
  () => `mod_vlan_vid:${r(4096)},mod_vlan_pcp:${r(8)},output:web`,
  () => `push_vlan:0x8100,mod_vlan_vid:${r(4096)},output:web`,
  () => "strip_vlan,output:web",
  () => "set_field:02:00:00:00:00:00/ff:00:00:00:00:00->eth_src,output:web",
  () => "load:0->in_port,output:web",
  () => "pass",
];

/** Rewrites that need the packet type in the match, by the match's shorthand. */
const REWRITES: [RegExp, () => string][] = [
  [/^(ip|tcp|udp|icmp|sctp),/, () => `set_field:${v4()}/255.255.255.255->nw_dst,output:web`],
  [/^udp,/, () => `load:${r(65536)}->NXM_OF_UDP_SRC[],output:web`],
  [/^(ipv6|tcp6|udp6|icmp6),/, () => `set_field:${v6()}->ipv6_dst,output:web`],
];

/** The table, parsed: distinct matches, a few priorities, cookies, a few hundred action lists. */
function table(dp: Datapath): { operator: FlowSpec[]; fleet: FlowSpec[] } {
  const names = dp.portNames();
  const lists = Array.from({ length: 300 }, () => ACTIONS[r(ACTIONS.length)]());
  const seen = new Set<string>();
  const seenText = new Map<string, string>();
  const operator: FlowSpec[] = [], fleet: FlowSpec[] = [];
  for (let i = 0; seen.size < N; i++) {
    const priority = [0, 1, 10, 100, 101, 32767, 32768, 65534, 65535][r(9)];
    const cookie = r(3) ? "" : `cookie=0x${r(1 << 30).toString(16)},`;
    const match = TEMPLATES[i % TEMPLATES.length]();
    const rewrite = REWRITES.find(([m]) => m.test(match) && r(3) === 0)?.[1]();
    const actions = rewrite ?? lists[r(300)];
    const spec = parseFlow(`${cookie}priority=${priority},${match} actions=${actions}`, names);
    // Values under a mask can come out the same: one flow per match, at any priority.
    const { keyBytes, maskBytes } = encodeMatch(spec.match);
    const key = `${keyBytes} ${maskBytes}`;
    if (seen.has(key)) {
      if (dp.describeMatch(spec.match) !== seenText.get(key)) {
        throw new Error(`${dp.describeMatch(spec.match)} vs ${seenText.get(key)}`);
      }
      continue;
    }
    seen.add(key);
    seenText.set(key, dp.describeMatch(spec.match));
    (r(4) ? operator : fleet).push(spec);
  }
  return { operator, fleet };
}

privilegedTest(
  "flow dump of a mixed table: each flow as its text prints, counters summed, in order, as the plain path",
  async () => {
    await using lab = await oneHost("vxlan", {}, { maxFlows: 65536 });
    const [a] = lab.hosts;
    const expected = new Map<string, string>();
    const stats = new Map<number, FlowStats[]>();
    await lab.datapath(a, async (dp) => {
      const { operator, fleet } = table(dp);
      await dp.applyFlows(operator);
      await dp.applyFlows(fleet, { owner: "fleet" });
      // Every flow as its own text prints, keyed by that text.
      for (const s of operator) expected.set(dp.describeFlow(s), "");
      for (const s of fleet) expected.set(dp.describeFlow(s), "fleet");
      // Counters on every seventh flow, different on each CPU.
      const cpus = dp.maps.flowStats.cpus;
      for (const f of dp.eachFlow()) {
        if (f.flowId % 7) continue;
        const per = Array.from({ length: cpus }, (_, cpu) => ({
          packets: BigInt(cpu === 1 ? 0 : 1 + r(1000)) * (f.flowId % 2 ? 1n : 2n ** 33n),
          bytes: BigInt(r(1 << 30)) * 1000n,
          used_ns: 0n,
          tcp_flags: r(512),
        }));
        dp.maps.flowStats.set(f.flowId, per);
        stats.set(f.flowId, per);
      }
    });

    const json = JSON.parse(await warrenOk(a, ["flow", "dump", "--json"])) as {
      flow_id: number;
      priority: number;
      owner: string;
      match: string;
    }[];
    const lines = (await warrenOk(a, ["flow", "dump"])).split("\n");
    assertEquals(lines.pop(), "");
    assertEquals(lines.length, N);
    assertEquals(json.length, N);

    // Priority first (highest first), then flow id.
    for (let i = 1; i < json.length; i++) {
      const [p, q] = [json[i - 1], json[i]];
      assert.ok(
        p.priority > q.priority || (p.priority === q.priority && p.flow_id < q.flow_id),
        `${JSON.stringify(p)} before ${JSON.stringify(q)}`,
      );
    }
    const left = new Map(expected);
    lines.forEach((line, i) => {
      const id = json[i].flow_id;
      const at = line.indexOf(json[i].owner ? " owner:" : " packets:");
      const flow = line.slice(0, at);
      assert.ok(left.has(flow), `line ${i + 1}, ${line}, is no flow of the table`);
      const owner = left.get(flow)!;
      left.delete(flow);
      // A CPU without packets adds nothing.
      const per = (stats.get(id) ?? []).filter((s) => s.packets);
      const sum = (k: "packets" | "bytes") => per.reduce((n, s) => n + s[k], 0n);
      const flags = per.reduce((n, s) => n | s.tcp_flags, 0);
      assertEquals(
        line.slice(at),
        `${owner ? ` owner:${owner}` : ""} packets:${sum("packets")} bytes:${sum("bytes")} ` +
          `used:never flags:${flags ? tcpFlags(flags) : "none"}`,
        `line ${i + 1}`,
      );
    });
    assertEquals(left.size, 0);

    // The library's plain path: a new object per flow, from a generator.
    await lab.datapath(a, (dp) => {
      const plain = [...dp.eachFlow({}, { counters: true })].map((f) => dumpLine(dp, f, 0n));
      assertEquals(plain, lines);
    });
    // A filter selects through the same columns.
    const fleetLines = (await warrenOk(a, ["flow", "dump", "--owner", "fleet"])).split("\n");
    fleetLines.pop();
    assertEquals(fleetLines, lines.filter((l) => l.includes(" owner:fleet ")));
  },
);
