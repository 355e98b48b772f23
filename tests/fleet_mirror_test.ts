/**
 * The store mirror against a real etcd: compaction, silent watches, a
 * restored snapshot, an outage. Each test checks the mirror ends equal to
 * etcd, reports only the difference, and logs a bounded number of lines.
 */

import { assert, assertEquals } from "./helpers/assert.ts";
import { TestEtcd } from "../src/lab/etcd.ts";
import { LineLog, TEST_BACKOFF, waitFor } from "./helpers/fleet.ts";
import { TcpProxy } from "../src/lab/tcp_proxy.ts";
import { EtcdClient, valueText } from "../src/fleet/client.ts";
import { type Change, Mirror } from "../src/fleet/mirror.ts";
import { PREFIX, prefixEnd } from "../src/fleet/keys.ts";

const K = (s: string) => `${PREFIX}test/${s}`;

/** A mirror of PREFIX through `url`, recording its changes. */
function follow(url: string, checkIntervalMs = 300) {
  const log = new LineLog();
  const changes: Change[][] = [];
  const attempts: number[] = [];
  const mirror = new Mirror({
    prefix: PREFIX,
    connect: () => {
      attempts.push(Date.now());
      return EtcdClient.connect({ endpoints: [url], callTimeoutMs: 1000 });
    },
    onChange: (c) => changes.push(c),
    checkIntervalMs,
    backoff: TEST_BACKOFF,
    log: log.sink,
  });
  mirror.start();
  return { mirror, changes, log, attempts };
}

/** The mirror's contents as key → value text. */
function contents(m: Mirror): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, e] of m.entries) out[k] = valueText(e.value);
  return out;
}

/** etcd's contents under PREFIX as key → value text. */
async function truth(c: EtcdClient): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of (await c.list(PREFIX, prefixEnd(PREFIX))).entries) {
    out[e.key] = valueText(e.value);
  }
  return out;
}

/** Every change reported after batch `from`, as "put key=value" / "del key" lines, sorted. */
function reported(changes: Change[][], from: number): string[] {
  return changes.slice(from).flat().map((c) =>
    c.next ? `put ${c.key}=${valueText(c.next.value)}` : `del ${c.key}`
  ).sort();
}

Deno.test("a mirror closes whenever it is closed: before its list, or while its watch is opening", async () => {
  await using etcd = await TestEtcd.start();
  using admin = await EtcdClient.connect(await etcd.clientOptions());
  await admin.raw.put(K("a")).value("1");
  const closes = async (m: Mirror, when: string) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`close ${when} hung`)), 5000);
    });
    try {
      await Promise.race([m.close(), late]);
    } finally {
      clearTimeout(timer);
    }
  };
  await closes(follow(etcd.url).mirror, "right after start");
  // Synced resolves as the list ends, while the watch stream is being opened.
  const { mirror } = follow(etcd.url);
  await mirror.synced;
  await closes(mirror, "right after the first list");
  assertEquals(mirror.stats.watches, 0);
});

Deno.test("after a compaction the mirror relists once, loses no event and reports only the difference", async () => {
  await using etcd = await TestEtcd.start();
  await using proxy = TcpProxy.start(Number(new URL(etcd.url).port));
  using admin = await EtcdClient.connect(await etcd.clientOptions());
  for (let i = 1; i <= 5; i++) await admin.raw.put(K(`a${i}`)).value(`v${i}`);
  const { mirror, changes, log } = follow(proxy.url());
  try {
    await mirror.synced;
    assertEquals(contents(mirror), await truth(admin));
    await proxy.cut();
    await admin.raw.put(K("b1")).value("new");
    await admin.raw.put(K("b2")).value("new");
    await admin.raw.delete().key(K("a1"));
    await admin.raw.put(K("a2")).value("changed");
    const rev = (await admin.header(PREFIX)).revision;
    await admin.raw.kv.compact({ revision: rev, physical: true });
    const before = changes.length;
    proxy.restore();
    const want = await truth(admin);
    await waitFor("the mirror to catch up", () => mirror.stats.lists === 2, 10_000);
    assertEquals(contents(mirror), want);
    assertEquals(reported(changes, before), [
      `del ${K("a1")}`,
      `put ${K("a2")}=changed`,
      `put ${K("b1")}=new`,
      `put ${K("b2")}=new`,
    ]);
    assertEquals(mirror.stats.compactions, 1);
    // The cut is one failure logged, and its end: no line per retry.
    assert(log.lines.length <= 2, log.lines.join("\n"));
    // Watching goes on from the relist's revision.
    await admin.raw.put(K("after")).value("x");
    await waitFor("an event after the relist", () => mirror.entries.has(K("after")));
    assertEquals(mirror.stats.lists, 2);
  } finally {
    await mirror.close();
  }
});

