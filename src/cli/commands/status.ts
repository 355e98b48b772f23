/**
 * `warren status`: attachments (and how the underlay's XDP mode was
 * chosen), programs, pins and how full each table is.
 *
 * @module
 */

import type { Command } from "commander";
import { needs, openDatapath } from "../common.ts";
import { printJson, table } from "../format.ts";

/** Registers `status`. */
export function register(cli: Command): void {
  needs(cli.command("status"), "read")
    .description("what is attached where, program ids, pins, and how full each table is")
    .option("--json", "print JSON")
    .action((opts, cmd) => {
      using dp = openDatapath(cmd);
      const s = dp.status();
      if (opts.json) return printJson(s);
      console.log(`pin dir:   ${s.pinDir}`);
      console.log(`underlay:  ${s.underlay.device ?? "(gone)"} (ifindex ${s.underlay.ifindex})`);
      console.log(
        `checksums: ${
          s.underlay.completesChecksums
            ? "the underlay fills in partial ones (STT sends inner ones complete)"
            : "left partial to the peer (a veth with TX offload; STT sends inner ones partial)"
        }`,
      );
      console.log(`endpoints: ${s.localIps.join(", ")}`);
      console.log(`xdp:       ${s.xdp.mode} (${s.xdp.reason})`);
      console.log(`generation: ${s.generation}\n`);
      table(
        ["hook", "device", "program", "prog id"],
        s.attachments.map((
          a,
        ) => [a.hook, a.device ?? `ifindex ${a.ifindex}`, a.program, a.programId]),
      );
      console.log();
      table(["program", "id"], s.programs.map((p) => [p.name, p.id]));
      console.log();
      table(
        ["table", "used", "capacity", "full"],
        s.tables.map((
          t,
        ) => [t.name, t.used, t.capacity, `${(100 * t.used / t.capacity).toFixed(1)}%`]),
      );
    });
}
