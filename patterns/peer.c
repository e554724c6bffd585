/* One ZMTP peer: a connection, a session and the message assembly and output around them.
 *
 * Output. All peers of a shard write into one shared scratch page (proto_shard.h): session
 * bytes (greeting, handshake, PONG, PING), subscriptions, frame headers, and bodies of at
 * most COPY_BODY_MAX bytes; a bigger body goes out as its own view. Whatever a peer writes
 * it hands to its connection at once as slices of that page, so an idle peer holds no
 * output memory. A data message goes over whole with mcq_conn_sendv (headers and bodies in
 * one unit), so a full connection queue never splits a message; on -EAGAIN its bytes are
 * unwritten again (nobody wrote after them). Control bytes the connection refused wait in
 * the peer's `pend` view and go in front of everything else. Only bytes past the page's
 * write cursor are ever written, so slices already queued on connections stay intact.
 *
 * High-water marks (libzmq-like, per peer). A message counts against SNDHWM/SNDHWM_BYTES
 * from mcq_peer_send until it is handed to the connection; then it is the connection's
 * (bounded by its own sndq_max_bytes/views, like libzmq's kernel and encoder buffers). A
 * send goes straight to the connection while nothing waits in the peer's queue and the
 * connection takes it; else it waits in the queue (unpinned, see msg_int.h) and the queue
 * moves on when the connection reports room. At the mark mcq_peer_send returns -EAGAIN;
 * writable() follows once the queue is back to half the mark (also after a send that
 * filled it, for owners that test mcq_peer_writable instead of trying). Memory per peer is
 * thus bounded by SNDHWM(_BYTES) + the connection's bound. A FLUSH close first hands the
 * queue to the connection (within its linger time), so no accepted message is dropped.
 *
 * Timers: one per peer. While connected it fires at mcq_zmtp_session_deadline (handshake
 * deadline, PINGs, heartbeat timeouts); between connections it is the reconnect delay. */
#include "patterns/peer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc/arena.h"
#include "patterns/msg_int.h"
#include "patterns/proto_shard.h"
#include "runtime/endpoint.h"
#include "runtime/log.h"
#include "runtime/loop.h"
#include "runtime/timer.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define SCRATCH_BYTES MCQ_PAGE_SIZE /* the shard's scratch page: many headers and small bodies */
#define COPY_BODY_MAX 256u          /* bodies up to this size are copied next to their header */
#define RECONNECT_JITTER_DIV 4      /* jitter adds up to 1/this of the reconnect delay */
#define RECONNECT_MIN_MS 1u         /* RECONNECT_IVL 0 still yields to the loop between tries */
#define ZAP_STATUS_OK 200u /* RFC 27 status: accepted (an owner without auth accepts all) */

struct mcq_peer {
    struct mcq_peer *prev, *next; /* the shard's live list */
    struct mcq_proto_shard *ps;
    struct mcq_shard *sh;
    const struct mcq_peer_cfg *cfg;
    void *owner, *data;
    struct mcq_conn *conn; /* NULL between connections */
    char *endpoint;        /* connecting peers: the target (arena copy); NULL if accepted */

    bool ready;            /* handshake done on the current connection */
    bool opened;           /* the current connection opened (closed() is due when it ends) */
    bool conn_ending;      /* mcq_conn_close was called on the current connection */
    bool closing;          /* mcq_peer_close or runtime stop: no reconnect, freed when closed */
    bool closed_pending;   /* closing with no connection: closed() runs from `notify` */
    bool in_closed;        /* inside ops->closed */
    bool reconnect;        /* what mcq_peer_reconnecting answers */
    bool refused;          /* the peer sent ERROR: never reconnect (libzmq) */
    bool want_writable;    /* a send returned -EAGAIN or filled the queue */
    bool lingering;        /* FLUSH close waiting for the queue to reach the connection */
    uint64_t linger_until; /* while lingering: when the whole close must end (shard clock) */
    int fail_reason;       /* our reason for ending the connection, reported over conn's */

    struct mcq_timer timer;
    struct mcq_deferred notify;
    uint32_t backoff_ms; /* next reconnect delay before jitter */
    uint64_t rng;

    struct mcq_zmtp_config zcfg; /* cfg->zmtp with this peer's allocator */
    struct mcq_zmtp_session sess;

    struct mcq_view pend; /* control bytes the connection could not take yet */

    struct mcq_msg *q_head, *q_tail; /* messages waiting for room on the connection */
    unsigned q_msgs;
    uint64_t q_bytes;

    struct mcq_msg *rx;   /* message being assembled */
    bool paused;          /* mcq_peer_pause: no input is processed */
    struct mcq_view held; /* input left over when the owner paused mid-view */
    struct mcq_deferred resume_d;
    char address[MCQ_ENDPOINT_TEXT_MAX];
};

static const struct mcq_conn_handler peer_connect_handler;

/* --- the session's allocator: pages, handle = the page's ref ------------------------------ */

static void *peer_alloc(void *user, size_t size, void **handle)
{
    struct mcq_peer *p = user;
    struct mcq_view v;
    if (mcq_page_alloc(p->ps->arena, size, &v) < 0)
        return NULL;
    *handle = v.ref;
    return mcq_view_mut(&v);
}

