/**
 * A fleet in network namespaces, for `deno task demo-fleet`, the fleet's
 * end-to-end tests and its bench: a real etcd, namespace hosts joined by
 * one underlay, each with its own warren datapath and workloads, and a
 * `warren agent` process per host.
 *
 * ```text
 *                 etcd, 127.0.0.1:E in this process's namespace
 *      ┌──────────────────┼──────────────────┐     a forwarder per host, from
 *   host h1            host h2            host h3   127.0.0.1:E in the host
 *   u0 192.0.2.1       u0 192.0.2.2       u0 192.0.2.3
 *      └──────────── br0 (fabric namespace) ──────────┘
 *   workloads: a namespace each, behind a veth whose host end is a local port
 * ```
 *
 * Each agent runs as a real host's would: the whole process inside its
 * host's namespace (`warren --netns`), so its datapath calls (ifindexes,
 * `ip`, sysctls) and its etcd connections live in one network stack. It
 * reaches etcd at the same URL as everyone else, through a forwarder this
 * process runs from the host's loopback to etcd's: no device is added to
 * this process's namespace, and a test can cut or freeze one host's link
 * to etcd (`TcpProxy`) or count its connection attempts.
 *
 * This process enters a host's namespace only for synchronous work (the
 * forwarders' listening sockets, reading a datapath): asynchronous work in
 * a namespace would let a forwarder's connection to etcd be made there.
 * The datapaths are brought up when the lab is made, before any forwarder
 * runs.
 *
 * @module
 */

import type { AgentConfig } from "../fleet/config.ts";
import type { FleetDatapathState, LocalPort, SelfConfig } from "../fleet/derive.ts";
import type { EtcdOptions } from "../fleet/client.ts";
import { Datapath, type UpOptions } from "../tunnel/datapath.ts";
import { TestEtcd } from "./etcd.ts";
import { Netns, uniqueName, vethPair } from "./netns.ts";
import { TcpProxy } from "./tcp_proxy.ts";
import type { Workload } from "./topology.ts";

const CLI = new URL("../cli/main.ts", import.meta.url).pathname;

/** The lab's table sizes (see {@link FleetLabOptions.capacities}). */
const SMALL = { maxFlows: 1024, maxGroups: 64, maxBuckets: 8192, maxTunKeys: 1024 };

/** A workload of the fleet lab: a namespace behind one of its host's local ports. */
export interface FleetWorkload extends Workload {
  /** The local port's name in the datapath and the agent's configuration. */
  name: string;
  /** The network it belongs to, by name. */
  net: string;
}

/** Options of {@link FleetLab.create}. */
export interface FleetLabOptions {
  /** How many hosts (h1…hN), each with a datapath up. */
  hosts: number;
  /** Serve etcd over TLS with client certificates. */
  tls?: boolean;
  /** The agents' lease TTL, seconds (default 3). */
  leaseTtl?: number;
  /** The agents' watch progress check interval, ms (default 2000, the agent's). */
  checkIntervalMs?: number;
  /**
   * Each datapath's table sizes (default: small ones, 1024 flows, 64
   * groups, 8192 buckets, 1024 tunnel keys). A few hosts need no more, and
   * an apply reads the tables whole: warren's defaults make each apply of
   * a three-host fleet about four times slower.
   */
  capacities?: Pick<UpOptions, "maxFlows" | "maxGroups" | "maxBuckets" | "maxTunKeys">;
}

/** One namespace host of the fleet lab. */
export class FleetHost {
  /** Its workloads, in the order added. */
  readonly workloads: FleetWorkload[] = [];
  /** Its agent, while one runs. */
  agent?: AgentProcess;
  /** How its agent reaches etcd (TLS material and credentials, if any). */
  etcdOptions: EtcdOptions;

  /** Host `n` (1-based) in `ns`, its datapath pinned at `pinDir`. */
  constructor(
    readonly lab: FleetLab,
    readonly n: number,
    readonly ns: Netns,
    readonly pinDir: string,
    readonly proxy: TcpProxy,
    etcdOptions: EtcdOptions,
  ) {
    this.etcdOptions = etcdOptions;
  }

