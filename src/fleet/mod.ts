/**
 * A fleet of warren hosts kept in step from etcd. Each host runs an agent
 * that registers itself, publishes its workloads, mirrors the rest of the
 * fleet and applies its own part of it; operators define networks.
 *
 * One concern per file:
 *
 * - `keys.ts`: the key layout (`/warren/v1/...`) and why it has that shape;
 * - `validate.ts`: every value read from etcd checked before use;
 * - `client.ts`: the etcd connection (deadlines, no circuit breaker);
 * - `backoff.ts`, `log.ts`: jittered retries, bounded logs;
 * - `mirror.ts`: list, watch, relist on compaction or silence, resync on a
 *   restored snapshot;
 * - `view.ts`: the validated fleet and its conflict rules, kept up to date
 *   change by change;
 * - `registration.ts`, `publisher.ts`: the host's lease and key, and its
 *   endpoints written only when they change;
 * - `derive.ts`: the derivation of a host's flows, groups and ports, kept
 *   up to date change by change;
 * - `journal.ts`: what changed since the last apply, kept as it happens;
 * - `applier.ts`: the interface the agent applies through (differences, or
 *   the whole state);
 * - `config.ts`, `agent.ts`: the agent's configuration and main loop;
 * - `admin.ts`, `access.ts`: operators' networks, views, users and roles.
 *
 * @example
 * ```ts ignore
 * // Needs etcd: tests/docs_test.ts runs this example against a throwaway etcd.
 * import { Agent, StateFileApplier, parseAgentConfig } from "./mod.ts";
 * const config = await parseAgentConfig(await Deno.readTextFile("agent.yaml"), "agent.yaml");
 * const agent = await Agent.start({ config, applier: new StateFileApplier("fleet.json") });
 * await agent.stop(); // leaves the fleet: the lease is revoked
 * ```
 *
 * @module
 */

export * from "./access.ts";
export * from "./admin.ts";
export * from "./agent.ts";
export * from "./applier.ts";
export * from "./backoff.ts";
export * from "./client.ts";
export * from "./config.ts";
export * from "./derive.ts";
export * from "./journal.ts";
export * from "./keys.ts";
export * from "./log.ts";
export * from "./mirror.ts";
export * from "./publisher.ts";
export * from "./registration.ts";
export * from "./validate.ts";
export * from "./view.ts";
