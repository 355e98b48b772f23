/**
 * What changed since the last commit, kept as it happens, so that handing a
 * difference on costs what changed and never a comparison of everything:
 * the agent keeps its wanted state in journals and gives the applier what
 * changed since its last successful apply (see `applier.ts`).
 *
 * @module
 */

/**
 * Items added and removed. A consumer removes first, then adds, so an item
 * replaced by another under the same identity (a flow whose action
 * changed, a group whose buckets did) is in both.
 */
export interface Diff<T> {
  /** Items that are new. */
  added: T[];
  /** Items that are gone. */
  removed: T[];
}

/** An empty difference. */
export function emptyDiff<T>(): Diff<T> {
  return { added: [], removed: [] };
}

/**
 * Journal is a keyed collection that remembers, for each key changed since
 * the last {@link Journal.commit}, what the key held at that commit. A key
 * changed and changed back is no difference.
 */
export class Journal<T> {
  #now = new Map<string, T>();
  #before = new Map<string, T | undefined>();
  #same: (a: T, b: T) => boolean;

  /** Creates an empty journal; `same` says when two values are one (default: `===`). */
  constructor(same: (a: T, b: T) => boolean = (a, b) => a === b) {
    this.#same = same;
  }

  /** How many keys it holds. */
  get size(): number {
    return this.#now.size;
  }

  /** The value of `key`. */
  get(key: string): T | undefined {
    return this.#now.get(key);
  }

  /** Every key. */
  keys(): IterableIterator<string> {
    return this.#now.keys();
  }

  /** Every value. */
  values(): IterableIterator<T> {
    return this.#now.values();
  }

  /** Sets `key` to `value`, or deletes it when `value` is undefined. */
  set(key: string, value: T | undefined): void {
    const old = this.#now.get(key);
    if (old === value) return;
    if (!this.#before.has(key)) this.#before.set(key, old);
    if (value === undefined) this.#now.delete(key);
    else this.#now.set(key, value);
  }

  /** Adds what changed since the last commit to `into`. */
  diffInto(into: Diff<T>): void {
    for (const [key, was] of this.#before) {
      const now = this.#now.get(key);
      if (was !== undefined && now !== undefined && this.#same(was, now)) continue;
      if (was !== undefined) into.removed.push(was);
      if (now !== undefined) into.added.push(now);
    }
  }

  /** Takes what it holds now as the new starting point. */
  commit(): void {
    this.#before.clear();
  }
}

/**
 * Counted is a journal of items that several holders may want (a tunnel
 * port, a neighbour entry): an item is there while anyone wants it.
 */
export class Counted<T> {
  /** The items, journaled. */
  readonly journal: Journal<T>;
  #counts = new Map<string, number>();

  /** Creates an empty collection; `same` as for {@link Journal}. */
  constructor(same?: (a: T, b: T) => boolean) {
    this.journal = new Journal(same);
  }

  /** One more holder wants `value` under `key`. */
  add(key: string, value: T): void {
    const n = this.#counts.get(key) ?? 0;
    this.#counts.set(key, n + 1);
    if (!n) this.journal.set(key, value);
  }

  /** One holder of `key` no longer wants it. */
  remove(key: string): void {
    const n = this.#counts.get(key)! - 1;
    if (n) return void this.#counts.set(key, n);
    this.#counts.delete(key);
    this.journal.set(key, undefined);
  }
}
