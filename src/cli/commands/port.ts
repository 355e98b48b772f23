/**
 * `warren port add|del|list`: local ports, a netdev such as a workload's
 * veth.
 *
 * @module
 */

import type { Command } from "commander";
import { deleteCommand, needs, openDatapath, toNet } from "../common.ts";
import { printJson, table } from "../format.ts";

/** Registers `port` and its subcommands. */
export function register(cli: Command): void {
  const port = cli.command("port").description("local ports: a netdev such as a workload's veth");
  port.command("add <name> <device>")
    .description("add a local port and attach warren to the device's ingress")
    .option("--xdp", "the device's peer takes XDP redirects (GRO on, or an XDP program)")
    .option("--net <n>", "the network (1..2^32-1) it stamps on every packet it receives", toNet)
    .action(async (name, device, opts, cmd) => {
      using dp = openDatapath(cmd);
      const p = await dp.addLocalPort(name, device, { xdp: opts.xdp, net: opts.net });
      console.log(
        `port ${p.name} is number ${p.number} on ${p.device}${p.net ? `, network ${p.net}` : ""}`,
      );
    });
  deleteCommand(port, "a local port");
  needs(port.command("list"), "read")
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
        ["name", "number", "device", "xdp", "net"],
        ports.map((p) => [
          p.name,
          p.number,
          p.present ? p.device : `${p.device} (gone)`,
          p.xdp ? "yes" : "no",
          p.net || "-",
        ]),
      );
    });
}
