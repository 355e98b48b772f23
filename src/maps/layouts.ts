/**
 * The codecs of every struct in `bpf/include/warren.h`, field for field and
 * in the same order, and the constants of its enums. `tests/object_test.ts`
 * compares all of them with the built object's BTF, without root; opening
 * a map checks its codecs against the kernel's BTF again (see layout.ts),
 * so a drift between the two fails loudly.
 *
 * Addresses are `u8[16]` here (IPv4 in the first 4 bytes); the family lives
 * in a flag beside them, so src/tunnel turns them into text.
 *
 * It is longer than the project's ~500 lines on purpose: it mirrors
 * warren.h one struct for one struct, so a reader (and the BTF check)
 * compares the two files side by side; split, the order would be lost.
 *
 * @module
 */

import {
  array,
  bytes,
  mac,
  pad,
  struct,
  u16,
  u16be,
  u32,
  u32be,
  u64,
  u64be,
  u8,
  type ValueOf,
} from "./codec.ts";

/** `WR_LAYOUT_VERSION`: bumped when a pinned map changes meaning. */
export const LAYOUT_VERSION = 4;

/** Sizes fixed at compile time. */
export const MAX_PORTS = 256;
/** Masks per table generation. */
export const MAX_MASKS = 32;
/** Actions per flow. */
export const MAX_ACTIONS = 8;
/** Bytes of Geneve options one tunnel key emits. */
export const GENEVE_OPT_MAX = 32;
/** Default capacity of the flow table. */
export const DEFAULT_MAX_FLOWS = 65536;
/** Default capacity of the tunnel key table. */
export const DEFAULT_MAX_TUN_KEYS = 65536;
/** Owners of flows, the operator's (id 0) included. */
export const MAX_OWNERS = 1024;
/** Local ports' ifindexes below this are found in an array (`wr_ifindex_ports`). */
export const IFINDEX_DIRECT = 4096;

/** `struct wr_counter`: packets and bytes seen by one hook on one CPU. */
export const counterCodec = struct("wr_counter", {
  packets: u64,
  bytes: u64,
});
/** A {@link counterCodec} value. */
export type Counter = ValueOf<typeof counterCodec>;

/** `enum wr_counter_slot`: the slots of the test and bench counter map. */
export const CounterSlot = { XDP: 0, TC: 1, XDP_V2: 2 } as const;

/** `enum wr_port_kind`. */
export const PortKind = { NONE: 0, LOCAL: 1, TUNNEL: 2 } as const;

/** `enum wr_proto`. */
export const Proto = { NONE: 0, VXLAN: 1, GENEVE: 2, GRE: 3, STT: 4 } as const;

/** `WR_PORTF_*`. */
export const PortFlag = {
  XDP: 0x0001,
  REMOTE_FLOW: 0x0002,
  KEY_IN_FLOW: 0x0004,
  KEY_OUT_FLOW: 0x0008,
  TTL_INHERIT: 0x0010,
  TOS_INHERIT: 0x0020,
  DF: 0x0040,
  CSUM: 0x0080,
  SEQ: 0x0100,
  V6: 0x0200,
  NO_KEY: 0x0400,
  NH_MAC: 0x0800,
  MSS_CLAMP: 0x1000,
  NET_FLOW: 0x2000,
  CSUM6: 0x4000,
} as const;

/** `struct wr_port`. */
export const portCodec = struct("wr_port", {
  ifindex: u32,
  kind: u8,
  proto: u8,
  flags: u16,
  dst_port: u16be,
  ttl: u8,
  tos: u8,
  mtu: u16,
  pad0: pad(2),
  key_in: u64be,
  key_out: u64be,
  remote: bytes(16),
  local: bytes(16),
  nh_mac: mac,
  local_mac: mac,
  gre_seq: u32,
  net: u32,
  gso_ifindex: u32,
});
/** A {@link portCodec} value. */
export type PortEntry = ValueOf<typeof portCodec>;

/** `struct wr_port_info`: a port's names. */
export const portInfoCodec = struct("wr_port_info", {
  name: bytes(16),
  device: bytes(16),
});
/** A {@link portInfoCodec} value. */
export type PortInfo = ValueOf<typeof portInfoCodec>;

/** `struct wr_endpoint_key`. */
export const endpointKeyCodec = struct("wr_endpoint_key", {
  addr: bytes(16),
  ipproto: u8,
  v6: u8,
  dst_port: u16be,
  pad0: pad(4),
});
/** A {@link endpointKeyCodec} value. */
export type EndpointKey = ValueOf<typeof endpointKeyCodec>;

/** `struct wr_endpoint`. */
export const endpointCodec = struct("wr_endpoint", {
  port: u16,
  fixed_remotes: u8,
  proto: u8,
  pad0: pad(4),
});
/** A {@link endpointCodec} value. */
export type Endpoint = ValueOf<typeof endpointCodec>;

/** `struct wr_remote_key`. */
export const remoteKeyCodec = struct("wr_remote_key", {
  ep: endpointKeyCodec,
  remote: bytes(16),
});
/** A {@link remoteKeyCodec} value. */
export type RemoteKey = ValueOf<typeof remoteKeyCodec>;

