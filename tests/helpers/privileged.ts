/**
 * Privileged tests: they skip only when not root and
 * `WARREN_REQUIRE_PRIVILEGED` is unset. CI sets it, so there they fail
 * instead of skipping.
 *
 * @module
 */

/** Whether this process may load BPF programs and make namespaces. */
export const isRoot = Deno.uid() === 0;

/** Whether privileged tests must run (CI). */
export const privilegedRequired = (Deno.env.get("WARREN_REQUIRE_PRIVILEGED") ?? "") !== "";

/**
 * Registers a test that needs root; `ignore` sets aside one that shows a
 * known defect until its fix lands.
 */
export function privilegedTest(
  name: string,
  fn: (t: Deno.TestContext) => Promise<void> | void,
  ignore = false,
): void {
  Deno.test({
    name,
    ignore: ignore || (!isRoot && !privilegedRequired),
    async fn(t) {
      if (!isRoot) throw new Error(`"${name}" needs root, and WARREN_REQUIRE_PRIVILEGED is set`);
      await fn(t);
    },
  });
}
