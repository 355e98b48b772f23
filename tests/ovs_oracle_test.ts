/**
 * Open vSwitch as an oracle for warren's flow language: every flow of a
 * corpus taken from Open vSwitch's own documentation and tests
 * (tests/ovs-corpus/flows.txt, each with its file and line) goes through
 * `ovs-ofctl parse-flows` (Debian's openvswitch-common, offline) and
 * through warren.
 *
 * - A flow both accept must mean the same: Open vSwitch's printed flow is
 *   read by an interpreter written here, apart from warren's parser, into
 *   the datapath's flow key, and compared with warren's; actions are
 *   compared as the outputs they make, each with the tunnel fields in
 *   force.
 * - A flow Open vSwitch accepts and warren refuses must be refused for one
 *   of the documented reasons below (the README's Flows section lists the
 *   same), several of which go away once the datapath rewrites packets.
 * - A flow Open vSwitch refuses must be refused by warren too, or be one of
 *   the documented cases where warren is deliberately more permissive.
 *
 * @module
 */

import { assert, assertEquals } from "./helpers/assert.ts";
import { runRaw } from "../src/lab/run.ts";
import type { ActionSpec } from "../src/tunnel/flow_actions.ts";
import { type FlowSpec, parseFlow } from "../src/tunnel/flow_syntax.ts";
import { emptyMatch, type IntMember, type Match, type PortNames } from "../src/tunnel/match.ts";
import { compileFlow, type PortLookup } from "../src/tunnel/compile.ts";
import type { Port } from "../src/tunnel/port.ts";
import { formatAddr } from "../src/tunnel/addr.ts";
import { copyFlowKey, TunFlag } from "../src/maps/layouts.ts";

const CORPUS = new URL("./ovs-corpus/flows.txt", import.meta.url);
const README = new URL("../README.md", import.meta.url);

