/**
 * The journal: what the flow table knows of the kernel between calls, and
 * the protocol that keeps its bookkeeping right when a writer dies.
 *
 * What is read from the kernel (the live generation's masks, the id
 * bitmap, the tunnel key reference counts, the open flow index) is kept in
 * a {@link TableState} while the configuration's change counter says
 * nobody else wrote in between.
 *
 * A writer that dies midway (SIGKILL, a power cut) can leave the live
 * table right but its bookkeeping behind: ids or key references taken and
 * not written back, counters not yet cleared. Every change therefore calls
 * {@link Journal.begin} before its first write, which sets
 * `WR_CFG_WRITING` in the configuration, and {@link Journal.commit} after
 * its last, which writes the bookkeeping back and clears it; the next
 * writer that finds the mark set repairs the bookkeeping from the live
 * table before doing anything ({@link Journal.forWrite}). An owner's apply
 * (`commit.ts`) may also have died with entries staged for a generation
 * that never went live, or with a generation live whose entries were not
 * yet settled: the repair finishes what the live generation sees and
 * drops the rest. Every write the flow table makes to the configuration
 * is made here: the mark, its clearing, and the generation switch that
 * makes a new table live ({@link Journal.publish}).
 *
 * @module
 */

import type { BpfMap } from "../../bpf/map.ts";
import { type Config, ConfigFlag } from "../../maps/layouts.ts";
import { IdBitmap, U32List } from "../ids.ts";
import type { PortLookup } from "../compile.ts";
import type { DatapathMaps } from "../pins.ts";
import { TunKeySlots } from "../tun_keys.ts";
import { FlowVis } from "../../maps/layouts.ts";
import { zeroCounters } from "./counters.ts";
import { altKey, checkIndexLayout, scan, visBit, withVis } from "./entry.ts";
import { countGroupKeys, readLive } from "./group_state.ts";
import { FlowTableError } from "./error.ts";
import { byteString } from "./flow_set.ts";
import { checkMaskRoom, type LiveMask, readMasks, searchOrder, writeMasks } from "./masks.ts";
import { OPERATOR, Owners } from "./owners.ts";

/** What the table knows of the kernel, valid while the change counter is `cfg.seq`. */
export interface TableState {
  /** The configuration as last read or written. */
  cfg: Config;
  /** The live generation (0 or 1). */
  gen: number;
  /** The live flow index, once opened (see {@link Journal.index}). */
  index?: BpfMap;
  /** The live masks, in search order. */
  masks: LiveMask[];
  /** The flow id bitmap. */
  flowIds: IdBitmap;
  /** The tunnel key slots and their references. */
  slots: TunKeySlots;
  /** Owners' names and their sets of flows. */
  owners: Owners;
}

/** What every part of the flow table works with. */
export interface TableContext {
  /** The datapath's maps. */
  readonly maps: DatapathMaps;
  /** Ports by name and number, for compiling and decoding actions. */
  readonly ports: PortLookup;
  /** The table's state and the writing protocol. */
  readonly journal: Journal;
}

/** Refuses `count` new flows when fewer flow ids are free. */
export function checkFlowRoom(st: TableState, count: number, free = st.flowIds.free()): void {
  if (count > free) {
    throw new FlowTableError(
      `the flow table is full: ${count} new flows, room for ${free} (warren up --max-flows sets the size)`,
    );
  }
}

/** Refuses `count` new tunnel keys when fewer slots are free. */
export function checkKeyRoom(st: TableState, count: number): void {
  if (count > st.slots.free()) {
    throw new FlowTableError(
      `${count} new tunnel keys, room for ${st.slots.free()} (warren up --max-tun-keys sets how many)`,
    );
  }
}

/** Journal keeps the table's state and every change's mark, commit and repair. */
export class Journal {
  readonly #maps: DatapathMaps;
  #state?: TableState;
  // Under a session (the lock held across changes), the mark of the first
  // change stays set and the bookkeeping is written back once, at the
  // end: a change costs its own entry's writes, not the journal's.
  #holding = false;
  #marked = false;

  /** Works on `maps`. */
  constructor(maps: DatapathMaps) {
    this.#maps = maps;
  }

  /** The change counter as this journal last wrote or read it. */
  get lastSeq(): bigint | undefined {
    return this.#state?.cfg.seq;
  }

