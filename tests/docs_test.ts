/**
 * Every example in the documentation runs as written. Those that need no
 * privileges run under `deno test --doc` (the test task passes it); those
 * that need root are marked `ignore`, so that `deno test --doc` never
 * touches the host's devices, and say so on their first line: they run
 * here, type-checked first, each in a namespace that has the devices they
 * name and with a pin directory of its own.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Netns } from "../src/lab/netns.ts";
import { privilegedTest } from "./helpers/privileged.ts";

const ROOT = new URL("../", import.meta.url).pathname;
/** The first line of every example that needs root. */
const NEEDS_ROOT = "// Needs root: tests/docs_test.ts runs this example in a network namespace.";

/** One fenced TypeScript example. */
interface Example {
  /** Where it is, from the top of the checkout. */
  file: string;
  /** The line of its opening fence, from 1. */
  line: number;
  /** Marked `ignore`: not run by `deno test --doc`. */
  ignored: boolean;
  /** Its code. */
  code: string;
}

/** The files whose examples `deno test --doc` reads (see deno.json's test.include). */
function documented(): string[] {
  const files = ["mod.ts", "README.md"];
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(`${ROOT}${dir}`)) {
      if (e.isDirectory) walk(`${dir}/${e.name}`);
      else if (e.name.endsWith(".ts")) files.push(`${dir}/${e.name}`);
    }
  };
  walk("src");
  return files.sort();
}

/** The fenced `ts` examples of `file`, JSDoc's leading ` * ` removed. */
function examples(file: string): Example[] {
  const lines = Deno.readTextFileSync(`${ROOT}${file}`).split("\n")
    .map((l) => (file.endsWith(".ts") ? l.replace(/^\s*\* ?/, "") : l));
  const out: Example[] = [];
  for (let i = 0; i < lines.length; i++) {
    const fence = /^```(ts|typescript)\b(.*)$/.exec(lines[i]);
    if (!fence) continue;
    const end = lines.indexOf("```", i + 1);
    out.push({
      file,
      line: i + 1,
      ignored: /\bignore\b/.test(fence[2]),
      code: lines.slice(i + 1, end).join("\n"),
    });
    i = end;
  }
  return out;
}

/** `code` with its relative imports made absolute: it runs from elsewhere. */
function standalone(ex: Example): string {
  const base = new URL(ex.file, `file://${ROOT}`);
  return ex.code.replace(
    /((?:from|import)\s+)"(\.\.?\/[^"]+)"/g,
    (_, kw, spec) => `${kw}"${new URL(spec, base).href}"`,
  );
}

/** What an example prints that shows it did its job, beyond exiting 0. */
const PRINTS: Record<string, RegExp[]> = {
  "mod.ts": [
    /priority=32768,in_port=web1 actions=set_tunnel\(id=42,dst=192\.0\.2\.2\),output:vx0 packets: 0n?/,
    /in_port=vx0,tun_id=42 actions=output:web1 packets:/,
  ],
};

const ALL = documented().flatMap(examples);
const PRIVILEGED = ALL.filter((ex) => ex.ignored);

Deno.test("every example left to this test says it needs root, and none is skipped otherwise", () => {
  // mod.ts, README, the datapath, apply, typed maps, objects, src/bpf.
  assert.ok(PRIVILEGED.length >= 7, `found only ${PRIVILEGED.length} examples marked ignore`);
  assertEquals(
    PRIVILEGED.filter((ex) => ex.code.split("\n")[0] !== NEEDS_ROOT).map((ex) =>
      `${ex.file}:${ex.line}`
    ),
    [],
  );
  // An example that needs no root and is not run would be one nobody checks.
  assert.ok(ALL.some((ex) => !ex.ignored), "no example runs under deno test --doc");
});

privilegedTest("the examples that need root run as written", async (t) => {
  await using ns = await Netns.create("wrdoc");
  // No IPv6 on the devices: the workload's peer would send neighbour
  // discovery and MLD into web1 on its own, and the example's flow would
  // count it (its dump expects 0 packets on a quiet port).
  await ns.sh(`
    sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip link add name eth0 type veth peer name peer0
    ip addr add 192.0.2.1/24 dev eth0
    ip link add name veth-web1 type veth peer name wl
    ip link add name veth0 type veth peer name veth0p
    for d in eth0 peer0 veth-web1 wl veth0 veth0p; do ip link set dev $d up; done`);
  const dir = await Deno.makeTempDir({ prefix: "warren-doc-" });
  const path = (ex: Example) => `${dir}/${ex.file.replaceAll("/", "_")}_${ex.line}.ts`;
  try {
    for (const ex of PRIVILEGED) await Deno.writeTextFile(path(ex), standalone(ex));
    // One type-check for all: they share most of their modules.
    const check = await new Deno.Command(Deno.execPath(), {
      args: ["check", "--config", `${ROOT}deno.json`, ...PRIVILEGED.map(path)],
    }).output();
    assert.ok(check.success, new TextDecoder().decode(check.stderr));
    for (const ex of PRIVILEGED) {
      await t.step(`${ex.file}:${ex.line}`, async () => {
        const pinDir = `/sys/fs/bpf/warren-doc-${crypto.randomUUID().slice(0, 8)}`;
        try {
          // nsenter, not ip netns exec: the latter remounts /sys and hides bpffs.
          const out = await new Deno.Command("nsenter", {
            args: [
              `--net=/run/netns/${ns.name}`,
              Deno.execPath(),
              "run",
              "-A",
              "--config",
              `${ROOT}deno.json`,
              path(ex),
            ],
            cwd: ROOT,
            env: { WARREN_PIN_DIR: pinDir },
          }).output();
          const text = new TextDecoder().decode(out.stdout) +
            new TextDecoder().decode(out.stderr);
          assert.ok(out.success, text);
          for (const re of PRINTS[ex.file] ?? []) assert.match(text, re);
        } finally {
          await ns.within(async () => {
            const { Datapath } = await import("../mod.ts");
            await Datapath.down(pinDir);
          });
        }
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