/** Why warren refuses flows Open vSwitch accepts; `stage2` ones are to go. */
const REFUSALS: { reason: string; message: RegExp; stage2?: boolean }[] = [
  { reason: "SCTP port rewrites (CRC32c)", message: /does not recompute SCTP's CRC32c/ },
  {
    reason:
      "strip_vlan where the match says there is no tag (OpenFlow 1.1 and later refuse it too)",
    message: /there is none to take off/,
  },
  {
    reason: "in_port set to a port (warren sets it to 0 only, for the outputs after it)",
    message: /sets it to 0 only/,
  },
  {
    reason: "a field without its prerequisite (OVS drops such a field silently)",
    message: /needs .*(which the match does not say|and the match says)/,
  },
  {
    reason: "more than one table: table=N, resubmit, goto_table, registers",
    message: /warren has one table/,
  },
  {
    reason: "metadata wider than 32 bits (warren's net)",
    message: /does not fit net's 32 bits/,
  },
  {
    reason: "group:G beside other actions (warren's groups stand alone in a flow)",
    message: /stands alone in a flow/,
  },
  {
    reason: "reserved ports warren has not: NORMAL, FLOOD, ALL, CONTROLLER; in_port=LOCAL",
    message: /warren has no (NORMAL|FLOOD|ALL) port|warren has no controller:|LOCAL is no port/,
  },
  { reason: "bundles", message: /warren has no bundles/ },
  { reason: "connection tracking", message: /does not track connections/ },
  { reason: "MPLS", message: /does not (do|parse) MPLS/ },
  {
    reason: "tun_metadataN (warren matches the first Geneve option as geneve_*)",
    message: /first Geneve option/,
  },
  {
    reason: "VXLAN-GBP, ERSPAN and GTP-U fields",
    message: /VXLAN-GBP, ERSPAN or GTP-U/,
  },
  {
    reason: "Open vSwitch's internal fields (pkt_mark, skb_priority, conj_id ...)",
    message: /Open vSwitch's internal state/,
  },
  { reason: "queues and meters", message: /no queues or meters/ },
  { reason: "truncated outputs (output(max_len=…))", message: /does not truncate copies/ },
  {
    reason: "flow expiry, eviction and controller flags (idle_timeout, hard_timeout, " +
      "importance, send_flow_rem, check_overlap)",
    message: /flows do not expire|never evicts|no flow-removed messages|refuses a flow that hides/,
  },
  {
    reason: "register moves and outputs to a port read from a field",
    message: /registers/,
  },
  { reason: "in_port=0 (no port has number 0)", message: /0 is not a port number/ },
  {
    reason: "other Open vSwitch actions (learn, note, sample, multipath, conjunction, exit, " +
      "clone, fin_timeout, debug_slow ...)",
    message: /not an action warren has/,
  },
];

/** Flows Open vSwitch refuses and warren takes, on purpose. */
const PERMISSIVE: { reason: string; flow: RegExp; ovsError: RegExp }[] = [
  {
    reason: "a mask on any field (OVS takes some fields exact only)",
    flow: /=[^,/ ]+\/[^, ]+/,
    ovsError: /invalid mask for field/,
  },
  {
    reason: "tun_tos and tun_ttl matches (no OpenFlow version carries them)",
    flow: /^tun_(tos|ttl)=/,
    ovsError: /OFPBAC_MATCH_INCONSISTENT/,
  },
];

interface Entry {
  cite: string;
  text: string;
}

function readCorpus(): Entry[] {
  return Deno.readTextFileSync(CORPUS).split("\n")
    .filter((l) => l && !l.startsWith("#"))
    .map((l) => {
      const [cite, text] = l.split("\t");
      return { cite, text };
    });
}

type OvsVerdict = { ok: true; out: string } | { ok: false; error: string };

/**
 * Open vSwitch's verdict on each flow. One `ovs-ofctl parse-flows` reads
 * them all; it stops at the first flow it refuses and names its line, so
 * that flow is set aside and the rest read again. A set it cannot print in
 * one protocol (OpenFlow 1.5, chosen for exact output) is halved until the
 * flow that needs another is alone, which is then read in any protocol.
 */
async function ovsVerdicts(flows: string[]): Promise<OvsVerdict[]> {
  const out: OvsVerdict[] = new Array(flows.length);
  const file = await Deno.makeTempFile({ suffix: ".flows" });
  const ofctl = async (args: string[]) => {
    const r = await runRaw(["ovs-ofctl", ...args]).catch((err) => {
      throw new Error(`ovs-ofctl is needed (scripts/run installs openvswitch-common): ${err}`);
    });
    return r;
  };
  // The flows a run of ovs-ofctl printed, without their "FLOW_MOD ... ADD".
  const added = (stdout: string) =>
    stdout.split("\n").filter((l) => l.includes("FLOW_MOD")).map((l) =>
      l.replace(/^.*?: ADD /, "")
    );
  const read = async (set: number[]): Promise<void> => {
    if (set.length === 0) return;
    await Deno.writeTextFile(file, set.map((i) => flows[i] + "\n").join(""));
    const r = await ofctl(["-O", "OpenFlow15", "parse-flows", file]);
    if (r.code === 0) {
      const adds = added(r.stdout);
      assertEquals(adds.length, set.length, r.stdout);
      set.forEach((i, k) => out[i] = { ok: true, out: adds[k] });
      return;
    }
    const at = new RegExp(`${file}:(\\d+): (.*)`).exec(r.stderr);
    if (at) {
      const k = Number(at[1]) - 1;
      out[set[k]] = { ok: false, error: at[2] };
      return read(set.filter((_, j) => j !== k));
    }
    if (set.length > 1) {
      const half = set.length >> 1;
      await read(set.slice(0, half));
      return read(set.slice(half));
    }
    const one = await ofctl(["parse-flow", flows[set[0]]]);
    const [add] = added(one.stdout);
    out[set[0]] = one.code === 0 && add !== undefined
      ? { ok: true, out: add }
      : { ok: false, error: one.stderr.trim().split("\n").pop()! };
  };
  try {
    await read(flows.map((_, i) => i));
    // OpenFlow 1.5 prints mod_vlan_vid and mod_vlan_pcp, where the match
    // leaves the tag open, as push_vlan and set_field, which would push
    // onto a tagged packet too; OpenFlow 1.0, where it can say the flow,
    // says what Open vSwitch does: set the tag's field, or push one.
    for (const [i, v] of out.entries()) {
      if (!v.ok || !v.out.includes("push_vlan")) continue;
      const [add] = added((await ofctl(["parse-flow", flows[i]])).stdout);
      if (add !== undefined) out[i] = { ok: true, out: add };
    }
  } finally {
    await Deno.remove(file);
  }
  return out;
}

// --- An interpreter of Open vSwitch's printed flows --------------------------

/** What a flow means, in a form both sides are brought to. */
interface Meaning {
  priority: number;
  cookie: bigint;
  match: Match;
  /**
   * Outputs in order, each with the tunnel fields in force; "pass" for
   * LOCAL; rewrites in order among them, as `set FIELD=VALUE`.
   */
  outputs: string[];
}

const SHORT: Record<string, [number, number?]> = {
  ip: [0x0800],
  ipv6: [0x86dd],
  arp: [0x0806],
  tcp: [0x0800, 6],
  udp: [0x0800, 17],
  sctp: [0x0800, 132],
  icmp: [0x0800, 1],
  tcp6: [0x86dd, 6],
  udp6: [0x86dd, 17],
  sctp6: [0x86dd, 132],
  icmp6: [0x86dd, 58],
};

function num(t: string): number {
  assert.match(t, /^(0x[0-9a-f]+|\d+)$/, `a number: ${t}`);
  return Number(t);
}

/** `v[/m]` as numbers, the mask all ones of `width` bits when absent. */
function valueMask(t: string, width: number): [number, number] {
  const [v, m] = t.split("/");
  return [num(v), m === undefined ? 2 ** width - 1 : num(m)];
}

function bytesOfAddr(t: string): { v6: boolean; bytes: Uint8Array<ArrayBuffer> } {
  const bytes = new Uint8Array(16);
  if (t.includes(":")) {
    // Expand "::" by hand: this interpreter does not lean on warren's parser.
    const [head, tail] = t.split("::");
    const groups = (s?: string) => s ? s.split(":").map((g) => parseInt(g, 16)) : [];
    const h = groups(head), tl = groups(tail);
    const all = t.includes("::")
      ? [...h, ...new Array(8 - h.length - tl.length).fill(0), ...tl]
      : h;
    all.forEach((g, i) => {
      bytes[2 * i] = g >> 8;
      bytes[2 * i + 1] = g & 0xff;
    });
    return { v6: true, bytes };
  }
  bytes.set(t.split(".").map(Number));
  return { v6: false, bytes };
}

/** An address `a[/prefix|/mask]` as value and mask bytes. */
function addrMask(t: string): { v6: boolean; value: Uint8Array; mask: Uint8Array } {
  const [a, p] = t.split("/");
  const { v6, bytes } = bytesOfAddr(a);
  let mask = new Uint8Array(16);
  const bits = p === undefined ? (v6 ? 128 : 32) : /^\d+$/.test(p) ? Number(p) : -1;
  if (bits >= 0) {
    for (let i = 0; i < bits; i++) mask[i >> 3] |= 0x80 >> (i & 7);
  } else mask = bytesOfAddr(p).bytes;
  return { v6, value: bytes.map((b, i) => b & mask[i]), mask };
}

function mac(t: string): Uint8Array {
  return Uint8Array.from(t.split(":"), (h) => parseInt(h, 16));
}

/** Where each of Open vSwitch's MAC fields lives in the flow key (ND shares ARP's). */
const MAC_MEMBERS: Record<string, "eth_src" | "eth_dst" | "arp_sha" | "arp_tha"> = {
  dl_src: "eth_src",
  dl_dst: "eth_dst",
  arp_sha: "arp_sha",
  arp_tha: "arp_tha",
  nd_sll: "arp_sha",
  nd_tll: "arp_tha",
};

/**
 * tcp_flags as Open vSwitch prints them: `syn|ack` or `0` for all twelve
 * bits, `+syn-ack` for some, as value and mask.
 */
function tcpFlags(t: string): [number, number] {
  const bit = (name: string) => {
    const i = ["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns"].indexOf(name);
    const b = i >= 0 ? 1 << i : Number(`0x${/^\[([0-9a-f]+)\]$/.exec(name)?.[1]}`);
    assert.ok(b > 0 && b < 0x1000, `a TCP flag: ${name}`);
    return b;
  };
  if (!/^[+-]/.test(t)) {
    return [t === "0" ? 0 : t.split("|").reduce((v, n) => v | bit(n), 0), 0xfff];
  }
  let value = 0, mask = 0;
  for (const [, sign, name] of t.matchAll(/([+-])([^+-]+)/g)) {
    mask |= bit(name);
    if (sign === "+") value |= bit(name);
  }
  return [value, mask];
}

/** Open vSwitch's printed match, read into the datapath's flow key. */
function ovsMatch(items: string[]): { match: Match; priority: number } {
  const m = emptyMatch();
  let priority = 32768;
  // `>>> 0`: net is 32 bits, beyond JavaScript's signed bit operators.
  const int = (member: IntMember, v: number, mask: number) => {
    m.mask[member] = (m.mask[member] | mask) >>> 0;
    m.key[member] = ((m.key[member] & ~mask) | (v & mask)) >>> 0;
  };
  for (const item of items) {
    const eq = item.indexOf("=");
    const name = eq < 0 ? item : item.slice(0, eq);
    const value = item.slice(eq + 1);
    if (eq < 0) {
      const s = SHORT[name];
      assert.ok(s, `no interpretation for ${item}`);
      int("eth_type", s[0], 0xffff);
      if (s[1] !== undefined) int("ip_proto", s[1], 0xff);
      continue;
    }
    switch (name) {
      case "priority":
        priority = num(value);
        break;
      case "in_port":
        int("in_port", num(value), 0xffff);
        break;
      case "metadata":
        int("net", ...valueMask(value, 32));
        break;
      case "dl_type":
        int("eth_type", ...valueMask(value, 16));
        break;
      case "tun_id": {
        const [v, mk] = value.split("/");
        m.mask.tun_id = mk === undefined ? 2n ** 64n - 1n : BigInt(mk);
        m.key.tun_id = BigInt(v) & m.mask.tun_id;
        break;
      }
      case "tun_src":
      case "tun_dst":
      case "tun_ipv6_src":
      case "tun_ipv6_dst": {
        const a = addrMask(value);
        const member = name.endsWith("src") ? "tun_src" : "tun_dst";
        m.key[member] = a.value;
        m.mask[member] = a.mask;
        // warren keeps the outer family in a flag, matched with any address.
        int("tun_flags", a.v6 ? TunFlag.V6 : 0, TunFlag.V6);
        break;
      }
      case "tun_flags":
        assert.match(value, /^[+-]oam$/);
        int("tun_flags", value[0] === "+" ? TunFlag.OAM : 0, TunFlag.OAM);
        break;
      case "dl_src":
      case "dl_dst":
      case "arp_sha":
      case "arp_tha":
      case "nd_sll":
      case "nd_tll": {
        const [v, mk] = value.split("/");
        const member = MAC_MEMBERS[name];
        m.mask[member] = mk === undefined ? new Uint8Array(6).fill(0xff) : mac(mk);
        m.key[member] = mac(v).map((b, i) => b & m.mask[member][i]);
        break;
      }
      case "vlan_tci":
        int("vlan_tci", ...valueMask(value, 16));
        break;
      case "dl_vlan":
        int("vlan_tci", 0x1000 | num(value), 0x1fff);
        break;
      case "dl_vlan_pcp":
        int("vlan_tci", 0x1000 | (num(value) << 13), 0xf000);
        break;
      case "nw_src":
      case "nw_dst":
      case "ipv6_src":
      case "ipv6_dst":
      case "arp_spa":
      case "arp_tpa":
      case "nd_target": {
        const a = addrMask(value);
        const member = name === "nd_target" ? name : /src|spa/.test(name) ? "ip_src" : "ip_dst";
        m.key[member] = a.value;
        m.mask[member] = a.mask;
        break;
      }
      case "nw_ttl":
        int("nw_ttl", num(value), 0xff);
        break;
      case "ipv6_label":
        int("ipv6_label", ...valueMask(value, 20));
        break;
      case "tcp_flags":
        int("tcp_flags", ...tcpFlags(value));
        break;
      case "nw_proto":
      case "arp_op":
        int("ip_proto", num(value), 0xff);
        break;
      case "nw_tos":
        int("ip_tos", num(value), 0xfc);
        break;
      case "nw_ecn":
        int("ip_tos", num(value), 0x03);
        break;
      case "nw_frag": {
        const frag: Record<string, [number, number]> = {
          no: [0, 1],
          yes: [1, 1],
          first: [1, 3],
          later: [3, 3],
          not_later: [0, 2],
        };
        int("ip_frag", ...frag[value]);
        break;
      }
      case "tp_src":
      case "tp_dst":
        int(name, ...valueMask(value, 16));
        break;
      case "icmp_type":
        int("tp_src", num(value), 0xff);
        break;
      case "icmp_code":
        int("tp_dst", num(value), 0xff);
        break;
      default:
        throw new Error(`no interpretation for ${item}`);
    }
  }
  // Open vSwitch says "no VLAN tag" as vlan_tci=0/0x1fff: an untagged
  // frame's TCI is all zero, so that is all of it.
  if (m.mask.vlan_tci & 0x1000 && !(m.key.vlan_tci & 0x1000) && m.key.vlan_tci === 0) {
    m.mask.vlan_tci = 0xffff;
  }
  return { match: m, priority };
}

/** The tunnel fields in force, as a label for the outputs they go with. */
interface TunnelState {
  id?: bigint;
  src?: string;
  dst?: string;
}

function outputLabel(port: string, st: TunnelState): string {
  const parts = [port];
  if (st.id !== undefined) parts.push(`id=${st.id}`);
  if (st.src) parts.push(`src=${st.src}`);
  if (st.dst) parts.push(`dst=${st.dst}`);
  return parts.join(" ");
}

/** Open vSwitch's printed actions, as outputs with their tunnel fields. */
function ovsOutputs(actions: string[]): string[] {
  const out: string[] = [];
  const st: TunnelState = {};
  for (const a of actions) {
    let m;
    if (a === "drop") continue;
    if (a === "LOCAL") out.push("pass");
    else if ((m = /^group:(\d+)$/.exec(a))) out.push(`group ${m[1]}`);
    else if (a === "IN_PORT" || a === "dec_ttl") out.push(a.toLowerCase());
    else if (a === "strip_vlan" || a === "pop_vlan") out.push("strip_vlan");
    else if ((m = /^push_vlan:(0x[0-9a-f]+)$/.exec(a))) out.push(`push_vlan ${m[1]}`);
    else if ((m = /^mod_vlan_(vid|pcp):(\d+)$/.exec(a))) out.push(`set vlan_${m[1]}=${m[2]}`);
    else if ((m = /^set_field:(\d+)->vlan_(vid|pcp)$/.exec(a))) {
      // OpenFlow's vlan_vid has 0x1000, "a tag is present", beside the VID.
      out.push(`set vlan_${m[2]}=${Number(m[1]) & (m[2] === "vid" ? 0xfff : 7)}`);
    } else if ((m = /^set_field:(0x[0-9a-f]+|\d+)->vlan_tci$/.exec(a))) {
      // A TCI without 0x1000 is no tag.
      out.push(Number(m[1]) & 0x1000 ? `set vlan_tci=${Number(m[1])}` : "strip_vlan");
    } else if ((m = /^mod_(dl_src|dl_dst|nw_src|nw_dst|tp_src|tp_dst):(.+)$/.exec(a))) {
      out.push(`set ${m[1]}=${m[2]}`);
    } else if ((m = /^mod_nw_tos:(\d+)$/.exec(a))) out.push(`set ip_dscp=${Number(m[1]) >> 2}`);
    else if ((m = /^load:(0x[0-9a-f]+)->NXM_NX_IP_(ECN|TTL)\[\]$/.exec(a))) {
      out.push(`set nw_${m[2].toLowerCase()}=${Number(m[1])}`);
    } else if ((m = /^mod_nw_ttl:(\d+)$/.exec(a))) out.push(`set nw_ttl=${m[1]}`);
    else if ((m = /^set_field:([^-]+)->(eth|ip|tcp|udp)_(src|dst)$/.exec(a))) {
      const layer = { eth: "dl", ip: "nw", tcp: "tp", udp: "tp" }[m[2]];
      out.push(`set ${layer}_${m[3]}=${m[1]}`);
    } else if ((m = /^set_field:([0-9a-f:]+)->ipv6_(src|dst)$/.exec(a))) {
      out.push(`set ipv6_${m[2]}=${m[1]}`);
    } else if (a === "set_field:0->in_port") out.push("set in_port=0");
    else if ((m = /^set_field:(\d+)->(ip_dscp|nw_ecn|nw_ttl)$/.exec(a))) {
      out.push(`set ${m[2]}=${m[1]}`);
    } else if ((m = /^output:(\d+)$/.exec(a))) out.push(outputLabel(m[1], st));
    else if ((m = /^(?:set_field:|set_tunnel(?:64)?:)(0x[0-9a-f]+)(?:->tun_id)?$/.exec(a))) {
      st.id = BigInt(m[1]);
    } else if ((m = /^load:(0x[0-9a-f]+)->NXM_NX_TUN_ID\[\]$/.exec(a))) st.id = BigInt(m[1]);
    else if ((m = /^set_field:([0-9a-f.:]+)->tun_(ipv6_)?(src|dst)$/.exec(a))) {
      st[m[3] as "src" | "dst"] = m[1];
    } else if ((m = /^load:(0x[0-9a-f]+)->NXM_NX_TUN_IPV4_(SRC|DST)\[\]$/.exec(a))) {
      const n = Number(m[1]);
      st[m[2] === "SRC" ? "src" : "dst"] = [24, 16, 8, 0].map((s) => (n >>> s) & 0xff).join(".");
    } else throw new Error(`no interpretation for action ${a}`);
  }
  return out;
}

/** Splits on commas outside parentheses and brackets. */
function splitTop(text: string): string[] {
  const out: string[] = [];
  let depth = 0, start = 0;
  for (let i = 0; i <= text.length; i++) {
    const c = text[i];
    if (c === "(" || c === "[") depth++;
    else if (c === ")" || c === "]") depth--;
    if (i === text.length || (c === "," && depth === 0)) {
      if (i > start) out.push(text.slice(start, i));
      start = i + 1;
    }
  }
  return out;
}

/** What `ovs-ofctl parse-flows` printed (`match [flags] actions=…`) means. */
function ovsMeaning(printed: string): Meaning {
  const i = printed.indexOf("actions=");
  let cookie = 0n;
  const items: string[] = [];
  for (const word of printed.slice(0, i).trim().split(/\s+/).filter(Boolean)) {
    // Flow-mod settings print as `name:value` words beside the match.
    const setting = /^(cookie|table|idle|hard|importance):(.*)$/.exec(word);
    if (setting) {
      if (setting[1] === "cookie") cookie = BigInt(setting[2]);
      else throw new Error(`no interpretation for ${word}`);
    } else items.push(...word.split(","));
  }
  const { match, priority } = ovsMatch(items);
  return { priority, cookie, match, outputs: ovsOutputs(splitTop(printed.slice(i + 8))) };
}

/** What warren made of a flow, brought to the same form. */
function warrenMeaning(f: FlowSpec): Meaning {
  const outputs: string[] = [];
  const st: TunnelState = {};
  const addr = (a: { v6: boolean; bytes: Uint8Array }) => formatAddr(a.bytes, a.v6);
  for (const a of f.actions as ActionSpec[]) {
    if (
      a.type === "pass" || a.type === "in_port" || a.type === "dec_ttl" || a.type === "strip_vlan"
    ) outputs.push(a.type);
    else if (a.type === "push_vlan") outputs.push(`push_vlan 0x${a.tpid.toString(16)}`);
    else if (a.type === "clear_in_port") outputs.push("set in_port=0");
    else if (a.type === "set_field") outputs.push(rewriteLabel(a.field, a.value, a.mask));
    else if (a.type === "group") outputs.push(`group ${a.group}`);
    else if (a.type === "output") outputs.push(outputLabel(a.port, st));
    else if (a.type === "set_tunnel") {
      if (a.id !== undefined) st.id = a.id;
      if (a.src) st.src = addr(a.src);
      if (a.dst) st.dst = addr(a.dst);
      if (a.tos !== undefined || a.ttl !== undefined || a.csum || a.df || a.oam || a.geneve) {
        outputs.push("(set_tunnel fields Open vSwitch has not)");
      }
    }
  }
  // Copied key by key: a parsed key's byte fields are accessors structuredClone leaves out.
  const match = { key: copyFlowKey(f.match.key), mask: copyFlowKey(f.match.mask) };
  if (match.mask.vlan_tci & 0x1000 && match.key.vlan_tci === 0) match.mask.vlan_tci = 0xffff;
  return { priority: f.priority, cookie: f.cookie, match, outputs };
}

/** A rewrite as the interpreter of Open vSwitch's actions labels it, `/mask` when some bits. */
function rewriteLabel(field: string, value: bigint, mask?: bigint): string {
  const bytes = (n: number, v = value) =>
    Array.from({ length: n }, (_, i) => Number((v >> BigInt(8 * (n - 1 - i))) & 0xffn));
  if (field.startsWith("eth")) {
    const mac = (v: bigint) => bytes(6, v).map((b) => b.toString(16).padStart(2, "0")).join(":");
    return `set dl_${field.slice(4)}=${mac(value)}${mask === undefined ? "" : `/${mac(mask)}`}`;
  }
  if (field === "nw_src" || field === "nw_dst") return `set ${field}=${bytes(4).join(".")}`;
  if (field === "ipv6_src" || field === "ipv6_dst") {
    return `set ${field}=${formatAddr(Uint8Array.from(bytes(16)), true)}`;
  }
  return `set ${field}=${value}`;
}

/** Open vSwitch prints IPv6 addresses its own way; compare them as warren prints them. */
function normalOutputs(outputs: string[]): string[] {
  return outputs.map((o) =>
    o.replace(/(src|dst)=([0-9a-f:]*:[0-9a-f:]*)/g, (_, k, a) => {
      const { bytes } = bytesOfAddr(a);
      return `${k}=${formatAddr(bytes, true)}`;
    })
  );
}

// Ports as numbers only: the corpus names none, and every number is a
// local port, so compiling checks what depends on ports (in_port outputs).
const NO_NAMES: PortNames = { number: () => undefined, name: () => undefined };
const localPort = (n: number): Port => ({
  kind: "local",
  name: `p${n}`,
  number: n,
  device: `d${n}`,
  xdp: false,
  net: 0,
});
const ALL_LOCAL: PortLookup = {
  byName: (name) => /^p\d+$/.test(name) ? localPort(Number(name.slice(1))) : undefined,
  byNumber: (n) => localPort(n),
};

Deno.test("warren reads Open vSwitch's documented flows as ovs-ofctl does, or says why not", async () => {
  const corpus = readCorpus();
  const ovs = await ovsVerdicts(corpus.map((e) => e.text));
  const failures: string[] = [];
  const refusals = new Map<string, string[]>();
  const permissive = new Map<string, string[]>();
  let same = 0, bothRefuse = 0;
  corpus.forEach(({ cite, text }, i) => {
    const verdict = ovs[i];
    let spec: FlowSpec | undefined;
    let error = "";
    try {
      spec = parseFlow(text, NO_NAMES);
      compileFlow(spec, ALL_LOCAL);
    } catch (err) {
      spec = undefined;
      error = (err as Error).message;
    }
    const where = `${cite} ${text}`;
    if (verdict.ok && spec) {
      try {
        const theirs = ovsMeaning(verdict.out);
        const ours = warrenMeaning(spec);
        assertEquals(ours.match, theirs.match);
        assertEquals([ours.priority, ours.cookie], [theirs.priority, theirs.cookie]);
        assertEquals(normalOutputs(ours.outputs), normalOutputs(theirs.outputs));
        same++;
      } catch (err) {
        failures.push(`${where}: OVS prints "${verdict.out}", meaning differs: ${err}`);
      }
    } else if (verdict.ok) {
      const r = REFUSALS.find((r) => r.message.test(error));
      if (r) refusals.set(r.reason, [...refusals.get(r.reason) ?? [], where]);
      else failures.push(`${where}: OVS accepts it, warren refuses it undocumented: ${error}`);
    } else if (spec) {
      const p = PERMISSIVE.find((p) => p.flow.test(text) && p.ovsError.test(verdict.error));
      if (p) permissive.set(p.reason, [...permissive.get(p.reason) ?? [], where]);
      else failures.push(`${where}: OVS refuses it (${verdict.error}), warren accepts it`);
    } else bothRefuse++;
  });

  const accepted = ovs.filter((v) => v.ok).length;
  const lines = [
    `corpus: ${corpus.length} flows; OVS accepts ${accepted}, refuses ${corpus.length - accepted}`,
    `OVS accepts, warren accepts with the same meaning: ${same}`,
    `OVS accepts, warren refuses (documented): ${[...refusals.values()].flat().length}`,
    ...REFUSALS.map((r) =>
      `  ${refusals.get(r.reason)?.length ?? 0}  ${r.reason}${r.stage2 ? " [stage 2]" : ""}`
    ),
    `OVS refuses, warren refuses: ${bothRefuse}`,
    `OVS refuses, warren accepts (documented): ${[...permissive.values()].flat().length}`,
    ...PERMISSIVE.map((p) => `  ${permissive.get(p.reason)?.length ?? 0}  ${p.reason}`),
  ];
  console.log(lines.join("\n"));
  for (const [r, l] of refusals) console.log("## " + r + "\n" + l.join("\n"));
  for (const [r, l] of permissive) console.log("## " + r + "\n" + l.join("\n"));
  assertEquals(failures, []);
  // The README's Flows section gives the same counts.
  const readme = Deno.readTextFileSync(README).replace(/\s+/g, " ");
  for (
    const said of [
      `it reads ${corpus.length} flows from`,
      `Of the ${accepted} that Open vSwitch 3.1 accepts, warren reads ${same} with the same match`,
      `and refuses ${[...refusals.values()].flat().length}, each for one of these reasons`,
      `of the ${corpus.length - accepted} it refuses, warren refuses ${bothRefuse} and takes ${
        [...permissive.values()].flat().length
      } on purpose`,
    ]
  ) assert.ok(readme.includes(said), `README.md's Flows section should say "${said}"`);
  // A documented reason no flow needs is documentation gone stale.
  for (const r of REFUSALS) assert.ok(refusals.has(r.reason), `no flow refused for: ${r.reason}`);
  for (const p of PERMISSIVE) assert.ok(permissive.has(p.reason), `no flow for: ${p.reason}`);
});
