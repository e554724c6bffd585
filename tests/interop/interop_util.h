/* Test helpers for libzmq interop: plain-memory messages (struct tmsg) that both sides
 * compare, a Monocoque socket wrapper whose callbacks record into an inbox (and optionally
 * echo), sends posted from the test thread onto a chosen shard, libzmq sockets driven by the
 * test thread, and libzmq echo servers in their own threads. Every wait has a deadline. */
#ifndef MCQ_TESTS_INTEROP_UTIL_H
#define MCQ_TESTS_INTEROP_UTIL_H

#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "patterns/monocoque.h"
#include "runtime/runtime_util.h"
#include "runtime/wait_util.h"

#define IO_TIMEOUT_S 10.0    /* upper bound of any single wait, seconds */
#define IO_TIMEOUT_MS 10000  /* the same for zmq_poll, ms */
#define POLL_SLICE_MS 20     /* libzmq server threads re-check their stop flag this often */
#define TMSG_MAX_FRAMES 16   /* frames a test message may hold */
#define TEST_SHARDS 4        /* shards of every test runtime */
#define TEST_RECONNECT_MS 20 /* RECONNECT_IVL of test sockets, ms: restarts stay quick */
#define TEST_ENDPOINT_MAX 256
#define MAX_IDS 64 /* routing ids a test socket remembers */
#define SHARD_SLOTS 16
#define MAX_HELD 64 /* echoes one shard may hold back at -EAGAIN */

enum transport { TR_TCP, TR_IPC };

static inline const char *tr_name(enum transport t)
{
    return t == TR_TCP ? "tcp" : "ipc";
}

static inline uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* --- messages in plain memory ------------------------------------------------------------ */

struct tframe {
    size_t len;
    uint8_t *data;
};

struct tmsg {
    struct tmsg *next;
    unsigned n;
    unsigned shard; /* where a Monocoque callback received it */
    struct tframe f[TMSG_MAX_FRAMES];
};

static inline struct tmsg *tmsg_new(void)
{
    struct tmsg *m = calloc(1, sizeof(*m));
    cr_assert_not_null(m);
    return m;
}

static inline void tmsg_add(struct tmsg *m, const void *data, size_t len)
{
    cr_assert_lt(m->n, TMSG_MAX_FRAMES, "too many frames");
    m->f[m->n].data = malloc(len ? len : 1);
    cr_assert_not_null(m->f[m->n].data);
    if (len)
        memcpy(m->f[m->n].data, data, len);
    m->f[m->n].len = len;
    m->n++;
}

static inline void tmsg_addstr(struct tmsg *m, const char *s)
{
    tmsg_add(m, s, strlen(s));
}

/* Inserts a copy of data as the first frame. */
static inline void tmsg_prepend(struct tmsg *m, const void *data, size_t len)
{
    cr_assert_lt(m->n, TMSG_MAX_FRAMES, "too many frames");
    memmove(&m->f[1], &m->f[0], m->n * sizeof(m->f[0]));
    m->n++;
    m->f[0].data = malloc(len ? len : 1);
    cr_assert_not_null(m->f[0].data);
    if (len)
        memcpy(m->f[0].data, data, len);
    m->f[0].len = len;
}

/* A message of the given string frames; the list ends with NULL. */
static inline struct tmsg *tmsg_strs(const char *first, ...)
{
    struct tmsg *m = tmsg_new();
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *))
        tmsg_addstr(m, s);
    va_end(ap);
    return m;
}

static inline struct tmsg *tmsg_copy(const struct tmsg *src)
{
    struct tmsg *m = tmsg_new();
    for (unsigned i = 0; i < src->n; i++)
        tmsg_add(m, src->f[i].data, src->f[i].len);
    m->shard = src->shard;
    return m;
}

static inline void tmsg_free(struct tmsg *m)
{
    if (!m)
        return;
    for (unsigned i = 0; i < m->n; i++)
        free(m->f[i].data);
    free(m);
}

static inline bool tframe_eq(const struct tframe *f, const void *data, size_t len)
{
    return f->len == len && (len == 0 || memcmp(f->data, data, len) == 0);
}

static inline bool tframe_is(const struct tmsg *m, unsigned i, const char *s)
{
    return i < m->n && tframe_eq(&m->f[i], s, strlen(s));
}

