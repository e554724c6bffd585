/* The perf tools on Monocoque (mcq_local_thr etc.), written as a user would: one socket,
 * callbacks on the shard, a fresh message per send (remote_thr: a new message with a new,
 * unfilled body page, as libzmq's zmq_msg_init_size). One shard unless MCQ_SHARDS says
 * otherwise: a single connection lives on one shard anyway. The main thread only waits.
 *
 * Allocation counters, read on the shard at the start and the end of the timed interval:
 * allocs = calls into jemalloc by the shard's arena (alloc/arena.h backend_allocs),
 * malloc_bytes = bytes the shard thread allocated through jemalloc by any path
 * (thread.allocated), which also catches allocations that bypass the arena. */
#include "tool.h"

#include <errno.h>
#include <jemalloc/jemalloc.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc/arena.h"
#include "runtime/endpoint.h"
#include "patterns/monocoque.h"

#define MS_PER_S 1000
#define WINDOW_CHECK_MASK 63            /* read the clock every 64 messages */
#define SEND_REPORT_MSGS 16384          /* remote_thr reports its counters this often... */
#define SEND_REPORT_BYTES (16ull << 20) /* ...or after this many payload bytes */

struct alloc_snap {
    uint64_t arena_allocs;
    uint64_t malloc_bytes;
};

struct mcq_tool {
    const struct tool_args *a;
    struct mcq_runtime *rt;
    struct mcq_socket *s;
    sem_t done;
    _Atomic uint64_t progress; /* messages handled: the main thread's stall watchdog */
    int err;                   /* first error on the shard, 0 or -errno */
    bool finished;
    /* shard-side state */
    uint64_t report_every;  /* remote_thr: messages between allocation reports */
    uint64_t report_left;   /* remote_thr: messages until the next report */
    uint64_t sent;          /* remote_thr, remote_lat: messages sent */
    uint64_t t0, t1, tsend; /* ns */
    struct alloc_snap before, after;
    uint64_t *thread_allocated; /* jemalloc's per-thread counter (shard thread) */
    struct hist *rtt;
    struct mcq_msg *pending; /* remote_lat: the next request, sent by lat_next */
};

static void snap_allocs(struct mcq_tool *t, struct mcq_shard *sh, struct alloc_snap *out)
{
    struct mcq_arena_stats st;
    mcq_arena_stats(mcq_shard_arena(sh), &st);
    if (!t->thread_allocated) {
        size_t len = sizeof(t->thread_allocated);
        if (mallctl("thread.allocatedp", &t->thread_allocated, &len, NULL, 0) != 0)
            t->thread_allocated = NULL;
    }
    out->arena_allocs = st.backend_allocs;
    out->malloc_bytes = t->thread_allocated ? *t->thread_allocated : 0;
}

static int64_t allocs_delta(const struct mcq_tool *t)
{
    return (int64_t)(t->after.arena_allocs - t->before.arena_allocs);
}

static int64_t malloc_delta(const struct mcq_tool *t)
{
    return t->thread_allocated ? (int64_t)(t->after.malloc_bytes - t->before.malloc_bytes) : -1;
}

/* Ends the run from the shard: records the first error and wakes the main thread once. */
static void finish(struct mcq_tool *t, int err)
{
    if (t->finished)
        return;
    t->finished = true;
    t->err = err;
    sem_post(&t->done);
}

static void fail(struct mcq_tool *t, int err, const char *what)
{
    if (!t->finished)
        fprintf(stderr, "mcq: %s: %s\n", what, strerror(-err));
    finish(t, err);
}

static bool check_msg(struct mcq_tool *t, const struct mcq_msg *m)
{
    if (mcq_msg_count(m) == 1 && mcq_msg_size(m) == t->a->size)
        return true;
    fprintf(stderr, "mcq: message of %u frames and %zu bytes, expected 1 frame of %zu\n",
            mcq_msg_count(m), mcq_msg_size(m), t->a->size);
    finish(t, -EPROTO);
    return false;
}

/* Waits for the shard to finish; fails when nothing moved for TOOL_TIMEOUT_S. */
static int wait_done(struct mcq_tool *t)
{
    uint64_t last = UINT64_MAX;
    unsigned idle_s = 0;
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        if (sem_timedwait(&t->done, &ts) == 0)
            return t->err;
        if (errno == EINTR)
            continue;
        uint64_t now = atomic_load_explicit(&t->progress, memory_order_relaxed);
        idle_s = now == last ? idle_s + 1 : 0;
        last = now;
        if (idle_s >= TOOL_TIMEOUT_S) {
            fprintf(stderr, "mcq: no progress for %d s\n", TOOL_TIMEOUT_S);
            return -ETIMEDOUT;
        }
    }
}

