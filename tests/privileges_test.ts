/**
 * Privileges: pins only their owner may open, warren with no more than
 * CAP_BPF and CAP_NET_ADMIN (CAP_PERFMON as well to load programs, and the
 * kernel rule that makes it so), and a missing capability named instead of
 * a bare EPERM.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Lab, type LabHost } from "../src/lab/topology.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import {
  type CliResult,
  overlay,
  overlayState,
  warren,
  warrenJson,
  warrenOk,
} from "./helpers/cli.ts";
import { lockPath } from "../src/tunnel/lock.ts";
import { ping } from "./helpers/traffic.ts";
import { runRaw } from "../src/lab/run.ts";
import { BUILD_DIR } from "./helpers/objects.ts";

const CLI = new URL("../src/cli/main.ts", import.meta.url).pathname;
const LOAD_OBJECT = new URL("./helpers/load_object.ts", import.meta.url).pathname;

/** Every path under `dir`, itself included. */
function walk(dir: string): string[] {
  const out = [dir];
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

/** `cmd` run as root but holding only `caps` (setpriv's names, such as "bpf"). */
function withOnly(caps: string[], cmd: string[]): string[] {
  const set = ["-all", ...caps.map((c) => `+${c}`)].join(",");
  return [
    "setpriv",
    `--inh-caps=${set}`,
    `--ambient-caps=${set}`,
    `--bounding-set=${set}`,
    "--",
    ...cmd,
  ];
}

/** `cmd` run as the user nobody, holding `caps` as ambient capabilities. */
function asNobody(caps: string[], cmd: string[]): string[] {
  const set = ["-all", ...caps.map((c) => `+${c}`)].join(",");
  return [
    "setpriv",
    "--reuid=nobody",
    "--regid=nogroup",
    "--clear-groups",
    `--inh-caps=${set}`,
    `--ambient-caps=${set}`,
    "--",
    ...cmd,
  ];
}

/** `warren args` on `h`, entered with nsenter, holding only `caps`. */
async function warrenWith(h: LabHost, caps: string[], args: string[]): Promise<CliResult> {
  const cmd = withOnly(caps, [Deno.execPath(), "run", "-A", CLI, "--pin-dir", h.pinDir, ...args]);
  // nsenter first: entering a namespace is not among the capabilities kept.
  const r = await runRaw(["nsenter", `--net=/run/netns/${h.ns.name}`, ...cmd]);
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

privilegedTest(
  "pins are owner-only: another user, even holding CAP_BPF, can neither read nor change them",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a] = lab.hosts;
    const paths = walk(a.pinDir);
    assert.ok(paths.length > 20, `${paths.length} pins`);
    for (const p of paths) {
      const st = Deno.statSync(p);
      assertEquals(st.uid, 0, p);
      assertEquals(st.mode! & 0o7777, st.isDirectory ? 0o700 : 0o600, p);
    }
    const config = `${a.pinDir}/maps/wr_config`;
    const prog = `${a.pinDir}/progs/wr_xdp_underlay`;
    const zeros = Array(8).fill("0");
    const tries = [
      ["bpftool", "map", "dump", "pinned", config],
      ["bpftool", "map", "update", "pinned", config, "key", "0", "0", "0", "0", "value", ...zeros],
      ["bpftool", "prog", "show", "pinned", prog],
    ];
    // The control: root may (else the refusals below prove nothing).
    for (const t of [tries[0], tries[2]]) assertEquals((await runRaw(t)).code, 0, t.join(" "));
    for (const caps of [[], ["bpf", "net_admin"], ["bpf", "net_admin", "perfmon"]]) {
      for (const t of tries) {
        const r = await runRaw(asNobody(caps, t));
        assert.notEqual(r.code, 0, `nobody with [${caps}] ran ${t.join(" ")}`);
        // bpftool reports the EACCES of the owner-only directory as a
        // path "not in bpf file system".
        assert.match(r.stderr, /Permission denied|not permitted|not in bpf file system/, r.stderr);
      }
    }
    const st = await runRaw(asNobody(["bpf"], ["stat", config]));
    assert.match(st.stderr, /Permission denied/);
    // The table is unchanged.
    const s = await warrenJson<{ tables: { name: string; used: number }[] }>(a, ["status"]);
    assertEquals(s.tables.find((t) => t.name === "flows")!.used, 4);
  },
);

