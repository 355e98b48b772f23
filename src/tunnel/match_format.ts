/**
 * A match as Open vSwitch-style text, as dumps print it: `in_port` and `net` first,
 * then the shorthand that says the packet type, then each field the mask
 * has bits for, by what the packet is where fields share a member.
 *
 * @module
 */

import { copyFlowKey, type FlowKey, TunFlag } from "../maps/layouts.ts";
import type { FieldDef } from "./field_kinds.ts";
import { FIELDS } from "./fields.ts";
import type { Match, PortNames } from "./match.ts";
import { type Context, contextOf, holds, shorthandOf, SHORTHANDS } from "./prereqs.ts";

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
      // A copy, not a spread: a parsed key's byte fields are accessors a spread leaves out.
      const v4 = copyFlowKey(mask);
      v4.tun_flags &= ~TunFlag.V6;
      probes.push({ key: v4, mask });
    }
    list = PRINTERS.filter((f) => probes.some((p) => f.format!(p, NO_PORTS) !== undefined));
    fieldsOfMask.set(mask, list);
  }
  return list;
}

/** What a match under one mask, of one packet type, prints after its leading fields. */
interface Plan {
  /** The shorthand that says the packet type, if any. */
  short: string | undefined;
  /** The fields that print, in order. */
  fields: FieldDef[];
}

// Per mask, per packet type (EtherType, protocol, ICMPv6 type and whether
// its code is 0: all that decides what prints), the plan: a million
// flows under a few masks ask which fields print once per kind of packet.
const plansOfMask = new WeakMap<FlowKey, Map<number, Plan>>();
// The plan asked for last, its mask and kind of packet: in a dump, flow
// after flow is of one mask and kind, and two comparisons cost less than
// the two lookups (the kind is not a small integer).
let last: { mask: FlowKey; kind: number; plan: Plan } | undefined;

function planOf(mask: FlowKey, c: Context): Plan {
  const kind = (((c.eth ?? 0x10000) * 512 + (c.proto ?? 256)) * 512 + (c.icmpType ?? 256)) * 2 +
    (c.icmpCode === 0 ? 1 : 0);
  if (last?.mask === mask && last.kind === kind) return last.plan;
  let plans = plansOfMask.get(mask);
  if (!plans) plansOfMask.set(mask, plans = new Map());
  let plan = plans.get(kind);
  if (!plan) {
    const short = shorthandOf(c);
    const shortProto = short !== undefined && SHORTHANDS[short].proto !== undefined;
    const fields = maskedFields(mask).filter((f) =>
      // A shorthand already says the EtherType (and protocol); fields
      // that share a member print by what the packet is.
      !(short && (f.name === "dl_type" || (shortProto && f.name === "nw_proto"))) &&
      holds(f.prereq, c)
    );
    plans.set(kind, plan = { short, fields });
  }
  last = { mask, kind, plan };
  return plan;
}

/** The match as Open vSwitch-style text, shorthands first. */
export function formatMatch(m: Match, ports: PortNames): string {
  // Parts joined as they come, without a closure or an array per match.
  let text = "";
  for (const f of LEADING) text = joined(text, f.format!(m, ports));
  const plan = planOf(m.mask, contextOf(m));
  text = joined(text, plan.short);
  for (const f of plan.fields) text = joined(text, f.format!(m, ports));
  return text;
}

/** `text` and `part` joined by a comma, either left out when empty. */
function joined(text: string, part: string | undefined): string {
  if (!part) return text;
  return text ? `${text},${part}` : part;
}
