/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The datapath's clock: nanoseconds of CLOCK_MONOTONIC to one jiffy, what a
 * flow's `used` and the next-hop cache's age are in, read as jiffies.
 *
 * bpf_ktime_get_coarse_ns() is a helper call per packet; bpf_jiffies64()
 * the verifier inlines into one load on a 64-bit JIT. The kernel counts
 * jiffies in ticks of TICK_NSEC on CLOCK_MONOTONIC from a start fixed at
 * boot, so the control plane measures that line when it loads the
 * programs (src/tunnel/datapath/jiffies.ts, with clock.bpf.c) and sets it
 * here: ns = jiffies64 * wr_jiffy_ns + wr_jiffy_base, the start of the
 * current jiffy. Like the coarse clock (CLOCK_MONOTONIC_COARSE), which
 * stamps from before this build keep, it is never after the packet and at
 * most one jiffy before it. Left at 0 (a loader that did not measure, or
 * could not), the helper is read instead: a stamp is never garbage. The
 * verifier sees constants and keeps one of the two branches.
 */
#ifndef WR_CLOCK_H
#define WR_CLOCK_H

#include "common.h"

/* TICK_NSEC, or 0: use the helper. */
const volatile __u64 wr_jiffy_ns = 0;
/* CLOCK_MONOTONIC at jiffy 0 (mod 2^64: jiffies start near 2^32). */
const volatile __u64 wr_jiffy_base = 0;

/* CLOCK_MONOTONIC now, in ns, to one jiffy. The ablation calls the helper,
 * as a datapath without the line does: what reading jiffies saves. */
static __always_inline __u64 coarse_now(void)
{
	__u64 ns = wr_jiffy_ns;

	if (!ns || ablated(ABL_CLOCK))
		return bpf_ktime_get_coarse_ns();
	return bpf_jiffies64() * ns + wr_jiffy_base;
}

#endif /* WR_CLOCK_H */
