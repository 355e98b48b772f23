/**
 * Tunnels over an underlay that completes checksums before the wire, as a
 * NIC does: the sending host's underlay veth has TX checksum offload off
 * (before `up`, which asks), so validate_xmit_skb fills in a
 * CHECKSUM_PARTIAL checksum in software before the veth passes the frame
 * on (a plain veth passes it with only its pseudo-header seed, which every
 * other test sees). A workload's TCP and UDP segments are
 * CHECKSUM_PARTIAL; a ping is not. STT's one-segment frames and UDP GSO
 * datagrams then go with the inner checksum complete, and its segmented
 * TCP GSO frames have the device fill in each segment's TCP checksum.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { nonZeroStats, tunnelBothWays } from "./helpers/lab.ts";
import { burstPayload, tcpTransfer, udpDatagrams } from "./helpers/traffic.ts";

/** Datagram payload bytes: with the workloads' MTU, room for every tunnel's overhead. */
const SIZE = 1000;

/** One tunnel configuration, over an IPv4 underlay unless v6. */
interface Case {
  proto: string;
  tunnel?: Record<string, string>;
  /**
   * An IPv6 underlay: the frame's TCP header (IPv4) then sits 20 bytes
   * before the outer one, so STT's segments of a TCP GSO frame move where
   * the device fills in a checksum.
   */
  v6?: boolean;
}

const CASES: Case[] = [
  { proto: "vxlan", tunnel: { csum: "true" } },
  { proto: "geneve", tunnel: { csum: "true" } },
  { proto: "stt" },
  { proto: "stt", v6: true },
];

for (const c of CASES) {
  const name = `${c.proto}${c.tunnel ? ` ${JSON.stringify(c.tunnel)}` : ""}${
    c.v6 ? " over IPv6" : ""
  }`;
  privilegedTest(
    `${name}, sender's underlay completes checksums: TCP, UDP and UDP GSO arrive intact`,
    async () => {
      await using lab = await Lab.create({ workloadMtu: 1400, ipv6: c.v6 ?? false });
      const remote = (h: LabHost) => c.v6 ? lab.peer(h).ip6 : lab.peer(h).ip;
      await lab.hosts[0].ns.run(["ping", "-c", "1", "-W", "2", remote(lab.hosts[0])]);
      const [a, b] = lab.hosts;
      await a.ns.run(["ethtool", "-K", a.underlay, "tx", "off"]);
      await tunnelBothWays(lab, c.proto, c.tunnel, remote);
      // up asked each underlay: A's fills in checksums, B's veth passes them on.
      assert.ok(await lab.datapath(a, (dp) => dp.status().underlay.completesChecksums));
      assert.ok(!await lab.datapath(b, (dp) => dp.status().underlay.completesChecksums));
      const before = await lab.datapath(b, nonZeroStats);
      for (const count of [1, 8]) {
        const got = await udpDatagrams(a.workload, b.workload, count, SIZE, { gso: count > 1 });
        const want = Array.from({ length: count }, (_, i) => burstPayload(i, SIZE));
        assertEquals(got.toSorted(), want.toSorted(), `${count} datagrams`);
      }
      const t = await tcpTransfer(a.workload, b.workload, 2 << 20);
      assertEquals(t.received, t.sent);
      const after = await lab.datapath(b, nonZeroStats);
      const moved = (k: string) => (after[k] ?? 0) - (before[k] ?? 0);
      assertEquals(
        Object.keys(after).filter((k) => k.startsWith("drop_") && moved(k)),
        [],
        JSON.stringify(after),
      );
      // A's outer checksums, summed for the inner ones as the device left
      // them (or, for STT's segments of a TCP GSO frame, filled in by the
      // device), hold as the bytes stand: B's XDP took every frame (STT's
      // frames of several segments are counted when reassembled), none
      // fell back to TC.
      assertEquals(moved("tc_decap"), 0, JSON.stringify(after));
      assert.ok(
        moved("xdp_pass") + moved("xdp_redirect") + moved("stt_reassembled") > 100,
        JSON.stringify(after),
      );
    },
  );
}
