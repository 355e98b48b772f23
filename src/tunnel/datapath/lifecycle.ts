/**
 * Up and down. `up` loads the object, pins its maps on the first run (and
 * reuses them on every later one, so an upgrade keeps every flow and
 * counter), pins and attaches the programs (links swap them atomically),
 * and sets the underlay up; `down` removes everything `up` made, from the
 * pins alone, whatever state a crash left them in.
 *
 * @module
 */

import { ifname } from "../../bpf/netif.ts";
import { ensurePinDir, isPinned, unpin } from "../../bpf/pin.ts";
import { shareWithGroup } from "../../bpf/pin_mode.ts";
import { ConfigFlag, LAYOUT_VERSION, Miss, STT_DEFAULT_TIMEOUT_MS } from "../../maps/layouts.ts";
import { type Addr, parseAddr } from "../addr.ts";
import {
  attachTcRecorded,
  attachUnderlayXdp,
  detachAll,
  detachDevice,
  type TcChoice,
  XDP_GENERIC_REFUSED,
  type XdpChoice,
  xdpFlags,
  xdpKept,
} from "../attach.ts";
import type { ConfigMap } from "../config.ts";
import { failpoint } from "../failpoint.ts";
import { createIndex } from "../flows/entry.ts";
import { writeMasks } from "../flows/masks.ts";
import { completesChecksums, type Device, device, deviceAddrs } from "../host.ts";
import { DatapathLock, removeLockFile, shareLockFile } from "../lock.ts";
import { PINNED_MAPS } from "../../maps/names.ts";
import { DatapathMaps, mapPin } from "../pins.ts";
import { PortError } from "../port.ts";
import { setLocalIps } from "./endpoints.ts";
import { dropGsoDevices, syncGsoDevices } from "./gso_devices.ts";
import { openDatapathObject, pinPrograms, programsOf, sizeTables } from "./object.ts";
import { devicePresent, readPorts } from "./port_list.ts";
import { enableForwarding, releaseUnderlay } from "./underlay.ts";

/** Where a datapath is pinned unless told otherwise: $WARREN_PIN_DIR, else /sys/fs/bpf/warren. */
export const DEFAULT_PIN_DIR = Deno.env.get("WARREN_PIN_DIR") || "/sys/fs/bpf/warren";

/** Options of {@link up}. */
export interface UpOptions {
  /** The device tunnel packets travel on. */
  underlay: string;
  /** Local endpoint addresses; default: the underlay's global addresses. */
  localIps?: string[];
  /** Where to pin; default /sys/fs/bpf/warren. */
  pinDir?: string;
  /**
   * XDP on the underlay. auto: native on a NIC driver that has it, TC only
   * on a veth or any other device (attach.ts, XDP_AUTO_WHY). generic is
   * refused (XDP_GENERIC_REFUSED). Default: auto on a first up; on an
   * upgrade, what was asked before (xdpKept).
   */
  xdp?: XdpChoice;
  /** TC attachment method; default auto (TCX where the kernel has it). */
  tc?: TcChoice;
  /** Flow table capacity, set by the first `up`; a later one asking for another is refused. */
  maxFlows?: number;
  /**
   * Capacity for distinct tunnel keys (set like maxFlows): flows that set the
   * same tunnel key share one entry.
   */
  maxTunKeys?: number;
  /** Replication group capacity (set like maxFlows). */
  maxGroups?: number;
  /** Bucket capacity of all groups together (set like maxFlows). */
  maxBuckets?: number;
  /** A flow miss on a local port: drop (default) or pass to the stack. */
  missLocal?: "drop" | "pass";
  /** A flow miss after decapsulation: drop (default) or pass. */
  missTunnel?: "drop" | "pass";
  /** How long an incomplete STT frame waits for its segments (default 1000 ms). */
  sttTimeoutMs?: number;
  /**
   * Turn on forwarding on the underlay for the endpoint families, so the
   * datapath's FIB lookups answer (default true; `down` turns it back off).
   * Without it, IP frames still leave through bpf_redirect_neigh, but
   * non-IP frames (ARP) need a port's configured neighbour.
   */
  forwarding?: boolean;
  /**
   * Share the datapath with this group id: its pins and lock become group
   * readable and writable (owner only without it). Kept by later ups.
   */
  group?: number;
}

