/**
 * Trace's packets, without root: every frame src/tunnel/packet.ts builds
 * from a match carries exactly that match's key, read back by frameKey and
 * by Scapy, an independent decoder; Scapy rebuilds it byte for byte after
 * forgetting every length and checksum, so those are right too.
 */
import fc from "fast-check";
import { assertEquals } from "./helpers/assert.ts";
import { emptyKey } from "../src/tunnel/match.ts";
import { buildPacket, frameKey } from "../src/tunnel/packet.ts";
import { arbPacket, keyDifference, packetMatch, scapyKeys } from "./helpers/packet_keys.ts";
import { toHex } from "./helpers/scapy.ts";

/** Packets and payload lengths: odd ones test checksums and SCTP's padding. */
const arbCase = fc.tuple(arbPacket, fc.integer({ min: 0, max: 80 }));

Deno.test("frameKey reads back the key of every frame buildPacket builds", () => {
  fc.assert(fc.property(arbCase, ([p, payload]) => {
    const m = packetMatch(p);
    const frame = buildPacket(m, { payload });
    const key = emptyKey();
    frameKey(frame, key);
    assertEquals(keyDifference(m.key, key), undefined, `frame ${toHex(frame)}`);
  }));
});

Deno.test("Scapy reads every frame buildPacket builds as its match says, byte for byte", async () => {
  const seed = Number(Deno.env.get("WARREN_PACKET_SEED") ?? Date.now() % 2 ** 31);
  const cases = fc.sample(arbCase, { numRuns: 500, seed }).map(([p, payload]) => {
    const m = packetMatch(p);
    return { m, frame: buildPacket(m, { payload }) };
  });
  const readings = await scapyKeys(cases.map((c) => c.frame));
  cases.forEach(({ m, frame }, i) => {
    const where = `(WARREN_PACKET_SEED=${seed}, case ${i}) frame ${toHex(frame)}`;
    assertEquals(keyDifference(m.key, readings[i].key), undefined, `Scapy reads ${where}`);
    assertEquals(toHex(readings[i].rebuilt), toHex(frame), `Scapy rebuilds ${where}`);
  });
});
