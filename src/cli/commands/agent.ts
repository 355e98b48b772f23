/**
 * `warren agent`: the long-lived process that keeps this host in step with
 * the fleet in etcd (see `src/fleet/agent.ts`). It runs until SIGTERM or
 * SIGINT, then leaves the fleet (its lease is revoked) unless `--stay`.
 *
 * @module
 */

import type { Command } from "commander";

/** Registers `agent` under `cli`. */
export function register(cli: Command): void {
  cli.command("agent")
    .description("follow the fleet in etcd and apply this host's part of it")
    .requiredOption("--config <file>", "the agent's YAML configuration")
    .option("--etcd <urls>", "etcd client URLs, comma-separated (default: the config's)")
    .option("--host <name>", "this host's name in the fleet (default: the config's)")
    .option(
      "--state-file <file>",
      "write the derived state to this JSON file instead of applying it to the datapath",
    )
    .option("--stay", "on SIGTERM/SIGINT keep the registration (it lives out its TTL)")
    .option("-v, --verbose", "log each state applied, with the etcd revision it reflects")
    .action(async (opts) => {
      const { parseAgentConfig } = await import("../../fleet/config.ts");
      const { appliedLine, runAgent } = await import("../../fleet/agent.ts");
      const { stderrSink } = await import("../../fleet/log.ts");
      const { StateFileApplier } = await import("../../fleet/applier.ts");
      const config = await parseAgentConfig(await Deno.readTextFile(opts.config), opts.config, {
        host: opts.host,
        endpoints: opts.etcd?.split(",").filter(Boolean),
      });
      if (!opts.stateFile) {
        // Applying to the datapath needs its network field, groups and
        // owned flow sets (issue 14); until then the state goes to a file.
        throw new RangeError(
          "warren agent needs --state-file until the datapath takes networks and groups",
        );
      }
      await runAgent({
        config,
        applier: new StateFileApplier(opts.stateFile),
        stay: opts.stay,
        onApplied: opts.verbose ? (a) => stderrSink(appliedLine(config.host, a)) : undefined,
      });
    });
}
