/**
 * The laws the flow code relies on, checked without root on generated
 * input: a parsed match's key is masked; different fields on different bits
 * combine to their union in any order; the encoded key and mask are the members'
 * bytes (so the kernel's bytewise masking is the members' masking) and
 * decode back; a packet trace builds from a match hits that match; prefix
 * masks and addresses; a compiled action list decompiles to text that
 * compiles to the same entry.
 */
import fc from "fast-check";
import ipaddr from "ipaddr.js";
import { assert, assertEquals, assertThrows } from "./helpers/assert.ts";
import {
  decodeFlowKey,
  encodeFlowKey,
  type FlowKey,
  flowKeyCodec,
  tunKeyCodec,
} from "../src/maps/layouts.ts";
import { formatAddr, maskPrefix, parseAddr, parseCidr, prefixMask } from "../src/tunnel/addr.ts";
import {
  compileActions,
  CompileError,
  decodeGeneveOptions,
  decompileActions,
  encodeGeneveOptions,
  encodeMatch,
  type PortLookup,
} from "../src/tunnel/compile.ts";
import { field, FIELDS, resolveField } from "../src/tunnel/fields.ts";
import { emptyKey, emptyMatch, MatchError } from "../src/tunnel/match.ts";
import { applyShorthand, contextOf, holds, packetType } from "../src/tunnel/prereqs.ts";
import type { ActionSpec, GeneveOption, SetTunnel } from "../src/tunnel/flow_actions.ts";
import { buildPacket, frameKey } from "../src/tunnel/packet.ts";
import type { Port } from "../src/tunnel/port.ts";
import {
  arbField,
  bytesOf,
  OWN_BITS,
  parsed,
  ports,
  SHORTHANDS,
  TEXTS,
} from "./helpers/field_texts.ts";
import { keyDifference, MEMBERS, memberText } from "./helpers/packet_keys.ts";

/** The member's value with only the bits of `mask` kept. */
function masked<T extends FlowKey[keyof FlowKey]>(value: T, mask: T): T {
  if (value instanceof Uint8Array) return value.map((b, i) => b & (mask as Uint8Array)[i]) as T;
  if (typeof value === "bigint") return (value & (mask as bigint)) as T;
  // Unsigned: a u32 member (net, ipv6_label) may have its top bit set.
  return (((value as number) & (mask as number)) >>> 0) as T;
}

Deno.test("the generators cover every field of the field table", () => {
  assertEquals(FIELDS.map((f) => f.name).filter((n) => !TEXTS[n]), []);
});

Deno.test("after any fields, a match's key has no bit its mask lacks", () => {
  fc.assert(fc.property(fc.array(arbField, { maxLength: 6 }), (items) => {
    const m = parsed(items, true);
    const unmasked = MEMBERS.filter((k) =>
      memberText(masked(m.key[k], m.mask[k])) !== memberText(m.key[k])
    );
    assertEquals(unmasked, [], items.map((i) => `${i.name}=${i.text}`).join(","));
  }));
});

/** Whether some match can hold both fields: some packet type each allows is the same packet. */
function together(f: string, g: string): boolean {
  const words = (name: string) => field(name)!.prereq ?? [undefined];
  const meet = (a?: string, b?: string) => {
    if (a === undefined || b === undefined) return true;
    const [x, y] = [packetType(a), packetType(b)];
    const agree = (p?: number, q?: number) => p === undefined || q === undefined || p === q;
    return x.eth === y.eth && agree(x.proto, y.proto) && agree(x.icmpType, y.icmpType);
  };
  return words(f).some((a) => words(g).some((b) => meet(a, b)));
}

