/**
 * `warren agent`: one per host, a long-lived process that keeps the host's
 * datapath in step with the fleet described in etcd.
 *
 * The main loop:
 *
 * 1. **Mirror** every fleet key: list, then watch (`mirror.ts`).
 * 2. **Derive** the host's wanted datapath state from the validated view
 *    and its own configuration (`derive.ts`): once in full, then, change
 *    by change, only what each change touches; and
 * 3. **Apply** what changed through the {@link Applier} (`applier.ts`): the
 *    difference since the last apply that succeeded, or the whole state
 *    for the first apply and after a failed one. Nothing is applied before
 *    the first full list: a half-known world would withdraw flows that are
 *    still right (OVN's rule).
 * 4. **Register** the host under one lease once the first state is
 *    applied: the other hosts send to a host as soon as they hear of it,
 *    so it announces itself only when its datapath takes the traffic. A
 *    restarted agent whose host key is still there adopts its lease before
 *    applying instead, so the fleet notices nothing.
 * 5. **Publish** the host's endpoints, writing only what etcd does not
 *    already hold (`publisher.ts`).
 *
 * Changes are batched without being held back: a change after a quiet
 * spell is derived at once (in the next turn of the event loop, so the
 * rest of its watch response comes with it), while in a burst the
 * derivations start at most once per `settleMs` and whatever arrives
 * meanwhile, or while an apply is under way, goes into the next one.
 *
 * While etcd is away the agent keeps its last state: nothing is withdrawn
 * because of an outage. SIGTERM or SIGINT make it leave gracefully (the
 * lease is revoked, so the fleet withdraws the host at once) unless it was
 * told to stay, in which case its keys live out their TTL and an agent
 * started again within it takes them over unchanged.
 *
 * Failpoints (`WARREN_FAILPOINTS`): `fleet.agent.derived` (a state was
 * computed, not yet applied), `fleet.publish.registered` (the host key is
 * written, no endpoint yet) and `fleet.publish.batch` (after each endpoint
 * transaction). Each step is idempotent, so an agent killed at any of them
 * and started again reaches exactly the wanted state.
 *
 * @module
 */

import type { Applier, FleetUpdate } from "./applier.ts";
import { Backoff, type BackoffOptions } from "./backoff.ts";
import { EtcdClient } from "./client.ts";
import type { AgentConfig } from "./config.ts";
import {
  Deriver,
  type FleetDatapathState,
  type FleetDelta,
  type FleetSize,
  type LocalPort,
  type SelfConfig,
} from "./derive.ts";
import { parseKey, PREFIX } from "./keys.ts";
import { type LogSink, OnceLog, stderrSink, Throttle } from "./log.ts";
import { type Change, Mirror } from "./mirror.ts";
import { Publisher } from "./publisher.ts";
import { Registration } from "./registration.ts";
import { FleetState, ViewChange } from "./view.ts";
import { failpoint } from "../tunnel/failpoint.ts";

/** Options of {@link Agent}. */
export interface AgentOptions {
  /** The configuration. */
  config: AgentConfig;
  /** Where derived states go. */
  applier: Applier;
  /** Where log lines go (default stderr). */
  log?: LogSink;
  /** Retry pacing for every etcd call (default 50 ms to 1 s, full jitter). */
  backoff?: BackoffOptions;
  /**
   * The least time between the starts of two derivations in a burst of
   * changes, ms (default 5); a change after a quiet spell is not delayed.
   */
  settleMs?: number;
  /** Called after each state is applied (`warren agent --verbose` logs it). */
  onApplied?: (applied: Applied) => void;
}

/** One state applied, as {@link AgentOptions.onApplied} reports it. */
export interface Applied {
  /**
   * The etcd revision the state reflects: every change up to it is in the
   * state, so a watcher of etcd can tell when a change it made is applied.
   */
  revision: number;
  /** How much the state holds. */
  size: FleetSize;
  /** What changed, or undefined when the whole state was applied. */
  delta?: FleetDelta;
  /** The whole state; valid only during the call that reports it. */
  state(): FleetDatapathState;
  /** How long deriving it took (the derivation and its difference), ms. */
  deriveMs: number;
  /** How long the applier took, ms. */
  applyMs: number;
}

/** A log line for an applied state: what `warren agent --verbose` writes. */
export function appliedLine(host: string, a: Applied): string {
  const s = a.size;
  const what = a.delta
    ? `${Object.values(a.delta).reduce((n, d) => n + d.added.length + d.removed.length, 0)} changes`
    : "the whole state";
  return `agent ${host}: applied revision ${a.revision}: ${s.flows} flows, ` +
    `${s.groups} groups, ${s.neighbours} neighbours (${what}); derived in ` +
    `${a.deriveMs.toFixed(1)} ms, applied in ${a.applyMs.toFixed(1)} ms`;
}

/** Whether a difference changes nothing. */
function unchanged(d: FleetDelta): boolean {
  return Object.values(d).every((x) => !x.added.length && !x.removed.length);
}

