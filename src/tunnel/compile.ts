/**
 * Compiling flows into what the datapath runs, and back.
 *
 * The datapath does no sorting or counting (see bpf/include/actions.h), so
 * the compiler puts rewrites and local outputs first, in the order written
 * (each output a copy of the packet as rewritten so far), then tunnel
 * outputs each with the tunnel key in force when it was written
 * (set_tunnel fields accumulate, as in Open vSwitch), then `pass`; and it
 * flags the action the packet itself takes. Combinations the datapath cannot carry out are refused here, with
 * a sentence saying why.
 *
 * @module
 */

import {
  ACTF_HAIRPIN,
  ACTF_LAST,
  type ActionEntry,
  ActionOp,
  encodeFlowKey,
  encodeFlowMask,
  FlowFlag,
  flowKeyCodec,
  GENEVE_OPT_MAX,
  MAX_ACTIONS,
  MAX_GROUP_BUCKETS,
  NO_TUN_KEY,
  SetFieldId,
  TunFlag,
  tunKeyCodec,
  type TunKeyEntry,
  TunKeySet,
} from "../maps/layouts.ts";
import { type Addr, bigintBytes, bigintOfBytes } from "./addr.ts";
import {
  type ActionSpec,
  formatActions,
  type GeneveOption,
  type RewriteField,
  type SetField,
  type SetTunnel,
} from "./flow_actions.ts";
import { type FlowSpec, formatFlow } from "./flow_syntax.ts";
import type { Match, PortNames } from "./match.ts";
import type { GroupSpec } from "./group_syntax.ts";
import type { Port, TunnelPort } from "./port.ts";

/** Looks ports up by name and number. */
export interface PortLookup {
  /** The port named `name`. */
  byName(name: string): Port | undefined;
  /** Port number `n`. */
  byNumber(n: number): Port | undefined;
}

/** CompileError is a flow the datapath cannot carry out. */
export class CompileError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "CompileError";
  }
}

/** A flow ready for the kernel, its tunnel keys not yet given slots. */
export interface CompiledFlow {
  /** The flow as given. */
  spec: FlowSpec;
  /** The encoded mask: the identity of its mask. */
  maskBytes: Uint8Array;
  /** The encoded masked key. */
  keyBytes: Uint8Array;
  /** Actions; a TUNNEL's arg indexes `tunKeys` until slots are given. */
  actions: ActionEntry[];
  /** Tunnel keys the TUNNEL actions use, as `struct wr_tun_key` bytes. */
  tunKeyBytes: Uint8Array[];
  /** WR_FLOWF_* flags. */
  flags: number;
}

const TK = Object.fromEntries(tunKeyCodec.fields.map((f) => [f.name, f.offset])) as Record<
  string,
  number
>;

/**
 * The encoded key and mask of a match, the key masked; written into
 * `keyBytes` and `maskBytes` when given (every byte of them).
 */
export function encodeMatch(
  m: Match,
  keyBytes: Uint8Array = new Uint8Array(flowKeyCodec.size),
  maskBytes: Uint8Array = new Uint8Array(flowKeyCodec.size),
): { keyBytes: Uint8Array; maskBytes: Uint8Array } {
  encodeFlowKey(m.key, keyBytes, 0, m.mask, encodeFlowMask(m.mask, maskBytes));
  return { keyBytes, maskBytes };
}

/** Geneve option TLVs in wire format. */
export function encodeGeneveOptions(opts: GeneveOption[]): Uint8Array {
  const total = opts.reduce((n, o) => n + 4 + o.data.length, 0);
  if (total > GENEVE_OPT_MAX) {
    throw new CompileError(`Geneve options take ${total} bytes; at most ${GENEVE_OPT_MAX} fit`);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const o of opts) {
    if (o.data.length % 4 || o.data.length > 124) {
      throw new CompileError("Geneve option data is a multiple of 4 bytes, at most 124");
    }
    out[at] = o.class >> 8;
    out[at + 1] = o.class & 0xff;
    out[at + 2] = o.type;
    out[at + 3] = o.data.length / 4;
    out.set(o.data, at + 4);
    at += 4 + o.data.length;
  }
  return out;
}

