/**
 * The `warren` command line as people and scripts use it: every command as
 * a separate process against the pinned datapath of a namespace host, its
 * JSON shapes, its errors and exit codes, `apply` and its atomicity,
 * concurrent writers, `trace` against real traffic, metrics scraped over
 * HTTP and `watch`.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { PROGRAMS } from "../src/maps/names.ts";
import {
  overlay,
  warren,
  warrenCommand,
  warrenFails,
  warrenJson,
  warrenOk,
} from "./helpers/cli.ts";
import { ping, pingDuring } from "./helpers/traffic.ts";
import { runRaw } from "../src/lab/run.ts";
import { lockPath } from "../src/tunnel/lock.ts";
import { XDP_AUTO_WHY } from "../src/tunnel/attach.ts";

interface DumpedFlow {
  flow_id: number;
  priority: number;
  cookie: number;
  match: string;
  actions: string;
  packets: number;
  bytes: number;
  used_ms: number | null;
  tcp_flags: string;
}

const dump = (h: LabHost, ...args: string[]) =>
  warrenJson<DumpedFlow[]>(h, ["flow", "dump", ...args]);

/** ICMP echo frames of `ping` with its default 56-byte payload. */
const PING_FRAME = 14 + 20 + 8 + 56;

privilegedTest(
  "up, status and down: idempotent, JSON as documented, nothing left behind",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a] = lab.hosts;
    assert.match(
      await warrenOk(a, ["up", "--underlay", "u0"]),
      /warren is up on u0 \(192\.0\.2\.1\)/,
    );
    // Again, with XDP forced on (auto chose TC only on the veth).
    await warrenOk(a, ["up", "--underlay", "u0", "--xdp", "native"]);
    assert.match(await warrenOk(a, ["port", "add", "web", "wl0"]), /port web is number 1 on wl0/);
    // A VXLAN tunnel: its kernel device for GSO packets with a checksum.
    await warrenOk(a, ["tunnel", "add", "vx0", "vxlan", "remote_ip=flow", "key=flow"]);
    assert.match(await a.ns.run(["ip", "-d", "link", "show", "type", "vxlan"]), /external/);
    const s = await warrenJson<Record<string, unknown>>(a, ["status"]);
    assertEquals(
      Object.keys(s).sort(),
      [
        "attachments",
        "generation",
        "localIps",
        "pinDir",
        "programs",
        "tables",
        "underlay",
        "xdp",
      ],
    );
    assertEquals(s.localIps, ["192.0.2.1"]);
    // A veth with TX checksum offload on hands its peer checksums still partial.
    assertEquals(Object.keys(s.underlay as object).sort(), [
      "completesChecksums",
      "device",
      "ifindex",
    ]);
    assertEquals((s.underlay as { completesChecksums: boolean }).completesChecksums, false);
    const attachments = s.attachments as Record<string, unknown>[];
    for (const at of attachments) {
      assertEquals(Object.keys(at).sort(), [
        "device",
        "hook",
        "ifindex",
        "pin",
        "program",
        "programId",
      ]);
    }
    const where = attachments.map((at) => `${at.hook}@${at.device}:${at.program}`).sort();
    assertEquals(where, [
      "tcx-ingress@u0:wr_tc_underlay",
      "tcx-ingress@wl0:wr_tc_local",
      "xdp-native@u0:wr_xdp_underlay",
    ]);
    const programs = s.programs as { name: string; id: number }[];
    assertEquals(programs.map((p) => p.name).sort(), [...PROGRAMS].sort());
    const tables = s.tables as { name: string; used: number; capacity: number }[];
    assertEquals(tables.find((t) => t.name === "ports")!.used, 2);
    const text = await warrenOk(a, ["status"]);
    assert.match(text, /wr_xdp_underlay/);
    assert.match(text, /flows\s+0\s+65536\s+0\.0%/);
    assert.match(text, /^checksums: +left partial to the peer/m);

    await warrenOk(a, ["down"]);
    await warrenOk(a, ["down"]);
    // Nothing of warren is left: pins, lock, programs, hooks, devices,
    // forwarding.
    assert.ok(!(await exists(a.pinDir)));
    assert.ok(!(await exists(lockPath(a.pinDir))));
    assertEquals(await a.ns.run(["ip", "link", "show", "type", "vxlan"]), "");
    for (const p of programs) {
      assertEquals(
        (await runRaw(["bpftool", "prog", "show", "id", String(p.id)])).code !== 0,
        true,
      );
    }
    assert.doesNotMatch(await a.ns.run(["ip", "-d", "link", "show", "u0"]), /xdp/);
    assert.doesNotMatch(await a.ns.run(["tc", "qdisc", "show", "dev", "wl0"]), /clsact/);
    assertEquals((await a.ns.run(["bpftool", "net", "show"])).includes("wr_"), false);
    assertEquals((await a.ns.run(["cat", "/proc/sys/net/ipv4/conf/u0/forwarding"])).trim(), "0");
    await warrenFails(a, ["status"], 1, "warren up");
  },
);

