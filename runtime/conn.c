/* Connections: per-shard provided buffer ring, multishot receive, vectored send queue,
 * close with every completion reaped. See conn.h for the contract. */
#include "runtime/conn_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "alloc/arena.h"
#include "runtime/log.h"

/* The provided buffer ring of a shard: RING_ENTRIES buffers of RECV_BUF_BYTES, each its own
 * page, so a view the layer above keeps pins only its own buffer, and its slot is refilled
 * with a fresh page at the end of the turn. The kernel takes buffers in ring order while the
 * refill hands back the page freed last, so the kernel's copy cycles through every buffer of
 * the ring: 64 x 16 KiB = 1 MiB stays in a core's L2, where 512 (8 MiB) made the receive
 * copy miss (64 B PUSH->PULL: ~20.5 -> ~23 M msg/s). A turn that takes more buffers than
 * this ends a multishot receive with -ENOBUFS, which re-arms after the refill. */
#define RECV_BUF_BYTES 16384u
#define RING_ENTRIES 64u
#define RING_BGID 1                /* buffer group id; one group per shard ring */
#define SEND_IOV_MAX 64u           /* iovecs per vectored send */
#define QUEUE_MIN_CAP 8u           /* first allocation of a view queue, in views */
#define REFILL_RETRY_NS 1000000ull /* after a failed page allocation, 1 ms */

enum conn_state {
    CONN_CONNECTING,
    CONN_OPEN,
    CONN_CLOSING,
};

/* A FIFO of views, a power-of-two ring that grows on demand up to a bound set by the user. */
struct view_queue {
    struct mcq_view *v;
    uint32_t head, len, cap;
};

struct mcq_conn {
    struct conn_shard *m;
    const struct mcq_conn_handler *h;
    void *user;
    int fd;
    enum mcq_transport transport;
    enum conn_state state;
    int reason;
    unsigned ops; /* this connection's operations in flight */

    bool recv_inflight;
    bool rx_cancel_inflight;
    bool paused;
    bool rx_eof;
    bool on_rearm_list;
    bool send_inflight;
    bool shut_requested;
    bool shut_done;
    bool want_writable;
    bool notify_close;
    bool lingering;  /* closing, flushing the queue first */
    bool close_owed; /* on_close waits for the end of the owner's FLUSH close */
    bool cancel_inflight;
    bool cancel_again;
    bool counted; /* counted in the shard's open connections */
    bool connect_inflight;

    struct mcq_op recv_op, rx_cancel_op, send_op, cancel_op, connect_op;
    struct mcq_deferred turn;
    struct mcq_timer timer; /* connect timeout, then linger */

    struct view_queue out;
    size_t out_bytes;
    size_t out_max_bytes;
    uint32_t out_max_views;
    uint32_t linger_ms;
    struct view_queue held; /* received while paused, delivered on resume */
    struct iovec *iov;      /* SEND_IOV_MAX, stable while a send is in flight */
    struct msghdr msg;

    struct mcq_conn *prev, *next; /* m->conns */
    struct mcq_conn *rearm_next;
    struct mcq_sockaddr addr; /* connect target, stable until the connect completes */
};

/* --- view queues ----------------------------------------------------------------------- */

static struct mcq_view *vq_at(struct view_queue *q, uint32_t i)
{
    return &q->v[(q->head + i) & (q->cap - 1)];
}

/* Grows q so that `more` pushes cannot fail. */
static int vq_reserve(struct mcq_arena *a, struct view_queue *q, uint32_t more)
{
    if (more > UINT32_MAX / 2 - q->len)
        return -ENOMEM;
    uint32_t cap = q->cap ? q->cap : QUEUE_MIN_CAP;
    while (cap < q->len + more)
        cap *= 2;
    if (cap == q->cap)
        return 0;
    struct mcq_view *nv = mcq_arena_alloc(a, (size_t)cap * sizeof(*nv), 0);
    if (!nv)
        return -ENOMEM;
    for (uint32_t i = 0; i < q->len; i++)
        nv[i] = *vq_at(q, i);
    mcq_arena_free(a, q->v);
    q->v = nv;
    q->cap = cap;
    q->head = 0;
    return 0;
}

static int vq_push(struct mcq_arena *a, struct view_queue *q, const struct mcq_view *v)
{
    if (q->len == q->cap) {
        int rc = vq_reserve(a, q, 1);
        if (rc < 0)
            return rc;
    }
    q->v[(q->head + q->len) & (q->cap - 1)] = *v;
    q->len++;
    return 0;
}