/** The Geneve options in wire-format bytes. */
export function decodeGeneveOptions(bytes: Uint8Array): GeneveOption[] {
  const out: GeneveOption[] = [];
  for (let at = 0; at + 4 <= bytes.length;) {
    const len = (bytes[at + 3] & 0x1f) * 4;
    out.push({
      class: (bytes[at] << 8) | bytes[at + 1],
      type: bytes[at + 2],
      data: bytes.slice(at + 4, at + 4 + len),
    });
    at += 4 + len;
  }
  return out;
}

/**
 * The tunnel key an output to `port` takes, its fields from `st`; with
 * `fromPacket`, its id is the packet's, as a masked set_field left it.
 */
function tunKeyOf(
  st: SetTunnel,
  port: Extract<Port, { kind: "tunnel" }>,
  fromPacket = false,
): Uint8Array {
  if (port.remote === "flow" && !st.dst) {
    throw new CompileError(
      `output:${port.name} has remote_ip=flow, so it needs set_tunnel(dst=…) before it`,
    );
  }
  if (port.keyOut === "flow" && st.id === undefined && !fromPacket) {
    throw new CompileError(
      `output:${port.name} has key=flow, so it needs set_tunnel(id=…) before it`,
    );
  }
  if (st.geneve?.length && port.proto !== "geneve") {
    throw new CompileError(`output:${port.name} is ${port.proto}, which carries no Geneve options`);
  }
  const limit = port.proto === "gre" ? 2n ** 32n : port.proto === "stt" ? 2n ** 64n : 2n ** 24n;
  if (st.id !== undefined && port.keyOut === "flow" && st.id >= limit) {
    throw new CompileError(`tunnel id ${st.id} does not fit ${port.proto} (less than ${limit})`);
  }
  if (st.dst && st.src && st.dst.v6 !== st.src.v6) {
    throw new CompileError("set_tunnel dst and src are of different families");
  }
  if (st.dst && port.remote === "flow" && port.local && port.local.v6 !== st.dst.v6) {
    throw new CompileError(`set_tunnel dst is not of the family of ${port.name}'s local_ip`);
  }
  let set = 0;
  let flags = 0;
  if (st.tos !== undefined) set |= TunKeySet.TOS;
  if (st.ttl !== undefined) set |= TunKeySet.TTL;
  if (st.dst) set |= TunKeySet.DST;
  if (st.src) set |= TunKeySet.SRC;
  if (st.id !== undefined) set |= TunKeySet.ID;
  if (fromPacket) set |= TunKeySet.ID_PKT;
  if (st.df) flags |= TunFlag.DF;
  if (st.csum) flags |= TunFlag.CSUM;
  if (st.oam) flags |= TunFlag.OAM;
  if ((st.dst ?? st.src)?.v6) flags |= TunFlag.V6;
  // Written straight into struct wr_tun_key: a table of a million flows
  // compiles this a million times.
  const out = new Uint8Array(tunKeyCodec.size);
  new DataView(out.buffer).setBigUint64(TK.tun_id, st.id ?? 0n);
  if (st.dst) out.set(st.dst.bytes, TK.dst);
  if (st.src) out.set(st.src.bytes, TK.src);
  out[TK.tos] = st.tos ?? 0;
  out[TK.ttl] = st.ttl ?? 0;
  out[TK.flags] = flags;
  if (st.geneve?.length) {
    const gnv = encodeGeneveOptions(st.geneve);
    if (st.geneve.some((o) => o.type & 0x80)) set |= TunKeySet.GNV_CRIT;
    out[TK.gnv_len] = gnv.length;
    out.set(gnv, TK.gnv_opts);
  }
  out[TK.set] = set;
  return out;
}

function merge(a: SetTunnel, b: SetTunnel): SetTunnel {
  const out: SetTunnel = { ...a };
  for (const [k, v] of Object.entries(b)) {
    if (v !== undefined) (out as unknown as Record<string, unknown>)[k] = v;
  }
  return out;
}

