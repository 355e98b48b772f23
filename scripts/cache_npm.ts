/**
 * Puts every npm package deno.lock names in Deno's cache (DENO_DIR), each
 * with its registry metadata, refusing any drift from the lock file.
 * scripts/run runs it before any task; run it alone with
 * `deno run -A scripts/cache_npm.ts`.
 *
 * Why not just `deno install --frozen`: it writes a package's metadata (its
 * packument, `registry.json`) only when it downloads the package itself. A
 * `deno task` run in this checkout before it (deno task first caches what
 * the lock file names) caches the packages' files alone, and deno install
 * then leaves them be. With the metadata missing, a deno process loading
 * warren's code fetches it again in the background ("Download
 * https://registry.npmjs.org/commander", yaml, prom-client: the CLI's
 * packages, the lazily imported ones included) and a short-lived one, such
 * as a warren command, exits before writing it: in the demo every command
 * printed those lines after its output. So when any top-level package
 * lacks its metadata, everything is fetched again, once.
 *
 * @module
 */

const ROOT = new URL("../", import.meta.url).pathname;

async function deno(...args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), { args, cwd: ROOT, stderr: "inherit" })
    .output();
  if (!out.success) throw new Error(`deno ${args.join(" ")} failed`);
  return new TextDecoder().decode(out.stdout);
}

/** The top-level npm packages of deno.lock whose metadata the cache lacks. */
async function missingMetadata(): Promise<string[]> {
  const lock = JSON.parse(await Deno.readTextFile(`${ROOT}deno.lock`));
  const names = Object.keys(lock.specifiers ?? {})
    .filter((s) => s.startsWith("npm:"))
    .map((s) => s.slice(4).replace(/@[^@]*$/, ""));
  const { npmCache } = JSON.parse(await deno("info", "--json"));
  // One directory per registry host; which one does not matter here.
  const registries: string[] = [];
  try {
    for await (const e of Deno.readDir(npmCache)) if (e.isDirectory) registries.push(e.name);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const has = async (name: string) => {
    for (const r of registries) {
      try {
        await Deno.stat(`${npmCache}/${r}/${name}/registry.json`);
        return true;
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
    return false;
  };
  const missing: string[] = [];
  for (const name of names) if (!(await has(name))) missing.push(name);
  return missing;
}

await deno("install", "--frozen", "--quiet");
if ((await missingMetadata()).length) {
  await deno("install", "--frozen", "--reload=npm:", "--quiet");
  const still = await missingMetadata();
  if (still.length) throw new Error(`no registry metadata cached for ${still.join(", ")}`);
}