Deno.test("two fields of one match on different bits combine to their union, in either order", () => {
  let combined = 0;
  fc.assert(
    fc.property(arbField, arbField, (f, g) => {
      if (!together(f.name, g.name)) return;
      const [fb, gb] = [OWN_BITS.get(f.name)!, OWN_BITS.get(g.name)!];
      if (fb.some((x, i) => x & gb[i])) return;
      const a = encodeMatch(parsed([f]));
      const b = encodeMatch(parsed([g]));
      combined++;
      const union = {
        keyBytes: a.keyBytes.map((x, i) => x | b.keyBytes[i]),
        maskBytes: a.maskBytes.map((x, i) => x | b.maskBytes[i]),
      };
      const what = `${f.name}=${f.text},${g.name}=${g.text}`;
      assertEquals(encodeMatch(parsed([f, g])), union, what);
      assertEquals(encodeMatch(parsed([g, f])), union, what);
    }),
    { numRuns: 2000 },
  );
  assert.ok(combined > 500, `only ${combined} pairs were on different bits`);
});

Deno.test("dl_vlan and dl_vlan_pcp make one tagged TCI, in either order", () => {
  fc.assert(fc.property(
    fc.integer({ min: 0, max: 4095 }),
    fc.integer({ min: 0, max: 7 }),
    (vid, pcp) => {
      for (const order of [[0, 1], [1, 0]]) {
        const items = [{ name: "dl_vlan", text: String(vid) }, {
          name: "dl_vlan_pcp",
          text: String(pcp),
        }];
        const m = parsed(order.map((i) => items[i]));
        assertEquals([m.key.vlan_tci, m.mask.vlan_tci], [0x1000 | vid | (pcp << 13), 0xffff]);
      }
    },
  ));
});

const arbKey = fc.uint8Array({ minLength: flowKeyCodec.size, maxLength: flowKeyCodec.size })
  .map((b) => decodeFlowKey(b));

Deno.test("masking members is masking their encoded bytes, and both decode back", () => {
  fc.assert(fc.property(arbKey, arbKey, (key, mask) => {
    const memberwise = emptyKey();
    for (const k of MEMBERS) (memberwise as Record<string, unknown>)[k] = masked(key[k], mask[k]);
    const { keyBytes, maskBytes } = encodeMatch({ key, mask });
    const bytes = new Uint8Array(flowKeyCodec.size);
    encodeFlowKey(memberwise, bytes);
    assertEquals(keyBytes, bytes);
    assertEquals(keyDifference(decodeFlowKey(keyBytes), memberwise), undefined);
    assertEquals(keyDifference(decodeFlowKey(maskBytes), mask), undefined);
    // The generic codec agrees with the hand-written one.
    assertEquals(flowKeyCodec.encode(memberwise), bytes);
  }));
});

/** Matches on frame fields that say what packet they want: prerequisites met. */
const arbFrameMatch = fc.record({
  short: fc.constantFrom(...SHORTHANDS),
  fields: fc.array(arbField, { maxLength: 8 }),
}).map(({ short, fields }) => {
  const m = emptyMatch();
  const [shorthand, type] = short.split(",icmp_type=");
  applyShorthand(m, shorthand);
  if (type) field("icmpv6_type")!.parse(m, type, ports);
  const used = [];
  const defs = [];
  for (const f of fields) {
    // Only fields the shorthand allows, and none that would change it.
    // nw_proto could name an IPv6 extension header, which no packet ends on.
    if (["in_port", "net", "dl_type", "nw_proto"].includes(f.name)) continue;
    if (f.name.startsWith("tun_") || f.name.startsWith("geneve_")) continue;
    // Under the shorthand a name may mean another field (tp_src under
    // icmp6 is icmpv6_type), which may refuse the text.
    try {
      const def = resolveField(f.name, contextOf(m), `${f.name}=${f.text}`);
      def.parse(m, f.text, ports);
      defs.push(def);
    } catch (err) {
      if (err instanceof MatchError) continue;
      throw err;
    }
    used.push(f);
  }
  return {
    m,
    text: [short, ...used.map((f) => `${f.name}=${f.text}`)].join(","),
    // A later field may have changed what an earlier one needs (the ICMPv6
    // type or code under neighbour discovery's fields).
    met: defs.every((d) => holds(d.prereq, contextOf(m))),
  };
}).filter(({ m, met }) =>
  met &&
  // Matches no packet can meet: ports or TCP flags of a later fragment (it
  // carries no transport header), TCI bits of an untagged packet.
  !((m.key.ip_frag & m.mask.ip_frag) === 3 && (m.mask.tp_src | m.mask.tp_dst | m.mask.tcp_flags)) &&
  !((m.mask.vlan_tci & 0x1000) && !(m.key.vlan_tci & 0x1000) && m.key.vlan_tci)
);

