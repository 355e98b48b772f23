// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The clock probe: the control plane runs it with BPF_PROG_TEST_RUN to learn
 * where the kernel's jiffies start on its monotonic clock
 * (src/tunnel/datapath/jiffies.ts), so that the datapath can read jiffies,
 * which the verifier inlines, and still stamp monotonic nanoseconds
 * (bpf/include/clock.h). User space has no other way to read jiffies.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Writes jiffies64, CLOCK_MONOTONIC and CLOCK_MONOTONIC_COARSE (ns) over
 * the frame's first 24 bytes (little-endian). Read after jiffies, the time
 * is never earlier than the start of the jiffy read with it; the coarse
 * clock steps once a tick, by the tick's length, however late it is read. */
SEC("xdp")
int wr_clock_probe(struct xdp_md *ctx)
{
	__u64 *out = (void *)(long)ctx->data;

	if ((void *)(out + 3) > (void *)(long)ctx->data_end)
		return XDP_ABORTED;
	out[0] = bpf_jiffies64();
	out[1] = bpf_ktime_get_ns();
	out[2] = bpf_ktime_get_coarse_ns();
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
