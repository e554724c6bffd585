/* Self-check of the latency histogram that the other benches report through: known
 * distributions must come back within the promised precision, and recording must be
 * cheap next to what it measures. Fails the group (-EPROTO) when the histogram is wrong. */
#include "bench.h"
#include "hist.h"

#include <errno.h>
#include <stdio.h>

#define UNIFORM_MAX 1000000u         /* values 1..UNIFORM_MAX ns, each once */
#define SWEEP_VALUES 1000000u        /* spread values for the error bound and the timing */
#define MAX_REL_ERR (1.0 / HIST_SUB) /* promised bound on (reported - true) / true */

static bool near(uint64_t got, uint64_t want)
{
    return got >= want && (double)(got - want) <= MAX_REL_ERR * (double)want;
}

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int check_uniform(struct hist *a, struct hist *b)
{
    for (uint64_t v = 1; v <= UNIFORM_MAX; v++)
        hist_record(v % 2 ? a : b, v);
    hist_merge(a, b);
    if (a->count != UNIFORM_MAX || a->min != 1 || a->max != UNIFORM_MAX ||
        !near(hist_percentile(a, 50), UNIFORM_MAX / 2) ||
        !near(hist_percentile(a, 99), UNIFORM_MAX / 100 * 99) ||
        !near(hist_percentile(a, 99.9), UNIFORM_MAX / 1000 * 999) ||
        hist_percentile(a, 100) != UNIFORM_MAX || hist_percentile(a, 0) != 1)
        return -EPROTO;
    return 0;
}

/* Records one spread value at a time and checks its own percentile (all values equal). */
static int sweep(struct hist *h, double *max_err, double *record_ns)
{
    uint64_t rnd = 0x2545f4914f6cdd1dull;
    *max_err = 0;
    for (unsigned i = 0; i < SWEEP_VALUES / 100; i++) {
        /* Every magnitude below the clamp at 2^HIST_MAX_BITS. */
        uint64_t v = next_rand(&rnd) >> (64 - HIST_MAX_BITS + next_rand(&rnd) % HIST_MAX_BITS);
        hist_reset(h);
        hist_record(h, v);
        hist_record(h, v + 1);
        uint64_t got = hist_percentile(h, 50);
        if (got < v)
            return -EPROTO;
        double err = v ? (double)(got - v) / (double)v : 0;
        if (err > *max_err)
            *max_err = err;
    }
    hist_reset(h);
    uint64_t t0 = bench_now_ns();
    for (unsigned i = 0; i < SWEEP_VALUES; i++)
        hist_record(h, next_rand(&rnd) >> 44);
    *record_ns = (double)(bench_now_ns() - t0) / SWEEP_VALUES;
    return *max_err <= MAX_REL_ERR && h->count == SWEEP_VALUES ? 0 : -EPROTO;
}

static int bench_hist(struct bench_ctx *ctx)
{
    (void)ctx;
    struct hist *a = hist_new(), *b = hist_new();
    double max_err = 0, record_ns = 0;
    int rc = a && b ? check_uniform(a, b) : -ENOMEM;
    if (rc == 0)
        rc = sweep(a, &max_err, &record_ns);
    hist_free(a);
    hist_free(b);
    if (rc == -EPROTO)
        fprintf(stderr, "hist self-check failed (max relative error %.4f)\n", max_err);
    if (rc < 0)
        return rc;
    struct bench_rec *r = bench_rec_begin("hist", "mcq");
    bench_rec_num(r, "record_ns", record_ns);
    bench_rec_num(r, "max_rel_err", max_err);
    bench_rec_end(r);
    return 0;
}

MCQ_BENCH("runtime", "hist", bench_hist)
