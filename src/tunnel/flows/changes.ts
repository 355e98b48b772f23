/**
 * The operator's apply of a text whose flows are mostly those of the last
 * apply, with the table as that apply left it: the work and the memory
 * follow the change, not the table.
 *
 * The texts are read in turn against the note of the last apply's
 * compiled texts (`noted_texts.ts`), in its order: a text that is the next
 * noted one, or one a few after it (flows deleted between), is that flow,
 * kept as installed; only what is left (texts not found so, which are
 * then looked for among the noted flows no text took, moved flows) is
 * compiled. The noted flows no text took are the deleted ones. Since the
 * installed operator's flows are exactly the noted ones, the change is
 * made as an owner's apply makes its own (`owned.ts`): each changed flow
 * against what its key holds in the index, each deleted one removed, in
 * one atomic commit in place (`commit.ts`), with its crash repair. The
 * new note is written from the old one's columns and the changed flows,
 * run by run, never as a whole set in memory.
 *
 * Memory: the note (read as the full apply reads it), a byte per noted
 * flow (whether a text took it), and the changed flows; a few runs for a
 * file in the noted order. Time: one digest per text, a byte compared per
 * noted flow, the changed flows' work and writes.
 *
 * Anything else goes to the full apply, which is given back what was read
 * to carry on with (a {@link Replay}): a flow given as a spec, not a
 * text; more changes than a whole new table costs (the full apply writes
 * every entry in batches, cheaper per flow than a commit in place); a
 * deleted flow that is not installed as noted.
 *
 * @module
 */

import { type CompiledFlow, compileFlow, flowText } from "../compile.ts";
import type { FlowSpec } from "../flow_syntax.ts";
import { Remotes } from "../tun_keys.ts";
import { actionCodec, flowKeyCodec, tunKeyCodec } from "../../maps/layouts.ts";
import { noteDone } from "./applied.ts";
import { type ApplyOptions, applyStats, type FlowByText, type FlowDiff } from "./diff.ts";
import { Entry, indexKey } from "./entry.ts";
import { byteString, FlowSet, sameMatch } from "./flow_set.ts";
import { checkGroupsExist } from "./group_state.ts";
import type { TableContext } from "./journal.ts";
import {
  type NoteColumn,
  type NotedFlows,
  noteFlows,
  rawActions,
  textDigest,
} from "./noted_texts.ts";
import { applyWanted, type Gone, type Wanted, wantedOf } from "./owned.ts";
import { OPERATOR } from "./owners.ts";

const KEY_SIZE = flowKeyCodec.size;
const ACTION_SIZE = actionCodec.size;
const TUN_KEY_SIZE = tunKeyCodec.size;

/** How the full apply is given flows: as items, or as noted flow `j`. */
export interface Take {
  /** A flow as given. */
  item(item: FlowSpec | FlowByText): void;
  /** Noted flow `j`, its text found in the note. */
  noted(j: number): void;
}

/** What an apply of changes read, and the rest of the flows, given to the full apply in order. */
export type Replay = (take: Take) => void;

/**
 * Makes the operator's flows `items` (read once), `noted` being the
 * installed ones; gives back the diff, or, when the full apply should
 * make it, a {@link Replay} of what was read and the rest.
 */
