/**
 * A BPF ELF object, opened by libbpf, configured, then loaded into the kernel.
 *
 * Before `load()` the object is a blueprint: choose which programs load, size
 * maps, reuse pinned maps. After `load()` ask it for {@link Program}s and
 * {@link BpfMap}s; each owns a duplicate of the descriptor, so they outlive
 * the object, which can be closed as soon as they are taken.
 *
 * @example Load an object from memory and take a program
 * ```ts ignore
 * // Needs root: tests/docs_test.ts runs this example in a network namespace.
 * import assert from "node:assert";
 * import bytes from "../../bpf/build/counter.bpf.o" with { type: "bytes" };
 * import { BpfObject } from "./object.ts";
 *
 * using obj = BpfObject.openMemory(bytes, "counter");
 * obj.load();
 * using prog = obj.program("xdp_count");
 * assert.ok(prog.info().id > 0);
 * ```
 *
 * @module
 */

import { Btf } from "./btf.ts";
import { Errno } from "./errno.ts";
import { BpfError, check, NotFoundError, VerifierError } from "./errors.ts";
import { Fd } from "./fd.ts";
import { cstr, errno, libbpf, readCString } from "./ffi.ts";
import { libbpfMessageMark, libbpfMessagesSince } from "./log.ts";
import { BpfMap } from "./map.ts";
import { opts } from "./opts.ts";
import { Program } from "./program.ts";

/** Room for the verifier log of a failed load; the kernel keeps the tail. */
const VERIFIER_LOG_SIZE = 16 << 20;

/**
 * The names an object's programs, maps and `.rodata` constants go by. Any
 * string by default; an object whose names are known (such as warren's,
 * `src/maps/names.ts`) is opened with them, so that a misspelt name fails
 * to type-check instead of failing at run time.
 */
export interface ObjectNames {
  /** A program's name. */
  program: string;
  /** A map's name. */
  map: string;
  /** A `const volatile` global's name. */
  constant: string;
}

/** BpfObject owns a libbpf `struct bpf_object`. */
export class BpfObject<N extends ObjectNames = ObjectNames> implements Disposable {
  /** The object's name (file base name, or the name given for memory). */
  readonly name: string;
  #ptr: Deno.PointerValue;
  #loaded = false;
  // libbpf keeps pointers to these until the object is closed.
  #keep: Uint8Array[] = [];

  private constructor(ptr: NonNullable<Deno.PointerValue>, name: string, keep: Uint8Array[]) {
    this.#ptr = ptr;
    this.name = name;
    this.#keep = keep;
  }

  /** Opens the object file at `path`. */
  static openFile<N extends ObjectNames = ObjectNames>(path: string): BpfObject<N> {
    const name = path.split("/").pop()!.replace(/\.o$/, "");
    const mark = libbpfMessageMark();
    const ptr = libbpf().bpf_object__open_file(cstr(path), null);
    return BpfObject.#opened(ptr, errno(), name, `open BPF object ${path}`, mark, []);
  }

