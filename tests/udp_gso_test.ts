/**
 * UDP GSO over every tunnel kind: a workload sends 2 and then 8 datagrams
 * in one `UDP_SEGMENT` send, which leaves its stack as one GSO packet, and
 * every datagram arrives at the far workload byte for byte, however warren
 * sent it: encapsulated in place (VXLAN, Geneve, GRE), whole through the
 * kernel's vxlan device (VXLAN with checksums), or cut into its datagrams
 * in BPF (Geneve with checksums, GRE with sequence numbers, and STT over
 * IPv4 and IPv6, whose header has no way to ask a receiver for datagrams).
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { nonZeroStats, tunnelBothWays } from "./helpers/lab.ts";
import { burstPayload, udpDatagrams } from "./helpers/traffic.ts";

/** Datagram payload bytes: with the workloads' MTU, room for every tunnel's overhead. */
const SIZE = 1000;

/** One tunnel configuration and the GSO counter its bursts must move at A. */
interface Case {
  proto: string;
  tunnel?: Record<string, string>;
  /**
   * Its outer checksum counts the inner one, which a veth leaves partial,
   * as filled in (local checksum offload): B's XDP, reading the bytes as
   * they stand, cannot verify it and leaves the frame to TC.
   */
  lco?: boolean;
  /** Over an IPv6 underlay. */
  v6?: boolean;
  counter?: "gso_device" | "gso_segmented";
}

const CASES: Case[] = [
  { proto: "vxlan" },
  { proto: "vxlan", tunnel: { csum: "true" }, lco: true, counter: "gso_device" },
  { proto: "geneve" },
  { proto: "geneve", tunnel: { csum: "true" }, lco: true, counter: "gso_segmented" },
  { proto: "gre" },
  { proto: "gre", tunnel: { seq: "true" }, counter: "gso_segmented" },
  { proto: "stt", counter: "gso_segmented" },
  { proto: "stt", v6: true, counter: "gso_segmented" },
];

for (const c of CASES) {
  const name = `${c.proto}${c.tunnel ? ` ${JSON.stringify(c.tunnel)}` : ""}${
    c.v6 ? ", IPv6 underlay" : ""
  }`;
  privilegedTest(`${name}: UDP GSO bursts of 2 and 8 datagrams arrive byte for byte`, async () => {
    await using lab = await Lab.create({ workloadMtu: 1400, ipv6: c.v6 ?? false });
    const remote = (h: LabHost) => c.v6 ? lab.peer(h).ip6 : lab.peer(h).ip;
    // Segments sent as clones cannot wait for neighbour resolution.
    await lab.hosts[0].ns.run(["ping", "-c", "1", "-W", "2", remote(lab.hosts[0])]);
    await tunnelBothWays(lab, c.proto, c.tunnel, remote);
    const [a, b] = lab.hosts;
    const before = await lab.datapath(a, nonZeroStats);
    const beforeB = await lab.datapath(b, nonZeroStats);
    for (const count of [2, 8]) {
      const got = await udpDatagrams(a.workload, b.workload, count, SIZE, { gso: true });
      const want = Array.from({ length: count }, (_, i) => burstPayload(i, SIZE));
      assertEquals(got.toSorted(), want.toSorted(), `${count} datagrams`);
    }
    const after = await lab.datapath(a, nonZeroStats);
    const moved = (k: string) => (after[k] ?? 0) - (before[k] ?? 0);
    assertEquals(
      Object.keys(after).filter((k) => k.startsWith("drop_") && moved(k)),
      [],
      JSON.stringify(after),
    );
    // One GSO packet per burst, each gone the way its tunnel needs.
    for (const k of ["gso_device", "gso_segmented"]) {
      assertEquals(moved(k), k === c.counter ? 2 : 0, `${k}: ${JSON.stringify(after)}`);
    }
    // B's XDP decapsulated every frame: each outer checksum (STT's TCP
    // one always) held as the bytes stand; a wrong one would have gone on
    // to TC, which trusts a veth's partial checksums, and counted there.
    if (!c.lco) {
      const afterB = await lab.datapath(b, nonZeroStats);
      const movedB = (k: string) => (afterB[k] ?? 0) - (beforeB[k] ?? 0);
      assertEquals(movedB("tc_decap"), 0, JSON.stringify(afterB));
      // The datagrams, and what neighbour discovery sent along.
      assert.ok(movedB("xdp_pass") + movedB("xdp_redirect") >= 10, JSON.stringify(afterB));
    }
  });
}
