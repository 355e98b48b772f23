/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Ablation builds, for the bench's ablation section: where a packet's time
 * goes. The Makefile's `ablation` target builds warren.bpf.c once more per
 * cost item below, with WR_ABLATE set to that item, and the bench measures
 * each build beside the full one on the same packets: the difference is
 * what the item costs. The normal build leaves WR_ABLATE at 0, so every
 * ablated() is a constant 0 and the compiler removes the branches.
 *
 * An ablated build is no datapath to run: it leaves out work that
 * correctness needs (counters, checksums, routing). It exists to be
 * measured, never loaded by warren itself.
 */
#ifndef WR_ABLATE_H
#define WR_ABLATE_H

#define ABL_CLOCK	0x001	/* the clock helper for `used` and the next-hop cache, not jiffies */
#define ABL_COUNTERS	0x002	/* no counter at all: flow, port, drop, event */
#define ABL_CACHE	0x004	/* no exact-match cache: every packet searched */
#define ABL_CSUM	0x008	/* no outer IPv4 header checksum check on receive */
#define ABL_BUFLEN	0x010	/* XDP: the frame's length from its pointers, no helper */
#define ABL_PARSE	0x020	/* the inner frame parsed no further than Ethernet */
#define ABL_FIB		0x040	/* encap: no FIB lookup (no MACs, the underlay device) */
#define ABL_HASH	0x080	/* encap: no flow hash for the source port and label */
#define ABL_MTU		0x100	/* encap: no MTU lookup (no too-big check) */
#define ABL_CACHE_HIT	0x200	/* every cache probe misses: the search, and a fill */
#define ABL_NH_CACHE	0x400	/* encap: no next-hop cache: routed, header built each time */
#define ABL_META_FLOW	0x800	/* TC classifies again what XDP classified and handed over */
#define ABL_DEVMAP	0x1000	/* XDP redirects by ifindex (wr_ports), not through wr_xdp_ports */

#ifndef WR_ABLATE
#define WR_ABLATE 0
#endif

/* Whether this build leaves cost item `item` out. */
#define ablated(item) (((WR_ABLATE) & (item)) != 0)

#endif /* WR_ABLATE_H */
