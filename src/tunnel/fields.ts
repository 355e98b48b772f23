/**
 * The match fields: every one warren knows, in Open vSwitch's words, and
 * how each maps onto the datapath's flow key: `nw_dst=10.1.0.0/16` sets
 * `ip_dst` and its mask, `dl_vlan=10` sets twelve bits of `vlan_tci` and
 * the "tagged" bit.
 *
 * Several fields share a member of the key, as in Open vSwitch's own flow
 * structure: `nw_src`, `ipv6_src` and `arp_spa` are all `ip_src`; `tp_src`,
 * `icmp_type` and `icmpv6_type` are all `tp_src`. Which one a member means
 * follows from what the match says the packet is (prereqs.ts), so a name
 * is resolved against that: `nw_src` under `arp` is `arp_spa`, `tp_src`
 * under `icmp` is `icmp_type`.
 *
 * Open vSwitch fields warren has no counterpart for are refused with a
 * sentence saying why ({@link absentField}). How each kind of field reads
 * and prints is field_kinds.ts's; how a whole match prints,
 * match_format.ts's.
 *
 * @module
 */

import { Frag } from "../maps/layouts.ts";
import {
  addrField,
  type FieldDef,
  formatGeneveData,
  formatTcpFlags,
  formatTos,
  formatVlan,
  intField,
  macField,
  parseGeneveData,
  parseTcpFlags,
  parseTunFlags,
  tagged,
  TUN_FLAG_NAMES,
} from "./field_kinds.ts";
import {
  hex,
  MatchError,
  own,
  parseU64,
  parseUint,
  portNumber,
  reservedPort,
  setBits,
  splitMask,
} from "./match.ts";
import {
  ARP,
  type Context,
  describe,
  holds,
  ICMP4,
  ICMP6,
  IP4,
  IP6,
  IP_ANY,
  ND,
  ND_ADVERT,
  ND_SOLICIT,
  orList,
  type Prereq,
  TCP,
  TP,
} from "./prereqs.ts";

const FRAG_NAMES: Record<string, [number, number]> = {
  no: [0, 1],
  yes: [1, 1],
  first: [Frag.FIRST, 3],
  later: [Frag.LATER, 3],
  not_later: [0, 2],
};

const NET = intField(
  "net",
  "net",
  32,
  "the network, stamped by the port the packet came in on (set_field may change it), " +
    "0 for none; Open vSwitch's metadata, when it fits 32 bits",
  { aliases: ["metadata"] },
);

