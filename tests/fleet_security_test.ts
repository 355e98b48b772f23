/**
 * A fleet's etcd with TLS and authentication: each host's role writes only
 * its own keys and joins only the networks it was admitted to; agents work
 * under those roles (register, adopt a lease, publish, leave). Also the
 * operators' side: VNI allocation under concurrency and the `warren fleet`
 * commands' output.
 */

import { assert, assertEquals, assertRejects } from "./helpers/assert.ts";
import { TestEtcd } from "../src/lab/etcd.ts";
import {
  hostConfig,
  LineLog,
  RecordingApplier,
  TEST_BACKOFF,
  waitFor,
  workloadMac,
} from "./helpers/fleet.ts";
import { grantHost, revokeHost } from "../src/fleet/access.ts";
import { addNetwork, deleteNetwork, FleetError } from "../src/fleet/admin.ts";
import { Agent } from "../src/fleet/agent.ts";
import { EtcdClient } from "../src/fleet/client.ts";
import { endpointKey, hostKey, networkKey, PREFIX, prefixEnd } from "../src/fleet/keys.ts";

const CLI = new URL("../src/cli/main.ts", import.meta.url).pathname;

Deno.test("TLS and roles: a host writes only its own keys, joins only its networks, and its agent works", async () => {
  await using etcd = await TestEtcd.start({ tls: true });
  const root = await etcd.enableAuth();
  using admin = await EtcdClient.connect(await etcd.clientOptions(root));
  await addNetwork(admin, { name: "blue" });
  await addNetwork(admin, { name: "red" });
  await grantHost(admin, "h1", ["blue"], "pw-h1");
  await grantHost(admin, "h2", ["blue", "red"], "pw-h2");
  const h1Opts = await etcd.clientOptions({ name: "h1", password: "pw-h1" });
  using h1 = await EtcdClient.connect(h1Opts);
  const put = (k: string) => h1.raw.put(k).value("{}").exec();
  await put(hostKey("h1"));
  await put(endpointKey("blue", "h1", workloadMac(1)));
  await assertRejects(() => put(hostKey("h2")), Error, "permission denied");
  await assertRejects(
    () => put(endpointKey("blue", "h2", workloadMac(2))),
    Error,
    "permission denied",
  );
  await assertRejects(
    () => put(endpointKey("red", "h1", workloadMac(1))),
    Error,
    "permission denied",
  );
  await assertRejects(() => put(networkKey("mine")), Error, "permission denied");
  await assertRejects(
    () => h1.raw.delete().key(networkKey("blue")).then(() => {}),
    Error,
    "permission denied",
  );
  // A prefix trick: host "h1" cannot reach host "h10"'s keys.
  await assertRejects(
    () => put(endpointKey("blue", "h10", workloadMac(1))),
    Error,
    "permission denied",
  );
  // It reads the whole fleet.
  assert((await h1.list(PREFIX, prefixEnd(PREFIX))).entries.length >= 4);
  await h1.raw.delete().key(hostKey("h1"));
  await h1.raw.delete().key(endpointKey("blue", "h1", workloadMac(1)));
  // A wrong password is no way in.
  using wrong = await EtcdClient.connect(
    await etcd.clientOptions({ name: "h1", password: "nope" }),
  );
  await assertRejects(() => wrong.header(PREFIX), Error, "authentication failed");

  // Agents under these roles: h1 wants blue and red, but may only join blue.
  const log = new LineLog();
  const start = async (n: number, pw: string, leaseTtl = 3) => {
    const opts = await etcd.clientOptions({ name: `h${n}`, password: pw });
    const applier = new RecordingApplier();
    const config = hostConfig(opts, n, ["blue", "red"], { leaseTtl });
    const agent = await Agent.start({ config, applier, log: log.sink, backoff: TEST_BACKOFF });
    return { agent, applier };
  };
  const a1 = await start(1, "pw-h1");
  const a2 = await start(2, "pw-h2");
  try {
    const reaches = (n: number, i: number) =>
      a2.applier.last?.flows.some((f) =>
        f.includes(`dl_dst=${workloadMac(n, i)} actions=set_tunnel`)
      ) ?? false;
    await waitFor("h2 to reach h1 in blue", () => reaches(1, 0));
    await waitFor(
      "h1's refused write to be logged",
      () => log.matching("publishing endpoints to etcd: network red").length > 0,
    );
    assert(!reaches(1, 1), "h1 never joined red");
    assertEquals(log.matching("publishing endpoints").length, 1, "logged once, not per retry");
    // h1 restarts within its TTL and adopts its lease under its role.
    const lease = a1.agent.registration.lease;
    await a1.agent.stop({ leave: false });
    const again = await start(1, "pw-h1");
    assertEquals(again.agent.registration.lease, lease);
    // A graceful leave revokes the lease under the host's own role.
    await again.agent.stop();
    await waitFor("h2 to withdraw h1", () => !reaches(1, 0));
    assert(!(await admin.raw.get(hostKey("h1")).exists()));
    // A revoked host cannot even log in any more.
    await revokeHost(admin, "h1");
    using gone = await EtcdClient.connect(h1Opts);
    await assertRejects(
      () => gone.raw.put(hostKey("h1")).value("{}").exec(),
      Error,
      "authentication failed",
    );
  } finally {
    await a1.agent.stop({ leave: false }).catch(() => {});
    await a2.agent.stop();
  }
});

