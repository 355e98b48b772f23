/**
 * Tunnels over an underlay that completes checksums before the wire, as a
 * NIC does: the sending host's underlay veth has TX checksum offload off,
 * so validate_xmit_skb fills in a CHECKSUM_PARTIAL inner checksum in
 * software before the veth passes the frame on (a plain veth passes it
 * with only its pseudo-header seed, which every other test sees). A
 * workload's TCP and UDP segments are CHECKSUM_PARTIAL; a ping is not.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { addFlows, nonZeroStats, upWithPorts } from "./helpers/lab.ts";
import { burstPayload, tcpTransfer, udpDatagrams } from "./helpers/traffic.ts";

/** Datagram payload bytes: with the workloads' MTU, room for every tunnel's overhead. */
const SIZE = 1000;

/** One tunnel configuration, and whether it is set aside for a known defect. */
interface Case {
  proto: string;
  tunnel?: Record<string, string>;
  /**
   * STT: warren fills in the outer TCP checksum over the inner checksum's
   * seed, as the bytes stand when it runs, and flags the inner checksum
   * partial. The device then completes the inner checksum: the outer one
   * no longer holds (B's XDP leaves the frame to TC, whose software check
   * counts drop_bad_csum; nothing arrives, not even a TCP SYN), and the
   * partial flag is false (a receiver completing the field again would
   * write the seed back). The fix: for an underlay that completes
   * checksums (anything but a veth with TX checksum offload on, which
   * hands its peer the skb still partial), the control plane tells the
   * BPF, which then sums the outer checksum as local checksum offload
   * (the inner L4 span counts as the complement of its seed), clears
   * STT_F_CSUM_PARTIAL and the MSS, in stt_tcp_csum and in the datagram
   * path of segment_output (gso.h); stt_segment's GSO TCP frames, whose
   * clones keep the skb's csum_start, need the same care.
   */
  ignore?: boolean;
}

const CASES: Case[] = [
  { proto: "vxlan", tunnel: { csum: "true" } },
  { proto: "geneve", tunnel: { csum: "true" } },
  { proto: "stt", ignore: true },
];

for (const c of CASES) {
  const name = `${c.proto}${c.tunnel ? ` ${JSON.stringify(c.tunnel)}` : ""}`;
  privilegedTest(
    `${name}, sender's underlay completes checksums: TCP, UDP and UDP GSO arrive intact`,
    async () => {
      await using lab = await Lab.create({ workloadMtu: 1400, ipv6: false });
      await lab.hosts[0].ns.run(["ping", "-c", "1", "-W", "2", lab.peer(lab.hosts[0]).ip]);
      for (const h of lab.hosts) {
        await upWithPorts(lab, h, c.proto, c.tunnel);
        await lab.datapath(h, (dp) =>
          addFlows(
            dp,
            `in_port=web actions=set_tunnel(id=42,dst=${lab.peer(h).ip}),output:t0`,
            "tun_id=42,in_port=t0 actions=output:web",
          ));
      }
      const [a, b] = lab.hosts;
      await a.ns.run(["ethtool", "-K", a.underlay, "tx", "off"]);
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
      // them, hold as the bytes stand: B's XDP decapsulated every frame.
      assertEquals(moved("tc_decap"), 0, JSON.stringify(after));
      assert.ok(moved("xdp_pass") + moved("xdp_redirect") > 100, JSON.stringify(after));
    },
    c.ignore,
  );
}
