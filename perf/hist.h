/* Log-linear latency histogram in the HDR style: values below HIST_SUB are counted exactly,
 * above that every power of two is split into HIST_SUB linear sub-buckets, so a reported
 * value is at most 1/HIST_SUB (0.8%) above the recorded one. Fixed size, no allocation
 * after hist_new(), not thread-safe: keep one per thread and merge them. */
#ifndef MCQ_PERF_HIST_H
#define MCQ_PERF_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS) /* linear sub-buckets per power of two */
#define HIST_MAX_BITS 40               /* values from 2^40 ns (18 min) up share the top bucket */
#define HIST_BUCKETS ((HIST_MAX_BITS - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
    uint64_t count;
    uint64_t min; /* exact, in ns; UINT64_MAX while empty */
    uint64_t max; /* exact, in ns */
    uint64_t sum; /* for the mean */
    uint64_t bins[HIST_BUCKETS];
};

/* A new empty histogram, or NULL when out of memory. Free with hist_free(). */
struct hist *hist_new(void);
void hist_free(struct hist *h);
void hist_reset(struct hist *h);

/* Counts one value (a latency in ns). */
void hist_record(struct hist *h, uint64_t ns);

/* Adds every value of src to dst. */
void hist_merge(struct hist *dst, const struct hist *src);

/* Nearest-rank percentile, pct in [0, 100]: the highest value of the bucket holding that
 * rank, capped at the exact maximum. 0 for an empty histogram. */
uint64_t hist_percentile(const struct hist *h, double pct);

/* Mean of the recorded values in ns; 0 for an empty histogram. */
double hist_mean(const struct hist *h);

#endif