/** What a flow's actions compile to, shared by flows with the same actions. */
export interface CompiledActions {
  /** Actions; a TUNNEL's arg indexes `tunKeyBytes`. */
  actions: ActionEntry[];
  /** Tunnel keys the TUNNEL actions use, as `struct wr_tun_key` bytes. */
  tunKeyBytes: Uint8Array[];
  /** WR_FLOWF_* flags. */
  flags: number;
}

/**
 * Compiled action lists by list, for one batch of flows against one set of
 * ports. The parser hands out one frozen list per distinct action text, so
 * a million flows sharing a few lists compile each list once.
 */
export type ActionMemo = Map<readonly ActionSpec[], MemoizedActions>;

/** A list's compiled actions, with its rewrite of an IPv6 address (if any): it needs ipv6 in the match. */
type MemoizedActions = CompiledActions & { ipv6Rewrite?: ActionSpec };

/**
 * Compiles one flow against the ports that exist. An error starts with the
 * flow as text: among a million, the user must learn which one. Its key
 * and mask are written into `keyBytes` and `maskBytes` when given.
 */
export function compileFlow(
  spec: FlowSpec,
  ports: PortLookup,
  memo?: ActionMemo,
  keyBytes: Uint8Array = new Uint8Array(flowKeyCodec.size),
  maskBytes: Uint8Array = new Uint8Array(flowKeyCodec.size),
): CompiledFlow {
  // Fields named, not spread: a flow installed at a time pays for a spread.
  const a = compileFlowInto(spec, ports, keyBytes, maskBytes, memo);
  return {
    spec,
    keyBytes,
    maskBytes,
    actions: a.actions,
    tunKeyBytes: a.tunKeyBytes,
    flags: a.flags,
  };
}

/**
 * {@link compileFlow} without allocating: the flow's masked key and mask
 * are written into `keyBytes` and `maskBytes` (a table of a million flows
 * reuses the same two), its actions returned.
 */
export function compileFlowInto(
  spec: FlowSpec,
  ports: PortLookup,
  keyBytes: Uint8Array,
  maskBytes: Uint8Array,
  memo?: ActionMemo,
): CompiledActions {
  try {
    const { key, mask } = spec.match;
    // Looked up once: a table of a million flows compiles this a million times.
    const inPort = mask.in_port ? ports.byNumber(key.in_port) : undefined;
    if (mask.in_port && !inPort) {
      throw new CompileError(`in_port ${key.in_port} does not exist`);
    }
    let compiled = memo?.get(spec.actions);
    const v6 = compiled
      ? compiled.ipv6Rewrite
      : spec.actions.find((a) =>
        a.type === "set_field" && (a.field === "ipv6_src" || a.field === "ipv6_dst")
      );
    if (v6 && !(mask.eth_type === 0xffff && key.eth_type === 0x86dd)) {
      // Open vSwitch's prerequisite: the rewrite would be skipped on everything else.
      throw new CompileError(
        `${formatActions([v6], NO_NAMES)} needs ipv6 in the match, as in Open vSwitch`,
      );
    }
    if (!compiled) {
      compiled = compileActions(spec.actions, ports);
      // Only lists nobody can change afterwards are shared.
      if (memo && Object.isFrozen(spec.actions)) {
        memo.set(spec.actions, { ...compiled, ipv6Rewrite: v6 });
      }
    }
    if (inPort) checkInPort(inPort, compiled.actions);
    encodeMatch(spec.match, keyBytes, maskBytes);
    return compiled;
  } catch (err) {
    if (err instanceof CompileError) err.message = `${flowText(spec, ports)}: ${err.message}`;
    throw err;
  }
}

/** Refuses actions that a flow matching in_port `port` cannot carry out. */
function checkInPort(port: Port, actions: ActionEntry[]): void {
  if (port.kind === "tunnel" && actions.some((a) => a.op === ActionOp.IN_PORT)) {
    // The datapath would drop every such packet: it sends back to local ports only.
    throw new CompileError(
      `in_port would send packets back to ${port.name}, a tunnel port, and warren sends ` +
        "packets back only to local ports: its datapath would drop them all",
    );
  }
}

