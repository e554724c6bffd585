/* Test helpers shared by the zmtp tests: inputs that end at a PROT_NONE guard page, a
 * counting allocator, an event recorder and two sessions wired back to back. */
#ifndef MCQ_TESTS_ZMTP_HELPERS_H
#define MCQ_TESTS_ZMTP_HELPERS_H

#include <criterion/criterion.h>

#include "zmtp/mechanism.h"
#include "zmtp/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- guard-page input ------------------------------------------------------------- */

struct guard {
    uint8_t *base;
    size_t usable; /* bytes before the guard page */
    size_t map_len;
};

static inline void guard_init(struct guard *g, size_t max_len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t usable = (max_len + page - 1) / page * page;
    if (usable == 0)
        usable = page;
    g->map_len = usable + page;
    g->base = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(g->base, MAP_FAILED);
    cr_assert_eq(mprotect(g->base + usable, page, PROT_NONE), 0);
    g->usable = usable;
}

/* Copies src so that its last byte sits right before the guard page. */
static inline const uint8_t *guard_place(struct guard *g, const void *src, size_t len)
{
    cr_assert_leq(len, g->usable);
    uint8_t *dst = g->base + g->usable - len;
    if (len)
        memcpy(dst, src, len);
    return dst;
}

static inline void guard_fini(struct guard *g)
{
    munmap(g->base, g->map_len);
}

/* ---- counting allocator ------------------------------------------------------------ */

struct counting_alloc {
    long allocs;
    long releases;
    size_t largest;
    bool fail;
};

static inline void *ca_alloc(void *user, size_t size, void **handle)
{
    struct counting_alloc *c = user;
    if (c->fail)
        return NULL;
    void *p = malloc(size);
    cr_assert(p);
    c->allocs++;
    if (size > c->largest)
        c->largest = size;
    *handle = p;
    return p;
}

static inline void ca_release(void *user, void *handle)
{
    struct counting_alloc *c = user;
    c->releases++;
    free(handle);
}

static inline struct mcq_zmtp_allocator ca_allocator(struct counting_alloc *c)
{
    return (struct mcq_zmtp_allocator){.alloc = ca_alloc, .release = ca_release, .user = c};
}

/* ---- event log ---------------------------------------------------------------------- */

/* One recorded event (data copied). */
struct rec_event {
    int type;
    bool more;
    bool subscribe;
    uint16_t ttl_ds;
    size_t len;
    uint8_t *data;
};

struct rec_log {
    struct rec_event ev[256];
    size_t n;
    int err; /* first negative return, 0 if none */
    char reason[MCQ_ZMTP_REASON_LEN];
};

/* Records one event; gives back FRAME handles the way the connection layer would. */
static inline void rec_add(struct rec_log *log, struct counting_alloc *ca, int type,
                           const struct mcq_zmtp_event *ev)
{
    cr_assert_lt(log->n, sizeof(log->ev) / sizeof(log->ev[0]));
    struct rec_event *r = &log->ev[log->n++];
    memset(r, 0, sizeof(*r));
    r->type = type;
    if (type == MCQ_ZMTP_EV_FRAME)
        r->more = ev->more;
    if (type == MCQ_ZMTP_EV_SUBSCRIPTION)
        r->subscribe = ev->subscribe;
    if (type == MCQ_ZMTP_EV_PING)
        r->ttl_ds = ev->ttl_ds;
    if (type == MCQ_ZMTP_EV_AUTH) {
        /* "mechanism|domain|address|identity|username|password" */
        const struct mcq_zmtp_auth_request *a = ev->auth;
        char buf[1200];
        int n = snprintf(buf, sizeof(buf), "%s|%s|%s|%.*s|%.*s|%.*s", a->mechanism, a->domain,
                         a->address, (int)a->identity_len, (const char *)a->identity,
                         (int)a->credentials_len[0], (const char *)a->credentials[0],
                         (int)a->credentials_len[1], (const char *)a->credentials[1]);
        cr_assert_eq(a->n_credentials, 2);
        r->len = (size_t)n;
        r->data = (uint8_t *)strdup(buf);
    } else {
        r->len = ev->len;
        r->data = malloc(ev->len + 1);
        if (ev->len)
            memcpy(r->data, ev->data, ev->len);
    }
    if (type == MCQ_ZMTP_EV_FRAME && ev->handle)
        ca_release(ca, ev->handle);
}

static inline void rec_free(struct rec_log *log)
{
    for (size_t i = 0; i < log->n; i++)
        free(log->ev[i].data);
    log->n = 0;
}

