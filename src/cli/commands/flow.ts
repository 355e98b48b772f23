/**
 * `warren flow add|mod|del|dump`.
 *
 * @module
 */

import type { Command } from "commander";
import type { Datapath } from "../../tunnel/datapath.ts";
import type { FlowSession } from "../../tunnel/datapath/session.ts";
import { parseFlow, parseFlowAt, parseMatch } from "../../tunnel/flow_syntax.ts";
import type { FlowFilter, InstalledFlow } from "../../tunnel/flow_table.ts";
import { tcpFlags } from "../../tunnel/packet.ts";
import { coarseNs } from "../../bpf/clock.ts";
import { needs, openDatapath, toInt, toNet } from "../common.ts";
import { BufferedOut, since, toJson } from "../format.ts";

/** A flow's (or group's) text and, when there are several, where it came from. */
interface ItemText {
  text: string;
  where?: string;
}

/**
 * Flows (or groups, as `what` says) from the command line and/or a file
 * (one per line, # comments).
 */
export async function textsOf(args: string[], file?: string, what = "flow"): Promise<ItemText[]> {
  const several = args.length > 1 || file !== undefined;
  const out: ItemText[] = args.map((text, i) => ({
    text,
    where: several ? `${what} ${i + 1} of the command line` : undefined,
  }));
  if (file) {
    const text = file === "-"
      ? await new Response(Deno.stdin.readable).text()
      : await Deno.readTextFile(file);
    text.split("\n").forEach((line, i) => {
      const t = line.trim();
      if (t && !t.startsWith("#")) {
        out.push({ text: t, where: `${file === "-" ? "stdin" : file}:${i + 1}` });
      }
    });
  }
  return out;
}

/**
 * Edits from stdin, one per line as they come (# comments), each applied
 * by `edit` before the next is read, under one session: a script feeds
 * changes without a process each. A bad line stops there, naming it;
 * what came before it stays (each line is its own change).
 */
async function streamEdits(
  dp: Datapath,
  edit: (s: FlowSession, text: string, where: string) => Promise<void> | void,
): Promise<void> {
  // Loaded here: Node's streams cost every other command's start, a dump's among them.
  const [{ default: process }, { createInterface }] = await Promise.all([
    import("node:process"),
    import("node:readline"),
  ]);
  await using s = await dp.session();
  let n = 0;
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    n++;
    const t = line.trim();
    if (t && !t.startsWith("#")) await edit(s, t, `stdin:${n}`);
  }
}

/**
 * A flow's line in `flow dump`: the flow, then its owner (a named one)
 * and its counters; without counters, the flow alone, as `flow add` takes
 * it.
 */
export function dumpLine(dp: Datapath, f: InstalledFlow, nowNs: bigint): string {
  return dumpLines(dp, nowNs, "")(f);
}

/**
 * {@link dumpLine} for flow after flow, each line ending in `end`. Most
 * flows of a big table are idle: the text after their actions is the
 * same for each owner, made once and joined to each shared action list's
 * text once, not per flow.
 */
function dumpLines(dp: Datapath, nowNs: bigint, end: string): (f: InstalledFlow) => string {
  const idleEnds = new Map<string, string>();
  return (f) => {
    const c = f.counters;
    if (!c) return dp.describeFlow(f, end);
    const idle = c.packets === 0n && c.bytes === 0n && c.usedNs === 0n && c.tcpFlags === 0;
    let after = idle ? idleEnds.get(f.owner) : undefined;
    if (after !== undefined) return dp.describeFlow(f, after);
    const owner = f.owner ? ` owner:${f.owner}` : "";
    if (idle) {
      idleEnds.set(f.owner, after = owner + IDLE + end);
      return dp.describeFlow(f, after);
    }
    return `${dp.describeFlow(f)}${owner} packets:${c.packets} bytes:${c.bytes} used:${
      since(c.usedNs, nowNs)
    } flags:${c.tcpFlags ? tcpFlags(c.tcpFlags) : "none"}${end}`;
  };
}

/** The counters of a flow no packet has hit, as {@link dumpLine} prints them. */
const IDLE = " packets:0 bytes:0 used:never flags:none";

/** The JSON shape of one flow in `flow dump --json` (documented in the README). */
export function dumpJson(dp: Datapath, f: InstalledFlow, nowNs: bigint) {
  const c = f.counters;
  return {
    flow_id: f.flowId,
    priority: f.priority,
    cookie: f.cookie,
    owner: f.owner,
    match: dp.describeMatch(f.match),
    actions: dp.describeFlow(f).split(" actions=")[1],
    packets: c?.packets ?? 0n,
    bytes: c?.bytes ?? 0n,
    used_ms: c && c.usedNs ? Number((nowNs - c.usedNs) / 1000000n) : null,
    tcp_flags: c && c.tcpFlags ? tcpFlags(c.tcpFlags) : "",
  };
}

/**
 * The filter of a `flow del` or `flow dump` match (every flow without
 * one) and `--owner`.
 */
function matchFilter(dp: Datapath, text: string | undefined, owner?: string): FlowFilter {
  if (!text) return { owner };
  const { match, priority, cookie } = parseMatch(text, dp.portNames());
  return { match, priority, cookie, owner };
}

/** matchFilter for a match read from `where`: an error starts with it. */
function filterAt(dp: Datapath, text: string, where: string, owner?: string): FlowFilter {
  try {
    return matchFilter(dp, text, owner);
  } catch (err) {
    if (err instanceof Error) err.message = `${where}: ${err.message}`;
    throw err;
  }
}