/* Frames [skip_a..] of a equal frames [skip_b..] of b. */
static inline bool tmsg_eq_from(const struct tmsg *a, unsigned skip_a, const struct tmsg *b,
                                unsigned skip_b)
{
    if (!a || !b || a->n < skip_a || b->n < skip_b || a->n - skip_a != b->n - skip_b)
        return false;
    for (unsigned i = 0; i + skip_a < a->n; i++)
        if (!tframe_eq(&a->f[i + skip_a], b->f[i + skip_b].data, b->f[i + skip_b].len))
            return false;
    return true;
}

static inline bool tmsg_eq(const struct tmsg *a, const struct tmsg *b)
{
    return tmsg_eq_from(a, 0, b, 0);
}

/* A short printable description for assertion messages ("3 frames: [5]'hello' [0]'' ..."). */
static inline const char *tmsg_str(const struct tmsg *m, char *buf, size_t len)
{
    if (!m) {
        snprintf(buf, len, "(none)");
        return buf;
    }
    size_t o = (size_t)snprintf(buf, len, "%u frames:", m->n);
    for (unsigned i = 0; i < m->n && o < len; i++) {
        char shown[17] = {0};
        size_t k = m->f[i].len < 16 ? m->f[i].len : 16;
        for (size_t j = 0; j < k; j++) {
            uint8_t c = m->f[i].data[j];
            shown[j] = (char)(c >= 32 && c < 127 ? c : '.');
        }
        o += (size_t)snprintf(buf + o, len - o, " [%zu]'%s'", m->f[i].len, shown);
    }
    return buf;
}

/* --- inbox: messages handed from callbacks/threads to the test thread ------------------- */

struct inbox {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct tmsg *head, *tail;
    unsigned total; /* pushed so far */
};

static inline void inbox_init(struct inbox *in)
{
    pthread_mutex_init(&in->lock, NULL);
    cond_init_monotonic(&in->cond);
    in->head = in->tail = NULL;
    in->total = 0;
}

static inline void inbox_push(struct inbox *in, struct tmsg *m)
{
    m->next = NULL;
    pthread_mutex_lock(&in->lock);
    if (in->tail)
        in->tail->next = m;
    else
        in->head = m;
    in->tail = m;
    in->total++;
    pthread_cond_broadcast(&in->cond);
    pthread_mutex_unlock(&in->lock);
}

/* The oldest message, or NULL after timeout_s. The caller owns it. */
static inline struct tmsg *inbox_pop(struct inbox *in, double timeout_s)
{
    struct timespec until = deadline_in(timeout_s);
    pthread_mutex_lock(&in->lock);
    int rc = 0;
    while (!in->head && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&in->cond, &in->lock, &until);
    struct tmsg *m = in->head;
    if (m) {
        in->head = m->next;
        if (!in->head)
            in->tail = NULL;
    }
    pthread_mutex_unlock(&in->lock);
    return m;
}

/* Waits until `total` messages were pushed in all; false on timeout. */
static inline bool inbox_wait_total(struct inbox *in, unsigned total, double timeout_s)
{
    struct timespec until = deadline_in(timeout_s);
    pthread_mutex_lock(&in->lock);
    int rc = 0;
    while (in->total < total && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&in->cond, &in->lock, &until);
    bool ok = in->total >= total;
    pthread_mutex_unlock(&in->lock);
    return ok;
}

static inline unsigned inbox_total(struct inbox *in)
{
    pthread_mutex_lock(&in->lock);
    unsigned t = in->total;
    pthread_mutex_unlock(&in->lock);
    return t;
}

static inline void inbox_drain(struct inbox *in)
{
    struct tmsg *m;
    while ((m = inbox_pop(in, 0)))
        tmsg_free(m);
}

/* --- Monocoque side ----------------------------------------------------------------------- */

enum reply_mode {
    RM_NONE,    /* record only */
    RM_ECHO,    /* record, then send the message back unchanged (REP: the body) */
    RM_FIXED,   /* record, then reply with the one frame `fixed` */
    RM_FORWARD, /* record, then send it on through the socket `forward_to` (a proxy) */
    RM_GREET,   /* record; on_peer_up sends a greeting from the callback */
};

