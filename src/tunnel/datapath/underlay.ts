/**
 * The underlay's side of the host: forwarding and neighbours. The
 * datapath's FIB lookups answer only on a forwarding device, so `up` turns
 * forwarding on for the endpoint families (and records what it changed, so
 * `down` turns back off only that); and the next hops of the remotes that
 * ports and flows send to are kept as managed neighbour entries, so that
 * frames the FIB cannot resolve (ARP) still find a MAC.
 *
 * @module
 */

import { ifname } from "../../bpf/netif.ts";
import { type Config, FwdSaved } from "../../maps/layouts.ts";
import { type Addr, formatAddr } from "../addr.ts";
import type { ConfigMap } from "../config.ts";
import { dropManagedNeighbors, keepNeighbors, setForwarding } from "../host.ts";
import { PortError } from "../port.ts";

/** The underlay's name, or a clear error when it is gone. */
export function underlayName(config: ConfigMap): string {
  const cfg = config.read();
  const name = ifname(cfg.underlay_ifindex);
  if (!name) throw new PortError(`the underlay (ifindex ${cfg.underlay_ifindex}) is gone`);
  return name;
}

/**
 * Turns forwarding on on `dev` for the families of `ips`, noting in the
 * settings which ones warren turned on.
 */
export function enableForwarding(config: ConfigMap, dev: string, ips: Addr[]): void {
  const was = config.read().fwd_saved;
  let saved = was;
  for (const [family, bit] of [[4, FwdSaved.V4], [6, FwdSaved.V6]] as const) {
    if (!ips.some((a) => a.v6 === (family === 6))) continue;
    if (!setForwarding(dev, family, true)) saved |= bit;
  }
  if (saved !== was) config.update(() => ({ fwd_saved: saved }));
}

/**
 * Undoes what `up` did to the underlay of settings `cfg`, if it still
 * exists: the forwarding it turned on, the neighbours it manages.
 */
export async function releaseUnderlay(cfg: Config): Promise<void> {
  const dev = ifname(cfg.underlay_ifindex);
  if (!dev) return;
  if (cfg.fwd_saved & FwdSaved.V4) setForwarding(dev, 4, false);
  if (cfg.fwd_saved & FwdSaved.V6) setForwarding(dev, 6, false);
  await dropManagedNeighbors(dev);
}

// The remotes of compiled tunnel keys are one Addr per key (see Remotes),
// handed over again on every install that names them: their text is made once.
const addrText = new WeakMap<Addr, string>();

function textOf(a: Addr): string {
  let text = addrText.get(a);
  if (text === undefined) addrText.set(a, text = formatAddr(a.bytes, a.v6));
  return text;
}

/**
 * Neighbors keeps the next hops of remotes resolved (see keepNeighbors).
 * Each remote is seen to once per object: a script that adds flows one at
 * a time pays for the `ip` calls once, not per flow. While batching (a
 * session), new remotes are seen to in the background, together: a
 * session whose every install names a new remote pays for one `ip` run
 * per batch, not one per install (two processes each, some milliseconds).
 */
export class Neighbors {
  readonly #config: ConfigMap;
  readonly #kept = new Set<string>();
  #batching = false;
  #pending: Addr[] = [];
  #running?: Promise<void>;
  #failed?: unknown;

  /** For the underlay named in `config`. */
  constructor(config: ConfigMap) {
    this.#config = config;
  }

  /**
   * Keeps the next hops of `remotes` resolved: done when what it returns
   * settles, or while batching, under way (see {@link settled}). Returns
   * nothing when there is nothing to wait for: a session's install then
   * waits for nothing, not even a promise of nothing.
   */
  keep(remotes: Addr[]): Promise<void> | undefined {
    this.#rethrow();
    const fresh = remotes.filter((a) => !this.#kept.has(textOf(a)));
    if (fresh.length === 0) return undefined;
    if (!this.#batching) return this.#keepNow(fresh);
    // Counted as kept now, so a remote waits in one batch only.
    for (const a of fresh) this.#kept.add(textOf(a));
    this.#pending.push(...fresh);
    this.#running ??= this.#drain();
    return undefined;
  }

  async #keepNow(fresh: Addr[]): Promise<void> {
    await keepNeighbors(underlayName(this.#config), fresh);
    for (const a of fresh) this.#kept.add(textOf(a));
  }

  /** Starts (true) or stops (false) seeing to new remotes in the background. */
  batch(on: boolean): void {
    this.#batching = on;
  }

  /** Returns once every remote handed over so far is seen to; throws what failed. */
  async settled(): Promise<void> {
    await this.#running;
    this.#rethrow();
  }

  // Runs batches until none is waiting: what arrives during one `ip` run
  // goes in the next.
  async #drain(): Promise<void> {
    try {
      while (this.#pending.length > 0) {
        const batch = this.#pending;
        this.#pending = [];
        try {
          await keepNeighbors(underlayName(this.#config), batch);
        } catch (err) {
          this.#failed ??= err;
          for (const a of batch) this.#kept.delete(textOf(a));
        }
      }
    } finally {
      this.#running = undefined;
    }
  }

  #rethrow(): void {
    const err = this.#failed;
    this.#failed = undefined;
    if (err !== undefined) throw err;
  }
}
