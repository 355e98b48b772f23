/**
 * Network interfaces by name and index, in the calling thread's network
 * namespace.
 *
 * @module
 */

import { cstr, libc, readCString } from "./ffi.ts";

/** The ifindex of `name`; throws a clear error when there is no such device. */
export function ifindex(name: string): number {
  const index = libc().if_nametoindex(cstr(name));
  if (index === 0) throw new Error(`no network device named "${name}" in this network namespace`);
  return index;
}

/** The name of device `index`, or undefined when it does not exist. */
export function ifname(index: number): string | undefined {
  const buf = new Uint8Array(16);
  const p = libc().if_indextoname(index, buf);
  return p === null ? undefined : readCString(Deno.UnsafePointer.of(buf));
}
