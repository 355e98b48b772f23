/**
 * The outer headers of a tunnel packet, as trace puts them around a frame
 * that comes in on a tunnel port: from the match's tunnel fields (the
 * addresses, key, TOS, TTL, flags and the first Geneve option), for each
 * protocol, and the tunnel half of the flow key the datapath reads from
 * them (decap.h).
 *
 * @module
 */

import { parseMac } from "../../maps/codec.ts";
import { type FlowKey, TunFlag } from "../../maps/layouts.ts";
import type { Match } from "../match.ts";
import { checksum, pseudo, withChecksum } from "./bytes.ts";

/** A Geneve option: class, type and data (a multiple of 4 bytes, at most 124). */
export interface GeneveOptionBytes {
  /** Option class. */
  class: number;
  /** Option type; 0x80 set means critical. */
  type: number;
  /** Option data. */
  data: Uint8Array;
}

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
  /** Fill in the UDP or GRE checksum (left out otherwise; STT's TCP always has one). */
  csum?: boolean;
  /** Geneve's OAM bit. */
  oam?: boolean;
  /** DF on an IPv4 outer header (default set). */
  df?: boolean;
  /** A Geneve option (Geneve's critical bit follows its type). */
  geneve?: GeneveOptionBytes;
}

const UDP_SPORT = 50000;

/** The tunnel header of `o` (after UDP, TCP or IP for GRE). */
function tunnelHeader(o: Outer): number[] {
  const id = Number(o.tunId & 0xffffffffn);
  const vni = [(id >> 16) & 0xff, (id >> 8) & 0xff, id & 0xff, 0];
  switch (o.proto) {
    case "vxlan":
      return [0x08, 0, 0, 0, ...vni];
    case "geneve": {
      const g = o.geneve;
      const opt = g ? [g.class >> 8, g.class & 0xff, g.type, g.data.length / 4, ...g.data] : [];
      const flags = (o.oam ? 0x80 : 0) | (g && g.type & 0x80 ? 0x40 : 0);
      return [opt.length / 4, flags, 0x65, 0x58, ...vni, ...opt];
    }
    case "gre": {
      const key = [id >>> 24, (id >> 16) & 0xff, (id >> 8) & 0xff, id & 0xff];
      // With C: the checksum and reserved word come before the key.
      return o.csum ? [0xa0, 0, 0x65, 0x58, 0, 0, 0, 0, ...key] : [0x20, 0, 0x65, 0x58, ...key];
    }
    case "stt": {
      const ctx = Array.from(
        { length: 8 },
        (_, i) => Number((o.tunId >> BigInt(56 - i * 8)) & 0xffn),
      );
      return [0, 0, 0, 0, 0, 0, 0, 0, ...ctx, 0, 0];
    }
  }
}

/** `inner` wrapped in `o`'s outer headers, checksums zero where allowed unless `o.csum`. */
export function encapsulate(inner: Uint8Array, o: Outer): Uint8Array {
  const tunnel = tunnelHeader(o);
  const l4proto = o.proto === "gre" ? 47 : o.proto === "stt" ? 6 : 17;
  const ports = [UDP_SPORT >> 8, UDP_SPORT & 0xff, o.dstPort >> 8, o.dstPort & 0xff];
  let seg: Uint8Array;
  if (l4proto === 17) {
    const len = 8 + tunnel.length + inner.length;
    seg = new Uint8Array([...ports, len >> 8, len & 0xff, 0, 0, ...tunnel, ...inner]);
    if (o.csum) {
      withChecksum(seg, 6, pseudo(o.src, o.dst, o.v6, 17, seg.length));
      // A sum of zero goes as all ones: zero says "no checksum" (RFC 768).
      if (seg[6] === 0 && seg[7] === 0) seg[6] = seg[7] = 0xff;
    }
  } else if (l4proto === 6) {
    // STT's sequence number carries the frame's length in its top half.
    const frameLen = tunnel.length + inner.length;
    seg = new Uint8Array([
      ...ports,
      ...[(frameLen >> 8) & 0xff, frameLen & 0xff, 0, 0, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff],
      ...[0, 0, 0, 0],
      ...tunnel,
      ...inner,
    ]);
    withChecksum(seg, 16, pseudo(o.src, o.dst, o.v6, 6, seg.length));
  } else {
    seg = new Uint8Array([...tunnel, ...inner]);
    if (o.csum) withChecksum(seg, 4, 0);
  }
  let ip: number[];
  if (o.v6) {
    ip = [
      ...[0x60 | (o.tos >> 4), (o.tos & 0x0f) << 4, 0, 0, seg.length >> 8, seg.length & 0xff],
      ...[l4proto, o.ttl, ...o.src, ...o.dst],
    ];
  } else {
    const total = 20 + seg.length;
    const frag = o.df === false ? 0 : 0x40;
    ip = [
      ...[0x45, o.tos, total >> 8, total & 0xff, 0, 0, frag, 0, o.ttl, l4proto, 0, 0],
      ...o.src.subarray(0, 4),
      ...o.dst.subarray(0, 4),
    ];
    const c = checksum(new Uint8Array(ip));
    ip[10] = c >> 8;
    ip[11] = c & 0xff;
  }
  return new Uint8Array([
    ...parseMac(o.dstMac),
    ...[2, 0, 0, 0, 0, 0x99],
    ...(o.v6 ? [0x86, 0xdd] : [0x08, 0]),
    ...ip,
    ...seg,
  ]);
}

