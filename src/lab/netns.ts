/**
 * Throwaway network namespaces for the demo, tests and benches, removed
 * even when something fails.
 *
 * `enter()` moves the JavaScript thread itself into a namespace: libbpf
 * calls (which resolve ifindexes) and the commands spawned meanwhile see that
 * namespace. Deno runs JavaScript and spawns children on that one thread.
 *
 * @module
 */

import { cstr, libc } from "../bpf/ffi.ts";
import { type Output, run, runRaw } from "./run.ts";

const CLONE_NEWNET = 0x40000000;
let counter = 0;

/** A fresh name for a namespace or device, unique to this process. */
export function uniqueName(prefix: string): string {
  // The process id and counter keep names of live processes apart; the
  // random tail keeps them apart from what a killed process left behind
  // under the same id. Device names are at most 15 bytes, so the tail is
  // what gives way.
  const tail = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  return `${prefix}${Deno.pid.toString(36)}${(counter++).toString(36)}${tail}`.slice(0, 15);
}

/** Netns is a network namespace made by `ip netns add`. */
export class Netns implements AsyncDisposable {
  /** The namespace's name under /run/netns. */
  readonly name: string;

  private constructor(name: string) {
    this.name = name;
  }

  /** Creates a namespace with loopback up. */
  static async create(prefix = "wrt"): Promise<Netns> {
    const ns = new Netns(uniqueName(prefix));
    await run(["ip", "netns", "add", ns.name]);
    await ns.run(["ip", "link", "set", "lo", "up"]);
    return ns;
  }

  /** Runs `cmd` inside the namespace; throws unless it exits 0. */
  run(cmd: string[], options: { stdin?: Uint8Array } = {}): Promise<string> {
    return run(["ip", "netns", "exec", this.name, ...cmd], options);
  }

  /** Runs `cmd` inside the namespace, whatever its exit code. */
  runRaw(cmd: string[]): Promise<Output> {
    return runRaw(["ip", "netns", "exec", this.name, ...cmd]);
  }

  /** Runs a shell script inside the namespace. */
  sh(script: string): Promise<string> {
    return this.run(["sh", "-ec", script]);
  }

  /**
   * Moves this thread into the namespace until the returned function is
   * called. Keep the window short and always restore (try/finally).
   */
  enter(): () => void {
    // Back to wherever the thread was, so entering nests.
    const before = libc().open(cstr("/proc/thread-self/ns/net"), 0);
    if (before < 0) throw new Error("cannot open this thread's network namespace");
    try {
      enterNetns(this.name);
    } catch (err) {
      libc().close(before);
      throw err;
    }
    return () => {
      const ok = libc().setns(before, CLONE_NEWNET) === 0;
      libc().close(before);
      if (!ok) throw new Error("setns back failed");
    };
  }

  /** Runs `fn` with this thread inside the namespace. */
  async within<T>(fn: () => T | Promise<T>): Promise<T> {
    const leave = this.enter();
    try {
      return await fn();
    } finally {
      leave();
    }
  }

  /** Deletes the namespace and every device in it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await runRaw(["ip", "netns", "del", this.name]);
  }
}

/** One end of a veth pair: its namespace, name and addresses. */
export interface VethEnd {
  /** The namespace the end lives in. */
  ns: Netns;
  /** Device name. */
  name: string;
  /** An address with prefix, such as 10.0.0.1/24. */
  addr?: string;
  /** More addresses; an IPv6 one turns IPv6 on for this end. */
  addrs?: string[];
  /** MTU, if not 1500. */
  mtu?: number;
}

/**
 * Creates a veth pair between two namespaces, both ends up. IPv6 stays off
 * on ends without an IPv6 address (so no stray neighbour discovery
 * traffic) and skips duplicate address detection where it is on.
 */
export async function vethPair(a: VethEnd, b: VethEnd): Promise<void> {
  await a.ns.run([
    "ip",
    "link",
    "add",
    "name",
    a.name,
    "type",
    "veth",
    "peer",
    "name",
    b.name,
    "netns",
    b.ns.name,
  ]);
  for (const end of [a, b]) {
    const addrs = [...(end.addr ? [end.addr] : []), ...(end.addrs ?? [])];
    const v6 = addrs.some((x) => x.includes(":"));
    await end.ns.sh(
      `sysctl -qw net.ipv6.conf.${end.name}.disable_ipv6=${v6 ? 0 : 1}
       ${end.mtu ? `ip link set dev ${end.name} mtu ${end.mtu}` : ""}
       ${
        addrs.map((x) => `ip addr add ${x} dev ${end.name}${x.includes(":") ? " nodad" : ""}`).join(
          "\n",
        )
      }
       ip link set dev ${end.name} up`,
    );
  }
}

/** The MAC address of `dev` inside `ns`. */
export async function macOf(ns: Netns, dev: string): Promise<string> {
  return (await ns.run(["cat", `/sys/class/net/${dev}/address`])).trim();
}

/**
 * Moves this thread into the namespace `ip netns` calls `name`, for good:
 * for a CLI run with `--netns`.
 */
export function enterNetns(name: string): void {
  const fd = libc().open(cstr(`/run/netns/${name}`), 0);
  if (fd < 0) throw new Error(`there is no network namespace named "${name}"`);
  try {
    if (libc().setns(fd, CLONE_NEWNET) !== 0) {
      throw new Error(`cannot enter network namespace "${name}"`);
    }
  } finally {
    libc().close(fd);
  }
}
