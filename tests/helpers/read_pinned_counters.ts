/**
 * Run as a separate process: opens the counter map pinned at Deno.args[0]
 * and prints every slot's per-CPU sum as JSON, proving pins outlive and
 * serve other processes.
 *
 * @module
 */

import { BpfMap } from "../../src/bpf/map.ts";
import { counterCodec, PerCpuMap, u32 } from "../../src/maps/mod.ts";

using map = new PerCpuMap(BpfMap.fromPin(Deno.args[0]), u32, counterCodec);
const slots = [0, 1, 2, 3].map((slot) => {
  const sum = map.sum(slot)!;
  return { packets: Number(sum.packets), bytes: Number(sum.bytes) };
});
console.log(JSON.stringify(slots));
