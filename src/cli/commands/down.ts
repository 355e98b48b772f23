/**
 * `warren down`: detach everything and remove the pins.
 *
 * @module
 */

import type { Command } from "commander";
import { Datapath } from "../../tunnel/datapath.ts";
import { globals } from "../common.ts";

/** Registers `down`. */
export function register(cli: Command): void {
  cli.command("down")
    .description("detach everything and remove every pin of the datapath")
    .action(async (_opts, cmd) => {
      await Datapath.down(globals(cmd).pinDir);
      console.log("warren is down");
    });
}
