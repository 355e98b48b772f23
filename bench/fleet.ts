/**
 * The fleet at scale: a thousand simulated hosts registered in one etcd,
 * and three real `warren agent` processes following it.
 *
 * The simulated hosts do what an agent does to etcd, written efficiently
 * from this process: a lease each (the production TTL, renewed every third
 * of it over a few keep-alive streams, their renewals spread evenly), a
 * host key, and endpoints spread over several networks (by default 24 per
 * host, so the fleet holds 25 000 keys), written in transactions of up to
 * etcd's 128 operations. A sample of them also watch the whole fleet as an
 * agent does (a watch per connection, progress requests every 2 s), so etcd
 * fans every change out to a realistic number of watchers. Every host,
 * simulated or real, has workloads in the network the real agents serve,
 * so every agent's state holds every host.
 *
 * Measured, each beside a baseline taken in the same run:
 *
 * - **join**: a new host registers with an endpoint (its host key and
 *   endpoint in one transaction); the time until every real agent has
 *   applied a state containing it, against the time etcd takes to deliver
 *   the same write to a watcher here. The agents run with `--verbose`, so
 *   each logs the etcd revision of every state it applied, stamped with its
 *   clock; a join is applied once each has logged the join's revision. Then
 *   the host leaves (its lease revoked) and the withdrawal is timed alike.
 * - **steady state**: over an idle window, etcd's key writes (puts and
 *   deletes, from its metrics; and its revision) against its lease renewals.
 * - **relist**: a fresh mirror's full list of every key, validated into the
 *   fleet view, against a bare paged range read of the same keys.
 * - **memory**: the agents' peak resident memory against an agent following
 *   an empty fleet; etcd's resident memory against etcd with an empty store;
 *   etcd's database size against the bytes of the live keys and values.
 *   The agents run with the V8 flags of the systemd unit
 *   (`scripts/warren-agent.service`), as deployed.
 *
 * The real agents write their state to a file today ({@link stateFileAgents});
 * once the datapath takes networks and groups (issue 14) another
 * {@link AgentHosts} runs them against datapaths in namespaces, and nothing
 * else here changes: apply completion is read from the agents' logs, not
 * from where they apply.
 *
 * @module
 */

import { TestEtcd } from "../src/lab/etcd.ts";
import { AgentProcess, hostConfig, workloadMac } from "../tests/helpers/fleet.ts";
import { addNetwork } from "../src/fleet/admin.ts";
import { bytes, EtcdClient, type EtcdOptions, type WatchStream } from "../src/fleet/client.ts";
import type { AgentConfig } from "../src/fleet/config.ts";
import { endpointKey, hostKey, PREFIX, prefixEnd } from "../src/fleet/keys.ts";
import { OnceLog } from "../src/fleet/log.ts";
import { Mirror } from "../src/fleet/mirror.ts";
import { endpointValue } from "../src/fleet/publisher.ts";
import { hostValue } from "../src/fleet/registration.ts";
import { FleetState } from "../src/fleet/view.ts";
import { type Figure, figure, percentile, say, sideBySide } from "./lib.ts";
import type { IRequestOp } from "etcd3";

/** How much work a run does. */
export interface FleetOptions {
  /** Simulated hosts. */
  hosts: number;
  /** Endpoints of each simulated host. */
  endpointsPerHost: number;
  /** Networks the endpoints are spread over (the agents serve the first). */
  networks: number;
  /** Simulated hosts that also watch the fleet. */
  watchers: number;
  /** Joins (and leaves) timed. */
  joins: number;
  /** The idle window in which writes are counted, seconds. */
  idleSeconds: number;
  /** Runs of the relist and its baseline. */
  relistRuns: number;
  /** Where the real agents run (default: state files in a temporary directory). */
  agents?: AgentHosts;
}

/** A running real agent. */
export interface RunningAgent {
  /** Its process id, for its memory. */
  pid: number;
  /** Stops it (it leaves the fleet). */
  stop(): Promise<void>;
}

