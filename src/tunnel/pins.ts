/**
 * The datapath's pinned state: every map the programs share, with the
 * codecs TypeScript reads it through, under `<pin dir>/maps/`.
 *
 * Opening checks two things before anything is read: the layout version
 * recorded in `wr_config` (an explicit version, because equal sizes can
 * hide a changed layout) and each map's key and value against its BTF.
 *
 * @module
 */

import { LayoutError, NotFoundError } from "../bpf/errors.ts";
import { BpfMap } from "../bpf/map.ts";
import type { BpfObject } from "../bpf/object.ts";
import { ensurePinDir, isPinned, unpin } from "../bpf/pin.ts";
import { u32, u64 } from "../maps/codec.ts";
import {
  actionCodec,
  type ActionEntry,
  type Endpoint,
  endpointCodec,
  type EndpointKey,
  endpointKeyCodec,
  type FlowEntry,
  flowEntryCodec,
  type FlowIndexKey,
  flowIndexKeyCodec,
  type FlowStats,
  flowStatsCodec,
  groupCodec,
  type GroupEntry,
  type GroupStats,
  groupStatsCodec,
  IFINDEX_DIRECT,
  LAYOUT_VERSION,
  type MaskSet,
  maskSetCodec,
  ownerCodec,
  type OwnerEntry,
  portCodec,
  type PortEntry,
  type PortInfo,
  portInfoCodec,
  type PortStats,
  portStatsCodec,
  type RemoteKey,
  remoteKeyCodec,
  type StatBlock,
  statBlockCodec,
  tunKeyCodec,
  type TunKeyEntry,
} from "../maps/layouts.ts";
import type { PinnedMap, WarrenNames } from "../maps/names.ts";
import { PAST_LAYOUTS } from "../maps/past/mod.ts";
import { encodeWith, PerCpuMap, TypedMap } from "../maps/typed_map.ts";
import { ConfigMap } from "./config.ts";

/** Where the flow indexes are pinned, each under its map id. */
function flowIndexDir(dir: string): string {
  return `${dir}/maps/flow_index`;
}

function flowIndexPin(dir: string, id: number): string {
  return `${flowIndexDir(dir)}/${id}`;
}

/** Where each named owner's set of flows is pinned, under its owner id. */
function ownedDir(dir: string): string {
  return `${dir}/maps/owned`;
}

/** The pin path of map `name` under `dir`. */
export function mapPin(dir: string, name: string): string {
  return `${dir}/maps/${name}`;
}

/** The flow index of one table generation. */
export type FlowIndex = TypedMap<FlowIndexKey, FlowEntry>;

/**
 * A local port's ifindex to its number, in two maps: `wr_ifindex_ports`,
 * an array the local program indexes, for the ifindexes below
 * {@link IFINDEX_DIRECT}, and `wr_ifindex_ports_far`, a hash map, for the
 * rest. An ifindex lives in one of them, so a change is still one write.
 */
export class IfindexPorts {
  /** `wr_ifindex_ports`: 0 where no port is. */
  readonly direct: TypedMap<number, number>;
  /** `wr_ifindex_ports_far`. */
  readonly far: TypedMap<number, number>;

  /** Wraps the two maps. */
  constructor(direct: TypedMap<number, number>, far: TypedMap<number, number>) {
    this.direct = direct;
    this.far = far;
  }

  /** Makes `ifindex` the device of port `port`. */
  set(ifindex: number, port: number): void {
    if (ifindex < IFINDEX_DIRECT) this.direct.set(ifindex, port);
    else this.far.set(ifindex, port);
  }

  /** Makes `ifindex` no port's device. */
  delete(ifindex: number): void {
    if (ifindex < IFINDEX_DIRECT) this.direct.set(ifindex, 0);
    else this.far.delete(ifindex);
  }
}

