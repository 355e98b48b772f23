/**
 * Replication groups in the kernel. A group id names a slot
 * (`wr_group_slots`); the slot's entry in `wr_groups` holds two bucket
 * lists, one live, each a range of `wr_buckets` (one `struct wr_action`
 * per bucket, outputs to local ports first). Changing a group:
 *
 * 1. its new buckets go into free buckets of `wr_buckets` (no packet reads
 *    those), their counters into `wr_bucket_stats` (a bucket the group
 *    keeps keeps its counts);
 * 2. the slot's other list is pointed at them (packets walk the live one);
 * 3. `live` flips, one byte in one write: a packet walks the old list or
 *    the new one, never a mixture, and the flows that name the group are
 *    not touched;
 * 4. once every change of the batch is made, the kernel is asked to wait
 *    until no program that started before still runs
 *    (`DatapathMaps.waitForPrograms`): only then are the old buckets free.
 *
 * Each group has an owner (`owners.ts`), in its slot entry: a change of
 * groups is one owner's, and refuses to touch another owner's group.
 *
 * A new group's slot entry is written before its id names the slot, and a
 * deleted group's id goes first: a writer that dies midway leaves unused
 * buckets and slots, which are free by definition (free space is what no
 * live list covers), and tunnel key references the journal's repair
 * recounts with {@link countGroupKeys}. So groups need no bookkeeping of
 * their own that a crash could leave wrong.
 *
 * @module
 */

import { u32 } from "../../maps/codec.ts";
import { ActionOp, type BucketList, NO_TUN_KEY } from "../../maps/layouts.ts";
import { encodeWith } from "../../maps/typed_map.ts";
import type { Addr } from "../addr.ts";
import { type CompiledGroup, decompileActions } from "../compile.ts";
import { failpoint } from "../failpoint.ts";
import type { GroupSpec } from "../group_syntax.ts";
import type { DatapathMaps } from "../pins.ts";
import { Remotes } from "../tun_keys.ts";
import { actionBytes, decodeActions, resolveActions } from "./entry.ts";
import { FlowTableError } from "./error.ts";
import {
  BUCKET_SIZE,
  listBytes,
  type LiveGroup,
  liveList,
  readBuckets,
  readLive,
} from "./group_state.ts";
import { checkKeyRoom, type TableContext, type TableState } from "./journal.ts";
import { checkOwnerName, type OwnerName } from "./owners.ts";
import { byteString, sameBytes } from "./flow_set.ts";
import { count, tunKeyReader } from "./queries.ts";
import { remove } from "./edits.ts";

const EMPTY_LIST: BucketList = { first: 0, n_buckets: 0, n_local: 0 };

/** A group's counters, summed over CPUs. */
export interface GroupCounters {
  /** Packets that hit the group. */
  packets: bigint;
  /** Their bytes. */
  bytes: bigint;
  /** Copies sent to each bucket, in bucket order. */
  buckets: { packets: bigint; bytes: bigint }[];
}

/** A group as installed. */
export interface InstalledGroup extends GroupSpec {
  /** Its owner: "" for the operator. */
  owner: OwnerName;
  /** Counters, when asked for. */
  counters?: GroupCounters;
}

/**
 * Every installed group, by id (only `owner`'s when given, "" for the
 * operator's), with its counters when asked.
 */
export function listGroups(
  t: TableContext,
  options: { counters?: boolean; owner?: OwnerName } = {},
): InstalledGroup[] {
  const st = t.journal.load();
  const tunKey = tunKeyReader(t.maps, st);
  const all = readBuckets(t.maps);
  const owner = options.owner === undefined ? undefined : st.owners.id(options.owner) ?? -1;
  const live = [...readLive(t.maps).values()]
    .filter((g) => owner === undefined || g.entry.owner === owner);
  return live.sort((a, b) => a.id - b.id).map((g) => {
    const list = liveList(g);
    const actions = decodeActions(listBytes(all, list));
    const group: InstalledGroup = {
      id: g.id,
      owner: st.owners.name(g.entry.owner),
      buckets: actions.map((a) => decompileActions([a], tunKey, t.ports)),
    };
    if (options.counters) {
      const sum = t.maps.groupStats.sum(g.slot);
      group.counters = {
        packets: sum?.packets ?? 0n,
        bytes: sum?.bytes ?? 0n,
        buckets: actions.map((_, i) => {
          const b = t.maps.bucketStats.sum(list.first + i);
          return { packets: b?.packets ?? 0n, bytes: b?.bytes ?? 0n };
        }),
      };
    }
    return group;
  });
}