/** Where and how the real agents run: the one part a real datapath changes. */
export interface AgentHosts {
  /** Starts `warren agent --verbose` for `config`, passing each line it logs to `onLine`. */
  start(config: AgentConfig, onLine: (line: string) => void): RunningAgent;
  /** Removes what the agents left. */
  close(): Promise<void>;
}

/** The V8 flags the systemd unit runs the agent with: the bench measures the agent as deployed. */
export function unitV8Flags(): string {
  const unit = Deno.readTextFileSync(new URL("../scripts/warren-agent.service", import.meta.url));
  const flags = /^Environment=DENO_V8_FLAGS=(.*)$/m.exec(unit)?.[1];
  if (flags === undefined) throw new Error("scripts/warren-agent.service sets no DENO_V8_FLAGS");
  return flags;
}

/** Agents that write their state to files in a temporary directory, with the unit's V8 flags. */
export function stateFileAgents(): AgentHosts {
  const dir = Deno.makeTempDirSync({ prefix: "warren-bench-fleet-" });
  const env = { DENO_V8_FLAGS: unitV8Flags() };
  return {
    start(config, onLine) {
      const p = new AgentProcess(dir, config, { verbose: true, onLine, env });
      return {
        pid: p.child.pid,
        stop: async () => {
          const { status, log } = await p.stop("SIGTERM");
          if (!status.success) throw new Error(`agent ${config.host} failed:\n${log}`);
        },
      };
    },
    close: () => Deno.remove(dir, { recursive: true }),
  };
}

/** The lease TTL of every host, real or simulated: the agent's default. */
const TTL = 30;
/** Operations per transaction: etcd's default --max-txn-ops. */
const MAX_OPS = 128;
/** How long a join may take before the run is abandoned, ms. */
const PATIENCE = 30_000;
/** How many real agents follow the fleet. */
const REAL = 3;

/**
 * When each etcd revision was reached by someone (an agent applying it, a
 * watcher receiving it): the first time at or past a revision, in ms since
 * the epoch.
 */
class RevisionClock {
  #seen: { revision: number; at: number }[] = [];
  #waiters: { revision: number; resolve: (at: number) => void }[] = [];
  /** How many times it advanced. */
  count = 0;

  /** Records that `revision` was reached at `at`. */
  reached(revision: number, at: number): void {
    this.count++;
    this.#seen.push({ revision, at });
    // Only the recent past is ever asked about.
    if (this.#seen.length > 64) this.#seen.shift();
    this.#waiters = this.#waiters.filter((w) => {
      if (revision < w.revision) return true;
      w.resolve(at);
      return false;
    });
  }

  /** When `revision` was first reached, waiting for it at most `ms`; `who` names the waiter. */
  at(revision: number, who: string, ms = PATIENCE): Promise<number> {
    const hit = this.#seen.find((s) => s.revision >= revision);
    if (hit) return Promise.resolve(hit.at);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${who} did not reach revision ${revision} in ${ms} ms`)),
        ms,
      );
      this.#waiters.push({
        revision,
        resolve: (at) => {
          clearTimeout(timer);
          resolve(at);
        },
      });
    });
  }
}

/** A real agent: its process and the revisions it applied, read from its log. */
class RealAgent {
  readonly applied = new RevisionClock();
  readonly running: RunningAgent;
  /** What its last state held, as it logged it ("6003 flows, 1 groups, …"). */
  last = "";
  /** How long deriving each applied state took, ms. */
  readonly deriveMs: number[] = [];
  /** How long each apply took (the applier alone), ms. */
  readonly applyMs: number[] = [];
  #tail: string[] = [];

  /** Starts agent `n` (1-based) for `config`. */
  constructor(hosts: AgentHosts, readonly config: AgentConfig, readonly n: number) {
    this.running = hosts.start(config, (line) => {
      this.#tail.push(line);
      if (this.#tail.length > 20) this.#tail.shift();
      // `warren agent --verbose`: "<ISO time> agent h1: applied revision R: ...".
      const m =
        /^(\S+) agent \S+: applied revision (\d+): (.*); derived in (\S+) ms, applied in (\S+) ms$/
          .exec(line);
      if (!m) return;
      this.last = m[3];
      this.deriveMs.push(Number(m[4]));
      this.applyMs.push(Number(m[5]));
      this.applied.reached(Number(m[2]), Date.parse(m[1]));
    });
  }

  /** When the agent applied `revision`. */
  async at(revision: number): Promise<number> {
    try {
      return await this.applied.at(revision, `agent ${this.config.host}`);
    } catch (err) {
      throw new Error(`${(err as Error).message}; its last lines:\n${this.#tail.join("\n")}`);
    }
  }

  /** Its resident memory now and at its peak, MiB. */
  memory(): { rss: number; peak: number } {
    const status = Deno.readTextFileSync(`/proc/${this.running.pid}/status`);
    const kib = (field: string) => Number(new RegExp(`${field}:\\s*(\\d+)`).exec(status)?.[1]);
    return { rss: kib("VmRSS") / 1024, peak: kib("VmHWM") / 1024 };
  }

  /** Starts its peak resident memory afresh from what it holds now. */
  resetPeak(): void {
    Deno.writeTextFileSync(`/proc/${this.running.pid}/clear_refs`, "5");
  }
}