/** `WR_TUNF_*`. */
export const TunFlag = {
  KEY: 0x01,
  CSUM: 0x02,
  DF: 0x04,
  OAM: 0x08,
  V6: 0x40,
  PRESENT: 0x80,
} as const;

/** `WR_TKSET_*`. */
export const TunKeySet = {
  TOS: 0x01,
  TTL: 0x02,
  DST: 0x04,
  SRC: 0x08,
  ID: 0x10,
  GNV_CRIT: 0x20,
  ID_PKT: 0x40,
} as const;

/** `struct wr_tun_key`: what a set_tunnel sets. */
export const tunKeyCodec = struct("wr_tun_key", {
  tun_id: u64be,
  dst: bytes(16),
  src: bytes(16),
  tos: u8,
  ttl: u8,
  flags: u8,
  set: u8,
  gnv_len: u8,
  pad0: pad(3),
  gnv_opts: bytes(GENEVE_OPT_MAX),
});
/** A {@link tunKeyCodec} value. */
export type TunKeyEntry = ValueOf<typeof tunKeyCodec>;

/** `WR_FRAG_*`: bit 0 "is a fragment", bit 1 "not the first". */
export const Frag = { NONE: 0, FIRST: 1, LATER: 3 } as const;

/** `struct wr_flow_key`: everything a flow can match on. */
export const flowKeyCodec = struct("wr_flow_key", {
  in_port: u16,
  tun_flags: u8,
  tun_tos: u8,
  tun_ttl: u8,
  ip_proto: u8,
  ip_tos: u8,
  ip_frag: u8,
  tun_id: u64be,
  tun_src: bytes(16),
  tun_dst: bytes(16),
  eth_src: bytes(6),
  eth_dst: bytes(6),
  eth_type: u16be,
  vlan_tci: u16be,
  ip_src: bytes(16),
  ip_dst: bytes(16),
  tp_src: u16be,
  tp_dst: u16be,
  gnv_class: u16be,
  gnv_type: u8,
  gnv_len: u8,
  gnv_data: bytes(8),
  net: u32,
  ipv6_label: u32be,
  nd_target: bytes(16),
  arp_sha: bytes(6),
  arp_tha: bytes(6),
  tcp_flags: u16be,
  nw_ttl: u8,
  pad0: pad(1),
});
/** A {@link flowKeyCodec} value. */
export type FlowKey = ValueOf<typeof flowKeyCodec>;

const FK = Object.fromEntries(flowKeyCodec.fields.map((f) => [f.name, f.offset])) as Record<
  keyof FlowKey,
  number
>;
const FLOW_KEY_SIZE = flowKeyCodec.size;

/** Every byte field: {@link encodeFlowKey}'s `fields` when a mask's are not known. */
const ALL_BYTE_FIELDS = 0x3ff;

/**
 * Writes `k` at `off` of `out`: the same bytes as `flowKeyCodec`, without
 * its per-field indirection, for tables of a million flows; with `m`, `k`
 * masked by it, field by field (the bytes of each field ANDed with the
 * mask's), so that a match's key needs no pass of its own. Byte by byte:
 * a DataView made per key was a third of encoding one. With `fields`
 * (what {@link encodeFlowMask} of `m` returned), only the byte fields the
 * mask has bits in are read, the others written as zeros: the bytes of
 * the byte fields were most of the time of encoding a match. A key from
 * {@link emptyFlowKey} has its byte fields read from its slab, so none
 * of their views is made here.
 */
export function encodeFlowKey(
  k: FlowKey,
  out: Uint8Array,
  off = 0,
  m: FlowKey = ONES,
  fields = ALL_BYTE_FIELDS,
): void {
  if (fields !== ALL_BYTE_FIELDS) out.fill(0, off, off + FLOW_KEY_SIZE);
  putScalars(k, m, out, off);
  if (fields & 0x001) put(k, m, 0x001, O_TUN_SRC, out, off);
  if (fields & 0x002) put(k, m, 0x002, O_TUN_DST, out, off);
  if (fields & 0x004) put(k, m, 0x004, O_ETH_SRC, out, off);
  if (fields & 0x008) put(k, m, 0x008, O_ETH_DST, out, off);
  if (fields & 0x010) put(k, m, 0x010, O_IP_SRC, out, off);
  if (fields & 0x020) put(k, m, 0x020, O_IP_DST, out, off);
  if (fields & 0x040) put(k, m, 0x040, O_GNV_DATA, out, off);
  if (fields & 0x080) put(k, m, 0x080, O_ND_TARGET, out, off);
  if (fields & 0x100) put(k, m, 0x100, O_ARP_SHA, out, off);
  if (fields & 0x200) put(k, m, 0x200, O_ARP_THA, out, off);
}

/**
 * Writes mask `m` at `off` of `out`, the bytes {@link encodeFlowKey} of
 * it writes, and returns which of its byte fields have a bit set: the
 * `fields` for encoding a key under it.
 */
