// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Reads an skb's checksum state the way the datapath does (csum.h). The
 * privileges test loads it with and without CAP_PERFMON: it pins down the
 * kernel rule that makes `warren up` need CAP_PERFMON. */
#include "csum.h"

SEC("tc")
int tc_checksum_state(struct __sk_buff *skb)
{
	return skb_ip_summed(skb) == CHECKSUM_PARTIAL ? TC_ACT_OK : TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
