/**
 * The flow key of a frame, as the datapath's parser reads it
 * (bpf/include/parse.h): what trace looks the flow up with, and what the
 * tests hold both to.
 *
 * @module
 */

import { type FlowKey, Frag } from "../../maps/layouts.ts";
import { u16 } from "./bytes.ts";

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
