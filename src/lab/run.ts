/**
 * Running commands, failing loudly with their stderr.
 *
 * @module
 */

const decoder = new TextDecoder();

/** What a finished command printed. */
export interface Output {
  /** Exit code. */
  code: number;
  /** Standard output, decoded. */
  stdout: string;
  /** Standard error, decoded. */
  stderr: string;
}

/** Runs `cmd` and returns its output whatever the exit code. */
export async function runRaw(
  cmd: string[],
  options: { stdin?: Uint8Array; env?: Record<string, string> } = {},
): Promise<Output> {
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: options.env,
  }).spawn();
  if (options.stdin) {
    const w = child.stdin.getWriter();
    await w.write(options.stdin);
    await w.close();
  }
  const out = await child.output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Runs `cmd`; throws with its stderr unless it exits 0. Returns stdout. */
export async function run(
  cmd: string[],
  options: { stdin?: Uint8Array; env?: Record<string, string> } = {},
): Promise<string> {
  const out = await runRaw(cmd, options);
  if (out.code !== 0) {
    throw new Error(
      `${cmd.join(" ")} exited ${out.code}: ${out.stderr.trim() || out.stdout.trim()}`,
    );
  }
  return out.stdout;
}