static struct mcq_view vq_pop(struct view_queue *q)
{
    struct mcq_view v = q->v[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->len--;
    return v;
}

static void vq_release(struct mcq_arena *a, struct view_queue *q)
{
    while (q->len) {
        struct mcq_view v = vq_pop(q);
        mcq_view_unref(&v);
    }
    mcq_arena_free(a, q->v);
    *q = (struct view_queue){0};
}

/* --- per-shard state --------------------------------------------------------------------- */

static void shard_turn(struct mcq_shard *sh, struct mcq_deferred *d);
static void shard_stop(struct mcq_shard *sh, struct mcq_stop_hook *h);
static void shard_retry(struct mcq_shard *sh, struct mcq_timer *t);
static void conn_end(struct mcq_conn *c, int reason, uint64_t flush_until);
static void conn_arm_recv(struct mcq_conn *c);
static void conn_maybe_free(struct mcq_conn *c);
static void conn_settle(struct mcq_conn *c);

void mcq_conn_shard_op_start(struct conn_shard *m)
{
    m->ops++;
}

void mcq_conn_shard_op_done(struct conn_shard *m)
{
    m->ops--;
}

static void shard_destroy(struct conn_shard *m)
{
    struct mcq_shard *sh = m->sh;
    mcq_shard_undefer(sh, &m->turn);
    mcq_timer_stop(sh, &m->retry);
    mcq_shard_remove_stop_hook(sh, &m->stop);
    if (m->br)
        mcq_uring_free_buf_ring(mcq_shard_ring(sh), m->br, RING_ENTRIES, RING_BGID);
    if (m->bufs)
        for (unsigned i = 0; i < RING_ENTRIES; i++)
            mcq_view_unref(&m->bufs[i]);
    mcq_arena_free(m->arena, m->bufs);
    mcq_arena_free(m->arena, m->refill);
    int rc = mcq_slab_fini(&m->conns_slab);
    if (rc < 0)
        mcq_log_error("connection slab still in use at shard stop: %s", strerror(-rc));
    mcq_shard_set_slot(sh, MCQ_SLOT_CONN, NULL);
    mcq_arena_free(m->arena, m);
}

void mcq_conn_shard_settle(struct conn_shard *m)
{
    if (m->stopping && m->ops == 0 && !m->conns && !m->parts && !m->turn._queued)
        shard_destroy(m);
}

/* Gives every consumed ring slot a fresh page and publishes them to the kernel. */
static void shard_refill(struct conn_shard *m)
{
    unsigned mask = (unsigned)io_uring_buf_ring_mask(RING_ENTRIES);
    unsigned added = 0;
    while (m->nrefill > 0) {
        uint16_t bid = m->refill[m->nrefill - 1];
        struct mcq_view *slot = &m->bufs[bid];
        if (mcq_page_alloc(m->arena, RECV_BUF_BYTES, slot) < 0) {
            mcq_log_warn("out of memory for receive buffers; retrying");
            if (!mcq_timer_armed(&m->retry))
                mcq_timer_start(m->sh, &m->retry, REFILL_RETRY_NS, 0);
            break;
        }
        io_uring_buf_ring_add(m->br, mcq_view_mut(slot), RECV_BUF_BYTES, bid, (int)mask,
                              (int)added);
        added++;
        m->nrefill--;
    }
    if (added)
        io_uring_buf_ring_advance(m->br, (int)added);
}

static void shard_turn(struct mcq_shard *sh, struct mcq_deferred *d)
{
    (void)sh;
    struct conn_shard *m = container_of(d, struct conn_shard, turn);
    shard_refill(m);
    struct mcq_conn *list = m->rearm;
    m->rearm = NULL;
    while (list) {
        struct mcq_conn *c = list;
        list = c->rearm_next;
        c->on_rearm_list = false;
        conn_arm_recv(c);
    }
    mcq_conn_shard_settle(m);
}

static void shard_retry(struct mcq_shard *sh, struct mcq_timer *t)
{
    struct conn_shard *m = container_of(t, struct conn_shard, retry);
    mcq_shard_defer(sh, &m->turn);
}

static void shard_stop(struct mcq_shard *sh, struct mcq_stop_hook *h)
{
    (void)sh;
    struct conn_shard *m = container_of(h, struct conn_shard, stop);
    m->stopping = true;
    mcq_listener_shard_stop(m);
    for (struct mcq_conn *c = m->conns; c; c = c->next)
        conn_end(c, -ECANCELED, 0);
    mcq_conn_shard_settle(m);
}

struct conn_shard *mcq_conn_shard_get(struct mcq_shard *sh)
{
    struct conn_shard *m = mcq_shard_slot(sh, MCQ_SLOT_CONN);
    if (m)
        return m->stopping ? NULL : m;
    if (mcq_shard_stopping(sh))
        return NULL;
    struct mcq_arena *a = mcq_shard_arena(sh);
    m = mcq_arena_alloc(a, sizeof(*m), 0);
    if (!m)
        return NULL;
    memset(m, 0, sizeof(*m));
    m->sh = sh;
    m->arena = a;
    m->turn.run = shard_turn;
    m->stop.run = shard_stop;
    mcq_timer_init(&m->retry, shard_retry, m);
    int rc = mcq_slab_init(&m->conns_slab, a, sizeof(struct mcq_conn));
    m->bufs = mcq_arena_alloc(a, RING_ENTRIES * sizeof(*m->bufs), 0);
    m->refill = mcq_arena_alloc(a, RING_ENTRIES * sizeof(*m->refill), 0);
    if (rc < 0 || !m->bufs || !m->refill) {
        mcq_arena_free(a, m->bufs);
        mcq_arena_free(a, m->refill);
        mcq_arena_free(a, m);
        return NULL;
    }
    memset(m->bufs, 0, RING_ENTRIES * sizeof(*m->bufs));
    m->br = mcq_uring_setup_buf_ring(mcq_shard_ring(sh), RING_ENTRIES, RING_BGID, &rc);
    if (!m->br) {
        mcq_log_error("cannot register the receive buffer ring (kernel 5.19+ needed): %s",
                      strerror(-rc));
        mcq_arena_free(a, m->bufs);
        mcq_arena_free(a, m->refill);
        mcq_arena_free(a, m);
        return NULL;
    }
    for (unsigned i = 0; i < RING_ENTRIES; i++)
        m->refill[m->nrefill++] = (uint16_t)(RING_ENTRIES - 1 - i);
    shard_refill(m);
    mcq_shard_set_slot(sh, MCQ_SLOT_CONN, m);
    mcq_shard_add_stop_hook(sh, &m->stop);
    return m;
}

/* Takes the buffer the kernel filled: the view of its n bytes moves to the caller, and the
 * slot waits for a fresh page at the end of the turn. */
static struct mcq_view shard_take_buf(struct conn_shard *m, unsigned bid, uint32_t n)
{
    struct mcq_view v = m->bufs[bid];
    m->bufs[bid] = (struct mcq_view){0};
    m->refill[m->nrefill++] = (uint16_t)bid;
    mcq_shard_defer(m->sh, &m->turn);
    mcq_view_narrow(&v, 0, n);
    return v;
}

/* --- tuning -------------------------------------------------------------------------------- */

static int set_int_opt(int fd, int level, int name, int value, const char *what, int first)
{
    if (setsockopt(fd, level, name, &value, sizeof(value)) == 0)
        return first;
    int err = -errno;
    mcq_log_warn("setsockopt %s on fd %d: %s", what, fd, strerror(errno));
    return first ? first : err;
}

int mcq_conn_tune_fd(int fd, enum mcq_transport t, const struct mcq_conn_cfg *cfg)
{
    if (t != MCQ_TRANSPORT_TCP)
        return 0;
    int rc = set_int_opt(fd, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY", 0);
    if (!cfg || cfg->keepalive == MCQ_KEEPALIVE_OS)
        return rc;
    rc = set_int_opt(fd, SOL_SOCKET, SO_KEEPALIVE, cfg->keepalive == MCQ_KEEPALIVE_ON,
                     "SO_KEEPALIVE", rc);
    if (cfg->keepalive != MCQ_KEEPALIVE_ON)
        return rc;
    if (cfg->keepalive_idle_s)
        rc = set_int_opt(fd, IPPROTO_TCP, TCP_KEEPIDLE, (int)cfg->keepalive_idle_s, "TCP_KEEPIDLE",
                         rc);
    if (cfg->keepalive_cnt)
        rc = set_int_opt(fd, IPPROTO_TCP, TCP_KEEPCNT, (int)cfg->keepalive_cnt, "TCP_KEEPCNT", rc);
    if (cfg->keepalive_intvl_s)
        rc = set_int_opt(fd, IPPROTO_TCP, TCP_KEEPINTVL, (int)cfg->keepalive_intvl_s,
                         "TCP_KEEPINTVL", rc);
    return rc;
}

/* --- connection life cycle ------------------------------------------------------------------ */

static void conn_recv_done(struct mcq_shard *sh, struct mcq_op *op, const struct io_uring_cqe *cqe);
static void conn_rx_cancel_done(struct mcq_shard *sh, struct mcq_op *op,
                                const struct io_uring_cqe *cqe);
static void conn_send_done(struct mcq_shard *sh, struct mcq_op *op, const struct io_uring_cqe *cqe);
static void conn_cancel_done(struct mcq_shard *sh, struct mcq_op *op,
                             const struct io_uring_cqe *cqe);
static void conn_connect_done(struct mcq_shard *sh, struct mcq_op *op,
                              const struct io_uring_cqe *cqe);
static void conn_turn(struct mcq_shard *sh, struct mcq_deferred *d);
static void conn_timer(struct mcq_shard *sh, struct mcq_timer *t);

static struct mcq_conn *conn_new(struct conn_shard *m, int fd, enum mcq_transport t,
                                 const struct mcq_conn_cfg *cfg)
{
    struct mcq_conn *c = mcq_slab_alloc(&m->conns_slab);
    if (!c)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->m = m;
    c->h = cfg->handler;
    c->user = cfg->user;
    c->fd = fd;
    c->transport = t;
    c->out_max_bytes = cfg->sndq_max_bytes ? cfg->sndq_max_bytes : MCQ_CONN_SNDQ_BYTES_DEFAULT;
    c->out_max_views = cfg->sndq_max_views ? cfg->sndq_max_views : MCQ_CONN_SNDQ_VIEWS_DEFAULT;
    c->linger_ms = cfg->linger_ms ? cfg->linger_ms : MCQ_CONN_LINGER_MS_DEFAULT;
    c->recv_op.complete = conn_recv_done;
    c->rx_cancel_op.complete = conn_rx_cancel_done;
    c->send_op.complete = conn_send_done;
    c->cancel_op.complete = conn_cancel_done;
    c->connect_op.complete = conn_connect_done;
    c->turn.run = conn_turn;
    mcq_timer_init(&c->timer, conn_timer, c);
    c->next = m->conns;
    if (m->conns)
        m->conns->prev = c;
    m->conns = c;
    return c;
}

static void conn_op_start(struct mcq_conn *c)
{
    c->ops++;
    mcq_conn_shard_op_start(c->m);
}

static void conn_op_done(struct mcq_conn *c)
{
    c->ops--;
    mcq_conn_shard_op_done(c->m);
}

/* Frees the connection once it is closing, told the layer above, and has nothing in
 * flight. Only called last in a loop entry point, never under a user's call. */
static void conn_maybe_free(struct mcq_conn *c)
{
    /* A lingering connection may have no operation in flight between two sends. */
    if (c->state != CONN_CLOSING || c->ops > 0 || c->notify_close || c->lingering)
        return;
    struct conn_shard *m = c->m;
    struct mcq_shard *sh = m->sh;
    mcq_shard_undefer(sh, &c->turn);
    mcq_timer_stop(sh, &c->timer);
    if (c->on_rearm_list) {
        for (struct mcq_conn **p = &m->rearm; *p; p = &(*p)->rearm_next) {
            if (*p == c) {
                *p = c->rearm_next;
                break;
            }
        }
    }
    if (close(c->fd) < 0)
        mcq_log_warn("close fd %d: %s", c->fd, strerror(errno));
    vq_release(m->arena, &c->out);
    vq_release(m->arena, &c->held);
    mcq_arena_free(m->arena, c->iov);
    if (c->counted)
        mcq_shard_stat_add(sh, MCQ_STAT_CONNECTIONS, -1);
    if (c->prev)
        c->prev->next = c->next;
    else
        m->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    mcq_slab_free(&m->conns_slab, c);
}

/* Last step of every loop entry point that touched c: frees c and then the shard state when
 * they are done. */
static void conn_settle(struct mcq_conn *c)
{
    struct conn_shard *m = c->m;
    conn_maybe_free(c);
    mcq_conn_shard_settle(m);
}

static bool conn_submit_cancel(struct mcq_conn *c, struct mcq_op *op, struct mcq_op *target,
                               bool by_fd)
{
    struct io_uring_sqe *sqe = mcq_shard_sqe(c->m->sh, op);
    if (!sqe)
        return false;
    if (by_fd)
        io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
    else
        io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)target, 0);
    conn_op_start(c);
    return true;
}

