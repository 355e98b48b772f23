/**
 * Traffic between workloads: ping, a TCP transfer whose payload hashes are
 * compared, UDP datagrams counted or compared on arrival.
 *
 * @module
 */

import type { Netns } from "../../src/lab/netns.ts";
import type { Workload } from "../../src/lab/topology.ts";
import { toHex } from "./scapy.ts";

/** What a ping run reported. */
export interface PingResult {
  /** Echo requests sent. */
  sent: number;
  /** Replies received (duplicates not included). */
  received: number;
  /** Duplicate replies. */
  duplicates: number;
  /** Everything ping printed. */
  output: string;
}

/** Pings `to` from `from` with `size`-byte payloads. */
export async function ping(
  from: Workload,
  to: string,
  options: { count?: number; size?: number; dontFragment?: boolean; interval?: number } = {},
): Promise<PingResult> {
  const count = options.count ?? 3;
  const args = [
    "ping",
    "-c",
    String(count),
    "-i",
    String(options.interval ?? 0.05),
    "-W",
    "2",
    "-s",
    String(options.size ?? 56),
  ];
  if (options.dontFragment) args.push("-M", "do");
  const out = await from.ns.runRaw([...args, to]);
  const output = out.stdout + out.stderr;
  const m = /(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?/.exec(output);
  return {
    sent: Number(m?.[1] ?? 0),
    received: Number(m?.[2] ?? 0),
    duplicates: Number(m?.[3] ?? 0),
    output,
  };
}

/**
 * Pings both ways at each of `sizes` bytes (three of each, all answered),
 * then sends `bytes` over TCP each way, the hashes of each transfer equal.
 */
export async function bothWays(
  a: Workload,
  b: Workload,
  sizes: number[],
  bytes: number,
): Promise<void> {
  for (const size of sizes) {
    for (const [from, to] of [[a, b], [b, a]]) {
      const r = await ping(from, to.ip, { count: 3, size });
      const got = [r.sent, r.received, r.duplicates];
      if (got.join() !== "3,3,0") throw new Error(`ping -s ${size} ${to.ip}: ${r.output}`);
    }
  }
  for (const [from, to] of [[a, b], [b, a]]) {
    const t = await tcpTransfer(from, to, bytes);
    if (t.received !== t.sent) throw new Error(`${bytes} bytes to ${to.ip} arrived changed`);
  }
}

/** The UDP checksum errors `ns`'s kernel counted, IPv4 and IPv6. */
export async function udpCsumErrors(ns: Netns): Promise<Record<string, number>> {
  const out = await ns.run(["nstat", "-asz", "UdpInCsumErrors", "Udp6InCsumErrors"]);
  return Object.fromEntries([...out.matchAll(/^(\w+)\s+(\d+)/gm)].map((m) => [m[1], Number(m[2])]));
}

/** The frames an IPv4 packet of `ipLen` bytes becomes at MTU `mtu`. */
export function ipv4Fragments(ipLen: number, mtu: number): number[] {
  const per = Math.floor((mtu - 20) / 8) * 8;
  const payload = ipLen - 20;
  const frames: number[] = [];
  for (let off = 0; off < payload; off += per) frames.push(14 + 20 + Math.min(per, payload - off));
  return frames;
}

/**
 * Sends `bytes` random bytes over TCP from `from` to `to` (which listens on
 * port 5001; the client connects to `address` and `port`, which a rewrite
 * on the way may turn into those) and returns both ends' SHA-256.
 */
export async function tcpTransfer(
  from: Workload,
  to: Workload,
  bytes: number,
  address = to.ip,
  port = 5001,
): Promise<{ sent: string; received: string }> {
  const dir = await Deno.makeTempDir({ prefix: "warren-tcp-" });
  try {
    const file = `${dir}/payload`;
    const sink = `${dir}/received`;
    await Deno.writeFile(file, randomBytes(bytes));
    const listen = address.includes(":")
      ? "TCP6-LISTEN:5001,reuseaddr"
      : "TCP-LISTEN:5001,reuseaddr";
    const server = new Deno.Command("ip", {
      args: ["netns", "exec", to.ns.name, "timeout", "60", "socat", "-u", listen, `CREATE:${sink}`],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    await waitForListener(to.ns, 5001);
    const target = address.includes(":") ? `TCP6:[${address}]:${port}` : `TCP:${address}:${port}`;
    const client = await from.ns.runRaw(["timeout", "60", "socat", "-u", `OPEN:${file}`, target]);
    const done = await server.output();
    if (client.code !== 0 || done.code !== 0) {
      throw new Error(
        `TCP transfer failed: client ${client.code} ${client.stderr} server ${done.code} ${
          new TextDecoder().decode(done.stderr)
        }`,
      );
    }
    return { sent: await sha256(file), received: await sha256(sink) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Sends `count` UDP datagrams of `size` bytes from `from` to `to` (port
 * 5002) and returns how many arrived. With `gso`, they leave in one send
 * that the kernel keeps whole as one UDP GSO packet (`UDP_SEGMENT`) until
 * something segments it, so `count * size` is at most 64 KB.
 */
export async function udpBurst(
  from: Workload,
  to: Workload,
  count: number,
  size: number,
  options: { gso?: boolean } = {},
): Promise<number> {
  return (await udpDatagrams(from, to, count, size, options)).length;
}

/**
 * The payload of datagram `i` of {@link udpDatagrams}' `size`-byte burst:
 * bytes that differ from datagram to datagram and within one, so a
 * datagram cut, shifted or swapped shows.
 */
export function burstPayload(i: number, size: number): string {
  return toHex(Uint8Array.from({ length: size }, (_, k) => (i * 31 + k) % 256));
}

/**
 * As {@link udpBurst}, but returns the payloads that arrived, in hex, in
 * the order they arrived; datagram i carries {@link burstPayload}(i, size).
 */
export async function udpDatagrams(
  from: Workload,
  to: Workload,
  count: number,
  size: number,
  options: { gso?: boolean } = {},
): Promise<string[]> {
  // A roomy buffer: datagrams warren cut from a GSO packet each carry
  // its buffer, and count for more than their length at the receiver.
  const recv = `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind(("0.0.0.0", 5002))
s.settimeout(2)
try:
    while True:
        print(s.recv(65535).hex())
except socket.timeout:
    pass`;
  const server = new Deno.Command("ip", {
    args: ["netns", "exec", to.ns.name, "/usr/bin/python3", "-c", recv],
    stdout: "piped",
  }).spawn();
  await waitForListener(to.ns, 5002, "u");
  const payload = (i: string) => `bytes((${i} * 31 + k) % 256 for k in range(${size}))`;
  const send = options.gso
    ? `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, ${size})  # UDP_SEGMENT
s.sendto(b"".join(${payload("i")} for i in range(${count})), ("${to.ip}", 5002))`
    : `
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(${count}):
    s.sendto(${payload("i")}, ("${to.ip}", 5002))
    time.sleep(0.001)`;
  await from.ns.run(["/usr/bin/python3", "-c", send]);
  const out = new TextDecoder().decode((await server.output()).stdout).trim();
  return out ? out.split("\n") : [];
}

async function waitForListener(ns: Netns, port: number, proto = "t"): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const out = await ns.runRaw(["ss", `-${proto}ln`, `sport = :${port}`]);
    if (out.stdout.split("\n").length > 2) return;
    await new Promise((r) => setTimeout(r, 30));
  }
  throw new Error(`nothing listens on port ${port} in ${ns.name}`);
}

/** `n` random bytes (getRandomValues gives at most 64 KiB a call). */
function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let at = 0; at < n; at += 65536) {
    crypto.getRandomValues(out.subarray(at, Math.min(n, at + 65536)));
  }
  return out;
}

async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** What {@link pingDuring} saw. */
export interface PingDuring<T> {
  /** What the function returned. */
  result: T;
  /** Echo requests sent. */
  sent: number;
  /** Sequence numbers never answered, but for the last 100 ms of probes. */
  lost: number[];
}

/**
 * Pings `to` from `from` every `interval` seconds for as long as `fn`
 * runs, and `tailMs` + 200 ms more (300 ms at least); then reports every
 * probe that got no answer, leaving out only those sent in the last
 * `tailMs` (still in flight when ping was stopped), so every probe sent
 * while `fn` ran is judged. A loaded machine may delay answers by more
 * than the default 100 ms.
 */
export async function pingDuring<T>(
  from: Workload,
  to: string,
  fn: () => Promise<T>,
  interval = 0.01,
  tailMs = 100,
): Promise<PingDuring<T>> {
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", from.ns.name, "ping", "-n", "-i", String(interval), "-W", "1", to],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  let result: T;
  try {
    // ping's first probe goes out at once; the first answer says the path is up.
    await new Promise((r) => setTimeout(r, 200));
    result = await fn();
    await new Promise((r) => setTimeout(r, Math.max(300, tailMs + 200)));
  } finally {
    // `ip netns exec` execs ping: the signal reaches it, and it prints its summary.
    child.kill("SIGINT");
  }
  const text = new TextDecoder().decode((await output).stdout);
  const sent = Number(/(\d+) packets transmitted/.exec(text)?.[1] ?? 0);
  const answered = new Set([...text.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1])));
  const judged = sent - Math.ceil(tailMs / 1000 / interval);
  const lost: number[] = [];
  for (let seq = 1; seq <= judged; seq++) if (!answered.has(seq)) lost.push(seq);
  return { result, sent, lost };
}