/**
 * The simulated hosts' leases, kept alive over `streams` keep-alive
 * streams, each lease renewed every third of the TTL, the renewals spread
 * evenly over that time as independent hosts' would be.
 */
class KeepAlives {
  #leases: string[] = [];
  #clients: EtcdClient[];
  #streams: Awaited<ReturnType<EtcdClient["raw"]["leaseClient"]["leaseKeepAlive"]>>[] = [];
  #timer?: ReturnType<typeof setInterval>;
  #tick = 0;
  #closed = false;
  /** Leases etcd said were gone: a broken run. */
  lost = 0;

  private constructor(clients: EtcdClient[]) {
    this.#clients = clients;
  }

  /** Opens the streams and starts renewing. */
  static async start(clients: EtcdClient[]): Promise<KeepAlives> {
    const k = new KeepAlives(clients);
    for (const c of clients) {
      const s = await c.raw.leaseClient.leaseKeepAlive();
      s.on("data", (res) => {
        if (Number(res.TTL) <= 0) k.lost++;
      });
      s.on("error", () => {
        if (!k.#closed) k.lost++;
      });
      k.#streams.push(s);
    }
    const slotMs = 100;
    const slots = (TTL * 1000) / 3 / slotMs;
    k.#timer = setInterval(() => {
      const slot = k.#tick++ % slots;
      for (let i = slot; i < k.#leases.length; i += slots) {
        k.#streams[i % k.#streams.length].write({ ID: k.#leases[i] });
      }
    }, slotMs);
    return k;
  }

  /** Keeps `lease` alive from now on. */
  add(lease: string): void {
    this.#leases.push(lease);
  }

  /** Stops renewing (the leases live out their TTL). */
  close(): void {
    clearInterval(this.#timer);
    this.#closed = true;
    // Cancelling reports CANCELLED on each stream: no longer a lost lease.
    for (const s of this.#streams) s.cancel();
    for (const c of this.#clients) c.close();
  }
}

/** A watch of the whole fleet on its own connection, as an agent's mirror keeps one. */
class Watcher {
  readonly events = new RevisionClock();
  #client: EtcdClient;
  #stream: WatchStream;
  #timer: ReturnType<typeof setInterval>;
  #created = Promise.withResolvers<void>();

  private constructor(client: EtcdClient, stream: WatchStream) {
    this.#client = client;
    this.#stream = stream;
    this.#timer = setInterval(() => stream.write({ progress_request: {} }), 2000);
    stream.on("data", (res) => {
      const at = Date.now();
      if (res.created) return this.#created.resolve();
      const revs = res.events.map((e) => Number(e.kv.mod_revision));
      if (revs.length) this.events.reached(Math.max(...revs), at);
    });
    stream.on("error", (err: Error) => this.#created.reject(err));
  }

  /** Watches from the next revision on. */
  static async start(opts: EtcdOptions): Promise<Watcher> {
    const client = await EtcdClient.connect(opts);
    const w = new Watcher(client, await client.watchStream());
    w.#stream.write({
      create_request: { key: bytes(PREFIX), range_end: bytes(prefixEnd(PREFIX)) },
    });
    await w.#created.promise;
    return w;
  }

  /** Ends the watch and its connection. */
  close(): void {
    clearInterval(this.#timer);
    this.#stream.removeAllListeners();
    this.#stream.on("error", () => {});
    this.#stream.cancel();
    this.#client.close();
  }
}

/** Runs `fn` over `items`, `n` at a time. */
async function pool<T>(items: T[], n: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}

/** etcd's metrics, summed over their labels. */
async function metrics(etcd: TestEtcd): Promise<Map<string, number>> {
  const text = await (await fetch(`${etcd.url}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^([a-z_:]+)(?:\{[^}]*\})? (\S+)$/.exec(line);
    if (m) out.set(m[1], (out.get(m[1]) ?? 0) + Number(m[2]));
  }
  return out;
}

/** The hex byte `n`. */
const hex = (n: number) => (n & 255).toString(16).padStart(2, "0");

/** The MAC of simulated endpoint `k` (its own prefix, apart from the real agents' and joiners'). */
const simMac = (k: number, tag = 0x10) =>
  `02:${hex(tag)}:00:${hex(k >> 16)}:${hex(k >> 8)}:${hex(k)}`;

/** The IPv4 address of simulated endpoint `k`. */
const simIp = (k: number, first = 100) => `10.${first + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`;

/** Measures the fleet section; returns its figures. */
export async function fleetScale(o: FleetOptions): Promise<Figure[]> {
  const out: Figure[] = [];
  const full = o.hosts >= 1000;
  const agentHosts = o.agents ?? stateFileAgents();
  await using etcd = await TestEtcd.start();
  const opts = await etcd.clientOptions();
  const admin = await EtcdClient.connect(opts);
  const agents: RealAgent[] = [];
  const watchers: Watcher[] = [];
  let keepAlives: KeepAlives | undefined;
  try {
    const emptyEtcd = (await metrics(etcd)).get("process_resident_memory_bytes")! / 2 ** 20;
    const nets = Array.from({ length: o.networks }, (_, i) => `net${i}`);
    for (const name of nets) await addNetwork(admin, { name });

    // ---- The real agents, in an empty fleet ----------------------------------
    say(`fleet: ${REAL} agents following an empty fleet`);
    for (let n = 1; n <= REAL; n++) {
      const config = hostConfig(opts, n, [nets[0]], { leaseTtl: TTL, checkIntervalMs: 2000 });
      agents.push(new RealAgent(agentHosts, config, n));
    }
    // Each has all three once it applied the others' endpoints (its own changes nothing).
    const published = async () => {
      const { entries } = await admin.list(PREFIX, prefixEnd(PREFIX));
      return agents.map((a) =>
        entries.find((e) => e.key === endpointKey(nets[0], a.config.host, workloadMac(a.n)))
          ?.createRevision
      );
    };
    let revs = await published();
    for (
      const deadline = Date.now() + PATIENCE;
      revs.includes(undefined);
      revs = await published()
    ) {
      if (Date.now() > deadline) throw new Error(`agents never published their endpoints`);
      await new Promise((r) => setTimeout(r, 50));
    }
    await Promise.all(
      agents.map((a, i) => a.at(Math.max(...revs.filter((_, j) => j !== i) as number[]))),
    );
    await new Promise((r) => setTimeout(r, 1000));
    const emptyAgents = agents.map((a) => a.memory().rss);

    // ---- The simulated fleet ------------------------------------------------------
    const keys = o.hosts * (1 + o.endpointsPerHost);
    say(`fleet: ${o.hosts} simulated hosts, ${keys} keys`);
    const t0 = performance.now();
    const writers = await Promise.all([0, 1, 2, 3].map(() => EtcdClient.connect(opts)));
    keepAlives = await KeepAlives.start(writers);
    const leases: string[] = new Array(o.hosts);
    await pool([...leases.keys()], 32, async (i) => {
      leases[i] = await writers[i % writers.length].leaseGrant(TTL);
      keepAlives!.add(leases[i]);
    });
    const hostOps = (i: number): IRequestOp[] => {
      const name = `sim-${i}`;
      const lease = leases[i];
      const put = (key: string, value: string): IRequestOp => ({
        request_put: { key: bytes(key), value: bytes(value), lease },
      });
      const ops = [put(
        hostKey(name),
        hostValue({
          name,
          underlay: [`198.18.${i >> 8}.${i & 255}`],
          tunnels: [{ protocol: "vxlan", port: 4789 }],
        }),
      )];
      for (let j = 0; j < o.endpointsPerHost; j++) {
        const k = i * o.endpointsPerHost + j;
        ops.push(
          put(
            endpointKey(nets[k % nets.length], name, simMac(k)),
            endpointValue({ ips: [simIp(k)] }),
          ),
        );
      }
      return ops;
    };
    const perTxn = Math.max(1, Math.floor(MAX_OPS / (1 + o.endpointsPerHost)));
    const batches = Array.from(
      { length: Math.ceil(o.hosts / perTxn) },
      (_, b) =>
        Array.from({ length: Math.min(perTxn, o.hosts - b * perTxn) }, (_, i) => b * perTxn + i),
    );
    let populated = 0;
    await pool(batches, writers.length, async (hosts) => {
      const res = await writers[hosts[0] % writers.length].txn({ success: hosts.flatMap(hostOps) });
      populated = Math.max(populated, Number(res.header.revision));
    });
    const writeSeconds = (performance.now() - t0) / 1000;
    say(`fleet: registered in ${writeSeconds.toFixed(1)} s; waiting for the agents to apply it`);
    await Promise.all(agents.map((a) => a.at(populated)));
    const fleetKeys = (await admin.list(PREFIX, prefixEnd(PREFIX))).entries;
    // The registration's burst apart from what follows.
    const burstPeak = Math.max(...agents.map((a) => a.memory().peak));
    for (const a of agents) a.resetPeak();
    const appliesBefore = agents.map((a) => a.applyMs.length);

    say(`fleet: ${o.watchers} simulated hosts watching the fleet`);
    for (let i = 0; i < o.watchers; i++) watchers.push(await Watcher.start(opts));
    const baseline = await Watcher.start(opts);
    watchers.push(baseline);

    // ---- Joins and leaves -------------------------------------------------------------
    say(`fleet: ${o.joins} joins and leaves`);
    const join = {
      agents: [] as number[],
      etcd: [] as number[],
      each: agents.map(() => [] as number[]),
    };
    const leave = { agents: [] as number[], etcd: [] as number[] };
    const joiner = await EtcdClient.connect(opts);
    try {
      for (let j = 0; j < o.joins; j++) {
        const name = `join-${j}`;
        const lease = await joiner.leaseGrant(TTL);
        const put = (key: string, value: string): IRequestOp => ({
          request_put: { key: bytes(key), value: bytes(value), lease },
        });
        const start = Date.now();
        const res = await joiner.txn({
          success: [
            put(
              hostKey(name),
              hostValue({
                name,
                underlay: [`198.19.${j >> 8}.${j & 255}`],
                tunnels: [{ protocol: "vxlan", port: 4789 }],
              }),
            ),
            put(
              endpointKey(nets[0], name, simMac(j, 0x20)),
              endpointValue({ ips: [simIp(j, 200)] }),
            ),
          ],
        });
        const joined = Number(res.header.revision);
        const seen = await baseline.events.at(joined, "the baseline watcher");
        const applied = await Promise.all(agents.map((a) => a.at(joined)));
        join.etcd.push(seen - start);
        join.agents.push(Math.max(...applied) - start);
        applied.forEach((at, i) => join.each[i].push(at - start));

        const gone = Date.now();
        const rev = await joiner.raw.leaseClient.leaseRevoke({ ID: lease });
        const left = Number(rev.header.revision);
        const unseen = await baseline.events.at(left, "the baseline watcher");
        const withdrawn = await Promise.all(agents.map((a) => a.at(left)));
        leave.etcd.push(unseen - gone);
        leave.agents.push(Math.max(...withdrawn) - gone);
        // Hosts join now and then, not back to back.
        await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
      }
    } finally {
      joiner.close();
    }
    const since = (xs: (a: RealAgent) => number[]) =>
      agents.flatMap((a, i) => xs(a).slice(appliesBefore[i]));
    const deriving = since((a) => a.deriveMs);
    const writing = since((a) => a.applyMs);
    for (const q of [50, 99]) {
      const target = q === 50 ? 250 : 1000;
      out.push(figure({
        name:
          `fleet: a join applied by all ${REAL} agents, p${q} (${o.hosts} hosts, ${fleetKeys.length} keys, ${o.watchers} watchers)`,
        value: percentile(join.agents, q),
        unit: "ms",
        baseline: `etcd's write to watch event, p${q}`,
        baseline_value: percentile(join.etcd, q),
        runs: o.joins,
        better: "lower",
        target: full ? `p${q} ≤ ${target === 1000 ? "1 s" : `${target} ms`} (absolute)` : undefined,
        check: full ? (_r, v) => v <= target : undefined,
        note: q === 50
          ? `each agent's p50: ${
            join.each.map((xs, i) => `h${i + 1} ${percentile(xs, 50).toFixed(0)} ms`).join(", ")
          }, of which deriving ${
            percentile(deriving, 50).toFixed(0)
          } ms and writing the state file ${
            percentile(writing, 50).toFixed(0)
          } ms (p50 over every apply); a join is one transaction (host key and endpoint under a fresh lease), applied once every agent has logged a state of its revision`
          : undefined,
      }));
    }
    out.push(figure({
      name: `fleet: a graceful leave withdrawn by all ${REAL} agents, p50`,
      value: percentile(leave.agents, 50),
      unit: "ms",
      baseline: "etcd's lease revoke to watch event, p50",
      baseline_value: percentile(leave.etcd, 50),
      runs: o.joins,
      better: "lower",
      note: `p99 ${percentile(leave.agents, 99).toFixed(0)} ms against etcd's ${
        percentile(leave.etcd, 99).toFixed(0)
      } ms`,
    }));

    // ---- Steady state ------------------------------------------------------------------
    say(`fleet: ${o.idleSeconds} s idle`);
    await new Promise((r) => setTimeout(r, 2000));
    const before = await metrics(etcd);
    const rev0 = (await admin.header(PREFIX)).revision;
    const applies0 = agents.map((a) => a.applied.count);
    const events0 = watchers.map((w) => w.events.count);
    await new Promise((r) => setTimeout(r, o.idleSeconds * 1000));
    const after = await metrics(etcd);
    const rev1 = (await admin.header(PREFIX)).revision;
    const delta = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
    const hosts = o.hosts + REAL;
    const writes = delta("etcd_mvcc_put_total") + delta("etcd_mvcc_delete_total");
    out.push(figure({
      name: `fleet: etcd key writes per host in steady state (${o.idleSeconds} s idle)`,
      value: writes / hosts,
      unit: "writes/host",
      baseline: "lease renewals per host in the same window",
      baseline_value: delta("etcd_debugging_lease_renewed_total") / hosts,
      runs: 1,
      better: "lower",
      target: "none beyond lease keep-alives (absolute)",
      check: (_r, v) => v === 0 && rev1 === rev0,
      note: `revision ${rev0} → ${rev1}; raft proposals ${
        delta("etcd_server_proposals_committed_total")
      }; agent applies ${
        agents.map((a, i) => a.applied.count - applies0[i]).join("/")
      }; watch events ${watchers.reduce((s, w, i) => s + w.events.count - events0[i], 0)}`,
    }));

    // ---- Relist --------------------------------------------------------------------------
    say(`fleet: relisting ${fleetKeys.length} keys, ${o.relistRuns} runs`);
    const relist = await sideBySide(
      o.relistRuns,
      async () => {
        const t = performance.now();
        const state = new FleetState(new OnceLog(() => {}));
        const mirror = new Mirror({
          prefix: PREFIX,
          connect: () => EtcdClient.connect(opts),
          onChange: (changes) => state.apply(changes),
          log: () => {},
        });
        mirror.start();
        await mirror.synced;
        const view = state.view();
        const ms = performance.now() - t;
        await mirror.close();
        if (mirror.entries.size !== fleetKeys.length || view.hosts.size !== hosts) {
          throw new Error(
            `the mirror listed ${mirror.entries.size} keys, ${view.hosts.size} hosts`,
          );
        }
        return ms / 1000;
      },
      async () => {
        const t = performance.now();
        const c = await EtcdClient.connect(opts);
        const { entries } = await c.list(PREFIX, prefixEnd(PREFIX));
        const ms = performance.now() - t;
        c.close();
        if (entries.length !== fleetKeys.length) throw new Error(`listed ${entries.length} keys`);
        return ms / 1000;
      },
    );
    out.push(figure({
      name: `fleet: a full relist of ${fleetKeys.length} keys (mirror list, validation, view)`,
      value: relist.value,
      unit: "s",
      baseline: "a bare paged range read of the same keys",
      baseline_value: relist.base,
      runs: o.relistRuns,
      better: "lower",
      target: fleetKeys.length >= 25_000 ? "≤ 3 s (absolute)" : undefined,
      check: fleetKeys.length >= 25_000 ? (_r, v) => v <= 3 : undefined,
    }));

    // ---- Memory -----------------------------------------------------------------------
    const mem = agents.map((a) => a.memory());
    const steadyPeak = Math.max(...mem.map((m) => m.peak));
    out.push(figure({
      name: `fleet: agent peak resident memory (VmHWM, the largest of ${REAL})`,
      value: Math.max(burstPeak, steadyPeak),
      unit: "MiB",
      baseline: "an agent following an empty fleet (VmRSS)",
      baseline_value: Math.max(...emptyAgents),
      runs: REAL,
      better: "lower",
      target: full ? "≤ 150 MB (absolute)" : undefined,
      check: full ? (_r, v) => v * 1.048576 <= 150 : undefined,
      note: `V8 flags ${unitV8Flags()}, as the systemd unit sets them; ${
        burstPeak.toFixed(0)
      } MiB while the fleet registered (${keys} keys in ${writeSeconds.toFixed(0)} s), ${
        steadyPeak.toFixed(0)
      } MiB over the joins and the idle window after it; resident now ${
        mem.map((m) => m.rss.toFixed(0)).join("/")
      } MiB; each agent's state: ${agents[0].last}`,
    }));
    const final = await metrics(etcd);
    out.push(figure({
      name: `fleet: etcd resident memory (${fleetKeys.length} keys, ${o.hosts + REAL} leases)`,
      value: final.get("process_resident_memory_bytes")! / 2 ** 20,
      unit: "MiB",
      baseline: "etcd with an empty store",
      baseline_value: emptyEtcd,
      runs: 1,
      better: "lower",
    }));
    const status = JSON.parse(await etcd.ctl("endpoint", "status", "-w", "json"))[0].Status;
    const live = fleetKeys.reduce((s, e) => s + e.key.length + e.value.length, 0);
    out.push(figure({
      name: "fleet: etcd database size",
      value: status.dbSize / 2 ** 20,
      unit: "MiB",
      baseline: "the live keys and values",
      baseline_value: live / 2 ** 20,
      runs: 1,
      better: "lower",
      note: `${
        (status.dbSizeInUse / 2 ** 20).toFixed(1)
      } MiB in use; revision ${status.header.revision}, never compacted: every join and leave is history`,
    }));
    if (keepAlives.lost) throw new Error(`${keepAlives.lost} simulated leases were lost`);
    return out;
  } finally {
    keepAlives?.close();
    for (const w of watchers) w.close();
    for (const a of agents) await a.running.stop().catch((err) => say(String(err)));
    admin.close();
    await agentHosts.close();
  }
}
