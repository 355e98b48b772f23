/**
 * Frames for `warren trace`, built from the fields of a match (the same
 * words flows use): Ethernet with its VLAN tag, ARP, and IP through
 * ip.ts. What the match leaves out takes plain defaults.
 *
 * @module
 */

import { formatMac, parseMac } from "../../maps/codec.ts";
import { Frag } from "../../maps/layouts.ts";
import type { Match } from "../match.ts";
import { ipv4, ipv6, segment } from "./ip.ts";

/** Options of {@link buildPacket} beyond the match. */
export interface BuildOptions {
  /** Bytes of payload after the L4 header; default 32. */
  payload?: number;
}

const ETH_IP = 0x0800;
const ETH_IPV6 = 0x86dd;
const ETH_ARP = 0x0806;

/**
 * An Ethernet frame carrying what `m` matches exactly: fields it leaves
 * out take plain defaults (a locally administered MAC, TTL 64, …). Masked
 * fields use their value bits. A match on `nw_frag` gets a fragment: a
 * first one with the L4 header, or a later one of payload only.
 */
export function buildPacket(m: Match, options: BuildOptions = {}): Uint8Array {
  const k = m.key;
  const payload = new Uint8Array(options.payload ?? 32).map((_, i) => i & 0xff);
  const dst = m.mask.eth_dst.some((b) => b) ? formatMac(k.eth_dst) : "02:00:00:00:00:02";
  const src = m.mask.eth_src.some((b) => b) ? formatMac(k.eth_src) : "02:00:00:00:00:01";
  const ethType = m.mask.eth_type ? k.eth_type : ETH_IP;
  const proto = m.mask.ip_proto ? k.ip_proto : ethType === ETH_IPV6 ? 58 : 1;
  const v6 = ethType === ETH_IPV6;
  const srcIp = m.mask.ip_src.some((b) => b) ? k.ip_src : defaultAddr(v6, 1);
  const dstIp = m.mask.ip_dst.some((b) => b) ? k.ip_dst : defaultAddr(v6, 2);
  const icmp = proto === 1 || proto === 58;
  const tpSrc = m.mask.tp_src ? k.tp_src : icmp ? (v6 ? 128 : 8) : 40000;
  const tpDst = m.mask.tp_dst ? k.tp_dst : icmp ? 0 : 80;

  let l3: number[];
  if (ethType === ETH_ARP) {
    const op = m.mask.ip_proto ? k.ip_proto : 1;
    l3 = [
      ...[0, 1, 8, 0, 6, 4, 0, op],
      ...parseMac(src),
      ...srcIp.subarray(0, 4),
      ...[0, 0, 0, 0, 0, 0],
      ...dstIp.subarray(0, 4),
    ];
  } else if (ethType === ETH_IP || ethType === ETH_IPV6) {
    const frag = m.mask.ip_frag ? k.ip_frag & Frag.LATER : Frag.NONE;
    const seg = frag === Frag.LATER
      ? payload
      : segment(proto, tpSrc, tpDst, srcIp, dstIp, v6, payload);
    const tos = m.mask.ip_tos ? k.ip_tos : 0;
    l3 = v6 ? ipv6(tos, proto, srcIp, dstIp, frag, seg) : ipv4(tos, proto, srcIp, dstIp, frag, seg);
  } else {
    l3 = [...payload];
  }
  // Any TCI bit the match wants set takes a tag (0x1000 is "tagged" in a
  // key, the DEI bit in a tag, which warren's keys do not carry).
  const vlan = k.vlan_tci & m.mask.vlan_tci
    ? [0x81, 0x00, (k.vlan_tci >> 8) & 0xef, k.vlan_tci & 0xff]
    : [];
  return new Uint8Array([
    ...parseMac(dst),
    ...parseMac(src),
    ...vlan,
    ethType >> 8,
    ethType & 0xff,
    ...l3,
  ]);
}

function defaultAddr(v6: boolean, n: number): Uint8Array {
  const b = new Uint8Array(16);
  if (v6) b.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n]);
  else b.set([10, 0, 0, n]);
  return b;
}
