/**
 * Replacing the operator's flows: `apply` compiles the wanted flows into a
 * compact {@link FlowSet}, compares it with the installed table in one raw
 * pass (a flow's identity is its mask and masked key; unchanged and
 * modified flows keep their ids and so their counters; flows of named
 * owners stay as they are, and a wanted flow with the match of one is
 * refused), builds the new index aside in batches (the other owners'
 * entries copied over) and makes it live with the journal's one write,
 * then frees what the old table alone used. A dry run stops after the
 * comparison and says what would change. A named owner's flows are
 * replaced in place instead (`owned.ts`).
 *
 * @module
 */

import {
  type ActionMemo,
  type CompiledFlow,
  compileFlowInto,
  decompileActions,
  flowText,
} from "../compile.ts";
import type { BpfMap } from "../../bpf/map.ts";
import { failpoint } from "../failpoint.ts";
import type { FlowSpec } from "../flow_syntax.ts";
import {
  ActionOp,
  type Config,
  ConfigFlag,
  decodeFlowKey,
  tunKeyCodec,
} from "../../maps/layouts.ts";
import { U32List } from "../ids.ts";
import { Remotes, type TunKeySlots } from "../tun_keys.ts";
import { lastApplied, noteDone } from "./applied.ts";
import {
  type NotedFlows,
  notedFlows,
  noteFlows,
  setNote,
  textDigest,
  TextDigests,
} from "./noted_texts.ts";
import { applyChanges, type Replay, type Take } from "./changes.ts";
import { type ApplyOptions, applyStats, type FlowByText, type FlowDiff } from "./diff.ts";

import { zeroCounters } from "./counters.ts";
import {
  actionSlots,
  createIndex,
  decodeActions,
  EntryBatch,
  KEY_SIZE,
  resolveActions,
  visible,
} from "./entry.ts";
import { FlowTableError } from "./error.ts";
import { type ActionSet, byteString, FlowSet, FlowState, sameBytes } from "./flow_set.ts";
import { checkGroupsExist, countGroupKeys } from "./group_state.ts";
import { checkFlowRoom, checkKeyRoom, type TableContext, type TableState } from "./journal.ts";
import { checkMaskRoom, type LiveMask, masksById, nextMaskId } from "./masks.ts";
import { OPERATOR } from "./owners.ts";
import { decodeFlow, type InstalledFlow, tunKeyReader } from "./queries.ts";

export type { ApplyOptions, FlowByText, FlowDiff, Progress } from "./diff.ts";
export { applyStats, specsOf } from "./diff.ts";

/**
 * Makes the operator's installed flows exactly `specs`, leaving other
 * owners' flows as they are. The new table is built aside and switched to
 * atomically; unchanged and modified flows keep their ids and counters.
 * With `dryRun`, only says what would change. `specs` is read once, so a
 * generator can stream a million flows without holding them.
 */
export function apply(
  t: TableContext,
  specs: Iterable<FlowSpec | FlowByText>,
  options: ApplyOptions = {},
): FlowDiff {
  const limit = options.listLimit ?? 1000;
  const progress = options.progress;
  const cfg = t.maps.config.read();
  const last = lastApplied(t.maps, cfg);
  // The same text as the last apply's: not even read.
  const skip = last?.source;
  if (skip && skip.digest === options.source) {
    return {
      ...describe(t, new FlowSet(), 0, [], limit, true),
      unchanged: skip.flows,
      remotes: skip.remotes,
    };
  }
  const context = options.owner ? undefined : options.context;
  const noted = context ? notedFlows(t.maps, context) : undefined;
  let replay: Replay | undefined;
  // The table as the noted flows made it: only what changed is compiled
  // and written, unless so much changed that a whole new table is cheaper.
  if (noted && last && noted.table === last.digest && !noted.wasteful()) {
    const done = applyChanges(t, specs[Symbol.iterator](), noted, options);
    if (!(done instanceof Function)) return done;
    replay = done;
  }
  // An empty table: the new index is written as the flows compile.
  const fresh = options.dryRun ? undefined : FreshIndex.start(t, cfg, progress);
  try {
    return replace(t, specs, options, { cfg, last, noted, replay }, fresh);
  } catch (err) {
    // A fresh index took ids and key slots in the journal's state, nowhere else.
    if (fresh) t.journal.close();
    throw err;
  } finally {
    fresh?.close();
  }
}

