/**
 * What TypeScript copies from the C side, compared with the BTF of built
 * objects: every struct codec and every constant of `src/maps/layouts.ts`,
 * the names of `src/maps/names.ts` and the test-run context offsets of
 * `src/bpf/test_run.ts`. Objects are opened, never loaded, so none of this
 * needs a privilege.
 *
 * Each check returns its findings as sentences, empty when both sides agree,
 * so a test can show a drift whole and can prove a drift is found.
 *
 * @module
 */

import type { Btf } from "../../src/bpf/btf.ts";
import type { BpfObject } from "../../src/bpf/object.ts";
import { SK_BUFF, XDP_MD } from "../../src/bpf/test_run.ts";
import type { StructCodec } from "../../src/maps/codec.ts";
import { layoutDifferences } from "../../src/maps/layout.ts";
import { CONSTANTS, PINNED_MAPS, PRIVATE_MAPS, PROGRAMS } from "../../src/maps/names.ts";

/** `src/maps/layouts.ts`'s exports, or a copy with something changed. */
export type Layouts = Readonly<Record<string, unknown>>;

/** The `.rodata` variable in warren.h that only makes BTF carry its enums. */
export const BTF_ANCHOR = "wr_constants";

/**
 * Where a constant of layouts.ts comes from: one enumerator, or a whole C
 * enum whose enumerators are the object's keys turned into C names (every
 * enumerator but `extra` must have a key).
 */
type Source =
  | { enum: string; enumerator: string }
  | { enum: string; enumerator: (key: string) => string; extra?: string[] };

const one = (cEnum: string, enumerator: string): Source => ({ enum: cEnum, enumerator });
const whole = (cEnum: string, prefix: string, extra: string[] = []): Source => ({
  enum: cEnum,
  enumerator: (key) => prefix + key,
  extra,
});

/**
 * Every constant layouts.ts exports, by export name. A constant missing
 * here is itself a finding, so a new one cannot go unchecked.
 */
const SOURCES: Record<string, Source> = {
  LAYOUT_VERSION: one("wr_layout_version", "WR_LAYOUT_VERSION"),
  MAX_PORTS: one("wr_size", "WR_MAX_PORTS"),
  MAX_MASKS: one("wr_size", "WR_MAX_MASKS"),
  MAX_ACTIONS: one("wr_size", "WR_MAX_ACTIONS"),
  GENEVE_OPT_MAX: one("wr_size", "WR_GENEVE_OPT_MAX"),
  DEFAULT_MAX_FLOWS: one("wr_size", "WR_DEFAULT_MAX_FLOWS"),
  DEFAULT_MAX_TUN_KEYS: one("wr_size", "WR_DEFAULT_MAX_TUN_KEYS"),
  MAX_GROUP_BUCKETS: one("wr_group_size", "WR_MAX_GROUP_BUCKETS"),
  DEFAULT_MAX_GROUPS: one("wr_group_size", "WR_DEFAULT_MAX_GROUPS"),
  DEFAULT_MAX_BUCKETS: one("wr_group_size", "WR_DEFAULT_MAX_BUCKETS"),
  MAX_OWNERS: one("wr_size", "WR_MAX_OWNERS"),
  IFINDEX_DIRECT: one("wr_size", "WR_IFINDEX_DIRECT"),
  STT_HDR_LEN: one("wr_stt_size", "WR_STT_HDR_LEN"),
  STT_SLOTS_PER_CPU: one("wr_stt_size", "WR_STT_SLOTS_PER_CPU"),
  STT_DEFAULT_TIMEOUT_MS: one("wr_stt_size", "WR_STT_DEFAULT_TIMEOUT_MS"),
  ACTF_LAST: one("wr_action_flag", "WR_ACTF_LAST"),
  ACTF_HAIRPIN: one("wr_action_flag", "WR_ACTF_HAIRPIN"),
  NO_TUN_KEY: one("wr_no_tun_key", "WR_NO_TUN_KEY"),
  META_MAGIC: one("wr_meta_magic", "WR_META_MAGIC"),
  META_RECHECK: one("wr_meta_magic", "WR_META_RECHECK"),
  META_STT: one("wr_meta_magic", "WR_META_STT"),
  TRACE_MARK: one("wr_mark", "WR_TRACE_MARK"),
  STAT_SLOTS: one("wr_stat", "WR_STAT_MAX"),
  CounterSlot: whole("wr_counter_slot", "WR_SLOT_", ["WR_SLOT_MAX"]),
  PortKind: whole("wr_port_kind", "WR_PORT_"),
  Proto: whole("wr_proto", "WR_PROTO_"),
  PortFlag: whole("wr_port_flag", "WR_PORTF_"),
  TunFlag: whole("wr_tun_flag", "WR_TUNF_"),
  TunKeySet: whole("wr_tun_key_set", "WR_TKSET_"),
  Frag: whole("wr_frag", "WR_FRAG_"),
  ActionOp: whole("wr_action_op", "WR_ACT_"),
  SetFieldId: whole("wr_set_field", "WR_SF_"),
  FlowFlag: whole("wr_flow_flag", "WR_FLOWF_"),
  FlowVis: whole("wr_flow_vis", "WR_VIS_"),
  ConfigFlag: whole("wr_config_flag", "WR_CFG_"),
  Miss: whole("wr_miss", "WR_MISS_"),
  FwdSaved: whole("wr_fwd", "WR_FWD_"),
  Stat: {
    enum: "wr_stat",
    enumerator: (key) => key.startsWith("DROP_") ? `WR_${key}` : `WR_STAT_${key}`,
    extra: ["WR_STAT_NONE", "WR_DROP_MAX_", "WR_STAT_MAX"],
  },
};

