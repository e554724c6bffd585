/* The socket types' rules on top of the partition services of socket.c (libzmq semantics,
 * reference/zmtp.md section 8):
 * - DEALER, PUSH: round-robin over every peer of the socket with room, on any shard;
 *   -EAGAIN when none has room (never a silent drop). DEALER, PULL, PAIR deliver input
 *   as it comes (the peers' per-turn read budgets give fair queueing).
 * - REQ: per shard, strict alternation: a shard with a request out gets -EFSM until the
 *   reply came; the request gets an empty delimiter and goes round-robin; only the reply
 *   of the peer asked is delivered, on the shard that asked. A peer answers one request at
 *   a time socket-wide (its owner holds the next until the reply), so the owner always
 *   knows which shard a reply is for, whatever order a ROUTER peer answers in. If the asked
 *   peer goes away the shard may send a new request (libzmq would wait for ever);
 *   on_writable tells it so.
 *   REQ_CORRELATE puts a request id before the delimiter whose low bits name the asking
 *   shard: such requests do not make the peer busy (the owner routes a reply by its id), so
 *   a peer may hold requests of several shards at once, and the asking shard takes only the
 *   reply with the id and from the peer of its request out. REQ_RELAXED lets a send abandon
 *   the request out. An abandoned uncorrelated request still keeps its peer busy until it is
 *   answered (or the peer leaves), and its reply is told apart by order: the peer answers
 *   one at a time, so its next replies to this shard are the abandoned ones' and are
 *   dropped. So a late reply is never taken for a newer request's (libzmq may), but a peer
 *   that never answers an abandoned uncorrelated request takes no further uncorrelated
 *   request until it disconnects: Lazy Pirate against a silent peer needs REQ_CORRELATE.
 * - REP: per shard, the envelope (frames up to and including the first empty one) is kept
 *   and put back on the reply, which goes to the requester on this same shard; further
 *   requests on the shard are held until the reply was sent.
 * - ROUTER: input gets the peer's routing id as first frame; output routes on it (auto ids
 *   decode to the owner in O(1), chosen ids through the bound-id table); unroutable or
 *   full: dropped, or -EHOSTUNREACH / -EAGAIN with ROUTER_MANDATORY.
 * - PAIR: the one peer that won the claim at shard 0. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "patterns/socket_int.h"
#include "runtime/log.h"

bool mcq_type_uses_lb(int type)
{
    return type == MCQ_DEALER || type == MCQ_PUSH || type == MCQ_REQ;
}

bool mcq_type_routes_remote(int type)
{
    return type != MCQ_PULL && type != MCQ_REP;
}

static const uint8_t *frame_bytes(const struct mcq_view *f)
{
    static const uint8_t empty[1];
    return mcq_view_len(f) ? mcq_view_data(f) : empty;
}

static void deliver(struct mcq_part *pt, struct mcq_msg *m)
{
    struct mcq_socket *s = pt->s;
    if (s->h.on_msg)
        s->h.on_msg(pt->sh, s, m, s->h.user);
    else
        mcq_msg_free(m);
}

/* --- REQ ---------------------------------------------------------------------------------- */

#define REQ_ID_LEN 4u    /* bytes of a REQ_CORRELATE request id (host order, as libzmq) */
#define REQ_STALE_MIN 4u /* first allocation of the abandoned-request table, entries */

/* REQ_RELAXED without REQ_CORRELATE: makes sure one more abandoned request can be noted
 * before the new one goes out (so the note itself cannot fail afterwards). */
static int req_stale_room(struct mcq_part *pt)
{
    if (pt->req_stale_len < pt->req_stale_cap)
        return 0;
    uint32_t cap = pt->req_stale_cap ? pt->req_stale_cap * 2 : REQ_STALE_MIN;
    struct mcq_req_stale *v = realloc(pt->req_stale, cap * sizeof(*v));
    if (!v)
        return -ENOMEM;
    pt->req_stale = v;
    pt->req_stale_cap = cap;
    return 0;
}

static struct mcq_req_stale *req_stale_find(struct mcq_part *pt, const struct mcq_peer_ref *r)
{
    for (uint32_t i = 0; i < pt->req_stale_len; i++)
        if (mcq_peer_ref_eq(&pt->req_stale[i].ref, r))
            return &pt->req_stale[i];
    return NULL;
}

static void req_stale_add(struct mcq_part *pt, const struct mcq_peer_ref *r)
{
    struct mcq_req_stale *e = req_stale_find(pt, r);
    if (e)
        e->n++;
    else
        pt->req_stale[pt->req_stale_len++] = (struct mcq_req_stale){.ref = *r, .n = 1};
}

