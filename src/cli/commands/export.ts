/**
 * `warren export`: the datapath's whole configuration as a state file
 * `apply` accepts, from any layout version this warren knows.
 *
 * @module
 */

import type { Command } from "commander";
import { readConfiguration, stateOf } from "../../tunnel/migrate/export.ts";
import { globals, needs } from "../common.ts";

/** Registers `export`. */
export function register(cli: Command): void {
  needs(cli.command("export"), "read")
    .description(
      "print ports, tunnels, groups and flows as a state file for apply (any layout this warren reads)",
    )
    .option(
      "--owner <name>",
      "that owner's groups and flows, for apply --owner (default the operator's)",
    )
    .option("--json", "print JSON (default)")
    .option("--yaml", "print YAML")
    .action(async (opts, cmd) => {
      const state = stateOf(readConfiguration(globals(cmd).pinDir), opts.owner ?? "");
      const text = opts.yaml
        ? (await import("yaml")).stringify(state)
        : JSON.stringify(state, null, 2) + "\n";
      await Deno.stdout.write(new TextEncoder().encode(text));
    });
}