struct msock {
    struct mcq_runtime *rt;
    struct mcq_socket *s;
    int type;
    enum reply_mode mode;
    const char *fixed;
    struct mcq_socket *forward_to;
    struct inbox in;
    _Atomic unsigned up, down, writable, echo_failures;
    _Atomic int last_echo_err, last_down_reason;
    _Atomic unsigned last_up_shard;
    /* RM_ECHO: keep an echo that got -EAGAIN and resend it from on_writable (what the API
     * asks of users); false counts it as a failure instead. */
    bool echo_retry;
    struct mcq_msg *held[SHARD_SLOTS][MAX_HELD]; /* per shard, touched by that shard only */
    unsigned nheld[SHARD_SLOTS];
    _Atomic unsigned echo_deferred;
    /* RM_GREET: on_peer_up sends "hello" (ROUTER: [routing id, hello]) from the callback. */
    _Atomic int greet_rc;
    _Atomic unsigned greets;
    _Atomic unsigned up_on_shard[SHARD_SLOTS];
    struct test_event up_ev, down_ev, writable_ev;
    pthread_mutex_t idlock;
    unsigned nids;
    size_t idlen[MAX_IDS];
    uint8_t ids[MAX_IDS][256];
};

static inline struct tmsg *tmsg_from_mcq(const struct mcq_msg *m, unsigned shard)
{
    struct tmsg *t = tmsg_new();
    unsigned n = mcq_msg_count(m);
    for (unsigned i = 0; i < n; i++) {
        const struct mcq_view *v = mcq_msg_frame(m, i);
        cr_assert_not_null(v);
        tmsg_add(t, mcq_view_data(v), mcq_view_len(v));
    }
    t->shard = shard;
    return t;
}

/* A new Monocoque message on sh holding copies of t's frames, or NULL. */
static inline struct mcq_msg *mcq_from_tmsg(struct mcq_shard *sh, const struct tmsg *t)
{
    struct mcq_msg *m = mcq_msg_new(sh);
    if (!m)
        return NULL;
    for (unsigned i = 0; i < t->n; i++) {
        if (mcq_msg_append(m, t->f[i].data, t->f[i].len) < 0) {
            mcq_msg_free(m);
            return NULL;
        }
    }
    return m;
}

static void ms_on_msg(struct mcq_shard *sh, struct mcq_socket *s, struct mcq_msg *m, void *user)
{
    struct msock *ms = user;
    inbox_push(&ms->in, tmsg_from_mcq(m, mcq_shard_id(sh)));
    int rc = 0;
    if (ms->mode == RM_ECHO || ms->mode == RM_FORWARD) {
        unsigned id = mcq_shard_id(sh);
        rc = ms->nheld[id] ? -EAGAIN : mcq_send(sh, ms->mode == RM_ECHO ? s : ms->forward_to, m);
        if (rc == 0)
            return;
        if (rc == -EAGAIN && ms->echo_retry && ms->nheld[id] < MAX_HELD) {
            ms->held[id][ms->nheld[id]++] = m;
            atomic_fetch_add(&ms->echo_deferred, 1);
            return;
        }
    } else if (ms->mode == RM_FIXED) {
        struct mcq_msg *r = mcq_msg_new(sh);
        rc = r ? mcq_msg_append(r, ms->fixed, strlen(ms->fixed)) : -ENOMEM;
        if (rc == 0)
            rc = mcq_send(sh, s, r);
        if (rc < 0)
            mcq_msg_free(r);
    }
    if (rc < 0) {
        atomic_store(&ms->last_echo_err, rc);
        atomic_fetch_add(&ms->echo_failures, 1);
    }
    mcq_msg_free(m);
}

static void ms_on_writable(struct mcq_shard *sh, struct mcq_socket *s, void *user)
{
    struct msock *ms = user;
    unsigned id = mcq_shard_id(sh);
    unsigned done = 0;
    while (done < ms->nheld[id]) {
        struct mcq_socket *to = ms->mode == RM_FORWARD ? ms->forward_to : s;
        if (mcq_send(sh, to, ms->held[id][done]) < 0)
            break;
        done++;
    }
    memmove(ms->held[id], ms->held[id] + done, (ms->nheld[id] - done) * sizeof(ms->held[0][0]));
    ms->nheld[id] -= done;
    atomic_fetch_add(&ms->writable, 1);
    test_event_signal(&ms->writable_ev);
}