static void req_stale_remove(struct mcq_part *pt, struct mcq_req_stale *e)
{
    *e = pt->req_stale[--pt->req_stale_len];
}

/* Whether an uncorrelated reply from r answers a request this shard abandoned: r answers
 * its requests one at a time in the order they were handed to it, and every abandoned one
 * went before the current one, so the first replies from r are the abandoned ones'. */
static bool req_stale_take(struct mcq_part *pt, const struct mcq_peer_ref *r)
{
    struct mcq_req_stale *e = req_stale_find(pt, r);
    if (!e)
        return false;
    if (--e->n == 0)
        req_stale_remove(pt, e);
    return true;
}

/* A request id names its shard in the low bits (as an auto routing id does), so the
 * peer's owner routes a correlated reply by the id alone; the high bits count per shard. */
static uint32_t req_make_id(const struct mcq_part *pt)
{
    return (pt->req_seq << pt->s->shard_bits) | pt->id;
}

static int req_send(struct mcq_part *pt, struct mcq_msg *m)
{
    struct mcq_socket *s = pt->s;
    bool relaxed = atomic_load_explicit(&s->req_relaxed, memory_order_relaxed);
    bool correlate = atomic_load_explicit(&s->req_correlate, memory_order_relaxed);
    bool abandons_uncorrelated = pt->req_busy && !pt->req_correlated;
    if (pt->req_busy && !relaxed)
        return -EFSM;
    if (abandons_uncorrelated && req_stale_room(pt) < 0)
        return -ENOMEM;
    uint32_t id = req_make_id(pt);
    unsigned added = 0;
    int rc = mcq_msg_prepend(m, "", 0);
    if (rc == 0) {
        added++;
        if (correlate) {
            rc = mcq_msg_prepend(m, &id, sizeof(id));
            if (rc == 0)
                added++;
        }
    }
    /* A correlated request does not make the peer busy at its owner: its reply finds the
     * way back by its id, so the peer may hold requests of several shards at once. */
    struct mcq_peer_ref r;
    if (rc == 0)
        rc = mcq_part_lb_send(pt, m, !correlate, &r);
    if (rc < 0) {
        while (added--)
            mcq_msg_pop_front(m, NULL);
        return rc;
    }
    if (abandons_uncorrelated)
        req_stale_add(pt, &pt->req_to);
    pt->req_busy = true;
    pt->req_to = r;
    pt->req_correlated = correlate;
    pt->req_id = id;
    pt->req_seq++;
    return 0;
}

static void req_pass_reply(struct mcq_part *pt, unsigned to, const struct mcq_peer_ref *from,
                           struct mcq_msg *m)
{
    if (to == pt->id)
        mcq_route_req_reply(pt, from, m);
    else
        mcq_part_forward_reply(pt, to, from, m);
}

static void req_input(struct mcq_pstate *ps, struct mcq_msg *m)
{
    struct mcq_part *pt = ps->pt;
    unsigned n = mcq_msg_count(m);
    const struct mcq_view *f0 = mcq_msg_frame(m, 0);
    bool plain = f0 && mcq_view_len(f0) == 0 && n >= 2;
    bool tagged =
        f0 && mcq_view_len(f0) == REQ_ID_LEN && n >= 3 && mcq_view_len(mcq_msg_frame(m, 1)) == 0;
    if (!plain && !tagged) {
        /* libzmq's req_session takes [delimiter] or [4-byte id][delimiter] before the body
         * and drops the connection on anything else; a connecting REQ reconnects. */
        mcq_msg_free(m);
        mcq_peer_drop(ps->peer, "REQ: reply without an empty delimiter");
        return;
    }
    struct mcq_peer_ref from = mcq_pstate_ref(ps);
    if (tagged) {
        uint32_t id;
        memcpy(&id, mcq_view_data(f0), sizeof(id));
        unsigned to = id & ((1u << pt->s->shard_bits) - 1);
        if (to >= pt->s->n)
            mcq_msg_free(m);
        else
            req_pass_reply(pt, to, &from, m);
        return;
    }
    if (ps->req_from < 0) {
        mcq_msg_free(m);
        return;
    }
    unsigned to = (unsigned)ps->req_from;
    /* The peer is free before the reply is delivered: the asking shard may send its next
     * request from on_msg, and that request must stay the peer's current one. Requests
     * other shards queued for the peer go first, so a shard asking in a loop cannot
     * starve them. */
    mcq_pstate_req_done(ps);
    req_pass_reply(pt, to, &from, m);
    mcq_part_fire_writable(pt);
}

