/**
 * Layouts of pinned maps that older warrens wrote, one module per version,
 * so that a datapath they left can still be read: exported as a state file
 * or migrated by `up`. Adding a version is adding its module and a line in
 * {@link PAST_LAYOUTS}; nothing that reads them changes.
 *
 * A past layout is data only: the codec of each struct the reader needs,
 * as that version's `warren.h` laid it out. The maps are the same ones
 * under the same names in every version (a version that adds a map, as 4
 * added the groups, simply has nothing there for an older one). The
 * reader upgrades every value to the current struct's shape, fields a
 * version did not have being zero, and hands it to the current model's
 * decoders.
 *
 * @module
 */

import type { PastLayout } from "./past_layout.ts";
import { v3 } from "./v3.ts";

export type { PastLayout };

/** Every past layout this warren reads, by version. */
export const PAST_LAYOUTS: ReadonlyMap<number, PastLayout> = new Map([[v3.version, v3]]);
