/**
 * Flow counters: `wr_flow_stats`, per flow id and per CPU (packets,
 * bytes, last use, TCP flags), summed here. A flow id's counters are
 * cleared when the flow goes, before the id can be taken again, so a new
 * flow starts from zero.
 *
 * @module
 */

import type { BatchChunk } from "../../bpf/map.ts";
import { fieldOffsets } from "../../maps/codec.ts";
import { flowStatsCodec } from "../../maps/layouts.ts";
import type { DatapathMaps } from "../pins.ts";
import { CHUNK } from "./entry.ts";

/** A flow's counters, summed over CPUs. */
export interface FlowCounters {
  /** Packets that hit the flow. */
  packets: bigint;
  /** Their bytes. */
  bytes: bigint;
  /** Boot-clock time of the last hit in ns, 0 for never. */
  usedNs: bigint;
  /** Every TCP flag seen. */
  tcpFlags: number;
}

/** Every flow id's counters, summed over CPUs, in arrays indexed by flow id. */
export interface CounterArrays {
  /** Packets. */
  packets: BigUint64Array;
  /** Bytes. */
  bytes: BigUint64Array;
  /** Boot-clock ns of the last hit, 0 for never. */
  usedNs: BigUint64Array;
  /** TCP flags seen. */
  tcpFlags: Uint16Array;
  /**
   * 1 for a flow id some packet hit: most flows of a big table are idle,
   * and this says so without reading (and making) a BigInt.
   */
  hit: Uint8Array;
}

const S = fieldOffsets(flowStatsCodec);
const LE = true;

/** The counters of flow `flowId`, summed over CPUs. */
export function flowCounters(maps: DatapathMaps, flowId: number): FlowCounters {
  const out: FlowCounters = { packets: 0n, bytes: 0n, usedNs: 0n, tcpFlags: 0 };
  for (const s of maps.flowStats.get(flowId) ?? []) {
    out.packets += s.packets;
    out.bytes += s.bytes;
    if (s.used_ns > out.usedNs) out.usedNs = s.used_ns;
    out.tcpFlags |= s.tcp_flags;
  }
  return out;
}

/** Every flow id's counters in typed arrays: a few bytes per flow. */
export function counterArrays(maps: DatapathMaps): CounterArrays {
  const sum = counterSum(maps);
  for (const c of maps.flowStats.raw.lookupBatch(CHUNK)) sum.add(c);
  return sum.out;
}

/**
 * {@link counterArrays} with the kernel's copies made off the JavaScript
 * thread: a dump reads the counters while it reads the flow index.
 */
export async function counterArraysAsync(maps: DatapathMaps): Promise<CounterArrays> {
  const sum = counterSum(maps);
  for await (const c of maps.flowStats.raw.lookupBatchAsync(CHUNK)) sum.add(c);
  return sum.out;
}

/** Arrays for every flow id's counters, and how to add a chunk of `wr_flow_stats` to them. */
function counterSum(maps: DatapathMaps): { out: CounterArrays; add(c: BatchChunk): void } {
  const raw = maps.flowStats.raw;
  const n = raw.info.maxEntries;
  const out: CounterArrays = {
    packets: new BigUint64Array(n),
    bytes: new BigUint64Array(n),
    usedNs: new BigUint64Array(n),
    tcpFlags: new Uint16Array(n),
    hit: new Uint8Array(n),
  };
  const cpus = raw.valueBufferSize / raw.cpuStride;
  const add = (c: BatchChunk) => {
    const keys = new Uint32Array(c.keys.buffer, c.keys.byteOffset, c.count);
    const words = new Uint32Array(c.values.buffer, c.values.byteOffset, c.values.byteLength / 4);
    const vals = new DataView(c.values.buffer, c.values.byteOffset, c.values.byteLength);
    for (let i = 0; i < c.count; i++) {
      const id = keys[i];
      for (let cpu = 0; cpu < cpus; cpu++) {
        const at = i * raw.valueBufferSize + cpu * raw.cpuStride;
        // Most flows are idle: test the packet count's words before any BigInt.
        const p = (at + S.packets) / 4;
        if (words[p] === 0 && words[p + 1] === 0) continue;
        out.hit[id] = 1;
        out.packets[id] += vals.getBigUint64(at + S.packets, LE);
        out.bytes[id] += vals.getBigUint64(at + S.bytes, LE);
        const used = vals.getBigUint64(at + S.used_ns, LE);
        if (used > out.usedNs[id]) out.usedNs[id] = used;
        out.tcpFlags[id] |= vals.getUint16(at + S.tcp_flags, LE);
      }
    }
  };
  return { out, add };
}

/** Clears the counters of flow ids `ids` on every CPU. */
export function zeroCounters(maps: DatapathMaps, ids: Uint32Array | number[]): void {
  if (ids.length === 0) return;
  const raw = maps.flowStats.raw;
  const chunk = Math.min(ids.length, 4096);
  const zeros = new Uint8Array(chunk * raw.valueBufferSize);
  for (let i = 0; i < ids.length; i += chunk) {
    const part = Uint32Array.from(ids.slice(i, i + chunk) as ArrayLike<number>);
    raw.updateBatch(new Uint8Array(part.buffer), zeros, part.length);
  }
}
