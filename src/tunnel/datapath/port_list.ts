/**
 * The ports as one `Datapath` object knows them: read from `wr_ports` and
 * `wr_port_info` in one batch and kept until the change counter says
 * someone changed them (see `changes.ts`). Flows name ports through it.
 *
 * @module
 */

import { ifname } from "../../bpf/netif.ts";
import { fieldOffsets } from "../../maps/codec.ts";
import { MAX_PORTS, portCodec, PortKind } from "../../maps/layouts.ts";
import { decodeWith } from "../../maps/typed_map.ts";
import type { PortLookup } from "../compile.ts";
import type { PortNames } from "../match.ts";
import type { DatapathMaps } from "../pins.ts";
import { decodePort, type LocalPort, type Port } from "../port.ts";

/** Where a port entry says what kind of port it is. */
const KIND_AT = fieldOffsets(portCodec).kind;

/** Every port in `maps`, by number. */
export function readPorts(maps: DatapathMaps): Port[] {
  const ports: Port[] = [];
  // Every slot is read in one batch, but only the few in use decoded:
  // this runs before every change, a flow added alone included.
  const codec = maps.ports.value;
  for (const c of maps.ports.raw.lookupBatch(MAX_PORTS)) {
    const keys = new DataView(c.keys.buffer, c.keys.byteOffset, c.keys.byteLength);
    for (let i = 0; i < c.count; i++) {
      if (c.values[i * codec.size + KIND_AT] === PortKind.NONE) continue;
      const n = keys.getUint32(i * 4, true);
      const entry = decodeWith(codec, c.values, i * codec.size);
      const info = maps.portInfo.get(n);
      const p = info && decodePort(n, entry, info);
      if (p) ports.push(p);
    }
  }
  return ports.sort((a, b) => a.number - b.number);
}

/**
 * Whether local port `port`'s device still exists (a port outlives its
 * device until deleted).
 */
export function devicePresent(maps: DatapathMaps, port: LocalPort): boolean {
  return ifname(maps.ports.get(port.number)?.ifindex ?? 0) === port.device;
}

/** PortList is the ports as last read. */
export class PortList {
  readonly #maps: DatapathMaps;
  #ports: Port[] = [];
  // By name and by number: a dump of a million flows names a port per flow.
  #byName = new Map<string, Port>();
  // An array: compiling a million flows looks a port up for each (a Map's
  // hash lookup 17-48 ns in a microbenchmark, loaded; an index 3-27).
  #byNumber: (Port | undefined)[] = [];
  readonly #names: PortNames = {
    number: (name) => this.byName(name)?.number,
    name: (n) => this.byNumber(n)?.name,
  };

  /** Reads the ports of `maps`. */
  constructor(maps: DatapathMaps) {
    this.#maps = maps;
    this.reload();
  }

  /** Reads the ports again. */
  reload(): void {
    this.#ports = readPorts(this.#maps);
    // Reversed: the first of the list wins, as a search would find it.
    this.#byName = new Map(this.#ports.toReversed().map((p) => [p.name, p]));
    this.#byNumber = [];
    for (const p of this.#ports.toReversed()) this.#byNumber[p.number] = p;
  }

  /** Every port, by number. */
  all(): Port[] {
    return [...this.#ports];
  }

  /** The port named `name`. */
  byName(name: string): Port | undefined {
    return this.#byName.get(name);
  }

  /** Port number `n`. */
  byNumber(n: number): Port | undefined {
    return Number.isInteger(n) ? this.#byNumber[n] : undefined;
  }

  /** Ports by name and number, for compiling flows. */
  lookup(): PortLookup {
    return { byName: (name) => this.byName(name), byNumber: (n) => this.byNumber(n) };
  }

  /** Port names and numbers, for parsing and printing flows. */
  names(): PortNames {
    return this.#names;
  }
}