static void peer_release(void *user, void *handle)
{
    (void)user;
    struct mcq_view v = {.ref = handle};
    mcq_view_unref(&v);
}

/* --- output ---------------------------------------------------------------------------------- */

/* Makes room for `need` more bytes in the shard's scratch page. */
static int scratch_ensure(struct mcq_proto_shard *ps, size_t need)
{
    if (ps->scratch.ref && ps->scratch.len - ps->sc_used >= need)
        return 0;
    struct mcq_view v;
    if (mcq_page_alloc(ps->arena, need > SCRATCH_BYTES ? need : SCRATCH_BYTES, &v) < 0)
        return -ENOMEM;
    mcq_view_unref(&ps->scratch);
    ps->scratch = v;
    ps->sc_used = 0;
    return 0;
}

static uint8_t *scratch_tail(struct mcq_proto_shard *ps)
{
    return mcq_view_mut(&ps->scratch) + ps->sc_used;
}

/* An output buffer over the free scratch room, for the session. */
static int session_out(struct mcq_peer *p, struct mcq_zmtp_out *out)
{
    struct mcq_proto_shard *ps = p->ps;
    int rc = scratch_ensure(ps, mcq_zmtp_session_out_reserve(&p->sess));
    if (rc < 0)
        return rc;
    *out = (struct mcq_zmtp_out){scratch_tail(ps), 0, ps->scratch.len - ps->sc_used};
    return 0;
}

/* Hands the pending control bytes to the connection; on -EAGAIN they wait for on_writable. */
static void flush_ctl(struct mcq_peer *p)
{
    if (!p->pend.ref || !p->conn || p->conn_ending || !p->opened)
        return;
    mcq_conn_send(p->conn, &p->pend);
}

/* The peer just wrote n scratch bytes (ending at the write cursor): queue them behind any
 * pending ones and try to send. 0 or -ENOMEM. */
static int emit_ctl(struct mcq_peer *p, size_t n)
{
    struct mcq_proto_shard *ps = p->ps;
    if (n == 0)
        return 0;
    ps->sc_used += (uint32_t)n;
    struct mcq_view v;
    mcq_view_slice(&ps->scratch, ps->sc_used - n, n, &v);
    if (p->pend.ref) {
        /* Rare: the connection is backed up. Keep the pending bytes in one view. */
        struct mcq_view both;
        if (mcq_page_alloc(ps->arena, (size_t)p->pend.len + n, &both) < 0) {
            mcq_view_unref(&v);
            return -ENOMEM;
        }
        memcpy(mcq_view_mut(&both), mcq_view_data(&p->pend), p->pend.len);
        memcpy(mcq_view_mut(&both) + p->pend.len, mcq_view_data(&v), n);
        mcq_view_unref(&v);
        mcq_view_unref(&p->pend);
        v = both;
    }
    p->pend = v;
    flush_ctl(p);
    return 0;
}

/* Room for n views in the shard's batch array. */
static struct mcq_view *batch_get(struct mcq_proto_shard *ps, size_t n)
{
    if (n <= ps->batch_cap)
        return ps->batch;
    size_t cap = ps->batch_cap ? ps->batch_cap : 16;
    while (cap < n)
        cap *= 2;
    struct mcq_view *b = mcq_arena_alloc(ps->arena, cap * sizeof(*b), 0);
    if (!b)
        return NULL;
    mcq_arena_free(ps->arena, ps->batch);
    ps->batch = b;
    ps->batch_cap = (uint32_t)cap;
    return b;
}

/* Copies a body of at most COPY_BODY_MAX bytes. A plain memcpy of a length the compiler
 * knows to be small becomes `rep movs`, whose start-up cost dominated a 64 B send; fixed
 * 16-byte moves (the last one overlapping the end) do not have it. */
static void copy_small(uint8_t *dst, const uint8_t *src, uint32_t len)
{
    enum { CHUNK = 16, WORD = 8, HALF = 4 }; /* bytes per move */
    if (len >= CHUNK) {
        uint32_t i = 0;
        for (; i + CHUNK < len; i += CHUNK)
            memcpy(dst + i, src + i, CHUNK);
        memcpy(dst + len - CHUNK, src + len - CHUNK, CHUNK);
    } else if (len >= WORD) {
        memcpy(dst, src, WORD);
        memcpy(dst + len - WORD, src + len - WORD, WORD);
    } else if (len >= HALF) {
        memcpy(dst, src, HALF);
        memcpy(dst + len - HALF, src + len - HALF, HALF);
    } else {
        for (uint32_t i = 0; i < len; i++)
            dst[i] = src[i];
    }
}

/* push_msg for the common small message: one frame of at most COPY_BODY_MAX bytes and no
 * control bytes pending. Header and body go straight into the scratch page and onto the
 * connection as a continuation of what it already holds from that page. */