/** Whether a datapath is pinned at `pinDir`. */
export function exists(pinDir: string): boolean {
  return isPinned(mapPin(pinDir, "wr_config"));
}

/**
 * Loads, pins and attaches the datapath; returns its maps. Idempotent:
 * when it is already up, the programs are replaced in place (the links
 * swap them atomically, so traffic never stops) and the maps are kept.
 */
export async function up(options: UpOptions): Promise<{ pinDir: string; maps: DatapathMaps }> {
  if (options.xdp === "generic") throw new PortError(XDP_GENERIC_REFUSED);
  const pinDir = options.pinDir ?? DEFAULT_PIN_DIR;
  const underlay = await device(options.underlay);
  const devCsum = await completesChecksums(underlay) ? ConfigFlag.DEV_CSUM : 0;
  const ips = options.localIps ? options.localIps.map(localIp) : await deviceAddrs(underlay.name);
  if (ips.length === 0) {
    throw new PortError(
      `${underlay.name} has no global address; give the local endpoints with --local-ip`,
    );
  }
  ensurePinDir(pinDir);
  using lock = DatapathLock.acquire(pinDir);
  const existing = exists(pinDir);
  const old = existing ? DatapathMaps.fromPins(pinDir) : undefined;
  try {
    if (old) checkReuse(pinDir, old, options, underlay);
    using obj = openDatapathObject();
    if (old) {
      for (const [name, map] of old.all()) obj.reuseMap(name, map);
    } else sizeTables(obj, options);
    obj.load();
    const maps = old ?? DatapathMaps.fromObject(obj);
    try {
      if (!old) {
        ensurePinDir(`${pinDir}/maps`);
        maps.pin(pinDir);
        initialize(maps, underlay.ifindex, options);
      }
      setMiss(maps.config, options);
      const ports = readPorts(maps);
      const programs = programsOf(obj);
      try {
        pinPrograms(pinDir, programs);
        const before = maps.config.read();
        const xdp = attachUnderlayXdp(
          pinDir,
          underlay,
          programs.wr_xdp_underlay,
          options.xdp ?? (old ? xdpKept(pinDir, before.underlay_ifindex, before.flags) : "auto"),
        );
        failpoint("up.attached");
        const tc = attachTcRecorded(
          pinDir,
          underlay.ifindex,
          programs.wr_tc_underlay,
          options.tc ?? "auto",
        );
        for (const p of ports) {
          if (p.kind !== "local") continue;
          const ifindex = maps.ports.get(p.number)!.ifindex;
          if (!devicePresent(maps, p)) {
            // Its attachment went with the device; the port stays, shown
            // as gone, until deleted.
            detachDevice(pinDir, ifindex);
            continue;
          }
          attachTcRecorded(pinDir, ifindex, programs.wr_tc_local, tc);
        }
        const was = before.underlay_ifindex;
        if (was !== underlay.ifindex) detachDevice(pinDir, was);
        maps.config.update((cfg) => ({
          flags: xdpFlags(cfg.flags & ~(ConfigFlag.CLSACT | ConfigFlag.DEV_CSUM), xdp) |
            (tc === "clsact" ? ConfigFlag.CLSACT : 0) | devCsum,
          underlay_ifindex: underlay.ifindex,
        }));
      } finally {
        for (const p of Object.values(programs)) p.close();
      }
      setLocalIps(maps, ips, ports.some((p) => p.kind === "tunnel"));
      syncGsoDevices(pinDir, maps, ports);
      if (options.forwarding ?? true) enableForwarding(maps.config, underlay.name, ips);
      if (options.group !== undefined) {
        shareWithGroup(pinDir, options.group);
        shareLockFile(pinDir, options.group);
      }
      return { pinDir, maps };
    } catch (err) {
      maps.close();
      throw err;
    }
  } catch (err) {
    if (!existing) removePins(pinDir);
    throw err;
  } finally {
    lock.release();
  }
}

/**
 * Detaches everything and removes every pin: afterwards no program,
 * link, pin, qdisc, GSO device or lock file of this datapath remains. Safe
 * to run twice, and after a crash.
 */
