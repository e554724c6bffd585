/* mcq-bench: one binary, benchmarks grouped by subcommand (runtime, codec, thr, lat); several
 * groups run in the order given (mcq-bench thr lat).
 * Each benchmark file registers itself with MCQ_BENCH(group, name, fn); results are
 * printed as a table and, with --json FILE, written as an array of flat records. */
#ifndef MCQ_PERF_BENCH_H
#define MCQ_PERF_BENCH_H

#include <stdbool.h>
#include <stdint.h>

struct bench_ctx {
    bool quick;        /* --quick: short runs for the demo and CI smoke checks */
    const char *argv0; /* path of mcq-bench, for benches that fork helper processes */
    unsigned spin_us;  /* --spin-us, else MCQ_SPIN_US, else BENCH_SPIN_US_DEFAULT */
};

/* Busy-poll time per wait for the thr/lat comparison when neither --spin-us nor
 * MCQ_SPIN_US is given: longer than a spinning cross-core round trip (~6 us here), so a
 * ping-pong never sleeps, short enough to be harmless on a shared machine. */
#define BENCH_SPIN_US_DEFAULT 50

struct bench_def {
    const char *group;
    const char *name;
    int (*run)(struct bench_ctx *ctx); /* 0 or a negative errno; prints and records */
    struct bench_def *next;
};

void bench_register(struct bench_def *def);

#define MCQ_BENCH(group_, name_, fn_)                                                              \
    static struct bench_def bench_def_##fn_ = {.group = group_, .name = name_, .run = fn_};        \
    __attribute__((constructor)) static void bench_reg_##fn_(void)                                 \
    {                                                                                              \
        bench_register(&bench_def_##fn_);                                                          \
    }

/* One flat record: {"bench":B,"impl":I, key: value, ...}. Start it, add fields, end it; a
 * number that is not finite (not measured) becomes null.
 * Ending prints one table row and keeps the record for --json. */
struct bench_rec;
struct bench_rec *bench_rec_begin(const char *bench, const char *impl);
void bench_rec_num(struct bench_rec *r, const char *key, double value);
void bench_rec_int(struct bench_rec *r, const char *key, int64_t value);
void bench_rec_str(struct bench_rec *r, const char *key, const char *value);
void bench_rec_end(struct bench_rec *r);

/* Monotonic clock in nanoseconds. */
uint64_t bench_now_ns(void);

#endif
