import { assert, assertEquals, assertThrows } from "./helpers/assert.ts";
import fc from "fast-check";
import ipaddr from "ipaddr.js";
import {
  array,
  bytes,
  dottedQuad,
  formatIPv6,
  ipv4,
  mac,
  pad,
  parseIPv6,
  struct,
  u16,
  u16be,
  u32,
  u32be,
  u64,
  u64be,
  u8,
} from "../src/maps/codec.ts";
import { layoutDifferences } from "../src/maps/layout.ts";
import {
  copyFlowKey,
  decodeFlowKey,
  emptyFlowKey,
  encodeFlowKey,
  encodeFlowMask,
  type FlowKey,
  flowKeyCodec,
  isSlabFlowKey,
  plainFlowKey,
} from "../src/maps/layouts.ts";

const sample = struct("sample", {
  id: u64be,
  port: u16be,
  proto: u8,
  pad0: pad(1),
  count: u32,
  addr: ipv4,
  hw: mac,
  pad1: pad(2),
  total: u64,
  small: u16,
  pad2: pad(2),
  word: u32be,
  raw: bytes(4),
  list: array(u16, 2),
});

const arbSample = fc.record({
  id: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  port: fc.integer({ min: 0, max: 0xffff }),
  proto: fc.integer({ min: 0, max: 0xff }),
  count: fc.integer({ min: 0, max: 0xffffffff }),
  addr: fc.ipV4(),
  hw: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 6, maxLength: 6 }).map((b) =>
    b.map((x) => x.toString(16).padStart(2, "0")).join(":")
  ),
  total: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
  small: fc.integer({ min: 0, max: 0xffff }),
  word: fc.integer({ min: 0, max: 0xffffffff }),
  raw: fc.uint8Array({ minLength: 4, maxLength: 4 }),
  list: fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 2, maxLength: 2 }),
});

Deno.test("struct codec round-trips every value", () => {
  fc.assert(fc.property(arbSample, (value) => {
    assertEquals(sample.decode(sample.encode(value)), { ...value });
  }));
});

Deno.test("struct codec lays fields out back to back with explicit padding", () => {
  assertEquals(sample.size, 52);
  assertEquals(
    sample.fields.map((f) => [f.name, f.offset, f.size]),
    [
      ["id", 0, 8],
      ["port", 8, 2],
      ["proto", 10, 1],
      ["pad0", 11, 1],
      ["count", 12, 4],
      ["addr", 16, 4],
      ["hw", 20, 6],
      ["pad1", 26, 2],
      ["total", 28, 8],
      ["small", 36, 2],
      ["pad2", 38, 2],
      ["word", 40, 4],
      ["raw", 44, 4],
      ["list", 48, 4],
    ],
  );
});

Deno.test("known byte image: network order for addresses, ports, ids; host order for counters", () => {
  const image = sample.encode({
    id: 0x0102030405060708n,
    port: 4789,
    proto: 17,
    count: 0x11223344,
    addr: "192.0.2.1",
    hw: "02:00:00:00:00:01",
    total: 1n,
    small: 0x0102,
    word: 0xdeadbeef,
    raw: Uint8Array.of(9, 8, 7, 6),
    list: [1, 2],
  });
  const hex = Array.from(image, (b) => b.toString(16).padStart(2, "0")).join("");
  assertEquals(
    hex,
    "0102030405060708" + // id, big-endian
      "12b5" + // 4789, big-endian
      "11" + "00" + // proto, padding
      "44332211" + // count, little-endian
      "c0000201" + // 192.0.2.1
      "020000000001" + "0000" + // MAC, padding
      "0100000000000000" + // total, little-endian
      "0201" + "0000" + // small, padding
      "deadbeef" + // word, big-endian
      "09080706" + // raw
      "01000200", // list of u16, little-endian
  );
});

