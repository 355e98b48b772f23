/**
 * The datapath manager: loads warren's programs, pins their maps under a
 * bpffs directory, attaches them, and keeps ports and flows. Everything it
 * knows lives in the pins, so any process can pick up where another left
 * off; writers take the datapath lock.
 *
 * @example Bring up a datapath and add a tunnel
 * ```ts ignore
 * await using dp = await Datapath.up({ underlay: "eth0" });
 * await dp.addTunnelPort("vx0", "vxlan", { remote_ip: "flow", key: "flow" });
 * ```
 *
 * @module
 */

import warrenObject from "../../bpf/build/warren.bpf.o" with { type: "bytes" };
import { BpfError, NotFoundError } from "../bpf/errors.ts";
import { BpfObject } from "../bpf/object.ts";
import { numPossibleCpus } from "../bpf/map.ts";
import { ifname } from "../bpf/netif.ts";
import { ensurePinDir, isPinned, unpin } from "../bpf/pin.ts";
import { Program } from "../bpf/program.ts";
import {
  ConfigFlag,
  DEFAULT_MAX_FLOWS,
  DEFAULT_MAX_TUN_KEYS,
  type Endpoint,
  type EndpointKey,
  FwdSaved,
  LAYOUT_VERSION,
  MAX_MASKS,
  MAX_PORTS,
  Miss,
  portCodec,
  PortKind,
  STT_DEFAULT_TIMEOUT_MS,
  STT_SLOTS_PER_CPU,
} from "../maps/layouts.ts";
import { type Addr, formatAddr, parseAddr } from "./addr.ts";
import {
  type Attachment,
  attachments,
  attachTcRecorded,
  attachXdpRecorded,
  detachAll,
  detachDevice,
  type TcChoice,
  type XdpChoice,
} from "./attach.ts";
import type { PortLookup } from "./compile.ts";
import { createIndex } from "./flows/entry.ts";
import { writeMasks } from "./flows/masks.ts";
import {
  type AddResult,
  type ApplyOptions,
  type FlowDiff,
  type FlowFilter,
  FlowTable,
  type InstalledFlow,
} from "./flow_table.ts";
import { type ActionSpec, type FlowSpec, formatAction, formatFlow } from "./flow_syntax.ts";
import { formatMatch, type Match, type PortNames } from "./fields.ts";
import { device, deviceAddrs, dropManagedNeighbors, keepNeighbors, setForwarding } from "./host.ts";
import { failpoint } from "./failpoint.ts";
import { DatapathLock, openLockFile, shareLockFile } from "./lock.ts";
import { shareWithGroup } from "../bpf/pin_mode.ts";
import { DatapathMaps, mapPin } from "./pins.ts";
import { PINNED_MAPS, PROGRAMS, type WarrenNames } from "../maps/names.ts";
import { decodeWith } from "../maps/typed_map.ts";
import type { FlowKey } from "../maps/layouts.ts";
import { readStats, type Stats } from "./stats.ts";
import {
  checkPortName,
  decodePort,
  encodePort,
  ipProtoOf,
  type LocalPort,
  type Port,
  PortError,
  protoNumber,
  type TunnelPort,
  tunnelPort,
} from "./port.ts";

/** Where a datapath is pinned unless told otherwise: $WARREN_PIN_DIR, else /sys/fs/bpf/warren. */
export const DEFAULT_PIN_DIR = Deno.env.get("WARREN_PIN_DIR") || "/sys/fs/bpf/warren";

/** Where a port entry says what kind of port it is. */
const PORT_KIND_OFFSET = portCodec.fields.find((f) => f.name === "kind")!.offset;

/**
 * The datapath object, opened from the bytes built into warren and sized
 * for this host: STT keeps WR_STT_SLOTS_PER_CPU reassembly slots and one
 * send buffer per possible CPU.
 */
function openDatapathObject(): BpfObject<WarrenNames> {
  const obj = BpfObject.openMemory<WarrenNames>(warrenObject, "warren");
  try {
    obj.setProgramFlags("wr_xdp_underlay", F_XDP_HAS_FRAGS);
    const cpus = numPossibleCpus();
    obj.setMaxEntries("wr_stt_frames", STT_SLOTS_PER_CPU * cpus);
    obj.setMaxEntries("wr_stt_tx", cpus);
    return obj;
  } catch (err) {
    obj.close();
    throw err;
  }
}

/** `BPF_F_XDP_HAS_FRAGS`: the XDP program takes multi-buffer frames (GRO/GSO). */
const F_XDP_HAS_FRAGS = 1 << 5;

