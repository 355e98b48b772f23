/**
 * A flow session: the datapath's lock held across many flow changes, so a
 * script can feed a change at a time without paying for the lock (and
 * reading the datapath's state again) each time.
 *
 * @module
 */

import type { FlowSpec } from "../flow_syntax.ts";
import type { AddResult, FlowFilter, OwnerName } from "../flow_table.ts";

/** What a session changes: the datapath's own flow methods. */
export interface SessionTarget {
  /** Adds flows. */
  addFlows(specs: FlowSpec[], options?: { owner?: OwnerName }): Promise<AddResult>;
  /** Changes a flow's actions. */
  modifyFlow(spec: FlowSpec, options?: { owner?: OwnerName }): Promise<number>;
  /** Deletes flows. */
  deleteFlows(filter: FlowFilter, strict: boolean): number;
}

/** The lock a session holds, and the side effects it left under way. */
export interface SessionHold extends Disposable {
  /**
   * Returns once the next hops of every remote the session's flows named
   * are seen to (they are, in the background, in batches); throws what
   * failed.
   */
  settled(): Promise<void>;
}

/**
 * FlowSession changes flows under a lock it holds until disposed. Each
 * flow change is done when its call returns; the next hops of new
 * remotes follow in the background, and `await using` (or
 * {@link end}) waits for them.
 */
export class FlowSession implements Disposable, AsyncDisposable {
  #target: SessionTarget | undefined;
  readonly #held: SessionHold;

  /** Changes `target`'s flows while `held` (the lock) lasts. */
  constructor(target: SessionTarget, held: SessionHold) {
    this.#target = target;
    this.#held = held;
  }

  #open(): SessionTarget {
    if (!this.#target) throw new RangeError("the session is closed");
    return this.#target;
  }

  /** Adds flows, all or nothing, `owner`'s if given (see `Datapath.addFlows`). */
  addFlows(specs: FlowSpec[], options: { owner?: OwnerName } = {}): Promise<AddResult> {
    return this.#open().addFlows(specs, options);
  }

  /** Changes the actions of the flow with exactly this match and priority. */
  modifyFlow(spec: FlowSpec, options: { owner?: OwnerName } = {}): Promise<number> {
    return this.#open().modifyFlow(spec, options);
  }

  /** Deletes flows (see `Datapath.deleteFlows`). */
  deleteFlows(filter: FlowFilter, strict: boolean): number {
    return this.#open().deleteFlows(filter, strict);
  }

  /** Releases the lock; later calls do nothing. */
  close(): void {
    if (!this.#target) return;
    this.#target = undefined;
    this.#held[Symbol.dispose]();
  }

  /**
   * Releases the lock, then waits until the next hops of the remotes the
   * session's flows named are seen to; throws what failed there.
   */
  async end(): Promise<void> {
    this.close();
    await this.#held.settled();
  }

  /** Same as `close()`, for `using`: the next hops still follow, unwaited for. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Same as `end()`, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.end();
  }
}