Deno.test("VNIs allocated by compare-and-swap: concurrent operators never share one", async () => {
  await using etcd = await TestEtcd.start();
  const opts = await etcd.clientOptions();
  const clients = await Promise.all(Array.from({ length: 4 }, () => EtcdClient.connect(opts)));
  try {
    const nets = await Promise.all(
      Array.from({ length: 16 }, (_, i) => addNetwork(clients[i % 4], { name: `n${i}` })),
    );
    assertEquals(
      nets.map((n) => n.vni).sort((a, b) => a - b),
      Array.from({ length: 16 }, (_, i) => i + 1),
    );
    // Both sides of a race for one given VNI: exactly one wins.
    const race = await Promise.allSettled([
      addNetwork(clients[0], { name: "x", vni: 1000 }),
      addNetwork(clients[1], { name: "y", vni: 1000 }),
    ]);
    assertEquals(race.filter((r) => r.status === "fulfilled").length, 1);
    const lost = race.find((r) => r.status === "rejected") as PromiseRejectedResult;
    assert(
      lost.reason instanceof FleetError &&
        /VNI 1000 belongs to network [xy]/.test(lost.reason.message),
    );
    await assertRejects(() => addNetwork(clients[0], { name: "n3" }), FleetError, "exists already");
    // Deleting frees the VNI for the next allocation.
    const freed = (await deleteNetwork(clients[0], "n4")).vni;
    assertEquals((await addNetwork(clients[0], { name: "later" })).vni, freed);
  } finally {
    for (const c of clients) c.close();
  }
});

/** Runs `warren fleet ARGS` against `url`. */
async function fleetCli(url: string, ...args: string[]) {
  const out = await new Deno.Command("deno", {
    args: ["run", "-A", CLI, "fleet", "--etcd", url, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

Deno.test("warren fleet: networks, hosts and endpoints as etcd holds them, duplicates and bad values shown", async () => {
  await using etcd = await TestEtcd.start();
  const opts = await etcd.clientOptions();
  const added = await fleetCli(etcd.url, "net", "add", "blue", "--vni", "42", "--mtu", "1400");
  assertEquals(added.stdout, "network blue has VNI 42 (vxlan, MTU 1400)\n");
  assertEquals(
    (await fleetCli(etcd.url, "net", "add", "blue")).stderr,
    "warren: network blue exists already\n",
  );
  const agents = [];
  for (const n of [1, 2]) {
    const config = hostConfig(opts, n);
    // h2 claims h1's MAC too.
    if (n === 2) config.ports[0] = { ...config.ports[0], mac: workloadMac(1) };
    agents.push(
      await Agent.start({
        config,
        applier: new RecordingApplier(),
        log: () => {},
        backoff: TEST_BACKOFF,
      }),
    );
  }
  try {
    using admin = await EtcdClient.connect(opts);
    await admin.raw.put(endpointKey("blue", "h3", "FF:00:00:00:00:01")).value("{}");
    const hosts = await fleetCli(etcd.url, "hosts");
    assertEquals(hosts.stdout.split("\n").slice(0, 3), [
      "host  underlay   tunnels     endpoints",
      "h1    192.0.2.1  vxlan:4789  1",
      "h2    192.0.2.2  vxlan:4789  1",
    ]);
    assertEquals(
      hosts.stderr,
      "warren: skipped /warren/v1/endpoints/blue/h3/FF:00:00:00:00:01: " +
        'MAC "FF:00:00:00:00:01" is not written as ff:00:00:00:00:01\n',
    );
    const eps = JSON.parse(
      (await fleetCli(etcd.url, "endpoints", "--net", "blue", "--json")).stdout,
    );
    assertEquals(
      eps.map((
        e: { host: string; winner: boolean; claims: number },
      ) => [e.host, e.winner, e.claims]),
      [
        ["h2", true, 2],
        ["h1", false, 2],
      ],
    );
    const table = (await fleetCli(etcd.url, "endpoints")).stdout;
    assert(table.includes("duplicate, wins (newest)") && table.includes("duplicate, loses"), table);
    const list = JSON.parse((await fleetCli(etcd.url, "net", "list", "--json")).stdout);
    assertEquals(list, [{ name: "blue", vni: 42, protocol: "vxlan", mtu: 1400 }]);
  } finally {
    for (const a of agents) await a.stop();
  }
});