/* Cancels everything in flight on the socket; the final CQEs then free the connection. A
 * shutdown is the fallback that makes every socket operation complete. */
static void conn_cancel_all(struct mcq_conn *c)
{
    if (!c->recv_inflight && !c->send_inflight && !c->connect_inflight)
        return;
    if (c->cancel_inflight) {
        c->cancel_again = true;
        return;
    }
    if (conn_submit_cancel(c, &c->cancel_op, NULL, true))
        c->cancel_inflight = true;
    else
        shutdown(c->fd, SHUT_RDWR);
}

static void conn_finish(struct mcq_conn *c)
{
    c->lingering = false;
    if (c->close_owed) {
        c->close_owed = false;
        c->notify_close = true;
        mcq_shard_defer(c->m->sh, &c->turn);
    }
    mcq_timer_stop(c->m->sh, &c->timer);
    conn_cancel_all(c);
}

static void conn_stop_recv(struct mcq_conn *c)
{
    if (!c->recv_inflight || c->rx_cancel_inflight)
        return;
    if (conn_submit_cancel(c, &c->rx_cancel_op, &c->recv_op, false))
        c->rx_cancel_inflight = true;
}

/* The end of a flush that starts now and lasts linger_ms. */
static uint64_t linger_deadline(const struct mcq_conn *c)
{
    return mcq_shard_now_ns(c->m->sh) + (uint64_t)c->linger_ms * MCQ_NS_PER_MS;
}

