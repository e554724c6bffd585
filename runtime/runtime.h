/* The sharded runtime: one pinned thread per shard, each with its own io_uring ring and
 * arena, talking to the others only through the SPSC mesh. Protocol-agnostic. */
#ifndef MCQ_RUNTIME_RUNTIME_H
#define MCQ_RUNTIME_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

struct mcq_runtime;
struct mcq_shard;
struct mcq_arena;

#define MCQ_MAX_SHARDS 256

struct mcq_config {
    unsigned shards;            /* 0: one shard per core the process may run on */
    unsigned spin_us;           /* busy-poll this long before sleeping; 0 sleeps at once */
    unsigned uring_entries;     /* submission queue entries per shard ring */
    unsigned mesh_capacity;     /* entries per SPSC ring between two shards (power of two) */
    unsigned mesh_overflow_max; /* entries a shard may park locally per full ring */
    bool pin;                   /* pin each shard thread (and its memory) to its core */
};

/* Defaults: one shard per allowed core, spin_us 0, pinning on. The environment overrides:
 * MCQ_SHARDS, MCQ_SPIN_US. */
struct mcq_config mcq_config_default(void);

/* Reads the topology (respecting the process's allowed cpuset), starts and pins the shards
 * and their loops. Returns 0 or -errno (-EINVAL for a bad config). Call from a non-shard
 * thread. */
int mcq_runtime_create(const struct mcq_config *cfg, struct mcq_runtime **out);

/* Blocks until SIGINT/SIGTERM arrives or mcq_runtime_stop() is called, then stops every
 * shard cleanly and returns 0: first the layers above end gracefully (sockets still open
 * flush within their LINGER, runtime/loop.h's drain stage), then every connection closes,
 * every SQE is reaped and every page goes back to its owner. A SIGINT/SIGTERM during the
 * graceful stage ends it at once (lingering sockets drop what they have not sent). Call
 * from the thread that created the runtime. */
int mcq_runtime_run(struct mcq_runtime *rt);

/* Asks the runtime to stop; returns at once. Any thread, shard callbacks included. */
void mcq_runtime_stop(struct mcq_runtime *rt);

/* Stops the shards as mcq_runtime_run does if still running (so it may block for the
 * sockets' LINGER) and frees everything. Non-shard thread. */
void mcq_runtime_destroy(struct mcq_runtime *rt);

/* True once the shards began stopping (mcq_runtime_run acting on mcq_runtime_stop or a
 * signal, or destroy): tasks posted from now on may never run. Any thread. */
bool mcq_runtime_stopping(const struct mcq_runtime *rt);

/* Teardown for objects of the layers above that span shards and may outlive the shards'
 * loops (sockets the user never closed): mcq_runtime_destroy runs every registered cleanup
 * once, newest first, after the shards stopped and drained and before any arena goes. */
struct mcq_runtime_cleanup {
    void (*run)(struct mcq_runtime_cleanup *c);
    struct mcq_runtime_cleanup *_next;
};
/* Registers / unregisters c (borrowed until it ran or was removed). Non-shard thread. */
void mcq_runtime_add_cleanup(struct mcq_runtime *rt, struct mcq_runtime_cleanup *c);
void mcq_runtime_remove_cleanup(struct mcq_runtime *rt, struct mcq_runtime_cleanup *c);

unsigned mcq_runtime_shard_count(const struct mcq_runtime *rt);

/* A task runs on one shard, never concurrently with that shard's other work. */
typedef void (*mcq_task_fn)(struct mcq_shard *sh, void *arg);

/* Runs fn(shard, arg) on shard `to` soon. For threads that are not shards (setup, tests,
 * signal-free control): takes a lock, so never call it on a hot path. 0 or -errno. */
int mcq_runtime_post(struct mcq_runtime *rt, unsigned to, mcq_task_fn fn, void *arg);

/* The shard the calling thread runs, or NULL on a non-shard thread. */
struct mcq_shard *mcq_shard_current(void);
unsigned mcq_shard_id(const struct mcq_shard *sh);
struct mcq_runtime *mcq_shard_runtime(const struct mcq_shard *sh);
/* Monotonic time in ns, read once per loop turn. */
uint64_t mcq_shard_now_ns(const struct mcq_shard *sh);

/* Cross-shard call from shard `from` (the caller's own shard) to shard `to` through the
 * mesh; to == own id runs it locally at the next turn. Returns 0, or -EAGAIN when the ring
 * towards `to` is full and the local overflow reached mesh_overflow_max (nothing queued). */
int mcq_shard_submit(struct mcq_shard *from, unsigned to, mcq_task_fn fn, void *arg);

/* Like mcq_shard_submit, for control events that must never be dropped: past the overflow
 * bound it keeps queueing (growing memory). 0 or -ENOMEM. */
int mcq_shard_submit_ctl(struct mcq_shard *from, unsigned to, mcq_task_fn fn, void *arg);

/* Control event to every shard (including `from` when include_self): fn(shard, arg) runs
 * once on each. The caller owns arg and must keep it alive until all have run. 0 or -ENOMEM. */
int mcq_shard_broadcast(struct mcq_shard *from, mcq_task_fn fn, void *arg, bool include_self);

/* Per-shard counters. Written by the shard; another thread reads a recent snapshot. */
struct mcq_shard_stats {
    uint64_t turns;          /* loop iterations */
    uint64_t cqes;           /* completions reaped */
    uint64_t sleeps;         /* times the loop blocked in io_uring_enter */
    uint64_t wakeups_sent;   /* doorbells rung on sleeping shards */
    uint64_t wakeups_recv;   /* doorbell completions received */
    uint64_t mesh_out;       /* entries sent to other shards */
    uint64_t mesh_in;        /* entries received from other shards */
    uint64_t mesh_overflow;  /* entries parked locally because a ring was full */
    uint64_t mesh_rejected;  /* submits refused with -EAGAIN */
    uint64_t ring_occupancy; /* entries waiting in this shard's incoming rings (sampled) */
    uint64_t timers_fired;
    uint64_t connections; /* open connections owned by the shard */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t mem_bytes;            /* arena: bytes in use (pages, slabs, tables) */
    uint64_t mem_pages;            /* arena: message pages in use */
    uint64_t remote_frees_pending; /* arena: pages released elsewhere, not yet home */
    uint64_t mem_backend_allocs;   /* arena: calls into jemalloc so far (flat in steady state) */
};

/* Snapshot of shard `id`'s counters. Any thread. 0 or -EINVAL. */
int mcq_runtime_stats(const struct mcq_runtime *rt, unsigned id, struct mcq_shard_stats *out);

/* The shard's arena (alloc/). Shard thread only. */
struct mcq_arena *mcq_shard_arena(struct mcq_shard *sh);

#endif
