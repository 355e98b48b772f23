/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every struct that both the BPF programs and warren's TypeScript read.
 *
 * Rules, because src/maps/layouts.ts mirrors this file field by field and
 * checks it against the object's BTF when a map is opened:
 *   - fixed-width types only, no bool, no enums in structs;
 *   - every hole filled by an explicit pad field, sizes a multiple of 8;
 *   - byte order stated per field: host order unless the name says _be
 *     or the comment says "network order".
 */
#ifndef WARREN_H
#define WARREN_H

#include <linux/types.h>

/* Packets and bytes seen by one hook on one CPU. */
struct wr_counter {
	__u64 packets;
	__u64 bytes;
};

/* Slots of the demo/test counter map (counter.bpf.c). */
enum wr_counter_slot {
	WR_SLOT_XDP = 0,
	WR_SLOT_TC = 1,
	WR_SLOT_XDP_V2 = 2,
	WR_SLOT_MAX = 4,
};

#endif /* WARREN_H */
