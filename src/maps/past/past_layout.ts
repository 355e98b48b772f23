/**
 * What a past layout module gives: the codec of each struct a reader of
 * that version's pins needs (see `mod.ts`).
 *
 * @module
 */

import type { StructCodec } from "../codec.ts";

/** A past layout version's struct codecs. */
export interface PastLayout {
  /** Its `WR_LAYOUT_VERSION`. */
  readonly version: number;
  /** `struct wr_config`. */
  readonly config: StructCodec<Record<string, unknown>>;
  /** `struct wr_port`. */
  readonly port: StructCodec<Record<string, unknown>>;
  /** `struct wr_port_info`. */
  readonly portInfo: StructCodec<Record<string, unknown>>;
  /** `struct wr_endpoint_key`. */
  readonly endpointKey: StructCodec<Record<string, unknown>>;
  /** `struct wr_endpoint`. */
  readonly endpoint: StructCodec<Record<string, unknown>>;
  /** `struct wr_tun_key`. */
  readonly tunKey: StructCodec<Record<string, unknown>>;
  /** `struct wr_mask_set`. */
  readonly maskSet: StructCodec<Record<string, unknown>>;
  /** `struct wr_flow_index_key`. */
  readonly flowIndexKey: StructCodec<Record<string, unknown>>;
  /** `struct wr_flow_entry`. */
  readonly flowEntry: StructCodec<Record<string, unknown>>;
  /** `struct wr_flow_stats`. */
  readonly flowStats: StructCodec<Record<string, unknown>>;
  /** `struct wr_port_stats`. */
  readonly portStats: StructCodec<Record<string, unknown>>;
  /** Slots of `wr_stats`; a slot means what it means now. */
  readonly statSlots: number;
}
