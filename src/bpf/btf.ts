/**
 * Reading BPF Type Format: the compiler's record of every struct and enum
 * in an object, which the kernel keeps beside each map. warren reads it to
 * check that a TypeScript codec and the C struct agree before touching a
 * map; the tests read an object's own, without loading it, to check every
 * codec and constant TypeScript copies from `bpf/include/warren.h`.
 *
 * @module
 */

import { Errno } from "./errno.ts";
import { check } from "./errors.ts";
import { cstr, errno, libbpf, readCString } from "./ffi.ts";

const KIND_INT = 1;
const KIND_ARRAY = 3;
const KIND_STRUCT = 4;
const KIND_UNION = 5;
const KIND_ENUM = 6;
const KIND_TYPEDEF = 8;
const KIND_VOLATILE = 9;
const KIND_CONST = 10;
const KIND_RESTRICT = 11;
const KIND_DATASEC = 15;
const KIND_TYPE_TAG = 18;
const KIND_ENUM64 = 19;

/** One member of a struct, as BTF records it. */
export interface BtfMember {
  /** The member's name. */
  name: string;
  /** Byte offset from the start of the struct. */
  offset: number;
  /** Size in bytes (of the whole array, for arrays). */
  size: number;
  /** Bitfield width in bits, or 0 for a whole member. */
  bits: number;
}

/** A struct or union's layout, or a scalar's size. */
export interface BtfLayout {
  /** The type's name ("" for anonymous or scalar types). */
  name: string;
  /** `struct`, `union`, `int`, `enum`, `array` or `other`. */
  kind: "struct" | "union" | "int" | "enum" | "array" | "other";
  /** Size in bytes. */
  size: number;
  /** Members, for structs and unions. */
  members: BtfMember[];
}

/** Btf is a parsed BTF object: an object's own, or one loaded from the kernel. */
export class Btf implements Disposable {
  #ptr: Deno.PointerValue;
  readonly #owned: boolean;

  private constructor(ptr: Deno.PointerValue, owned: boolean) {
    this.#ptr = ptr;
    this.#owned = owned;
  }

  /** Loads the kernel's BTF object `id` (a map's `btfId`). */
  static fromKernel(id: number): Btf {
    const ptr = libbpf().btf__load_from_kernel_by_id(id);
    if (ptr === null) {
      const e = errno();
      check(`load BTF id ${id} from the kernel`, () => -(e || Errno.EINVAL));
    }
    return new Btf(ptr, true);
  }

  /** Borrows a `struct btf *` that something else owns and frees. */
  static borrow(ptr: Deno.PointerValue): Btf {
    return new Btf(ptr, false);
  }

  /** The layout of type `id`, after typedefs and qualifiers. */
  layout(id: number): BtfLayout {
    const resolved = this.#skipQualifiers(id);
    const t = this.#type(resolved);
    const kind = (t.info >>> 24) & 0x1f;
    const name = this.#name(t.nameOff);
    const size = this.#size(resolved);
    if (kind === KIND_STRUCT || kind === KIND_UNION) {
      const vlen = t.info & 0xffff;
      const kflag = (t.info >>> 31) === 1;
      const view = new Deno.UnsafePointerView(t.ptr);
      const members: BtfMember[] = [];
      for (let i = 0; i < vlen; i++) {
        const base = 12 + i * 12;
        const memberName = this.#name(view.getUint32(base));
        const type = view.getUint32(base + 4);
        const raw = view.getUint32(base + 8);
        const bits = kflag ? raw >>> 24 : 0;
        const bitOffset = kflag ? raw & 0xffffff : raw;
        members.push({
          name: memberName,
          offset: Math.floor(bitOffset / 8),
          size: bits ? Math.ceil(bits / 8) : this.#size(type),
          bits,
        });
      }
      return { name, kind: kind === KIND_STRUCT ? "struct" : "union", size, members };
    }
    const simple = kind === KIND_INT
      ? "int"
      : kind === KIND_ENUM || kind === KIND_ENUM64
      ? "enum"
      : kind === KIND_ARRAY
      ? "array"
      : "other";
    return { name, kind: simple, size, members: [] };
  }

  /**
   * Where global variable `name` lives in data section `section` (such as
   * ".rodata"): its byte offset and size, or undefined if it is not there.
   */
  variable(section: string, name: string): { offset: number; size: number } | undefined {
    return this.variables(section).find((v) => v.name === name);
  }

