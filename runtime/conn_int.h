/* Connection-layer internals shared by conn.c (connections and the per-shard state) and
 * listener.c. Not installed. Shard thread only, like the rest of the layer. */
#ifndef MCQ_RUNTIME_CONN_INT_H
#define MCQ_RUNTIME_CONN_INT_H

#include <stddef.h>

#include "alloc/slab.h"
#include "runtime/conn.h"
#include "runtime/loop.h"
#include "runtime/timer.h"

struct listen_part;

/* The object that embeds `member` at p (ops, timers and deferred items are embedded). */
#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

/* Per-shard state of the layer, in the shard's MCQ_SLOT_CONN: the provided buffer ring all
 * of the shard's connections receive into, the connection slab, and what the stop hook must
 * close. It outlives every operation it owns: it is freed when the shard stops and the
 * last one completed. */
struct conn_shard {
    struct mcq_shard *sh;
    struct mcq_arena *arena;
    struct mcq_slab conns_slab;
    struct io_uring_buf_ring *br;
    struct mcq_view *bufs; /* [bid]: the page behind each ring buffer, empty once consumed */
    uint16_t *refill;      /* consumed bids, given fresh pages at the end of the turn */
    unsigned nrefill;
    struct mcq_conn *conns; /* every connection of the shard, for the stop hook */
    struct mcq_conn *rearm; /* connections whose receive waits for the refill */
    struct listen_part *parts;
    struct mcq_deferred turn;
    struct mcq_timer retry; /* refill retry after an allocation failure */
    struct mcq_stop_hook stop;
    unsigned ops; /* operations in flight, of connections and listeners */
    bool stopping;
};

/* The shard's state, created on first use; NULL once the shard is stopping (or if the
 * kernel lacks provided buffer rings), and then nothing new may start. */
struct conn_shard *mcq_conn_shard_get(struct mcq_shard *sh);

/* Book-keeping of operations owned by the layer on this shard. op_done may free the state
 * when the shard stops: call mcq_conn_shard_settle() last in every entry point. */
void mcq_conn_shard_op_start(struct conn_shard *m);
void mcq_conn_shard_op_done(struct conn_shard *m);
void mcq_conn_shard_settle(struct conn_shard *m);

/* Wraps an accepted fd in a connection on shard m: tunes it, calls on_open, receives. Takes
 * fd (closed on failure). */
void mcq_conn_adopt(struct conn_shard *m, int fd, enum mcq_transport t,
                    const struct mcq_conn_cfg *cfg);

/* listener.c: closes the listener parts of shard m (its stop hook). */
void mcq_listener_shard_stop(struct conn_shard *m);

#endif