Deno.test("a watch that goes silent is noticed and the change it hid arrives", async () => {
  await using etcd = await TestEtcd.start();
  await using proxy = TcpProxy.start(Number(new URL(etcd.url).port));
  using admin = await EtcdClient.connect(await etcd.clientOptions());
  await admin.raw.put(K("a")).value("1");
  const { mirror } = follow(proxy.url(), 200);
  try {
    await mirror.synced;
    // The connection stays open but carries nothing: no error, no event.
    proxy.freeze();
    await admin.raw.put(K("hidden")).value("2");
    const ms = await waitFor("the hidden change", () => mirror.entries.has(K("hidden")), 5000);
    assertEquals(mirror.stats.silences, 1);
    assertEquals(mirror.stats.lists, 2);
    assertEquals(contents(mirror), await truth(admin));
    // Three silent check intervals, then a reconnect and a relist.
    assert(ms >= 400 && ms < 3000, `noticed after ${ms} ms`);
  } finally {
    await mirror.close();
  }
});

Deno.test("a restored snapshot sends the revision back: a full resync leaves nothing stale", async () => {
  await using etcd = await TestEtcd.start();
  using admin = await EtcdClient.connect(await etcd.clientOptions());
  await admin.raw.put(K("a")).value("1");
  await admin.raw.put(K("b")).value("1");
  const snap = await etcd.snapshot();
  const { mirror, changes } = follow(etcd.url);
  try {
    await mirror.synced;
    await admin.raw.put(K("c")).value("after-snapshot");
    await admin.raw.put(K("a")).value("2");
    await admin.raw.delete().key(K("b"));
    await waitFor(
      "the later writes",
      () => mirror.entries.has(K("c")) && !mirror.entries.has(K("b")),
    );
    const before = changes.length;
    const revision = mirror.revision;
    await etcd.restore(snap);
    using after = await EtcdClient.connect(await etcd.clientOptions());
    assert((await after.header(PREFIX)).revision < revision, "the revision went back");
    await waitFor("the resync", () => mirror.stats.resyncs === 1, 10_000);
    assertEquals(contents(mirror), await truth(after));
    assertEquals(reported(changes, before), [
      `del ${K("c")}`,
      `put ${K("a")}=1`,
      `put ${K("b")}=1`,
    ]);
  } finally {
    await mirror.close();
  }
});

Deno.test("etcd down then back: nothing withdrawn meanwhile, every mirror converges within 2 s, reconnects spread out", async () => {
  await using etcd = await TestEtcd.start();
  using admin = await EtcdClient.connect(await etcd.clientOptions());
  for (let i = 0; i < 20; i++) await admin.raw.put(K(`k${i}`)).value("v");
  const mirrors = Array.from({ length: 6 }, () => follow(etcd.url));
  try {
    await Promise.all(mirrors.map((m) => m.mirror.synced));
    await etcd.stop();
    await new Promise((r) => setTimeout(r, 3000));
    // Nothing is withdrawn because of an outage.
    for (const { mirror, changes } of mirrors) {
      assertEquals(mirror.entries.size, 20);
      assert(changes.flat().every((c) => c.next), "no deletion reported");
    }
    // Timed from etcd's start, which is before it serves: conservative.
    const back = Date.now();
    await etcd.startProcess();
    using fresh = await EtcdClient.connect(await etcd.clientOptions());
    await fresh.raw.put(K("made-at-return")).value("x");
    await waitFor(
      "every mirror to see the change",
      () => mirrors.every(({ mirror }) => mirror.entries.has(K("made-at-return"))),
      5000,
    );
    const ms = Date.now() - back;
    assert(ms < 2000, `converged ${ms} ms after etcd's return`);
    // Each mirror's first try after etcd's return: jitter spreads them.
    const first = mirrors.map(({ attempts }) => attempts.find((t) => t >= back)! - back);
    const spread = Math.max(...first) - Math.min(...first);
    console.log(`first tries after etcd's return (ms): ${first.sort((a, b) => a - b).join(" ")}`);
    assert(spread >= 100, `tries spread over ${spread} ms only`);
    for (const { attempts } of mirrors) {
      const during = attempts.filter((t) => t < back).length;
      // Paced by backoff: 3 s of outage is a handful of tries, not a storm.
      assert(during <= 20, `${during} tries during the outage`);
    }
    for (const { log } of mirrors) assert(log.lines.length <= 2, log.lines.join("\n"));
  } finally {
    await Promise.all(mirrors.map((m) => m.mirror.close()));
  }
});
