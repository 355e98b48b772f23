/**
 * `warren apply FILE`: make the datapath hold exactly what a YAML or JSON
 * state file says, atomically for the flow table.
 *
 * @module
 */

import type { Command } from "commander";
import { applyState, parseState } from "../tunnel/apply.ts";
import { printJson } from "./format.ts";
import { openDatapath } from "./main.ts";

/** Registers `apply`. */
export function registerApply(cli: Command): void {
  cli.command("apply <file>")
    .description(
      "make ports, tunnels and flows exactly those of a YAML/JSON state file (- for stdin)",
    )
    .option("--dry-run", "print the difference, change nothing")
    .option("--json", "print the difference as JSON")
    .addHelpText(
      "after",
      "\nState file:\n" +
        "  ports:   [{ name: web1, device: veth-web1, xdp: false }]\n" +
        "  tunnels: [{ name: vx0, proto: vxlan, options: { remote_ip: flow, key: flow } }]\n" +
        '  flows:   ["in_port=web1 actions=set_tunnel(id=42,dst=192.0.2.2),output:vx0"]',
    )
    .action(async (file: string, opts, cmd) => {
      const text = file === "-"
        ? await new Response(Deno.stdin.readable).text()
        : await Deno.readTextFile(file);
      const state = parseState(text);
      using dp = openDatapath(cmd);
      const big = (state.flows?.length ?? 0) > 100000;
      const plan = await applyState(dp, state, {
        dryRun: opts.dryRun,
        progress: big && !opts.json
          ? (done, total) =>
            Deno.stderr.writeSync(new TextEncoder().encode(`\rflows: ${done}/${total}`))
          : undefined,
      });
      if (big && !opts.json) Deno.stderr.writeSync(new TextEncoder().encode("\n"));
      if (opts.json) return printJson(plan);
      for (const [what, names] of Object.entries(plan.ports)) {
        for (const n of names) console.log(`${opts.dryRun ? "would " : ""}${what} port ${n}`);
      }
      const show = (sign: string, list: string[]) => {
        for (const t of list.slice(0, 1000)) console.log(`${sign} ${t}`);
        if (list.length > 1000) console.log(`${sign} … and ${list.length - 1000} more`);
      };
      show("+", plan.flows.add);
      show("~", plan.flows.modify);
      show("-", plan.flows.remove);
      const [add, mod, rem] = opts.dryRun
        ? ["to add", "to modify", "to remove"]
        : ["added", "modified", "removed"];
      console.log(
        `flows: ${plan.flows.add.length} ${add}, ${plan.flows.modify.length} ${mod}, ` +
          `${plan.flows.remove.length} ${rem}, ${plan.flows.unchanged} unchanged`,
      );
    });
}