/** A group ready for the kernel, its tunnel keys not yet given slots. */
export interface CompiledGroup {
  /** The group as given. */
  spec: GroupSpec;
  /** One action per bucket, outputs to local ports first; a TUNNEL's arg indexes `tunKeyBytes`. */
  buckets: ActionEntry[];
  /** Tunnel keys the TUNNEL buckets use, as `struct wr_tun_key` bytes. */
  tunKeyBytes: Uint8Array[];
  /** How many buckets are outputs to local ports (the first ones). */
  nLocal: number;
}

/** Ports as names and numbers, for printing what a PortLookup knows. */
export function namesOf(ports: PortLookup): PortNames {
  return { number: (n) => ports.byName(n)?.number, name: (n) => ports.byNumber(n)?.name };
}

/**
 * The bytes of the outer headers (Ethernet, IP, tunnel) an output to
 * `port` with tunnel key `tk` puts in front of a frame, as the datapath's
 * encapsulation builds them.
 */
export function outerHeaderLength(port: TunnelPort, tk: Uint8Array): number {
  // A flow-based remote is the tunnel key's (compiling made sure it has one).
  const v6 = port.remote === "flow" ? (tk[TK.flags] & TunFlag.V6) !== 0 : port.remote.v6;
  const csum = port.csum || (tk[TK.flags] & TunFlag.CSUM) !== 0;
  const tunnel = {
    vxlan: 16,
    geneve: 16 + (tk[TK.gnv_len] & ~3),
    gre: 4 + (csum ? 4 : 0) + (port.keyOut === "none" ? 0 : 4) + (port.seq ? 4 : 0),
    stt: 20 + 18,
  }[port.proto];
  return 14 + (v6 ? 40 : 20) + tunnel;
}

/**
 * Compiles a group against the ports that exist: each bucket one output,
 * to a local port (at most one bucket each) or to a tunnel port with its
 * tunnel key; outputs to local ports go first. Its tunnel buckets share
 * one outer header length, as the copies of one packet are made by
 * rewriting the header in place. An error starts with the group's id.
 */
export function compileGroup(spec: GroupSpec, ports: PortLookup): CompiledGroup {
  try {
    if (spec.buckets.length > MAX_GROUP_BUCKETS) {
      throw new CompileError(
        `${spec.buckets.length} buckets; a group has at most ${MAX_GROUP_BUCKETS}`,
      );
    }
    const locals: ActionEntry[] = [];
    const tunnels: ActionEntry[] = [];
    const tunKeyBytes: Uint8Array[] = [];
    const seen = new Map<string, number>();
    let header: { length: number; bucket: number } | undefined;
    spec.buckets.forEach((b, i) => {
      const what = () => `bucket ${i + 1} (${formatActions(b, namesOf(ports))})`;
      const c = compileActions(b, ports);
      const a = c.actions[0];
      if (c.actions.length !== 1 || (a.op !== ActionOp.OUTPUT && a.op !== ActionOp.TUNNEL)) {
        throw new CompileError(
          `${what()} is not one output: a bucket sends to a local port, or to a tunnel port with its set_tunnel`,
        );
      }
      const port = ports.byNumber(a.port)!;
      const identity = a.op === ActionOp.OUTPUT
        ? `${a.port}`
        : `${a.port}:${String.fromCharCode(...c.tunKeyBytes[0])}`;
      const before = seen.get(identity);
      if (before !== undefined) {
        throw new CompileError(`${what()} repeats bucket ${before + 1}: each copy would go twice`);
      }
      seen.set(identity, i);
      if (a.op === ActionOp.OUTPUT) {
        locals.push({ ...a, flags: 0 });
        return;
      }
      const length = outerHeaderLength(port as TunnelPort, c.tunKeyBytes[0]);
      if (header && header.length !== length) {
        throw new CompileError(
          `${what()} puts ${length} bytes of outer headers in front of a frame, bucket ${
            header.bucket + 1
          } ${header.length}: a group's tunnel buckets share one protocol and address family`,
        );
      }
      header ??= { length, bucket: i };
      tunKeyBytes.push(c.tunKeyBytes[0]);
      tunnels.push({ ...a, flags: 0, arg: tunKeyBytes.length - 1 });
    });
    return { spec, buckets: [...locals, ...tunnels], tunKeyBytes, nLocal: locals.length };
  } catch (err) {
    if (err instanceof CompileError) err.message = `group ${spec.id}: ${err.message}`;
    throw err;
  }
}