/**
 * The tunnel half of the flow key the datapath reads from `o`'s outer
 * headers when it decapsulates (decap.h): key, addresses, TOS, TTL, the
 * flags, and the first Geneve option.
 */
export function tunnelKey(o: Outer, key: FlowKey): void {
  const bits = o.proto === "stt" ? 64n : o.proto === "gre" ? 32n : 24n;
  const addr = (a: Uint8Array) => {
    const out = new Uint8Array(16);
    out.set(a.subarray(0, o.v6 ? 16 : 4));
    return out;
  };
  key.tun_id = o.tunId & ((1n << bits) - 1n);
  key.tun_src = addr(o.src);
  key.tun_dst = addr(o.dst);
  key.tun_tos = o.tos;
  key.tun_ttl = o.ttl;
  key.tun_flags = TunFlag.PRESENT | TunFlag.KEY |
    (o.v6 ? TunFlag.V6 : o.df === false ? 0 : TunFlag.DF) |
    (o.csum || o.proto === "stt" ? TunFlag.CSUM : 0) |
    (o.oam && o.proto === "geneve" ? TunFlag.OAM : 0);
  const g = o.proto === "geneve" ? o.geneve : undefined;
  if (!g) return;
  key.gnv_class = g.class;
  key.gnv_type = g.type;
  key.gnv_len = g.data.length;
  // The datapath keeps the first 8 bytes, or 4 when that is all there is.
  const n = g.data.length >= 8 ? 8 : g.data.length === 4 ? 4 : 0;
  key.gnv_data = new Uint8Array(8);
  key.gnv_data.set(g.data.subarray(0, n));
}

/** What a match's tunnel fields say of the outer headers; the rest is trace's to choose. */
export type OuterFields =
  & Pick<Outer, "v6" | "tunId" | "tos" | "ttl" | "csum" | "oam" | "df" | "geneve">
  & {
    /** Outer source, when the match gives it. */
    src?: Uint8Array;
    /** Outer destination, when the match gives it. */
    dst?: Uint8Array;
  };

/** A match's tunnel fields as an outer header description. */
export function outerFromMatch(m: Match): OuterFields {
  const { key, mask } = m;
  const given = (a: Uint8Array, mk: Uint8Array) => mk.some((x) => x) ? a : undefined;
  const flag = (bit: number) => (mask.tun_flags & bit) !== 0;
  // Option data as long as its mask reaches: 4 bytes, or 8.
  const data = key.gnv_data.subarray(0, mask.gnv_data.subarray(4).some((x) => x) ? 8 : 4);
  return {
    src: given(key.tun_src, mask.tun_src),
    dst: given(key.tun_dst, mask.tun_dst),
    v6: (key.tun_flags & TunFlag.V6) !== 0,
    tunId: key.tun_id,
    tos: mask.tun_tos ? key.tun_tos : 0,
    ttl: mask.tun_ttl ? key.tun_ttl : 64,
    csum: flag(TunFlag.CSUM) && (key.tun_flags & TunFlag.CSUM) !== 0,
    oam: flag(TunFlag.OAM) && (key.tun_flags & TunFlag.OAM) !== 0,
    df: flag(TunFlag.DF) ? (key.tun_flags & TunFlag.DF) !== 0 : true,
    geneve: mask.gnv_class || mask.gnv_type || mask.gnv_data.some((x) => x)
      ? { class: key.gnv_class, type: key.gnv_type, data: data.slice() }
      : undefined,
  };
}