  /** Its name in the fleet: h1, h2, … */
  get name(): string {
    return `h${this.n}`;
  }

  /** Its underlay address. */
  get ip(): string {
    return `192.0.2.${this.n}`;
  }

  /** Its workloads as the agent's configuration lists them. */
  ports(): LocalPort[] {
    return this.workloads.map((w) => ({
      name: w.name,
      device: w.port,
      net: w.net,
      mac: w.mac,
      ips: [w.ip],
    }));
  }

  /** The agent's configuration, with `overrides`. */
  config(overrides: Partial<AgentConfig> = {}): AgentConfig {
    return {
      host: this.name,
      etcd: this.etcdOptions,
      leaseTtl: this.lab.options.leaseTtl ?? 3,
      checkIntervalMs: this.lab.options.checkIntervalMs ?? 2000,
      underlay: { device: "u0", addresses: [this.ip] },
      tunnels: [{ protocol: "vxlan", port: 4789 }],
      ports: this.ports(),
      ...overrides,
    };
  }

  /** This host as the derivation sees it, for computing what it should hold. */
  self(): SelfConfig {
    const c = this.config();
    return { host: c.host, underlay: c.underlay.addresses, tunnels: c.tunnels, ports: c.ports };
  }

  /**
   * Adds a workload in network `net` with address `ip` (/24) and MAC `mac`,
   * behind local port `name`. The agent learns of it when started, or on
   * `agent.reconfigure()`.
   */
  async addWorkload(name: string, net: string, ip: string, mac: string): Promise<FleetWorkload> {
    const ns = await Netns.create("wfw");
    this.lab.namespaces.push(ns);
    const port = `p-${name}`.slice(0, 15);
    await vethPair({ ns: this.ns, name: port }, { ns, name: "eth0", addrs: [`${ip}/24`] });
    // The kernel's default ARP retry is a second: a workload that asked once
    // before its peer was reachable would measure its resolver, not the fleet.
    await ns.sh(`ip link set dev eth0 address ${mac}
      sysctl -qw net.ipv4.neigh.eth0.retrans_time_ms=100 net.ipv4.neigh.eth0.mcast_solicit=10`);
    const w: FleetWorkload = { ns, dev: "eth0", ip, ip6: "", mac, port, name, net };
    this.workloads.push(w);
    return w;
  }

  /** Removes workload `w` (its namespace and veth): a workload stopped. */
  async removeWorkload(w: FleetWorkload): Promise<void> {
    const i = this.workloads.indexOf(w);
    if (i >= 0) this.workloads.splice(i, 1);
    await w.ns[Symbol.asyncDispose]();
  }

  /**
   * Runs `fn` with this host's datapath open, synchronously inside its
   * namespace (nothing else of this process runs meanwhile). It is opened
   * anew each time: a handle reads the ports once, and the agent changes
   * them.
   */
  read<T>(fn: (dp: Datapath) => T): T {
    const leave = this.ns.enter();
    try {
      using dp = Datapath.open(this.pinDir);
      return fn(dp);
    } finally {
      leave();
    }
  }

  /** Starts `warren agent` for this host (its datapath unless `stateFile`). */
  startAgent(options: AgentProcessOptions & { config?: AgentConfig } = {}): AgentProcess {
    this.agent = new AgentProcess(this.lab.dir, options.config ?? this.config(), {
      datapath: options.stateFile ? undefined : { netns: this.ns.name, pinDir: this.pinDir },
      ...options,
    });
    return this.agent;
  }
}

/** FleetLab is etcd and namespace hosts, all removed on dispose. */
export class FleetLab implements AsyncDisposable {
  /** The hosts, h1 first. */
  readonly hosts: FleetHost[] = [];
  /** Every namespace made, removed on dispose. */
  readonly namespaces: Netns[] = [];
  /** Where configurations and state files go. */
  readonly dir: string;

  private constructor(
    readonly etcd: TestEtcd,
    readonly fabric: Netns,
    readonly options: FleetLabOptions,
  ) {
    this.dir = Deno.makeTempDirSync({ prefix: "warren-fleet-lab-" });
  }