/** Agent follows the fleet and applies this host's part of it. */
export class Agent {
  /** The mirror of the fleet's keys. */
  readonly mirror: Mirror;
  /** The host's registration. */
  readonly registration: Registration;
  /** The endpoint writer. */
  readonly publisher: Publisher;
  /** The validated fleet. */
  readonly fleet: FleetState;
  /** How many times a state was applied. */
  applies = 0;
  #opts: AgentOptions;
  #client: EtcdClient;
  #self: SelfConfig;
  #log: LogSink;
  #problems: OnceLog;
  #applyThrottle: Throttle;
  /** The first list is in: derivations may run. */
  #ready = false;
  /** Registered: the publisher may write. */
  #publishing = false;
  #deriver: Deriver;
  /** What changed in the view since the last derivation. */
  #pending = new ViewChange();
  /** Derive everything: the first time, and after this host's configuration changed. */
  #rebuild = true;
  /** Apply the whole state: the first time, and after an apply failed. */
  #full = true;
  #timer?: ReturnType<typeof setTimeout>;
  #applying?: Promise<void>;
  #again = false;
  /** When the last derivation started (performance.now()). */
  #lastDerive = -Infinity;
  #applyBackoff: Backoff;
  #stopped = false;
  #stoppedSignal = Promise.withResolvers<void>();

