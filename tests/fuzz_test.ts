/**
 * Fuzzing every datapath program with random and mutated packets.
 *
 * fast-check mutates well-formed tunnel packets and workload frames (bytes
 * set, bits flipped, cuts, insertions, deletions, and a "fix" that makes
 * the outer lengths and checksums agree again so the mutation reaches the
 * code behind them) and also feeds purely random bytes. Every input goes
 * through each program and must keep the invariants of the hostile-packet
 * suite (see `checkInvariants`). A failure is shrunk to a minimal packet,
 * written to tests/fuzz-corpus/, and fails the test; every packet in the
 * corpus is replayed on every run.
 *
 * The run is seeded: WARREN_FUZZ_SEED picks the seed (default fixed, so CI
 * is repeatable), WARREN_FUZZ_RUNS how many inputs (default 1500), and
 * WARREN_FUZZ_STATS=1 prints which counters the inputs reached, to see
 * that mutations get past the first checks.
 */
import fc from "fast-check";
import { assert, assertEquals } from "./helpers/assert.ts";
import { META_MAGIC, metaCodec, Stat, statName } from "../src/maps/layouts.ts";
import type { Datapath } from "../src/tunnel/datapath.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { fromHex, scapyMany, toHex } from "./helpers/scapy.ts";
import {
  drops,
  GENEVE_OPTION_FLOW,
  Harness,
  MALFORMED,
  type Outcome,
  skbTestable,
} from "./helpers/hostile.ts";
import { type ProgramName, PROGRAMS } from "../src/maps/names.ts";

const CORPUS = new URL("./fuzz-corpus/", import.meta.url);
const SEED = Number(Deno.env.get("WARREN_FUZZ_SEED") ?? 20261121);
/** With WARREN_FUZZ_STATS set: how often each program moved each counter. */
const REACHED = Deno.env.get("WARREN_FUZZ_STATS") ? new Map<string, number>() : undefined;
const RUNS = Number(Deno.env.get("WARREN_FUZZ_RUNS") ?? 1500);

/** Verdicts each program may return. */
const VERDICTS: Record<ProgramName, number[]> = {
  wr_xdp_underlay: [1, 2, 4], // XDP_DROP, XDP_PASS, XDP_REDIRECT
  wr_tc_underlay: [0, 2, 7], // TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT
  wr_tc_local: [0, 2, 7],
};
const DROP_VERDICT: Record<ProgramName, number> = {
  wr_xdp_underlay: 1,
  wr_tc_underlay: 2,
  wr_tc_local: 2,
};

/** Seeds: well-formed packets of every protocol, and workload frames. */
function seedExprs(mac: string): string[] {
  const E = `Ether(dst='${mac}',src='02:00:00:00:00:99')`;
  const inner =
    "Ether(src='02:00:00:00:00:0a',dst='02:00:00:00:00:0b')/IP(src='10.1.0.1',dst='10.1.0.2')/TCP(sport=1000,dport=80,flags='S',options=[('MSS',1460)])/Raw(b'w'*24)";
  const v4 = "IP(src='192.0.2.2',dst='192.0.2.1',flags='DF')";
  const v6 = "IPv6(src='2001:db8::2',dst='2001:db8::1')";
  const stt = (flags: number, l4off: number) =>
    `TCP(sport=50000,dport=7471,seq=(len(bytes(${inner}))+18)<<16,ack=9,flags='PA',window=65535)/Raw(struct.pack('!BBBBHHQH',0,${flags},${l4off},0,1400,0,42,0)+bytes(${inner}))`;
  const out: string[] = [];
  for (const ip of [v4, v6]) {
    out.push(
      `${E}/${ip}/UDP(sport=50000,dport=4789,chksum=0)/VXLAN(vni=42,flags=0x08)/${inner}`,
      `${E}/${ip}/UDP(sport=50000,dport=4789)/VXLAN(vni=42,flags=0x08)/${inner}`,
      `${E}/${ip}/UDP(sport=50000,dport=6081)/GENEVE(vni=42,proto=0x6558,critical=1,options=[GeneveOptions(classid=0x0102,type=0x80,length=1,data=b'abcd')])/${inner}`,
      `${E}/${ip}/GRE(chksum_present=1,key_present=1,seqnum_present=1,key=42,proto=0x6558)/${inner}`,
      `${E}/${ip}/${stt(0x0e, 34)}`,
    );
  }
  out.push(
    inner,
    "Ether(src='02:00:00:00:00:0a')/Dot1Q(vlan=5)/IPv6(dst='fd00:1::2')/IPv6ExtHdrHopByHop()/UDP(dport=53)/Raw(b'q'*20)",
    "Ether(src='02:00:00:00:00:0a',dst='ff:ff:ff:ff:ff:ff')/ARP(pdst='10.1.0.2')",
    "Ether(src='02:00:00:00:00:0a')/IPv6(dst='fd00:1::2')/ICMPv6ND_NS(tgt='fd00:1::2')/ICMPv6NDOptSrcLLAddr(lladdr='02:00:00:00:00:0a')/ICMPv6NDOptDstLLAddr(lladdr='02:00:00:00:00:0b')",
  );
  return out;
}

