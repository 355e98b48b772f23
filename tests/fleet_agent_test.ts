/**
 * Agents against a real etcd, with no datapath: each applies through a
 * recording fake, or (as a `warren agent` process) writes its state to a
 * file. Joins, leaves, kills, restarts, moves, duplicates, hostile values,
 * steady-state writes and failpoints.
 */

import { assert, assertEquals } from "./helpers/assert.ts";
import { TestEtcd } from "../src/lab/etcd.ts";
import {
  AgentProcess,
  hostConfig,
  LineLog,
  RecordingApplier,
  TEST_BACKOFF,
  waitFor,
  workloadMac,
} from "./helpers/fleet.ts";
import { Agent, type AgentOptions, type Applied } from "../src/fleet/agent.ts";
import { addNetwork, readFleet } from "../src/fleet/admin.ts";
import { EtcdClient } from "../src/fleet/client.ts";
import type { AgentConfig } from "../src/fleet/config.ts";
import { derive, type FleetDatapathState } from "../src/fleet/derive.ts";
import { type FleetUpdate, StateFileApplier } from "../src/fleet/applier.ts";
import { endpointKey, hostKey, networkKey, PREFIX, prefixEnd } from "../src/fleet/keys.ts";

/** Whether `state` sends or delivers to MAC `mac`. */
const reaches = (state: FleetDatapathState | undefined, mac: string) =>
  state?.flows.some((f) => f.includes(`dl_dst=${mac} `)) ?? false;

/** Whether `state` tunnels MAC `mac` to host `n`. */
const sendsTo = (state: FleetDatapathState | undefined, mac: string, n: number) =>
  state?.flows.some((f) => f.includes(`dl_dst=${mac} `) && f.includes(`dst=192.0.2.${n})`)) ??
    false;

/** A fleet in a fresh etcd with network blue; agents started with `start` are stopped by `close`. */
async function fleet(nets = ["blue"]) {
  const etcd = await TestEtcd.start();
  const opts = await etcd.clientOptions();
  const admin = await EtcdClient.connect(opts);
  for (const name of nets) await addNetwork(admin, { name });
  const agents: Agent[] = [];
  const appliers: RecordingApplier[] = [];
  const log = new LineLog();
  const dir = await Deno.makeTempDir({ prefix: "warren-fleet-" });
  return {
    etcd,
    opts,
    admin,
    log,
    dir,
    async start(
      config: AgentConfig,
      { applier = new RecordingApplier(), ...options }:
        & Partial<Omit<AgentOptions, "applier">>
        & { applier?: RecordingApplier } = {},
    ) {
      const agent = await Agent.start({
        config,
        applier,
        log: log.sink,
        backoff: TEST_BACKOFF,
        ...options,
      });
      agents.push(agent);
      appliers.push(applier);
      return { agent, applier };
    },
    async close() {
      for (const a of agents) await a.stop().catch(() => {});
      admin.close();
      await etcd.close();
      await Deno.remove(dir, { recursive: true });
      // Every difference an agent handed on, applied, gave the state it wanted.
      assertEquals(appliers.flatMap((a) => a.mismatches), []);
    },
  };
}

/** The time of the first call of `applier` after `t0` whose state satisfies `ok`. */
function firstAt(applier: RecordingApplier, t0: number, ok: (s: FleetDatapathState) => boolean) {
  return applier.calls.find((c) => c.at >= t0 && ok(c.state))?.at;
}

Deno.test("a joining host is applied by every other host within 1 s; a graceful leave is withdrawn within 1 s", async () => {
  const f = await fleet();
  try {
    const a = await f.start(hostConfig(f.opts, 1));
    const b = await f.start(hostConfig(f.opts, 2));
    const m3 = workloadMac(3);
    const t0 = performance.now();
    const c = await f.start(hostConfig(f.opts, 3));
    await waitFor(
      "h1 and h2 to reach h3",
      () => sendsTo(a.applier.last, m3, 3) && sendsTo(b.applier.last, m3, 3),
    );
    for (const { applier } of [a, b]) {
      const ms = firstAt(applier, t0, (s) => sendsTo(s, m3, 3))! - t0;
      assert(ms < 1000, `join applied after ${ms} ms`);
    }
    // h3 reaches both, and floods to both: its own first apply may land
    // after h1's and h2's (its start does not wait for it).
    await waitFor(
      "h3 to reach h1 and h2 and flood to both",
      () =>
        sendsTo(c.applier.last, workloadMac(1), 1) && sendsTo(c.applier.last, workloadMac(2), 2) &&
        !!c.applier.last?.groups[0]?.includes("192.0.2.1") &&
        !!c.applier.last?.groups[0]?.includes("192.0.2.2"),
    );

    const t1 = performance.now();
    await c.agent.stop();
    await waitFor(
      "h3 withdrawn",
      () => !reaches(a.applier.last, m3) && !reaches(b.applier.last, m3),
    );
    for (const { applier } of [a, b]) {
      const ms = firstAt(applier, t1, (s) => !reaches(s, m3))! - t1;
      assert(ms < 1000, `leave applied after ${ms} ms`);
      assert(!applier.last!.groups[0].includes("192.0.2.3"), "h3 left the flooding group");
    }
    const { entries } = await f.admin.list(PREFIX, prefixEnd(PREFIX));
    assert(!entries.some((e) => e.key.includes("/h3")), "the lease took all of h3's keys");
  } finally {
    await f.close();
  }
});

