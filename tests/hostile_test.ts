/**
 * Hostile packets through every program of the datapath, by test-run.
 *
 * Each case is a packet Scapy builds (lengths that lie, headers cut short,
 * flags that announce absent fields ...) and the verdict warren documents
 * for it. For every case, on XDP and on TC:
 *   - the verdict is the documented one;
 *   - a dropped packet bumps exactly one drop-reason counter, the
 *     documented one, by one, and comes back exactly as it went in;
 *   - a packet passed as not ours, or as a fragment, comes back untouched
 *     and bumps no drop counter;
 *   - a decapsulated packet is exactly the inner frame Scapy built, and
 *     takes one flow, the documented one where a case names it.
 * No read past the packet is possible at all: the verifier proves every
 * access is within bounds before the programs load.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Stat, statName } from "../src/maps/layouts.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { scapyMany, toHex } from "./helpers/scapy.ts";
import {
  drops,
  GENEVE_OPTION_FLOW,
  Harness,
  MALFORMED,
  type Outcome,
  skbTestable,
} from "./helpers/hostile.ts";
import { TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_DROP, XDP_PASS } from "./helpers/lab.ts";

/** A drop reason's name in `Stat`. */
type Reason = Extract<keyof typeof Stat, `DROP_${string}`>;

/** What warren does with a packet arriving on the underlay. */
type Expect =
  /** Dropped at XDP (and at TC, without XDP) for this reason. */
  | { drop: Reason; afterDecap?: boolean }
  /** Left to the kernel, untouched, counted under this counter. */
  | { pass: "NOT_OURS" | "FRAGMENT" }
  /** Decapsulated, and this inner frame (a Scapy expression) delivered by `flow`, if given. */
  | { decap: string; flow?: string }
  /** XDP cannot tell a bad checksum from one the NIC left to fill: TC drops it. */
  | { recheck: true }
  /** An STT segment, kept for reassembly. */
  | { consumed: true };

interface Case {
  name: string;
  packet: string;
  expect: Expect;
}

/** Python helpers the packet expressions call. */
const PRELUDE = `
import struct
INNER = Ether(src='02:00:00:00:00:0a',dst='02:00:00:00:00:0b')/IP(src='10.1.0.1',dst='10.1.0.2')/UDP(sport=1000,dport=2000)/Raw(b'warren'*10)
def stt(inner, flags=0, l4off=0, mss=0, vlan=0, ctx=42, ver=0):
    return struct.pack('!BBBBHHQH', ver, flags, l4off, 0, mss, vlan, ctx, 0) + bytes(inner)
def stt_tcp(frame, off=0, total=None, ack=1, flags='PA', **kw):
    frame = bytes(frame)
    total = len(frame) if total is None else total
    return TCP(sport=50000, dport=7471, seq=(total << 16) | off, ack=ack, flags=flags, window=65535, **kw)/Raw(frame[off:])
def sized(n):
    return Ether(src='02:00:00:00:00:0a',dst='02:00:00:00:00:0b')/IP(src='10.1.0.1',dst='10.1.0.2')/UDP(sport=1000,dport=2000)/Raw(bytes((i * 7 + 1) & 0xff for i in range(n)))
def flipped(p, back):
    b = bytearray(bytes(p))
    b[-back] ^= 0x01
    return bytes(b)
def cut(p, n):
    return Raw(bytes(p)[:n])
def opt(cls, typ, data=b'\\xde\\xad\\xbe\\xef'):
    return GeneveOptions(classid=cls, type=typ, length=len(data)//4, data=data)
`;

const INNER = "INNER";
const V4 = (extra = "") => `IP(src='192.0.2.2',dst='192.0.2.1',flags='DF'${extra})`;
const V6 = (extra = "") => `IPv6(src='2001:db8::2',dst='2001:db8::1'${extra})`;
const UDP_VX = (extra = "") => `UDP(sport=50000,dport=4789,chksum=0${extra})`;
const VX = "VXLAN(vni=42,flags=0x08)";
const UDP_GN = (extra = "") => `UDP(sport=50000,dport=6081,chksum=0${extra})`;
const GN = (extra = "") => `GENEVE(vni=42,proto=0x6558${extra})`;
const GR = (extra = "") => `GRE(key_present=1,key=42,proto=0x6558${extra})`;

/** Each protocol's layers between the outer IP header and the inner frame. */
const LAYERS: Record<string, string> = {
  vxlan: `${UDP_VX()}/${VX}`,
  geneve: `${UDP_GN()}/${GN()}`,
  gre: GR(),
};