static void ms_on_up(struct mcq_shard *sh, struct mcq_socket *s, const struct mcq_peer_info *p,
                     void *user)
{
    struct msock *ms = user;
    pthread_mutex_lock(&ms->idlock);
    if (ms->nids < MAX_IDS && p->routing_id_len <= sizeof(ms->ids[0])) {
        memcpy(ms->ids[ms->nids], p->routing_id, p->routing_id_len);
        ms->idlen[ms->nids++] = p->routing_id_len;
    }
    pthread_mutex_unlock(&ms->idlock);
    if (p->shard < SHARD_SLOTS)
        atomic_fetch_add(&ms->up_on_shard[p->shard], 1);
    atomic_store(&ms->last_up_shard, p->shard);
    if (ms->mode == RM_GREET) {
        struct mcq_msg *m = mcq_msg_new(sh);
        int rc = m ? 0 : -ENOMEM;
        if (rc == 0 && ms->type == MCQ_ROUTER)
            rc = mcq_msg_append(m, p->routing_id, p->routing_id_len);
        if (rc == 0)
            rc = mcq_msg_append(m, "hello", 5);
        if (rc == 0)
            rc = mcq_send(sh, s, m);
        if (rc < 0) {
            mcq_msg_free(m);
            atomic_store(&ms->greet_rc, rc);
        }
        atomic_fetch_add(&ms->greets, 1);
    }
    atomic_fetch_add(&ms->up, 1);
    test_event_signal(&ms->up_ev);
}

static void ms_on_down(struct mcq_shard *sh, struct mcq_socket *s, const struct mcq_peer_info *p,
                       int reason, void *user)
{
    (void)sh;
    (void)s;
    (void)p;
    struct msock *ms = user;
    atomic_store(&ms->last_down_reason, reason);
    atomic_fetch_add(&ms->down, 1);
    test_event_signal(&ms->down_ev);
}

static inline void ms_setopt_int(struct msock *ms, int opt, int v)
{
    int rc = mcq_setsockopt(ms->s, opt, &v, sizeof(v));
    cr_assert_eq(rc, 0, "mcq_setsockopt(%d, %d): %d", opt, v, rc);
}

static inline void ms_setopt_i64(struct msock *ms, int opt, int64_t v)
{
    int rc = mcq_setsockopt(ms->s, opt, &v, sizeof(v));
    cr_assert_eq(rc, 0, "mcq_setsockopt(%d, %lld): %d", opt, (long long)v, rc);
}

static inline void ms_setopt_str(struct msock *ms, int opt, const char *v)
{
    int rc = mcq_setsockopt(ms->s, opt, v, strlen(v));
    cr_assert_eq(rc, 0, "mcq_setsockopt(%d, %s): %d", opt, v, rc);
}

/* A Monocoque socket with recording callbacks, LINGER 0 and a quick reconnect. */
static inline struct msock *ms_new(struct mcq_runtime *rt, int type, enum reply_mode mode)
{
    struct msock *ms = calloc(1, sizeof(*ms));
    cr_assert_not_null(ms);
    ms->rt = rt;
    ms->type = type;
    ms->mode = mode;
    ms->echo_retry = true;
    inbox_init(&ms->in);
    test_event_init(&ms->up_ev);
    test_event_init(&ms->down_ev);
    test_event_init(&ms->writable_ev);
    pthread_mutex_init(&ms->idlock, NULL);
    struct mcq_socket_handlers h = {
        .on_msg = ms_on_msg,
        .on_writable = ms_on_writable,
        .on_peer_up = ms_on_up,
        .on_peer_down = ms_on_down,
        .user = ms,
    };
    int rc = mcq_socket_create(rt, type, &h, &ms->s);
    cr_assert_eq(rc, 0, "mcq_socket_create(%d): %d", type, rc);
    ms_setopt_int(ms, MCQ_LINGER, 0);
    ms_setopt_int(ms, MCQ_RECONNECT_IVL, TEST_RECONNECT_MS);
    return ms;
}

struct free_held_job {
    struct msock *ms;
    struct test_event done;
};

static void free_held_task(struct mcq_shard *sh, void *arg)
{
    struct free_held_job *j = arg;
    unsigned id = mcq_shard_id(sh);
    for (unsigned k = 0; k < j->ms->nheld[id]; k++)
        mcq_msg_free(j->ms->held[id][k]);
    j->ms->nheld[id] = 0;
    test_event_signal(&j->done);
}

