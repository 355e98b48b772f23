/**
 * Every frame as configured: bulk TCP and UDP with GSO on at the
 * workloads, through warren at both ends, captured on the wire. Over IPv4
 * and IPv6 underlays, every frame of a tunnel with a checksum carries a
 * right one (tshark validates each, after the inner checksums a veth
 * leaves partial are finished as a NIC would), whichever way warren sent
 * it: whole through the kernel's vxlan device, segmented in BPF, or as it
 * came; GRE with seq numbers every frame; a UDP tunnel over IPv6 checksums
 * by default; UDP GSO packets arrive; a GSO packet replicated to tunnels
 * of every kind comes out right in any order, from a flow's outputs or a
 * group's buckets; a tagged workload's GSO packets, the tag in the skb's
 * metadata, carry it inside every frame. Each test builds its lab once and changes tunnels and
 * flows between steps.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab, type LabHost, type Workload } from "../src/lab/topology.ts";
import type { Netns } from "../src/lab/netns.ts";
import { attachTc, BpfObject, detachTc, ifindex, type TcAttachment } from "../src/bpf/mod.ts";
import { VLAN_TAGGER_OBJECT } from "./helpers/objects.ts";
import { parseFlow } from "../src/tunnel/flow_syntax.ts";
import { parseGroup } from "../src/tunnel/group_syntax.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { nonZeroStats } from "./helpers/lab.ts";
import { onCpu } from "../src/lab/cpu.ts";
import { checkedFields } from "./helpers/frames.ts";
import { ping, tcpdump, tcpTransfer, udpBurst } from "./helpers/traffic.ts";

const MTU = 1400;
/** Bytes of each bulk transfer: some thousand frames. */
const BULK = 4 << 20;

/**
 * Both hosts up with port web. A's underlay leaves tunnel GSO to the
 * kernel's software segmentation, as a NIC without tunnel offloads would,
 * and B takes tunnel packets at TC, after its capture taps, not at XDP,
 * before them: a capture on B's underlay then sees every frame both ways
 * as it went on the wire.
 */
async function rig(): Promise<Lab> {
  const lab = await Lab.create({ workloadMtu: MTU });
  try {
    for (const h of lab.hosts) {
      await lab.up(h, { xdp: "off" });
      await lab.datapath(h, (dp) => dp.addLocalPort("web", h.workload.port));
    }
    await lab.hosts[0].ns.run([
      ...["ethtool", "-K", "u0", "tx-udp_tnl-segmentation", "off"],
      ...["tx-udp_tnl-csum-segmentation", "off", "tx-gre-segmentation", "off"],
      ...["tx-gre-csum-segmentation", "off"],
    ]);
    for (const h of lab.hosts) {
      // The workloads hand warren GSO packets, and nothing of their own
      // (IPv6 chatter, ARP refreshes) races the frames a test counts.
      const w = h.workload, peer = lab.peer(h).workload;
      const features = await w.ns.run(["ethtool", "-k", w.dev]);
      assert.match(features, /^tcp-segmentation-offload: on/m);
      await w.ns.sh(`
        sysctl -qw net.ipv6.conf.all.disable_ipv6=1
        ip neigh replace ${peer.ip} lladdr ${peer.mac} dev ${w.dev} nud permanent`);
    }
    return lab;
  } catch (err) {
    await lab[Symbol.asyncDispose]();
    throw err;
  }
}

/** A tunnel port of a test: its protocol and options. */
interface Tunnel {
  name: string;
  proto: "vxlan" | "geneve" | "gre";
  options: Record<string, string>;
}

/**
 * Makes `tunnels` the tunnel ports of `host` (with remote and key from the
 * flows) and `flows` its flows, exactly.
 */
async function configure(lab: Lab, host: LabHost, tunnels: Tunnel[], flows: string[]) {
  await lab.datapath(host, async (dp) => {
    for (const t of tunnels) {
      await dp.upsertPort({
        kind: "tunnel",
        name: t.name,
        proto: t.proto,
        options: { remote_ip: "flow", key: "flow", ...t.options },
      });
    }
    await dp.applyFlows(flows.map((f) => parseFlow(f, dp.portNames())));
  });
}

/** A's warren counters. */
function counters(lab: Lab): Promise<Record<string, number>> {
  return lab.datapath(lab.hosts[0], nonZeroStats);
}