static int push_small(struct mcq_peer *p, const struct mcq_view *f)
{
    struct mcq_proto_shard *ps = p->ps;
    uint32_t len = f->len;
    if (scratch_ensure(ps, MCQ_ZMTP_HEADER_MAX + len) < 0)
        return -ENOMEM;
    uint8_t *w = scratch_tail(ps);
    uint32_t n = (uint32_t)mcq_zmtp_frame_header(w, 0, len);
    if (len)
        copy_small(w + n, mcq_view_data(f), len);
    n += len;
    int rc = mcq_conn_send_slice(p->conn, &ps->scratch, ps->sc_used, n);
    if (rc == 0)
        ps->sc_used += n;
    return rc;
}

/* Hands the whole of m (pending control bytes in front) to the connection in one unit.
 * Borrows m. 0, -EAGAIN (nothing changed), -ENOTSUP, -ENOMEM, or the connection's error. */
static int push_msg(struct mcq_peer *p, const struct mcq_msg *m)
{
    if (mcq_zmtp_session_wraps(&p->sess))
        return -ENOTSUP; /* encrypting mechanisms (CURVE) are not wired to the peer yet */
    if (m->n == 1 && m->f[0].len <= COPY_BODY_MAX && !p->pend.ref)
        return push_small(p, &m->f[0]);
    struct mcq_proto_shard *ps = p->ps;
    size_t need = 0;
    for (uint32_t i = 0; i < m->n; i++)
        need += MCQ_ZMTP_HEADER_MAX + (m->f[i].len <= COPY_BODY_MAX ? m->f[i].len : 0);
    if (scratch_ensure(ps, need) < 0)
        return -ENOMEM;
    struct mcq_view *b = batch_get(ps, 2 * (size_t)m->n + 2);
    if (!b)
        return -ENOMEM;
    unsigned nb = 0, first = 0;
    if (p->pend.ref) {
        b[nb++] = p->pend;
        first = 1;
    }
    uint32_t mark = ps->sc_used, start = mark;
    for (uint32_t i = 0; i < m->n; i++) {
        const struct mcq_view *f = &m->f[i];
        uint8_t flags = i + 1 < m->n ? MCQ_ZMTP_FLAG_MORE : 0;
        ps->sc_used += (uint32_t)mcq_zmtp_frame_header(scratch_tail(ps), flags, f->len);
        if (f->len <= COPY_BODY_MAX) {
            if (f->len)
                copy_small(scratch_tail(ps), mcq_view_data(f), f->len);
            ps->sc_used += f->len;
            continue;
        }
        mcq_view_slice(&ps->scratch, start, ps->sc_used - start, &b[nb++]);
        start = ps->sc_used;
        b[nb++] = mcq_view_ref(f);
    }
    if (ps->sc_used > start)
        mcq_view_slice(&ps->scratch, start, ps->sc_used - start, &b[nb++]);
    int rc = mcq_conn_sendv(p->conn, b, nb);
    if (rc == 0) {
        p->pend = (struct mcq_view){0};
        return 0;
    }
    for (unsigned i = first; i < nb; i++)
        mcq_view_unref(&b[i]);
    ps->sc_used = mark;
    return rc;
}

static bool below(uint64_t n, uint64_t mark)
{
    return mark == 0 || n < mark;
}

static bool at_low_water(const struct mcq_peer *p)
{
    return (p->cfg->sndhwm == 0 || p->q_msgs <= p->cfg->sndhwm / 2) &&
           (p->cfg->sndhwm_bytes == 0 || p->q_bytes <= p->cfg->sndhwm_bytes / 2);
}

static void queue_free(struct mcq_peer *p)
{
    while (p->q_head) {
        struct mcq_msg *m = p->q_head;
        p->q_head = m->next;
        mcq_msg_free(m);
    }
    p->q_tail = NULL;
    p->q_msgs = 0;
    p->q_bytes = 0;
}

static void fail(struct mcq_peer *p, int rc);

/* Moves queued messages to the connection while it takes them. */
static void drain(struct mcq_peer *p)
{
    while (p->q_head && !p->conn_ending) {
        struct mcq_msg *m = p->q_head;
        int rc = push_msg(p, m);
        if (rc == -EAGAIN)
            return;
        if (rc < 0) {
            fail(p, rc);
            return;
        }
        p->q_head = m->next;
        if (!p->q_head)
            p->q_tail = NULL;
        p->q_msgs--;
        p->q_bytes -= m->size;
        mcq_msg_free(m);
    }
}

/* --- connection lifecycle ------------------------------------------------------------------ */

static void arm_timer(struct mcq_peer *p)
{
    if (p->lingering)
        return;
    uint64_t d = mcq_zmtp_session_deadline(&p->sess);
    if (d == UINT64_MAX) {
        mcq_timer_stop(p->sh, &p->timer);
        return;
    }
    if (mcq_timer_armed(&p->timer) && p->timer.deadline_ns <= d)
        return;
    uint64_t now = mcq_shard_now_ns(p->sh);
    mcq_timer_start(p->sh, &p->timer, d > now ? d - now : 0, 0);
}

