/**
 * The `warren` command line. Every command works against the datapath
 * pinned under `--pin-dir` (default /sys/fs/bpf/warren, or
 * $WARREN_PIN_DIR); no daemon runs between commands.
 *
 * Exit codes: 0 done, 1 the command failed (the reason on stderr, nothing
 * half-applied), 2 the command line itself was wrong.
 *
 * @module
 */

import { Command, CommanderError, Option } from "commander";
import { BpfError, LayoutError, NotFoundError, VerifierError } from "../bpf/errors.ts";
import { CapabilityError, LOAD_REQUIRED, requireCapabilities } from "../bpf/caps.ts";
import { enterNetns } from "../lab/netns.ts";
import { CompileError } from "../tunnel/compile.ts";
import { Datapath, DEFAULT_PIN_DIR } from "../tunnel/datapath.ts";
import { MatchError } from "../tunnel/fields.ts";
import { FlowSyntaxError } from "../tunnel/flow_syntax.ts";
import { FlowTableError } from "../tunnel/flow_table.ts";
import { PortError, TUNNEL_OPTIONS, tunnelOptions } from "../tunnel/port.ts";
import { registerApply } from "./apply.ts";
import { registerFlow } from "./flow.ts";
import { printJson, table } from "./format.ts";
import { registerMetrics } from "./metrics.ts";
import { registerTrace } from "./trace.ts";
import { registerWatch } from "./watch.ts";

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

/** The id of group `name` (or a number), from /etc/group. */
function groupId(name: string): number {
  if (/^\d+$/.test(name)) return Number(name);
  for (const line of Deno.readTextFileSync("/etc/group").split("\n")) {
    const [n, , gid] = line.split(":");
    if (n === name) return Number(gid);
  }
  throw new RangeError(`there is no group named "${name}"`);
}

/** Commands that only read the datapath. */
const READ_ONLY = new Set([
  "warren status",
  "warren flow dump",
  "warren port list",
  "warren tunnel list",
  "warren stats",
  "warren metrics",
  "warren watch",
]);

/** Registers `del` under `group` (port or tunnel), which deletes `what`. */
function deleteCommand(group: Command, what: string): void {
  group.command("del <name>")
    .description(`delete ${what} (refused while flows use it, unless --force)`)
    .option("--force", "also delete the flows that use it")
    .action((name, opts, cmd) => {
      using dp = openDatapath(cmd);
      dp.deletePort(name, { force: opts.force });
    });
}