privilegedTest(
  "with only CAP_BPF and CAP_NET_ADMIN every command works but up and trace, which name CAP_PERFMON",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a, b] = lab.hosts;
    const min = ["bpf", "net_admin"];
    const ok = async (args: string[]) => {
      const r = await warrenWith(a, min, args);
      assertEquals(r.code, 0, `warren ${args.join(" ")}: ${r.stderr}`);
      return r.stdout;
    };
    // Take a's datapath apart and build it again, with the least.
    await ok(["flow", "del"]);
    await ok(["port", "del", "web"]);
    await ok(["tunnel", "del", "vx0"]);
    assertEquals((await ping(a.workload, b.workload.ip, { count: 2 })).received, 0);
    await ok(["port", "add", "web", "wl0"]);
    await ok(["tunnel", "add", "vx0", "vxlan", "remote_ip=flow", "key=flow"]);
    const state = overlayState([
      `priority=90,in_port=web actions=set_tunnel(id=42,dst=${b.ip}),output:vx0`,
      "priority=90,in_port=vx0,tun_id=42 actions=output:web",
    ]);
    const file = await Deno.makeTempFile({ suffix: ".json" });
    await Deno.writeTextFile(file, state);
    await ok(["apply", file]);
    await Deno.remove(file);
    await ok(["flow", "add", "priority=100,in_port=vx0,icmp,tun_id=42 actions=output:web"]);
    assertEquals((await ping(a.workload, b.workload.ip, { count: 4 })).received, 4);
    const flows = JSON.parse(await ok(["flow", "dump", "--json", "icmp"]));
    assertEquals(flows.map((f: { packets: number }) => f.packets), [4]);
    assert.match(await ok(["status"]), /wr_xdp_underlay/);
    assert.match(await ok(["stats"]), /web/);
    await ok(["flow", "mod", "priority=100,in_port=vx0,icmp,tun_id=42 actions=drop"]);
    assertEquals((await ping(a.workload, b.workload.ip, { count: 2 })).received, 0);

    // Loading programs needs CAP_PERFMON too, and says so.
    for (const args of [["up", "--underlay", "u0"], ["trace", "in_port=web,icmp"]]) {
      const r = await warrenWith(a, min, args);
      assertEquals(r.code, 1, r.stderr);
      assertEquals(
        r.stderr.trim().split("\n")[0],
        `warren: warren ${args[0]} needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON; ` +
          "this process lacks CAP_PERFMON (run it as root, or grant them, for example with " +
          "capsh or a systemd unit's AmbientCapabilities)",
      );
    }
    const up = await warrenWith(a, [...min, "perfmon"], ["up", "--underlay", "u0"]);
    assertEquals(up.code, 0, up.stderr);
    const trace = await warrenWith(a, [...min, "perfmon"], ["trace", "in_port=web,icmp"]);
    assertEquals(trace.code, 0, trace.stderr);

    // Each missing capability is named.
    const noBpf = await warrenWith(a, ["net_admin"], ["flow", "del"]);
    assertEquals(noBpf.code, 1);
    assert.match(
      noBpf.stderr,
      /warren flow del needs CAP_BPF and CAP_NET_ADMIN; this process lacks CAP_BPF \(/,
    );
    const noNet = await warrenWith(a, ["bpf"], ["port", "del", "web"]);
    assert.match(noNet.stderr, /warren port del needs .*; this process lacks CAP_NET_ADMIN \(/);
    const none = await warrenWith(a, [], ["tunnel", "add", "gn0", "geneve"]);
    assert.match(none.stderr, /lacks CAP_BPF and CAP_NET_ADMIN \(/);
    // Reading takes no capability on this kernel: the pins' modes decide.
    for (const args of [["flow", "dump"], ["status"], ["port", "list"], ["stats"]]) {
      const r = await warrenWith(a, [], args);
      assertEquals(r.code, 0, `warren ${args.join(" ")} with no capability: ${r.stderr}`);
    }
    // --netns enters a namespace, which takes CAP_SYS_ADMIN.
    const ns = await runRaw(
      withOnly(min, [Deno.execPath(), "run", "-A", CLI, "--netns", a.ns.name, "status"]),
    );
    assert.match(ns.stderr, /warren --netns needs CAP_SYS_ADMIN; this process lacks CAP_SYS_ADMIN/);

    await ok(["down"]);
    assertEquals((await runRaw(["test", "-e", a.pinDir])).code, 1);
  },
);

privilegedTest(
  "why loading needs CAP_PERFMON: the kernel keeps an skb's checksum state from loaders without it",
  async () => {
    // The datapath's own reader of ip_summed (csum.h), in a program alone.
    const object = `${BUILD_DIR}checksum_state.bpf.o`;
    const load = (caps: string[]) =>
      runRaw(withOnly(caps, [Deno.execPath(), "run", "-A", LOAD_OBJECT, object]));
    const refused = await load(["bpf", "net_admin"]);
    assertEquals(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /prohibited for !root|allowed only to CAP_PERFMON/);
    const loaded = await load(["bpf", "net_admin", "perfmon"]);
    assertEquals(loaded.code, 0, loaded.stderr);
  },
);

privilegedTest(
  "up --group shares the datapath with one group: its members may open it, others still may not",
  async () => {
    await using lab = await Lab.create({ ipv6: false });
    await overlay(lab);
    const [a] = lab.hosts;
    const group = "warren-test";
    await runRaw(["groupadd", "-f", group]);
    try {
      const gid = Number((await runRaw(["getent", "group", group])).stdout.split(":")[2]);
      // Shared after the fact, by an up that upgrades; pins made later
      // (a new port's link) join the group too.
      await warrenOk(a, ["up", "--underlay", "u0", "--group", group]);
      await a.ns.run(["ip", "link", "add", "sp0", "type", "veth", "peer", "name", "sp1"]);
      await warrenOk(a, ["port", "add", "spare", "sp0"]);
      // And a new flow index, which apply pins beside the old one.
      const file = await Deno.makeTempFile({ suffix: ".json" });
      await Deno.writeTextFile(
        file,
        JSON.stringify({ ports: [{ name: "web", device: "wl0" }], flows: [] }),
      );
      const before = walk(a.pinDir).filter((p) => p.includes("/flow_index/"));
      await warrenOk(a, ["apply", file]);
      await Deno.remove(file);
      const after = walk(a.pinDir).filter((p) => p.includes("/flow_index/"));
      assert.ok(after.some((p) => !before.includes(p)), `a new index pin: ${after}`);
      const paths = walk(a.pinDir);
      assert.ok(paths.some((p) => p.includes("@")), "a link pin made after sharing");
      for (const p of paths) {
        const st = Deno.statSync(p);
        assertEquals([st.uid, st.gid], [0, gid], p);
        assertEquals(st.mode! & 0o7777, st.isDirectory ? 0o2770 : 0o660, p);
      }
      const lock = Deno.statSync(lockPath(a.pinDir));
      assertEquals([lock.gid, lock.mode! & 0o777], [gid, 0o660]);

      // Opening a pin read-write takes write permission on it.
      const dump = ["bpftool", "map", "show", "pinned", `${a.pinDir}/maps/wr_config`];
      const member = ["setpriv", "--reuid=nobody", "--regid=nogroup", `--groups=${gid}`, "--"];
      // Since 6.5 the kernel lets anyone use a pinned map the file mode
      // lets them open, so the mode is the whole gate: a member without
      // any capability opens it.
      assertEquals((await runRaw([...member, ...dump])).code, 0, "a member opens the maps");
      assert.notEqual((await runRaw(asNobody(["bpf"], dump))).code, 0, "a stranger does not");
    } finally {
      await warren(a, ["down"]);
      await runRaw(["groupdel", group]);
    }
  },
);

privilegedTest(
  "the object check needs no privilege: it passes holding no capability at all",
  async () => {
    // uid 0 keeps its own Deno cache readable; an empty bounding set leaves
    // it no capability, which is all the kernel's BPF checks look at.
    const caps = await runRaw(withOnly([], ["grep", "^CapEff", "/proc/self/status"]));
    assert.match(caps.stdout, /^CapEff:\s+0+$/m);
    const test = new URL("./object_test.ts", import.meta.url).pathname;
    const r = await runRaw(
      withOnly([], ["env", "NO_COLOR=1", Deno.execPath(), "test", "-A", test]),
    );
    assertEquals(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^ok \| 6 passed \| 0 failed/m);
  },
);
