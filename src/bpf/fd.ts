/**
 * Ownership of kernel file descriptors.
 *
 * An {@link Fd} closes its descriptor exactly once: on `close()`, at the end
 * of a `using` block, or — as a safety net only — when the garbage collector
 * finds it unreachable.
 *
 * @module
 */

import { libc } from "./ffi.ts";

const safetyNet = new FinalizationRegistry<number>((fd) => {
  libc().close(fd);
});

/** Fd owns one kernel file descriptor (program, map, link, BTF …). */
export class Fd implements Disposable {
  #fd: number;

  /** Takes ownership of `fd`, which must be open. */
  constructor(fd: number) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`not a file descriptor: ${fd}`);
    this.#fd = fd;
    safetyNet.register(this, fd, this);
  }

  /** The descriptor number. Throws once closed. */
  get value(): number {
    if (this.#fd < 0) throw new Error("file descriptor used after close");
    return this.#fd;
  }

  /** Whether `close()` has run. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /** A new Fd for the same kernel object, owned separately. */
  dup(): Fd {
    return Fd.duplicate(this.value);
  }

  /** An owned duplicate of `fd`, a descriptor someone else owns. */
  static duplicate(fd: number): Fd {
    const copy = libc().dup(fd);
    if (copy < 0) throw new Error(`dup of file descriptor ${fd} failed`);
    return new Fd(copy);
  }

  /** Closes the descriptor; later calls do nothing. */
  close(): void {
    if (this.#fd < 0) return;
    safetyNet.unregister(this);
    libc().close(this.#fd);
    this.#fd = -1;
  }

  /** Same as `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
