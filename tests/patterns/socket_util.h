/* Test harness for the socket layer: a Monocoque socket on a 4-shard runtime whose
 * callbacks record what arrives (and can echo it), sends posted to a chosen shard and
 * awaited, and libzmq peers driven from the test thread with timeouts. Every wait has a
 * deadline, so a test fails instead of hanging. */
#ifndef MCQ_TESTS_SOCKET_UTIL_H
#define MCQ_TESTS_SOCKET_UTIL_H

#include <criterion/criterion.h>

#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "patterns/monocoque.h"
#include "patterns/socket_int.h"
#include "runtime/runtime_util.h"
#include "runtime/wait_util.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
/* Criterion's workers end without the exit-time leak check: run it at teardown, and crash
 * the test on a leak (an assertion in .fini does not fail the test). */
#define T_LEAK_CHECK()                                                                             \
    do {                                                                                           \
        if (__lsan_do_recoverable_leak_check())                                                    \
            abort();                                                                               \
    } while (0)
#else
#define T_LEAK_CHECK() ((void)0)
#endif

#if defined(__SANITIZE_THREAD__)
/* libzmq is not instrumented: TSan cannot see its internal locking and reports its own
 * threads' allocations as races. The interop peer is not under test here. */
const char *__tsan_default_suppressions(void);
const char *__tsan_default_suppressions(void)
{
    return "called_from_lib:libzmq.so.5\n";
}
#endif

#define T_SHARDS 4
#define T_WAIT_S 10.0         /* bound for anything that must happen */
#define T_ZMQ_TIMEOUT_MS 5000 /* libzmq send/recv bound */
#define T_ZSOCKS 16           /* libzmq sockets per test */
#define T_MAXF 8              /* frames recorded per message */

struct t_rx {
    struct t_rx *next;
    unsigned shard;
    unsigned n;
    size_t len[T_MAXF];
    uint8_t *data[T_MAXF];
};

struct t_app {
    struct mcq_runtime *rt;
    struct mcq_socket *s;
    void *zctx;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct t_rx *head, **tail;
    unsigned nrx;
    bool echo;
    unsigned echo_fail;
    unsigned ups, downs, writables[T_SHARDS];
    unsigned up_shard;  /* owner shard of the last peer that came up */
    void *zs[T_ZSOCKS]; /* libzmq sockets still open (closed at teardown if a test failed) */
};

static struct t_app app;

