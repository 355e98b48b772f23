/**
 * Codecs: how a TypeScript value becomes the bytes of a C struct and back.
 *
 * Scalars say their byte order: `u32` is host order (little-endian on the
 * hosts warren supports), `u32be` network order. Addresses and ports are
 * network order, as they sit in packets. A {@link struct} lays its fields out
 * back to back in declaration order, exactly as the C struct in
 * `bpf/include/warren.h` does with its explicit padding, and remembers each
 * field's name, offset and size so the layout can be checked against BTF.
 *
 * @example
 * ```ts
 * import assert from "node:assert";
 * import { struct, u64 } from "./codec.ts";
 *
 * const counter = struct("wr_counter", { packets: u64, bytes: u64 });
 * const bytes = counter.encode({ packets: 1n, bytes: 64n });
 * assert.equal(bytes.length, 16);
 * assert.deepEqual(counter.decode(bytes), { packets: 1n, bytes: 64n });
 * ```
 *
 * @module
 */

import ipaddr from "ipaddr.js";

/** Codec reads and writes one value of type T at an offset. */
export interface Codec<T> {
  /** Size in bytes. */
  readonly size: number;
  /** A short description for error messages, such as `u32` or `ipv4`. */
  readonly label: string;
  /** Writes `value` at `offset`. */
  write(view: DataView, offset: number, value: T): void;
  /** Reads the value at `offset`. */
  read(view: DataView, offset: number): T;
}

/** The value type a codec reads. */
export type ValueOf<C> = C extends Codec<infer T> ? T : never;

/** A field of a struct codec, as laid out. */
export interface FieldLayout {
  /** The C member name. */
  name: string;
  /** Byte offset. */
  offset: number;
  /** Size in bytes. */
  size: number;
  /** Whether the field is padding (not part of the TypeScript value). */
  pad: boolean;
}

/** A codec for a C struct, with its field layout. */
export interface StructCodec<T> extends Codec<T> {
  /** The C struct's name, without `struct`. */
  readonly name: string;
  /** Fields in order, padding included. */
  readonly fields: readonly FieldLayout[];
  /** `value` as a fresh byte array. */
  encode(value: T): Uint8Array<ArrayBuffer>;
  /** The value in `bytes` at `offset` (default 0). */
  decode(bytes: Uint8Array, offset?: number): T;
}

/** Host byte order is little-endian on every host warren supports. */
const LE = true;

function scalar<T>(
  size: number,
  label: string,
  write: Codec<T>["write"],
  read: Codec<T>["read"],
): Codec<T> {
  return { size, label, write, read };
}

