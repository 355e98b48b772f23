/**
 * A host running warren needs Deno, libbpf.so.1 and the kernel, nothing
 * more: the built objects travel with the program (bytes imports) and load
 * from memory. Proven by copying only what ships into a fresh directory and
 * running the CLI in a mount namespace where the compiler fails. And after
 * set-up, running warren fetches nothing: the demo's output has no
 * package-download lines.
 */
import { existsSync } from "node:fs";
import { assert, assertEquals } from "./helpers/assert.ts";
import { Netns } from "../src/lab/netns.ts";
import { run } from "../src/lab/run.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { PROGRAMS } from "../src/maps/names.ts";

const ROOT = new URL("../", import.meta.url).pathname;

privilegedTest("the CLI runs with no compiler and no BPF sources on the host", async () => {
  const ship = await Deno.makeTempDir({ prefix: "warren-ship-" });
  await using ns = await Netns.create("wrrt");
  const pinDir = `/sys/fs/bpf/warren-rt-${crypto.randomUUID().slice(0, 8)}`;
  try {
    // What a package of warren holds: TypeScript, config, lock, objects.
    await run([
      "cp",
      "-r",
      `${ROOT}src`,
      `${ROOT}mod.ts`,
      `${ROOT}deno.json`,
      `${ROOT}deno.lock`,
      ship,
    ]);
    await Deno.mkdir(`${ship}/bpf/build`, { recursive: true });
    for (const f of Deno.readDirSync(`${ROOT}bpf/build`)) {
      if (f.name.endsWith(".o")) {
        await Deno.copyFile(`${ROOT}bpf/build/${f.name}`, `${ship}/bpf/build/${f.name}`);
      }
    }
    await ns.sh(
      "ip link add name u0 type veth peer name p0 && ip addr add 192.0.2.1/24 dev u0 && ip link set u0 up && ip link set p0 up",
    );
    // clang and llc answer with a failure inside this mount namespace.
    const script = `
      set -e
      printf '#!/bin/sh\\necho "compiler called" >&2\\nexit 99\\n' > ${ship}/nocc
      chmod +x ${ship}/nocc
      for c in /usr/bin/clang* /usr/bin/llc* /usr/lib/llvm-*/bin/clang /usr/lib/llvm-*/bin/llc; do
        [ -e "$c" ] && mount --bind ${ship}/nocc "$c"
      done
      ! clang --version >/dev/null 2>&1
      cd ${ship}
      W="${Deno.execPath()} run -A src/cli/main.ts --netns ${ns.name} --pin-dir ${pinDir}"
      $W up --underlay u0
      $W tunnel add vx0 vxlan remote_ip=flow key=flow
      $W status --json
      $W down`;
    const out = await run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script]);
    assert.match(out, /warren is up on u0/);
    const status = JSON.parse(out.slice(out.indexOf("{"), out.lastIndexOf("}") + 1));
    assertEquals(status.programs.map((p: { name: string }) => p.name), [...PROGRAMS]);
    assert.ok(status.programs.every((p: { id: number }) => p.id > 0));
    assert.match(out, /warren is down/);
  } finally {
    await Deno.remove(ship, { recursive: true });
  }
});

privilegedTest(
  "after set-up the demo prints no package downloads, even after a deno task ran first",
  async () => {
    const denoDir = await Deno.makeTempDir({ prefix: "warren-deno-dir-" });
    const env = { DENO_DIR: denoDir };
    const deno = async (...args: string[]) => {
      const out = await new Deno.Command(Deno.execPath(), { args, cwd: ROOT, env }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert.ok(out.success, `deno ${args.join(" ")}: ${text}`);
      return text;
    };
    try {
      // A task before set-up caches the npm packages' files without their
      // registry metadata, which deno install alone never adds afterwards.
      await deno("task", "build");
      assert.ok(
        !existsSync(`${denoDir}/npm/registry.npmjs.org/yaml/registry.json`),
        "deno task now caches registry metadata too: this test no longer sets up the failure",
      );
      await deno("run", "-A", "scripts/cache_npm.ts");
      const demo = await deno("run", "-A", "src/demo/main.ts");
      assert.match(demo, /20 MB arrived intact/);
      assertEquals(demo.split("\n").filter((l) => /Download/.test(l)), []);
    } finally {
      await Deno.remove(denoDir, { recursive: true });
    }
  },
);
