/**
 * Every example in the documentation (the library's modules and the README)
 * runs as written. Those that need nothing run under `deno test --doc`,
 * started here. Those that need root or a server are marked `ignore`, so
 * that `deno test --doc` never touches the host's devices, and say what
 * they need on their first line: they run here too, type-checked first. Root examples run each in a
 * namespace that has the devices they name, with a pin directory of its
 * own; etcd examples against a throwaway etcd, in a directory holding the
 * agent configuration they read.
 */
import { assert, assertEquals } from "./helpers/assert.ts";
import { Netns } from "../src/lab/netns.ts";
import { TestEtcd } from "../src/lab/etcd.ts";
import { privilegedTest } from "./helpers/privileged.ts";

const ROOT = new URL("../", import.meta.url).pathname;
/** The first line of an example that needs something, by what it needs. */
const NEEDS = {
  root: "// Needs root: tests/docs_test.ts runs this example in a network namespace.",
  etcd: "// Needs etcd: tests/docs_test.ts runs this example against a throwaway etcd.",
};

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

/** The files whose examples are documentation: test helpers' snippets are not. */
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
const IGNORED = ALL.filter((ex) => ex.ignored);
const needing = (what: keyof typeof NEEDS) =>
  IGNORED.filter((ex) => ex.code.split("\n")[0] === NEEDS[what]);

/** Writes each example where it runs from, and type-checks them all in one go. */
async function prepare(list: Example[], dir: string): Promise<(ex: Example) => string> {
  const path = (ex: Example) => `${dir}/${ex.file.replaceAll("/", "_")}_${ex.line}.ts`;
  for (const ex of list) await Deno.writeTextFile(path(ex), standalone(ex));
  // They share most of their modules: one check is much faster than several.
  const check = await new Deno.Command(Deno.execPath(), {
    args: ["check", "--config", `${ROOT}deno.json`, ...list.map(path)],
  }).output();
  assert.ok(check.success, new TextDecoder().decode(check.stderr));
  return path;
}

/** Runs the example at `path` (behind the command prefix `wrap`); fails unless it exits 0. */
async function runExample(
  path: string,
  options: { wrap?: string[]; cwd: string; env?: Record<string, string> },
): Promise<string> {
  const [cmd, ...pre] = [...(options.wrap ?? []), Deno.execPath()];
  const out = await new Deno.Command(cmd, {
    args: [...pre, "run", "-A", "--config", `${ROOT}deno.json`, path],
    cwd: options.cwd,
    env: options.env,
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.ok(out.success, text);
  return text;
}

Deno.test("every example left to this test says what it needs, and none is skipped otherwise", () => {
  // mod.ts, README, the datapath, apply, typed maps, objects, src/bpf, the fleet.
  assert.ok(IGNORED.length >= 8, `found only ${IGNORED.length} examples marked ignore`);
  const needs = Object.values(NEEDS);
  assertEquals(
    IGNORED.filter((ex) => !needs.includes(ex.code.split("\n")[0])).map((ex) =>
      `${ex.file}:${ex.line}`
    ),
    [],
  );
  // An example that needs nothing and is not run would be one nobody checks.
  assert.ok(ALL.some((ex) => !ex.ignored), "no example runs under deno test --doc");
});

Deno.test("the examples that need nothing run under deno test --doc", async () => {
  // Only the files that have such examples: each file given is type-checked whole.
  const files = [...new Set(ALL.filter((ex) => !ex.ignored).map((ex) => ex.file))];
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["test", "-A", "--doc", "--config", `${ROOT}deno.json`, ...files],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.ok(out.success, text);
  const ran = /(\d+) passed \| 0 failed/.exec(text);
  assertEquals(Number(ran?.[1]), ALL.filter((ex) => !ex.ignored).length, text);
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
  try {
    const path = await prepare(needing("root"), dir);
    for (const ex of needing("root")) {
      await t.step(`${ex.file}:${ex.line}`, async () => {
        const pinDir = `/sys/fs/bpf/warren-doc-${crypto.randomUUID().slice(0, 8)}`;
        try {
          // nsenter, not ip netns exec: the latter remounts /sys and hides bpffs.
          const text = await runExample(path(ex), {
            wrap: ["nsenter", `--net=/run/netns/${ns.name}`],
            cwd: ROOT,
            env: { WARREN_PIN_DIR: pinDir },
          });
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

Deno.test("the examples that need etcd run as written", async (t) => {
  await using etcd = await TestEtcd.start();
  const dir = await Deno.makeTempDir({ prefix: "warren-doc-" });
  try {
    const path = await prepare(needing("etcd"), dir);
    await Deno.writeTextFile(
      `${dir}/agent.yaml`,
      `host: doc1\netcd: { endpoints: ["${etcd.url}"] }\nunderlay: { addresses: [192.0.2.1] }\n`,
    );
    for (const ex of needing("etcd")) {
      await t.step(`${ex.file}:${ex.line}`, async () => {
        await runExample(path(ex), { cwd: dir });
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