function checkInt(value: number, max: number, label: string): number {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${value} does not fit ${label} (0..${max})`);
  }
  return value;
}

/** `__u8`. */
export const u8: Codec<number> = scalar(
  1,
  "u8",
  (v, o, x) => v.setUint8(o, checkInt(x, 0xff, "u8")),
  (v, o) => v.getUint8(o),
);
/** `__u16`, host order. */
export const u16: Codec<number> = scalar(
  2,
  "u16",
  (v, o, x) => v.setUint16(o, checkInt(x, 0xffff, "u16"), LE),
  (v, o) => v.getUint16(o, LE),
);
/** `__be16`: network order, such as a port or an EtherType. */
export const u16be: Codec<number> = scalar(
  2,
  "be16",
  (v, o, x) => v.setUint16(o, checkInt(x, 0xffff, "be16")),
  (v, o) => v.getUint16(o),
);
/** `__u32`, host order. */
export const u32: Codec<number> = scalar(
  4,
  "u32",
  (v, o, x) => v.setUint32(o, checkInt(x, 0xffffffff, "u32"), LE),
  (v, o) => v.getUint32(o, LE),
);
/** `__be32`, network order. */
export const u32be: Codec<number> = scalar(
  4,
  "be32",
  (v, o, x) => v.setUint32(o, checkInt(x, 0xffffffff, "be32")),
  (v, o) => v.getUint32(o),
);
/** `__u64`, host order. */
export const u64: Codec<bigint> = scalar(
  8,
  "u64",
  (v, o, x) => v.setBigUint64(o, BigInt.asUintN(64, x), LE),
  (v, o) => v.getBigUint64(o, LE),
);
/** `__be64`, network order, such as a tunnel id. */
export const u64be: Codec<bigint> = scalar(
  8,
  "be64",
  (v, o, x) => v.setBigUint64(o, BigInt.asUintN(64, x)),
  (v, o) => v.getBigUint64(o),
);

/** Raw bytes, `__u8 name[n]`. */
export function bytes(n: number): Codec<Uint8Array> {
  return scalar(
    n,
    `u8[${n}]`,
    (v, o, x) => {
      if (x.length > n) throw new RangeError(`${x.length} bytes do not fit u8[${n}]`);
      const dst = new Uint8Array(v.buffer, v.byteOffset + o, n);
      dst.fill(0);
      dst.set(x);
    },
    (v, o) => new Uint8Array(v.buffer.slice(v.byteOffset + o, v.byteOffset + o + n)),
  );
}

/** `n` bytes of padding, written as zeros and not read. */
export interface PadCodec extends Codec<undefined> {
  /** Marks the codec as padding. */
  readonly pad: true;
}

/** Explicit padding of `n` bytes. */
export function pad(n: number): PadCodec {
  return {
    size: n,
    label: `pad[${n}]`,
    pad: true,
    write: (v, o) => new Uint8Array(v.buffer, v.byteOffset + o, n).fill(0),
    read: () => undefined,
  };
}

/** A fixed-size array of `n` values of `codec`, `type name[n]`. */
export function array<T>(codec: Codec<T>, n: number): Codec<T[]> {
  return scalar(
    codec.size * n,
    `${codec.label}[${n}]`,
    (v, o, xs) => {
      if (xs.length > n) throw new RangeError(`${xs.length} items do not fit ${codec.label}[${n}]`);
      for (let i = 0; i < n; i++) {
        if (i < xs.length) codec.write(v, o + i * codec.size, xs[i]);
        else new Uint8Array(v.buffer, v.byteOffset + o + i * codec.size, codec.size).fill(0);
      }
    },
    (v, o) => Array.from({ length: n }, (_, i) => codec.read(v, o + i * codec.size)),
  );
}

/** An IPv4 address in network order, as dotted quad text. */
export const ipv4: Codec<string> = scalar(
  4,
  "ipv4",
  (v, o, x) => new Uint8Array(v.buffer, v.byteOffset + o, 4).set(parseIPv4(x)),
  (v, o) => formatIPv4(new Uint8Array(v.buffer, v.byteOffset + o, 4)),
);

/** A MAC address as `aa:bb:cc:dd:ee:ff`. */
export const mac: Codec<string> = scalar(
  6,
  "mac",
  (v, o, x) => new Uint8Array(v.buffer, v.byteOffset + o, 6).set(parseMac(x)),
  (v, o) => formatMac(new Uint8Array(v.buffer, v.byteOffset + o, 6)),
);

/** Fields of a struct: a codec per C member, in declaration order. */
export type Fields = Record<string, Codec<unknown>>;

/** The TypeScript value of a struct: its fields, padding left out. */
export type StructValue<F extends Fields> = {
  [K in keyof F as F[K] extends PadCodec ? never : K]: ValueOf<F[K]>;
};

/** Each field's byte offset in a struct codec's layout, by field name. */
export function fieldOffsets(codec: { fields: readonly FieldLayout[] }): Record<string, number> {
  return Object.fromEntries(codec.fields.map((f) => [f.name, f.offset]));
}

/**
 * A codec for the C struct `name` whose members are `fields`, in order and
 * back to back: put explicit `pad(n)` fields where the C struct has padding.
 */
export function struct<F extends Fields>(name: string, fields: F): StructCodec<StructValue<F>> {
  const layout: FieldLayout[] = [];
  const entries: [string, Codec<unknown>, number][] = [];
  let offset = 0;
  for (const [field, codec] of Object.entries(fields)) {
    const isPad = "pad" in codec && (codec as PadCodec).pad === true;
    layout.push({ name: field, offset, size: codec.size, pad: isPad });
    entries.push([field, codec, offset]);
    offset += codec.size;
  }
  const size = offset;
  const codec: StructCodec<StructValue<F>> = {
    name,
    size,
    label: `struct ${name}`,
    fields: layout,
    write(view, base, value) {
      const record = value as Record<string, unknown>;
      for (const [field, c, at] of entries) {
        const x = record[field];
        if (x === undefined && !("pad" in c)) {
          throw new TypeError(`struct ${name}: field "${field}" is missing`);
        }
        try {
          c.write(view, base + at, x);
        } catch (err) {
          throw new RangeError(`struct ${name}.${field}: ${(err as Error).message}`);
        }
      }
    },
    read(view, base) {
      const out: Record<string, unknown> = {};
      for (const [field, c, at] of entries) {
        if (!("pad" in c)) out[field] = c.read(view, base + at);
      }
      return out as StructValue<F>;
    },
    encode(value) {
      const out = new Uint8Array(size);
      codec.write(new DataView(out.buffer), 0, value);
      return out;
    },
    decode(bytes, at = 0) {
      if (bytes.length - at < size) {
        throw new RangeError(`struct ${name}: ${bytes.length - at} bytes, want ${size}`);
      }
      return codec.read(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), at);
    },
  };
  return codec;
}

/**
 * The 4 bytes of dotted-quad `text` (four decimal parts, no leading
 * zeros), written to the first 4 of `out`, or undefined (`out` then
 * partly written). Hand-written because flow tables parse a million
 * addresses; the rules are ipaddr.js's `isValidFourPartDecimal`.
 */
export function dottedQuad<T extends Uint8Array = Uint8Array<ArrayBuffer>>(
  text: string,
  out: T = new Uint8Array(4) as T,
): T | undefined {
  let part = 0, value = 0, digits = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      if (digits === 0 || part === 4) return undefined;
      out[part++] = value;
      value = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      if (digits === 1 && value === 0) return undefined; // a leading zero
      value = value * 10 + (c - 0x30);
      if (value > 255) return undefined;
      digits++;
    } else return undefined;
  }
  return part === 4 ? out : undefined;
}

/** The 4 bytes of dotted-quad `text`; throws on anything else. */
export function parseIPv4(text: string): Uint8Array {
  const b = dottedQuad(text);
  if (!b) throw new RangeError(`"${text}" is not an IPv4 address`);
  return b;
}

/** Dotted-quad text of the first 4 bytes of `b`. */
export function formatIPv4(b: Uint8Array): string {
  return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
}

/** The 16 bytes of IPv6 `text`; throws on anything else. */
export function parseIPv6(text: string): Uint8Array {
  if (!ipaddr.IPv6.isValid(text)) throw new RangeError(`"${text}" is not an IPv6 address`);
  return Uint8Array.from(ipaddr.IPv6.parse(text).toByteArray());
}

/** Canonical text (RFC 5952) of 16 IPv6 bytes. */
export function formatIPv6(b: Uint8Array): string {
  return (ipaddr.fromByteArray(Array.from(b.subarray(0, 16))) as ipaddr.IPv6).toRFC5952String();
}

/** The 6 bytes of `aa:bb:cc:dd:ee:ff`; throws on anything else. */
export function parseMac(text: string): Uint8Array {
  const parts = text.split(":");
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{1,2}$/.test(p))) {
    throw new RangeError(`"${text}" is not a MAC address`);
  }
  return Uint8Array.from(parts, (p) => parseInt(p, 16));
}

/** `aa:bb:cc:dd:ee:ff` text of 6 bytes. */
export function formatMac(b: Uint8Array): string {
  return Array.from(b.subarray(0, 6), (x) => x.toString(16).padStart(2, "0")).join(":");
}
