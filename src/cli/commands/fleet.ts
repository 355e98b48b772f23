/**
 * `warren fleet`: operators' commands on a fleet's etcd. Networks are
 * defined here; hosts and endpoints are shown as etcd holds them, checked
 * as an agent would check them (a value an agent would skip is named on
 * stderr, a MAC claimed twice is marked); `access` makes each host's etcd
 * user and role. The fleet library (and its gRPC client) is loaded only
 * when one of these commands runs.
 *
 * @module
 */

import type { Command } from "commander";
import type { EtcdClient, EtcdOptions, FleetView } from "../../fleet/mod.ts";
import { needs, toInt } from "../common.ts";
import { printJson, table } from "../format.ts";

/** The connection options every fleet command takes. */
interface EtcdFlags {
  etcd: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdUser?: string;
  etcdPasswordFile?: string;
}

/** How to reach etcd, from the command line. */
export async function etcdOptions(flags: EtcdFlags): Promise<EtcdOptions> {
  const opts: EtcdOptions = { endpoints: flags.etcd.split(",").filter(Boolean) };
  if (flags.etcdCa) opts.tls = { ca: flags.etcdCa, cert: flags.etcdCert, key: flags.etcdKey };
  if (flags.etcdUser) {
    if (!flags.etcdPasswordFile) throw new RangeError("--etcd-user needs --etcd-password-file");
    const password = (await Deno.readTextFile(flags.etcdPasswordFile)).trim();
    opts.auth = { username: flags.etcdUser, password };
  }
  return opts;
}

/** Runs `fn` with a connection made from `cmd`'s flags, closed after. */
async function withEtcd<T>(cmd: Command, fn: (c: EtcdClient) => Promise<T>): Promise<T> {
  const { EtcdClient } = await import("../../fleet/client.ts");
  const opts = await etcdOptions(cmd.optsWithGlobals());
  using client = await EtcdClient.connect(opts);
  try {
    return await fn(client);
  } catch (err) {
    // gRPC's "14 UNAVAILABLE: No connection established. Last error: …"
    // says less than the address and the cause.
    const m = /^14 UNAVAILABLE: .*Last error: (?:\w*Error: )?(.*?)(?:\. Resolution note.*)?$/s
      .exec(String((err as Error)?.message));
    if (m) throw new Error(`etcd at ${opts.endpoints.join(",")} is unreachable: ${m[1]}`);
    throw err;
  }
}

/** Reads the fleet, naming on stderr every value an agent would skip. */
async function fleetView(client: EtcdClient): Promise<FleetView> {
  const { readFleet } = await import("../../fleet/admin.ts");
  const view = await readFleet(client);
  for (const reason of view.invalid.values()) console.error(`warren: skipped ${reason}`);
  return view;
}