/** A flow as text, ports by name: how an error about one flow among many names it. */
export function flowText(spec: FlowSpec, ports: PortLookup): string {
  return formatFlow(spec, {
    number: (name: string) => ports.byName(name)?.number,
    name: (n: number) => ports.byNumber(n)?.name,
  });
}

/** Compiles an action list against the ports that exist. */
export function compileActions(list: readonly ActionSpec[], ports: PortLookup): CompiledActions {
  // Rewrites and local outputs, in the order written.
  const locals: ActionEntry[] = [];
  const tunnels: ActionEntry[] = [];
  const tunKeyBytes: Uint8Array[] = [];
  let state: SetTunnel = { type: "set_tunnel" };
  let pass = false;
  let dropped = false;
  // Outputs after load:0->in_port may go to the port the packet came in on.
  let hairpin = 0;
  // A masked set of tun_id with no whole id before it: tunnel outputs send the packet's.
  let fromPacket = false;
  let alone: ActionEntry | undefined;
  for (const a of list) {
    switch (a.type) {
      case "group":
        alone = { op: ActionOp.GROUP, flags: ACTF_LAST, port: 0, arg: a.group };
        break;
      case "set_net":
        alone = { op: ActionOp.SET_NET, flags: ACTF_LAST, port: 0, arg: a.net };
        break;
      case "drop":
        dropped = true;
        break;
      case "pass":
        pass = true;
        break;
      case "set_tunnel":
        if (a.idMask === undefined) {
          state = merge(state, a);
          if (a.id !== undefined) fromPacket = false;
        } else if (state.id !== undefined) {
          // The bits kept are the set_tunnel's before it, known here.
          state = { ...state, id: (state.id & ~a.idMask) | a.id! };
        } else {
          if (tunnels.length) {
            throw new CompileError(
              `${formatActions([a], NO_NAMES)} after a tunnel output: warren sets the packet's ` +
                "id once, before its tunnel outputs; put it first",
            );
          }
          locals.push(wideEntry(SetFieldId.TUN_ID, 8, a.id!, a.idMask, tunKeyBytes));
          fromPacket = true;
        }
        break;
      case "in_port":
        if (hairpin) {
          throw new CompileError(
            "in_port after load:0->in_port sends to port 0, which is none: " +
              "write the output to the port instead",
          );
        }
        locals.push({ op: ActionOp.IN_PORT, flags: 0, port: 0, arg: 0 });
        break;
      case "clear_in_port":
        hairpin = ACTF_HAIRPIN;
        break;
      case "set_field":
      case "dec_ttl":
      case "push_vlan":
      case "strip_vlan":
        if (tunnels.length || pass) {
          throw new CompileError(
            `${formatActions([a], NO_NAMES)} after ${
              tunnels.length ? "a tunnel output" : "pass"
            }: ` +
              "warren rewrites a packet before it is encapsulated or handed to the stack; " +
              "put the rewrite first",
          );
        }
        locals.push(rewriteEntry(a, tunKeyBytes));
        break;
      case "output": {
        const number = /^\d+$/.test(a.port) ? Number(a.port) : undefined;
        const port = number === undefined ? ports.byName(a.port) : ports.byNumber(number);
        if (!port) {
          throw new CompileError(
            `output:${a.port}: there is no port ${
              number === undefined ? `named "${a.port}"` : number
            }`,
          );
        }
        if (port.kind === "local") {
          locals.push({ op: ActionOp.OUTPUT, flags: hairpin, port: port.number, arg: 0 });
        } else {
          tunKeyBytes.push(tunKeyOf(state, port, fromPacket));
          tunnels.push({
            op: ActionOp.TUNNEL,
            flags: hairpin,
            port: port.number,
            arg: tunKeyBytes.length - 1,
          });
        }
        break;
      }
    }
  }
  if (alone) {
    if (list.length > 1) {
      throw new CompileError(
        alone.op === ActionOp.GROUP
          ? `group:${alone.arg} stands alone in a flow: put the other outputs in the group's buckets`
          : `set_field:${alone.arg}->net stands alone in a flow: the packet is looked up again ` +
            "in its new network, and the flow it finds acts on it",
      );
    }
    return { actions: [alone], tunKeyBytes: [], flags: 0 };
  }
  if (
    locals.some((a) => a.flags & ACTF_HAIRPIN) && tunnels.some((a) => !(a.flags & ACTF_HAIRPIN))
  ) {
    // Local outputs go first: the one after would run before the tunnel output before it.
    throw new CompileError(
      "load:0->in_port between a tunnel output and an output to a local port: warren sends " +
        "to local ports first, so the order would change; put load:0->in_port before the tunnel outputs",
    );
  }
  if (dropped && list.some((a) => a.type !== "drop")) {
    throw new CompileError("drop cannot be combined with other actions");
  }
  if (pass && tunnels.length) {
    throw new CompileError(
      "pass cannot be combined with tunnel outputs (the stack would get the encapsulated packet)",
    );
  }
  const outputs = [...locals, ...tunnels].filter((a) => !isRewrite(a.op)).length + (pass ? 1 : 0);
  // Rewrites that no output follows change nothing anyone sees: a drop.
  const actions: ActionEntry[] = dropped || (outputs === 0 && locals.length)
    ? [{ op: ActionOp.DROP, flags: ACTF_LAST, port: 0, arg: 0 }]
    : [...locals, ...tunnels, ...(pass ? [{ op: ActionOp.PASS, flags: 0, port: 0, arg: 0 }] : [])];
  if (actions.length > MAX_ACTIONS) {
    throw new CompileError(
      `a flow has at most ${MAX_ACTIONS} outputs and rewrites, this one ${actions.length}`,
    );
  }
  const last = actions.findLastIndex((a) => !isRewrite(a.op));
  if (last >= 0) actions[last].flags |= ACTF_LAST;
  let flags = 0;
  if (actions.length === 1 && actions[0].op === ActionOp.OUTPUT) {
    const out = ports.byNumber(actions[0].port);
    if (out?.kind === "local" && out.xdp) flags |= FlowFlag.LOCAL_XDP;
  }
  return { actions, tunKeyBytes, flags };
}

