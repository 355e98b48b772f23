/**
 * IP addresses as the datapath stores them: 16 bytes for both families,
 * IPv4 in the first four, the family kept beside.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { formatAddr, parseCidr, prefixMask } from "./addr.ts";
 *
 * const net = parseCidr("10.1.0.0/16");
 * assert.equal(net.prefix, 16);
 * assert.deepEqual(prefixMask(net.prefix).subarray(0, 4), Uint8Array.of(255, 255, 0, 0));
 * assert.equal(formatAddr(net.bytes, net.v6), "10.1.0.0");
 * ```
 *
 * @module
 */

import ipaddr from "ipaddr.js";
import { dottedQuad, formatIPv4, formatIPv6, parseIPv6 } from "../maps/codec.ts";

/** An address with its family. */
export interface Addr {
  /** True for IPv6. */
  v6: boolean;
  /** 16 bytes; IPv4 in the first 4. */
  bytes: Uint8Array;
}

/** An address and a prefix length. */
export interface Cidr extends Addr {
  /** Prefix length: 0..32 or 0..128. */
  prefix: number;
}

/** Parses IPv4 or IPv6 text; throws a RangeError naming the text otherwise. */
export function parseAddr(text: string): Addr {
  const bytes = new Uint8Array(16);
  return { v6: readAddr(text, bytes), bytes };
}

/**
 * Reads IPv4 or IPv6 text into the 16 bytes of `out`, as {@link parseAddr}
 * would hold it: whether it is IPv6. Throws a RangeError naming the text
 * otherwise, `out` then partly written. A match's address is read in
 * place: a typed array made is a malloc, and a table has a million.
 */
export function readAddr(text: string, out: Uint8Array): boolean {
  if (dottedQuad(text, out)) {
    for (let i = 4; i < 16; i++) out[i] = 0;
    return false;
  }
  if (ipaddr.IPv6.isValid(text)) {
    out.set(parseIPv6(text));
    return true;
  }
  throw new RangeError(`"${text}" is not an IP address`);
}

/** Parses `addr` or `addr/prefix`. */
export function parseCidr(text: string): Cidr {
  const [a, p, ...rest] = text.split("/");
  const addr = parseAddr(a);
  const max = addr.v6 ? 128 : 32;
  const prefix = p === undefined ? max : Number(p);
  if (rest.length || !/^\d+$/.test(p ?? String(max)) || prefix > max) {
    throw new RangeError(`"${text}" is not an address with a prefix length (0..${max})`);
  }
  return { ...addr, prefix };
}

/** The 16-byte mask of a prefix length, written to `out`. */
export function prefixMask<T extends Uint8Array = Uint8Array<ArrayBuffer>>(
  prefix: number,
  out: T = new Uint8Array(16) as T,
): T {
  const m = PREFIX_MASKS[prefix];
  for (let i = 0; i < 16; i++) out[i] = m[i];
  return out;
}

const PREFIX_MASKS = Array.from({ length: 129 }, (_, prefix) => {
  const m = new Uint8Array(16);
  for (let i = 0; i < 16; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    m[i] = bits === 0 ? 0 : (0xff << (8 - bits)) & 0xff;
  }
  return m;
});

/** The prefix length of a contiguous mask, or undefined if not contiguous. */
export function maskPrefix(mask: Uint8Array, v6: boolean): number | undefined {
  let prefix = 0;
  const n = v6 ? 16 : 4;
  for (let i = 0; i < n; i++) {
    const b = mask[i];
    if (b === 0xff) {
      prefix += 8;
      continue;
    }
    const ones = [0x00, 0x80, 0xc0, 0xe0, 0xf0, 0xf8, 0xfc, 0xfe].indexOf(b);
    if (ones < 0) return undefined;
    prefix += ones;
    if (mask.subarray(i + 1, n).some((x) => x !== 0)) return undefined;
    return prefix;
  }
  return prefix;
}

/** Text of a 16-byte address of the given family. */
export function formatAddr(bytes: Uint8Array, v6: boolean): string {
  // formatIPv4 reads the first four bytes: no view made per address.
  return v6 ? formatIPv6(bytes) : formatIPv4(bytes);
}

/** Whether all 16 bytes are zero. */
export function isZero(bytes: Uint8Array): boolean {
  // A loop, not every(): a dump asks this of each address field of each flow.
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

/** The address whose bits are the number `n`, as `load:` writes one. */
export function addrFromBigint(n: bigint, v6: boolean): Addr {
  const bytes = new Uint8Array(16);
  bytes.set(bigintBytes(n, v6 ? 16 : 4));
  return { v6, bytes };
}

/** The low `len` bytes of `n`, most significant first (network order). */
export function bigintBytes(n: bigint, len: number): Uint8Array {
  const bytes = new Uint8Array(len);
  for (let i = len - 1; i >= 0; i--, n >>= 8n) bytes[i] = Number(n & 0xffn);
  return bytes;
}

/** The number whose bytes, most significant first, are `bytes`. */
export function bigintOfBytes(bytes: Uint8Array): bigint {
  return bytes.reduce((n, b) => (n << 8n) | BigInt(b), 0n);
}