export function encodeFlowMask(m: FlowKey, out: Uint8Array, off = 0): number {
  putScalars(m, ONES, out, off);
  return copy(m, 0x001, O_TUN_SRC, out, off) |
    copy(m, 0x002, O_TUN_DST, out, off) |
    copy(m, 0x004, O_ETH_SRC, out, off) |
    copy(m, 0x008, O_ETH_DST, out, off) |
    copy(m, 0x010, O_IP_SRC, out, off) |
    copy(m, 0x020, O_IP_DST, out, off) |
    copy(m, 0x040, O_GNV_DATA, out, off) |
    copy(m, 0x080, O_ND_TARGET, out, off) |
    copy(m, 0x100, O_ARP_SHA, out, off) |
    copy(m, 0x200, O_ARP_THA, out, off);
}

/** Writes the fields of `k` that are not bytes, masked by `m`'s, at `off` of `out`. */
function putScalars(k: FlowKey, m: FlowKey, out: Uint8Array, off: number): void {
  le16(out, off + FK.in_port, k.in_port & m.in_port);
  out[off + FK.tun_flags] = k.tun_flags & m.tun_flags;
  out[off + FK.tun_tos] = k.tun_tos & m.tun_tos;
  out[off + FK.tun_ttl] = k.tun_ttl & m.tun_ttl;
  out[off + FK.ip_proto] = k.ip_proto & m.ip_proto;
  out[off + FK.ip_tos] = k.ip_tos & m.ip_tos;
  out[off + FK.ip_frag] = k.ip_frag & m.ip_frag;
  // Eight stores, not a call of `fill`: this is in every key and mask encoded.
  if (k.tun_id === 0n || m.tun_id === 0n) {
    for (let i = 0; i < 8; i++) {
      out[off + FK.tun_id + i] = 0;
    }
  } else {
    const id = k.tun_id & m.tun_id;
    be32(out, off + FK.tun_id, Number((id >> 32n) & 0xffffffffn));
    be32(out, off + FK.tun_id + 4, Number(id & 0xffffffffn));
  }
  be16(out, off + FK.eth_type, k.eth_type & m.eth_type);
  be16(out, off + FK.vlan_tci, k.vlan_tci & m.vlan_tci);
  be16(out, off + FK.tp_src, k.tp_src & m.tp_src);
  be16(out, off + FK.tp_dst, k.tp_dst & m.tp_dst);
  be16(out, off + FK.gnv_class, k.gnv_class & m.gnv_class);
  out[off + FK.gnv_type] = k.gnv_type & m.gnv_type;
  out[off + FK.gnv_len] = k.gnv_len & m.gnv_len;
  const net = k.net & m.net;
  le16(out, off + FK.net, net);
  le16(out, off + FK.net + 2, net >>> 16);
  be32(out, off + FK.ipv6_label, k.ipv6_label & m.ipv6_label);
  be16(out, off + FK.tcp_flags, k.tcp_flags & m.tcp_flags);
  out[off + FK.nw_ttl] = k.nw_ttl & m.nw_ttl;
}

function le16(out: Uint8Array, at: number, v: number): void {
  out[at] = v;
  out[at + 1] = v >>> 8;
}

function be16(out: Uint8Array, at: number, v: number): void {
  out[at] = v >>> 8;
  out[at + 1] = v;
}

function be32(out: Uint8Array, at: number, v: number): void {
  be16(out, at, v >>> 16);
  be16(out, at + 2, v);
}

// A loop, not `set`: the fields are a few bytes, and a builtin call per
// field was most of encoding a key. Each side is read where its bytes
// are: a slab key's own place, else the field's array. The field's size
// says how many bytes, never an array's length: a short one reads as
// zeros past its end (a typed array's read there is undefined, 0 when
// masked or stored), a long one cannot write into the next field.
function put(k: FlowKey, m: FlowKey, bit: number, o: number, out: Uint8Array, off: number): void {
  const ks = SlabFlowKey.slabOf(k, bit), ms = SlabFlowKey.slabOf(m, bit);
  const ka = ks ?? byteField(k, bit), ko = ks ? SlabFlowKey.placeOf(k) + o : 0;
  const ma = ms ?? byteField(m, bit), mo = ms ? SlabFlowKey.placeOf(m) + o : 0;
  const n = byteFieldSize(bit), at = off + o;
  for (let i = 0; i < n; i++) out[at + i] = ka[ko + i] & ma[mo + i];
}

/** Copies `m`'s byte field `bit` (at `o`) to `off + o` of `out`; returns `bit` if a byte of it is not zero, else 0. */
function copy(m: FlowKey, bit: number, o: number, out: Uint8Array, off: number): number {
  const ms = SlabFlowKey.slabOf(m, bit);
  const ma = ms ?? byteField(m, bit), mo = ms ? SlabFlowKey.placeOf(m) + o : 0;
  const n = byteFieldSize(bit), at = off + o;
  let any = 0;
  for (let i = 0; i < n; i++) any |= out[at + i] = ma[mo + i];
  return any ? bit : 0;
}

/** `k`'s byte field by its bit in {@link encodeFlowKey}'s `fields`. */
function byteField(k: FlowKey, bit: number): Uint8Array {
  switch (bit) {
    case 0x001:
      return k.tun_src;
    case 0x002:
      return k.tun_dst;
    case 0x004:
      return k.eth_src;
    case 0x008:
      return k.eth_dst;
    case 0x010:
      return k.ip_src;
    case 0x020:
      return k.ip_dst;
    case 0x040:
      return k.gnv_data;
    case 0x080:
      return k.nd_target;
    case 0x100:
      return k.arp_sha;
    default:
      return k.arp_tha;
  }
}