/** How much each counter moved from `before` to `after`. */
function changes(before: Record<string, number>, after: Record<string, number>) {
  const out: Record<string, number> = { gso_device: 0, gso_segmented: 0 };
  for (const [k, v] of Object.entries(after)) out[k] = v - (before[k] ?? 0);
  return out;
}

/** The drop counters among `delta` that moved. */
function drops(delta: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(delta).filter(([k, v]) => k.startsWith("drop_") && v));
}

/**
 * Captures every tunnel frame on B's underlay while A's workload (`from`)
 * sends BULK bytes of TCP and a UDP GSO packet of ten datagrams to B's
 * (`to`), sent `copies` times each; returns the pcap's path. The transfer's hashes
 * match and every datagram arrives.
 *
 * Both workloads' programs run on CPU 0, and with them (veths hand packets
 * to the backlog of the CPU that sends them) every packet of the transfer
 * both ways: GRE sequence numbers, taken by each packet as warren sends
 * it, then reach the wire in the order they were taken. Senders on two
 * CPUs would interleave them, for warren as for Linux's own GRE.
 */
async function bulk(
  lab: Lab,
  copies = 1,
  [from, to]: Workload[] = lab.hosts.map((h) => h.workload),
): Promise<string> {
  const b = lab.hosts[1];
  const pcap = await Deno.makeTempFile({ suffix: ".pcap" });
  const dump = await tcpdump(b.ns.name, {
    dev: "u0",
    filter: "udp port 4789 or udp port 6081 or ip proto 47 or ip6 proto 47",
    file: pcap,
    timeout: 120,
    bufferKiB: 65536,
    // Wire frames whole, and room for every one of a burst.
    snaplen: 2048,
  });
  try {
    // tcpdump says nothing when it starts capturing: ping through the
    // tunnel until a frame is in the file.
    for (let i = 0; (await Deno.stat(pcap)).size <= 24; i++) {
      if (i === 50) throw new Error("tcpdump captures nothing");
      await ping(from, to.ip, { count: 1 });
    }
    await onCpu(0, async () => {
      const t = await tcpTransfer(from, to, BULK);
      assertEquals(t.received, t.sent);
      const datagrams = await udpBurst(from, to, 10, 1000, { gso: true });
      assertEquals(datagrams, 10 * copies);
    });
    // On a busy machine tcpdump lags behind; what it has not written when
    // it is stopped is lost. Wait until the file stops growing.
    for (let size = -1; size !== (await Deno.stat(pcap)).size;) {
      size = (await Deno.stat(pcap)).size;
      await new Promise((r) => setTimeout(r, 500));
    }
  } finally {
    dump.kill("SIGINT");
    await dump.status;
  }
  return pcap;
}

/** What the frames of one tunnel must show. */
interface Want {
  /** Outer UDP port (VXLAN, Geneve) or 0 (GRE). */
  dport: number;
  /** Every frame has a right outer checksum; else none has one. */
  csum: boolean;
  /** GRE sequence numbers strictly increase in each direction. */
  seq?: boolean;
}

const FIELDS = [
  "ip.src",
  "ipv6.src",
  "udp.dstport",
  "udp.srcport",
  "udp.checksum.status",
  "gre.checksum.status",
  "gre.sequence_number",
  "tcp.checksum.status",
  "vlan.id",
  "frame.len",
] as const;
type Row = Record<typeof FIELDS[number], string>;

/** The tunnel frames of `pcap`, checked and decoded by tshark. */
async function frames(pcap: string): Promise<Row[]> {
  try {
    const rows = await checkedFields(pcap, [...FIELDS]);
    return rows.map((r) => Object.fromEntries(FIELDS.map((f, i) => [f, r[i] ?? ""])) as Row);
  } finally {
    await Deno.remove(pcap);
  }
}

/** How many of `xs` take each value. */
function tally(xs: string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}

/**
 * Checks the frames one host sent over one tunnel (at least `least`):
 * every one a wire frame, its outer checksum as `want` says, its inner TCP
 * checksum right, its GRE sequence number above the one before.
 */
