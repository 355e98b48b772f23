/**
 * `warren group add|mod|del|list`: replication groups, in Open vSwitch's
 * `add-group` syntax.
 *
 * @module
 */

import type { Command } from "commander";
import type { Datapath } from "../../tunnel/datapath.ts";
import type { InstalledGroup } from "../../tunnel/flow_table.ts";
import { formatActions, parseGroupId } from "../../tunnel/flow_actions.ts";
import { parseGroupAt } from "../../tunnel/group_syntax.ts";
import { needs, openDatapath } from "../common.ts";
import { BufferedOut, toJson } from "../format.ts";
import { textsOf } from "./flow.ts";

const EXAMPLE = "group_id=42,type=all,bucket=output:web1," +
  "bucket=set_tunnel(id=42,dst=192.0.2.2),output:vx0";

/** The JSON shape of one group in `group list --json` (documented in the README). */
export function groupJson(dp: Datapath, g: InstalledGroup) {
  const names = dp.portNames();
  return {
    group_id: g.id,
    type: "all",
    owner: g.owner,
    packets: g.counters?.packets ?? 0n,
    bytes: g.counters?.bytes ?? 0n,
    buckets: g.buckets.map((b, i) => ({
      actions: formatActions(b, names),
      packets: g.counters?.buckets[i].packets ?? 0n,
      bytes: g.counters?.buckets[i].bytes ?? 0n,
    })),
  };
}

/**
 * A group's lines in `group list`: the group, its owner (a named one) and
 * its counters, then each bucket's; without counters, the group alone, as
 * `group add` takes it.
 */
function listLines(dp: Datapath, g: InstalledGroup): string {
  const c = g.counters;
  if (!c) return dp.describeGroup(g) + "\n";
  const owner = g.owner ? ` owner:${g.owner}` : "";
  return `${dp.describeGroup(g)}${owner} packets:${c.packets} bytes:${c.bytes}\n` +
    c.buckets.map((b, i) => `  bucket ${i + 1} packets:${b.packets} bytes:${b.bytes}\n`).join("");
}

/** Group ids from the command line. */
function ids(args: string[]): number[] {
  return args.map((a) => {
    try {
      return parseGroupId(a);
    } catch {
      throw new RangeError(`"${a}" is not a group id (0..${0xfffffeff})`);
    }
  });
}

const OWNER_HELP = "the groups' owner (default: the operator, who has no name)";

/** Registers `group` and its subcommands. */
export function register(cli: Command): void {
  const group = cli.command("group").description(
    "replication groups: a copy of a packet to each bucket (flows send with group:ID)",
  );
  group.command("add [groups...]")
    .description(
      "add groups (one that exists with other buckets is refused: group mod changes it)",
    )
    .option("--file <path>", "read groups from a file, one per line (- for stdin)")
    .option("--owner <name>", OWNER_HELP)
    .addHelpText(
      "after",
      "\nA group is group_id=ID,type=all and its buckets, each bucket=ACTIONS: an output to a\n" +
        "local port, or set_tunnel(...) and an output to a tunnel port. A copy never goes back\n" +
        "out of the port a packet came in on, nor from a tunnel into a tunnel.\n\n" +
        `Example:\n  warren group add '${EXAMPLE}'\n  warren flow add 'net=42 actions=group:42'`,
    )
    .action(async (args: string[], opts, cmd) => {
      const texts = await textsOf(args, opts.file, "group");
      if (texts.length === 0) throw new RangeError("no groups given");
      using dp = openDatapath(cmd);
      const specs = texts.map((t) => parseGroupAt(t.text, t.where));
      const r = await dp.setGroups(specs, "add", { owner: opts.owner });
      console.log(`${r.added} added${r.unchanged ? `, ${r.unchanged} unchanged` : ""}`);
    });
  group.command("mod <group>")
    .description(
      "change a group's buckets; packets see the old buckets or the new ones, never a mixture",
    )
    .option("--owner <name>", OWNER_HELP)
    .action(async (text: string, opts, cmd) => {
      using dp = openDatapath(cmd);
      const r = await dp.setGroups([parseGroupAt(text)], "modify", { owner: opts.owner });
      console.log(r.modified ? "1 modified" : "0 modified (already so)");
    });
  group.command("del <ids...>")
    .description("delete groups (refused while flows send to them, unless --force)")
    .option("--force", "also delete the flows that send to them")
    .option("--owner <name>", 'refuse a group of another owner ("" for the operator)')
    .action((args: string[], opts, cmd) => {
      using dp = openDatapath(cmd);
      const n = dp.deleteGroups(ids(args), { force: opts.force, owner: opts.owner });
      console.log(`${n} deleted`);
    });
  needs(group.command("list [ids...]"), "read")
    .description("print groups with owner:, packets: and bytes:, and each bucket's")
    .option("--no-counters", "skip reading counters")
    .option("--owner <name>", "only this owner's groups (\"\" for the operator's)")
    .option("--json", "print JSON")
    .action((args: string[], opts, cmd) => {
      using dp = openDatapath(cmd);
      const only = new Set(ids(args));
      const groups = dp.groups({ counters: opts.counters, owner: opts.owner })
        .filter((g) => only.size === 0 || only.has(g.id));
      if (opts.json) return console.log(toJson(groups.map((g) => groupJson(dp, g))));
      const out = new BufferedOut();
      for (const g of groups) out.write(listLines(dp, g));
      out.flush();
    });
}