/** The size in bytes of the byte field with bit `bit`. */
function byteFieldSize(bit: number): number {
  // MACs are 6 bytes, Geneve data 8, addresses 16.
  return bit & 0x30c ? 6 : bit === 0x040 ? 8 : 16;
}

// Field offsets as plain constants: read once per decoded key, a dump's
// million lookups in a record built at run time were a large share of it.
const O_TUN_SRC = FK.tun_src;
const O_TUN_DST = FK.tun_dst;
const O_ETH_SRC = FK.eth_src;
const O_ETH_DST = FK.eth_dst;
const O_IP_SRC = FK.ip_src;
const O_IP_DST = FK.ip_dst;
const O_GNV_DATA = FK.gnv_data;
const O_ND_TARGET = FK.nd_target;
const O_ARP_SHA = FK.arp_sha;
const O_ARP_THA = FK.arp_tha;
// Keys decoded one after another are copied into shared slabs: one
// allocation per hundred-odd keys instead of one each (a dump decodes a
// million). A kept key keeps its slab, 16 KiB, alive.
const SLAB_SIZE = 16 * 1024;
const KEY_STRIDE = Math.ceil(FLOW_KEY_SIZE / 8) * 8;
let slab = new Uint8Array(0);
let slabView = new DataView(slab.buffer);
let slabUsed = 0;

/**
 * The flow key at `off` of `b`, as `flowKeyCodec` would decode it; its
 * byte fields are views of a private copy.
 */
export function decodeFlowKey(b: Uint8Array, off = 0): FlowKey {
  const o = slabPlace();
  const c = slab;
  for (let i = 0; i < FLOW_KEY_SIZE; i++) c[o + i] = b[off + i];
  const k = keyOver(c, o);
  readScalars(k, slabView, c, o);
  return k;
}

/** A place for one key in the current slab: zeros, never handed out before. */
function slabPlace(): number {
  if (slabUsed + KEY_STRIDE > slab.length) {
    slab = new Uint8Array(SLAB_SIZE);
    slabView = new DataView(slab.buffer);
    slabUsed = 0;
  }
  const o = slabUsed;
  slabUsed += KEY_STRIDE;
  return o;
}

/**
 * A flow key whose byte fields are views of `c` at `o`; its other fields
 * are 0 until {@link readScalars} reads them.
 */
function keyOver(c: Uint8Array, o: number): FlowKey {
  const buf = c.buffer;
  return {
    in_port: 0,
    tun_flags: 0,
    tun_tos: 0,
    tun_ttl: 0,
    ip_proto: 0,
    ip_tos: 0,
    ip_frag: 0,
    tun_id: 0n,
    tun_src: new Uint8Array(buf, o + O_TUN_SRC, 16),
    tun_dst: new Uint8Array(buf, o + O_TUN_DST, 16),
    eth_src: new Uint8Array(buf, o + O_ETH_SRC, 6),
    eth_dst: new Uint8Array(buf, o + O_ETH_DST, 6),
    eth_type: 0,
    vlan_tci: 0,
    ip_src: new Uint8Array(buf, o + O_IP_SRC, 16),
    ip_dst: new Uint8Array(buf, o + O_IP_DST, 16),
    tp_src: 0,
    tp_dst: 0,
    gnv_class: 0,
    gnv_type: 0,
    gnv_len: 0,
    gnv_data: new Uint8Array(buf, o + O_GNV_DATA, 8),
    net: 0,
    ipv6_label: 0,
    nd_target: new Uint8Array(buf, o + O_ND_TARGET, 16),
    arp_sha: new Uint8Array(buf, o + O_ARP_SHA, 6),
    arp_tha: new Uint8Array(buf, o + O_ARP_THA, 6),
    tcp_flags: 0,
    nw_ttl: 0,
  };
}

/** Sets `k`'s fields that are not bytes from the key at `o` of `c` (`v` its view). */
function readScalars(k: FlowKey, v: DataView, c: Uint8Array, o: number): void {
  k.in_port = v.getUint16(o + FK.in_port, true);
  k.tun_flags = c[o + FK.tun_flags];
  k.tun_tos = c[o + FK.tun_tos];
  k.tun_ttl = c[o + FK.tun_ttl];
  k.ip_proto = c[o + FK.ip_proto];
  k.ip_tos = c[o + FK.ip_tos];
  k.ip_frag = c[o + FK.ip_frag];
  // Most keys match no tunnel id: 0n is a constant, a BigInt read a new
  // object per key.
  const hi = v.getUint32(o + FK.tun_id), lo = v.getUint32(o + FK.tun_id + 4);
  k.tun_id = hi === 0 && lo === 0 ? 0n : v.getBigUint64(o + FK.tun_id);
  k.eth_type = v.getUint16(o + FK.eth_type);
  k.vlan_tci = v.getUint16(o + FK.vlan_tci);
  k.tp_src = v.getUint16(o + FK.tp_src);
  k.tp_dst = v.getUint16(o + FK.tp_dst);
  k.gnv_class = v.getUint16(o + FK.gnv_class);
  k.gnv_type = c[o + FK.gnv_type];
  k.gnv_len = c[o + FK.gnv_len];
  k.net = v.getUint32(o + FK.net, true);
  k.ipv6_label = v.getUint32(o + FK.ipv6_label);
  k.tcp_flags = v.getUint16(o + FK.tcp_flags);
  k.nw_ttl = c[o + FK.nw_ttl];
}