/** Options of {@link tcpdump}. */
export interface TcpdumpOptions {
  /** The device to listen on. */
  dev: string;
  /** tcpdump's filter expression. */
  filter: string;
  /** Stop after this many packets; default: when killed or timed out. */
  count?: number;
  /** Write a pcap here; default: print one line per packet on stdout (piped). */
  file?: string;
  /** Give up after this many seconds (default 10). */
  timeout?: number;
  /** The kernel buffer in KiB, for bursts that must not be lost. */
  bufferKiB?: number;
  /** Print each frame's Ethernet header (its MACs) too. */
  link?: boolean;
  /**
   * Bytes kept of each frame. In immediate mode the buffer holds a slot
   * this size per frame: a small one keeps a big burst whole.
   */
  snaplen?: number;
}

/**
 * Starts tcpdump in namespace `ns` and returns once it listens. `ip netns
 * exec` execs it, so a signal to the child reaches tcpdump itself.
 */
export async function tcpdump(ns: string, o: TcpdumpOptions): Promise<Deno.ChildProcess> {
  const child = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      ns,
      "timeout",
      String(o.timeout ?? 10),
      "tcpdump",
      "--immediate-mode",
      "-U",
      "-nn",
      "-i",
      o.dev,
      ...(o.bufferKiB ? ["-B", String(o.bufferKiB)] : []),
      ...(o.link ? ["-e"] : []),
      ...(o.snaplen ? ["-s", String(o.snaplen)] : []),
      ...(o.count ? ["-c", String(o.count)] : []),
      ...(o.file ? ["-w", o.file] : []),
      o.filter,
    ],
    stdout: o.file ? "null" : "piped",
    stderr: "null",
  }).spawn();
  // tcpdump says nothing when it starts listening; give it the time.
  await new Promise((r) => setTimeout(r, 500));
  return child;
}

