/* Helpers shared by the session-level tests (vectors, interop) and the fuzz targets:
 * a malloc-backed reassembly allocator that counts outstanding buffers, and an event
 * record that owns a copy of the event's bytes. Header-only. */
#ifndef MCQ_TESTS_ZMTP_SESSION_UTIL_H
#define MCQ_TESTS_ZMTP_SESSION_UTIL_H

#include "zmtp/session.h"

#include <stdlib.h>
#include <string.h>

struct counting_alloc {
    long live; /* buffers handed out and not yet released */
};

static void *counting_alloc_fn(void *user, size_t size, void **handle)
{
    struct counting_alloc *a = user;
    void *p = malloc(size);
    if (p)
        a->live++;
    *handle = p;
    return p;
}

static void counting_release_fn(void *user, void *handle)
{
    struct counting_alloc *a = user;
    a->live--;
    free(handle);
}

static inline struct mcq_zmtp_allocator counting_allocator(struct counting_alloc *a)
{
    return (struct mcq_zmtp_allocator){
        .alloc = counting_alloc_fn, .release = counting_release_fn, .user = a};
}

/* One event with its bytes copied out (data of most events dies at the next call). */
struct event_rec {
    int type;
    uint8_t *data;
    size_t len;
    bool more;
    bool subscribe;
    uint16_t ttl_ds;
};

/* Copies the event; a FRAME's reassembled buffer (handle) is released at once. */
static inline void event_rec_take(struct event_rec *r, int type, const struct mcq_zmtp_event *ev,
                                  struct counting_alloc *a)
{
    memset(r, 0, sizeof(*r));
    r->type = type;
    if (type == MCQ_ZMTP_EV_FRAME || type == MCQ_ZMTP_EV_SUBSCRIPTION || type == MCQ_ZMTP_EV_PING ||
        type == MCQ_ZMTP_EV_PONG || type == MCQ_ZMTP_EV_READY) {
        r->len = ev->len;
        r->data = malloc(ev->len ? ev->len : 1);
        if (r->data && ev->len)
            memcpy(r->data, ev->data, ev->len);
    }
    r->more = type == MCQ_ZMTP_EV_FRAME && ev->more;
    r->subscribe = type == MCQ_ZMTP_EV_SUBSCRIPTION && ev->subscribe;
    r->ttl_ds = type == MCQ_ZMTP_EV_PING ? ev->ttl_ds : 0;
    if (type == MCQ_ZMTP_EV_FRAME && ev->handle)
        counting_release_fn(a, ev->handle);
}

static inline void event_rec_free(struct event_rec *r)
{
    free(r->data);
    r->data = NULL;
}

#endif