/**
 * {@link apply} of a whole new table (`at`: the configuration as it began,
 * the last apply's note, the noted flows and what the apply of changes
 * read, if it was tried), with `fresh` when the table is empty.
 */
function replace(
  t: TableContext,
  specs: Iterable<FlowSpec | FlowByText>,
  options: ApplyOptions,
  at: {
    cfg: Config;
    last: ReturnType<typeof lastApplied>;
    noted?: NotedFlows;
    replay?: Replay;
  },
  fresh: FreshIndex | undefined,
): FlowDiff {
  const { cfg, last, noted, replay } = at;
  const notedTable = noted?.table;
  const limit = options.listLimit ?? 1000;
  const progress = options.progress;
  const context = options.owner ? undefined : options.context;
  const { set, texts, compiled } = compile(
    t,
    specs,
    progress,
    context,
    noted,
    replay,
    fresh,
    !options.dryRun,
  );
  using _ = texts;
  // Only a changed text, or another table, needs noting again.
  const noteTexts = () => {
    if (!texts || !context || options.dryRun) return;
    if (compiled > 0 || notedTable !== digest) {
      noteFlows(t.maps, setNote(set, texts), context, digest);
    }
  };
  checkSetGroups(t, set, options.comingGroups);
  // The same flows as the last apply installed, and nothing changed
  // since: the table is the wanted one, without reading it.
  const digest = set.digest();
  if (last?.digest === digest) {
    // An empty table applied again: what a fresh index took is not kept.
    if (fresh) t.journal.close();
    const diff = describe(t, set, 0, [], limit, true);
    // The same flows from another text: noted, so that text is recognised too.
    if (options.source && !options.dryRun) {
      noteDone(t.maps, cfg, digest, set.count, diff.remotes, options.source);
    }
    noteTexts();
    return diff;
  }
  // Two flows with one match are refused here, before the table is read.
  set.index();
  // What each flow takes over is learnt from the installed table: a fresh
  // index has none to learn from.
  if (!fresh) set.track();
  failpoint("flow.apply.compare");
  const st = options.dryRun ? t.journal.load() : t.journal.forWrite();

  // Old masks by id, as masks of the set (or none).
  const setMaskOf = new Map<number, number>();
  for (const m of st.masks) {
    const i = set.masks.findIndex((s) => s.sig === m.sig);
    if (i >= 0) setMaskOf.set(m.id, i);
  }
  // Action lists whose keys all have slots already can be compared as bytes.
  for (const a of set.actionSets) resolve(a, st.slots, false);

  // Walk the installed table once, raw.
  const oldIds = new U32List();
  const oldCounts = new Uint32Array(st.slots.capacity);
  const removedIds = new U32List();
  // Other owners' flows, kept: how many under each mask, their top priority.
  const kept = new Map<number, { flows: number; maxPriority: number }>();
  const keptCounts = new Uint32Array(st.slots.capacity);
  let keptCount = 0;
  const removeSample: InstalledFlow[] = [];
  const tunKey = tunKeyReader(t.maps, st);
  const masks = masksById(st.masks);
  let seen = 0;
  const compared = (n: number) => {
    seen += n;
    progress?.({ phase: "compare", done: seen });
  };
  const oldIndex = t.journal.index(st);
  for (const e of visible(oldIndex, st.gen, compared)) {
    const flowId = e.flowId;
    oldIds.push(flowId);
    e.eachSlot((s) => s < oldCounts.length && oldCounts[s]++);
    const mi = setMaskOf.get(e.maskId);
    const j = mi === undefined ? -1 : set.find(mi, e.keys, e.keyAt);
    if (e.owner !== OPERATOR) {
      if (j >= 0) {
        throw new FlowTableError(
          `${flowText(flowSpec(t, set, j), t.ports)}: the flow with this match is owner "${
            st.owners.name(e.owner)
          }"'s, and one owner never changes another's`,
        );
      }
      const k = kept.get(e.maskId) ?? { flows: 0, maxPriority: 0 };
      k.flows++;
      k.maxPriority = Math.max(k.maxPriority, e.priority);
      kept.set(e.maskId, k);
      e.eachSlot((s) => s < keptCounts.length && keptCounts[s]++);
      keptCount++;
      continue;
    }
    if (j < 0 || set.priority[j] !== e.priority) {
      removedIds.push(flowId);
      const mask = masks.get(e.maskId);
      if (removeSample.length < limit && mask) {
        removeSample.push(decodeFlow(mask, e, tunKey, t.ports, st.owners));
      }
      continue;
    }
    set.oldId[j] = flowId;
    const a = set.actionSets[set.actionSet[j]];
    const same = a.resolved !== undefined && e.cookie === set.cookieOf(j) &&
      e.flags === a.flags && e.actionCount === a.count &&
      sameBytes(e.actionBytes(), a.resolved, a.resolved.length);
    set.state[j] = same ? FlowState.UNCHANGED : FlowState.MODIFIED;
  }

  const diff = describe(t, set, removedIds.length, removeSample, limit);
  if (options.dryRun) return diff;
  // Every flow is as installed and none goes: the live table is the
  // wanted one already, and writing it again would only cost time, unless
  // a crashed writer left ids or key references for an apply to heal.
  const unchanged = diff.added + diff.modified + diff.removed === 0;
  if (unchanged && !fresh && bookkeepingAgrees(t, st, oldIds, oldCounts)) {
    noteDone(t.maps, st.cfg, digest, set.count, diff.remotes, options.source);
    noteTexts();
    return diff;
  }

  t.journal.begin(st);
  try {
    // Room: ids and slots as the old table leaves them, then the new
    // flows' needs (a fresh index took them as it went).
    if (fresh) fresh.checkRoom(set.count);
    else {
      bookkeepingOf(t, st, oldIds.view(), oldCounts);
      checkFlowRoom(st, diff.added);
    }
    checkKeysFit(st, set.actionSets);

    // Masks keep their ids, with the kept flows under them; new ones take
    // free ids.
    const live: LiveMask[] = [];
    for (const m of set.masks) {
      const old = st.masks.find((o) => o.sig === m.sig);
      const k = old && kept.get(old.id);
      live.push({
        ...m,
        id: old?.id ?? 0,
        flows: m.flows + (k?.flows ?? 0),
        maxPriority: Math.max(m.maxPriority, k?.maxPriority ?? 0),
        decoded: undefined,
      });
    }
    for (const [id, k] of kept) {
      if (!live.some((m) => m.id === id)) {
        live.push({ ...masks.get(id)!, ...k, decoded: undefined });
      }
    }
    for (const m of live) if (!m.id) m.id = nextMaskId(live);
    checkMaskRoom(live.length);
    // New keys get slots (free ones: no packet can be reading them).
    for (const a of set.actionSets) if (!a.resolved) resolve(a, st.slots, true);
    st.slots.writeReserved();

    // The new index, written in batches (a fresh one has its flows).
    const newIndex = fresh?.index ?? createIndex(st.cfg.max_flows);
    try {
      using own = fresh ? undefined : new FlowWriter(newIndex, progress, set.count);
      const writer = fresh?.writer ?? own!;
      const batch = writer.batch;
      const uses = new Uint32Array(set.actionSets.length);
      for (let j = 0; j < set.count; j++) uses[set.actionSet[j]]++;
      for (let j = 0; own && j < set.count; j++) {
        const id = set.oldId[j] >= 0 ? set.oldId[j] : st.flowIds.allocate();
        own.add(set, j, live[set.maskIndex[j]].id, id);
      }
      writer.end(set.count);
      if (keptCount > 0) {
        for (const e of visible(oldIndex, st.gen)) {
          if (e.owner !== OPERATOR && batch.put(e.indexKey(), e.entry())) batch.flush();
        }
        batch.flush();
      }
      batch.finish();
      t.journal.publish(st, live, newIndex);
      failpoint("flow.apply.published");
      // The old generation's slot still names the old index; point it at
      // the new one too, so the old index is freed once no packet uses it.
      t.maps.setFlowIndex(st.gen ^ 1, newIndex);
      const newCounts = keptCounts;
      set.actionSets.forEach((a, i) => {
        if (uses[i]) actionSlots(a.resolved!, (s) => newCounts[s] += uses[i]);
      });
      countGroupKeys(t.maps, newCounts);
      st.slots.recount(newCounts);
    } finally {
      if (!fresh) newIndex.close();
    }
    // Only now may the old table's ids be reused.
    zeroCounters(t.maps, removedIds.view());
    st.flowIds.release(removedIds.view());
    t.journal.commit(st);
  } catch (err) {
    t.journal.close();
    throw err;
  }
  noteDone(t.maps, st.cfg, digest, set.count, diff.remotes, options.source);
  noteTexts();
  return diff;
}