/* Moves the connection to CLOSING (once): schedules on_close, drops held input, and either
 * flushes the queue first, until flush_until (shard clock), or with flush_until 0 cancels
 * everything now. */
static void conn_end(struct mcq_conn *c, int reason, uint64_t flush_until)
{
    struct mcq_shard *sh = c->m->sh;
    bool flush = flush_until != 0;
    if (c->state == CONN_CLOSING) {
        if (!flush && c->lingering) {
            if (c->close_owed)
                c->reason = reason;
            conn_finish(c);
        }
        return;
    }
    c->state = CONN_CLOSING;
    c->reason = reason;
    c->notify_close = true;
    mcq_shard_defer(sh, &c->turn);
    vq_release(c->m->arena, &c->held);
    mcq_timer_stop(sh, &c->timer);
    if (flush && c->out.len > 0 && !c->shut_done) {
        uint64_t now = mcq_shard_now_ns(sh);
        c->lingering = true;
        mcq_timer_start(sh, &c->timer, flush_until > now ? flush_until - now : 0, 0);
        conn_stop_recv(c);
        return;
    }
    conn_finish(c);
}

static void conn_timer(struct mcq_shard *sh, struct mcq_timer *t)
{
    (void)sh;
    struct mcq_conn *c = t->arg;
    if (c->state == CONN_CONNECTING)
        conn_end(c, -ETIMEDOUT, 0);
    else if (c->lingering)
        conn_finish(c);
    conn_settle(c);
}

