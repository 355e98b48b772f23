/**
 * Generated packets, each as the match that makes `buildPacket` build it:
 * every member of the flow key the packet carries is given under a full
 * mask, so the match's key is exactly the key a parser must extract from
 * the frame (the tunnel metadata and in_port stay zero: parse_frame does
 * not set them).
 *
 * The combinations follow what a frame can be: IPv4, IPv6 (with or without
 * a fragment header), ARP, or any other EtherType, optionally under one
 * VLAN tag; transport ports for TCP, UDP and SCTP (and TCP's flags), type
 * and code for ICMP and ICMPv6 (and neighbour discovery's target and
 * link-layer addresses), nothing for other protocols or later fragments.
 *
 * @module
 */

import fc from "fast-check";
import {
  decodeFlowKey,
  encodeFlowKey,
  type FlowKey,
  flowKeyCodec,
  Frag,
} from "../../src/maps/layouts.ts";
import type { FieldDef } from "../../src/tunnel/field_kinds.ts";
import { FIELDS } from "../../src/tunnel/fields.ts";
import { emptyMatch, type Match } from "../../src/tunnel/match.ts";
import { contextOf, holds } from "../../src/tunnel/prereqs.ts";
import { OWN_BITS } from "./field_texts.ts";
import { fromHex, scapyJson, toHex } from "./scapy.ts";

/** A flow key with every bit set: the full mask of every member. */
export const FULL: FlowKey = decodeFlowKey(new Uint8Array(flowKeyCodec.size).fill(0xff));

/** The members of a flow key, in struct order. */
export const MEMBERS = flowKeyCodec.fields.filter((f) => !f.pad).map((f) =>
  f.name as keyof FlowKey
);

/** EtherTypes of VLAN tags: a frame "of" one of these would be read as tagged. */
const VLAN_TYPES = [0x8100, 0x88a8];
/** IPv6 extension headers the parsers walk past: not a final protocol. */
const IPV6_EXT = [0, 43, 44, 60];
/** Protocols whose header the parsers read. */
const PARSED = [1, 6, 17, 58, 132];

const byte = fc.integer({ min: 0, max: 0xff });
const port = fc.integer({ min: 0, max: 0xffff });
const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });

/** One generated packet, before it becomes a match. */
export interface PacketSpec {
  /** Ethernet addresses. */
  ethSrc: Uint8Array;
  /** Ethernet destination. */
  ethDst: Uint8Array;
  /** The outer VLAN tag's TCI, 0x1000 included, or undefined for none. */
  vlan?: number;
  /** What follows Ethernet. */
  l3:
    | {
      kind: "ip";
      v6: boolean;
      src: Uint8Array;
      dst: Uint8Array;
      tos: number;
      ttl: number;
      /** The flow label (IPv6). */
      label: number;
      frag: number;
      proto: number;
      /** Ports, or ICMP type and code; undefined for protocols without. */
      tp?: [number, number];
      /** TCP's flags. */
      tcpFlags?: number;
      /** Neighbour discovery's target and link-layer address options. */
      nd?: { target: Uint8Array; sll?: Uint8Array; tll?: Uint8Array };
    }
    | {
      kind: "arp";
      op: number;
      spa: Uint8Array;
      tpa: Uint8Array;
      sha: Uint8Array;
      tha: Uint8Array;
    }
    | { kind: "other"; ethType: number };
}

const mac = bytes(6);
/** Neighbour discovery: a solicitation or an advertisement, each option there or not. */
const nd = fc.record({
  proto: fc.constant(58),
  tp: fc.tuple(fc.constantFrom(135, 136), fc.constant(0)),
  nd: fc.record({
    target: bytes(16),
    sll: fc.option(mac, { nil: undefined }),
    tll: fc.option(mac, { nil: undefined }),
  }),
});

function ip(v6: boolean): fc.Arbitrary<PacketSpec["l3"]> {
  const icmp = v6 ? 58 : 1;
  const transport = fc.oneof(
    fc.record({ proto: fc.constantFrom(17, 132), tp: fc.tuple(port, port) }),
    fc.record({
      proto: fc.constant(6),
      tp: fc.tuple(port, port),
      tcpFlags: fc.integer({ min: 0, max: 0xfff }),
    }),
    fc.record({
      proto: fc.constant(icmp),
      // Neighbour discovery has its own generator, with what it carries.
      tp: fc.tuple(byte, byte).filter(([t, c]) => !(v6 && c === 0 && (t === 135 || t === 136))),
    }),
    ...(v6 ? [nd] : []),
    fc.record({
      proto: byte.filter((p) => !PARSED.includes(p) && !(v6 && IPV6_EXT.includes(p))),
    }),
  );
  const n = v6 ? 16 : 4;
  return fc.record({
    src: bytes(n),
    dst: bytes(n),
    tos: byte,
    ttl: byte,
    label: v6 ? fc.integer({ min: 0, max: 0xfffff }) : fc.constant(0),
    frag: fc.constantFrom(Frag.NONE, Frag.FIRST, Frag.LATER),
    transport,
  }).map(({ src, dst, tos, ttl, label, frag, transport }) => ({
    kind: "ip" as const,
    v6,
    src,
    dst,
    tos,
    ttl,
    label,
    frag,
    proto: transport.proto,
    // A later fragment carries no transport header.
    ...(frag === Frag.LATER ? {} : transport),
  }));
}

