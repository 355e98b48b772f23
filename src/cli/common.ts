/**
 * What every command shares: the global options, opening the pinned
 * datapath, number options, and what a command needs of the kernel.
 *
 * A command lives in its own file under `commands/` and exports
 * `register(cli)`, which adds it to the program; `main.ts` lists them.
 *
 * @module
 */

import { type Command, CommanderError } from "commander";
import { Datapath } from "../tunnel/datapath.ts";
import { parseNet } from "../tunnel/port.ts";

/** Options every command sees. */
export interface GlobalOptions {
  /** Where the datapath is pinned. */
  pinDir: string;
  /** A network namespace to run in. */
  netns?: string;
}

/** The global options of `cmd`. */
export function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}

/** Opens the pinned datapath for a command. */
export function openDatapath(cmd: Command): Datapath {
  return Datapath.open(globals(cmd).pinDir);
}

/** Parses a decimal integer option, or fails the command line. */
export function toInt(v: string): number {
  if (!/^\d+$/.test(v)) {
    throw new CommanderError(2, "warren.badNumber", `"${v}" is not a whole number`);
  }
  return Number(v);
}

/** Parses a network number option (1..2^32-1), or fails the command line. */
export function toNet(v: string): number {
  try {
    return parseNet(v, "--net");
  } catch (err) {
    throw new CommanderError(2, "warren.badNet", (err as Error).message);
  }
}

/**
 * What a command does with the datapath, which decides the capabilities it
 * needs: "read" only reads the pins (no capability on kernels since 6.5,
 * only the pins' modes), "write" changes them, "load" also loads programs.
 */
export type Access = "read" | "write" | "load";

const access = new WeakMap<Command, Access>();

/** Marks `cmd` as needing `a`; a command not marked writes. Returns `cmd`. */
export function needs(cmd: Command, a: Access): Command {
  access.set(cmd, a);
  return cmd;
}

/** What `cmd` does with the datapath (see {@link needs}). */
export function accessOf(cmd: Command): Access {
  return access.get(cmd) ?? "write";
}

/** Registers `del` under `group` (port or tunnel), which deletes `what`. */
export function deleteCommand(group: Command, what: string): void {
  group.command("del <name>")
    .description(`delete ${what} (refused while flows use it, unless --force)`)
    .option("--force", "also delete the flows that use it")
    .action((name, opts, cmd) => {
      using dp = openDatapath(cmd);
      dp.deletePort(name, { force: opts.force });
    });
}
