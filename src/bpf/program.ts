/**
 * A loaded BPF program: a file descriptor and what the kernel knows of it.
 *
 * @module
 */

import { followDirMode } from "./pin_mode.ts";
import { check } from "./errors.ts";
import { Fd } from "./fd.ts";
import { cstr, libbpf } from "./ffi.ts";
import { type ProgramInfo, programInfo } from "./info.ts";

/** Program owns a loaded program's file descriptor. */
export class Program implements Disposable {
  /** The program's name in the object it came from (or the kernel's). */
  readonly name: string;
  readonly #fd: Fd;

  /** Wraps `fd`, taking ownership. */
  constructor(name: string, fd: Fd) {
    this.name = name;
    this.#fd = fd;
  }

  /** Opens the program pinned at `path`. */
  static fromPin(path: string): Program {
    return Program.#adopt(
      check(`open pinned program ${path}`, () => libbpf().bpf_obj_get(cstr(path))),
    );
  }

  /** Opens the loaded program with kernel id `id`. */
  static fromId(id: number): Program {
    return Program.#adopt(check(`open program id ${id}`, () => libbpf().bpf_prog_get_fd_by_id(id)));
  }

  static #adopt(raw: number): Program {
    const fd = new Fd(raw);
    try {
      return new Program(programInfo(raw).name, fd);
    } catch (err) {
      fd.close();
      throw err;
    }
  }

  /** The file descriptor. */
  get fd(): number {
    return this.#fd.value;
  }

  /** What the kernel says about the program. */
  info(): ProgramInfo {
    return programInfo(this.fd);
  }

  /** Pins the program at `path` on a bpffs. */
  pin(path: string): void {
    check(`pin program "${this.name}" at ${path}`, () => libbpf().bpf_obj_pin(this.fd, cstr(path)));
    followDirMode(path);
  }

  /** Releases the file descriptor; the program lives on while attached or pinned. */
  close(): void {
    this.#fd.close();
  }

  /** Same as `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
