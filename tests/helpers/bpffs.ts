/**
 * A temporary directory on the bpffs for a test's pins, removed afterwards
 * with everything pinned in it.
 *
 * @module
 */

import { ensurePinDir } from "../../src/bpf/pin.ts";

/** TempPinDir is a test's own directory under /sys/fs/bpf. */
export class TempPinDir implements Disposable {
  /** The directory's path. */
  readonly path: string;

  /** Creates `/sys/fs/bpf/warren-test-<random>`. */
  constructor() {
    this.path = `/sys/fs/bpf/warren-test-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
    ensurePinDir(this.path);
  }

  /** Removes the directory and all pins in it. */
  [Symbol.dispose](): void {
    Deno.removeSync(this.path, { recursive: true });
  }
}
