/**
 * Capabilities: which of those warren needs this process holds, so a
 * missing one is named instead of surfacing as a bare EPERM.
 *
 * Every warren command that changes the datapath needs CAP_BPF (making
 * maps, pinning) and CAP_NET_ADMIN (attaching to devices, the underlay's
 * forwarding setting). Reading it needs none on kernels since 6.5, which
 * let anyone use a pinned map its file mode lets them open: the pins'
 * owner-only modes are what keeps others out. Loading programs (`up`, `trace`) needs
 * CAP_PERFMON as well: the TC programs read an skb's checksum state
 * (ip_summed, csum_start) through BTF, which the verifier allows to
 * CAP_PERFMON alone and no helper reports; it also spares them the Spectre
 * mitigations that refuse packet pointers moved by a variable offset. As the
 * kernel does (`bpf_capable`, `perfmon_capable`), CAP_SYS_ADMIN stands in
 * for CAP_BPF and CAP_PERFMON, never for CAP_NET_ADMIN.
 *
 * @module
 */

/** Capability numbers, from linux/capability.h. */
export const Capability = {
  CAP_NET_ADMIN: 12,
  CAP_SYS_ADMIN: 21,
  CAP_PERFMON: 38,
  CAP_BPF: 39,
} as const;

/** A capability's name. */
export type CapabilityName = keyof typeof Capability;

/** What every warren command that changes the datapath needs. */
export const REQUIRED: readonly CapabilityName[] = ["CAP_BPF", "CAP_NET_ADMIN"];

/** What loading the programs needs besides (see the module doc). */
export const LOAD_REQUIRED: readonly CapabilityName[] = [...REQUIRED, "CAP_PERFMON"];

/** This process's effective capabilities, from /proc/self/status. */
export function effectiveCapabilities(): bigint {
  const status = Deno.readTextFileSync("/proc/self/status");
  const hex = /^CapEff:\s*([0-9a-f]+)/m.exec(status)?.[1];
  return hex ? BigInt(`0x${hex}`) : 0n;
}

/**
 * Whether the process holds `cap`, or CAP_SYS_ADMIN where the kernel takes
 * it instead (for CAP_BPF and CAP_PERFMON).
 */
export function hasCapability(cap: CapabilityName, eff = effectiveCapabilities()): boolean {
  const bit = (n: number) => (eff >> BigInt(n)) & 1n;
  if (bit(Capability[cap]) === 1n) return true;
  return (cap === "CAP_BPF" || cap === "CAP_PERFMON") && bit(Capability.CAP_SYS_ADMIN) === 1n;
}

/** The capabilities warren needs that this process lacks. */
export function missingCapabilities(
  needed: readonly CapabilityName[] = REQUIRED,
): CapabilityName[] {
  const eff = effectiveCapabilities();
  return needed.filter((c) => !hasCapability(c, eff));
}

/** CapabilityError says which capability a process lacks, and for what. */
export class CapabilityError extends Error {
  /** The capabilities missing. */
  readonly missing: CapabilityName[];

  /** Builds the error: `what` needs `needed`, of which `missing` lack. */
  constructor(what: string, needed: readonly CapabilityName[], missing: CapabilityName[]) {
    super(
      `${what} needs ${list(needed)}; this process lacks ${list(missing)} ` +
        `(run it as root, or grant them, for example with capsh or a systemd unit's AmbientCapabilities)`,
    );
    this.name = "CapabilityError";
    this.missing = missing;
  }
}

function list(caps: readonly string[]): string {
  return caps.length < 2 ? caps.join("") : `${caps.slice(0, -1).join(", ")} and ${caps.at(-1)}`;
}

/** Throws a CapabilityError unless the process holds what `what` needs. */
export function requireCapabilities(
  what = "warren",
  needed: readonly CapabilityName[] = REQUIRED,
): void {
  const missing = missingCapabilities(needed);
  if (missing.length) throw new CapabilityError(what, needed, missing);
}