function isStructCodec(x: unknown): x is StructCodec<unknown> {
  return typeof x === "object" && x !== null && "fields" in x && "name" in x;
}

function isConstant(x: unknown): x is number | Record<string, number> {
  return typeof x === "number" ||
    (typeof x === "object" && x !== null && !isStructCodec(x) &&
      Object.values(x).every((v) => typeof v === "number"));
}

const hex = (n: number) => `0x${n.toString(16)}`;

/** The enumerators of `cEnum` in the first of `btfs` that records it. */
function enumerators(btfs: Btf[], cEnum: string): Map<string, number> | undefined {
  for (const btf of btfs) {
    const e = btf.enumerators(cEnum);
    if (e) return e;
  }
  return undefined;
}

/** Every constant of `layouts` against the enums of warren.h in `btfs`. */
export function constantDifferences(btfs: Btf[], layouts: Layouts): string[] {
  const problems: string[] = [];
  for (const [name, value] of Object.entries(layouts)) {
    if (!isConstant(value)) continue;
    const source = SOURCES[name];
    if (!source) {
      problems.push(`${name}: no C enumerator is named for it (tests/helpers/object_check.ts)`);
      continue;
    }
    const c = enumerators(btfs, source.enum);
    if (!c) {
      problems.push(`${name}: enum ${source.enum} is not in the object's BTF`);
      continue;
    }
    const pairs: [string, number, string][] = typeof value === "number"
      ? [[name, value, source.enumerator as string]]
      : Object.entries(value).map(([key, v]) => [
        `${name}.${key}`,
        v,
        (source.enumerator as (key: string) => string)(key),
      ]);
    for (const [tsName, ts, cName] of pairs) {
      const inC = c.get(cName);
      if (inC === undefined) problems.push(`${tsName}: enum ${source.enum} has no ${cName}`);
      else if (inC !== ts) problems.push(`${tsName} is ${hex(ts)}, ${cName} is ${hex(inC)} in C`);
    }
    if (typeof value === "object" && "extra" in source) {
      const mirrored = new Set([...pairs.map(([, , cName]) => cName), ...source.extra ?? []]);
      for (const cName of c.keys()) {
        if (!mirrored.has(cName)) {
          problems.push(`${name}: ${cName} of enum ${source.enum} is missing`);
        }
      }
    }
  }
  return problems;
}