/**
 * `specs` (or, with `replay`, what it gives) compiled into a set, each
 * flow's key and mask encoded into the same two buffers; with `context`,
 * a text of the `noted` flows (the last apply's in that context) is taken
 * as it compiled; with `fresh`, each flow is written into the fresh index
 * as it is added. Gives the texts' digests too when every flow was given
 * as text (all of them when `note`, for the note), and how many flows
 * were compiled.
 */
function compile(
  t: TableContext,
  specs: Iterable<FlowSpec | FlowByText>,
  progress: ApplyOptions["progress"],
  context?: string,
  noted?: NotedFlows,
  replay?: Replay,
  fresh?: FreshIndex,
  note = false,
) {
  const set = new FlowSet();
  const memo: ActionMemo = new Map();
  const keyBytes = new Uint8Array(KEY_SIZE);
  const maskBytes = new Uint8Array(KEY_SIZE);
  // One object for every flow: the set copies what it keeps.
  const c: CompiledFlow = {
    spec: undefined!,
    keyBytes,
    maskBytes,
    actions: [],
    tunKeyBytes: [],
    flags: 0,
  };
  // The file applied again is mostly the noted flows: room for them at once.
  if (noted) set.reserve(noted.count, noted.keys.bytes.length);
  let texts = context ? new TextDigests(note) : undefined;
  let compiled = 0;
  const counted = () => {
    if (set.count % 65536 === 0) progress?.({ phase: "compile", done: set.count });
  };
  const take: Take = {
    item(item) {
      const n = set.count;
      let j = -1;
      if ("text" in item && texts) {
        const i = texts.slot(n);
        textDigest(item.text, texts.words, i);
        if (noted) j = noted.find(texts.words, i);
      } else {
        texts?.[Symbol.dispose]();
        texts = undefined;
      }
      let added: number;
      // The flow's whole masked key, when it was compiled just now.
      let key: Uint8Array | undefined;
      if (j >= 0) added = set.addNoted(noted!, j);
      else {
        const s = "text" in item ? item.parse() : item;
        const a = compileFlowInto(s, t.ports, keyBytes, maskBytes, memo);
        c.spec = s;
        c.actions = a.actions;
        c.tunKeyBytes = a.tunKeyBytes;
        c.flags = a.flags;
        added = set.add(c);
        key = keyBytes;
        applyStats.compiled++;
        compiled++;
      }
      fresh?.add(set, added, key);
      counted();
    },
    noted(j) {
      if (texts) {
        texts.words.set(noted!.texts.subarray(3 * j, 3 * j + 3), 3 * texts.slot(set.count));
      }
      const added = set.addNoted(noted!, j);
      fresh?.add(set, added);
      counted();
    },
  };
  try {
    if (replay) replay(take);
    else for (const item of specs) take.item(item);
  } catch (err) {
    texts?.[Symbol.dispose]();
    throw err;
  } finally {
    noted?.release();
  }
  progress?.({ phase: "compile", done: set.count, total: set.count });
  return { set, texts, compiled };
}

