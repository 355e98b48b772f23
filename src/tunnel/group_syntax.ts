/**
 * Replication groups written the way Open vSwitch users write them for
 * `ovs-ofctl add-group`:
 *
 * ```text
 * group_id=42,type=all,bucket=output:web1,bucket=set_tunnel(id=42,dst=192.0.2.2),output:vx0
 * ```
 *
 * A bucket's actions run from its `bucket=` to the next one (`actions=`
 * right after `bucket=` is Open vSwitch's longer spelling). warren's
 * groups are `type=all`: a copy of the packet to every bucket. An error
 * names the token and its column, as in flows.
 *
 * @module
 */

import { MatchError, type PortNames } from "./match.ts";
import { type ActionSpec, formatActions, parseAction, parseGroupId } from "./flow_actions.ts";
import { FlowSyntaxError, SEPARATORS, split, type Token } from "./flow_tokens.ts";

/** A group: its id and its buckets, each an action list as written. */
export interface GroupSpec {
  /** The group id flows name in `group:ID`. */
  id: number;
  /** The buckets, each an action list. */
  buckets: ActionSpec[][];
}

/** Open vSwitch's group words warren has no use for, and why. */
const ABSENT: Readonly<Record<string, string>> = {
  selection_method: "warren's groups are type=all, which selects nothing",
  fields: "warren's groups are type=all, which hashes nothing",
  command_bucket_id: "warren changes a group whole (group mod), not bucket by bucket",
};

/** Bucket parameters Open vSwitch takes before `actions=`. */
const BUCKET_PARAMETER = /^(bucket_id|weight|watch_port|watch_group)[=:]/;

/** Reads a group: `group_id=ID,type=all,bucket=ACTIONS,…`. */
export function parseGroup(text: string): GroupSpec {
  let id: number | undefined;
  let type: string | undefined;
  const buckets: ActionSpec[][] = [];
  const tokens = split(text.trim(), 0, SEPARATORS);
  for (const token of tokens) {
    const fail = (why: string) => new FlowSyntaxError(token.text, token.at, why);
    const eq = token.text.indexOf("=");
    const name = eq < 0 ? token.text : token.text.slice(0, eq);
    const value = token.text.slice(eq + 1);
    try {
      if (name === "bucket" && eq > 0) {
        buckets.push([]);
        let rest: Token = { text: value, at: token.at + 7 };
        if (rest.text.startsWith("actions=")) {
          rest = { text: rest.text.slice(8), at: rest.at + 8 };
        } else if (BUCKET_PARAMETER.test(rest.text)) {
          throw new MatchError(
            "warren's buckets take actions only: no bucket_id, weight or watch_port (type=all " +
              "sends to every bucket, in order)",
          );
        }
        if (rest.text) buckets[buckets.length - 1].push(parseAction(rest));
      } else if (name === "group_id" && eq > 0) {
        id = parseGroupId(value);
      } else if (name === "type" && eq > 0) {
        if (value !== "all") {
          throw new MatchError(
            `warren's groups are type=all (a copy to every bucket); ${value} is not in its datapath`,
          );
        }
        type = value;
      } else if (Object.hasOwn(ABSENT, name) && eq > 0) {
        throw new MatchError(`${name}: ${ABSENT[name]}`);
      } else if (buckets.length) {
        buckets[buckets.length - 1].push(parseAction(token));
      } else {
        throw new MatchError("not a group field (group_id=ID, type=all, bucket=ACTIONS)");
      }
    } catch (err) {
      if (err instanceof MatchError) throw fail(err.message);
      throw err;
    }
  }
  const end = text.trim().length;
  if (id === undefined) throw new FlowSyntaxError(text.trim(), 0, "a group needs group_id=ID");
  if (type === undefined) {
    throw new FlowSyntaxError(text.trim(), end, "a group needs type=all (its only type in warren)");
  }
  buckets.forEach((b, i) => {
    if (b.length === 0) {
      throw new FlowSyntaxError(text.trim(), end, `bucket ${i + 1} has no actions`);
    }
  });
  return { id, buckets };
}

/**
 * parseGroup, for a group read from somewhere the user must be pointed
 * to: an error starts with `where` (a file's line, a state file's
 * `groups[i]`), if given.
 */
export function parseGroupAt(text: string, where?: string): GroupSpec {
  try {
    return parseGroup(text);
  } catch (err) {
    if (where !== undefined && err instanceof Error) err.message = `${where}: ${err.message}`;
    throw err;
  }
}

/** A group as text, the inverse of parseGroup, ports by name. */
export function formatGroup(g: GroupSpec, ports: PortNames): string {
  return [
    `group_id=${g.id}`,
    "type=all",
    ...g.buckets.map((b) => `bucket=${formatActions(b, ports)}`),
  ].join(",");
}
