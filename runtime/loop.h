/* The shard loop's interface for runtime modules that own io_uring operations (connections,
 * listeners, wakeups). Not for users: the layers above see callbacks, not SQEs. Every
 * function here is for the shard's own thread only. */
#ifndef MCQ_RUNTIME_LOOP_H
#define MCQ_RUNTIME_LOOP_H

#include <liburing.h>
#include <stdbool.h>

#include "runtime/runtime.h"
#include "runtime/uring_compat.h"

/* An operation in flight: embed one per outstanding SQE (or one per multishot SQE) in the
 * object that owns it, and set it as the SQE's user data with mcq_op_prep(). The loop calls
 * complete() for every CQE of that SQE; the op is finished when the CQE lacks
 * IORING_CQE_F_MORE. The owner must not free the op before its final CQE: cancel and wait. */
struct mcq_op {
    void (*complete)(struct mcq_shard *sh, struct mcq_op *op, const struct io_uring_cqe *cqe);
};

/* A free SQE of the shard's ring, with op as its user data. Submits pending SQEs to make room
 * when the ring is full, so it only fails (NULL) if the kernel refuses the submit. The loop
 * submits once per turn; counts the op as in flight until its final CQE. */
struct io_uring_sqe *mcq_shard_sqe(struct mcq_shard *sh, struct mcq_op *op);

/* Submits now instead of at the end of the turn (for latency-critical sends). 0 or -errno. */
int mcq_shard_submit_now(struct mcq_shard *sh);

/* Work to run once at the end of this loop turn, before the loop submits and sleeps (e.g.
 * flushing a connection's output in one vectored send). Queuing an already queued item
 * does nothing. The item must stay alive until it runs or mcq_shard_undefer() removes it. */
struct mcq_deferred {
    void (*run)(struct mcq_shard *sh, struct mcq_deferred *d);
    struct mcq_deferred *_next;
    bool _queued;
};
/* mcq_shard_defer's slow half: queues d, which is not queued. Not for direct use. */
void mcq_shard_defer_queue(struct mcq_shard *sh, struct mcq_deferred *d);
/* Inline: hot senders defer their connection once per message and it is queued already. */
static inline void mcq_shard_defer(struct mcq_shard *sh, struct mcq_deferred *d)
{
    if (!d->_queued)
        mcq_shard_defer_queue(sh, d);
}
void mcq_shard_undefer(struct mcq_shard *sh, struct mcq_deferred *d);

/* A shard stops in two stages. Drain hooks run first, when the runtime begins stopping: a
 * module that ends gracefully over several turns (a socket flushing within its LINGER)
 * starts that there and keeps the shard with mcq_shard_stop_hold. Once no hold is left, the
 * stop hooks run: close listeners and connections, cancel their operations. The loop keeps
 * reaping until every op in flight has finished. Hooks run newest first. */
struct mcq_stop_hook {
    void (*run)(struct mcq_shard *sh, struct mcq_stop_hook *h);
    struct mcq_stop_hook *_next;
};
void mcq_shard_add_stop_hook(struct mcq_shard *sh, struct mcq_stop_hook *h);
void mcq_shard_remove_stop_hook(struct mcq_shard *sh, struct mcq_stop_hook *h);
void mcq_shard_add_drain_hook(struct mcq_shard *sh, struct mcq_stop_hook *h);
void mcq_shard_remove_drain_hook(struct mcq_shard *sh, struct mcq_stop_hook *h);

/* Keeps a stopping shard in its drain stage (looping, its connections open, its stop hooks
 * not yet run) until the matching release; taken and released any time, counted. Work that
 * holds must end by itself in bounded time, or the runtime's stop waits for it. */
void mcq_shard_stop_hold(struct mcq_shard *sh);
void mcq_shard_stop_release(struct mcq_shard *sh);

/* True once the runtime began stopping: modules refuse new connections. */
bool mcq_shard_stopping(const struct mcq_shard *sh);

/* Counters owned by modules (connections, bytes): add to the shard's stats. */
enum mcq_stat_field {
    MCQ_STAT_CONNECTIONS,
    MCQ_STAT_BYTES_IN,
    MCQ_STAT_BYTES_OUT,
};
void mcq_shard_stat_add(struct mcq_shard *sh, enum mcq_stat_field f, int64_t delta);

/* Module state hung on a shard: one slot per module kind, so the connection layer can keep
 * its per-shard buffer ring and tables without the loop knowing their types. */
enum mcq_shard_slot {
    MCQ_SLOT_CONN,
    MCQ_SLOT_PROTO, /* the layer above (patterns) */
    MCQ_SLOT_COUNT,
};
void *mcq_shard_slot(struct mcq_shard *sh, enum mcq_shard_slot slot);
void mcq_shard_set_slot(struct mcq_shard *sh, enum mcq_shard_slot slot, void *state);

/* The shard's io_uring ring, for helpers that need the raw ring (buffer ring registration,
 * probes). Do not submit or reap through it directly. */
struct io_uring *mcq_shard_ring(struct mcq_shard *sh);

#endif
