/**
 * The flow key of a frame, as the datapath's parser reads it
 * (bpf/include/parse.h): what trace looks the flow up with, and what the
 * tests hold both to.
 *
 * @module
 */

import { type FlowKey, Frag } from "../../maps/layouts.ts";
import { u16, u32 } from "./bytes.ts";

/**
 * Fills the packet half of a flow key from a frame, as the datapath's
 * parser does (bpf/include/parse.h): for trace to say which flow matches.
 */
export function frameKey(b: Uint8Array, key: FlowKey): void {
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
    if (ihl < 20) return;
    key.ip_proto = proto = b[at + 9];
    key.ip_tos = b[at + 1];
    key.nw_ttl = b[at + 8];
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
    key.ipv6_label = u32(b, at) & 0xfffff;
    key.nw_ttl = b[at + 7];
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
    key.arp_sha = b.slice(at + 8, at + 14);
    key.arp_tha = b.slice(at + 18, at + 24);
    return;
  } else {
    return;
  }
  // A transport header cut short gives nothing, as in parse.h.
  if (b.length >= at + (L4_HEADER[proto] ?? Infinity)) {
    if (proto === 1 || proto === 58) {
      key.tp_src = b[at];
      key.tp_dst = b[at + 1];
    } else {
      key.tp_src = u16(b, at);
      key.tp_dst = u16(b, at + 2);
    }
    if (proto === 6) key.tcp_flags = u16(b, at + 12) & 0x0fff;
    if (proto === 58 && b[at + 1] === 0 && (b[at] === 135 || b[at] === 136)) ndKey(b, at, key);
  }
}

/** The bytes of each transport header the parser reads. */
const L4_HEADER: Readonly<Record<number, number>> = { 6: 20, 17: 8, 132: 12, 1: 2, 58: 2 };

/**
 * A neighbour solicitation's or advertisement's target and link-layer
 * address options (the one at `at` of `b`), as parse.h's key_nd reads them.
 */
function ndKey(b: Uint8Array, at: number, key: FlowKey): void {
  if (b.length < at + 24) return;
  key.nd_target = b.slice(at + 8, at + 24);
  let seen = 0;
  for (let i = 0, o = at + 24; i < 4 && b.length >= o + 8; i++) {
    const len = b[o + 1] * 8;
    if (!len || o + len > b.length) return;
    const type = b[o];
    if (len === 8 && (type === 1 || type === 2)) {
      if (seen & type) {
        key.nd_target = new Uint8Array(16);
        key.arp_sha = new Uint8Array(6);
        key.arp_tha = new Uint8Array(6);
        return;
      }
      seen |= type;
      if (type === 1) key.arp_sha = b.slice(o + 2, o + 8);
      else key.arp_tha = b.slice(o + 2, o + 8);
    }
    o += len;
  }
}
