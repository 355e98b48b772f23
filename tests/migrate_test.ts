/**
 * Migrations across layout versions: a datapath made by warren at commit
 * ce8daad (layout 3), built from this repository's own history, is taken
 * over by this warren's `up` under a ping flood, with 10 000 flows: no
 * probe lost, every port, tunnel and flow kept as it was, counters kept.
 * `export` reads both layouts, and what it prints `apply` takes back as no
 * change. SIGKILL at every migration failpoint, then `up` again: the
 * exact final state.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { type CliResult, overlayState, warren, warrenJson, warrenOk } from "./helpers/cli.ts";
import { ping, pingDuring } from "./helpers/traffic.ts";
import { LAYOUT_VERSION } from "../src/maps/layouts.ts";
import { pinnedLayoutVersion } from "../src/tunnel/pins.ts";

/** The commit whose warren pinned layout 3. */
const OLD_COMMIT = "ce8daad";
const REPO = new URL("..", import.meta.url).pathname;

let oldBuild: Promise<string> | undefined;

async function run(cmd: string, args: string[], cwd = REPO): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  assert.ok(out.success, `${cmd} ${args.join(" ")}: ${text(out.stderr)}`);
  return text(out.stdout);
}

/**
 * warren at {@link OLD_COMMIT}, extracted from git history and built, once
 * per test run; returns its CLI's path. A shallow clone (as some CI
 * checkouts are) is deepened first.
 */
function oldWarren(): Promise<string> {
  return oldBuild ??= (async () => {
    const has = await new Deno.Command("git", {
      args: ["cat-file", "-e", `${OLD_COMMIT}^{commit}`],
      cwd: REPO,
      stderr: "null",
    }).output();
    if (!has.success) await run("git", ["fetch", "--unshallow"]);
    const dir = await Deno.makeTempDir({ prefix: "warren-old-" });
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    // git archive, not a worktree: nothing is registered in the repository.
    await run("sh", ["-c", `git archive ${OLD_COMMIT} | tar -x -C ${dir}`]);
    await run(Deno.execPath(), ["install", "--frozen"], dir);
    await run(Deno.execPath(), ["task", "build"], dir);
    return `${dir}/src/cli/main.ts`;
  })();
}

/** Runs the old warren's `args` on `h`; it must exit 0. */
async function oldOk(h: LabHost, args: string[]): Promise<string> {
  const cli = await oldWarren();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, "--netns", h.ns.name, "--pin-dir", h.pinDir, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  assert.ok(out.success, `old warren ${args.join(" ")}: ${text(out.stderr)}`);
  return text(out.stdout);
}

interface DumpedFlow {
  priority: number;
  match: string;
  actions: string;
  packets: number;
}

/** Flows by their text, with their packet counts. */
function byText(flows: DumpedFlow[]): Map<string, number> {
  return new Map(
    flows.map((f) => [`priority=${f.priority},${f.match} actions=${f.actions}`, Number(f.packets)]),
  );
}

/** `n` flows to 10.0.0.0/16, with 100 tunnel keys. */
function extra(n: number, peer: string): string[] {
  return Array.from(
    { length: n },
    (_, i) =>
      `priority=10,in_port=web,ip,nw_dst=10.${i >> 16}.${(i >> 8) & 255}.${i & 255} ` +
      `actions=set_tunnel(id=${1000 + i % 100},dst=${peer}),output:vx0`,
  );
}

/**
 * The overlay of helpers/cli.ts, made by the old warren, with `n` more
 * flows on each host. With `gap`, its ports are numbered with a gap (vx0
 * 2, web 3), which a migration keeps.
 */
