/**
 * What the operator's last `apply` made the table, so that the same apply
 * again is recognised without reading the table: the digest of the
 * compiled flows it installed ({@link FlowSet.digest}) and the datapath
 * as it left it (its configuration map, its live flow index and the
 * change counter), in a file beside the lock file.
 *
 * Every change of the table or of what its flows compile against (a flow
 * added or deleted, an owner's apply, a session, a group, a port) moves
 * the change counter, and a crashed writer's repair moves it again; a new
 * `up` has a new configuration map, and each full apply a new flow index.
 * So while all three are as noted, the table is exactly what that apply
 * left, and flows with the same digest would make it again. Anything else
 * takes the full comparison. The note is written only after the apply's
 * commit: one that dies before leaves the old note, which no longer
 * matches the counter.
 *
 * An apply read from text (a state file, a list of flow texts) also notes
 * the digest of that text ({@link SourceApplied}): the same text again,
 * with the datapath as noted, is recognised before a single flow is
 * parsed or compiled. A note that is not what warren writes is ignored,
 * with a warning, and the apply compares in full.
 *
 * @module
 */

import type { Addr } from "../addr.ts";
import { appliedPath } from "../lock.ts";
import { type Config, ConfigFlag } from "../../maps/layouts.ts";
import type { DatapathMaps } from "../pins.ts";

/** The datapath as an apply left it, and the digest of what it installed. */
interface Applied {
  /** The configuration map's id: a new `up` makes a new one. */
  config: number;
  /** The live flow index's map id. */
  index: number;
  /** The change counter, as text. */
  seq: string;
  /** The compiled flows' digest. */
  digest: string;
  /** What the flows were read from, when they were read from text. */
  source?: NotedSource;
}

/** {@link SourceApplied} as the note holds it. */
interface NotedSource {
  digest: string;
  flows: number;
  /** `4:` or `6:` and the address's 16 bytes in hex. */
  remotes: string[];
}

/**
 * What the last apply made, the datapath unchanged since: flows with
 * digest `digest` (their {@link FlowSet.digest}) would make the table
 * again, and so would the text `source` describes.
 */
export interface LastApplied {
  /** The compiled flows' digest. */
  digest: string;
  /** What the flows were read from, when they were read from text. */
  source?: SourceApplied;
}

/** The text an apply's flows were read from, and what they made. */
export interface SourceApplied {
  /**
   * The digest of the text and of everything its meaning depends on
   * besides the datapath (warren's version, the map layout).
   */
  digest: string;
  /** How many flows the text made. */
  flows: number;
  /** The tunnel remotes they send to. */
  remotes: Addr[];
}

function current(maps: DatapathMaps, cfg: Config, digest: string): Applied {
  return {
    config: maps.config.raw.info.id,
    index: maps.flowIndexId(cfg.gen & 1),
    seq: String(cfg.seq),
    digest,
  };
}

const REMOTE = /^[46]:[0-9a-f]{32}$/;

/** Whether `v`, read from the note's file, is a note as {@link noteApplied} writes it. */
function isApplied(v: unknown): v is Applied {
  const a = v as Applied;
  if (typeof a !== "object" || a === null) return false;
  if (!Number.isSafeInteger(a.config) || !Number.isSafeInteger(a.index)) return false;
  if (typeof a.seq !== "string" || typeof a.digest !== "string") return false;
  const s = a.source;
  return s === undefined || (typeof s === "object" && s !== null &&
    typeof s.digest === "string" && Number.isSafeInteger(s.flows) && s.flows >= 0 &&
    Array.isArray(s.remotes) && s.remotes.every((r) => typeof r === "string" && REMOTE.test(r)));
}

/**
 * What the last apply noted, if it says the datapath is still as that
 * apply left it (configuration `cfg`, as just read).
 */
export function lastApplied(maps: DatapathMaps, cfg: Config): LastApplied | undefined {
  const dir = maps.pinDir;
  if (!dir) return undefined;
  let text;
  try {
    text = Deno.readTextFileSync(appliedPath(dir));
  } catch {
    // None yet, or unreadable: the full comparison decides.
    return undefined;
  }
  let note: unknown;
  try {
    note = JSON.parse(text);
  } catch {
    note = undefined;
  }
  if (!isApplied(note)) {
    console.warn(`warren: ${appliedPath(dir)} is not a note of an apply: ignored`);
    return undefined;
  }
  // Mid-session, the counter moves only at the session's end.
  if (cfg.flags & ConfigFlag.WRITING) return undefined;
  const now = current(maps, cfg, "");
  if (note.config !== now.config || note.index !== now.index || note.seq !== now.seq) {
    return undefined;
  }
  const s = note.source;
  const remotes = (s?.remotes ?? []).map((r) => ({
    v6: r[0] === "6",
    bytes: Uint8Array.from(r.slice(2).match(/../g)!, (h) => parseInt(h, 16)),
  }));
  return { digest: note.digest, source: s && { ...s, remotes } };
}

function noteOf(s: SourceApplied): NotedSource {
  const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return { ...s, remotes: s.remotes.map((a) => `${a.v6 ? 6 : 4}:${hex(a.bytes)}`) };
}

/**
 * Notes that flows with digest `digest` (read from text as `source` says,
 * if they were) are the table now, as configuration `cfg` (as the apply's
 * commit left it) says. Best effort: without the note, the next apply
 * compares in full.
 */
export function noteApplied(
  maps: DatapathMaps,
  cfg: Config,
  digest: string,
  source?: SourceApplied,
): void {
  const dir = maps.pinDir;
  if (!dir) return;
  const path = appliedPath(dir);
  try {
    // Written aside and renamed: a reader sees the old note or the new one.
    Deno.writeTextFileSync(
      `${path}.new`,
      JSON.stringify({ ...current(maps, cfg, digest), source: source && noteOf(source) }),
      { mode: 0o600 },
    );
    Deno.renameSync(`${path}.new`, path);
  } catch {
    // A user allowed the lock but not the lock directory: no note, no shortcut.
  }
}

/**
 * Notes, as {@link noteApplied}, that the table is `flows` flows (digest
 * `digest`, sending to `remotes`), read from the text with digest
 * `source` if given, as configuration `cfg` (as the apply left it) says.
 */
export function noteDone(
  maps: DatapathMaps,
  cfg: Config,
  digest: string,
  flows: number,
  remotes: Addr[],
  source?: string,
): void {
  // Under a session the commit waits for its end: the counter moves again then.
  if (cfg.flags & ConfigFlag.WRITING) return;
  const read = source ? { digest: source, flows, remotes } : undefined;
  noteApplied(maps, cfg, digest, read);
}
