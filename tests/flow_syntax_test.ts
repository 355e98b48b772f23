/**
 * The flow language: every field and mask prints so that the text reads
 * back as the same flow (a fast-check property over generated flows), and
 * Open vSwitch's syntax reads with Open vSwitch's meaning or is refused
 * with a sentence naming the user's token, its column and why.
 *
 * @module
 */

import fc from "fast-check";
import { assert, assertEquals, assertThrows } from "./helpers/assert.ts";
import {
  type ActionSpec,
  formatAction,
  formatActions,
  parseActions,
} from "../src/tunnel/flow_actions.ts";
import { type FlowSpec, formatFlow, parseFlow, parseMatch } from "../src/tunnel/flow_syntax.ts";
import { FlowSyntaxError } from "../src/tunnel/flow_tokens.ts";
import { FIELDS } from "../src/tunnel/fields.ts";
import { SHORTHANDS } from "./helpers/field_texts.ts";
import type { PortNames } from "../src/tunnel/match.ts";
import {
  CompileError,
  compileFlow,
  decompileActions,
  namesOf,
  type PortLookup,
} from "../src/tunnel/compile.ts";
import { ACTF_HAIRPIN, ACTF_LAST, ActionOp, tunKeyCodec, TunKeySet } from "../src/maps/layouts.ts";
import { checkPortName, type Port, PortError, tunnelPort } from "../src/tunnel/port.ts";

const PORT_NUMBERS = new Map([["web", 1], ["vx0", 2], ["db", 3]]);
const names: PortNames = {
  number: (n) => PORT_NUMBERS.get(n),
  name: (n) => [...PORT_NUMBERS].find(([, v]) => v === n)?.[0],
};

const flow = (text: string) => parseFlow(text, names);
const match = (text: string) => parseMatch(text, names).match;
const dump = (text: string) => formatFlow(flow(text), names);

/** `a` and `b` read as the same match. */
function sameMatch(a: string, b: string): void {
  assertEquals(match(a), match(b), `${a} should mean ${b}`);
}

/** `text` is refused at `column` with a message that includes `includes`. */
function refused(text: string, column: number, includes: string): FlowSyntaxError {
  const err = assertThrows(() => flow(text), FlowSyntaxError, includes) as FlowSyntaxError;
  assertEquals(err.column, column, err.message);
  return err;
}

// --- The property: print, parse, print again --------------------------------

/**
 * What a generated flow starts with ("" for nothing): a shorthand, or one
 * with the ICMPv6 type neighbour discovery's fields need.
 */
const CONTEXTS = ["", ...SHORTHANDS] as const;
type Ctx = typeof CONTEXTS[number];

const IP = ["ip", "tcp", "udp", "sctp", "icmp"] as const;
const ND = ["icmp6,icmp_type=135", "icmp6,icmp_type=136"] as const;
const IP6 = ["ipv6", "tcp6", "udp6", "sctp6", "icmp6", ...ND] as const;
const TP = ["tcp", "udp", "sctp", "tcp6", "udp6", "sctp6"] as const;
const ICMP = ["icmp", "icmp6"] as const;

/** A number as Open vSwitch users write one: decimal or hex. */
const num = (max: number, min = 0) =>
  fc.integer({ min, max }).chain((n) => fc.constantFrom(String(n), `0x${n.toString(16)}`));
/** An integer field's value, with or without a mask. */
const masked = (max: number, scale = 1) =>
  fc.tuple(num(max).map((v) => v), fc.option(num(max))).map(([v, m]) => {
    const s = (t: string) => `0x${(Number(t) * scale).toString(16)}`;
    const value = scale === 1 ? v : s(v);
    return m === null ? value : `${value}/${scale === 1 ? m : s(m)}`;
  });
const bigNum = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((n) => `0x${n.toString(16)}`);
const u32Num = fc.bigInt({ min: 0n, max: 2n ** 32n - 1n })
  .chain((n) => fc.constantFrom(String(n), `0x${n.toString(16)}`));
