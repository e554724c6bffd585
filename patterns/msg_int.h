/* Inside patterns/: the layout of a message, its queue link and the copy-out rule.
 *
 * Copy-out rule: frames received from the wire are zero-copy slices of 16 KiB read pages.
 * That is right while a message passes straight through (a callback that answers or
 * forwards at once), but a small frame kept for long would pin its whole read page. So a
 * message is unpinned (mcq_msg_unpin: every frame that mcq_view_pins_page says pins its
 * page is copied into a right-sized page) whenever it is parked: when it waits in a
 * peer's send queue because the connection cannot take it now (peer.c), when the socket
 * layer queues it (receive queues, REQ/ROUTER holding), and before its frames are exported
 * to another shard. Messages sent on at once are never copied. */
#ifndef MCQ_PATTERNS_MSG_INT_H
#define MCQ_PATTERNS_MSG_INT_H

#include <stdint.h>

#include "patterns/monocoque.h"
#include "patterns/proto_shard.h"

/* Frames kept inside the message itself; more go to an array from the shard's arena. */
#define MCQ_MSG_INLINE_FRAMES 4u

struct mcq_msg {
    struct mcq_msg *next; /* free for whoever queues the message (one queue at a time) */
    struct mcq_proto_shard *ps;
    struct mcq_view *f; /* inl, or an arena array of cap views */
    uint32_t n, cap;
    uint64_t size; /* body bytes over all frames */
    struct mcq_view inl[MCQ_MSG_INLINE_FRAMES];
};

/* Room for one more frame (the array doubles when full). 0 or -ENOMEM. */
int mcq_msg_grow(struct mcq_msg *m);

/* mcq_msg_append_view with the view passed by value; takes its reference on 0. For the
 * receive path, which builds the view in registers: handing it over through memory to the
 * out-of-line append cost a store and a reload per frame. 0 or -ENOMEM. */
static inline int mcq_msg_push_view(struct mcq_msg *m, struct mcq_view v)
{
    if (m->n == m->cap && mcq_msg_grow(m) < 0)
        return -ENOMEM;
    m->f[m->n++] = v;
    m->size += v.len;
    return 0;
}

/* mcq_msg_new for a caller that holds its shard's state already (the receive path).
 * Inline, so the caller's compiler sees the fresh message's room for frames. */
static inline struct mcq_msg *mcq_msg_new_on(struct mcq_proto_shard *ps)
{
    struct mcq_msg *m = mcq_slab_alloc(&ps->msgs);
    if (!m)
        return NULL;
    m->next = NULL;
    m->ps = ps;
    m->f = m->inl;
    m->n = 0;
    m->cap = MCQ_MSG_INLINE_FRAMES;
    m->size = 0;
    return m;
}

/* Copies out every frame that pins a mostly unrelated page (see above). 0 or -ENOMEM (the
 * frames copied so far stay copied; the message is intact either way). */
int mcq_msg_unpin(struct mcq_msg *m);

/* Appends an empty frame (a slice of the shard's shared empty page). 0 or -ENOMEM. */
int mcq_msg_append_empty(struct mcq_msg *m);

#endif
