/**
 * The datapath's attachments, recorded as pins under `<pin dir>/links/` so
 * that any later process can list, upgrade or remove them:
 *
 * - `xdp-native@<ifindex>`, `xdp-generic@<ifindex>`: XDP links;
 * - `tcx-ingress@<ifindex>`: TCX links;
 * - `clsact-ingress@<ifindex>`: the program of a clsact filter (the filter
 *   itself lives in the qdisc), and `clsact-qdisc@<ifindex>` when warren
 *   created that qdisc and so must remove it.
 *
 * @module
 */

import { ClsactFilter, removeClsactQdisc } from "../bpf/clsact.ts";
import { Errno } from "../bpf/errno.ts";
import { BpfError } from "../bpf/errors.ts";
import { Link } from "../bpf/link.ts";
import { ifname } from "../bpf/netif.ts";
import { ensurePinDir, isPinned, unpin } from "../bpf/pin.ts";
import { Program } from "../bpf/program.ts";
import { attachTc, type TcMethod } from "../bpf/tc.ts";
import { attachXdp, type XdpMode } from "../bpf/xdp.ts";
import { ConfigFlag } from "../maps/layouts.ts";

/** How XDP is attached: a mode, auto (decided per device: {@link attachUnderlayXdp}) or off. */
export type XdpChoice = XdpMode | "auto" | "off";

/** How TC is attached: TCX (Linux 6.6+), clsact, or auto. */
export type TcChoice = TcMethod;

/** One attachment, as `status` shows it. */
export interface Attachment {
  /** xdp-native, xdp-generic, tcx-ingress or clsact-ingress. */
  hook: string;
  /** The device. */
  ifindex: number;
  /** Its name in this network namespace, if it still exists. */
  device?: string;
  /** The program's kernel id. */
  programId: number;
  /** The program's name. */
  program: string;
  /** The pin recording it. */
  pin: string;
}

const { EINVAL, EOPNOTSUPP } = Errno;

function linksDir(dir: string): string {
  return `${dir}/links`;
}

function pinOf(dir: string, hook: string, ifindex: number): string {
  return `${linksDir(dir)}/${hook}@${ifindex}`;
}

/**
 * Attaches `program` at XDP on `ifindex`, or swaps it into the existing
 * attachment atomically. "native" and "generic" force their mode; "auto"
 * takes native where the driver has it and is off otherwise (generic XDP
 * runs on the skb TC gets anyway, copied first when it is nonlinear).
 * Returns the mode used, or "off".
 */
export function attachXdpRecorded(
  dir: string,
  ifindex: number,
  program: Program,
  choice: XdpChoice,
): XdpMode | "off" {
  ensurePinDir(linksDir(dir));
  const want = choice === "auto" ? "native" : choice;
  for (const mode of ["native", "generic"] as const) {
    const pin = pinOf(dir, `xdp-${mode}`, ifindex);
    if (!isPinned(pin)) continue;
    if (want !== mode) {
      detachPin(pin);
      continue;
    }
    using link = liveLink(pin);
    if (!link) continue;
    link.update(program);
    return mode;
  }
  if (want === "off") return "off";
  try {
    using link = attachXdp(program, ifindex, { mode: want });
    link.pin(pinOf(dir, `xdp-${want}`, ifindex));
    return want;
  } catch (err) {
    const unsupported = err instanceof BpfError &&
      (err.errno === EOPNOTSUPP || err.errno === EINVAL);
    if (choice === "auto" && unsupported) return "off";
    throw err;
  }
}

/**
 * Why `--xdp auto` chose what it did on the underlay (README, "XDP or TC
 * only", has the figures of `deno task bench --only tcp`): XDP pays only
 * where it sees wire frames before the kernel builds an skb, which a NIC
 * driver with native XDP gives; a veth hands its XDP program every GSO
 * packet of bulk TCP, copied into an XDP buffer; generic XDP runs on the
 * skb TC would get anyway, copied first when it is cloned or nonlinear
 * (netif_receive_generic_xdp).
 */
export const XDP_AUTO_WHY = {
  "native-driver": "a NIC driver with native XDP: XDP sees wire frames before any skb exists",
  "veth":
    "a veth: XDP there copies every GSO packet into an XDP buffer, which costs bulk TCP most of its throughput; TC only",
  "virtual":
    "a virtual device, not a NIC driver: XDP there would see skbs (GSO packets), not wire frames; TC only",
  "no-native":
    "the driver has no native XDP, and generic XDP copies every cloned or nonlinear skb (a GSO packet) before it runs; TC only",
} as const;

/**
 * Why `up --xdp generic` is refused on the underlay. Generic XDP runs in
 * netif_receive_generic_xdp, which skips every skb a redirect sent (a
 * peer's encapsulation arriving over a veth). And on Linux 6.18 the skbs
 * it did run on (sent by the peer's IP stack, on the lab's veth) reached
 * TC without the metadata XDP left, and under TCX without their MAC
 * header (skb->len 14 short) even when XDP passed them untouched: neither
 * XDP nor TC could decapsulate them.
 */
