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
 * @module
 */

import { appliedPath } from "../lock.ts";
import type { Config } from "../../maps/layouts.ts";
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
}

function current(maps: DatapathMaps, cfg: Config, digest: string): Applied {
  return {
    config: maps.config.raw.info.id,
    index: maps.flowIndexId(cfg.gen & 1),
    seq: String(cfg.seq),
    digest,
  };
}

/**
 * Whether the table is exactly what an apply of flows with digest
 * `digest` left, with nothing changed since (configuration `cfg`, as just
 * read).
 */
export function appliedAlready(maps: DatapathMaps, cfg: Config, digest: string): boolean {
  const dir = maps.pinDir;
  if (!dir) return false;
  let noted: Applied;
  try {
    noted = JSON.parse(Deno.readTextFileSync(appliedPath(dir)));
  } catch {
    // None yet, or unreadable: the full comparison decides.
    return false;
  }
  const now = current(maps, cfg, digest);
  return noted.config === now.config && noted.index === now.index && noted.seq === now.seq &&
    noted.digest === now.digest;
}

/**
 * Notes that flows with digest `digest` are the table now, as
 * configuration `cfg` (as the apply's commit left it) says. Best effort:
 * without the note, the next apply compares in full.
 */
export function noteApplied(maps: DatapathMaps, cfg: Config, digest: string): void {
  const dir = maps.pinDir;
  if (!dir) return;
  const path = appliedPath(dir);
  try {
    // Written aside and renamed: a reader sees the old note or the new one.
    Deno.writeTextFileSync(`${path}.new`, JSON.stringify(current(maps, cfg, digest)), {
      mode: 0o600,
    });
    Deno.renameSync(`${path}.new`, path);
  } catch {
    // A user allowed the lock but not the lock directory: no note, no shortcut.
  }
}
