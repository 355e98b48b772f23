/**
 * `warren agent`: the long-lived process that keeps this host in step with
 * the fleet in etcd (see `src/fleet/agent.ts`). It applies what it derives
 * to the datapath pinned at `--pin-dir` (brought up first by `warren up`),
 * or, with `--state-file`, only writes it to a file: a dry mode for seeing
 * what an agent would do. It runs until SIGTERM or SIGINT, then leaves the
 * fleet (its lease is revoked) unless `--stay`; SIGHUP reads the
 * configuration's ports again.
 *
 * @module
 */

import type { Command } from "commander";
import { globals } from "../common.ts";

/** Registers `agent` under `cli`. */
export function register(cli: Command): void {
  cli.command("agent")
    .description("follow the fleet in etcd and apply this host's part of it to the datapath")
    .requiredOption("--config <file>", "the agent's YAML configuration")
    .option("--etcd <urls>", "etcd client URLs, comma-separated (default: the config's)")
    .option("--host <name>", "this host's name in the fleet (default: the config's)")
    .option(
      "--state-file <file>",
      "write the derived state to this JSON file instead of applying it (a dry mode)",
    )
    .option("--stay", "on SIGTERM/SIGINT keep the registration (it lives out its TTL)")
    .option("-v, --verbose", "log each state applied, with the etcd revision it reflects")
    .action(async (opts, cmd) => {
      const { parseAgentConfig } = await import("../../fleet/config.ts");
      const { appliedLine, runAgent } = await import("../../fleet/agent.ts");
      const { stderrSink } = await import("../../fleet/log.ts");
      const read = async () =>
        parseAgentConfig(await Deno.readTextFile(opts.config), opts.config, {
          host: opts.host,
          endpoints: opts.etcd?.split(",").filter(Boolean),
        });
      const config = await read();
      const log = stderrSink;
      let applier;
      let changes = "";
      let owned: ((names: string[]) => void) | undefined;
      if (opts.stateFile) {
        const { StateFileApplier } = await import("../../fleet/applier.ts");
        applier = new StateFileApplier(opts.stateFile);
      } else {
        const { appliedText, DatapathApplier, openFleetDatapath } = await import(
          "../../fleet/datapath_applier.ts"
        );
        // Opened first: a datapath that is not up is an error before the fleet hears of this host.
        const dp = openFleetDatapath(globals(cmd).pinDir, config.underlay.device);
        const a = new DatapathApplier(dp, {
          ownPorts: config.ports.map((p) => p.name),
          log,
          onApplied: (d) => changes = appliedText(d),
        });
        owned = (names) => a.ownPorts(names);
        applier = a;
      }
      await runAgent({
        config,
        applier,
        log,
        stay: opts.stay,
        reload: async () => {
          const next = await read();
          for (const field of ["host", "etcd", "underlay", "tunnels", "leaseTtl"] as const) {
            if (JSON.stringify(next[field]) !== JSON.stringify(config[field])) {
              log(`agent ${config.host}: ${field} changed in ${opts.config}: restart to apply it`);
            }
          }
          owned?.(next.ports.map((p) => p.name));
          return next.ports;
        },
        onApplied: opts.verbose
          ? (a) => log(appliedLine(config.host, a) + (changes ? `; ${changes}` : ""))
          : undefined,
      });
    });
}
