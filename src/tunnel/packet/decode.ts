/**
 * Frames decoded layer by layer, down through tunnels, for trace to show
 * what went in and what came out.
 *
 * @module
 */

import { formatMac } from "../../maps/codec.ts";
import { formatAddr } from "../addr.ts";
import { hexOf, u16, u32 } from "./bytes.ts";
import { IPV6_FRAGMENT } from "./ip.ts";

/** One decoded layer: its name, its fields in wire order, its length. */
export interface Layer {
  /**
   * Ethernet, 802.1Q, IPv4, IPv6, IPv6 fragment, ARP, UDP, TCP, SCTP, ICMP, ICMPv6 (with
   * neighbour discovery's target and option types), VXLAN,
   * Geneve, GRE, STT, Payload.
   */
  name: string;
  /** Field name to printable value. */
  fields: Record<string, string | number>;
  /** Bytes the layer takes (header only; the payload for Payload). */
  length: number;
}

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
    const nd = proto === 58 && (b[at] === 135 || b[at] === 136) && b[at + 1] === 0;
    if (nd && b.length - at >= 24) {
      // Neighbour discovery: the target, then options, shown as their types.
      const options: number[] = [];
      for (let o = at + 24; o + 2 <= b.length && b[o + 1]; o += b[o + 1] * 8) options.push(b[o]);
      layers.push({
        name: "ICMPv6",
        fields: {
          type: b[at],
          code: 0,
          target: formatAddr(b.subarray(at + 8, at + 24), true),
          options: options.join(","),
        },
        length: b.length - at,
      });
      at = b.length;
      return;
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