const OWNER_HELP = "the flows' owner (default: the operator, who has no name)";
const OWNER_FILTER = "only this owner's flows (\"\" for the operator's)";

/** Registers `flow` and its subcommands. */
export function register(cli: Command): void {
  const flow = cli.command("flow").description(
    "flows: priority, match and actions, in Open vSwitch's syntax",
  );
  flow.command("add [flows...]")
    .description("add flows (a flow with the same match and priority is replaced)")
    .option(
      "--file <path>",
      "read flows from a file, one per line, all or nothing; - streams stdin, a line at a time",
    )
    .option("--owner <name>", OWNER_HELP)
    .addHelpText(
      "after",
      "\nExamples:\n" +
        "  warren flow add 'in_port=web1,ip,nw_dst=10.1.0.0/16 actions=set_tunnel(id=42,dst=192.0.2.2),output:vx0'\n" +
        "  warren flow add 'tun_id=42,in_port=vx0 actions=output:web1'\n" +
        "  warren flow add --owner fleet 'priority=10,in_port=web1 actions=drop'",
    )
    .action(async (args: string[], opts, cmd) => {
      if (opts.file === "-" && args.length === 0) {
        using dp = openDatapath(cmd);
        const names = dp.portNames();
        let added = 0, replaced = 0;
        await streamEdits(dp, async (s, text, where) => {
          const r = await s.addFlows([parseFlowAt(text, names, where)], { owner: opts.owner });
          added += r.added;
          replaced += r.replaced;
        });
        console.log(`${added} added, ${replaced} replaced`);
        return;
      }
      const texts = await textsOf(args, opts.file);
      if (texts.length === 0) throw new RangeError("no flows given");
      using dp = openDatapath(cmd);
      const names = dp.portNames();
      const specs = texts.map((t) => parseFlowAt(t.text, names, t.where));
      const r = await dp.addFlows(specs, { owner: opts.owner });
      console.log(`${r.added} added, ${r.replaced} replaced`);
    });
  flow.command("mod <flow>")
    .description(
      "change the actions of the flow with exactly this match and priority (counters kept)",
    )
    .option("--owner <name>", OWNER_HELP)
    .action(async (text: string, opts, cmd) => {
      using dp = openDatapath(cmd);
      const n = await dp.modifyFlow(parseFlow(text, dp.portNames()), { owner: opts.owner });
      if (n === 0) throw new RangeError("no flow has exactly that match and priority");
      console.log(`${n} modified`);
    });
  flow.command("del [match]")
    .description(
      "delete the flows the match covers (all flows without one; cookie=V/MASK selects by cookie)",
    )
    .option("--strict", "only the flow with exactly this match (and priority=, if given)")
    .option("--owner <name>", OWNER_FILTER)
    .option("--file <path>", "- streams matches from stdin, one per line, a line at a time")
    .action(async (text: string | undefined, opts, cmd) => {
      if (opts.file !== undefined) {
        if (opts.file !== "-" || text) throw new RangeError("--file takes - (stdin) alone");
        using dp = openDatapath(cmd);
        let deleted = 0;
        await streamEdits(dp, (s, line, where) => {
          deleted += s.deleteFlows(filterAt(dp, line, where, opts.owner), opts.strict ?? false);
        });
        console.log(`${deleted} deleted`);
        return;
      }
      if (!text && opts.strict) throw new RangeError("--strict needs a match");
      using dp = openDatapath(cmd);
      const filter = matchFilter(dp, text, opts.owner);
      console.log(`${dp.deleteFlows(filter, opts.strict ?? false)} deleted`);
    });
  needs(flow.command("dump [match]"), "read")
    .description(
      "print flows in priority order with owner:, packets:, bytes:, used: and TCP flags (cookie=V/MASK selects by cookie)",
    )
    .option("--port <name>", "only flows coming in on or sending to this port")
    .option("--owner <name>", OWNER_FILTER)
    .option("--tun-id <n>", "only flows matching this tunnel id", (v) => BigInt(toInt(v)))
    .option("--net <n>", "only flows matching this network", toNet)
    .option("--group <id>", "only flows sending to this group", toInt)
    .option("--no-counters", "skip reading counters")
    .option("--json", "print JSON")
    .action(async (text: string | undefined, opts, cmd) => {
      using dp = openDatapath(cmd);
      const filter = matchFilter(dp, text, opts.owner);
      if (opts.port) {
        const n = dp.portNames().number(opts.port);
        if (n === undefined) throw new RangeError(`there is no port named "${opts.port}"`);
        filter.port = n;
      }
      if (opts.tunId !== undefined) filter.tunId = opts.tunId;
      if (opts.net !== undefined) filter.net = opts.net;
      if (opts.group !== undefined) filter.group = opts.group;
      const now = coarseNs();
      // Streamed: a million flows print without being held all at once.
      const out = new BufferedOut();
      let first = true;
      if (opts.json) out.write("[");
      const line = dumpLines(dp, now, "\n");
      // Each flow is printed before the next is decoded over it.
      await dp.forEachFlow(filter, { counters: opts.counters, reuse: true }, (f) => {
        if (opts.json) {
          out.write(`${first ? "\n" : ",\n"}${toJson(dumpJson(dp, f, now))}`);
        } else {
          out.write(line(f));
        }
        first = false;
      });
      if (opts.json) out.write(first ? "]\n" : "\n]\n");
      out.flush();
    });
}
