/**
 * What every packet module shares: the Internet checksum (RFC 1071) and
 * the pseudo-header sum of TCP, UDP and ICMPv6, and big-endian reads.
 *
 * @module
 */

/** Internet checksum of `bytes` plus `initial` (a 32-bit partial sum). */
export function checksum(bytes: Uint8Array, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += (bytes[i] << 8) | bytes[i + 1];
  if (bytes.length % 2) sum += bytes[bytes.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** The sum of the IPv4 or IPv6 pseudo-header, unfolded, for {@link checksum}'s `initial`. */
export function pseudo(
  src: Uint8Array,
  dst: Uint8Array,
  v6: boolean,
  proto: number,
  len: number,
): number {
  let sum = 0;
  const n = v6 ? 16 : 4;
  for (let i = 0; i < n; i += 2) sum += ((src[i] << 8) | src[i + 1]) + ((dst[i] << 8) | dst[i + 1]);
  return sum + proto + (len >>> 16) + (len & 0xffff);
}

/** `seg` with its Internet checksum (over `initial` too) written at `at`. */
export function withChecksum(seg: Uint8Array, at: number, initial: number): Uint8Array {
  const c = checksum(seg, initial);
  seg[at] = c >> 8;
  seg[at + 1] = c & 0xff;
  return seg;
}

/** The big-endian 16-bit number at `at` of `b`. */
export const u16 = (b: Uint8Array, at: number): number => (b[at] << 8) | b[at + 1];
/** The big-endian 32-bit number at `at` of `b`. */
export const u32 = (b: Uint8Array, at: number): number =>
  ((b[at] << 24) >>> 0) + (b[at + 1] << 16) + (b[at + 2] << 8) + b[at + 3];
/** `b` as hex text. */
export const hexOf = (b: Uint8Array): string =>
  Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
