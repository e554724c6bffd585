/* Messages an app could not send yet, held on their shard until the socket has room.
 *
 * The apps never drop a message because of backpressure: when mcq_send returns -EAGAIN the
 * message waits here and is retried on on_writable / on_peer_up. Order is kept: a new message
 * goes behind the held ones. For ROUTER sockets ("routed": frame 0 names the peer) order is
 * kept per peer and a slow peer does not hold back the others. The bound is the only place a
 * message is dropped: past MCQ_HELD_MAX messages per shard the newest is dropped and logged,
 * so a peer that never reads cannot grow an app without limit.
 *
 * A queue belongs to one shard: every call runs on that shard. */
#ifndef MCQ_APPS_HELD_H
#define MCQ_APPS_HELD_H

#include <stdbool.h>
#include <stdint.h>

#include "patterns/monocoque.h"

/* Messages one queue may hold before it drops (per socket and shard). */
#define MCQ_HELD_MAX 65536u

enum mcq_held_flags {
    MCQ_HELD_ROUTED = 1,    /* frame 0 is a ROUTER routing id: keep order per peer */
    MCQ_HELD_WAIT_PEER = 2, /* hold on -EHOSTUNREACH too (the peer may still connect) */
};

/* A peer (routing id) with held messages, so a routed send checks the few peers that wait
 * rather than every held message. */
struct mcq_held_route;

struct mcq_held {
    struct mcq_socket *sock;
    unsigned flags;
    struct mcq_msg **msgs;
    unsigned n, cap;
    struct mcq_held_route *routes; /* MCQ_HELD_ROUTED: peers with held messages */
    unsigned nroutes, routes_cap;
    uint64_t dropped;
};

/* A zeroed queue for sock. Never fails; memory comes with the first held message. */
void mcq_held_init(struct mcq_held *q, struct mcq_socket *sock, unsigned flags);

/* Sends m now when nothing ahead of it is held, else holds it. Takes m in every case.
 * Returns 1 (sent), 0 (held) or a negative errno when m was dropped: -ENOBUFS (the bound),
 * -EHOSTUNREACH (unknown peer, without MCQ_HELD_WAIT_PEER), or what mcq_send refused with. */
int mcq_held_send(struct mcq_held *q, struct mcq_shard *sh, struct mcq_msg *m);

/* Retries the held messages in order; returns how many were sent (dropped ones excluded). */
unsigned mcq_held_drain(struct mcq_held *q, struct mcq_shard *sh);

/* Messages held now. */
static inline unsigned mcq_held_count(const struct mcq_held *q)
{
    return q->n;
}

/* Frees every held message and the queue's memory. */
void mcq_held_clear(struct mcq_held *q);

#endif
