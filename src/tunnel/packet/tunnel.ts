/**
 * The outer headers of a tunnel packet, as trace puts them around a frame
 * that comes in on a tunnel port: from the match's tunnel fields, for
 * each protocol.
 *
 * @module
 */

import { parseMac } from "../../maps/codec.ts";
import { TunFlag } from "../../maps/layouts.ts";
import type { Match } from "../match.ts";
import { checksum, pseudo } from "./bytes.ts";

/** The outer headers of a tunnel packet: what `trace` puts around a frame. */
export interface Outer {
  /** Tunnel protocol. */
  proto: "vxlan" | "geneve" | "gre" | "stt";
  /** Destination UDP/TCP port. */
  dstPort: number;
  /** Outer source (the remote endpoint). */
  src: Uint8Array;
  /** Outer destination (our endpoint). */
  dst: Uint8Array;
  /** IPv6 outer. */
  v6: boolean;
  /** The key. */
  tunId: bigint;
  /** Outer TOS and TTL. */
  tos: number;
  /** Outer TTL. */
  ttl: number;
  /** Destination MAC (the underlay device's). */
  dstMac: string;
}

/** `inner` wrapped in `o`'s outer headers, checksums zero where allowed. */
export function encapsulate(inner: Uint8Array, o: Outer): Uint8Array {
  let tunnel: number[];
  const id = Number(o.tunId & 0xffffffffn);
  switch (o.proto) {
    case "vxlan":
      tunnel = [0x08, 0, 0, 0, (id >> 16) & 0xff, (id >> 8) & 0xff, id & 0xff, 0];
      break;
    case "geneve":
      tunnel = [0, 0, 0x65, 0x58, (id >> 16) & 0xff, (id >> 8) & 0xff, id & 0xff, 0];
      break;
    case "gre":
      tunnel = [0x20, 0, 0x65, 0x58, id >>> 24, (id >> 16) & 0xff, (id >> 8) & 0xff, id & 0xff];
      break;
    case "stt": {
      const ctx = o.tunId;
      const ctxBytes = Array.from(
        { length: 8 },
        (_, i) => Number((ctx >> BigInt(56 - i * 8)) & 0xffn),
      );
      tunnel = [0, 0, 0, 0, 0, 0, 0, 0, ...ctxBytes, 0, 0];
      break;
    }
  }
  const l4proto = o.proto === "gre" ? 47 : o.proto === "stt" ? 6 : 17;
  let l4: number[];
  if (l4proto === 17) {
    const len = 8 + tunnel.length + inner.length;
    l4 = [0xc3, 0x50, o.dstPort >> 8, o.dstPort & 0xff, len >> 8, len & 0xff, 0, 0, ...tunnel];
  } else if (l4proto === 6) {
    const frameLen = tunnel.length + inner.length;
    l4 = [
      0xc3,
      0x50,
      o.dstPort >> 8,
      o.dstPort & 0xff,
      (frameLen >> 8) & 0xff,
      frameLen & 0xff,
      0,
      0,
      0,
      0,
      0,
      1,
      0x50,
      0x18,
      0xff,
      0xff,
      0,
      0,
      0,
      0,
      ...tunnel,
    ];
  } else {
    l4 = tunnel;
  }
  const seg = new Uint8Array([...l4, ...inner]);
  if (l4proto === 6) {
    const c = checksum(seg, pseudo(o.src, o.dst, o.v6, 6, seg.length));
    seg[16] = c >> 8;
    seg[17] = c & 0xff;
  }
  let ip: number[];
  if (o.v6) {
    ip = [
      0x60 | (o.tos >> 4),
      (o.tos & 0x0f) << 4,
      0,
      0,
      seg.length >> 8,
      seg.length & 0xff,
      l4proto,
      o.ttl,
      ...o.src,
      ...o.dst,
    ];
  } else {
    const total = 20 + seg.length;
    ip = [
      0x45,
      o.tos,
      total >> 8,
      total & 0xff,
      0,
      0,
      0x40,
      0,
      o.ttl,
      l4proto,
      0,
      0,
      ...o.src.subarray(0, 4),
      ...o.dst.subarray(0, 4),
    ];
    const c = checksum(new Uint8Array(ip));
    ip[10] = c >> 8;
    ip[11] = c & 0xff;
  }
  return new Uint8Array([
    ...parseMac(o.dstMac),
    2,
    0,
    0,
    0,
    0,
    0x99,
    o.v6 ? 0x86 : 0x08,
    o.v6 ? 0xdd : 0,
    ...ip,
    ...seg,
  ]);
}

/** A match's tunnel fields as an outer header description. */
export function outerFromMatch(
  m: Match,
): { src?: Uint8Array; v6: boolean; tunId: bigint; tos: number; ttl: number } {
  return {
    src: m.mask.tun_src.some((x) => x) ? m.key.tun_src : undefined,
    v6: (m.key.tun_flags & TunFlag.V6) !== 0,
    tunId: m.mask.tun_id ? m.key.tun_id : 0n,
    tos: m.mask.tun_tos ? m.key.tun_tos : 0,
    ttl: m.mask.tun_ttl ? m.key.tun_ttl : 64,
  };
}
