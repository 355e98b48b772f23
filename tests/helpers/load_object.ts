/**
 * Loads the BPF object at the path given and exits 0; or prints why the
 * kernel refused it and exits 1. For tests that load from a process holding
 * fewer capabilities than themselves.
 *
 * @module
 */

import { BpfObject } from "../../src/bpf/object.ts";
import { VerifierError } from "../../src/bpf/errors.ts";

using obj = BpfObject.openFile(Deno.args[0]);
try {
  obj.load();
} catch (err) {
  console.error(err instanceof VerifierError ? err.log : String(err));
  Deno.exit(1);
}