privilegedTest(
  "up --xdp auto: TC only on a veth or a bridge, and status says why; --xdp native forces XDP, an upgrade keeps it",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a] = lab.hosts;
    const xdpOf = async () => {
      const s = await warrenJson<{ xdp: unknown; attachments: { hook: string }[] }>(a, [
        "status",
      ]);
      return { xdp: s.xdp, hooks: s.attachments.map((h) => h.hook).sort() };
    };
    const onU0 = async () => /prog\/xdp/.test(await a.ns.run(["ip", "-d", "link", "show", "u0"]));

    await warrenOk(a, ["up", "--underlay", "u0"]);
    assertEquals(await xdpOf(), {
      xdp: { mode: "off", auto: true, why: "veth", reason: `auto: ${XDP_AUTO_WHY.veth}` },
      hooks: ["tcx-ingress"],
    });
    assertEquals(await onU0(), false);
    assert.match(await warrenOk(a, ["status"]), /^xdp: +off \(auto: a veth: XDP there copies/m);

    // Forced, XDP goes on; an upgrade without --xdp keeps it (it never
    // detaches XDP under traffic); --xdp auto decides anew and takes it off.
    for (const args of [["--xdp", "native"], []]) {
      await warrenOk(a, ["up", "--underlay", "u0", ...args]);
      assertEquals(await xdpOf(), {
        xdp: { mode: "native", auto: false, reason: "up --xdp native" },
        hooks: ["tcx-ingress", "xdp-native"],
      });
      assertEquals(await onU0(), true);
    }
    assert.match(await warrenOk(a, ["status"]), /^xdp: +native \(up --xdp native\)/m);
    // Generic XDP carries no tunnel traffic: refused, and native stays.
    await warrenFails(
      a,
      ["up", "--underlay", "u0", "--xdp", "generic"],
      1,
      "--xdp generic is refused",
    );
    assertEquals((await xdpOf()).hooks, ["tcx-ingress", "xdp-native"]);
    await warrenOk(a, ["up", "--underlay", "u0", "--xdp", "auto"]);
    assertEquals((await xdpOf()).hooks, ["tcx-ingress"]);
    assertEquals(await onU0(), false);
    // And an upgrade keeps auto's choice.
    await warrenOk(a, ["up", "--underlay", "u0"]);
    assertEquals((await xdpOf()).xdp, {
      mode: "off",
      auto: true,
      why: "veth",
      reason: `auto: ${XDP_AUTO_WHY.veth}`,
    });

    // Any other virtual device: TC only too.
    await warrenOk(a, ["down"]);
    await a.ns.run(["ip", "link", "add", "d0", "type", "bridge"]);
    await a.ns.run(["ip", "addr", "add", "198.51.100.1/24", "dev", "d0"]);
    await a.ns.run(["ip", "link", "set", "d0", "up"]);
    await warrenOk(a, ["up", "--underlay", "d0"]);
    assertEquals(await xdpOf(), {
      xdp: { mode: "off", auto: true, why: "virtual", reason: `auto: ${XDP_AUTO_WHY.virtual}` },
      hooks: ["tcx-ingress"],
    });
    await warrenOk(a, ["down"]);
  },
);

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