/* The end of a FLUSH close that starts now: the connection's linger time from now. */
static uint64_t linger_deadline(const struct mcq_peer *p)
{
    unsigned ms = p->cfg->conn.linger_ms ? p->cfg->conn.linger_ms : MCQ_CONN_LINGER_MS_DEFAULT;
    return mcq_shard_now_ns(p->sh) + (uint64_t)ms * MCQ_NS_PER_MS;
}

/* Closes the current connection on our side (once; a later ABORT still upgrades a FLUSH):
 * flushing until flush_until (shard clock), or with 0 dropping what is queued. */
static void end_conn(struct mcq_peer *p, uint64_t flush_until)
{
    if (flush_until && !p->conn_ending)
        flush_ctl(p);
    p->conn_ending = true;
    p->lingering = false;
    mcq_conn_close_by(p->conn, flush_until);
}

/* Ends the current connection because of rc, logged once with why, dropping queued
 * output. */
static void fail_why(struct mcq_peer *p, int rc, const char *why)
{
    if (!p->conn || p->conn_ending)
        return;
    /* A refused authentication is the owner's decision, and the owner logs it if it wants:
     * at warn level this would be a second line per refused client. */
    mcq_log(rc == -EACCES ? MCQ_LOG_INFO : MCQ_LOG_WARN, "peer %s: closing: %s (%s)",
            p->address[0] ? p->address : "?", why && why[0] ? why : "connection error",
            strerror(-rc));
    if (rc == -ECONNREFUSED)
        p->refused = true;
    p->fail_reason = rc;
    /* A refused authentication still owes the client its ERROR command. */
    end_conn(p, rc == -EACCES ? linger_deadline(p) : 0);
}

static void fail(struct mcq_peer *p, int rc)
{
    fail_why(p, rc, mcq_zmtp_session_reason(&p->sess));
}

void mcq_peer_drop(struct mcq_peer *p, const char *why)
{
    fail_why(p, -EPROTO, why);
}

/* Starts the session on a connection that just opened. */
static int session_start(struct mcq_peer *p)
{
    struct mcq_sockaddr sa;
    if (mcq_conn_peer(p->conn, &sa) < 0 ||
        mcq_endpoint_format(&sa, p->address, sizeof(p->address)) < 0) {
        if (p->endpoint)
            snprintf(p->address, sizeof(p->address), "%s", p->endpoint);
        else
            p->address[0] = '\0';
    }
    memset(&p->sess, 0, sizeof(p->sess));
    p->opened = true;
    struct mcq_proto_shard *ps = p->ps;
    int rc = scratch_ensure(ps, MCQ_ZMTP_GREETING_LEN);
    if (rc < 0)
        return rc;
    struct mcq_zmtp_out out = {scratch_tail(ps), 0, ps->scratch.len - ps->sc_used};
    rc = mcq_zmtp_session_init(&p->sess, &p->zcfg, mcq_shard_now_ns(p->sh), &out);
    if (rc < 0)
        return rc;
    mcq_zmtp_session_set_peer_address(&p->sess, p->address);
    rc = emit_ctl(p, out.len);
    if (rc < 0)
        return rc;
    arm_timer(p);
    return 0;
}

/* Drops everything that belongs to one connection, so the next starts fresh. */
static void conn_state_reset(struct mcq_peer *p)
{
    mcq_zmtp_session_release(&p->sess);
    mcq_msg_free(p->rx);
    p->rx = NULL;
    queue_free(p);
    mcq_view_unref(&p->pend);
    mcq_timer_stop(p->sh, &p->timer);
    mcq_view_unref(&p->held);
    mcq_shard_undefer(p->sh, &p->resume_d);
    p->paused = false;
    p->conn = NULL;
    p->ready = false;
    p->opened = false;
    p->conn_ending = false;
    p->lingering = false;
    p->fail_reason = 0;
}

static void peer_free(struct mcq_peer *p)
{
    struct mcq_proto_shard *ps = p->ps;
    mcq_timer_stop(p->sh, &p->timer);
    mcq_shard_undefer(p->sh, &p->notify);
    mcq_shard_undefer(p->sh, &p->resume_d);
    if (p->prev)
        p->prev->next = p->next;
    else
        ps->live = p->next;
    if (p->next)
        p->next->prev = p->prev;
    mcq_arena_free(ps->arena, p->endpoint);
    mcq_slab_free(&ps->peers, p);
    mcq_proto_shard_settle(ps);
}

static uint32_t reconnect_delay(struct mcq_peer *p)
{
    uint32_t d = p->backoff_ms ? p->backoff_ms : RECONNECT_MIN_MS;
    int max = p->cfg->reconnect_ivl_max_ms;
    if (max > p->cfg->reconnect_ivl_ms) {
        uint64_t next = (uint64_t)d * 2;
        p->backoff_ms = next > (uint64_t)max ? (uint32_t)max : (uint32_t)next;
    }
    p->rng ^= p->rng << 13;
    p->rng ^= p->rng >> 7;
    p->rng ^= p->rng << 17;
    return d + (uint32_t)(p->rng % (d / RECONNECT_JITTER_DIV + 1));
}

static bool will_reconnect(const struct mcq_peer *p)
{
    return p->endpoint && !p->closing && !p->refused && p->cfg->reconnect_ivl_ms >= 0 &&
           !mcq_shard_stopping(p->sh);
}

