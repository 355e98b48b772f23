/**
 * The mask set: the masks the classifier searches, one hash lookup of the
 * flow index per mask, each with the highest priority of the flows under
 * it and how many there are. The datapath searches them in the order
 * stored, highest priority bound first, and stops as soon as no later
 * mask can beat its best match; {@link searchOrder} is that order.
 *
 * `wr_masks` holds two sets, one per table generation (`gen & 1` in the
 * configuration says which is live): a change that adds or drops a mask
 * writes the other set with the flow index it goes with, and the journal
 * makes both live with one write. Flow counts change in place.
 *
 * @module
 */

import { fieldOffsets, u32 } from "../../maps/codec.ts";
import { type FlowKey, maskCodec, maskSetCodec, MAX_MASKS } from "../../maps/layouts.ts";
import { encodeWith } from "../../maps/typed_map.ts";
import { type MaskShape, maskShape, sameBytes } from "./flow_set.ts";
import type { DatapathMaps } from "../pins.ts";
import { KEY_SIZE } from "./entry.ts";
import { FlowTableError } from "./error.ts";

/** A live mask: its shape and what the datapath knows of it. */
export interface LiveMask extends MaskShape {
  /** Its id in index keys. */
  id: number;
  /** The highest priority of a flow under it. */
  maxPriority: number;
  /** How many flows are under it. */
  flows: number;
  /** The mask as a flow key, once a reader needed it. */
  decoded?: FlowKey;
}

const M = fieldOffsets(maskCodec);
const MASKS_AT = fieldOffsets(maskSetCodec).masks;
const LE = true;

/** Refuses a table that needs `count` masks when the datapath searches fewer. */
export function checkMaskRoom(count: number): void {
  if (count > MAX_MASKS) {
    throw new FlowTableError(
      `the flows need ${count} masks; the datapath searches at most ${MAX_MASKS}`,
    );
  }
}

/**
 * The mask of `masks` whose bytes are `bytes`, or undefined. The few masks
 * are compared byte by byte: a flow installed at a time would otherwise
 * make and hash a string of its mask.
 */
export function findMask<M extends MaskShape>(
  masks: readonly M[],
  bytes: Uint8Array,
): M | undefined {
  for (const m of masks) if (sameBytes(m.bytes, bytes, KEY_SIZE)) return m;
  return undefined;
}

/** The mask set of generation `gen`. */
export function readMasks(maps: DatapathMaps, gen: number): LiveMask[] {
  const raw = maps.masks.raw.lookup(encodeWith(u32, gen));
  if (!raw) return [];
  const dv = new DataView(raw.buffer);
  const count = dv.getUint32(0, LE);
  const out: LiveMask[] = [];
  for (let i = 0; i < count; i++) {
    const at = MASKS_AT + i * maskCodec.size;
    out.push({
      ...maskShape(raw.slice(at + M.bits, at + M.bits + KEY_SIZE)),
      id: dv.getUint32(at + M.id, LE),
      maxPriority: dv.getUint16(at + M.max_priority, LE),
      flows: dv.getUint32(at + M.flows, LE),
    });
  }
  return out;
}

/** Writes `masks`, in their order, as the mask set of generation `gen`. */
export function writeMasks(maps: DatapathMaps, gen: number, masks: LiveMask[]): void {
  const raw = new Uint8Array(maskSetCodec.size);
  const dv = new DataView(raw.buffer);
  dv.setUint32(0, masks.length, LE);
  masks.forEach((m, i) => {
    const at = MASKS_AT + i * maskCodec.size;
    raw.set(m.bytes, at + M.bits);
    dv.setUint32(at + M.id, m.id, LE);
    dv.setUint16(at + M.max_priority, m.maxPriority, LE);
    dv.setUint32(at + M.flows, Math.max(m.flows, 0), LE);
  });
  maps.masks.raw.update(encodeWith(u32, gen), raw);
}

/** `masks` in the order the datapath searches them. */
export function searchOrder(masks: LiveMask[]): LiveMask[] {
  return [...masks].sort((a, b) => b.maxPriority - a.maxPriority || a.id - b.id);
}

/** The lowest id none of `masks` has (0 is no mask). */
export function nextMaskId(masks: { id: number }[]): number {
  const used = new Set(masks.map((m) => m.id));
  let id = 1;
  while (used.has(id)) id++;
  return id;
}

/** How one flow's change moves a mask: its flow's priority before and after (none: absent). */
export interface MaskMove {
  /** The mask's id. */
  maskId: number;
  /** The priority of the flow as installed, if it is. */
  was?: number;
  /** Its priority as it will be, if it stays or comes. */
  will?: number;
}

/**
 * The mask set after `moves`: `masks` and the `fresh` ones they need, flow
 * counts moved, priority bounds raised (never lowered: a bound may only be
 * too high), masks left without flows dropped.
 */
export function nextMasks(masks: LiveMask[], fresh: LiveMask[], moves: MaskMove[]): LiveMask[] {
  const byId = new Map([...masks, ...fresh].map((m) => [m.id, { ...m }]));
  for (const mv of moves) {
    const m = byId.get(mv.maskId)!;
    if (mv.was !== undefined) m.flows--;
    if (mv.will !== undefined) {
      m.flows++;
      m.maxPriority = Math.max(m.maxPriority, mv.will);
    }
  }
  return [...byId.values()].filter((m) => m.flows > 0);
}

/** `masks` by id, for resolving index keys. */
export function masksById(masks: LiveMask[]): Map<number, LiveMask> {
  return new Map(masks.map((m) => [m.id, m]));
}