export function applyChanges(
  t: TableContext,
  items: Iterator<FlowSpec | FlowByText>,
  noted: NotedFlows,
  options: ApplyOptions,
): FlowDiff | Replay {
  const count = noted.count;
  // Beyond this many changes a new table built aside costs less.
  const most = Math.min(count >> 4, 65536) + 1024;
  const taken = new Uint8Array(count);
  // Runs of the new order: (first noted flow, length), or (-1 - i, 1)
  // for the i-th text left.
  const runs: number[] = [];
  const left: FlowByText[] = [];
  let leftTexts = new Uint32Array(3 * 64);
  const digest = new Uint32Array(3);
  let n = 0, missed = false;
  const replay = (last?: FlowSpec | FlowByText): Replay => (take) => {
    for (let r = 0; r < runs.length; r += 2) {
      if (runs[r] < 0) take.item(left[-1 - runs[r]]);
      else for (let j = runs[r]; j < runs[r] + runs[r + 1]; j++) take.noted(j);
    }
    if (last) take.item(last);
    for (let x = items.next(); !x.done; x = items.next()) take.item(x.value);
  };
  for (let x = items.next(); !x.done; x = items.next()) {
    const item = x.value;
    if (!("text" in item) || left.length > most) return replay(item);
    textDigest(item.text, digest, 0);
    let j = noted.follow(digest, 0);
    // Two texts in a row not where the note has them: the file may have
    // moved on past more flows than follow() looks over (a block of them
    // deleted), so the note's index finds where it goes on.
    if (j < 0 && missed) j = noted.find(digest, 0);
    // A text again (its flow taken already) is compiled, and refused.
    if (j >= 0 && taken[j]) j = -1;
    missed = j < 0;
    const end = runs.length - 2;
    if (j >= 0) {
      taken[j] = 1;
      if (end >= 0 && runs[end] >= 0 && runs[end] + runs[end + 1] === j) runs[end + 1]++;
      else runs.push(j, 1);
    } else {
      if (3 * left.length + 3 > leftTexts.length) {
        const grown = new Uint32Array(leftTexts.length * 2);
        grown.set(leftTexts);
        leftTexts = grown;
      }
      leftTexts.set(digest, 3 * left.length);
      runs.push(-1 - left.length, 1);
      left.push(item);
    }
    if (++n % 65536 === 0) options.progress?.({ phase: "compile", done: n });
  }

  // The texts left that are noted flows no text took: moved, not changed.
  const movedTo = new Int32Array(left.length).fill(-1);
  if (left.length > 0) {
    const byText = new Map<string, number>();
    const key = (d: Uint32Array, i: number) => `${d[3 * i]},${d[3 * i + 1]},${d[3 * i + 2]}`;
    for (let i = left.length - 1; i >= 0; i--) byText.set(key(leftTexts, i), i);
    for (let j = 0; j < count; j++) {
      if (taken[j]) continue;
      const i = byText.get(key(noted.texts, j));
      if (i === undefined) continue;
      byText.delete(key(noted.texts, j));
      movedTo[i] = j;
      taken[j] = 1;
    }
  }
  let kept = 0;
  for (let j = 0; j < count; j++) kept += taken[j];
  const fresh = left.flatMap((_, i) => movedTo[i] < 0 ? [i] : []);
  if (fresh.length + count - kept > most) return replay();

  // The changed flows, compiled; two with one match refused.
  const compiled: CompiledFlow[] = [];
  const byMatch = new Map<string, number>();
  for (const i of fresh) {
    const c = compileFlow(left[i].parse(), t.ports);
    applyStats.compiled++;
    const match = byteString(c.maskBytes) + byteString(c.keyBytes);
    if (byMatch.has(match)) throw sameMatchOf(t, c);
    byMatch.set(match, compiled.length);
    compiled.push(c);
  }
  checkGroupsExist(t.maps, t.ports, compiled, options.comingGroups);

  const st = options.dryRun ? t.journal.load() : t.journal.forWrite();
  const index = t.journal.index(st);
  const bySig = new Map(st.masks.map((m) => [m.sig, m]));
  // The deleted flows: one whose match a changed flow has is replaced by
  // it; the others go.
  const replaced = new Set<number>();
  const gone: Gone[] = [];
  const key = new Uint8Array(KEY_SIZE);
  for (let j = 0; j < count; j++) {
    if (taken[j]) continue;
    const mask = noted.masks[noted.maskIndex[j]];
    noted.keys.keyInto(noted.keyAt[j], mask.offsets, key, 0);
    const c = byMatch.get(mask.sig + byteString(key));
    if (c !== undefined) {
      replaced.add(c);
      continue;
    }
    const live = bySig.get(mask.sig);
    const ik = live && indexKey(live.id, key);
    const old = ik && index.lookup(ik);
    // Not installed as noted: the full apply compares with what is.
    if (!old || new Entry(ik, old).owner !== OPERATOR) return replay();
    gone.push({ ik, old });
  }
  const wanted: Wanted[] = compiled.map((c, i) => {
    const w = wantedOf(t, st, index, bySig, OPERATOR, c);
    // An operator's flow with this match that stays: one would hide the other.
    if (w.old && !replaced.has(i)) throw sameMatchOf(t, c);
    return w;
  });

  const diff = applyWanted(t, st, index, "", wanted, gone, [], options);
  diff.unchanged += kept;
  diff.remotes = remotesOf(noted, taken, compiled);
  if (options.dryRun) return diff;
  const flows = kept + compiled.length;
  const same = left.length === 0 && kept === count;
  // The same flows in the noted order: the note and its table stand.
  const table = same ? noted.table : randomId();
  noteDone(t.maps, st.cfg, table, flows, diff.remotes, options.source);
  if (!same && options.context) {
    noteChanges(t, noted, runs, movedTo, leftTexts, compiled, flows, options.context, table);
  }
  noted.release();
  return diff;
}