function cases(): Case[] {
  const out: Case[] = [];
  const add = (name: string, packet: string, expect: Expect) => out.push({ name, packet, expect });
  const E = "E";

  // The packets every mutation departs from, as they should be.
  for (const [proto, layers] of Object.entries(LAYERS)) {
    add(`${proto} over IPv4`, `${E}/${V4()}/${layers}/${INNER}`, { decap: INNER });
    add(`${proto} over IPv6`, `${E}/${V6()}/${layers}/${INNER}`, { decap: INNER });
  }
  add("stt over IPv4", `${E}/${V4()}/stt_tcp(stt(${INNER}))`, { decap: INNER });
  add("stt over IPv6", `${E}/${V6()}/stt_tcp(stt(${INNER}))`, { decap: INNER });

  // Cut at every header boundary, the lengths left as they were: the IP
  // total length now lies. Before the addresses are whole nothing says
  // the packet is ours.
  const bounds: Record<string, [number[], number]> = {
    vxlan: [[14, 24, 34, 42, 50, 64, 84, 92], 20],
    geneve: [[14, 24, 34, 42, 50, 64, 84, 92], 20],
    gre: [[14, 24, 34, 38, 42, 56, 76, 84], 20],
  };
  for (const [proto, [cuts]] of Object.entries(bounds)) {
    for (const n of cuts) {
      add(
        `${proto} over IPv4 cut to ${n} bytes, lengths unchanged`,
        `bytes(${E}/${V4()}/${LAYERS[proto]}/${INNER})[:${n}]`,
        n < 34 ? { pass: "NOT_OURS" } : { drop: "DROP_BAD_IP" },
      );
    }
    for (const n of [14, 40, 54, 62, 70, 84, 104]) {
      add(
        `${proto} over IPv6 cut to ${n} bytes, lengths unchanged`,
        `bytes(${E}/${V6()}/${LAYERS[proto]}/${INNER})[:${n}]`,
        n < 54 ? { pass: "NOT_OURS" } : { drop: "DROP_BAD_IP" },
      );
    }
  }
  for (const n of [14, 34, 40, 54, 72]) {
    add(
      `stt over IPv4 cut to ${n} bytes, lengths unchanged`,
      `bytes(${E}/${V4()}/stt_tcp(stt(${INNER})))[:${n}]`,
      n < 34 ? { pass: "NOT_OURS" } : { drop: "DROP_BAD_IP" },
    );
  }

  // Cut at every boundary with the IP (and UDP) lengths made to agree:
  // each header that is missing is named.
  add("UDP header cut short", `${E}/${V4(",proto=17")}/cut(${UDP_VX()}/${VX}/${INNER}, 4)`, {
    drop: "DROP_BAD_UDP",
  });
  for (
    const [k, expect] of [
      [0, { drop: "DROP_TRUNCATED" }],
      [4, { drop: "DROP_TRUNCATED" }],
      [8, { drop: "DROP_TRUNCATED" }],
      [21, { drop: "DROP_TRUNCATED" }],
      [22, { decap: "cut(INNER, 14)" }],
      [32, { decap: "cut(INNER, 24)" }],
    ] as [number, Expect][]
  ) {
    add(
      `vxlan cut ${k} bytes into the tunnel header`,
      `${E}/${V4()}/${UDP_VX()}/cut(${VX}/${INNER}, ${k})`,
      expect,
    );
    add(
      `geneve cut ${k} bytes into the tunnel header`,
      `${E}/${V4()}/${UDP_GN()}/cut(${GN()}/${INNER}, ${k})`,
      expect,
    );
  }
  add(
    "geneve options announced but cut off",
    `${E}/${V4()}/${UDP_GN()}/cut(${GN(",options=[opt(0x0102,0x01)]")}/${INNER}, 8)`,
    { drop: "DROP_GENEVE_OPTLEN" },
  );
  for (
    const [k, expect] of [
      [2, { drop: "DROP_TRUNCATED" }],
      [4, { drop: "DROP_TRUNCATED" }],
      [8, { drop: "DROP_TRUNCATED" }],
      [21, { drop: "DROP_TRUNCATED" }],
      [22, { decap: "cut(INNER, 14)" }],
    ] as [number, Expect][]
  ) {
    add(
      `gre cut ${k} bytes into the tunnel header`,
      `${E}/${V4(",proto=47")}/cut(${GR()}/${INNER}, ${k})`,
      expect,
    );
  }
  add(
    "gre announcing a checksum it does not carry",
    `${E}/${V4(",proto=47")}/cut(GRE(chksum_present=1,proto=0x6558)/${INNER}, 4)`,
    { drop: "DROP_TRUNCATED" },
  );
  add(
    "gre announcing a sequence number it does not carry",
    `${E}/${V4(",proto=47")}/cut(${GR(",seqnum_present=1")}/${INNER}, 8)`,
    { drop: "DROP_TRUNCATED" },
  );
  // Without its ports a TCP header cannot be told from the host's own TCP.
  add("stt TCP header cut short", `${E}/${V4(",proto=6")}/cut(stt_tcp(stt(${INNER})), 12)`, {
    pass: "NOT_OURS",
  });
  add("stt segment with no payload", `${E}/${V4()}/stt_tcp(b'', total=100)`, { drop: "DROP_STT" });
  add(
    "stt frame cut short with its length unchanged: a first segment",
    `${E}/${V4()}/stt_tcp(stt(${INNER})[:40], total=len(stt(${INNER})), ack=1001)`,
    { consumed: true },
  );

  // Lengths and fields that lie.
  add("IPv4 header length 4", `${E}/${V4(",ihl=4")}/${LAYERS.vxlan}/${INNER}`, {
    drop: "DROP_BAD_IP",
  });
  add("IPv4 header length 0", `${E}/${V4(",ihl=0")}/${LAYERS.vxlan}/${INNER}`, {
    drop: "DROP_BAD_IP",
  });
  add("IP version 6 in an IPv4 frame", `${E}/${V4(",version=6")}/${LAYERS.vxlan}/${INNER}`, {
    drop: "DROP_BAD_IP",
  });
  add("IPv4 total length past the frame", `${E}/${V4(",len=1400")}/${LAYERS.vxlan}/${INNER}`, {
    drop: "DROP_BAD_IP",
  });
  add("IPv4 total length below its header", `${E}/${V4(",len=12")}/${LAYERS.vxlan}/${INNER}`, {
    drop: "DROP_BAD_IP",
  });
  add(
    "IPv4 header length past the checksummed header",
    `${E}/${V4(",ihl=6")}/${LAYERS.vxlan}/${INNER}`,
    { drop: "DROP_BAD_CSUM" },
  );
  add(
    "Ethernet padding after the IP packet is trimmed",
    `bytes(${E}/${V4()}/${LAYERS.vxlan}/${INNER}) + b'\\x00' * 24`,
    { decap: INNER },
  );
  add("UDP length past the IP packet", `${E}/${V4()}/${UDP_VX(",len=600")}/${VX}/${INNER}`, {
    drop: "DROP_BAD_UDP",
  });
  add("UDP length below its header", `${E}/${V4()}/${UDP_VX(",len=7")}/${VX}/${INNER}`, {
    drop: "DROP_BAD_UDP",
  });
  add(
    "UDP length that ends inside the VXLAN header",
    `${E}/${V4()}/${UDP_VX(",len=12")}/${VX}/${INNER}`,
    { drop: "DROP_TRUNCATED" },
  );
  add("IPv6 payload length past the frame", `${E}/${V6(",plen=1400")}/${LAYERS.vxlan}/${INNER}`, {
    drop: "DROP_BAD_IP",
  });
  add(
    "IPv6 payload length that ends inside the UDP packet",
    `${E}/${V6(",plen=20")}/${LAYERS.vxlan}/${INNER}`,
    { drop: "DROP_BAD_UDP" },
  );
  add(
    "IPv6 extension header longer than the payload",
    `${E}/${V6(",plen=16")}/IPv6ExtHdrDestOpt(nh=17,len=4)/${LAYERS.vxlan}/${INNER}`,
    { drop: "DROP_BAD_IP" },
  );
  add(
    "geneve option length past the options",
    `${E}/${V4()}/${UDP_GN()}/${
      GN(",optionlen=2,options=[GeneveOptions(classid=0x0102,type=1,length=5,data=b'\\x00'*4)]")
    }/${INNER}`,
    { drop: "DROP_GENEVE_OPTLEN" },
  );
  add(
    "geneve options length past the packet",
    `${E}/${V4()}/${UDP_GN()}/${GN(",optionlen=63")}/${INNER}`,
    { drop: "DROP_GENEVE_OPTLEN" },
  );
  add(
    "stt frame length below an STT header and an Ethernet header",
    `${E}/${V4()}/stt_tcp(stt(${INNER})[:31])`,
    { drop: "DROP_STT" },
  );
  add(
    "stt segment past the frame length it announces",
    `${E}/${V4()}/stt_tcp(stt(${INNER}), off=0, total=40)`,
    { drop: "DROP_STT" },
  );
  add(
    "stt partial checksum at an offset outside the frame",
    `${E}/${V4()}/stt_tcp(stt(${INNER}, flags=0x02|0x04, l4off=200))`,
    { drop: "DROP_STT" },
  );
  add(
    "stt TCP header with options",
    `${E}/${V4()}/stt_tcp(stt(${INNER}), options=[('NOP', None)]*4)`,
    {
      drop: "DROP_STT",
    },
  );
  add("stt SYN", `${E}/${V4()}/stt_tcp(stt(${INNER}), flags='SA')`, { drop: "DROP_STT" });
  add("stt RST", `${E}/${V4()}/stt_tcp(stt(${INNER}), flags='RA')`, { drop: "DROP_STT" });
  add("stt version 1", `${E}/${V4()}/stt_tcp(stt(${INNER}, ver=1))`, { drop: "DROP_STT" });
  add("stt reserved flags", `${E}/${V4()}/stt_tcp(stt(${INNER}, flags=0x10))`, {
    drop: "DROP_STT",
  });

  // Options and extension headers are walked over.
  add(
    "IPv4 options",
    `${E}/${V4(",options=[IPOption_Router_Alert()]")}/${LAYERS.vxlan}/${INNER}`,
    { decap: INNER },
  );
  add(
    "IPv4 options with a wrong header checksum",
    `${E}/${V4(",options=[IPOption_Router_Alert()],chksum=0x1234")}/${LAYERS.vxlan}/${INNER}`,
    { drop: "DROP_BAD_CSUM" },
  );
  add(
    "IPv6 hop-by-hop and destination options",
    `${E}/${V6()}/IPv6ExtHdrHopByHop()/IPv6ExtHdrDestOpt()/${LAYERS.geneve}/${INNER}`,
    { decap: INNER },
  );
  add(
    "IPv6 routing header",
    `${E}/${V6()}/IPv6ExtHdrRouting(segleft=0)/${LAYERS.gre}/${INNER}`,
    { decap: INNER },
  );
  add(
    "IPv6 with more extension headers than warren walks",
    `${E}/${V6()}/${"IPv6ExtHdrDestOpt()/".repeat(5)}${LAYERS.vxlan}/${INNER}`,
    { pass: "NOT_OURS" },
  );

  // Fragments are the kernel's to reassemble.
  const frag = (extra: string) => `IP(src='192.0.2.2',dst='192.0.2.1',${extra})`;
  add("IPv4 first fragment", `${E}/${frag("flags='MF'")}/${LAYERS.vxlan}/${INNER}`, {
    pass: "FRAGMENT",
  });
  add("IPv4 middle fragment", `${E}/${frag("flags='MF',frag=100,proto=17")}/Raw(b'x'*64)`, {
    pass: "FRAGMENT",
  });
  add("IPv4 last fragment", `${E}/${frag("frag=100,proto=47")}/Raw(b'x'*64)`, {
    pass: "FRAGMENT",
  });
  add(
    "IPv6 first fragment",
    `${E}/${V6()}/IPv6ExtHdrFragment(m=1,nh=17)/${LAYERS.vxlan}/${INNER}`,
    { pass: "FRAGMENT" },
  );
  add(
    "IPv6 last fragment",
    `${E}/${V6()}/IPv6ExtHdrFragment(offset=100,nh=47)/Raw(b'x'*64)`,
    { pass: "FRAGMENT" },
  );

  // Checksums.
  add("IPv4 header checksum wrong", `${E}/${V4(",chksum=0x1234")}/${LAYERS.vxlan}/${INNER}`, {
    drop: "DROP_BAD_CSUM",
  });
  add("vxlan UDP checksum right", `${E}/${V4()}/UDP(sport=50000,dport=4789)/${VX}/${INNER}`, {
    decap: INNER,
  });
  add(
    "vxlan UDP checksum wrong",
    `${E}/${V4()}/UDP(sport=50000,dport=4789,chksum=0x1234)/${VX}/${INNER}`,
    { recheck: true },
  );
  add(
    "geneve UDP checksum wrong over IPv6",
    `${E}/${V6()}/UDP(sport=50000,dport=6081,chksum=0x1234)/${GN()}/${INNER}`,
    { recheck: true },
  );
  add("gre checksum right", `${E}/${V4()}/${GR(",chksum_present=1")}/${INNER}`, { decap: INNER });
  add("gre checksum wrong", `${E}/${V4()}/${GR(",chksum_present=1,chksum=0x1234")}/${INNER}`, {
    recheck: true,
  });
  add("stt TCP checksum wrong", `${E}/${V4()}/stt_tcp(stt(${INNER}), chksum=0x1234)`, {
    recheck: true,
  });
  // STT's TCP checksum covers every byte, summed in pieces of each power
  // of two and a last 1-3 bytes: segments of 80 + n bytes, n 1-7 past
  // 80, 512 and 1024, summed whole and with the last byte or the fifth
  // from last (the last whole word's) flipped.
  for (const n of [1, 2, 3, 4, 5, 6, 7, 433, 434, 435, 436, 437, 438, 439, 947]) {
    const pkt = `${E}/${V4()}/stt_tcp(stt(sized(${n})))`;
    add(`stt segment of ${80 + n} bytes`, pkt, { decap: `sized(${n})` });
    for (const back of [1, 5]) {
      add(
        `stt segment of ${80 + n} bytes, byte ${back} from the end flipped`,
        `flipped(${pkt}, ${back})`,
        {
          recheck: true,
        },
      );
    }
  }

  // Tunnel headers.
  add("vxlan without the I flag", `${E}/${V4()}/${UDP_VX()}/VXLAN(vni=42,flags=0)/${INNER}`, {
    drop: "DROP_VXLAN_FLAGS",
  });
  add(
    "vxlan reserved bits are ignored (RFC 7348)",
    `${E}/${V4()}/${UDP_VX()}/VXLAN(vni=42,flags=0x88,reserved0=7,reserved2=9)/${INNER}`,
    { decap: INNER },
  );
  add(
    "vxlan with a key other than a fixed port's",
    `${E}/IP(src='192.0.2.3',dst='192.0.2.1')/${UDP_VX()}/VXLAN(vni=6,flags=0x08)/${INNER}`,
    {
      drop: "DROP_KEY_MISMATCH",
    },
  );
  add("geneve version 1", `${E}/${V4()}/${UDP_GN()}/${GN(",version=1")}/${INNER}`, {
    drop: "DROP_GENEVE_VERSION",
  });
  add(
    "geneve with an unknown critical option",
    `${E}/${V4()}/${UDP_GN()}/${GN(",critical=1,options=[opt(0x0103,0x81)]")}/${INNER}`,
    { drop: "DROP_GENEVE_CRITICAL" },
  );
  add(
    "geneve with a critical option a flow matches",
    `${E}/${V4()}/${UDP_GN()}/${GN(",critical=1,options=[opt(0x0102,0x80)]")}/${INNER}`,
    { decap: INNER, flow: GENEVE_OPTION_FLOW },
  );
  add(
    "geneve with an unknown option that is not critical",
    `${E}/${V4()}/${UDP_GN()}/${GN(",options=[opt(0x0103,0x01)]")}/${INNER}`,
    { decap: INNER, flow: "priority=100,in_port=gnv actions=output:web" },
  );
  add(
    "geneve with more options than warren walks and the C bit",
    `${E}/${V4()}/${UDP_GN()}/${GN(",critical=1,optionlen=18,options=[opt(0x0103,1)]*9")}/${INNER}`,
    { drop: "DROP_GENEVE_CRITICAL" },
  );
  add(
    "geneve with more options than warren walks, none critical",
    `${E}/${V4()}/${UDP_GN()}/${GN(",optionlen=18,options=[opt(0x0103,1)]*9")}/${INNER}`,
    { decap: INNER },
  );
  add(
    "geneve carrying IP, not Ethernet",
    `${E}/${V4()}/${UDP_GN()}/GENEVE(vni=42,proto=0x0800)/IP()`,
    {
      drop: "DROP_PAYLOAD",
    },
  );
  add("gre version 1", `${E}/${V4()}/${GR(",version=1")}/${INNER}`, { drop: "DROP_GRE_VERSION" });
  add("gre routing present", `${E}/${V4()}/${GR(",routing_present=1")}/${INNER}`, {
    drop: "DROP_GRE_FLAGS",
  });
  add("gre carrying IP, not Ethernet", `${E}/${V4()}/GRE(key_present=1,key=42,proto=0x0800)/IP()`, {
    drop: "DROP_PAYLOAD",
  });
  add(
    "gre with a sequence number",
    `${E}/${V4()}/${GR(",seqnum_present=1,sequence_number=9")}/${INNER}`,
    {
      decap: INNER,
    },
  );
  add("gre without a key", `${E}/${V4()}/GRE(proto=0x6558)/${INNER}`, { decap: INNER });
  add(
    "outer CE over an inner packet that is not ECN-capable (RFC 6040)",
    `${E}/${V4(",tos=0x03")}/${LAYERS.vxlan}/${INNER}`,
    { drop: "DROP_ECN", afterDecap: true },
  );

  // Tunnels inside tunnels are decapsulated once: the inner tunnel packet
  // is a frame like any other, even when it is addressed to us.
  const vxInVx =
    `Ether(src='02:00:00:00:00:0a',dst='02:00:00:00:00:0b')/${V4()}/${LAYERS.vxlan}/${INNER}`;
  add("vxlan inside vxlan", `${E}/${V4()}/${LAYERS.vxlan}/${vxInVx}`, { decap: vxInVx });
  const greInGn = `Ether(src='02:00:00:00:00:0a')/${V6()}/${LAYERS.gre}/${INNER}`;
  add("gre inside geneve", `${E}/${V4()}/${LAYERS.geneve}/${greInGn}`, { decap: greInGn });
  const sttInGre = `Ether(src='02:00:00:00:00:0a')/${V4()}/stt_tcp(stt(${INNER}))`;
  add("stt inside gre", `${E}/${V6()}/${LAYERS.gre}/${sttInGre}`, { decap: sttInGre });

  // VLAN stacks.
  add(
    "a VLAN-tagged underlay frame is the VLAN device's, not XDP's",
    `${E}/Dot1Q(vlan=5)/${V4()}/${LAYERS.vxlan}/${INNER}`,
    { pass: "NOT_OURS" },
  );
  const qinq =
    "Ether(src='02:00:00:00:00:0a',dst='02:00:00:00:00:0b')/Dot1AD(vlan=10)/Dot1Q(vlan=20)/IP(src='10.1.0.1',dst='10.1.0.2')/UDP()";
  add("an inner frame with two VLAN tags", `${E}/${V4()}/${LAYERS.vxlan}/${qinq}`, { decap: qinq });
  const tags3 =
    "Ether(src='02:00:00:00:00:0a',dst='02:00:00:00:00:0b')/Dot1AD(vlan=10)/Dot1Q(vlan=20)/Dot1Q(vlan=30)/IP()/UDP()";
  add("an inner frame with three VLAN tags", `${E}/${V6()}/${LAYERS.gre}/${tags3}`, {
    decap: tags3,
  });

  // Not ours: the host's business.
  add(
    "vxlan to an address that is not a local endpoint",
    `${E}/IP(src='192.0.2.2',dst='192.0.2.9')/${LAYERS.vxlan}/${INNER}`,
    { pass: "NOT_OURS" },
  );
  add(
    "a broken IPv4 header to an address that is not ours",
    `${E}/IP(src='192.0.2.2',dst='192.0.2.9',ihl=4)/${LAYERS.vxlan}/${INNER}`,
    { pass: "NOT_OURS" },
  );
  add("UDP to a port no tunnel uses", `${E}/${V4()}/UDP(sport=1,dport=53)/Raw(b'q'*20)`, {
    pass: "NOT_OURS",
  });
  add("TCP to a port STT does not use", `${E}/${V4()}/TCP(sport=1,dport=22)/Raw(b'q'*20)`, {
    pass: "NOT_OURS",
  });
  add("ARP", `${E}/ARP(pdst='192.0.2.1')`, { pass: "NOT_OURS" });
  add("ICMPv6", `${E}/${V6()}/ICMPv6EchoRequest()`, { pass: "NOT_OURS" });
  return out;
}

