/**
 * `deno task demo-fleet`: a fleet of three hosts in throwaway network
 * namespaces following one etcd (the fleet lab of `src/lab/fleet.ts`).
 * Two hosts start their agents, a third joins and its workload becomes
 * reachable, then it leaves and is withdrawn; the operator's view
 * (`warren fleet hosts`, `fleet endpoints`) and a host's flow dump are
 * printed along the way. Everything is removed at the end, also after a
 * failure.
 *
 * @module
 */

import { type FleetHost, FleetLab, type FleetWorkload } from "../lab/fleet.ts";

const CLI = new URL("../cli/main.ts", import.meta.url).pathname;
const bold = (s: string) => Deno.stdout.isTerminal() ? `\x1b[1m${s}\x1b[0m` : s;

/** Runs `warren <args>` (inside `host`'s namespace, on its datapath, if given) and prints it all. */
async function warren(
  lab: FleetLab,
  host: FleetHost | undefined,
  ...args: string[]
): Promise<void> {
  const where = host ? ["--netns", host.ns.name, "--pin-dir", host.pinDir] : [];
  console.log(bold(`${host ? `host ${host.name}` : "operator"}$ warren ${args.join(" ")}`));
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...where, ...args],
    env: { WARREN_ETCD: lab.etcd.url },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (text.trim()) console.log(text.trimEnd().replace(/^/gm, "  "));
  if (!out.success) throw new Error(`warren ${args.join(" ")} failed`);
}

/** Pings `to` from workload `w` and prints the summary. */
async function ping(w: FleetWorkload, host: FleetHost, to: string, count = 3): Promise<void> {
  console.log(bold(`workload ${w.name} on ${host.name}$ ping -c ${count} ${to}`));
  const out = await w.ns.runRaw(["ping", "-c", String(count), "-i", "0.2", "-W", "1", to]);
  const summary = out.stdout.split("\n").find((l) => l.includes("packets transmitted"));
  console.log(`  ${summary ?? out.stderr.trim()}`);
}

/** Waits until `w` gets an answer from `to`, pinging again and again; throws after 10 s. */
async function reachable(w: FleetWorkload, to: string): Promise<void> {
  const deadline = performance.now() + 10_000;
  while ((await w.ns.runRaw(["ping", "-c", "1", "-W", "0.2", to])).code !== 0) {
    if (performance.now() > deadline) throw new Error(`${to} is not reachable from ${w.ip}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Prints agent `h`'s log lines that came since `from`. */
function agentLog(h: FleetHost, from: number): void {
  for (const line of h.agent!.lines.slice(from)) console.log(`  [${h.name}] ${line.slice(25)}`);
}

async function main(): Promise<void> {
  console.log(
    "Starting etcd on loopback and three hosts (h1-h3, underlay 192.0.2.0/24), each with its own\n" +
      "warren datapath and one workload in network blue (10.0.0.0/24)…\n",
  );
  await using lab = await FleetLab.create({ hosts: 3 });
  await warren(lab, undefined, "fleet", "net", "add", "blue");
  const [h1, h2, h3] = lab.hosts;
  const w = [];
  for (const h of lab.hosts) {
    w.push(await h.addWorkload(`web${h.n}`, "blue", `10.0.0.${h.n}`, `02:00:00:00:00:0${h.n}`));
  }
  console.log("\nh1 and h2 start their agents:");
  for (const h of [h1, h2]) {
    const agent = h.startAgent({ verbose: true });
    while (!agent.matching("following the fleet").length) {
      if (agent.exited) throw new Error(`${h.name}'s agent ended:\n${agent.lines.join("\n")}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    agentLog(h, 0);
  }
  // h1 started first: it hears of h2 after its own start.
  while (!h1.read((dp) => dp.dumpFlows().some((f) => dp.describeFlow(f).includes(h2.ip)))) {
    await new Promise((r) => setTimeout(r, 50));
  }
  await ping(w[0], h1, w[1].ip);
  await ping(w[0], h1, w[2].ip);

  console.log("\nh3 joins:");
  const joined = performance.now();
  h3.startAgent({ verbose: true });
  await reachable(w[0], w[2].ip);
  console.log(
    `  h3's workload answers h1's ${(performance.now() - joined).toFixed(0)} ms after its agent ` +
      "was started (Deno's start-up included)",
  );
  agentLog(h3, 0);
  await ping(w[0], h1, w[2].ip);
  await ping(w[2], h3, w[1].ip);
  await warren(lab, undefined, "fleet", "hosts");
  await warren(lab, undefined, "fleet", "endpoints");
  await warren(lab, h1, "flow", "dump");
  await warren(lab, h1, "group", "list");

  console.log("\nh3 leaves (its agent gets SIGTERM and revokes its lease):");
  const from = h1.agent!.lines.length;
  await h3.agent!.stop("SIGTERM");
  h3.agent = undefined;
  await new Promise((r) => setTimeout(r, 1000));
  agentLog(h1, from);
  await ping(w[0], h1, w[2].ip);
  await warren(lab, undefined, "fleet", "hosts");
  await warren(lab, h1, "flow", "dump");
  console.log(
    "\nStopping the agents and etcd, removing the namespaces and everything warren pinned…",
  );
}

if (import.meta.main) await main();