async function oldOverlay(lab: Lab, hosts: LabHost[], n: number, gap = false): Promise<void> {
  for (const h of hosts) {
    const peer = lab.peer(h);
    await oldOk(h, ["up", "--underlay", h.underlay]);
    if (gap) {
      await oldOk(h, ["tunnel", "add", "spare", "gre", "remote_ip=192.0.2.9"]);
      await oldOk(h, ["tunnel", "add", "vx0", "vxlan", "remote_ip=flow", "key=flow"]);
      await oldOk(h, ["port", "add", "web", h.workload.port]);
      await oldOk(h, ["tunnel", "del", "spare"]);
    }
    const file = await Deno.makeTempFile({ suffix: ".json" });
    await Deno.writeTextFile(
      file,
      overlayState([
        `priority=100,in_port=web,icmp actions=set_tunnel(id=42,dst=${peer.ip}),output:vx0`,
        `priority=90,in_port=web actions=set_tunnel(id=42,dst=${peer.ip}),output:vx0`,
        "priority=100,tun_id=42,in_port=vx0,icmp actions=output:web",
        "priority=90,tun_id=42,in_port=vx0 actions=output:web",
        ...extra(n, peer.ip),
      ]),
    );
    await oldOk(h, ["apply", file]);
    await Deno.remove(file);
    await h.workload.ns.run([
      "ip",
      "neigh",
      "replace",
      peer.workload.ip,
      "lladdr",
      peer.workload.mac,
      "dev",
      h.workload.dev,
      "nud",
      "permanent",
    ]);
  }
}

/** What `export` prints on `h`, parsed, in `format`. */
async function exported(h: LabHost, format: "--json" | "--yaml"): Promise<unknown> {
  const text = await warrenOk(h, ["export", format]);
  return format === "--json" ? JSON.parse(text) : (await import("yaml")).parse(text);
}

interface Plan {
  ports: Record<string, string[]>;
  groups?: Record<string, number[]>;
  flows: Record<string, number>;
}

/**
 * `apply` of what `export` printed on `h` changes nothing: this warren's
 * apply, or with `old`, the old warren's (layout 3 is all it writes).
 */
async function assertRoundTrip(
  h: LabHost,
  format: "--json" | "--yaml",
  old = false,
): Promise<void> {
  const text = await warrenOk(h, ["export", format]);
  const file = await Deno.makeTempFile();
  await Deno.writeTextFile(file, text);
  const args = ["apply", file, "--dry-run", "--json"];
  const plan: Plan = old
    ? JSON.parse(await oldOk(h, args))
    : await warrenJson<Plan>(h, args.slice(0, -1));
  await Deno.remove(file);
  assertEquals(plan.ports, { add: [], change: [], remove: [] }, `${format}: ports`);
  if (!old) assertEquals(plan.groups, { add: [], change: [], remove: [] }, `${format}: groups`);
  assertEquals(
    [plan.flows.added, plan.flows.modified, plan.flows.removed],
    [0, 0, 0],
    `${format}: flows`,
  );
}

/** Nothing of a migration is left: the maps are of this layout, nothing beside them. */
function assertMigrated(h: LabHost): void {
  assertEquals(pinnedLayoutVersion(h.pinDir), LAYOUT_VERSION);
  const names = [...Deno.readDirSync(h.pinDir)].map((e) => e.name).sort();
  assertEquals(names, ["links", "maps", "progs"]);
}