/** Frames a workload may send: warren forwards them as frames. */
const LOCAL_FRAMES: [string, string][] = [
  ["one byte of an unknown type", "Ether(src='02:00:00:00:00:0a',type=0x88b5)/Raw(b'\\x45')"],
  [
    "IPv4 header length past the frame",
    "cut(Ether(src='02:00:00:00:00:0a')/IP(dst='10.1.0.2',ihl=15), 34)",
  ],
  ["IPv4 header length 4", "Ether(src='02:00:00:00:00:0a')/IP(dst='10.1.0.2',ihl=4)/UDP()"],
  [
    "IPv4 total length past the frame",
    "Ether(src='02:00:00:00:00:0a')/IP(dst='10.1.0.2',len=9000)/UDP()",
  ],
  [
    "an IPv4 middle fragment",
    "Ether(src='02:00:00:00:00:0a')/IP(dst='10.1.0.2',flags='MF',frag=10)/Raw(b'x'*30)",
  ],
  [
    "IPv6 with five extension headers",
    `Ether(src='02:00:00:00:00:0a')/IPv6()/${"IPv6ExtHdrDestOpt()/".repeat(5)}UDP()`,
  ],
  [
    "IPv6 extension header longer than the frame",
    "Ether(src='02:00:00:00:00:0a')/IPv6()/IPv6ExtHdrHopByHop(len=200)/UDP()",
  ],
  [
    "a TCP SYN whose options run past the frame",
    "cut(Ether(src='02:00:00:00:00:0a')/IP(dst='10.1.0.2')/TCP(flags='S',dataofs=15), 60)",
  ],
  [
    "three VLAN tags",
    "Ether(src='02:00:00:00:00:0a')/Dot1AD(vlan=1)/Dot1Q(vlan=2)/Dot1Q(vlan=3)/IP()/UDP()",
  ],
  ["a truncated ARP", "cut(Ether(src='02:00:00:00:00:0a')/ARP(), 20)"],
  [
    "a neighbour solicitation cut inside its target",
    "cut(Ether(src='02:00:00:00:00:0a')/IPv6()/ICMPv6ND_NS(tgt='fd00::1'), 70)",
  ],
  [
    "a neighbour solicitation with an option of length 0",
    "Ether(src='02:00:00:00:00:0a')/IPv6()/ICMPv6ND_NS(tgt='fd00::1')/Raw(b'\\x01\\x00'+b'\\x00'*6)",
  ],
  [
    "a neighbour advertisement whose option runs past the frame",
    "Ether(src='02:00:00:00:00:0a')/IPv6()/ICMPv6ND_NA(tgt='fd00::1')/Raw(b'\\x02\\x09'+b'\\x00'*6)",
  ],
  [
    "a neighbour solicitation with its source address option twice, and more options than read",
    `Ether(src='02:00:00:00:00:0a')/IPv6()/ICMPv6ND_NS(tgt='fd00::1')/ICMPv6NDOptSrcLLAddr()/ICMPv6NDOptSrcLLAddr()${
      "/ICMPv6NDOptMTU()".repeat(4)
    }`,
  ],
];

