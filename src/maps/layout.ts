/**
 * Checking a codec against the kernel's record of a map's key or value type,
 * so a drift between `bpf/include/warren.h` and `src/maps/layouts.ts` fails
 * loudly when the map is opened instead of corrupting data silently.
 *
 * @module
 */

import { Btf, type BtfLayout } from "../bpf/btf.ts";
import { BpfError, LayoutError } from "../bpf/errors.ts";
import type { BpfMap } from "../bpf/map.ts";
import type { Codec, StructCodec } from "./codec.ts";

function isStruct(codec: Codec<unknown>): codec is StructCodec<unknown> {
  return "fields" in codec;
}

/** Every difference between `codec` and the BTF `layout`, as sentences. */
export function layoutDifferences(codec: Codec<unknown>, layout: BtfLayout): string[] {
  const problems: string[] = [];
  if (codec.size !== layout.size) {
    problems.push(`size is ${layout.size} bytes in the kernel, ${codec.size} in TypeScript`);
  }
  if (!isStruct(codec)) {
    if (layout.kind === "struct" || layout.kind === "union") {
      problems.push(`the kernel has struct ${layout.name}, TypeScript a ${codec.label}`);
    }
    return problems;
  }
  if (layout.kind !== "struct") {
    problems.push(`the kernel has a ${layout.kind}, TypeScript struct ${codec.name}`);
    return problems;
  }
  if (layout.name !== codec.name) {
    problems.push(`the kernel's struct is ${layout.name}, TypeScript's ${codec.name}`);
  }
  const count = Math.max(codec.fields.length, layout.members.length);
  for (let i = 0; i < count; i++) {
    const ts = codec.fields[i];
    const c = layout.members[i];
    if (!ts) {
      problems.push(`member ${c.name} (offset ${c.offset}) is missing in TypeScript`);
    } else if (!c) {
      problems.push(`field ${ts.name} (offset ${ts.offset}) is missing in the kernel`);
    } else if (ts.name !== c.name || ts.offset !== c.offset || ts.size !== c.size || c.bits) {
      problems.push(
        `member ${i} is ${c.name}@${c.offset}+${c.size}${c.bits ? ` (${c.bits}-bit field)` : ""} ` +
          `in the kernel, ${ts.name}@${ts.offset}+${ts.size} in TypeScript`,
      );
    }
  }
  return problems;
}

const btfCache = new Map<number, Btf | null>();

/**
 * The kernel's BTF object `id`, or null when this process may not read it:
 * the kernel hands out BTF by id to CAP_SYS_ADMIN only, and warren runs
 * with CAP_BPF. Sizes and the layout version are checked all the same.
 */
function kernelBtf(id: number): Btf | null {
  let btf = btfCache.get(id);
  if (btf === undefined) {
    try {
      btf = Btf.fromKernel(id);
    } catch (err) {
      if (!(err instanceof BpfError && err.code === "EPERM")) throw err;
      btf = null;
    }
    btfCache.set(id, btf);
  }
  return btf;
}

/**
 * Throws a {@link LayoutError} unless `map`'s key and value match `key` and
 * `value`: sizes always, and member by member where the map has BTF this
 * process may read.
 */
export function checkMapLayout(map: BpfMap, key: Codec<unknown>, value: Codec<unknown>): void {
  const problems: string[] = [];
  if (map.info.keySize !== key.size) {
    problems.push(`key is ${map.info.keySize} bytes in the kernel, ${key.size} in TypeScript`);
  }
  if (map.info.valueSize !== value.size) {
    problems.push(
      `value is ${map.info.valueSize} bytes in the kernel, ${value.size} in TypeScript`,
    );
  }
  const btf = problems.length === 0 && map.info.btfId !== 0 ? kernelBtf(map.info.btfId) : null;
  if (btf) {
    if (map.info.btfKeyTypeId) {
      problems.push(
        ...layoutDifferences(key, btf.layout(map.info.btfKeyTypeId)).map((p) => `key: ${p}`),
      );
    }
    if (map.info.btfValueTypeId) {
      problems.push(
        ...layoutDifferences(value, btf.layout(map.info.btfValueTypeId)).map((p) => `value: ${p}`),
      );
    }
  }
  if (problems.length > 0) {
    throw new LayoutError(
      `map "${map.name}" does not have the layout warren expects:\n  ${problems.join("\n  ")}`,
    );
  }
}
