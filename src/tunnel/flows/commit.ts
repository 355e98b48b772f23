/**
 * Many changes of the live flow index made at once, in place, and seen by
 * packets all together: how an owner's `apply` replaces its flows in a
 * table of a million at a cost that follows the change, not the table.
 *
 * ## Why
 *
 * A packet's lookup (`classify()` in bpf/include/classify.h) makes one hash
 * lookup per mask and keeps the best match. Changing several entries one
 * write at a time would let a packet meet some of them old and some new: a
 * removed flow already gone while its replacement, under another mask, is
 * not there yet. The whole-table `apply` avoids that by building a new
 * index aside and switching to it, which costs what the table is; so would
 * a copy of the index per owner, and it would cost every packet a lookup
 * per mask per owner.
 *
 * ## Two generations in one index
 *
 * The datapath has two table generations: `wr_config.gen & 1`, read once
 * per packet, picks the mask set (`wr_masks[gen]`) and the flow index
 * (`wr_flow_tables[gen]`). Here both name the same index, and each entry
 * says which generations see it (`vis`: GEN0, GEN1 or BOTH). Outside a
 * commit every entry is BOTH. A flow that changes keeps its key, and a hash
 * map holds one value per key, so its replacement waits beside it under the
 * same key with `alt` = 1; a lookup that finds an entry its generation does
 * not see looks there next (`stand_in()`), which costs a packet nothing
 * unless a commit is under way. A commit at live generation L, next N:
 *
 * 1. Wait until nobody reads N (step 5 of the commit before, or a switch
 *    made elsewhere, may be recent), and have N's slot name this index.
 * 2. Stage, invisibly to L: a new flow is written with `vis` = N; a flow
 *    that goes is rewritten with `vis` = L; a flow that changes is
 *    rewritten with `vis` = L and its replacement written at `alt` 1 with
 *    `vis` = N. Failpoint `flow.owner.staged`.
 * 3. Write N's mask set: exact for what N sees (new masks, priority bounds
 *    raised, masks left without flows dropped). Only N's packets read it.
 * 4. Commit: one write of `wr_config.gen` = N. A packet reads the
 *    generation once, so it sees the old set or the new one, never a
 *    mixture. The write flips one bit of one aligned word, so it cannot
 *    tear. Failpoint `flow.owner.committed`.
 * 5. Wait until every packet of L is done.
 * 6. Settle, with no visible change: new flows and replacements become
 *    BOTH (a replacement copied over its flow's entry: updating an
 *    existing key of a hash map swaps in a new element, and a reader holds
 *    the old one or the new one, whole); flows that went are deleted.
 *    Failpoint `flow.owner.settled`.
 * 7. If flows changed: wait again (a packet of N may have read a flow's
 *    old entry just before step 6 overwrote it, and look at its stand-in
 *    next), then delete the stand-ins.
 *
 * The cost is the changed entries, a few writes of the mask set and the
 * configuration, and two or three waits of some 10 ms each.
 *
 * ## Waiting for readers
 *
 * An update of a map of maps returns only after an RCU grace period (the
 * kernel's `maybe_wait_bpf_programs()`), and XDP and TC programs run under
 * RCU: rewriting a slot of `wr_flow_tables` with the index it already
 * names waits for every program run that started before it
 * (`Journal.waitForReaders`). With those waits two generations are
 * enough: nothing of L is read after step 5, so the next commit may stage
 * for L again. Counters of entries born and dying per commit (Open
 * vSwitch's classifier versions its rules so) would need no waits, but a
 * wider word in every entry and in the configuration, and the steps that
 * free memory would still have to wait for readers.
 *
 * ## Crashes
 *
 * Everything from step 1 on runs between the journal's writing mark and
 * its commit. A writer that dies leaves the mark set, and the next writer
 * repairs before anything else (`journal.ts`): what the live generation
 * sees becomes BOTH (a stand-in copied over its flow), the rest is deleted
 * once no packet reads it. Dead before step 4, the old set stays; after
 * it, the new one does. The rerun of the same apply then finds exactly
 * what it wants, or the rest of it to do.
 *
 * ## Readers in TypeScript
 *
 * `lookup()` in `queries.ts` (the `trace` and `FlowTable.lookup` copy of the
 * kernel's search) follows the same rule, stand-ins included, and dumps,
 * counts and `apply`'s comparison read only entries of the generation
 * they loaded (`visible()` in `entry.ts`).
 *
 * @module
 */

import type { BpfMap } from "../../bpf/map.ts";
import { FlowVis } from "../../maps/layouts.ts";
import { failpoint } from "../failpoint.ts";
import { altKey, deleteKeys, EntryBatch, visBit, withVis } from "./entry.ts";
import type { TableContext, TableState } from "./journal.ts";
import type { LiveMask } from "./masks.ts";

/** One flow's change: its entry before and after, under its index key. */
export interface Change {
  /** The flow's index key (alt 0). */
  ik: Uint8Array;
  /** Its entry as installed, when it is. */
  old?: Uint8Array;
  /** Its entry as it will be, when it stays or comes. */
  next?: Uint8Array;
}

/**
 * Makes `changes` to the live `index` and `masks` the live mask set, all
 * at once for packets (steps 1 to 7 above). The caller has marked its
 * change begun; on failure it must have the journal recover.
 */
export function commit(
  t: TableContext,
  st: TableState,
  index: BpfMap,
  changes: Change[],
  masks: LiveMask[],
): void {
  const j = t.journal;
  const live = visBit(st.gen), next = visBit(st.gen ^ 1);
  j.waitForReaders(st);
  const batch = new EntryBatch(index);
  const write = (ik: Uint8Array, entry: Uint8Array) => batch.put(ik, entry) && batch.flush();
  for (const c of changes) {
    if (c.next) write(c.old ? altKey(c.ik) : c.ik, withVis(c.next, next));
    if (c.old) write(c.ik, withVis(c.old, live));
  }
  batch.flush();
  failpoint("flow.owner.staged");

  j.publish(st, masks, index);
  failpoint("flow.owner.committed");

  j.waitForReaders(st);
  for (const c of changes) if (c.next) write(c.ik, withVis(c.next, FlowVis.BOTH));
  batch.flush();
  deleteKeys(index, changes.filter((c) => !c.next).map((c) => c.ik));
  failpoint("flow.owner.settled");

  const standIns = changes.filter((c) => c.old && c.next).map((c) => altKey(c.ik));
  if (standIns.length === 0) return;
  j.waitForReaders(st);
  deleteKeys(index, standIns);
}