/** Flow `j` of `set`, as a spec. */
function flowSpec(t: TableContext, set: FlowSet, j: number): FlowSpec {
  const key = new Uint8Array(KEY_SIZE);
  set.keyInto(j, key, 0);
  const a = set.actionSets[set.actionSet[j]];
  return {
    priority: set.priority[j],
    cookie: set.cookieOf(j),
    match: {
      key: decodeFlowKey(key),
      mask: decodeFlowKey(set.masks[set.maskIndex[j]].bytes),
    },
    actions: decompileActions(
      decodeActions(a.actions),
      (i) => tunKeyCodec.decode(a.tunKeys[i]),
      t.ports,
    ),
  };
}

/**
 * Whether the id bitmap and the key references are what the scanned
 * table (its flow ids `ids`, its key references `counts`) makes them.
 */
function bookkeepingAgrees(
  t: TableContext,
  st: TableState,
  ids: U32List,
  counts: Uint32Array,
): boolean {
  if (st.flowIds.used() !== ids.length) return false;
  for (const id of ids.view()) if (!st.flowIds.has(id)) return false;
  const refs = counts.slice();
  countGroupKeys(t.maps, refs);
  return refs.every((n, slot) => st.slots.refs[slot] === n);
}

/**
 * Gives action list `a` its kernel form, with slots; `take` reserves
 * missing keys (filled by the slots' `writeReserved`).
 */
