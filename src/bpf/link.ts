/**
 * A bpf_link: the kernel object that keeps a program attached. Closing the
 * last file descriptor of an unpinned link detaches the program; pinning it
 * keeps the program attached after the process exits.
 *
 * @module
 */

import { followDirMode } from "./pin_mode.ts";
import { check } from "./errors.ts";
import { Fd } from "./fd.ts";
import { cstr, libbpf } from "./ffi.ts";
import { type LinkInfo, linkInfo } from "./info.ts";
import { opts } from "./opts.ts";
import type { Program } from "./program.ts";

/** `BPF_F_REPLACE`: replace only if the old program is the expected one. */
const F_REPLACE = 1 << 2;

/** Link owns a bpf_link's file descriptor. */
export class Link implements Disposable {
  /** A label for messages, such as `xdp on eth0`. */
  readonly label: string;
  readonly #fd: Fd;

  /** Wraps `fd`, taking ownership. */
  constructor(label: string, fd: Fd) {
    this.label = label;
    this.#fd = fd;
  }

  /** Opens the link pinned at `path`. */
  static fromPin(path: string): Link {
    return new Link(
      path,
      new Fd(check(`open pinned link ${path}`, () => libbpf().bpf_obj_get(cstr(path)))),
    );
  }

  /** The file descriptor. */
  get fd(): number {
    return this.#fd.value;
  }

  /** What the kernel says about the link. */
  info(): LinkInfo {
    return linkInfo(this.fd);
  }

  /**
   * Swaps in `program` atomically: every packet runs either the old program
   * or the new one, none runs neither. With `expected`, the swap happens only
   * if `expected` is still the attached program (else EPERM).
   */
  update(program: Program, expected?: Program): void {
    const o = expected ? opts(16, [8, "u32", F_REPLACE], [12, "u32", expected.fd]) : opts(16);
    check(
      `replace the program of ${this.label} with "${program.name}"`,
      () => libbpf().bpf_link_update(this.fd, program.fd, o),
    );
  }

  /**
   * Detaches the program now, even if the link is pinned or other
   * descriptors exist. The link object stays until closed and unpinned.
   */
  detach(): void {
    check(`detach ${this.label}`, () => libbpf().bpf_link_detach(this.fd));
  }

  /** Pins the link at `path`, so the attachment outlives this process. */
  pin(path: string): void {
    check(`pin ${this.label} at ${path}`, () => libbpf().bpf_obj_pin(this.fd, cstr(path)));
    followDirMode(path);
  }

  /** Releases the descriptor; an unpinned link then detaches. */
  close(): void {
    this.#fd.close();
  }

  /** Same as `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Creates a link of `attachType` for `program` on `target` (an ifindex). */
export function createLink(
  label: string,
  program: Program,
  target: number,
  attachType: number,
  flags = 0,
): Link {
  // sizeof(struct bpf_link_create_opts) in libbpf 1.1; `flags` at offset 8.
  const o = opts(64, [8, "u32", flags]);
  const fd = check(
    `attach "${program.name}" as ${label}`,
    () => libbpf().bpf_link_create(program.fd, target, attachType, o),
  );
  return new Link(label, new Fd(fd));
}