void mcq_route_req_reply(struct mcq_part *pt, const struct mcq_peer_ref *from, struct mcq_msg *m)
{
    const struct mcq_view *f0 = mcq_msg_frame(m, 0);
    bool tagged = mcq_view_len(f0) != 0; /* req_input let only the two envelopes through */
    if (!tagged && req_stale_take(pt, from)) {
        mcq_msg_free(m);
        return;
    }
    if (!pt->req_busy || !mcq_peer_ref_eq(&pt->req_to, from) || tagged != pt->req_correlated ||
        (tagged && memcmp(mcq_view_data(f0), &pt->req_id, REQ_ID_LEN) != 0)) {
        mcq_msg_free(m);
        return;
    }
    mcq_msg_pop_front(m, NULL);
    if (tagged)
        mcq_msg_pop_front(m, NULL);
    pt->req_busy = false;
    deliver(pt, m);
}

/* --- REP ---------------------------------------------------------------------------------- */

static void rep_deliver(struct mcq_part *pt, const struct mcq_peer_ref *from, struct mcq_msg *env,
                        struct mcq_msg *m)
{
    pt->rep_busy = true;
    pt->rep_from = *from;
    pt->rep_env = env;
    deliver(pt, m);
}

static void rep_input(struct mcq_pstate *ps, struct mcq_msg *m)
{
    struct mcq_part *pt = ps->pt;
    unsigned n = mcq_msg_count(m), i = 0;
    while (i < n && mcq_view_len(mcq_msg_frame(m, i)) != 0)
        i++;
    if (i + 1 >= n) {
        /* No delimiter, or nothing after it: libzmq's REP drops such a request. */
        mcq_msg_free(m);
        return;
    }
    struct mcq_msg *env = mcq_msg_new(pt->sh);
    for (unsigned k = 0; env && k <= i; k++) {
        struct mcq_view v;
        mcq_msg_pop_front(m, &v);
        if (mcq_msg_append_view(env, &v) < 0) {
            mcq_view_unref(&v);
            mcq_msg_free(env);
            env = NULL;
        }
    }
    if (!env) {
        mcq_log_error("REP: out of memory keeping an envelope; request dropped");
        mcq_msg_free(m);
        return;
    }
    struct mcq_peer_ref from = mcq_pstate_ref(ps);
    if (!pt->rep_busy && !pt->rep_hold.len) {
        rep_deliver(pt, &from, env, m);
        return;
    }
    struct mcq_held *h = malloc(sizeof(*h));
    if (!h) {
        mcq_log_error("REP: out of memory holding a request; dropped");
        mcq_msg_free(env);
        mcq_msg_free(m);
        return;
    }
    *h = (struct mcq_held){.m = m, .env = env, .ref = from};
    mcq_heldq_push(&pt->rep_hold, h);
    ps->rep_held++;
    mcq_pstate_rcv_check(ps);
}

void mcq_route_rep_next(struct mcq_shard *sh, struct mcq_deferred *d)
{
    (void)sh;
    struct mcq_part *pt = (struct mcq_part *)((char *)d - offsetof(struct mcq_part, rep_next));
    if (pt->closing || pt->rep_busy)
        return;
    struct mcq_held *h = mcq_heldq_pop(&pt->rep_hold);
    if (!h)
        return;
    struct mcq_pstate *ps = mcq_part_local(pt, &h->ref);
    if (ps) {
        ps->rep_held--;
        mcq_pstate_rcv_check(ps);
    }
    rep_deliver(pt, &h->ref, h->env, h->m);
    free(h);
    if (!pt->rep_busy && pt->rep_hold.len)
        mcq_shard_defer(pt->sh, &pt->rep_next);
}

static void pop_frames(struct mcq_msg *m, unsigned k)
{
    while (k--)
        mcq_msg_pop_front(m, NULL);
}

static int rep_send(struct mcq_part *pt, struct mcq_msg *m)
{
    if (!pt->rep_busy)
        return -EFSM;
    unsigned k = mcq_msg_count(pt->rep_env);
    for (unsigned j = k; j-- > 0;) {
        const struct mcq_view *f = mcq_msg_frame(pt->rep_env, j);
        int rc = mcq_msg_prepend(m, frame_bytes(f), mcq_view_len(f));
        if (rc < 0) {
            pop_frames(m, k - 1 - j);
            return rc;
        }
    }
    int rc = mcq_part_route(pt, &pt->rep_from, m, false);
    if (rc < 0 && rc != -EHOSTUNREACH) {
        pop_frames(m, k);
        if (rc == -EAGAIN)
            pt->want_writable = true;
        return rc;
    }
    if (rc == -EHOSTUNREACH) /* the requester left: its reply is dropped, as libzmq does */
        mcq_msg_free(m);
    pt->rep_busy = false;
    mcq_msg_free(pt->rep_env);
    pt->rep_env = NULL;
    if (pt->rep_hold.len)
        mcq_shard_defer(pt->sh, &pt->rep_next);
    return 0;
}