/** Every match field warren knows, in the order dumps print them. */
export const FIELDS: readonly FieldDef[] = [
  {
    name: "in_port",
    help: "the port the packet came in on, by name or number",
    parse(m, text, ports) {
      const reserved = reservedPort(text);
      if (reserved) {
        throw new MatchError(
          `${reserved} is no port packets come in on in warren (${
            reserved === "LOCAL" ? "there is no bridge port" : "an output-only name"
          }); name a port`,
        );
      }
      const n = portNumber(text) ?? ports.number(text);
      if (n === undefined) throw new MatchError(`there is no port named "${text}"`);
      m.key.in_port = n;
      m.mask.in_port = 0xffff;
    },
    format(m, ports) {
      if (m.mask.in_port === 0) return undefined;
      return `in_port=${ports.name(m.key.in_port) ?? m.key.in_port}`;
    },
  },
  {
    ...NET,
    parse(m, text, ports) {
      for (const t of text.split("/")) {
        if (/^(0x[0-9a-fA-F]+|\d+)$/.test(t) && BigInt(t) > 0xffffffffn) {
          throw new MatchError(`${t} does not fit net's 32 bits (Open vSwitch's metadata has 64)`);
        }
      }
      NET.parse(m, text, ports);
    },
  },
  {
    name: "tun_id",
    aliases: ["tunnel_id"],
    help: "the tunnel key: VXLAN/Geneve VNI, GRE key, STT context (value[/mask])",
    bits: 64,
    parse(m, text) {
      const [v, mk] = splitMask(text);
      const value = parseU64(v);
      const mask = mk === undefined ? 2n ** 64n - 1n : parseU64(mk);
      m.mask.tun_id = mask;
      m.key.tun_id = value & mask;
    },
    format(m) {
      if (m.mask.tun_id === 0n) return undefined;
      return m.mask.tun_id === 2n ** 64n - 1n
        ? `tun_id=${m.key.tun_id}`
        : `tun_id=0x${hex(m.key.tun_id)}/0x${hex(m.mask.tun_id)}`;
    },
  },
  // An IPv6 address under tun_src can only mean tun_ipv6_src: warren's
  // spelling from before it had Open vSwitch's, kept because it is
  // unambiguous.
  addrField("tun_src", "tun_src", "any", "the outer IPv4 source address [/prefix]"),
  addrField("tun_dst", "tun_dst", "any", "the outer IPv4 destination address [/prefix]"),
  addrField("tun_ipv6_src", "tun_src", 6, "the outer IPv6 source address [/prefix]"),
  addrField("tun_ipv6_dst", "tun_dst", 6, "the outer IPv6 destination address [/prefix]"),
  intField("tun_tos", "tun_tos", 8, "the outer TOS byte"),
  intField("tun_ttl", "tun_ttl", 8, "the outer TTL"),
  {
    name: "tun_flags",
    help: "tunnel flags, each +set or -clear: oam, df, csum, key (tun_flags=+df-csum)",
    parse: parseTunFlags,
    format(m) {
      const parts = TUN_FLAG_NAMES.filter(([, bit]) => m.mask.tun_flags & bit)
        .map(([n, bit]) => `${m.key.tun_flags & bit ? "+" : "-"}${n}`);
      return parts.length ? `tun_flags=${parts.join("")}` : undefined;
    },
  },
  intField("geneve_class", "gnv_class", 16, "class of the first Geneve option"),
  intField("geneve_type", "gnv_type", 8, "type of the first Geneve option"),
  {
    name: "geneve_data",
    help: "first bytes (up to 8) of the first Geneve option's data, hex (0xdeadbeef[/mask])",
    parse: parseGeneveData,
    format: formatGeneveData,
  },
  macField("dl_src", "eth_src", "Ethernet source [/mask]", ["eth_src"]),
  macField("dl_dst", "eth_dst", "Ethernet destination [/mask]", ["eth_dst"]),
  intField("dl_type", "eth_type", 16, "EtherType (after VLAN tags)", {
    aliases: ["eth_type"],
    hexDigits: 4,
  }),
  {
    ...intField("vlan_tci", "vlan_tci", 16, "the outer VLAN tag's TCI, 0x1000 set when tagged"),
    format: formatVlan,
  },
  {
    ...intField(
      "dl_vlan",
      "vlan_tci",
      12,
      "VLAN id of the outer tag (implies a tag), 0xffff for none",
      {
        implies: tagged,
        printedBy: "vlan_tci",
      },
    ),
    parse(m, text) {
      if (/^(0xffff|65535)$/i.test(text)) {
        // Open vSwitch's "no VLAN tag".
        m.key.vlan_tci = 0;
        m.mask.vlan_tci = 0xffff;
        return;
      }
      const [v, mk] = splitMask(text);
      setBits(
        m,
        "vlan_tci",
        0,
        12,
        parseUint(v, 0x0fff),
        mk === undefined ? 0x0fff : parseUint(mk, 0x0fff),
      );
      tagged(m);
    },
  },
  intField("vlan_vid", "vlan_tci", 13, "VLAN id with 0x1000 for tagged (OpenFlow 1.2's vlan_vid)", {
    printedBy: "vlan_tci",
  }),
  intField("dl_vlan_pcp", "vlan_tci", 3, "VLAN priority of the outer tag (implies a tag)", {
    shift: 13,
    aliases: ["vlan_pcp"],
    implies: tagged,
    printedBy: "vlan_tci",
  }),
  addrField("nw_src", "ip_src", 4, "IPv4 source [/prefix]", IP4, ["ip_src"]),
  addrField("nw_dst", "ip_dst", 4, "IPv4 destination [/prefix]", IP4, ["ip_dst"]),
  addrField("ipv6_src", "ip_src", 6, "IPv6 source [/prefix]", IP6),
  addrField("ipv6_dst", "ip_dst", 6, "IPv6 destination [/prefix]", IP6),
  intField("ipv6_label", "ipv6_label", 20, "IPv6 flow label [/mask]", {
    prereq: IP6,
    hexDigits: 5,
  }),
  addrField("arp_spa", "ip_src", 4, "ARP sender address [/prefix]", ARP),
  addrField("arp_tpa", "ip_dst", 4, "ARP target address [/prefix]", ARP),
  intField("arp_op", "ip_proto", 8, "ARP opcode", { prereq: ARP }),
  macField("arp_sha", "arp_sha", "ARP sender hardware address [/mask]", [], ARP),
  macField("arp_tha", "arp_tha", "ARP target hardware address [/mask]", [], ARP),
  intField("nw_proto", "ip_proto", 8, "IP protocol", { prereq: IP_ANY, aliases: ["ip_proto"] }),
  {
    ...intField("nw_tos", "ip_tos", 6, "the TOS byte's DSCP bits, as the byte (a multiple of 4)", {
      shift: 2,
      inPlace: true,
      prereq: IP_ANY,
    }),
    format: formatTos,
  },
  intField("ip_dscp", "ip_tos", 6, "DSCP, 0..63", {
    shift: 2,
    prereq: IP_ANY,
    printedBy: "nw_tos",
  }),
  intField("nw_ecn", "ip_tos", 2, "ECN, 0..3", {
    prereq: IP_ANY,
    aliases: ["ip_ecn"],
    printedBy: "nw_tos",
  }),
  intField("nw_ttl", "nw_ttl", 8, "IPv4 TTL or IPv6 hop limit", { prereq: IP_ANY }),
  {
    name: "nw_frag",
    aliases: ["ip_frag"],
    help: "fragments: no, yes, first, later or not_later",
    prereq: IP_ANY,
    parse(m, text) {
      const vm = own(FRAG_NAMES, text);
      if (!vm) throw new MatchError(`"${text}" is not no, yes, first, later or not_later`);
      m.key.ip_frag = vm[0];
      m.mask.ip_frag = vm[1];
    },
    format(m) {
      if (!m.mask.ip_frag) return undefined;
      const name = Object.entries(FRAG_NAMES)
        .find(([, [k, mk]]) => k === m.key.ip_frag && mk === m.mask.ip_frag)?.[0];
      return `nw_frag=${name ?? `${m.key.ip_frag}/${m.mask.ip_frag}`}`;
    },
  },
  intField("tp_src", "tp_src", 16, "TCP/UDP/SCTP source port [/mask]", {
    prereq: TP,
    aliases: ["tcp_src", "udp_src", "sctp_src"],
  }),
  intField("tp_dst", "tp_dst", 16, "TCP/UDP/SCTP destination port [/mask]", {
    prereq: TP,
    aliases: ["tcp_dst", "udp_dst", "sctp_dst"],
  }),
  {
    name: "tcp_flags",
    help: "TCP flags: +syn-ack (some flags), syn|ack (all of them) or value/mask, 12 bits",
    prereq: TCP,
    bits: 12,
    parse: parseTcpFlags,
    format: formatTcpFlags,
  },
  intField("icmp_type", "tp_src", 8, "ICMP type", { prereq: ICMP4, aliases: ["icmpv4_type"] }),
  intField("icmp_code", "tp_dst", 8, "ICMP code", { prereq: ICMP4, aliases: ["icmpv4_code"] }),
  intField("icmpv6_type", "tp_src", 8, "ICMPv6 type", { prereq: ICMP6 }),
  intField("icmpv6_code", "tp_dst", 8, "ICMPv6 code", { prereq: ICMP6 }),
  addrField("nd_target", "nd_target", 6, "neighbour discovery target [/prefix]", ND),
  macField(
    "nd_sll",
    "arp_sha",
    "neighbour solicitation's source link-layer address",
    [],
    ND_SOLICIT,
  ),
  macField(
    "nd_tll",
    "arp_tha",
    "neighbour advertisement's target link-layer address",
    [],
    ND_ADVERT,
  ),
];