  /** The global variables of data section `section`, in BTF's order. */
  variables(section: string): { name: string; offset: number; size: number }[] {
    const id = this.#find(section, KIND_DATASEC);
    if (id === undefined) return [];
    const sec = this.#type(id);
    const view = new Deno.UnsafePointerView(sec.ptr);
    // struct btf_var_secinfo { __u32 type, offset, size; } follows the type.
    return Array.from({ length: sec.info & 0xffff }, (_, i) => {
      const base = 12 + i * 12;
      return {
        name: this.#name(this.#type(view.getUint32(base)).nameOff),
        offset: view.getUint32(base + 4),
        size: view.getUint32(base + 8),
      };
    });
  }

  /** The layout of `struct name`, or undefined if the BTF has none. */
  struct(name: string): BtfLayout | undefined {
    const id = this.#find(name, KIND_STRUCT);
    return id === undefined ? undefined : this.layout(id);
  }

  /**
   * The enumerators of `enum name` and their values, or undefined if the
   * BTF has no such enum (it records only the enums something uses).
   */
  enumerators(name: string): Map<string, number> | undefined {
    const id = this.#find(name, KIND_ENUM) ?? this.#find(name, KIND_ENUM64);
    if (id === undefined) return undefined;
    const t = this.#type(id);
    const view = new Deno.UnsafePointerView(t.ptr);
    const wide = ((t.info >>> 24) & 0x1f) === KIND_ENUM64;
    // kind_flag set: the values are signed.
    const signed = (t.info >>> 31) === 1;
    const out = new Map<string, number>();
    for (let i = 0; i < (t.info & 0xffff); i++) {
      // struct btf_enum { __u32 name_off; __s32 val; } or, for ENUM64,
      // struct btf_enum64 { __u32 name_off, val_lo32, val_hi32; }.
      const base = 12 + i * (wide ? 12 : 8);
      const enumerator = this.#name(view.getUint32(base));
      let value: number;
      if (wide) {
        const raw = (BigInt(view.getUint32(base + 8)) << 32n) | BigInt(view.getUint32(base + 4));
        value = Number(signed ? BigInt.asIntN(64, raw) : raw);
        if (!Number.isSafeInteger(value)) {
          throw new RangeError(`enum ${name}: ${enumerator} does not fit a JavaScript number`);
        }
      } else {
        value = signed ? view.getInt32(base + 4) : view.getUint32(base + 4);
      }
      out.set(enumerator, value);
    }
    return out;
  }

  /** Frees the BTF if this object owns it; later calls do nothing. */
  close(): void {
    if (this.#owned && this.#ptr !== null) libbpf().btf__free(this.#ptr);
    this.#ptr = null;
  }

  /** Same as `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #find(name: string, kind: number): number | undefined {
    if (this.#ptr === null) throw new Error("BTF used after close");
    const id = libbpf().btf__find_by_name_kind(this.#ptr, cstr(name), kind);
    return id < 0 ? undefined : id;
  }

  #type(id: number): { ptr: NonNullable<Deno.PointerValue>; nameOff: number; info: number } {
    if (this.#ptr === null) throw new Error("BTF used after close");
    const ptr = libbpf().btf__type_by_id(this.#ptr, id);
    if (ptr === null) throw new Error(`BTF has no type id ${id}`);
    const view = new Deno.UnsafePointerView(ptr);
    return { ptr, nameOff: view.getUint32(0), info: view.getUint32(4) };
  }

  #skipQualifiers(id: number): number {
    for (let hops = 0; hops < 32; hops++) {
      const t = this.#type(id);
      const kind = (t.info >>> 24) & 0x1f;
      if (
        kind !== KIND_TYPEDEF && kind !== KIND_VOLATILE && kind !== KIND_CONST &&
        kind !== KIND_RESTRICT && kind !== KIND_TYPE_TAG
      ) return id;
      id = new Deno.UnsafePointerView(t.ptr).getUint32(8);
    }
    throw new Error(`BTF type ${id}: qualifier chain too long`);
  }

  #size(id: number): number {
    const size = Number(libbpf().btf__resolve_size(this.#ptr, id));
    if (size < 0) throw new Error(`BTF type ${id} has no size`);
    return size;
  }

  #name(offset: number): string {
    return readCString(libbpf().btf__name_by_offset(this.#ptr, offset));
  }
}
