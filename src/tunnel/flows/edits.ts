/**
 * Edits of the live table, flow by flow: add, modify, delete. Each goes
 * into the live index in an order that never lets a packet see a
 * half-made flow: tunnel keys before the entry that names them, a mask
 * before its first flow, a raised priority bound before the flow that
 * needs it. Each checks everything before its first write, writes between
 * the journal's mark and commit, and an add that fails midway undoes what
 * it wrote.
 *
 * @module
 */

import type { BpfMap } from "../../bpf/map.ts";
import { type ActionEntry, NO_TUN_KEY } from "../../maps/layouts.ts";
import type { Addr } from "../addr.ts";
import {
  type ActionMemo,
  type CompiledFlow,
  compileFlow,
  encodeMatch,
  flowText,
} from "../compile.ts";
import { failpoint } from "../failpoint.ts";
import type { FlowSpec } from "../flow_syntax.ts";
import { Remotes } from "../tun_keys.ts";
import { zeroCounters } from "./counters.ts";
import {
  actionBytes,
  deleteKeys,
  Entry,
  entryBytes,
  INDEX_KEY_SIZE,
  indexKey,
  KEY_SIZE,
  resolveActions,
  sharedEntry,
  visible,
} from "./entry.ts";
import { FlowTableError } from "./error.ts";
import { byteString, maskShape } from "./flow_set.ts";
import { checkGroupsExist } from "./group_state.ts";
import { checkFlowRoom, checkKeyRoom, type TableContext, type TableState } from "./journal.ts";
import { checkMaskRoom, findMask, type LiveMask, masksById, nextMaskId } from "./masks.ts";
import { checkOwnerName, OPERATOR, type OwnerName, type Owners } from "./owners.ts";
import { type FlowFilter, selector } from "./queries.ts";

/** What `add` did. */
export interface AddResult {
  /** Flows that were new. */
  added: number;
  /** Flows that replaced one with the same match and priority. */
  replaced: number;
  /** Every tunnel remote the flows send to. */
  remotes: Addr[];
}

// A compiled action list is shared by every flow with the same action
// text (see ActionMemo) and never changed afterwards, so its bytes are
// encoded once: one install at a time, encoding them was a fifth of the
// cost. The flows of a list mostly get the same tunnel key slots, so the
// bytes resolved for the last slots are kept too.
const encodedActions = new WeakMap<
  readonly ActionEntry[],
  { raw: Uint8Array; slots?: number[]; resolved?: Uint8Array }
>();

