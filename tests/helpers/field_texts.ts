/**
 * Generated text for every field of the field table (values, masks,
 * prefixes, each form a field takes), and what follows from it: the bits
 * of the flow key each field owns, found by parsing many of its texts.
 *
 * @module
 */

import fc from "fast-check";
import { flowKeyCodec } from "../../src/maps/layouts.ts";
import { formatAddr } from "../../src/tunnel/addr.ts";
import { encodeMatch } from "../../src/tunnel/compile.ts";
import { field, FIELDS } from "../../src/tunnel/fields.ts";
import { emptyMatch, type Match, MatchError, type PortNames } from "../../src/tunnel/match.ts";

/**
 * The shorthands a generated match may start with, and the ICMPv6 types
 * neighbour discovery's fields need.
 */
export const SHORTHANDS = [
  "ip",
  "ipv6",
  "arp",
  "tcp",
  "udp",
  "sctp",
  "icmp",
  "tcp6",
  "udp6",
  "sctp6",
  "icmp6",
  "icmp6,icmp_type=135",
  "icmp6,icmp_type=136",
] as const;

/** The ports in_port names. */
export const PORT_NAMES = ["web", "db", "vx0"];

/** Port names and numbers for {@link PORT_NAMES}, numbered from 1. */
export const ports: PortNames = {
  number: (name) => (PORT_NAMES.includes(name) ? PORT_NAMES.indexOf(name) + 1 : undefined),
  name: (n) => PORT_NAMES[n - 1],
};

const hex = (n: number | bigint) => `0x${n.toString(16)}`;
const num = (n: number) => fc.boolean().map((h) => (h ? hex(n) : String(n)));
/** Any `n` bytes. */
export const bytesOf = (n: number): fc.Arbitrary<Uint8Array> =>
  fc.uint8Array({ minLength: n, maxLength: n });
const withMask = (value: fc.Arbitrary<string>, mask: fc.Arbitrary<string> = value) =>
  fc.tuple(value, fc.option(mask)).map(([v, m]) => (m === null ? v : `${v}/${m}`));
const macText = bytesOf(6).map((b) =>
  Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(":")
);

/** `value` or `value/mask` for a field of `width` bits. */
function intText(width: number): fc.Arbitrary<string> {
  const n = fc.integer({ min: 0, max: 2 ** width - 1 });
  return withMask(n.chain(num), n.map(hex));
}

/** An address, alone, with a prefix, or with a mask in address form. */
function addrText(v6: boolean): fc.Arbitrary<string> {
  const n = v6 ? 16 : 4;
  const text = (b: Uint8Array) =>
    formatAddr(Uint8Array.from({ length: 16 }, (_, i) => b[i] ?? 0), v6);
  return fc.tuple(
    bytesOf(n).map(text),
    fc.oneof(
      fc.constant(""),
      fc.integer({ min: 0, max: n * 8 }).map((p) => `/${p}`),
      bytesOf(n).map((m) => `/${text(m)}`),
    ),
  ).map(([a, s]) => a + s);
}

const geneveBytes = fc.integer({ min: 1, max: 8 }).chain((n) => bytesOf(n)).map((b) =>
  "0x" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")
);

/** Open vSwitch's names of TCP's flags. */
const TCP_FLAGS = ["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns", "[200]", "[400]"];