/** One change to a packet; positions are taken modulo its length. */
type Mutation =
  | { op: "set"; at: number; value: number }
  | { op: "flip"; at: number; bit: number }
  | { op: "cut"; at: number }
  | { op: "insert"; at: number; bytes: Uint8Array }
  | { op: "delete"; at: number; n: number }
  | { op: "fix" };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant("set" as const), at: fc.nat(), value: fc.nat(255) }),
  fc.record({ op: fc.constant("flip" as const), at: fc.nat(), bit: fc.nat(7) }),
  fc.record({ op: fc.constant("cut" as const), at: fc.nat() }),
  fc.record({
    op: fc.constant("insert" as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
  }),
  fc.record({
    op: fc.constant("delete" as const),
    at: fc.nat(),
    n: fc.integer({ min: 1, max: 16 }),
  }),
  fc.constant({ op: "fix" as const }),
);

function mutate(packet: Uint8Array, muts: Mutation[]): Uint8Array {
  let p = packet;
  for (const m of muts) {
    const at = "at" in m ? m.at % Math.max(p.length, 1) : 0;
    switch (m.op) {
      case "set":
        p = p.slice();
        p[at] = m.value;
        break;
      case "flip":
        p = p.slice();
        p[at] ^= 1 << m.bit;
        break;
      case "cut":
        p = p.slice(0, Math.max(at, 15));
        break;
      case "insert":
        p = new Uint8Array([...p.subarray(0, at), ...m.bytes, ...p.subarray(at)]);
        break;
      case "delete":
        if (p.length - m.n >= 15) {
          p = new Uint8Array([...p.subarray(0, at), ...p.subarray(at + m.n)]);
        }
        break;
      case "fix":
        p = fixOuter(p);
        break;
    }
  }
  return p;
}

/** The Internet checksum's sum, not yet folded or complemented. */
function sum16(b: Uint8Array, from: number, to: number, acc = 0): number {
  for (let i = from; i < to; i += 2) acc += (b[i] << 8) | (i + 1 < to ? b[i + 1] : 0);
  return acc;
}

function fold(acc: number): number {
  while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
  return ~acc & 0xffff;
}

/**
 * Makes the outer IP lengths, the UDP length and every checksum agree with
 * the packet as it now is (IPv4 header, UDP, TCP, GRE), so mutations
 * behind them are not all stopped at the first length check.
 */
function fixOuter(packet: Uint8Array): Uint8Array {
  const p = packet.slice();
  const v = new DataView(p.buffer);
  if (p.length < 14) return p;
  const type = v.getUint16(12);
  let l4: number, proto: number, src: Uint8Array, dst: Uint8Array;
  if (type === 0x0800 && p.length >= 34) {
    const ihl = (p[14] & 0x0f) * 4;
    if (ihl < 20 || 14 + ihl > p.length) return p;
    v.setUint16(16, p.length - 14);
    v.setUint16(24, 0);
    v.setUint16(24, fold(sum16(p, 14, 14 + ihl)));
    l4 = 14 + ihl;
    proto = p[23];
    src = p.slice(26, 30);
    dst = p.slice(30, 34);
  } else if (type === 0x86dd && p.length >= 54) {
    v.setUint16(18, p.length - 54);
    l4 = 54;
    proto = p[20];
    src = p.slice(22, 38);
    dst = p.slice(38, 54);
  } else {
    return p;
  }
  const len = p.length - l4;
  const pseudo = sum16(src, 0, src.length, sum16(dst, 0, dst.length, proto + len));
  if (proto === 17 && len >= 8) {
    v.setUint16(l4 + 4, len);
    v.setUint16(l4 + 6, 0);
    const c = fold(sum16(p, l4, p.length, pseudo));
    v.setUint16(l4 + 6, c === 0 ? 0xffff : c);
  } else if (proto === 6 && len >= 20) {
    v.setUint16(l4 + 16, 0);
    v.setUint16(l4 + 16, fold(sum16(p, l4, p.length, pseudo)));
  } else if (proto === 47 && len >= 8 && (p[l4] & 0x80)) {
    v.setUint16(l4 + 4, 0);
    v.setUint16(l4 + 4, fold(sum16(p, l4, p.length)));
  }
  return p;
}