static inline void ms_close(struct msock *ms)
{
    if (!ms)
        return;
    mcq_socket_close(ms->s);
    /* Held echoes belong to their shards: free them there. */
    for (unsigned i = 0; i < mcq_runtime_shard_count(ms->rt) && i < SHARD_SLOTS; i++) {
        struct free_held_job j = {.ms = ms};
        test_event_init(&j.done);
        cr_assert_eq(mcq_runtime_post(ms->rt, i, free_held_task, &j), 0);
        cr_assert(test_event_wait(&j.done, 1, IO_TIMEOUT_S));
    }
    inbox_drain(&ms->in);
    free(ms);
}

static unsigned ipc_seq;

/* A fresh endpoint to bind: tcp on an ephemeral port, or an ipc path unique to this run. */
static inline void fresh_endpoint(enum transport t, bool for_libzmq, char *ep, size_t len)
{
    if (t == TR_TCP)
        snprintf(ep, len, for_libzmq ? "tcp://127.0.0.1:*" : "tcp://127.0.0.1:0");
    else
        snprintf(ep, len, "ipc:///tmp/mcq-interop-%d-%u.sock", (int)getpid(), ipc_seq++);
}

/* Binds and returns the connectable endpoint in ep. */
static inline void ms_bind(struct msock *ms, enum transport t, char *ep, size_t len)
{
    char want[TEST_ENDPOINT_MAX];
    fresh_endpoint(t, false, want, sizeof(want));
    int rc = mcq_bind(ms->s, want);
    cr_assert_eq(rc, 0, "mcq_bind(%s): %d", want, rc);
    size_t n = len;
    rc = mcq_getsockopt(ms->s, MCQ_LAST_ENDPOINT, ep, &n);
    cr_assert_eq(rc, 0, "MCQ_LAST_ENDPOINT: %d", rc);
    cr_assert(n > 0 && n <= len);
    ep[len - 1] = '\0';
}

/* Binds exactly ep (a restart on the endpoint a previous socket had). */
static inline void ms_bind_at(struct msock *ms, const char *ep)
{
    int rc = mcq_bind(ms->s, ep);
    cr_assert_eq(rc, 0, "mcq_bind(%s) again: %d", ep, rc);
}

static inline void ms_connect(struct msock *ms, const char *ep)
{
    int rc = mcq_connect(ms->s, ep);
    cr_assert_eq(rc, 0, "mcq_connect(%s): %d", ep, rc);
}

static inline bool ms_wait_up(struct msock *ms, unsigned n)
{
    return test_event_wait(&ms->up_ev, (int)n, IO_TIMEOUT_S);
}

static inline bool ms_wait_down(struct msock *ms, unsigned n)
{
    return test_event_wait(&ms->down_ev, (int)n, IO_TIMEOUT_S);
}

static inline unsigned ms_shards_with_peers(struct msock *ms)
{
    unsigned k = 0;
    for (unsigned i = 0; i < SHARD_SLOTS; i++)
        k += atomic_load(&ms->up_on_shard[i]) > 0;
    return k;
}

/* The routing id of the i-th peer that came up (copied out under the lock). */
static inline size_t ms_peer_id(struct msock *ms, unsigned i, uint8_t *out)
{
    pthread_mutex_lock(&ms->idlock);
    size_t n = i < ms->nids ? ms->idlen[i] : 0;
    if (n)
        memcpy(out, ms->ids[i], n);
    pthread_mutex_unlock(&ms->idlock);
    return n;
}

/* A send run on a shard, awaited by the test thread. */
struct send_job {
    struct msock *ms;
    const struct tmsg *m;
    unsigned count;  /* fill: send until an error or this many */
    size_t fill_len; /* fill: frame size; frame starts with the 4-byte sequence number */
    uint32_t seq0;
    unsigned sent;
    int rc;
    struct test_event done;
};

static void send_task(struct mcq_shard *sh, void *arg)
{
    struct send_job *j = arg;
    struct mcq_msg *m = mcq_from_tmsg(sh, j->m);
    j->rc = m ? mcq_send(sh, j->ms->s, m) : -ENOMEM;
    if (j->rc < 0)
        mcq_msg_free(m);
    test_event_signal(&j->done);
}

/* Sends a copy of m from shard `shard`; returns mcq_send's result. */
static inline int ms_send(struct msock *ms, unsigned shard, const struct tmsg *m)
{
    struct send_job j = {.ms = ms, .m = m};
    test_event_init(&j.done);
    int rc = mcq_runtime_post(ms->rt, shard, send_task, &j);
    cr_assert_eq(rc, 0, "mcq_runtime_post: %d", rc);
    cr_assert(test_event_wait(&j.done, 1, IO_TIMEOUT_S), "send task never ran");
    return j.rc;
}

