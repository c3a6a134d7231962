/*
 * bench_hist.c: the log-linear histogram of bench_hist.h (hand-written:
 * no C HdrHistogram library is packaged in Debian).
 */
#include "bench_hist.h"

#include <string.h>

void
bench_hist_reset(struct bench_hist *h)
{
    memset(h, 0, sizeof(*h));
}

/*
 * Below 128 the index is the value; from 2^m (m >= 7) on, the top 8 bits
 * of V (128..255) pick one of 128 buckets of width 2^(m-7).
 */
unsigned
bench_hist_index(uint64_t v)
{
    unsigned m, shift;

    if (v < BENCH_HIST_SUB) {
        return (unsigned) v;
    }
    m = 63u - (unsigned) __builtin_clzll(v);
    shift = m - BENCH_HIST_SHIFT;
    return BENCH_HIST_SUB + shift * BENCH_HIST_SUB
        + (unsigned) ((v >> shift) - BENCH_HIST_SUB);
}

uint64_t
bench_hist_upper(unsigned idx)
{
    unsigned shift;
    uint64_t sub;

    if (idx < BENCH_HIST_SUB) {
        return idx;
    }
    shift = (idx - BENCH_HIST_SUB) / BENCH_HIST_SUB;
    sub = (idx - BENCH_HIST_SUB) % BENCH_HIST_SUB + BENCH_HIST_SUB;
    /* the last value whose top bits are SUB */
    return ((sub + 1) << shift) - 1;
}

void
bench_hist_add(struct bench_hist *h, int64_t v)
{
    uint64_t u;

    if (v < 0) {
        h->negative++;
        v = 0;
    }
    u = (uint64_t) v;
    if (h->count == 0 || u < h->min) {
        h->min = u;
    }
    if (u > h->max) {
        h->max = u;
    }
    h->count++;
    h->sum += (double) u;
    h->b[bench_hist_index(u)]++;
}

void
bench_hist_merge(struct bench_hist *to, const struct bench_hist *from)
{
    unsigned i;

    if (from->count == 0) {
        return;
    }
    if (to->count == 0 || from->min < to->min) {
        to->min = from->min;
    }
    if (from->max > to->max) {
        to->max = from->max;
    }
    to->count += from->count;
    to->sum += from->sum;
    to->negative += from->negative;
    for (i = 0; i < BENCH_HIST_BUCKETS; i++) {
        to->b[i] += from->b[i];
    }
}

uint64_t
bench_hist_quantile(const struct bench_hist *h, double q)
{
    uint64_t rank, seen = 0, up;
    unsigned i;

    if (h->count == 0) {
        return 0;
    }
    if (q <= 0) {
        return h->min;
    }
    rank = (uint64_t) (q * (double) h->count + 0.999999999);
    if (rank < 1) {
        rank = 1;
    }
    if (rank > h->count) {
        rank = h->count;
    }
    for (i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            up = bench_hist_upper(i);
            return up > h->max ? h->max : up;
        }
    }
    return h->max;
}