privilegedTest(
  "ports and tunnels: options round-trip through list --json; a port in use needs --force",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a] = lab.hosts;
    await warrenOk(a, ["up", "--underlay", "u0"]);
    await warrenOk(a, ["port", "add", "web", "wl0"]);
    await warrenOk(a, [
      "tunnel",
      "add",
      "g0",
      "gre",
      "remote_ip=192.0.2.2",
      "in_key=5",
      "out_key=6",
      "ttl=inherit",
      "tos=inherit",
      "df=false",
      "csum=true",
      "seq=true",
      "mss_clamp=true",
      "mtu=1400",
      "neighbor=02:aa:bb:cc:dd:ee",
    ]);
    await warrenOk(a, [
      "tunnel",
      "add",
      "vx0",
      "vxlan",
      "remote_ip=flow",
      "key=flow",
      "dst_port=4790",
    ]);
    assertEquals(await warrenJson(a, ["port", "list"]), [
      { kind: "local", name: "web", number: 1, device: "wl0", xdp: false, net: 0, present: true },
    ]);
    assertEquals(await warrenJson(a, ["tunnel", "list"]), [
      {
        name: "g0",
        number: 2,
        proto: "gre",
        device: "u0",
        net: 0,
        options: {
          remote_ip: "192.0.2.2",
          in_key: "5",
          out_key: "6",
          ttl: "inherit",
          tos: "inherit",
          df: "false",
          csum: "true",
          seq: "true",
          mss_clamp: "true",
          mtu: "1400",
          neighbor: "02:aa:bb:cc:dd:ee",
        },
        notes: [],
      },
      {
        name: "vx0",
        number: 3,
        proto: "vxlan",
        device: "u0",
        net: 0,
        options: {
          remote_ip: "flow",
          key: "flow",
          dst_port: "4790",
          ttl: "64",
          tos: "0",
          df: "true",
          mss_clamp: "false",
        },
        notes: [],
      },
    ]);
    // Wrong options are refused whole.
    await warrenFails(a, ["tunnel", "add", "x0", "vxlan", "remote_ip=banana"], 1, "banana");
    await warrenFails(a, ["tunnel", "add", "x0", "foo"], 1, "foo");
    await warrenFails(a, ["tunnel", "add", "x0", "vxlan", "junk"], 1, "not an option");
    await warrenFails(a, ["tunnel", "add", "x0", "vxlan", "colour=red"], 1, "not a tunnel option");
    // The error names the option given: key stands for in_key and out_key.
    for (const opt of ["key", "in_key"]) {
      await warrenFails(
        a,
        ["tunnel", "add", "x0", "vxlan", "remote_ip=flow", `${opt}=abc`],
        1,
        `option ${opt}: "abc" is not a key`,
      );
    }
    await warrenFails(a, ["port", "add", "p1", "nosuchdev"], 1, "nosuchdev");
    await warrenFails(a, ["port", "add", "web", "wl0"], 1, "web");
    assertEquals((await warrenJson<unknown[]>(a, ["tunnel", "list"])).length, 2);

    await warrenOk(a, ["flow", "add", "in_port=web actions=output:g0"]);
    await warrenFails(a, ["port", "del", "web"], 1, "1 flow(s) use port web");
    await warrenOk(a, ["port", "del", "web", "--force"]);
    assertEquals(await dump(a), []);
    await warrenOk(a, ["tunnel", "del", "g0"]);
    await warrenFails(a, ["tunnel", "del", "g0"], 1, 'no port named "g0"');
    assertEquals((await warrenJson<unknown[]>(a, ["tunnel", "list"])).length, 1);

    // A UDP tunnel that may send over IPv6 without checksums needs its
    // peers to accept them, and says so when added and listed.
    const added = await warrenOk(a, [
      ...["tunnel", "add", "vz0", "vxlan", "remote_ip=flow", "key=flow", "csum=false"],
    ]);
    const note = /note: vz0 sends a zero UDP checksum over IPv6 \(csum=false\): .*udp6zerocsumrx/;
    assert.match(added, note);
    assert.match(await warrenOk(a, ["tunnel", "list"]), note);
    const listed = await warrenJson<
      { name: string; options: { csum?: string }; notes: string[] }[]
    >(
      a,
      ["tunnel", "list"],
    );
    const vz0 = listed.find((t) => t.name === "vz0")!;
    assertEquals([vz0.options.csum, vz0.notes.length], ["false", 1]);
    // Each VXLAN destination port in use has its kernel device, gone with
    // the last tunnel on it.
    const devices = async () =>
      (await a.ns.run(["ip", "-d", "link", "show", "type", "vxlan"])).match(/dstport \d+/g);
    assertEquals((await devices())?.sort(), ["dstport 4789", "dstport 4790"]);
    await warrenOk(a, ["tunnel", "del", "vx0"]);
    assertEquals(await devices(), ["dstport 4789"]);
    await warrenOk(a, ["tunnel", "del", "vz0"]);
    assertEquals(await devices(), null);
  },
);