const NO_NAMES: PortNames = { number: () => undefined, name: () => undefined };

/** Whether op rewrites the packet (no output). */
function isRewrite(op: number): boolean {
  return op >= ActionOp.SET_ETH_SRC;
}

/** The datapath's op for setting each field. */
const REWRITE_OPS: Readonly<Record<RewriteField, number>> = {
  eth_src: ActionOp.SET_ETH_SRC,
  eth_dst: ActionOp.SET_ETH_DST,
  nw_src: ActionOp.SET_IP4_SRC,
  nw_dst: ActionOp.SET_IP4_DST,
  ipv6_src: ActionOp.SET_FIELD,
  ipv6_dst: ActionOp.SET_FIELD,
  ip_dscp: ActionOp.SET_TOS,
  nw_ecn: ActionOp.SET_TOS,
  nw_ttl: ActionOp.SET_TTL,
  tp_src: ActionOp.SET_TP_SRC,
  tp_dst: ActionOp.SET_TP_DST,
  vlan_vid: ActionOp.SET_VLAN,
  vlan_pcp: ActionOp.SET_VLAN,
  vlan_tci: ActionOp.SET_VLAN,
};

/** The fields a SET_FIELD action sets, with their widths in bytes. */
const SET_FIELD_IDS: Readonly<Partial<Record<RewriteField, [number, number]>>> = {
  eth_src: [SetFieldId.ETH_SRC, 6],
  eth_dst: [SetFieldId.ETH_DST, 6],
  nw_src: [SetFieldId.IP4_SRC, 4],
  nw_dst: [SetFieldId.IP4_DST, 4],
  ipv6_src: [SetFieldId.IP6_SRC, 16],
  ipv6_dst: [SetFieldId.IP6_DST, 16],
  tp_src: [SetFieldId.TP_SRC, 2],
  tp_dst: [SetFieldId.TP_DST, 2],
};