export const XDP_GENERIC_REFUSED =
  "--xdp generic is refused on the underlay: generic XDP skips every packet a redirect sent (a peer's encapsulation over a veth), and hands TC the others without their MAC header, so neither could decapsulate them; use --xdp native where the driver has it, or --xdp off (TC only)";

/** A reason of {@link XDP_AUTO_WHY}. */
export type XdpAutoWhy = keyof typeof XDP_AUTO_WHY;

/** The reasons in the order `wr_config.flags` numbers them (`WR_CFG_XDP_WHY`). */
export const XDP_AUTO_WHYS = Object.keys(XDP_AUTO_WHY) as XdpAutoWhy[];

/** What {@link attachUnderlayXdp} did: the mode, and why when auto chose it. */
export interface XdpOutcome {
  /** The mode attached, or "off" (TC only). */
  mode: XdpMode | "off";
  /** Set when `--xdp auto` chose. */
  why?: XdpAutoWhy;
}

/**
 * Attaches the underlay's XDP program as `choice` says; "auto" decides by
 * the device: native XDP on a NIC driver that has it (`kind` "", no link
 * kind), TC only on anything else (see {@link XDP_AUTO_WHY}).
 */
export function attachUnderlayXdp(
  dir: string,
  dev: { ifindex: number; kind: string },
  program: Program,
  choice: XdpChoice,
): XdpOutcome {
  if (choice !== "auto") return { mode: attachXdpRecorded(dir, dev.ifindex, program, choice) };
  if (dev.kind) {
    attachXdpRecorded(dir, dev.ifindex, program, "off");
    return { mode: "off", why: dev.kind === "veth" ? "veth" : "virtual" };
  }
  const mode = attachXdpRecorded(dir, dev.ifindex, program, "auto");
  return { mode, why: mode === "off" ? "no-native" : "native-driver" };
}

/** The lowest bit of `WR_CFG_XDP_WHY`: a reason's number is its multiple. */
const WHY_UNIT = ConfigFlag.XDP_WHY & -ConfigFlag.XDP_WHY;

/** `flags` with `outcome`'s XDP bits (`WR_CFG_XDP_*`) in place of the old ones. */
export function xdpFlags(flags: number, outcome: XdpOutcome): number {
  const xdp = ConfigFlag.XDP_UNDERLAY | ConfigFlag.XDP_AUTO | ConfigFlag.XDP_WHY;
  let bits = outcome.mode !== "off" ? ConfigFlag.XDP_UNDERLAY : 0;
  if (outcome.why) bits |= ConfigFlag.XDP_AUTO | XDP_AUTO_WHYS.indexOf(outcome.why) * WHY_UNIT;
  return (flags & ~xdp) | bits;
}

/** How the underlay's XDP was chosen, from `wr_config.flags`: why auto chose, or undefined when forced. */
export function xdpWhy(flags: number): XdpAutoWhy | undefined {
  if (!(flags & ConfigFlag.XDP_AUTO)) return undefined;
  return XDP_AUTO_WHYS[(flags & ConfigFlag.XDP_WHY) / WHY_UNIT];
}

/**
 * What an `up` without `--xdp` asks of a datapath already up, whose
 * `wr_config.flags` are `flags` on underlay `ifindex`: what was asked
 * before. auto's choice is made again (the same, for the same device); a
 * forced mode stays, so an upgrade never detaches XDP under traffic;
 * except generic XDP, which an older warren attached and which carries no
 * tunnel traffic ({@link XDP_GENERIC_REFUSED}): TC only.
 */
export function xdpKept(dir: string, ifindex: number, flags: number): XdpChoice {
  if (flags & ConfigFlag.XDP_AUTO) return "auto";
  if (!(flags & ConfigFlag.XDP_UNDERLAY)) return "off";
  const mode = xdpAttached(dir, ifindex);
  if (mode === "generic") return "off";
  return mode === "off" ? "native" : mode;
}

/** The XDP mode recorded on `ifindex` under `dir`, or "off". */
export function xdpAttached(dir: string, ifindex: number): XdpMode | "off" {
  for (const mode of ["native", "generic"] as const) {
    if (isPinned(pinOf(dir, `xdp-${mode}`, ifindex))) return mode;
  }
  return "off";
}

/**
 * Attaches `program` at TC ingress of `ifindex` (TCX where the kernel has
 * it, clsact otherwise), or swaps it into the existing attachment.
 * Returns the method used.
 */