static int tool_open(struct mcq_tool *t, const struct tool_args *a, enum mcq_socket_type type,
                     const struct mcq_socket_handlers *h, bool bind)
{
    t->a = a;
    sem_init(&t->done, 0, 0);
    struct mcq_config cfg = mcq_config_default();
    if (!getenv("MCQ_SHARDS"))
        cfg.shards = 1;
    cfg.spin_us = a->spin_us;
    int rc = mcq_runtime_create(&cfg, &t->rt);
    if (rc < 0) {
        fprintf(stderr, "mcq: runtime: %s\n", strerror(-rc));
        return rc;
    }
    struct mcq_socket_handlers hh = *h;
    hh.user = t;
    rc = mcq_socket_create(t->rt, type, &hh, &t->s);
    int linger_ms = TOOL_TIMEOUT_S * MS_PER_S;
    if (rc == 0)
        rc = mcq_setsockopt(t->s, MCQ_LINGER, &linger_ms, sizeof(linger_ms));
    if (rc == 0)
        rc = bind ? mcq_bind(t->s, a->endpoint) : mcq_connect(t->s, a->endpoint);
    if (rc < 0) {
        fprintf(stderr, "mcq: %s: %s\n", a->endpoint, strerror(-rc));
        return rc;
    }
    if (bind) {
        char ep[MCQ_ENDPOINT_TEXT_MAX];
        size_t len = sizeof(ep);
        if (mcq_getsockopt(t->s, MCQ_LAST_ENDPOINT, ep, &len) == 0)
            tool_report_endpoint(ep);
    }
    return 0;
}

static void tool_close(struct mcq_tool *t)
{
    if (t->s)
        mcq_socket_close(t->s);
    if (t->rt)
        mcq_runtime_destroy(t->rt);
    sem_destroy(&t->done);
}

/* --- local_thr: PULL, count (or window) messages, timed from the first ------------------ */

static void thr_recv(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m, void *user)
{
    (void)s;
    struct mcq_tool *t = user;
    bool ok = t->finished || check_msg(t, m);
    mcq_msg_free(m);
    if (t->finished || !ok)
        return;
    uint64_t n = atomic_load_explicit(&t->progress, memory_order_relaxed) + 1;
    atomic_store_explicit(&t->progress, n, memory_order_relaxed);
    if (n == 1) {
        t->t0 = tool_now_ns();
        snap_allocs(t, sh, &t->before);
        if (n < t->a->count)
            return;
    }
    bool check = n == t->a->count || (t->a->window_ns && (n & WINDOW_CHECK_MASK) == 0);
    if (!check)
        return;
    uint64_t now = tool_now_ns();
    if (n == t->a->count || now - t->t0 >= t->a->window_ns) {
        t->t1 = now;
        snap_allocs(t, sh, &t->after);
        finish(t, 0);
    }
}

int tool_local_thr(const struct tool_args *a, struct tool_thr_result *out)
{
    struct mcq_tool t = {0};
    int rc = tool_open(&t, a, MCQ_PULL, &(struct mcq_socket_handlers){.on_msg = thr_recv}, true);
    if (rc == 0)
        rc = wait_done(&t);
    uint64_t n = atomic_load(&t.progress);
    *out = (struct tool_thr_result){.msgs = n,
                                    .elapsed_ns = t.t1 - t.t0,
                                    .allocs = allocs_delta(&t),
                                    .malloc_bytes = malloc_delta(&t)};
    tool_close(&t);
    return rc;
}

/* --- remote_thr: PUSH count fresh messages, as fast as the HWM lets us ------------------- */

/* A fresh body of `size` bytes, allocated and not filled: what libzmq's remote_thr does
 * with zmq_msg_init_size, so neither side pays for writing a payload. */
static int append_body(struct mcq_shard *sh, struct mcq_msg *m, size_t size)
{
    if (size == 0)
        return mcq_msg_append(m, NULL, 0);
    struct mcq_view v;
    int rc = mcq_page_alloc(mcq_shard_arena(sh), size, &v);
    if (rc < 0)
        return rc;
    rc = mcq_msg_append_view(m, &v);
    if (rc < 0)
        mcq_view_unref(&v);
    return rc;
}

static void thr_pump(struct mcq_shard *sh, struct mcq_socket *s, void *user)
{
    struct mcq_tool *t = user;
    while (!t->finished && t->sent < t->a->count) {
        struct mcq_msg *m = mcq_msg_new(sh);
        int rc = m ? append_body(sh, m, t->a->size) : -ENOMEM;
        if (rc == 0)
            rc = mcq_send(sh, s, m);
        if (rc < 0)
            mcq_msg_free(m);
        if (rc == -EAGAIN)
            return;
        if (rc < 0) {
            fail(t, rc, "send");
            return;
        }
        t->sent++;
        atomic_store_explicit(&t->progress, t->sent, memory_order_relaxed);
        /* A countdown, not `sent % report_every`: a 64-bit division per message was a
         * visible share of the sender's time, which libzmq's remote_thr does not pay. */
        if (--t->report_left == 0) {
            t->report_left = t->report_every;
            struct alloc_snap now;
            snap_allocs(t, sh, &now);
            tool_report_sender(t->sent, (int64_t)now.arena_allocs,
                               t->thread_allocated ? (int64_t)now.malloc_bytes : -1);
        }
    }
    finish(t, 0);
}

