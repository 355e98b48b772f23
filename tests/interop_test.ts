/**
 * Interop: warren on host A against the kernel's own vxlan device on host
 * B (plain at its defaults, over IPv4 and IPv6, and `external` with
 * metadata), and tshark decoding the Geneve and GRE frames warren emits
 * (this kernel has no geneve or gre module to peer with).
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { attachTc, BpfObject, detachTc, ifindex } from "../src/bpf/mod.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { run } from "../src/lab/run.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { addFlows, upWithPorts } from "./helpers/lab.ts";
import { KERNEL_PEER_OBJECT } from "./helpers/objects.ts";
import { scapyScript } from "./helpers/scapy.ts";
import { bothWays, ping, tcpdump, tcpTransfer, udpCsumErrors } from "./helpers/traffic.ts";

/** Host A runs warren with a VXLAN tunnel to `dst`; B is left to the kernel. */
async function warrenOnA(
  lab: Lab,
  proto: string,
  dst: string,
  tunnel: Record<string, string> = {},
  extra = "",
) {
  const [a] = lab.hosts;
  await upWithPorts(lab, a, proto, tunnel);
  await lab.datapath(a, async (dp) => {
    await addFlows(
      dp,
      `in_port=web actions=set_tunnel(id=42,dst=${dst}${extra}),output:t0`,
      "tun_id=42,in_port=t0 actions=output:web",
    );
  });
}

/** A kernel vxlan device on `b`, bridged with its workload's port. */
async function kernelVxlan(b: LabHost, args: string): Promise<void> {
  await b.ns.sh(`
    ip link add vx42 type vxlan ${args}
    ip link add br0 type bridge
    ip link set wl0 master br0
    ip link set vx42 master br0
    ip link set vx42 up
    ip link set br0 up`);
}

for (const v6 of [false, true]) {
  privilegedTest(
    `warren VXLAN and the kernel's vxlan device at its defaults over IPv${
      v6 ? 6 : 4
    }: GSO on, both ways, no checksum error`,
    async () => {
      await using lab = await Lab.create({ workloadMtu: 1380 });
      const [a, b] = lab.hosts;
      await warrenOnA(lab, "vxlan", v6 ? b.ip6 : b.ip);
      // The kernel's defaults, which over IPv6 drop frames without a UDP
      // checksum (udp6zerocsumrx off): warren checksums them by default.
      await kernelVxlan(
        b,
        v6
          ? `id 42 local ${b.ip6} remote ${a.ip6} dstport 4789 dev u0`
          : `id 42 local ${b.ip} remote ${a.ip} dstport 4789 dev u0`,
      );
      assert.match(await b.ns.run(["ip", "-d", "link", "show", "vx42"]), / noudp6zerocsumrx /);
      for (const w of [a.workload, b.workload]) {
        assert.match(await w.ns.run(["ethtool", "-k", w.dev]), /^tcp-segmentation-offload: on/m);
      }
      await bothWays(a.workload, b.workload, [56, 1600, 3200], 20 << 20);
      assertEquals(await udpCsumErrors(b.ns), { UdpInCsumErrors: 0, Udp6InCsumErrors: 0 });
    },
  );
}

privilegedTest(
  "warren VXLAN talks to a kernel vxlan device in external (metadata) mode",
  async () => {
    await using lab = await Lab.create({ workloadMtu: 1400, ipv6: false });
    const [a, b] = lab.hosts;
    await warrenOnA(lab, "vxlan", b.ip);
    await b.ns.sh("ip link add vxe type vxlan external dstport 4789 && ip link set vxe up");
    using obj = BpfObject.openMemory(KERNEL_PEER_OBJECT, "kernel_peer");
    obj.load();
    using toTunnel = obj.program("to_tunnel");
    using fromTunnel = obj.program("from_tunnel");
    using config = obj.map("peer_config");
    using received = obj.map("peer_received");
    const leave = b.ns.enter();
    let attachments;
    try {
      const cfg = new DataView(new ArrayBuffer(16));
      cfg.setUint32(0, ifindex("vxe"), true);
      cfg.setUint32(4, ifindex("wl0"), true);
      cfg.setUint32(8, 0xc0000201, true); // 192.0.2.1, host order
      cfg.setUint32(12, 42, true);
      config.update(new Uint8Array(4), new Uint8Array(cfg.buffer));
      attachments = [
        attachTc(toTunnel, ifindex("wl0"), "ingress"),
        attachTc(fromTunnel, ifindex("vxe"), "ingress"),
      ];
    } finally {
      leave();
    }
    try {
      const there = await ping(a.workload, b.workload.ip, { count: 3 });
      assertEquals(there.received, 3, there.output);
      const t = await tcpTransfer(b.workload, a.workload, 4 << 20);
      assertEquals(t.received, t.sent);
      const n = new DataView(received.lookup(new Uint8Array(4))!.buffer).getBigUint64(0, true);
      assert.ok(n >= 3n, `the kernel device delivered ${n} frames with key 42`);
    } finally {
      await b.ns.within(() =>
        attachments.forEach((x) => x.kind === "tcx" ? x.link.close() : detachTc(x))
      );
    }
  },
);

/**
 * Captures `count` frames on B's underlay while A's workload sends to B's:
 * pings, unless `send` says otherwise. Returns the pcap's path.
 */
