/**
 * More workloads than the lab's one per host: each in its own namespace,
 * joined to a lab host by a veth pair whose host end becomes a local port.
 * Everything made here is removed on dispose.
 *
 * @module
 */

import { macOf, Netns, vethPair } from "../../src/lab/netns.ts";
import type { LabHost, Workload } from "../../src/lab/topology.ts";

/** Workloads is a set of extra workloads, removed together. */
export class Workloads implements AsyncDisposable {
  readonly #namespaces: Netns[] = [];

  /**
   * A workload behind `host` with address `ip` (/24), reached through the
   * host's device `port`. IPv6 stays off: it sends nothing on its own.
   */
  async add(host: LabHost, port: string, ip: string): Promise<Workload> {
    const ns = await Netns.create("wlx");
    this.#namespaces.push(ns);
    await vethPair({ ns: host.ns, name: port }, { ns, name: "eth0", addrs: [`${ip}/24`] });
    return { ns, dev: "eth0", ip, ip6: "", mac: await macOf(ns, "eth0"), port };
  }

  /** Deletes every namespace made, and so every device. */
  async [Symbol.asyncDispose](): Promise<void> {
    for (const ns of this.#namespaces) await ns[Symbol.asyncDispose]();
  }
}