function resolve(a: ActionSet, slots: TunKeySlots, take: boolean): void {
  a.resolved = resolveActions(a.actions, (k) => {
    const key = a.tunKeys[k];
    return slots.find(key) ?? (take ? slots.reserve(key) : undefined);
  });
}

/** Refuses action lists `sets` when the keys they need that have no slot yet outnumber the free slots. */
function checkKeysFit(st: TableState, sets: ActionSet[]): void {
  const missing = new Set<string>();
  for (const a of sets) {
    if (a.resolved) continue;
    for (const k of a.tunKeys) if (st.slots.find(k) === undefined) missing.add(byteString(k));
  }
  checkKeyRoom(st, missing.size);
}

/**
 * Sets the id bitmap and the key references to what a table of flow ids
 * `ids`, whose actions name each slot `counts[slot]` times, makes them
 * (the groups' keys counted in, into `counts`).
 */
function bookkeepingOf(
  t: TableContext,
  st: TableState,
  ids: Iterable<number>,
  counts: Uint32Array,
): void {
  st.flowIds.rebuild(ids);
  countGroupKeys(t.maps, counts);
  st.slots.recount(counts);
}

/**
 * FlowWriter writes a set's flows into a new index, in batches written in
 * the background, saying how far it got after each.
 */
class FlowWriter {
  /** The batch it fills. */
  readonly batch: EntryBatch;
  readonly #key = new Uint8Array(KEY_SIZE);
  readonly #progress: ApplyOptions["progress"];
  readonly #total?: number;

  /** Writes into `index`; `total` is how many flows come, when known. */
  constructor(index: BpfMap, progress: ApplyOptions["progress"], total?: number) {
    this.batch = new EntryBatch(index, true);
    this.#progress = progress;
    this.#total = total;
  }

  /**
   * Adds flow `j` of `set` under mask id `maskId`, with flow id `flowId`;
   * `key` is its whole masked key, if the caller has it (else it is read
   * back from the set: 60-70 ns a flow in a microbenchmark, about a third
   * of writing one).
   */
  add(set: FlowSet, j: number, maskId: number, flowId: number, key?: Uint8Array): void {
    const a = set.actionSets[set.actionSet[j]];
    if (!key) set.keyInto(j, key = this.#key, 0);
    const full = this.batch.add(maskId, key, {
      flowId,
      priority: set.priority[j],
      cookie: set.cookieOf(j),
      flags: a.flags,
      owner: OPERATOR,
      actions: a.resolved!,
    });
    if (full) this.#flush(j + 1);
  }

  /** Writes the last batch, once all `count` flows were added: the last
   * progress says the total, which a fresh index learns only now. */
  end(count: number): void {
    this.#flush(count, count);
  }

  #flush(done: number, total = this.#total): void {
    if (this.batch.size) this.batch.flush();
    this.#progress?.({ phase: "install", done, total });
    failpoint("flow.apply.installing");
  }

  /** Waits for the batches written in the background. */
  [Symbol.dispose](): void {
    this.batch[Symbol.dispose]();
  }
}

/**
 * FreshIndex is the new index of an apply to an empty table: with nothing
 * to compare with, each flow is written as it is compiled (its batches on
 * a worker thread while the next flows compile), not after. Nothing else
 * is written before the whole input has been checked: no packet can reach
 * the index until the apply publishes it; ids and new tunnel keys' slots
 * are taken in the journal's state only (the slots filled after the
 * change's `begin`), and a refused apply drops that state. Masks are
 * numbered in the set's order from 1, as the apply numbers new ones when
 * there are no old ones.
 */
