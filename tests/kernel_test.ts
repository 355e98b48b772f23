/**
 * The loader against the real kernel: programs attached to a veth in a
 * throwaway namespace, real frames sent from another namespace, per-CPU
 * counters that must equal what was sent.
 */
import { assert, assertEquals, assertThrows } from "./helpers/assert.ts";
import {
  attachTc,
  attachXdp,
  BpfError,
  BpfMap,
  BpfObject,
  detachTc,
  Errno,
  haveTcx,
  ifindex,
  isPinned,
  Link,
  Program,
  removeClsactQdisc,
  tcxProbeVerdict,
  testRun,
  unpin,
  xdpContext,
} from "../src/bpf/mod.ts";
import { counterCodec, CounterSlot, PerCpuMap, u32 } from "../src/maps/mod.ts";
import { TempPinDir } from "./helpers/bpffs.ts";
import { macOf, Netns, vethPair } from "../src/lab/netns.ts";
import { COUNTER_OBJECT } from "./helpers/objects.ts";
import { privilegedTest } from "./helpers/privileged.ts";
import { run } from "../src/lab/run.ts";

const { XDP, TC, XDP_V2 } = CounterSlot;

/** Two namespaces joined by a veth: frames go from `tx` (in a) to `rx` (in b). */
async function topology() {
  const a = await Netns.create("wra");
  const b = await Netns.create("wrb");
  await vethPair({ ns: a, name: "wtx", addr: "10.9.0.1/24" }, {
    ns: b,
    name: "wrx",
    addr: "10.9.0.2/24",
  });
  const rxMac = await macOf(b, "wrx");
  return {
    a,
    b,
    rxMac,
    async [Symbol.asyncDispose]() {
      await a[Symbol.asyncDispose]();
      await b[Symbol.asyncDispose]();
    },
  };
}

/**
 * Sends UDP frames with payloads of `sizes` bytes out of `ns`'s wtx and returns
 * their total size. They go to an address nobody owns, so the receiving
 * stack drops them silently instead of answering (an answer would need ARP,
 * and the ARP reply would be counted too).
 */
async function sendFrames(ns: Netns, dstMac: string, sizes: number[]): Promise<number> {
  const script = `
from scapy.all import *
frames = [Ether(dst="${dstMac}")/IP(src="10.9.0.1", dst="10.9.0.99")/UDP(sport=9, dport=9)/Raw(b"w"*n) for n in ${
    JSON.stringify(sizes)
  }]
sendp(frames, iface="wtx", verbose=False)
print(sum(len(f) for f in frames))`;
  return Number((await ns.run(["/usr/bin/python3", "-c", script])).trim());
}

function counts(map: PerCpuMap<number, { packets: bigint; bytes: bigint }>, slot: number) {
  const s = map.sum(slot)!;
  return { packets: Number(s.packets), bytes: Number(s.bytes) };
}

privilegedTest("XDP and TC count real frames exactly; replace, detach", async () => {
  await using net = await topology();
  using obj = BpfObject.openMemory(COUNTER_OBJECT, "counter");
  obj.load();
  using xdp = obj.program("xdp_count");
  using xdp2 = obj.program("xdp_count_v2");
  using tc = obj.program("tc_count");
  using counters = new PerCpuMap(obj.map("counters"), u32, counterCodec);

  const leave = net.b.enter();
  let link: Link;
  let tcAttach;
  try {
    const rx = ifindex("wrx");
    link = attachXdp(xdp, rx, { mode: "native" });
    tcAttach = attachTc(tc, rx, "ingress");
  } finally {
    leave();
  }
  assertEquals(tcAttach.kind, "tcx"); // this kernel is newer than 6.6
  assertEquals(link.info().progId, xdp.info().id);

  const sizes = Array.from({ length: 25 }, (_, i) => 10 + i * 37);
  const bytes = await sendFrames(net.a, net.rxMac, sizes);
  assertEquals(counts(counters, XDP), { packets: 25, bytes });
  assertEquals(counts(counters, TC), { packets: 25, bytes });

  // Swap the XDP program in place: the new one counts, the old one stops.
  link.update(xdp2, xdp);
  assertEquals(link.info().progId, xdp2.info().id);
  const bytes2 = await sendFrames(net.a, net.rxMac, [100, 200, 300]);
  assertEquals(counts(counters, XDP), { packets: 25, bytes });
  assertEquals(counts(counters, XDP_V2), { packets: 3, bytes: bytes2 });
  assertEquals(counts(counters, TC), { packets: 28, bytes: bytes + bytes2 });

  // Detached programs see nothing more.
  link.detach();
  detachTc(tcAttach);
  await sendFrames(net.a, net.rxMac, [50, 60]);
  assertEquals(counts(counters, XDP_V2), { packets: 3, bytes: bytes2 });
  assertEquals(counts(counters, TC), { packets: 28, bytes: bytes + bytes2 });
  link.close();
  if (tcAttach.kind === "tcx") tcAttach.link.close();
});

