/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Frames too big to work on in place, held in map buffers: bytes copied
 * between a packet and a buffer a chunk per helper call, and one's
 * complement sums over a buffer. A buffer holds a frame of up to
 * BUF_FRAME_MAX bytes and has a chunk of slack past it, so that the
 * verifier can prove every access in bounds.
 *
 * STT reassembles received segments and cuts frames into segments to send
 * through these (stt_rx.h, stt_tx.h); other tunnels cut GSO packets whose
 * every segment needs its own checksum or sequence number (gso.h).
 */
#ifndef WR_BUF_H
#define WR_BUF_H

#include "csum.h"

#define BUF_CHUNK 2048		/* bytes moved per helper call */
#define BUF_FRAME_MAX 0xffff	/* the longest frame a buffer holds */
#define BUF_SIZE (BUF_FRAME_MAX + 1 + BUF_CHUNK)
/* The most the helpers with plain bounded loops (the _short ones) take:
 * one segment's payload, jumbo frames included. They serve callers that
 * already run inside a bpf_loop. */
#define BUF_SEG_MAX 9216

/* The skb a bpf_loop callback works on: walks over a frame's segments. */
struct skb_arg {
	struct __sk_buff *skb;
};

/* ---- The frame being sent in segments ------------------------------------ */

/* Where a frame being sent in segments waits in wr_tx_buf: after room for
 * STT's header, which STT's segments carry in front of it (stt_tx.h);
 * other tunnels cut it as GSO would (gso.h). */
#define TX_FRAME_AT WR_STT_HDR_LEN

struct tx_buf {
	__u8 data[BUF_SIZE];
};

/* One per CPU, sized at load (too big for a per-CPU map): a program runs
 * once at a time per CPU, and a frame is sent before the next one comes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tx_buf);
} wr_tx_buf SEC(".maps");

/* This CPU's send buffer, or NULL. */
static __always_inline struct tx_buf *tx_buf(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&wr_tx_buf, &cpu);
}

/* ---- Sums ---------------------------------------------------------------- */

/* A sum in progress, for bpf_loop. */
struct msum {
	__u8 *base;		/* a buffer of BUF_SIZE bytes */
	__u32 off;
	__u32 end;
	__u64 sum;
};

/* 512 bytes per step: bpf_csum_diff's limit. Chunks start at even offsets
 * from the start, so 16-bit words never straddle two. */
static long msum_step(__u32 i, void *arg)
{
	struct msum *m = arg;
	__u32 at = m->off + i * 512, n;

	if (at >= m->end || at > BUF_FRAME_MAX)
		return 1;
	n = m->end - at;
	if (n > 512)
		n = 512;
	m->sum += chunk_sum(m->base + (at & 0xffff), n);
	return 0;
}

/* One's complement sum of buf[off, end), unfolded. */
static __always_inline __u64 mem_sum(__u8 *buf, __u32 off, __u32 end)
{
	struct msum m = { .base = buf, .off = off, .end = end };

	if (end > off && end <= BUF_FRAME_MAX + 1)
		bpf_loop((end - off + 511) / 512, msum_step, &m, 0);
	return m.sum;
}

/* One's complement sum of buf[off, off + len), len <= BUF_SEG_MAX, unfolded.
 * A plain bounded loop, not bpf_loop: the callers already run inside one. */
static __always_inline __u64 mem_sum_short(__u8 *buf, __u32 off, __u32 len)
{
	__u64 sum = 0;

	for (__u32 i = 0; i < BUF_SEG_MAX / 512; i++) {
		__u32 at = (off + i * 512) & 0xffff, n;

		if (i * 512 >= len)
			break;
		n = len - i * 512;
		if (n > 512)
			n = 512;
		/* The mask bounds the offset for the verifier; the compiler
		 * must not fold it into a comparison. */
		asm volatile("" : "+r"(at));
		sum += chunk_sum(buf + at, n);
	}
	return sum;
}

/* ---- Copies between packets and buffers ---------------------------------- */

/* A copy in progress, for bpf_loop. */
struct copy_walk {
	void *ctx;
	__u8 *buf;
	__u32 pkt;		/* packet offset of the first byte */
	__u32 at;		/* buffer offset of the first byte */
	__u32 len;
	__u32 failed;
};

/* One BUF_CHUNK of a copy: packet to buffer, or with `out` buffer to skb. */
static __always_inline long copy_step(__u32 i, struct copy_walk *w, int is_xdp, int out)
{
	__u32 done = i * BUF_CHUNK, n, at;
	long err;

	if (done >= w->len)
		return 1;
	n = w->len - done;
	if (n > BUF_CHUNK)
		n = BUF_CHUNK;
	at = (w->at + done) & 0xffff;
	if (n == 0)
		return 1;
	if (out)
		err = bpf_skb_store_bytes(w->ctx, w->pkt + done, w->buf + at, n, 0);
	else
		err = is_xdp ? bpf_xdp_load_bytes(w->ctx, w->pkt + done, w->buf + at, n) :
			       bpf_skb_load_bytes(w->ctx, w->pkt + done, w->buf + at, n);
	if (err) {
		w->failed = 1;
		return 1;
	}
	return 0;
}

static long copy_in_xdp(__u32 i, void *arg)
{
	return copy_step(i, arg, 1, 0);
}

static long copy_in_skb(__u32 i, void *arg)
{
	return copy_step(i, arg, 0, 0);
}

static long copy_out_skb(__u32 i, void *arg)
{
	return copy_step(i, arg, 0, 1);
}

/* Copies len bytes of the packet at pkt into buf at `at`. Returns 0 or -1. */
static __always_inline int pkt_to_buf(void *ctx, int is_xdp, __u32 pkt, __u8 *buf, __u32 at,
				      __u32 len)
{
	struct copy_walk w = { .ctx = ctx, .buf = buf, .pkt = pkt, .at = at, .len = len };

	if (at + len > BUF_FRAME_MAX + 1)
		return -1;
	bpf_loop((len + BUF_CHUNK - 1) / BUF_CHUNK, is_xdp ? copy_in_xdp : copy_in_skb, &w, 0);
	return w.failed ? -1 : 0;
}

/* Copies len bytes of buf at `at` into the skb at pkt. Returns 0 or -1. */
static __always_inline int buf_to_skb(struct __sk_buff *skb, __u32 pkt, __u8 *buf, __u32 at,
				      __u32 len)
{
	struct copy_walk w = { .ctx = skb, .buf = buf, .pkt = pkt, .at = at, .len = len };

	if (at + len > BUF_FRAME_MAX + 1)
		return -1;
	bpf_loop((len + BUF_CHUNK - 1) / BUF_CHUNK, copy_out_skb, &w, 0);
	return w.failed ? -1 : 0;
}

/* buf[at, at + len) into the skb at pkt, len <= BUF_SEG_MAX. Returns 0 or -1. */
static __always_inline int buf_to_skb_short(struct __sk_buff *skb, __u32 pkt, __u8 *buf, __u32 at,
					    __u32 len)
{
	for (__u32 i = 0; i < (BUF_SEG_MAX + BUF_CHUNK - 1) / BUF_CHUNK; i++) {
		__u32 done = i * BUF_CHUNK, n;

		if (done >= len)
			break;
		n = len - done;
		if (n > BUF_CHUNK)
			n = BUF_CHUNK;
		if (n == 0 || bpf_skb_store_bytes(skb, pkt + done, buf + ((at + done) & 0xffff), n, 0))
			return -1;
	}
	return 0;
}

#endif /* WR_BUF_H */
