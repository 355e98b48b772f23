/**
 * A two-host overlay in network namespaces, for the demo, the tests and the
 * benches:
 *
 * ```text
 *  workload A (10.1.0.1)        workload B (10.1.0.2)
 *      eth0                          eth0
 *       |                             |
 *      wl0   host A         host B   wl0
 *             u0 ---------------- u0
 *       192.0.2.1 / 2001:db8::1   192.0.2.2 / 2001:db8::2
 * ```
 *
 * Each host runs its own warren datapath, pinned in its own directory.
 * Everything is removed on dispose, even after a failure.
 *
 * @module
 */

import { Datapath, type UpOptions } from "../tunnel/datapath.ts";
import { macOf, Netns, vethPair } from "./netns.ts";

/** A workload behind a host's local port. */
export interface Workload {
  /** Its namespace. */
  ns: Netns;
  /** Its device. */
  dev: string;
  /** Its IPv4 address. */
  ip: string;
  /** Its IPv6 address. */
  ip6: string;
  /** Its MAC. */
  mac: string;
  /** The host-side device, the local port's netdev. */
  port: string;
}

/** One namespace host. */
export interface LabHost {
  /** A for the first host, B for the second. */
  label: string;
  /** Its namespace. */
  ns: Netns;
  /** The underlay device. */
  underlay: string;
  /** Its underlay IPv4 address. */
  ip: string;
  /** Its underlay IPv6 address. */
  ip6: string;
  /** Where its datapath is pinned. */
  pinDir: string;
  /** The workload behind it. */
  workload: Workload;
}

/** Options of {@link Lab.create}. */
export interface LabOptions {
  /** MTU of the workload veths; default 1500. */
  workloadMtu?: number;
  /** MTU of the underlay veth; default 1500. */
  underlayMtu?: number;
  /**
   * Give everything IPv6 addresses too (default true). Without IPv6 the
   * namespaces send nothing on their own (no router solicitations, no MLD),
   * which tests that count every packet need.
   */
  ipv6?: boolean;
}

/** Lab is the two-host overlay topology. */
export class Lab implements AsyncDisposable {
  /** Host A and host B. */
  readonly hosts: [LabHost, LabHost];
  readonly #namespaces: Netns[];

  private constructor(hosts: [LabHost, LabHost], namespaces: Netns[]) {
    this.hosts = hosts;
    this.#namespaces = namespaces;
  }

  /** Builds the topology; nothing runs warren yet. */
  static async create(options: LabOptions = {}): Promise<Lab> {
    const namespaces: Netns[] = [];
    try {
      const make = async (prefix: string) => {
        const ns = await Netns.create(prefix);
        namespaces.push(ns);
        return ns;
      };
      const hostA = await make("wra");
      const hostB = await make("wrb");
      const wlA = await make("wla");
      const wlB = await make("wlb");
      const v6 = options.ipv6 ?? true;
      const addrs = (v4: string, six: string) => v6 ? [v4, six] : [v4];
      await vethPair(
        {
          ns: hostA,
          name: "u0",
          addrs: addrs("192.0.2.1/24", "2001:db8::1/64"),
          mtu: options.underlayMtu,
        },
        {
          ns: hostB,
          name: "u0",
          addrs: addrs("192.0.2.2/24", "2001:db8::2/64"),
          mtu: options.underlayMtu,
        },
      );
      const hosts = [] as unknown as [LabHost, LabHost];
      for (const [i, ns, wl] of [[0, hostA, wlA], [1, hostB, wlB]] as const) {
        const n = i + 1;
        await vethPair(
          { ns, name: "wl0", mtu: options.workloadMtu },
          {
            ns: wl,
            name: "eth0",
            addrs: addrs(`10.1.0.${n}/24`, `fd00:1::${n}/64`),
            mtu: options.workloadMtu,
          },
        );
        hosts.push({
          label: i === 0 ? "A" : "B",
          ns,
          underlay: "u0",
          ip: `192.0.2.${n}`,
          ip6: `2001:db8::${n}`,
          pinDir: `/sys/fs/bpf/warren-lab-${crypto.randomUUID().slice(0, 13)}`,
          workload: {
            ns: wl,
            dev: "eth0",
            ip: `10.1.0.${n}`,
            ip6: `fd00:1::${n}`,
            mac: await macOf(wl, "eth0"),
            port: "wl0",
          },
        });
      }
      return new Lab(hosts, namespaces);
    } catch (err) {
      for (const ns of namespaces) await ns[Symbol.asyncDispose]();
      throw err;
    }
  }

  /** The other host. */
  peer(host: LabHost): LabHost {
    return host === this.hosts[0] ? this.hosts[1] : this.hosts[0];
  }

  /**
   * Brings warren up on `host` (its underlay, its pin directory), with
   * native XDP unless `options` say otherwise: `--xdp auto` would choose TC
   * only on the lab's veth underlay, and what runs in a lab is meant to
   * cover the XDP path too.
   */
  async up(host: LabHost, options: Partial<UpOptions> = {}): Promise<void> {
    await host.ns.within(async () => {
      using _ = await Datapath.up({
        underlay: host.underlay,
        pinDir: host.pinDir,
        xdp: "native",
        ...options,
      });
    });
  }

  /** Runs `fn` with `host`'s datapath open, inside its namespace. */
  async datapath<T>(host: LabHost, fn: (dp: Datapath) => T | Promise<T>): Promise<T> {
    return await host.ns.within(async () => {
      using dp = Datapath.open(host.pinDir);
      return await fn(dp);
    });
  }

  /**
   * Takes warren down on every host and deletes every namespace, all of it
   * even when a step fails; the first failure is thrown afterwards.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    const failures: unknown[] = [];
    for (const h of this.hosts) {
      await h.ns.within(() => Datapath.down(h.pinDir)).catch((e) => failures.push(e));
    }
    for (const ns of this.#namespaces) {
      await ns[Symbol.asyncDispose]().catch((e) => failures.push(e));
    }
    if (failures.length) throw failures[0];
  }
}
