/**
 * Assertions for tests: Node's strict assertions (JSR's std is out of reach
 * here), plus the two shapes Deno tests read best.
 *
 * @module
 */

import assert from "node:assert/strict";

export { assert };

/** Deep strict equality. */
export function assertEquals<T>(actual: T, expected: T, message?: string): void {
  // Node's typings (newer ones come with the etcd client) take no undefined message.
  if (message === undefined) assert.deepStrictEqual(actual, expected);
  else assert.deepStrictEqual(actual, expected, message);
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
