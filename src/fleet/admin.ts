/**
 * What operators do to a fleet: define and delete networks, and read what
 * etcd says about hosts and endpoints (validated as an agent would see
 * them, with what an agent would skip and why).
 *
 * A network's VNI is allocated by compare-and-swap: the network key and
 * the VNI's claim key are created in one transaction that succeeds only if
 * neither exists. Two operators allocating at once each get a distinct
 * VNI (the loser of a race reads again and takes the next free one); a
 * given VNI already taken is refused, naming its holder.
 *
 * @module
 */

import { bytes, type EtcdClient } from "./client.ts";
import { networkKey, PREFIX, prefixEnd, VNI_PREFIX, vniKey } from "./keys.ts";
import { OnceLog } from "./log.ts";
import { FleetState, type FleetView } from "./view.ts";
import {
  checkMtu,
  checkName,
  checkProtocol,
  checkVni,
  decodeNetwork,
  MAX_VNI,
  type Network,
} from "./validate.ts";

/** An operator's request that etcd's state refuses. */
export class FleetError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "FleetError";
  }
}

/** A network to add; without `vni`, one is allocated. */
export interface NewNetwork {
  /** Its name. */
  name: string;
  /** A VNI to use, or none to allocate the lowest free one. */
  vni?: number;
  /** Tunnel protocol (default vxlan). */
  protocol?: string;
  /** MTU for its workloads (default 1450: 1500 less VXLAN over IPv4). */
  mtu?: number;
}

/** The JSON value of a network key. */
export function networkValue(n: Omit<Network, "name">): string {
  return JSON.stringify({ vni: n.vni, protocol: n.protocol, mtu: n.mtu });
}

/** The lowest VNI not in `taken`. */
function lowestFree(taken: Set<number>): number {
  for (let v = 1; v <= MAX_VNI; v++) if (!taken.has(v)) return v;
  throw new FleetError("every VNI is taken");
}

/** Adds a network, allocating its VNI by compare-and-swap unless given. */
export async function addNetwork(client: EtcdClient, n: NewNetwork): Promise<Network> {
  const where = `network ${n.name}`;
  const name = checkName(where, "network", n.name);
  const protocol = checkProtocol(where, n.protocol ?? "vxlan");
  const mtu = checkMtu(where, n.mtu ?? 1450);
  if (n.vni !== undefined) checkVni(where, n.vni);
  for (let attempt = 0; attempt < 1000; attempt++) {
    let vni = n.vni;
    if (vni === undefined) {
      const { entries } = await client.list(VNI_PREFIX, prefixEnd(VNI_PREFIX));
      vni = lowestFree(new Set(entries.map((e) => Number(e.key.slice(VNI_PREFIX.length)))));
    }
    const net: Network = { name, vni, protocol, mtu };
    const res = await client.txn({
      compare: [
        { key: bytes(networkKey(name)), target: "Version", result: "Equal", version: 0 },
        { key: bytes(vniKey(vni)), target: "Version", result: "Equal", version: 0 },
      ],
      success: [
        { request_put: { key: bytes(networkKey(name)), value: bytes(networkValue(net)) } },
        {
          request_put: { key: bytes(vniKey(vni)), value: bytes(JSON.stringify({ network: name })) },
        },
      ],
      failure: [
        { request_range: { key: bytes(networkKey(name)) } },
        { request_range: { key: bytes(vniKey(vni)) } },
      ],
    });
    if (res.succeeded) return net;
    const [existing, holder] = res.responses.map((r) => r.response_range.kvs[0]);
    if (existing) throw new FleetError(`network ${name} exists already`);
    if (n.vni !== undefined) {
      const other = holder ? JSON.parse(holder.value.toString()).network : "another network";
      throw new FleetError(`VNI ${vni} belongs to network ${other}`);
    }
    // Another operator took this VNI between the read and the write.
  }
  throw new FleetError(`could not allocate a VNI for ${name}: too much contention`);
}

/**
 * Deletes a network and frees its VNI, in one transaction that fails if
 * the network changed since it was read. Endpoints published in it stay
 * until their hosts withdraw them; agents ignore them meanwhile.
 */
export async function deleteNetwork(client: EtcdClient, name: string): Promise<Network> {
  const key = networkKey(name);
  const res = await client.raw.kv.range({ key: bytes(key) });
  const kv = res.kvs[0];
  if (!kv) throw new FleetError(`there is no network ${name}`);
  const net = decodeNetwork(key, name, kv.value);
  const claim = bytes(JSON.stringify({ network: name }));
  const del = await client.txn({
    compare: [{ key: bytes(key), target: "Mod", result: "Equal", mod_revision: kv.mod_revision }],
    success: [{ request_delete_range: { key: bytes(key) } }, {
      request_txn: {
        compare: [{ key: bytes(vniKey(net.vni)), target: "Value", result: "Equal", value: claim }],
        success: [{ request_delete_range: { key: bytes(vniKey(net.vni)) } }],
      },
    }],
  });
  if (!del.succeeded) throw new FleetError(`network ${name} changed while deleting it; try again`);
  return net;
}

/** Reads the whole fleet once and validates it as an agent would. */
export async function readFleet(client: EtcdClient): Promise<FleetView> {
  const { entries } = await client.list(PREFIX, prefixEnd(PREFIX));
  const state = new FleetState(new OnceLog(() => {}));
  state.apply(entries.map((e) => ({ key: e.key, next: e })));
  return state.view();
}
