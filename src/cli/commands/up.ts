/**
 * `warren up`: load, attach and pin the datapath.
 *
 * @module
 */

import { type Command, Option } from "commander";
import { Datapath } from "../../tunnel/datapath.ts";
import { migrate } from "../../tunnel/migrate/migrate.ts";
import { globals, needs, toInt } from "../common.ts";

/** The id of group `name` (or a number), from /etc/group. */
function groupId(name: string): number {
  if (/^\d+$/.test(name)) return Number(name);
  for (const line of Deno.readTextFileSync("/etc/group").split("\n")) {
    const [n, , gid] = line.split(":");
    if (n === name) return Number(gid);
  }
  throw new RangeError(`there is no group named "${name}"`);
}

/** Registers `up`. */
export function register(cli: Command): void {
  needs(cli.command("up"), "load")
    .description("load, attach and pin the datapath (idempotent; upgrades programs in place)")
    .requiredOption("--underlay <device>", "the device tunnel packets travel on")
    .option("--local-ip <address...>", "local endpoint addresses (default: the underlay's)")
    .addOption(
      new Option(
        "--xdp <mode>",
        "XDP on the underlay (auto: native on a NIC driver that has it, TC only on a veth or other virtual device; generic is refused: it carries no tunnel traffic; default: auto on a first up, what was asked before on an upgrade)",
      ).choices([
        "auto",
        "native",
        "generic",
        "off",
      ]),
    )
    .addOption(
      new Option("--tc <method>", "TC attachment").choices(["auto", "tcx", "clsact"]).default(
        "auto",
      ),
    )
    .option("--max-flows <n>", "flow table capacity, a multiple of 64 (set by the first up)", toInt)
    .option("--max-tun-keys <n>", "capacity for distinct tunnel keys (set by the first up)", toInt)
    .option("--max-groups <n>", "capacity for replication groups (set by the first up)", toInt)
    .option(
      "--max-buckets <n>",
      "buckets all groups share, at least 8192 (set by the first up; default 65536)",
      toInt,
    )
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
    .option("--dry-run", "say what up would migrate from an older layout; change nothing")
    .action(async (opts, cmd) => {
      const pinDir = globals(cmd).pinDir;
      const m = await migrate(pinDir, {
        dryRun: opts.dryRun,
        capacities: { maxGroups: opts.maxGroups, maxBuckets: opts.maxBuckets },
      });
      if (m) {
        const what = `${m.ports} ports, ${m.tunnels} tunnels, ${m.groups} groups, ${m.flows} flows`;
        console.log(
          m.resumed
            ? `${opts.dryRun ? "would finish" : "finished"} a migration to layout ${m.to} (${what})`
            : `${
              opts.dryRun ? "would migrate" : "migrated"
            } layout ${m.from} to ${m.to}: ${what}, with their counters`,
        );
      } else if (opts.dryRun) console.log("nothing to migrate");
      if (opts.dryRun) return;
      using dp = await Datapath.up({
        pinDir,
        underlay: opts.underlay,
        localIps: opts.localIp,
        xdp: opts.xdp,
        tc: opts.tc,
        maxFlows: opts.maxFlows,
        maxTunKeys: opts.maxTunKeys,
        maxGroups: opts.maxGroups,
        maxBuckets: opts.maxBuckets,
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
}