privilegedTest(
  "flows from the command line count the real traffic; dump filters, mod keeps counters",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a, b] = lab.hosts;
    const p = await ping(a.workload, b.workload.ip, { count: 4 });
    assertEquals(p.received, 4);

    const flows = await dump(a);
    assertEquals(flows.map((f) => f.priority), [100, 100, 90, 90]);
    for (const f of flows) {
      assertEquals(Object.keys(f), [
        "flow_id",
        "priority",
        "cookie",
        "owner",
        "match",
        "actions",
        "packets",
        "bytes",
        "used_ms",
        "tcp_flags",
      ]);
    }
    const byMatch = new Map(flows.map((f) => [f.match, f]));
    const out = byMatch.get("in_port=web,icmp")!;
    const back = byMatch.get("in_port=vx0,icmp,tun_id=42")!;
    assertEquals([out.packets, out.bytes], [4, 4 * PING_FRAME]);
    assertEquals([back.packets, back.bytes], [4, 4 * PING_FRAME]);
    assertEquals(out.actions, "set_tunnel(id=42,dst=192.0.2.2),output:vx0");
    assert.ok(out.used_ms !== null && out.used_ms < 60000);
    assertEquals(byMatch.get("in_port=web")!.packets, 0);
    assertEquals(byMatch.get("in_port=web")!.used_ms, null);

    // The text dump says the same.
    const lines = (await warrenOk(a, ["flow", "dump"])).trim().split("\n");
    assert.match(lines[0] + lines[1], /in_port=web,icmp actions=\S+ packets:4 bytes:392 used:\d/);
    // Filters: by port, tunnel id, match; --no-counters.
    assertEquals((await dump(a, "--port", "vx0")).length, 4);
    assertEquals((await dump(a, "--tun-id", "42")).map((f) => f.match), [
      "in_port=vx0,icmp,tun_id=42",
      "in_port=vx0,tun_id=42",
    ]);
    assertEquals((await dump(a, "icmp")).length, 2);
    assertEquals((await dump(a, "priority=90")).length, 2);
    assert.doesNotMatch(await warrenOk(a, ["flow", "dump", "--no-counters"]), /packets:/);

    const stats = await warrenJson<{
      ports: Record<string, number | string>[];
      drops: Record<string, number>;
      events: Record<string, number>;
    }>(a, ["stats"]);
    assertEquals(stats.ports, [
      {
        name: "web",
        number: 1,
        net: 0,
        rx_packets: 4,
        rx_bytes: 392,
        tx_packets: 4,
        tx_bytes: 392,
        drops: 0,
      },
      {
        name: "vx0",
        number: 2,
        net: 0,
        rx_packets: 4,
        rx_bytes: 392,
        tx_packets: 4,
        tx_bytes: 392,
        drops: 0,
      },
    ]);
    assertEquals([stats.events.encap, stats.events.decap], [4, 4]);
    assertEquals(Object.values(stats.drops).reduce((x, y) => x + y, 0), 0);

    // mod changes actions and keeps counters; add of the same flow resets them.
    assert.match(
      await warrenOk(a, [
        "flow",
        "mod",
        `priority=100,in_port=web,icmp actions=set_tunnel(id=42,dst=${b.ip},ttl=9),output:vx0`,
      ]),
      /1 modified/,
    );
    const modded = (await dump(a, "--tun-id", "42", "icmp")).length;
    assertEquals(modded, 1);
    const after = (await dump(a)).find((f) => f.match === "in_port=web,icmp")!;
    assertEquals([after.packets, after.actions], [
      4,
      "set_tunnel(id=42,dst=192.0.2.2,ttl=9),output:vx0",
    ]);
    await warrenFails(a, ["flow", "mod", "priority=7,in_port=web,icmp actions=drop"], 1, "no flow");
    assert.match(
      await warrenOk(a, ["flow", "del", "--strict", "priority=100,in_port=web,icmp"]),
      /1 deleted/,
    );
    assert.match(await warrenOk(a, ["flow", "del", "in_port=vx0"]), /2 deleted/);
    assertEquals((await dump(a)).map((f) => f.match), ["in_port=web"]);
    // Flows from a file (and stdin), comments and blank lines skipped.
    const file = await Deno.makeTempFile();
    await Deno.writeTextFile(file, "# flows\n\ntun_id=7,in_port=vx0 actions=output:web\n");
    assert.match(await warrenOk(a, ["flow", "add", "--file", file]), /1 added, 0 replaced/);
    assert.match(
      await warrenOk(a, ["flow", "add", "--file", "-"], "tun_id=7,in_port=vx0 actions=drop\n"),
      /0 added, 1 replaced/,
    );
    // A bad flow is pointed at: its file and line, or its place among the
    // arguments.
    await Deno.writeTextFile(
      file,
      "# flows\nip actions=drop\nip,nw_dst=10.0.0.0/40 actions=drop\n",
    );
    await warrenFails(a, ["flow", "add", "--file", file], 1, `${file}:3: at column 4`);
    await warrenFails(
      a,
      ["flow", "add", "ip actions=drop", "ip,nw_dst=10.0.0.0/40 actions=drop"],
      1,
      "flow 2 of the command line: at column 4",
    );
    await Deno.remove(file);
  },
);

