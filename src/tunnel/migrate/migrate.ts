/**
 * Migrating a running datapath from a past layout version to the current
 * one, in place, under traffic. `warren up` does it before anything else.
 *
 * 1. Read the old datapath's configuration through its layout module.
 * 2. Build the new datapath aside, under `<pin dir>/migrate-building`:
 *    maps and programs loaded and pinned there, its settings copied, then
 *    its ports, groups and flows written by the current `apply` (the same
 *    writers as every other change, so a change to the current layout needs
 *    nothing here), then the counters copied, per CPU, the flows' matched
 *    by priority and match. Renamed `migrate-ready` when complete.
 * 3. Swap the new programs into the existing XDP, TCX and clsact
 *    attachments: each replacement is atomic in the kernel, so a packet
 *    meets the old programs with the old maps or the new with the new.
 * 4. Move the old maps aside (`migrate-retired`), the new ones into place,
 *    the new programs over the old programs' pins; remove the old.
 *
 * A crash anywhere leaves a datapath that forwards, and `up` again
 * finishes: a half-built `migrate-building` is thrown away and built
 * again; a `migrate-ready` is swapped in (swapping the same programs twice
 * changes nothing) and the renames not done yet are done. Each step has a
 * failpoint.
 *
 * @module
 */

import { ensurePinDir, isPinned } from "../../bpf/pin.ts";
import { ConfigFlag, LAYOUT_VERSION } from "../../maps/layouts.ts";
import { PROGRAMS } from "../../maps/names.ts";
import { PAST_LAYOUTS } from "../../maps/past/mod.ts";
import { applyState } from "../apply.ts";
import { attachTcRecorded, attachXdpRecorded, xdpAttached } from "../attach.ts";
import { Datapath } from "../datapath.ts";
import { setLocalIps } from "../datapath/endpoints.ts";
import { initialize } from "../datapath/lifecycle.ts";
import {
  type Capacities,
  openDatapathObject,
  pinnedProgram,
  pinPrograms,
  type Programs,
  programsOf,
  sizeTables,
} from "../datapath/object.ts";
import { failpoint } from "../failpoint.ts";
import { formatFlow } from "../flow_syntax.ts";
import type { FlowSpec } from "../flow_syntax.ts";
import type { PortNames } from "../match.ts";
import { DatapathLock, lockPath } from "../lock.ts";
import { DatapathMaps, mapPin, pinnedLayoutVersion } from "../pins.ts";
import { namesOf } from "../compile.ts";
import { configurationOf, portLookup, portSpecOf, stateOf } from "./export.ts";
import { type Configuration, type Counters, readPast, readPastCounters } from "./read_past.ts";

/** What a migration does (or, in a dry run, would do). */
export interface Migration {
  /** The layout version it migrates from. */
  from: number;
  /** The one it migrates to: this warren's. */
  to: number;
  /** Local ports, tunnels, groups and flows it carries over. */
  ports: number;
  /** Tunnel ports. */
  tunnels: number;
  /** Replication groups. */
  groups: number;
  /** Flows. */
  flows: number;
  /** Whether it finishes one an earlier `up` left half done. */
  resumed: boolean;
}

/** Options of {@link migrate}. */
export interface MigrateOptions {
  /** Change nothing; say what would be done. */
  dryRun?: boolean;
  /**
   * Capacities of tables the old layout did not have (its own are kept):
   * the groups and buckets of layout 4.
   */
  capacities?: Pick<Capacities, "maxGroups" | "maxBuckets">;
}

function building(pinDir: string): string {
  return `${pinDir}/migrate-building`;
}

function ready(pinDir: string): string {
  return `${pinDir}/migrate-ready`;
}

function retired(pinDir: string): string {
  return `${pinDir}/migrate-retired`;
}

/**
 * Migrates the datapath pinned under `pinDir` when it was pinned with a
 * past layout this warren knows, or finishes a migration a crash cut
 * short; returns what it did, or undefined when there was nothing to
 * migrate. With `dryRun`, changes nothing and says what it would do.
 */