/** Options of {@link Datapath.up}. */
export interface UpOptions {
  /** The device tunnel packets travel on. */
  underlay: string;
  /** Local endpoint addresses; default: the underlay's global addresses. */
  localIps?: string[];
  /** Where to pin; default /sys/fs/bpf/warren. */
  pinDir?: string;
  /** XDP on the underlay; default auto (native, else generic). */
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

/** What `status` reports. */
export interface Status {
  /** The pin directory. */
  pinDir: string;
  /** The underlay device. */
  underlay: { ifindex: number; device?: string };
  /** Local endpoint addresses. */
  localIps: string[];
  /** Attachments, where and which program. */
  attachments: Attachment[];
  /** Program pins and their kernel ids. */
  programs: { name: string; id: number }[];
  /** How full each table is. */
  tables: { name: string; used: number; capacity: number }[];
  /** The live table generation. */
  generation: number;
}

/** Datapath is one pinned warren datapath. */
export class Datapath implements Disposable {
  /** The pin directory. */
  readonly pinDir: string;
  /** The shared maps. */
  readonly maps: DatapathMaps;
  /** The flows. */
  readonly flows: FlowTable;
  #ports: Port[] = [];
  #knownSeq?: bigint;
  #lockFile?: Deno.FsFile;
  readonly #neighborsKept = new Set<string>();

  private constructor(pinDir: string, maps: DatapathMaps) {
    this.pinDir = pinDir;
    this.maps = maps;
    this.#reloadPorts();
    this.flows = new FlowTable(maps, this.portLookup());
  }

  /**
   * Opens the datapath pinned at `pinDir`; a clear error when there is
   * none, or when it was made under another layout version.
   */
  static open(pinDir = DEFAULT_PIN_DIR): Datapath {
    return new Datapath(pinDir, DatapathMaps.fromPins(pinDir));
  }

  /** Whether a datapath is pinned at `pinDir`. */
  static exists(pinDir = DEFAULT_PIN_DIR): boolean {
    return isPinned(mapPin(pinDir, "wr_config"));
  }