/** DatapathMaps holds every shared map, typed. */
export class DatapathMaps implements Disposable {
  /** `wr_config`, one entry, changed only through its read-modify-write. */
  readonly config: ConfigMap;
  /** `wr_ports`, by port number. */
  readonly ports: TypedMap<number, PortEntry>;
  /** `wr_port_info`, by port number. */
  readonly portInfo: TypedMap<number, PortInfo>;
  /** `wr_ifindex_ports` and `wr_ifindex_ports_far`: a local port's ifindex to its number. */
  readonly ifindexPorts: IfindexPorts;
  /** `wr_xdp_ports` (a device map): an XDP-capable local port's number to its ifindex. */
  readonly xdpPorts: TypedMap<number, number>;
  /** `wr_endpoints`. */
  readonly endpoints: TypedMap<EndpointKey, Endpoint>;
  /** `wr_remotes`. */
  readonly remotes: TypedMap<RemoteKey, number>;
  /** `wr_geneve_known`: (class << 8 | type) of understood options. */
  readonly geneveKnown: TypedMap<number, number>;
  /** `wr_tun_keys`, by slot. */
  readonly tunKeys: TypedMap<number, TunKeyEntry>;
  /** `wr_masks`, by generation. */
  readonly masks: TypedMap<number, MaskSet>;
  /** `wr_flow_tables`: the flow index of each generation (map of maps). */
  readonly flowTables: BpfMap;
  /** `wr_flow_stats`, by flow id, per CPU. */
  readonly flowStats: PerCpuMap<number, FlowStats>;
  /** `wr_port_stats`, by port number, per CPU. */
  readonly portStats: PerCpuMap<number, PortStats>;
  /** `wr_stats`: one entry, each CPU's block of the datapath-wide counters. */
  readonly stats: PerCpuMap<number, StatBlock>;
  /** `wr_flow_ids`: the flow id bitmap. */
  readonly flowIds: TypedMap<number, bigint>;
  /** `wr_tun_key_refs`: how many actions use each tunnel key slot. */
  readonly tunKeyRefs: TypedMap<number, number>;
  /** `wr_tun_key_slots`: a tunnel key's content to its slot. */
  readonly tunKeySlots: TypedMap<TunKeyEntry, number>;
  /** `wr_group_slots`: a group id to its slot. */
  readonly groupSlots: TypedMap<number, number>;
  /** `wr_groups`: a group slot's bucket lists. */
  readonly groups: TypedMap<number, GroupEntry>;
  /** `wr_buckets`: every group's buckets, back to back. */
  readonly buckets: TypedMap<number, ActionEntry>;
  /** `wr_group_stats`, by group slot, per CPU. */
  readonly groupStats: PerCpuMap<number, GroupStats>;
  /** `wr_bucket_stats`, by bucket, per CPU. */
  readonly bucketStats: PerCpuMap<number, GroupStats>;
  /** `wr_owners`: owners' names, by owner id. */
  readonly owners: TypedMap<number, OwnerEntry>;

  /** Where the maps are pinned, once they are. */
  #dir?: string;

  private constructor(open: (name: PinnedMap) => BpfMap) {
    const opened: BpfMap[] = [];
    const take = (name: PinnedMap) => {
      const m = open(name);
      opened.push(m);
      return m;
    };
    try {
      this.config = new ConfigMap(take("wr_config"));
      this.ports = new TypedMap(take("wr_ports"), u32, portCodec);
      this.portInfo = new TypedMap(take("wr_port_info"), u32, portInfoCodec);
      this.ifindexPorts = new IfindexPorts(
        new TypedMap(take("wr_ifindex_ports"), u32, u32),
        new TypedMap(take("wr_ifindex_ports_far"), u32, u32),
      );
      this.xdpPorts = new TypedMap(take("wr_xdp_ports"), u32, u32);
      this.endpoints = new TypedMap(take("wr_endpoints"), endpointKeyCodec, endpointCodec);
      this.remotes = new TypedMap(take("wr_remotes"), remoteKeyCodec, u32);
      this.geneveKnown = new TypedMap(take("wr_geneve_known"), u32, u32);
      this.tunKeys = new TypedMap(take("wr_tun_keys"), u32, tunKeyCodec);
      this.masks = new TypedMap(take("wr_masks"), u32, maskSetCodec);
      this.flowTables = take("wr_flow_tables");
      this.flowStats = new PerCpuMap(take("wr_flow_stats"), u32, flowStatsCodec);
      this.portStats = new PerCpuMap(take("wr_port_stats"), u32, portStatsCodec);
      this.stats = new PerCpuMap(take("wr_stats"), u32, statBlockCodec);
      this.flowIds = new TypedMap(take("wr_flow_ids"), u32, u64);
      this.tunKeyRefs = new TypedMap(take("wr_tun_key_refs"), u32, u32);
      this.tunKeySlots = new TypedMap(take("wr_tun_key_slots"), tunKeyCodec, u32);
      this.groupSlots = new TypedMap(take("wr_group_slots"), u32, u32);
      this.groups = new TypedMap(take("wr_groups"), u32, groupCodec);
      this.buckets = new TypedMap(take("wr_buckets"), u32, actionCodec);
      this.groupStats = new PerCpuMap(take("wr_group_stats"), u32, groupStatsCodec);
      this.bucketStats = new PerCpuMap(take("wr_bucket_stats"), u32, groupStatsCodec);
      this.owners = new TypedMap(take("wr_owners"), u32, ownerCodec);
    } catch (err) {
      for (const m of opened) m.close();
      throw err;
    }
  }

