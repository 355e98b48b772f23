/**
 * The agent's one way into a datapath. The applier makes the datapath's
 * fleet-owned part (ports, tunnels, neighbour entries, and the flows and
 * groups of its owner) what the agent wants, in one step that packets see
 * atomically (`apply --owner`), leaving flows and groups of other owners
 * alone.
 *
 * Each call is an {@link FleetUpdate}: the whole wanted state on demand,
 * and, when the applier can take one, only what changed since the last
 * call that succeeded. A join in a fleet of thousands of flows changes a
 * few of them and one group; a datapath that applies the difference does
 * work in proportion to the change.
 *
 * Healing: an update without a difference is a full resync, and the
 * applier must make its part exactly `state()`. The agent sends one first
 * (so a restarted agent, which remembers nothing of what it applied,
 * heals whatever an interrupted run left; on an unchanged datapath it is
 * a no-op) and after every call that threw (which may have applied
 * anything or nothing of its update). A difference is only ever relative
 * to a call that succeeded.
 *
 * @module
 */

import type { FleetDatapathState, FleetDelta } from "./derive.ts";

/** One call of an {@link Applier}: what the agent wants now. */
export interface FleetUpdate {
  /** The etcd revision the wanted state reflects. */
  revision: number;
  /**
   * What changed since the last call that succeeded: remove every
   * `removed` item, then add every `added` one (a flow whose actions
   * changed, or a group whose buckets did, is in both). Undefined for a
   * full resync.
   */
  delta?: FleetDelta;
  /**
   * The whole wanted state, sorted. Built on each call (it costs time in
   * proportion to the state), and valid only until the call returns.
   */
  state(): FleetDatapathState;
}

/** Applier makes a datapath's fleet-owned state what the agent wants. */
export interface Applier {
  /**
   * Applies `update`: its difference when it has one, else makes the
   * ports, tunnels, neighbour entries, and the flows and groups of this
   * applier's owner exactly `update.state()`. Packets see the old set or
   * the new one, never a mixture. Throws if it could not; the agent then
   * retries with a full resync.
   */
  apply(update: FleetUpdate): Promise<void>;
}

/**
 * StateFileApplier writes the state to a JSON file (replaced atomically by
 * a rename) instead of a datapath: for looking at what an agent would do,
 * and for agents run where no datapath is wanted. A file holds the whole
 * state, so it is written whole whatever changed, one item a line; the
 * text is encoded into a buffer kept from one call to the next, so that
 * writing thousands of flows on every change leaves next to no garbage.
 */
export class StateFileApplier implements Applier {
  #out = new ByteText();

  /** Writes to `path`. */
  constructor(readonly path: string) {}

  /** Writes the whole wanted state to the file. */
  async apply(update: FleetUpdate): Promise<void> {
    const out = this.#out;
    out.clear();
    let first = true;
    for (const [name, items] of Object.entries(update.state())) {
      out.add(first ? "{\n  " : ",\n  ").json(name).add(": [");
      first = false;
      (items as unknown[]).forEach((item, i) => out.add(i ? ",\n    " : "\n    ").json(item));
      out.add((items as unknown[]).length ? "\n  ]" : "]");
    }
    out.add("\n}\n");
    const tmp = `${this.path}.tmp`;
    await Deno.writeFile(tmp, out.bytes());
    await Deno.rename(tmp, this.path);
  }
}

/** Text encoded as UTF-8 into a buffer that grows as needed and is reused. */
class ByteText {
  #buf = new Uint8Array(64 * 1024);
  #len = 0;

  /** Empties it (keeping the buffer). */
  clear(): void {
    this.#len = 0;
  }

  /** The bytes so far; valid until the next change. */
  bytes(): Uint8Array {
    return this.#buf.subarray(0, this.#len);
  }

  /**
   * Appends `s`. ASCII (all a state holds but names) goes byte by byte:
   * an encoder would make a view and a result object for every piece.
   */
  add(s: string): this {
    if (this.#len + 3 * s.length > this.#buf.length) {
      const grown = new Uint8Array(2 * this.#buf.length + 3 * s.length);
      grown.set(this.bytes());
      this.#buf = grown;
    }
    const buf = this.#buf;
    let len = this.#len;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        len += new TextEncoder().encodeInto(s.slice(i), buf.subarray(len)).written;
        break;
      }
      buf[len++] = c;
    }
    this.#len = len;
    return this;
  }

  /** Appends `v` as JSON; a string that needs no escaping is not copied. */
  json(v: unknown): this {
    // deno-lint-ignore no-control-regex -- control characters are what JSON must escape
    if (typeof v !== "string" || /["\\\x00-\x1f]/.test(v)) return this.add(JSON.stringify(v));
    return this.add('"').add(v).add('"');
  }
}
