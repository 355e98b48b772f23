/**
 * Who may write what: etcd users and roles for a fleet. With etcd's
 * authentication on, each host has its own user and role, and the role
 * lets it
 *
 * - read every key of the layout (`/warren/v1/` and below), to follow the
 *   fleet;
 * - write its own registration, the single key `/warren/v1/hosts/<host>`;
 * - write its endpoints in each network it is allowed in, the prefix
 *   `/warren/v1/endpoints/<net>/<host>/` per network, and nothing else.
 *
 * So a host (or whoever steals its credentials) cannot forge another
 * host's registration or endpoints, cannot join a network it was not
 * admitted to, and cannot define networks. Operators get the
 * `warren-operator` role: read and write over the whole layout.
 *
 * etcd checks these on every write, including the writes a lease revoke
 * makes. The user's name is the host's name, so with client certificates
 * (`--client-cert-auth`) a certificate whose CN is the host's name logs in
 * as that host without a password.
 *
 * @module
 */

import { bytes, type EtcdClient } from "./client.ts";
import { endpointPrefix, hostKey, PREFIX, prefixEnd } from "./keys.ts";
import { checkName } from "./validate.ts";

/** The role operators use. */
export const OPERATOR_ROLE = "warren-operator";

/** The role of host `host`. */
export function hostRole(host: string): string {
  return `warren-host-${host}`;
}

/** One permission: a type over a key or a range [key, rangeEnd). */
export interface Grant {
  /** What the role may do. */
  permission: "Read" | "Readwrite";
  /** The key, or the range's start. */
  key: string;
  /** The range's end; "" for the single key. */
  rangeEnd: string;
}

/** The permissions of host `host` allowed in networks `nets`. */
export function hostGrants(host: string, nets: readonly string[]): Grant[] {
  checkName("host", "host", host);
  const grants: Grant[] = [
    { permission: "Read", key: PREFIX, rangeEnd: prefixEnd(PREFIX) },
    { permission: "Readwrite", key: hostKey(host), rangeEnd: "" },
  ];
  for (const net of [...new Set(nets)].sort()) {
    checkName("network", "network", net);
    const p = endpointPrefix(net, host);
    grants.push({ permission: "Readwrite", key: p, rangeEnd: prefixEnd(p) });
  }
  return grants;
}

const grantId = (g: Grant) => `${g.permission} ${g.key} ${g.rangeEnd}`;

/** Makes `role` hold exactly `grants`, creating it if needed. */
async function setRole(client: EtcdClient, role: string, grants: Grant[]): Promise<void> {
  const auth = client.raw.auth;
  const roles = await auth.roleList();
  if (!roles.roles.includes(role)) await auth.roleAdd({ name: role });
  const current = (await auth.roleGet({ role })).perm.map((p): Grant => ({
    permission: String(p.permType) === "Read" ? "Read" : "Readwrite",
    key: p.key.toString(),
    rangeEnd: p.range_end.toString(),
  }));
  const want = new Set(grants.map(grantId));
  const have = new Set(current.map(grantId));
  for (const g of current) {
    if (!want.has(grantId(g))) {
      await auth.roleRevokePermission({ role, key: bytes(g.key), range_end: bytes(g.rangeEnd) });
    }
  }
  for (const g of grants) {
    if (have.has(grantId(g))) continue;
    await auth.roleGrantPermission({
      name: role,
      perm: { permType: g.permission, key: bytes(g.key), range_end: bytes(g.rangeEnd) },
    });
  }
}

/** Makes sure user `name` exists with `role`; sets its password if one is given. */
async function setUser(
  client: EtcdClient,
  name: string,
  role: string,
  password?: string,
): Promise<void> {
  const auth = client.raw.auth;
  const users = await auth.userList();
  if (!users.users.includes(name)) {
    await auth.userAdd({
      name,
      password: password ?? "",
      options: { no_password: password === undefined },
    });
  } else if (password !== undefined) {
    await auth.userChangePassword({ name, password });
  }
  const { roles } = await auth.userGet({ name });
  if (!roles.includes(role)) await auth.userGrantRole({ user: name, role });
}

/**
 * Lets host `host` into exactly the networks `nets`: its role is created
 * or changed to match, and its user created (with `password`, or none for
 * a host that logs in with a client certificate).
 */
export async function grantHost(
  client: EtcdClient,
  host: string,
  nets: readonly string[],
  password?: string,
): Promise<Grant[]> {
  const grants = hostGrants(host, nets);
  await setRole(client, hostRole(host), grants);
  await setUser(client, host, hostRole(host), password);
  return grants;
}

/** Removes host `host`'s user and role: it can no longer write anything. */
export async function revokeHost(client: EtcdClient, host: string): Promise<void> {
  const auth = client.raw.auth;
  if ((await auth.userList()).users.includes(host)) await auth.userDelete({ name: host });
  if ((await auth.roleList()).roles.includes(hostRole(host))) {
    await auth.roleDelete({ role: hostRole(host) });
  }
}

/** Creates the operator role and gives it to user `name`. */
export async function grantOperator(
  client: EtcdClient,
  name: string,
  password?: string,
): Promise<void> {
  await setRole(client, OPERATOR_ROLE, [
    { permission: "Readwrite", key: PREFIX, rangeEnd: prefixEnd(PREFIX) },
  ]);
  await setUser(client, name, OPERATOR_ROLE, password);
}
