/**
 * `warren metrics`: the counters in the Prometheus text format, served
 * over HTTP, read fresh from the pinned maps at every scrape.
 *
 * @module
 */

import type { Command } from "commander";
import type { Registry } from "prom-client";
import type { Datapath } from "../../tunnel/datapath.ts";
import type { Stats } from "../../tunnel/stats.ts";
import { needs, openDatapath, toInt } from "../common.ts";

/** One flow's series: its labels and counts. */
interface FlowSeries {
  labels: {
    flow_id: string;
    priority: string;
    match: string;
    cookie: string;
    net: string;
    owner: string;
  };
  packets: number;
  bytes: number;
}

/**
 * A registry whose metrics read `dp` when collected: once per scrape,
 * shared by every metric. Per-flow series are limited to the `maxFlows`
 * busiest flows (by packets), so a table of a million flows does not
 * become a million series. prom-client is loaded here, not when the CLI
 * starts: only this command needs it.
 */
export async function registry(dp: Datapath, maxFlows = 1000): Promise<Registry> {
  const { Counter, Registry } = await import("prom-client");
  const reg = new Registry();
  let snapshot: { stats: Stats; flows: FlowSeries[] } | undefined;
  const fresh = () => {
    if (snapshot) return snapshot;
    const flows: FlowSeries[] = [];
    if (maxFlows > 0) {
      for (const f of dp.eachFlow({}, { counters: true })) {
        flows.push({
          labels: {
            flow_id: String(f.flowId),
            priority: String(f.priority),
            match: dp.describeMatch(f.match),
            cookie: `0x${f.cookie.toString(16)}`,
            // The network a flow is for, when it matches one exactly.
            net: f.match.mask.net === 0xffffffff ? String(f.match.key.net) : "",
            owner: f.owner,
          },
          packets: Number(f.counters!.packets),
          bytes: Number(f.counters!.bytes),
        });
      }
      if (flows.length > maxFlows) {
        flows.sort((a, b) => b.packets - a.packets);
        flows.length = maxFlows;
      }
    }
    return (snapshot = { stats: dp.stats(), flows });
  };
  const portMetric = (
    name: string,
    help: string,
    field: "rx_packets" | "rx_bytes" | "tx_packets" | "tx_bytes" | "drops",
  ) =>
    new Counter({
      name,
      help,
      labelNames: ["port", "net"],
      registers: [reg],
      collect() {
        this.reset();
        for (const p of fresh().stats.ports) {
          this.inc({ port: p.name, net: p.net ? String(p.net) : "" }, Number(p[field]));
        }
      },
    });
  portMetric("warren_port_rx_packets_total", "Packets received on a port", "rx_packets");
  portMetric("warren_port_rx_bytes_total", "Bytes received on a port", "rx_bytes");
  portMetric("warren_port_tx_packets_total", "Packets sent to a port", "tx_packets");
  portMetric("warren_port_tx_bytes_total", "Bytes sent to a port", "tx_bytes");
  portMetric("warren_port_drops_total", "Packets dropped that came in on a port", "drops");
  new Counter({
    name: "warren_drops_total",
    help: "Packets dropped, by reason",
    labelNames: ["reason"],
    registers: [reg],
    collect() {
      this.reset();
      for (const [reason, n] of Object.entries(fresh().stats.drops)) {
        this.inc({ reason }, Number(n));
      }
    },
  });
  new Counter({
    name: "warren_events_total",
    help: "Datapath events (decapsulations, encapsulations, XDP verdicts …)",
    labelNames: ["event"],
    registers: [reg],
    collect() {
      this.reset();
      for (const [event, n] of Object.entries(fresh().stats.events)) {
        this.inc({ event }, Number(n));
      }
    },
  });
  const flowMetric = (name: string, help: string, field: "packets" | "bytes") =>
    new Counter({
      name,
      help,
      labelNames: ["flow_id", "priority", "match", "cookie", "net", "owner"],
      registers: [reg],
      collect() {
        this.reset();
        for (const f of fresh().flows) this.inc(f.labels, f[field]);
      },
    });
  flowMetric("warren_flow_packets_total", "Packets that hit a flow", "packets");
  flowMetric("warren_flow_bytes_total", "Bytes that hit a flow", "bytes");
  const groupMetric = (name: string, help: string, field: "packets" | "bytes", buckets: boolean) =>
    new Counter({
      name,
      help,
      labelNames: buckets ? ["group", "bucket"] : ["group"],
      registers: [reg],
      collect() {
        this.reset();
        for (const g of fresh().stats.groups) {
          const group = String(g.group_id);
          if (!buckets) this.inc({ group }, Number(g[field]));
          else {g.buckets.forEach((b, i) =>
              this.inc({ group, bucket: String(i + 1) }, Number(b[field]))
            );}
        }
      },
    });
  groupMetric("warren_group_packets_total", "Packets that hit a group", "packets", false);
  groupMetric("warren_group_bytes_total", "Bytes that hit a group", "bytes", false);
  groupMetric("warren_bucket_packets_total", "Copies a group sent to a bucket", "packets", true);
  groupMetric("warren_bucket_bytes_total", "Bytes a group sent to a bucket", "bytes", true);
  const scrape = reg.metrics.bind(reg);
  reg.metrics = async () => {
    snapshot = undefined;
    return await scrape();
  };
  return reg;
}

/** Registers `metrics`. */
export function register(cli: Command): void {
  needs(cli.command("metrics"), "read")
    .description("serve counters in the Prometheus text format")
    .requiredOption("--listen <host:port>", "where to listen, such as 127.0.0.1:9101")
    .option("--flows <n>", "per-flow series for at most this many busiest flows", toInt, 1000)
    .action(async (opts, cmd) => {
      const m = /^(.*):(\d+)$/.exec(opts.listen);
      if (!m) throw new RangeError(`--listen "${opts.listen}" is not host:port`);
      const dp = openDatapath(cmd);
      const reg = await registry(dp, opts.flows);
      const server = Deno.serve({
        hostname: m[1].replace(/^\[|\]$/g, ""),
        port: Number(m[2]),
        onListen: () => {},
      }, async (req) => {
        if (new URL(req.url).pathname !== "/metrics") {
          return new Response("see /metrics\n", { status: 404 });
        }
        return new Response(await reg.metrics(), { headers: { "content-type": reg.contentType } });
      });
      console.error(`warren metrics on http://${opts.listen}/metrics`);
      await server.finished;
      dp.close();
    });
}
