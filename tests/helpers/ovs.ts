/**
 * Open vSwitch's userspace datapath as an independent tunnel peer, for the
 * protocols this kernel cannot peer with itself (it has no geneve or gre
 * module): one `ovsdb-server` and one `ovs-vswitchd` per namespace host, with
 * their own run directory, started by the test and stopped after it.
 *
 * ```text
 *   workload veth ── br-int ── tunnel ports (vxlan, geneve, gre)
 *                                 │ native tunneling: OVS pushes and pops
 *                                 │ the outer headers itself
 *   underlay veth ── br-phy ─ the host's underlay addresses, moved here
 * ```
 *
 * Both bridges are `datapath_type=netdev` with `fail-mode=secure`: br-phy
 * forwards NORMAL, br-int only by the flows a test adds. OVS routes and
 * resolves tunnel endpoints itself (its route table follows the kernel's;
 * {@link OvsHost.setNeighbor} fills its neighbour cache).
 *
 * Quirks this helper handles (OVS 3.1, Debian bookworm):
 * - OVS reads and writes veths through AF_PACKET, which hands it frames as
 *   the far end sent them: partial checksums not completed, GSO frames not
 *   segmented. So TX checksum offload goes off at the far end of every veth
 *   it reads (`ethtool -K DEV tx off`, which takes TSO with it; software GSO
 *   still segments before the veth), as OVS's own system-userspace tests do.
 * - br-phy takes the underlay's MAC, and the kernel stops answering for the
 *   moved addresses on the underlay itself (IPv6 off, strict reverse-path
 *   filter), so peers see one MAC and nothing but OVS handles their frames.
 * - OVS computes the GRE checksum before it writes the sequence number, so
 *   `csum` with `seq` sends bad checksums: {@link OvsHost.addTunnel} refuses
 *   the pair.
 * - Over IPv6, OVS checksums UDP tunnels (VXLAN, Geneve) by default.
 *
 * @example
 * ```ts
 * await using ovs = await OvsHost.start(host.ns, { underlay: "u0", ports: ["wl0"] });
 * await ovs.setNeighbor("192.0.2.1", peerMac);
 * await ovs.addTunnel("t0", "geneve", { remote_ip: "192.0.2.1", key: 42 });
 * await ovs.addTlvMap("{class=0xffff,type=0,len=4}->tun_metadata0");
 * await ovs.addFlows(
 *   "in_port=wl0 actions=set_field:0x1->tun_metadata0,output:t0",
 *   "in_port=t0,tun_metadata0=0x2 actions=output:wl0",
 * );
 * ```
 *
 * @module
 */

import type { Netns } from "../../src/lab/netns.ts";
import { run, runRaw } from "../../src/lab/run.ts";

const SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema";
const DAEMONS = ["ovs-vswitchd", "ovsdb-server"] as const;
/** How long any OVS client waits for the daemons before it gives up. */
const TIMEOUT = "--timeout=20";

/** Options of {@link OvsHost.start}. */
export interface OvsHostOptions {
  /**
   * The host's underlay device. OVS takes it over: its global addresses move
   * to br-phy, and come back on stop.
   */
  underlay: string;
  /** Devices to attach to br-int as workload ports, named as the device. */
  ports?: string[];
}

/** Tunnel port options as OVS spells them (`remote_ip`, `key`, `csum`, ...). */
export type OvsTunnelOptions = Record<string, string | number | boolean>;

/** One OpenFlow flow of br-int with its counters. */
export interface OvsFlow {
  /** The match, as `ovs-ofctl --names` prints it (priority included). */
  match: string;
  /** The actions. */
  actions: string;
  /** Packets that hit it. */
  packets: number;
  /** Bytes that hit it. */
  bytes: number;
}

/** An address the underlay had, with its prefix length. */
interface Address {
  local: string;
  prefixlen: number;
}

/** OvsHost is one namespace host running Open vSwitch's userspace datapath. */
export class OvsHost implements AsyncDisposable {
  /** The bridge with the workload and tunnel ports. */
  static readonly BRIDGE = "br-int";
  /** The bridge with the underlay device and the host's underlay addresses. */
  static readonly UNDERLAY_BRIDGE = "br-phy";

