/**
 * Packets for `warren trace`: built from the fields of a match (the same
 * words flows use), wrapped in a tunnel's outer headers, decoded layer by
 * layer, and read into a flow key as the datapath's parser reads them.
 * Each lives in packet/: frame.ts and ip.ts build, tunnel.ts wraps,
 * decode.ts decodes, key.ts reads the key.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { parseMatch } from "./flow_syntax.ts";
 * import { buildPacket, decodePacket } from "./packet.ts";
 *
 * const noPorts = { number: () => undefined, name: () => undefined };
 * const { match } = parseMatch("udp,nw_dst=10.1.0.1,tp_dst=53", noPorts);
 * const layers = decodePacket(buildPacket(match));
 * assert.deepEqual(layers.map((l) => l.name), ["Ethernet", "IPv4", "UDP", "Payload"]);
 * assert.equal(layers[2].fields.dport, 53);
 * ```
 *
 * @module
 */

export { type BuildOptions, buildPacket } from "./packet/frame.ts";
export { decodePacket, type Layer, tcpFlags } from "./packet/decode.ts";
export {
  encapsulate,
  type GeneveOptionBytes,
  type Outer,
  type OuterFields,
  outerFromMatch,
  tunnelKey,
} from "./packet/tunnel.ts";
export { frameKey } from "./packet/key.ts";