/* --- ROUTER, PAIR ------------------------------------------------------------------------- */

static int router_send(struct mcq_part *pt, struct mcq_msg *m)
{
    bool mandatory = atomic_load_explicit(&pt->s->mandatory, memory_order_relaxed);
    if (mcq_msg_count(m) < 2) {
        /* An id frame without a body is discarded by libzmq too (test_invalid_rep). */
        mcq_msg_free(m);
        return 0;
    }
    const struct mcq_view *f0 = mcq_msg_frame(m, 0);
    struct mcq_peer_ref r;
    if (!mcq_part_resolve(pt, frame_bytes(f0), mcq_view_len(f0), &r)) {
        if (mandatory)
            return -EHOSTUNREACH;
        mcq_msg_free(m);
        return 0;
    }
    struct mcq_view id;
    mcq_msg_pop_front(m, &id);
    int rc = mcq_part_route(pt, &r, m, false);
    if (rc == 0 || (!mandatory && (rc == -EAGAIN || rc == -EHOSTUNREACH))) {
        if (rc < 0)
            mcq_msg_free(m);
        mcq_view_unref(&id);
        return 0;
    }
    int prc = mcq_msg_prepend(m, frame_bytes(&id), mcq_view_len(&id));
    mcq_view_unref(&id);
    if (prc < 0)
        return prc;
    if (rc == -EAGAIN)
        pt->want_writable = true;
    return rc;
}

static int pair_send(struct mcq_part *pt, struct mcq_msg *m)
{
    struct mcq_peer_ref r;
    int rc = -EAGAIN;
    if (mcq_part_resolve(pt, (const uint8_t *)"", 0, &r))
        rc = mcq_part_route(pt, &r, m, false);
    if (rc == -EHOSTUNREACH)
        rc = -EAGAIN;
    if (rc == -EAGAIN)
        pt->want_writable = true;
    return rc;
}

int mcq_route_send(struct mcq_part *pt, struct mcq_msg *m)
{
    int type = pt->s->type;
    /* The streaming types first, by plain compares rather than the switch's jump table. */
    if (type == MCQ_PUSH || type == MCQ_DEALER)
        return mcq_part_lb_send(pt, m, false, NULL);
    switch (type) {
    case MCQ_REQ:
        return req_send(pt, m);
    case MCQ_REP:
        return rep_send(pt, m);
    case MCQ_ROUTER:
        return router_send(pt, m);
    case MCQ_PAIR:
        return pair_send(pt, m);
    default:
        return -ENOTSUP;
    }
}

void mcq_route_input(struct mcq_pstate *ps, struct mcq_msg *m)
{
    struct mcq_part *pt = ps->pt;
    switch (pt->s->type) {
    case MCQ_ROUTER:
        if (mcq_msg_prepend(m, ps->id, ps->id_len) < 0) {
            mcq_log_error("ROUTER: out of memory adding a routing id; message dropped");
            mcq_msg_free(m);
            return;
        }
        deliver(pt, m);
        return;
    case MCQ_REQ:
        req_input(ps, m);
        return;
    case MCQ_REP:
        rep_input(ps, m);
        return;
    case MCQ_PUSH:
        /* A PUSH has nothing to receive; its peers (PULL) never send data. */
        mcq_msg_free(m);
        return;
    default:
        deliver(pt, m);
        return;
    }
}

void mcq_route_peer_gone(struct mcq_part *pt, const struct mcq_peer_ref *r)
{
    if (pt->s->type != MCQ_REQ)
        return;
    struct mcq_req_stale *e = req_stale_find(pt, r);
    if (e)
        req_stale_remove(pt, e);
    if (pt->req_busy && mcq_peer_ref_eq(&pt->req_to, r)) {
        pt->req_busy = false;
        pt->want_writable = true;
        mcq_part_fire_writable(pt);
    }
}

void mcq_route_close(struct mcq_part *pt)
{
    mcq_shard_undefer(pt->sh, &pt->rep_next);
    mcq_heldq_free(&pt->rep_hold);
    mcq_msg_free(pt->rep_env);
    pt->rep_env = NULL;
    pt->rep_busy = false;
    pt->req_busy = false;
    free(pt->req_stale);
    pt->req_stale = NULL;
    pt->req_stale_len = pt->req_stale_cap = 0;
}