/* --- receive ------------------------------------------------------------------------------ */

static void conn_arm_recv(struct mcq_conn *c)
{
    if (c->state != CONN_OPEN || c->paused || c->recv_inflight || c->rx_cancel_inflight ||
        c->rx_eof)
        return;
    struct io_uring_sqe *sqe = mcq_shard_sqe(c->m->sh, &c->recv_op);
    if (!sqe) {
        conn_end(c, -EIO, 0);
        return;
    }
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = RING_BGID;
    c->recv_inflight = true;
    conn_op_start(c);
}

/* Re-arms at the end of the turn, after the buffer ring got its refill. */
static void conn_want_recv(struct mcq_conn *c)
{
    if (c->state != CONN_OPEN || c->paused || c->recv_inflight || c->rx_cancel_inflight ||
        c->rx_eof || c->on_rearm_list)
        return;
    c->on_rearm_list = true;
    c->rearm_next = c->m->rearm;
    c->m->rearm = c;
    mcq_shard_defer(c->m->sh, &c->m->turn);
}

static void conn_deliver(struct mcq_conn *c, struct mcq_view *v)
{
    if (c->h->on_data)
        c->h->on_data(c, c->user, v);
    mcq_view_unref(v);
}

static void conn_recv_done(struct mcq_shard *sh, struct mcq_op *op, const struct io_uring_cqe *cqe)
{
    struct mcq_conn *c = container_of(op, struct mcq_conn, recv_op);
    struct conn_shard *m = c->m;
    bool final = !(cqe->flags & IORING_CQE_F_MORE);
    if (final) {
        c->recv_inflight = false;
        conn_op_done(c);
    }
    struct mcq_view v = {0};
    if (cqe->flags & IORING_CQE_F_BUFFER)
        v = shard_take_buf(m, cqe->flags >> IORING_CQE_BUFFER_SHIFT,
                           cqe->res > 0 ? (uint32_t)cqe->res : 0);
    if (cqe->res > 0) {
        mcq_shard_stat_add(sh, MCQ_STAT_BYTES_IN, cqe->res);
        if (c->state != CONN_OPEN) {
            mcq_view_unref(&v);
        } else if (c->paused || c->held.len > 0) {
            if (vq_push(m->arena, &c->held, &v) < 0) {
                mcq_view_unref(&v);
                conn_end(c, -ENOMEM, 0);
            }
        } else {
            conn_deliver(c, &v);
        }
    } else {
        mcq_view_unref(&v);
        if (cqe->res == 0)
            c->rx_eof = true;
        else if (cqe->res == -ENOBUFS)
            mcq_log_debug("fd %d: receive buffers ran out; re-arming after the refill", c->fd);
        else if (cqe->res != -ENOBUFS && cqe->res != -ECANCELED && c->state == CONN_OPEN)
            conn_end(c, cqe->res, 0);
    }
    if (final && c->state == CONN_OPEN) {
        if (c->rx_eof && c->held.len == 0)
            conn_end(c, 0, linger_deadline(c));
        else
            conn_want_recv(c);
    }
    conn_settle(c);
}

static void conn_rx_cancel_done(struct mcq_shard *sh, struct mcq_op *op,
                                const struct io_uring_cqe *cqe)
{
    (void)sh;
    (void)cqe;
    struct mcq_conn *c = container_of(op, struct mcq_conn, rx_cancel_op);
    c->rx_cancel_inflight = false;
    conn_op_done(c);
    conn_want_recv(c);
    conn_settle(c);
}