Deno.test("scalars reject values that do not fit instead of truncating", () => {
  const s = struct("s", { a: u8, b: u16, c: u32 });
  assertThrows(() => s.encode({ a: 256, b: 0, c: 0 }), RangeError, "s.a");
  assertThrows(() => s.encode({ a: 0, b: -1, c: 0 }), RangeError, "s.b");
  assertThrows(() => s.encode({ a: 0, b: 0, c: 1.5 }), RangeError, "s.c");
  assertThrows(() => s.encode({ a: 0, b: 0 } as never), TypeError, 'field "c" is missing');
  assertThrows(() => struct("m", { m: mac }).encode({ m: "02:00:00" }), RangeError, "not a MAC");
  assertThrows(
    () => struct("i", { i: ipv4 }).encode({ i: "10.0.0.256" }),
    RangeError,
    "not an IPv4",
  );
});

Deno.test("u64 codecs keep all 64 bits in both byte orders", () => {
  fc.assert(fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (n) => {
    const s = struct("w", { le: u64, be: u64be });
    const b = s.encode({ le: n, be: n });
    assertEquals(Array.from(b.subarray(0, 8)), Array.from(b.subarray(8, 16)).reverse());
    assertEquals(s.decode(b), { le: n, be: n });
  }));
});

Deno.test("IPv6 text round-trips to canonical form", () => {
  fc.assert(fc.property(fc.ipV6(), (text) => {
    const b = parseIPv6(text);
    assertEquals(parseIPv6(formatIPv6(b)), b);
  }));
  assertEquals(formatIPv6(parseIPv6("2001:db8:0:0:0:0:0:1")), "2001:db8::1");
  assertEquals(formatIPv6(parseIPv6("::ffff:192.0.2.1")), "::ffff:c000:201");
});

Deno.test("layoutDifferences names every mismatch between a codec and BTF", () => {
  const codec = struct("wr_counter", { packets: u64, bytes: u32, pad0: pad(4) });
  const problems = layoutDifferences(codec, {
    name: "wr_counter",
    kind: "struct",
    size: 16,
    members: [{ name: "packets", offset: 0, size: 8, bits: 0 }, {
      name: "bytes",
      offset: 8,
      size: 8,
      bits: 0,
    }],
  });
  assertEquals(problems, [
    "member 1 is bytes@8+8 in the kernel, bytes@8+4 in TypeScript",
    "field pad0 (offset 12) is missing in the kernel",
  ]);
  assertEquals(layoutDifferences(u32, { name: "", kind: "int", size: 4, members: [] }), []);
});

Deno.test("the hand-written flow key codec writes and reads what the generic codec does", () => {
  const size = flowKeyCodec.size;
  fc.assert(fc.property(fc.uint8Array({ minLength: size, maxLength: size }), (raw) => {
    // Padding holds nothing: both codecs write it as zeros.
    for (const f of flowKeyCodec.fields) if (f.pad) raw.fill(0, f.offset, f.offset + f.size);
    const generic = flowKeyCodec.decode(raw);
    assertEquals({ ...decodeFlowKey(raw) }, { ...generic });
    const out = new Uint8Array(size + 8);
    encodeFlowKey(generic, out, 8);
    assertEquals(out.subarray(8), raw);
  }));
  assertEquals({ ...plainFlowKey(emptyFlowKey()) }, {
    ...flowKeyCodec.decode(new Uint8Array(size)),
  });
});

/** The byte fields of a flow key. */
const BYTE_FIELDS = [
  "tun_src",
  "tun_dst",
  "eth_src",
  "eth_dst",
  "ip_src",
  "ip_dst",
  "gnv_data",
  "nd_target",
  "arp_sha",
  "arp_tha",
] as const;

/**
 * A key from `emptyFlowKey` with `raw`'s values, as a parser builds one:
 * its other fields set, and of its byte fields only those `touched` says
 * written (through the view their first read makes), the rest never read.
 * Returned with the plain key of the same values, the others zeros.
 */
function builtKey(raw: Uint8Array, touched: boolean[]): { built: FlowKey; plain: FlowKey } {
  const plain = flowKeyCodec.decode(raw);
  const built = emptyFlowKey() as Record<string, unknown>;
  for (const f of flowKeyCodec.fields) {
    const i = BYTE_FIELDS.indexOf(f.name as typeof BYTE_FIELDS[number]);
    if (f.pad) continue;
    if (i < 0) built[f.name] = plain[f.name as keyof FlowKey];
    else if (touched[i]) (built[f.name] as Uint8Array).set(plain[BYTE_FIELDS[i]]);
    else plain[BYTE_FIELDS[i]] = new Uint8Array(f.size);
  }
  return { built: built as unknown as FlowKey, plain };
}