/** Every struct codec of `layouts` against its struct in `btfs`. */
export function structDifferences(btfs: Btf[], layouts: Layouts): string[] {
  const problems: string[] = [];
  for (const codec of Object.values(layouts)) {
    if (!isStructCodec(codec)) continue;
    const layout = btfs.map((b) => b.struct(codec.name)).find((l) => l !== undefined);
    if (!layout) {
      problems.push(`struct ${codec.name}: not in the object's BTF`);
      continue;
    }
    problems.push(...layoutDifferences(codec, layout).map((p) => `struct ${codec.name}: ${p}`));
  }
  return problems;
}

/**
 * What `header` (warren.h's text) declares that the other checks would
 * miss: a struct without a codec in `layouts`, an enum `btfs` lack (not
 * named in `struct wr_constants`, so BTF does not carry it).
 */
export function headerDifferences(header: string, btfs: Btf[], layouts: Layouts): string[] {
  const problems: string[] = [];
  const codecs = new Set(Object.values(layouts).filter(isStructCodec).map((c) => c.name));
  for (const [, name] of header.matchAll(/^struct (wr_\w+) \{/gm)) {
    if (name !== "wr_constants" && !codecs.has(name)) {
      problems.push(`struct ${name} has no codec in src/maps/layouts.ts`);
    }
  }
  for (const [, name] of header.matchAll(/^enum (wr_\w+) \{/gm)) {
    if (!enumerators(btfs, name)) {
      problems.push(`enum ${name} is not in the object's BTF (name it in struct wr_constants)`);
    }
  }
  return problems;
}

/** The test-run context offsets of test_run.ts against `struct xdp_md` and `struct __sk_buff`. */
export function contextDifferences(btf: Btf): string[] {
  const problems: string[] = [];
  for (const [name, fields] of [["xdp_md", XDP_MD], ["__sk_buff", SK_BUFF]] as const) {
    const layout = btf.struct(name);
    if (!layout) {
      problems.push(`struct ${name}: not in the object's BTF`);
      continue;
    }
    if (layout.size !== fields.size) {
      problems.push(`struct ${name} is ${layout.size} bytes, test_run.ts says ${fields.size}`);
    }
    for (const [member, offset] of Object.entries(fields)) {
      if (member === "size") continue;
      const m = layout.members.find((x) => x.name === member);
      if (!m || m.offset !== offset || m.size !== 4) {
        problems.push(
          `${name}.${member} is at ${m ? `${m.offset}+${m.size}` : "nowhere"}, ` +
            `test_run.ts says ${offset}+4`,
        );
      }
    }
  }
  return problems;
}

/** names.ts against the programs, maps and `.rodata` variables of warren's object. */
export function nameDifferences(obj: BpfObject, btf: Btf): string[] {
  const problems: string[] = [];
  const compare = (what: string, ts: readonly string[], c: string[]) => {
    for (const n of c) if (!ts.includes(n)) problems.push(`${what}: ${n} is not in names.ts`);
    for (const n of ts) if (!c.includes(n)) problems.push(`${what}: ${n} is not in the object`);
  };
  compare("programs", PROGRAMS, obj.programNames);
  // libbpf's own maps for .rodata and the like have a dot in their names.
  compare("maps", [...PINNED_MAPS, ...PRIVATE_MAPS], obj.mapNames.filter((n) => !n.includes(".")));
  compare(
    ".rodata constants",
    CONSTANTS,
    btf.variables(".rodata").map((v) => v.name).filter((n) => n !== BTF_ANCHOR),
  );
  for (const n of PINNED_MAPS) {
    if ((PRIVATE_MAPS as readonly string[]).includes(n)) {
      problems.push(`maps: ${n} is both pinned and private`);
    }
  }
  return problems;
}