/**
 * One flow key decoded again and again in place: write a key's bytes into
 * {@link bytes}, call {@link load}, and {@link key} is that key. A dump
 * that prints each flow and forgets it decodes a million keys without a
 * million objects.
 */
export class FlowKeyBuffer {
  /** The raw `struct wr_flow_key` that {@link key} decodes. */
  readonly bytes = new Uint8Array(KEY_STRIDE);
  /** The decoded key: its byte fields are views of {@link bytes}. */
  readonly key = keyOver(this.bytes, 0);
  readonly #view = new DataView(this.bytes.buffer);

  /** Decodes {@link bytes} again into {@link key}. */
  load(): FlowKey {
    readScalars(this.key, this.#view, this.bytes, 0);
    return this.key;
  }
}

/**
 * An all-zero flow key (its byte fields share a slab with other keys, as
 * decoded ones do). A fresh place is zeros already: nothing is copied or
 * read, and a million flows built in code make two a flow. Its byte
 * fields are views made when first read, and {@link encodeFlowKey}
 * reads the slab without making them: most flows' keys and masks use one
 * or two of the ten, and a typed array is an allocation.
 *
 * Its byte fields are accessors, not own properties: a spread, JSON,
 * `Object.keys` or a deep comparison sees its other fields only. Copy it
 * with {@link copyFlowKey}, or see it whole with {@link plainFlowKey}.
 */
export function emptyFlowKey(): FlowKey {
  const o = slabPlace();
  return new SlabFlowKey(slab, o);
}

/**
 * A copy of `k` that shares nothing with it: what a spread of a key was,
 * for keys whose byte fields a spread would not see.
 */
export function copyFlowKey(k: FlowKey): FlowKey {
  const o = slabPlace();
  const c = slab;
  encodeFlowKey(k, c, o);
  const copied = new SlabFlowKey(c, o);
  readScalars(copied, slabView, c, o);
  return copied;
}

/**
 * `k` as a plain object, every field an own property (byte fields views
 * of its bytes, as {@link decodeFlowKey} gives them): what a spread, JSON
 * or a deep comparison needs to see a key from {@link emptyFlowKey} whole.
 * A plain key is returned as it is.
 */
export function plainFlowKey(k: FlowKey): FlowKey {
  if (!isSlabFlowKey(k)) return k;
  const o = slabPlace();
  const c = slab;
  encodeFlowKey(k, c, o);
  const plain = keyOver(c, o);
  readScalars(plain, slabView, c, o);
  return plain;
}

/** Whether `v` is a key from {@link emptyFlowKey}, whose byte fields are accessors. */
export function isSlabFlowKey(v: unknown): v is FlowKey {
  return SlabFlowKey.is(v);
}

/**
 * A flow key over a place in a slab. The fields that are not bytes are
 * own data properties, all made in the constructor in one order, so every
 * key has one shape and reads of them stay fast. A byte field is a view
 * of the place, made when first read; assigned an array, it is that array
 * (as a plain key's would be) and the place no longer holds it.
 */
class SlabFlowKey implements FlowKey {
  in_port = 0;
  tun_flags = 0;
  tun_tos = 0;
  tun_ttl = 0;
  ip_proto = 0;
  ip_tos = 0;
  ip_frag = 0;
  tun_id = 0n;
  eth_type = 0;
  vlan_tci = 0;
  tp_src = 0;
  tp_dst = 0;
  gnv_class = 0;
  gnv_type = 0;
  gnv_len = 0;
  net = 0;
  ipv6_label = 0;
  tcp_flags = 0;
  nw_ttl = 0;
  readonly #slab: Uint8Array;
  readonly #place: number;
  /** The byte fields assigned an array, by their bits in {@link encodeFlowKey}'s `fields`. */
  #assigned = 0;
  #tun_src: Uint8Array | undefined = undefined;
  #tun_dst: Uint8Array | undefined = undefined;
  #eth_src: Uint8Array | undefined = undefined;
  #eth_dst: Uint8Array | undefined = undefined;
  #ip_src: Uint8Array | undefined = undefined;
  #ip_dst: Uint8Array | undefined = undefined;
  #gnv_data: Uint8Array | undefined = undefined;
  #nd_target: Uint8Array | undefined = undefined;
  #arp_sha: Uint8Array | undefined = undefined;
  #arp_tha: Uint8Array | undefined = undefined;

  constructor(slab: Uint8Array, place: number) {
    this.#slab = slab;
    this.#place = place;
  }

  /** Whether `v` is one. */
  static is(v: unknown): v is SlabFlowKey {
    return typeof v === "object" && v !== null && #slab in v;
  }

  /**
   * The slab `k`'s byte field `bit` is read from at {@link placeOf} and
   * its offset, or undefined when `k` is no slab key or the field was
   * assigned an array of its own (read that).
   */
  static slabOf(k: FlowKey, bit: number): Uint8Array | undefined {
    return #slab in k && !(k.#assigned & bit) ? k.#slab : undefined;
  }