/* Delivers what was held while paused, one view per callback so a pause inside on_data
 * stops the next one. A held EOF ends the connection after the last byte. */
static void conn_deliver_held(struct mcq_conn *c)
{
    while (c->state == CONN_OPEN && !c->paused && c->held.len > 0) {
        struct mcq_view v = vq_pop(&c->held);
        conn_deliver(c, &v);
    }
    if (c->state == CONN_OPEN && c->rx_eof && c->held.len == 0 && !c->recv_inflight)
        conn_end(c, 0, linger_deadline(c));
}

/* --- send ---------------------------------------------------------------------------------- */

static bool conn_queue_full(const struct mcq_conn *c)
{
    return c->out.len >= c->out_max_views || c->out_bytes >= c->out_max_bytes;
}

static void conn_flush(struct mcq_conn *c)
{
    if (c->send_inflight || c->shut_done)
        return;
    if (c->out.len == 0) {
        if (c->shut_requested && c->state == CONN_OPEN) {
            c->shut_done = true;
            if (shutdown(c->fd, SHUT_WR) < 0 && errno != ENOTCONN)
                conn_end(c, -errno, 0);
        }
        return;
    }
    if (!c->iov) {
        c->iov = mcq_arena_alloc(c->m->arena, SEND_IOV_MAX * sizeof(*c->iov), 0);
        if (!c->iov) {
            conn_end(c, -ENOMEM, 0);
            return;
        }
    }
    uint32_t n = c->out.len < SEND_IOV_MAX ? c->out.len : SEND_IOV_MAX;
    for (uint32_t i = 0; i < n; i++) {
        struct mcq_view *v = vq_at(&c->out, i);
        c->iov[i].iov_base = (void *)mcq_view_data(v);
        c->iov[i].iov_len = mcq_view_len(v);
    }
    c->msg = (struct msghdr){.msg_iov = c->iov, .msg_iovlen = n};
    struct io_uring_sqe *sqe = mcq_shard_sqe(c->m->sh, &c->send_op);
    if (!sqe) {
        conn_end(c, -EIO, 0);
        return;
    }
    io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
    c->send_inflight = true;
    conn_op_start(c);
}

/* Drops the views the kernel took completely and narrows the one it took in part. */
static void conn_advance(struct mcq_conn *c, size_t n)
{
    c->out_bytes -= n;
    while (n > 0) {
        struct mcq_view *v = vq_at(&c->out, 0);
        if (n < v->len) {
            mcq_view_narrow(v, n, v->len - n);
            return;
        }
        n -= v->len;
        struct mcq_view done = vq_pop(&c->out);
        mcq_view_unref(&done);
    }
}

static void conn_send_done(struct mcq_shard *sh, struct mcq_op *op, const struct io_uring_cqe *cqe)
{
    struct mcq_conn *c = container_of(op, struct mcq_conn, send_op);
    c->send_inflight = false;
    conn_op_done(c);
    if (cqe->res > 0) {
        mcq_shard_stat_add(sh, MCQ_STAT_BYTES_OUT, cqe->res);
        conn_advance(c, (size_t)cqe->res);
    } else if (cqe->res != -EINTR && cqe->res != -EAGAIN) {
        if (c->state == CONN_CLOSING)
            conn_finish(c);
        else
            conn_end(c, cqe->res == 0 ? -EPIPE : cqe->res, 0);
    }
    if (c->state == CONN_OPEN || c->lingering) {
        if (c->out.len > 0 || c->shut_requested)
            mcq_shard_defer(sh, &c->turn);
        else if (c->lingering)
            conn_finish(c);
    }
    if (c->state == CONN_OPEN && c->want_writable && c->out_bytes <= c->out_max_bytes / 2 &&
        c->out.len <= c->out_max_views / 2) {
        c->want_writable = false;
        if (c->h->on_writable)
            c->h->on_writable(c, c->user);
    }
    conn_settle(c);
}

static void conn_cancel_done(struct mcq_shard *sh, struct mcq_op *op,
                             const struct io_uring_cqe *cqe)
{
    (void)sh;
    struct mcq_conn *c = container_of(op, struct mcq_conn, cancel_op);
    c->cancel_inflight = false;
    conn_op_done(c);
    if (cqe->res < 0 && cqe->res != -ENOENT) {
        mcq_log_warn("cancel on fd %d: %s; shutting the socket down", c->fd, strerror(-cqe->res));
        shutdown(c->fd, SHUT_RDWR);
    }
    if (c->cancel_again) {
        c->cancel_again = false;
        conn_cancel_all(c);
    }
    conn_settle(c);
}