function checkSent(sent: Row[], want: Want, what: string, least: number): void {
  assert.ok(sent.length >= least, `${what}: only ${sent.length} frames`);
  assert.ok(Math.max(...sent.map((r) => Number(r["frame.len"]))) <= 1514, `${what}: a GSO packet`);
  // tshark: 1 good, 0 bad, 3 not present (UDP's zero); GRE's is absent without the C bit.
  const outer = sent.map((r) => want.dport ? r["udp.checksum.status"] : r["gre.checksum.status"]);
  assertEquals(tally(outer), { [want.csum ? "1" : want.dport ? "3" : ""]: sent.length }, what);
  const inner = sent.flatMap((r) => r["tcp.checksum.status"] ? [r["tcp.checksum.status"]] : []);
  assertEquals(tally(inner), { "1": inner.length }, what);
  if (want.seq) {
    const seqs = sent.map((r) => Number(r["gre.sequence_number"]));
    const back = seqs.findIndex((s, i) => i > 0 && s <= seqs[i - 1]);
    assertEquals(back, -1, `${what}: sequence number ${seqs[back]} after ${seqs[back - 1]}`);
  }
}

/** The frames of `rows` whose outer source is `host` on the underlay family `v6`. */
function sentBy(rows: Row[], host: LabHost, v6: boolean): Row[] {
  return rows.filter((r) => (v6 ? r["ipv6.src"] : r["ip.src"]) === (v6 ? host.ip6 : host.ip));
}

/**
 * Checks the frames of one tunnel both ways, on the underlay family `v6`:
 * A's bulk transfer and B's acknowledgements; and that A's TCP flow kept
 * one outer source port, whichever way its frames left.
 */
function check(lab: Lab, rows: Row[], v6: boolean, want: Want): void {
  const [a, b] = lab.hosts;
  checkSent(sentBy(rows, a, v6), want, "frames from A", BULK / MTU);
  checkSent(sentBy(rows, b, v6), want, "frames from B", 100);
  if (want.dport) {
    const tcp = sentBy(rows, a, v6).filter((r) => r["tcp.checksum.status"]);
    assertEquals(new Set(tcp.map((r) => r["udp.srcport"])).size, 1, "source ports of one flow");
  }
}

/** One step of the first test: a tunnel, an underlay family, what its frames show. */
interface Case {
  name: string;
  tunnel: Tunnel;
  v6: boolean;
  want: Want;
  /** Which way A's GSO packets must have left. */
  path: "device" | "segmented" | "whole";
  /** More set_tunnel fields on A's flow. */
  extra?: string;
  /** Take the port's kernel vxlan device away, so that warren segments instead. */
  noDevice?: boolean;
}

const CASES: Case[] = [false, true].flatMap((v6): Case[] => {
  const ip = `over IPv${v6 ? 6 : 4}`;
  return [
    {
      name: `VXLAN at its defaults ${ip}: ${
        v6 ? "checksums, through the kernel's device" : "no checksum, GSO packets whole"
      }`,
      tunnel: { name: "t0", proto: "vxlan", options: {} },
      v6,
      want: { dport: 4789, csum: v6 },
      path: v6 ? "device" : "whole",
    },
    {
      name: `VXLAN csum=true ${ip}, through the kernel's device`,
      tunnel: { name: "t0", proto: "vxlan", options: { csum: "true" } },
      v6,
      want: { dport: 4789, csum: true },
      path: "device",
    },
    {
      name: `VXLAN csum=true ${ip} without its device, segmented in BPF`,
      tunnel: { name: "t0", proto: "vxlan", options: { csum: "true" } },
      v6,
      want: { dport: 4789, csum: true },
      path: "segmented",
      noDevice: true,
    },
    {
      name: `Geneve with an option, csum=true ${ip}`,
      tunnel: { name: "t0", proto: "geneve", options: { csum: "true" } },
      v6,
      want: { dport: 6081, csum: true },
      path: "segmented",
      extra: ",geneve=0xffff:0x01:0xa1a1a1a1",
    },
    {
      name: `GRE csum=true ${ip}`,
      tunnel: { name: "t0", proto: "gre", options: { csum: "true" } },
      v6,
      want: { dport: 0, csum: true },
      path: "segmented",
    },
    {
      name: `GRE seq=true ${ip}`,
      tunnel: { name: "t0", proto: "gre", options: { seq: "true" } },
      v6,
      want: { dport: 0, csum: false, seq: true },
      path: "segmented",
    },
    {
      name: `GRE csum=true seq=true ${ip}`,
      tunnel: { name: "t0", proto: "gre", options: { csum: "true", seq: "true" } },
      v6,
      want: { dport: 0, csum: true, seq: true },
      path: "segmented",
    },
  ];
});