Deno.test("a key built empty encodes as the plain key of its values, unread byte fields zeros", () => {
  const size = flowKeyCodec.size;
  const zeroPads = (r: Uint8Array) => {
    for (const f of flowKeyCodec.fields) if (f.pad) r.fill(0, f.offset, f.offset + f.size);
    return r;
  };
  const raw = fc.uint8Array({ minLength: size, maxLength: size }).map(zeroPads);
  const touched = fc.array(fc.boolean(), { minLength: 10, maxLength: 10 });
  fc.assert(fc.property(raw, touched, raw, touched, (kr, kt, mr, mt) => {
    const k = builtKey(kr, kt), m = builtKey(mr, mt);
    const whole = new Uint8Array(size);
    encodeFlowKey(k.built, whole);
    assertEquals(whole, flowKeyCodec.encode(k.plain));
    // Under a mask built the same way, and under a plain mask: each side
    // is read where its bytes are.
    const maskOut = new Uint8Array(size);
    const fields = encodeFlowMask(m.built, maskOut);
    const maskBytes = flowKeyCodec.encode(m.plain);
    assertEquals(maskOut, maskBytes);
    assertEquals(fields, encodeFlowMask(m.plain, new Uint8Array(size)));
    const masked = whole.map((b, i) => b & maskBytes[i]);
    for (const mask of [m.built, m.plain]) {
      // Another key's bytes there first (padding aside: no encoder writes it).
      const out = zeroPads(new Uint8Array(size).fill(0x5a));
      encodeFlowKey(k.built, out, 0, mask, fields);
      assertEquals(out, masked);
    }
    const out = new Uint8Array(size);
    encodeFlowKey(k.plain, out, 0, m.built, fields);
    assertEquals(out, masked);
    // A copy is the same key and shares nothing with it.
    const copy = copyFlowKey(k.built);
    assertEquals(copy, k.plain);
    copy.ip_dst[0] ^= 1;
    assertEquals(k.built, k.plain);
  }));
});

Deno.test("a built key's byte field assigned an array is that array, as a plain key's", () => {
  const k = emptyFlowKey();
  k.ip_dst[0] = 10;
  const mine = new Uint8Array(16);
  k.ip_dst = mine;
  assert(k.ip_dst === mine);
  mine[3] = 7;
  const out = new Uint8Array(flowKeyCodec.size);
  encodeFlowKey(k, out);
  const at = flowKeyCodec.fields.find((f) => f.name === "ip_dst")!.offset;
  assertEquals([...out.subarray(at, at + 4)], [0, 0, 0, 7]);
  // A read field's view is kept: what is written through it stays.
  k.eth_src[5] = 1;
  assertEquals(k.eth_src[5], 1);
});

Deno.test("an assigned array of the wrong size writes its field's size, never its neighbour", () => {
  // A short array reads as zeros past its end; a long one stops at the
  // field's end, whatever bytes the output held there.
  const fieldAt = (name: string) => flowKeyCodec.fields.find((f) => f.name === name)!.offset;
  for (const k of [emptyFlowKey(), plainFlowKey(emptyFlowKey())]) {
    const m = plainFlowKey(emptyFlowKey());
    k.arp_tha = new Uint8Array([1, 2, 3]);
    m.arp_tha = new Uint8Array(6).fill(0xff);
    k.eth_src = new Uint8Array(20).fill(7);
    m.eth_src = new Uint8Array(20).fill(0xff);
    const out = new Uint8Array(flowKeyCodec.size).fill(0x5a);
    encodeFlowKey(k, out, 0, m);
    const tha = fieldAt("arp_tha"), src = fieldAt("eth_src"), dst = fieldAt("eth_dst");
    assertEquals([...out.subarray(tha, tha + 6)], [1, 2, 3, 0, 0, 0]);
    assertEquals([...out.subarray(src, src + 6)], [7, 7, 7, 7, 7, 7]);
    assertEquals([...out.subarray(dst, dst + 6)], [0, 0, 0, 0, 0, 0]);
    const mask = new Uint8Array(flowKeyCodec.size).fill(0x5a);
    encodeFlowMask(k, mask);
    assertEquals([...mask.subarray(tha, tha + 6)], [1, 2, 3, 0, 0, 0]);
    assertEquals([...mask.subarray(dst, dst + 6)], [0, 0, 0, 0, 0, 0]);
  }
});