static inline void rec_assert_same(const struct rec_log *a, const struct rec_log *b)
{
    cr_assert_eq(a->n, b->n, "event counts differ: %zu vs %zu", a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const struct rec_event *x = &a->ev[i], *y = &b->ev[i];
        cr_assert_eq(x->type, y->type, "event %zu type %d vs %d", i, x->type, y->type);
        cr_assert_eq(x->more, y->more);
        cr_assert_eq(x->subscribe, y->subscribe);
        cr_assert_eq(x->ttl_ds, y->ttl_ds);
        cr_assert_eq(x->len, y->len, "event %zu len %zu vs %zu", i, x->len, y->len);
        cr_assert(x->len == 0 || memcmp(x->data, y->data, x->len) == 0);
    }
    cr_assert_eq(a->err, b->err, "errors differ: %d vs %d", a->err, b->err);
}

/* Feeds in[0..len) to s, recording events, until consumed or an error. The auth policy
 * answers EV_AUTH at once with `auth_status` (0 = leave it pending). */
static inline void feed(struct mcq_zmtp_session *s, struct counting_alloc *ca, const uint8_t *in,
                        size_t len, uint64_t now, struct mcq_zmtp_out *out, struct rec_log *log,
                        unsigned auth_status)
{
    size_t off = 0;
    while (!log->err) {
        size_t used = 0;
        struct mcq_zmtp_event ev;
        int rc = mcq_zmtp_session_next(s, in + off, len - off, now, out, &used, &ev);
        cr_assert_leq(used, len - off);
        off += used;
        if (rc < 0) {
            log->err = rc;
            snprintf(log->reason, sizeof(log->reason), "%s", mcq_zmtp_session_reason(s));
            return;
        }
        if (rc == MCQ_ZMTP_EV_NONE)
            return;
        rec_add(log, ca, rc, &ev);
        if (rc == MCQ_ZMTP_EV_AUTH && auth_status) {
            int a = mcq_zmtp_session_auth_reply(s, auth_status, out);
            if (a < 0) {
                log->err = a;
                snprintf(log->reason, sizeof(log->reason), "%s", mcq_zmtp_session_reason(s));
                return;
            }
        }
    }
}

/* ---- two sessions back to back ------------------------------------------------------ */

#define PEER_OUT_CAP 4096

struct peer {
    struct mcq_zmtp_session s;
    struct mcq_zmtp_config cfg;
    struct counting_alloc ca;
    uint8_t obuf[PEER_OUT_CAP];
    struct mcq_zmtp_out out;
    struct rec_log log;
    unsigned auth_status;
};

static inline void peer_setup(struct peer *p, int socket_type)
{
    memset(p, 0, sizeof(*p));
    p->cfg.socket_type = socket_type;
    p->cfg.allocator = ca_allocator(&p->ca);
    p->out = (struct mcq_zmtp_out){.buf = p->obuf, .len = 0, .cap = sizeof(p->obuf)};
}

static inline void peer_start(struct peer *p, uint64_t now)
{
    cr_assert_eq(mcq_zmtp_session_init(&p->s, &p->cfg, now, &p->out), 0);
}

/* Moves a's pending output into b (through a guard-page copy), in chunks of `chunk`
 * bytes (0 = all at once). Returns bytes moved. */
static inline size_t peer_deliver(struct peer *a, struct peer *b, uint64_t now, size_t chunk)
{
    static struct guard g;
    if (!g.base)
        guard_init(&g, PEER_OUT_CAP);
    size_t n = a->out.len;
    if (!n)
        return 0;
    uint8_t tmp[PEER_OUT_CAP];
    memcpy(tmp, a->obuf, n);
    a->out.len = 0;
    for (size_t off = 0; off < n;) {
        size_t c = chunk && chunk < n - off ? chunk : n - off;
        feed(&b->s, &b->ca, guard_place(&g, tmp + off, c), c, now, &b->out, &b->log,
             b->auth_status);
        off += c;
    }
    return n;
}

/* Pumps both directions until neither has output left. */
static inline void peer_pump(struct peer *a, struct peer *b, uint64_t now, size_t chunk)
{
    for (int i = 0; i < 64; i++) {
        size_t ab = peer_deliver(a, b, now, chunk);
        size_t ba = peer_deliver(b, a, now, chunk);
        if (!ab && !ba)
            return;
    }
    cr_assert_fail("pump did not settle");
}

static inline void peer_release(struct peer *p)
{
    mcq_zmtp_session_release(&p->s);
    rec_free(&p->log);
    cr_assert_eq(p->ca.allocs, p->ca.releases, "allocator leak: %ld allocs, %ld releases",
                 p->ca.allocs, p->ca.releases);
}

/* Appends a data frame (header + body) to p's output, as the connection layer would. */
static inline void peer_send(struct peer *p, const void *body, size_t len, bool more)
{
    uint8_t hdr[MCQ_ZMTP_HEADER_MAX];
    size_t h = mcq_zmtp_frame_header(hdr, more ? MCQ_ZMTP_FLAG_MORE : 0, len);
    cr_assert_leq(p->out.len + h + len, p->out.cap);
    memcpy(p->out.buf + p->out.len, hdr, h);
    memcpy(p->out.buf + p->out.len + h, body, len);
    p->out.len += h + len;
}

#endif
