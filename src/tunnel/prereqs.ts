/**
 * What a match says the packet is, and what each field needs it to be.
 *
 * Shorthands (`ip`, `tcp6` …) and the fields `dl_type` and `nw_proto` pin
 * down a packet type: its {@link Context}. A field makes sense under some
 * packet types only (its prerequisite: `nw_dst` needs `ip`), and a name
 * several fields share means the one whose prerequisite holds. Neighbour
 * discovery's fields also need the ICMPv6 type (135 or 136, with code 0
 * or left out, as Open vSwitch has it: the code's value counts). Open vSwitch drops a field whose
 * prerequisite the match lacks, silently; warren refuses it, naming what
 * is missing.
 *
 * @module
 */

import { hex, type Match, own } from "./match.ts";

const ETH_IP = 0x0800;
const ETH_IPV6 = 0x86dd;
const ETH_ARP = 0x0806;
const IPPROTO_ICMPV6 = 58;

/** Shorthands: a word that sets dl_type and maybe nw_proto. */
export const SHORTHANDS: Readonly<Record<string, { eth: number; proto?: number }>> = {
  ip: { eth: ETH_IP },
  ipv6: { eth: ETH_IPV6 },
  arp: { eth: ETH_ARP },
  tcp: { eth: ETH_IP, proto: 6 },
  udp: { eth: ETH_IP, proto: 17 },
  sctp: { eth: ETH_IP, proto: 132 },
  icmp: { eth: ETH_IP, proto: 1 },
  tcp6: { eth: ETH_IPV6, proto: 6 },
  udp6: { eth: ETH_IPV6, proto: 17 },
  sctp6: { eth: ETH_IPV6, proto: 132 },
  icmp6: { eth: ETH_IPV6, proto: 58 },
};

/**
 * What a match pins down about the packet: its EtherType, IP protocol and
 * ICMPv6 type.
 */
export interface Context {
  /** The EtherType, when the match gives it exactly. */
  eth?: number;
  /** The IP protocol, when the match gives it exactly (IP and IPv6 only). */
  proto?: number;
  /** The ICMPv6 type, when the match gives it exactly. */
  icmpType?: number;
  /** The ICMPv6 code's value (0 when wild), beside a type. */
  icmpCode?: number;
}

function context(eth: number | undefined, proto: number | undefined): Context {
  return { eth, proto: eth === ETH_IP || eth === ETH_IPV6 ? proto : undefined };
}

/** The context of a match. */
export function contextOf(m: Match): Context {
  const c = context(
    m.mask.eth_type === 0xffff ? m.key.eth_type : undefined,
    m.mask.ip_proto === 0xff ? m.key.ip_proto : undefined,
  );
  // ICMPv6's type and code are tp_src and tp_dst. The code's value is
  // what counts, as in Open vSwitch: a code left out is 0.
  if (
    c.eth === ETH_IPV6 && c.proto === IPPROTO_ICMPV6 && (m.mask.tp_src & 0xff) === 0xff &&
    m.key.tp_src <= 0xff
  ) {
    c.icmpType = m.key.tp_src;
    c.icmpCode = m.key.tp_dst;
  }
  return c;
}

/** The context shorthands give, applied in order as to a match. */
export function shorthandContext(words: readonly string[]): Context {
  let eth: number | undefined;
  let proto: number | undefined;
  for (const w of words) {
    eth = SHORTHANDS[w].eth;
    proto = SHORTHANDS[w].proto ?? proto;
  }
  return context(eth, proto);
}

/**
 * The packet types a field accepts, as a match says them: a shorthand,
 * maybe with an ICMPv6 type (`icmp6,icmp_type=135`). The field makes sense
 * under any of them.
 */
export type Prereq = readonly string[];

