/**
 * Runs the real `warren` command line, as a separate process, against a
 * lab host's pinned datapath.
 *
 * @module
 */

import { assert } from "./assert.ts";
import type { Lab, LabHost } from "../../src/lab/topology.ts";

const CLI = new URL("../../src/cli/main.ts", import.meta.url).pathname;

/** What one run printed and how it ended. */
export interface CliResult {
  /** Exit code. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/** Where a command runs: a namespace (by name) and a pin directory. */
export type Target = LabHost | { nsName?: string; pinDir: string };

function targetArgs(t: Target): string[] {
  const ns = "ns" in t ? t.ns.name : t.nsName;
  return [...(ns ? ["--netns", ns] : []), "--pin-dir", t.pinDir];
}

/** The command that runs `warren args` on `t`, for spawning by hand. */
export function warrenCommand(
  t: Target,
  args: string[],
  stdin = false,
  env?: Record<string, string>,
): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...targetArgs(t), ...args],
    env,
    stdin: stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  });
}

/** Runs `warren args` on `t`, whatever its exit code. */
export async function warren(
  t: Target,
  args: string[],
  stdin?: string,
  env?: Record<string, string>,
): Promise<CliResult> {
  const child = warrenCommand(t, args, stdin !== undefined, env).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** Runs `warren args` on `t`; it must exit 0. Returns its standard output. */
export async function warrenOk(t: Target, args: string[], stdin?: string): Promise<string> {
  const r = await warren(t, args, stdin);
  assert.equal(r.code, 0, `warren ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** Runs `warren args --json` on `t` and parses what it printed. */
export async function warrenJson<T = unknown>(t: Target, args: string[]): Promise<T> {
  return JSON.parse(await warrenOk(t, [...args, "--json"])) as T;
}

/**
 * Runs `warren args` on `t`; it must fail with `code` and say why in one
 * line on standard error that contains `includes`.
 */
export async function warrenFails(
  t: Target,
  args: string[],
  code: 1 | 2,
  includes: string,
): Promise<CliResult> {
  const r = await warren(t, args);
  assert.equal(r.code, code, `warren ${args.join(" ")}: exit ${r.code}, stderr: ${r.stderr}`);
  assert.ok(r.stderr.includes(includes), `stderr lacks "${includes}": ${r.stderr}`);
  return r;
}

/** Both hosts up through the CLI, with a VXLAN tunnel and ICMP flows apart. */
export async function overlay(lab: Lab): Promise<void> {
  for (const host of lab.hosts) {
    const peer = lab.peer(host);
    await warrenOk(host, ["up", "--underlay", host.underlay]);
    await warrenOk(host, ["port", "add", "web", host.workload.port]);
    await warrenOk(host, ["tunnel", "add", "vx0", "vxlan", "remote_ip=flow", "key=flow"]);
    await warrenOk(host, [
      "flow",
      "add",
      `priority=100,in_port=web,icmp actions=set_tunnel(id=42,dst=${peer.ip}),output:vx0`,
      `priority=90,in_port=web actions=set_tunnel(id=42,dst=${peer.ip}),output:vx0`,
      "priority=100,tun_id=42,in_port=vx0,icmp actions=output:web",
      "priority=90,tun_id=42,in_port=vx0 actions=output:web",
    ]);
    // Static neighbours: no ARP, so the ICMP flows count exactly the pings.
    await host.workload.ns.run([
      "ip",
      "neigh",
      "replace",
      peer.workload.ip,
      "lladdr",
      peer.workload.mac,
      "dev",
      host.workload.dev,
      "nud",
      "permanent",
    ]);
  }
}

/** A state file (JSON) of `overlay`'s port and tunnel with `flows`. */
export function overlayState(flows: string[]): string {
  return JSON.stringify({
    ports: [{ name: "web", device: "wl0" }],
    tunnels: [{ name: "vx0", proto: "vxlan", options: { remote_ip: "flow", key: "flow" } }],
    flows,
  });
}
