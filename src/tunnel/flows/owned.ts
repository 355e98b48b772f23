/**
 * Replacing one named owner's flows (`apply --owner NAME`): the wanted
 * flows are compared with the owner's set of flows (`owners.ts`) and looked
 * up one by one in the index, never by walking the table, and the
 * difference is made with one atomic commit in place (`commit.ts`). The
 * cost follows the owner's flows and the change: ten flows replaced in a
 * table of a million take milliseconds, where the whole-table `apply`
 * takes seconds. Other owners' flows are never read, written or disturbed;
 * a wanted flow whose match is another owner's flow is refused, before
 * anything is written.
 *
 * As in the whole-table `apply`, a flow's identity is its mask and masked
 * key: a flow whose actions or cookie change keeps its id and counters, and
 * one whose priority changes is a new flow (its counters start at zero).
 *
 * @module
 */

import type { BpfMap } from "../../bpf/map.ts";
import { type ActionMemo, type CompiledFlow, compileFlow, flowText } from "../compile.ts";
import type { FlowSpec } from "../flow_syntax.ts";
import { Remotes } from "../tun_keys.ts";
import type { ApplyOptions, FlowDiff } from "./diff.ts";
import { type Change, commit } from "./commit.ts";
import { zeroCounters } from "./counters.ts";
import { actionBytes, Entry, indexKey, resolveActions } from "./entry.ts";
import { checkOwner, entryOf } from "./edits.ts";
import { checkGroupsExist } from "./group_state.ts";
import { byteString, maskShape, sameBytes, sameMatch } from "./flow_set.ts";
import { checkFlowRoom, checkKeyRoom, type TableContext, type TableState } from "./journal.ts";
import {
  checkMaskRoom,
  type LiveMask,
  type MaskMove,
  masksById,
  nextMaskId,
  nextMasks,
} from "./masks.ts";
import { checkOwnerName, type OwnerName } from "./owners.ts";
import { FlowTableError } from "./error.ts";
import { decodeFlow, type InstalledFlow, tunKeyReader } from "./queries.ts";

/**
 * How a wanted flow stands against the owner's installed one: MODIFIED has
 * other actions or cookie (the same flow, id and counters, changed),
 * REPLACED another priority (a new flow in its place).
 */
export const Kind = { NEW: 0, SAME: 1, MODIFIED: 2, REPLACED: 3 } as const;
export type Kind = typeof Kind[keyof typeof Kind];

/** A wanted flow, where it goes and what it finds there. */
export interface Wanted {
  c: CompiledFlow;
  kind: Kind;
  /** Its mask, when one exists. */
  mask?: LiveMask;
  /** Its index key, once its mask has an id. */
  ik?: Uint8Array;
  /** The installed entry it replaces. */
  old?: Uint8Array;
}

/** An installed flow that goes: its index key and entry. */
export interface Gone {
  /** Its index key. */
  ik: Uint8Array;
  /** Its entry, as installed. */
  old: Uint8Array;
}

/**
 * Makes owner `owner`'s flows exactly `specs`, atomically for packets,
 * leaving every other owner's flows as they are. With `dryRun`, only
 * says what would change.
 */
export function applyOwned(
  t: TableContext,
  owner: OwnerName,
  specs: Iterable<FlowSpec>,
  options: ApplyOptions = {},
): FlowDiff {
  checkOwnerName(owner);
  const compiled = new Map<string, CompiledFlow>();
  const memo: ActionMemo = new Map();
  for (const s of specs) {
    const c = compileFlow(s, t.ports, memo);
    const identity = byteString(c.maskBytes) + byteString(c.keyBytes);
    if (compiled.has(identity)) {
      const err = sameMatch(c.spec.priority);
      err.message = `${flowText(c.spec, t.ports)}: ${err.message}`;
      throw err;
    }
    compiled.set(identity, c);
  }
  checkGroupsExist(t.maps, t.ports, compiled.values(), options.comingGroups);
  const st = options.dryRun ? t.journal.load() : t.journal.forWrite();
  const index = t.journal.index(st);
  const id = st.owners.id(owner);

  // Each wanted flow against what its key holds.
  const bySig = new Map(st.masks.map((m) => [m.sig, m]));
  const wanted: Wanted[] = [];
  const wantedKeys = new Set<string>();
  for (const c of compiled.values()) {
    const w = wantedOf(t, st, index, bySig, id, c);
    if (w.ik) wantedKeys.add(byteString(w.ik));
    wanted.push(w);
  }
  // The owner's flows that are not wanted go; keys of flows gone already
  // (a set may list more) leave its set.
  const gone: Gone[] = [];
  const stale: Uint8Array[] = [];
  for (const ik of id === undefined ? [] : st.owners.keys(id)) {
    if (wantedKeys.has(byteString(ik))) continue;
    const old = index.lookup(ik);
    if (old && new Entry(ik, old).owner === id) gone.push({ ik, old });
    else stale.push(ik);
  }

  return applyWanted(t, st, index, owner, wanted, gone, stale, options);
}