/**
 * `stats --json` of `h` but for `not_ours`, which counts whatever else the
 * underlay receives (ARP, neighbour discovery) whenever it comes.
 */
async function countersButChatter(h: LabHost): Promise<unknown> {
  const stats = await warrenJson<{ events: Record<string, number> }>(h, ["stats", "--json"]);
  delete stats.events.not_ours;
  return stats;
}

privilegedTest("trace says what real traffic then does, and moves no counter", async () => {
  await using lab = await Lab.create({ ipv6: false });
  await overlay(lab);
  const [a, b] = lab.hosts;
  const before = await dump(a);
  const stats = await countersButChatter(a);
  interface Trace {
    in_port: string;
    packet: { name: string; fields: Record<string, unknown> }[];
    flow: { priority: number; match: string; actions: string } | null;
    steps: {
      program: string;
      verdict: string;
      output: { name: string; fields: Record<string, unknown> }[];
    }[];
  }
  const out = await warrenJson<Trace>(a, [
    "trace",
    `in_port=web,icmp,nw_src=${a.workload.ip},nw_dst=${b.workload.ip}`,
  ]);
  assertEquals(Object.keys(out), ["in_port", "packet", "net", "restamp", "flow", "steps"]);
  assertEquals(out.flow, {
    priority: 100,
    match: "in_port=web,icmp",
    actions: `set_tunnel(id=42,dst=${b.ip}),output:vx0`,
  });
  assertEquals(out.steps.map((s) => [s.program, s.verdict]), [["wr_tc_local", "TC_ACT_REDIRECT"]]);
  const layers = out.steps[0].output;
  assertEquals(layers.map((l) => l.name).slice(0, 4), ["Ethernet", "IPv4", "UDP", "VXLAN"]);
  assertEquals(layers[1].fields.dst, b.ip);
  assertEquals(layers[3].fields.vni, 42);

  const back = await warrenJson<Trace>(a, [
    "trace",
    `in_port=vx0,tun_id=42,tun_src=${b.ip},icmp,nw_src=${b.workload.ip},nw_dst=${a.workload.ip}`,
  ]);
  assertEquals(back.flow?.match, "in_port=vx0,icmp,tun_id=42");
  assertEquals(back.steps.map((s) => s.verdict), ["XDP_PASS", "TC_ACT_REDIRECT"]);
  const miss = await warrenJson<Trace>(a, [
    "trace",
    `in_port=vx0,tun_id=99,tun_src=${b.ip},udp,nw_dst=${a.workload.ip}`,
  ]);
  assertEquals(miss.flow, null);
  assertEquals(miss.steps[0].verdict, "XDP_DROP");
  assert.match(
    await warrenOk(a, ["trace", `in_port=web,tcp,nw_dst=${b.workload.ip},tp_dst=80`]),
    /flow: priority=90,in_port=web\nactions: set_tunnel/,
  );

  // Tracing moved nothing.
  assertEquals(await dump(a), before);
  assertEquals(await countersButChatter(a), stats);
  // Real traffic then takes the flow the trace named.
  await ping(a.workload, b.workload.ip, { count: 1 });
  const after = new Map((await dump(a)).map((f) => [f.match, f.packets]));
  assertEquals(after.get("in_port=web,icmp"), 1);
  assertEquals(after.get("in_port=web"), 0);
});