/** IPv4. */
export const IP4: Prereq = ["ip"];
/** IPv6. */
export const IP6: Prereq = ["ipv6"];
/** Either IP. */
export const IP_ANY: Prereq = ["ip", "ipv6"];
/** ARP. */
export const ARP: Prereq = ["arp"];
/** A protocol with ports, over either IP. */
export const TP: Prereq = ["tcp", "udp", "sctp", "tcp6", "udp6", "sctp6"];
/** ICMP. */
export const ICMP4: Prereq = ["icmp"];
/** ICMPv6. */
export const ICMP6: Prereq = ["icmp6"];
/** TCP over either IP. */
export const TCP: Prereq = ["tcp", "tcp6"];
/** A neighbour solicitation. */
export const ND_SOLICIT: Prereq = ["icmp6,icmp_type=135"];
/** A neighbour advertisement. */
export const ND_ADVERT: Prereq = ["icmp6,icmp_type=136"];
/** Either neighbour discovery message. */
export const ND: Prereq = [...ND_SOLICIT, ...ND_ADVERT];

/** What a word of a {@link Prereq} says the packet is. */
type PacketType = { eth: number; proto?: number; icmpType?: number };
// Each field's prerequisite is asked about once per flow: its words are
// read once, not split again each time.
const packetTypes = new Map<string, PacketType>();

/** The packet type a word of a {@link Prereq} names. */
export function packetType(word: string): PacketType {
  let t = packetTypes.get(word);
  if (!t) {
    const [short, type] = word.split(",icmp_type=");
    t = { ...SHORTHANDS[short], icmpType: type === undefined ? undefined : Number(type) };
    packetTypes.set(word, t);
  }
  return t;
}

/** Whether context `c` meets prerequisite `p` (none always holds). */
export function holds(p: Prereq | undefined, c: Context): boolean {
  if (!p) return true;
  return p.some((word) => {
    const t = packetType(word);
    return c.eth === t.eth && (t.proto === undefined || c.proto === t.proto) &&
      (t.icmpType === undefined || (c.icmpType === t.icmpType && c.icmpCode === 0));
  });
}

const SHORTHAND_LIST = Object.entries(SHORTHANDS);
// A dump asks once per flow, about a handful of contexts: answers by
// EtherType and protocol.
const shorthandMemo = new Map<number, string | undefined>();

/** The shorthand that says `c` exactly, or the EtherType's alone, if any. */
export function shorthandOf(c: Context): string | undefined {
  if (c.eth === undefined) return undefined;
  const memo = c.eth * 512 + (c.proto ?? 256);
  if (shorthandMemo.has(memo)) return shorthandMemo.get(memo);
  const short = (SHORTHAND_LIST.find(([, s]) => s.eth === c.eth && s.proto === c.proto) ??
    SHORTHAND_LIST.find(([, s]) => s.eth === c.eth && s.proto === undefined))?.[0];
  shorthandMemo.set(memo, short);
  return short;
}

/** What `c` says, as a match would say it (`tcp`, `dl_type=0x88cc`). */
export function describe(c: Context): string {
  const short = shorthandOf(c);
  const s = short ? SHORTHANDS[short] : undefined;
  const parts = [short ?? `dl_type=0x${hex(c.eth!).padStart(4, "0")}`];
  if (c.proto !== undefined && s?.proto !== c.proto) parts.push(`nw_proto=${c.proto}`);
  if (c.icmpType !== undefined) parts.push(`icmp_type=${c.icmpType}`);
  if (c.icmpCode) parts.push(`icmp_code=${c.icmpCode}`);
  return parts.join(",");
}

/** "a, b or c". */
export function orList(words: readonly string[]): string {
  return words.length < 2
    ? words.join("")
    : `${words.slice(0, -1).join(", ")} or ${words[words.length - 1]}`;
}

/** Applies a shorthand such as `tcp` to `m`; false when `word` is none. */
export function applyShorthand(m: Match, word: string): boolean {
  const s = own(SHORTHANDS, word);
  if (!s) return false;
  m.key.eth_type = s.eth;
  m.mask.eth_type = 0xffff;
  if (s.proto !== undefined) {
    m.key.ip_proto = s.proto;
    m.mask.ip_proto = 0xff;
  }
  return true;
}
