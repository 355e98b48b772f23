/**
 * Owners of flows and groups. Every flow and group has one, in its entry:
 * the operator (owner id 0, unnamed), which is what `flow add`, `group
 * add` and `apply` give unless told otherwise, or a named owner (ids 1 to
 * `MAX_OWNERS - 1`), such as the fleet agent. An owner's `apply` replaces
 * its own flows and groups and no other's, and a flow with the match of
 * another owner's flow, or a group with the id of another owner's group,
 * is refused, so an agent and an operator never undo each other's work.
 *
 * Names live in `wr_owners`, by id. Each named owner's flows are also
 * listed in a set of its own, a hash map of their index keys pinned as
 * `maps/owned/<id>`, so that replacing them reads what they are, never the
 * whole table. A set may hold more keys than its owner has flows (a key
 * goes in before its flow is written and comes out after it is deleted),
 * never fewer; after a crash the journal's repair makes every set exact,
 * and an owner left without flows and groups gives its id back. The
 * operator's flows have no set: its `apply` walks the table anyway.
 * Groups need none: there are a few thousand at most, read in one pass.
 *
 * @module
 */

import { BpfMap } from "../../bpf/map.ts";
import { MapType } from "../../bpf/info.ts";
import { u32 } from "../../maps/codec.ts";
import { MAX_OWNERS } from "../../maps/layouts.ts";
import { encodeWith } from "../../maps/typed_map.ts";
import type { DatapathMaps } from "../pins.ts";
import { CHUNK, INDEX_KEY_SIZE } from "./entry.ts";
import { FlowTableError } from "./error.ts";
import { readLive } from "./group_state.ts";

/** The operator's owner id: flows added without an owner. */
export const OPERATOR = 0;

/** Bytes of an owner's name in `struct wr_owner`, its NUL padding included. */
const NAME_SIZE = 64;
const NAME = /^[A-Za-z0-9_.-]{1,63}$/;

/** Refuses an owner's name that is not 1 to 63 letters, digits, `_`, `.` or `-`. */
export function checkOwnerName(name: string): void {
  if (!NAME.test(name)) {
    throw new FlowTableError(
      `owner ${JSON.stringify(name)}: an owner's name is 1 to 63 letters, digits, "_", "." or "-"`,
    );
  }
}

/** Who owns a flow, as people read it: the name, or "" for the operator. */
export type OwnerName = string;

/** Whose a flow or group of owner `name` is, as an error names it. */
export function whose(name: OwnerName): string {
  return name === "" ? "the operator's (added without an owner)" : `owner "${name}"'s`;
}

/** Owners reads and changes the owner registry and each named owner's set of flows. */
export class Owners {
  readonly #maps: DatapathMaps;
  readonly #maxFlows: number;
  #names?: string[];
  readonly #sets = new Map<number, BpfMap>();

  /** Works on `maps`, whose flow table holds `maxFlows` flows. */
  constructor(maps: DatapathMaps, maxFlows: number) {
    this.#maps = maps;
    this.#maxFlows = maxFlows;
  }

  /** Every id's name ("" when free), read once. */
  #all(): string[] {
    if (this.#names) return this.#names;
    const names = new Array<string>(MAX_OWNERS).fill("");
    const dec = new TextDecoder();
    for (const c of this.#maps.owners.raw.lookupBatch(MAX_OWNERS)) {
      const ids = new Uint32Array(c.keys.buffer, c.keys.byteOffset, c.count);
      for (let i = 0; i < c.count; i++) {
        const raw = c.values.subarray(i * NAME_SIZE, (i + 1) * NAME_SIZE);
        const end = raw.indexOf(0);
        names[ids[i]] = dec.decode(raw.subarray(0, end < 0 ? NAME_SIZE : end));
      }
    }
    this.#names = names;
    return names;
  }

  /** The name of owner `id`: "" for the operator, `#id` for an id nobody holds. */
  name(id: number): OwnerName {
    if (id === OPERATOR) return "";
    return this.#all()[id] || `#${id}`;
  }

  /** Whose a flow or group of owner `id` is, as an error names it. */
  whose(id: number): string {
    return whose(this.name(id));
  }

