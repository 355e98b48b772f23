/**
 * Output for people and for scripts.
 *
 * @module
 */

/** JSON of `value`: bigints as numbers when exact, else as strings. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v) => {
    if (typeof v === "bigint") {
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
    }
    if (v instanceof Uint8Array) {
      return Array.from(v, (b) => b.toString(16).padStart(2, "0")).join("");
    }
    return v;
  }, 2);
}

/** Prints `value` as JSON on stdout. */
export function printJson(value: unknown): void {
  console.log(toJson(value));
}

/** Prints rows under a header, columns padded. */
export function table(header: string[], rows: (string | number | bigint)[][]): void {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  for (const [n, r] of cells.entries()) {
    console.log(
      r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ").trimEnd(),
    );
    if (n === 0 && rows.length === 0) console.log("(none)");
  }
}

/** "1.23s", "45ms", "never": how long since a boot-clock time in ns. */
export function since(usedNs: bigint, nowNs: bigint): string {
  if (usedNs === 0n) return "never";
  const ms = Number((nowNs - usedNs) / 1000000n);
  return ms < 1000 ? `${Math.max(ms, 0)}ms` : `${(ms / 1000).toFixed(3)}s`;
}

/**
 * Stdout writes gathered into large chunks: a dump of a million lines
 * prints fast without being held whole. The text is joined by `+=`
 * (V8 keeps it as a rope until it is read) and encoded into one buffer
 * kept for every chunk: an array of parts joined, then encoded into a
 * new buffer each time, cost twice as much.
 */
export class BufferedOut {
  #text = "";
  #encoder = new TextEncoder();
  #bytes = new Uint8Array(1 << 18);

  /** Adds `s`, writing out what was gathered once it is large. */
  write(s: string): void {
    this.#text += s;
    if (this.#text.length > 1 << 16) this.flush();
  }

  /** Writes out everything gathered so far. */
  flush(): void {
    let text = this.#text;
    this.#text = "";
    while (text.length > 0) {
      // Text beyond the buffer (a character is up to 3 bytes) goes in the next round.
      const { read, written } = this.#encoder.encodeInto(text, this.#bytes);
      const bytes = this.#bytes.subarray(0, written);
      for (let at = 0; at < bytes.length;) at += Deno.stdout.writeSync(bytes.subarray(at));
      text = text.slice(read);
    }
  }
}
