/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * STT (Stateless Transport Tunneling, draft-davie-stt-08) in eBPF: its
 * wire format and what its two directions share. Each direction lives in
 * one header:
 *
 *   stt_tx.h  sending: an inner frame becomes one STT frame (the 18-byte
 *             STT header, then the frame) carried by a fake TCP segment,
 *             or by several when it does not fit one underlay segment.
 *   stt_rx.h  receiving: a frame that arrives in one segment is
 *             decapsulated like any tunnel packet; segments are reassembled
 *             in per-CPU slots and the frame delivered whole, or cut back
 *             into the TCP segments GSO would have made.
 *
 * Frames too big to handle in place go through map buffers (buf.h).
 */
#ifndef WR_STT_H
#define WR_STT_H

#include "buf.h"

_Static_assert(WR_STT_FRAME_MAX <= BUF_FRAME_MAX, "an STT frame fits a frame buffer");

/* The header after the fake TCP header, on the first segment of a frame
 * only. */
struct stt_hdr {
	__u8 version;
	__u8 flags;		/* STT_F_* */
	__u8 l4_off;		/* inner L4 header, from the inner Ethernet header */
	__u8 reserved;
	__be16 mss;		/* the inner packet's MSS, for resegmenting */
	__be16 vlan_tci;	/* PCP, V (STT_VLAN_V), VID */
	__be64 context;		/* the tunnel key */
	__be16 pad;		/* aligns the inner IP header */
} __attribute__((packed));
#define STT_F_CSUM_VERIFIED 0x01
#define STT_F_CSUM_PARTIAL 0x02	/* the inner L4 checksum holds only its pseudo-header sum */
#define STT_F_IPV4 0x04
#define STT_F_TCP 0x08
#define STT_F_RESERVED 0xf0
#define STT_VLAN_V 0x1000

#endif /* WR_STT_H */
