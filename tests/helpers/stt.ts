/**
 * STT frames and segments built independently of warren: the 18-byte
 * header laid out here from the draft's table, the outer IP and TCP
 * headers (and their checksums) by Scapy.
 *
 * @module
 */

import { scapyMany, toHex } from "./scapy.ts";

/** What goes in an STT header besides version 0 and padding. */
export interface SttHeader {
  /** STT_F_* flags. */
  flags?: number;
  /** Inner L4 offset. */
  l4off?: number;
  /** Inner MSS. */
  mss?: number;
  /** VLAN TCI with the V bit (0x1000). */
  vlan?: number;
  /** Context ID (the tunnel key). */
  context: bigint;
}

/** An STT frame: the header, then the inner frame. */
export function sttFrame(inner: Uint8Array, h: SttHeader): Uint8Array {
  const out = new Uint8Array(18 + inner.length);
  const v = new DataView(out.buffer);
  out[1] = h.flags ?? 0;
  out[2] = h.l4off ?? 0;
  v.setUint16(4, h.mss ?? 0);
  v.setUint16(6, h.vlan ?? 0);
  v.setBigUint64(8, h.context);
  out.set(inner, 18);
  return out;
}

/** Where segments go: outer addresses, MAC, and the frame's identifier. */
export interface SttPath {
  /** Outer source. */
  src: string;
  /** Outer destination. */
  dst: string;
  /** Destination MAC (the receiving underlay's). */
  dstMac: string;
  /** Frame identifier (the TCP acknowledgement). */
  id: number;
  /** TCP source port. */
  sport?: number;
  /** Overrides the frame length the sequence numbers announce. */
  total?: number;
}

/**
 * The segments of `frame` at the given (offset, length) cuts, each a whole
 * Ethernet/IP/TCP packet with Scapy's checksums; PSH on the one that ends
 * the frame.
 */
export async function sttSegments(
  frame: Uint8Array,
  cuts: [number, number][],
  path: SttPath,
): Promise<Uint8Array[]> {
  const total = path.total ?? frame.length;
  const ip = path.src.includes(":")
    ? `IPv6(src='${path.src}',dst='${path.dst}')`
    : `IP(src='${path.src}',dst='${path.dst}',flags='DF')`;
  return await scapyMany(cuts.map(([off, len]) => {
    const flags = off + len === frame.length ? "PA" : "A";
    return `Ether(dst='${path.dstMac}',src='02:00:00:00:00:99')/${ip}/TCP(sport=${
      path.sport ?? 50000
    },dport=7471,seq=${
      (total << 16) | off
    },ack=${path.id},flags='${flags}',window=65535)/Raw(bytes.fromhex('${
      toHex(frame.subarray(off, off + len))
    }'))`;
  }));
}

/** Cuts a frame of `length` bytes into pieces of `size`. */
export function cutsOf(length: number, size: number): [number, number][] {
  const out: [number, number][] = [];
  for (let off = 0; off < length; off += size) out.push([off, Math.min(size, length - off)]);
  return out;
}
