/**
 * `warren trace`: parse a packet's match, trace it (see
 * `src/tunnel/trace.ts`) and print what happened.
 *
 * @module
 */

import type { Command } from "commander";
import { parseMatch } from "../../tunnel/flow_syntax.ts";
import type { Layer } from "../../tunnel/packet.ts";
import { trace } from "../../tunnel/trace.ts";
import { needs, openDatapath, toInt } from "../common.ts";
import { printJson } from "../format.ts";

function printLayers(layers: Layer[], indent: string): void {
  for (const l of layers) {
    console.log(
      `${indent}${l.name}: ${Object.entries(l.fields).map(([k, v]) => `${k}=${v}`).join(" ")}`,
    );
  }
}

/** Registers `trace`. */
export function register(cli: Command): void {
  needs(cli.command("trace <packet>"), "load")
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
      const { match } = parseMatch(spec, dp.portNames());
      const t = await trace(dp, match, { payload: opts.payload });
      if (opts.json) return printJson(t);
      console.log(`packet in on ${t.in_port}${t.net ? `, network ${t.net}` : ""}:`);
      printLayers(t.packet, "  ");
      if (t.restamp) {
        console.log(
          `\nflow: priority=${t.restamp.priority},${t.restamp.match}\nactions: ${t.restamp.actions}`,
        );
      }
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
