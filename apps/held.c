#include "apps/held.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/log.h"

/* Peers a drain pass remembers as full before it gives up on the rest of the pass. */
#define HELD_BLOCKED_MAX 16
#define HELD_INITIAL_CAP 64

void mcq_held_init(struct mcq_held *q, struct mcq_socket *sock, unsigned flags)
{
    *q = (struct mcq_held){.sock = sock, .flags = flags};
}

static bool same_route(const struct mcq_msg *a, const struct mcq_msg *b)
{
    const struct mcq_view *x = mcq_msg_frame(a, 0), *y = mcq_msg_frame(b, 0);
    if (!x || !y)
        return !x && !y;
    uint32_t len = mcq_view_len(x);
    return len == mcq_view_len(y) &&
           (len == 0 || memcmp(mcq_view_data(x), mcq_view_data(y), len) == 0);
}

/* Whether a message for m's peer is already held (so m must queue behind it). */
static bool route_held(const struct mcq_held *q, const struct mcq_msg *m)
{
    for (unsigned i = 0; i < q->n; i++)
        if (same_route(q->msgs[i], m))
            return true;
    return false;
}

static bool must_wait(const struct mcq_held *q, int rc)
{
    return rc == -EAGAIN || (rc == -EHOSTUNREACH && (q->flags & MCQ_HELD_WAIT_PEER));
}

static int drop(struct mcq_held *q, struct mcq_msg *m, int rc)
{
    mcq_msg_free(m);
    if (rc == -EHOSTUNREACH) {
        /* The peer left before its reply: nothing to deliver to. */
        mcq_log_debug("app: message for a peer that is gone dropped");
        return rc;
    }
    /* Log the first drop and then every power of two, so a flood stays readable. */
    q->dropped++;
    if ((q->dropped & (q->dropped - 1)) == 0)
        mcq_log_warn("app: %llu message(s) dropped: %s", (unsigned long long)q->dropped,
                     rc == -ENOBUFS ? "held-message bound reached" : strerror(-rc));
    return rc;
}

static int hold(struct mcq_held *q, struct mcq_msg *m)
{
    if (q->n == MCQ_HELD_MAX)
        return drop(q, m, -ENOBUFS);
    if (q->n == q->cap) {
        unsigned cap = q->cap ? q->cap * 2 : HELD_INITIAL_CAP;
        struct mcq_msg **p = realloc(q->msgs, cap * sizeof(*p));
        if (!p)
            return drop(q, m, -ENOMEM);
        q->msgs = p;
        q->cap = cap;
    }
    q->msgs[q->n++] = m;
    return 0;
}

int mcq_held_send(struct mcq_held *q, struct mcq_shard *sh, struct mcq_msg *m)
{
    bool behind = (q->flags & MCQ_HELD_ROUTED) ? route_held(q, m) : q->n > 0;
    if (behind)
        return hold(q, m);
    int rc = mcq_send(sh, q->sock, m);
    if (rc == 0)
        return 1;
    if (must_wait(q, rc))
        return hold(q, m);
    return drop(q, m, rc);
}

unsigned mcq_held_drain(struct mcq_held *q, struct mcq_shard *sh)
{
    const struct mcq_msg *blocked[HELD_BLOCKED_MAX];
    unsigned nblocked = 0, keep = 0, sent = 0;
    bool stop = false;
    bool routed = q->flags & MCQ_HELD_ROUTED;
    for (unsigned i = 0; i < q->n; i++) {
        struct mcq_msg *m = q->msgs[i];
        bool skip = stop;
        for (unsigned b = 0; !skip && b < nblocked; b++)
            skip = same_route(blocked[b], m);
        if (skip) {
            q->msgs[keep++] = m;
            continue;
        }
        int rc = mcq_send(sh, q->sock, m);
        if (rc == 0) {
            sent++;
        } else if (must_wait(q, rc)) {
            q->msgs[keep++] = m;
            /* Unrouted: the socket as a whole is full. Routed: only this peer is. */
            if (!routed || nblocked == HELD_BLOCKED_MAX)
                stop = true;
            else
                blocked[nblocked++] = m;
        } else {
            drop(q, m, rc);
        }
    }
    q->n = keep;
    return sent;
}

void mcq_held_clear(struct mcq_held *q)
{
    for (unsigned i = 0; i < q->n; i++)
        mcq_msg_free(q->msgs[i]);
    free(q->msgs);
    q->msgs = NULL;
    q->n = q->cap = 0;
}
