/**
 * The errno numbers warren meets, by name: Linux's (asm-generic/errno*.h,
 * the same on every architecture warren runs on) and libbpf's own
 * (`LIBBPF_ERRNO__*`). Code compares with `Errno.ENOENT`, never with a bare
 * number, and messages print the name.
 *
 * @module
 */

/** Errno numbers by name. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  EMFILE: 24,
  ENOSPC: 28,
  EROFS: 30,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENODATA: 61,
  ENOLINK: 67,
  EPROTO: 71,
  EBADMSG: 74,
  EOVERFLOW: 75,
  EMSGSIZE: 90,
  EPROTONOSUPPORT: 93,
  EOPNOTSUPP: 95,
  ENETDOWN: 100,
  ENOBUFS: 105,
  EALREADY: 114,
  ECANCELED: 125,
  /** The kernel-internal "not supported" some BPF paths leak to user space. */
  ENOTSUPP: 524,
  LIBBPF_ERRNO__LIBELF: 4000,
  LIBBPF_ERRNO__FORMAT: 4001,
  LIBBPF_ERRNO__KVERSION: 4002,
  LIBBPF_ERRNO__ENDIAN: 4003,
  LIBBPF_ERRNO__INTERNAL: 4004,
  LIBBPF_ERRNO__RELOC: 4005,
  LIBBPF_ERRNO__LOAD: 4006,
  LIBBPF_ERRNO__VERIFY: 4007,
  LIBBPF_ERRNO__PROG2BIG: 4008,
  LIBBPF_ERRNO__KVER: 4009,
  LIBBPF_ERRNO__PROGTYPE: 4010,
  LIBBPF_ERRNO__WRNGPID: 4011,
  LIBBPF_ERRNO__INVSEQ: 4012,
  LIBBPF_ERRNO__NLPARSE: 4013,
} as const;

/** An errno's name, such as `ENOENT`. */
export type ErrnoName = keyof typeof Errno;

/** Standard text for some of the errnos (strerror would need the C locale). */
const TEXT: Partial<Record<ErrnoName, string>> = {
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

const NAMES = new Map<number, ErrnoName>(
  Object.entries(Errno).map(([name, n]) => [n, name as ErrnoName]),
);

/** The symbolic name of an errno (sign ignored), such as `ENOENT`. */
export function errnoName(code: number): string {
  return NAMES.get(Math.abs(code)) ?? `errno ${Math.abs(code)}`;
}

/** What errno `name` means, in words, where warren knows. */
export function errnoText(name: string): string | undefined {
  return TEXT[name as ErrnoName];
}
