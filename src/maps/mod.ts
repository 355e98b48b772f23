/**
 * Typed BPF maps and the codecs of warren's shared structs.
 *
 * @module
 */

export * from "./codec.ts";
export * from "./layout.ts";
export * from "./layouts.ts";
export * from "./names.ts";
export * from "./typed_map.ts";