  /** The id of the owner named `name` ("" is the operator), or undefined. */
  id(name: OwnerName): number | undefined {
    if (name === "") return OPERATOR;
    const i = this.#all().indexOf(name, 1);
    return i < 0 ? undefined : i;
  }

  /** The ids of every named owner. */
  named(): number[] {
    const out: number[] = [];
    this.#all().forEach((n, id) => n && id !== OPERATOR && out.push(id));
    return out;
  }

  /**
   * The id of owner `name`, registered (with an empty set of flows) if it
   * is new. The caller holds the lock and has marked its change begun.
   */
  ensure(name: OwnerName): number {
    const known = this.id(name);
    if (known !== undefined) return known;
    checkOwnerName(name);
    const names = this.#all();
    const id = names.indexOf("", 1);
    if (id < 0) {
      throw new FlowTableError(
        `owner "${name}": all ${MAX_OWNERS - 1} owner ids are taken (flows of ${
          MAX_OWNERS - 1
        } owners exist)`,
      );
    }
    this.set(id, true);
    const raw = new Uint8Array(NAME_SIZE);
    new TextEncoder().encodeInto(name, raw);
    this.#maps.owners.raw.update(encodeWith(u32, id), raw);
    names[id] = name;
    return id;
  }

  /** Owner `id`'s set of flows (their index keys); with `create`, made if missing. */
  set(id: number, create = false): BpfMap | undefined {
    let set = this.#sets.get(id);
    if (!set) {
      set = this.#maps.ownedSet(id, create ? () => this.#create() : undefined);
      if (set) this.#sets.set(id, set);
    }
    return set;
  }

  #create(): BpfMap {
    return BpfMap.create({
      type: MapType.HASH,
      name: "wr_owned",
      keySize: INDEX_KEY_SIZE,
      valueSize: 1,
      maxEntries: this.#maxFlows,
      flags: 1, // BPF_F_NO_PREALLOC: memory only for the flows the owner has
    });
  }

  /** Every index key in owner `id`'s set. */
  keys(id: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    const set = this.set(id);
    if (!set) return out;
    for (const c of set.lookupBatch(CHUNK)) {
      for (let i = 0; i < c.count; i++) {
        out.push(c.keys.slice(i * INDEX_KEY_SIZE, (i + 1) * INDEX_KEY_SIZE));
      }
    }
    return out;
  }

  /** Whether owner `id`'s set lists no flow. */
  isEmpty(id: number): boolean {
    return this.set(id)?.nextKey(null) === undefined;
  }

  /** Puts `keys` into owner `id`'s set, before their flows are written. */
  addKeys(id: number, keys: Uint8Array[]): void {
    const set = this.set(id, true)!;
    for (let i = 0; i < keys.length; i += CHUNK) {
      const part = keys.slice(i, i + CHUNK);
      const buf = new Uint8Array(part.length * INDEX_KEY_SIZE);
      part.forEach((k, j) => buf.set(k, j * INDEX_KEY_SIZE));
      set.updateBatch(buf, new Uint8Array(part.length), part.length);
    }
  }

  /** Takes `keys` out of owner `id`'s set, once their flows are gone. */
  removeKeys(id: number, keys: Uint8Array[]): void {
    const set = this.set(id);
    if (set) { for (const k of keys) set.delete(k); }
  }

  /** Forgets owner `id`, whose last flow went: its name and its set. */
  release(id: number): void {
    this.#sets.get(id)?.close();
    this.#sets.delete(id);
    this.#maps.dropOwnedSet(id);
    this.#maps.owners.raw.update(encodeWith(u32, id), new Uint8Array(NAME_SIZE));
    if (this.#names) this.#names[id] = "";
  }

  /** Forgets owner `id` if it has neither flows nor groups left. */
  releaseIfIdle(id: number): void {
    if (id === OPERATOR || !this.isEmpty(id)) return;
    for (const g of readLive(this.#maps).values()) if (g.entry.owner === id) return;
    this.release(id);
  }

  /** Closes the sets it opened. */
  close(): void {
    for (const s of this.#sets.values()) s.close();
    this.#sets.clear();
  }
}