  private constructor(options: AgentOptions, client: EtcdClient) {
    const { config } = options;
    this.#opts = options;
    this.#client = client;
    this.#log = options.log ?? stderrSink;
    this.#problems = new OnceLog(this.#log);
    this.#applyThrottle = new Throttle(this.#log, "applying the fleet's state");
    this.#applyBackoff = new Backoff(options.backoff);
    this.#self = {
      host: config.host,
      underlay: config.underlay.addresses,
      tunnels: config.tunnels,
      ports: config.ports,
    };
    this.fleet = new FleetState(this.#problems);
    this.#deriver = new Deriver(this.#self, (p) => this.#problems.once(p, p));
    this.registration = new Registration({
      client,
      record: { name: config.host, underlay: config.underlay.addresses, tunnels: config.tunnels },
      ttl: config.leaseTtl,
      backoff: options.backoff,
      log: this.#log,
      onNewLease: () => {
        this.publisher.forgetLease();
        if (this.#publishing) void this.publisher.flush();
      },
    });
    this.publisher = new Publisher({
      client,
      registration: this.registration,
      backoff: options.backoff,
      log: this.#log,
    });
    this.mirror = new Mirror({
      prefix: PREFIX,
      connect: () => EtcdClient.connect(config.etcd),
      onChange: (changes) => this.#changed(changes),
      checkIntervalMs: config.checkIntervalMs,
      backoff: options.backoff,
      log: this.#log,
    });
  }

  /** Makes an agent (connecting lazily); `run` starts it. */
  static async create(options: AgentOptions): Promise<Agent> {
    return new Agent(options, await EtcdClient.connect(options.config.etcd));
  }

  /** Creates and runs an agent; resolves once its first state is applied. */
  static async start(options: AgentOptions): Promise<Agent> {
    const agent = await Agent.create(options);
    await agent.run();
    return agent;
  }

  /**
   * Mirrors, applies the first state, then registers and publishes;
   * resolves once registered, or when `stop` interrupts it.
   */
  async run(): Promise<void> {
    this.mirror.start();
    await Promise.race([this.mirror.synced, this.#stoppedSignal.promise]);
    if (this.#stopped) return;
    // A restart finds its host key under a live lease: adopted at once, so
    // that the lease cannot run out while the first state is applied.
    const restarted = this.mirror.entries.has(this.registration.key);
    if (restarted) await this.registration.start();
    this.#ready = true;
    await this.#derive();
    if (this.#stopped) return;
    if (!restarted) await this.registration.start();
    const own = [...this.mirror.entries.values()].filter((e) => this.#ownEndpoint(e.key));
    this.publisher.adopt(own);
    this.publisher.set(this.#self.ports);
    this.#publishing = true;
    void this.publisher.flush();
  }

  /**
   * Replaces this host's workload ports (a workload came, went or moved):
   * the endpoints are published and the state derived again.
   */
  updatePorts(ports: LocalPort[]): void {
    this.#self = { ...this.#self, ports };
    this.#rebuild = true;
    this.publisher.set(ports);
    if (this.#publishing) void this.publisher.flush();
    this.#schedule();
  }

  #ownEndpoint(key: string): boolean {
    const k = parseKey(key);
    return k?.kind === "endpoint" && k.host === this.#self.host;
  }

  #changed(changes: Change[]): void {
    this.fleet.apply(changes, this.#pending);
    let ownChanged = false;
    for (const c of changes) {
      if (c.key === this.registration.key && !c.next) this.registration.reassert();
      if (this.#publishing && this.#ownEndpoint(c.key)) {
        this.publisher.observe(c.key, c.next);
        ownChanged = true;
      }
    }
    if (ownChanged) void this.publisher.flush();
    this.#schedule();
  }

  /**
   * Derives soon: at once after a quiet spell, else `settleMs` after the
   * last derivation started; after a failed apply, `retryMs` from now.
   * While one runs, the next is folded into it.
   */
  #schedule(retryMs?: number): void {
    if (!this.#ready || this.#stopped || this.#timer !== undefined) return;
    if (this.#applying && retryMs === undefined) {
      this.#again = true;
      return;
    }
    const settle = this.#lastDerive + (this.#opts.settleMs ?? 5) - performance.now();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#derive();
    }, retryMs ?? Math.max(0, settle));
  }

  /** Derives and applies; one at a time, a request during one runs after it. */
  #derive(): Promise<void> {
    this.#again = true;
    this.#applying ??= this.#deriveLoop().finally(() => {
      this.#applying = undefined;
      // A change folded in after the loop's last look is not lost.
      if (this.#again) this.#schedule();
    });
    return this.#applying;
  }

  async #deriveLoop(): Promise<void> {
    while (this.#again && !this.#stopped) {
      this.#again = false;
      // The view reflects every change the mirror reported, up to here.
      const revision = this.mirror.revision;
      const deriving = this.#lastDerive = performance.now();
      const view = this.fleet.view();
      if (this.#rebuild) this.#deriver.rebuild(view, this.#self);
      else this.#deriver.update(view, this.#pending);
      this.#rebuild = false;
      this.#pending.clear();
      const delta = this.#deriver.delta();
      if (!this.#full && unchanged(delta)) continue;
      failpoint("fleet.agent.derived");
      const started = performance.now();
      const deriveMs = started - deriving;
      const state = () => this.#deriver.state();
      const update: FleetUpdate = { revision, delta: this.#full ? undefined : delta, state };
      try {
        await this.#opts.applier.apply(update);
      } catch (err) {
        this.#full = true;
        this.#applyThrottle.failed(err instanceof Error ? err.message : String(err));
        this.#schedule(this.#applyBackoff.next());
        return;
      }
      const applyMs = performance.now() - started;
      this.#deriver.commit();
      this.#full = false;
      this.applies++;
      this.#applyThrottle.recovered();
      this.#applyBackoff.reset();
      const size = this.#deriver.size();
      this.#opts.onApplied?.({ revision, size, delta: update.delta, state, deriveMs, applyMs });
    }
  }

  /**
   * Stops the agent. With `leave` (the default) the lease is revoked and
   * the fleet withdraws this host at once; without, its keys live out their
   * TTL. The datapath keeps its last state either way.
   */
  async stop(options: { leave?: boolean } = {}): Promise<void> {
    this.#stopped = true;
    this.#stoppedSignal.resolve();
    clearTimeout(this.#timer);
    await this.mirror.close();
    await this.publisher.close();
    await this.#applying;
    if (options.leave ?? true) await this.registration.leave();
    else await this.registration.close();
    this.#client.close();
  }
}

/** Options of {@link runAgent}. */
export interface RunAgentOptions extends AgentOptions {
  /** On SIGTERM or SIGINT keep the registration (it lives out its TTL). */
  stay?: boolean;
  /**
   * Reads this host's workload ports again, on SIGHUP (the configuration
   * file edited: a workload came, went or moved). A failure keeps the
   * ports as they were.
   */
  reload?: () => Promise<LocalPort[]>;
}

/**
 * Runs an agent until SIGTERM or SIGINT, then stops it (leaving the fleet
 * unless `stay`); SIGHUP reloads its ports. For the `warren agent` command.
 */
export async function runAgent(options: RunAgentOptions): Promise<void> {
  const log = options.log ?? stderrSink;
  const host = options.config.host;
  const stop = Promise.withResolvers<Deno.Signal>();
  let agent: Agent | undefined;
  const reload = () => {
    options.reload?.().then((ports) => {
      agent?.updatePorts(ports);
      log(`agent ${host}: SIGHUP, configuration read again: ${ports.length} port(s)`);
    }, (err) => {
      log(`agent ${host}: SIGHUP, keeping the ports as they were: ${errorText(err)}`);
    });
  };
  const handlers: [Deno.Signal, () => void][] = [
    ["SIGTERM", () => stop.resolve("SIGTERM")],
    ["SIGINT", () => stop.resolve("SIGINT")],
    ["SIGHUP", reload],
  ];
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  try {
    agent = await Agent.create(options);
    const running = agent.run().then(() => {
      log(`agent ${host}: following the fleet (lease ${agent!.registration.lease})`);
    }, (err) => stop.reject(err));
    let signal: Deno.Signal;
    try {
      signal = await stop.promise;
    } catch (err) {
      await agent.stop({ leave: false });
      throw err;
    }
    log(`agent ${host}: ${signal}, ${options.stay ? "stopping" : "leaving the fleet"}`);
    await agent.stop({ leave: !options.stay });
    await running;
  } finally {
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