/** Generated packets of every kind the parsers tell apart. */
export const arbPacket: fc.Arbitrary<PacketSpec> = fc.record({
  ethSrc: bytes(6),
  ethDst: bytes(6),
  vlan: fc.option(port.map((t) => t | 0x1000), { nil: undefined }),
  l3: fc.oneof(
    ip(false),
    ip(true),
    fc.record({
      kind: fc.constant("arp" as const),
      op: byte,
      spa: bytes(4),
      tpa: bytes(4),
      sha: mac,
      tha: mac,
    }),
    fc.record({
      kind: fc.constant("other" as const),
      // Below 0x0600 the field is an 802.3 length, not an EtherType.
      ethType: fc.integer({ min: 0x0600, max: 0xffff }).filter((t) =>
        ![0x0800, 0x86dd, 0x0806, ...VLAN_TYPES].includes(t)
      ),
    }),
  ),
});

/** The match that builds `p`: its key is the key of p's frame. */
export function packetMatch(p: PacketSpec): Match {
  const m = emptyMatch();
  const give = <K extends keyof FlowKey>(member: K, value: FlowKey[K]) => {
    if (value instanceof Uint8Array) {
      const v = new Uint8Array((m.key[member] as Uint8Array).length);
      v.set(value);
      m.key[member] = v as FlowKey[K];
    } else m.key[member] = value;
    m.mask[member] = FULL[member];
  };
  give("eth_src", p.ethSrc);
  give("eth_dst", p.ethDst);
  if (p.vlan !== undefined) give("vlan_tci", p.vlan);
  const l3 = p.l3;
  if (l3.kind === "other") {
    give("eth_type", l3.ethType);
  } else if (l3.kind === "arp") {
    give("eth_type", 0x0806);
    give("ip_proto", l3.op);
    give("ip_src", l3.spa);
    give("ip_dst", l3.tpa);
    give("arp_sha", l3.sha);
    give("arp_tha", l3.tha);
  } else {
    give("eth_type", l3.v6 ? 0x86dd : 0x0800);
    give("ip_src", l3.src);
    give("ip_dst", l3.dst);
    give("ip_tos", l3.tos);
    give("nw_ttl", l3.ttl);
    if (l3.v6) give("ipv6_label", l3.label);
    give("ip_frag", l3.frag);
    give("ip_proto", l3.proto);
    if (l3.tp) {
      give("tp_src", l3.tp[0]);
      give("tp_dst", l3.tp[1]);
    }
    if (l3.tcpFlags !== undefined) give("tcp_flags", l3.tcpFlags);
    if (l3.nd) {
      give("nd_target", l3.nd.target);
      if (l3.nd.sll) give("arp_sha", l3.nd.sll);
      if (l3.nd.tll) give("arp_tha", l3.nd.tll);
    }
  }
  return m;
}

/** Each member's bytes in the encoded flow key. */
const MEMBER_BYTES = new Map(flowKeyCodec.fields.map((f) => [f.name, [f.offset, f.size]]));

/** Whether `bits` (an encoded flow key's worth) has a bit in `member`. */
function touches(bits: Uint8Array, member: string): boolean {
  const [at, n] = MEMBER_BYTES.get(member)!;
  return bits.subarray(at, at + n).some((b) => b !== 0);
}

/** Members the tunnel and the port give, not the frame: parse_frame leaves them. */
const METADATA = MEMBERS.filter((m) =>
  m === "in_port" || m === "net" || m.startsWith("tun_") || m.startsWith("gnv_")
);

/**
 * The match fields that speak of the frame itself, not of the tunnel it
 * came through or the port: those whose own bits are all in frame members.
 * Derived from the field table, so a new field joins by itself.
 */
export const FRAME_FIELDS: readonly FieldDef[] = FIELDS.filter((f) => {
  const bits = OWN_BITS.get(f.name)!;
  return bits.some((b) => b !== 0) && !METADATA.some((m) => touches(bits, m));
});