async function capture(
  lab: Lab,
  filter: string,
  count: number,
  send: () => Promise<unknown> = () =>
    ping(lab.hosts[0].workload, lab.hosts[1].workload.ip, { count }),
): Promise<string> {
  const [a, b] = lab.hosts;
  const pcap = await Deno.makeTempFile({ suffix: ".pcap" });
  // No warren on B answers ARP: tell A's workload B's MAC, so it pings.
  await a.workload.ns.run([
    "ip",
    "neigh",
    "replace",
    b.workload.ip,
    "lladdr",
    b.workload.mac,
    "dev",
    a.workload.dev,
  ]);
  const dump = await tcpdump(b.ns.name, { dev: "u0", filter, count, file: pcap });
  // No warren on B: nobody answers; the requests are all we need.
  await send();
  await dump.status;
  return pcap;
}

async function tsharkFields(pcap: string, filter: string, fields: string[]): Promise<string[][]> {
  const out = await run([
    "tshark",
    "-r",
    pcap,
    "-Y",
    filter,
    "-T",
    "fields",
    "-E",
    "separator=|",
    ...fields.flatMap((f) => ["-e", f]),
  ]);
  return out.trim().split("\n").filter(Boolean).map((l) => l.split("|"));
}

privilegedTest(
  "tshark decodes warren's Geneve frames: VNI, options, flags, inner packet",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a, b] = lab.hosts;
    await warrenOnA(
      lab,
      "geneve",
      b.ip,
      {},
      ",geneve=0x0102:0x80:0xdeadbeef,geneve=0xffff:0x01:0x0102030405060708",
    );
    const pcap = await capture(lab, "udp port 6081", 3);
    try {
      const rows = await tsharkFields(pcap, "geneve", [
        "geneve.version",
        "geneve.vni",
        "geneve.flags.critical",
        "geneve.flags.oam",
        "geneve.proto_type",
        "geneve.option.class",
        "geneve.option.type",
        "geneve.option.length",
        "ip.src",
        "ip.dst",
        "icmp.type",
        "_ws.expert.severity",
      ]);
      assert.ok(rows.length >= 2, `tshark saw ${rows.length} Geneve frames`);
      for (
        const [version, vni, critical, oam, proto, cls, type, len, src, dst, icmp, expert] of rows
      ) {
        assertEquals([version, Number(vni), critical, oam, proto], ["0", 42, "1", "0", "0x6558"]);
        // The length field appears for the whole options block (20) first.
        assertEquals([cls, type, len.split(",").slice(-2).join(",")], [
          "0x0102,0xffff",
          "0x80,0x01",
          "8,12",
        ]);
        assertEquals([src, dst, icmp], [`${a.ip},10.1.0.1`, `${b.ip},10.1.0.2`, "8"]);
        assertEquals(expert, "", "no expert warnings");
      }
    } finally {
      await Deno.remove(pcap);
    }
  },
);

privilegedTest("tshark decodes warren's GRE frames: key, protocol, inner packet", async () => {
  await using lab = await Lab.create({ ipv6: false });
  const [a, b] = lab.hosts;
  await warrenOnA(lab, "gre", b.ip);
  const pcap = await capture(lab, "proto gre", 3);
  try {
    const rows = await tsharkFields(pcap, "gre", [
      "gre.flags.key",
      "gre.flags.checksum",
      "gre.flags.version",
      "gre.key",
      "gre.proto",
      "ip.src",
      "ip.dst",
      "icmp.type",
    ]);
    assert.ok(rows.length >= 2, `tshark saw ${rows.length} GRE frames`);
    for (const row of rows) {
      assertEquals(row, [
        "1",
        "0",
        "0",
        "0x0000002a",
        "0x6558",
        `${a.ip},10.1.0.1`,
        `${b.ip},10.1.0.2`,
        "8",
      ]);
    }
  } finally {
    await Deno.remove(pcap);
  }
});

privilegedTest(
  "outer checksums over offloaded inner checksums are right once the inner is filled in",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a, b] = lab.hosts;
    await warrenOnA(lab, "vxlan", b.ip, { csum: "true" });
    // A SYN from a local socket: its TCP checksum is left to the "device"
    // (CHECKSUM_PARTIAL); nobody answers, and that is fine.
    const pcap = await capture(lab, "udp port 4789", 2, () =>
      a.workload.ns.runRaw([
        "timeout",
        "3",
        "socat",
        "-u",
        "OPEN:/dev/null",
        `TCP:${b.workload.ip}:5009,connect-timeout=2`,
      ]));
    try {
      const verdict = await scapyScript(`
pkts = rdpcap("${pcap}")
for p in pkts:
    inner = Ether(bytes(p[VXLAN].payload))
    sent_tcp = inner[TCP].chksum
    del inner[TCP].chksum
    done = Ether(bytes(inner))
    o = p.copy()
    o[VXLAN].remove_payload()
    o = Ether(bytes(o / done))
    want = o[UDP].chksum
    del o[UDP].chksum
    o = Ether(bytes(o))
    print(sent_tcp != done[TCP].chksum, want == o[UDP].chksum, want != 0)
`);
      const lines = verdict.trim().split("\n");
      assert.ok(lines.length >= 1, "captured the SYN");
      // The TCP checksum on the wire was not final, and warren's outer UDP
      // checksum is right for the packet once it is.
      for (const line of lines) assertEquals(line, "True True True");
    } finally {
      await Deno.remove(pcap);
    }
  },
);
