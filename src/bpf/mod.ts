/**
 * warren's BPF layer: libbpf over `Deno.dlopen`.
 *
 * Objects ({@link BpfObject}) open from a file or from memory and load with
 * the verifier log captured; programs, maps and links own their file
 * descriptors and release them on `close()` or at the end of `using`.
 *
 * @example Count packets at XDP
 * ```ts ignore
 * // Needs root: tests/docs_test.ts runs this example in a network namespace.
 * import { attachXdp, BpfObject, ifindex } from "./mod.ts";
 *
 * // From the top of a checkout, on a host with a veth named veth0.
 * using obj = BpfObject.openFile("bpf/build/counter.bpf.o");
 * obj.load();
 * using prog = obj.program("xdp_count");
 * using link = attachXdp(prog, ifindex("veth0"), { mode: "native" });
 * ```
 *
 * @module
 */

export * from "./background_writes.ts";
export * from "./btf.ts";
export * from "./caps.ts";
export * from "./errno.ts";
export * from "./clsact.ts";
export * from "./errors.ts";
export * from "./fd.ts";
export * from "./info.ts";
export * from "./link.ts";
export * from "./map.ts";
export * from "./netif.ts";
export * from "./object.ts";
export * from "./pin.ts";
export * from "./program.ts";
export * from "./tc.ts";
export * from "./tcx.ts";
export * from "./test_run.ts";
export * from "./xdp.ts";
export * from "./clock.ts";
