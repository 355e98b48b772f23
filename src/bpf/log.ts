/**
 * libbpf's own messages, captured instead of printed.
 *
 * libbpf reports through a print callback with a `va_list`; warren formats
 * each message with libc's `vsnprintf` and keeps the recent ones, so an error
 * can quote what libbpf said while the failing call ran. Set
 * `WARREN_LIBBPF_DEBUG=1` to also echo every message to stderr.
 *
 * @module
 */

import { libbpf, libc } from "./ffi.ts";

/** How many recent messages are kept. */
const KEEP = 256;
const messages: string[] = [];
let total = 0;
/** `int (*libbpf_print_fn_t)(enum libbpf_print_level, const char *, va_list)`. */
const PRINT_FN = { parameters: ["i32", "pointer", "pointer"], result: "i32" } as const;
let installed: Deno.UnsafeCallback<typeof PRINT_FN> | undefined;
const scratch = new Uint8Array(8192);
const decoder = new TextDecoder();

/** libbpf's print levels. */
const LEVEL_NAMES = ["warn", "info", "debug"];

function install(): void {
  if (installed) return;
  const echo = Deno.env.get("WARREN_LIBBPF_DEBUG") === "1";
  const callback = new Deno.UnsafeCallback(
    PRINT_FN,
    (level, fmt, args) => {
      const n = libc().vsnprintf(scratch, BigInt(scratch.length), fmt, args);
      const text = decoder.decode(
        scratch.subarray(0, Math.max(0, Math.min(n, scratch.length - 1))),
      );
      if (echo) console.error(`[libbpf ${LEVEL_NAMES[level] ?? level}] ${text.trimEnd()}`);
      // Debug chatter would crowd out the warnings worth quoting.
      if (level <= 1) {
        messages.push(text.replace(/^libbpf: /, "").trimEnd());
        if (messages.length > KEEP) messages.shift();
        total++;
      }
      return 0;
    },
  );
  // The callback lives as long as the process; libbpf may call it any time.
  callback.unref();
  libbpf().libbpf_set_print(callback.pointer);
  installed = callback;
}

/** A position in the message stream; pass it to {@link libbpfMessagesSince}. */
export function libbpfMessageMark(): number {
  install();
  return total;
}

/** The messages libbpf printed since `mark`, one per line. */
export function libbpfMessagesSince(mark: number): string {
  const count = Math.min(total - mark, messages.length);
  return count > 0 ? messages.slice(messages.length - count).join("\n") : "";
}
