/**
 * Assertions for tests: Node's strict assertions (JSR's std is out of reach
 * here), plus the two shapes Deno tests read best.
 *
 * @module
 */

import assert from "node:assert/strict";
import { isSlabFlowKey, plainFlowKey } from "../../src/maps/layouts.ts";

export { assert };

/**
 * Deep strict equality. Flow keys from `emptyFlowKey` are compared as
 * plain keys: their byte fields are accessors, which Node's comparison
 * would not look at, so two parsed matches that differ in an address
 * would compare equal.
 */
export function assertEquals<T>(actual: T, expected: T, message?: string): void {
  const a = withPlainKeys(actual, new Map()), e = withPlainKeys(expected, new Map());
  // Node's typings (newer ones come with the etcd client) take no undefined message.
  if (message === undefined) assert.deepStrictEqual(a, e);
  else assert.deepStrictEqual(a, e, message);
}

/**
 * `v` with every slab flow key in it, in arrays, plain objects, Maps and
 * Sets, made a plain key; `v` itself when it holds none. (A class
 * instance is compared as it is: none in the tests holds a key.)
 */
function withPlainKeys(v: unknown, seen: Map<object, unknown>): unknown {
  if (typeof v !== "object" || v === null) return v;
  if (isSlabFlowKey(v)) return plainFlowKey(v);
  if (seen.has(v)) return seen.get(v);
  seen.set(v, v);
  const proto = Object.getPrototypeOf(v);
  let out: unknown = v;
  if (Array.isArray(v)) {
    const items = v.map((x) => withPlainKeys(x, seen));
    if (items.some((x, i) => x !== v[i])) out = items;
  } else if (proto === Object.prototype || proto === null) {
    const r = v as Record<PropertyKey, unknown>;
    const copy: Record<PropertyKey, unknown> = Object.create(proto);
    let changed = false;
    for (const k of Reflect.ownKeys(r)) {
      if (!Object.prototype.propertyIsEnumerable.call(r, k)) continue;
      copy[k] = withPlainKeys(r[k], seen);
      changed ||= copy[k] !== r[k];
    }
    if (changed) out = copy;
  } else if (v instanceof Map || v instanceof Set) {
    const before = v instanceof Map ? [...v].flat() : [...v];
    const after = before.map((x) => withPlainKeys(x, seen));
    if (after.some((x, i) => x !== before[i])) {
      out = v instanceof Map
        ? new Map(after.flatMap((x, i) => i % 2 ? [] : [[x, after[i + 1]] as const]))
        : new Set(after);
    }
  }
  seen.set(v, out);
  return out;
}

/** `fn` throws an instance of `type` whose message includes `includes`. */
export function assertThrows(
  fn: () => unknown,
  type: abstract new (...args: never[]) => Error,
  includes = "",
): Error {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof type, `expected ${type.name}, got ${caught}`);
  assert.ok(
    (caught as Error).message.includes(includes),
    `"${(caught as Error).message}" lacks "${includes}"`,
  );
  return caught as Error;
}

/** `fn` rejects with an instance of `type` whose message includes `includes`. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  type: abstract new (...args: never[]) => Error,
  includes = "",
): Promise<Error> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof type, `expected ${type.name}, got ${caught}`);
  assert.ok(
    (caught as Error).message.includes(includes),
    `"${(caught as Error).message}" lacks "${includes}"`,
  );
  return caught as Error;
}
