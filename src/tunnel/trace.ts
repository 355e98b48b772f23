/**
 * Tracing: build a packet from a match, run it through the datapath's
 * programs with test-run, and say what happened, as Open vSwitch's
 * ofproto/trace does.
 *
 * The programs run are a private dry-run copy (`Datapath.dryRunPrograms`):
 * they share every map with the live datapath but change none, so tracing
 * never disturbs the counters of real traffic. The flow reported is the one
 * the kernel's lookup picks for the packet's flow key, worked out on this
 * side from the same key.
 *
 * @module
 */

import { ifindex } from "../bpf/netif.ts";
import type { Program } from "../bpf/program.ts";
import { skbContext, testRun, xdpContext } from "../bpf/test_run.ts";
import { type FlowKey, META_MAGIC, metaCodec, TRACE_MARK } from "../maps/layouts.ts";
import type { ProgramName } from "../maps/names.ts";
import { parseAddr } from "./addr.ts";
import type { Datapath } from "./datapath.ts";
import type { InstalledFlow } from "./flow_table.ts";
import { emptyKey, type Match } from "./match.ts";
import { device } from "./host.ts";
import {
  type BuildOptions,
  buildPacket,
  decodePacket,
  encapsulate,
  frameKey,
  type Layer,
  type Outer,
  outerFromMatch,
  tunnelKey,
} from "./packet.ts";
import type { Port } from "./port.ts";

const XDP = ["XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT"];
const TC: Record<number, string> = {
  0: "TC_ACT_OK (to the stack)",
  2: "TC_ACT_SHOT (dropped)",
  7: "TC_ACT_REDIRECT",
};

/** A flow as trace reports it. */
export interface TracedFlow {
  /** Its priority. */
  priority: number;
  /** Its match, as text. */
  match: string;
  /** Its actions, as text. */
  actions: string;
}

/** One program run in a trace. */
export interface TraceStep {
  /** The program. */
  program: string;
  /** Its verdict, by name. */
  verdict: string;
  /** The packet it produced, decoded. */
  output: Layer[];
}

/** What a trace found (`warren trace` prints it, or its JSON). */
export interface TraceResult {
  /** The port the packet came in on. */
  in_port: string;
  /** The packet as sent in, decoded. */
  packet: Layer[];
  /** The network the packet was stamped with by its port (a set_field may change it). */
  net: number;
  /** The flow that re-stamped its network (set_field:N->net) before the flow below, if one did. */
  restamp: TracedFlow | null;
  /** The flow that matched, or null for a miss. */
  flow: TracedFlow | null;
  /** Each program run, in order. */
  steps: TraceStep[];
}

/**
 * The test-run context of `program` for `packet` coming in on device
 * `ifindex`: `struct xdp_md` for XDP (the frame's end and the ingress
 * device), `struct __sk_buff` for TC (the mark and the device). Every
 * context of a trace is built here.
 */
function runContext(
  program: ProgramName,
  packet: Uint8Array,
  ifindex: number,
  mark = 0,
): Uint8Array {
  return program === "wr_xdp_underlay"
    ? xdpContext(ifindex, packet.length)
    : skbContext(ifindex, mark);
}

/**
 * Traces a packet built from `match` (which must name `in_port`) through
 * `dp`: as sent by a workload on a local port, or as received from a
 * remote on a tunnel port, encapsulated towards a local endpoint.
 */
export async function trace(
  dp: Datapath,
  match: Match,
  options: BuildOptions = {},
): Promise<TraceResult> {
  using tracer = new Tracer(dp);
  return await tracer.trace(match, options);
}

/**
 * Tracer traces many packets through one datapath with one dry-run copy
 * of its programs, loaded once: loading is most of what a trace costs.
 */
export class Tracer implements Disposable {
  readonly #dp: Datapath;
  readonly #programs: Record<ProgramName, Program>;

  /** Loads `dp`'s dry-run programs. */
  constructor(dp: Datapath) {
    this.#dp = dp;
    this.#programs = dp.dryRunPrograms();
  }

