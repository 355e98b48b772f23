/**
 * libbpf's `*_opts` structs, built in JavaScript memory.
 *
 * libbpf wants `sz` set in every options struct: it is the struct's size in
 * the libbpf version the caller was written against (1.1 here), which newer
 * libbpf versions accept as "the caller knows these fields only".
 *
 * @module
 */

/** A field write: byte offset, width and value. */
export type OptsField =
  | [offset: number, kind: "u32" | "i32", value: number]
  | [offset: number, kind: "u64", value: bigint]
  | [offset: number, kind: "ptr", value: Deno.PointerValue];

/** An options struct of `size` bytes with `sz` set and the given fields. */
export function opts(size: number, ...fields: OptsField[]): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, BigInt(size), true);
  for (const [offset, kind, value] of fields) {
    switch (kind) {
      case "u32":
        view.setUint32(offset, value, true);
        break;
      case "i32":
        view.setInt32(offset, value, true);
        break;
      case "u64":
        view.setBigUint64(offset, value, true);
        break;
      case "ptr":
        view.setBigUint64(offset, BigInt(Deno.UnsafePointer.value(value)), true);
        break;
    }
  }
  return bytes;
}

/** The address of JavaScript-owned memory, for pointer fields. */
export function addressOf(bytes: Uint8Array<ArrayBuffer>): Deno.PointerValue {
  return Deno.UnsafePointer.of(bytes);
}