static inline void t_on_msg(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m,
                            void *user)
{
    struct t_app *a = user;
    struct t_rx *r = calloc(1, sizeof(*r));
    r->shard = mcq_shard_id(sh);
    for (unsigned i = 0; i < mcq_msg_count(m) && i < T_MAXF; i++) {
        const struct mcq_view *v = mcq_msg_frame(m, i);
        r->len[i] = mcq_view_len(v);
        r->data[i] = malloc(r->len[i] + 1);
        if (r->len[i])
            memcpy(r->data[i], mcq_view_data(v), r->len[i]);
        r->data[i][r->len[i]] = 0;
        r->n++;
    }
    if (!a->echo || mcq_send(sh, s, m) < 0) {
        if (a->echo)
            a->echo_fail++;
        mcq_msg_free(m);
    }
    pthread_mutex_lock(&a->lock);
    *a->tail = r;
    a->tail = &r->next;
    a->nrx++;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

static inline void t_on_writable(struct mcq_shard *sh, struct mcq_socket *s, void *user)
{
    (void)s;
    struct t_app *a = user;
    pthread_mutex_lock(&a->lock);
    a->writables[mcq_shard_id(sh)]++;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

static inline void t_on_up(struct mcq_shard *sh, struct mcq_socket *s,
                           const struct mcq_peer_info *p, void *user)
{
    (void)sh;
    (void)s;
    struct t_app *a = user;
    pthread_mutex_lock(&a->lock);
    a->ups++;
    a->up_shard = p->shard;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

static inline void t_on_down(struct mcq_shard *sh, struct mcq_socket *s,
                             const struct mcq_peer_info *p, int reason, void *user)
{
    (void)sh;
    (void)s;
    (void)p;
    (void)reason;
    struct t_app *a = user;
    pthread_mutex_lock(&a->lock);
    a->downs++;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

static inline void t_free_rx(struct t_rx *r)
{
    if (!r)
        return;
    for (unsigned i = 0; i < r->n; i++)
        free(r->data[i]);
    free(r);
}

static inline void t_setup(void)
{
    memset(&app, 0, sizeof(app));
    pthread_mutex_init(&app.lock, NULL);
    cond_init_monotonic(&app.cond);
    app.tail = &app.head;
    app.rt = start_runtime(T_SHARDS);
    app.zctx = zmq_ctx_new();
    cr_assert_not_null(app.zctx);
}

static inline void t_teardown(void)
{
    /* libzmq peers first, so a socket closing with LINGER sees them gone. */
    for (unsigned i = 0; i < T_ZSOCKS; i++)
        if (app.zs[i])
            zmq_close(app.zs[i]);
    if (app.s)
        mcq_socket_close(app.s);
    mcq_runtime_destroy(app.rt);
    zmq_ctx_term(app.zctx);
    while (app.head) {
        struct t_rx *r = app.head;
        app.head = r->next;
        t_free_rx(r);
    }
    T_LEAK_CHECK();
}

/* Creates the Monocoque socket under test. */
static inline void t_socket(int type)
{
    struct mcq_socket_handlers h = {
        .on_msg = t_on_msg,
        .on_writable = t_on_writable,
        .on_peer_up = t_on_up,
        .on_peer_down = t_on_down,
        .user = &app,
    };
    cr_assert_eq(mcq_socket_create(app.rt, type, &h, &app.s), 0);
}

static inline void t_setopt_int(int option, int v)
{
    cr_assert_eq(mcq_setsockopt(app.s, option, &v, sizeof(v)), 0, "option %d", option);
}

/* Binds to a fresh endpoint of the transport ("tcp" or "ipc") and returns it in buf. */
static inline void t_bind(const char *transport, char *buf, size_t len)
{
    static unsigned seq;
    char ep[128];
    if (strcmp(transport, "tcp") == 0)
        snprintf(ep, sizeof(ep), "tcp://127.0.0.1:0");
    else
        snprintf(ep, sizeof(ep), "ipc:///tmp/mcq-sock-%d-%u", getpid(), seq++);
    cr_assert_eq(mcq_bind(app.s, ep), 0, "bind %s", ep);
    size_t l = len;
    cr_assert_eq(mcq_getsockopt(app.s, MCQ_LAST_ENDPOINT, buf, &l), 0);
}

/* The next received message, or NULL after the deadline. The caller frees it. */
static inline struct t_rx *t_recv(double timeout_s)
{
    struct timespec until = deadline_in(timeout_s);
    pthread_mutex_lock(&app.lock);
    while (!app.head && pthread_cond_timedwait(&app.cond, &app.lock, &until) == 0)
        ;
    struct t_rx *r = app.head;
    if (r) {
        app.head = r->next;
        if (!app.head)
            app.tail = &app.head;
    }
    pthread_mutex_unlock(&app.lock);
    return r;
}

/* Waits until *counter (a field of app, read under its lock) reaches n. */
static inline bool t_wait_count(const unsigned *counter, unsigned n, double timeout_s)
{
    struct timespec until = deadline_in(timeout_s);
    pthread_mutex_lock(&app.lock);
    int rc = 0;
    while (*counter < n && rc == 0)
        rc = pthread_cond_timedwait(&app.cond, &app.lock, &until);
    bool ok = *counter >= n;
    pthread_mutex_unlock(&app.lock);
    return ok;
}

/* --- sending from a shard ------------------------------------------------------------------- */

struct t_send {
    unsigned nf;
    const void *f[T_MAXF];
    size_t len[T_MAXF];
    int rc;
    unsigned writables_before; /* this shard's on_writable count when the send ran */
    struct test_event done;
};

static inline void t_task_send(struct mcq_shard *sh, void *arg)
{
    struct t_send *j = arg;
    struct mcq_msg *m = mcq_msg_new(sh);
    for (unsigned i = 0; i < j->nf; i++)
        mcq_msg_append(m, j->f[i], j->len[i]);
    pthread_mutex_lock(&app.lock);
    j->writables_before = app.writables[mcq_shard_id(sh)];
    pthread_mutex_unlock(&app.lock);
    j->rc = mcq_send(sh, app.s, m);
    if (j->rc < 0)
        mcq_msg_free(m);
    test_event_signal(&j->done);
}

/* Sends frames (binary: pointer + length pairs in j) from `shard`; returns mcq_send's rc. */
static inline int t_send_job(unsigned shard, struct t_send *j)
{
    test_event_init(&j->done);
    cr_assert_eq(mcq_runtime_post(app.rt, shard, t_task_send, j), 0);
    cr_assert(test_event_wait(&j->done, 1, T_WAIT_S), "send task never ran");
    return j->rc;
}

/* Sends NULL-terminated string frames from `shard`. */
static inline int t_send_strs(unsigned shard, ...)
{
    struct t_send j = {0};
    va_list ap;
    va_start(ap, shard);
    const char *f;
    while ((f = va_arg(ap, const char *)) && j.nf < T_MAXF) {
        j.f[j.nf] = f;
        j.len[j.nf++] = strlen(f);
    }
    va_end(ap);
    return t_send_job(shard, &j);
}

/* Like t_send_job, but -EAGAIN waits for on_writable on that shard and tries again. */
static inline int t_send_job_wait(unsigned shard, struct t_send *j)
{
    struct timespec until = deadline_in(T_WAIT_S), now;
    for (;;) {
        int rc = t_send_job(shard, j);
        if (rc != -EAGAIN)
            return rc;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = (double)(until.tv_sec - now.tv_sec) + (until.tv_nsec - now.tv_nsec) / 1e9;
        if (left <= 0 || !t_wait_count(&app.writables[shard], j->writables_before + 1, left))
            return rc;
    }
}

/* --- looking inside a shard ------------------------------------------------------------------ */

struct t_probe {
    unsigned lb_len;
    struct test_event done;
};

static inline void t_task_probe(struct mcq_shard *sh, void *arg)
{
    struct t_probe *p = arg;
    p->lb_len = app.s->parts[mcq_shard_id(sh)]->lb_len;
    test_event_signal(&p->done);
}

/* Waits until `shard` has n peers in its load-balancing ring (the peer-up events from the
 * peers' owners have arrived there). */
static inline bool t_wait_lb(unsigned shard, unsigned n)
{
    struct timespec until = deadline_in(T_WAIT_S), now;
    for (;;) {
        struct t_probe p;
        test_event_init(&p.done);
        cr_assert_eq(mcq_runtime_post(app.rt, shard, t_task_probe, &p), 0);
        cr_assert(test_event_wait(&p.done, 1, T_WAIT_S));
        if (p.lb_len >= n)
            return true;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > until.tv_sec)
            return false;
        sched_yield();
    }
}

/* --- libzmq ---------------------------------------------------------------------------------- */

static inline void *z_socket(int type)
{
    void *z = zmq_socket(app.zctx, type);
    cr_assert_not_null(z);
    int v = 0;
    zmq_setsockopt(z, ZMQ_LINGER, &v, sizeof(v));
    v = T_ZMQ_TIMEOUT_MS;
    zmq_setsockopt(z, ZMQ_RCVTIMEO, &v, sizeof(v));
    zmq_setsockopt(z, ZMQ_SNDTIMEO, &v, sizeof(v));
    v = 50;
    zmq_setsockopt(z, ZMQ_RECONNECT_IVL, &v, sizeof(v));
    unsigned i = 0;
    while (i < T_ZSOCKS && app.zs[i])
        i++;
    cr_assert_lt(i, T_ZSOCKS, "too many libzmq sockets");
    app.zs[i] = z;
    return z;
}

static inline void z_close(void *z)
{
    for (unsigned i = 0; i < T_ZSOCKS; i++)
        if (app.zs[i] == z)
            app.zs[i] = NULL;
    zmq_close(z);
}

static inline void z_bind(void *z, const char *transport, char *buf, size_t len)
{
    static unsigned seq;
    char ep[128];
    if (strcmp(transport, "tcp") == 0)
        snprintf(ep, sizeof(ep), "tcp://127.0.0.1:*");
    else
        snprintf(ep, sizeof(ep), "ipc:///tmp/mcq-zsock-%d-%u", getpid(), seq++);
    cr_assert_eq(zmq_bind(z, ep), 0, "zmq_bind %s: %s", ep, zmq_strerror(zmq_errno()));
    cr_assert_eq(zmq_getsockopt(z, ZMQ_LAST_ENDPOINT, buf, &len), 0);
}

/* Sends NULL-terminated string frames. */
static inline void z_send_strs(void *z, ...)
{
    va_list ap;
    va_start(ap, z);
    const char *f = va_arg(ap, const char *);
    while (f) {
        const char *next = va_arg(ap, const char *);
        cr_assert_geq(zmq_send(z, f, strlen(f), next ? ZMQ_SNDMORE : 0), 0, "zmq_send: %s",
                      zmq_strerror(zmq_errno()));
        f = next;
    }
    va_end(ap);
}

/* Receives one multipart message into r (frames NUL-terminated); false on timeout. */
static inline bool z_recv(void *z, struct t_rx *r)
{
    memset(r, 0, sizeof(*r));
    int more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, z, 0) < 0) {
            zmq_msg_close(&m);
            for (unsigned i = 0; i < r->n; i++)
                free(r->data[i]);
            r->n = 0;
            return false;
        }
        if (r->n < T_MAXF) {
            r->len[r->n] = zmq_msg_size(&m);
            r->data[r->n] = malloc(r->len[r->n] + 1);
            memcpy(r->data[r->n], zmq_msg_data(&m), r->len[r->n]);
            r->data[r->n][r->len[r->n]] = 0;
            r->n++;
        }
        more = zmq_msg_more(&m);
        zmq_msg_close(&m);
    }
    return true;
}

