/**
 * What `warren status` reports: where the datapath is attached and with
 * which programs, and how full each table is. Read-only: it needs no lock
 * and no capability beyond reading the pins.
 *
 * @module
 */

import { BpfError } from "../../bpf/errors.ts";
import { ifname } from "../../bpf/netif.ts";
import { ConfigFlag, MAX_MASKS, MAX_PORTS } from "../../maps/layouts.ts";
import { formatAddr } from "../addr.ts";
import {
  type Attachment,
  attachments,
  XDP_AUTO_WHY,
  xdpAttached,
  type XdpAutoWhy,
  xdpWhy,
} from "../attach.ts";
import type { XdpMode } from "../../bpf/xdp.ts";
import type { FlowTable } from "../flow_table.ts";
import type { DatapathMaps } from "../pins.ts";
import { localIps } from "./endpoints.ts";
import { PROGRAMS } from "../../maps/names.ts";
import { pinnedProgram } from "./object.ts";

/** What `status` reports. */
export interface Status {
  /** The pin directory. */
  pinDir: string;
  /** The underlay device. */
  underlay: {
    ifindex: number;
    device?: string;
    /**
     * Whether `up` found that it fills in a partial checksum before the
     * wire (anything but a veth with TX checksum offload on): STT's outer
     * checksum then counts the inner one as the device leaves it.
     */
    completesChecksums: boolean;
  };
  /** Local endpoint addresses. */
  localIps: string[];
  /** XDP on the underlay: the mode attached, and how it was chosen. */
  xdp: XdpStatus;
  /** Attachments, where and which program. */
  attachments: Attachment[];
  /** Program pins and their kernel ids. */
  programs: { name: string; id: number }[];
  /** How full each table is. */
  tables: { name: string; used: number; capacity: number }[];
  /** The live table generation. */
  generation: number;
}

/** The underlay's XDP, as `status` reports it. */
export interface XdpStatus {
  /** The mode attached, or "off" (TC only). */
  mode: XdpMode | "off";
  /** Whether `up --xdp auto` chose it (else `--xdp` named it). */
  auto: boolean;
  /** Why auto chose it. */
  why?: XdpAutoWhy;
  /** In words: "auto: …" or "up --xdp MODE". */
  reason: string;
}

/** The status of the datapath pinned at `pinDir`, which has `ports` ports. */
export function readStatus(
  pinDir: string,
  maps: DatapathMaps,
  flows: FlowTable,
  ports: number,
): Status {
  const cfg = maps.config.read();
  const programs = PROGRAMS.map((name) => {
    try {
      using p = pinnedProgram(pinDir, name);
      return { name, id: p.info().id };
    } catch (err) {
      if (err instanceof BpfError) return { name, id: 0 };
      throw err;
    }
  });
  const usage = flows.usage();
  const count = (m: { raw: { keys(): Generator<unknown> } }) => [...m.raw.keys()].length;
  return {
    pinDir,
    underlay: {
      ifindex: cfg.underlay_ifindex,
      device: ifname(cfg.underlay_ifindex),
      completesChecksums: (cfg.flags & ConfigFlag.DEV_CSUM) !== 0,
    },
    localIps: localIps(maps).map((a) => formatAddr(a.bytes, a.v6)),
    xdp: xdpStatus(pinDir, cfg.underlay_ifindex, cfg.flags),
    attachments: attachments(pinDir),
    programs,
    tables: [
      { name: "ports", used: ports, capacity: MAX_PORTS - 1 },
      { name: "flows", used: usage.flows, capacity: cfg.max_flows },
      { name: "masks", used: usage.masks, capacity: MAX_MASKS },
      { name: "tunnel_keys", used: usage.tunKeys.used, capacity: usage.tunKeys.capacity },
      { name: "groups", ...usage.groups },
      { name: "buckets", ...usage.buckets },
      {
        name: "endpoints",
        used: count(maps.endpoints),
        capacity: maps.endpoints.raw.info.maxEntries,
      },
      {
        name: "remotes",
        used: count(maps.remotes),
        capacity: maps.remotes.raw.info.maxEntries,
      },
    ],
    generation: cfg.gen & 1,
  };
}

function xdpStatus(pinDir: string, ifindex: number, flags: number): XdpStatus {
  const mode = xdpAttached(pinDir, ifindex);
  const why = xdpWhy(flags);
  if (!why) return { mode, auto: false, reason: `up --xdp ${mode}` };
  return { mode, auto: true, why, reason: `auto: ${XDP_AUTO_WHY[why]}` };
}
