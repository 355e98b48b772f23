/**
 * The flow key the datapath's frame parser (parse_frame in
 * bpf/include/parse.h) extracts equals the one the TypeScript side works
 * with. Each generated packet is built by src/tunnel/packet.ts from the
 * match that describes it (what `warren trace` sends), read back by
 * frameKey (the key trace looks the flow up with), and run through the
 * parser at XDP and at TC by test-run; the three keys must be the match's
 * key, member for member. Every frame field of the field table must have
 * been exercised under every prerequisite it allows, so a field the flow
 * language accepts but the datapath does not extract fails here.
 */
import fc from "fast-check";
import { assertEquals } from "./helpers/assert.ts";
import { BpfObject, testRun } from "../src/bpf/mod.ts";
import { type FlowKey, flowKeyCodec, TypedMap, u32 } from "../src/maps/mod.ts";
import { emptyKey } from "../src/tunnel/match.ts";
import { buildPacket, frameKey } from "../src/tunnel/packet.ts";
import { FLOW_KEY_PROBE_OBJECT } from "./helpers/objects.ts";
import { arbPacket, keyDifference, packetMatch, unexercisedFields } from "./helpers/packet_keys.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { toHex } from "./helpers/scapy.ts";

const XDP_PASS = 2;
const TC_ACT_OK = 0;

privilegedTest("the kernel's parser extracts every match field as trace computes it", () => {
  using obj = BpfObject.openMemory(FLOW_KEY_PROBE_OBJECT, "flow_key_probe");
  obj.load();
  using xdp = obj.program("xdp_probe");
  using tc = obj.program("tc_probe");
  using extracted = new TypedMap(obj.map("probe_key"), u32, flowKeyCodec);
  const keys: FlowKey[] = [];
  fc.assert(
    fc.property(arbPacket, (p) => {
      const m = packetMatch(p);
      const frame = buildPacket(m);
      const ts = emptyKey();
      frameKey(frame, ts);
      const differs = (who: string, key: FlowKey) => {
        const d = keyDifference(m.key, key);
        if (d) throw new Error(`${who}: ${d}\n  frame ${toHex(frame)}`);
      };
      differs("frameKey", ts);
      for (const [prog, ok] of [[xdp, XDP_PASS], [tc, TC_ACT_OK]] as const) {
        assertEquals(testRun(prog, { data: frame }).retval, ok, `${prog.name} refused the frame`);
        differs(prog.name, extracted.get(0)!);
      }
      keys.push(m.key);
    }),
    { numRuns: 2000 },
  );
  assertEquals(unexercisedFields(keys), []);
});