/**
 * Makes `wanted` (each against what its key holds in the live `index`) and
 * the removal of `gone` (entries installed) owner `owner`'s change, with
 * one atomic commit in place; `stale` are keys the owner's set lists of
 * flows gone already. Checks room before anything is written. With
 * `dryRun`, or nothing to change, only says what would change. The
 * operator's changed-text apply (`changes.ts`) makes its change so too.
 */
export function applyWanted(
  t: TableContext,
  st: TableState,
  index: BpfMap,
  owner: OwnerName,
  wanted: Wanted[],
  gone: Gone[],
  stale: Uint8Array[],
  options: ApplyOptions,
): FlowDiff {
  const limit = options.listLimit ?? 1000;
  const diff = describe(t, st, wanted, gone, limit);
  const changed = wanted.some((w) => w.kind !== Kind.SAME) || gone.length > 0;
  if (options.dryRun || !changed) return diff;

  // Room, before anything is written.
  const fresh: LiveMask[] = [];
  for (const w of wanted) {
    if (w.mask) continue;
    const sig = byteString(w.c.maskBytes);
    let mask = fresh.find((m) => m.sig === sig);
    if (!mask) {
      mask = {
        ...maskShape(w.c.maskBytes),
        id: nextMaskId([...st.masks, ...fresh]),
        maxPriority: 0,
        flows: 0,
      };
      fresh.push(mask);
    }
    w.mask = mask;
    w.ik = indexKey(mask.id, w.c.keyBytes);
  }
  const moves: MaskMove[] = [
    ...wanted.map((w) => ({
      maskId: w.mask!.id,
      was: w.old && new Entry(w.ik!, w.old).priority,
      will: w.c.spec.priority,
    })),
    ...gone.map((g) => {
      const e = new Entry(g.ik, g.old);
      return { maskId: e.maskId, was: e.priority };
    }),
  ];
  const masks = nextMasks(st.masks, fresh, moves);
  checkMaskRoom(masks.length);
  const newIds = wanted.filter((w) => w.kind === Kind.NEW || w.kind === Kind.REPLACED).length;
  checkFlowRoom(st, newIds);
  const standIns = wanted.filter((w) => w.kind === Kind.MODIFIED || w.kind === Kind.REPLACED)
    .length;
  if (st.flowIds.used() + newIds + standIns > st.cfg.max_flows) {
    throw new FlowTableError(
      `the flow table is full: ${
        owner ? `owner "${owner}"'s` : "the apply's"
      } change needs room for ${
        newIds + standIns
      } entries beside the ${st.flowIds.used()} installed (warren up --max-flows sets the size)`,
    );
  }
  const newKeys = new Set<string>();
  for (const w of wanted) {
    if (w.kind === Kind.SAME) continue;
    for (const k of w.c.tunKeyBytes) if (st.slots.find(k) === undefined) newKeys.add(byteString(k));
  }
  checkKeyRoom(st, newKeys.size);

  t.journal.begin(st);
  try {
    // The operator's flows are all the others: no set of its own to keep.
    const named = owner !== "";
    const owned = st.owners.ensure(owner);
    if (named) {
      st.owners.addKeys(
        owned,
        wanted.filter((w) => w.kind === Kind.NEW).map((w) => w.ik!),
      );
    }
    const changes: Change[] = [];
    const dropped: number[] = [];
    for (const w of wanted) {
      if (w.kind === Kind.SAME) continue;
      const slots = w.c.tunKeyBytes.map((k) => st.slots.acquire(k));
      const old = w.old && new Entry(w.ik!, w.old);
      const flowId = w.kind === Kind.MODIFIED ? old!.flowId : st.flowIds.allocate();
      if (w.kind === Kind.REPLACED) dropped.push(old!.flowId);
      changes.push({ ik: w.ik!, old: w.old, next: entryOf(w.c, flowId, slots, owned) });
    }
    for (const g of gone) {
      changes.push({ ik: g.ik, old: g.old });
      dropped.push(new Entry(g.ik, g.old).flowId);
    }
    commit(t, st, index, changes, masks);

    // What the old entries alone used goes now: nothing reads them.
    if (named) {
      st.owners.removeKeys(owned, [...gone.map((g) => g.ik), ...stale]);
      if (wanted.length === 0) st.owners.releaseIfIdle(owned);
    }
    for (const c of changes) if (c.old) new Entry(c.ik, c.old).eachSlot((s) => st.slots.release(s));
    zeroCounters(t.maps, dropped);
    st.flowIds.release(dropped);
    t.journal.commit(st);
  } catch (err) {
    try {
      t.journal.recover();
    } catch { /* the mark stays set: the next writer repairs */ }
    throw err;
  }
  return diff;
}

/**
 * Compiled flow `c` of owner `owner` (an id, or undefined for a name not
 * yet registered) against what its key holds in the live `index` (masks
 * `bySig` by their signature); refused if that is another owner's flow.
 */
export function wantedOf(
  t: TableContext,
  st: TableState,
  index: BpfMap,
  bySig: ReadonlyMap<string, LiveMask>,
  owner: number | undefined,
  c: CompiledFlow,
): Wanted {
  const mask = bySig.get(byteString(c.maskBytes));
  const ik = mask && indexKey(mask.id, c.keyBytes);
  const old = ik && index.lookup(ik);
  if (!old) return { c, kind: Kind.NEW, mask, ik };
  const e = new Entry(ik, old);
  checkOwner(t, st.owners, owner, c, e);
  const kind = e.priority !== c.spec.priority
    ? Kind.REPLACED
    : sameEntry(c, e, (k) => st.slots.find(k))
    ? Kind.SAME
    : Kind.MODIFIED;
  return { c, kind, mask, ik, old };
}

/** Whether installed entry `e` already does what `c` says (same actions, keys, cookie, flags). */
function sameEntry(
  c: CompiledFlow,
  e: Entry,
  slotOf: (key: Uint8Array) => number | undefined,
): boolean {
  if (e.cookie !== c.spec.cookie || e.flags !== c.flags) return false;
  const resolved = resolveActions(actionBytes(c.actions), (k) => slotOf(c.tunKeyBytes[k]));
  const installed = e.actionBytes();
  return resolved !== undefined && resolved.length === installed.length &&
    sameBytes(resolved, installed, resolved.length);
}

/** The diff `apply` reports: counts, the first `limit` flows of each kind, the remotes. */
function describe(
  t: TableContext,
  st: TableState,
  wanted: Wanted[],
  gone: Gone[],
  limit: number,
): FlowDiff {
  const masks = masksById(st.masks);
  const tunKey = tunKeyReader(t.maps, st);
  const removed = ({ ik, old }: { ik: Uint8Array; old: Uint8Array }): InstalledFlow => {
    const e = new Entry(ik, old);
    return decodeFlow(masks.get(e.maskId)!, e, tunKey, t.ports, st.owners);
  };
  const of = (...kinds: Kind[]) => wanted.filter((w) => kinds.includes(w.kind));
  const added = of(Kind.NEW, Kind.REPLACED);
  const modified = of(Kind.MODIFIED);
  const replaced = of(Kind.REPLACED);
  const remotes = new Remotes();
  for (const w of wanted) for (const k of w.c.tunKeyBytes) remotes.add(k);
  return {
    added: added.length,
    modified: modified.length,
    removed: gone.length + replaced.length,
    unchanged: of(Kind.SAME).length,
    add: added.slice(0, limit).map((w) => w.c.spec),
    modify: modified.slice(0, limit).map((w) => w.c.spec),
    remove: [...replaced.map((w) => ({ ik: w.ik!, old: w.old! })), ...gone]
      .slice(0, limit).map(removed),
    remotes: remotes.list(),
  };
}
