/**
 * The datapath's counters summed over CPUs: per port, per group and
 * bucket, per drop reason and per event. `Datapath.stats()` reads them; `warren stats`, `watch` and
 * `metrics` show them.
 *
 * @module
 */

import { isDropStat, STAT_SLOTS, statName } from "../maps/layouts.ts";
import type { GroupCounters } from "./flow_table.ts";
import type { DatapathMaps } from "./pins.ts";
import type { Port } from "./port.ts";

/** One port's counters. */
export interface PortCounters {
  /** Port name. */
  name: string;
  /** Port number. */
  number: number;
  /** The network it stamps (0 for none), or "flow" for the packet's tunnel key. */
  net: number | "flow";
  /** Packets in. */
  rx_packets: bigint;
  /** Bytes in. */
  rx_bytes: bigint;
  /** Packets out. */
  tx_packets: bigint;
  /** Bytes out. */
  tx_bytes: bigint;
  /** Packets dropped that came in here. */
  drops: bigint;
}

/** One replication group's counters. */
export interface GroupStatsRow {
  /** The group id. */
  group_id: number;
  /** Packets that hit the group. */
  packets: bigint;
  /** Their bytes. */
  bytes: bigint;
  /** Copies sent to each bucket, in bucket order. */
  buckets: { packets: bigint; bytes: bigint }[];
}

/** Every counter of a datapath, as `warren stats` shows them. */
export interface Stats {
  /** Every port's counters. */
  ports: PortCounters[];
  /** Every group's counters. */
  groups: GroupStatsRow[];
  /** Drops by reason (all reasons, zero included). */
  drops: Record<string, bigint>;
  /** Events by name (all events, zero included). */
  events: Record<string, bigint>;
}

/** Reads every counter of `ports`, of `groups` and of the datapath from `maps`. */
export function readStats(
  maps: DatapathMaps,
  ports: readonly Port[],
  groups: readonly { id: number; counters?: GroupCounters }[],
): Stats {
  const perPort = ports.map((p) => {
    const s = maps.portStats.sum(p.number) ??
      { rx_packets: 0n, rx_bytes: 0n, tx_packets: 0n, tx_bytes: 0n, drops: 0n };
    return { name: p.name, number: p.number, net: p.net, ...s };
  });
  const drops: Record<string, bigint> = {};
  const events: Record<string, bigint> = {};
  const block = maps.stats.sum(0);
  for (let i = 1; i < STAT_SLOTS; i++) {
    const name = statName(i);
    if (!name) continue;
    (isDropStat(i) ? drops : events)[name] = block?.stat[i] ?? 0n;
  }
  // The caches count lookups, not packets: events beside the others.
  events.flow_cache_hit = block?.cache.flow_hits ?? 0n;
  events.flow_cache_miss = block?.cache.flow_misses ?? 0n;
  events.nh_cache_hit = block?.cache.nh_hits ?? 0n;
  events.nh_cache_miss = block?.cache.nh_misses ?? 0n;
  const perGroup = groups.map((g) => ({
    group_id: g.id,
    packets: g.counters?.packets ?? 0n,
    bytes: g.counters?.bytes ?? 0n,
    buckets: g.counters?.buckets ?? [],
  }));
  return { ports: perPort, groups: perGroup, drops, events };
}
