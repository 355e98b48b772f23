/**
 * Attaching a program at XDP through a bpf_link.
 *
 * Requires at least Linux 5.9 (XDP links). A device has one XDP program per
 * mode; replace it atomically with {@link Link.update}.
 *
 * @module
 */

import { AttachType } from "./info.ts";
import { createLink, type Link } from "./link.ts";
import { ifname } from "./netif.ts";
import type { Program } from "./program.ts";

/** Where the XDP program runs: in the driver, or generically on the skb. */
export type XdpMode = "native" | "generic";

/** `XDP_FLAGS_SKB_MODE` and `XDP_FLAGS_DRV_MODE`. */
const MODE_FLAGS: Record<XdpMode, number> = { generic: 1 << 1, native: 1 << 2 };

/** Options of {@link attachXdp}. */
export interface XdpOptions {
  /** Driver (native) or generic mode; default native. */
  mode?: XdpMode;
}

/** Attaches `program` at XDP on device `ifindex`. */
export function attachXdp(program: Program, ifindex: number, options: XdpOptions = {}): Link {
  const mode = options.mode ?? "native";
  const label = `xdp (${mode}) on ${ifname(ifindex) ?? `ifindex ${ifindex}`}`;
  return createLink(label, program, ifindex, AttachType.XDP, MODE_FLAGS[mode]);
}
