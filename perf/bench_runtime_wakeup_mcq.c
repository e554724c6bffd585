/* Waking a sleeping shard through the runtime itself: two pinned shards with spin_us = 0
 * pass a task back and forth with mcq_shard_submit, so every hop lands on a shard asleep
 * in io_uring_enter and is woken by the mesh doorbell (IORING_OP_MSG_RING). One-way
 * latency = RTT/2, the figure to compare with the raw msg_ring and eventfd records. */
#include "bench.h"
#include "hist.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "runtime/runtime.h"

#define MCQ_WAKE_WARMUP 200
#define MCQ_WAKE_ROUNDS 5000
#define MCQ_WAKE_ROUNDS_QUICK 1000
#define MCQ_WAKE_TIMEOUT_S 30

struct mcq_wake {
    struct hist *hist;
    unsigned rounds, done_rounds;
    uint64_t t0;
    int err;
    bool finished;
    pthread_mutex_t lock;
    pthread_cond_t cond;
};

static void wake_ping(struct mcq_shard *sh, void *arg);

static void wake_finish(struct mcq_wake *w, int err)
{
    pthread_mutex_lock(&w->lock);
    w->err = err;
    w->finished = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void wake_pong(struct mcq_shard *sh, void *arg)
{
    int rc = mcq_shard_submit(sh, 0, wake_ping, arg);
    if (rc < 0)
        wake_finish(arg, rc);
}

/* Runs on shard 0: closes one round trip and starts the next. */
static void wake_ping(struct mcq_shard *sh, void *arg)
{
    struct mcq_wake *w = arg;
    uint64_t now = bench_now_ns();
    if (w->t0) {
        if (w->done_rounds >= MCQ_WAKE_WARMUP)
            hist_record(w->hist, (now - w->t0) / 2);
        if (++w->done_rounds == w->rounds + MCQ_WAKE_WARMUP) {
            wake_finish(w, 0);
            return;
        }
    }
    w->t0 = bench_now_ns();
    int rc = mcq_shard_submit(sh, 1, wake_pong, w);
    if (rc < 0)
        wake_finish(w, rc);
}

static int bench_wakeup_mcq(struct bench_ctx *ctx)
{
    struct mcq_config cfg = mcq_config_default();
    cfg.shards = 2;
    cfg.spin_us = 0; /* every hop must find its shard asleep */
    struct mcq_runtime *rt;
    int rc = mcq_runtime_create(&cfg, &rt);
    if (rc < 0)
        return rc;
    struct mcq_wake w = {
        .hist = hist_new(),
        .rounds = ctx->quick ? MCQ_WAKE_ROUNDS_QUICK : MCQ_WAKE_ROUNDS,
    };
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    rc = w.hist ? mcq_runtime_post(rt, 0, wake_ping, &w) : -ENOMEM;
    if (rc == 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += MCQ_WAKE_TIMEOUT_S;
        pthread_mutex_lock(&w.lock);
        while (!w.finished && rc == 0)
            rc = -pthread_cond_timedwait(&w.cond, &w.lock, &until);
        pthread_mutex_unlock(&w.lock);
        if (rc == 0)
            rc = w.err;
    }
    struct mcq_shard_stats s0, s1;
    mcq_runtime_stop(rt);
    mcq_runtime_run(rt);
    mcq_runtime_stats(rt, 0, &s0);
    mcq_runtime_stats(rt, 1, &s1);
    mcq_runtime_destroy(rt);
    if (rc == 0) {
        struct bench_rec *r = bench_rec_begin("wakeup", "mcq");
        bench_rec_num(r, "p50_us", (double)hist_percentile(w.hist, 50) / 1e3);
        bench_rec_num(r, "p99_us", (double)hist_percentile(w.hist, 99) / 1e3);
        bench_rec_num(r, "p999_us", (double)hist_percentile(w.hist, 99.9) / 1e3);
        /* How many hops really found the peer asleep (doorbells rung). */
        bench_rec_int(r, "wakeups", (int64_t)(s0.wakeups_sent + s1.wakeups_sent));
        bench_rec_int(r, "hops", 2 * (int64_t)(w.rounds + MCQ_WAKE_WARMUP));
        bench_rec_end(r);
    }
    hist_free(w.hist);
    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.cond);
    return rc;
}

MCQ_BENCH("runtime", "wakeup_mcq", bench_wakeup_mcq)