Deno.test("a built key's byte fields are accessors: spread it through plainFlowKey", () => {
  const k = emptyFlowKey();
  k.in_port = 3;
  k.ip_src[0] = 192;
  assert(isSlabFlowKey(k) && !isSlabFlowKey(decodeFlowKey(new Uint8Array(flowKeyCodec.size))));
  // What a spread keeps and loses, and the two ways to keep it all.
  assertEquals("ip_src" in { ...k }, false);
  const plain = plainFlowKey(k);
  assertEquals({ ...plain }.ip_src[0], 192);
  assertEquals(Object.keys(plain), flowKeyCodec.fields.filter((f) => !f.pad).map((f) => f.name));
  assertEquals(copyFlowKey(k).ip_src[0], 192);
  // The tests' deep comparison sees byte fields: keys that differ there differ.
  const other = emptyFlowKey();
  other.in_port = 3;
  assertThrows(() => assertEquals(k, other), Error);
  assertThrows(() => assertEquals(new Map([[1, k]]), new Map([[1, other]])), Error);
  assertThrows(() => assertEquals(new Set([k]), new Set([other])), Error);
  assertEquals(new Map([[1, k]]), new Map([[1, copyFlowKey(k)]]));
});

Deno.test("a flow key encoded with a mask is its bytes ANDed with the mask's", () => {
  const size = flowKeyCodec.size;
  const key = fc.uint8Array({ minLength: size, maxLength: size }).map((raw) => {
    for (const f of flowKeyCodec.fields) if (f.pad) raw.fill(0, f.offset, f.offset + f.size);
    return raw;
  });
  fc.assert(fc.property(key, key, (k, m) => {
    const out = new Uint8Array(size);
    encodeFlowKey(flowKeyCodec.decode(k), out, 0, flowKeyCodec.decode(m));
    assertEquals(out, k.map((b, i) => b & m[i]));
  }));
});

Deno.test("a key encoded under a mask's fields is its bytes ANDed, over any bytes there", () => {
  const size = flowKeyCodec.size;
  const zeroPads = (raw: Uint8Array) => {
    for (const f of flowKeyCodec.fields) if (f.pad) raw.fill(0, f.offset, f.offset + f.size);
    return raw;
  };
  const key = fc.uint8Array({ minLength: size, maxLength: size }).map(zeroPads);
  // Masks with whole fields wild, as most are: the key's bytes there are not read.
  const mask = fc.tuple(key, fc.array(fc.boolean(), { minLength: 40, maxLength: 40 })).map(
    ([raw, wild]) => {
      flowKeyCodec.fields.forEach((f, i) => wild[i] && raw.fill(0, f.offset, f.offset + f.size));
      return raw;
    },
  );
  fc.assert(fc.property(key, mask, key, (k, m, before) => {
    const maskOut = before.slice();
    const fields = encodeFlowMask(flowKeyCodec.decode(m), maskOut);
    assertEquals(maskOut, m);
    // The buffer holds another key's bytes first, as a buffer reused per flow does.
    const out = before.slice();
    encodeFlowKey(flowKeyCodec.decode(k), out, 0, flowKeyCodec.decode(m), fields);
    assertEquals(out, k.map((b, i) => b & m[i]));
  }));
});

Deno.test("dotted quads: the fast parser agrees with ipaddr.js on any text", () => {
  const quadish = fc.oneof(
    fc.ipV4(),
    fc.array(fc.oneof(fc.nat(300).map(String), fc.constantFrom("", "00", "01", "x", "-1")), {
      minLength: 1,
      maxLength: 6,
    }).map((parts) => parts.join(".")),
    fc.string(),
  );
  fc.assert(
    fc.property(quadish, (text) => {
      const valid = ipaddr.IPv4.isValidFourPartDecimal(text);
      const bytes = dottedQuad(text);
      assertEquals(bytes !== undefined, valid, text);
      if (bytes) assertEquals([...bytes], ipaddr.IPv4.parse(text).toByteArray());
    }),
    { numRuns: 5000 },
  );
});