Deno.test("the packet trace builds for a match hits that match", () => {
  fc.assert(fc.property(arbFrameMatch, ({ m, text }) => {
    const packet = emptyKey();
    frameKey(buildPacket(m), packet);
    const miss = MEMBERS.filter((k) =>
      memberText(masked(packet[k], m.mask[k])) !== memberText(m.key[k])
    );
    assertEquals(miss, [], text);
    // As the datapath looks it up: the packet's bytes under the mask's.
    const { keyBytes, maskBytes } = encodeMatch(m);
    const bytes = new Uint8Array(flowKeyCodec.size);
    encodeFlowKey(packet, bytes);
    assertEquals(bytes.map((b, i) => b & maskBytes[i]), keyBytes, text);
  }));
});

Deno.test("a prefix's mask has that many leading ones and reads back as that prefix", () => {
  fc.assert(fc.property(fc.boolean(), fc.integer({ min: 0, max: 128 }), (v6, p) => {
    const n = v6 ? 128 : 32;
    const mask = prefixMask(Math.min(p, n));
    const bits = Array.from(mask, (b) => b.toString(2).padStart(8, "0")).join("");
    assertEquals(bits, "1".repeat(Math.min(p, n)).padEnd(128, "0"));
    assertEquals(maskPrefix(mask, v6), Math.min(p, n));
  }));
});

Deno.test("only a contiguous mask has a prefix length", () => {
  fc.assert(fc.property(fc.boolean(), bytesOf(16), (v6, raw) => {
    const n = v6 ? 16 : 4;
    const mask = new Uint8Array(16);
    mask.set(raw.subarray(0, n));
    const bits = Array.from(mask.subarray(0, n), (b) => b.toString(2).padStart(8, "0")).join("");
    const ones = bits.indexOf("0") < 0 ? bits.length : bits.indexOf("0");
    const contiguous = !bits.slice(ones).includes("1");
    assertEquals(maskPrefix(mask, v6), contiguous ? ones : undefined);
  }));
});

Deno.test("an address field takes /prefix and the same mask written out alike", () => {
  fc.assert(fc.property(fc.boolean(), bytesOf(16), fc.integer({ min: 0, max: 128 }), (v6, b, p) => {
    const prefix = Math.min(p, v6 ? 128 : 32);
    const a = formatAddr(b, v6);
    const name = v6 ? "ipv6_src" : "nw_src";
    const byPrefix = parsed([{ name, text: `${a}/${prefix}` }]);
    const byMask = parsed([{ name, text: `${a}/${formatAddr(prefixMask(prefix), v6)}` }]);
    assertEquals(encodeMatch(byPrefix), encodeMatch(byMask));
    assertEquals(byPrefix.mask.ip_src, prefixMask(prefix));
  }));
});

Deno.test("addresses: text and bytes round trip, and parseAddr agrees with ipaddr.js", () => {
  fc.assert(fc.property(fc.boolean(), bytesOf(16), (v6, raw) => {
    const bytes = v6 ? raw : Uint8Array.from({ length: 16 }, (_, i) => (i < 4 ? raw[i] : 0));
    const a = parseAddr(formatAddr(bytes, v6));
    assertEquals([a.v6, a.bytes], [v6, bytes]);
  }));
  fc.assert(fc.property(fc.oneof(fc.ipV4(), fc.ipV6(), fc.string()), (text) => {
    const valid = ipaddr.IPv4.isValidFourPartDecimal(text) || ipaddr.IPv6.isValid(text);
    if (!valid) return void assertThrows(() => parseAddr(text), RangeError);
    const a = parseAddr(text);
    const theirs = ipaddr.parse(text).toByteArray();
    assertEquals([a.v6, Array.from(a.bytes.subarray(0, theirs.length))], [
      theirs.length === 16,
      theirs,
    ]);
  }));
  fc.assert(
    fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), fc.integer({ min: 0, max: 129 }), (text, p) => {
      const max = text.includes(":") ? 128 : 32;
      if (p > max) return void assertThrows(() => parseCidr(`${text}/${p}`), RangeError);
      assertEquals(parseCidr(`${text}/${p}`), { ...parseAddr(text), prefix: p });
    }),
  );
});

