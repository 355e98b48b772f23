// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* A program the verifier must reject: it reads the packet without checking
 * data_end. The loader's error-path test expects the verifier log to say so. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_unchecked_read(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;

	return data[64] == 0xff ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
