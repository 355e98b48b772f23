/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Internet checksums (RFC 1071) and their incremental updates (RFC 1624). */
#ifndef WR_CSUM_H
#define WR_CSUM_H

#include "common.h"

/* Folds a 32-bit one's complement sum to 16 bits. */
static __always_inline __u16 csum_fold32(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* The checksum field value for a 20-byte IPv4 header (check must be 0). */
static __always_inline __u16 ipv4_header_csum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	return ~csum_fold32(sum);
}

/* Replaces 16-bit word `old` by `new` in a checksum (RFC 1624, eqn. 3). */
static __always_inline __u16 csum_replace16(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u16)~old + new;

	return ~csum_fold32(sum);
}

/* Sum of an IPv4 or IPv6 pseudo-header, unfolded. */
static __always_inline __u64 pseudo_sum(const __u8 *src, const __u8 *dst, int v6,
					__u32 len, __u8 proto)
{
	const __u32 *s = (const __u32 *)src, *d = (const __u32 *)dst;
	__u64 sum = (__u64)s[0] + d[0];

	if (v6)
		sum += (__u64)s[1] + s[2] + s[3] + d[1] + d[2] + d[3];
	return sum + bpf_htonl(len) + bpf_htonl(proto);
}

/* One's complement sum of the n <= 512 bytes at p, unfolded: whole words
 * through bpf_csum_diff, the last 1-3 bytes zero-padded to a word. p must
 * have 3 readable bytes past p + n, for the verifier. */
static __always_inline __u64 chunk_sum(__u8 *p, __u32 n)
{
	__u32 n4 = n & 0x3fc, w = 0;
	__u64 sum = 0;

	if (n4)
		sum = (__u32)bpf_csum_diff(0, 0, (__be32 *)p, n4, 0);
	if (n & 3) {
		__u8 *q = (__u8 *)&w, *t = p + n4;

		q[0] = t[0];
		if ((n & 3) > 1)
			q[1] = t[1];
		if ((n & 3) > 2)
			q[2] = t[2];
		sum += w;
	}
	return sum;
}

/* bpf_csum_diff's limit: the fewer helper calls a sum takes, the cheaper
 * (a 1400-byte frame costs about half as much in 512-byte steps as in
 * 64-byte ones). */
#define CSUM_CHUNK 512

/* The chunk being summed: a map slot, not stack, because checksums run at
 * the bottom of deep call chains (every frame counts toward 512 bytes). */
struct csum_buf {
	__u8 b[CSUM_CHUNK + 8];	/* slack past the chunk, for chunk_sum's tail */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct csum_buf);
} wr_scratch_csum SEC(".maps");

struct csum_walk {
	void *ctx;
	__u32 start;
	__u32 end;
	__u64 sum;
	__u32 done;		/* bytes summed */
	__u32 failed;
};

/* The XDP frame's n <= CSUM_CHUNK bytes at off where direct packet
 * access reaches them, or 0 when not all are in its first buffer. (At TC
 * the same would take wr_tc_underlay past the verifier's limit of
 * instructions: it copies.) The bound on off keeps direct_words' pieces,
 * each at most a chunk past off and at most a chunk long, within what the
 * verifier tracks of a packet (MAX_PACKET_OFF). */
static __always_inline __u8 *direct_bytes(struct xdp_md *ctx, __u32 off, __u32 n,
					  void **data_end)
{
	__u8 *p = (__u8 *)(long)ctx->data + off;

	if (off > 0xffff - 2 * CSUM_CHUNK)
		return 0;
	*data_end = (void *)(long)ctx->data_end;
	return p + n > (__u8 *)*data_end ? 0 : p;
}

/* Pieces up to this long are summed by loads, longer ones by one
 * bpf_csum_diff each: below it the helper call costs more than the loads
 * (a 144-byte STT frame, alternating in one run with builds of other
 * limits: 64 was about 1-2% faster than 0 or 32, within the noise of 128;
 * 512 spills past the stack limit). */
#define CSUM_LOADS 64

/*
 * The sum of the whole words of the n <= CSUM_CHUNK bytes at p, read in
 * place, in one piece per set bit of n: each of a constant size the
 * verifier checks against data_end. Each piece's place is computed from n
 * afresh (the bits above its own), not by moving on from the piece before:
 * then every path through the pieces reaches the next one in the same
 * state, and the verifier checks each once, not once per combination of
 * bits (which took wr_xdp_underlay past its limit).
 */
static __always_inline __u64 direct_words(__u8 *p, __u32 n, void *data_end)
{
	__u64 sum = 0;

#pragma unroll
	for (__u32 s = CSUM_CHUNK; s >= 4; s /= 2) {
		__u8 *q = p + (n & ~(2 * s - 1));

		/* direct_bytes checked all n bytes; the verifier needs each
		 * piece checked against its constant size. */
		if (!(n & s) || q + s > (__u8 *)data_end)
			continue;
		if (s > CSUM_LOADS) {
			sum += (__u32)bpf_csum_diff(0, 0, (__be32 *)q, s, 0);
			continue;
		}
#pragma unroll
		for (__u32 k = 0; k < s; k += 4)
			sum += *(__u32 *)(q + k);
	}
	return sum;
}

