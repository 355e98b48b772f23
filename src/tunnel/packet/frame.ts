/**
 * Frames for `warren trace`, built from the fields of a match (the same
 * words flows use): Ethernet with its VLAN tag, ARP, and IP through
 * ip.ts. What the match leaves out takes plain defaults.
 *
 * @module
 */

import { parseMac } from "../../maps/codec.ts";
import { Frag } from "../../maps/layouts.ts";
import type { Match } from "../match.ts";
import { type IpHeader, ipv4, ipv6, segment, type Transport } from "./ip.ts";

/** Options of {@link buildPacket} beyond the match. */
export interface BuildOptions {
  /** Bytes of payload after the L4 header; default 32. */
  payload?: number;
}

const ETH_IP = 0x0800;
const ETH_IPV6 = 0x86dd;
const ETH_ARP = 0x0806;
const TCP_SYN = 0x002;

/**
 * An Ethernet frame carrying what `m` matches exactly: fields it leaves
 * out take plain defaults (a locally administered MAC, TTL 64, a TCP SYN,
 * …). Masked fields use their value bits. A match on `nw_frag` gets a
 * fragment: a first one with the L4 header, or a later one of payload
 * only. ICMPv6 135 or 136 with code 0 is neighbour discovery, with the
 * link-layer address options the match gives.
 */
export function buildPacket(m: Match, options: BuildOptions = {}): Uint8Array {
  const k = m.key;
  const given = (
    member: "eth_src" | "eth_dst" | "ip_src" | "ip_dst" | "nd_target" | "arp_sha" | "arp_tha",
  ) => m.mask[member].some((b) => b) ? k[member] : undefined;
  const payload = new Uint8Array(options.payload ?? 32).map((_, i) => i & 0xff);
  const dst = given("eth_dst") ?? parseMac("02:00:00:00:00:02");
  const src = given("eth_src") ?? parseMac("02:00:00:00:00:01");
  const ethType = m.mask.eth_type ? k.eth_type : ETH_IP;
  const v6 = ethType === ETH_IPV6;
  const ip: IpHeader = {
    tos: m.mask.ip_tos ? k.ip_tos : 0,
    ttl: m.mask.nw_ttl ? k.nw_ttl : 64,
    label: k.ipv6_label,
    proto: m.mask.ip_proto ? k.ip_proto : v6 ? 58 : 1,
    src: given("ip_src") ?? defaultAddr(v6, 1),
    dst: given("ip_dst") ?? defaultAddr(v6, 2),
    frag: m.mask.ip_frag ? k.ip_frag & Frag.LATER : Frag.NONE,
  };
  const icmp = ip.proto === 1 || ip.proto === 58;
  const transport: Transport = {
    src: m.mask.tp_src ? k.tp_src : icmp ? (v6 ? 128 : 8) : 40000,
    dst: m.mask.tp_dst ? k.tp_dst : icmp ? 0 : 80,
    tcpFlags: m.mask.tcp_flags ? k.tcp_flags : TCP_SYN,
    // Neighbour discovery's options share ARP's members, as in the key.
    nd: {
      target: given("nd_target") ?? defaultAddr(true, 2),
      sll: given("arp_sha"),
      tll: given("arp_tha"),
    },
  };

  let l3: number[];
  if (ethType === ETH_ARP) {
    const op = m.mask.ip_proto ? k.ip_proto : 1;
    l3 = [
      ...[0, 1, 8, 0, 6, 4, 0, op],
      ...(given("arp_sha") ?? src),
      ...ip.src.subarray(0, 4),
      ...(given("arp_tha") ?? [0, 0, 0, 0, 0, 0]),
      ...ip.dst.subarray(0, 4),
    ];
  } else if (ethType === ETH_IP || ethType === ETH_IPV6) {
    const seg = ip.frag === Frag.LATER ? payload : segment(ip, v6, transport, payload);
    l3 = v6 ? ipv6(ip, seg) : ipv4(ip, seg);
  } else {
    l3 = [...payload];
  }
  // Any TCI bit the match wants set takes a tag (0x1000 is "tagged" in a
  // key, the DEI bit in a tag, which warren's keys do not carry).
  const vlan = k.vlan_tci & m.mask.vlan_tci
    ? [0x81, 0x00, (k.vlan_tci >> 8) & 0xef, k.vlan_tci & 0xff]
    : [];
  return new Uint8Array([...dst, ...src, ...vlan, ethType >> 8, ethType & 0xff, ...l3]);
}

function defaultAddr(v6: boolean, n: number): Uint8Array {
  const b = new Uint8Array(16);
  if (v6) b.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n]);
  else b.set([10, 0, 0, n]);
  return b;
}
