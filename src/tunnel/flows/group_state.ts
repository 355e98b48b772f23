/**
 * The replication groups as the kernel holds them, read: each group id's
 * slot and live bucket list, the buckets' raw actions, the tunnel key
 * slots they name, and whether the groups flows name exist. Writing them
 * is `groups.ts`'s; the journal's repair counts their tunnel keys here.
 *
 * @module
 */

import {
  actionCodec,
  type ActionEntry,
  ActionOp,
  type BucketList,
  type GroupEntry,
  NO_TUN_KEY,
} from "../../maps/layouts.ts";
import { namesOf, type PortLookup } from "../compile.ts";
import { type FlowSpec, formatFlow } from "../flow_syntax.ts";
import { FlowTableError } from "./error.ts";
import type { DatapathMaps } from "../pins.ts";
import { decodeActions } from "./entry.ts";

/** Bytes of one bucket, a `struct wr_action`. */
export const BUCKET_SIZE = actionCodec.size;

/** What the kernel holds of one group. */
export interface LiveGroup {
  /** The group id. */
  id: number;
  /** Its slot in `wr_groups` and `wr_group_stats`. */
  slot: number;
  /** The slot's entry. */
  entry: GroupEntry;
}

/** The list of `g` that packets walk. */
export function liveList(g: LiveGroup): BucketList {
  return g.entry.lists[g.entry.live & 1];
}

/** Every installed group by id. */
export function readLive(maps: DatapathMaps): Map<number, LiveGroup> {
  const out = new Map<number, LiveGroup>();
  for (const [id, slot] of maps.groupSlots.entries()) {
    const entry = maps.groups.get(slot);
    if (entry) out.set(id, { id, slot, entry });
  }
  return out;
}

/**
 * Every bucket of `wr_buckets`, `struct wr_action` each, read in a few
 * batches (half a megabyte at the default size): cheaper than a lookup per
 * bucket once a group has more than a handful.
 */
export function readBuckets(maps: DatapathMaps): Uint8Array {
  const raw = maps.buckets.raw;
  const out = new Uint8Array(raw.info.maxEntries * BUCKET_SIZE);
  for (const c of raw.lookupBatch(16384)) {
    const keys = new Uint32Array(c.keys.buffer, c.keys.byteOffset, c.count);
    for (let i = 0; i < c.count; i++) {
      out.set(c.values.subarray(i * BUCKET_SIZE, (i + 1) * BUCKET_SIZE), keys[i] * BUCKET_SIZE);
    }
  }
  return out;
}

/** The raw buckets of `list`, within every bucket as {@link readBuckets} read them. */
export function listBytes(all: Uint8Array, list: BucketList): Uint8Array {
  return all.subarray(list.first * BUCKET_SIZE, (list.first + list.n_buckets) * BUCKET_SIZE);
}

/** Adds to `counts[slot]` every tunnel key slot a live group's bucket names. */
export function countGroupKeys(maps: DatapathMaps, counts: Uint32Array): void {
  const live = readLive(maps);
  if (live.size === 0) return;
  const all = readBuckets(maps);
  for (const g of live.values()) {
    for (const a of decodeActions(listBytes(all, liveList(g)))) {
      if (a.op === ActionOp.TUNNEL && a.arg !== NO_TUN_KEY && a.arg < counts.length) {
        counts[a.arg]++;
      }
    }
  }
}

/** Whether group `id` is installed. */
export function hasGroup(maps: DatapathMaps, id: number): boolean {
  return maps.groupSlots.get(id) !== undefined;
}

/** How many groups and buckets are in use, of how many. */
export function groupUsage(
  maps: DatapathMaps,
): { groups: { used: number; capacity: number }; buckets: { used: number; capacity: number } } {
  const live = [...readLive(maps).values()];
  return {
    groups: { used: live.length, capacity: maps.groups.raw.info.maxEntries },
    buckets: {
      used: live.reduce((n, g) => n + liveList(g).n_buckets, 0),
      capacity: maps.buckets.raw.info.maxEntries,
    },
  };
}

/** The ids of every installed group. */
export function groupIds(maps: DatapathMaps): number[] {
  return [...maps.groupSlots.keys()].sort((a, b) => a - b);
}

/**
 * Refuses flows naming a group that is not installed (nor in `coming`,
 * groups about to be); the error quotes the flow.
 */
export function checkGroupsExist(
  maps: DatapathMaps,
  ports: PortLookup,
  flows: Iterable<{ spec: FlowSpec; actions: readonly ActionEntry[] }>,
  coming?: ReadonlySet<number>,
): void {
  let known: Map<number, boolean> | undefined;
  for (const f of flows) {
    const a = f.actions[0];
    if (a?.op !== ActionOp.GROUP) continue;
    known ??= new Map();
    let ok = known.get(a.arg);
    if (ok === undefined) {
      ok = coming?.has(a.arg) || hasGroup(maps, a.arg);
      known.set(a.arg, ok);
    }
    if (!ok) {
      throw new FlowTableError(
        `${formatFlow(f.spec, namesOf(ports))}: there is no group ${a.arg} (group add makes one)`,
      );
    }
  }
}
