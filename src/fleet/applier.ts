/**
 * The agent's one way into a datapath. The agent derives a complete
 * {@link FleetDatapathState} and hands it over whole; the applier makes the
 * datapath's fleet-owned part exactly that, in one step that packets see
 * atomically (`apply --owner`), leaving flows and groups of other owners
 * alone. Because each call carries the whole wanted state, a call that was
 * interrupted (a crash, a failpoint) is healed by the next one, and the
 * agent needs no memory of what it applied before a restart: a restarted
 * agent's first call is a no-op on an unchanged datapath.
 *
 * @module
 */

import type { FleetDatapathState } from "./derive.ts";

/** Applier makes a datapath's fleet-owned state exactly what it is given. */
export interface Applier {
  /**
   * Makes the ports, tunnels, neighbour entries, and the flows and groups
   * of this applier's owner exactly `state`; packets see the old set or the
   * new one, never a mixture. Throws if nothing could be applied; the agent
   * retries with the next state.
   */
  apply(state: FleetDatapathState): Promise<void>;
}

/**
 * StateFileApplier writes the state to a JSON file (replaced atomically by
 * a rename) instead of a datapath: for looking at what an agent would do,
 * and for agents run where no datapath is wanted.
 */
export class StateFileApplier implements Applier {
  /** Writes to `path`. */
  constructor(readonly path: string) {}

  /** Writes `state` to the file. */
  async apply(state: FleetDatapathState): Promise<void> {
    const tmp = `${this.path}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(state, null, 2) + "\n");
    await Deno.rename(tmp, this.path);
  }
}
