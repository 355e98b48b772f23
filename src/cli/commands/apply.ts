/**
 * `warren apply FILE`: make the datapath hold exactly what a YAML or JSON
 * state file says, atomically for the flow table.
 *
 * @module
 */

import type { Command } from "commander";
import { applyState, type DesiredState, parseState } from "../../tunnel/apply.ts";
import { openDatapath } from "../common.ts";
import { printJson } from "../format.ts";

/** The state file `file` (- for stdin), parsed; an error names the file. */
async function readState(file: string): Promise<DesiredState> {
  const text = file === "-"
    ? await new Response(Deno.stdin.readable).text()
    : await Deno.readTextFile(file);
  try {
    return await parseState(text);
  } catch (err) {
    // Name the file: the error is about its content.
    if (err instanceof Error) err.message = `${file === "-" ? "stdin" : file}: ${err.message}`;
    throw err;
  }
}

/** Registers `apply`. */
export function register(cli: Command): void {
  cli.command("apply <file>")
    .description(
      "make ports, tunnels, groups and flows exactly those of a YAML/JSON state file (- for stdin)",
    )
    .option("--dry-run", "print the difference, change nothing")
    .option("--json", "print the difference as JSON")
    .option(
      "--owner <name>",
      "the file's groups and flows are this owner's: replace only its own, and remove no port",
    )
    .addHelpText(
      "after",
      "\nState file:\n" +
        "  ports:   [{ name: web1, device: veth-web1, xdp: false, net: 42 }]\n" +
        "  tunnels: [{ name: vx0, proto: vxlan, options: { remote_ip: flow, key: flow, net: flow } }]\n" +
        '  groups:  ["group_id=42,type=all,bucket=output:web1,bucket=set_tunnel(id=42,dst=192.0.2.2),output:vx0"]\n' +
        '  flows:   ["net=42 actions=group:42", "net=42,dl_dst=02:00:00:00:00:01 actions=output:web1"]\n\n' +
        "Without --owner the groups and flows are the operator's: those of named owners stay as they are.",
    )
    .action(async (file: string, opts, cmd) => {
      const state = await readState(file);
      using dp = openDatapath(cmd);
      const big = (state.flows?.length ?? 0) > 100000;
      const enc = new TextEncoder();
      const plan = await applyState(dp, state, {
        dryRun: opts.dryRun,
        owner: opts.owner,
        progress: big && !opts.json
          ? (p) =>
            Deno.stderr.writeSync(
              enc.encode(`\r${p.phase}: ${p.done}${p.total ? `/${p.total}` : ""} flows   `),
            )
          : undefined,
      });
      if (big && !opts.json) Deno.stderr.writeSync(enc.encode("\n"));
      if (opts.json) return printJson(plan);
      for (const [what, names] of Object.entries(plan.ports)) {
        for (const n of names) console.log(`${opts.dryRun ? "would " : ""}${what} port ${n}`);
      }
      for (const [what, ids] of Object.entries(plan.groups)) {
        for (const id of ids) console.log(`${opts.dryRun ? "would " : ""}${what} group ${id}`);
      }
      const f = plan.flows;
      const show = (sign: string, list: string[], total: number) => {
        for (const t of list) console.log(`${sign} ${t}`);
        if (total > list.length) console.log(`${sign} … and ${total - list.length} more`);
      };
      show("+", f.add, f.added);
      show("~", f.modify, f.modified);
      show("-", f.remove, f.removed);
      const [add, mod, rem] = opts.dryRun
        ? ["to add", "to modify", "to remove"]
        : ["added", "modified", "removed"];
      console.log(
        `flows: ${f.added} ${add}, ${f.modified} ${mod}, ${f.removed} ${rem}, ${f.unchanged} unchanged`,
      );
    });
}