/**
 * Names that mean another field under another packet type, as in Open
 * vSwitch, where they share storage: `arp,nw_src=…` is `arp_spa`,
 * `icmp,tp_src=…` is `icmp_type`, `icmp6,icmp_type=…` is `icmpv6_type`,
 * `icmp6,icmp_type=135,arp_sha=…` is `nd_sll`.
 */
const VIEWS: readonly [string, string][] = [
  ["nw_src", "arp_spa"],
  ["ip_src", "arp_spa"],
  ["nw_dst", "arp_tpa"],
  ["ip_dst", "arp_tpa"],
  ["nw_proto", "arp_op"],
  ["ip_proto", "arp_op"],
  ["tp_src", "icmp_type"],
  ["tp_src", "icmpv6_type"],
  ["tp_dst", "icmp_code"],
  ["tp_dst", "icmpv6_code"],
  ["icmp_type", "icmpv6_type"],
  ["icmp_code", "icmpv6_code"],
  ["icmpv6_type", "icmp_type"],
  ["icmpv6_code", "icmp_code"],
  ["arp_sha", "nd_sll"],
  ["nd_sll", "arp_sha"],
  ["arp_tha", "nd_tll"],
  ["nd_tll", "arp_tha"],
];

/** Open vSwitch fields warren has no counterpart for, and why. */
const ABSENT_FIELDS: readonly [RegExp, string][] = [
  [/^x{0,2}reg\d+$/, "warren has one table, so no registers to carry between tables"],
  [/^ct_/, "warren does not track connections"],
  [
    /^tun_metadata\d+$/,
    "warren matches the first Geneve option with geneve_class, geneve_type and geneve_data",
  ],
  [/^(mpls_|mpls$)/, "warren does not parse MPLS"],
  [/^(tun_gbp_|tun_erspan_|tun_gtpu_|gtpu_)/, "warren has no VXLAN-GBP, ERSPAN or GTP-U tunnels"],
  [
    /^(pkt_mark|skb_priority|recirc_id|dp_hash|conj_id|packet_type|actset_output|in_port_oxm)$/,
    "it is Open vSwitch's internal state, which warren does not have",
  ],
];

