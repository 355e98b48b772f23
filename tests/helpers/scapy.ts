/**
 * Packets built by Scapy, an independent packet builder, so tests compare
 * warren's output against bytes warren did not make.
 *
 * Debian's scapy is importable by /usr/bin/python3 (not by other pythons).
 *
 * @module
 */

import { run } from "../../src/lab/run.ts";

const PYTHON = "/usr/bin/python3";

const BUILD = `
load_contrib("geneve")
print(json.dumps([bytes(eval(e)).hex() for e in data]))
`;

/**
 * Runs a Scapy script (with `from scapy.all import *` done) that reads
 * `input` as JSON from the variable `data` and prints JSON, and returns
 * what it printed.
 */
export async function scapyJson<T>(script: string, input: unknown): Promise<T> {
  const out = await run([
    PYTHON,
    "-c",
    `import json, sys\nfrom scapy.all import *\ndata = json.load(sys.stdin)\n${script}`,
  ], { stdin: new TextEncoder().encode(JSON.stringify(input)) });
  return JSON.parse(out) as T;
}

/**
 * The bytes of each Scapy expression, such as `Ether()/IP()/UDP()`;
 * `prelude` is Python run first, for helpers the expressions call.
 */
export async function scapyMany(exprs: string[], prelude = ""): Promise<Uint8Array[]> {
  return (await scapyJson<string[]>(`${prelude}\n${BUILD}`, exprs)).map(fromHex);
}

/** The bytes of one Scapy expression. */
export async function scapy(expr: string): Promise<Uint8Array> {
  return (await scapyMany([expr]))[0];
}

/** Runs a Scapy script (with `from scapy.all import *` done). */
export async function scapyScript(script: string): Promise<string> {
  return await run([PYTHON, "-c", `from scapy.all import *\n${script}`]);
}

/** Bytes from hex text. */
export function fromHex(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
}

/** Hex text of bytes. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
