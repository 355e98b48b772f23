/**
 * The fast path's shortcuts keep every promise the slow path made: the
 * coarse clock of a flow's last use.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { coarseNs, coarseResolutionNs } from "../src/bpf/clock.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { scapy } from "./helpers/scapy.ts";
import { addFlows, oneHost, runPinned, TC_ACT_SHOT } from "./helpers/lab.ts";

/** A frame from the workload, UDP to `dport`. */
const fromWorkload = (dport = 9) =>
  scapy(`Ether(src='02:00:00:00:00:0a')/IP(src='10.1.0.1',dst='10.1.0.2')/UDP(dport=${dport})`);

privilegedTest(
  "a flow's last use is the coarse clock at the packet, as user space reads it",
  async () => {
    await using lab = await oneHost();
    const [a] = lab.hosts;
    await lab.datapath(a, (dp) => addFlows(dp, "in_port=web actions=drop"));
    const frame = await fromWorkload();
    const used = async () =>
      await lab.datapath(a, (dp) => dp.dumpFlows({}, { counters: true })[0].counters!.usedNs);
    for (let i = 0; i < 3; i++) {
      const before = coarseNs();
      const r = await a.ns.within(() => runPinned(a, "wr_tc_local", frame, a.workload.port));
      const after = coarseNs();
      assertEquals(r.retval, TC_ACT_SHOT);
      // The same clock on both sides: the stamp lies between the two reads.
      const stamp = await used();
      assert.ok(before <= stamp && stamp <= after, `${before} <= ${stamp} <= ${after}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    // One tick: at most 10 ms (HZ=100), at least 1 ms (HZ=1000).
    const res = coarseResolutionNs();
    assert.ok(res >= 1_000_000n && res <= 10_000_000n, `resolution ${res} ns`);
  },
);