/* The connection (or connect attempt) ended: report, then reconnect later or free. */
static void conn_gone(struct mcq_peer *p, int reason)
{
    bool report = p->opened;
    if (p->fail_reason)
        reason = p->fail_reason;
    else if (p->opened && !p->ready && reason != -ECANCELED && !p->closing)
        /* Hanging up mid-handshake (a truncated greeting, a scanner) is a failed peer too. */
        mcq_log_warn("peer %s: connection ended during the handshake (%s)",
                     p->address[0] ? p->address : "?",
                     reason ? strerror(-reason) : "end of stream");
    conn_state_reset(p);
    p->reconnect = will_reconnect(p);
    if (report || !p->reconnect) {
        const struct mcq_peer_ops *ops = p->cfg->ops;
        p->in_closed = true;
        if (ops->closed)
            ops->closed(p, reason);
        p->in_closed = false;
    }
    if (p->reconnect && !p->closing) {
        mcq_timer_start(p->sh, &p->timer, (uint64_t)reconnect_delay(p) * MCQ_NS_PER_MS, 0);
        return;
    }
    peer_free(p);
}

static int connect_now(struct mcq_peer *p)
{
    struct mcq_conn_cfg cc = p->cfg->conn;
    cc.handler = &peer_connect_handler;
    cc.user = p;
    struct mcq_conn *c;
    int rc = mcq_conn_connect(p->sh, p->endpoint, &cc, p->cfg->connect_timeout_ms, &c);
    if (rc == 0)
        p->conn = c;
    return rc;
}

/* --- input ----------------------------------------------------------------------------------- */

static void on_auth(struct mcq_peer *p, const struct mcq_zmtp_event *ev)
{
    const struct mcq_zmtp_auth_request *a = ev->auth;
    struct mcq_auth_request req = {
        .domain = a->domain,
        .address = a->address,
        .mechanism = a->mechanism,
        .username = a->n_credentials > 0 ? a->credentials[0] : NULL,
        .username_len = a->n_credentials > 0 ? a->credentials_len[0] : 0,
        .password = a->n_credentials > 1 ? a->credentials[1] : NULL,
        .password_len = a->n_credentials > 1 ? a->credentials_len[1] : 0,
    };
    unsigned status = p->cfg->ops->auth ? p->cfg->ops->auth(p, &req) : ZAP_STATUS_OK;
    struct mcq_zmtp_out out;
    int rc = session_out(p, &out);
    if (rc == 0) {
        rc = mcq_zmtp_session_auth_reply(&p->sess, status, &out);
        int erc = emit_ctl(p, out.len);
        if (rc == 0)
            rc = erc;
    }
    if (rc < 0)
        fail(p, rc);
}

/* in_data: mcq_view_data(in), which the caller has at hand (one pointer chase less per
 * frame). */
static void on_frame(struct mcq_peer *p, const struct mcq_view *in, const uint8_t *in_data,
                     const struct mcq_zmtp_event *ev)
{
    struct mcq_view v = {0};
    if (ev->handle)
        v = (struct mcq_view){.ref = ev->handle, .off = 0, .len = (uint32_t)ev->len};
    else if (ev->len)
        mcq_view_slice(in, (size_t)(ev->data - in_data), ev->len, &v);
    if (!p->rx)
        p->rx = mcq_msg_new_on(p->ps);
    int rc = -ENOMEM;
    if (p->rx)
        rc = v.ref ? mcq_msg_push_view(p->rx, v) : mcq_msg_append_empty(p->rx);
    if (rc < 0) {
        mcq_view_unref(&v);
        fail(p, rc);
        return;
    }
    if (ev->more)
        return;
    struct mcq_msg *m = p->rx;
    p->rx = NULL;
    if (p->cfg->ops->msg)
        p->cfg->ops->msg(p, m);
    else
        mcq_msg_free(m);
}

static void on_ready(struct mcq_peer *p)
{
    p->ready = true;
    p->backoff_ms = p->cfg->reconnect_ivl_ms > 0 ? (uint32_t)p->cfg->reconnect_ivl_ms : 0;
    if (p->cfg->ops->ready)
        p->cfg->ops->ready(p);
    if (p->want_writable && p->conn && !p->conn_ending) {
        p->want_writable = false;
        if (p->cfg->ops->writable)
            p->cfg->ops->writable(p);
    }
}

/* Feeds received bytes to the session and acts on its events, until they run out, the
 * connection ends or the owner pauses (then the rest is held for mcq_peer_resume). */