Deno.test("each applied state names the etcd revision it reflects (onApplied, warren agent --verbose)", async () => {
  const f = await fleet();
  try {
    const reported: { revision: number; state: FleetDatapathState }[] = [];
    await f.start(hostConfig(f.opts, 1), {
      onApplied: (a: Applied) => reported.push({ revision: a.revision, state: a.state() }),
    });
    const lines: string[] = [];
    const p = new AgentProcess(f.dir, hostConfig(f.opts, 2), {
      verbose: true,
      onLine: (l) => lines.push(l),
    });
    try {
      const applied = () =>
        lines.flatMap((l) => /agent h2: applied revision (\d+): \d+ flows/.exec(l)?.[1] ?? [])
          .map(Number);
      await waitFor("h2's first state", () => applied().length > 0, 15_000);
      const m3 = workloadMac(3);
      await f.start(hostConfig(f.opts, 3));
      // The agent's start registers the host; its endpoints are published just after.
      let joined = 0;
      await waitFor("h3's endpoint in etcd", async () => {
        const { entries } = await f.admin.list(PREFIX, prefixEnd(PREFIX));
        joined = entries.find((e) => e.key === endpointKey("blue", "h3", m3))?.createRevision ?? 0;
        return joined > 0;
      });
      await waitFor(
        "h1 to report h3's endpoint applied",
        () => reported.some((a) => a.revision >= joined),
      );
      // A state reflects exactly the revisions it names: h3 is in it from its endpoint on.
      for (const a of reported) {
        assertEquals(reaches(a.state, m3), a.revision >= joined, `revision ${a.revision}`);
      }
      await waitFor("h2 to log h3's endpoint applied", () => applied().some((r) => r >= joined));
      assert(sendsTo(p.state(), m3, 3), "the state h2 wrote has h3");
    } finally {
      await p.stop("SIGKILL");
    }
  } finally {
    await f.close();
  }
});

Deno.test("a host killed without leaving is withdrawn within its TTL plus 1.5 s, not before", async () => {
  const f = await fleet();
  try {
    const a = await f.start(hostConfig(f.opts, 1));
    const ttl = 2;
    const p = new AgentProcess(f.dir, hostConfig(f.opts, 2, ["blue"], { leaseTtl: ttl }));
    try {
      await waitFor("h1 to reach h2", () => sendsTo(a.applier.last, workloadMac(2), 2), 15_000);
    } finally {
      await p.stop("SIGKILL");
    }
    const t0 = performance.now();
    await waitFor("h2 withdrawn", () => !reaches(a.applier.last, workloadMac(2)), 10_000);
    const ms = firstAt(a.applier, t0, (s) => !reaches(s, workloadMac(2)))! - t0;
    // Renewed every TTL/3, so at least 2/3 of the TTL was left at the kill.
    assert(ms > 1000 && ms < ttl * 1000 + 1500, `withdrawn ${ms} ms after the kill`);
    assert(!(await f.admin.raw.get(hostKey("h2")).exists()), "the host key expired");
  } finally {
    await f.close();
  }
});