/* Like ms_send, but after -EAGAIN waits for on_writable (the contract: it follows when
 * room returns) and tries again; -ETIMEDOUT if on_writable never came. */
static inline int ms_send_retry(struct msock *ms, unsigned shard, const struct tmsg *m)
{
    uint64_t until = mono_ns() + (uint64_t)(IO_TIMEOUT_S * 1e9);
    for (;;) {
        int seen = (int)atomic_load(&ms->writable);
        int rc = ms_send(ms, shard, m);
        if (rc != -EAGAIN)
            return rc;
        double left = (double)(int64_t)(until - mono_ns()) / 1e9;
        if (left <= 0 || !test_event_wait(&ms->writable_ev, seen + 1, left))
            return -ETIMEDOUT;
    }
}

static void fill_task(struct mcq_shard *sh, void *arg)
{
    struct send_job *j = arg;
    uint8_t *buf = calloc(1, j->fill_len);
    j->rc = buf ? 0 : -ENOMEM;
    for (j->sent = 0; j->rc == 0 && j->sent < j->count; j->sent += j->rc == 0) {
        uint32_t seq = j->seq0 + j->sent;
        memcpy(buf, &seq, sizeof(seq));
        struct mcq_msg *m = mcq_msg_new(sh);
        if (!m) {
            j->rc = -ENOMEM;
            break;
        }
        if (j->m)
            for (unsigned i = 0; i < j->m->n && j->rc == 0; i++)
                j->rc = mcq_msg_append(m, j->m->f[i].data, j->m->f[i].len);
        if (j->rc == 0)
            j->rc = mcq_msg_append(m, buf, j->fill_len);
        if (j->rc == 0)
            j->rc = mcq_send(sh, j->ms->s, m);
        if (j->rc < 0)
            mcq_msg_free(m);
    }
    free(buf);
    test_event_signal(&j->done);
}

/* On shard `shard`, sends messages [prefix frames..., seq(4 bytes LE) + padding to len]
 * with sequence numbers seq0, seq0+1, ... until a send fails or `count` went out. Returns
 * the number sent; *rc gets the error that stopped it (0 if none). */
static inline unsigned ms_fill(struct msock *ms, unsigned shard, const struct tmsg *prefix,
                               size_t len, uint32_t seq0, unsigned count, int *rc)
{
    struct send_job j = {.ms = ms, .m = prefix, .count = count, .fill_len = len, .seq0 = seq0};
    test_event_init(&j.done);
    cr_assert_eq(mcq_runtime_post(ms->rt, shard, fill_task, &j), 0);
    cr_assert(test_event_wait(&j.done, 1, IO_TIMEOUT_S), "fill task never finished");
    *rc = j.rc;
    return j.sent;
}

/* Mesh fence: every shard sends a marker to every shard. The ring between two shards is
 * FIFO, so once all markers ran, every cross-shard event a shard submitted before it saw
 * its marker request (peer-up announcements, id claims) has run at its destination. */
struct fence {
    struct test_event arrived;
};

static void fence_in(struct mcq_shard *sh, void *arg)
{
    (void)sh;
    test_event_signal(&((struct fence *)arg)->arrived);
}

static void fence_out(struct mcq_shard *sh, void *arg)
{
    int rc = mcq_shard_broadcast(sh, fence_in, arg, true);
    cr_assert_eq(rc, 0, "fence broadcast: %d", rc);
}

/* Runs `hops` fences one after the other (a claim that is forwarded once needs two). */
static inline void rt_fence(struct mcq_runtime *rt, unsigned hops)
{
    unsigned n = mcq_runtime_shard_count(rt);
    for (unsigned h = 0; h < hops; h++) {
        struct fence f;
        test_event_init(&f.arrived);
        for (unsigned i = 0; i < n; i++)
            cr_assert_eq(mcq_runtime_post(rt, i, fence_out, &f), 0);
        cr_assert(test_event_wait(&f.arrived, (int)(n * n), IO_TIMEOUT_S), "mesh fence timed out");
    }
}

#define SETTLE_HOPS 3 /* peer-up broadcast, id claim, claim answer */

