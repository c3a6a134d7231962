/*
 * bench_hist.h: a log-linear latency histogram in the spirit of
 * HdrHistogram, written for the benchmarks (Debian ships no C
 * HdrHistogram library, so this small one is hand-written).
 *
 * Values (nanoseconds) below 128 are counted exactly; above, every power
 * of two is split into 128 equal buckets, so a bucket is at most 1/128 of
 * its values wide and a percentile read back is within 0.8% of the true
 * value (it reports the bucket's upper edge, never less than the truth).
 * The minimum and maximum are kept exactly.
 */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define BENCH_HIST_SUB     128      /* linear buckets per power of two */
#define BENCH_HIST_SHIFT   7        /* log2(BENCH_HIST_SUB) */
#define BENCH_HIST_BUCKETS (BENCH_HIST_SUB + (64 - BENCH_HIST_SHIFT) \
                            * BENCH_HIST_SUB)

struct bench_hist {
    uint64_t count;
    uint64_t min;
    uint64_t max;
    double   sum;
    uint64_t negative;              /* values below zero, counted as 0 */
    uint64_t b[BENCH_HIST_BUCKETS];
};

/* Empties H. */
void bench_hist_reset(struct bench_hist *h);

/* Counts one value V (ns); V < 0 is counted as 0 and in h->negative. */
void bench_hist_add(struct bench_hist *h, int64_t v);

/* Adds every count of FROM to TO. */
void bench_hist_merge(struct bench_hist *to, const struct bench_hist *from);

/*
 * The value at quantile Q (0..1): the upper edge of the bucket holding
 * the ceil(Q * count)-th smallest value, capped at the exact maximum.
 * 0 for an empty histogram.
 */
uint64_t bench_hist_quantile(const struct bench_hist *h, double q);

/* The bucket index of V and the largest value that bucket holds. */
unsigned bench_hist_index(uint64_t v);
uint64_t bench_hist_upper(unsigned idx);

#endif
