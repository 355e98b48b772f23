/**
 * `warren watch`: the busiest flows and ports, with rates, refreshed in
 * place.
 *
 * @module
 */

import { type Command, CommanderError } from "commander";
import type { Datapath } from "../../tunnel/datapath.ts";
import { needs, openDatapath, toInt } from "../common.ts";

interface Sample {
  at: number;
  flows: Map<number, { packets: bigint; bytes: bigint; text: string }>;
  ports: Map<string, { rx: bigint; tx: bigint }>;
}

function sample(dp: Datapath): Sample {
  const flows = new Map<number, { packets: bigint; bytes: bigint; text: string }>();
  for (const f of dp.eachFlow({}, { counters: true })) {
    flows.set(f.flowId, {
      packets: f.counters!.packets,
      bytes: f.counters!.bytes,
      text: dp.describeFlow(f),
    });
  }
  const ports = new Map(
    dp.stats().ports.map((p) => [p.name, { rx: p.rx_packets, tx: p.tx_packets }]),
  );
  return { at: performance.now(), flows, ports };
}

/** The screen for two samples: top flows by packet rate, ports by rate. */
export function render(prev: Sample, cur: Sample, top: number): string {
  const secs = Math.max((cur.at - prev.at) / 1000, 1e-3);
  const rate = (a: bigint, b = 0n) => Number(a - b) / secs;
  const flows = [...cur.flows].map(([id, f]) => {
    const p = prev.flows.get(id);
    return {
      pps: rate(f.packets, p?.packets),
      bps: rate(f.bytes, p?.bytes) * 8,
      text: f.text,
      packets: f.packets,
    };
  }).sort((a, b) => b.pps - a.pps || Number(b.packets - a.packets)).slice(0, top);
  const lines = [
    `warren watch — every ${secs.toFixed(1)}s, ${cur.flows.size} flows`,
    "",
    "   pkt/s      bit/s  flow",
  ];
  for (const f of flows) {
    lines.push(`${f.pps.toFixed(0).padStart(8)} ${human(f.bps).padStart(10)}  ${f.text}`);
  }
  lines.push("", "port            rx pkt/s    tx pkt/s");
  for (const [name, p] of cur.ports) {
    const q = prev.ports.get(name);
    lines.push(
      `${name.padEnd(15)} ${rate(p.rx, q?.rx).toFixed(0).padStart(9)} ${
        rate(p.tx, q?.tx).toFixed(0).padStart(11)
      }`,
    );
  }
  return lines.join("\n");
}

function human(bps: number): string {
  const units = ["", "k", "M", "G"];
  let i = 0;
  while (bps >= 1000 && i < units.length - 1) {
    bps /= 1000;
    i++;
  }
  return `${bps.toFixed(1)}${units[i]}`;
}

/** A whole number of seconds, at least 1 (0 would spin on the maps). */
function atLeastOne(text: string): number {
  const n = toInt(text);
  if (n < 1) throw new CommanderError(2, "warren.badNumber", `"${text}" is less than 1`);
  return n;
}

/** Registers `watch`. */
export function register(cli: Command): void {
  needs(cli.command("watch"), "read")
    .description("a live view of the busiest flows and ports, with rates")
    .option("--interval <seconds>", "refresh every this many seconds (at least 1)", atLeastOne, 1)
    .option("--top <n>", "flows to show", toInt, 15)
    .option("--count <n>", "stop after this many refreshes", toInt)
    .action(async (opts, cmd) => {
      using dp = openDatapath(cmd);
      const tty = Deno.stdout.isTerminal();
      let prev = sample(dp);
      for (let i = 0; opts.count === undefined || i < opts.count; i++) {
        await new Promise((r) => setTimeout(r, opts.interval * 1000));
        const cur = sample(dp);
        // Redraw in place on a terminal; plain frames otherwise.
        console.log((tty ? "\x1b[H\x1b[2J" : i ? "\n" : "") + render(prev, cur, opts.top));
        prev = cur;
      }
    });
}