/* End-of-turn work of one connection: held input, the one vectored send, on_close. */
static void conn_turn(struct mcq_shard *sh, struct mcq_deferred *d)
{
    (void)sh;
    struct mcq_conn *c = container_of(d, struct mcq_conn, turn);
    conn_deliver_held(c);
    if (c->state == CONN_OPEN || c->lingering)
        conn_flush(c);
    if (c->notify_close) {
        c->notify_close = false;
        if (c->h->on_close)
            c->h->on_close(c, c->user, c->reason);
    }
    conn_settle(c);
}

/* --- opening ---------------------------------------------------------------------------------- */

static void conn_opened(struct mcq_conn *c)
{
    c->state = CONN_OPEN;
    c->counted = true;
    mcq_shard_stat_add(c->m->sh, MCQ_STAT_CONNECTIONS, 1);
    if (c->h->on_open)
        c->h->on_open(c, c->user);
    conn_arm_recv(c);
}

void mcq_conn_adopt(struct conn_shard *m, int fd, enum mcq_transport t,
                    const struct mcq_conn_cfg *cfg)
{
    mcq_conn_tune_fd(fd, t, cfg);
    struct mcq_conn *c = conn_new(m, fd, t, cfg);
    if (!c) {
        mcq_log_warn("no memory for an accepted connection; closing it");
        close(fd);
        return;
    }
    conn_opened(c);
}

static void conn_connect_done(struct mcq_shard *sh, struct mcq_op *op,
                              const struct io_uring_cqe *cqe)
{
    struct mcq_conn *c = container_of(op, struct mcq_conn, connect_op);
    c->connect_inflight = false;
    conn_op_done(c);
    mcq_timer_stop(sh, &c->timer);
    if (c->state == CONN_CONNECTING) {
        if (cqe->res == 0)
            conn_opened(c);
        else
            conn_end(c, cqe->res, 0);
    }
    conn_settle(c);
}

