/**
 * The codecs of every struct in `bpf/include/warren.h`, field for field.
 * Opening a map checks these against the kernel's BTF (see layout.ts).
 *
 * @module
 */

import { struct, u64, type ValueOf } from "./codec.ts";

/** `struct wr_counter`: packets and bytes seen by one hook on one CPU. */
export const counterCodec = struct("wr_counter", {
  packets: u64,
  bytes: u64,
});

/** A {@link counterCodec} value. */
export type Counter = ValueOf<typeof counterCodec>;
