/**
 * `warren apply FILE`: make the datapath hold exactly what a YAML or JSON
 * state file says, atomically for the flow table.
 *
 * @module
 */

import type { Command } from "commander";
import { applyState } from "../../tunnel/apply.ts";
import type { StateFormat } from "../../tunnel/state_file.ts";
import { openDatapath } from "../common.ts";
import { printJson } from "../format.ts";

/**
 * Runs `fn` with the path of the state file `file`: stdin (-) is first
 * copied to a temporary file, as a stream, since flows are read from the
 * file more than once.
 */
async function withStateFile<T>(file: string, fn: (path: string) => Promise<T>): Promise<T> {
  if (file !== "-") return await fn(file);
  const path = await Deno.makeTempFile({ prefix: "warren-apply-" });
  try {
    await using out = await Deno.open(path, { write: true });
    await Deno.stdin.readable.pipeTo(out.writable, { preventClose: true });
    return await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

const FORMATS = ["json", "yaml", "lines"];

/** Registers `apply`. */
export function register(cli: Command): void {
  cli.command("apply <file>")
    .description(
      "make ports, tunnels, groups and flows exactly those of a state file (- for stdin)",
    )
    .option(
      "--format <kind>",
      "json, yaml, or lines (one flow per line; ports, tunnels and groups stay); guessed when not given",
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
        '  flows:   ["net=42 actions=group:42", "net=42,dl_dst=02:00:00:00:00:01 actions=output:web1"]\n' +
        "\nIn JSON or YAML; or in the line form, one flow per line with # comments, as\n" +
        "ovs-ofctl add-flows reads them. Flows are read from the file as they are\n" +
        "wanted: a million take little memory. An error names the file and line.\n\n" +
        "Without --owner the groups and flows are the operator's: those of named owners stay as they are.",
    )
    .action(async (file: string, opts, cmd) => {
      if (opts.format !== undefined && !FORMATS.includes(opts.format)) {
        throw new RangeError(`--format is one of ${FORMATS.join(", ")}, not "${opts.format}"`);
      }
      const plan = await withStateFile(file, async (path) => {
        const { readStateFile, stateFormat } = await import("../../tunnel/state_file.ts");
        const format = (opts.format as StateFormat | undefined) ?? stateFormat(path);
        const state = readStateFile(path, format);
        using dp = openDatapath(cmd);
        const enc = new TextEncoder();
        // Long work says how far it got (a big table's first 100 000 flows say it's big).
        let shown = false;
        const plan = await applyState(dp, state, {
          dryRun: opts.dryRun,
          owner: opts.owner,
          flowsOnly: format === "lines",
          progress: opts.json ? undefined : (p) => {
            shown ||= p.done >= 100000;
            if (!shown) return;
            Deno.stderr.writeSync(
              enc.encode(`\r${p.phase}: ${p.done}${p.total ? `/${p.total}` : ""} flows   `),
            );
          },
        });
        if (shown) Deno.stderr.writeSync(enc.encode("\n"));
        return plan;
      });
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