  /** As {@link trace}. */
  async trace(match: Match, options: BuildOptions = {}): Promise<TraceResult> {
    if (!match.mask.in_port) throw new RangeError("trace needs in_port=PORT");
    const port = this.#dp.portLookup().byNumber(match.key.in_port)!;
    const frame = buildPacket(match, options);
    const key = emptyKey();
    frameKey(frame, key);
    key.in_port = port.number;
    return await traceWith(this.#dp, this.#programs, port, match, frame, key);
  }

  /** Closes the programs. */
  [Symbol.dispose](): void {
    for (const p of Object.values(this.#programs)) p.close();
  }
}

async function traceWith(
  dp: Datapath,
  programs: Record<ProgramName, Program>,
  port: Port,
  match: Match,
  frame: Uint8Array,
  key: FlowKey,
): Promise<TraceResult> {
  const steps: TraceStep[] = [];
  let packet: Uint8Array;
  if (port.kind === "local") {
    packet = frame;
    const r = testRun(programs.wr_tc_local, {
      data: frame,
      ctx: runContext("wr_tc_local", frame, ifindex(port.device)),
    });
    steps.push({
      program: "wr_tc_local",
      verdict: TC[r.retval] ?? String(r.retval),
      output: decodePacket(r.data),
    });
  } else {
    const fields = outerFromMatch(match);
    const locals = dp.localIps().filter((a) => a.v6 === fields.v6);
    const dst = fields.dst ?? locals[0]?.bytes;
    if (!dst || !locals.some((a) => a.bytes.every((b, i) => b === dst[i]))) {
      throw new RangeError(
        fields.dst
          ? "tun_dst is not one of the datapath's local endpoints"
          : `no local endpoint of the family of tun_src`,
      );
    }
    const under = await device(port.device);
    const outer: Outer = {
      ...fields,
      proto: port.proto,
      dstPort: port.dstPort,
      src: fields.src ?? parseAddr(fields.v6 ? "2001:db8::99" : "192.0.2.99").bytes,
      dst,
      dstMac: under.mac,
    };
    packet = encapsulate(frame, outer);
    tunnelKey(outer, key);
    const r = testRun(programs.wr_xdp_underlay, {
      data: packet,
      ctx: runContext("wr_xdp_underlay", packet, under.ifindex),
    });
    const meta = r.data.length >= metaCodec.size && metaCodec.decode(r.data).magic === META_MAGIC;
    steps.push({
      program: "wr_xdp_underlay",
      verdict: XDP[r.retval] ?? String(r.retval),
      output: decodePacket(meta ? r.data.subarray(metaCodec.size) : r.data),
    });
    if (r.retval === 2 && meta) {
      const rt = testRun(programs.wr_tc_underlay, {
        data: packet,
        ctx: runContext("wr_tc_underlay", packet, ifindex(port.device), TRACE_MARK),
      });
      steps.push({
        program: "wr_tc_underlay",
        verdict: TC[rt.retval] ?? String(rt.retval),
        output: decodePacket(rt.data),
      });
    }
  }
  // The network the datapath stamps before its lookup, and the one more
  // lookup a set_field:N->net flow asks for.
  key.net = port.net !== "flow" ? port.net : key.tun_id < 2n ** 32n ? Number(key.tun_id) : 0;
  const net = key.net;
  let f = dp.lookupFlow(key);
  let restamp: InstalledFlow | undefined;
  const setNet = f?.actions[0];
  if (f && setNet?.type === "set_net") {
    restamp = f;
    key.net = setNet.net;
    f = dp.lookupFlow(key);
  }
  const traced = (f: InstalledFlow) => ({
    priority: f.priority,
    match: dp.describeMatch(f.match),
    actions: dp.describeFlow(f).split(" actions=")[1],
  });
  return {
    in_port: port.name,
    packet: decodePacket(packet),
    net,
    restamp: restamp ? traced(restamp) : null,
    flow: f ? traced(f) : null,
    steps,
  };
}