export function attachTcRecorded(
  dir: string,
  ifindex: number,
  program: Program,
  choice: TcChoice,
): "tcx" | "clsact" {
  ensurePinDir(linksDir(dir));
  const tcxPin = pinOf(dir, "tcx-ingress", ifindex);
  const clsactPin = pinOf(dir, "clsact-ingress", ifindex);
  if (isPinned(tcxPin)) {
    using link = liveLink(tcxPin);
    if (link) {
      link.update(program);
      return "tcx";
    }
  }
  if (isPinned(clsactPin)) {
    try {
      new ClsactFilter(ifindex, "ingress").update(program);
      unpin(clsactPin);
      program.pin(clsactPin);
      return "clsact";
    } catch (err) {
      // The filter went with its device (this ifindex may be a new one's):
      // attach afresh below.
      if (!(err instanceof BpfError)) throw err;
      unpin(clsactPin);
      const qdisc = pinOf(dir, "clsact-qdisc", ifindex);
      if (isPinned(qdisc)) unpin(qdisc);
    }
  }
  const attached = attachTc(program, ifindex, "ingress", choice);
  if (attached.kind === "tcx") {
    using link = attached.link;
    link.pin(tcxPin);
    return "tcx";
  }
  program.pin(clsactPin);
  if (attached.filter.createdQdisc) program.pin(pinOf(dir, "clsact-qdisc", ifindex));
  return "clsact";
}

/**
 * Opens the link pinned at `pin`; or, when its device is gone, unpins it
 * and returns undefined. Such a link is defunct for good: the kernel
 * refuses to update it (ENOLINK), even once a new device has the same
 * ifindex.
 */
function liveLink(pin: string): Link | undefined {
  const link = Link.fromPin(pin);
  if (link.info().ifindex !== 0) return link;
  link.close();
  unpin(pin);
  return undefined;
}

function detachPin(pin: string): void {
  try {
    using link = Link.fromPin(pin);
    link.detach();
  } catch (err) {
    // A link whose device is gone has nothing left to detach.
    if (!(err instanceof BpfError)) throw err;
  }
  unpin(pin);
}

/** Removes every attachment on `ifindex` recorded under `dir`. */
export function detachDevice(dir: string, ifindex: number): void {
  for (const a of attachments(dir)) {
    if (a.ifindex !== ifindex) continue;
    detachAttachment(dir, a);
  }
}

function detachAttachment(dir: string, a: Attachment): void {
  if (a.hook === "clsact-ingress") {
    try {
      new ClsactFilter(a.ifindex, "ingress").detach();
      const qdisc = pinOf(dir, "clsact-qdisc", a.ifindex);
      if (isPinned(qdisc)) {
        removeClsactQdisc(a.ifindex);
        unpin(qdisc);
      }
    } catch (err) {
      if (!(err instanceof BpfError)) throw err;
    }
    unpin(a.pin);
  } else if (a.hook !== "clsact-qdisc") {
    detachPin(a.pin);
  }
}

/** Removes every recorded attachment. */
export function detachAll(dir: string): void {
  for (const a of attachments(dir)) detachAttachment(dir, a);
  // Qdisc markers whose filter pin is already gone.
  for (const a of attachments(dir)) {
    if (a.hook === "clsact-qdisc") {
      try {
        removeClsactQdisc(a.ifindex);
      } catch (err) {
        if (!(err instanceof BpfError)) throw err;
      }
      unpin(a.pin);
    }
  }
}

/** The programs pinned under `dir/progs`, by id. */
function programsPinned(dir: string): Map<number, string> {
  const out = new Map<number, string>();
  try {
    for (const e of Deno.readDirSync(`${dir}/progs`)) {
      using p = Program.fromPin(`${dir}/progs/${e.name}`);
      const info = p.info();
      out.set(info.id, info.name);
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound || err instanceof BpfError)) throw err;
  }
  return out;
}

/** Every attachment recorded under `dir`. */
export function attachments(dir: string): Attachment[] {
  const out: Attachment[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(linksDir(dir))];
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return out;
    throw err;
  }
  let names: Map<number, string> | undefined;
  const pinnedNames = () => names ??= programsPinned(dir);
  for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    const m = /^([a-z-]+)@(\d+)$/.exec(e.name);
    if (!m) continue;
    const pin = `${linksDir(dir)}/${e.name}`;
    const ifindex = Number(m[2]);
    let programId = 0;
    let program = "";
    try {
      if (m[1].startsWith("clsact")) {
        using p = Program.fromPin(pin);
        const info = p.info();
        programId = info.id;
        program = info.name;
      } else {
        using link = Link.fromPin(pin);
        programId = link.info().progId;
        // By the pinned programs: the kernel opens a program by id for
        // CAP_SYS_ADMIN only.
        program = pinnedNames().get(programId) ?? "";
      }
    } catch (err) {
      if (!(err instanceof BpfError)) throw err;
    }
    out.push({ hook: m[1], ifindex, device: ifname(ifindex), programId, program, pin });
  }
  return out;
}