export async function migrate(
  pinDir: string,
  options: MigrateOptions = {},
): Promise<Migration | undefined> {
  try {
    Deno.statSync(pinDir);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
  using _lock = DatapathLock.acquire(pinDir);
  if (isPinned(mapPin(ready(pinDir), "wr_config"))) {
    const done = describe(readyConfiguration(pinDir), true);
    if (!options.dryRun) switchOver(pinDir);
    return done;
  }
  const version = isPinned(mapPin(pinDir, "wr_config")) ? pinnedLayoutVersion(pinDir) : undefined;
  const layout = version === undefined ? undefined : PAST_LAYOUTS.get(version);
  if (!layout) {
    if (!options.dryRun) removeLeftovers(pinDir);
    return undefined;
  }
  const old = readPast(pinDir, layout);
  const plan = describe(old, false);
  if (options.dryRun) return plan;
  await build(pinDir, old, options.capacities ?? {}, () => readPastCounters(pinDir, layout));
  switchOver(pinDir);
  return plan;
}

function describe(c: Configuration, resumed: boolean): Migration {
  return {
    from: c.version,
    to: LAYOUT_VERSION,
    ports: c.ports.filter((p) => p.kind === "local").length,
    tunnels: c.ports.filter((p) => p.kind === "tunnel").length,
    groups: c.groups.length,
    flows: c.flows.length,
    resumed,
  };
}

/** What a `migrate-ready` datapath holds; the version it came from is gone with the old maps. */
function readyConfiguration(pinDir: string): Configuration {
  using dp = Datapath.openAside(ready(pinDir));
  return { ...configurationOf(dp), version: 0 };
}

/** Builds the new datapath for `old` under `migrate-building`, then names it `migrate-ready`. */
async function build(
  pinDir: string,
  old: Configuration,
  capacities: Capacities,
  counters: () => Counters,
): Promise<void> {
  const dir = building(pinDir);
  remove(dir);
  {
    using obj = openDatapathObject();
    sizeTables(obj, {
      ...capacities,
      maxFlows: old.config.max_flows,
      maxTunKeys: old.config.max_tun_keys,
    });
    obj.load();
    using maps = DatapathMaps.fromObject(obj);
    ensurePinDir(`${dir}/maps`);
    maps.pin(dir);
    initialize(maps, old.config.underlay_ifindex, {});
    const c = old.config;
    maps.config.update(() => ({
      flags: c.flags &
        (ConfigFlag.XDP_UNDERLAY | ConfigFlag.XDP_AUTO | ConfigFlag.XDP_WHY | ConfigFlag.CLSACT),
      miss_local: c.miss_local,
      miss_tunnel: c.miss_tunnel,
      fwd_saved: c.fwd_saved,
      stt_timeout_ms: c.stt_timeout_ms,
    }));
    setLocalIps(maps, old.localIps, false);
    const programs = programsOf(obj);
    try {
      pinPrograms(dir, programs);
    } finally {
      for (const p of Object.values(programs)) p.close();
    }
  }
  failpoint("migrate.loaded");
  {
    using dp = Datapath.openAside(dir);
    // Ports first, each with its number: apply would number them afresh.
    for (const p of old.ports) await dp.upsertPort(portSpecOf(p));
    // The operator's groups and flows, then each named owner's.
    const owners = new Set([
      "",
      ...old.groups.map((g) => g.owner),
      ...old.flows.map((f) => f.owner),
    ]);
    for (const owner of owners) await applyState(dp, stateOf(old, owner), { owner });
    failpoint("migrate.applied");
    carryCounters(dp, old, counters());
  }
  remove(lockPath(dir));
  failpoint("migrate.counted");
  Deno.renameSync(dir, ready(pinDir));
}

/**
 * Copies `counters` of `old` into the new datapath `dp`: flows matched by
 * priority and match, ports by name, the datapath's own counters by slot.
 */
function carryCounters(dp: Datapath, old: Configuration, counters: Counters): void {
  const identity = (f: FlowSpec, names: PortNames) => formatFlow({ ...f, cookie: 0n }, names, "");
  const oldNames = namesOf(portLookup(old.ports));
  const oldIds = new Map(old.flows.map((f) => [identity(f, oldNames), f.flowId]));
  const names = dp.portNames();
  for (const f of dp.eachFlow()) {
    const per = counters.flows.get(oldIds.get(identity(f, names)) ?? -1);
    if (per) dp.maps.flowStats.set(f.flowId, per);
  }
  for (const p of old.ports) {
    const per = counters.ports.get(p.number);
    const now = names.number(p.name);
    if (per && now !== undefined) dp.maps.portStats.set(now, per);
  }
  const blocks = dp.maps.stats.get(0);
  if (!blocks) return;
  for (const [slot, per] of counters.stats) per.forEach((v, cpu) => blocks[cpu].stat[slot] = v);
  dp.maps.stats.set(0, blocks);
}

/**
 * Swaps the programs of `migrate-ready` into every attachment, then puts
 * its maps and programs in the old ones' places and removes the old.
 * Each step is safe to repeat after a crash.
 */
function switchOver(pinDir: string): void {
  const next = ready(pinDir);
  const programs = Object.fromEntries(
    PROGRAMS.map((n) => [n, pinnedProgram(next, n)]),
  ) as Programs;
  try {
    using dp = Datapath.openAside(next);
    const cfg = dp.maps.config.read();
    const tc = cfg.flags & ConfigFlag.CLSACT ? "clsact" : "tcx";
    if (cfg.flags & ConfigFlag.XDP_UNDERLAY) {
      // The mode up chose stays.
      const mode = xdpAttached(pinDir, cfg.underlay_ifindex);
      attachXdpRecorded(pinDir, cfg.underlay_ifindex, programs.wr_xdp_underlay, mode);
    }
    failpoint("migrate.swapping");
    attachTcRecorded(pinDir, cfg.underlay_ifindex, programs.wr_tc_underlay, tc);
    for (const p of dp.ports()) {
      if (p.kind !== "local" || !dp.devicePresent(p)) continue;
      attachTcRecorded(pinDir, dp.maps.ports.get(p.number)!.ifindex, programs.wr_tc_local, tc);
    }
    failpoint("migrate.swapped");
    if (isPinned(mapPin(pinDir, "wr_config"))) {
      remove(retired(pinDir));
      Deno.renameSync(`${pinDir}/maps`, retired(pinDir));
    }
    failpoint("migrate.retired");
    Deno.renameSync(`${next}/maps`, `${pinDir}/maps`);
    pinPrograms(pinDir, programs);
  } finally {
    for (const p of Object.values(programs)) p.close();
  }
  failpoint("migrate.switched");
  removeLeftovers(pinDir);
}

/** Removes what a finished (or abandoned) migration left beside the datapath. */
function removeLeftovers(pinDir: string): void {
  for (const dir of [building(pinDir), ready(pinDir), retired(pinDir)]) remove(dir);
}

/** Removes `path`, a directory with all it holds, if it exists. */
function remove(path: string): void {
  try {
    Deno.removeSync(path, { recursive: true });
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}