  /** Where in its slab a key from {@link slabOf} starts. */
  static placeOf(k: FlowKey): number {
    return (k as SlabFlowKey).#place;
  }

  /** A view of the slab until assigned. */
  get tun_src(): Uint8Array {
    return this.#tun_src ??= new Uint8Array(this.#slab.buffer, this.#place + O_TUN_SRC, 16);
  }
  set tun_src(v: Uint8Array) {
    this.#tun_src = v;
    this.#assigned |= 0x001;
  }

  /** A view of the slab until assigned. */
  get tun_dst(): Uint8Array {
    return this.#tun_dst ??= new Uint8Array(this.#slab.buffer, this.#place + O_TUN_DST, 16);
  }
  set tun_dst(v: Uint8Array) {
    this.#tun_dst = v;
    this.#assigned |= 0x002;
  }

  /** A view of the slab until assigned. */
  get eth_src(): Uint8Array {
    return this.#eth_src ??= new Uint8Array(this.#slab.buffer, this.#place + O_ETH_SRC, 6);
  }
  set eth_src(v: Uint8Array) {
    this.#eth_src = v;
    this.#assigned |= 0x004;
  }

  /** A view of the slab until assigned. */
  get eth_dst(): Uint8Array {
    return this.#eth_dst ??= new Uint8Array(this.#slab.buffer, this.#place + O_ETH_DST, 6);
  }
  set eth_dst(v: Uint8Array) {
    this.#eth_dst = v;
    this.#assigned |= 0x008;
  }

  /** A view of the slab until assigned. */
  get ip_src(): Uint8Array {
    return this.#ip_src ??= new Uint8Array(this.#slab.buffer, this.#place + O_IP_SRC, 16);
  }
  set ip_src(v: Uint8Array) {
    this.#ip_src = v;
    this.#assigned |= 0x010;
  }

  /** A view of the slab until assigned. */
  get ip_dst(): Uint8Array {
    return this.#ip_dst ??= new Uint8Array(this.#slab.buffer, this.#place + O_IP_DST, 16);
  }
  set ip_dst(v: Uint8Array) {
    this.#ip_dst = v;
    this.#assigned |= 0x020;
  }

  /** A view of the slab until assigned. */
  get gnv_data(): Uint8Array {
    return this.#gnv_data ??= new Uint8Array(this.#slab.buffer, this.#place + O_GNV_DATA, 8);
  }
  set gnv_data(v: Uint8Array) {
    this.#gnv_data = v;
    this.#assigned |= 0x040;
  }

  /** A view of the slab until assigned. */
  get nd_target(): Uint8Array {
    return this.#nd_target ??= new Uint8Array(this.#slab.buffer, this.#place + O_ND_TARGET, 16);
  }
  set nd_target(v: Uint8Array) {
    this.#nd_target = v;
    this.#assigned |= 0x080;
  }

  /** A view of the slab until assigned. */
  get arp_sha(): Uint8Array {
    return this.#arp_sha ??= new Uint8Array(this.#slab.buffer, this.#place + O_ARP_SHA, 6);
  }
  set arp_sha(v: Uint8Array) {
    this.#arp_sha = v;
    this.#assigned |= 0x100;
  }

