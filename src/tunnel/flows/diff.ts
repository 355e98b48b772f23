/**
 * What an apply of flows is given and tells: the flows as specs or texts,
 * its options, its progress and its diff. Apart from `apply.ts` so that
 * the ways an apply is made (`owned.ts`, `changes.ts`) share them without
 * importing it.
 *
 * @module
 */

import type { Addr } from "../addr.ts";
import type { FlowSpec } from "../flow_syntax.ts";
import type { OwnerName } from "./owners.ts";
import type { InstalledFlow } from "./queries.ts";

/** What `apply` changes (or, in a dry run, would change). */
export interface FlowDiff {
  /** How many flows are new. */
  added: number;
  /** How many change their actions or cookie (counters kept). */
  modified: number;
  /** How many go. */
  removed: number;
  /** How many stay as they are. */
  unchanged: number;
  /** The first new flows (at most `listLimit`). */
  add: FlowSpec[];
  /** The first modified flows, as they will be. */
  modify: FlowSpec[];
  /** The first flows that go. */
  remove: InstalledFlow[];
  /** Every tunnel remote the new table sends to. */
  remotes: Addr[];
}

/**
 * A flow given as its text: parsed only when the last apply did not
 * compile the same text in the same context (see {@link ApplyOptions.context}).
 */
export interface FlowByText {
  /** The flow, in flow syntax. */
  text: string;
  /** The flow, parsed (and checked as its source requires). */
  parse(): FlowSpec;
}

/** `specs` as specs, those given as text parsed as they are read. */
export function* specsOf(specs: Iterable<FlowSpec | FlowByText>): Generator<FlowSpec> {
  for (const s of specs) yield "text" in s ? s.parse() : s;
}

/** Progress of long work: which phase, how far. */
export interface Progress {
  /** "compile" (reading flows), "compare" (with the installed table), "install". */
  phase: "compile" | "compare" | "install";
  /** Flows done. */
  done: number;
  /** Flows in all, when known. */
  total?: number;
}

/** Options of {@link apply}. */
export interface ApplyOptions {
  /** Only say what would change. */
  dryRun?: boolean;
  /** Called every 65 536 flows of each phase. */
  progress?: (p: Progress) => void;
  /** How many flows of each kind the diff lists (default 1000). */
  listLimit?: number;
  /** Groups that will exist by the time the flows are installed (a dry run's). */
  comingGroups?: ReadonlySet<number>;
  /**
   * Whose flows `specs` are: "" (the default) for the operator's, or a
   * named owner's (1 to 63 letters, digits, `_`, `.`, `-`). Either way the
   * other owners' flows are left as they are.
   */
  owner?: OwnerName;
  /**
   * The digest of the text `specs` are parsed from, as they are read (and
   * of everything else its meaning depends on but the datapath: see
   * `applyState`). The operator's apply notes it, and when the same digest
   * comes again with the datapath unchanged since, `specs` are not read
   * at all: the table is the wanted one already.
   */
  source?: string;
  /**
   * The digest of everything but their text that flows given as text
   * compile against (their ports, the groups they may name, warren's
   * version, the map layout). With it, the operator's apply notes what
   * each text compiled to, and takes a text the last apply compiled in
   * the same context as it compiled it, without parsing it again.
   */
  context?: string;
}

/**
 * How many flows `apply` has compiled in this process: what a test reads
 * to see which applies compiled nothing.
 */
export const applyStats = { compiled: 0 };