/** Errors that are the user's to fix: printed as one sentence. */
const EXPECTED = [
  BpfError,
  CapabilityError,
  CompileError,
  FlowSyntaxError,
  FlowTableError,
  LayoutError,
  MatchError,
  NotFoundError,
  PortError,
  RangeError,
  VerifierError,
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
      // up and trace load programs; the rest use what is pinned. Reading
      // takes no capability on kernels since 6.5, only the pins' modes.
      const loads = what === "warren up" || what === "warren trace";
      if (!READ_ONLY.has(what)) requireCapabilities(what, loads ? LOAD_REQUIRED : undefined);
      if (ns) enterNetns(ns);
    });

  cli.command("up")
    .description("load, attach and pin the datapath (idempotent; upgrades programs in place)")
    .requiredOption("--underlay <device>", "the device tunnel packets travel on")
    .option("--local-ip <address...>", "local endpoint addresses (default: the underlay's)")
    .addOption(
      new Option("--xdp <mode>", "XDP on the underlay").choices([
        "auto",
        "native",
        "generic",
        "off",
      ]).default("auto"),
    )
    .addOption(
      new Option("--tc <method>", "TC attachment").choices(["auto", "tcx", "clsact"]).default(
        "auto",
      ),
    )
    .option("--max-flows <n>", "flow table capacity, a multiple of 64 (set by the first up)", toInt)
    .option("--max-tun-keys <n>", "capacity for distinct tunnel keys (set by the first up)", toInt)
    .addOption(
      new Option("--miss-local <action>", "on a flow miss from a local port").choices([
        "drop",
        "pass",
      ]),
    )
    .addOption(
      new Option("--miss-tunnel <action>", "on a flow miss after decapsulation").choices([
        "drop",
        "pass",
      ]),
    )
    .option("--stt-timeout-ms <ms>", "how long an incomplete STT frame waits (default 1000)", toInt)
    .option(
      "--group <name>",
      "share the datapath with this group: pins and lock group read-write (default owner only)",
    )
    .option(
      "--no-forwarding",
      "leave the underlay's forwarding setting alone (ARP then needs a port neighbor)",
    )
    .action(async (opts, cmd) => {
      using dp = await Datapath.up({
        pinDir: globals(cmd).pinDir,
        underlay: opts.underlay,
        localIps: opts.localIp,
        xdp: opts.xdp,
        tc: opts.tc,
        maxFlows: opts.maxFlows,
        maxTunKeys: opts.maxTunKeys,
        missLocal: opts.missLocal,
        missTunnel: opts.missTunnel,
        sttTimeoutMs: opts.sttTimeoutMs,
        forwarding: opts.forwarding,
        group: opts.group === undefined ? undefined : groupId(opts.group),
      });
      const s = dp.status();
      console.log(
        `warren is up on ${s.underlay.device} (${s.localIps.join(", ")}), pinned at ${s.pinDir}`,
      );
    });

  cli.command("down")
    .description("detach everything and remove every pin of the datapath")
    .action(async (_opts, cmd) => {
      await Datapath.down(globals(cmd).pinDir);
      console.log("warren is down");
    });

  cli.command("status")
    .description("what is attached where, program ids, pins, and how full each table is")
    .option("--json", "print JSON")
    .action((opts, cmd) => {
      using dp = openDatapath(cmd);
      const s = dp.status();
      if (opts.json) return printJson(s);
      console.log(`pin dir:   ${s.pinDir}`);
      console.log(`underlay:  ${s.underlay.device ?? "(gone)"} (ifindex ${s.underlay.ifindex})`);
      console.log(`endpoints: ${s.localIps.join(", ")}`);
      console.log(`generation: ${s.generation}\n`);
      table(
        ["hook", "device", "program", "prog id"],
        s.attachments.map((
          a,
        ) => [a.hook, a.device ?? `ifindex ${a.ifindex}`, a.program, a.programId]),
      );
      console.log();
      table(["program", "id"], s.programs.map((p) => [p.name, p.id]));
      console.log();
      table(
        ["table", "used", "capacity", "full"],
        s.tables.map((
          t,
        ) => [t.name, t.used, t.capacity, `${(100 * t.used / t.capacity).toFixed(1)}%`]),
      );
    });

  const port = cli.command("port").description("local ports: a netdev such as a workload's veth");
  port.command("add <name> <device>")
    .description("add a local port and attach warren to the device's ingress")
    .option("--xdp", "the device's peer takes XDP redirects (GRO on, or an XDP program)")
    .action(async (name, device, opts, cmd) => {
      using dp = openDatapath(cmd);
      const p = await dp.addLocalPort(name, device, { xdp: opts.xdp });
      console.log(`port ${p.name} is number ${p.number} on ${p.device}`);
    });
  deleteCommand(port, "a local port");
  port.command("list")
    .description("list local ports")
    .option("--json", "print JSON")
    .action((opts, cmd) => {
      using dp = openDatapath(cmd);
      // A port whose device was deleted stays until deleted: say so.
      const ports = dp.ports().flatMap((p) =>
        p.kind === "local" ? [{ ...p, present: dp.devicePresent(p) }] : []
      );
      if (opts.json) return printJson(ports);
      table(
        ["name", "number", "device", "xdp"],
        ports.map((p) => [
          p.name,
          p.number,
          p.present ? p.device : `${p.device} (gone)`,
          p.xdp ? "yes" : "no",
        ]),
      );
    });

  const tunnel = cli.command("tunnel").description("tunnel ports: a protocol and its options");
  tunnel.command("add <name> <proto> [options...]")
    .description("add a tunnel port: proto vxlan|geneve|gre|stt, options as key=value")
    .addHelpText(
      "after",
      "\nOptions (Open vSwitch's names):\n" +
        Object.entries(TUNNEL_OPTIONS).map(([k, v]) => `  ${k.padEnd(11)} ${v}`).join("\n") +
        "\n\nExample: warren tunnel add vx0 vxlan remote_ip=flow key=flow",
    )
    .action(async (name, proto, options: string[], _opts, cmd) => {
      using dp = openDatapath(cmd);
      const t = await dp.addTunnelPort(name, proto, parseOptions(options));
      console.log(`tunnel ${t.name} is port ${t.number} (${t.proto})`);
    });
  deleteCommand(tunnel, "a tunnel port");
  tunnel.command("list")
    .description("list tunnel ports with their options")
    .option("--json", "print JSON")
    .action((opts, cmd) => {
      using dp = openDatapath(cmd);
      const tunnels = dp.ports().flatMap((p) => p.kind === "tunnel" ? [p] : []);
      if (opts.json) {
        return printJson(
          tunnels.map((t) => ({
            name: t.name,
            number: t.number,
            proto: t.proto,
            device: t.device,
            options: tunnelOptions(t),
          })),
        );
      }
      table(
        ["name", "number", "proto", "options"],
        tunnels.map((
          t,
        ) => [
          t.name,
          t.number,
          t.proto,
          Object.entries(tunnelOptions(t)).map(([k, v]) => `${k}=${v}`).join(" "),
        ]),
      );
    });

  registerFlow(cli);
  registerApply(cli);

  cli.command("stats")
    .description("per-port and per-drop-reason counters")
    .option("--all", "also show counters that are zero")
    .option("--json", "print JSON (always every counter)")
    .action((opts, cmd) => {
      using dp = openDatapath(cmd);
      const s = dp.stats();
      if (opts.json) return printJson(s);
      const shown = (r: Record<string, bigint>) =>
        Object.entries(r).filter(([, v]) => opts.all || v !== 0n);
      table(
        ["port", "rx packets", "rx bytes", "tx packets", "tx bytes", "drops"],
        s.ports.map((p) => [p.name, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes, p.drops]),
      );
      console.log();
      table(["drop reason", "packets"], shown(s.drops));
      console.log();
      table(["event", "count"], shown(s.events));
    });

  registerTrace(cli);
  registerWatch(cli);
  registerMetrics(cli);
  return cli;
}

/** Parses a decimal integer option, or fails the command line. */
export function toInt(v: string): number {
  if (!/^\d+$/.test(v)) {
    throw new CommanderError(2, "warren.badNumber", `"${v}" is not a whole number`);
  }
  return Number(v);
}

/** `key=value` words into an object; a word without `=` fails the command line. */
export function parseOptions(words: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const w of words) {
    const eq = w.indexOf("=");
    if (eq <= 0) throw new PortError(`"${w}" is not an option (key=value)`);
    out[w.slice(0, eq)] = w.slice(eq + 1);
  }
  return out;
}

/** Runs the CLI with `args` and returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const cli = program();
  try {
    await cli.parseAsync(args, { from: "user" });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === "commander.helpDisplayed" || err.code === "commander.version") return 0;
      if (err.code === "commander.help") return 0;
      if (err.code === "warren.badNumber") console.error(`warren: ${err.message}`);
      return 2;
    }
    if (EXPECTED.some((cls) => err instanceof cls)) {
      console.error(`warren: ${(err as Error).message}`);
      return 1;
    }
    if (Deno.env.get("WARREN_DEBUG")) throw err;
    console.error(`warren: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