  /**
   * Loads, pins and attaches the datapath. Idempotent: when it is already
   * up, the programs are replaced in place (the links swap them
   * atomically, so traffic never stops) and the maps are kept.
   */
  static async up(options: UpOptions): Promise<Datapath> {
    const pinDir = options.pinDir ?? DEFAULT_PIN_DIR;
    const underlay = await device(options.underlay);
    const localIps = options.localIps
      ? options.localIps.map((ip) => {
        try {
          return parseAddr(ip);
        } catch {
          throw new PortError(`--local-ip "${ip}" is not an IP address`);
        }
      })
      : await deviceAddrs(underlay.name);
    if (localIps.length === 0) {
      throw new PortError(
        `${underlay.name} has no global address; give the local endpoints with --local-ip`,
      );
    }
    ensurePinDir(pinDir);
    using lock = DatapathLock.acquire(pinDir);
    const existing = Datapath.exists(pinDir);
    const old = existing ? DatapathMaps.fromPins(pinDir) : undefined;
    try {
      if (old) {
        const cfg = old.config.read();
        // Capacities are the maps' sizes, fixed when they were made.
        for (
          const [option, asked, has] of [
            ["--max-flows", options.maxFlows, cfg.max_flows],
            ["--max-tun-keys", options.maxTunKeys, cfg.max_tun_keys],
          ] as const
        ) {
          if (asked !== undefined && asked !== has) {
            throw new RangeError(
              `the datapath under ${pinDir} was made with ${option} ${has}; capacities are set by the first up (warren down, then up ${option} ${asked})`,
            );
          }
        }
        // An underlay that is gone may be replaced by a new device; one
        // still there may not.
        if (cfg.underlay_ifindex !== underlay.ifindex && ifname(cfg.underlay_ifindex)) {
          throw new PortError(
            `the datapath under ${pinDir} runs on ifindex ${cfg.underlay_ifindex}, not ${underlay.name}: run warren down first`,
          );
        }
      }
      using obj = openDatapathObject();
      if (old) {
        for (const [name, map] of old.all()) obj.reuseMap(name, map);
      } else {
        const maxFlows = options.maxFlows ?? DEFAULT_MAX_FLOWS;
        const maxTunKeys = options.maxTunKeys ?? DEFAULT_MAX_TUN_KEYS;
        if (maxFlows % 64 || maxTunKeys < 1) {
          throw new RangeError("the flow capacity is a multiple of 64");
        }
        obj.setMaxEntries("wr_flow_stats", maxFlows);
        obj.setMaxEntries("wr_flow_ids", maxFlows / 64);
        obj.setMaxEntries("wr_tun_keys", maxTunKeys);
        obj.setMaxEntries("wr_tun_key_refs", maxTunKeys);
        obj.setMaxEntries("wr_tun_key_slots", maxTunKeys);
      }
      obj.load();
      const maps = old ?? DatapathMaps.fromObject(obj);
      if (!old) {
        ensurePinDir(`${pinDir}/maps`);
        maps.pin(pinDir);
      }
      const dp = new Datapath(pinDir, maps);
      try {
        if (!old) dp.#initialize(underlay.ifindex, options);
        dp.#setMiss(options);
        const programs = Object.fromEntries(PROGRAMS.map((n) => [n, obj.program(n)])) as Record<
          typeof PROGRAMS[number],
          Program
        >;
        try {
          dp.#pinPrograms(programs);
          const xdp = attachXdpRecorded(
            pinDir,
            underlay.ifindex,
            programs.wr_xdp_underlay,
            options.xdp ?? "auto",
          );
          failpoint("up.attached");
          const tc = attachTcRecorded(
            pinDir,
            underlay.ifindex,
            programs.wr_tc_underlay,
            options.tc ?? "auto",
          );
          for (const p of dp.#ports) {
            if (p.kind !== "local") continue;
            const ifindex = dp.maps.ports.get(p.number)!.ifindex;
            if (!dp.devicePresent(p)) {
              // Its attachment went with the device; the port stays, shown
              // as gone, until deleted.
              detachDevice(pinDir, ifindex);
              continue;
            }
            attachTcRecorded(pinDir, ifindex, programs.wr_tc_local, tc);
          }
          const was = dp.maps.config.read().underlay_ifindex;
          if (was !== underlay.ifindex) detachDevice(pinDir, was);
          dp.maps.config.update((cfg) => ({
            flags: (cfg.flags & ~(ConfigFlag.XDP_UNDERLAY | ConfigFlag.CLSACT)) |
              (xdp !== "off" ? ConfigFlag.XDP_UNDERLAY : 0) |
              (tc === "clsact" ? ConfigFlag.CLSACT : 0),
            underlay_ifindex: underlay.ifindex,
          }));
        } finally {
          for (const p of Object.values(programs)) p.close();
        }
        dp.#setLocalIps(localIps);
        if (options.forwarding ?? true) dp.#enableForwarding(underlay.name, localIps);
        if (options.group !== undefined) {
          shareWithGroup(pinDir, options.group);
          shareLockFile(pinDir, options.group);
        }
        return dp;
      } catch (err) {
        dp.close();
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
   * link, pin or qdisc of this datapath remains. Safe to run twice, and
   * after a crash.
   */
  static async down(pinDir = DEFAULT_PIN_DIR): Promise<void> {
    try {
      Deno.statSync(pinDir);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      throw err;
    }
    using _lock = DatapathLock.acquire(pinDir);
    if (Datapath.exists(pinDir)) {
      try {
        using maps = DatapathMaps.fromPins(pinDir);
        const cfg = maps.config.read();
        const dev = ifname(cfg.underlay_ifindex);
        if (dev) {
          if (cfg.fwd_saved & FwdSaved.V4) setForwarding(dev, 4, false);
          if (cfg.fwd_saved & FwdSaved.V6) setForwarding(dev, 6, false);
          await dropManagedNeighbors(dev);
        }
      } catch (err) {
        // Pins of another layout: still tear everything down.
        if (!(err instanceof Error)) throw err;
      }
    }
    detachAll(pinDir);
    removePins(pinDir);
  }

  #enableForwarding(dev: string, ips: Addr[]): void {
    const cfg = this.maps.config.read();
    let saved = cfg.fwd_saved;
    for (const [family, bit] of [[4, FwdSaved.V4], [6, FwdSaved.V6]] as const) {
      if (!ips.some((a) => a.v6 === (family === 6))) continue;
      if (!setForwarding(dev, family, true)) saved |= bit;
    }
    if (saved !== cfg.fwd_saved) this.maps.config.update(() => ({ fwd_saved: saved }));
  }

  /** The underlay's name, or a clear error when it is gone. */
  #underlay(): string {
    const cfg = this.maps.config.read();
    const name = ifname(cfg.underlay_ifindex);
    if (!name) throw new PortError(`the underlay (ifindex ${cfg.underlay_ifindex}) is gone`);
    return name;
  }

  /**
   * Keeps the next hops of `remotes` resolved (see keepNeighbors). Each
   * remote is seen to once per Datapath object: a script that adds flows
   * one at a time pays for the `ip` calls once, not per flow.
   */
  async #keepNeighbors(remotes: Addr[]): Promise<void> {
    const fresh = remotes.filter((a) => !this.#neighborsKept.has(formatAddr(a.bytes, a.v6)));
    if (fresh.length === 0) return;
    await keepNeighbors(this.#underlay(), fresh);
    for (const a of fresh) this.#neighborsKept.add(formatAddr(a.bytes, a.v6));
  }

  /** Port names and numbers, for parsing and printing flows. */
  portNames(): PortNames {
    return {
      number: (name) => this.#ports.find((p) => p.name === name)?.number,
      name: (n) => this.#ports.find((p) => p.number === n)?.name,
    };
  }

  /** A match as flow text, ports by name. */
  describeMatch(m: Match): string {
    return formatMatch(m, this.portNames());
  }

  /** A flow as `flow add` would take it: priority, match and actions. */
  describeFlow(f: InstalledFlow): string {
    return formatFlow(f, this.portNames(), this.#describeActions(f.actions));
  }

  // Dumps share one frozen action list among every flow that has it.
  readonly #actionText = new WeakMap<ActionSpec[], string>();

  #describeActions(actions: ActionSpec[]): string {
    let text = this.#actionText.get(actions);
    if (text === undefined) {
      text = actions.map(formatAction).join(",") || "drop";
      if (Object.isFrozen(actions)) this.#actionText.set(actions, text);
    }
    return text;
  }

  /** Adds flows (see FlowTable.add), keeping their remotes' next hops resolved. */
  async addFlows(specs: FlowSpec[]): Promise<AddResult> {
    const result = this.#locked(() => {
      const r = this.flows.add(specs);
      this.#learnGeneve(specs.some((s) => s.match.mask.gnv_class || s.match.mask.gnv_type));
      return r;
    });
    await this.#keepNeighbors(result.remotes);
    return result;
  }

