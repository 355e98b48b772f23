/**
 * A datapath with a port of every protocol, for feeding hostile packets to
 * each of its programs and checking what each one did: the verdict, the
 * counters that moved, and what became of the packet.
 *
 * One host of the two-host lab runs warren with XDP on its underlay and
 * these ports and flows:
 *
 * ```text
 *  web  local, the workload's veth        in_port=web  -> VXLAN to B
 *                                         in_port=web,arp -> group 1
 *  vx   vxlan  remote_ip=flow key=flow    in_port=vx   -> web
 *  gnv  geneve remote_ip=flow key=flow    in_port=gnv  -> web, and a flow of its own for
 *                                         the option 0x0102/0x80 (which makes it known)
 *  gre  gre    remote_ip=flow key=flow    in_port=gre  -> group 1
 *  stt  stt    remote_ip=flow key=flow    in_port=stt  -> web
 *  vxk  vxlan  remote_ip=192.0.2.3 key=5  in_port=vxk  -> web
 * ```
 *
 * Group 1 has a bucket to web and one to B over vx: from gre (a tunnel)
 * a packet goes to web alone, from web to B alone (split horizon).
 *
 * @module
 */

import { BpfMap } from "../../src/bpf/map.ts";
import { Program } from "../../src/bpf/program.ts";
import { ifindex } from "../../src/bpf/netif.ts";
import { skbContext, testRun, xdpContext } from "../../src/bpf/test_run.ts";
import {
  flowStatsCodec,
  metaCodec,
  Stat,
  type StatBlock,
  statBlockCodec,
  TRACE_MARK,
} from "../../src/maps/layouts.ts";
import { u32 } from "../../src/maps/codec.ts";
import { PerCpuMap } from "../../src/maps/typed_map.ts";
import { macOf } from "../../src/lab/netns.ts";
import { Lab, type LabHost } from "../../src/lab/topology.ts";
import { type ProgramName, PROGRAMS } from "../../src/maps/names.ts";
import { mapPin } from "../../src/tunnel/pins.ts";
import { parseGroup } from "../../src/tunnel/group_syntax.ts";
import { addFlows, pinNeighbor } from "./lab.ts";

/** What a program did with one packet. */
export interface Outcome {
  /** The program's return value. */
  retval: number;
  /** The packet afterwards (for XDP, any metadata in front of it). */
  data: Uint8Array;
  /** Counters of wr_stats that moved, by index, and by how much. */
  moved: Map<number, number>;
  /** Flows whose packet counters moved, by their text, and by how much. */
  flows: Map<string, number>;
}

/**
 * The flow a Geneve packet with option 0x0102/0x80 takes: above the port's
 * catch-all, so that a packet carrying the option reaches it. Written as
 * dumps print it (0x0102 is 258, 0x80 128), to compare with them.
 */
export const GENEVE_OPTION_FLOW =
  "priority=200,in_port=gnv,geneve_class=258,geneve_type=128 actions=output:web";

/** Drop reasons: wr_stats indexes below this one. */
export const DROP_LIMIT = 32;

/**
 * Reasons for which a packet is dropped before warren touches it: the
 * packet must come back exactly as it went in. (A drop after
 * decapsulation, for a flow miss or a drop action, is of a packet that was
 * well formed.)
 */
export const MALFORMED = new Set<number>([
  Stat.DROP_BAD_IP,
  Stat.DROP_BAD_UDP,
  Stat.DROP_BAD_CSUM,
  Stat.DROP_VXLAN_FLAGS,
  Stat.DROP_GENEVE_VERSION,
  Stat.DROP_GENEVE_OPTLEN,
  Stat.DROP_GENEVE_CRITICAL,
  Stat.DROP_GRE_VERSION,
  Stat.DROP_GRE_FLAGS,
  Stat.DROP_KEY_MISMATCH,
  Stat.DROP_TRUNCATED,
  Stat.DROP_STT,
  Stat.DROP_STT_REASM,
  Stat.DROP_PAYLOAD,
]);

/**
 * Whether test-run takes `frame` as an skb: it refuses an Ethernet header
 * alone, and an IPv4 or IPv6 frame cut inside its IP header. (Such frames
 * do reach TC on a real link; the verifier has proven the programs safe
 * on them, XDP's test-run shows what they do.)
 */
export function skbTestable(frame: Uint8Array): boolean {
  if (frame.length <= 14) return false;
  const type = (frame[12] << 8) | frame[13];
  if (type === 0x0800) return frame.length >= 34;
  if (type === 0x86dd) return frame.length >= 54;
  return true;
}

/** The drop reasons among counters that moved. */
export function drops(moved: Map<number, number>): [number, number][] {
  return [...moved].filter(([i]) => i > 0 && i < DROP_LIMIT);
}

/** Harness is the datapath under attack, with its programs open. */
export class Harness implements AsyncDisposable {
  /** The lab it runs in. */
  readonly lab: Lab;
  /** The host running warren. */
  readonly host: LabHost;
  /** The host's underlay MAC. */
  readonly mac: string;
  /** Port numbers by name. */
  readonly ports: Record<string, number>;
  readonly #programs: Record<ProgramName, Program>;
  readonly #stats: PerCpuMap<number, StatBlock>;
  readonly #flowStats: PerCpuMap<number, { packets: bigint }>;
  /** The flows' texts by flow id. */
  readonly #flows: Map<number, string>;