/** The error for changed flow `c`, whose match another wanted flow has. */
function sameMatchOf(t: TableContext, c: CompiledFlow): Error {
  const err = sameMatch(c.spec.priority);
  err.message = `${flowText(c.spec, t.ports)}: ${err.message}`;
  return err;
}

/** A new table's id: the note and the apply's note name it, no set digest does. */
function randomId(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

/** The tunnel remotes of the noted flows `taken` marks and of `compiled`. */
function remotesOf(noted: NotedFlows, taken: Uint8Array, compiled: CompiledFlow[]) {
  const used = new Uint8Array(noted.setRaw.length);
  for (let j = 0; j < noted.count; j++) if (taken[j]) used[noted.actionSet[j]] = 1;
  const remotes = new Remotes();
  used.forEach((u, s) => {
    if (!u) return;
    const raw = noted.setRaw[s];
    for (let at = 1 + noted.setCount[s] * ACTION_SIZE; at < raw.length; at += TUN_KEY_SIZE) {
      remotes.add(raw.subarray(at, at + TUN_KEY_SIZE));
    }
  });
  for (const c of compiled) for (const k of c.tunKeyBytes) remotes.add(k);
  return remotes.list();
}

/**
 * Notes the new table `table` of `flows` flows: the runs of `noted`
 * flows kept, texts left moved to noted flows (`movedTo`) and the
 * `compiled` ones, in order. Not written when the masks would be more
 * than a note holds: the next apply then compiles the texts it lacks.
 */
function noteChanges(
  t: TableContext,
  noted: NotedFlows,
  runs: number[],
  movedTo: Int32Array,
  leftTexts: Uint32Array,
  compiled: CompiledFlow[],
  flows: number,
  context: string,
  table: string,
): void {
  const set = new FlowSet();
  for (const c of compiled) set.add(c);
  const masks = noted.masks.map((m) => m.bytes);
  const maskAt = set.masks.map((m) => {
    const i = noted.masks.findIndex((o) => o.sig === m.sig);
    return i >= 0 ? i : masks.push(m.bytes) - 1;
  });
  if (masks.length > 255) return;
  const arenaLen = noted.keys.bytes.length, sets = noted.setRaw.length;
  const counts = new Uint32Array(sets + set.actionSets.length);
  counts.set(noted.setCount);
  set.actionSets.forEach((a, i) => counts[sets + i] = a.count);
  const one = (name: NoteColumn, c: number, i: number): ArrayBufferView => {
    switch (name) {
      case "texts":
        return leftTexts.subarray(3 * i, 3 * i + 3);
      case "keyAt":
        return Uint32Array.of(arenaLen + set.keyAt[c]);
      case "actionSet":
        return Uint32Array.of(sets + set.actionSet[c]);
      case "maskIndex":
        return Uint8Array.of(maskAt[set.maskIndex[c]]);
      case "cookie":
        return BigUint64Array.of(set.cookieOf(c));
      default:
        return set[name].subarray(c, c + 1);
    }
  };
  const compiledAt = new Int32Array(movedTo.length);
  let next = 0;
  movedTo.forEach((j, i) => compiledAt[i] = j < 0 ? next++ : -1);
  noteFlows(
    t.maps,
    {
      count: flows,
      masks,
      raws: [...noted.setRaw, ...set.actionSets.map(rawActions)],
      actionCounts: counts,
      arena: [noted.keys.bytes, set.arena],
      *column(name) {
        const size = name === "texts" ? 3 : 1;
        for (let r = 0; r < runs.length; r += 2) {
          let j = runs[r];
          if (j < 0) {
            const i = -1 - j;
            if (movedTo[i] < 0) {
              yield one(name, compiledAt[i], i);
              continue;
            }
            j = movedTo[i];
          }
          yield noted[name].subarray(j * size, (j + runs[r + 1]) * size);
        }
      },
    },
    context,
    table,
  );
}
