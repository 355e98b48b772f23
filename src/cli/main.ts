/**
 * The `warren` command line. Every command works against the datapath
 * pinned under `--pin-dir` (default /sys/fs/bpf/warren, or
 * $WARREN_PIN_DIR); no daemon runs between commands.
 *
 * Each command is a module under `commands/` that registers itself
 * (`register(cli)`); what they share is in `common.ts` (options, opening
 * the datapath, what a command needs of the kernel), `format.ts` (output)
 * and `exit.ts` (exit codes: 0 done, 1 failed, 2 a wrong command line).
 *
 * @module
 */

import { Command, Option } from "commander";
import { LOAD_REQUIRED, requireCapabilities } from "../bpf/caps.ts";
import { enterNetns } from "../lab/netns.ts";
import { DEFAULT_PIN_DIR } from "../tunnel/datapath.ts";
import * as agent from "./commands/agent.ts";
import * as apply from "./commands/apply.ts";
import * as down from "./commands/down.ts";
import * as exportCommand from "./commands/export.ts";
import * as fleet from "./commands/fleet.ts";
import * as flow from "./commands/flow.ts";
import * as group from "./commands/group.ts";
import * as metrics from "./commands/metrics.ts";
import * as port from "./commands/port.ts";
import * as stats from "./commands/stats.ts";
import * as status from "./commands/status.ts";
import * as trace from "./commands/trace.ts";
import * as tunnel from "./commands/tunnel.ts";
import * as up from "./commands/up.ts";
import * as watch from "./commands/watch.ts";
import { accessOf, globals } from "./common.ts";
import { exitCode } from "./exit.ts";

/** The commands, in the order `warren --help` lists them. */
const COMMANDS: { register(cli: Command): void }[] = [
  up,
  down,
  status,
  port,
  tunnel,
  flow,
  group,
  apply,
  exportCommand,
  stats,
  trace,
  watch,
  metrics,
  fleet,
  agent,
];

/** The `warren` program, ready to parse. */
export function program(): Command {
  const cli = new Command("warren")
    .description("Flow-based tunneling (VXLAN, Geneve, GRE, STT) in eBPF, driven from Deno")
    .version("0.1.0")
    .addOption(
      new Option("--pin-dir <dir>", "bpffs directory of the datapath").env("WARREN_PIN_DIR")
        .default(DEFAULT_PIN_DIR),
    )
    .option(
      "--netns <name>",
      "run inside this network namespace (from ip netns; needs CAP_SYS_ADMIN)",
    )
    .showHelpAfterError("(warren --help lists the commands)")
    // Set before subcommands exist: they copy these settings when made.
    .exitOverride()
    .configureOutput({ writeErr: (s) => Deno.stderr.writeSync(new TextEncoder().encode(s)) })
    .hook("preAction", (self, action) => {
      // Name a missing capability before anything fails with a bare EPERM.
      const ns = globals(self).netns;
      if (ns) requireCapabilities("warren --netns", ["CAP_SYS_ADMIN"]);
      const path = [];
      for (let c: Command | null = action; c?.parent; c = c.parent) path.unshift(c.name());
      const what = `warren ${path.join(" ")}`;
      const access = accessOf(action);
      if (access !== "read") {
        requireCapabilities(what, access === "load" ? LOAD_REQUIRED : undefined);
      }
      if (ns) enterNetns(ns);
    });
  for (const c of COMMANDS) c.register(cli);
  return cli;
}

/** Runs the CLI with `args` and returns the exit code. */
export async function main(args: string[]): Promise<number> {
  try {
    await program().parseAsync(args, { from: "user" });
    return 0;
  } catch (err) {
    return exitCode(err);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
