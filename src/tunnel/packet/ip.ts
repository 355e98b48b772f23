/**
 * IP packets as trace builds them: the IPv4 and IPv6 headers (with a
 * fragment's fields) and the transport headers warren parses after them
 * (TCP, UDP, SCTP, ICMP and ICMPv6), checksums filled in.
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

/** The L4 header of `proto` (none for protocols warren does not parse) and the payload. */
export function segment(
  proto: number,
  tpSrc: number,
  tpDst: number,
  src: Uint8Array,
  dst: Uint8Array,
  v6: boolean,
  payload: Uint8Array,
): Uint8Array {
  const ports = [tpSrc >> 8, tpSrc & 0xff, tpDst >> 8, tpDst & 0xff];
  switch (proto) {
    case 6: {
      const seg = new Uint8Array([
        ...ports,
        ...[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0],
        ...payload,
      ]);
      return withChecksum(seg, 16, pseudo(src, dst, v6, proto, seg.length));
    }
    case 17: {
      const len = 8 + payload.length;
      const seg = new Uint8Array([...ports, len >> 8, len & 0xff, 0, 0, ...payload]);
      withChecksum(seg, 6, pseudo(src, dst, v6, proto, seg.length));
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
    case 58: {
      const seg = new Uint8Array([tpSrc & 0xff, tpDst & 0xff, 0, 0, 0, 1, 0, 1, ...payload]);
      return withChecksum(seg, 2, proto === 1 ? 0 : pseudo(src, dst, v6, proto, seg.length));
    }
    default:
      return payload;
  }
}

/** An IPv4 header before `seg`: DF unless a fragment, then MF (first) or an offset (later). */
export function ipv4(
  tos: number,
  proto: number,
  src: Uint8Array,
  dst: Uint8Array,
  frag: number,
  seg: Uint8Array,
): number[] {
  const total = 20 + seg.length;
  const fragField = frag === Frag.FIRST ? 0x2000 : frag === Frag.LATER ? LATER_OFFSET / 8 : 0x4000;
  const ip = new Uint8Array([
    ...[0x45, tos, total >> 8, total & 0xff, 0, 1, fragField >> 8, fragField & 0xff, 64, proto],
    ...[0, 0, ...src.subarray(0, 4), ...dst.subarray(0, 4)],
  ]);
  return [...withChecksum(ip, 10, 0), ...seg];
}

/** An IPv6 header before `seg`, with a fragment header when a fragment. */
export function ipv6(
  tos: number,
  proto: number,
  src: Uint8Array,
  dst: Uint8Array,
  frag: number,
  seg: Uint8Array,
): number[] {
  // The offset field is the offset in bytes with its low 3 bits (M in bit 0)
  // free: a first fragment is M alone, a later (last) one the offset alone.
  const off = frag === Frag.FIRST ? 1 : LATER_OFFSET;
  const fragHeader = frag === Frag.NONE ? [] : [proto, 0, off >> 8, off & 0xff, 0, 0, 0, 1];
  const plen = fragHeader.length + seg.length;
  return [
    ...[0x60 | (tos >> 4), (tos & 0x0f) << 4, 0, 0, plen >> 8, plen & 0xff],
    frag === Frag.NONE ? proto : IPV6_FRAGMENT,
    64,
    ...src,
    ...dst,
    ...fragHeader,
    ...seg,
  ];
}