/* Step i of the bpf_loop: adds the CSUM_CHUNK bytes at start + i *
 * CSUM_CHUNK, or what is left of them. The offset comes from i, which the
 * verifier does not know, so it verifies one step instead of every one.
 * Chunks start at even offsets: 16-bit words never straddle two. Whole
 * words in the frame's linear part are summed where they are; the rest (a
 * frame's other buffers, the last 1-3 bytes) is copied out and summed. */
static __always_inline long csum_step(__u32 i, struct csum_walk *w, int is_xdp)
{
	__u32 off = w->start + i * CSUM_CHUNK, zero = 0, n;
	struct csum_buf *cb;
	void *data_end;
	__u8 *p;
	long err;

	if (off >= w->end || i >= 0x10000 / CSUM_CHUNK)
		return 1;
	n = w->end - off;
	if (n > CSUM_CHUNK)
		n = CSUM_CHUNK;
	p = is_xdp ? direct_bytes(w->ctx, off, n, &data_end) : 0;
	if (p) {
		w->sum += direct_words(p, n & ~3, data_end);
		w->done += n & ~3;
		off += n & ~3;
		n &= 3;
		if (n == 0)
			return 0;
	}
	cb = bpf_map_lookup_elem(&wr_scratch_csum, &zero);
	if (!cb || n == 0) {	/* n == 0 cannot happen; the verifier needs telling */
		w->failed = 1;
		return 1;
	}
	/* The helper is chosen at compile time: each program type may only
	 * reference its own. */
	if (is_xdp)
		err = bpf_xdp_load_bytes(w->ctx, off, cb->b, n);
	else
		err = bpf_skb_load_bytes(w->ctx, off, cb->b, n);
	if (err) {
		w->failed = 1;
		return 1;
	}
	w->sum += chunk_sum(cb->b, n);
	w->done += n;
	return 0;
}

static long csum_step_xdp(__u32 i, void *arg)
{
	return csum_step(i, arg, 1);
}

static long csum_step_skb(__u32 i, void *arg)
{
	return csum_step(i, arg, 0);
}

/* The one's complement sum of packet bytes [off, end), unfolded, or -1.
 * Reads an XDP frame's first buffer in place, the rest through the
 * helpers, so multi-buffer XDP frames work too. */
static __always_inline __s64 packet_sum(void *ctx, int is_xdp, __u32 off, __u32 end)
{
	struct csum_walk w = { .ctx = ctx, .start = off, .end = end };

	if (end < off || end - off > 0xffff)
		return -1;
	bpf_loop((end - off + CSUM_CHUNK - 1) / CSUM_CHUNK, is_xdp ? csum_step_xdp : csum_step_skb,
		 &w, 0);
	if (w.failed || w.done != end - off)
		return -1;
	return (__s64)(w.sum & 0xffffffffffffULL);
}

/* The kernel's sk_buff, only the fields read here; CO-RE finds them in the
 * running kernel's BTF. */
struct sk_buff___wr {
	__u8 ip_summed:2;
	__u32 gso_size;
} __attribute__((preserve_access_index));

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;	/* Linux 6.2 */

#define CHECKSUM_UNNECESSARY 1
#define CHECKSUM_PARTIAL 3

/*
 * Whether the kernel already vouches for the packet's checksums: verified
 * by the device (UNNECESSARY), or still to be filled in on the way out
 * (PARTIAL, as on a veth from a local sender), where the bytes hold only
 * the pseudo-header sum. XDP cannot know; only TC asks.
 */
/* The skb's ip_summed: CHECKSUM_NONE (0) .. CHECKSUM_PARTIAL (3). */
static __always_inline __u8 skb_ip_summed(struct __sk_buff *ctx)
{
	struct sk_buff___wr *skb = bpf_cast_to_kern_ctx(ctx);

	return BPF_CORE_READ_BITFIELD(skb, ip_summed);
}

/*
 * The sum of skb's bytes from off to its end as they will leave: as they
 * are, or (inner_l4 non-zero) once the device has filled in an inner
 * TCP/UDP checksum left partial (its L4 header at inner_l4, the field at
 * field, holding only its seed): the bytes up to inner_l4, then the
 * complement of the seed, which is what the filled-in L4 segment sums to
 * (local checksum offload, as the kernel computes it). One packet_sum
 * either way: each call costs the verifier its loop again. Returns the
 * sum, or -1.
 */
static __always_inline __s64 tx_sum(struct __sk_buff *skb, __u32 off, __u32 inner_l4, __u32 field)
{
	__u32 end = skb->len;
	__u16 seed = 0xffff;
	__s64 sum;

	if (inner_l4) {
		if (bpf_skb_load_bytes(skb, field, &seed, 2))
			return -1;
		end = inner_l4;
	}
	sum = packet_sum(skb, 0, off, end);
	return sum < 0 ? -1 : sum + (__u16)~seed;
}

static __always_inline int csum_trusted(void *ctx, int is_xdp)
{
	struct sk_buff___wr *skb;
	__u8 state;

	if (is_xdp)
		return 0;
	skb = bpf_cast_to_kern_ctx(ctx);
	state = BPF_CORE_READ_BITFIELD(skb, ip_summed);
	return state == CHECKSUM_UNNECESSARY || state == CHECKSUM_PARTIAL;
}

#endif /* WR_CSUM_H */