function label(i: number): string {
  return (i < 32 ? "drop_" : "") + (statName(i) ?? String(i));
}

/**
 * What must hold whatever the packet: a verdict the program may give;
 * exactly one drop reason counted, once, for a drop (or the packet kept
 * as an STT segment); none for anything else; and a packet dropped as
 * malformed, or passed as not ours or as a fragment, left as it was.
 */
function checkInvariants(program: ProgramName, packet: Uint8Array, o: Outcome): void {
  const what = `${program} on ${toHex(packet)}: verdict ${o.retval}, ${
    JSON.stringify(Object.fromEntries([...o.moved].map(([i, n]) => [label(i), n])))
  }`;
  assert.ok(VERDICTS[program].includes(o.retval), `${what}: not a verdict it may give`);
  const dropped = drops(o.moved);
  if (o.retval === DROP_VERDICT[program]) {
    const kept = (o.moved.get(Stat.STT_SEGMENTS) ?? 0) + (o.moved.get(Stat.STT_DUPLICATE) ?? 0);
    if (kept) {
      assert.ok(dropped.length <= 1, `${what}: a kept segment and several drops`);
    } else {
      assertEquals(dropped.length, 1, `${what}: a drop counts exactly one reason`);
      assertEquals(dropped[0][1], 1, `${what}: a drop counts once`);
      if (MALFORMED.has(dropped[0][0])) {
        assertEquals(toHex(o.data), toHex(packet), `${what}: a malformed packet was changed`);
      }
    }
  } else {
    assertEquals(dropped, [], `${what}: a packet not dropped counted a drop`);
  }
  if (o.moved.has(Stat.NOT_OURS) || o.moved.has(Stat.FRAGMENT)) {
    assertEquals(o.moved.size, 1, `${what}: passing a packet counts nothing else`);
    assertEquals(toHex(o.data), toHex(packet), `${what}: a packet not ours was changed`);
  }
}

/** Runs `packet` through every program that takes it and checks each. */
function exercise(h: Harness, packet: Uint8Array): void {
  for (const program of PROGRAMS) {
    if (program !== "wr_xdp_underlay" && !skbTestable(packet)) continue;
    const o = h.run(program, packet);
    for (const [i] of REACHED ? o.moved : []) {
      const k = `${program} ${label(i)}`;
      REACHED!.set(k, (REACHED!.get(k) ?? 0) + 1);
    }
    checkInvariants(program, packet, o);
  }
}

/** A corpus entry: a packet that once broke an invariant. */
interface CorpusEntry {
  /** What went wrong, or what it tests. */
  note: string;
  /** The packet, as hex. */
  hex: string;
}

async function readCorpus(): Promise<[string, CorpusEntry][]> {
  const out: [string, CorpusEntry][] = [];
  for await (const e of Deno.readDir(CORPUS)) {
    if (!e.name.endsWith(".json")) continue;
    out.push([e.name, JSON.parse(await Deno.readTextFile(new URL(e.name, CORPUS)))]);
  }
  return out.sort(([a], [b]) => a.localeCompare(b));
}

/** Saves a failing packet to the corpus; returns its file name. */
async function saveToCorpus(packet: Uint8Array, note: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(packet)));
  const name = `fuzz-${toHex(digest.subarray(0, 6))}.json`;
  await Deno.writeTextFile(
    new URL(name, CORPUS),
    JSON.stringify({ note, hex: toHex(packet) }, null, 2) + "\n",
  );
  return name;
}