privilegedTest("generic XDP and the clsact fallback count frames too", async () => {
  await using net = await topology();
  using obj = BpfObject.openMemory(COUNTER_OBJECT, "counter");
  obj.load();
  using xdp = obj.program("xdp_count");
  using tc = obj.program("tc_count");
  using counters = new PerCpuMap(obj.map("counters"), u32, counterCodec);

  const leave = net.b.enter();
  let rx = 0;
  try {
    rx = ifindex("wrx");
    using link = attachXdp(xdp, rx, { mode: "generic" });
    const filter = attachTc(tc, rx, "ingress", "clsact");
    assertEquals(filter.kind, "clsact");
    assert.match(await net.b.run(["tc", "filter", "show", "dev", "wrx", "ingress"]), /tc_count/);
    leave();
    const bytes = await sendFrames(net.a, net.rxMac, [64, 128, 256, 512]);
    assertEquals(counts(counters, XDP), { packets: 4, bytes });
    assertEquals(counts(counters, TC), { packets: 4, bytes });
    net.b.enter();
    detachTc(filter);
    removeClsactQdisc(rx);
    assert.doesNotMatch(await net.b.run(["tc", "qdisc", "show", "dev", "wrx"]), /clsact/);
    link.close();
  } finally {
    leave();
  }
});

privilegedTest("the TCX probe finds TCX exactly on Linux 6.6 and later", () => {
  const [major, minor] = Deno.osRelease().split(".").map(Number);
  assertEquals(haveTcx(), major > 6 || (major === 6 && minor >= 6));
});

Deno.test("the TCX probe reads ENODEV as TCX, EINVAL as none, any other errno as no answer", () => {
  assertEquals(tcxProbeVerdict(new BpfError("probe", Errno.ENODEV)), true);
  assertEquals(tcxProbeVerdict(new BpfError("probe", Errno.EINVAL)), false);
  assertThrows(() => tcxProbeVerdict(new BpfError("probe", Errno.EPERM)), BpfError, "EPERM");
});

privilegedTest(
  "pinned links keep programs attached; another process reads pinned maps",
  async () => {
    await using net = await topology();
    using pins = new TempPinDir();
    const mapPin = `${pins.path}/counters`;
    const linkPin = `${pins.path}/link_xdp`;
    const progPin = `${pins.path}/xdp_count`;
    {
      using obj = BpfObject.openMemory(COUNTER_OBJECT, "counter");
      obj.load();
      using xdp = obj.program("xdp_count");
      using map = obj.map("counters");
      const leave = net.b.enter();
      try {
        using link = attachXdp(xdp, ifindex("wrx"));
        link.pin(linkPin);
      } finally {
        leave();
      }
      map.pin(mapPin);
      xdp.pin(progPin);
    }
    // Every descriptor of this process is closed; the pins hold everything.
    const bytes = await sendFrames(net.a, net.rxMac, [70, 80, 90]);
    const read = JSON.parse(
      await run([
        Deno.execPath(),
        "run",
        "-A",
        new URL("./helpers/read_pinned_counters.ts", import.meta.url).pathname,
        mapPin,
      ]),
    );
    assertEquals(read[XDP], { packets: 3, bytes });

    using prog = Program.fromPin(progPin);
    assertEquals(prog.info().name, "xdp_count");
    using link = Link.fromPin(linkPin);
    assertEquals(link.info().progId, prog.info().id);

    // Unpinning the link and closing the last descriptor detaches the program.
    assert.ok(unpin(linkPin));
    link.close();
    await sendFrames(net.a, net.rxMac, [70]);
    using map = new PerCpuMap(BpfMap.fromPin(mapPin), u32, counterCodec);
    assertEquals(counts(map, XDP), { packets: 3, bytes });
    assert.ok(unpin(mapPin) && unpin(progPin));
    assert.ok(!isPinned(mapPin));
  },
);

privilegedTest(
  "test-run live frames: every repeat is a real frame sent out of the device",
  async () => {
    await using net = await topology();
    using obj = BpfObject.openMemory(COUNTER_OBJECT, "counter");
    obj.load();
    using xdp = obj.program("xdp_count");
    using reflect = obj.program("xdp_reflect");
    using counters = new PerCpuMap(obj.map("counters"), u32, counterCodec);
    // The receiving end counts at XDP (a veth only takes XDP transmits when
    // its peer runs an XDP program).
    const leave = net.b.enter();
    let link: Link;
    try {
      link = attachXdp(xdp, ifindex("wrx"), { mode: "native" });
    } finally {
      leave();
    }
    // xdp_reflect swaps the MAC addresses and answers XDP_TX, which in live
    // mode transmits from the context's ingress device: wtx, towards wrx.
    const frame = new Uint8Array(60);
    frame.set(net.rxMac.split(":").map((h) => parseInt(h, 16)), 6);
    frame.set([0x08, 0x00, 0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17], 12);
    frame.set([10, 9, 0, 1, 10, 9, 0, 99], 26);
    // A veth's transmit ring holds 256 frames; bursts stay well below it so
    // none is dropped and the count can be exact.
    const repeat = 128, bursts = 20;
    for (let i = 0; i < bursts; i++) {
      const result = await net.a.within(() => {
        const ctx = xdpContext(ifindex("wtx"), frame.length);
        return testRun(reflect, { data: frame, ctx, repeat, liveFrames: true });
      });
      assertEquals(result.retval, 0);
      assertEquals(result.data.length, 0);
      // The receiver drains its ring in its own NAPI poll: wait for it.
      for (let t = 0; t < 100 && counts(counters, XDP).packets < (i + 1) * repeat; t++) {
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    const sent = repeat * bursts;
    assertEquals(counts(counters, XDP), { packets: sent, bytes: sent * frame.length });
    link.close();
  },
);