function reasonName(i: number): string {
  return (i < 32 ? "drop_" : "") + (statName(i) ?? String(i));
}

/** The counters that moved, by name, for messages. */
function movedText(o: Outcome): string {
  return JSON.stringify(Object.fromEntries([...o.moved].map(([i, n]) => [reasonName(i), n])));
}

/** What TC does with a packet test-run cannot hand it (see checkUnderlay). */
function expectedAtTc(c: Case, packet: Uint8Array): Outcome {
  assert.ok("pass" in c.expect, `${c.name}: only a packet passed as not ours can be this short`);
  return {
    retval: TC_ACT_OK,
    data: packet,
    moved: new Map([[Stat[c.expect.pass], 1]]),
    flows: new Map(),
  };
}

function checkUnderlay(
  h: Harness,
  c: Case,
  packet: Uint8Array,
  inner: Uint8Array | undefined,
): void {
  const xdp = h.run("wr_xdp_underlay", packet);
  const tc = skbTestable(packet) ? h.run("wr_tc_underlay", packet) : expectedAtTc(c, packet);
  const at = (where: string, o: Outcome) =>
    `${c.name}, at ${where}: got ${o.retval} ${movedText(o)}`;
  const e = c.expect;
  if ("drop" in e) {
    const reason = Stat[e.drop];
    for (const [where, o, verdict] of [["XDP", xdp, XDP_DROP], ["TC", tc, TC_ACT_SHOT]] as const) {
      assertEquals(o.retval, verdict, at(where, o));
      assertEquals(drops(o.moved), [[reason, 1]], at(where, o));
      if (!e.afterDecap) {
        assert.ok(MALFORMED.has(reason));
        assertEquals(toHex(o.data), toHex(packet), `${at(where, o)}: the packet changed`);
      }
    }
  } else if ("pass" in e) {
    const stat = Stat[e.pass];
    assertEquals(xdp.retval, XDP_PASS, at("XDP", xdp));
    assertEquals(tc.retval, TC_ACT_OK, at("TC", tc));
    for (const [where, o] of [["XDP", xdp], ["TC", tc]] as const) {
      assertEquals([...o.moved], [[stat, 1]], at(where, o));
      assertEquals(toHex(o.data), toHex(packet), `${at(where, o)}: the packet changed`);
    }
  } else if ("decap" in e) {
    assertEquals(xdp.retval, XDP_PASS, at("XDP", xdp));
    assertEquals(drops(xdp.moved), [], at("XDP", xdp));
    assertEquals(xdp.moved.get(Stat.DECAP), 1, at("XDP", xdp));
    const { frame } = Harness.splitMeta(xdp.data, inner!.length);
    assertEquals(toHex(frame), toHex(inner!), `${c.name}: XDP's inner frame`);
    assertEquals(tc.retval, TC_ACT_REDIRECT, at("TC", tc));
    assertEquals(drops(tc.moved), [], at("TC", tc));
    assertEquals(tc.moved.get(Stat.TC_DECAP), 1, at("TC", tc));
    assertEquals(toHex(tc.data), toHex(inner!), `${c.name}: TC's inner frame`);
    // XDP hands the packet on to TC, which counts its flow.
    assertEquals([...xdp.flows], [], at("XDP", xdp));
    const [flow] = [...tc.flows];
    assertEquals([tc.flows.size, flow?.[1]], [1, 1], `${at("TC", tc)}: one flow, once`);
    if (e.flow) assertEquals(flow[0], e.flow, at("TC", tc));
  } else if ("recheck" in e) {
    assertEquals(xdp.retval, XDP_PASS, at("XDP", xdp));
    assertEquals([...xdp.moved], [], at("XDP", xdp));
    assertEquals(toHex(xdp.data.subarray(xdp.data.length - packet.length)), toHex(packet));
    assertEquals(tc.retval, TC_ACT_SHOT, at("TC", tc));
    assertEquals(drops(tc.moved), [[Stat.DROP_BAD_CSUM, 1]], at("TC", tc));
    assertEquals(toHex(tc.data), toHex(packet), `${at("TC", tc)}: the packet changed`);
  } else {
    // Both programs share the reassembly slots: TC sees the segment XDP kept.
    for (
      const [where, o, verdict, stat] of [
        ["XDP", xdp, XDP_DROP, Stat.STT_SEGMENTS],
        ["TC", tc, TC_ACT_SHOT, Stat.STT_DUPLICATE],
      ] as const
    ) {
      assertEquals(o.retval, verdict, at(where, o));
      assertEquals([...o.moved], [[stat, 1]], at(where, o));
    }
  }
}

