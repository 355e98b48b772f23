/**
 * Packets for `warren trace`: built from the fields of a match (the same
 * words flows use), and decoded layer by layer, tunnels included.
 *
 * Longer than most modules because it covers the same fourteen layers
 * three ways (built, decoded, parsed into a flow key as the datapath
 * does), which trace and the tests use together; the three could become
 * modules of their own once trace and its tests have settled.
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

import CRC32C from "crc-32/crc32c.js";
import { formatMac, parseMac } from "../maps/codec.ts";
import { Frag, TunFlag } from "../maps/layouts.ts";
import { formatAddr } from "./addr.ts";
import type { Match } from "./match.ts";

/** One decoded layer: its name, its fields in wire order, its length. */
export interface Layer {
  /**
   * Ethernet, 802.1Q, IPv4, IPv6, IPv6 fragment, ARP, UDP, TCP, SCTP, ICMP, ICMPv6, VXLAN,
   * Geneve, GRE, STT, Payload.
   */
  name: string;
  /** Field name to printable value. */
  fields: Record<string, string | number>;
  /** Bytes the layer takes (header only; the payload for Payload). */
  length: number;
}

/** Internet checksum of `bytes` plus `initial` (a 32-bit partial sum). */
function checksum(bytes: Uint8Array, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += (bytes[i] << 8) | bytes[i + 1];
  if (bytes.length % 2) sum += bytes[bytes.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function pseudo(src: Uint8Array, dst: Uint8Array, v6: boolean, proto: number, len: number): number {
  let sum = 0;
  const n = v6 ? 16 : 4;
  for (let i = 0; i < n; i += 2) sum += ((src[i] << 8) | src[i + 1]) + ((dst[i] << 8) | dst[i + 1]);
  return sum + proto + (len >>> 16) + (len & 0xffff);
}

/** Options of {@link buildPacket} beyond the match. */
export interface BuildOptions {
  /** Bytes of payload after the L4 header; default 32. */
  payload?: number;
}

const ETH_IP = 0x0800;
const ETH_IPV6 = 0x86dd;
const ETH_ARP = 0x0806;
const IPV6_FRAGMENT = 44;
/** Where a later fragment's data starts: past a first fragment of 1480 bytes. */
const LATER_OFFSET = 1480;

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

/** The L4 header of `proto` (none for protocols warren does not parse) and the payload. */
function segment(
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

/** `seg` with its Internet checksum (over `initial` too) written at `at`. */
function withChecksum(seg: Uint8Array, at: number, initial: number): Uint8Array {
  const c = checksum(seg, initial);
  seg[at] = c >> 8;
  seg[at + 1] = c & 0xff;
  return seg;
}

/** An IPv4 header before `seg`: DF unless a fragment, then MF (first) or an offset (later). */
function ipv4(
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
function ipv6(
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

function defaultAddr(v6: boolean, n: number): Uint8Array {
  const b = new Uint8Array(16);
  if (v6) b.set([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n]);
  else b.set([10, 0, 0, n]);
  return b;
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

const u16 = (b: Uint8Array, at: number) => (b[at] << 8) | b[at + 1];
const u32 = (b: Uint8Array, at: number) =>
  ((b[at] << 24) >>> 0) + (b[at + 1] << 16) + (b[at + 2] << 8) + b[at + 3];
const hexOf = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** Decodes a frame into its layers, down through tunnels. */
export function decodePacket(
  b: Uint8Array,
  ports = { vxlan: [4789], geneve: [6081], stt: [7471] },
): Layer[] {
  const layers: Layer[] = [];
  let at = 0;
  const truncated = (name: string) =>
    layers.push({ name, fields: { truncated: b.length - at }, length: b.length - at });
  const ethernet = (): void => {
    if (b.length - at < 14) return void truncated("Ethernet");
    let type = u16(b, at + 12);
    layers.push({
      name: "Ethernet",
      fields: {
        dst: formatMac(b.subarray(at, at + 6)),
        src: formatMac(b.subarray(at + 6, at + 12)),
        type: `0x${type.toString(16).padStart(4, "0")}`,
      },
      length: 14,
    });
    at += 14;
    while ((type === 0x8100 || type === 0x88a8) && b.length - at >= 4) {
      const tci = u16(b, at);
      layers.push({
        name: "802.1Q",
        fields: { pcp: tci >> 13, vid: tci & 0xfff, type: `0x${u16(b, at + 2).toString(16)}` },
        length: 4,
      });
      type = u16(b, at + 2);
      at += 4;
    }
    network(type);
  };
  const network = (type: number): void => {
    if (type === 0x0800) {
      if (b.length - at < 20) return void truncated("IPv4");
      const ihl = (b[at] & 0x0f) * 4;
      const proto = b[at + 9];
      const frag = u16(b, at + 6);
      layers.push({
        name: "IPv4",
        fields: {
          src: formatAddr(b.subarray(at + 12, at + 16), false),
          dst: formatAddr(b.subarray(at + 16, at + 20), false),
          tos: b[at + 1],
          len: u16(b, at + 2),
          id: u16(b, at + 4),
          flags: (frag & 0x4000 ? "DF" : "") + (frag & 0x2000 ? "MF" : ""),
          frag: (frag & 0x1fff) * 8,
          ttl: b[at + 8],
          proto,
        },
        length: ihl,
      });
      at += ihl;
      if (frag & 0x1fff) return void payload();
      transport(
        proto,
        b.subarray(at - ihl + 12, at - ihl + 16),
        b.subarray(at - ihl + 16, at - ihl + 20),
      );
    } else if (type === 0x86dd) {
      if (b.length - at < 40) return void truncated("IPv6");
      const next = b[at + 6];
      layers.push({
        name: "IPv6",
        fields: {
          src: formatAddr(b.subarray(at + 8, at + 24), true),
          dst: formatAddr(b.subarray(at + 24, at + 40), true),
          tclass: ((b[at] & 0x0f) << 4) | (b[at + 1] >> 4),
          flow: ((b[at + 1] & 0x0f) << 16) | u16(b, at + 2),
          plen: u16(b, at + 4),
          next,
          hlim: b[at + 7],
        },
        length: 40,
      });
      at += 40;
      if (next === IPV6_FRAGMENT && b.length - at >= 8) {
        const off = u16(b, at + 2);
        layers.push({
          name: "IPv6 fragment",
          fields: { next: b[at], offset: off & 0xfff8, more: off & 1, id: u32(b, at + 4) },
          length: 8,
        });
        at += 8;
        if (off & 0xfff8) return void payload();
        return void transport(b[at - 8], b.subarray(at - 40, at - 24), b.subarray(at - 24, at - 8));
      }
      transport(next, b.subarray(at - 32, at - 16), b.subarray(at - 16, at));
    } else if (type === 0x0806 && b.length - at >= 28) {
      layers.push({
        name: "ARP",
        fields: {
          op: u16(b, at + 6),
          sha: formatMac(b.subarray(at + 8, at + 14)),
          spa: formatAddr(b.subarray(at + 14, at + 18), false),
          tha: formatMac(b.subarray(at + 18, at + 24)),
          tpa: formatAddr(b.subarray(at + 24, at + 28), false),
        },
        length: 28,
      });
      at += 28;
      payload();
    } else {
      payload();
    }
  };
  const transport = (proto: number, _src: Uint8Array, _dst: Uint8Array): void => {
    if (proto === 17 && b.length - at >= 8) {
      const dport = u16(b, at + 2);
      layers.push({
        name: "UDP",
        fields: {
          sport: u16(b, at),
          dport,
          len: u16(b, at + 4),
          chksum: `0x${u16(b, at + 6).toString(16).padStart(4, "0")}`,
        },
        length: 8,
      });
      at += 8;
      if (ports.vxlan.includes(dport) && b.length - at >= 8) {
        layers.push({
          name: "VXLAN",
          fields: { flags: `0x${b[at].toString(16).padStart(2, "0")}`, vni: u32(b, at + 4) >>> 8 },
          length: 8,
        });
        at += 8;
        return void ethernet();
      }
      if (ports.geneve.includes(dport) && b.length - at >= 8) {
        const optlen = (b[at] & 0x3f) * 4;
        const options: string[] = [];
        for (let o = at + 8; o + 4 <= at + 8 + optlen && o + 4 <= b.length;) {
          const len = (b[o + 3] & 0x1f) * 4;
          options.push(
            `0x${u16(b, o).toString(16).padStart(4, "0")}:0x${
              b[o + 2].toString(16).padStart(2, "0")
            }:0x${hexOf(b.subarray(o + 4, o + 4 + len))}`,
          );
          o += 4 + len;
        }
        layers.push({
          name: "Geneve",
          fields: {
            version: b[at] >> 6,
            oam: b[at + 1] >> 7,
            critical: (b[at + 1] >> 6) & 1,
            proto: `0x${u16(b, at + 2).toString(16)}`,
            vni: u32(b, at + 4) >>> 8,
            options: options.join(","),
          },
          length: 8 + optlen,
        });
        at += 8 + optlen;
        return void ethernet();
      }
      return void payload();
    }
    if (proto === 6 && b.length - at >= 20) {
      const doff = (b[at + 12] >> 4) * 4;
      const flags = b[at + 13];
      const dport = u16(b, at + 2);
      layers.push({
        name: "TCP",
        fields: {
          sport: u16(b, at),
          dport,
          seq: u32(b, at + 4),
          ack: u32(b, at + 8),
          flags: tcpFlags(flags),
          window: u16(b, at + 14),
        },
        length: doff,
      });
      at += doff;
      if (ports.stt.includes(dport) && b.length - at >= 18) {
        layers.push({
          name: "STT",
          fields: {
            version: b[at],
            flags: `0x${b[at + 1].toString(16).padStart(2, "0")}`,
            l4_offset: b[at + 2],
            mss: u16(b, at + 4),
            vlan_tci: u16(b, at + 6),
            context: `0x${hexOf(b.subarray(at + 8, at + 16))}`,
          },
          length: 18,
        });
        at += 18;
        return void ethernet();
      }
      return void payload();
    }
    if (proto === 47 && b.length - at >= 4) {
      const flags = u16(b, at);
      let len = 4;
      const fields: Record<string, string | number> = {
        flags: `0x${flags.toString(16).padStart(4, "0")}`,
        proto: `0x${u16(b, at + 2).toString(16)}`,
      };
      if (flags & 0x8000) {
        fields.chksum = `0x${u16(b, at + len).toString(16).padStart(4, "0")}`;
        len += 4;
      }
      if (flags & 0x2000) {
        fields.key = u32(b, at + len);
        len += 4;
      }
      if (flags & 0x1000) {
        fields.seq = u32(b, at + len);
        len += 4;
      }
      layers.push({ name: "GRE", fields, length: len });
      at += len;
      return void (u16(b, at - len + 2) === 0x6558 ? ethernet() : payload());
    }
    if (proto === 132 && b.length - at >= 12) {
      layers.push({
        name: "SCTP",
        fields: {
          sport: u16(b, at),
          dport: u16(b, at + 2),
          tag: u32(b, at + 4),
          chksum: `0x${hexOf(b.subarray(at + 8, at + 12))}`,
        },
        length: 12,
      });
      at += 12;
      return void payload();
    }
    if ((proto === 1 || proto === 58) && b.length - at >= 4) {
      layers.push({
        name: proto === 1 ? "ICMP" : "ICMPv6",
        fields: { type: b[at], code: b[at + 1] },
        length: b.length - at >= 8 ? 8 : 4,
      });
      at += b.length - at >= 8 ? 8 : 4;
    }
    payload();
  };
  const payload = () => {
    if (at < b.length) {
      layers.push({ name: "Payload", fields: { bytes: b.length - at }, length: b.length - at });
    }
  };
  ethernet();
  return layers;
}

/** Open vSwitch's letters for TCP flags: F S R P . U E C. */
export function tcpFlags(flags: number): string {
  const letters = ["F", "S", "R", "P", ".", "U", "E", "C"];
  return letters.filter((_, i) => flags & (1 << i)).join("") || "none";
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

/**
 * Fills the packet half of a flow key from a frame, as the datapath's
 * parser does (bpf/include/parse.h): for trace to say which flow matches.
 */
export function frameKey(b: Uint8Array, key: import("../maps/layouts.ts").FlowKey): void {
  if (b.length < 14) return;
  key.eth_dst = b.slice(0, 6);
  key.eth_src = b.slice(6, 12);
  let type = u16(b, 12);
  let at = 14;
  for (let i = 0; i < 2 && (type === 0x8100 || type === 0x88a8) && b.length >= at + 4; i++) {
    if (i === 0) key.vlan_tci = u16(b, at) | 0x1000;
    type = u16(b, at + 2);
    at += 4;
  }
  key.eth_type = type;
  const addr = (from: number, n: number) => {
    const out = new Uint8Array(16);
    out.set(b.subarray(from, from + n));
    return out;
  };
  let proto: number;
  if (type === 0x0800 && b.length >= at + 20) {
    const ihl = (b[at] & 0x0f) * 4;
    const frag = u16(b, at + 6);
    key.ip_proto = proto = b[at + 9];
    key.ip_tos = b[at + 1];
    key.ip_src = addr(at + 12, 4);
    key.ip_dst = addr(at + 16, 4);
    if (frag & 0x1fff) {
      key.ip_frag = Frag.LATER;
      return;
    }
    if (frag & 0x2000) key.ip_frag = Frag.FIRST;
    at += ihl;
  } else if (type === 0x86dd && b.length >= at + 40) {
    key.ip_tos = ((b[at] & 0x0f) << 4) | (b[at + 1] >> 4);
    key.ip_src = addr(at + 8, 16);
    key.ip_dst = addr(at + 24, 16);
    proto = b[at + 6];
    at += 40;
    for (let i = 0; i < 4 && [0, 43, 44, 60].includes(proto) && b.length >= at + 8; i++) {
      if (proto === 44) {
        const off = u16(b, at + 2);
        proto = b[at];
        at += 8;
        if (off & 0xfff8) {
          key.ip_proto = proto;
          key.ip_frag = Frag.LATER;
          return;
        }
        if (off & 1) key.ip_frag = Frag.FIRST;
        continue;
      }
      const next = b[at];
      at += (b[at + 1] + 1) * 8;
      proto = next;
    }
    key.ip_proto = proto;
  } else if (type === 0x0806 && b.length >= at + 28) {
    key.ip_proto = b[at + 7];
    key.ip_src = addr(at + 14, 4);
    key.ip_dst = addr(at + 24, 4);
    return;
  } else {
    return;
  }
  if ((proto === 6 || proto === 17 || proto === 132) && b.length >= at + 4) {
    key.tp_src = u16(b, at);
    key.tp_dst = u16(b, at + 2);
  } else if ((proto === 1 || proto === 58) && b.length >= at + 2) {
    key.tp_src = b[at];
    key.tp_dst = b[at + 1];
  }
}
