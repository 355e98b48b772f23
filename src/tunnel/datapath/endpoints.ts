/**
 * Local endpoints: the addresses tunnel packets are sent from and
 * received on. Each is an "address only" entry of `wr_endpoints` (no
 * protocol, no port), beside the entries tunnel ports add for their
 * protocol and port; the first of each family is also the outer source
 * when neither the port, the flow nor the FIB gives one.
 *
 * @module
 */

import { type Addr, formatAddr } from "../addr.ts";
import type { DatapathMaps } from "../pins.ts";
import { PortError } from "../port.ts";

/** The local endpoint addresses. */
export function localIps(maps: DatapathMaps): Addr[] {
  const out: Addr[] = [];
  for (const [k] of maps.endpoints.entries()) {
    if (k.ipproto === 0 && k.dst_port === 0) out.push({ v6: k.v6 === 1, bytes: k.addr });
  }
  return out;
}

/**
 * Makes the local endpoints exactly `ips`. Refuses to drop one while
 * `tunnels` says tunnel ports exist (they listen on it).
 */
export function setLocalIps(maps: DatapathMaps, ips: Addr[], tunnels: boolean): void {
  const current = localIps(maps);
  const same = (a: Addr, b: Addr) => a.v6 === b.v6 && a.bytes.every((x, i) => x === b.bytes[i]);
  const gone = current.filter((c) => !ips.some((i) => same(i, c)));
  if (gone.length && tunnels) {
    throw new PortError(
      `local endpoints ${
        gone.map((a) => formatAddr(a.bytes, a.v6)).join(", ")
      } are in use by tunnel ports; delete those first`,
    );
  }
  for (const a of gone) {
    maps.endpoints.delete({ addr: a.bytes, ipproto: 0, v6: a.v6 ? 1 : 0, dst_port: 0 });
  }
  for (const a of ips) {
    if (current.some((c) => same(a, c))) continue;
    maps.endpoints.set({ addr: a.bytes, ipproto: 0, v6: a.v6 ? 1 : 0, dst_port: 0 }, {
      port: 0,
      fixed_remotes: 0,
      proto: 0,
    });
  }
  maps.config.update(() => ({
    local_v4: ips.find((a) => !a.v6)?.bytes ?? new Uint8Array(16),
    local_v6: ips.find((a) => a.v6)?.bytes ?? new Uint8Array(16),
  }));
}