Deno.test("a restarted agent adopts its live lease: no key vanishes or is rewritten, no host withdraws it", async () => {
  const f = await fleet();
  try {
    const a = await f.start(hostConfig(f.opts, 1));
    // Renewed every TTL/3, the lease has 2/3 of its TTL left at the kill: time
    // for a new process to start and adopt it, even on a loaded machine.
    const ttl = 10;
    const config = hostConfig(f.opts, 2, ["blue"], { leaseTtl: ttl });
    let p = new AgentProcess(f.dir, config);
    try {
      await waitFor("h2's first state", () => p.state() !== undefined, 15_000);
      await waitFor("h1 to reach h2", () => sendsTo(a.applier.last, workloadMac(2), 2));
      const keysBefore = await f.admin.list(`${PREFIX}`, prefixEnd(PREFIX));
      const t0 = performance.now();
      await p.stop("SIGKILL");
      await Deno.remove(p.stateFile);
      p = new AgentProcess(f.dir, config);
      await waitFor("the restarted h2's first state", () => p.state() !== undefined, 15_000);
      // Live longer than the TTL: the new process keeps the adopted lease alive.
      await new Promise((r) => setTimeout(r, ttl * 1000 + 500));
      const keysAfter = await f.admin.list(`${PREFIX}`, prefixEnd(PREFIX));
      const own = (l: typeof keysBefore) =>
        l.entries.filter((e) => e.key.includes("/h2")).map((e) => [e.key, e.lease, e.modRevision]);
      assertEquals(own(keysAfter), own(keysBefore), "same keys, same lease, not rewritten");
      assert(own(keysBefore).length === 2, "a host key and an endpoint");
      assert(
        a.applier.calls.filter((c) => c.at >= t0).every((c) => sendsTo(c.state, workloadMac(2), 2)),
        "h1 never withdrew h2",
      );
      assertEquals(
        p.state(),
        derive(await readFleet(f.admin), { ...config, underlay: config.underlay.addresses }).state,
      );
    } finally {
      await p.stop("SIGKILL");
    }
  } finally {
    await f.close();
  }
});

Deno.test("steady state: agents write nothing to etcd beyond lease keep-alives", async () => {
  const f = await fleet(["blue", "red"]);
  try {
    const agents: { agent: Agent; applier: RecordingApplier }[] = [];
    for (let n = 1; n <= 3; n++) {
      agents.push(await f.start(hostConfig(f.opts, n, ["blue", "red"], { leaseTtl: 2 })));
    }
    await waitFor(
      "all agents to see each other",
      () =>
        agents.every(({ applier }) =>
          [1, 2, 3].every((n) => [0, 1].every((i) => reaches(applier.last, workloadMac(n, i))))
        ),
    );
    // Let the last echoes of the agents' own writes come back.
    await new Promise((r) => setTimeout(r, 500));
    const rev0 = (await f.admin.header(PREFIX)).revision;
    const writes0 = agents.map(({ agent }) => agent.publisher.writes);
    const applies0 = agents.map(({ applier }) => applier.calls.length);
    // Three TTLs: several keep-alives each, which do not change the revision.
    await new Promise((r) => setTimeout(r, 6000));
    assertEquals((await f.admin.header(PREFIX)).revision, rev0);
    assertEquals(agents.map(({ agent }) => agent.publisher.writes), writes0);
    assertEquals(agents.map(({ applier }) => applier.calls.length), applies0, "nor applies");
    // An idle watch answers its progress requests: never taken for silent, never relisted.
    for (const { agent } of agents) {
      assertEquals([agent.mirror.stats.silences, agent.mirror.stats.lists], [0, 1]);
    }
  } finally {
    await f.close();
  }
});

Deno.test("a MAC that moves is followed within 1 s; a duplicate claim is reported and resolved alike everywhere", async () => {
  const f = await fleet();
  try {
    // h1 keeps a second workload, so it stays in the network.
    const c1 = hostConfig(f.opts, 1, ["blue", "blue"]);
    const [h1, h2, h3] = [
      await f.start(c1),
      await f.start(hostConfig(f.opts, 2)),
      await f.start(hostConfig(f.opts, 3)),
    ];
    const [port1, stays] = c1.ports;
    const m = port1.mac;
    await waitFor("h3 to reach h1's workload", () => sendsTo(h3.applier.last, m, 1));
    // The workload moves from h1 to h2.
    const t0 = performance.now();
    h1.agent.updatePorts([stays]);
    h2.agent.updatePorts([...hostConfig(f.opts, 2).ports, { ...port1, name: "moved" }]);
    await waitFor("h3 to follow the move", () => sendsTo(h3.applier.last, m, 2));
    const ms = firstAt(h3.applier, t0, (s) => sendsTo(s, m, 2))! - t0;
    assert(ms < 1000, `move followed after ${ms} ms`);
    await waitFor("the old and new hosts to follow", () =>
      sendsTo(h1.applier.last, m, 2) &&
      (h2.applier.last?.flows.some((f) => f.includes(`dl_dst=${m} actions=output:moved`)) ??
        false));

    // h1 claims it again while h2 still does: the newest claim (h1's) wins everywhere.
    h1.agent.updatePorts([port1, stays]);
    await waitFor(
      "everyone to agree on h1",
      () =>
        sendsTo(h3.applier.last, m, 1) && sendsTo(h2.applier.last, m, 1) &&
        (h1.applier.last?.flows.some((f) =>
          f.includes(`dl_dst=${m} actions=output:${port1.name}`)
        ) ?? false),
    );
    await waitFor(
      "the duplicate to be reported",
      () =>
        f.log.matching(`mac ${m} is claimed more than once in network blue: h1 wins over h2`)
          .length > 0,
    );
    const claims = (await readFleet(f.admin)).claims.get("blue")!.get(m)!;
    assertEquals(claims.map((c) => c.host), ["h1", "h2"]);
  } finally {
    await f.close();
  }
});