static void process_input(struct mcq_peer *p, const struct mcq_view *in)
{
    const uint8_t *data = mcq_view_data(in);
    size_t len = mcq_view_len(in), off = 0;
    uint64_t now = mcq_shard_now_ns(p->sh);
    struct mcq_proto_shard *ps = p->ps;
    /* The output room from the last session_out still holds while it is exactly the
     * scratch page's free room (nobody wrote there or swapped the page meanwhile) and the
     * session only passed a data frame (its reserve did not change): the common data frame
     * then costs no new reservation. */
    struct mcq_zmtp_out out = {0};
    bool out_ok = false;
    while (!p->conn_ending) {
        if (!out_ok || !ps->scratch.ref || out.buf != scratch_tail(ps) ||
            out.cap != ps->scratch.len - ps->sc_used) {
            int orc = session_out(p, &out);
            if (orc < 0) {
                fail(p, orc);
                break;
            }
        }
        size_t used;
        struct mcq_zmtp_event ev;
        int rc = mcq_zmtp_session_next(&p->sess, data + off, len - off, now, &out, &used, &ev);
        off += used;
        if (out.len && emit_ctl(p, out.len) < 0)
            rc = -ENOMEM;
        out_ok = out.len == 0 && rc == MCQ_ZMTP_EV_FRAME;
        if (rc == MCQ_ZMTP_EV_NONE) {
            if (off == len || used == 0)
                break;
            continue;
        }
        /* -ENOBUFS cannot happen (session_out keeps the reserve the session asks for) and
         * would end the connection like any other failure. */
        if (rc < 0) {
            fail(p, rc);
            break;
        }
        switch (rc) {
        case MCQ_ZMTP_EV_READY:
            flush_ctl(p);
            on_ready(p);
            break;
        case MCQ_ZMTP_EV_AUTH:
            on_auth(p, &ev);
            break;
        case MCQ_ZMTP_EV_FRAME:
            on_frame(p, in, data, &ev);
            break;
        case MCQ_ZMTP_EV_SUBSCRIPTION:
            if (p->cfg->ops->subscription)
                p->cfg->ops->subscription(p, ev.subscribe, ev.data, ev.len);
            break;
        default: /* PING (PONG already queued), PONG: traffic is all they mean here */
            break;
        }
        if (p->paused && !p->conn_ending) {
            if (off < len)
                mcq_view_slice(in, off, len - off, &p->held);
            break;
        }
    }
    flush_ctl(p);
    if (p->conn && !p->conn_ending)
        arm_timer(p);
}

static void peer_on_data(struct mcq_conn *c, void *user, const struct mcq_view *in)
{
    (void)c;
    struct mcq_peer *p = user;
    if (p && !p->conn_ending && !p->closing)
        process_input(p, in);
}

/* mcq_peer_resume's work, from the loop: held input first, then the connection's. */
static void peer_resume_run(struct mcq_shard *sh, struct mcq_deferred *d)
{
    (void)sh;
    struct mcq_peer *p = container_of(d, struct mcq_peer, resume_d);
    if (p->paused || !p->conn || p->conn_ending)
        return;
    if (p->held.ref) {
        struct mcq_view h = p->held;
        p->held = (struct mcq_view){0};
        process_input(p, &h);
        mcq_view_unref(&h);
    }
    if (!p->paused && p->conn && !p->conn_ending)
        mcq_conn_resume(p->conn);
}

static void peer_on_writable(struct mcq_conn *c, void *user)
{
    (void)c;
    struct mcq_peer *p = user;
    if (!p || p->conn_ending)
        return;
    flush_ctl(p);
    drain(p);
    if (p->lingering && !p->q_head && !p->conn_ending) {
        /* The connection gets what is left of the peer's linger, not a linger of its own. */
        end_conn(p, p->linger_until);
        return;
    }
    if (p->want_writable && !p->conn_ending && !p->closing && at_low_water(p)) {
        p->want_writable = false;
        if (p->cfg->ops->writable)
            p->cfg->ops->writable(p);
    }
}

static void peer_on_close(struct mcq_conn *c, void *user, int reason)
{
    (void)c;
    struct mcq_peer *p = user;
    if (p)
        conn_gone(p, reason);
}

static void peer_connect_opened(struct mcq_conn *c, void *user)
{
    (void)c;
    struct mcq_peer *p = user;
    int rc = session_start(p);
    if (rc < 0)
        fail(p, rc);
}

static const struct mcq_conn_handler peer_connect_handler = {
    .on_open = peer_connect_opened,
    .on_data = peer_on_data,
    .on_writable = peer_on_writable,
    .on_close = peer_on_close,
};

static void listener_on_open(struct mcq_conn *c, void *user)
{
    struct mcq_peer_listener *l = user;
    if (l && l->accept)
        l->accept(l, c);
    if (mcq_conn_user(c) == l) {
        /* Nobody took it. */
        mcq_conn_set_user(c, NULL);
        mcq_conn_close(c, MCQ_CLOSE_ABORT);
    }
}

const struct mcq_conn_handler mcq_peer_listener_handler = {
    .on_open = listener_on_open,
    .on_data = peer_on_data,
    .on_writable = peer_on_writable,
    .on_close = peer_on_close,
};

/* --- timers and deferred notices -------------------------------------------------------------- */

