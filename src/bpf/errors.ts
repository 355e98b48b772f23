/**
 * Errors from the BPF layer. Every one says what was being done, the errno's
 * name and what libbpf itself printed, so a failure reads as a sentence.
 *
 * Callers may catch the sentinel subclasses: {@link KeyNotFoundError},
 * {@link KeyExistsError}, {@link VerifierError}, {@link LayoutError}.
 *
 * @module
 */

import { libbpfMessageMark, libbpfMessagesSince } from "./log.ts";

/** Linux errno numbers and their names, for the errors warren meets. */
const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  8: "ENOEXEC",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  18: "EXDEV",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  24: "EMFILE",
  28: "ENOSPC",
  30: "EROFS",
  34: "ERANGE",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  39: "ENOTEMPTY",
  40: "ELOOP",
  61: "ENODATA",
  67: "ENOLINK",
  71: "EPROTO",
  74: "EBADMSG",
  75: "EOVERFLOW",
  90: "EMSGSIZE",
  93: "EPROTONOSUPPORT",
  95: "EOPNOTSUPP",
  100: "ENETDOWN",
  105: "ENOBUFS",
  114: "EALREADY",
  125: "ECANCELED",
  524: "ENOTSUPP",
  4000: "LIBBPF_ERRNO__LIBELF",
  4001: "LIBBPF_ERRNO__FORMAT",
  4002: "LIBBPF_ERRNO__KVERSION",
  4003: "LIBBPF_ERRNO__ENDIAN",
  4004: "LIBBPF_ERRNO__INTERNAL",
  4005: "LIBBPF_ERRNO__RELOC",
  4006: "LIBBPF_ERRNO__LOAD",
  4007: "LIBBPF_ERRNO__VERIFY",
  4008: "LIBBPF_ERRNO__PROG2BIG",
  4009: "LIBBPF_ERRNO__KVER",
  4010: "LIBBPF_ERRNO__PROGTYPE",
  4011: "LIBBPF_ERRNO__WRNGPID",
  4012: "LIBBPF_ERRNO__INVSEQ",
  4013: "LIBBPF_ERRNO__NLPARSE",
};

/** Standard text for the errnos above (strerror would need the C locale). */
const ERRNO_TEXT: Record<string, string> = {
  EPERM: "operation not permitted",
  ENOENT: "no such file, entry or key",
  ESRCH: "no such object",
  E2BIG: "argument list too long",
  EBADF: "bad file descriptor",
  EAGAIN: "resource temporarily unavailable",
  ENOMEM: "out of memory",
  EACCES: "permission denied",
  EFAULT: "bad address",
  EBUSY: "device or resource busy",
  EEXIST: "already exists",
  ENODEV: "no such device",
  ENOTDIR: "not a directory",
  EINVAL: "invalid argument",
  EMFILE: "too many open files",
  ENOSPC: "no space left (map or log full)",
  ERANGE: "out of range",
  ENOSYS: "not implemented by this kernel",
  EOPNOTSUPP: "operation not supported",
  ENOTSUPP: "operation not supported",
  EPROTO: "protocol error",
  ENOLINK: "the link's device is gone",
  ENOEXEC: "not a valid BPF object",
  LIBBPF_ERRNO__FORMAT: "invalid ELF object format",
  LIBBPF_ERRNO__LIBELF: "libelf failed to read the object",
  LIBBPF_ERRNO__LOAD: "the kernel refused to load the program",
  LIBBPF_ERRNO__VERIFY: "the verifier rejected the program",
  LIBBPF_ERRNO__PROG2BIG: "the program is too big",
  LIBBPF_ERRNO__RELOC: "relocation failed",
};

/** The symbolic name of a positive errno, such as `ENOENT`. */
export function errnoName(code: number): string {
  return ERRNO_NAMES[Math.abs(code)] ?? `errno ${Math.abs(code)}`;
}

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
    const text = ERRNO_TEXT[code];
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