privilegedTest(
  "bulk TCP and UDP with GSO on: every frame on the wire carries the checksum and sequence number its tunnel asks for",
  async (t) => {
    await using lab = await rig();
    const [a] = lab.hosts;
    for (const c of CASES) {
      await t.step(c.name, async () => {
        for (const h of lab.hosts) {
          const peer = lab.peer(h);
          const dst = c.v6 ? peer.ip6 : peer.ip;
          await configure(lab, h, [c.tunnel], [
            `in_port=web actions=set_tunnel(id=42,dst=${dst}${
              h === a ? c.extra ?? "" : ""
            }),output:t0`,
            "tun_id=42,in_port=t0 actions=output:web",
          ]);
        }
        await lab.datapath(a, (dp) => {
          const n = dp.ports().find((p) => p.name === "t0")!.number;
          const entry = dp.maps.ports.get(n)!;
          // Every VXLAN port has its device; this case takes it away.
          assertEquals(entry.gso_ifindex !== 0, c.tunnel.proto === "vxlan");
          if (c.noDevice) dp.maps.ports.set(n, { ...entry, gso_ifindex: 0 });
        });
        const before = await counters(lab);
        check(lab, await frames(await bulk(lab)), c.v6, c.want);
        const delta = changes(before, await counters(lab));
        const took = { device: delta.gso_device > 0, segmented: delta.gso_segmented > 0 };
        assertEquals(took, { device: c.path === "device", segmented: c.path === "segmented" });
        assertEquals(drops(delta), {});
      });
    }
  },
);

privilegedTest(
  "a GSO packet replicated to tunnels of every kind: each copy right, whatever the order of the outputs",
  async (t) => {
    await using lab = await rig();
    const [a, b] = lab.hosts;
    const tunnels: Tunnel[] = [
      { name: "whole", proto: "geneve", options: { csum: "false" } },
      { name: "device", proto: "vxlan", options: { csum: "true" } },
      // GRE with csum, key and seq has the 50 bytes of outer header of
      // VXLAN and of Geneve without options, which frames that are no GSO
      // packets need to be replicated.
      { name: "seq", proto: "gre", options: { csum: "true", seq: "true" } },
    ];
    const tunnelWant: Record<string, Want> = {
      whole: { dport: 6081, csum: false },
      device: { dport: 4789, csum: true },
      seq: { dport: 0, csum: true, seq: true },
    };
    // B takes every copy to its workload (TCP drops the duplicates) and
    // answers through the first tunnel.
    await configure(lab, b, tunnels, [
      `in_port=web actions=set_tunnel(id=42,dst=${a.ip}),output:whole`,
      ...tunnels.map((x) => `tun_id=42,in_port=${x.name} actions=output:web`),
    ]);
    // A bulk transfer from A with `actions` on its web port: every copy of
    // every frame, each tunnel's copies checked as its own; the counters moved.
    const everyCopy = async (actions: string) => {
      await configure(lab, a, tunnels, [
        `in_port=web actions=${actions}`,
        ...tunnels.map((x) => `tun_id=42,in_port=${x.name} actions=output:web`),
      ]);
      const before = await counters(lab);
      const rows = sentBy(await frames(await bulk(lab, 3)), a, false);
      for (const [name, want] of Object.entries(tunnelWant)) {
        const copies = rows.filter((r) =>
          want.dport ? r["udp.dstport"] === String(want.dport) : r["gre.sequence_number"]
        );
        checkSent(copies, want, name, BULK / MTU);
      }
      const delta = changes(before, await counters(lab));
      assertEquals(drops(delta), {});
      return delta;
    };
    for (const order of [["whole", "seq", "device"], ["device", "seq", "whole"]]) {
      await t.step(`outputs in the order ${order.join(", ")}`, async () => {
        const delta = await everyCopy(
          `set_tunnel(id=42,dst=${b.ip}),${order.map((o) => `output:${o}`).join(",")}`,
        );
        assert.ok(delta.gso_segmented > 0 && delta.gso_device > 0, JSON.stringify(delta));
      });
    }
    // A group's buckets run in their own order: once one tunnel must
    // segment, every tunnel does, the first in place included.
    await t.step("the same outputs as a group's buckets, in place first", async () => {
      await lab.datapath(a, async (dp) => {
        const buckets = ["whole", "seq", "device"].map((o) =>
          `bucket=set_tunnel(id=42,dst=${b.ip}),output:${o}`
        );
        await dp.setGroups([parseGroup(`group_id=1,type=all,${buckets.join(",")}`)], "add");
      });
      const delta = await everyCopy("group:1");
      assert.ok(delta.gso_segmented > 0 && delta.gso_device === 0, JSON.stringify(delta));
    });
  },
);

