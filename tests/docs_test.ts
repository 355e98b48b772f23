/**
 * The library example in mod.ts runs as written, in a namespace that has
 * the devices it names.
 */
import { assert } from "./helpers/assert.ts";
import { Netns } from "../src/lab/netns.ts";
import { privilegedTest } from "./helpers/privileged.ts";

const ROOT = new URL("../", import.meta.url).pathname;

/** The first ```ts block of a module's doc comment, with imports made absolute. */
function example(file: string): string {
  const text = Deno.readTextFileSync(`${ROOT}${file}`);
  const block = /```ts[^\n]*\n([\s\S]*?)```/.exec(text);
  if (!block) throw new Error(`${file} has no example`);
  return block[1].split("\n").map((l) => l.replace(/^ \* ?/, "")).join("\n")
    .replaceAll('"./mod.ts"', JSON.stringify(`${ROOT}mod.ts`));
}

privilegedTest("the mod.ts example runs as written", async () => {
  await using ns = await Netns.create("wrdoc");
  // No IPv6 on the devices: the workload's peer would send neighbour
  // discovery and MLD into web1 on its own, and the example's flow would
  // count it (its dump expects 0 packets on a quiet port).
  await ns.sh(`
    sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip link add name eth0 type veth peer name peer0
    ip addr add 192.0.2.1/24 dev eth0
    ip link add name veth-web1 type veth peer name wl
    for d in eth0 peer0 veth-web1 wl; do ip link set dev $d up; done`);
  const dir = await Deno.makeTempDir();
  const pinDir = `/sys/fs/bpf/warren-doc-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.writeTextFile(`${dir}/example.ts`, example("mod.ts"));
    // nsenter, not ip netns exec: the latter remounts /sys and hides bpffs.
    const out = await new Deno.Command("nsenter", {
      args: [
        `--net=/run/netns/${ns.name}`,
        Deno.execPath(),
        "run",
        "-A",
        "--config",
        `${ROOT}deno.json`,
        `${dir}/example.ts`,
      ],
      env: { WARREN_PIN_DIR: pinDir },
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.ok(out.success, text);
    assert.match(
      text,
      /priority=32768,in_port=web1 actions=set_tunnel\(id=42,dst=192\.0\.2\.2\),output:vx0 packets: 0n?/,
    );
    assert.match(text, /in_port=vx0,tun_id=42 actions=output:web1 packets:/);
  } finally {
    await ns.within(async () => {
      const { Datapath } = await import("../mod.ts");
      await Datapath.down(pinDir);
    });
    await Deno.remove(dir, { recursive: true });
  }
});