  /** The host's namespace. */
  readonly ns: Netns;
  /** The run directory: database, sockets, pidfiles, logs. */
  readonly dir: string;
  /** The underlay device. */
  readonly underlay: string;
  /** The underlay's MAC, which br-phy answers with. */
  readonly mac: string;
  /** The host's underlay addresses, now on br-phy. */
  readonly ips: string[];
  readonly #moved: Address[];
  readonly #sysctls: Record<string, string>;
  #stopped = false;

  private constructor(
    ns: Netns,
    dir: string,
    underlay: string,
    mac: string,
    moved: Address[],
    sysctls: Record<string, string>,
  ) {
    this.ns = ns;
    this.dir = dir;
    this.underlay = underlay;
    this.mac = mac;
    this.#moved = moved;
    this.ips = moved.map((a) => a.local);
    this.#sysctls = sysctls;
  }

  /**
   * Starts ovsdb-server and ovs-vswitchd inside `ns` on a fresh database,
   * builds br-phy on the underlay and br-int with `options.ports`, and
   * returns once OVS routes to every moved address.
   */
  static async start(ns: Netns, options: OvsHostOptions): Promise<OvsHost> {
    try {
      await Deno.stat("/usr/sbin/ovs-vswitchd");
    } catch {
      throw new Error(
        "Open vSwitch is not installed: scripts/run installs openvswitch-switch",
      );
    }
    const dev = options.underlay;
    const [link] = JSON.parse(
      await ns.run(["ip", "-j", "addr", "show", "dev", dev, "scope", "global"]),
    );
    // Addresses the scope filter leaves out still show, as empty objects.
    const moved: Address[] = link.addr_info.filter((a: Partial<Address>) => a.local).map((
      a: Address,
    ) => ({ local: a.local, prefixlen: a.prefixlen }));
    const sysctls: Record<string, string> = {};
    for (const key of [`ipv6.conf.${dev}.disable_ipv6`, `ipv4.conf.${dev}.rp_filter`]) {
      sysctls[key] = (await ns.run(["sysctl", "-n", `net.${key}`])).trim();
    }
    const dir = await Deno.makeTempDir({ prefix: "warren-ovs-" });
    const ovs = new OvsHost(ns, dir, dev, link.address, moved, sysctls);
    try {
      await ovs.#startDaemons();
      await ovs.#takeUnderlay();
      await ovs.#addBridge(OvsHost.BRIDGE);
      for (const port of options.ports ?? []) await ovs.addPort(port);
      return ovs;
    } catch (err) {
      const notes = await ovs.diagnostics().catch((e) => `(no diagnostics: ${e})`);
      await ovs.stop().catch(() => {});
      throw new Error(`starting Open vSwitch in ${ns.name} failed: ${err}\n${notes}`, {
        cause: err,
      });
    }
  }