/** Why warren lacks the Open vSwitch field `name`, or undefined if it is none of those. */
export function absentField(name: string): MatchError | undefined {
  const absent = ABSENT_FIELDS.find(([re]) => re.test(name));
  return absent && new MatchError(`${name} is an Open vSwitch field warren lacks: ${absent[1]}`);
}

/** A name and the field it means under some packet type. */
interface Spelling {
  field: FieldDef;
  prereq?: Prereq;
}

const BY_NAME = new Map<string, FieldDef>();
const SPELLINGS = new Map<string, Spelling[]>();
for (const f of FIELDS) {
  BY_NAME.set(f.name, f);
  for (const name of [f.name, ...(f.aliases ?? [])]) {
    SPELLINGS.set(name, [{ field: f, prereq: f.prereq }]);
  }
}
for (const [name, target] of VIEWS) {
  const f = BY_NAME.get(target)!;
  SPELLINGS.get(name)!.push({ field: f, prereq: f.prereq });
}

/** The field called `name` (Open vSwitch's name or an alias), or undefined. */
export function field(name: string): FieldDef | undefined {
  return SPELLINGS.get(name)?.[0].field;
}

/**
 * Whether what `name` may mean depends on the ICMPv6 type the match gives:
 * neighbour discovery's fields, and the ARP fields they share members with.
 */
export function needsIcmpType(name: string): boolean {
  return ICMP_TYPED.has(name);
}

// Asked of each field of each flow: the names are found once.
const ICMP_TYPED = new Set(
  [...SPELLINGS].filter(([, spellings]) =>
    spellings.some((s) => s.prereq?.some((w) => w.includes(",icmp_type=")))
  ).map(([name]) => name),
);

/** Whether `name` is a name a match field goes by, known or not to warren. */
export function isFieldName(name: string): boolean {
  return SPELLINGS.has(name) || ABSENT_FIELDS.some(([re]) => re.test(name));
}

/**
 * The field `name` means in context `c`, for the match item `token`
 * (`name=value`). Throws a MatchError saying what is missing: an unknown
 * field, one warren lacks, or a prerequisite.
 */
export function resolveField(name: string, c: Context, token: string): FieldDef {
  const spellings = SPELLINGS.get(name);
  if (!spellings) {
    const absent = absentField(name);
    if (absent) throw absent;
    throw new MatchError(`${name} is not a match field`);
  }
  const found = spellings.find((s) => holds(s.prereq, c));
  if (found) return found.field;
  const words = [...new Set(spellings.flatMap((s) => s.prereq ?? []))];
  const example = words.find((w) => name.startsWith(`${w}_`)) ?? words[0];
  throw new MatchError(
    `${name} needs ${orList(words)}, ${
      c.eth === undefined
        ? `which the match does not say (for example "${example},${token}")`
        : `and the match says ${describe(c)}`
    }`,
  );
}
