/**
 * What warren asks the host about its network devices, through iproute2's
 * JSON output: netlink answers for the calling thread's network namespace,
 * where /sys/class/net might show another.
 *
 * @module
 */

import { type Addr, formatAddr, parseAddr } from "./addr.ts";

/** A device as `ip -j link` describes it. */
export interface Device {
  /** Name. */
  name: string;
  /** ifindex. */
  ifindex: number;
  /** MAC address. */
  mac: string;
  /** MTU. */
  mtu: number;
  /** Link kind (veth, vxlan …), or "" for plain devices. */
  kind: string;
}

const decoder = new TextDecoder();

async function ipJson(args: string[]): Promise<unknown[]> {
  const out = await new Deno.Command("ip", {
    args: ["-j", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    const msg = decoder.decode(out.stderr).trim();
    throw new Error(msg.includes("does not exist") ? msg : `ip ${args.join(" ")}: ${msg}`);
  }
  const text = decoder.decode(out.stdout).trim();
  return text ? JSON.parse(text) : [];
}

/** The device called `name`; throws a clear error when there is none. */
export async function device(name: string): Promise<Device> {
  const [link] = await ipJson(["-d", "link", "show", "dev", name]).catch(() => {
    throw new Error(`there is no network device named "${name}"`);
  }) as {
    ifname: string;
    ifindex: number;
    address?: string;
    mtu: number;
    linkinfo?: { info_kind?: string };
  }[];
  if (!link) throw new Error(`there is no network device named "${name}"`);
  return {
    name: link.ifname,
    ifindex: link.ifindex,
    mac: link.address ?? "00:00:00:00:00:00",
    mtu: link.mtu,
    kind: link.linkinfo?.info_kind ?? "",
  };
}

/** The global-scope addresses configured on `name`. */
export async function deviceAddrs(name: string): Promise<Addr[]> {
  const [link] = await ipJson(["addr", "show", "dev", name]) as {
    addr_info?: { local: string; scope: string }[];
  }[];
  return (link?.addr_info ?? []).filter((a) => a.scope === "global").map((a) => parseAddr(a.local));
}

/**
 * Sets per-device forwarding for one family (`bpf_fib_lookup` answers only
 * on devices that forward) and returns the previous setting.
 */
export function setForwarding(dev: string, family: 4 | 6, on: boolean): boolean {
  const path = family === 4
    ? `/proc/sys/net/ipv4/conf/${dev}/forwarding`
    : `/proc/sys/net/ipv6/conf/${dev}/forwarding`;
  const before = Deno.readTextFileSync(path).trim() !== "0";
  if (before !== on) Deno.writeTextFileSync(path, on ? "1" : "0");
  return before;
}

/**
 * Asks the kernel to keep the next hop towards `remote` resolved on `dev`
 * (a managed neighbour entry, Linux 5.16), so the datapath's FIB lookups
 * find its MAC even for frames bpf_redirect_neigh cannot take. Remotes
 * routed through another device are left alone.
 */
export async function keepNeighbors(dev: string, remotes: Addr[]): Promise<void> {
  if (remotes.length === 0) return;
  // One `ip` for every route lookup: a line of JSON per route found.
  const out = await ipBatch(
    remotes.map((r) => `route get ${formatAddr(r.bytes, r.v6)}`),
    ["-j"],
  );
  const hops = new Set<string>();
  for (const line of out.split("\n")) {
    if (!line.startsWith("[")) continue;
    const [route] = JSON.parse(line) as {
      dst?: string;
      dev?: string;
      gateway?: string;
      type?: string;
    }[];
    // Unroutable remotes print nothing: the datapath counts them when a packet needs one.
    if (route?.dev === dev && route.type !== "local" && route.dst) {
      hops.add(route.gateway ?? route.dst);
    }
  }
  if (hops.size === 0) return;
  // "File exists" means the kernel knows the hop already; -force goes on.
  await ipBatch([...hops].map((h) => `neigh add ${h} dev ${dev} managed`));
}

/** Removes the managed neighbour entries on `dev` (those keepNeighbors made). */
export async function dropManagedNeighbors(dev: string): Promise<void> {
  const entries = await ipJson(["neigh", "show", "dev", dev]).catch(() => []) as {
    dst: string;
    managed?: null;
  }[];
  const managed = entries.filter((e) => "managed" in e).map((e) => `neigh del ${e.dst} dev ${dev}`);
  if (managed.length) await ipBatch(managed);
}

async function ipBatch(lines: string[], flags: string[] = []): Promise<string> {
  const child = new Deno.Command("ip", {
    args: [...flags, "-force", "-batch", "-"],
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  })
    .spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(lines.join("\n") + "\n"));
  await w.close();
  return new TextDecoder().decode((await child.output()).stdout);
}

/**
 * Whether `dev` fills in a checksum left partial (CHECKSUM_PARTIAL) before
 * the frame leaves it: a NIC does in hardware, and the kernel does in
 * software for a device without TX checksum offload. Only a veth with it
 * on hands the skb to its peer with the checksum still partial.
 */
export async function completesChecksums(dev: Device): Promise<boolean> {
  if (dev.kind !== "veth") return true;
  const out = await new Deno.Command("ethtool", {
    args: ["--json", "-k", dev.name],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`ethtool -k ${dev.name}: ${decoder.decode(out.stderr).trim()}`);
  }
  const [features] = JSON.parse(decoder.decode(out.stdout)) as {
    "tx-checksumming"?: { active: boolean };
  }[];
  return !features?.["tx-checksumming"]?.active;
}