/**
 * The bits of a field that shares its op with others, in that op's `port`:
 * the TOS bits ip_dscp and nw_ecn are (SET_TOS), the TCI bits of the VLAN
 * fields (SET_VLAN; vlan_tci's 0x1000 says "tagged", and is no bit to set).
 */
const FIELD_BITS: Readonly<Partial<Record<RewriteField, number>>> = {
  ip_dscp: 0xfc,
  nw_ecn: 0x03,
  vlan_vid: 0x0fff,
  vlan_pcp: 0xe000,
  vlan_tci: 0xefff,
};

/** Where each such field's value sits in its bits. */
const FIELD_SHIFT: Readonly<Partial<Record<RewriteField, number>>> = { ip_dscp: 2, vlan_pcp: 13 };

/**
 * A rewrite as the datapath runs it (see enum wr_action_op): addresses as
 * bytes in network order across `port` and `arg` (which sit back to back),
 * TOS as the bits to set and their value, numbers as they are; IPv6
 * addresses and some bits of a field as a SET_FIELD whose value and mask
 * go in a tunnel key slot (pushed on `slots`, its index the `arg`).
 */
function rewriteEntry(
  a: SetField | { type: "dec_ttl" } | { type: "strip_vlan" } | { type: "push_vlan"; tpid: number },
  slots: Uint8Array[],
): ActionEntry {
  if (a.type === "dec_ttl") return { op: ActionOp.DEC_TTL, flags: 0, port: 0, arg: 0 };
  if (a.type === "strip_vlan") return { op: ActionOp.POP_VLAN, flags: 0, port: 0, arg: 0 };
  if (a.type === "push_vlan") return { op: ActionOp.PUSH_VLAN, flags: 0, port: a.tpid, arg: 0 };
  const wide = SET_FIELD_IDS[a.field];
  if (wide && (a.mask !== undefined || wide[1] === 16)) {
    return wideEntry(wide[0], wide[1], a.value, a.mask ?? 2n ** BigInt(8 * wide[1]) - 1n, slots);
  }
  const op = REWRITE_OPS[a.field];
  const v = Number(a.value);
  const bits = FIELD_BITS[a.field];
  if (bits !== undefined) {
    return { op, flags: 0, port: bits, arg: (v << (FIELD_SHIFT[a.field] ?? 0)) & bits };
  }
  switch (a.field) {
    case "eth_src":
    case "eth_dst": {
      const b = bigintBytes(a.value, 6);
      return { op, flags: 0, port: b[0] | (b[1] << 8), arg: le32(b.subarray(2)) };
    }
    case "nw_src":
    case "nw_dst":
      return { op, flags: 0, port: 0, arg: le32(bigintBytes(a.value, 4)) };
    default:
      return { op, flags: 0, port: 0, arg: v };
  }
}

/**
 * A SET_FIELD of field `id`, `n` bytes wide: its value and mask go in a
 * tunnel key slot (pushed on `slots`, its index the `arg`).
 */
function wideEntry(
  id: number,
  n: number,
  value: bigint,
  mask: bigint,
  slots: Uint8Array[],
): ActionEntry {
  const bytes = new Uint8Array(tunKeyCodec.size);
  bytes.set(bigintBytes(value, n), TK.dst);
  bytes.set(bigintBytes(mask, n), TK.src);
  slots.push(bytes);
  return { op: ActionOp.SET_FIELD, flags: 0, port: id, arg: slots.length - 1 };
}

/** The inverse of {@link wideEntry}, its slot read by `tunKey`. */
function decompileSetField(
  a: ActionEntry,
  tunKey: (slot: number) => TunKeyEntry | undefined,
): SetField | SetTunnel | undefined {
  const tk = tunKey(a.arg);
  if (!tk) return undefined;
  const bits = (n: number) => [tk.dst, tk.src].map((b) => bigintOfBytes(b.subarray(0, n)));
  if (a.port === SetFieldId.TUN_ID) {
    const [id, idMask] = bits(8);
    return { type: "set_tunnel", id, idMask };
  }
  const found = Object.entries(SET_FIELD_IDS).find(([, w]) => w![0] === a.port);
  if (!found) return undefined;
  const [field, [, n]] = found as [RewriteField, [number, number]];
  const [value, mask] = bits(n);
  return mask === 2n ** BigInt(8 * n) - 1n
    ? { type: "set_field", field, value }
    : { type: "set_field", field, value, mask };
}

