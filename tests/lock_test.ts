/**
 * The datapath lock across processes: `down` removes its file while
 * holding it, and a process that was waiting then holds the lock on the
 * file at the path, not on the removed one a newcomer would never see.
 */
import { assertEquals } from "./helpers/assert.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { DatapathLock, lockPath, removeLockFile } from "../src/tunnel/lock.ts";

privilegedTest(
  "a waiter for a lock whose file down removed locks the file at the path",
  async () => {
    const pinDir = `/sys/fs/bpf/warren-lock-test-${crypto.randomUUID().slice(0, 8)}`;
    const path = lockPath(pinDir);
    const held = DatapathLock.acquire(pinDir);
    // Another process opens the lock file, says so, waits for the lock, then
    // says whether the file it holds is the one at the path.
    const script = `
    import { DatapathLock } from "${new URL("../src/tunnel/lock.ts", import.meta.url)}";
    const f = Deno.openSync("${path}", { write: true });
    console.log("open");
    using _ = DatapathLock.acquire("${pinDir}", f);
    console.log(f.statSync().ino === Deno.statSync("${path}").ino ? "the removed file" : "a new file");`;
    const waiter = new Deno.Command(Deno.execPath(), {
      args: ["eval", script],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const lines = waiter.stdout.pipeThrough(new TextDecoderStream()).getReader();
    try {
      assertEquals((await lines.read()).value?.trim(), "open");
      // What down does, the waiter holding the file open.
      removeLockFile(pinDir);
      held.release();
      let rest = "";
      for (let r = await lines.read(); !r.done; r = await lines.read()) rest += r.value;
      const status = await waiter.status;
      assertEquals([status.code, rest.trim()], [0, "a new file"]);
    } finally {
      lines.releaseLock();
      await waiter.stderr.cancel();
      removeLockFile(pinDir);
    }
  },
);
