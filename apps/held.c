#include "apps/held.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/log.h"

/* Peers a drain pass remembers as full before it gives up on the rest of the pass. */
#define HELD_BLOCKED_MAX 16
#define HELD_INITIAL_CAP 64
/* Longest routing id ZMTP can carry, in bytes. */
#define HELD_ID_MAX 255

struct mcq_held_route {
    uint8_t id[HELD_ID_MAX];
    uint8_t len;
    unsigned count; /* held messages for this peer */
};

void mcq_held_init(struct mcq_held *q, struct mcq_socket *sock, unsigned flags)
{
    *q = (struct mcq_held){.sock = sock, .flags = flags};
}

static bool routed(const struct mcq_held *q)
{
    return q->flags & MCQ_HELD_ROUTED;
}

/* The routing id of m (frame 0), or NULL when it has none a ROUTER could route by. */
static const struct mcq_view *route_of(const struct mcq_msg *m)
{
    const struct mcq_view *v = mcq_msg_frame(m, 0);
    return v && mcq_view_len(v) > 0 && mcq_view_len(v) <= HELD_ID_MAX ? v : NULL;
}

static bool same_id(const struct mcq_view *a, const uint8_t *id, size_t len)
{
    return mcq_view_len(a) == len && memcmp(mcq_view_data(a), id, len) == 0;
}

static struct mcq_held_route *route_find(const struct mcq_held *q, const struct mcq_view *id)
{
    for (unsigned i = 0; id && i < q->nroutes; i++)
        if (same_id(id, q->routes[i].id, q->routes[i].len))
            return &q->routes[i];
    return NULL;
}

/* Counts one more held message for m's peer. 0 or -ENOMEM. */
static int route_add(struct mcq_held *q, const struct mcq_msg *m)
{
    const struct mcq_view *id = route_of(m);
    if (!id)
        return 0;
    struct mcq_held_route *r = route_find(q, id);
    if (!r) {
        if (q->nroutes == q->routes_cap) {
            unsigned cap = q->routes_cap ? q->routes_cap * 2 : HELD_BLOCKED_MAX;
            struct mcq_held_route *p = realloc(q->routes, cap * sizeof(*p));
            if (!p)
                return -ENOMEM;
            q->routes = p;
            q->routes_cap = cap;
        }
        r = &q->routes[q->nroutes++];
        r->len = (uint8_t)mcq_view_len(id);
        memcpy(r->id, mcq_view_data(id), r->len);
        r->count = 0;
    }
    r->count++;
    return 0;
}

/* A held message for m's peer left the queue. */
static void route_release(struct mcq_held *q, const struct mcq_msg *m)
{
    struct mcq_held_route *r = route_find(q, route_of(m));
    if (r && --r->count == 0)
        *r = q->routes[--q->nroutes];
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
    if (routed(q) && route_add(q, m) < 0)
        return drop(q, m, -ENOMEM);
    q->msgs[q->n++] = m;
    return 0;
}

int mcq_held_send(struct mcq_held *q, struct mcq_shard *sh, struct mcq_msg *m)
{
    bool behind = routed(q) ? route_find(q, route_of(m)) != NULL : q->n > 0;
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
    const struct mcq_view *blocked[HELD_BLOCKED_MAX];
    unsigned nblocked = 0, keep = 0, sent = 0;
    bool stop = false;
    for (unsigned i = 0; i < q->n; i++) {
        struct mcq_msg *m = q->msgs[i];
        const struct mcq_view *id = routed(q) ? route_of(m) : NULL;
        bool skip = stop;
        for (unsigned b = 0; !skip && id && b < nblocked; b++)
            skip = same_id(id, mcq_view_data(blocked[b]), mcq_view_len(blocked[b]));
        if (skip) {
            q->msgs[keep++] = m;
            continue;
        }
        if (routed(q))
            route_release(q, m);
        int rc = mcq_send(sh, q->sock, m);
        if (rc == 0) {
            sent++;
        } else if (must_wait(q, rc)) {
            /* Back in the queue, same place. Cannot fail: its peer's entry was just freed. */
            if (routed(q))
                route_add(q, m);
            q->msgs[keep++] = m;
            /* Unrouted: the socket as a whole is full. Routed: only this peer is. */
            if (!id || nblocked == HELD_BLOCKED_MAX)
                stop = true;
            else
                blocked[nblocked++] = id;
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
    free(q->routes);
    q->msgs = NULL;
    q->routes = NULL;
    q->n = q->cap = q->nroutes = q->routes_cap = 0;
}