export async function down(pinDir: string): Promise<void> {
  using _lock = DatapathLock.acquire(pinDir);
  try {
    Deno.statSync(pinDir);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    dropGsoDevices(pinDir);
    removeLockFile(pinDir);
    return;
  }
  if (exists(pinDir)) {
    try {
      using maps = DatapathMaps.fromPins(pinDir);
      await releaseUnderlay(maps.config.read());
    } catch (err) {
      // Pins of another layout: still tear everything down.
      if (!(err instanceof Error)) throw err;
    }
  }
  detachAll(pinDir);
  dropGsoDevices(pinDir);
  removePins(pinDir);
  removeLockFile(pinDir);
}

function localIp(ip: string): Addr {
  try {
    return parseAddr(ip);
  } catch {
    throw new PortError(`--local-ip "${ip}" is not an IP address`);
  }
}

/** Refuses an `up` over the datapath `old` that would change what cannot change. */
function checkReuse(pinDir: string, old: DatapathMaps, options: UpOptions, underlay: Device): void {
  const cfg = old.config.read();
  // Capacities are the maps' sizes, fixed when they were made.
  for (
    const [option, asked, has] of [
      ["--max-flows", options.maxFlows, cfg.max_flows],
      ["--max-tun-keys", options.maxTunKeys, cfg.max_tun_keys],
      ["--max-groups", options.maxGroups, old.groups.raw.info.maxEntries],
      ["--max-buckets", options.maxBuckets, old.buckets.raw.info.maxEntries],
    ] as const
  ) {
    if (asked !== undefined && asked !== has) {
      throw new RangeError(
        `the datapath under ${pinDir} was made with ${option} ${has}; capacities are set by the first up (warren down, then up ${option} ${asked})`,
      );
    }
  }
  // An underlay that is gone may be replaced by a new device; one still
  // there may not.
  if (cfg.underlay_ifindex !== underlay.ifindex && ifname(cfg.underlay_ifindex)) {
    throw new PortError(
      `the datapath under ${pinDir} runs on ifindex ${cfg.underlay_ifindex}, not ${underlay.name}: run warren down first`,
    );
  }
}

/** A new datapath's first settings, empty mask sets and an empty flow index. */
export function initialize(
  maps: DatapathMaps,
  underlayIfindex: number,
  options: Pick<UpOptions, "missLocal" | "missTunnel" | "sttTimeoutMs">,
): void {
  const maxFlows = maps.flowStats.raw.info.maxEntries;
  maps.config.create({
    layout_version: LAYOUT_VERSION,
    gen: 0,
    max_flows: maxFlows,
    max_tun_keys: maps.tunKeys.raw.info.maxEntries,
    flags: 0,
    underlay_ifindex: underlayIfindex,
    miss_local: miss(options.missLocal),
    miss_tunnel: miss(options.missTunnel),
    fwd_saved: 0,
    stt_timeout_ms: options.sttTimeoutMs ?? STT_DEFAULT_TIMEOUT_MS,
    seq: 0n,
    local_v4: new Uint8Array(16),
    local_v6: new Uint8Array(16),
  });
  writeMasks(maps, 0, []);
  writeMasks(maps, 1, []);
  using index = createIndex(maxFlows);
  maps.setFlowIndex(0, index);
  maps.setFlowIndex(1, index);
}

function miss(choice: "drop" | "pass" | undefined): number {
  return choice === "pass" ? Miss.PASS : Miss.DROP;
}

/** Applies the miss actions and STT timeout `options` gives, keeping the others. */
function setMiss(config: ConfigMap, options: UpOptions): void {
  if (!options.missLocal && !options.missTunnel && options.sttTimeoutMs === undefined) return;
  config.update((cfg) => ({
    stt_timeout_ms: options.sttTimeoutMs ?? cfg.stt_timeout_ms,
    miss_local: options.missLocal ? miss(options.missLocal) : cfg.miss_local,
    miss_tunnel: options.missTunnel ? miss(options.missTunnel) : cfg.miss_tunnel,
  }));
}

/** Removes every pin under `pinDir` and the directory itself. */
function removePins(pinDir: string): void {
  for (const name of PINNED_MAPS) unpin(mapPin(pinDir, name));
  try {
    Deno.removeSync(pinDir, { recursive: true });
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}