static void peer_timer(struct mcq_shard *sh, struct mcq_timer *t)
{
    struct mcq_peer *p = t->arg;
    if (!p->conn) {
        int rc = connect_now(p);
        if (rc == 0)
            return;
        if (rc == -ESHUTDOWN) {
            p->closing = true;
            conn_gone(p, -ECANCELED);
            return;
        }
        mcq_log_warn("peer %s: connect failed: %s; retrying", p->endpoint, strerror(-rc));
        mcq_timer_start(sh, &p->timer, (uint64_t)reconnect_delay(p) * MCQ_NS_PER_MS, 0);
        return;
    }
    if (p->lingering) {
        mcq_log_warn("peer %s: linger time over with %u messages unsent; dropping them", p->address,
                     p->q_msgs);
        end_conn(p, 0);
        return;
    }
    if (p->conn_ending || !p->opened)
        return;
    struct mcq_zmtp_out out;
    int rc = session_out(p, &out);
    if (rc == 0) {
        rc = mcq_zmtp_session_tick(&p->sess, mcq_shard_now_ns(sh), &out);
        if (emit_ctl(p, out.len) < 0)
            rc = -ENOMEM;
    }
    if (rc < 0 && rc != -ENOBUFS) {
        fail(p, rc);
        return;
    }
    flush_ctl(p);
    arm_timer(p);
}

/* closed() for a peer that is closing with no connection, from the loop. */
static void peer_notify(struct mcq_shard *sh, struct mcq_deferred *d)
{
    (void)sh;
    struct mcq_peer *p = container_of(d, struct mcq_peer, notify);
    if (!p->closed_pending)
        return;
    p->closed_pending = false;
    conn_gone(p, p->fail_reason ? p->fail_reason : 0);
}

static void peers_stop(struct mcq_proto_shard *ps)
{
    for (struct mcq_peer *p = ps->live; p; p = p->next) {
        p->closing = true;
        if (!p->conn && !p->closed_pending) {
            mcq_timer_stop(p->sh, &p->timer);
            p->closed_pending = true;
            p->fail_reason = -ECANCELED;
            mcq_shard_defer(p->sh, &p->notify);
        }
    }
}

/* --- creation --------------------------------------------------------------------------------- */

static struct mcq_peer *peer_new(struct mcq_shard *sh, const struct mcq_peer_cfg *cfg, void *owner)
{
    struct mcq_proto_shard *ps = mcq_proto_shard_get(sh);
    if (!ps)
        return NULL;
    if (!ps->peers_ready) {
        if (mcq_slab_init(&ps->peers, ps->arena, sizeof(struct mcq_peer)) < 0)
            return NULL;
        ps->peers_ready = true;
        ps->peers_stop = peers_stop;
    }
    struct mcq_peer *p = mcq_slab_alloc(&ps->peers);
    if (!p)
        return NULL;
    memset(p, 0, sizeof(*p));
    p->ps = ps;
    p->sh = sh;
    p->cfg = cfg;
    p->owner = owner;
    p->zcfg = cfg->zmtp;
    p->zcfg.allocator = (struct mcq_zmtp_allocator){peer_alloc, peer_release, p};
    mcq_timer_init(&p->timer, peer_timer, p);
    p->notify.run = peer_notify;
    p->resume_d.run = peer_resume_run;
    p->backoff_ms = cfg->reconnect_ivl_ms > 0 ? (uint32_t)cfg->reconnect_ivl_ms : 0;
    p->rng = ((uintptr_t)p ^ mcq_shard_now_ns(sh)) | 1;
    p->next = ps->live;
    if (ps->live)
        ps->live->prev = p;
    ps->live = p;
    return p;
}

