/**
 * The native symbols warren calls: libbpf (1.1 or newer) and a few from libc.
 *
 * One frozen table per library. Every parameter carries its C type in a
 * comment. Symbols that libbpf 1.1 lacks are `optional: true`; callers check
 * for `null` and fall back.
 *
 * The library is looked up by soname; `WARREN_LIBBPF` overrides the path.
 *
 * @module
 */

/** `int`, a file descriptor or a negative errno. */
const int = "i32";
/** `__u32` / `unsigned int`. */
const u32 = "u32";
/** `__u64`. */
const u64 = "u64";
/** `size_t`. */
const size_t = "usize";
/** Any native pointer libbpf owns (`struct bpf_object *`, `const char *` …). */
const ptr = "pointer";
/** Memory JavaScript owns, passed for the duration of one call. */
const buf = "buffer";

/** libbpf's symbols, as of libbpf 1.1. */
export const libbpfSymbols = {
  libbpf_major_version: { parameters: [], result: u32 },
  libbpf_minor_version: { parameters: [], result: u32 },
  // libbpf_print_fn_t libbpf_set_print(libbpf_print_fn_t fn)
  libbpf_set_print: { parameters: ["function"], result: ptr },
  // int libbpf_strerror(int err, char *buf, size_t size)
  libbpf_strerror: { parameters: [int, buf, size_t], result: int },
  // int libbpf_num_possible_cpus(void)
  libbpf_num_possible_cpus: { parameters: [], result: int },

  // struct bpf_object *bpf_object__open_file(const char *path,
  //     const struct bpf_object_open_opts *opts)
  bpf_object__open_file: { parameters: [buf, buf], result: ptr },
  // struct bpf_object *bpf_object__open_mem(const void *obj_buf,
  //     size_t obj_buf_sz, const struct bpf_object_open_opts *opts)
  bpf_object__open_mem: { parameters: [buf, size_t, buf], result: ptr },
  // int bpf_object__load(struct bpf_object *obj)
  bpf_object__load: { parameters: [ptr], result: int },
  // void bpf_object__close(struct bpf_object *obj)
  bpf_object__close: { parameters: [ptr], result: "void" },
  // const char *bpf_object__name(const struct bpf_object *obj)
  bpf_object__name: { parameters: [ptr], result: ptr },
  // struct btf *bpf_object__btf(const struct bpf_object *obj)
  bpf_object__btf: { parameters: [ptr], result: ptr },
  // struct bpf_program *bpf_object__next_program(const struct bpf_object *obj,
  //     struct bpf_program *prog)
  bpf_object__next_program: { parameters: [ptr, ptr], result: ptr },
  // struct bpf_map *bpf_object__next_map(const struct bpf_object *obj,
  //     const struct bpf_map *map)
  bpf_object__next_map: { parameters: [ptr, ptr], result: ptr },

  // const char *bpf_program__name(const struct bpf_program *prog)
  bpf_program__name: { parameters: [ptr], result: ptr },
  // const char *bpf_program__section_name(const struct bpf_program *prog)
  bpf_program__section_name: { parameters: [ptr], result: ptr },
  // int bpf_program__fd(const struct bpf_program *prog)
  bpf_program__fd: { parameters: [ptr], result: int },
  // enum bpf_prog_type bpf_program__type(const struct bpf_program *prog)
  bpf_program__type: { parameters: [ptr], result: u32 },
  // int bpf_program__set_autoload(struct bpf_program *prog, bool autoload)
  bpf_program__set_autoload: { parameters: [ptr, "bool"], result: int },
  // int bpf_program__set_flags(struct bpf_program *prog, __u32 flags)
  bpf_program__set_flags: { parameters: [ptr, u32], result: int },
  // __u32 bpf_program__flags(const struct bpf_program *prog)
  bpf_program__flags: { parameters: [ptr], result: u32 },
  // int bpf_program__set_log_buf(struct bpf_program *prog, char *log_buf,
  //     size_t log_size)
  bpf_program__set_log_buf: { parameters: [ptr, ptr, size_t], result: int },
  // int bpf_program__set_log_level(struct bpf_program *prog, __u32 level)
  bpf_program__set_log_level: { parameters: [ptr, u32], result: int },

  // const char *bpf_map__name(const struct bpf_map *map)
  bpf_map__name: { parameters: [ptr], result: ptr },
  // int bpf_map__fd(const struct bpf_map *map)
  bpf_map__fd: { parameters: [ptr], result: int },
  // int bpf_map__reuse_fd(struct bpf_map *map, int fd)
  bpf_map__reuse_fd: { parameters: [ptr, int], result: int },
  // int bpf_map__set_max_entries(struct bpf_map *map, __u32 max_entries)
  bpf_map__set_max_entries: { parameters: [ptr, u32], result: int },
  // __u32 bpf_map__max_entries(const struct bpf_map *map)
  bpf_map__max_entries: { parameters: [ptr], result: u32 },
  // void *bpf_map__initial_value(struct bpf_map *map, size_t *psize)
  bpf_map__initial_value: { parameters: [ptr, buf], result: ptr },
  // int bpf_map__set_inner_map_fd(struct bpf_map *map, int fd)
  bpf_map__set_inner_map_fd: { parameters: [ptr, int], result: int },

  // const struct btf_type *btf__type_by_id(const struct btf *btf, __u32 id)
  btf__type_by_id: { parameters: [ptr, u32], result: ptr },
  // const char *btf__name_by_offset(const struct btf *btf, __u32 offset)
  btf__name_by_offset: { parameters: [ptr, u32], result: ptr },
  // __s64 btf__resolve_size(const struct btf *btf, __u32 type_id)
  btf__resolve_size: { parameters: [ptr, u32], result: "i64" },
  // int btf__resolve_type(const struct btf *btf, __u32 type_id)
  btf__resolve_type: { parameters: [ptr, u32], result: int },
  // __s32 btf__find_by_name_kind(const struct btf *btf, const char *type_name,
  //     __u32 kind)
  btf__find_by_name_kind: { parameters: [ptr, buf, u32], result: int },
  // __u32 btf__type_cnt(const struct btf *btf)
  btf__type_cnt: { parameters: [ptr], result: u32 },
  // struct btf *btf__load_from_kernel_by_id(__u32 id)
  btf__load_from_kernel_by_id: { parameters: [u32], result: ptr },
  // void btf__free(struct btf *btf)
  btf__free: { parameters: [ptr], result: "void" },

  // int bpf_map_create(enum bpf_map_type map_type, const char *map_name,
  //     __u32 key_size, __u32 value_size, __u32 max_entries,
  //     const struct bpf_map_create_opts *opts)
  bpf_map_create: {
    parameters: [u32, buf, u32, u32, u32, buf],
    result: int,
  },
  // int bpf_map_update_elem(int fd, const void *key, const void *value,
  //     __u64 flags)
  bpf_map_update_elem: { parameters: [int, buf, buf, u64], result: int },
  // int bpf_map_lookup_elem(int fd, const void *key, void *value)
  bpf_map_lookup_elem: { parameters: [int, buf, buf], result: int },
  // int bpf_map_delete_elem(int fd, const void *key)
  bpf_map_delete_elem: { parameters: [int, buf], result: int },
  // int bpf_map_get_next_key(int fd, const void *key, void *next_key)
  bpf_map_get_next_key: { parameters: [int, buf, buf], result: int },
  // int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch,
  //     void *keys, void *values, __u32 *count,
  //     const struct bpf_map_batch_opts *opts)
  bpf_map_lookup_batch: {
    parameters: [int, buf, buf, buf, buf, buf, buf],
    result: int,
  },
  // The same call off the JavaScript thread: a big map's next chunk is
  // copied while JavaScript works on the last one.
  bpf_map_lookup_batch_async: {
    name: "bpf_map_lookup_batch",
    parameters: [int, buf, buf, buf, buf, buf, buf],
    result: int,
    nonblocking: true,
  },
  // int bpf_map_update_batch(int fd, const void *keys, const void *values,
  //     __u32 *count, const struct bpf_map_batch_opts *opts)
  bpf_map_update_batch: { parameters: [int, buf, buf, buf, buf], result: int },
  // int bpf_map_delete_batch(int fd, const void *keys, __u32 *count,
  //     const struct bpf_map_batch_opts *opts)
  bpf_map_delete_batch: { parameters: [int, buf, buf, buf], result: int },

  // int bpf_obj_pin(int fd, const char *pathname)
  bpf_obj_pin: { parameters: [int, buf], result: int },
  // int bpf_obj_get(const char *pathname)
  bpf_obj_get: { parameters: [buf], result: int },
  // int bpf_obj_get_info_by_fd(int bpf_fd, void *info, __u32 *info_len)
  bpf_obj_get_info_by_fd: { parameters: [int, buf, buf], result: int },
  // int bpf_prog_get_fd_by_id(__u32 id)
  bpf_prog_get_fd_by_id: { parameters: [u32], result: int },
  // int bpf_map_get_fd_by_id(__u32 id)
  bpf_map_get_fd_by_id: { parameters: [u32], result: int },
  // int bpf_link_get_fd_by_id(__u32 id)
  bpf_link_get_fd_by_id: { parameters: [u32], result: int },

  // int bpf_prog_load(enum bpf_prog_type prog_type, const char *prog_name,
  //     const char *license, const struct bpf_insn *insns, size_t insn_cnt,
  //     struct bpf_prog_load_opts *opts)
  bpf_prog_load: { parameters: [u32, buf, buf, buf, size_t, buf], result: int },

  // int bpf_link_create(int prog_fd, int target_fd,
  //     enum bpf_attach_type attach_type,
  //     const struct bpf_link_create_opts *opts)
  bpf_link_create: { parameters: [int, int, u32, buf], result: int },
  // int bpf_link_update(int link_fd, int new_prog_fd,
  //     const struct bpf_link_update_opts *opts)
  bpf_link_update: { parameters: [int, int, buf], result: int },
  // int bpf_link_detach(int link_fd)
  bpf_link_detach: { parameters: [int], result: int },

  // int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts)
  bpf_prog_test_run_opts: { parameters: [int, buf], result: int },
  // The same call off the JavaScript thread, for long benchmark runs.
  bpf_prog_test_run_opts_async: {
    name: "bpf_prog_test_run_opts",
    parameters: [int, buf],
    result: int,
    nonblocking: true,
  },

  // int bpf_tc_hook_create(struct bpf_tc_hook *hook)
  bpf_tc_hook_create: { parameters: [buf], result: int },
  // int bpf_tc_hook_destroy(struct bpf_tc_hook *hook)
  bpf_tc_hook_destroy: { parameters: [buf], result: int },
  // int bpf_tc_attach(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts)
  bpf_tc_attach: { parameters: [buf, buf], result: int },
  // int bpf_tc_detach(const struct bpf_tc_hook *hook,
  //     const struct bpf_tc_opts *opts)
  bpf_tc_detach: { parameters: [buf, buf], result: int },
  // int bpf_tc_query(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts)
  bpf_tc_query: { parameters: [buf, buf], result: int },

  // int bpf_xdp_query_id(int ifindex, int flags, __u32 *prog_id)
  bpf_xdp_query_id: { parameters: [int, int, buf], result: int },

  // Newer than libbpf 1.1; warren works without them.
  // int bpf_prog_query_opts(int target, enum bpf_attach_type type,
  //     struct bpf_prog_query_opts *opts)    (libbpf 1.2)
  bpf_prog_query_opts: {
    parameters: [int, u32, buf],
    result: int,
    optional: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The few libc symbols warren needs that Deno does not expose. */
export const libcSymbols = {
  // int *__errno_location(void)
  __errno_location: { parameters: [], result: ptr },
  // int close(int fd)
  close: { parameters: [int], result: int },
  // int dup(int fd)
  dup: { parameters: [int], result: int },
  // int open(const char *pathname, int flags)
  open: { parameters: [buf, int], result: int },
  // int setns(int fd, int nstype)
  setns: { parameters: [int, int], result: int },
  // int vsnprintf(char *str, size_t size, const char *format, va_list ap)
  vsnprintf: { parameters: [buf, size_t, ptr, ptr], result: int },
  // unsigned int if_nametoindex(const char *ifname)
  if_nametoindex: { parameters: [buf], result: u32 },
  // char *if_indextoname(unsigned int ifindex, char *ifname)
  if_indextoname: { parameters: [u32, buf], result: ptr },
  // char *strerror(int errnum)
  strerror: { parameters: [int], result: ptr },
  // int clock_gettime(clockid_t clockid, struct timespec *tp)
  clock_gettime: { parameters: [int, buf], result: int },
  // int clock_getres(clockid_t clockid, struct timespec *res)
  clock_getres: { parameters: [int, buf], result: int },
  // int sched_setaffinity(pid_t pid, size_t cpusetsize, const cpu_set_t *mask)
  sched_setaffinity: { parameters: [int, size_t, buf], result: int },
  // int sched_getaffinity(pid_t pid, size_t cpusetsize, cpu_set_t *mask)
  sched_getaffinity: { parameters: [int, size_t, buf], result: int },
  // int sched_getcpu(void)
  sched_getcpu: { parameters: [], result: int },
} as const satisfies Deno.ForeignLibraryInterface;

/** The sonames tried for libbpf, newest first. */
const LIBBPF_NAMES = ["libbpf.so.1", "libbpf.so"];

function openLibbpf(): Deno.DynamicLibrary<typeof libbpfSymbols> {
  const override = Deno.env.get("WARREN_LIBBPF");
  const names = override ? [override] : LIBBPF_NAMES;
  const failures: string[] = [];
  for (const name of names) {
    try {
      return Deno.dlopen(name, libbpfSymbols);
    } catch (err) {
      failures.push(`${name}: ${(err as Error).message}`);
    }
  }
  throw new Error(
    `cannot load libbpf (install libbpf1, or set WARREN_LIBBPF): ${failures.join("; ")}`,
  );
}

let libbpfLib: Deno.DynamicLibrary<typeof libbpfSymbols> | undefined;
let libcLib: Deno.DynamicLibrary<typeof libcSymbols> | undefined;

/** libbpf's symbols, loaded on first use. */
export function libbpf(): Deno.DynamicLibrary<typeof libbpfSymbols>["symbols"] {
  libbpfLib ??= openLibbpf();
  return libbpfLib.symbols;
}

/** libc's symbols, loaded on first use. */
export function libc(): Deno.DynamicLibrary<typeof libcSymbols>["symbols"] {
  libcLib ??= Deno.dlopen("libc.so.6", libcSymbols);
  return libcLib.symbols;
}

/** The errno the last native call left behind. Read it at once. */
export function errno(): number {
  const loc = libc().__errno_location();
  return loc === null ? 0 : new Deno.UnsafePointerView(loc).getInt32();
}

const encoder = new TextEncoder();

/** A NUL-terminated copy of `s`, for `const char *` parameters. */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(s + "\0");
}

/** The string a native `const char *` points to, or "" for NULL. */
export function readCString(p: Deno.PointerValue): string {
  return p === null ? "" : Deno.UnsafePointerView.getCString(p);
}
