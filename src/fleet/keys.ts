/**
 * The key layout of a warren fleet in etcd. Everything lives under one
 * versioned prefix, so a later layout can live beside this one while a
 * fleet upgrades, and every value is a JSON object that later versions may
 * extend (readers ignore fields they do not know):
 *
 * ```text
 * /warren/v1/networks/<net>                    {"vni":42,"protocol":"vxlan","mtu":1450}  operators
 * /warren/v1/vnis/<vni>                        {"network":"<net>"}                        operators
 * /warren/v1/hosts/<host>                      {"underlay":["192.0.2.1"],
 *                                               "tunnels":[{"protocol":"vxlan","port":4789}]}  the host, under its lease
 * /warren/v1/endpoints/<net>/<host>/<mac>      {"ips":["10.1.0.1"]}                      the host, under its lease
 * ```
 *
 * Why this shape:
 * - A network's VNI is claimed by a second key, created in the same
 *   transaction as the network only if neither exists, so two operators
 *   allocating at once can never give one VNI to two networks.
 * - Everything a host writes hangs on one lease: when the host dies without
 *   leaving, etcd removes all of it when the lease expires, and no one else
 *   has to clean up after it.
 * - Endpoints are keyed network first, then host. etcd grants permissions
 *   on key ranges, so "host h may publish in network n" is exactly the
 *   prefix `/warren/v1/endpoints/n/h/`, and "h writes only its own keys" is
 *   that prefix per allowed network plus the single key
 *   `/warren/v1/hosts/h`. The trailing `/` keeps host `a` out of host `ab`'s
 *   range. Network first also lets an agent later watch only the networks
 *   it takes part in.
 * - One key per MAC: two hosts claiming one MAC in a network are two keys,
 *   so the claim is visible to everyone and resolved the same way
 *   everywhere (see `view.ts`), instead of one host overwriting the other.
 * - Names never contain `/` (see `validate.ts`), so a key splits back into
 *   its parts unambiguously.
 *
 * @module
 */

/** The prefix of every key of this layout version. */
export const PREFIX = "/warren/v1/";

/** The key of network `net`. */
export function networkKey(net: string): string {
  return `${PREFIX}networks/${net}`;
}

/** The key claiming VNI `vni` for one network. */
export function vniKey(vni: number): string {
  return `${PREFIX}vnis/${vni}`;
}

/** The prefix of every VNI claim. */
export const VNI_PREFIX = `${PREFIX}vnis/`;

/** The key of host `host`'s registration. */
export function hostKey(host: string): string {
  return `${PREFIX}hosts/${host}`;
}

/** The prefix of `host`'s endpoints in network `net`: its permission range. */
export function endpointPrefix(net: string, host: string): string {
  return `${PREFIX}endpoints/${net}/${host}/`;
}

/** The key of `host`'s endpoint `mac` in network `net`. */
export function endpointKey(net: string, host: string, mac: string): string {
  return endpointPrefix(net, host) + mac;
}

/** What a key of the layout names. */
export type ParsedKey =
  | { kind: "network"; net: string }
  | { kind: "vni"; vni: string }
  | { kind: "host"; host: string }
  | { kind: "endpoint"; net: string; host: string; mac: string };

/**
 * parseKey splits a key of this layout into its parts, or returns
 * undefined for a key it does not know (another version's, or junk). The
 * parts are not validated here: `validate.ts` does that.
 */
export function parseKey(key: string): ParsedKey | undefined {
  if (!key.startsWith(PREFIX)) return undefined;
  const parts = key.slice(PREFIX.length).split("/");
  switch (parts[0]) {
    case "networks":
      return parts.length === 2 ? { kind: "network", net: parts[1] } : undefined;
    case "vnis":
      return parts.length === 2 ? { kind: "vni", vni: parts[1] } : undefined;
    case "hosts":
      return parts.length === 2 ? { kind: "host", host: parts[1] } : undefined;
    case "endpoints":
      return parts.length === 4
        ? { kind: "endpoint", net: parts[1], host: parts[2], mac: parts[3] }
        : undefined;
  }
  return undefined;
}

/** The end of the range of every key starting with `prefix` (etcd's convention). */
export function prefixEnd(prefix: string): string {
  // Layout prefixes end in "/" (0x2f): the next byte value ends the range.
  const last = prefix.charCodeAt(prefix.length - 1);
  return prefix.slice(0, -1) + String.fromCharCode(last + 1);
}
