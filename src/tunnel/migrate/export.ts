/**
 * A datapath's whole configuration as a state file `apply` accepts: the
 * escape hatch when a datapath cannot be migrated, and the description a
 * migration builds the new datapath from. Reads the current layout through
 * {@link Datapath} and every past one warren knows through its layout
 * module; a layout from a newer warren is refused by name.
 *
 * @module
 */

import { LAYOUT_VERSION } from "../../maps/layouts.ts";
import { PAST_LAYOUTS } from "../../maps/past/mod.ts";
import type { DesiredPort, DesiredState, DesiredTunnel } from "../apply.ts";
import { namesOf, type PortLookup } from "../compile.ts";
import { Datapath, type PortSpec } from "../datapath.ts";
import { formatFlow } from "../flow_syntax.ts";
import type { OwnerName } from "../flows/owners.ts";
import { formatGroup } from "../group_syntax.ts";
import { pinnedLayoutVersion } from "../pins.ts";
import { type Port, tunnelOptions } from "../port.ts";
import { type Configuration, readPast } from "./read_past.ts";

/** The configuration of the datapath `dp` (the current layout). */
export function configurationOf(dp: Datapath): Configuration {
  return {
    version: LAYOUT_VERSION,
    config: dp.maps.config.read(),
    localIps: dp.localIps(),
    ports: dp.ports(),
    groups: dp.groups().map(({ id, buckets, owner }) => ({ id, buckets, owner })),
    flows: dp.dumpFlows(),
  };
}

/**
 * The configuration of the datapath pinned under `pinDir`, whichever
 * layout version this warren knows it was pinned with.
 */
export function readConfiguration(pinDir: string): Configuration {
  const version = Datapath.exists(pinDir) ? pinnedLayoutVersion(pinDir) : LAYOUT_VERSION;
  const layout = PAST_LAYOUTS.get(version);
  if (layout) return readPast(pinDir, layout);
  // No datapath, or one of a newer warren: the same error as every other command's.
  using dp = Datapath.open(pinDir);
  return configurationOf(dp);
}

/** Port `p` as `upsertPort` takes it, number included; what was left at its default left out. */
export function portSpecOf(p: Port): PortSpec {
  if (p.kind === "tunnel") {
    return {
      kind: "tunnel",
      name: p.name,
      proto: p.proto,
      options: tunnelOptions(p),
      number: p.number,
    };
  }
  return {
    kind: "local",
    name: p.name,
    device: p.device,
    ...p.xdp ? { xdp: true } : {},
    ...p.net ? { net: p.net } : {},
    number: p.number,
  };
}

/** Ports by name and number. */
export function portLookup(ports: Port[]): PortLookup {
  return {
    byName: (name) => ports.find((p) => p.name === name),
    byNumber: (n) => ports.find((p) => p.number === n),
  };
}

/**
 * `c` as a state file: ports, tunnels, and the groups and flows of `owner`
 * (default the operator's, ""), each as `apply` takes it (`apply --owner`
 * for a named owner's). A section with nothing in it is left out, which
 * says the same to `apply` and lets a warren that predates the section
 * read the file.
 */
export function stateOf(c: Configuration, owner: OwnerName = ""): DesiredState {
  const names = namesOf(portLookup(c.ports));
  const state: Required<DesiredState> & { flows: string[] } = {
    ports: [],
    tunnels: [],
    groups: [],
    flows: [],
  };
  for (const p of c.ports) {
    const spec = portSpecOf(p);
    const { kind: _, number: __, ...desired } = spec;
    if (spec.kind === "local") state.ports.push(desired as DesiredPort);
    else state.tunnels.push(desired as DesiredTunnel);
  }
  state.groups = c.groups.filter((g) => g.owner === owner).map((g) => formatGroup(g, names));
  state.flows = c.flows.filter((f) => f.owner === owner).map((f) => formatFlow(f, names));
  return Object.fromEntries(Object.entries(state).filter(([, list]) => list.length));
}