static inline void z_rx_clear(struct t_rx *r)
{
    for (unsigned i = 0; i < r->n; i++)
        free(r->data[i]);
    r->n = 0;
}

/* Watches z (call before its connect) for the libzmq monitor events in the mask; returns
 * the socket the events arrive on (closed with the test's other libzmq sockets). */
static inline void *z_monitor(void *z, int events)
{
    static unsigned seq;
    char addr[64];
    snprintf(addr, sizeof(addr), "inproc://t-mon-%u", seq++);
    cr_assert_eq(zmq_socket_monitor(z, addr, events), 0);
    void *mon = z_socket(ZMQ_PAIR);
    cr_assert_eq(zmq_connect(mon, addr), 0);
    return mon;
}

/* Waits (bounded by the receive timeout) for `event` on a z_monitor socket. */
static inline bool z_wait_event(void *mon, int event)
{
    struct t_rx r;
    while (z_recv(mon, &r)) {
        uint16_t got = 0;
        if (r.n >= 1 && r.len[0] >= sizeof(got))
            memcpy(&got, r.data[0], sizeof(got));
        z_rx_clear(&r);
        if (got == event)
            return true;
    }
    return false;
}

static inline bool rx_frame_is(const struct t_rx *r, unsigned i, const char *s)
{
    return i < r->n && r->len[i] == strlen(s) && memcmp(r->data[i], s, r->len[i]) == 0;
}

#endif
