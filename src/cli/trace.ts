/**
 * `warren trace`: build a packet, run it through the loaded programs with
 * test-run, and say what happened, as Open vSwitch's ofproto/trace does.
 *
 * @module
 */

import type { Command } from "commander";
import { ifindex } from "../bpf/netif.ts";
import { testRun } from "../bpf/test_run.ts";
import { META_MAGIC, metaCodec, TRACE_MARK, TunFlag } from "../maps/layouts.ts";
import { parseAddr } from "../tunnel/addr.ts";
import type { Datapath } from "../tunnel/datapath.ts";
import { emptyKey, type Match } from "../tunnel/fields.ts";
import type { FlowKey } from "../maps/layouts.ts";
import type { Port } from "../tunnel/port.ts";
import { parseMatch } from "../tunnel/flow_syntax.ts";
import { device } from "../tunnel/host.ts";
import {
  buildPacket,
  decodePacket,
  encapsulate,
  frameKey,
  type Layer,
  outerFromMatch,
} from "../tunnel/packet.ts";
import { printJson } from "./format.ts";
import { openDatapath, toInt } from "./main.ts";

const XDP = ["XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT"];
const TC: Record<number, string> = {
  0: "TC_ACT_OK (to the stack)",
  2: "TC_ACT_SHOT (dropped)",
  7: "TC_ACT_REDIRECT",
};

/** One program run in a trace. */
export interface TraceStep {
  /** The program. */
  program: string;
  /** Its verdict, by name. */
  verdict: string;
  /** The packet it produced, decoded. */
  output: Layer[];
}

/** What `warren trace` reports. */
export interface TraceResult {
  /** The port the packet came in on. */
  in_port: string;
  /** The packet as sent in, decoded. */
  packet: Layer[];
  /** The flow that matched, or null for a miss. */
  flow: { priority: number; match: string; actions: string } | null;
  /** Each program run, in order. */
  steps: TraceStep[];
}

function ctxSkb(dev: string, mark = 0): Uint8Array {
  const ctx = new Uint8Array(192);
  const v = new DataView(ctx.buffer);
  v.setUint32(8, mark, true);
  v.setUint32(40, ifindex(dev), true);
  return ctx;
}

/** Runs a trace of `spec` (match syntax, in_port required). */
export async function trace(dp: Datapath, spec: string, payload: number): Promise<TraceResult> {
  const { match } = parseMatch(spec, dp.portNames());
  if (!match.mask.in_port) throw new RangeError("trace needs in_port=PORT");
  const port = dp.portLookup().byNumber(match.key.in_port)!;
  const frame = buildPacket(match, { payload });
  const key = emptyKey();
  frameKey(frame, key);
  key.in_port = port.number;
  const programs = dp.dryRunPrograms();
  try {
    return await traceWith(dp, programs, port, match, frame, key);
  } finally {
    for (const p of Object.values(programs)) p.close();
  }
}

async function traceWith(
  dp: Datapath,
  programs: ReturnType<Datapath["dryRunPrograms"]>,
  port: Port,
  match: Match,
  frame: Uint8Array,
  key: FlowKey,
): Promise<TraceResult> {
  const steps: TraceStep[] = [];
  let packet: Uint8Array;
  if (port.kind === "local") {
    packet = frame;
    const r = testRun(programs.wr_tc_local, { data: frame, ctx: ctxSkb(port.device) });
    steps.push({
      program: "wr_tc_local",
      verdict: TC[r.retval] ?? String(r.retval),
      output: decodePacket(r.data),
    });
  } else {
    const outer = outerFromMatch(match);
    const local = dp.localIps().find((a) => a.v6 === outer.v6);
    if (!local) throw new RangeError(`no local endpoint of the family of tun_src`);
    const under = await device(port.device);
    const src = outer.src ?? parseAddr(outer.v6 ? "2001:db8::99" : "192.0.2.99").bytes;
    packet = encapsulate(frame, {
      proto: port.proto,
      dstPort: port.dstPort,
      src,
      dst: local.bytes,
      v6: outer.v6,
      tunId: outer.tunId,
      tos: outer.tos,
      ttl: outer.ttl,
      dstMac: under.mac,
    });
    Object.assign(key, {
      tun_id: outer.tunId,
      tun_src: src,
      tun_dst: local.bytes,
      tun_tos: outer.tos,
      tun_ttl: outer.ttl,
      tun_flags: TunFlag.PRESENT | TunFlag.KEY | (outer.v6 ? TunFlag.V6 : TunFlag.DF),
    });
    {
      const ctx = new Uint8Array(24);
      new DataView(ctx.buffer).setUint32(4, packet.length, true);
      new DataView(ctx.buffer).setUint32(12, under.ifindex, true);
      const r = testRun(programs.wr_xdp_underlay, { data: packet, ctx });
      const meta = r.data.length >= metaCodec.size && metaCodec.decode(r.data).magic === META_MAGIC;
      steps.push({
        program: "wr_xdp_underlay",
        verdict: XDP[r.retval] ?? String(r.retval),
        output: decodePacket(meta ? r.data.subarray(metaCodec.size) : r.data),
      });
      if (r.retval === 2 && meta) {
        const rt = testRun(programs.wr_tc_underlay, {
          data: packet,
          ctx: ctxSkb(port.device, TRACE_MARK),
        });
        steps.push({
          program: "wr_tc_underlay",
          verdict: TC[rt.retval] ?? String(rt.retval),
          output: decodePacket(rt.data),
        });
      }
    }
  }
  const f = dp.lookupFlow(key);
  return {
    in_port: port.name,
    packet: decodePacket(packet),
    flow: f
      ? {
        priority: f.priority,
        match: dp.describeMatch(f.match),
        actions: dp.describeFlow(f).split(" actions=")[1],
      }
      : null,
    steps,
  };
}

function printLayers(layers: Layer[], indent: string): void {
  for (const l of layers) {
    console.log(
      `${indent}${l.name}: ${Object.entries(l.fields).map(([k, v]) => `${k}=${v}`).join(" ")}`,
    );
  }
}

/** Registers `trace`. */
export function registerTrace(cli: Command): void {
  cli.command("trace <packet>")
    .description("run a packet built from match fields through the datapath and explain the result")
    .option("--payload <bytes>", "payload bytes after the L4 header", toInt, 32)
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nExamples:\n" +
        "  warren trace 'in_port=web1,udp,nw_src=10.1.0.1,nw_dst=10.1.0.2,tp_dst=53'\n" +
        "  warren trace 'in_port=vx0,tun_id=42,tun_src=192.0.2.2,icmp,nw_dst=10.1.0.1'",
    )
    .action(async (spec: string, opts, cmd) => {
      using dp = openDatapath(cmd);
      const t = await trace(dp, spec, opts.payload);
      if (opts.json) return printJson(t);
      console.log(`packet in on ${t.in_port}:`);
      printLayers(t.packet, "  ");
      console.log(
        t.flow
          ? `\nflow: priority=${t.flow.priority},${t.flow.match}\nactions: ${t.flow.actions}`
          : "\nflow: none (miss)",
      );
      for (const s of t.steps) {
        console.log(`\n${s.program}: ${s.verdict}`);
        if (s.output.length) printLayers(s.output, "  ");
      }
    });
}