Deno.test("a state file reads back as the state it was given, whatever its text", async () => {
  const dir = await Deno.makeTempDir({ prefix: "warren-state-file-" });
  try {
    const applier = new StateFileApplier(`${dir}/state.json`);
    const state: FleetDatapathState = {
      ports: [{ name: "wé", device: "veth0", net: 7, xdp: true }],
      tunnels: [],
      // Escapes, control characters, non-ASCII and a long item past the buffer's first size.
      flows: ['a "quoted" \\ flow', "tab\tand\nnewline", "ünï€ 😀", "x".repeat(200_000)],
      groups: ["group_id=7,type=all,bucket=output:wé"],
      neighbours: [],
    };
    for (const s of [state, { ...state, flows: [] }, state]) {
      await applier.apply({ revision: 1, state: () => s });
      assertEquals(JSON.parse(await Deno.readTextFile(`${dir}/state.json`)), s);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A recording applier that takes `ms` over each call, as a busy datapath would. */
class SlowApplier extends RecordingApplier {
  constructor(readonly ms: number) {
    super();
  }

  override async apply(update: FleetUpdate): Promise<void> {
    await new Promise((r) => setTimeout(r, this.ms));
    return super.apply(update);
  }
}

Deno.test("a burst of changes is applied in a few batches, not one apply per change", async () => {
  const f = await fleet();
  try {
    const applyMs = 300;
    const applier = new SlowApplier(applyMs);
    await f.start(hostConfig(f.opts, 1), { applier });
    // A host with no agent (which would withdraw endpoints its configuration lacks).
    const h9 = { underlay: ["192.0.2.9"], tunnels: [{ protocol: "vxlan" }] };
    await f.admin.raw.put(hostKey("h9")).value(JSON.stringify(h9));
    const n0 = applier.calls.length;
    // 30 workloads of h9's, each its own write, so each its own watch event.
    const macs = Array.from(
      { length: 30 },
      (_, i) => `02:00:00:00:99:${i.toString(16).padStart(2, "0")}`,
    );
    const started = performance.now();
    for (const m of macs) await f.admin.raw.put(endpointKey("blue", "h9", m)).value('{"ips":[]}');
    const writingMs = performance.now() - started;
    await waitFor(
      "h1 to reach every new workload",
      () => macs.every((m) => sendsTo(applier.last, m, 9)),
    );
    const applies = applier.calls.length - n0;
    // The first change is applied at once; the rest pile up behind the apply under way and go
    // together: one apply per applyMs of writing (slower under load), and a few for h9's key,
    // the first change and the last, never one per change.
    const most = Math.min(Math.ceil(writingMs / applyMs) + 4, macs.length - 1);
    assert(
      applies <= most,
      `${applies} applies for ${macs.length} changes written in ${Math.round(writingMs)} ms`,
    );
  } finally {
    await f.close();
  }
});

/** A recording applier whose next `failures` calls throw, having applied nothing. */
class FlakyApplier extends RecordingApplier {
  failures = 0;
  /** Every call, failed or not: whether it was a full resync. */
  readonly attempts: boolean[] = [];

  override apply(update: FleetUpdate): Promise<void> {
    this.attempts.push(!update.delta);
    if (this.failures <= 0) return super.apply(update);
    this.failures--;
    return Promise.reject(new Error("the datapath is busy"));
  }
}

Deno.test("the first apply and every apply after a failed one carry the whole state; the others only what changed", async () => {
  const f = await fleet();
  try {
    const applier = new FlakyApplier();
    await f.start(hostConfig(f.opts, 1), { applier });
    assertEquals(applier.attempts[0], true, "the first apply is a full one");
    const n0 = applier.attempts.length;
    applier.failures = 2;
    await f.start(hostConfig(f.opts, 2));
    await waitFor("h1 to reach h2", () => sendsTo(applier.last, workloadMac(2), 2));
    // A difference failed, then its full retry failed, then a full one took.
    assertEquals(applier.attempts.slice(n0, n0 + 3), [false, true, true]);
    assert(applier.calls.at(-1)!.full);
    assertEquals(f.log.matching("applying the fleet's state: the datapath is busy").length, 1);
    assertEquals(f.log.matching("applying the fleet's state: recovered after 2 failed").length, 1);
    // Healed: back to differences.
    await f.start(hostConfig(f.opts, 3));
    await waitFor("h1 to reach h3", () => sendsTo(applier.last, workloadMac(3), 3));
    assert(!applier.calls.at(-1)!.full);
  } finally {
    await f.close();
  }
});

Deno.test("hostile values in etcd are skipped with one log line each; the agent carries on", async () => {
  const f = await fleet();
  try {
    const a = await f.start(hostConfig(f.opts, 1));
    const bad: [string, string][] = [
      [networkKey("evil"), '{"vni":16777216,"protocol":"vxlan","mtu":1450}'],
      [networkKey("x,actions=drop"), '{"vni":77,"protocol":"vxlan","mtu":1450}'],
      [hostKey("h9"), '{"underlay":["not-an-ip"],"tunnels":[{"protocol":"vxlan"}]}'],
      [hostKey("h8"), "\u0000garbage"],
      [endpointKey("blue", "h9", "ff:ff:ff:ff:ff:ff"), '{"ips":[]}'],
      [endpointKey("blue", "h2", "02:00:00:00:00:99"), '{"ips":["10.0.0.300"]}'],
      [
        endpointKey("blue", "h2", "02:00:00:00:00:98"),
        JSON.stringify({ ips: [], pad: "x".repeat(5000) }),
      ],
    ];
    for (const [k, v] of bad) await f.admin.raw.put(k).value(v);
    // A good host after them: the agent still follows the fleet.
    await f.start(hostConfig(f.opts, 2));
    await waitFor("h1 to reach h2", () => sendsTo(a.applier.last, workloadMac(2), 2));
    const last = a.applier.last!;
    assertEquals(last.flows.filter((f) => /ff:ff:ff|:99 |:98 |net=77|16777216/.test(f)), []);
    const skipped = f.log.matching("skipping /warren/v1/");
    // Two agents: one line each per bad key.
    for (const [k] of bad) {
      assertEquals(skipped.filter((l) => l.includes(`${k}:`)).length, 2, `lines for ${k}`);
    }
    assertEquals(skipped.length, bad.length * 2);
  } finally {
    await f.close();
  }
});

Deno.test("SIGKILL at every agent failpoint, then a rerun: exactly the wanted state in etcd and in the applied state", async () => {
  const f = await fleet(["blue", "red"]);
  try {
    await f.start(hostConfig(f.opts, 1, ["blue", "red"]));
    const config = hostConfig(f.opts, 2, ["blue", "red"], { leaseTtl: 2 });
    for (
      const point of ["fleet.publish.registered", "fleet.publish.batch", "fleet.agent.derived"]
    ) {
      await Deno.remove(`${f.dir}/h2.state.json`).catch(() => {});
      const dying = new AgentProcess(f.dir, config, { env: { WARREN_FAILPOINTS: point } });
      const { status } = await dying.ended();
      assertEquals(status.signal, "SIGKILL", `${point} fired`);
      if (point === "fleet.agent.derived") {
        assertEquals(dying.state(), undefined, "died before applying");
      }
      const p = new AgentProcess(f.dir, config);
      try {
        // etcd holds exactly h2's two endpoints, and the state is what they derive.
        const published = async () => {
          const { entries } = await f.admin.list(PREFIX, prefixEnd(PREFIX));
          return entries.map((e) => e.key).filter((k) =>
            k.includes("/endpoints/") && k.includes("/h2/")
          );
        };
        const wanted = config.ports.map((x) => endpointKey(x.net, "h2", x.mac)).sort();
        await waitFor(`a rerun after ${point}`, async () => {
          const want = derive(await readFleet(f.admin), {
            ...config,
            underlay: config.underlay.addresses,
          });
          return JSON.stringify(await published()) === JSON.stringify(wanted) &&
            JSON.stringify(p.state()) === JSON.stringify(want.state) &&
            sendsTo(want.state, workloadMac(1, 0), 1) && sendsTo(want.state, workloadMac(1, 1), 1);
        }, 15_000);
      } finally {
        await p.stop();
      }
      await waitFor("h2 to leave", async () => !(await f.admin.raw.get(hostKey("h2")).exists()));
    }
  } finally {
    await f.close();
  }
});