  async #startDaemons(): Promise<void> {
    const d = this.dir;
    await run(["ovsdb-tool", "create", `${d}/conf.db`, SCHEMA]);
    // --detach returns once the daemon is ready: the database listens, the
    // switch has read its configuration.
    await this.#daemon("ovsdb-server", `${d}/conf.db`, `--remote=punix:${d}/db.sock`);
    // One revalidator thread is plenty here and spares the shared CPUs.
    await this.vsctl(
      "--no-wait",
      "init",
      "--",
      "set",
      "Open_vSwitch",
      ".",
      "other_config:n-revalidator-threads=1",
      "other_config:n-handler-threads=1",
    );
    // No kernel datapath: only netdev bridges, whatever modules exist.
    await this.#daemon("ovs-vswitchd", `unix:${d}/db.sock`, "--disable-system");
  }

  #daemon(name: (typeof DAEMONS)[number], ...args: string[]): Promise<string> {
    const d = this.dir;
    return this.ns.run([
      "env",
      ...Object.entries(this.#env()).map(([k, v]) => `${k}=${v}`),
      name,
      ...args,
      `--pidfile=${d}/${name}.pid`,
      `--unixctl=${d}/${name}.ctl`,
      `--log-file=${d}/${name}.log`,
      "-vconsole:off",
      "--no-chdir",
      "--detach",
    ]);
  }

  /**
   * Adds a userspace bridge that forwards by its flows alone (none yet);
   * `more` goes on the same ovs-vsctl command line.
   */
  #addBridge(name: string, ...more: string[]): Promise<string> {
    return this.vsctl(
      ...["add-br", name, "--", "set", "bridge", name],
      ...["datapath_type=netdev", "fail-mode=secure", ...more],
    );
  }

  /** Moves the underlay under br-phy and its addresses onto br-phy. */
  async #takeUnderlay(): Promise<void> {
    const br = OvsHost.UNDERLAY_BRIDGE;
    const dev = this.underlay;
    await this.#addBridge(br, `other-config:hwaddr="${this.mac}"`, "--", "add-port", br, dev);
    await this.ofctl("add-flow", br, "actions=NORMAL");
    await txChecksumOffAtPeer(this.ns, dev);
    const v6 = this.#moved.some((a) => a.local.includes(":"));
    // The kernel would take frames to br-phy's MAC on the underlay too (it
    // is the underlay's): IPv6 off and a strict reverse-path check keep it
    // out, since every route to the peers now leaves through br-phy.
    await this.ns.sh(`
      ip addr flush dev ${dev} scope global
      sysctl -qw net.ipv6.conf.${dev}.disable_ipv6=1 net.ipv4.conf.${dev}.rp_filter=1
      sysctl -qw net.ipv6.conf.${br}.disable_ipv6=${v6 ? 0 : 1}
      ${this.#addrAdd(br)}
      ip link set dev ${br} up`);
    for (const a of this.#moved) await this.#waitForRoute(a);
  }

  #addrAdd(dev: string): string {
    return this.#moved.map((a) =>
      `ip addr replace ${a.local}/${a.prefixlen} dev ${dev}${a.local.includes(":") ? " nodad" : ""}`
    ).join("\n");
  }

  /**
   * Waits until OVS routes from `a` (it learns the kernel's routes from
   * notifications, a moment later): the subnet's route, or for a host
   * address its local route.
   */
  async #waitForRoute(a: Address): Promise<void> {
    const full = a.local.includes(":") ? 128 : 32;
    const want = new RegExp(
      `dev ${OvsHost.UNDERLAY_BRIDGE} SRC ${a.local}${a.prefixlen === full ? " local" : ""}$`,
      "m",
    );
    for (let i = 0; i < 100; i++) {
      if (want.test(await this.appctl("ovs/route/show"))) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`OVS never learned a route from ${a.local}/${a.prefixlen}`);
  }

  /**
   * Attaches `dev` (a device in the namespace) to br-int as a port of the
   * same name, turning TX checksum offload off at its far end.
   */
  async addPort(dev: string): Promise<void> {
    await this.vsctl("add-port", OvsHost.BRIDGE, dev);
    await txChecksumOffAtPeer(this.ns, dev);
    await this.ns.run(["sysctl", "-qw", `net.ipv6.conf.${dev}.disable_ipv6=1`]);
  }

  /**
   * Makes tunnel port `name` of `type` with `options` (replacing any port of
   * that name), for example `{ remote_ip: "192.0.2.1", key: 42, csum: true }`;
   * `remote_ip` and `key` may be `"flow"`. Stale datapath flows go with the
   * old port.
   */
  async addTunnel(
    name: string,
    type: "vxlan" | "geneve" | "gre",
    options: OvsTunnelOptions,
  ): Promise<void> {
    if (type === "gre" && String(options.csum) === "true" && String(options.seq) === "true") {
      throw new Error(
        "OVS 3.1 computes the GRE checksum before it writes the sequence number: " +
          "csum and seq together send bad checksums",
      );
    }
    await this.vsctl(
      ...["--if-exists", "del-port", OvsHost.BRIDGE, name],
      ...["--", "add-port", OvsHost.BRIDGE, name],
      ...["--", "set", "interface", name, `type=${type}`],
      ...Object.entries(options).map(([k, v]) => `options:${k}="${v}"`),
    );
    await this.appctl("revalidator/purge");
  }

  /** Maps Geneve options to `tun_metadata` fields, as `ovs-ofctl add-tlv-map`. */
  async addTlvMap(...maps: string[]): Promise<void> {
    await this.ofctl("add-tlv-map", OvsHost.BRIDGE, maps.join(","));
  }

  /** Adds flows to br-int, written as `ovs-ofctl add-flow` takes them. */
  async addFlows(...flows: string[]): Promise<void> {
    await this.#tool(
      ["ovs-ofctl", TIMEOUT, "add-flows", OvsHost.BRIDGE, "-"],
      new TextEncoder().encode(flows.join("\n") + "\n"),
    );
    await this.appctl("revalidator/purge");
  }

  /** Deletes every flow of br-int. */
  async delFlows(): Promise<void> {
    await this.ofctl("del-flows", OvsHost.BRIDGE);
    await this.appctl("revalidator/purge");
  }

  /** br-int's flows with their counters, as of the last packet sent. */
  async flows(): Promise<OvsFlow[]> {
    // OpenFlow counters lag the datapath: revalidators push datapath flow
    // statistics in rounds. Two full rounds after the traffic stopped
    // (the first may have begun before the last packet) make them exact.
    await this.appctl("revalidator/wait");
    await this.appctl("revalidator/wait");
    const out = await this.ofctl("--names", "dump-flows", OvsHost.BRIDGE);
    return out.split("\n").flatMap((line) => {
      // "cookie=0x0, duration=1s, table=0, n_packets=3, n_bytes=294, idle_age=0,
      // priority=100,in_port=wl0 actions=output:t0": the match holds no ", ".
      const m = /^\s*((?:\w+=[^,\s]*, )*)(.*?)\s*actions=(.*)$/.exec(line);
      if (!m) return [];
      const stat = (k: string) => Number(new RegExp(`\\b${k}=(\\d+)`).exec(m[1])?.[1]);
      return [{ match: m[2], actions: m[3], packets: stat("n_packets"), bytes: stat("n_bytes") }];
    });
  }

  /** Tells OVS the MAC of tunnel endpoint `ip`, so no first packet waits for ARP. */
  async setNeighbor(ip: string, mac: string): Promise<void> {
    await this.appctl("tnl/neigh/set", OvsHost.UNDERLAY_BRIDGE, ip, mac);
  }

  /** Runs `ovs-vsctl` against this host's database. */
  vsctl(...args: string[]): Promise<string> {
    return this.#tool(["ovs-vsctl", TIMEOUT, `--db=unix:${this.dir}/db.sock`, ...args]);
  }

  /** Runs `ovs-ofctl` against this host's bridges. */
  ofctl(...args: string[]): Promise<string> {
    return this.#tool(["ovs-ofctl", TIMEOUT, ...args]);
  }

  /** Runs `ovs-appctl` against this host's ovs-vswitchd. */
  appctl(...args: string[]): Promise<string> {
    return this.#tool(["ovs-appctl", TIMEOUT, "-t", `${this.dir}/ovs-vswitchd.ctl`, ...args]);
  }

  /** Where the daemons and clients keep everything, instead of /var/run/openvswitch. */
  #env(): Record<string, string> {
    return { OVS_RUNDIR: this.dir, OVS_DBDIR: this.dir, OVS_LOGDIR: this.dir };
  }

  // The clients talk to the daemons over sockets in the run directory; they
  // need not run inside the namespace.
  #tool(cmd: string[], stdin?: Uint8Array): Promise<string> {
    return run(cmd, { stdin, env: this.#env() });
  }

  /**
   * What OVS knows, for a failure's report: bridges, OpenFlow and datapath
   * flows, tunnel neighbours and routes, and the switch's log.
   */
  async diagnostics(): Promise<string> {
    const sections: [string, () => Promise<string>][] = [
      ["ovs-vsctl show", () => this.vsctl("show")],
      ["ovs-ofctl dump-flows br-int", () => this.ofctl("--names", "dump-flows", OvsHost.BRIDGE)],
      ["ovs-appctl dpctl/dump-flows", () => this.appctl("dpctl/dump-flows")],
      ["ovs-appctl tnl/neigh/show", () => this.appctl("tnl/neigh/show")],
      ["ovs-appctl ovs/route/show", () => this.appctl("ovs/route/show")],
      ["ovs-vswitchd.log, last 40 lines", () => this.#logTail(40)],
    ];
    const out = [`=== Open vSwitch in ${this.ns.name} (${this.dir})`];
    for (const [title, fn] of sections) {
      out.push(`--- ${title}`, await fn().catch((e) => `(failed: ${e})`));
    }
    return out.join("\n");
  }

  async #logTail(lines: number): Promise<string> {
    const log = await Deno.readTextFile(`${this.dir}/ovs-vswitchd.log`);
    return log.trimEnd().split("\n").slice(-lines).join("\n");
  }

  /**
   * Stops both daemons (ovs-vswitchd removing its devices), puts the
   * underlay's addresses back and removes the run directory. Safe twice;
   * every step is tried, and the first failure is thrown afterwards.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    const steps = [
      ...DAEMONS.map((name) => () => this.#stopDaemon(name)),
      () => this.#returnUnderlay(),
      () => Deno.remove(this.dir, { recursive: true }),
    ];
    const failures: unknown[] = [];
    for (const step of steps) await step().catch((e) => failures.push(e));
    if (failures.length) throw failures[0];
  }

  /** Puts the underlay's addresses and settings back, if its namespace is still there. */
  async #returnUnderlay(): Promise<void> {
    if (!await exists(`/run/netns/${this.ns.name}`)) return;
    await this.ns.sh(`
      ${Object.entries(this.#sysctls).map(([k, v]) => `sysctl -qw net.${k}=${v}`).join("\n")}
      ${this.#addrAdd(this.underlay)}`);
  }

  /** Asks a daemon to exit, and kills it by its pid if it will not. */
  async #stopDaemon(name: (typeof DAEMONS)[number]): Promise<void> {
    const pidText = await Deno.readTextFile(`${this.dir}/${name}.pid`).catch(() => "");
    const pid = Number(pidText.trim());
    if (!pid) return;
    const cleanup = name === "ovs-vswitchd" ? ["--cleanup"] : [];
    await runRaw([
      "ovs-appctl",
      "--timeout=5",
      "-t",
      `${this.dir}/${name}.ctl`,
      "exit",
      ...cleanup,
    ]);
    if (await exited(pid, 5000)) return;
    Deno.kill(pid, "SIGKILL");
    if (!await exited(pid, 2000)) throw new Error(`${name} (pid ${pid}) does not die`);
  }

  /** Stops OVS: see {@link OvsHost.stop}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/**
 * Runs `fn`; when it throws, prints what each of `hosts` knows before the
 * error goes on.
 */