  /** The maps of a freshly loaded object. */
  static fromObject(obj: BpfObject<WarrenNames>): DatapathMaps {
    return new DatapathMaps((name) => obj.map(name));
  }

  /**
   * The maps pinned under `dir`. Throws a NotFoundError when the datapath
   * is not up there, and a LayoutError when its pins were written under
   * another layout version.
   */
  static fromPins(dir: string): DatapathMaps {
    if (!isPinned(mapPin(dir, "wr_config"))) {
      throw new NotFoundError(
        `no warren datapath is pinned under ${dir} (run: warren up --underlay DEVICE)`,
      );
    }
    checkLayoutVersion(dir);
    const maps = new DatapathMaps((name) => BpfMap.fromPin(mapPin(dir, name)));
    maps.#dir = dir;
    return maps;
  }

  /** Where the maps are pinned, once they are. */
  get pinDir(): string | undefined {
    return this.#dir;
  }

  /** Pins every map under `dir` (a datapath's first `up`). */
  pin(dir: string): void {
    for (const [name, map] of this.all()) map.pin(mapPin(dir, name));
    this.#dir = dir;
  }

  /**
   * The flow index of generation `gen`, or undefined when none is set.
   * Opened through its pin: the kernel opens a map by id for CAP_SYS_ADMIN
   * only, and warren runs with CAP_BPF.
   */
  flowIndex(gen: number): FlowIndex | undefined {
    const id = this.flowIndexId(gen);
    if (!id) return undefined;
    return new TypedMap(this.openFlowIndex(id), flowIndexKeyCodec, flowEntryCodec);
  }

  /** The map id of generation `gen`'s flow index (0 when none is set). */
  flowIndexId(gen: number): number {
    const id = this.flowTables.lookup(encodeWith(u32, gen));
    return id ? new DataView(id.buffer).getUint32(0, true) : 0;
  }

  /** Opens the flow index with map id `id`: by its pin, else by id. */
  openFlowIndex(id: number): BpfMap {
    const pin = this.#dir && flowIndexPin(this.#dir, id);
    return pin && isPinned(pin) ? BpfMap.fromPin(pin) : BpfMap.fromId(id);
  }

  /**
   * Makes `index` the flow index of generation `gen`. Once the maps are
   * pinned, the index is pinned (by its id) before it goes live, and the
   * pins of indexes neither generation uses any more go after.
   */
  setFlowIndex(gen: number, index: BpfMap): void {
    const dir = this.#dir;
    if (dir) {
      ensurePinDir(flowIndexDir(dir));
      const pin = flowIndexPin(dir, index.info.id);
      if (!isPinned(pin)) index.pin(pin);
    }
    this.flowTables.update(encodeWith(u32, gen), encodeWith(u32, index.fd));
    if (dir) {
      const live = new Set([this.flowIndexId(0), this.flowIndexId(1)]);
      for (const e of Deno.readDirSync(flowIndexDir(dir))) {
        if (!live.has(Number(e.name))) unpin(`${flowIndexDir(dir)}/${e.name}`);
      }
    }
  }