/* Waits until n peers came up and every shard has heard of them (see rt_fence). */
static inline bool ms_wait_settled(struct msock *ms, unsigned n)
{
    if (!test_event_wait(&ms->up_ev, (int)n, IO_TIMEOUT_S))
        return false;
    rt_fence(ms->rt, SETTLE_HOPS);
    return true;
}

/* --- libzmq side, driven by the test thread --------------------------------------------- */

static inline void *zs_new(void *ctx, int type)
{
    void *s = zmq_socket(ctx, type);
    cr_assert_not_null(s, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof(zero));
    int ivl = TEST_RECONNECT_MS;
    zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof(ivl));
    int to = IO_TIMEOUT_MS;
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &to, sizeof(to));
    return s;
}

static inline void zs_setopt_int(void *s, int opt, int v)
{
    cr_assert_eq(zmq_setsockopt(s, opt, &v, sizeof(v)), 0, "zmq_setsockopt(%d): %s", opt,
                 zmq_strerror(zmq_errno()));
}

static inline void zs_setopt_str(void *s, int opt, const char *v)
{
    cr_assert_eq(zmq_setsockopt(s, opt, v, strlen(v)), 0, "zmq_setsockopt(%d): %s", opt,
                 zmq_strerror(zmq_errno()));
}

static inline void zs_bind(void *s, enum transport t, char *ep, size_t len)
{
    char want[TEST_ENDPOINT_MAX];
    fresh_endpoint(t, true, want, sizeof(want));
    cr_assert_eq(zmq_bind(s, want), 0, "zmq_bind(%s): %s", want, zmq_strerror(zmq_errno()));
    size_t n = len;
    cr_assert_eq(zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &n), 0);
}

static inline void zs_connect(void *s, const char *ep)
{
    cr_assert_eq(zmq_connect(s, ep), 0, "zmq_connect(%s): %s", ep, zmq_strerror(zmq_errno()));
}

/* Sends every frame of m; 0 or -errno. */
static inline int zs_send_flags(void *s, const struct tmsg *m, int flags)
{
    for (unsigned i = 0; i < m->n; i++) {
        int more = i + 1 < m->n ? ZMQ_SNDMORE : 0;
        if (zmq_send(s, m->f[i].data, m->f[i].len, more | flags) < 0)
            return -zmq_errno();
    }
    return 0;
}

static inline int zs_send(void *s, const struct tmsg *m)
{
    return zs_send_flags(s, m, 0);
}

/* Receives one whole message, or NULL when nothing came within timeout_ms. */
static inline struct tmsg *zs_recv(void *s, int timeout_ms)
{
    zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return NULL;
    struct tmsg *t = tmsg_new();
    int more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        int rc = zmq_msg_recv(&part, s, ZMQ_DONTWAIT);
        cr_assert_geq(rc, 0, "zmq_msg_recv: %s", zmq_strerror(zmq_errno()));
        tmsg_add(t, zmq_msg_data(&part), zmq_msg_size(&part));
        more = zmq_msg_more(&part);
        zmq_msg_close(&part);
    }
    return t;
}

/* ROUTER send that waits (bounded) until libzmq has attached the peer: with
 * ROUTER_MANDATORY set, EHOSTUNREACH means the handshake is not processed yet. */
static inline int zs_router_send_when_routable(void *s, const struct tmsg *m)
{
    uint64_t until = mono_ns() + (uint64_t)(IO_TIMEOUT_S * 1e9);
    for (;;) {
        int rc = zs_send_flags(s, m, ZMQ_DONTWAIT);
        if ((rc != -EHOSTUNREACH && rc != -EAGAIN) || mono_ns() > until)
            return rc;
        zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
        zmq_poll(&it, 1, 5); /* lets libzmq process the attach command; nothing to read */
    }
}

static unsigned monitor_seq;

/* A PAIR socket that receives s's HANDSHAKE_SUCCEEDED events. libzmq queues the pipe-attach
 * command to the socket before it emits that event, so after n events a send on s sees all
 * n peers (what libzmq's own tests approximate with a settle sleep). Call before
 * bind/connect; close the returned socket before s. */