/**
 * Frames sent exactly as given from a device of a namespace, through an
 * AF_PACKET socket: down the kernel's transmit path and up the receive
 * path of the veth's other end, as a workload's own traffic goes (so a
 * VLAN tag is taken off into the skb there, as for any tagged frame). One
 * Python process serves every frame.
 */
export class RawSender implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #in: WritableStreamDefaultWriter<Uint8Array>;
  readonly #out: ReadableStreamDefaultReader<string>;
  #pending = "";

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#in = child.stdin.getWriter();
    this.#out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** Starts a sender on `dev` in `ns`. */
  static start(ns: Netns, dev: string): RawSender {
    const script = `
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for line in sys.stdin:
    s.send(bytes.fromhex(line.strip()))
    print("sent", flush=True)`;
    return new RawSender(
      new Deno.Command("ip", {
        args: ["netns", "exec", ns.name, "/usr/bin/python3", "-c", script, dev],
        stdin: "piped",
        stdout: "piped",
      }).spawn(),
    );
  }

  /** Sends `frame`; resolves once the kernel has taken it. */
  async send(frame: Uint8Array): Promise<void> {
    const hex = Array.from(frame, (b) => b.toString(16).padStart(2, "0")).join("");
    await this.#in.write(new TextEncoder().encode(hex + "\n"));
    while (!this.#pending.includes("\n")) {
      const { value, done } = await this.#out.read();
      if (done) throw new Error("the frame sender exited");
      this.#pending += value;
    }
    this.#pending = this.#pending.slice(this.#pending.indexOf("\n") + 1);
  }

  /** Stops the sender. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#in.close();
    await this.#out.cancel();
    await this.#child.status;
  }
}
