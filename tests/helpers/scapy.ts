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
import json, sys
from scapy.all import *
load_contrib("geneve")
exprs = json.load(sys.stdin)
print(json.dumps([bytes(eval(e)).hex() for e in exprs]))
`;

/**
 * The bytes of each Scapy expression, such as `Ether()/IP()/UDP()`;
 * `prelude` is Python run first, for helpers the expressions call.
 */
export async function scapyMany(exprs: string[], prelude = ""): Promise<Uint8Array[]> {
  const out = await run([PYTHON, "-c", BUILD.replace("exprs =", `${prelude}\nexprs =`)], {
    stdin: new TextEncoder().encode(JSON.stringify(exprs)),
  });
  return (JSON.parse(out) as string[]).map(fromHex);
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