  /**
   * Returns once no program that started before the call is still
   * running, so whatever they read that was replaced since may be reused.
   * The kernel waits for an RCU grace period on every write to a map of
   * maps; the write made here puts back the flow index a slot holds.
   */
  waitForPrograms(): void {
    const id = this.flowIndexId(0);
    if (!id) return;
    using index = this.openFlowIndex(id);
    this.flowTables.update(encodeWith(u32, 0), encodeWith(u32, index.fd));
  }

  /** Every map, with its pinned name. */
  *all(): Generator<[PinnedMap, BpfMap]> {
    yield ["wr_config", this.config.raw];
    yield ["wr_ports", this.ports.raw];
    yield ["wr_port_info", this.portInfo.raw];
    yield ["wr_ifindex_ports", this.ifindexPorts.direct.raw];
    yield ["wr_ifindex_ports_far", this.ifindexPorts.far.raw];
    yield ["wr_xdp_ports", this.xdpPorts.raw];
    yield ["wr_endpoints", this.endpoints.raw];
    yield ["wr_remotes", this.remotes.raw];
    yield ["wr_geneve_known", this.geneveKnown.raw];
    yield ["wr_tun_keys", this.tunKeys.raw];
    yield ["wr_masks", this.masks.raw];
    yield ["wr_flow_tables", this.flowTables];
    yield ["wr_flow_stats", this.flowStats.raw];
    yield ["wr_port_stats", this.portStats.raw];
    yield ["wr_stats", this.stats.raw];
    yield ["wr_flow_ids", this.flowIds.raw];
    yield ["wr_tun_key_refs", this.tunKeyRefs.raw];
    yield ["wr_tun_key_slots", this.tunKeySlots.raw];
    yield ["wr_group_slots", this.groupSlots.raw];
    yield ["wr_groups", this.groups.raw];
    yield ["wr_buckets", this.buckets.raw];
    yield ["wr_group_stats", this.groupStats.raw];
    yield ["wr_bucket_stats", this.bucketStats.raw];
    yield ["wr_owners", this.owners.raw];
  }

  /**
   * The pinned set of owner `id`'s flows, opened; undefined when it has
   * none, unless `create` makes an empty one (pinned before it is used).
   */
  ownedSet(id: number, create?: () => BpfMap): BpfMap | undefined {
    const dir = this.#dir;
    if (!dir) throw new NotFoundError("flows have owners only in a pinned datapath");
    const pin = `${ownedDir(dir)}/${id}`;
    if (isPinned(pin)) return BpfMap.fromPin(pin);
    if (!create) return undefined;
    ensurePinDir(ownedDir(dir));
    const map = create();
    map.pin(pin);
    return map;
  }

  /** Removes owner `id`'s set, once no flow of it is left. */
  dropOwnedSet(id: number): void {
    if (this.#dir) unpin(`${ownedDir(this.#dir)}/${id}`);
  }

  /** Releases every map's descriptor. */
  close(): void {
    for (const [, m] of this.all()) m.close();
  }

  /** Same as `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Refuses pins written under another layout version, before any codec
 * reads them: a map whose meaning changed but whose size did not would
 * otherwise be misread silently.
 */
export function checkLayoutVersion(dir: string): void {
  const version = pinnedLayoutVersion(dir);
  if (version === LAYOUT_VERSION) return;
  const head =
    `the datapath pinned under ${dir} uses layout version ${version}, this warren uses ${LAYOUT_VERSION}`;
  throw new LayoutError(
    PAST_LAYOUTS.has(version)
      ? `${head}: "warren up" migrates it in place, and "warren export" prints its configuration`
      : `${head}: run "warren down" with the warren that made it (or remove ${dir}) and "warren up" again`,
  );
}

/**
 * The layout version recorded in the `wr_config` pinned under `dir`, read
 * without a codec: it is the first field in every version.
 */
export function pinnedLayoutVersion(dir: string): number {
  using raw = BpfMap.fromPin(mapPin(dir, "wr_config"));
  const bytes = raw.lookup(new Uint8Array(4));
  return bytes ? new DataView(bytes.buffer).getUint32(0, true) : 0;
}
