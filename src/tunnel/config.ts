/**
 * `wr_config`, the datapath-wide settings, written through one owner.
 *
 * The map holds one whole `struct wr_config`, while each writer changes a
 * few fields of it (the flow table its generation and writing mark, `up`
 * its attachment flags, the endpoints their source addresses): every
 * change is therefore a read-modify-write of entry 0, done here and
 * nowhere else, by callers that hold the datapath lock.
 *
 * `seq` is the change counter. Processes cache what they read from the
 * pins (the ports, the flow table's masks, ids and key references) for as
 * long as it stays the same; a change that others must see goes through
 * {@link ConfigMap.bump}, which adds one to it.
 *
 * @module
 */

import type { BpfMap } from "../bpf/map.ts";
import { u32 } from "../maps/codec.ts";
import { type Config, configCodec } from "../maps/layouts.ts";
import { TypedMap } from "../maps/typed_map.ts";

/** ConfigMap reads and changes the one entry of `wr_config`. */
export class ConfigMap {
  /** The map underneath. */
  readonly raw: BpfMap;
  readonly #map: TypedMap<number, Config>;

  /** Wraps `raw`, checking its layout. */
  constructor(raw: BpfMap) {
    this.raw = raw;
    this.#map = new TypedMap(raw, u32, configCodec);
  }

  /** The settings as they are now. */
  read(): Config {
    const c = this.#map.get(0);
    if (!c) throw new Error("wr_config has no entry 0");
    return c;
  }

  /**
   * Changes the fields `change` returns (given the settings as they are),
   * keeping every other; returns the settings as written.
   */
  update(change: (cfg: Config) => Partial<Config>): Config {
    const cfg = this.read();
    const next = { ...cfg, ...change(cfg) };
    this.#map.set(0, next);
    return next;
  }

  /** Same as {@link update}, and counts the change (`seq` + 1) for every cache of the pins. */
  bump(change: (cfg: Config) => Partial<Config> = () => ({})): Config {
    return this.update((cfg) => ({ ...change(cfg), seq: cfg.seq + 1n }));
  }

  /** Writes the whole entry: a datapath's first settings. */
  create(cfg: Config): void {
    this.#map.set(0, cfg);
  }
}
