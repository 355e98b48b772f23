/**
 * Versioned flow sets, and a checker that no packet sees a mixture of two.
 *
 * Version v of owner "fleet"'s set takes one of two shapes, A (odd v) and
 * B (even v), chosen so that going from one to the other adds a flow,
 * removes one, drops a mask and brings one, raises a flow's priority (a
 * new flow in its place) and changes another's actions (the same flow):
 *
 * | flow                                | A (odd v)      | B (even v)     |
 * | ----------------------------------- | -------------- | -------------- |
 * | `ip,nw_dst=10.0.0.1`                | 300 → v·16+1   | —              |
 * | `ip,nw_dst=10.0.0.0/24`             | —              | 250 → v·16+3   |
 * | `ip`                                | 200 → v·16+2   | 210 → v·16+4   |
 * | `ip,nw_src=10.9.9.9`                | 280 → v·16+5   | 280 → v·16+6   |
 *
 * (priority → the tunnel id the flow sets). Three packets then each carry
 * one role per shape: P1 (to 10.0.0.1) 1 or 3, P2 (to 10.0.0.2) 2 or 3,
 * P3 (from 10.9.9.9 to 10.0.0.3) 5 or 6. A packet that meets one flow of
 * the old set and one of the new comes out with a role its version's
 * shape does not give it (P1 with role 2: 10.0.0.1's flow gone, the /24
 * not there yet), or with the operator's catch-all key, 999.
 *
 * Run as a script (`deno run -A versions.ts NETNS PINDIR DEVICE`), this is
 * the checker: it prints `ready`, runs P1, P2 and P3 through a dry-run
 * copy of the local port's program with test-run, round and round until
 * its standard input closes, and prints every tunnel id it saw, in order,
 * as runs.
 *
 * @module
 */

import { ifindex } from "../../src/bpf/netif.ts";
import { skbContext, testRun } from "../../src/bpf/test_run.ts";
import { enterNetns } from "../../src/lab/netns.ts";
import { Datapath } from "../../src/tunnel/datapath.ts";
import type { PortNames } from "../../src/tunnel/match.ts";
import { parseMatch } from "../../src/tunnel/flow_syntax.ts";
import { buildPacket } from "../../src/tunnel/packet.ts";

/** The tunnel id of the operator's catch-all flow, which no version's packet may meet. */
export const CATCH_ALL = 999;

/** The operator's flow under every version: what a packet meets when the owner's flows are all missing. */
export const OPERATOR_FLOW =
  `priority=50,in_port=web actions=set_tunnel(id=${CATCH_ALL},dst=192.0.2.2),output:t0`;

/** Version `v` of the owner's set, as flow text. */
export function versionFlows(v: number): string[] {
  const flow = (p: number, m: string, role: number) =>
    `priority=${p},in_port=web,${m} actions=set_tunnel(id=${
      v * 16 + role
    },dst=192.0.2.2),output:t0`;
  return v % 2
    ? [
      flow(300, "ip,nw_dst=10.0.0.1", 1),
      flow(200, "ip", 2),
      flow(280, "ip,nw_src=10.9.9.9", 5),
    ]
    : [
      flow(250, "ip,nw_dst=10.0.0.0/24", 3),
      flow(210, "ip", 4),
      flow(280, "ip,nw_src=10.9.9.9", 6),
    ];
}

/** The three packets, as matches a frame is built from. */
export const PACKETS = [
  "in_port=web,ip,nw_dst=10.0.0.1",
  "in_port=web,ip,nw_dst=10.0.0.2",
  "in_port=web,ip,nw_src=10.9.9.9,nw_dst=10.0.0.3",
];

/** The role packet `p` (0, 1, 2) has under version `v`. */
export function role(p: number, v: number): number {
  return v % 2 ? [1, 2, 5][p] : [3, 3, 6][p];
}

/** What the checker saw: per packet, runs of `[tunnel id, times]` in the order seen. */
export interface Seen {
  /** Test-runs made. */
  runs: number;
  /** Per packet. */
  ids: [number, number][][];
}

/**
 * What is wrong with `seen`: a tunnel id no version gives its packet, or
 * a version older than one seen before it (each run starts after the
 * previous ended, so versions never go back). Empty when nothing is.
 */
export function mixtures(seen: Seen): string[] {
  const out: string[] = [];
  seen.ids.forEach((runs, p) => {
    let last = 0;
    for (const [id, n] of runs) {
      const v = id >> 4;
      if (id === CATCH_ALL || (id & 15) !== role(p, v)) {
        out.push(`packet ${p + 1} met tunnel id ${id} ${n} times (version ${v})`);
      }
      if (v < last) out.push(`packet ${p + 1} saw version ${v} after ${last}`);
      last = Math.max(last, v);
    }
  });
  return out;
}

/** The tunnel id of a VXLAN packet test-run produced, or -1 for anything else. */
function tunnelId(out: Uint8Array): number {
  // Ethernet, IPv4 without options, UDP, then VXLAN's VNI in bytes 4 to 6.
  if (out.length < 50 || out[12] !== 0x08 || out[13] !== 0x00 || out[23] !== 17) return -1;
  return (out[46] << 16) | (out[47] << 8) | out[48];
}

/** Frames of {@link PACKETS} with the port names of `names`. */
export function frames(names: PortNames): Uint8Array[] {
  return PACKETS.map((m) => buildPacket(parseMatch(m, names).match));
}

async function main(): Promise<void> {
  const [ns, pinDir, dev] = Deno.args;
  let stop = false;
  const closed = Deno.stdin.readable.pipeTo(new WritableStream()).then(() => stop = true);
  enterNetns(ns);
  using dp = Datapath.open(pinDir);
  const programs = dp.dryRunPrograms();
  const program = programs.wr_tc_local;
  const ctx = skbContext(ifindex(dev));
  const packets = frames(dp.portNames());
  const seen: Seen = { runs: 0, ids: packets.map(() => []) };
  console.log("ready");
  while (!stop) {
    // Let the event loop hear stdin close now and then.
    if (seen.runs % 3000 === 0) await new Promise((r) => setTimeout(r, 0));
    for (let p = 0; p < packets.length; p++) {
      const id = tunnelId(testRun(program, { data: packets[p], ctx }).data);
      const runs = seen.ids[p];
      if (runs.length && runs[runs.length - 1][0] === id) runs[runs.length - 1][1]++;
      else runs.push([id, 1]);
      seen.runs++;
    }
  }
  await closed;
  for (const p of Object.values(programs)) p.close();
  console.log(JSON.stringify(seen));
}

if (import.meta.main) await main();

const SCRIPT = new URL(import.meta.url).pathname;

/**
 * Runs the checker on the datapath pinned at `pinDir`, local port device
 * `dev` in namespace `ns`, while `fn` runs; returns what it saw.
 */
export async function whileChecking(
  ns: string,
  pinDir: string,
  dev: string,
  fn: () => Promise<void>,
): Promise<Seen> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ns, pinDir, dev],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("ready\n")) {
    const { value, done } = await out.read();
    if (done) break;
    text += value;
  }
  try {
    await fn();
  } finally {
    await child.stdin.close();
  }
  for (let r = await out.read(); !r.done; r = await out.read()) text += r.value;
  await child.status;
  const last = text.trim().split("\n").pop() ?? "";
  if (!last.startsWith("{")) throw new Error(`the checker failed: ${await stderr}`);
  return JSON.parse(last);
}