/** Registers `fleet` and its subcommands under `cli`; they talk to etcd only. */
export function register(cli: Command): void {
  const fleet = cli.command("fleet")
    .description("a fleet's networks, hosts and endpoints in etcd")
    .option(
      "--etcd <urls>",
      "etcd client URLs, comma-separated",
      envOr("WARREN_ETCD", "http://127.0.0.1:2379"),
    )
    .option("--etcd-ca <file>", "CA certificate that signed etcd's (PEM)")
    .option("--etcd-cert <file>", "client certificate (PEM)")
    .option("--etcd-key <file>", "client key (PEM)")
    .option("--etcd-user <name>", "etcd user (with --etcd-password-file)")
    .option("--etcd-password-file <file>", "file holding the user's password");

  const net = fleet.command("net").description("networks: name, VNI, protocol, MTU");
  net.command("add <name>")
    .description("define a network; its VNI is allocated (compare-and-swap) unless given")
    .option("--vni <n>", "use this VNI (1..16777215)", toInt)
    .option("--protocol <proto>", "vxlan, geneve, gre or stt", "vxlan")
    .option("--mtu <n>", "MTU for its workloads", toInt, 1450)
    .option("--json", "print JSON")
    .action((name, opts, cmd) =>
      withEtcd(cmd, async (client) => {
        const { addNetwork } = await import("../../fleet/admin.ts");
        const n = await addNetwork(client, { name, ...opts });
        if (opts.json) return printJson(n);
        console.log(`network ${n.name} has VNI ${n.vni} (${n.protocol}, MTU ${n.mtu})`);
      })
    );
  net.command("del <name>")
    .description("delete a network and free its VNI")
    .action((name, _opts, cmd) =>
      withEtcd(cmd, async (client) => {
        const { deleteNetwork } = await import("../../fleet/admin.ts");
        const n = await deleteNetwork(client, name);
        console.log(`network ${n.name} is deleted; VNI ${n.vni} is free`);
      })
    );
  net.command("list")
    .description("list networks")
    .option("--json", "print JSON")
    .action((opts, cmd) =>
      withEtcd(cmd, async (client) => {
        const nets = [...(await fleetView(client)).networks.values()]
          .sort((a, b) => a.name.localeCompare(b.name));
        if (opts.json) return printJson(nets);
        table(
          ["network", "vni", "protocol", "mtu"],
          nets.map((n) => [n.name, n.vni, n.protocol, n.mtu]),
        );
      })
    );

  fleet.command("hosts")
    .description("registered hosts: underlay, tunnels, endpoints")
    .option("--json", "print JSON")
    .action((opts, cmd) =>
      withEtcd(cmd, async (client) => {
        const view = await fleetView(client);
        const count = new Map<string, number>();
        for (const perNet of view.members.values()) {
          for (const [host, n] of perNet) count.set(host, (count.get(host) ?? 0) + n);
        }
        const hosts = [...view.hosts.values()].sort((a, b) => a.name.localeCompare(b.name))
          .map((h) => ({ ...h, endpoints: count.get(h.name) ?? 0 }));
        if (opts.json) return printJson(hosts);
        table(
          ["host", "underlay", "tunnels", "endpoints"],
          hosts.map((h) => [
            h.name,
            h.underlay.join(","),
            h.tunnels.map((t) => t.protocol === "gre" ? "gre" : `${t.protocol}:${t.port}`).join(
              ",",
            ),
            h.endpoints,
          ]),
        );
      })
    );

  fleet.command("endpoints")
    .description("published workloads; a MAC claimed twice is marked, the newest claim wins")
    .option("--net <name>", "only this network")
    .option("--json", "print JSON")
    .action((opts, cmd) =>
      withEtcd(cmd, async (client) => {
        const view = await fleetView(client);
        const rows = [];
        for (const [net, perNet] of [...view.claims].sort(([a], [b]) => a.localeCompare(b))) {
          if (opts.net && net !== opts.net) continue;
          for (const [mac, list] of [...perNet].sort(([a], [b]) => a.localeCompare(b))) {
            for (const [i, c] of list.entries()) {
              rows.push({
                net,
                host: c.host,
                mac,
                ips: c.ips,
                create_revision: c.createRevision,
                winner: i === 0,
                claims: list.length,
              });
            }
          }
        }
        if (opts.json) return printJson(rows);
        table(
          ["network", "host", "mac", "ips", "claim"],
          rows.map((r) => [
            r.net,
            r.host,
            r.mac,
            r.ips.join(",") || "-",
            r.claims === 1 ? "ok" : r.winner ? "duplicate, wins (newest)" : "duplicate, loses",
          ]),
        );
      })
    );

  const access = fleet.command("access")
    .description("etcd users and roles: each host writes only its own keys");
  access.command("grant <host>")
    .description("let a host publish in exactly the networks given (creates its user and role)")
    .option("--net <name...>", "a network the host may join (repeat for more)", [])
    .option("--password-file <file>", "its password (omit for a client-certificate login)")
    .action((host, opts, cmd) =>
      withEtcd(cmd, async (client) => {
        const { grantHost } = await import("../../fleet/access.ts");
        const password = opts.passwordFile
          ? (await Deno.readTextFile(opts.passwordFile)).trim()
          : undefined;
        const grants = await grantHost(client, host, opts.net, password);
        for (const g of grants) {
          console.log(`${g.permission.toLowerCase()} ${g.key}${g.rangeEnd ? " (prefix)" : ""}`);
        }
      })
    );
  access.command("revoke <host>")
    .description("delete a host's user and role")
    .action((host, _opts, cmd) =>
      withEtcd(cmd, async (client) => {
        const { revokeHost } = await import("../../fleet/access.ts");
        await revokeHost(client, host);
        console.log(`host ${host} can no longer write to the fleet`);
      })
    );
  access.command("operator <user>")
    .description("give a user the operator role: read and write the whole fleet layout")
    .option("--password-file <file>", "its password (omit for a client-certificate login)")
    .action((user, opts, cmd) =>
      withEtcd(cmd, async (client) => {
        const { grantOperator, OPERATOR_ROLE } = await import("../../fleet/access.ts");
        const password = opts.passwordFile
          ? (await Deno.readTextFile(opts.passwordFile)).trim()
          : undefined;
        await grantOperator(client, user, password);
        console.log(`user ${user} has role ${OPERATOR_ROLE}`);
      })
    );
  etcdOnly(fleet);
}

/** Marks every command under `c` as needing no capability: none touches the datapath. */
function etcdOnly(c: Command): void {
  needs(c, "read");
  for (const sub of c.commands) etcdOnly(sub);
}

/** An environment variable's value, or `dflt` when unset or unreadable. */
function envOr(name: string, dflt: string): string {
  try {
    return Deno.env.get(name) ?? dflt;
  } catch {
    return dflt;
  }
}
