/**
 * IP packets as trace builds them: the IPv4 and IPv6 headers (with a
 * fragment's fields) and the transport headers warren parses after them
 * (TCP, UDP, SCTP, ICMP, ICMPv6 and its neighbour discovery), checksums
 * filled in.
 *
 * @module
 */

import CRC32C from "crc-32/crc32c.js";
import { Frag } from "../../maps/layouts.ts";
import { pseudo, withChecksum } from "./bytes.ts";

/** IPv6's fragment header, as a next header. */
export const IPV6_FRAGMENT = 44;
/** Where a later fragment's data starts: past a first fragment of 1480 bytes. */
const LATER_OFFSET = 1480;

/** An IP header as built: what a match may say of it. */
export interface IpHeader {
  /** TOS byte, or IPv6 traffic class. */
  tos: number;
  /** TTL, or hop limit. */
  ttl: number;
  /** IPv6 flow label (20 bits); IPv4 has none. */
  label: number;
  /** The transport protocol. */
  proto: number;
  /** Addresses, IPv4 in the first 4 bytes. */
  src: Uint8Array;
  /** Destination. */
  dst: Uint8Array;
  /** WR_FRAG_*: not a fragment, a first one, a later one. */
  frag: number;
}

/** What the transport header says, beside the IP header's protocol. */
export interface Transport {
  /** Ports, or ICMP's type. */
  src: number;
  /** Ports, or ICMP's code. */
  dst: number;
  /** TCP's flags, 12 bits. */
  tcpFlags: number;
  /** A neighbour solicitation's or advertisement's target and link-layer address options. */
  nd: { target: Uint8Array; sll?: Uint8Array; tll?: Uint8Array };
}

const ND_SOLICIT = 135;
const ND_ADVERT = 136;
/** Link-layer address options (RFC 4861 4.6.1): type, then length in units of 8 bytes. */
const ND_OPT_SLL = [1, 1];
const ND_OPT_TLL = [2, 1];

/**
 * The L4 header of `ip.proto` (none for protocols warren does not parse)
 * and the payload. ICMPv6 types 135 and 136 with code 0 are neighbour
 * discovery: the target and the options the transport gives, no payload.
 */
export function segment(ip: IpHeader, v6: boolean, t: Transport, payload: Uint8Array): Uint8Array {
  const ports = [t.src >> 8, t.src & 0xff, t.dst >> 8, t.dst & 0xff];
  const sum = (seg: Uint8Array) => pseudo(ip.src, ip.dst, v6, ip.proto, seg.length);
  switch (ip.proto) {
    case 6: {
      const seg = new Uint8Array([
        ...ports,
        ...[0, 0, 0, 1, 0, 0, 0, 0, 0x50 | (t.tcpFlags >> 8), t.tcpFlags & 0xff, 0xff, 0xff],
        ...[0, 0, 0, 0],
        ...payload,
      ]);
      return withChecksum(seg, 16, sum(seg));
    }
    case 17: {
      const len = 8 + payload.length;
      const seg = new Uint8Array([...ports, len >> 8, len & 0xff, 0, 0, ...payload]);
      withChecksum(seg, 6, sum(seg));
      // A sum of zero goes as all ones: zero says "no checksum" (RFC 768).
      if (seg[6] === 0 && seg[7] === 0) seg[6] = seg[7] = 0xff;
      return seg;
    }
    case 132: {
      // One DATA chunk (RFC 9260 3.3.1), unfragmented (B and E set), TSN 1.
      const chunk = 16 + payload.length;
      const seg = new Uint8Array(12 + chunk + (-chunk & 3));
      seg.set([...ports, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0x03, chunk >> 8, chunk & 0xff, 0, 0, 0, 1]);
      seg.set(payload, 28);
      // CRC32c, in the byte order of RFC 9260 appendix A.
      new DataView(seg.buffer).setUint32(8, CRC32C.buf(seg) >>> 0, true);
      return seg;
    }
    case 1:
      return withChecksum(new Uint8Array([t.src, t.dst, 0, 0, 0, 1, 0, 1, ...payload]), 2, 0);
    case 58: {
      const nd = (t.src === ND_SOLICIT || t.src === ND_ADVERT) && t.dst === 0;
      const seg = new Uint8Array(
        nd
          ? [
            ...[t.src, 0, 0, 0, 0, 0, 0, 0, ...t.nd.target],
            ...(t.nd.sll ? [...ND_OPT_SLL, ...t.nd.sll] : []),
            ...(t.nd.tll ? [...ND_OPT_TLL, ...t.nd.tll] : []),
          ]
          : [t.src, t.dst, 0, 0, 0, 1, 0, 1, ...payload],
      );
      return withChecksum(seg, 2, sum(seg));
    }
    default:
      return payload;
  }
}

/** An IPv4 header before `seg`: DF unless a fragment, then MF (first) or an offset (later). */
export function ipv4(ip: IpHeader, seg: Uint8Array): number[] {
  const total = 20 + seg.length;
  const frag = ip.frag === Frag.FIRST ? 0x2000 : ip.frag === Frag.LATER ? LATER_OFFSET / 8 : 0x4000;
  const h = new Uint8Array([
    ...[0x45, ip.tos, total >> 8, total & 0xff, 0, 1, frag >> 8, frag & 0xff, ip.ttl, ip.proto],
    ...[0, 0, ...ip.src.subarray(0, 4), ...ip.dst.subarray(0, 4)],
  ]);
  return [...withChecksum(h, 10, 0), ...seg];
}

/** An IPv6 header before `seg`, with a fragment header when a fragment. */
export function ipv6(ip: IpHeader, seg: Uint8Array): number[] {
  // The offset field is the offset in bytes with its low 3 bits (M in bit 0)
  // free: a first fragment is M alone, a later (last) one the offset alone.
  const off = ip.frag === Frag.FIRST ? 1 : LATER_OFFSET;
  const fragHeader = ip.frag === Frag.NONE ? [] : [ip.proto, 0, off >> 8, off & 0xff, 0, 0, 0, 1];
  const plen = fragHeader.length + seg.length;
  const word = 0x60000000 | (ip.tos << 20) | (ip.label & 0xfffff);
  return [
    ...[word >>> 24, (word >> 16) & 0xff, (word >> 8) & 0xff, word & 0xff],
    ...[plen >> 8, plen & 0xff, ip.frag === Frag.NONE ? ip.proto : IPV6_FRAGMENT, ip.ttl],
    ...ip.src,
    ...ip.dst,
    ...fragHeader,
    ...seg,
  ];
}