  /** The state for reading: kept while nobody else wrote, else read again. */
  load(): TableState {
    // Nobody else writes while a session holds the lock.
    if (this.#holding && this.#state) return this.#state;
    const cfg = this.#maps.config.read();
    const gen = cfg.gen & 1;
    const st = this.#state;
    if (st && st.cfg.seq === cfg.seq && st.gen === gen) {
      st.cfg = cfg;
      return st;
    }
    st?.index?.close();
    st?.owners.close();
    this.#state = {
      cfg,
      gen,
      masks: readMasks(this.#maps, gen),
      flowIds: new IdBitmap(this.#maps.flowIds.raw),
      slots: new TunKeySlots(this.#maps),
      owners: new Owners(this.#maps, cfg.max_flows),
    };
    return this.#state;
  }

  /**
   * The state for a change: when a writer died midway (its mark is still
   * set), the bookkeeping is repaired first.
   */
  forWrite(): TableState {
    const st = this.load();
    // A session's own mark is no dead writer's.
    if (st.cfg.flags & ConfigFlag.WRITING && !this.#marked) this.#repair(st);
    return st;
  }

  /**
   * Holds changes open until {@link release}: the caller holds the lock.
   * A crash meanwhile leaves the mark set, and the next writer repairs the
   * bookkeeping from the table, as after any change cut short.
   */
  hold(): void {
    this.#holding = true;
  }

  /** Writes back what the changes held open left, and marks them done. */
  release(): void {
    if (!this.#holding) return;
    this.#holding = false;
    const st = this.#state;
    if (!this.#marked || !st) return;
    this.#marked = false;
    this.settleMasks(st, this.index(st));
    this.commit(st);
  }

  /** The live flow index, opened once per state (callers do not close it). */
  index(st: TableState): BpfMap {
    if (st.index) return st.index;
    const id = this.#maps.flowIndexId(st.gen);
    if (!id) throw new FlowTableError("the datapath has no flow table (run warren up again)");
    st.index = checkIndexLayout(this.#maps.openFlowIndex(id));
    return st.index;
  }

  /** Marks a change under way, before its first write. */
  begin(st: TableState): void {
    if (this.#marked) return;
    this.#marked = this.#holding;
    st.cfg = this.#maps.config.bump((c) => ({ flags: c.flags | ConfigFlag.WRITING }));
  }

  /**
   * Makes `masks` (put in search order here) and `index` the live
   * generation in one write: packets see the old table or the new one,
   * never a mixture.
   */
  publish(st: TableState, masks: LiveMask[], index: BpfMap): void {
    checkMaskRoom(masks.length);
    const next = st.gen ^ 1;
    const sorted = searchOrder(masks);
    writeMasks(this.#maps, next, sorted);
    if (this.#maps.flowIndexId(next) !== index.info.id) this.#maps.setFlowIndex(next, index);
    st.cfg = this.#maps.config.bump(() => ({ gen: next }));
    st.gen = next;
    st.masks = sorted;
    if (st.index && st.index.info.id !== index.info.id) {
      st.index.close();
      st.index = undefined;
    }
  }

  /**
   * Returns once every packet that was being classified when it was called
   * is done, and has both generations name the live index. An update of a
   * map of maps returns only after an RCU grace period (the kernel's
   * `maybe_wait_bpf_programs()`), and programs run under RCU; the kernel's
   * own tests wait for programs this way (`kern_sync_rcu()` in
   * tools/testing/selftests/bpf). Some 10 ms.
   */
  waitForReaders(st: TableState): void {
    this.#maps.setFlowIndex(st.gen ^ 1, this.index(st));
  }

  /**
   * Writes the masks' flow counts back; a mask left without flows, which
   * would cost every packet a lookup for nothing, goes (a new generation).
   */
  settleMasks(st: TableState, index: BpfMap): void {
    if (this.#marked) return;
    const left = st.masks.filter((m) => m.flows > 0);
    if (left.length < st.masks.length) this.publish(st, left, index);
    else writeMasks(this.#maps, st.gen, st.masks);
  }

  /** Writes back ids and reference counts and marks the change done. */
  commit(st: TableState): void {
    if (this.#marked) return;
    st.flowIds.flush();
    st.slots.flush();
    st.cfg = this.#maps.config.bump((c) => ({ flags: c.flags & ~ConfigFlag.WRITING }));
  }

  /** Forgets what was read from the kernel and closes the maps it opened. */
  close(): void {
    this.#state?.index?.close();
    this.#state?.owners.close();
    this.#state = undefined;
    // What a session held open is repaired by the next change.
    this.#marked = false;
  }

  /**
   * Repairs the table after a change failed midway, whatever it had
   * written, and forgets what was read; the caller then rethrows.
   */
  recover(): void {
    this.close();
    this.#repair(this.load());
  }

  /**
   * Makes the table agree with its live generation again after a writer
   * died midway. The flows are what the live generation sees: entries it
   * sees become seen by both generations (a staged replacement is copied
   * over its flow's entry); entries it does not see, staged replacements
   * and entries under no live mask (which no packet can reach) are deleted
   * once no packet reads them. The bookkeeping is then recomputed from the
   * flows: the id bitmap and the key references; counters of ids that no
   * flow holds are cleared (a delete may have died before clearing them);
   * the tunnel key content index forgets slots no flow uses;
   * mask flow counts, masks left without flows dropped; each named
   * owner's set of flows, an owner left without flows forgotten.
   */
  #repair(st: TableState): void {
    const index = this.index(st);
    const bit = visBit(st.gen);
    const masks = new Map(st.masks.map((m) => [m.id, { ...m, flows: 0 }]));
    const ids = new U32List();
    const counts = new Uint32Array(st.slots.capacity);
    const owned = new Map<number, Uint8Array[]>();
    const settle: [Uint8Array, Uint8Array][] = [];
    const doomed = new Map<string, Uint8Array>();
    for (const e of scan(index)) {
      const mask = masks.get(e.maskId);
      const ik = e.indexKey();
      if (!mask || !(e.vis & bit)) {
        doomed.set(byteString(ik), ik);
        continue;
      }
      const flow = altKey(ik, 0);
      if (e.alt) {
        settle.push([flow, withVis(e.entry(), FlowVis.BOTH)]);
        doomed.set(byteString(ik), ik);
      } else if (e.vis !== FlowVis.BOTH) settle.push([flow, withVis(e.entry(), FlowVis.BOTH)]);
      mask.flows++;
      ids.push(e.flowId);
      e.eachSlot((s) => s < counts.length && counts[s]++);
      if (e.owner !== OPERATOR) {
        if (!owned.has(e.owner)) owned.set(e.owner, []);
        owned.get(e.owner)!.push(flow);
      }
    }
    for (const [ik, entry] of settle) {
      index.update(ik, entry);
      doomed.delete(byteString(ik));
    }
    if (doomed.size > 0) this.waitForReaders(st);
    for (const ik of doomed.values()) index.delete(ik);
    this.#repairOwners(st.owners, owned);
    countGroupKeys(this.#maps, counts);
    const held = new Uint8Array(st.flowIds.capacity);
    for (const id of ids.view()) held[id] = 1;
    const stale: number[] = [];
    for (let id = 0; id < held.length; id++) if (!held[id] && st.flowIds.has(id)) stale.push(id);
    zeroCounters(this.#maps, stale);
    st.flowIds.rebuild(ids.view());
    st.slots.recount(counts);
    st.slots.prune();
    st.masks = st.masks.map((m) => masks.get(m.id)!);
    this.settleMasks(st, index);
    // A group change that died may have let go of buckets packets walked.
    this.#maps.waitForPrograms();
    this.commit(st);
  }

  /**
   * Makes each named owner's set exactly `owned` (its flows' index keys);
   * an owner with neither flows nor groups is forgotten.
   */
  #repairOwners(owners: Owners, owned: Map<number, Uint8Array[]>): void {
    const groupOwners = new Set([...readLive(this.#maps).values()].map((g) => g.entry.owner));
    for (const id of new Set([...owners.named(), ...owned.keys()])) {
      const want = owned.get(id) ?? [];
      if (want.length === 0) {
        if (groupOwners.has(id)) owners.removeKeys(id, owners.keys(id));
        else owners.release(id);
        continue;
      }
      const have = owners.keys(id);
      const haveSet = new Set(have.map(byteString));
      const wanted = new Set(want.map(byteString));
      owners.addKeys(id, want.filter((k) => !haveSet.has(byteString(k))));
      owners.removeKeys(id, have.filter((k) => !wanted.has(byteString(k))));
    }
  }
}
