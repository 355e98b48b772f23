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

/** How XDP is attached: a mode, auto (native, else generic) or off. */
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
 * attachment atomically. Returns the mode used, or "off".
 */
export function attachXdpRecorded(
  dir: string,
  ifindex: number,
  program: Program,
  choice: XdpChoice,
): XdpChoice {
  ensurePinDir(linksDir(dir));
  for (const mode of ["native", "generic"] as const) {
    const pin = pinOf(dir, `xdp-${mode}`, ifindex);
    if (!isPinned(pin)) continue;
    if (choice === "off" || (choice !== "auto" && choice !== mode)) {
      detachPin(pin);
      continue;
    }
    using link = liveLink(pin);
    if (!link) continue;
    link.update(program);
    return mode;
  }
  if (choice === "off") return "off";
  const modes: XdpMode[] = choice === "auto" ? ["native", "generic"] : [choice];
  for (const mode of modes) {
    try {
      using link = attachXdp(program, ifindex, { mode });
      link.pin(pinOf(dir, `xdp-${mode}`, ifindex));
      return mode;
    } catch (err) {
      const unsupported = err instanceof BpfError &&
        (err.errno === EOPNOTSUPP || err.errno === EINVAL);
      if (mode === modes[modes.length - 1] || !unsupported) throw err;
    }
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
