/**
 * Tunnel frames captured on the wire, checked one by one: pcap files read
 * and written; the inner TCP and UDP checksums a veth leaves partial
 * (holding only their pseudo-header sum, for the NIC to finish) finished
 * as the NIC would; then tshark, an independent dissector, validates every
 * outer and inner checksum and reports the fields a test asserts on.
 *
 * @module
 */

import { run } from "../../src/lab/run.ts";

const PCAP_MAGIC = 0xa1b2c3d4;
const PCAP_MAGIC_NS = 0xa1b23c4d;

/** One captured frame with its time stamp, as the pcap file holds it. */
export interface PcapRecord {
  /** Seconds and fraction (micro- or nanoseconds, as the file says). */
  ts: [number, number];
  /** The frame. */
  data: Uint8Array;
}

/** The file header and records of a classic pcap file (tcpdump -w). */
export interface Pcap {
  /** The 24-byte file header, written back as it was. */
  header: Uint8Array;
  /** Every record. */
  records: PcapRecord[];
}

/** Whether a pcap file header is little-endian; throws if it is no pcap header. */
function littleEndian(header: Uint8Array): boolean {
  const v = new DataView(header.buffer, header.byteOffset, 4);
  for (const le of [true, false]) {
    if ([PCAP_MAGIC, PCAP_MAGIC_NS].includes(v.getUint32(0, le))) return le;
  }
  throw new Error("not a pcap file");
}

/** Reads a classic pcap file, either byte order. */
export async function readPcap(path: string): Promise<Pcap> {
  const b = await Deno.readFile(path);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const le = littleEndian(b);
  const records: PcapRecord[] = [];
  for (let at = 24; at + 16 <= b.length;) {
    const len = v.getUint32(at + 8, le);
    records.push({
      ts: [v.getUint32(at, le), v.getUint32(at + 4, le)],
      data: b.slice(at + 16, at + 16 + len),
    });
    at += 16 + len;
  }
  return { header: b.slice(0, 24), records };
}

/** Writes `pcap` to `path` (in the byte order of its header). */
export async function writePcap(path: string, pcap: Pcap): Promise<void> {
  const le = littleEndian(pcap.header);
  const size = 24 + pcap.records.reduce((n, r) => n + 16 + r.data.length, 0);
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  out.set(pcap.header);
  let at = 24;
  for (const r of pcap.records) {
    v.setUint32(at, r.ts[0], le);
    v.setUint32(at + 4, r.ts[1], le);
    v.setUint32(at + 8, r.data.length, le);
    v.setUint32(at + 12, r.data.length, le);
    out.set(r.data, at + 16);
    at += 16 + r.data.length;
  }
  await Deno.writeFile(path, out);
}

const u16 = (b: Uint8Array, at: number) => (b[at] << 8) | b[at + 1];

/** The one's complement sum of `b`, folded to 16 bits (not complemented). */
function sum16(b: Uint8Array, initial = 0): number {
  let s = initial;
  for (let i = 0; i + 1 < b.length; i += 2) s += u16(b, i);
  if (b.length % 2) s += b[b.length - 1] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/**
 * Where the IP packet at `l3` of frame `f` carries its payload: the IP
 * protocol, the payload's offset and end, and the pseudo-header sum for a
 * transport protocol `proto` over it. Undefined for anything but plain
 * IPv4 and IPv6 without extension headers.
 */
function ipPayload(
  f: Uint8Array,
  l3: number,
): { proto: number; at: number; end: number; pseudo: (proto: number) => number } | undefined {
  const version = f[l3] >> 4;
  if (version === 4) {
    const at = l3 + (f[l3] & 0x0f) * 4, end = l3 + u16(f, l3 + 2);
    const addrs = f.subarray(l3 + 12, l3 + 20);
    return { proto: f[l3 + 9], at, end, pseudo: (p) => sum16(addrs, p + (end - at)) };
  }
  if (version === 6) {
    const at = l3 + 40, end = at + u16(f, l3 + 4);
    const addrs = f.subarray(l3 + 8, l3 + 40);
    return { proto: f[l3 + 6], at, end, pseudo: (p) => sum16(addrs, p + (end - at)) };
  }
  return undefined;
}

/**
 * The offset of the inner Ethernet frame of a VXLAN (4789), Geneve (6081)
 * or GRE (transparent Ethernet) frame `f`, or undefined for anything else.
 */
export function innerFrameAt(f: Uint8Array): number | undefined {
  const type = u16(f, 12);
  if (type !== 0x0800 && type !== 0x86dd) return undefined;
  const ip = ipPayload(f, 14);
  if (!ip) return undefined;
  if (ip.proto === 17) {
    const dport = u16(f, ip.at + 2);
    if (dport === 4789) return ip.at + 16;
    if (dport === 6081) return ip.at + 16 + (f[ip.at + 8] & 0x3f) * 4;
    return undefined;
  }
  if (ip.proto === 47 && u16(f, ip.at + 2) === 0x6558) {
    const flags = u16(f, ip.at);
    return ip.at + 4 + [0x8000, 0x2000, 0x1000].filter((bit) => flags & bit).length * 4;
  }
  return undefined;
}

/**
 * Finishes the inner TCP or UDP checksum of tunnel frame `f` (tagged or
 * not) in place when the sender left it partial, as the NIC would have: a partial checksum
 * holds exactly the folded pseudo-header sum. Returns whether it did.
 */
export function finishPartial(f: Uint8Array): boolean {
  const inner = innerFrameAt(f);
  if (inner === undefined) return false;
  // Past the EtherType and any VLAN tags (802.1Q, 802.1ad) before it.
  let type = inner + 12;
  while ([0x8100, 0x88a8].includes(u16(f, type))) type += 4;
  if (![0x0800, 0x86dd].includes(u16(f, type))) return false;
  const ip = ipPayload(f, type + 2);
  if (!ip || (ip.proto !== 6 && ip.proto !== 17)) return false;
  const field = ip.at + (ip.proto === 6 ? 16 : 6);
  const pseudo = ip.pseudo(ip.proto);
  if (u16(f, field) !== pseudo) return false;
  f[field] = f[field + 1] = 0;
  let c = ~sum16(f.subarray(ip.at, ip.end), pseudo) & 0xffff;
  if (ip.proto === 17 && c === 0) c = 0xffff;
  f[field] = c >> 8;
  f[field + 1] = c & 0xff;
  return true;
}

/**
 * Finishes every partial inner checksum of the capture at `pcap` into a
 * copy, and returns tshark's `fields` (first occurrence of each: the outer
 * header's) for every tunnel frame of it, with UDP and TCP checksum
 * validation on (tshark always validates GRE's).
 */
export async function checkedFields(pcap: string, fields: string[]): Promise<string[][]> {
  const capture = await readPcap(pcap);
  for (const r of capture.records) finishPartial(r.data);
  const finished = pcap.replace(/(\.pcap)?$/, "-finished.pcap");
  await writePcap(finished, capture);
  try {
    const out = await run([
      "tshark",
      ...["-r", finished, "-o", "udp.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE"],
      ...[
        "-Y",
        "vxlan || geneve || gre",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=f",
      ],
      ...fields.flatMap((f) => ["-e", f]),
    ]);
    return out.split("\n").filter(Boolean).map((l) => l.split("|"));
  } finally {
    await Deno.remove(finished);
  }
}