export async function withOvsDiagnostics<T>(hosts: OvsHost[], fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    for (const h of hosts) console.error(await h.diagnostics());
    throw err;
  }
}

/**
 * Turns TX checksum offload off at the far end of veth `dev` in `ns`
 * (nothing if `dev` is no veth), for a reader that does not complete
 * partial checksums, such as OVS's AF_PACKET sockets. The far end must be
 * in a namespace with a name, or in `ns` itself.
 */
async function txChecksumOffAtPeer(ns: Netns, dev: string): Promise<void> {
  const [link] = JSON.parse(await ns.run(["ip", "-j", "-d", "link", "show", "dev", dev]));
  if (link.linkinfo?.info_kind !== "veth") return;
  let where = ns.name;
  if (link.link_netnsid !== undefined) {
    const ids: { nsid: number; name?: string }[] = JSON.parse(
      await ns.run(["ip", "-j", "netns", "list-id"]),
    );
    const name = ids.find((x) => x.nsid === link.link_netnsid)?.name;
    if (!name) throw new Error(`the far end of ${dev} is in a namespace with no name`);
    where = name;
  }
  const links: { ifindex: number; ifname: string }[] = JSON.parse(
    await run(["ip", "-n", where, "-j", "link", "show"]),
  );
  const peer = links.find((l) => l.ifindex === link.link_index);
  if (!peer) throw new Error(`no device ${link.link_index} in ${where}, the far end of ${dev}`);
  await run(["ip", "netns", "exec", where, "ethtool", "-K", peer.ifname, "tx", "off"]);
}

/** Whether process `pid` is gone (or a zombie) within `ms` milliseconds. */
async function exited(pid: number, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    if (state === "" || state === "Z" || state === "X") return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}