int mcq_conn_connect(struct mcq_shard *sh, const char *endpoint, const struct mcq_conn_cfg *cfg,
                     uint32_t timeout_ms, struct mcq_conn **out)
{
    struct mcq_endpoint ep;
    int rc = mcq_endpoint_parse(endpoint, &ep);
    if (rc < 0)
        return rc;
    if (ep.transport == MCQ_TRANSPORT_TCP && ep.port == 0) {
        mcq_log_warn("endpoint '%s': cannot connect to port 0", endpoint);
        return -EINVAL;
    }
    struct mcq_sockaddr addr;
    rc = mcq_endpoint_resolve(&ep, false, &addr);
    if (rc < 0)
        return rc;
    struct conn_shard *m = mcq_conn_shard_get(sh);
    if (!m)
        return mcq_shard_stopping(sh) ? -ESHUTDOWN : -ENOMEM;
    int fd = socket(addr.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    mcq_conn_tune_fd(fd, ep.transport, cfg);
    struct mcq_conn *c = conn_new(m, fd, ep.transport, cfg);
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    c->state = CONN_CONNECTING;
    c->addr = addr;
    struct io_uring_sqe *sqe = mcq_shard_sqe(sh, &c->connect_op);
    if (!sqe) {
        c->state = CONN_CLOSING;
        conn_maybe_free(c);
        return -EIO;
    }
    io_uring_prep_connect(sqe, fd, &c->addr.sa, c->addr.len);
    c->connect_inflight = true;
    conn_op_start(c);
    if (timeout_ms)
        mcq_timer_start(sh, &c->timer, (uint64_t)timeout_ms * MCQ_NS_PER_MS, 0);
    *out = c;
    return 0;
}

/* --- the rest of the API ------------------------------------------------------------------------
 */

/* Grows the last queued view by len bytes when bytes [off, off + len) of ref directly
 * follow it (batched headers and small bodies in one page), so one iovec carries many
 * small messages. No new reference: the last view holds one on the page already. */
static bool out_extend(struct mcq_conn *c, const struct mcq_ref *ref, uint32_t off, uint32_t len)
{
    struct view_queue *q = &c->out;
    if (!q->len)
        return false;
    struct mcq_view *last = vq_at(q, q->len - 1);
    if (last->ref != ref || last->off + last->len != off || len > UINT32_MAX - last->len)
        return false;
    last->len += len;
    c->out_bytes += len;
    return true;
}

/* Queues *v (taking its reference) for sending, extending the last view when it can.
 * 0 or -ENOMEM (v untouched). */
static int out_append(struct mcq_conn *c, struct mcq_view *v)
{
    if (out_extend(c, v->ref, v->off, v->len)) {
        mcq_view_unref(v);
        return 0;
    }
    if (vq_push(c->m->arena, &c->out, v) < 0)
        return -ENOMEM;
    c->out_bytes += v->len;
    *v = (struct mcq_view){0};
    return 0;
}

/* Whether a send may queue now: 0, or the error every send function returns. */
static int send_check(struct mcq_conn *c)
{
    if (c->state == CONN_CONNECTING)
        return -ENOTCONN;
    if (c->state != CONN_OPEN || c->shut_requested)
        return -EPIPE;
    if (conn_queue_full(c)) {
        c->want_writable = true;
        return -EAGAIN;
    }
    return 0;
}

/* After a send queued bytes: ask for room when the queue filled, send at the turn's end. */
static void send_queued(struct mcq_conn *c)
{
    if (conn_queue_full(c))
        c->want_writable = true;
    mcq_shard_defer(c->m->sh, &c->turn);
}

int mcq_conn_send(struct mcq_conn *c, struct mcq_view *v)
{
    int rc = send_check(c);
    if (rc < 0)
        return rc;
    if (v->len == 0) {
        mcq_view_unref(v);
        return 0;
    }
    if (out_append(c, v) < 0)
        return -ENOMEM;
    send_queued(c);
    return 0;
}

int mcq_conn_sendv(struct mcq_conn *c, struct mcq_view *v, unsigned n)
{
    int rc = send_check(c);
    if (rc < 0)
        return rc;
    if (vq_reserve(c->m->arena, &c->out, n) < 0)
        return -ENOMEM;
    for (unsigned i = 0; i < n; i++) {
        if (v[i].len == 0) {
            mcq_view_unref(&v[i]);
            continue;
        }
        out_append(c, &v[i]); /* cannot fail: room was reserved */
    }
    send_queued(c);
    return 0;
}

int mcq_conn_send_slice(struct mcq_conn *c, const struct mcq_view *page, uint32_t off, uint32_t len)
{
    int rc = send_check(c);
    if (rc < 0)
        return rc;
    if (off > page->len || len > page->len - off)
        return -EINVAL;
    if (len == 0)
        return 0;
    if (!out_extend(c, page->ref, page->off + off, len)) {
        struct mcq_view v;
        mcq_view_slice(page, off, len, &v);
        if (out_append(c, &v) < 0) {
            mcq_view_unref(&v);
            return -ENOMEM;
        }
    }
    send_queued(c);
    return 0;
}

bool mcq_conn_writable(const struct mcq_conn *c)
{
    return c->state == CONN_OPEN && !c->shut_requested && !conn_queue_full(c);
}

size_t mcq_conn_sndq_bytes(const struct mcq_conn *c)
{
    return c->out_bytes;
}

void mcq_conn_pause(struct mcq_conn *c)
{
    if (c->paused || c->state != CONN_OPEN)
        return;
    c->paused = true;
    conn_stop_recv(c);
}

void mcq_conn_resume(struct mcq_conn *c)
{
    if (!c->paused)
        return;
    c->paused = false;
    if (c->state != CONN_OPEN)
        return;
    if (c->held.len > 0 || c->rx_eof)
        mcq_shard_defer(c->m->sh, &c->turn);
    conn_want_recv(c);
}

int mcq_conn_shutdown(struct mcq_conn *c)
{
    if (c->state != CONN_OPEN)
        return -ENOTCONN;
    c->shut_requested = true;
    mcq_shard_defer(c->m->sh, &c->turn);
    return 0;
}

void mcq_conn_close(struct mcq_conn *c, enum mcq_close_how how)
{
    mcq_conn_close_by(c, how == MCQ_CLOSE_FLUSH ? linger_deadline(c) : 0);
}

void mcq_conn_close_by(struct mcq_conn *c, uint64_t deadline_ns)
{
    conn_end(c, 0, deadline_ns);
    /* The owner hears of the end once its bytes are out (or the linger ran out), so whoever
     * waits for its on_close (a closing socket, and runtime stop after it) waits for them. */
    if (c->lingering && c->notify_close) {
        c->notify_close = false;
        c->close_owed = true;
    }
}

void *mcq_conn_user(const struct mcq_conn *c)
{
    return c->user;
}

void mcq_conn_set_user(struct mcq_conn *c, void *user)
{
    c->user = user;
}

struct mcq_shard *mcq_conn_shard(const struct mcq_conn *c)
{
    return c->m->sh;
}

enum mcq_transport mcq_conn_transport(const struct mcq_conn *c)
{
    return c->transport;
}

int mcq_conn_peer(const struct mcq_conn *c, struct mcq_sockaddr *out)
{
    memset(out, 0, sizeof(*out));
    out->len = sizeof(out->ss);
    if (getpeername(c->fd, &out->sa, &out->len) < 0)
        return -errno;
    if (out->sa.sa_family != AF_UNIX || out->len > offsetof(struct sockaddr_un, sun_path))
        return 0;
    /* An accepted unix connection's client is unnamed: name the path it came in on. */
    out->len = sizeof(out->ss);
    if (getsockname(c->fd, &out->sa, &out->len) < 0)
        return -errno;
    return 0;
}