class FreshIndex {
  /** The new index. */
  readonly index: BpfMap;
  /** What writes into it. */
  readonly writer: FlowWriter;
  readonly #st: TableState;
  readonly #room: number;

  private constructor(st: TableState, progress: ApplyOptions["progress"]) {
    this.#st = st;
    this.#room = st.flowIds.free();
    this.index = createIndex(st.cfg.max_flows);
    this.writer = new FlowWriter(this.index, progress);
  }

  /**
   * A fresh index when the live table (as configuration `cfg` names it)
   * has no entry and no change is under way, else undefined. (A session's
   * changes keep their bookkeeping in the journal's state until its end,
   * which a refused fresh apply would drop.)
   */
  static start(
    t: TableContext,
    cfg: Config,
    progress: ApplyOptions["progress"],
  ): FreshIndex | undefined {
    const id = t.maps.flowIndexId(cfg.gen & 1);
    if (!id || cfg.flags & ConfigFlag.WRITING) return undefined;
    {
      using live = t.maps.openFlowIndex(id);
      if (live.nextKey(null)) return undefined;
    }
    const st = t.journal.forWrite();
    if (st.masks.length > 0) return undefined;
    bookkeepingOf(t, st, [], new Uint32Array(st.slots.capacity));
    return new FreshIndex(st, progress);
  }

  /**
   * Writes flow `j` of `set`, just added (unless the table has no room for
   * it: see {@link checkRoom}); `key` is its whole masked key, if at hand.
   */
  add(set: FlowSet, j: number, key?: Uint8Array): void {
    if (j >= this.#room) return;
    const a = set.actionSets[set.actionSet[j]];
    if (!a.resolved) {
      checkKeysFit(this.#st, [a]);
      resolve(a, this.#st.slots, true);
    }
    this.writer.add(set, j, set.maskIndex[j] + 1, this.#st.flowIds.allocate(), key);
  }

  /** Refuses `count` flows when more than the table had room for. */
  checkRoom(count: number): void {
    checkFlowRoom(this.#st, count, this.#room);
  }

  /** Waits for its writes and closes the index (the live one, once published). */
  close(): void {
    this.writer[Symbol.dispose]();
    this.index.close();
  }
}

/**
 * Refuses a set whose flows name a group neither installed nor in
 * `coming`, quoting the first such flow.
 */
function checkSetGroups(t: TableContext, set: FlowSet, coming?: ReadonlySet<number>): void {
  set.actionSets.forEach((a, i) => {
    const actions = decodeActions(a.actions);
    if (actions[0]?.op !== ActionOp.GROUP) return;
    const j = set.actionSet.findIndex((s, k) => k < set.count && s === i);
    if (j >= 0) checkGroupsExist(t.maps, t.ports, [{ spec: flowSpec(t, set, j), actions }], coming);
  });
}

/**
 * The diff of `set` against the table, with up to `limit` flows of each
 * kind; with `same`, every flow of the set is as installed.
 */
function describe(
  t: TableContext,
  set: FlowSet,
  removed: number,
  removeSample: InstalledFlow[],
  limit: number,
  same = false,
): FlowDiff {
  const diff: FlowDiff = {
    added: 0,
    modified: 0,
    removed,
    unchanged: 0,
    add: [],
    modify: [],
    remove: removeSample,
    remotes: [],
  };
  const remotes = new Remotes();
  for (const a of set.actionSets) for (const k of a.tunKeys) remotes.add(k);
  diff.remotes = remotes.list();
  if (same) {
    diff.unchanged = set.count;
    return diff;
  }
  const spec = (j: number) => flowSpec(t, set, j);
  for (let j = 0; j < set.count; j++) {
    if (set.isNew(j)) {
      diff.added++;
      if (diff.add.length < limit) diff.add.push(spec(j));
    } else if (set.state[j] === FlowState.MODIFIED) {
      diff.modified++;
      if (diff.modify.length < limit) diff.modify.push(spec(j));
    } else diff.unchanged++;
  }
  return diff;
}
