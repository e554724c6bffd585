/* Shard and runtime internals shared by the runtime/ sources. Not installed. */
#ifndef MCQ_RUNTIME_SHARD_INT_H
#define MCQ_RUNTIME_SHARD_INT_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "runtime/loop.h"
#include "runtime/runtime.h"
#include "runtime/spsc.h"
#include "runtime/timer.h"

#define MCQ_DOORBELL_WORDS (MCQ_MAX_SHARDS / 64)

/* Entries parked by a producer while the ring towards one destination is full (or, for the
 * destination == self, the shard's own local task queue). A growable FIFO. */
struct mcq_mesh_queue {
    struct mcq_spsc_entry *buf;
    uint32_t head, len, cap;
};

struct mcq_post {
    mcq_task_fn fn;
    void *arg;
    struct mcq_post *next;
};

/* Counters are written by the owner shard only, read by anyone: relaxed atomic stores of
 * plain sums (no locked instruction on the hot path). */
struct mcq_stats_atomic {
    _Atomic uint64_t v[sizeof(struct mcq_shard_stats) / sizeof(uint64_t)];
};
#define MCQ_STAT_IDX(field) (offsetof(struct mcq_shard_stats, field) / sizeof(uint64_t))
#define MCQ_STAT_ADD(sh, field, n)                                                                 \
    atomic_store_explicit(                                                                         \
        &(sh)->stats.v[MCQ_STAT_IDX(field)],                                                       \
        atomic_load_explicit(&(sh)->stats.v[MCQ_STAT_IDX(field)], memory_order_relaxed) + (n),     \
        memory_order_relaxed)

struct mcq_shard {
    /* Shard-private state. */
    struct mcq_runtime *rt;
    unsigned id;
    struct io_uring ring;
    int ring_fd;
    uint64_t now_ns;
    unsigned inflight;   /* ops whose final CQE has not arrived */
    bool stopping;       /* the runtime began stopping: drain hooks ran */
    bool stop_final;     /* no stop hold was left: stop hooks ran */
    unsigned stop_holds; /* mcq_shard_stop_hold minus releases */
    bool exited;         /* the thread left its loop; the final drain runs tasks on its behalf */
    struct mcq_deferred *deferred;
    struct mcq_stop_hook *stop_hooks, *drain_hooks;
    void *slots[MCQ_SLOT_COUNT];
    struct mcq_arena *arena;

    struct mcq_timer **heap;
    uint32_t heap_len, heap_cap;

    struct mcq_mesh_queue *parked;            /* [nshards], [id] is the local task queue */
    uint64_t unpublished[MCQ_DOORBELL_WORDS]; /* destinations with staged entries */
    uint64_t parked_mask[MCQ_DOORBELL_WORDS]; /* destinations with parked entries */

    struct mcq_op post_op; /* read of post_fd, re-armed */
    uint64_t post_buf;
    int post_fd;
    pthread_mutex_t post_lock;
    struct mcq_post *posts, **posts_tail;

    pthread_t thread;
    struct mcq_stats_atomic stats;

    /* Written by other shards. */
    _Alignas(128) _Atomic uint64_t doorbell[MCQ_DOORBELL_WORDS];
    _Alignas(128) _Atomic int sleeping;
    _Atomic int posts_pending;
};

struct mcq_runtime {
    struct mcq_config cfg;
    unsigned n;
    struct mcq_shard **shards;
    struct mcq_spsc **mesh; /* [src * n + dst] */
    struct mcq_topology *topo;
    int stop_fd; /* eventfd: mcq_runtime_stop() -> mcq_runtime_run() */
    int exit_fd; /* eventfd: one count per shard that left its loop -> mcq_runtime_run() */
    _Atomic int stop_requested;
    _Atomic int stop_forced; /* a second signal: skip the drain stage's holds */
    _Atomic unsigned ready, failed;
    int start_error;
    pthread_mutex_t start_lock;
    pthread_cond_t start_cond;
    bool joined;
    pthread_mutex_t cleanup_lock;
    struct mcq_runtime_cleanup *cleanups; /* newest first */
};

static inline struct mcq_spsc *mcq_mesh_ring(struct mcq_runtime *rt, unsigned src, unsigned dst)
{
    return rt->mesh[(size_t)src * rt->n + dst];
}

/* mesh.c */
int mcq_mesh_drain(struct mcq_shard *sh, unsigned budget);
void mcq_mesh_flush(struct mcq_shard *sh);
bool mcq_mesh_pending(struct mcq_shard *sh);
void mcq_mesh_final_drain(struct mcq_runtime *rt);
int mcq_mesh_queue_push(struct mcq_mesh_queue *q, mcq_task_fn fn, void *arg);

/* timer.c */
unsigned mcq_timers_run(struct mcq_shard *sh);
/* Earliest deadline, or UINT64_MAX. */
uint64_t mcq_timers_next(const struct mcq_shard *sh);

void mcq_shard_set_current(struct mcq_shard *sh);

#endif