static void thr_peer_up(struct mcq_shard *sh, struct mcq_socket *s, const struct mcq_peer_info *p,
                        void *user)
{
    (void)p;
    thr_pump(sh, s, user);
}

int tool_remote_thr(const struct tool_args *a)
{
    uint64_t every = SEND_REPORT_BYTES / (a->size ? a->size : 1);
    struct mcq_tool t = {.report_every = every < 1                  ? 1
                                         : every > SEND_REPORT_MSGS ? SEND_REPORT_MSGS
                                                                    : every};
    t.report_left = t.report_every;
    int rc = tool_open(
        &t, a, MCQ_PUSH,
        &(struct mcq_socket_handlers){.on_peer_up = thr_peer_up, .on_writable = thr_pump}, false);
    if (rc == 0)
        rc = wait_done(&t);
    tool_close(&t);
    return rc;
}

/* --- local_lat: REP echoes count requests ------------------------------------------------ */

static void lat_echo(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m, void *user)
{
    struct mcq_tool *t = user;
    if (t->finished || !check_msg(t, m)) {
        mcq_msg_free(m);
        return;
    }
    int rc = mcq_send(sh, s, m);
    if (rc < 0) {
        mcq_msg_free(m);
        fail(t, rc, "send");
        return;
    }
    uint64_t n = atomic_load_explicit(&t->progress, memory_order_relaxed) + 1;
    atomic_store_explicit(&t->progress, n, memory_order_relaxed);
    if (n == t->a->count)
        finish(t, 0);
}

int tool_local_lat(const struct tool_args *a)
{
    struct mcq_tool t = {0};
    int rc = tool_open(&t, a, MCQ_REP, &(struct mcq_socket_handlers){.on_msg = lat_echo}, true);
    if (rc == 0)
        rc = wait_done(&t);
    tool_close(&t);
    return rc;
}

/* --- remote_lat: REQ, one request in flight; the reply is sent back as the next request -- */

static void lat_send(struct mcq_tool *t, struct mcq_shard *sh, struct mcq_socket *s,
                     struct mcq_msg *m)
{
    if (t->sent == t->a->warmup)
        snap_allocs(t, sh, &t->before);
    t->tsend = tool_now_ns();
    if (t->sent == t->a->warmup)
        t->t0 = t->tsend;
    int rc = mcq_send(sh, s, m);
    if (rc < 0) {
        mcq_msg_free(m);
        fail(t, rc, "send");
        return;
    }
    t->sent++;
}

static void lat_peer_up(struct mcq_shard *sh, struct mcq_socket *s, const struct mcq_peer_info *p,
                        void *user)
{
    (void)p;
    struct mcq_tool *t = user;
    if (t->sent > 0 || t->finished)
        return;
    struct mcq_msg *m = mcq_msg_new(sh);
    void *body = calloc(1, t->a->size ? t->a->size : 1);
    int rc = m && body ? 0 : -ENOMEM;
    if (rc == 0) {
        memset(body, 'L', t->a->size);
        rc = mcq_msg_append(m, body, t->a->size);
    }
    free(body);
    if (rc < 0) {
        mcq_msg_free(m);
        fail(t, rc, "request");
        return;
    }
    lat_send(t, sh, s, m);
}

/* Sends the next request from a task at the next loop turn, not from on_msg: a REQ that
 * sends from inside on_msg gets its request out, but the REQ state is reset after the
 * callback returns, so the reply is dropped and the run stalls (patterns/route.c
 * req_input at sockets 0914138). */
static void lat_next(struct mcq_shard *sh, void *arg)
{
    struct mcq_tool *t = arg;
    struct mcq_msg *m = t->pending;
    t->pending = NULL;
    lat_send(t, sh, t->s, m);
}

static void lat_reply(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m, void *user)
{
    (void)s;
    struct mcq_tool *t = user;
    uint64_t now = tool_now_ns();
    if (t->finished || !check_msg(t, m)) {
        mcq_msg_free(m);
        return;
    }
    if (t->sent > t->a->warmup)
        hist_record(t->rtt, now - t->tsend);
    atomic_store_explicit(&t->progress, t->sent, memory_order_relaxed);
    if (t->sent < t->a->count) {
        t->pending = m;
        int rc = mcq_shard_submit(sh, mcq_shard_id(sh), lat_next, t);
        if (rc < 0) {
            t->pending = NULL;
            mcq_msg_free(m);
            fail(t, rc, "submit");
        }
        return;
    }
    t->t1 = now;
    snap_allocs(t, sh, &t->after);
    mcq_msg_free(m);
    finish(t, 0);
}

int tool_remote_lat(const struct tool_args *a, struct tool_lat_result *out)
{
    struct mcq_tool t = {.rtt = out->rtt};
    int rc = tool_open(
        &t, a, MCQ_REQ,
        &(struct mcq_socket_handlers){.on_msg = lat_reply, .on_peer_up = lat_peer_up}, false);
    if (rc == 0)
        rc = wait_done(&t);
    out->elapsed_ns = t.t1 - t.t0;
    out->allocs = allocs_delta(&t);
    out->malloc_bytes = malloc_delta(&t);
    tool_close(&t);
    return rc;
}