privilegedTest(
  "errors: one sentence on stderr, exit 1 for failures, 2 for bad command lines",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a] = lab.hosts;
    const before = await dump(a);
    await warrenFails(a, ["bogus"], 2, "unknown command");
    await warrenFails(a, ["up"], 2, "--underlay");
    await warrenFails(
      a,
      ["up", "--underlay", "u0", "--max-flows", "ten"],
      2,
      '"ten" is not a whole number',
    );
    await warrenFails(a, ["up", "--underlay", "u0", "--xdp", "sideways"], 2, "sideways");
    // A capacity other than the one the maps were made with is refused,
    // not ignored; the same one is fine.
    const capacity = (await warrenJson<{ tables: { name: string; capacity: number }[] }>(a, [
      "status",
    ])).tables.find((t) => t.name === "flows")!.capacity;
    await warrenFails(
      a,
      ["up", "--underlay", "u0", "--max-flows", String(capacity * 2)],
      1,
      `was made with --max-flows ${capacity}`,
    );
    await warrenOk(a, ["up", "--underlay", "u0", "--max-flows", String(capacity)]);
    await warrenFails(a, ["watch", "--interval", "0"], 2, '"0" is less than 1');
    const bad = await warrenFails(
      a,
      ["flow", "add", "in_port=web,ip,nw_dst=10.1.0.0/33 actions=drop"],
      1,
      'at column 16, "nw_dst=10.1.0.0/33": nw_dst: prefix /33 is too long',
    );
    assertEquals(bad.stderr.trim().split("\n").length, 1);
    assert.ok(bad.stderr.startsWith("warren: "));
    // Two flows, the second wrong: neither is added.
    await warrenFails(
      a,
      ["flow", "add", "in_port=web,udp actions=drop", "in_port=web,tp_dst=80 actions=drop"],
      1,
      "tp_dst needs",
    );
    await warrenFails(a, ["flow", "add", "in_port=nope actions=drop"], 1, "nope");
    await warrenFails(a, ["flow", "add", "in_port=web actions=output:nope"], 1, "nope");
    await warrenFails(a, ["flow", "add", "in_port=web"], 1, "needs actions=");
    await warrenFails(
      a,
      ["flow", "add", "priority=5,in_port=web actions=drop"],
      1,
      "installed at priority 90",
    );
    await warrenFails(a, ["trace", "udp"], 1, "needs in_port");
    await warrenFails(a, ["apply", "/nonexistent.yaml"], 1, "No such file");
    await warrenFails(a, ["flow", "dump", "--port", "nope"], 1, 'no port named "nope"');
    await warrenFails(a, ["metrics", "--listen", "nowhere"], 1, "not host:port");
    await warrenFails(
      { nsName: a.ns.name, pinDir: `${a.pinDir}-none` },
      ["flow", "dump"],
      1,
      "warren up",
    );
    assertEquals(await dump(a), before);
    assert.match(await warrenOk(a, ["--help"]), /Commands:[\s\S]*apply[\s\S]*trace/);
  },
);

const STATE = (extra: string[]) => `
ports:
  - { name: web, device: wl0 }
tunnels:
  - { name: vx0, proto: vxlan, options: { remote_ip: flow, key: flow } }
flows:
  - "priority=100,in_port=web,icmp actions=set_tunnel(id=42,dst=192.0.2.2),output:vx0"
  - "priority=100,tun_id=42,in_port=vx0,icmp actions=output:web"
${extra.map((f) => `  - "${f}"`).join("\n")}
`;

