/**
 * The kernel vxlan devices that send warren's VXLAN GSO packets when they
 * need an outer checksum (see bpf/include/gso.h): BPF cannot ask the
 * kernel to checksum the segments of a tunnel it built, but a vxlan device
 * in metadata mode (`external`) fed the tunnel key by the datapath can, and
 * keeps TSO. One device per UDP destination port in use, shared by every
 * VXLAN port on it, made when the first such port is written, deleted with
 * the last one and by `down`.
 *
 * The devices are named after the pin directory (`wv<hash>-<port>`), so
 * that `down` finds them from that alone, whatever state the pins are in.
 * Their source port range is the datapath's (tunnel_sport), so a flow keeps
 * one source port whichever side encapsulates its frames. A device opens a
 * UDP socket on its port: tunnel packets warren's programs let through to
 * the stack (fragments) end there instead of in an ICMP port unreachable.
 *
 * Where a device cannot be made (no vxlan support, or another metadata-mode
 * vxlan device on the port in this namespace), the port gets none and its
 * GSO packets are segmented in BPF instead: slower, as correct.
 *
 * @module
 */

import type { DatapathMaps } from "../pins.ts";
import type { Port } from "../port.ts";

const decoder = new TextDecoder();

/** The source port range the datapath uses (bpf/include/encap.h). */
const SPORT_RANGE = ["49152", "65535"];

/** What `ip` printed, or an error with its message. */
function ip(args: string[]): string {
  const out = new Deno.Command("ip", { args, stdout: "piped", stderr: "piped" }).outputSync();
  if (!out.success) throw new Error(decoder.decode(out.stderr).trim() || `ip ${args.join(" ")}`);
  return decoder.decode(out.stdout);
}

/** The name prefix of the devices of the datapath pinned at `pinDir`. */
function prefix(pinDir: string): string {
  // FNV-1a: six hex digits leave room for the port in 15 characters.
  let h = 0x811c9dc5;
  for (const c of new TextEncoder().encode(pinDir)) h = Math.imul(h ^ c, 0x01000193) >>> 0;
  return `wv${(h & 0xffffff).toString(16).padStart(6, "0")}-`;
}

/** The device of the datapath at `pinDir` for UDP destination port `dstPort`. */
export function gsoDeviceName(pinDir: string, dstPort: number): string {
  return `${prefix(pinDir)}${dstPort}`;
}

interface Link {
  ifname: string;
  ifindex: number;
  linkinfo?: { info_kind?: string; info_data?: { port?: number; external?: boolean } };
}

function links(): Link[] {
  const text = ip(["-j", "-d", "link", "show", "type", "vxlan"]).trim();
  return text ? JSON.parse(text) : [];
}

/** The devices of the datapath at `pinDir`, by UDP destination port. */
export function gsoDevices(pinDir: string): Map<number, Link> {
  const p = prefix(pinDir);
  const out = new Map<number, Link>();
  for (const l of links()) {
    if (l.ifname.startsWith(p)) out.set(Number(l.ifname.slice(p.length)), l);
  }
  return out;
}

/**
 * The ifindex of the device for `dstPort`, made and set up if needed, or
 * the reason there is none.
 */
export function ensureGsoDevice(
  pinDir: string,
  dstPort: number,
): { ifindex: number } | { error: string } {
  const name = gsoDeviceName(pinDir, dstPort);
  const have = gsoDevices(pinDir).get(dstPort);
  if (have) return { ifindex: have.ifindex };
  try {
    ip([
      ...["link", "add", name, "type", "vxlan", "external"],
      ...["dstport", String(dstPort), "srcport", ...SPORT_RANGE],
    ]);
    try {
      // It sends only what the datapath gives it: nothing of the host's own
      // (router solicitations, MLD) to drop and count.
      Deno.writeTextFileSync(`/proc/sys/net/ipv6/conf/${name}/disable_ipv6`, "1");
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    ip(["link", "set", name, "up"]);
    const [link] = JSON.parse(ip(["-j", "link", "show", "dev", name])) as Link[];
    return { ifindex: link.ifindex };
  } catch (err) {
    removeGsoDevice(name);
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

function removeGsoDevice(name: string): void {
  try {
    ip(["link", "del", name]);
  } catch {
    // Gone already.
  }
}

/**
 * Deletes the devices of the datapath at `pinDir` whose port is not in
 * `inUse` (all of them without it).
 */
export function dropGsoDevices(pinDir: string, inUse: Set<number> = new Set()): void {
  for (const [port, link] of gsoDevices(pinDir)) {
    if (!inUse.has(port)) removeGsoDevice(link.ifname);
  }
}

/**
 * Makes the devices of the datapath at `pinDir` those its VXLAN ports need,
 * each port's entry naming its device (or none): after an upgrade, or when
 * a device was deleted behind warren's back.
 */
export function syncGsoDevices(pinDir: string, maps: DatapathMaps, ports: Port[]): void {
  const inUse = new Set<number>();
  for (const p of ports) {
    if (p.kind !== "tunnel" || p.proto !== "vxlan") continue;
    inUse.add(p.dstPort);
    const got = ensureGsoDevice(pinDir, p.dstPort);
    const ifindex = "ifindex" in got ? got.ifindex : 0;
    const entry = maps.ports.get(p.number);
    if (entry && entry.gso_ifindex !== ifindex) {
      maps.ports.set(p.number, { ...entry, gso_ifindex: ifindex });
    }
  }
  dropGsoDevices(pinDir, inUse);
}