  /** A view of the slab until assigned. */
  get arp_tha(): Uint8Array {
    return this.#arp_tha ??= new Uint8Array(this.#slab.buffer, this.#place + O_ARP_THA, 6);
  }
  set arp_tha(v: Uint8Array) {
    this.#arp_tha = v;
    this.#assigned |= 0x200;
  }
}

/** A mask of every bit: what {@link encodeFlowKey} masks by when given none. */
const ONES: FlowKey = flowKeyCodec.decode(new Uint8Array(FLOW_KEY_SIZE).fill(0xff));

/** `struct wr_mask`. */
export const maskCodec = struct("wr_mask", {
  bits: flowKeyCodec,
  id: u32,
  max_priority: u16,
  pad0: pad(2),
  flows: u32,
  pad1: pad(4),
});
/** A {@link maskCodec} value. */
export type MaskEntry = ValueOf<typeof maskCodec>;

/** `struct wr_mask_set`: the masks of one table generation. */
export const maskSetCodec = struct("wr_mask_set", {
  count: u32,
  pad0: pad(4),
  masks: array(maskCodec, MAX_MASKS),
});
/** A {@link maskSetCodec} value. */
export type MaskSet = ValueOf<typeof maskSetCodec>;

/** `struct wr_flow_index_key`. */
export const flowIndexKeyCodec = struct("wr_flow_index_key", {
  mask_id: u32,
  alt: u32,
  key: flowKeyCodec,
});
/** A {@link flowIndexKeyCodec} value. */
export type FlowIndexKey = ValueOf<typeof flowIndexKeyCodec>;

/** `enum wr_action_op`. */
export const ActionOp = {
  NONE: 0,
  OUTPUT: 1,
  TUNNEL: 2,
  DROP: 3,
  PASS: 4,
  GROUP: 5,
  SET_NET: 6,
  IN_PORT: 7,
  SET_ETH_SRC: 8,
  SET_ETH_DST: 9,
  SET_IP4_SRC: 10,
  SET_IP4_DST: 11,
  SET_TOS: 12,
  SET_TTL: 13,
  DEC_TTL: 14,
  SET_TP_SRC: 15,
  SET_TP_DST: 16,
  PUSH_VLAN: 17,
  POP_VLAN: 18,
  SET_VLAN: 19,
  SET_FIELD: 24,
} as const;
/** `enum wr_set_field`: the field a `SET_FIELD` action sets, in its `port`. */
export const SetFieldId = {
  ETH_SRC: 1,
  ETH_DST: 2,
  IP4_SRC: 3,
  IP4_DST: 4,
  IP6_SRC: 5,
  IP6_DST: 6,
  TP_SRC: 7,
  TP_DST: 8,
  TUN_ID: 9,
} as const;
/** `WR_ACTF_LAST`. */
export const ACTF_LAST = 0x01;
/** `WR_ACTF_HAIRPIN`: an output that may go to the packet's own input port. */
export const ACTF_HAIRPIN = 0x02;
/** `WR_NO_TUN_KEY`. */
export const NO_TUN_KEY = 0xffffffff;

/** `struct wr_action`. */
export const actionCodec = struct("wr_action", {
  op: u8,
  flags: u8,
  port: u16,
  arg: u32,
});
/** A {@link actionCodec} value. */
export type ActionEntry = ValueOf<typeof actionCodec>;

/** `WR_FLOWF_*`. */
export const FlowFlag = { LOCAL_XDP: 0x01 } as const;

/** `enum wr_flow_vis`: the table generations whose packets see an entry. */
export const FlowVis = { GEN0: 0x01, GEN1: 0x02, BOTH: 0x03 } as const;

/** `struct wr_flow_entry`: what a flow does. */
export const flowEntryCodec = struct("wr_flow_entry", {
  flow_id: u32,
  priority: u16,
  n_actions: u8,
  flags: u8,
  cookie: u64,
  owner: u16,
  vis: u8,
  pad0: pad(1),
  pad1: pad(4),
  actions: array(actionCodec, MAX_ACTIONS),
});
/** A {@link flowEntryCodec} value. */
export type FlowEntry = ValueOf<typeof flowEntryCodec>;

/** `WR_MAX_GROUP_BUCKETS`: buckets of one group. */
export const MAX_GROUP_BUCKETS = 4096;
/** Default capacity of the group table. */
export const DEFAULT_MAX_GROUPS = 4096;
/** Default capacity of the bucket table: every group's buckets, and room to change them. */
export const DEFAULT_MAX_BUCKETS = 65536;

/** `struct wr_bucket_list`: where a group's buckets sit in `wr_buckets`. */
export const bucketListCodec = struct("wr_bucket_list", {
  first: u32,
  n_buckets: u16,
  n_local: u16,
});
/** A {@link bucketListCodec} value. */
export type BucketList = ValueOf<typeof bucketListCodec>;

/** `struct wr_group`: a group slot's two bucket lists, one live. */
export const groupCodec = struct("wr_group", {
  live: u32,
  owner: u16,
  pad0: pad(2),
  lists: array(bucketListCodec, 2),
});
/** A {@link groupCodec} value. */
export type GroupEntry = ValueOf<typeof groupCodec>;

/** `struct wr_group_stats`: per group or per bucket, per CPU. */
export const groupStatsCodec = struct("wr_group_stats", {
  packets: u64,
  bytes: u64,
});
/** A {@link groupStatsCodec} value. */
export type GroupStats = ValueOf<typeof groupStatsCodec>;

/** `struct wr_owner`: an owner's name, by owner id (all zero: free). */
export const ownerCodec = struct("wr_owner", {
  name: bytes(64),
});
/** A {@link ownerCodec} value. */
export type OwnerEntry = ValueOf<typeof ownerCodec>;

/** `struct wr_flow_stats`: per flow, per CPU. */
export const flowStatsCodec = struct("wr_flow_stats", {
  packets: u64,
  bytes: u64,
  used_ns: u64,
  tcp_flags: u16,
  pad0: pad(2),
  pad1: pad(4),
});
/** A {@link flowStatsCodec} value. */
export type FlowStats = ValueOf<typeof flowStatsCodec>;

/** `struct wr_port_stats`: per port, per CPU. */
export const portStatsCodec = struct("wr_port_stats", {
  rx_packets: u64,
  rx_bytes: u64,
  tx_packets: u64,
  tx_bytes: u64,
  drops: u64,
});
/** A {@link portStatsCodec} value. */
export type PortStats = ValueOf<typeof portStatsCodec>;

/** `struct wr_cache_stats`: how often the fast path's caches answered. */
export const cacheStatsCodec = struct("wr_cache_stats", {
  flow_hits: u64,
  flow_misses: u64,
  nh_hits: u64,
  nh_misses: u64,
});
/** A {@link cacheStatsCodec} value. */
export type CacheStats = ValueOf<typeof cacheStatsCodec>;

/** `WR_CFG_*`. */
export const ConfigFlag = {
  XDP_UNDERLAY: 0x01,
  CLSACT: 0x02,
  WRITING: 0x04,
  XDP_AUTO: 0x08,
  XDP_WHY: 0x30,
  DEV_CSUM: 0x40,
} as const;
/** `WR_MISS_*`. */
export const Miss = { DROP: 0, PASS: 1 } as const;
/** `WR_FWD_*`: forwarding warren turned on and must turn off again. */
export const FwdSaved = { V4: 0x01, V6: 0x02 } as const;

/** `struct wr_config`. */
export const configCodec = struct("wr_config", {
  layout_version: u32,
  gen: u32,
  max_flows: u32,
  max_tun_keys: u32,
  flags: u32,
  underlay_ifindex: u32,
  miss_local: u8,
  miss_tunnel: u8,
  fwd_saved: u8,
  pad0: pad(1),
  stt_timeout_ms: u32,
  seq: u64,
  local_v4: bytes(16),
  local_v6: bytes(16),
});
/** A {@link configCodec} value. */
export type Config = ValueOf<typeof configCodec>;

/** `WR_META_MAGIC`. */
export const META_MAGIC = 0x57524e31;
/** `WR_TRACE_MARK`: skb mark of trace packets, decapsulated at TC. */
export const TRACE_MARK = 0x57524e54;
/** `WR_META_STT`: XDP reassembled an STT frame; it waits in a slot for TC. */
export const META_STT = 0x57524e33;
/** `WR_STT_DEFAULT_TIMEOUT_MS`: how long an incomplete STT frame waits. */
export const STT_DEFAULT_TIMEOUT_MS = 1000;
/** `WR_STT_SLOTS_PER_CPU`: STT frames each CPU reassembles at once. */
export const STT_SLOTS_PER_CPU = 16;
/** `WR_STT_HDR_LEN`. */
export const STT_HDR_LEN = 18;
/** `WR_META_RECHECK`: XDP could not verify the outer checksum. */
export const META_RECHECK = 0x57524e32;

/** `struct wr_meta`: what XDP hands TC after decapsulating. */
export const metaCodec = struct("wr_meta", {
  magic: u32,
  in_port: u16,
  tun_flags: u8,
  tun_tos: u8,
  tun_ttl: u8,
  gnv_type: u8,
  gnv_len: u8,
  pad0: pad(5),
  tun_id: u64be,
  tun_src: bytes(16),
  tun_dst: bytes(16),
  gnv_class: u16be,
  pad1: pad(2),
  gnv_data: bytes(8),
  stt_slot: u32,
  stt_id: u32,
  flow_id: u32,
  flow_slot: u32,
  pad2: pad(4),
  seq: u64,
});

/**
 * `enum wr_stat`: datapath-wide counters. Drops (1..31) bump exactly one
 * counter per dropped packet; the rest count events.
 */
export const Stat = {
  DROP_NO_FLOW: 1,
  DROP_ACTION: 2,
  DROP_NO_PORT: 3,
  DROP_BAD_IP: 4,
  DROP_BAD_UDP: 5,
  DROP_BAD_CSUM: 6,
  DROP_VXLAN_FLAGS: 7,
  DROP_GENEVE_VERSION: 8,
  DROP_GENEVE_OPTLEN: 9,
  DROP_GENEVE_CRITICAL: 10,
  DROP_GRE_VERSION: 11,
  DROP_GRE_FLAGS: 12,
  DROP_KEY_MISMATCH: 13,
  DROP_TRUNCATED: 14,
  DROP_ECN: 15,
  DROP_NO_ROUTE: 16,
  DROP_TOO_BIG: 17,
  DROP_ENCAP: 18,
  DROP_DECAP: 19,
  DROP_STT: 20,
  DROP_STT_REASM: 21,
  DROP_LOOP: 22,
  DROP_PAYLOAD: 23,
  DROP_NO_NEIGH: 24,
  DROP_NO_GROUP: 25,
  DROP_GROUP_EMPTY: 26,
  DROP_TTL: 27,
  DROP_IN_PORT: 28,
  DECAP: 32,
  ENCAP: 33,
  XDP_REDIRECT: 34,
  XDP_PASS: 35,
  TC_DECAP: 36,
  MISS_PASS: 37,
  NOT_OURS: 38,
  FRAGMENT: 39,
  ICMP_SENT: 40,
  MSS_CLAMPED: 41,
  STT_SEGMENTS: 42,
  STT_REASSEMBLED: 43,
  STT_EXPIRED: 44,
  STT_EVICTED: 45,
  STT_DUPLICATE: 46,
  GSO_DEVICE: 47,
  GSO_SEGMENTED: 48,
} as const;

/** Number of counters in a stat block, by {@link Stat} (`WR_STAT_MAX`). */
export const STAT_SLOTS = 64;

/**
 * `struct wr_stat_block`: the datapath-wide counters of one CPU, the one
 * entry of `wr_stats`: drops and events by {@link Stat}, and the caches'.
 */
export const statBlockCodec = struct("wr_stat_block", {
  cache: cacheStatsCodec,
  stat: array(u64, STAT_SLOTS),
});
/** A {@link statBlockCodec} value. */
export type StatBlock = ValueOf<typeof statBlockCodec>;

/** The name of a stat, for dumps: `no_flow`, `decap` … */
export function statName(index: number): string | undefined {
  for (const [name, value] of Object.entries(Stat)) {
    if (value === index) return name.replace(/^DROP_/, "").toLowerCase();
  }
  return undefined;
}

/** Whether stat `index` counts drops. */
export function isDropStat(index: number): boolean {
  return index >= 1 && index < 32;
}
