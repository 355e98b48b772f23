/**
 * The agent's configuration file (YAML), checked with the same rules as
 * values read from etcd, so a host can never publish what other hosts
 * would refuse. Every error names the file and the field.
 *
 * ```yaml
 * host: web-1                       # or --host
 * etcd:
 *   endpoints: [https://10.0.0.10:2379]   # or --etcd
 *   ca: /etc/warren/etcd/ca.pem
 *   cert: /etc/warren/etcd/web-1.pem      # client certificate, if etcd asks
 *   key: /etc/warren/etcd/web-1-key.pem
 *   username: web-1                       # with password_file, if etcd has auth
 *   password_file: /etc/warren/etcd/web-1.password
 * lease_ttl: 30                     # seconds (default 30)
 * check_interval_ms: 2000           # watch progress checks (default 2000)
 * underlay: { device: eth0, addresses: [192.0.2.1] }
 * tunnels: [{ protocol: vxlan, port: 4789 }]   # default: vxlan on 4789
 * ports:
 *   - { name: web1, device: veth-web1, net: blue, mac: "02:00:00:00:00:01", ips: [10.1.0.1] }
 * ```
 *
 * @module
 */

import type { EtcdOptions } from "./client.ts";
import { FLEET_PORT_PREFIX, type LocalPort } from "./derive.ts";
import {
  checkAddress,
  checkMac,
  checkName,
  checkTunnel,
  type TunnelEndpoint,
  ValueError,
} from "./validate.ts";
import { checkPortName } from "../tunnel/port.ts";

/** Everything the agent runs with. */
export interface AgentConfig {
  /** This host's name in the fleet. */
  host: string;
  /** How to reach etcd. */
  etcd: EtcdOptions;
  /** Lease TTL, seconds. */
  leaseTtl: number;
  /** Watch progress check interval, ms. */
  checkIntervalMs: number;
  /** The underlay: its device (for the datapath) and addresses (published). */
  underlay: { device?: string; addresses: string[] };
  /** Tunnels this host accepts. */
  tunnels: TunnelEndpoint[];
  /** Workload ports. */
  ports: LocalPort[];
}

/** Values given on the command line, which win over the file's. */
export interface ConfigOverrides {
  /** --host. */
  host?: string;
  /** --etcd. */
  endpoints?: string[];
}

type Obj = Record<string, unknown>;

/** Parses and checks an agent configuration; `file` names it in errors. */
export async function parseAgentConfig(
  text: string,
  file: string,
  overrides: ConfigOverrides = {},
): Promise<AgentConfig> {
  const { parse } = await import("yaml");
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw new ValueError(file, `not YAML: ${err instanceof Error ? err.message : err}`);
  }
  const at = (field: string) => `${file}: ${field}`;
  const obj = (v: unknown, field: string): Obj => {
    if (typeof v !== "object" || v === null || Array.isArray(v)) {
      throw new ValueError(at(field), "is not a mapping");
    }
    return v as Obj;
  };
  const list = (v: unknown, field: string): unknown[] => {
    if (v === undefined) return [];
    if (!Array.isArray(v)) throw new ValueError(at(field), "is not a list");
    return v;
  };
  const str = (v: unknown, field: string): string => {
    if (typeof v !== "string" || v === "") throw new ValueError(at(field), "is not a string");
    return v;
  };
  const int = (v: unknown, field: string, lo: number, hi: number, dflt: number): number => {
    if (v === undefined) return dflt;
    if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) {
      throw new ValueError(at(field), `is not a whole number in ${lo}..${hi}`);
    }
    return v;
  };

  const c = obj(doc ?? {}, "(top)");
  const host = checkName(at("host"), "host", overrides.host ?? str(c.host, "host"));
  const e = obj(c.etcd ?? {}, "etcd");
  const endpoints = overrides.endpoints ??
    list(e.endpoints, "etcd.endpoints").map((u, i) => str(u, `etcd.endpoints[${i}]`));
  if (endpoints.length === 0) {
    throw new ValueError(at("etcd.endpoints"), "names no etcd (or --etcd)");
  }
  const etcd: EtcdOptions = { endpoints };
  if (e.ca !== undefined) {
    etcd.tls = { ca: str(e.ca, "etcd.ca") };
    if (e.cert !== undefined) etcd.tls.cert = str(e.cert, "etcd.cert");
    if (e.key !== undefined) etcd.tls.key = str(e.key, "etcd.key");
  }
  if (e.username !== undefined) {
    const file = str(e.password_file, "etcd.password_file");
    etcd.auth = {
      username: str(e.username, "etcd.username"),
      password: (await Deno.readTextFile(file)).trim(),
    };
  }

  const u = obj(c.underlay ?? {}, "underlay");
  const addresses = list(u.addresses, "underlay.addresses").map((a, i) =>
    checkAddress(at(`underlay.addresses[${i}]`), a)
  );
  if (addresses.length === 0) throw new ValueError(at("underlay.addresses"), "is empty");
  const tunnels = c.tunnels === undefined
    ? [checkTunnel(at("tunnels"), { protocol: "vxlan" })]
    : list(c.tunnels, "tunnels").map((t, i) => checkTunnel(at(`tunnels[${i}]`), t));

  const names = new Set<string>();
  const macs = new Set<string>();
  const ports = list(c.ports, "ports").map((raw, i): LocalPort => {
    const p = obj(raw, `ports[${i}]`);
    const f = (name: string) => at(`ports[${i}].${name}`);
    const name = str(p.name, `ports[${i}].name`);
    try {
      checkPortName(name);
    } catch (err) {
      throw new ValueError(f("name"), (err as Error).message);
    }
    if (name.startsWith(FLEET_PORT_PREFIX)) {
      throw new ValueError(f("name"), `${FLEET_PORT_PREFIX}… names the fleet's tunnel ports`);
    }
    if (names.has(name)) throw new ValueError(f("name"), `port ${name} is named twice`);
    names.add(name);
    const net = checkName(f("net"), "network", str(p.net, `ports[${i}].net`));
    const mac = checkMac(f("mac"), str(p.mac, `ports[${i}].mac`));
    if (macs.has(`${net} ${mac}`)) throw new ValueError(f("mac"), `${mac} is twice in ${net}`);
    macs.add(`${net} ${mac}`);
    const port: LocalPort = {
      name,
      device: str(p.device, `ports[${i}].device`),
      net,
      mac,
      ips: list(p.ips, `ports[${i}].ips`).map((a, j) => checkAddress(f(`ips[${j}]`), a)),
    };
    if (p.xdp === true) port.xdp = true;
    return port;
  });

  return {
    host,
    etcd,
    leaseTtl: int(c.lease_ttl, "lease_ttl", 2, 3600, 30),
    checkIntervalMs: int(c.check_interval_ms, "check_interval_ms", 50, 600_000, 2000),
    underlay: {
      device: u.device === undefined ? undefined : str(u.device, "underlay.device"),
      addresses,
    },
    tunnels,
    ports,
  };
}