/** For each member, the fields that set it: what to name when it differs. */
export const FIELDS_OF_MEMBER: Readonly<Record<string, string[]>> = Object.fromEntries(
  MEMBERS.map((member) => [
    member,
    FIELDS.filter((f) => touches(OWN_BITS.get(f.name)!, member)).map((f) => f.name),
  ]),
);

/** Text of a member's value: hex bytes, or the number. */
export function memberText(v: FlowKey[keyof FlowKey]): string {
  return v instanceof Uint8Array
    ? Array.from(v, (b) => b.toString(16).padStart(2, "0")).join("")
    : `0x${v.toString(16)}`;
}

/**
 * The first member where `actual` differs from `expected`, said with the
 * match fields that read it, or undefined when they are equal.
 */
export function keyDifference(expected: FlowKey, actual: FlowKey): string | undefined {
  for (const member of MEMBERS) {
    const a = memberText(actual[member]);
    const e = memberText(expected[member]);
    if (a !== e) {
      const fields = FIELDS_OF_MEMBER[member];
      return `${member} (${fields.length ? fields.join(", ") : "no match field"}) is ${a}, ` +
        `expected ${e}`;
    }
  }
  return undefined;
}

/**
 * Fields of {@link FRAME_FIELDS} that `keys` did not exercise, each with
 * the prerequisite it was not exercised under: under every packet type a
 * field's prerequisites allow, keys must give the field's bits at least
 * two values, or nothing proves the field is extracted there.
 */
export function unexercisedFields(keys: FlowKey[]): string[] {
  const out: string[] = [];
  const bytes = keys.map((k) => {
    const b = new Uint8Array(flowKeyCodec.size);
    encodeFlowKey(k, b);
    return b;
  });
  for (const f of FRAME_FIELDS) {
    const own = OWN_BITS.get(f.name)!;
    for (const word of f.prereq ?? [undefined]) {
      const seen = new Set<string>();
      keys.forEach((key, i) => {
        if (word && !holds([word], contextOf({ key, mask: FULL }))) return;
        seen.add(bytes[i].map((b, j) => b & own[j]).join());
      });
      if (seen.size < 2) out.push(word ? `${f.name} under ${word}` : f.name);
    }
  }
  return out;
}

/** What Scapy reads in a frame: the flow key, and the frame rebuilt. */
export interface ScapyReading {
  /** The key's members as Scapy's dissection gives them. */
  key: FlowKey;
  /** The frame rebuilt by Scapy after forgetting every length and checksum. */
  rebuilt: Uint8Array;
}

