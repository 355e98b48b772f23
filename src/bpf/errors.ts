/**
 * Errors from the BPF layer. Every one says what was being done, the errno's
 * name and what libbpf itself printed, so a failure reads as a sentence.
 *
 * Callers may catch the sentinel subclasses: {@link KeyNotFoundError},
 * {@link KeyExistsError}, {@link VerifierError}, {@link LayoutError}.
 *
 * @module
 */

import { errnoName, errnoText } from "./errno.ts";
import { libbpfMessageMark, libbpfMessagesSince } from "./log.ts";

/** Options carried by every {@link BpfError}. */
export interface BpfErrorOptions {
  /** What libbpf printed while the failing call ran. */
  libbpfLog?: string;
  /** The error that caused this one. */
  cause?: unknown;
}

/**
 * BpfError is a failed libbpf or bpf(2) call: the operation, the errno and
 * libbpf's own message.
 */
export class BpfError extends Error {
  /** What warren was doing, for example `update map "flows"`. */
  readonly op: string;
  /** The positive errno. */
  readonly errno: number;
  /** Its symbolic name, for example `EEXIST`. */
  readonly code: string;
  /** The lines libbpf printed during the call, if any. */
  readonly libbpfLog: string;

  /** Builds the error for `op` failing with `errno` (sign ignored). */
  constructor(op: string, errno: number, options: BpfErrorOptions = {}) {
    const code = errnoName(errno);
    const text = errnoText(code);
    const log = options.libbpfLog?.trim() ?? "";
    const detail = log ? `\nlibbpf: ${log.split("\n").slice(-6).join("\nlibbpf: ")}` : "";
    super(`${op}: ${code}${text ? ` (${text})` : ""}${detail}`, { cause: options.cause });
    this.name = new.target.name;
    this.op = op;
    this.errno = Math.abs(errno);
    this.code = code;
    this.libbpfLog = log;
  }
}

/** KeyNotFoundError is a lookup or delete of a key the map does not hold. */
export class KeyNotFoundError extends BpfError {}

/** KeyExistsError is an insert (`noexist`) of a key the map already holds. */
export class KeyExistsError extends BpfError {}

/** VerifierError is a program the kernel refused; `log` is the verifier's. */
export class VerifierError extends BpfError {
  /** The program the verifier rejected. */
  readonly program: string;
  /** The verifier log, whole. */
  readonly log: string;

  /** Builds the error for `program`, whose load failed with `errno`. */
  constructor(program: string, errno: number, log: string, options: BpfErrorOptions = {}) {
    super(`load program "${program}"`, errno, options);
    this.program = program;
    this.log = log;
    const tail = log.trim().split("\n").slice(-20).join("\n");
    this.message += `\nverifier log (last lines):\n${tail}`;
  }
}

/** NotFoundError is a program, map or pin asked for by a name that does not exist. */
export class NotFoundError extends Error {
  /** Builds the error; `message` names what was missing and what exists. */
  constructor(message: string) {
    super(message);
    this.name = "NotFoundError";
  }
}

/**
 * LayoutError is a map whose key or value layout in the kernel differs from
 * the codec TypeScript would read it with.
 */
export class LayoutError extends Error {
  /** Builds the error; `message` names the map, the field and both layouts. */
  constructor(message: string) {
    super(message);
    this.name = "LayoutError";
  }
}

/**
 * Runs `call`, which returns a negative errno on failure (libbpf 1.x's
 * convention for int-returning functions), and throws a {@link BpfError}
 * built by `make` (default: a plain BpfError) when it fails.
 */
export function check(
  op: string,
  call: () => number,
  make: (op: string, errno: number, options: BpfErrorOptions) => BpfError = (o, e, opts) =>
    new BpfError(o, e, opts),
): number {
  const mark = libbpfMessageMark();
  const ret = call();
  if (ret < 0) throw make(op, -ret, { libbpfLog: libbpfMessagesSince(mark) });
  return ret;
}

/**
 * The error of a `BPF_MAP_UPDATE_BATCH` of `count` entries into map
 * `name` that failed with `errno` after the kernel applied `applied` of
 * them (a prefix): the message says how many, when not all.
 */
export function batchUpdateError(
  name: string,
  count: number,
  applied: number,
  errno: number,
  options?: BpfErrorOptions,
): BpfError {
  const op = `batch update of ${count} entries in map "${name}"`;
  return new BpfError(applied < count ? `${op} (${applied} applied)` : op, errno, options);
}