function sameSlots(a: number[], b: number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The raw actions of `actions`, tunnel keys named by `slots` (never changed by callers). */
function resolvedOnce(actions: ActionEntry[], slots: number[]): Uint8Array {
  let e = encodedActions.get(actions);
  if (!e) encodedActions.set(actions, e = { raw: actionBytes(actions) });
  if (!e.resolved || !sameSlots(e.slots!, slots)) {
    e.resolved = resolveActions(e.raw, (k) => slots[k] ?? NO_TUN_KEY)!;
    e.slots = slots;
  }
  return e.resolved;
}

/**
 * The entry of compiled flow `c` of `owner` with id `flowId`, its tunnel
 * keys in `slots`; with `shared`, in a buffer every such call reuses
 * (for a write, which copies it).
 */
export function entryOf(
  c: CompiledFlow,
  flowId: number,
  slots: number[],
  owner: number,
  shared = false,
): Uint8Array {
  return (shared ? sharedEntry : entryBytes)({
    flowId,
    priority: c.spec.priority,
    cookie: c.spec.cookie,
    flags: c.flags,
    owner,
    actions: resolvedOnce(c.actions, slots),
  });
}

/**
 * Refuses to let owner `owner` (an id, or undefined for a name not yet
 * registered) change `c`, whose match is that of installed entry `e`,
 * when `e` is another owner's.
 */
export function checkOwner(
  t: TableContext,
  owners: Owners,
  owner: number | undefined,
  c: CompiledFlow,
  e: Entry,
): void {
  if (e.owner === owner) return;
  throw new FlowTableError(
    `${flowText(c.spec, t.ports)}: the flow with this match is ${
      owners.whose(e.owner)
    }, and one owner never changes another's`,
  );
}

// One flow added at a time (a session's script) is compiled into these,
// and its index key made in the last: each is copied wherever it is kept
// (a new mask, an owner's set, the kernel), and `add` runs to its end
// before another starts. A typed array made per install cost as much as
// encoding its key.
const oneKey = new Uint8Array(KEY_SIZE);
const oneMask = new Uint8Array(KEY_SIZE);
const oneIndexKey = new Uint8Array(INDEX_KEY_SIZE);

/**
 * The distinct flows of `specs` (the last of equal ones), compiled; the
 * key and mask of a lone flow are valid until the next call.
 */
function distinctFlows(specs: FlowSpec[], t: TableContext, memo: ActionMemo): CompiledFlow[] {
  if (specs.length === 1) return [compileFlow(specs[0], t.ports, memo, oneKey, oneMask)];
  const byIdentity = new Map<string, CompiledFlow>();
  for (const s of specs) {
    const c = compileFlow(s, t.ports, memo);
    byIdentity.set(byteString(c.maskBytes) + byteString(c.keyBytes), c);
  }
  return [...byIdentity.values()];
}

/**
 * Refuses to let `c` replace installed entry `e` (same match): another
 * owner's, or at another priority.
 */
function checkReplace(
  t: TableContext,
  st: TableState,
  owner: number | undefined,
  c: CompiledFlow,
  e: Entry,
): void {
  checkOwner(t, st.owners, owner, c, e);
  if (e.priority !== c.spec.priority) {
    throw new FlowTableError(
      `a flow with this match is installed at priority ${e.priority}; it would hide or be hidden by one at ${c.spec.priority}: delete it first`,
    );
  }
}

/**
 * Adds flows of `owner` ("" for the operator). A flow with the same match
 * and priority as an installed one of the same owner replaces its actions
 * and restarts its counters, as Open vSwitch's add-flow does; within
 * `specs` the last of equal flows wins. Every flow is checked before any
 * is written, and a failure midway undoes what was written. `memo` may
 * carry compiled action lists over from earlier adds against the same
 * ports.
 */
export function add(
  t: TableContext,
  specs: FlowSpec[],
  owner: OwnerName = "",
  memo: ActionMemo = new Map(),
): AddResult {
  if (owner) checkOwnerName(owner);
  const compiled = distinctFlows(specs, t, memo);
  checkGroupsExist(t.maps, t.ports, compiled);
  const st = t.journal.forWrite();
  const index = t.journal.index(st);
  const known = st.owners.id(owner);

  // Check everything first: owners, masks, conflicts, room. With room for
  // every flow to be new, a flow under a live mask that needs no higher
  // bound is not looked up: its write refuses to overwrite (BPF_NOEXIST),
  // and only then is the flow it would replace read and checked, before
  // anything of it is written. One system call for a new flow, not two.
  const roomForAll = compiled.length <= st.flowIds.free();
  const newMasks = new Set<string>();
  // Each flow's live mask, found once here: comparing its bytes with the
  // live masks again when writing was some 2% of an install.
  const masks: (LiveMask | undefined)[] = [];
  const olds: (Uint8Array | undefined)[] = [];
  let fresh = 0;
  for (const c of compiled) {
    const mask = findMask(st.masks, c.maskBytes);
    masks.push(mask);
    if (!mask) newMasks.add(byteString(c.maskBytes));
    const ik = mask && !(roomForAll && mask.maxPriority >= c.spec.priority) &&
      indexKey(mask.id, c.keyBytes);
    const old = ik ? index.lookup(ik) : undefined;
    if (ik && old) checkReplace(t, st, known, c, new Entry(ik, old));
    else fresh++;
    olds.push(old);
  }
  checkMaskRoom(st.masks.length + newMasks.size);
  checkFlowRoom(st, fresh);
  const newKeys = new Set<string>();
  for (const c of compiled) {
    for (const k of c.tunKeyBytes) if (st.slots.find(k) === undefined) newKeys.add(byteString(k));
  }
  checkKeyRoom(st, newKeys.size);

  // Then write, remembering how to undo.
  const undo: (() => void)[] = [];
  let added = 0, replaced = 0;
  const remotes = new Remotes();
  t.journal.begin(st);
  try {
    const id = st.owners.ensure(owner);
    if (known === undefined) undo.push(() => st.owners.release(id));
    compiled.forEach((c, i) => {
      const mask = maskFor(t, st, index, c, masks[i]);
      const ik = indexKey(mask.id, c.keyBytes, compiled.length === 1 ? oneIndexKey : undefined);
      const slots = c.tunKeyBytes.map((k) => st.slots.acquire(k));
      undo.push(() => slots.forEach((s) => st.slots.release(s)));
      let old = olds[i];
      if (!old) {
        const flowId = st.flowIds.allocate();
        undo.push(() => st.flowIds.release([flowId]));
        if (index.insert(ik, entryOf(c, flowId, slots, id, true))) {
          undo.push(() => index.delete(ik));
          if (id !== OPERATOR) {
            st.owners.addKeys(id, [ik]);
            undo.push(() => st.owners.removeKeys(id, [ik]));
          }
          mask.flows++;
          undo.push(() => mask.flows--);
          added++;
        } else {
          // Not looked up: it replaces one after all, and keeps its id.
          undo.pop()!();
          old = index.lookup(ik)!;
          checkReplace(t, st, known, c, new Entry(ik, old));
        }
      }
      if (old) {
        const was = old;
        const e = new Entry(ik, was);
        index.update(ik, entryOf(c, e.flowId, slots, id, true));
        undo.push(() => index.update(ik, was));
        e.eachSlot((s) => st.slots.release(s));
        zeroCounters(t.maps, [e.flowId]);
        replaced++;
      }
      for (const k of c.tunKeyBytes) remotes.add(k);
      failpoint("flow.add.written");
    });
  } catch (err) {
    for (const u of undo.reverse()) {
      try {
        u();
      } catch { /* keep undoing */ }
    }
    try {
      // Masks published for flows that are gone again go too.
      t.journal.settleMasks(st, index);
      t.journal.commit(st);
    } finally {
      t.journal.close();
    }
    throw err;
  }
  t.journal.settleMasks(st, index);
  t.journal.commit(st);
  return { added, replaced, remotes: remotes.list() };
}

/**
 * The live mask `c` goes under, `found` if it was live before this add's
 * first write. A new mask, or a higher priority under an old one, is
 * published before the flow that needs it.
 */
function maskFor(
  t: TableContext,
  st: TableState,
  index: BpfMap,
  c: CompiledFlow,
  found: LiveMask | undefined,
): LiveMask {
  // An earlier flow of this add may have published it, or raised its bound.
  const mask = found && st.masks.includes(found) ? found : findMask(st.masks, c.maskBytes);
  if (mask && mask.maxPriority >= c.spec.priority) return mask;
  const updated: LiveMask = {
    ...maskShape(c.maskBytes.slice()),
    id: mask?.id ?? nextMaskId(st.masks),
    maxPriority: Math.max(mask?.maxPriority ?? 0, c.spec.priority),
    flows: mask?.flows ?? 0,
  };
  t.journal.publish(st, [...st.masks.filter((m) => m.id !== updated.id), updated], index);
  return updated;
}

/**
 * Changes the actions (and cookie) of `owner`'s flow with exactly this
 * match and priority, keeping its counters. Returns how many changed (0
 * or 1); another owner's flow with this match is refused.
 */
export function modify(t: TableContext, spec: FlowSpec, owner: OwnerName = ""): number {
  if (owner) checkOwnerName(owner);
  const c = compileFlow(spec, t.ports);
  checkGroupsExist(t.maps, t.ports, [c]);
  const st = t.journal.forWrite();
  const index = t.journal.index(st);
  const mask = findMask(st.masks, c.maskBytes);
  if (!mask) return 0;
  const ik = indexKey(mask.id, c.keyBytes);
  const raw = index.lookup(ik);
  if (!raw) return 0;
  const old = new Entry(ik, raw);
  if (old.priority !== spec.priority) return 0;
  checkOwner(t, st.owners, st.owners.id(owner), c, old);
  t.journal.begin(st);
  const slots = c.tunKeyBytes.map((k) => st.slots.acquire(k));
  try {
    index.update(ik, entryOf(c, old.flowId, slots, old.owner), "exist");
  } catch (err) {
    slots.forEach((s) => st.slots.release(s));
    t.journal.commit(st);
    throw err;
  }
  old.eachSlot((s) => st.slots.release(s));
  t.journal.commit(st);
  return 1;
}

/**
 * Deletes flows: exactly this match (and priority, if given) with
 * `strict`, else every flow the filter covers; of any owner unless the
 * filter names one. Returns how many went.
 */
export function remove(t: TableContext, filter: FlowFilter, strict: boolean): number {
  const st = t.journal.forWrite();
  const index = t.journal.index(st);
  const select = selector(filter, st.owners);
  const victims: { ik: Uint8Array; entry: Uint8Array; mask: LiveMask }[] = [];
  if (strict) {
    if (!filter.match) throw new FlowTableError("a strict delete needs a match");
    const { keyBytes, maskBytes } = encodeMatch(filter.match);
    const mask = findMask(st.masks, maskBytes);
    const ik = mask && indexKey(mask.id, keyBytes);
    const entry = ik && index.lookup(ik);
    if (mask && ik && entry && select(mask, new Entry(ik, entry))) {
      victims.push({ ik, entry, mask });
    }
  } else {
    const masks = masksById(st.masks);
    for (const e of visible(index, st.gen)) {
      const mask = masks.get(e.maskId);
      if (mask && select(mask, e)) victims.push({ ik: e.indexKey(), entry: e.entry(), mask });
    }
  }
  if (victims.length === 0) return 0;
  t.journal.begin(st);
  deleteKeys(index, victims.map((v) => v.ik), () => failpoint("flow.delete.deleted"));
  const ids: number[] = [];
  const owned = new Map<number, Uint8Array[]>();
  for (const v of victims) {
    const e = new Entry(v.ik, v.entry);
    e.eachSlot((s) => st.slots.release(s));
    ids.push(e.flowId);
    v.mask.flows--;
    if (e.owner === OPERATOR) continue;
    if (!owned.has(e.owner)) owned.set(e.owner, []);
    owned.get(e.owner)!.push(v.ik);
  }
  for (const [id, keys] of owned) {
    st.owners.removeKeys(id, keys);
    st.owners.releaseIfIdle(id);
  }
  zeroCounters(t.maps, ids);
  st.flowIds.release(ids);
  t.journal.settleMasks(st, index);
  t.journal.commit(st);
  return victims.length;
}