  /** Changes the actions of flows (see FlowTable.modify). */
  async modifyFlow(spec: FlowSpec): Promise<number> {
    const n = this.#locked(() => this.flows.modify(spec));
    const remotes = spec.actions.flatMap((a) => a.type === "set_tunnel" && a.dst ? [a.dst] : []);
    await this.#keepNeighbors(remotes);
    return n;
  }

  /** Deletes flows (see FlowTable.delete). */
  deleteFlows(filter: FlowFilter, strict: boolean): number {
    return this.#locked(() => {
      const n = this.flows.delete(filter, strict);
      this.#learnGeneve(n > 0);
      return n;
    });
  }

  /** The flows the filter covers, highest priority first. */
  dumpFlows(filter: FlowFilter = {}, options: { counters?: boolean } = {}): InstalledFlow[] {
    return [...this.eachFlow(filter, options)];
  }

  /**
   * Makes the flows exactly `specs`, atomically (see FlowTable.apply);
   * `specs` may be a generator, read once.
   */
  async applyFlows(specs: Iterable<FlowSpec>, options: ApplyOptions = {}): Promise<FlowDiff> {
    const diff = this.#locked(() => {
      const d = this.flows.apply(specs, options);
      if (!options.dryRun) this.#learnGeneve(true);
      return d;
    });
    if (!options.dryRun) await this.#keepNeighbors(diff.remotes);
    return diff;
  }

  #locked<T>(fn: () => T): T {
    using _lock = this.lock();
    this.#refreshPorts();
    const result = fn();
    // The flow table marked its change; the ports are as they were.
    this.#knownSeq = this.flows.lastSeq ?? this.#knownSeq;
    return result;
  }

  /**
   * Re-reads the ports unless nothing changed since this object last
   * looked: every change, by any process, bumps the configuration's change
   * counter. One syscall when nothing did.
   */
  #refreshPorts(): void {
    const seq = this.maps.config.read().seq;
    if (seq === this.#knownSeq) return;
    this.#reloadPorts();
    this.#knownSeq = seq;
  }

  /** After writing ports: marks the change for everyone and re-reads them. */
  #portsChanged(): void {
    const { seq } = this.maps.config.bump();
    this.flows.invalidate();
    this.#reloadPorts();
    this.#knownSeq = seq;
  }

  #initialize(underlayIfindex: number, options: UpOptions): void {
    const maxFlows = this.maps.flowStats.raw.info.maxEntries;
    const maxTunKeys = this.maps.tunKeys.raw.info.maxEntries;
    this.maps.config.create({
      layout_version: LAYOUT_VERSION,
      gen: 0,
      max_flows: maxFlows,
      max_tun_keys: maxTunKeys,
      flags: 0,
      underlay_ifindex: underlayIfindex,
      miss_local: options.missLocal === "pass" ? Miss.PASS : Miss.DROP,
      miss_tunnel: options.missTunnel === "pass" ? Miss.PASS : Miss.DROP,
      fwd_saved: 0,
      stt_timeout_ms: options.sttTimeoutMs ?? STT_DEFAULT_TIMEOUT_MS,
      seq: 0n,
      local_v4: new Uint8Array(16),
      local_v6: new Uint8Array(16),
    });
    writeMasks(this.maps, 0, []);
    writeMasks(this.maps, 1, []);
    using index = createIndex(maxFlows);
    this.maps.setFlowIndex(0, index);
    this.maps.setFlowIndex(1, index);
  }

  #setMiss(options: UpOptions): void {
    if (!options.missLocal && !options.missTunnel && options.sttTimeoutMs === undefined) return;
    this.maps.config.update((cfg) => ({
      stt_timeout_ms: options.sttTimeoutMs ?? cfg.stt_timeout_ms,
      miss_local: options.missLocal
        ? (options.missLocal === "pass" ? Miss.PASS : Miss.DROP)
        : cfg.miss_local,
      miss_tunnel: options.missTunnel
        ? (options.missTunnel === "pass" ? Miss.PASS : Miss.DROP)
        : cfg.miss_tunnel,
    }));
  }

  #pinPrograms(programs: Record<string, Program>): void {
    ensurePinDir(`${this.pinDir}/progs`);
    for (const [name, p] of Object.entries(programs)) {
      // Pin the new program aside, then move it over the old pin.
      const pin = `${this.pinDir}/progs/${name}`;
      // bpffs refuses names with a dot.
      const fresh = `${pin}-new`;
      unpin(fresh);
      p.pin(fresh);
      Deno.renameSync(fresh, pin);
    }
  }

  /** Local endpoint addresses: "address only" entries of wr_endpoints. */
  localIps(): Addr[] {
    const out: Addr[] = [];
    for (const [k] of this.maps.endpoints.entries()) {
      if (k.ipproto === 0 && k.dst_port === 0) out.push({ v6: k.v6 === 1, bytes: k.addr });
    }
    return out;
  }

  #setLocalIps(ips: Addr[]): void {
    const current = this.localIps();
    const same = (a: Addr, b: Addr) => a.v6 === b.v6 && a.bytes.every((x, i) => x === b.bytes[i]);
    const gone = current.filter((c) => !ips.some((i) => same(i, c)));
    if (gone.length && this.#ports.some((p) => p.kind === "tunnel")) {
      throw new PortError(
        `local endpoints ${
          gone.map((a) => formatAddr(a.bytes, a.v6)).join(", ")
        } are in use by tunnel ports; delete those first`,
      );
    }
    for (const a of gone) {
      this.maps.endpoints.delete({ addr: a.bytes, ipproto: 0, v6: a.v6 ? 1 : 0, dst_port: 0 });
    }
    for (const a of ips) {
      if (current.some((c) => same(a, c))) continue;
      this.maps.endpoints.set({ addr: a.bytes, ipproto: 0, v6: a.v6 ? 1 : 0, dst_port: 0 }, {
        port: 0,
        fixed_remotes: 0,
        proto: 0,
      });
    }
    // The first address of each family is the outer source when neither
    // the port, the flow nor the FIB gives one.
    this.maps.config.update(() => ({
      local_v4: ips.find((a) => !a.v6)?.bytes ?? new Uint8Array(16),
      local_v6: ips.find((a) => a.v6)?.bytes ?? new Uint8Array(16),
    }));
  }

  #reloadPorts(): void {
    const ports: Port[] = [];
    // Every slot is read in one batch, but only the few in use decoded:
    // this runs before every change, a flow added alone included.
    const codec = this.maps.ports.value;
    const kindAt = PORT_KIND_OFFSET;
    for (const c of this.maps.ports.raw.lookupBatch(MAX_PORTS)) {
      const keys = new DataView(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength);
      for (let i = 0; i < c.count; i++) {
        if (c.values[i * codec.size + kindAt] === PortKind.NONE) continue;
        const n = keys.getUint32(i * 4, true);
        const entry = decodeWith(codec, c.values, i * codec.size);
        const info = this.maps.portInfo.get(n);
        const p = info && decodePort(n, entry, info);
        if (p) ports.push(p);
      }
    }
    this.#ports = ports.sort((a, b) => a.number - b.number);
  }

  /** Every port, by number. */
  ports(): Port[] {
    return [...this.#ports];
  }

  /**
   * Whether local port `port`'s device still exists (a port outlives its
   * device until deleted).
   */
  devicePresent(port: LocalPort): boolean {
    return ifname(this.maps.ports.get(port.number)?.ifindex ?? 0) === port.device;
  }

  /** Ports by name and number, for flows. */
  portLookup(): PortLookup {
    return {
      byName: (name) => this.#ports.find((p) => p.name === name),
      byNumber: (n) => this.#ports.find((p) => p.number === n),
    };
  }

  /**
   * A private copy of the programs that shares every map with the live
   * datapath but changes none of them: counters stay still and GRE
   * sequence numbers are not used up. `warren trace` runs packets through
   * these, so tracing never disturbs what the counters say about real
   * traffic. Close each program when done.
   */
  dryRunPrograms(): Record<typeof PROGRAMS[number], Program> {
    using obj = openDatapathObject();
    obj.setConstant("wr_dry_run", 1);
    for (const [name, map] of this.maps.all()) obj.reuseMap(name, map);
    obj.load();
    return Object.fromEntries(PROGRAMS.map((n) => [n, obj.program(n)])) as Record<
      typeof PROGRAMS[number],
      Program
    >;
  }

  /** The lock every change takes; hold it across several changes. */
  lock(): DatapathLock {
    this.#lockFile ??= openLockFile(this.pinDir);
    return DatapathLock.acquire(this.pinDir, this.#lockFile);
  }

  #freeNumber(): number {
    for (let n = 1; n < MAX_PORTS; n++) if (!this.#ports.some((p) => p.number === n)) return n;
    throw new PortError(`all ${MAX_PORTS - 1} port numbers are taken`);
  }

  #checkNewName(name: string): void {
    checkPortName(name);
    if (this.#ports.some((p) => p.name === name)) {
      throw new PortError(`a port named "${name}" exists already`);
    }
  }

  /**
   * Adds a local port on `deviceName` and attaches the local program to
   * its ingress. `xdp` says its peer takes XDP redirects.
   */
  async addLocalPort(
    name: string,
    deviceName: string,
    options: { xdp?: boolean } = {},
  ): Promise<LocalPort> {
    const dev = await device(deviceName);
    using _lock = this.lock();
    this.#refreshPorts();
    this.#checkNewName(name);
    const port: LocalPort = {
      kind: "local",
      name,
      number: this.#freeNumber(),
      device: dev.name,
      xdp: options.xdp ?? false,
    };
    this.#writeLocalPort(port, dev.ifindex);
    this.#portsChanged();
    return port;
  }

  #writeLocalPort(port: LocalPort, ifindex: number): void {
    if (
      this.#ports.some((p) =>
        p.kind === "local" && p.device === port.device && p.number !== port.number
      )
    ) {
      throw new PortError(`${port.device} is already a port`);
    }
    const cfg = this.maps.config.read();
    if (ifindex === cfg.underlay_ifindex) {
      throw new PortError(`${port.device} is the underlay; it cannot be a local port`);
    }
    // The port's entry goes last: until it exists the rest is inert (a
    // frame of the device classifies under a port no flow names), and a
    // writer that dies before it leaves a port that does not exist yet,
    // which adding it again completes.
    const { entry, info } = encodePort(port, { ifindex });
    this.maps.portInfo.set(port.number, info);
    using program = this.#program("wr_tc_local");
    attachTcRecorded(
      this.pinDir,
      ifindex,
      program,
      cfg.flags & ConfigFlag.CLSACT ? "clsact" : "tcx",
    );
    try {
      this.maps.ifindexPorts.set(ifindex, port.number);
      failpoint("port.written");
      this.maps.ports.set(port.number, entry);
    } catch (err) {
      this.maps.ifindexPorts.delete(ifindex);
      detachDevice(this.pinDir, ifindex);
      throw err;
    }
  }

  /** Adds a tunnel port of `proto` with Open vSwitch-style `options`. */
  async addTunnelPort(
    name: string,
    proto: string,
    options: Record<string, string>,
  ): Promise<TunnelPort> {
    const dev = await device(this.#underlay());
    const spec = tunnelPort(name, proto, dev.name, options);
    using _lock = this.lock();
    this.#refreshPorts();
    this.#checkNewName(name);
    const port: TunnelPort = { ...spec, number: this.#freeNumber() };
    this.#writeTunnelPort(port, dev.ifindex, dev.mac);
    this.#portsChanged();
    if (port.remote !== "flow") await keepNeighbors(dev.name, [port.remote]);
    return port;
  }

  #writeTunnelPort(port: TunnelPort, ifindex: number, mac: string): void {
    const endpoints = this.#endpointsOf(port);
    this.#dropStaleRefs(endpoints.map((e) => e.key));
    // Check every endpoint before writing any.
    for (const { key } of endpoints) {
      const ep = this.maps.endpoints.get(key);
      if (ep && ep.proto !== protoNumber(port.proto)) {
        throw new PortError(`${endpointText(key)} already speaks another protocol`);
      }
      if (ep && port.remote === "flow" && ep.port && ep.port !== port.number) {
        const other = this.#ports.find((p) => p.number === ep.port)?.name ?? ep.port;
        throw new PortError(`${endpointText(key)} already has a flow-based port (${other})`);
      }
      if (port.remote !== "flow") {
        const fixed = this.maps.remotes.get({ ep: key, remote: port.remote.bytes });
        if (fixed && fixed !== port.number) {
          throw new PortError(
            `${endpointText(key)} already has a port for remote ${
              formatAddr(port.remote.bytes, port.remote.v6)
            }`,
          );
        }
      }
    }
    // As for a local port, the entry goes last (a packet steered to a
    // port without one is dropped as no_port until then).
    const { entry, info } = encodePort(port, { ifindex, deviceMac: mac });
    this.maps.portInfo.set(port.number, info);
    for (const { key } of endpoints) {
      const ep: Endpoint = this.maps.endpoints.get(key) ??
        { port: 0, fixed_remotes: 0, proto: protoNumber(port.proto) };
      if (port.remote === "flow") ep.port = port.number;
      else {
        this.maps.remotes.set({ ep: key, remote: port.remote.bytes }, port.number);
        ep.fixed_remotes = 1;
      }
      this.maps.endpoints.set(key, ep);
    }
    failpoint("port.written");
    this.maps.ports.set(port.number, entry);
    if (port.proto === "geneve") this.#learnGeneve(true);
  }

  /**
   * Makes port `port.name` exactly `port` (added if new), keeping its
   * number so the flows that name it stay valid. Returns what it did.
   */
  async upsertPort(
    port: { kind: "local"; name: string; device: string; xdp?: boolean } | {
      kind: "tunnel";
      name: string;
      proto: string;
      options: Record<string, string>;
    },
  ): Promise<"added" | "changed" | "unchanged"> {
    const dev = await device(port.kind === "local" ? port.device : this.#underlay());
    const wanted: Omit<LocalPort, "number"> | Omit<TunnelPort, "number"> = port.kind === "local"
      ? { kind: "local", name: port.name, device: dev.name, xdp: port.xdp ?? false }
      : tunnelPort(port.name, port.proto, dev.name, port.options);
    using _lock = this.lock();
    this.#refreshPorts();
    const old = this.#ports.find((p) => p.name === port.name);
    if (old && samePort(old, wanted)) return "unchanged";
    if (!old) this.#checkNewName(port.name);
    const full = { ...wanted, number: old?.number ?? this.#freeNumber() } as Port;
    if (old) this.#unwritePort(old);
    if (full.kind === "local") this.#writeLocalPort(full, dev.ifindex);
    else this.#writeTunnelPort(full, dev.ifindex, dev.mac);
    this.#portsChanged();
    if (full.kind === "tunnel" && full.remote !== "flow") {
      await keepNeighbors(dev.name, [full.remote]);
    }
    return old ? "changed" : "added";
  }

  /** The endpoint keys a tunnel port listens on: its local addresses. */
  #endpointsOf(port: TunnelPort): { key: EndpointKey }[] {
    const family = port.remote !== "flow" ? port.remote.v6 : port.local?.v6;
    const addrs = port.local
      ? [port.local]
      : this.localIps().filter((a) => family === undefined || a.v6 === family);
    if (addrs.length === 0) {
      throw new PortError(
        `no local endpoint address of the tunnel's family; bring warren up with --local-ip`,
      );
    }
    return addrs.map((a) => ({
      key: {
        addr: a.bytes,
        ipproto: ipProtoOf(port.proto),
        v6: a.v6 ? 1 : 0,
        dst_port: port.proto === "gre" ? 0 : port.dstPort,
      },
    }));
  }

  /**
   * The Geneve options flows match on count as understood (RFC 8926): a
   * critical option some flow matches is not dropped as unknown. `changed`
   * says whether the flows may have changed that set.
   */
  #learnGeneve(changed: boolean): void {
    if (!changed || !this.#ports.some((p) => p.kind === "tunnel" && p.proto === "geneve")) return;
    const known = this.flows.geneveOptions();
    for (const k of this.maps.geneveKnown.keys()) {
      if (!known.has(k)) this.maps.geneveKnown.delete(k);
    }
    for (const k of known) this.maps.geneveKnown.set(k, 1);
  }

  /**
   * Deletes port `name`. Refuses while flows use it, unless `force`, which
   * deletes those flows too.
   */
  deletePort(name: string, options: { force?: boolean } = {}): void {
    using _lock = this.lock();
    this.#refreshPorts();
    const port = this.#ports.find((p) => p.name === name);
    if (!port) throw new PortError(`there is no port named "${name}"`);
    const users = this.flows.count({ port: port.number });
    if (users && !options.force) {
      throw new PortError(`${users} flow(s) use port ${name}; delete them first, or use --force`);
    }
    if (users) this.flows.delete({ port: port.number }, false);
    this.#unwritePort(port);
    const entry = this.maps.ports.get(port.number)!;
    this.maps.ports.set(port.number, { ...entry, kind: PortKind.NONE, flags: 0 });
    this.maps.portInfo.set(port.number, { name: new Uint8Array(16), device: new Uint8Array(16) });
    this.#portsChanged();
  }

  /**
   * Drops what a writer that died midway left at endpoints `keys`:
   * references to tunnel ports that do not exist (their entry is written
   * last). Garbage to everything else, they would otherwise block adding
   * the port again.
   */
  #dropStaleRefs(keys: EndpointKey[]): void {
    const live = new Set(this.#ports.flatMap((p) => p.kind === "tunnel" ? [p.number] : []));
    const stale = new Set<EndpointKey>();
    for (const [k, n] of [...this.maps.remotes.entries()]) {
      const key = keys.find((key) => sameKey(key, k.ep));
      if (key && !live.has(n)) {
        this.maps.remotes.delete(k);
        stale.add(key);
      }
    }
    for (const key of keys) {
      const ep = this.maps.endpoints.get(key);
      if (ep?.port && !live.has(ep.port)) {
        ep.port = 0;
        this.maps.endpoints.set(key, ep);
        stale.add(key);
      }
    }
    for (const key of stale) this.#settleEndpoint(key);
  }

  /** Recounts endpoint `key`'s fixed remotes; deletes it when unused. */
  #settleEndpoint(key: EndpointKey): void {
    const ep = this.maps.endpoints.get(key);
    if (!ep) return;
    ep.fixed_remotes = [...this.maps.remotes.keys()].some((k) => sameKey(k.ep, key)) ? 1 : 0;
    if (ep.port === 0 && ep.fixed_remotes === 0) this.maps.endpoints.delete(key);
    else this.maps.endpoints.set(key, ep);
  }

  /** Undoes what writing `port` did outside its own slot. */
  #unwritePort(port: Port): void {
    const entry = this.maps.ports.get(port.number)!;
    if (port.kind === "local") {
      this.maps.ifindexPorts.delete(entry.ifindex);
      detachDevice(this.pinDir, entry.ifindex);
      return;
    }
    for (const { key } of this.#endpointsOf(port)) {
      const ep = this.maps.endpoints.get(key);
      if (!ep) continue;
      if (port.remote !== "flow") this.maps.remotes.delete({ ep: key, remote: port.remote.bytes });
      if (ep.port === port.number) this.maps.endpoints.set(key, { ...ep, port: 0 });
      this.#settleEndpoint(key);
    }
  }

  /** Reports what is attached where, the pins, and how full each table is. */
  status(): Status {
    const cfg = this.maps.config.read();
    const programs = PROGRAMS.map((name) => {
      try {
        using p = this.#program(name);
        return { name, id: p.info().id };
      } catch (err) {
        if (err instanceof BpfError) return { name, id: 0 };
        throw err;
      }
    });
    const gen = cfg.gen & 1;
    const usage = this.flows.usage();
    const count = (m: { raw: { keys(): Generator<unknown> } }) => [...m.raw.keys()].length;
    return {
      pinDir: this.pinDir,
      underlay: { ifindex: cfg.underlay_ifindex, device: ifname(cfg.underlay_ifindex) },
      localIps: this.localIps().map((a) => formatAddr(a.bytes, a.v6)),
      attachments: attachments(this.pinDir),
      programs,
      tables: [
        { name: "ports", used: this.#ports.length, capacity: MAX_PORTS - 1 },
        { name: "flows", used: usage.flows, capacity: cfg.max_flows },
        { name: "masks", used: usage.masks, capacity: MAX_MASKS },
        { name: "tunnel_keys", used: usage.tunKeys.used, capacity: usage.tunKeys.capacity },
        {
          name: "endpoints",
          used: count(this.maps.endpoints),
          capacity: this.maps.endpoints.raw.info.maxEntries,
        },
        {
          name: "remotes",
          used: count(this.maps.remotes),
          capacity: this.maps.remotes.raw.info.maxEntries,
        },
      ],
      generation: gen,
    };
  }

  // Reads beside the writes above, so that callers (the CLI, watch,
  // metrics, trace) reach the tables through this object alone.

  /**
   * The flows the filter covers, highest priority first, one at a time: a
   * dump of a million flows never holds them all. With `counters`, every
   * flow's counters are read once, before the first flow.
   */
  *eachFlow(
    filter: FlowFilter = {},
    options: { counters?: boolean } = {},
  ): Generator<InstalledFlow> {
    yield* this.flows.sorted(filter, {
      counters: options.counters ? this.flows.counterArrays() : undefined,
    });
  }

  /** The flow a packet with flow key `key` hits, as the kernel's lookup picks it. */
  lookupFlow(key: FlowKey): InstalledFlow | undefined {
    return this.flows.lookup(key);
  }

  /** Every counter: per port, per drop reason, per event, summed over CPUs. */
  stats(): Stats {
    return readStats(this.maps, this.#ports);
  }

  #program(name: typeof PROGRAMS[number]): Program {
    const pin = `${this.pinDir}/progs/${name}`;
    if (!isPinned(pin)) {
      throw new NotFoundError(`program ${name} is not pinned under ${this.pinDir}`);
    }
    return Program.fromPin(pin);
  }

  /** Releases every descriptor; the datapath stays up. */
  close(): void {
    this.flows.close();
    this.#lockFile?.close();
    this.#lockFile = undefined;
    this.maps.close();
  }

  /** Same as `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

function endpointText(k: EndpointKey): string {
  const proto = k.ipproto === 17 ? "udp" : k.ipproto === 47 ? "gre" : "tcp";
  return `${formatAddr(k.addr, k.v6 === 1)} ${proto}${k.dst_port ? `/${k.dst_port}` : ""}`;
}

/** Whether a port already is what `want` describes. */
function samePort(
  have: Port,
  want: Omit<LocalPort, "number"> | Omit<TunnelPort, "number">,
): boolean {
  const strip = (p: object) => toComparable({ ...p, number: 0 });
  return strip(have) === strip(want);
}

function toComparable(v: unknown): string {
  return JSON.stringify(
    v,
    (_k, x) => typeof x === "bigint" ? `${x}n` : x instanceof Uint8Array ? Array.from(x) : x,
  );
}

function sameKey(a: EndpointKey, b: EndpointKey): boolean {
  return a.ipproto === b.ipproto && a.v6 === b.v6 && a.dst_port === b.dst_port &&
    a.addr.every((x, i) => x === b.addr[i]);
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
