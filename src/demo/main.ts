/**
 * `deno task demo`: a two-host VXLAN overlay in throwaway network
 * namespaces, driven through the warren CLI exactly as a person would type
 * it, with traffic both ways and the flow dumps and counters afterwards.
 * Everything is removed at the end, also after a failure.
 *
 * @module
 */

import { Lab, type LabHost } from "../lab/topology.ts";

const CLI = new URL("../cli/main.ts", import.meta.url).pathname;
const bold = (s: string) => Deno.stdout.isTerminal() ? `\x1b[1m${s}\x1b[0m` : s;

/** Runs `warren <args>` on `host` and prints the command and its output. */
async function warren(host: LabHost, ...args: string[]): Promise<void> {
  console.log(
    bold(
      `host ${host.label}$ warren ${args.map((a) => (/[\s(),]/.test(a) ? `'${a}'` : a)).join(" ")}`,
    ),
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "--netns", host.ns.name, "--pin-dir", host.pinDir, ...args],
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (text.trim()) console.log(text.trimEnd().replace(/^/gm, "  "));
  if (!out.success) throw new Error(`warren ${args[0]} failed on host ${host.label}`);
}

async function shell(host: LabHost, who: "host" | "workload", script: string): Promise<string> {
  const ns = who === "host" ? host.ns : host.workload.ns;
  console.log(bold(`${who} ${host.label}$ ${script}`));
  const out = await ns.runRaw(["sh", "-c", script]);
  const text = (out.stdout + out.stderr).trimEnd();
  if (text) console.log(text.replace(/^/gm, "  "));
  return out.stdout;
}

async function main(): Promise<void> {
  console.log(
    "Building two hosts joined by an underlay (192.0.2.0/24), a workload behind each (10.1.0.0/24)…\n",
  );
  await using lab = await Lab.create({ workloadMtu: 1450, ipv6: false });
  for (const host of lab.hosts) {
    const peer = lab.peer(host);
    await warren(host, "up", "--underlay", host.underlay);
    await warren(host, "port", "add", "web", host.workload.port);
    await warren(host, "tunnel", "add", "vx0", "vxlan", "remote_ip=flow", "key=flow");
    await warren(
      host,
      "flow",
      "add",
      `priority=100,in_port=web,ip actions=set_tunnel(id=42,dst=${peer.ip}),output:vx0`,
      `priority=90,in_port=web actions=set_tunnel(id=42,dst=${peer.ip}),output:vx0`,
      "tun_id=42,in_port=vx0 actions=output:web",
    );
    console.log();
  }
  const [a, b] = lab.hosts;
  await shell(a, "workload", `ping -c 3 -i 0.2 ${b.workload.ip} | tail -2`);
  await shell(b, "workload", `ping -c 3 -i 0.2 -s 3000 ${a.workload.ip} | tail -2`);
  // A 20 MB TCP transfer through the tunnel, checked end to end.
  const payload = await Deno.makeTempFile({ prefix: "warren-demo-" });
  try {
    const f = await Deno.open(payload, { write: true });
    for (let i = 0; i < 320; i++) await f.write(crypto.getRandomValues(new Uint8Array(65536)));
    f.close();
    const server = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        b.workload.ns.name,
        "sh",
        "-c",
        "timeout 30 socat -u TCP-LISTEN:5001,reuseaddr - | sha256sum",
      ],
      stdout: "piped",
    }).spawn();
    await new Promise((r) => setTimeout(r, 300));
    const sent = await shell(
      a,
      "workload",
      `sha256sum < ${payload} && socat -u OPEN:${payload} TCP:${b.workload.ip}:5001`,
    );
    const received = new TextDecoder().decode((await server.output()).stdout).trim();
    console.log(`  sha256 received on B: ${received}`);
    console.log(
      sent.split(" ")[0] === received.split(" ")[0] ? "  20 MB arrived intact\n" : "  MISMATCH\n",
    );
  } finally {
    await Deno.remove(payload);
  }
  for (const host of lab.hosts) {
    await warren(host, "flow", "dump");
    await warren(host, "stats");
    console.log();
  }
  console.log("Removing the namespaces and everything warren pinned…");
}

if (import.meta.main) await main();