privilegedTest(
  "a layout 3 datapath with 10 000 flows migrates under a ping flood: nothing lost",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await oldOverlay(lab, lab.hosts, 10000, true);
    const [a, b] = lab.hosts;
    assertEquals((await ping(a.workload, b.workload.ip, { count: 5 })).received, 5);
    const before = byText(JSON.parse(await oldOk(a, ["flow", "dump", "--json"])));
    assertEquals(before.size, 10004);
    const numbers = (list: { name: string; number: number }[]) =>
      list.map((p) => `${p.name} ${p.number}`);
    const oldPorts = [
      ...numbers(JSON.parse(await oldOk(a, ["port", "list", "--json"]))),
      ...numbers(JSON.parse(await oldOk(a, ["tunnel", "list", "--json"]))),
    ];
    assertEquals(oldPorts, ["web 3", "vx0 2"]);

    // export reads layout 3; apply takes it back.
    await warren(a, ["status"]).then((r: CliResult) =>
      assert.ok(r.stderr.includes('"warren up" migrates it'), r.stderr)
    );
    const json = await exported(a, "--json");
    assertEquals(await exported(a, "--yaml"), json);
    const dry = await warrenOk(a, ["up", "--underlay", a.underlay, "--dry-run"]);
    assert.ok(
      dry.includes("would migrate layout 3 to 4: 1 ports, 1 tunnels, 0 groups, 10004 flows"),
      dry,
    );
    assertEquals(pinnedLayoutVersion(a.pinDir), 3);

    const flood = await pingDuring(a.workload, b.workload.ip, async () => {
      for (const h of lab.hosts) {
        const out = await warrenOk(h, ["up", "--underlay", h.underlay]);
        assert.ok(out.includes("migrated layout 3 to 4"), out);
      }
    }, 0.005);
    assert.ok(flood.sent > 100, `only ${flood.sent} pings sent`);
    assertEquals(flood.lost, [], `pings lost of ${flood.sent}`);

    for (const h of lab.hosts) assertMigrated(h);
    // Every flow kept, and its counters: the dump differs only in them.
    const after = byText(await warrenJson<DumpedFlow[]>(a, ["flow", "dump"]));
    assertEquals([...after.keys()].sort(), [...before.keys()].sort());
    for (const [flow, packets] of before) {
      assert.ok(after.get(flow)! >= packets, `${flow}: ${after.get(flow)} < ${packets}`);
    }
    const icmp = [...before.keys()].find((f) => f.includes("in_port=web,icmp"))!;
    assert.ok(before.get(icmp)! >= 5 && after.get(icmp)! > before.get(icmp)!, icmp);
    // Ports and tunnels kept, and the whole configuration.
    assertEquals([
      ...numbers(await warrenJson(a, ["port", "list"])),
      ...numbers(await warrenJson(a, ["tunnel", "list"])),
    ], oldPorts);
    assertEquals(await exported(a, "--json"), json);
    await assertRoundTrip(a, "--json");
    await assertRoundTrip(a, "--yaml");
    assertEquals((await ping(a.workload, b.workload.ip, { count: 3 })).received, 3);
  },
);

privilegedTest("export of a layout 3 datapath round-trips through apply", async () => {
  await using lab = await Lab.create({ ipv6: false });
  const [a] = lab.hosts;
  await oldOverlay(lab, [a], 100);
  await assertRoundTrip(a, "--json", true);
  await assertRoundTrip(a, "--yaml", true);
  assertEquals((await exported(a, "--json") as { flows: string[] }).flows.length, 104);
  assertEquals(pinnedLayoutVersion(a.pinDir), 3);
});

/** Every failpoint of a migration, and one of the apply that builds the new datapath. */
const FAILPOINTS = [
  "migrate.loaded",
  "flow.apply.installing",
  "migrate.applied",
  "migrate.counted",
  "migrate.swapping",
  "migrate.swapped",
  "migrate.retired",
  "migrate.switched",
];

privilegedTest("SIGKILL at each migration failpoint, then up again: the exact state", async () => {
  await using lab = await Lab.create({ ipv6: false });
  const [a, b] = lab.hosts;
  await oldOverlay(lab, [b], 0);
  for (const fp of FAILPOINTS) {
    await oldOverlay(lab, [a], 200);
    assertEquals((await ping(a.workload, b.workload.ip, { count: 3 })).received, 3, fp);
    const before = byText(JSON.parse(await oldOk(a, ["flow", "dump", "--json"])));
    const state = await exported(a, "--json");
    const r = await warren(a, ["up", "--underlay", a.underlay], undefined, {
      WARREN_FAILPOINTS: fp,
    });
    assertEquals(r.code, 137, `${fp}: ${r.stderr}`);
    // Old or new, the datapath forwards.
    assertEquals((await ping(a.workload, b.workload.ip, { count: 3 })).received, 3, fp);
    const out = await warrenOk(a, ["up", "--underlay", a.underlay]);
    assert.ok(out.includes("migrat") || fp === "migrate.switched", `${fp}: ${out}`);
    assertMigrated(a);
    assertEquals(await exported(a, "--json"), state, fp);
    const after = byText(await warrenJson<DumpedFlow[]>(a, ["flow", "dump"]));
    for (const [flow, packets] of before) {
      assert.ok(after.get(flow)! >= packets, `${fp}: ${flow}: ${after.get(flow)} < ${packets}`);
    }
    assertEquals((await ping(a.workload, b.workload.ip, { count: 3 })).received, 3, fp);
    await warrenOk(a, ["down"]);
  }
});
