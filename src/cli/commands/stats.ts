/**
 * `warren stats`: per-port, per-drop-reason and per-event counters.
 *
 * @module
 */

import type { Command } from "commander";
import { needs, openDatapath } from "../common.ts";
import { printJson, table } from "../format.ts";

/** Registers `stats`. */
export function register(cli: Command): void {
  needs(cli.command("stats"), "read")
    .description("per-port, per-group and per-drop-reason counters")
    .option("--all", "also show counters that are zero")
    .option("--json", "print JSON (always every counter)")
    .action((opts, cmd) => {
      using dp = openDatapath(cmd);
      const s = dp.stats();
      if (opts.json) return printJson(s);
      const shown = (r: Record<string, bigint>) =>
        Object.entries(r).filter(([, v]) => opts.all || v !== 0n);
      table(
        ["port", "rx packets", "rx bytes", "tx packets", "tx bytes", "drops"],
        s.ports.map((p) => [p.name, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes, p.drops]),
      );
      if (s.groups.length) {
        console.log();
        table(
          ["group", "packets", "bytes", "copies per bucket"],
          s.groups.map((g) => [
            g.group_id,
            g.packets,
            g.bytes,
            g.buckets.map((b) => b.packets).join(" ") || "-",
          ]),
        );
      }
      console.log();
      table(["drop reason", "packets"], shown(s.drops));
      console.log();
      table(["event", "count"], shown(s.events));
    });
}
