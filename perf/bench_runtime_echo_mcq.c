/* Monocoque echo: one pinned shard serving the connection layer's zero-copy echo (each
 * received buffer goes back out as is), measured by the same client as the raw baseline
 * (echo_client.h) on the other CPU, over 127.0.0.1. */
#include "affinity.h"
#include "bench.h"
#include "echo_client.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "runtime/conn.h"

#define MCQ_ECHO_WARMUP 1000
#define MCQ_ECHO_WARMUP_QUICK 100
#define MCQ_ECHO_RTTS 10000
#define MCQ_ECHO_RTTS_QUICK 1000
#define MCQ_ECHO_STREAM_NS 1000000000ull
#define MCQ_ECHO_STREAM_NS_QUICK 200000000ull

static const size_t mcq_echo_sizes[] = {64, 1024, 16384};

static void echo_data(struct mcq_conn *c, void *user, const struct mcq_view *v)
{
    (void)user;
    struct mcq_view out = mcq_view_ref(v);
    if (mcq_conn_send(c, &out) < 0) {
        mcq_view_unref(&out);
        mcq_conn_close(c, MCQ_CLOSE_ABORT);
        return;
    }
    if (!mcq_conn_writable(c))
        mcq_conn_pause(c);
}

static void echo_writable(struct mcq_conn *c, void *user)
{
    (void)user;
    mcq_conn_resume(c);
}

static const struct mcq_conn_handler echo_handler = {
    .on_data = echo_data,
    .on_writable = echo_writable,
};

struct mcq_client {
    struct bench_ctx *ctx;
    struct mcq_runtime *rt;
    uint16_t port;
    unsigned spin_us;
    int err;
};

static void *mcq_client_main(void *arg)
{
    struct mcq_client *c = arg;
    /* The shard is pinned to the first allowed CPU; the client takes the second. */
    int cpu = bench_pin_thread(1);
    if (cpu < 0) {
        c->err = cpu;
        return NULL;
    }
    bool quick = c->ctx->quick;
    for (size_t i = 0; i < sizeof(mcq_echo_sizes) / sizeof(mcq_echo_sizes[0]); i++) {
        struct echo_opts o = {
            .size = mcq_echo_sizes[i],
            .warmup = quick ? MCQ_ECHO_WARMUP_QUICK : MCQ_ECHO_WARMUP,
            .rtts = quick ? MCQ_ECHO_RTTS_QUICK : MCQ_ECHO_RTTS,
            .stream_ns = quick ? MCQ_ECHO_STREAM_NS_QUICK : MCQ_ECHO_STREAM_NS,
        };
        int fd = echo_connect_loopback(c->port);
        if (fd < 0) {
            c->err = fd;
            return NULL;
        }
        struct echo_result res;
        struct mcq_shard_stats before, after;
        mcq_runtime_stats(c->rt, 0, &before);
        c->err = echo_measure(fd, &o, &res);
        mcq_runtime_stats(c->rt, 0, &after);
        close(fd);
        if (c->err < 0)
            return NULL;
        struct bench_rec *r = bench_rec_begin("echo", "mcq");
        bench_rec_int(r, "size", (int64_t)o.size);
        bench_rec_num(r, "p50_us", res.p50_us);
        bench_rec_num(r, "p99_us", res.p99_us);
        bench_rec_num(r, "msgs_per_s", res.msgs_per_s);
        bench_rec_int(r, "spin_us", c->spin_us);
        /* Calls into jemalloc by the serving shard during this size's run (connection
         * setup included): the steady-state echo path itself allocates nothing. */
        bench_rec_int(r, "backend_allocs",
                      (int64_t)(after.mem_backend_allocs - before.mem_backend_allocs));
        bench_rec_end(r);
    }
    return NULL;
}

static int bench_echo_mcq(struct bench_ctx *ctx)
{
    struct mcq_config cfg = mcq_config_default();
    cfg.shards = 1;
    struct mcq_runtime *rt;
    int rc = mcq_runtime_create(&cfg, &rt);
    if (rc < 0)
        return rc;
    struct mcq_conn_cfg ccfg = {.handler = &echo_handler};
    struct mcq_listener *l;
    rc = mcq_conn_listen(rt, "tcp://127.0.0.1:0", &ccfg, &l);
    if (rc < 0) {
        mcq_runtime_destroy(rt);
        return rc;
    }
    struct mcq_client cli = {
        .ctx = ctx, .rt = rt, .port = mcq_listener_port(l), .spin_us = cfg.spin_us};
    pthread_t t;
    rc = -pthread_create(&t, NULL, mcq_client_main, &cli);
    if (rc == 0)
        pthread_join(t, NULL);
    mcq_listener_close(l);
    mcq_runtime_destroy(rt);
    return rc < 0 ? rc : cli.err;
}

MCQ_BENCH("runtime", "echo_mcq", bench_echo_mcq)
