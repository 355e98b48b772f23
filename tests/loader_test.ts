import { assert, assertEquals, assertThrows } from "./helpers/assert.ts";
import {
  BackgroundBatchWrites,
  type BatchChunk,
  BpfError,
  BpfMap,
  BpfObject,
  KeyExistsError,
  KeyNotFoundError,
  LayoutError,
  MapType,
  NotFoundError,
  testRun,
  VerifierError,
} from "../src/bpf/mod.ts";
import { counterCodec, PerCpuMap, struct, u32, u64 } from "../src/maps/mod.ts";
import { BUILD_DIR, COUNTER_OBJECT, VERIFIER_REJECT_OBJECT } from "./helpers/objects.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { scapy } from "./helpers/scapy.ts";

Deno.test("opening a missing object file names the file and ENOENT", () => {
  const err = assertThrows(
    () => BpfObject.openFile("/nonexistent/warren.bpf.o"),
    BpfError,
    "ENOENT",
  ) as BpfError;
  assert.match(err.message, /\/nonexistent\/warren\.bpf\.o/);
  assertEquals(err.code, "ENOENT");
});

Deno.test("a corrupt ELF is refused with libbpf's reason", () => {
  const path = Deno.makeTempFileSync({ suffix: ".o" });
  try {
    Deno.writeFileSync(path, crypto.getRandomValues(new Uint8Array(4096)));
    const err = assertThrows(() => BpfObject.openFile(path), BpfError) as BpfError;
    assert.match(err.libbpfLog, /not a proper ELF object|elf/i);
    // A real object cut short is just as corrupt.
    assertThrows(() => BpfObject.openMemory(COUNTER_OBJECT.subarray(0, 200), "cut"), BpfError);
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("asking an object for a name it lacks lists the names it has", () => {
  using obj = BpfObject.openMemory(COUNTER_OBJECT, "counter");
  assertThrows(
    () => obj.setMaxEntries("flows", 4),
    NotFoundError,
    'no map named "flows" (it has: counters)',
  );
  assertThrows(
    () => obj.setAutoload("xdp_nope", false),
    NotFoundError,
    "it has: xdp_count, xdp_count_v2",
  );
  assertThrows(() => obj.map("counters"), Error, "not loaded yet");
});

privilegedTest("a program the verifier rejects fails with the verifier's log", () => {
  using obj = BpfObject.openMemory(VERIFIER_REJECT_OBJECT, "verifier_reject");
  const err = assertThrows(() => obj.load(), VerifierError) as VerifierError;
  assertEquals(err.program, "xdp_unchecked_read");
  assertEquals(err.code, "EACCES");
  assert.match(err.log, /invalid access to packet/);
  assert.match(err.message, /invalid access to packet/);
});

privilegedTest("a loaded map whose layout differs from the codec is refused", () => {
  using obj = BpfObject.openMemory(COUNTER_OBJECT, "counter");
  obj.load();
  using good = new PerCpuMap(obj.map("counters"), u32, counterCodec);
  assertEquals(good.cpus > 0, true);
  // Same size, different member names and widths: only BTF can tell.
  const wrong = struct("wr_counter", { bytes: u64, packets: u64 });
  const err = assertThrows(() => new PerCpuMap(obj.map("counters"), u32, wrong), LayoutError);
  assert.match(err.message, /member 0 is packets@0\+8 in the kernel, bytes@0\+8 in TypeScript/);
  assertThrows(
    () => new PerCpuMap(obj.map("counters"), u32, struct("x", { a: u64 })),
    LayoutError,
    "value is 16 bytes",
  );
});

function openFds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

privilegedTest("no file descriptor leaks through load, take, test-run and close", () => {
  const pkt = new Uint8Array(64);
  const cycle = () => {
    using obj = BpfObject.openFile(`${BUILD_DIR}counter.bpf.o`);
    obj.load();
    using prog = obj.program("xdp_count");
    using map = new PerCpuMap(obj.map("counters"), u32, counterCodec);
    testRun(prog, { data: pkt });
    map.sum(0);
    try {
      obj.map("absent");
    } catch { /* errors must not leak either */ }
  };
  cycle(); // the first cycle opens libraries and caches for good
  const before = openFds();
  for (let i = 0; i < 25; i++) cycle();
  assertEquals(openFds(), before);
});

privilegedTest("test-run of the reflector gives Scapy's packet byte for byte", async () => {
  using obj = BpfObject.openMemory(COUNTER_OBJECT, "counter");
  obj.load();
  using prog = obj.program("xdp_reflect");
  const input = await scapy(
    "Ether(src='02:00:00:00:00:01', dst='02:00:00:00:00:02')/IP(src='10.0.0.1', dst='10.0.0.2', ttl=64)/UDP(sport=4000, dport=5000)/Raw(b'warren'*8)",
  );
  const expected = await scapy(
    "Ether(src='02:00:00:00:00:02', dst='02:00:00:00:00:01')/IP(src='10.0.0.1', dst='10.0.0.2', ttl=63)/UDP(sport=4000, dport=5000)/Raw(b'warren'*8)",
  );
  const out = testRun(prog, { data: input });
  assertEquals(out.retval, 3 /* XDP_TX */);
  assertEquals(out.data, expected);
  // Not IPv4: left alone.
  const arp = await scapy("Ether(dst='ff:ff:ff:ff:ff:ff')/ARP(pdst='10.0.0.9')");
  const passed = testRun(prog, { data: arp, repeat: 100 });
  assertEquals(passed.retval, 2 /* XDP_PASS */);
  assertEquals(passed.data, arp);
  assert.ok(passed.durationNs > 0);
});

/** A hash map of 10 000 u32 keys to u64 values, for the tests below. */
function hashMap(): BpfMap {
  return BpfMap.create({
    type: MapType.HASH,
    name: "wr_test",
    keySize: 4,
    valueSize: 8,
    maxEntries: 10000,
  });
}

privilegedTest(
  "batch writes on a worker thread: every batch lands while the next is filled; a write the kernel refuses is thrown",
  () => {
    using map = hashMap();
    const chunk = 4096;
    const entries = 9000; // two whole batches, then a part
    {
      using writes = new BackgroundBatchWrites(map, chunk);
      for (let at = 0; at < entries; at += chunk) {
        const { keys, values } = writes.buffers();
        const k = new DataView(keys.buffer), v = new DataView(values.buffer);
        const n = Math.min(chunk, entries - at);
        for (let i = 0; i < n; i++) {
          k.setUint32(4 * i, at + i, true);
          v.setBigUint64(8 * i, BigInt(at + i) * 3n, true);
        }
        writes.submit(n);
      }
      writes.finish();
    }
    let count = 0;
    for (const c of map.lookupBatch(4096)) {
      const k = new DataView(c.keys.buffer), v = new DataView(c.values.buffer);
      for (let i = 0; i < c.count; i++) {
        assertEquals(v.getBigUint64(8 * i, true), BigInt(k.getUint32(4 * i, true)) * 3n);
      }
      count += c.count;
    }
    assertEquals(count, entries);
    // 1 000 more than the map holds: the last batch fails, and says how far it got.
    using writes = new BackgroundBatchWrites(map, chunk);
    for (let at = entries; at < 11000; at += chunk) {
      const { keys } = writes.buffers();
      const k = new DataView(keys.buffer);
      const n = Math.min(chunk, 11000 - at);
      for (let i = 0; i < n; i++) k.setUint32(4 * i, at + i, true);
      writes.submit(n);
    }
    assertThrows(() => writes.finish(), BpfError, "E2BIG");
  },
);

privilegedTest("hash maps: update modes, lookup, delete, iterate and batch operations", () => {
  using map = hashMap();
  const key = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
  const value = (n: bigint) => new Uint8Array(new BigUint64Array([n]).buffer);
  map.update(key(1), value(10n), "noexist");
  assertThrows(() => map.update(key(1), value(11n), "noexist"), KeyExistsError, "EEXIST");
  assertThrows(() => map.update(key(2), value(20n), "exist"), KeyNotFoundError, "ENOENT");
  map.update(key(1), value(12n), "exist");
  assertEquals(map.lookup(key(1)), value(12n));
  assertEquals(map.lookup(key(2)), undefined);
  assertEquals(map.delete(key(1)), true);
  assertEquals(map.delete(key(1)), false);
  // insert: BPF_NOEXIST answered, not thrown; the value there stays.
  assertEquals(map.insert(key(3), value(30n)), true);
  assertEquals(map.insert(key(3), value(31n)), false);
  assertEquals(map.lookup(key(3)), value(30n));
  assertEquals(map.delete(key(3)), true);

  const n = 5000;
  const keys = new Uint8Array(n * 4);
  const values = new Uint8Array(n * 8);
  for (let i = 0; i < n; i++) {
    keys.set(key(i), i * 4);
    values.set(value(BigInt(i) * 3n), i * 8);
  }
  map.updateBatch(keys, values, n);
  const seen = new Map<number, bigint>();
  for (const chunk of map.lookupBatch(512)) {
    const k = new Uint32Array(chunk.keys.slice().buffer);
    const v = new BigUint64Array(chunk.values.slice().buffer);
    k.forEach((kk, i) => seen.set(kk, v[i]));
  }
  assertEquals(seen.size, n);
  for (let i = 0; i < n; i++) assertEquals(seen.get(i), BigInt(i) * 3n);
  assertEquals([...map.keys()].length, n);
  map.deleteBatch(keys, n);
  assertEquals(map.nextKey(null), undefined);
});

privilegedTest(
  "hash maps: batch reads off the JavaScript thread give what the synchronous ones give",
  async () => {
    using map = hashMap();
    const n = 5000;
    const keys = new Uint32Array(n).map((_, i) => i);
    const values = new BigUint64Array(n).map((_, i) => BigInt(i) * 3n);
    map.updateBatch(new Uint8Array(keys.buffer), new Uint8Array(values.buffer), n);
    const add = (seen: Map<number, bigint>, chunk: BatchChunk) => {
      assertEquals(chunk.keys.length, chunk.count * 4);
      const k = new Uint32Array(chunk.keys.slice().buffer);
      const v = new BigUint64Array(chunk.values.slice().buffer);
      k.forEach((kk, i) => seen.set(kk, v[i]));
    };
    // A chunk of 1 is smaller than some hash bucket: the walk grows its
    // buffers (ENOSPC) and still gives every entry once.
    for (const size of [512, 1]) {
      const seen = new Map<number, bigint>(), async = new Map<number, bigint>();
      let chunks = 0, asyncChunks = 0;
      for (const chunk of map.lookupBatch(size)) {
        add(seen, chunk);
        chunks++;
      }
      // Two sets of buffers, the next chunk read while this one is taken.
      for await (const chunk of map.lookupBatchAsync(size)) {
        add(async, chunk);
        asyncChunks++;
      }
      assertEquals(seen.size, n);
      for (let i = 0; i < n; i++) assertEquals(seen.get(i), BigInt(i) * 3n);
      assertEquals(async, seen);
      assertEquals(asyncChunks, chunks);
    }
  },
);
