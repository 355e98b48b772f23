/**
 * The built BPF objects the tests load, as the runtime imports them.
 *
 * @module
 */

import counter from "../../bpf/build/counter.bpf.o" with { type: "bytes" };
import flowKeyProbe from "../../bpf/build/flow_key_probe.bpf.o" with { type: "bytes" };
import kernelPeer from "../../bpf/build/kernel_peer.bpf.o" with { type: "bytes" };
import vlanTagger from "../../bpf/build/vlan_tagger.bpf.o" with { type: "bytes" };
import verifierReject from "../../bpf/build/verifier_reject.bpf.o" with { type: "bytes" };
import warren from "../../bpf/build/warren.bpf.o" with { type: "bytes" };

/** warren.bpf.o: the datapath, as `src/tunnel/datapath.ts` imports it. */
export const WARREN_OBJECT: Uint8Array = warren;

/** counter.bpf.o: per-CPU counters at XDP and TC, and the reflector. */
export const COUNTER_OBJECT: Uint8Array = counter;

/** verifier_reject.bpf.o: a program the verifier must refuse. */
export const VERIFIER_REJECT_OBJECT: Uint8Array = verifierReject;

/** Where `make -C bpf` puts the objects. */
export const BUILD_DIR = new URL("../../bpf/build/", import.meta.url).pathname;

/** kernel_peer.bpf.o: drives a kernel vxlan device in external mode. */
export const KERNEL_PEER_OBJECT: Uint8Array = kernelPeer;

/** flow_key_probe.bpf.o: the datapath's frame parser, its flow key left in a map. */
export const FLOW_KEY_PROBE_OBJECT: Uint8Array = flowKeyProbe;

/** vlan_tagger.bpf.o: a VLAN device for a workload, at its device's TC hooks. */
export const VLAN_TAGGER_OBJECT: Uint8Array = vlanTagger;