/** The inverse of {@link rewriteEntry}, but for a SET_FIELD. */
function decompileRewrite(a: ActionEntry): ActionSpec {
  if (a.op === ActionOp.DEC_TTL) return { type: "dec_ttl" };
  if (a.op === ActionOp.POP_VLAN) return { type: "strip_vlan" };
  if (a.op === ActionOp.PUSH_VLAN) return { type: "push_vlan", tpid: a.port };
  const field = (Object.keys(REWRITE_OPS) as RewriteField[]).find((f) =>
    REWRITE_OPS[f] === a.op && (FIELD_BITS[f] ?? a.port) === a.port
  )!;
  const wire = new Uint8Array(6);
  new DataView(wire.buffer).setUint16(0, a.port, true);
  new DataView(wire.buffer).setUint32(2, a.arg, true);
  const value = field.startsWith("eth")
    ? bigintOfBytes(wire)
    : field === "nw_src" || field === "nw_dst"
    ? bigintOfBytes(wire.subarray(2))
    : BigInt(a.arg >>> (FIELD_SHIFT[field] ?? 0)) | (field === "vlan_tci" ? 0x1000n : 0n);
  return { type: "set_field", field, value };
}

/** Four bytes as the little-endian u32 that lays them out in that order. */
function le32(b: Uint8Array): number {
  return (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
}

function addr(bytes: Uint8Array, v6: boolean): Addr {
  return { v6, bytes };
}

/** The actions of a flow entry, as they would be written. */
export function decompileActions(
  actions: ActionEntry[],
  tunKey: (slot: number) => TunKeyEntry | undefined,
  ports: PortLookup,
): ActionSpec[] {
  const out: ActionSpec[] = [];
  let hairpin = false;
  for (const a of actions) {
    const name = ports.byNumber(a.port)?.name ?? String(a.port);
    if (!hairpin && a.flags & ACTF_HAIRPIN) {
      hairpin = true;
      out.push({ type: "clear_in_port" });
    }
    switch (a.op) {
      case ActionOp.DROP:
        out.push({ type: "drop" });
        break;
      case ActionOp.PASS:
        out.push({ type: "pass" });
        break;
      case ActionOp.GROUP:
        out.push({ type: "group", group: a.arg });
        break;
      case ActionOp.SET_NET:
        out.push({ type: "set_net", net: a.arg });
        break;
      case ActionOp.OUTPUT:
        out.push({ type: "output", port: name });
        break;
      case ActionOp.IN_PORT:
        out.push({ type: "in_port" });
        break;
      case ActionOp.TUNNEL: {
        const tk = a.arg === NO_TUN_KEY ? undefined : tunKey(a.arg);
        if (tk && tk.set | tk.flags) {
          const v6 = (tk.flags & TunFlag.V6) !== 0;
          const st: SetTunnel = { type: "set_tunnel" };
          if (tk.set & TunKeySet.ID) st.id = tk.tun_id;
          if (tk.set & TunKeySet.DST) st.dst = addr(tk.dst, v6);
          if (tk.set & TunKeySet.SRC) st.src = addr(tk.src, v6);
          if (tk.set & TunKeySet.TOS) st.tos = tk.tos;
          if (tk.set & TunKeySet.TTL) st.ttl = tk.ttl;
          if (tk.flags & TunFlag.DF) st.df = true;
          if (tk.flags & TunFlag.CSUM) st.csum = true;
          if (tk.flags & TunFlag.OAM) st.oam = true;
          if (tk.gnv_len) st.geneve = decodeGeneveOptions(tk.gnv_opts.subarray(0, tk.gnv_len));
          if (Object.keys(st).length > 1) out.push(st);
        }
        out.push({ type: "output", port: name });
        break;
      }
      case ActionOp.SET_FIELD: {
        const sf = decompileSetField(a, tunKey);
        if (sf) out.push(sf);
        break;
      }
      default:
        if (isRewrite(a.op)) out.push(decompileRewrite(a));
    }
  }
  return out;
}