/** Ports and flows as text, to compare before and after. */
function tableText(dp: Datapath): string {
  return JSON.stringify(
    [dp.ports(), dp.dumpFlows().map((f) => dp.describeFlow(f))],
    (_k, v) => typeof v === "bigint" ? String(v) : v,
  );
}

/**
 * A program's output as hex, with the flow cache slot of the metadata XDP
 * hands TC checked and then left out: which of a flow's two ways holds it
 * depends on what the fuzzing cached in between, and on which CPU's cache
 * the run found, so it is not part of what a good packet does. Only XDP
 * puts metadata in front of a frame, and only behind its magic.
 */
function outputHex(program: ProgramName, o: Outcome): string {
  const meta = program === "wr_xdp_underlay" && o.data.length >= metaCodec.size
    ? metaCodec.decode(o.data)
    : undefined;
  if (meta?.magic !== META_MAGIC) return toHex(o.data);
  const { flow_slot, ...rest } = meta;
  // FLOW_CACHE_SLOTS (4096) per CPU in bpf/include/classify.h, or none.
  assert.ok(flow_slot < 4096 || flow_slot === 0xffffffff, `flow slot ${flow_slot}`);
  return JSON.stringify(rest, (_k, v) => typeof v === "bigint" ? String(v) : v) +
    toHex(o.data.subarray(metaCodec.size));
}

/** A well-formed packet still does what it did before the fuzzing. */
function stillForwards(h: Harness, packet: Uint8Array, before: Outcome[]): void {
  PROGRAMS.forEach((program, i) => {
    const o = h.run(program, packet);
    assertEquals(o.retval, before[i].retval, `${program} changed its verdict on a good packet`);
    assertEquals(
      outputHex(program, o),
      outputHex(program, before[i]),
      `${program} changed its output`,
    );
  });
}

privilegedTest("every packet that ever broke an invariant still keeps them all", async () => {
  const corpus = await readCorpus();
  assert.ok(corpus.length > 0, "the corpus holds the packets that once failed");
  await using h = await Harness.create();
  const leave = h.enter();
  try {
    for (const [, entry] of corpus) exercise(h, fromHex(entry.hex));
  } finally {
    leave();
  }
});

privilegedTest(
  "fuzzing: mutated and random packets keep every invariant on every program",
  async () => {
    await using h = await Harness.create();
    const exprs = seedExprs(h.mac);
    const seeds = await scapyMany(exprs, "import struct");
    const packet = fc.oneof(
      {
        weight: 4,
        arbitrary: fc.tuple(
          fc.nat(seeds.length - 1),
          fc.array(mutation, { minLength: 1, maxLength: 6 }),
        ).map(
          ([i, muts]) => mutate(seeds[i], muts),
        ),
      },
      { weight: 1, arbitrary: fc.uint8Array({ minLength: 15, maxLength: 200 }) },
    );
    const leave = h.enter();
    try {
      const good = seeds[0];
      const before = PROGRAMS.map((p) => h.run(p, good));
      // The Geneve seeds carry the option a flow of its own matches: the
      // mutations start from packets that reach it.
      exprs.forEach((e, i) => {
        if (!e.includes("GENEVE(")) return;
        const o = h.run("wr_tc_underlay", seeds[i]);
        assertEquals([...o.flows], [[GENEVE_OPTION_FLOW, 1]], `seed ${i} takes the option's flow`);
      });
      const tables = await h.lab.datapath(h.host, tableText);
      const result = fc.check(
        fc.property(packet, (p) => {
          exercise(h, p);
        }),
        { seed: SEED, numRuns: RUNS },
      );
      if (result.failed) {
        const [bad] = result.counterexample!;
        const name = await saveToCorpus(bad, String(result.errorInstance).split("\n")[0]);
        throw new Error(
          `fuzzing (seed ${SEED}) broke an invariant; the shrunk packet is now tests/fuzz-corpus/${name}, ` +
            `commit it:\n${result.errorInstance}`,
        );
      }
      if (REACHED) console.table(Object.fromEntries([...REACHED].sort()));
      // Nothing the fuzzer sent disturbed the datapath.
      stillForwards(h, good, before);
      assertEquals(await h.lab.datapath(h.host, tableText), tables);
    } finally {
      leave();
    }
  },
);