/**
 * Runs `fn` with each workload's device tagging what it sends with VLAN 10
 * (in the skb's metadata, where warren finds the tag) and taking only
 * frames of VLAN 10 in; returns how many frames the workloads took in and
 * how many they dropped for arriving without the tag.
 */
async function withVlan(lab: Lab, fn: () => Promise<void>): Promise<[number, number]> {
  using obj = BpfObject.openMemory(VLAN_TAGGER_OBJECT, "vlan_tagger");
  obj.load();
  using tag = obj.program("tag_egress");
  using untag = obj.program("untag_ingress");
  using counts = obj.map("vlan_counts");
  const attached: { ns: Netns; at: TcAttachment }[] = [];
  try {
    for (const h of lab.hosts) {
      const w = h.workload;
      await w.ns.within(() => {
        attached.push({ ns: w.ns, at: attachTc(tag, ifindex(w.dev), "egress") });
        attached.push({ ns: w.ns, at: attachTc(untag, ifindex(w.dev), "ingress") });
      });
    }
    await fn();
  } finally {
    for (const { ns, at } of attached) {
      await ns.within(() => at.kind === "tcx" ? at.link.close() : detachTc(at));
    }
  }
  const count = (i: number) =>
    Number(new DataView(counts.lookup(new Uint8Array([i, 0, 0, 0]))!.buffer).getBigUint64(0, true));
  return [count(0), count(1)];
}

privilegedTest(
  "a tagged workload's GSO packets, the tag in the skb's metadata: every frame carries it inside, whichever way it left",
  async (t) => {
    await using lab = await rig();
    const [a] = lab.hosts;
    const cases: Omit<Case, "name">[] = [
      {
        tunnel: { name: "t0", proto: "vxlan", options: { csum: "true" } },
        v6: false,
        want: { dport: 4789, csum: true },
        path: "device",
      },
      {
        tunnel: { name: "t0", proto: "geneve", options: { csum: "true" } },
        v6: false,
        want: { dport: 6081, csum: true },
        path: "segmented",
      },
      {
        tunnel: { name: "t0", proto: "gre", options: { csum: "true", seq: "true" } },
        v6: true,
        want: { dport: 0, csum: true, seq: true },
        path: "segmented",
      },
    ];
    for (const c of cases) {
      await t.step(`${c.tunnel.proto} csum=true over IPv${c.v6 ? 6 : 4}, ${c.path}`, async () => {
        for (const h of lab.hosts) {
          const peer = lab.peer(h);
          await configure(lab, h, [c.tunnel], [
            `in_port=web actions=set_tunnel(id=42,dst=${c.v6 ? peer.ip6 : peer.ip}),output:t0`,
            "tun_id=42,in_port=t0 actions=output:web",
          ]);
        }
        const before = await counters(lab);
        let pcap = "";
        const [tagged, untagged] = await withVlan(lab, async () => {
          pcap = await bulk(lab);
        });
        assertEquals(untagged, 0, "frames that arrived without their tag");
        assert.ok(tagged >= BULK / MTU, `only ${tagged} tagged frames arrived`);
        const rows = await frames(pcap);
        check(lab, rows, c.v6, c.want);
        const sent = sentBy(rows, a, c.v6);
        assertEquals(tally(sent.map((r) => r["vlan.id"])), { "10": sent.length });
        const delta = changes(before, await counters(lab));
        const took = { device: delta.gso_device > 0, segmented: delta.gso_segmented > 0 };
        assertEquals(took, { device: c.path === "device", segmented: c.path === "segmented" });
        assertEquals(drops(delta), {});
      });
    }
  },
);