const arbGeneve: fc.Arbitrary<GeneveOption> = fc.record({
  class: fc.integer({ min: 0, max: 0xffff }),
  type: fc.integer({ min: 0, max: 0xff }),
  data: fc.integer({ min: 0, max: 3 }).chain((w) => bytesOf(w * 4)),
}).map((o) => ({ ...o }));

Deno.test("Geneve options encode to TLVs that decode back", () => {
  fc.assert(fc.property(fc.array(arbGeneve, { maxLength: 4 }), (opts) => {
    const total = opts.reduce((n, o) => n + 4 + o.data.length, 0);
    if (total > 32) return void assertThrows(() => encodeGeneveOptions(opts), CompileError);
    assertEquals(decodeGeneveOptions(encodeGeneveOptions(opts)), opts);
  }));
});

const v4 = (last: number) => parseAddr(`192.0.2.${last}`);
const tunnel = (name: string, number: number, over: Partial<Port>): Port => ({
  kind: "tunnel",
  name,
  number,
  proto: "vxlan",
  device: "u0",
  remote: "flow",
  keyIn: "flow",
  keyOut: "flow",
  dstPort: 4789,
  ttl: 64,
  tos: 0,
  df: true,
  csum: false,
  seq: false,
  mssClamp: false,
  net: 0,
  ...over,
} as Port);
const PORTS: Port[] = [
  { kind: "local", name: "web", number: 1, device: "wl0", xdp: false, net: 0 },
  { kind: "local", name: "db", number: 2, device: "wl1", xdp: true, net: 0 },
  tunnel("vx0", 3, {}),
  tunnel("gnv0", 4, { proto: "geneve", dstPort: 6081 }),
  tunnel("gre0", 5, { proto: "gre", remote: v4(9), keyOut: 7n, keyIn: 7n }),
];
const lookup: PortLookup = {
  byName: (name) => PORTS.find((p) => p.name === name),
  byNumber: (n) => PORTS.find((p) => p.number === n),
};

const arbSetTunnel: fc.Arbitrary<SetTunnel> = fc.record({
  id: fc.bigInt(0n, 2n ** 24n - 1n),
  dst: fc.integer({ min: 1, max: 254 }).map(v4),
  src: fc.integer({ min: 1, max: 254 }).map(v4),
  tos: fc.integer({ min: 0, max: 255 }),
  ttl: fc.integer({ min: 0, max: 255 }),
  df: fc.constant(true),
  csum: fc.constant(true),
  oam: fc.constant(true),
  geneve: fc.array(arbGeneve, { minLength: 1, maxLength: 2 }),
}, { requiredKeys: [] }).map((st) => ({ type: "set_tunnel" as const, ...st }));

const arbActions: fc.Arbitrary<ActionSpec[]> = fc.oneof(
  fc.constant<ActionSpec[]>([{ type: "drop" }]),
  fc.array(
    fc.oneof(
      fc.constantFrom(...PORTS.map((p) => ({ type: "output" as const, port: p.name }))),
      arbSetTunnel,
      fc.constant({ type: "pass" as const }),
    ),
    { minLength: 1, maxLength: 8 },
  ),
);

Deno.test("compiled actions decompile to a list that compiles to the same entry", () => {
  let compiled = 0;
  fc.assert(
    fc.property(arbActions, (list) => {
      let first;
      try {
        first = compileActions(list, lookup);
      } catch {
        return; // a list the datapath cannot carry out; compile says why elsewhere
      }
      compiled++;
      const back = decompileActions(
        first.actions,
        (slot) => tunKeyCodec.decode(first.tunKeyBytes[slot]),
        lookup,
      );
      assertEquals(
        compileActions(back, lookup),
        first,
        JSON.stringify(back, (_, v) => typeof v === "bigint" ? String(v) : v),
      );
    }),
    { numRuns: 500 },
  );
  assert.ok(compiled > 100, `only ${compiled} of 500 action lists compiled`);
});