privilegedTest(
  "apply: the dry run shows the difference, apply makes it so, again changes nothing",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    const [a] = lab.hosts;
    await warrenOk(a, ["up", "--underlay", "u0"]);
    const file = await Deno.makeTempFile({ suffix: ".yaml" });
    await Deno.writeTextFile(file, STATE(["priority=5,in_port=web actions=drop"]));
    const dry = await warrenOk(a, ["apply", "--dry-run", file]);
    assert.match(dry, /would add port web\nwould add port vx0/);
    assert.match(dry, /flows: 3 to add, 0 to modify, 0 to remove, 0 unchanged/);
    assertEquals(await warrenJson(a, ["port", "list"]), []);

    assert.match(
      await warrenOk(a, ["apply", file]),
      /flows: 3 added, 0 modified, 0 removed, 0 unchanged/,
    );
    assertEquals((await dump(a)).length, 3);
    assert.match(
      await warrenOk(a, ["apply", file]),
      /flows: 0 added, 0 modified, 0 removed, 3 unchanged/,
    );
    // With a port to add, the dry run compares flows as text, by priority
    // and match: one flow moved to the new port is a change, not an add.
    await a.ns.run(["ip", "link", "add", "wl9", "type", "veth"]);
    await Deno.writeTextFile(
      file,
      STATE(["priority=5,in_port=web actions=output:web9"]).replace(
        "  - { name: web, device: wl0 }",
        "  - { name: web, device: wl0 }\n  - { name: web9, device: wl9 }",
      ),
    );
    const moved = await warrenOk(a, ["apply", "--dry-run", file]);
    assert.match(moved, /would add port web9\n~ priority=5,in_port=web actions=output:web9/);
    assert.match(moved, /flows: 0 to add, 1 to modify, 0 to remove, 2 unchanged/);
    await Deno.writeTextFile(file, STATE(["priority=5,in_port=web actions=drop"]));

    // Change one flow, drop one, add one: the diff in JSON, then for real.
    await Deno.writeTextFile(
      file,
      STATE(["priority=5,in_port=web actions=pass", "priority=6,in_port=web,udp actions=drop"])
        .replace(
          /.*tun_id=42.*\n/,
          "",
        ),
    );
    const plan = await warrenJson<Record<string, unknown>>(a, ["apply", "--dry-run", file]);
    assertEquals(plan, {
      ports: { add: [], change: [], remove: [] },
      groups: { add: [], change: [], remove: [] },
      flows: {
        added: 1,
        modified: 1,
        removed: 1,
        unchanged: 1,
        add: ["priority=6,in_port=web,udp actions=drop"],
        modify: ["priority=5,in_port=web actions=pass"],
        remove: ["priority=100,in_port=vx0,icmp,tun_id=42 actions=output:web"],
      },
    });
    assert.match(
      await warrenOk(a, ["apply", file]),
      /flows: 1 added, 1 modified, 1 removed, 1 unchanged/,
    );
    // A wrong file changes nothing: a flow naming a port the file does not have.
    const before = await dump(a);
    await Deno.writeTextFile(file, STATE(["in_port=web2 actions=drop"]));
    await warrenFails(a, ["apply", file], 1, "web2");
    await Deno.writeTextFile(file, "ports: []\nfloes: []\n");
    await warrenFails(a, ["apply", file], 1, `${file}:2: "floes" is not part of a state file`);
    // Errors point at the flow: its line in the file, or its text.
    await Deno.writeTextFile(
      file,
      STATE(["in_port=web actions=drop", "ip,nw_dst=10.0.0.0/40 actions=drop"]),
    );
    await warrenFails(a, ["apply", file], 1, `${file}:10: at column 4`);
    await Deno.writeTextFile(file, STATE(["in_port=web actions=output:vx0"]));
    await warrenFails(
      a,
      ["apply", file],
      1,
      "priority=32768,in_port=web actions=output:vx0: output:vx0 has remote_ip=flow",
    );
    await Deno.writeTextFile(file, '{"flows": [');
    await warrenFails(a, ["apply", file], 1, `${file}:1: not valid JSON`);
    assertEquals(await dump(a), before);
    // JSON is YAML: the same state as JSON, from stdin.
    const json = JSON.stringify({
      ports: [{ name: "web", device: "wl0" }],
      tunnels: [{ name: "vx0", proto: "vxlan", options: { remote_ip: "flow", key: "flow" } }],
      flows: ["priority=5,in_port=web actions=pass"],
    });
    assert.match(
      await warrenOk(a, ["apply", "-"], json),
      /flows: 0 added, 0 modified, 2 removed, 1 unchanged/,
    );
    await Deno.remove(file);
  },
);

privilegedTest("apply switches tables atomically: pings both tables allow never stop", async () => {
  await using lab = await Lab.create({ ipv6: false });
  await overlay(lab);
  const [a, b] = lab.hosts;
  const files = await Promise.all([0, 1].map(async (v) => {
    const f = await Deno.makeTempFile({ suffix: ".yaml" });
    const filler = Array.from(
      { length: 500 },
      (_, i) => `priority=10,in_port=web,ip,nw_dst=10.${200 + v}.${i >> 8}.${i & 255} actions=drop`,
    );
    await Deno.writeTextFile(
      f,
      STATE([
        "priority=90,in_port=web actions=set_tunnel(id=42,dst=192.0.2.2),output:vx0",
        "priority=90,tun_id=42,in_port=vx0 actions=output:web",
        ...filler,
      ]),
    );
    return f;
  }));
  let pinging = true;
  const pinger = ping(a.workload, b.workload.ip, { count: 1500, interval: 0.002 }).finally(() => {
    pinging = false;
  });
  let applied = 0;
  while (pinging) {
    await warrenOk(a, ["apply", files[applied % 2]]);
    applied++;
  }
  const p = await pinger;
  assert.ok(applied >= 3, `only ${applied} table switches happened during the pings`);
  assertEquals([p.sent, p.received], [1500, 1500], p.output);
  for (const f of files) await Deno.remove(f);
});

