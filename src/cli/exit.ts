/**
 * How a command ends: 0 done, 1 the command failed (the reason on stderr,
 * nothing half-applied), 2 the command line itself was wrong.
 *
 * @module
 */

import { CommanderError } from "commander";
import { BpfError, LayoutError, NotFoundError, VerifierError } from "../bpf/errors.ts";
import { CapabilityError } from "../bpf/caps.ts";
import { CompileError } from "../tunnel/compile.ts";
import { MatchError } from "../tunnel/match.ts";
import { FlowSyntaxError } from "../tunnel/flow_tokens.ts";
import { FlowTableError } from "../tunnel/flow_table.ts";
import { PortError } from "../tunnel/port.ts";

/** Errors that are the user's to fix: printed as one sentence. */
const EXPECTED = [
  BpfError,
  CapabilityError,
  CompileError,
  FlowSyntaxError,
  FlowTableError,
  LayoutError,
  MatchError,
  NotFoundError,
  PortError,
  RangeError,
  VerifierError,
];

/**
 * The exit code for a command that threw `err`, its reason printed on
 * stderr. With $WARREN_DEBUG set, an error that is not the user's to fix
 * is rethrown, stack and all.
 */
export function exitCode(err: unknown): number {
  if (err instanceof CommanderError) {
    if (err.code === "commander.helpDisplayed" || err.code === "commander.version") return 0;
    if (err.code === "commander.help") return 0;
    if (err.code.startsWith("warren.")) console.error(`warren: ${err.message}`);
    return 2;
  }
  if (EXPECTED.some((cls) => err instanceof cls)) {
    console.error(`warren: ${(err as Error).message}`);
    return 1;
  }
  if (Deno.env.get("WARREN_DEBUG")) throw err;
  console.error(`warren: ${err instanceof Error ? err.message : String(err)}`);
  return 1;
}