privilegedTest(
  "hostile packets on the underlay: the documented verdict and counter, at XDP and at TC",
  async () => {
    await using h = await Harness.create();
    const all = cases();
    const names = new Set(all.map((c) => c.name));
    assertEquals(names.size, all.length, "case names are unique");
    const prelude = `${PRELUDE}\nE = Ether(dst='${h.mac}',src='02:00:00:00:00:99')\n`;
    const inners = all.flatMap((c) => "decap" in c.expect ? [c.expect.decap] : []);
    const built = await scapyMany([...all.map((c) => c.packet), ...inners], prelude);
    const innerBytes = new Map(inners.map((x, i) => [x, built[all.length + i]]));
    const leave = h.enter();
    try {
      all.forEach((c, i) =>
        checkUnderlay(
          h,
          c,
          built[i],
          "decap" in c.expect ? innerBytes.get(c.expect.decap) : undefined,
        )
      );
    } finally {
      leave();
    }
  },
);

privilegedTest(
  "hostile frames from a workload are forwarded as frames, never misread",
  async () => {
    await using h = await Harness.create();
    const frames = await scapyMany(LOCAL_FRAMES.map(([, f]) => f), PRELUDE);
    const leave = h.enter();
    try {
      LOCAL_FRAMES.forEach(([name], i) => {
        const o = h.run("wr_tc_local", frames[i]);
        const msg = `${name}: got ${o.retval} ${movedText(o)}`;
        assertEquals(o.retval, TC_ACT_REDIRECT, msg);
        assertEquals(drops(o.moved), [], msg);
        assertEquals(o.moved.get(Stat.ENCAP), 1, msg);
        // VXLAN over IPv4 puts 50 bytes in front; the frame itself is untouched.
        assertEquals(o.data.length, frames[i].length + 50, msg);
        assertEquals(toHex(o.data.subarray(50)), toHex(frames[i]), msg);
      });
    } finally {
      leave();
    }
  },
);