static inline void *zs_monitor(void *ctx, void *s)
{
    char ep[64];
    snprintf(ep, sizeof(ep), "inproc://mcq-monitor-%u", monitor_seq++);
    cr_assert_eq(zmq_socket_monitor(s, ep, ZMQ_EVENT_HANDSHAKE_SUCCEEDED), 0);
    void *m = zmq_socket(ctx, ZMQ_PAIR);
    cr_assert_not_null(m);
    int zero = 0;
    zmq_setsockopt(m, ZMQ_LINGER, &zero, sizeof(zero));
    cr_assert_eq(zmq_connect(m, ep), 0);
    return m;
}

/* Waits for n more handshakes on a monitor from zs_monitor; false on timeout. */
static inline bool zs_wait_handshakes(void *mon, int n)
{
    for (int i = 0; i < n; i++) {
        struct tmsg *ev = zs_recv(mon, IO_TIMEOUT_MS);
        if (!ev)
            return false;
        tmsg_free(ev);
    }
    return true;
}

/* --- libzmq echo/record servers in their own threads -------------------------------------- */

struct zserver {
    void *ctx;
    int type;
    bool bind;
    bool echo;
    enum transport tr;
    char ep[TEST_ENDPOINT_MAX]; /* in: where to connect; out: where it bound */
    const char *routing_id;     /* NULL: none */
    int rcvhwm;                 /* 0: default */
    struct inbox in;
    struct test_event ready;
    atomic_bool stop;
    pthread_t thread;
};

static void *zserver_main(void *arg)
{
    struct zserver *z = arg;
    void *s = zs_new(z->ctx, z->type);
    if (z->routing_id)
        zmq_setsockopt(s, ZMQ_ROUTING_ID, z->routing_id, strlen(z->routing_id));
    if (z->rcvhwm)
        zmq_setsockopt(s, ZMQ_RCVHWM, &z->rcvhwm, sizeof(z->rcvhwm));
    int rc;
    if (z->bind) {
        char want[TEST_ENDPOINT_MAX];
        if (z->ep[0])
            snprintf(want, sizeof(want), "%s", z->ep);
        else
            fresh_endpoint(z->tr, true, want, sizeof(want));
        rc = zmq_bind(s, want);
        size_t n = sizeof(z->ep);
        if (rc == 0)
            zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, z->ep, &n);
    } else {
        rc = zmq_connect(s, z->ep);
    }
    if (rc != 0)
        z->ep[0] = '\0';
    test_event_signal(&z->ready);
    while (rc == 0 && !atomic_load(&z->stop)) {
        zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, POLL_SLICE_MS) <= 0)
            continue;
        struct tmsg *t = tmsg_new();
        int more = 1;
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, s, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&part);
                break;
            }
            tmsg_add(t, zmq_msg_data(&part), zmq_msg_size(&part));
            more = zmq_msg_more(&part);
            zmq_msg_close(&part);
        }
        if (z->echo)
            zs_send_flags(s, t, ZMQ_DONTWAIT);
        inbox_push(&z->in, t);
    }
    zmq_close(s);
    return NULL;
}

/* Starts a libzmq server thread: binds a fresh endpoint (z->ep gets it) or connects to ep. */
static inline struct zserver *zserver_start(void *ctx, int type, bool bind, enum transport tr,
                                            const char *ep, bool echo, const char *routing_id)
{
    struct zserver *z = calloc(1, sizeof(*z));
    cr_assert_not_null(z);
    z->ctx = ctx;
    z->type = type;
    z->bind = bind;
    z->echo = echo;
    z->tr = tr;
    z->routing_id = routing_id;
    if (ep)
        snprintf(z->ep, sizeof(z->ep), "%s", ep);
    inbox_init(&z->in);
    test_event_init(&z->ready);
    cr_assert_eq(pthread_create(&z->thread, NULL, zserver_main, z), 0);
    cr_assert(test_event_wait(&z->ready, 1, IO_TIMEOUT_S), "libzmq server did not start");
    cr_assert(z->ep[0], "libzmq server could not bind/connect");
    return z;
}

static inline void zserver_stop(struct zserver *z)
{
    if (!z)
        return;
    atomic_store(&z->stop, true);
    pthread_join(z->thread, NULL);
    inbox_drain(&z->in);
    free(z);
}

static inline const char *type_name(int t)
{
    static const char *names[] = {"PAIR",   "PUB",  "SUB",  "REQ",  "REP", "DEALER",
                                  "ROUTER", "PULL", "PUSH", "XPUB", "XSUB"};
    return t >= 0 && t <= 10 ? names[t] : "?";
}

#endif