privilegedTest(
  "concurrent writers: every flow lands once, ids and key references stay exact",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a] = lab.hosts;
    const batch = (p: number, n: number) =>
      Array.from(
        { length: n },
        (_, i) =>
          `priority=20,in_port=web,ip,nw_dst=10.77.${p}.${i} actions=set_tunnel(id=${
            i % 10
          },dst=192.0.2.2),output:vx0`,
      ).join("\n");
    const adds = await Promise.all(
      [0, 1, 2, 3].map((p) => warren(a, ["flow", "add", "--file", "-"], batch(p, 250))),
    );
    for (const r of adds) assertEquals([r.code, r.stdout.trim()], [0, "250 added, 0 replaced"]);
    let flows = await dump(a);
    assertEquals(flows.length, 1004);
    assertEquals(new Set(flows.map((f) => f.flow_id)).size, 1004);
    // Then deleters and adders at once.
    const mixed = await Promise.all([
      warren(a, ["flow", "del", "ip,nw_dst=10.77.0.0/24"]),
      warren(a, ["flow", "del", "ip,nw_dst=10.77.1.0/24"]),
      warren(a, ["flow", "add", "--file", "-"], batch(8, 100)),
      warren(a, ["flow", "add", "--file", "-"], batch(9, 100)),
    ]);
    assertEquals(mixed.map((r) => r.stdout.trim()), [
      "250 deleted",
      "250 deleted",
      "100 added, 0 replaced",
      "100 added, 0 replaced",
    ]);
    flows = await dump(a);
    assertEquals(flows.length, 704);
    assertEquals(new Set(flows.map((f) => f.flow_id)).size, 704);
    const status = await warrenJson<{ tables: { name: string; used: number }[] }>(a, ["status"]);
    const used = (n: string) => status.tables.find((t) => t.name === n)!.used;
    assertEquals([used("flows"), used("tunnel_keys")], [704, 11]);
  },
);

privilegedTest("metrics: a real HTTP client scrapes what the traffic did", async () => {
  await using lab = await Lab.create({ ipv6: false });
  await overlay(lab);
  const [a, b] = lab.hosts;
  await ping(a.workload, b.workload.ip, { count: 5 });
  const port = 19000 + Math.floor(Math.random() * 1000);
  const server = warrenCommand(a, ["metrics", "--listen", `127.0.0.1:${port}`]).spawn();
  try {
    // A plain fetch() from inside the host's namespace, where it listens.
    const script = `
      for (let i = 0; i < 50; i++) {
        try {
          const r = await fetch("http://127.0.0.1:${port}/metrics");
          console.log(r.headers.get("content-type") + "\\n" + await r.text());
          Deno.exit(0);
        } catch { await new Promise((r) => setTimeout(r, 100)); }
      }
      Deno.exit(1);`;
    const text = await a.ns.run([Deno.execPath(), "eval", script]);
    assert.match(text, /^text\/plain; version=0\.0\.4/);
    const value = (name: string, labels: string) => {
      const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(labels));
      assert.ok(line, `no ${name} with ${labels}`);
      return Number(line.split(" ").pop());
    };
    assertEquals(value("warren_port_rx_packets_total", 'port="web"'), 5);
    assertEquals(value("warren_port_tx_bytes_total", 'port="vx0"'), 5 * PING_FRAME);
    assertEquals(value("warren_events_total", 'event="encap"'), 5);
    assertEquals(value("warren_flow_packets_total", 'match="in_port=web,icmp"'), 5);
    assertEquals(
      value("warren_flow_bytes_total", 'match="in_port=vx0,icmp,tun_id=42"'),
      5 * PING_FRAME,
    );
    assertEquals(value("warren_drops_total", 'reason="no_flow"'), 0);
  } finally {
    server.kill("SIGTERM");
    await server.output();
  }
});

privilegedTest("watch shows the busiest flows with their rates", async () => {
  await using lab = await Lab.create({ ipv6: false });
  await overlay(lab);
  const [a, b] = lab.hosts;
  // Pings for as long as watch runs: under load, its start alone can
  // outlast a fixed count of pings.
  const { result: out } = await pingDuring(
    a.workload,
    b.workload.ip,
    () => warrenOk(a, ["watch", "--interval", "1", "--count", "2", "--top", "2"]),
    0.05,
  );
  const frames = out.split(/\n(?=warren watch)/);
  assertEquals(frames.length, 2);
  for (const f of frames) {
    const lines = f.split("\n");
    assert.match(lines[0], /^warren watch — every 1\.\ds, 4 flows$/);
    assertEquals(lines[2].trim(), "pkt/s      bit/s  flow");
    // ~20 pings a second: the two ICMP flows lead.
    const [rate, , ...flow] = lines[3].trim().split(/\s+/);
    assert.ok(Number(rate) >= 5, lines[3]);
    assert.match(flow.join(" "), /icmp/);
    assert.match(f, /port\s+rx pkt\/s\s+tx pkt\/s\nweb\s+\d+/);
  }
});
