/**
 * `warren tunnel add|del|list`: tunnel ports, a protocol and its options.
 *
 * @module
 */

import type { Command } from "commander";
import { PortError, TUNNEL_OPTIONS, tunnelOptions } from "../../tunnel/port.ts";
import { deleteCommand, needs, openDatapath } from "../common.ts";
import { printJson, table } from "../format.ts";

/** `key=value` words into an object; a word without `=` fails the command line. */
function parseOptions(words: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const w of words) {
    const eq = w.indexOf("=");
    if (eq <= 0) throw new PortError(`"${w}" is not an option (key=value)`);
    out[w.slice(0, eq)] = w.slice(eq + 1);
  }
  return out;
}

/** Registers `tunnel` and its subcommands. */
export function register(cli: Command): void {
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
      for (const note of dp.tunnelNotes(t)) console.log(`note: ${note}`);
    });
  deleteCommand(tunnel, "a tunnel port");
  needs(tunnel.command("list"), "read")
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
            net: t.net,
            options: tunnelOptions(t),
            notes: dp.tunnelNotes(t),
          })),
        );
      }
      table(
        ["name", "number", "proto", "net", "options"],
        tunnels.map((
          t,
        ) => [
          t.name,
          t.number,
          t.proto,
          t.net || "-",
          Object.entries(tunnelOptions(t)).map(([k, v]) => `${k}=${v}`).join(" "),
        ]),
      );
      for (const note of tunnels.flatMap((t) => dp.tunnelNotes(t))) console.log(`note: ${note}`);
    });
}