int mcq_peer_accept(struct mcq_conn *c, const struct mcq_peer_cfg *cfg, void *owner,
                    struct mcq_peer **out)
{
    struct mcq_peer *p = peer_new(mcq_conn_shard(c), cfg, owner);
    if (!p) {
        mcq_conn_set_user(c, NULL);
        mcq_conn_close(c, MCQ_CLOSE_ABORT);
        return -ENOMEM;
    }
    p->conn = c;
    mcq_conn_set_user(c, p);
    int rc = session_start(p);
    if (rc < 0) {
        mcq_log_warn("peer %s: cannot start a session: %s", p->address, strerror(-rc));
        mcq_conn_set_user(c, NULL);
        mcq_conn_close(c, MCQ_CLOSE_ABORT);
        conn_state_reset(p);
        peer_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

int mcq_peer_connect(struct mcq_shard *sh, const char *endpoint, const struct mcq_peer_cfg *cfg,
                     void *owner, struct mcq_peer **out)
{
    struct mcq_endpoint ep;
    int rc = mcq_endpoint_parse(endpoint, &ep);
    if (rc < 0)
        return rc;
    struct mcq_peer *p = peer_new(sh, cfg, owner);
    if (!p)
        return -ENOMEM;
    size_t n = strlen(endpoint) + 1;
    p->endpoint = mcq_arena_alloc(p->ps->arena, n, 0);
    if (!p->endpoint) {
        peer_free(p);
        return -ENOMEM;
    }
    memcpy(p->endpoint, endpoint, n);
    rc = connect_now(p);
    if (rc < 0) {
        peer_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* --- sending and the rest --------------------------------------------------------------------- */

static inline bool peer_writable(const struct mcq_peer *p)
{
    return p->ready && p->conn && !p->conn_ending && !p->closing &&
           below(p->q_msgs, p->cfg->sndhwm) && below(p->q_bytes, p->cfg->sndhwm_bytes);
}

bool mcq_peer_writable(const struct mcq_peer *p)
{
    return peer_writable(p);
}

/* mcq_peer_send; over_hwm: the queue takes m past the high-water marks. */
static int peer_send(struct mcq_peer *p, struct mcq_msg *m, bool over_hwm)
{
    if (p->closing || (p->conn && p->conn_ending && !p->endpoint))
        return -ENOTCONN;
    if (over_hwm && (!p->ready || !p->conn || p->conn_ending))
        return -ENOTCONN;
    if (!over_hwm && !peer_writable(p)) {
        p->want_writable = true;
        return -EAGAIN;
    }
    if (!p->q_head) {
        int rc = push_msg(p, m);
        if (rc == 0) {
            mcq_msg_free(m);
            return 0;
        }
        if (rc != -EAGAIN)
            return rc == -ENOMEM ? -ENOMEM : -ENOTCONN;
    }
    /* Parked: keep only its own bytes alive (a failed copy just keeps the page pinned). */
    mcq_msg_unpin(m);
    m->next = NULL;
    if (p->q_tail)
        p->q_tail->next = m;
    else
        p->q_head = m;
    p->q_tail = m;
    p->q_msgs++;
    p->q_bytes += m->size;
    if (!below(p->q_msgs, p->cfg->sndhwm) || !below(p->q_bytes, p->cfg->sndhwm_bytes))
        p->want_writable = true;
    return 0;
}

int mcq_peer_send(struct mcq_peer *p, struct mcq_msg *m)
{
    return peer_send(p, m, false);
}

int mcq_peer_send_accepted(struct mcq_peer *p, struct mcq_msg *m)
{
    return peer_send(p, m, true);
}

int mcq_peer_send_subscription(struct mcq_peer *p, bool subscribe, const uint8_t *topic, size_t len)
{
    if (!p->ready || !p->conn || p->conn_ending)
        return -ENOTCONN;
    struct mcq_proto_shard *ps = p->ps;
    if (scratch_ensure(ps, MCQ_ZMTP_SUB_HEADER_MAX + len) < 0)
        return -ENOMEM;
    uint8_t *w = scratch_tail(ps);
    size_t hl = mcq_zmtp_session_subscription_header(&p->sess, w, subscribe, len);
    if (len)
        memcpy(w + hl, topic, len);
    return emit_ctl(p, hl + len);
}

void mcq_peer_close(struct mcq_peer *p, enum mcq_close_how how)
{
    mcq_peer_close_by(p, how == MCQ_CLOSE_FLUSH ? linger_deadline(p) : 0);
}

void mcq_peer_close_by(struct mcq_peer *p, uint64_t deadline_ns)
{
    if (p->in_closed) {
        p->closing = true;
        return;
    }
    if (p->lingering && deadline_ns)
        return;
    p->closing = true;
    if (p->conn) {
        if (deadline_ns && p->ready && !p->conn_ending) {
            flush_ctl(p);
            drain(p);
            if (p->q_head && !p->conn_ending) {
                /* The rest goes to the connection as it drains, before the deadline. */
                uint64_t now = mcq_shard_now_ns(p->sh);
                p->lingering = true;
                p->linger_until = deadline_ns;
                mcq_timer_start(p->sh, &p->timer, deadline_ns > now ? deadline_ns - now : 0, 0);
                return;
            }
        }
        end_conn(p, deadline_ns);
        return;
    }
    if (!p->closed_pending) {
        mcq_timer_stop(p->sh, &p->timer);
        p->closed_pending = true;
        mcq_shard_defer(p->sh, &p->notify);
    }
}

void mcq_peer_pause(struct mcq_peer *p)
{
    p->paused = true;
    mcq_shard_undefer(p->sh, &p->resume_d);
    if (p->conn && !p->conn_ending)
        mcq_conn_pause(p->conn);
}

void mcq_peer_resume(struct mcq_peer *p)
{
    if (!p->paused)
        return;
    p->paused = false;
    if (p->conn && !p->conn_ending)
        mcq_shard_defer(p->sh, &p->resume_d);
}

bool mcq_peer_reconnecting(const struct mcq_peer *p)
{
    return p->reconnect && !p->closing;
}

void *mcq_peer_owner(const struct mcq_peer *p)
{
    return p->owner;
}

struct mcq_shard *mcq_peer_shard(const struct mcq_peer *p)
{
    return p->sh;
}

bool mcq_peer_is_ready(const struct mcq_peer *p)
{
    return p->ready;
}

void mcq_peer_info(const struct mcq_peer *p, struct mcq_peer_info *out)
{
    size_t n;
    out->routing_id = mcq_zmtp_session_peer_identity(&p->sess, &n);
    out->routing_id_len = n;
    out->address = p->address;
    out->socket_type = mcq_zmtp_session_peer_socket_type(&p->sess);
    out->shard = mcq_shard_id(p->sh);
}

void *mcq_peer_get_data(const struct mcq_peer *p)
{
    return p->data;
}

void mcq_peer_set_data(struct mcq_peer *p, void *data)
{
    p->data = data;
}