// Scapy's reading of a frame's own headers. Bytes past the last header
// warren parses are payload, kept raw: Scapy would otherwise dissect them as
// whatever the protocol number or EtherType names, and a rebuild of such a
// made-up header is not the bytes it came from.
const READ_KEYS = `
from scapy.layers.inet6 import IPv6ExtHdrFragment
from scapy.layers.sctp import SCTP, SCTPChunkData
import socket
class ICMPAny(Packet):
    """ICMP whatever its type: Scapy's ICMP reads a body per type and fails
    on one too short for its type; warren's is an echo's for every type."""
    fields_desc = [ByteField("type", 0), ByteField("code", 0), XShortField("chksum", None)]
    def post_build(self, p, pay):
        p += pay
        if self.chksum is None:
            p = p[:2] + checksum(p).to_bytes(2, "big") + p[4:]
        return p
# The class of each transport header warren parses; ICMP and ICMPv6 as
# the generic message, since Scapy's class per type reads a body of that
# type (and may count bytes past it as padding).
CLASSES = {1: ICMPAny, 6: TCP, 17: UDP, 132: SCTP, 58: ICMPv6Unknown}
PARSED = tuple(CLASSES)
# What Scapy computes when absent, per protocol of the transport header.
COMPUTED = {6: ["chksum"], 17: ["len", "chksum"], 132: ["chksum"], 1: ["chksum"], 58: ["cksum"]}
def addr(family, text):
    return socket.inet_pton(family, text).ljust(16, b"\\0").hex()
def keep_raw(layer):
    data = raw(layer.payload)
    layer.remove_payload()
    if data:
        layer.add_payload(Raw(data))
def dissect(frame):
    """The frame, its network layer, protocol and transport layer (or None)."""
    p = Ether(frame)
    top = p.payload if isinstance(p.payload, Dot1Q) else p
    l3 = top.payload
    if isinstance(l3, IPv6) and isinstance(l3.payload, IPv6ExtHdrFragment):
        l3 = l3.payload
    if isinstance(l3, IP):
        proto, later = l3.proto, l3.frag > 0
    elif isinstance(l3, (IPv6, IPv6ExtHdrFragment)):
        proto, later = l3.nh, isinstance(l3, IPv6ExtHdrFragment) and l3.offset > 0
    elif isinstance(l3, ARP):
        return p, l3, None, None
    else:
        keep_raw(top)
        return p, None, None, None
    if later or proto not in PARSED:
        keep_raw(l3)
        return p, l3, proto, None
    if proto in (1, 58) or isinstance(l3.payload, Raw):
        # Also: Scapy binds some protocols to IPv6 but not behind its
        # fragment header.
        data = raw(l3.payload)
        l3.remove_payload()
        l3.add_payload(CLASSES[proto](data))
    return p, l3, proto, l3.payload
def read(frame):
    p, l3, proto, l4 = dissect(frame)
    key = {"eth_dst": mac2str(p.dst).hex(), "eth_src": mac2str(p.src).hex(), "eth_type": p.type}
    if isinstance(p.payload, Dot1Q):
        # The DEI bit is "id" in older Scapy, "dei" in newer; the key has 0x1000 there.
        key.update(vlan_tci=(p.payload.prio << 13) | p.payload.vlan | 0x1000,
                   eth_type=p.payload.type)
    ip = l3.underlayer if isinstance(l3, IPv6ExtHdrFragment) else l3
    if isinstance(ip, IP):
        key.update(ip_src=addr(socket.AF_INET, ip.src), ip_dst=addr(socket.AF_INET, ip.dst),
                   ip_tos=ip.tos, ip_frag=3 if ip.frag else 1 if ip.flags.MF else 0,
                   nw_ttl=ip.ttl)
    elif isinstance(ip, IPv6):
        key.update(ip_src=addr(socket.AF_INET6, ip.src), ip_dst=addr(socket.AF_INET6, ip.dst),
                   ip_tos=ip.tc, ip_frag=0, nw_ttl=ip.hlim, ipv6_label=ip.fl)
        if isinstance(l3, IPv6ExtHdrFragment):
            key.update(ip_frag=3 if l3.offset else 1)
    elif isinstance(ip, ARP):
        key.update(ip_proto=ip.op, ip_src=addr(socket.AF_INET, ip.psrc),
                   ip_dst=addr(socket.AF_INET, ip.pdst), arp_sha=mac2str(ip.hwsrc).hex(),
                   arp_tha=mac2str(ip.hwdst).hex())
    if proto is not None:
        key["ip_proto"] = proto
    if l4 is not None and proto in (1, 58):
        # Type and code by position: some ICMPv6 classes name them otherwise.
        key.update(tp_src=raw(l4)[0], tp_dst=raw(l4)[1])
        if proto == 58 and raw(l4)[:2] in (bytes([135, 0]), bytes([136, 0])):
            nd = (ICMPv6ND_NS if raw(l4)[0] == 135 else ICMPv6ND_NA)(raw(l4))
            key.update(nd_target=addr(socket.AF_INET6, nd.tgt))
            if ICMPv6NDOptSrcLLAddr in nd:
                key.update(arp_sha=mac2str(nd[ICMPv6NDOptSrcLLAddr].lladdr).hex())
            if ICMPv6NDOptDstLLAddr in nd:
                key.update(arp_tha=mac2str(nd[ICMPv6NDOptDstLLAddr].lladdr).hex())
    elif l4 is not None:
        key.update(tp_src=l4.sport, tp_dst=l4.dport)
        if proto == 6:
            key.update(tcp_flags=(l4.reserved << 9) | int(l4.flags))
    q, q3, _, q4 = dissect(frame)
    if isinstance(q3, IPv6ExtHdrFragment):
        q3 = q3.underlayer
    for name in {IP: ["len", "chksum"], IPv6: ["plen"]}.get(type(q3), []):
        delattr(q3, name)
    if q4 is not None:
        for name in COMPUTED[proto]:
            delattr(q4, name)
        if isinstance(q4.payload, SCTPChunkData):
            delattr(q4.payload, "len")
    return {"key": key, "rebuilt": raw(q).hex()}
print(json.dumps([read(bytes.fromhex(f)) for f in data]))
`;

/** What Scapy reads in each frame. */
export async function scapyKeys(frames: Uint8Array[]): Promise<ScapyReading[]> {
  const out = await scapyJson<{ key: Record<string, number | string>; rebuilt: string }[]>(
    READ_KEYS,
    frames.map(toHex),
  );
  return out.map(({ key, rebuilt }) => {
    const k = emptyMatch().key as Record<string, unknown>;
    for (const [member, v] of Object.entries(key)) {
      k[member] = typeof v === "string" ? fromHex(v) : v;
    }
    return { key: k as unknown as FlowKey, rebuilt: fromHex(rebuilt) };
  });
}