/**
 * The free buckets and slots of one batch of changes: what no live list
 * or slot covered when the batch began. What the batch lets go of stays
 * taken until it ends, since a packet may still walk it until the kernel's
 * wait.
 */
class Space {
  readonly #ranges: [number, number][] = [];
  readonly #slots = new Set<number>();
  readonly #capacity: number;
  readonly #slotCapacity: number;

  constructor(maps: DatapathMaps, live: Map<number, LiveGroup>) {
    this.#capacity = maps.buckets.raw.info.maxEntries;
    this.#slotCapacity = maps.groups.raw.info.maxEntries;
    for (const g of live.values()) {
      this.#slots.add(g.slot);
      const list = liveList(g);
      if (list.n_buckets) this.#ranges.push([list.first, list.first + list.n_buckets]);
    }
    this.#ranges.sort((a, b) => a[0] - b[0]);
  }

  /** How many buckets are free, in all. */
  freeBuckets(): number {
    return this.#capacity - this.#ranges.reduce((n, [a, b]) => n + b - a, 0);
  }

  /** How many slots are free. */
  freeSlots(): number {
    return this.#slotCapacity - this.#slots.size;
  }

  /** The first of `n` free buckets in a row (the lowest that fit). */
  take(n: number): number {
    let at = 0;
    let i = 0;
    for (; i < this.#ranges.length && this.#ranges[i][0] - at < n; i++) at = this.#ranges[i][1];
    if (i === this.#ranges.length && this.#capacity - at < n) {
      throw new FlowTableError(
        `no ${n} free buckets in a row (${this.freeBuckets()} free in all): ` +
          "warren up --max-buckets sets how many buckets all groups share",
      );
    }
    this.#ranges.splice(i, 0, [at, at + n]);
    return at;
  }

  /** A free slot. */
  takeSlot(): number {
    for (let s = 0; s < this.#slotCapacity; s++) {
      if (!this.#slots.has(s)) {
        this.#slots.add(s);
        return s;
      }
    }
    throw new FlowTableError(
      `all ${this.#slotCapacity} groups are in use (warren up --max-groups sets how many)`,
    );
  }
}

/** The buckets of `g` as the kernel holds them, tunnel keys given slots (taken here). */
function resolveBuckets(st: TableState, g: CompiledGroup): Uint8Array {
  return resolveActions(actionBytes(g.buckets), (k) => st.slots.acquire(g.tunKeyBytes[k]))!;
}

/** Calls `fn` with each tunnel key slot raw buckets name. */
function eachKeySlot(raw: Uint8Array, fn: (slot: number) => void): void {
  for (const a of decodeActions(raw)) {
    if (a.op === ActionOp.TUNNEL && a.arg !== NO_TUN_KEY) fn(a.arg);
  }
}

/**
 * Writes `raw` buckets and their counters into free buckets from `first`
 * on: a bucket the group had (in `old`, its live buckets and where they
 * start) keeps its counters, any other starts from zero.
 */
function writeBuckets(
  maps: DatapathMaps,
  first: number,
  raw: Uint8Array,
  old?: { raw: Uint8Array; first: number },
): void {
  const n = raw.length / BUCKET_SIZE;
  if (n === 0) return;
  const keys = new Uint32Array(n).map((_, i) => first + i);
  maps.buckets.raw.updateBatch(new Uint8Array(keys.buffer), raw, n);
  const stats = maps.bucketStats.raw;
  const values = new Uint8Array(n * stats.valueBufferSize);
  const kept = new Set<number>();
  for (let i = 0; old && i < n; i++) {
    const bucket = raw.subarray(i * BUCKET_SIZE, (i + 1) * BUCKET_SIZE);
    for (let j = 0; j < old.raw.length / BUCKET_SIZE; j++) {
      if (kept.has(j)) continue;
      if (!sameBytes(bucket, old.raw.subarray(j * BUCKET_SIZE), BUCKET_SIZE)) continue;
      kept.add(j);
      const counts = stats.lookup(encodeWith(u32, old.first + j));
      if (counts) values.set(counts, i * stats.valueBufferSize);
      break;
    }
  }
  stats.updateBatch(new Uint8Array(keys.buffer), values, n);
}

/**
 * Makes group `g` live: into a new slot of owner `owner` (`old`
 * undefined), or replacing the live list of `old`'s slot with one flip.
 */
function writeGroup(
  t: TableContext,
  st: TableState,
  space: Space,
  all: Uint8Array,
  g: CompiledGroup,
  old: LiveGroup | undefined,
  owner: number,
): void {
  const raw = resolveBuckets(st, g);
  const n = g.buckets.length;
  const first = n ? space.take(n) : 0;
  const list: BucketList = { first, n_buckets: n, n_local: g.nLocal };
  if (!old) {
    writeBuckets(t.maps, first, raw);
    const slot = space.takeSlot();
    t.maps.groupStats.set(slot, { packets: 0n, bytes: 0n });
    t.maps.groups.set(slot, { live: 0, owner, lists: [list, EMPTY_LIST] });
    failpoint("group.written");
    t.maps.groupSlots.set(g.spec.id, slot);
    return;
  }
  const was = liveList(old);
  const oldRaw = listBytes(all, was);
  writeBuckets(t.maps, first, raw, { raw: oldRaw, first: was.first });
  const live = old.entry.live & 1;
  const lists: BucketList[] = live ? [list, was] : [was, list];
  t.maps.groups.set(old.slot, { live, owner, lists });
  failpoint("group.written");
  t.maps.groups.set(old.slot, { live: live ^ 1, owner, lists });
  eachKeySlot(oldRaw, (s) => st.slots.release(s));
}

/** What installing groups did. */
export interface GroupResult {
  /** Groups that were new. */
  added: number;
  /** Groups whose buckets changed. */
  modified: number;
  /** Groups already as asked. */
  unchanged: number;
  /** Every tunnel remote the groups send to. */
  remotes: Addr[];
}

/**
 * Makes each of `groups` installed exactly as compiled, as owner `owner`'s
 * ("" for the operator): added, or its buckets replaced (a group already
 * so is left alone, so that running a command again after a crash
 * completes it). `mode` "add" refuses a group that exists with other
 * buckets, "modify" one that does not exist; another owner's group is
 * refused. Everything is checked before the first write.
 */
export function installGroups(
  t: TableContext,
  groups: CompiledGroup[],
  mode: "add" | "modify" | "any",
  owner: OwnerName = "",
): GroupResult {
  if (owner) checkOwnerName(owner);
  const st = t.journal.forWrite();
  const known = st.owners.id(owner);
  const live = readLive(t.maps);
  const all = readBuckets(t.maps);
  const result: GroupResult = { added: 0, modified: 0, unchanged: 0, remotes: [] };
  const remotes = new Remotes();
  const todo: { g: CompiledGroup; old?: LiveGroup }[] = [];
  const ids = new Set<number>();
  for (const g of groups) {
    if (ids.has(g.spec.id)) throw new FlowTableError(`group ${g.spec.id} is given twice`);
    ids.add(g.spec.id);
    const old = live.get(g.spec.id);
    if (!old && mode === "modify") throw new FlowTableError(`there is no group ${g.spec.id}`);
    checkGroupOwner(st, old, known);
    const same = old && sameGroup(st, all, g, old);
    if (old && !same && mode === "add") {
      throw new FlowTableError(
        `group ${g.spec.id} exists already, with other buckets (group mod changes it)`,
      );
    }
    for (const k of g.tunKeyBytes) remotes.add(k);
    if (same) result.unchanged++;
    else todo.push({ g, old });
  }
  result.remotes = remotes.list();
  if (todo.length === 0) return result;
  const space = new Space(t.maps, live);
  const newKeys = new Set<string>();
  let buckets = 0;
  for (const { g } of todo) {
    buckets += g.buckets.length;
    for (const k of g.tunKeyBytes) if (st.slots.find(k) === undefined) newKeys.add(byteString(k));
  }
  checkKeyRoom(st, newKeys.size);
  const added = todo.filter((x) => !x.old).length;
  if (added > space.freeSlots()) {
    throw new FlowTableError(
      `${added} new groups, room for ${space.freeSlots()} (warren up --max-groups sets how many)`,
    );
  }
  if (buckets > space.freeBuckets()) {
    throw new FlowTableError(
      `the groups need ${buckets} new buckets, ${space.freeBuckets()} are free ` +
        "(warren up --max-buckets sets how many buckets all groups share)",
    );
  }
  t.journal.begin(st);
  try {
    const id = st.owners.ensure(owner);
    for (const { g, old } of todo) {
      writeGroup(t, st, space, all, g, old, id);
      if (old) result.modified++;
      else result.added++;
    }
  } finally {
    // The old lists are free once no packet can be walking them.
    if (result.modified) t.maps.waitForPrograms();
    t.journal.commit(st);
  }
  return result;
}

/**
 * Refuses to let owner `owner` (an id, or undefined for a name not yet
 * registered) change installed group `g` when it is another owner's.
 */
function checkGroupOwner(
  st: TableState,
  g: LiveGroup | undefined,
  owner: number | undefined,
): void {
  if (!g || g.entry.owner === owner) return;
  throw new FlowTableError(
    `group ${g.id} is ${st.owners.whose(g.entry.owner)}, and one owner never changes another's`,
  );
}

/** Whether installed group `old` already has exactly the buckets of `g`. */
function sameGroup(st: TableState, all: Uint8Array, g: CompiledGroup, old: LiveGroup): boolean {
  const list = liveList(old);
  if (list.n_buckets !== g.buckets.length || list.n_local !== g.nLocal) return false;
  const raw = resolveActions(actionBytes(g.buckets), (k) => st.slots.find(g.tunKeyBytes[k]));
  return raw !== undefined && sameBytes(raw, listBytes(all, list), raw.length);
}

/**
 * Deletes groups `ids` (flows must no longer name them); those not
 * installed are skipped. Their owners, left with nothing, are forgotten.
 */
function deleteGroups(t: TableContext, ids: number[]): number {
  const st = t.journal.forWrite();
  const live = readLive(t.maps);
  const victims = ids.flatMap((id) => live.get(id) ?? []);
  if (victims.length === 0) return 0;
  const all = readBuckets(t.maps);
  t.journal.begin(st);
  try {
    for (const g of victims) {
      t.maps.groupSlots.delete(g.id);
      failpoint("group.deleted");
      eachKeySlot(listBytes(all, liveList(g)), (s) => st.slots.release(s));
    }
    for (const id of new Set(victims.map((g) => g.entry.owner))) st.owners.releaseIfIdle(id);
  } finally {
    // Their slots and buckets are free once no packet can be using them.
    t.maps.waitForPrograms();
    t.journal.commit(st);
  }
  return victims.length;
}

/**
 * Deletes groups `ids` (those that exist: a rerun after a crash finishes
 * the job). Refuses while flows send to one, unless `force`, which deletes
 * those flows first (as `port del --force` does); with `owner`, refuses a
 * group of another owner. Everything is checked before anything goes.
 */
export function removeGroups(
  t: TableContext,
  ids: number[],
  force: boolean,
  owner?: OwnerName,
): number {
  const users = new Map<number, number>();
  const st = t.journal.load();
  const live = readLive(t.maps);
  for (const id of ids) {
    const g = live.get(id);
    if (!g) continue;
    if (owner !== undefined) checkGroupOwner(st, g, st.owners.id(owner));
    const n = count(t, { group: id });
    if (n && !force) {
      throw new FlowTableError(
        `${n} flow(s) send to group ${id}; delete them first, or use --force`,
      );
    }
    users.set(id, n);
  }
  for (const [id, n] of users) if (n) remove(t, { group: id }, false);
  return deleteGroups(t, ids);
}
