/**
 * Failpoints: named places in a multi-step change where a test can have
 * warren die as a crash would, to prove that running the command again
 * loses nothing and duplicates nothing.
 *
 * `WARREN_FAILPOINTS` lists names separated by commas, each optionally
 * `@N` to fire on the Nth time it is reached (default the first). A firing
 * failpoint sends SIGKILL to its own process: no `finally`, no cleanup, the
 * same as `kill -9` or a power cut between two map writes. Unset, a
 * failpoint costs one Map lookup on an empty map.
 *
 * @module
 */

function armed(): Map<string, number> {
  let spec = "";
  try {
    spec = Deno.env.get("WARREN_FAILPOINTS") ?? "";
  } catch {
    // No permission to read the environment: nothing is armed.
  }
  const out = new Map<string, number>();
  for (const item of spec.split(",").filter(Boolean)) {
    const [name, nth] = item.split("@");
    out.set(name.trim(), Number(nth ?? 1));
  }
  return out;
}

const ARMED = armed();

/** Dies by SIGKILL here if the failpoint `name` is armed and due. */
export function failpoint(name: string): void {
  if (ARMED.size === 0) return;
  const left = ARMED.get(name);
  if (left === undefined) return;
  if (left > 1) {
    ARMED.set(name, left - 1);
    return;
  }
  Deno.kill(Deno.pid, "SIGKILL");
}