  /** Starts etcd and brings up every host's datapath, then their forwarders. */
  static async create(options: FleetLabOptions): Promise<FleetLab> {
    const etcd = await TestEtcd.start({ tls: options.tls });
    let lab: FleetLab | undefined;
    try {
      const fabric = await Netns.create("wff");
      lab = new FleetLab(etcd, fabric, options);
      lab.namespaces.push(fabric);
      await fabric.run(["ip", "link", "add", "br0", "type", "bridge"]);
      await fabric.run(["ip", "link", "set", "br0", "up"]);
      const made: { n: number; ns: Netns; pinDir: string }[] = [];
      for (let n = 1; n <= options.hosts; n++) {
        const ns = await Netns.create("wfh");
        lab.namespaces.push(ns);
        const peer = uniqueName("fb");
        await vethPair({ ns, name: "u0", addrs: [`192.0.2.${n}/24`] }, { ns: fabric, name: peer });
        await fabric.run(["ip", "link", "set", peer, "master", "br0"]);
        const pinDir = `/sys/fs/bpf/warren-fleet-${crypto.randomUUID().slice(0, 13)}`;
        await ns.within(async () => {
          using _ = await Datapath.up({ underlay: "u0", pinDir, ...SMALL, ...options.capacities });
        });
        made.push({ n, ns, pinDir });
      }
      const port = Number(new URL(etcd.url).port);
      const client = await etcd.clientOptions();
      for (const { n, ns, pinDir } of made) {
        const proxy = TcpProxy.start(port, { netns: ns, port });
        lab.hosts.push(new FleetHost(lab, n, ns, pinDir, proxy, client));
      }
      return lab;
    } catch (err) {
      if (lab) await lab[Symbol.asyncDispose]();
      else await etcd.close();
      throw err;
    }
  }

  /** Host `n` (1-based). */
  host(n: number): FleetHost {
    return this.hosts[n - 1];
  }

  /**
   * Kills every agent, stops the forwarders, takes every datapath down,
   * deletes every namespace and stops etcd: all of it even when a step
   * fails; the first failure is thrown afterwards.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    const failures: unknown[] = [];
    const step = (p: Promise<unknown>) => p.catch((e) => failures.push(e));
    for (const h of this.hosts) if (h.agent) await step(h.agent.stop("SIGKILL"));
    for (const h of this.hosts) await step(h.proxy.close());
    for (const h of this.hosts) await step(h.ns.within(() => Datapath.down(h.pinDir)));
    for (const ns of this.namespaces) await step(ns[Symbol.asyncDispose]());
    await step(this.etcd.close());
    await step(Deno.remove(this.dir, { recursive: true }));
    if (failures.length) throw failures[0];
  }
}

/** The agent's YAML for `config` (JSON is YAML), as `warren agent --config` reads it. */
export function configYaml(config: AgentConfig, passwordFile?: string): string {
  return JSON.stringify({
    host: config.host,
    etcd: {
      endpoints: config.etcd.endpoints,
      ...(config.etcd.tls ?? {}),
      ...(config.etcd.auth ? { username: config.etcd.auth.username } : {}),
      ...(passwordFile ? { password_file: passwordFile } : {}),
    },
    lease_ttl: config.leaseTtl,
    check_interval_ms: config.checkIntervalMs,
    underlay: config.underlay,
    tunnels: config.tunnels,
    ports: config.ports,
  });
}

/** Options of {@link AgentProcess}. */
export interface AgentProcessOptions {
  /** Extra environment (failpoints, say). */
  env?: Record<string, string>;
  /** Run with `--verbose`: a log line per state applied. */
  verbose?: boolean;
  /** Called with each line the agent logs, as it comes. */
  onLine?: (line: string) => void;
  /** Write the state to a file instead of a datapath. */
  stateFile?: boolean;
  /** Apply to the datapath pinned at `pinDir`, running inside namespace `netns`. */
  datapath?: { netns: string; pinDir: string };
  /** Extra arguments of `warren agent` (`--stay`, say). */
  args?: string[];
  /**
   * Run at this niceness (negative: ahead of ordinary processes), as a host
   * gives its control plane the CPU it needs: on a test machine shared
   * with other suites, the latencies measured are then the agent's own.
   */
  nice?: number;
  /**
   * Run holding only these capabilities (setpriv's names, such as "bpf"),
   * as the systemd unit runs the agent; with a datapath only.
   */
  capabilities?: string[];
}

/** A `warren agent` process. */
export class AgentProcess {
  /** The process. */
  readonly child: Deno.ChildProcess;
  /** Where it writes its derived state, in state file mode. */
  readonly stateFile: string;
  /** Every line it logged so far (the last 10 000). */
  readonly lines: string[] = [];
  /** Whether the process ended. */
  exited = false;
  readonly #configFile: string;
  #stderr: Promise<string>;