  /**
   * Opens an object from memory, such as the bytes import of a built object,
   * so a host running warren needs no compiler and no object files on disk.
   */
  static openMemory<N extends ObjectNames = ObjectNames>(
    bytes: Uint8Array,
    name: string,
  ): BpfObject<N> {
    const copy = new Uint8Array(bytes);
    const objectName = cstr(name);
    // sizeof(struct bpf_object_open_opts) in libbpf 1.1; object_name at 8.
    const o = opts(80, [8, "ptr", Deno.UnsafePointer.of(objectName)]);
    const mark = libbpfMessageMark();
    const ptr = libbpf().bpf_object__open_mem(copy, BigInt(copy.length), o);
    return BpfObject.#opened(ptr, errno(), name, `open BPF object "${name}" from memory`, mark, [
      copy,
      objectName,
    ]);
  }

  static #opened<N extends ObjectNames>(
    ptr: Deno.PointerValue,
    err: number,
    name: string,
    op: string,
    mark: number,
    keep: Uint8Array[],
  ): BpfObject<N> {
    if (ptr === null) {
      throw new BpfError(op, err || Errno.EINVAL, { libbpfLog: libbpfMessagesSince(mark) });
    }
    return new BpfObject<N>(ptr, name, keep);
  }

  /** The names of the object's programs, in section order. */
  get programNames(): string[] {
    return this.#walk(libbpf().bpf_object__next_program, libbpf().bpf_program__name);
  }

  /** The names of the object's maps (including .data/.rodata/.bss). */
  get mapNames(): string[] {
    return this.#walk(libbpf().bpf_object__next_map, libbpf().bpf_map__name);
  }

  /** Whether `load()` has succeeded. */
  get loaded(): boolean {
    return this.#loaded;
  }

  /** Chooses whether `program` is loaded (all are by default). */
  setAutoload(program: N["program"], autoload: boolean): void {
    this.#beforeLoad("choose programs");
    check(
      `set autoload of "${program}"`,
      () => libbpf().bpf_program__set_autoload(this.#program(program), autoload),
    );
  }

  /** Sets `BPF_F_*` load flags of `program`, such as `BPF_F_XDP_HAS_FRAGS`. */
  setProgramFlags(program: N["program"], flags: number): void {
    this.#beforeLoad("set program flags");
    const p = this.#program(program);
    check(
      `set flags of "${program}"`,
      () => libbpf().bpf_program__set_flags(p, libbpf().bpf_program__flags(p) | flags),
    );
  }

  /** Sizes map `map` to `maxEntries` instead of what the C source says. */
  setMaxEntries(map: N["map"], maxEntries: number): void {
    this.#beforeLoad("size maps");
    check(
      `size map "${map}" to ${maxEntries}`,
      () => libbpf().bpf_map__set_max_entries(this.#map(map), maxEntries),
    );
  }

  /**
   * Sets the `const volatile` global `name` (in .rodata) to `value` before
   * load, so the verifier sees it as a constant and prunes what it turns
   * off. The variable's size decides the width (1, 2, 4 or 8 bytes).
   */
  setConstant(name: N["constant"], value: number | bigint): void {
    this.#beforeLoad("set constants");
    using btf = this.btf();
    const v = btf.variable(".rodata", name);
    if (!v) throw new NotFoundError(`object "${this.name}" has no constant "${name}" in .rodata`);
    const rodata = [...this.#pointers(libbpf().bpf_object__next_map)].find((p) =>
      readCString(libbpf().bpf_map__name(p)).endsWith(".rodata")
    );
    const size = new BigUint64Array(1);
    const ptr = rodata ? libbpf().bpf_map__initial_value(rodata, size) : null;
    if (ptr === null || v.offset + v.size > Number(size[0])) {
      throw new NotFoundError(`object "${this.name}" has no .rodata image to hold "${name}"`);
    }
    // Before load, libbpf's copy of .rodata is ordinary writable memory.
    const view = new DataView(Deno.UnsafePointerView.getArrayBuffer(ptr, Number(size[0])));
    const big = BigInt(value);
    if (v.size === 8) view.setBigUint64(v.offset, big, true);
    else if (v.size === 4) view.setUint32(v.offset, Number(big), true);
    else if (v.size === 2) view.setUint16(v.offset, Number(big), true);
    else if (v.size === 1) view.setUint8(v.offset, Number(big));
    else throw new RangeError(`constant "${name}" is ${v.size} bytes, not a scalar`);
  }

  /**
   * Makes the object use the existing map `existing` for `map` instead of
   * creating one; libbpf checks type, key, value and size first.
   */
  reuseMap(map: N["map"], existing: BpfMap): void {
    this.#beforeLoad("reuse maps");
    check(
      `reuse an existing map for "${map}"`,
      () => libbpf().bpf_map__reuse_fd(this.#map(map), existing.fd),
    );
  }

  /**
   * Loads every map and program into the kernel. A program the verifier
   * rejects throws a {@link VerifierError} carrying the verifier's log.
   */
  load(): void {
    this.#beforeLoad("load");
    const log = new Uint8Array(VERIFIER_LOG_SIZE);
    const logPtr = Deno.UnsafePointer.of(log);
    // With log level 0 libbpf asks for no log on the first attempt and, only
    // if the load fails, retries at level 1 into this buffer.
    for (const prog of this.#pointers(libbpf().bpf_object__next_program)) {
      check(
        "set verifier log buffer",
        () => libbpf().bpf_program__set_log_buf(prog, logPtr, BigInt(log.length)),
      );
    }
    const mark = libbpfMessageMark();
    const ret = libbpf().bpf_object__load(this.#ptr);
    for (const prog of this.#pointers(libbpf().bpf_object__next_program)) {
      libbpf().bpf_program__set_log_buf(prog, null, 0n);
    }
    if (ret < 0) {
      const messages = libbpfMessagesSince(mark);
      const end = log.indexOf(0);
      const verifierLog = new TextDecoder().decode(log.subarray(0, end < 0 ? log.length : end));
      const failed = /prog '([^']+)': (?:BPF program load failed|failed to load)/.exec(messages)
        ?.[1];
      if (verifierLog.trim() && failed) {
        throw new VerifierError(failed, -ret, verifierLog, { libbpfLog: messages });
      }
      throw new BpfError(`load BPF object "${this.name}"`, -ret, { libbpfLog: messages });
    }
    this.#loaded = true;
  }

  /** A loaded program, with its own descriptor. */
  program(name: N["program"]): Program {
    this.#afterLoad(`take program "${name}"`);
    const fd = libbpf().bpf_program__fd(this.#program(name));
    if (fd < 0) {
      throw new NotFoundError(`program "${name}" of object "${this.name}" was not loaded`);
    }
    return new Program(name, Fd.duplicate(fd));
  }

  /** A loaded map, with its own descriptor. */
  map(name: N["map"]): BpfMap {
    this.#afterLoad(`take map "${name}"`);
    const fd = check(`take map "${name}"`, () => libbpf().bpf_map__fd(this.#map(name)));
    return new BpfMap(name, Fd.duplicate(fd));
  }

  /** The object's BTF, borrowed: valid until the object is closed. */
  btf(): Btf {
    const ptr = libbpf().bpf_object__btf(this.#ptr);
    if (ptr === null) throw new NotFoundError(`object "${this.name}" has no BTF (build with -g)`);
    return Btf.borrow(ptr);
  }

  /** Unloads what nothing else holds and frees the object; idempotent. */
  close(): void {
    if (this.#ptr === null) return;
    libbpf().bpf_object__close(this.#ptr);
    this.#ptr = null;
    this.#keep = [];
  }

  /** Same as `close()`, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #live(): NonNullable<Deno.PointerValue> {
    if (this.#ptr === null) throw new Error(`BPF object "${this.name}" used after close`);
    return this.#ptr;
  }

  #beforeLoad(what: string): void {
    this.#live();
    if (this.#loaded) throw new Error(`cannot ${what}: object "${this.name}" is already loaded`);
  }

  #afterLoad(what: string): void {
    this.#live();
    if (!this.#loaded) throw new Error(`cannot ${what}: object "${this.name}" is not loaded yet`);
  }

  *#pointers(
    next: (obj: Deno.PointerValue, prev: Deno.PointerValue) => Deno.PointerValue,
  ): Generator<NonNullable<Deno.PointerValue>> {
    const obj = this.#live();
    for (let p = next(obj, null); p !== null; p = next(obj, p)) yield p;
  }

  #walk(
    next: (obj: Deno.PointerValue, prev: Deno.PointerValue) => Deno.PointerValue,
    name: (p: Deno.PointerValue) => Deno.PointerValue,
  ): string[] {
    return [...this.#pointers(next)].map((p) => readCString(name(p)));
  }

  #program(name: string): NonNullable<Deno.PointerValue> {
    for (const p of this.#pointers(libbpf().bpf_object__next_program)) {
      if (readCString(libbpf().bpf_program__name(p)) === name) return p;
    }
    throw new NotFoundError(
      `object "${this.name}" has no program named "${name}" (it has: ${
        this.programNames.join(", ")
      })`,
    );
  }

  #map(name: string): NonNullable<Deno.PointerValue> {
    for (const p of this.#pointers(libbpf().bpf_object__next_map)) {
      if (readCString(libbpf().bpf_map__name(p)) === name) return p;
    }
    throw new NotFoundError(
      `object "${this.name}" has no map named "${name}" (it has: ${this.mapNames.join(", ")})`,
    );
  }
}