const mac = fc.uint8Array({ minLength: 6, maxLength: 6 })
  .map((b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(":"));
const ipv4 = fc.ipV4();
const ipv6 = fc.ipV6();
const macMasked = fc.tuple(mac, fc.option(mac)).map(joinMask);
const cidr = (addr: fc.Arbitrary<string>, max: number) =>
  fc.tuple(addr, fc.oneof(fc.constant(""), fc.integer({ min: 0, max }).map(String), addr))
    .map(([a, p]) => p === "" ? a : `${a}/${p}`);

interface Gen {
  /** The contexts it is valid under. */
  ctx: readonly Ctx[];
  /** Its values, for a tunnel of family v6 or not. */
  value: (v6: boolean) => fc.Arbitrary<string>;
  /** The field's width, for a subfield written `name[lo..hi]=v`. */
  bits?: number;
}

const ANY = CONTEXTS;
const int = (max: number, ctx: readonly Ctx[] = ANY, bits?: number): Gen => ({
  ctx,
  value: () => masked(max),
  bits,
});

/** A value generator for every name a match field goes by. */
const GENERATORS: Record<string, Gen> = {
  in_port: { ctx: ANY, value: () => fc.oneof(fc.constantFrom("web", "vx0", "db"), num(200, 1)) },
  net: { ctx: ANY, value: () => fc.tuple(u32Num, fc.option(u32Num)).map(joinMask), bits: 32 },
  metadata: { ctx: ANY, value: () => u32Num },
  tun_id: { ctx: ANY, value: () => fc.tuple(bigNum, fc.option(bigNum)).map(joinMask), bits: 64 },
  tunnel_id: { ctx: ANY, value: () => bigNum },
  tun_src: { ctx: ANY, value: (v6) => cidr(v6 ? ipv6 : ipv4, v6 ? 128 : 32) },
  tun_dst: { ctx: ANY, value: (v6) => cidr(v6 ? ipv6 : ipv4, v6 ? 128 : 32) },
  tun_ipv6_src: { ctx: ANY, value: () => cidr(ipv6, 128) },
  tun_ipv6_dst: { ctx: ANY, value: () => cidr(ipv6, 128) },
  tun_tos: int(255, ANY, 8),
  tun_ttl: int(255, ANY, 8),
  tun_flags: {
    ctx: ANY,
    value: () =>
      fc.oneof(
        fc.array(fc.tuple(fc.constantFrom("+", "-"), fc.constantFrom("oam", "df", "csum", "key")), {
          minLength: 1,
          maxLength: 4,
        }).map((l) => l.map(([s, n]) => s + n).join("")),
        fc.constantFrom("oam", "0", "1", "0/1", "1/1", "0x1/0x1"),
      ),
  },
  geneve_class: int(0xffff, ANY, 16),
  geneve_type: int(0xff, ANY, 8),
  geneve_data: {
    ctx: ANY,
    value: () =>
      fc.integer({ min: 1, max: 8 }).chain((n) => {
        const bytes = fc.uint8Array({ minLength: n, maxLength: n })
          .map((b) => "0x" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(""));
        return fc.tuple(bytes, fc.option(bytes)).map(joinMask);
      }),
  },
  dl_src: { ctx: ANY, value: () => macMasked },
  eth_src: { ctx: ANY, value: () => mac },
  dl_dst: { ctx: ANY, value: () => macMasked },
  eth_dst: { ctx: ANY, value: () => mac },
  // Only where nothing needs the packet type it may change.
  dl_type: int(0xffff, [""], 16),
  eth_type: int(0xffff, [""], 16),
  vlan_tci: int(0xffff, ANY, 16),
  dl_vlan: {
    ctx: ANY,
    value: () => fc.oneof(masked(0x0fff), fc.constantFrom("0xffff", "65535")),
    bits: 12,
  },
  vlan_vid: int(0x1fff, ANY, 13),
  dl_vlan_pcp: int(7, ANY, 3),
  vlan_pcp: int(7, ANY, 3),
  nw_src: { ctx: [...IP, "arp"], value: () => cidr(ipv4, 32) },
  ip_src: { ctx: [...IP, "arp"], value: () => cidr(ipv4, 32) },
  nw_dst: { ctx: [...IP, "arp"], value: () => cidr(ipv4, 32) },
  ip_dst: { ctx: [...IP, "arp"], value: () => cidr(ipv4, 32) },
  ipv6_src: { ctx: IP6, value: () => cidr(ipv6, 128) },
  ipv6_dst: { ctx: IP6, value: () => cidr(ipv6, 128) },
  arp_spa: { ctx: ["arp"], value: () => cidr(ipv4, 32) },
  arp_tpa: { ctx: ["arp"], value: () => cidr(ipv4, 32) },
  arp_op: int(255, ["arp"], 8),
  arp_sha: { ctx: ["arp"], value: () => macMasked },
  arp_tha: { ctx: ["arp"], value: () => macMasked },
  ipv6_label: int(0xfffff, IP6, 20),
  nw_ttl: int(255, [...IP, ...IP6], 8),
  // Only where no field needs the protocol it may change.
  nw_proto: int(255, ["ip", "ipv6", "arp"], 8),
  ip_proto: int(255, ["ip", "ipv6", "arp"], 8),
  nw_tos: { ctx: [...IP, ...IP6], value: () => masked(63, 4) },
  ip_dscp: int(63, [...IP, ...IP6], 6),
  nw_ecn: int(3, [...IP, ...IP6], 2),
  ip_ecn: int(3, [...IP, ...IP6], 2),
  nw_frag: {
    ctx: [...IP, ...IP6],
    value: () => fc.constantFrom("no", "yes", "first", "later", "not_later"),
  },
  ip_frag: { ctx: [...IP, ...IP6], value: () => fc.constantFrom("no", "yes", "first") },
  tp_src: int(0xffff, TP, 16),
  tp_dst: int(0xffff, TP, 16),
  tcp_src: int(0xffff, TP, 16),
  tcp_dst: int(0xffff, TP, 16),
  udp_src: int(0xffff, TP, 16),
  udp_dst: int(0xffff, TP, 16),
  sctp_src: int(0xffff, TP, 16),
  sctp_dst: int(0xffff, TP, 16),
  icmp_type: int(255, ICMP, 8),
  icmp_code: int(255, ICMP, 8),
  icmpv4_type: int(255, ["icmp"], 8),
  icmpv4_code: int(255, ["icmp"], 8),
  icmpv6_type: int(255, ICMP, 8),
  icmpv6_code: int(255, ICMP, 8),
  tcp_flags: {
    ctx: ["tcp", "tcp6"],
    value: () =>
      fc.oneof(
        fc.uniqueArray(fc.constantFrom(...TCP_FLAGS), { minLength: 1, maxLength: 5 }).chain((
          list,
        ) =>
          fc.array(fc.constantFrom("+", "-"), { minLength: list.length, maxLength: list.length })
            .map((signs) => list.map((f, i) => signs[i] + f).join(""))
        ),
        fc.uniqueArray(fc.constantFrom(...TCP_FLAGS), { maxLength: 4 }).map((l) =>
          l.join("|") || "0"
        ),
        masked(0xfff),
      ),
    bits: 12,
  },
  nd_target: { ctx: ND, value: () => cidr(ipv6, 128) },
  nd_sll: { ctx: ["icmp6,icmp_type=135"], value: () => macMasked },
  nd_tll: { ctx: ["icmp6,icmp_type=136"], value: () => macMasked },
};

/** Open vSwitch's names of TCP's flags. */
const TCP_FLAGS = ["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns", "[200]"];

function joinMask([v, m]: [string, string | null]): string {
  return m === null ? v : `${v}/${m}`;
}

/** `tp_src` under icmp is icmp_type, 8 bits: the contexts' other meanings. */
const VIEW_GENERATORS: [string, Gen][] = [
  ["tp_src", int(255, ICMP)],
  ["tp_dst", int(255, ICMP)],
  ["arp_sha", { ctx: ["icmp6,icmp_type=135"], value: () => macMasked }],
  ["arp_tha", { ctx: ["icmp6,icmp_type=136"], value: () => macMasked }],
  ["nd_sll", { ctx: ["arp"], value: () => macMasked }],
  ["nd_tll", { ctx: ["arp"], value: () => macMasked }],
];

/** One match item valid in `ctx`: `name=value` or `name[lo..hi]=value`. */
function item(ctx: Ctx, v6: boolean): fc.Arbitrary<string> {
  const gens = [...Object.entries(GENERATORS), ...VIEW_GENERATORS]
    .filter(([name, g]) => g.ctx.includes(ctx) && (v6 || !name.startsWith("tun_ipv6")));
  return fc.constantFrom(...gens).chain(([name, g]) => {
    const whole = g.value(v6).map((v) => `${name}=${v}`);
    if (!g.bits) return whole;
    const sub = fc.integer({ min: 0, max: g.bits - 1 }).chain((lo) =>
      fc.integer({ min: lo, max: Math.min(g.bits! - 1, lo + 30) }).chain((hi) =>
        fc.integer({ min: 0, max: 2 ** (hi - lo + 1) - 1 }).map((v) =>
          `${name}[${lo === hi ? lo : `${lo}..${hi}`}]=${v}`
        )
      )
    );
    return fc.oneof({ weight: 4, arbitrary: whole }, { weight: 1, arbitrary: sub });
  });
}

/** A flow's text: a context, some fields, separated as users do. */
const flowText = fc.tuple(fc.constantFrom(...CONTEXTS), fc.boolean()).chain(([ctx, v6]) =>
  fc.tuple(
    fc.array(item(ctx, v6), { maxLength: 6 }),
    fc.option(fc.integer({ min: 0, max: 65535 })),
    fc.constantFrom(",", " ", ", "),
  ).map(([items, priority, sep]) =>
    [priority === null ? "" : `priority=${priority}`, ctx, ...items].filter(Boolean).join(sep) +
    " actions=drop"
  )
);

Deno.test("every name a field goes by has a generator in the round-trip property", () => {
  for (const f of FIELDS) {
    for (const name of [f.name, ...(f.aliases ?? [])]) {
      assert.ok(name in GENERATORS, `no generator for ${name}`);
    }
  }
});

Deno.test("printing and parsing round-trip for every field and mask, and printing is canonical", () => {
  fc.assert(
    fc.property(flowText, (text) => {
      const a = flow(text);
      const printed = formatFlow(a, names);
      const b = flow(printed);
      assertEquals(b.match, a.match, `${text} printed as ${printed}, which reads differently`);
      assertEquals(b.priority, a.priority);
      assertEquals(formatFlow(b, names), printed, `${printed} prints differently once read`);
    }),
    { numRuns: 3000 },
  );
});

const actionText = fc.array(
  fc.oneof(
    fc.constantFrom("output:web", "output:vx0", "2", "output:3", "pass", "LOCAL", "output:LOCAL"),
    bigNum.map((n) => `set_tunnel:${n}`),
    fc.integer({ min: 0, max: 2 ** 24 - 1 }).map((n) => `set_field:${n}->tun_id`),
    ipv4.map((a) => `set_field:${a}->tun_dst`),
    ipv6.map((a) => `set_field:${a}->tun_ipv6_src`),
    fc.integer({ min: 0, max: 2 ** 32 - 1 }).map((n) => `load:${n}->NXM_NX_TUN_IPV4_SRC[]`),
    fc.constantFrom("push_vlan:0x8100", "push_vlan:0x88a8", "strip_vlan", "pop_vlan"),
    fc.integer({ min: 0, max: 4095 }).map((n) => `mod_vlan_vid:${n}`),
    fc.integer({ min: 0, max: 7 }).map((n) => `mod_vlan_pcp:${n}`),
    fc.integer({ min: 0, max: 4095 }).map((n) => `set_field:${0x1000 | n}->vlan_vid`),
    fc.integer({ min: 0, max: 7 }).map((n) => `set_field:${n}->vlan_pcp`),
    fc.integer({ min: 0, max: 0xffff }).map((n) => `set_field:${n}->vlan_tci`),
    fc.integer({ min: 0, max: 0xffff }).map((n) => `load:${n}->NXM_OF_VLAN_TCI[]`),
    ipv6.map((a) => `set_field:${a}->ipv6_dst`),
    fc.integer({ min: 0, max: 0xffff }).map((n) =>
      `set_field:::${n.toString(16)}/::ffff->ipv6_src`
    ),
    fc.tuple(fc.integer({ min: 0, max: 15 }), fc.integer({ min: 0, max: 15 }), fc.nat(0xffff)).map(
      ([a, b, v]) => {
        const [lo, hi] = a <= b ? [a, b] : [b, a];
        return `load:${v & ((1 << (hi - lo + 1)) - 1)}->NXM_OF_UDP_SRC[${lo}..${hi}]`;
      },
    ),
    ipv4.map((a) => `set_field:${a}/255.255.255.255->nw_dst`),
    fc.constantFrom(
      "set_field:0x5/0xff->tun_id",
      "load:3->NXM_NX_TUN_ID[16..23]",
      "set_field:02:00:00:00:00:00/ff:00:00:00:00:00->eth_src",
      "load:0->in_port",
      "set_field:0->in_port",
    ),
    fc.record({
      id: fc.option(bigNum),
      dst: fc.option(ipv4),
      tos: fc.option(fc.integer({ min: 0, max: 63 }).map((d) => String(d * 4))),
      ttl: fc.option(num(255)),
      flags: fc.option(fc.constantFrom("df", "csum", "oam", "df|oam")),
      geneve: fc.option(fc.constantFrom("0x0102:0x80:0x01020304", "7:1:0x")),
    }).map((r) => {
      const args = Object.entries(r).filter(([, v]) => v !== null).map(([k, v]) => `${k}=${v}`);
      return `set_tunnel(${args.length ? args.join(",") : "id=1"})`;
    }),
  ),
  { minLength: 1, maxLength: 5 },
).chain((list) => fc.constantFrom(",", " ").map((sep) => list.join(sep)));

Deno.test("action lists round-trip through their text", () => {
  fc.assert(
    fc.property(actionText, (text) => {
      const a = parseActions(text);
      const printed = a.map(formatAction).join(",");
      assertEquals(parseActions(printed), a, `${text} printed as ${printed}`);
    }),
    { numRuns: 1000 },
  );
});

Deno.test("VLAN rewrites read and print as Open vSwitch's, set_field only where a tag is sure", () => {
  for (
    const [text, printed] of [
      [
        "dl_vlan=5 actions=set_field:4103->vlan_vid,output:1",
        "dl_vlan=5 actions=set_field:0x1007->vlan_vid,output:web",
      ],
      [
        "vlan_tci=0x1000/0x1000 actions=set_field:3->vlan_pcp,2",
        "vlan_tci=0x1000/0x1000 actions=set_field:3->vlan_pcp,output:vx0",
      ],
      // push_vlan and the mod_ forms give the packet a tag.
      [
        "actions=push_vlan:0x88a8,set_field:0x1064->vlan_vid,1",
        "actions=push_vlan:0x88a8,set_field:0x1064->vlan_vid,output:web",
      ],
      [
        "actions=mod_vlan_pcp:5,set_field:0x1001->vlan_vid,1",
        "actions=mod_vlan_pcp:5,set_field:0x1001->vlan_vid,output:web",
      ],
      // vlan_tci is Open vSwitch's: without 0x1000, no tag.
      [
        "actions=set_field:0->vlan_tci,load:0x1005->NXM_OF_VLAN_TCI[],1",
        "actions=strip_vlan,set_field:0x1005->vlan_tci,output:web",
      ],
      ["actions=pop_vlan,mod_vlan_vid:4095,1", "actions=strip_vlan,mod_vlan_vid:4095,output:web"],
    ]
  ) {
    assertEquals(
      dump(text),
      `priority=32768${printed.startsWith("actions") ? " " : ","}${printed}`,
    );
    assertEquals(dump(dump(text)), dump(text));
  }
  for (
    const [text, column, says] of [
      ["actions=set_field:0x1005->vlan_vid,output:1", 9, "needs a VLAN tag, which the match"],
      ["dl_vlan=5 actions=strip_vlan,set_field:1->vlan_pcp", 19, "needs a VLAN tag"],
      ["dl_vlan=5 actions=push_vlan:0x8100,push_vlan:0x8100", 19, "at most two"],
      ["dl_vlan=0xffff actions=strip_vlan", 24, "there is none to take off"],
      ["actions=push_vlan:0x0800", 9, "push_vlan takes 0x8100 (802.1Q) or 0x88a8 (802.1ad)"],
      ["actions=mod_vlan_vid:4096", 9, "4096: not a valid VLAN VID"],
      ["actions=mod_vlan_pcp:8", 9, "8: not a valid VLAN PCP"],
      ["actions=set_field:1->dl_vlan", 9, "names to match on"],
      ["actions=load:5->NXM_OF_VLAN_TCI[0..11]", 9, "sets some bits of Ethernet and IP addresses"],
    ] as const
  ) refused(text, column, says);
});

// --- Defects ----------------------------------------------------------------

Deno.test("tunnel addresses of two families in one match are refused", () => {
  refused("tun_dst=192.0.2.1,tun_src=2001:db8::1 actions=drop", 19, "one family");
  refused("tun_ipv6_src=2001:db8::1,tun_dst=192.0.2.1 actions=drop", 26, "one family");
  // One family, either spelling, is fine, and prints as Open vSwitch does.
  assertEquals(
    dump("tun_src=2001:db8::1,tun_ipv6_dst=2001:db8::2 actions=drop"),
    "priority=32768,tun_ipv6_src=2001:db8::1,tun_ipv6_dst=2001:db8::2 actions=drop",
  );
});

Deno.test("matches that used to vanish from dumps print and read back", () => {
  for (
    const [text, printed] of [
      ["vlan_tci=0x1000/0x1000", "vlan_tci=0x1000/0x1000"],
      ["ip,ip_dscp=0x20/0x30", "ip,ip_dscp=0x20/0x30"],
      ["ip,nw_ecn=1/1", "ip,nw_ecn=0x1/0x1"],
      ["dl_vlan=5/0xff", "vlan_tci=0x1005/0x10ff"],
      ["vlan_tci=0/0x1000", "vlan_tci=0x0000/0x1000"],
      ["dl_vlan=0xffff", "vlan_tci=0x0000"],
      ["tun_flags=-oam", "tun_flags=-oam"],
      ["ip,nw_frag=not_later", "ip,nw_frag=not_later"],
    ]
  ) {
    const line = dump(`${text} actions=drop`);
    assertEquals(line, `priority=32768,${printed} actions=drop`);
    assertEquals(flow(line).match, match(text));
  }
});

Deno.test("layer-4 fields need the right dl_type as well as nw_proto", () => {
  refused("arp,arp_op=6,tp_dst=80 actions=drop", 14, "tp_dst needs tcp, udp, sctp");
  refused("arp,arp_op=6,tp_dst=80 actions=drop", 14, "and the match says arp");
  refused("ipv6,nw_proto=1,icmp_type=3 actions=drop", 17, "the match says ipv6,nw_proto=1");
  refused("ip,nw_proto=58,icmpv6_type=135 actions=drop", 16, "needs icmp6 or icmp");
  refused("ip,nw_proto=58,icmpv6_type=135 actions=drop", 16, "the match says ip,nw_proto=58");
  // Where nothing is said, the error gives an example.
  refused("tp_dst=80 actions=drop", 1, 'for example "tcp,tp_dst=80"');
});

Deno.test("an error on a field written by an alias names the user's token and column", () => {
  const e = refused("ip,udp_dst=53 actions=drop", 4, "udp_dst needs");
  assertEquals(e.token, "udp_dst=53");
  refused("tcp,ip_src=10.0.0.0/40 actions=drop", 5, '"ip_src=10.0.0.0/40": ip_src: prefix /40');
  refused("ip,ip_proto=300 actions=drop", 4, "ip_proto: 300 is larger than 255");
  refused("sctp,sctp_dst=99999 actions=drop", 6, "sctp_dst: 99999 is larger");
  refused("in_port=web,ip,ip_ttl=5 actions=drop", 16, "ip_ttl is not a match field");
});

Deno.test("output:LOCAL is pass, and in_port is the action, not read as a port", () => {
  for (const a of ["LOCAL", "local", "output:LOCAL", "output:local", "pass"]) {
    assertEquals(parseActions(a), [{ type: "pass" }], a);
  }
  for (const a of ["in_port", "IN_PORT", "output:in_port", "output:IN_PORT"]) {
    assertEquals(parseActions(a), [{ type: "in_port" }], a);
  }
});

// --- Syntax OVS users paste ---------------------------------------------------

Deno.test("ports go by number wherever a port goes", () => {
  // ovs-fields(7)'s flow-based tunnel example, both halves.
  const out = flow("in_port=1 actions=set_tunnel:5001,set_field:192.168.1.1->tun_dst,3");
  assertEquals(out.match, match("in_port=web"));
  assertEquals(out.actions, [
    { type: "set_tunnel", id: 5001n },
    { type: "set_tunnel", dst: { v6: false, bytes: addr4(192, 168, 1, 1) } },
    { type: "output", port: "3" },
  ]);
  const back = flow("in_port=3,tun_src=192.168.1.1,tun_id=5001 actions=1");
  assertEquals(back.match, match("in_port=db,tun_src=192.168.1.1,tun_id=5001"));
  assertEquals(back.actions, [{ type: "output", port: "1" }]);
  assertEquals(parseActions("2,output:0x3"), [
    { type: "output", port: "2" },
    { type: "output", port: "3" },
  ]);
  // Printed, ports known go by name, as dumps show them.
  assertEquals(
    dump("in_port=1 actions=2 3 9"),
    "priority=32768,in_port=web actions=output:vx0,output:db,output:9",
  );
  refused("in_port=0 actions=drop", 1, "0 is not a port number");
  refused("in_port=nope actions=drop", 1, 'there is no port named "nope"');
});

function addr4(...b: number[]): Uint8Array {
  const out = new Uint8Array(16);
  out.set(b);
  return out;
}

Deno.test("tun_ipv6_src and tun_ipv6_dst match and set; tun_src takes IPv6 as warren's alias", () => {
  sameMatch("tun_ipv6_src=2001:db8::/32", "tun_src=2001:db8::/32");
  sameMatch("tun_ipv6_dst=2001:db8::1", "tun_dst=2001:db8::1");
  refused("tun_ipv6_src=192.0.2.1 actions=drop", 1, "not an IPv6 address");
  const v6 = { v6: true, bytes: new Uint8Array([0x20, 1, 0xd, 0xb8, ...new Array(11).fill(0), 1]) };
  assertEquals(parseActions("set_field:2001:db8::1->tun_ipv6_dst"), [
    { type: "set_tunnel", dst: v6 },
  ]);
  assertEquals(parseActions("set_field:2001:db8::1->tun_dst"), [{ type: "set_tunnel", dst: v6 }]);
  assertThrows(
    () => parseActions("set_field:192.0.2.1->tun_ipv6_src"),
    FlowSyntaxError,
    "not an IPv6",
  );
});

Deno.test("reserved ports warren has not are refused with what to write instead", () => {
  for (
    const [a, says] of [
      ["NORMAL", "output to the ports the traffic should reach"],
      ["normal", "no NORMAL port"],
      ["FLOOD", "list the ports"],
      ["output:ALL", "list the ports"],
      ["CONTROLLER", "pass hands a packet to the host's network stack"],
      ["controller(reason=no_match)", "warren has no controller"],
      ["output:TABLE", "one table"],
    ]
  ) {
    assertThrows(() => parseActions(a), FlowSyntaxError, says);
  }
  refused("in_port=LOCAL actions=drop", 1, "LOCAL is no port packets come in on");
});

Deno.test("flow-line forms: table, timeouts, action=, spaces, empty actions", () => {
  assertEquals(
    flow("table=0,idle_timeout=0,hard_timeout=0,ip action=1 2 output:vx0"),
    {
      priority: 32768,
      cookie: 0n,
      match: match("ip"),
      actions: [{ type: "output", port: "1" }, { type: "output", port: "2" }, {
        type: "output",
        port: "vx0",
      }],
    } satisfies FlowSpec,
  );
  refused("table=1,ip actions=drop", 1, "warren has one table, table 0");
  refused("idle_timeout=10 actions=drop", 1, "warren's flows do not expire");
  refused("ip hard_timeout=5 actions=drop", 4, "warren's flows do not expire");
  refused("send_flow_rem actions=drop", 1, "no controller");
  assertEquals(flow("priority=65535,actions=").actions, [{ type: "drop" }]);
  assertEquals(dump("priority=65535,actions="), "priority=65535 actions=drop");
  assertEquals(match("table=0"), match(""));
});

Deno.test("set_field and load on tun_id and tunnel addresses, whole fields but tun_id", () => {
  const id = (n: bigint): ActionSpec[] => [{ type: "set_tunnel", id: n }];
  assertEquals(parseActions("set_field:0x5->tun_id"), id(5n));
  assertEquals(parseActions("set_field:5/0xffffffffffffffff->tun_id"), id(5n));
  assertEquals(parseActions("load:0x5->NXM_NX_TUN_ID[]"), id(5n));
  assertEquals(parseActions("load:5->NXM_NX_TUN_ID[0..63]"), id(5n));
  assertEquals(parseActions("load:0xc0000201->NXM_NX_TUN_IPV4_DST[]"), [
    { type: "set_tunnel", dst: { v6: false, bytes: addr4(192, 0, 2, 1) } },
  ]);
  // Some bits of the id, the others the packet's own, as in Open vSwitch.
  const masked: ActionSpec[] = [{ type: "set_tunnel", id: 5n, idMask: 0xffn }];
  for (const a of ["set_field:0x5/0xff->tun_id", "set_field:5/0xff->tun_id"]) {
    assertEquals(parseActions(a), masked);
  }
  assertEquals(parseActions("load:5->NXM_NX_TUN_ID[8..15]"), [
    { type: "set_tunnel", id: 0x500n, idMask: 0xff00n },
  ]);
  assertThrows(
    () => parseActions("set_field:0x105/0xff->tun_id"),
    FlowSyntaxError,
    "outside the mask",
  );
  assertThrows(
    () => parseActions("set_field:0x5/0xf->tun_ttl"),
    FlowSyntaxError,
    "sets some bits of Ethernet and IP addresses, of TCP and UDP ports and of tun_id only",
  );
  assertThrows(
    () => parseActions("set_field:5->vlan_vid"),
    FlowSyntaxError,
    "0x1000 (a tag is present) plus the VID, as set_field:0x1005->vlan_vid",
  );
});

Deno.test("Open vSwitch's aliases read as the field they stand for", () => {
  for (
    const [a, b] of [
      ["vlan_vid=0x1005", "dl_vlan=5"],
      // As ovs-ofctl -O OpenFlow15 reads it: without 0x1000 a VID no frame has.
      ["vlan_vid=5", "vlan_tci=0x0005/0x1fff"],
      ["vlan_vid=0x1000/0x1000", "vlan_tci=0x1000/0x1000"],
      ["vlan_pcp=5", "dl_vlan_pcp=5"],
      ["dl_vlan=0xffff", "vlan_tci=0"],
      ["dl_vlan=65535", "vlan_tci=0x0000/0xffff"],
      ["sctp,sctp_src=9,sctp_dst=10", "sctp,tp_src=9,tp_dst=10"],
      ["icmp6,icmp_type=135,icmp_code=0", "icmp6,icmpv6_type=135,icmpv6_code=0"],
      ["arp,nw_src=10.0.0.1,nw_dst=10.0.0.0/8", "arp,arp_spa=10.0.0.1,arp_tpa=10.0.0.0/8"],
      ["arp,nw_proto=2", "arp,arp_op=2"],
      ["icmp,tp_src=3,tp_dst=1", "icmp,icmp_type=3,icmp_code=1"],
      ["tun_flags=1", "tun_flags=+oam"],
      ["tun_flags=0/1", "tun_flags=-oam"],
      ["tun_flags=oam", "tun_flags=+oam"],
      ["eth_src=00:00:00:00:00:01,eth_type=0x800", "dl_src=00:00:00:00:00:01,ip"],
      ["ip,nw_proto=6", "tcp"],
      ["udp6,udp_dst[12]=1", "udp6,tp_dst=0x1000/0x1000"],
      ["tun_id[0..7]=5", "tun_id=5/0xff"],
      ["ip,ip_dscp=8", "ip,nw_tos=32"],
    ]
  ) sameMatch(a, b);
  refused("tun_flags=2 actions=drop", 1, "only bit 0 (oam) has a number");
  refused("dl_vlan=8191 actions=drop", 1, "8191 is larger than 4095");
});

Deno.test("tcp_flags in Open vSwitch's syntax: +flag-flag, flag|flag, value/mask", () => {
  for (
    const [a, b] of [
      ["tcp,tcp_flags=+syn-ack", "tcp,tcp_flags=0x002/0x012"],
      ["tcp,tcp_flags=0x012/0x0ff", "tcp,tcp_flags=-fin+syn-rst-psh+ack-urg-ece-cwr"],
      ["tcp,tcp_flags=syn|ack", "tcp,tcp_flags=0x012"],
      ["tcp,tcp_flags=syn|ack", "tcp,tcp_flags=0x12/0xfff"],
      ["tcp6,tcp_flags[1]=1", "tcp6,tcp_flags=+syn"],
      ["tcp,tcp_flags=+[800]", "tcp,tcp_flags=0x800/0x800"],
    ]
  ) sameMatch(a, b);
  assertEquals(
    dump("tcp,tcp_flags=0x012/0x0ff actions=drop").split(",")[2],
    "tcp_flags=-fin+syn-rst-psh+ack-urg-ece-cwr actions=drop",
  );
  assertEquals(
    dump("tcp,tcp_flags=0x12 actions=drop"),
    "priority=32768,tcp,tcp_flags=syn|ack actions=drop",
  );
  assertEquals(dump("tcp,tcp_flags=0 actions=drop"), "priority=32768,tcp,tcp_flags=0 actions=drop");
  refused("tcp,tcp_flags=+ack-ack actions=drop", 5, "ack is given twice");
  refused("tcp,tcp_flags=0x1000 actions=drop", 5, "0x1000 is larger than 4095");
  refused("tcp,tcp_flags=fin+syn actions=drop", 5, '"fin+syn" is not a TCP flag');
  refused(
    "udp,tcp_flags=+syn actions=drop",
    5,
    "tcp_flags needs tcp or tcp6, and the match says udp",
  );
});

Deno.test("neighbour discovery's fields need the ICMPv6 type, given anywhere in the match", () => {
  const solicit = "icmp6,icmp_type=135,nd_target=fe80::1,nd_sll=00:00:00:00:00:01";
  sameMatch(solicit, "nd_sll=00:00:00:00:00:01,nd_target=fe80::1,icmpv6_type=135,icmp6");
  sameMatch(solicit, "ipv6,nw_proto=58,tp_src=135,nd_target=fe80::1,nd_sll=00:00:00:00:00:01");
  // Open vSwitch's shared members: arp_sha under a solicitation is nd_sll.
  sameMatch(solicit, "icmp6,icmp_type=135,nd_target=fe80::1,arp_sha=00:00:00:00:00:01");
  sameMatch("arp,arp_tha=00:00:00:00:00:02", "arp,nd_tll=00:00:00:00:00:02");
  assertEquals(
    dump("icmp6,icmp_type=136,icmp_code=0,nd_tll=00:00:00:00:00:02 actions=drop"),
    "priority=32768,icmp6,icmpv6_type=136,icmpv6_code=0,nd_tll=00:00:00:00:00:02 actions=drop",
  );
  refused(
    "icmp6,nd_target=::1 actions=drop",
    7,
    "needs icmp6,icmp_type=135 or icmp6,icmp_type=136",
  );
  refused(
    "icmp6,icmp_type=136,nd_sll=00:00:00:00:00:01 actions=drop",
    21,
    "says icmp6,icmp_type=136",
  );
  refused("icmp6,icmp_type=135,icmp_code=1,nd_target=::1 actions=drop", 33, "icmp_code=1");
  refused("icmp6,icmp_type=135,nd_target=10.0.0.1 actions=drop", 21, "not an IPv6 address");
});

Deno.test("new frame fields: nw_ttl, ipv6_label, arp_sha, arp_tha, with their prerequisites", () => {
  assertEquals(
    dump("ipv6,ipv6_label=5/1 actions=drop"),
    "priority=32768,ipv6,ipv6_label=0x00001/0x00001 actions=drop",
  );
  assertEquals(dump("ipv6,nw_ttl=5 actions=drop"), "priority=32768,ipv6,nw_ttl=5 actions=drop");
  refused("ipv6,ipv6_label=0x100000 actions=drop", 6, "larger than 1048575");
  refused("ip,ipv6_label=1 actions=drop", 4, "ipv6_label needs ipv6");
  refused("arp,nw_ttl=1 actions=drop", 5, "nw_ttl needs ip or ipv6");
  refused("ip,arp_sha=00:00:00:00:00:01 actions=drop", 4, "arp_sha needs arp");
});

Deno.test("fields warren lacks are refused with why", () => {
  refused("reg0=1 actions=drop", 1, "warren has one table");
  refused("tun_metadata0=1 actions=drop", 1, "geneve_class");
  refused("ct_state=+trk actions=drop", 1, "does not track connections");
});

Deno.test("names of Object's own properties are no fields, shorthands or flow words", () => {
  refused("constructor actions=drop", 1, "not a field or a shorthand");
  refused("toString=1 actions=drop", 1, "toString is not a match field");
  refused("ip,nw_frag=constructor actions=drop", 4, "is not no, yes, first");
  assertThrows(() => parseActions("load:1->constructor[]"), FlowSyntaxError, "cannot set");
  assertThrows(() => parseActions("set_field:1->hasOwnProperty"), FlowSyntaxError, "cannot set");
});

Deno.test("port names that flows would read otherwise are refused", () => {
  for (const name of ["2", "0x10", "LOCAL", "in_port", "Normal"]) {
    assertThrows(() => checkPortName(name), PortError, "flows would read it as a port");
  }
  assertEquals(checkPortName("web2"), "web2");
});

const PORTS: Port[] = [
  { kind: "local", name: "web", number: 1, device: "wl0", xdp: false, net: 0 },
  {
    ...tunnelPort("vx0", "vxlan", "u0", { remote_ip: "flow", key: "flow" }),
    number: 2,
  },
  { kind: "local", name: "db", number: 3, device: "dl0", xdp: false, net: 0 },
];
const lookup: PortLookup = {
  byName: (n) => PORTS.find((p) => p.name === n),
  byNumber: (n) => PORTS.find((p) => p.number === n),
};

Deno.test("compiling: outputs by number, and the flow's own in_port after load:0->in_port", () => {
  const c = compileFlow(
    flow("in_port=1 actions=set_tunnel:5001,set_field:192.0.2.9->tun_dst,2,3"),
    lookup,
  );
  assertEquals(c.actions.map((a) => a.port), [3, 2]);
  // As in Open vSwitch, the datapath skips an output to the input port ...
  const flags = (text: string) => compileFlow(flow(text), lookup).actions.map((a) => a.flags);
  assertEquals(flags("in_port=1,actions=1"), [ACTF_LAST]);
  // ... but after load:0->in_port.
  assertEquals(flags("in_port=web actions=output:3,load:0->in_port,output:web"), [
    0,
    ACTF_LAST | ACTF_HAIRPIN,
  ]);
  assertThrows(
    () =>
      compileFlow(
        flow(
          "in_port=web actions=set_tunnel(id=1,dst=192.0.2.9),output:vx0,load:0->in_port,output:web",
        ),
        lookup,
      ),
    CompileError,
    "put load:0->in_port before the tunnel outputs",
  );
  assertThrows(() => compileFlow(flow("actions=9"), lookup), CompileError, "there is no port 9");
  assertThrows(
    () => compileFlow(flow("in_port=vx0 actions=in_port"), lookup),
    CompileError,
    "in_port would send packets back to vx0, a tunnel port",
  );
  assertEquals(compileFlow(flow("in_port=web actions=in_port"), lookup).actions.length, 1);
});

Deno.test("compiling some bits of tun_id: the packet's id, or folded into a whole id before it", () => {
  const compiled = (actions: string) => compileFlow(flow(`in_port=web actions=${actions}`), lookup);
  const readBack = (actions: string) => {
    const c = compiled(actions);
    const slots = c.tunKeyBytes.map((b) => tunKeyCodec.decode(b));
    return formatActions(decompileActions(c.actions, (k) => slots[k], lookup), namesOf(lookup));
  };
  const text = "set_field:0x500/0xff00->tun_id,set_tunnel(dst=192.0.2.9),output:vx0";
  assertEquals(readBack(text), text);
  // The output's key says the id is the packet's; it has none of its own.
  const c = compiled(text);
  const key = tunKeyCodec.decode(c.tunKeyBytes[c.actions[1].arg]);
  assertEquals([c.actions[0].op, key.set & (TunKeySet.ID | TunKeySet.ID_PKT)], [
    ActionOp.SET_FIELD,
    TunKeySet.ID_PKT,
  ]);
  // After a whole id the bits kept are known: one id, nothing from the packet.
  assertEquals(
    readBack(
      "set_tunnel:0x1234,set_field:0x500/0xff00->tun_id,set_tunnel(dst=192.0.2.9),output:vx0",
    ),
    `set_tunnel(id=${0x534},dst=192.0.2.9),output:vx0`,
  );
  assertThrows(
    () =>
      compiled(
        "set_field:1/1->tun_id,set_tunnel(dst=192.0.2.9),output:vx0,set_field:2/2->tun_id,output:vx0",
      ),
    CompileError,
    "after a tunnel output",
  );
});

Deno.test("parseFlow and parseMatch give keys a caller may spread, clone and compare", () => {
  // The readers warren applies with build keys whose byte fields are
  // accessors; the library's parsers must not hand those out, or a spread
  // or structuredClone of a parsed match would drop its addresses.
  const flow = parseFlow("ip,nw_dst=10.1.2.0/24,actions=drop", names);
  const { match } = parseMatch("ipv6,ipv6_src=2001:db8::1", names);
  for (
    const [key, field, want] of [
      [flow.match.key, "ip_dst", [10, 1, 2, 0]],
      [flow.match.mask, "ip_dst", [255, 255, 255, 0]],
      [match.key, "ip_src", [0x20, 0x01, 0x0d, 0xb8]],
    ] as const
  ) {
    for (const copy of [{ ...key }, structuredClone(key)]) {
      assert(Object.hasOwn(copy, field), `${field} survives a copy`);
      assertEquals([...copy[field].subarray(0, 4)].slice(0, want.length), [...want]);
    }
  }
});