  private constructor(
    lab: Lab,
    mac: string,
    ports: Record<string, number>,
    programs: Record<ProgramName, Program>,
    flows: Map<number, string>,
  ) {
    this.lab = lab;
    this.host = lab.hosts[0];
    this.mac = mac;
    this.ports = ports;
    this.#programs = programs;
    this.#flows = flows;
    this.#stats = new PerCpuMap(
      BpfMap.fromPin(mapPin(this.host.pinDir, "wr_stats")),
      u32,
      statBlockCodec,
    );
    this.#flowStats = new PerCpuMap(
      BpfMap.fromPin(mapPin(this.host.pinDir, "wr_flow_stats")),
      u32,
      flowStatsCodec,
    );
  }

  /** Builds the lab, brings warren up and opens its programs. */
  static async create(): Promise<Harness> {
    // No IPv6 on the devices: they send nothing on their own (neighbour
    // discovery, MLD), which would move the counters under a test. The
    // IPv6 endpoint is given to warren all the same.
    const lab = await Lab.create({ ipv6: false });
    try {
      const [a, b] = lab.hosts;
      await lab.up(a, { xdp: "native", localIps: [a.ip, a.ip6] });
      const { ports, flows } = await lab.datapath(a, async (dp) => {
        await dp.addLocalPort("web", a.workload.port);
        for (
          const [name, proto] of [["vx", "vxlan"], ["gnv", "geneve"], ["gre", "gre"], [
            "stt",
            "stt",
          ]]
        ) {
          await dp.addTunnelPort(name, proto, { remote_ip: "flow", key: "flow" });
        }
        await dp.addTunnelPort("vxk", "vxlan", { remote_ip: "192.0.2.3", key: "5" });
        await dp.setGroups([
          parseGroup(
            `group_id=1,type=all,bucket=output:web,bucket=set_tunnel(id=7,dst=${b.ip}),output:vx`,
          ),
        ], "add");
        await addFlows(
          dp,
          `in_port=web actions=set_tunnel(id=7,dst=${b.ip}),output:vx`,
          "priority=40000,in_port=web,arp actions=group:1",
          "in_port=vx actions=output:web",
          "priority=100,in_port=gnv actions=output:web",
          GENEVE_OPTION_FLOW,
          "in_port=gre actions=group:1",
          "in_port=stt actions=output:web",
          "in_port=vxk actions=output:web",
        );
        return {
          ports: Object.fromEntries(dp.ports().map((p) => [p.name, p.number])),
          flows: new Map(dp.dumpFlows().map((f) => [f.flowId, dp.describeFlow(f)])),
        };
      });
      await pinNeighbor(lab, a);
      const programs = Object.fromEntries(
        PROGRAMS.map((n) => [n, Program.fromPin(`${a.pinDir}/progs/${n}`)]),
      ) as Record<ProgramName, Program>;
      return new Harness(lab, await macOf(a.ns, a.underlay), ports, programs, flows);
    } catch (err) {
      await lab[Symbol.asyncDispose]();
      throw err;
    }
  }

  /** Moves this thread into the host's namespace until the function returned is called. */
  enter(): () => void {
    return this.host.ns.enter();
  }

  /**
   * Runs `program` on `data` and reports what it did. Call it inside the
   * host's namespace (see `enter`). TC on the underlay is asked to judge
   * the packet itself, as it does without XDP, through the trace mark.
   */
  run(program: ProgramName, data: Uint8Array): Outcome {
    const before = this.#counters();
    const flowsBefore = this.#flowCounters();
    const ctx = program === "wr_xdp_underlay"
      ? xdpContext(ifindex(this.host.underlay), data.length)
      : program === "wr_tc_local"
      ? skbContext(ifindex(this.host.workload.port))
      : skbContext(ifindex(this.host.underlay), TRACE_MARK);
    const out = testRun(this.#programs[program], { data, ctx, dataOutSize: data.length + 4096 });
    const after = this.#counters();
    const moved = new Map<number, number>();
    after.forEach((v, i) => {
      if (v !== before[i]) moved.set(i, Number(v - before[i]));
    });
    const flows = new Map<string, number>();
    for (const [text, n] of this.#flowCounters()) {
      if (n !== flowsBefore.get(text)) flows.set(text, Number(n - flowsBefore.get(text)!));
    }
    return { retval: out.retval, data: out.data, moved, flows };
  }

  /** Each flow's packets, summed over CPUs, by its text. */
  #flowCounters(): Map<string, bigint> {
    return new Map(
      [...this.#flows].map((
        [id, text],
      ) => [text, (this.#flowStats.get(id) ?? []).reduce((a, s) => a + s.packets, 0n)]),
    );
  }

  /** Every wr_stats counter, summed over CPUs. */
  #counters(): bigint[] {
    return this.#stats.sum(0)?.stat ?? [];
  }

  /** The metadata XDP put in front of a frame it passed, and the frame. */
  static splitMeta(data: Uint8Array, inLength: number): { meta: Uint8Array; frame: Uint8Array } {
    const metaLen = data.length - inLength >= metaCodec.size ? metaCodec.size : 0;
    return { meta: data.subarray(0, metaLen), frame: data.subarray(metaLen) };
  }

  /** Closes the programs, takes warren down and removes the lab. */
  async [Symbol.asyncDispose](): Promise<void> {
    for (const p of Object.values(this.#programs)) p.close();
    this.#stats.raw.close();
    this.#flowStats.raw.close();
    await this.lab[Symbol.asyncDispose]();
  }
}
