/**
 * A match as Open vSwitch-style text, as dumps print it: `in_port` and `net` first,
 * then the shorthand that says the packet type, then each field the mask
 * has bits for, by what the packet is where fields share a member.
 *
 * @module
 */

import type { FlowKey } from "../maps/layouts.ts";
import { TunFlag } from "../maps/layouts.ts";
import type { FieldDef } from "./field_kinds.ts";
import { FIELDS } from "./fields.ts";
import type { Match, PortNames } from "./match.ts";
import { contextOf, holds, shorthandOf, SHORTHANDS } from "./prereqs.ts";

// Per mask, the fields that print something for it: a dump of a million
// flows under a few masks asks each field once per mask instead of once
// per flow.
const fieldsOfMask = new WeakMap<FlowKey, FieldDef[]>();
const NO_PORTS: PortNames = { number: () => undefined, name: () => undefined };
// in_port and net print first, before the shorthand: where the packet came
// from, then what it is.
const LEADING = FIELDS.slice(0, 2);
const PRINTERS = FIELDS.slice(2).filter((f) => f.format);

function maskedFields(mask: FlowKey): FieldDef[] {
  let list = fieldsOfMask.get(mask);
  if (!list) {
    // With the mask as the key every masked bit is set: a field prints
    // something exactly when the mask has bits for it. The V6 flag is
    // probed both ways, so both families' tunnel addresses are found.
    const probes: Match[] = [{ key: mask, mask }];
    if (mask.tun_flags & TunFlag.V6) {
      probes.push({ key: { ...mask, tun_flags: mask.tun_flags & ~TunFlag.V6 }, mask });
    }
    list = PRINTERS.filter((f) => probes.some((p) => f.format!(p, NO_PORTS) !== undefined));
    fieldsOfMask.set(mask, list);
  }
  return list;
}

/** The match as Open vSwitch-style text, shorthands first. */
export function formatMatch(m: Match, ports: PortNames): string {
  const parts: string[] = [];
  for (const f of LEADING) {
    const text = f.format!(m, ports);
    if (text) parts.push(text);
  }
  const c = contextOf(m);
  const short = shorthandOf(c);
  if (short) parts.push(short);
  const shortProto = short !== undefined && SHORTHANDS[short].proto !== undefined;
  for (const f of maskedFields(m.mask)) {
    // A shorthand already says the EtherType (and protocol).
    if (short && (f.name === "dl_type" || (shortProto && f.name === "nw_proto"))) continue;
    // Fields that share a member print by what the packet is.
    if (!holds(f.prereq, c)) continue;
    const text = f.format!(m, ports);
    if (text) parts.push(text);
  }
  return parts.join(",");
}