/** Text for every field of the field table. */
export const TEXTS: Readonly<Record<string, fc.Arbitrary<string>>> = {
  in_port: fc.constantFrom(...PORT_NAMES),
  net: withMask(fc.bigInt(0n, 2n ** 32n - 1n).map(hex)),
  tun_id: withMask(fc.bigInt(0n, 2n ** 64n - 1n).map(hex)),
  tun_src: fc.boolean().chain(addrText),
  tun_dst: fc.boolean().chain(addrText),
  tun_ipv6_src: addrText(true),
  tun_ipv6_dst: addrText(true),
  tun_tos: intText(8),
  tun_ttl: intText(8),
  tun_flags: fc.array(
    fc.tuple(fc.constantFrom("+", "-"), fc.constantFrom("key", "csum", "df", "oam")),
    { minLength: 1, maxLength: 4 },
  ).map((fs) => fs.map(([s, f]) => s + f).join("")),
  geneve_class: intText(16),
  geneve_type: intText(8),
  geneve_data: withMask(geneveBytes),
  dl_src: withMask(macText),
  dl_dst: withMask(macText),
  dl_type: intText(16),
  vlan_tci: intText(16),
  dl_vlan: intText(12),
  vlan_vid: intText(13),
  dl_vlan_pcp: intText(3),
  nw_src: addrText(false),
  nw_dst: addrText(false),
  ipv6_src: addrText(true),
  ipv6_dst: addrText(true),
  arp_spa: addrText(false),
  arp_tpa: addrText(false),
  arp_op: intText(8),
  nw_proto: intText(8),
  nw_tos: withMask(fc.integer({ min: 0, max: 63 }).map((d) => String(d * 4))),
  ip_dscp: intText(6),
  nw_ecn: intText(2),
  nw_frag: fc.constantFrom("no", "yes", "first", "later", "not_later"),
  tp_src: intText(16),
  tp_dst: intText(16),
  icmp_type: intText(8),
  icmp_code: intText(8),
  icmpv6_type: intText(8),
  icmpv6_code: intText(8),
  nw_ttl: intText(8),
  ipv6_label: intText(20),
  arp_sha: withMask(macText),
  arp_tha: withMask(macText),
  tcp_flags: fc.oneof(
    fc.uniqueArray(fc.constantFrom(...TCP_FLAGS), { minLength: 1, maxLength: 6 }).chain((fs) =>
      fc.array(fc.constantFrom("+", "-"), { minLength: fs.length, maxLength: fs.length })
        .map((signs) => fs.map((f, i) => signs[i] + f).join(""))
    ),
    fc.uniqueArray(fc.constantFrom(...TCP_FLAGS), { maxLength: 4 }).map((fs) =>
      fs.join("|") || "0"
    ),
    intText(12),
  ),
  nd_target: addrText(true),
  nd_sll: withMask(macText),
  nd_tll: withMask(macText),
};

/** A field of the table and a text it takes. */
export interface FieldText {
  /** The field's name. */
  name: string;
  /** Its value, as written after `name=`. */
  text: string;
}

/** Any field of the table with a text it takes. */
export const arbField: fc.Arbitrary<FieldText> = fc.constantFrom(...FIELDS.map((f) => f.name))
  .chain((name) => TEXTS[name].map((text) => ({ name, text })));

/**
 * The match the fields make, parsed in order onto an empty one; a field
 * that refuses its text given the ones before it (a tunnel address of the
 * other family) is left out when `skipRefused`, else it throws.
 */
export function parsed(items: FieldText[], skipRefused = false): Match {
  const m = emptyMatch();
  for (const { name, text } of items) {
    try {
      field(name)!.parse(m, text, ports);
    } catch (err) {
      if (!(skipRefused && err instanceof MatchError)) throw err;
    }
  }
  return m;
}

/**
 * The bits of the encoded flow key each field can set, whatever its mask:
 * the union of its masks over 300 generated texts. A field sets all of its
 * own bits (wildcarding those its mask leaves out).
 */
export const OWN_BITS: ReadonlyMap<string, Uint8Array> = new Map(FIELDS.map((f) => {
  const bits = new Uint8Array(flowKeyCodec.size);
  // A field without a generator owns nothing here; match_test names it.
  const texts = TEXTS[f.name] ? fc.sample(TEXTS[f.name], { numRuns: 300, seed: 1 }) : [];
  for (const text of texts) {
    encodeMatch(parsed([{ name: f.name, text }])).maskBytes.forEach((b, i) => bits[i] |= b);
  }
  return [f.name, bits];
}));