  /** Starts `warren agent` for `config`, its files in `dir`. */
  constructor(dir: string, readonly config: AgentConfig, options: AgentProcessOptions = {}) {
    this.#configFile = `${dir}/${config.host}.yaml`;
    this.#writeConfig(config);
    this.stateFile = `${dir}/${config.host}.state.json`;
    const dp = options.datapath;
    // With only some capabilities, the namespace is entered first (entering
    // one is not among the capabilities kept), as systemd would start it.
    const global = !dp
      ? []
      : options.capabilities
      ? ["--pin-dir", dp.pinDir]
      : ["--netns", dp.netns, "--pin-dir", dp.pinDir];
    const args = ["run", "-A", CLI, ...global, "agent", "--config", this.#configFile];
    if (!dp) args.push("--state-file", this.stateFile);
    if (options.verbose) args.push("--verbose");
    args.push(...options.args ?? []);
    let command = [Deno.execPath(), ...args];
    if (dp && options.capabilities) {
      const set = ["-all", ...options.capabilities.map((c) => `+${c}`)].join(",");
      command = [
        "nsenter",
        `--net=/run/netns/${dp.netns}`,
        "setpriv",
        `--inh-caps=${set}`,
        `--ambient-caps=${set}`,
        `--bounding-set=${set}`,
        "--",
        ...command,
      ];
    }
    if (options.nice !== undefined) command = ["nice", "-n", String(options.nice), ...command];
    this.child = new Deno.Command(command[0], {
      args: command.slice(1),
      env: options.env,
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.child.status.then(() => this.exited = true);
    this.#stderr = readLines(this.child.stderr, (line) => {
      this.lines.push(line);
      if (this.lines.length > 10_000) this.lines.shift();
      options.onLine?.(line);
    });
  }

  #writeConfig(config: AgentConfig): void {
    let passwordFile: string | undefined;
    if (config.etcd.auth) {
      passwordFile = `${this.#configFile}.password`;
      Deno.writeTextFileSync(passwordFile, config.etcd.auth.password, { mode: 0o600 });
    }
    Deno.writeTextFileSync(this.#configFile, configYaml(config, passwordFile));
  }

  /** Rewrites its configuration file as `config` and sends SIGHUP: it reads its ports again. */
  reconfigure(config: AgentConfig): void {
    this.#writeConfig(config);
    this.child.kill("SIGHUP");
  }

  /** Lines it logged that contain `text`. */
  matching(text: string): string[] {
    return this.lines.filter((l) => l.includes(text));
  }

  /** The state it last wrote, in state file mode, if any. */
  state(): FleetDatapathState | undefined {
    try {
      return JSON.parse(Deno.readTextFileSync(this.stateFile));
    } catch {
      return undefined;
    }
  }

  /** Sends `signal` and waits for the end; returns the status and what it logged. */
  stop(
    signal: Deno.Signal = "SIGTERM",
  ): Promise<{ status: Deno.CommandStatus; log: string }> {
    try {
      this.child.kill(signal);
    } catch {
      // Already gone.
    }
    return this.ended();
  }

  /** Waits for the process to end by itself. */
  async ended(): Promise<{ status: Deno.CommandStatus; log: string }> {
    const status = await this.child.status;
    return { status, log: await this.#stderr };
  }
}

/** Reads `stream` to its end, calling `onLine` with each line; returns the whole text. */
async function readLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<string> {
  let text = "";
  let partial = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    text += chunk;
    const lines = (partial + chunk).split("\n");
    partial = lines.pop()!;
    for (const line of lines) onLine(line);
  }
  if (partial) onLine(partial);
  return text;
}
