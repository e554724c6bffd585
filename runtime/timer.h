/* Shard timers: one-shot and periodic, intrusive (no allocation per timer), kept in a
 * per-shard binary heap. The loop sleeps until the earliest deadline with one kernel
 * timeout per turn, so a timer per connection is cheap. Shard thread only. */
#ifndef MCQ_RUNTIME_TIMER_H
#define MCQ_RUNTIME_TIMER_H

#include <stdbool.h>
#include <stdint.h>

/* Timers and the shard clock count nanoseconds; options and configs count milliseconds. */
#define MCQ_NS_PER_MS 1000000ull

struct mcq_shard;
struct mcq_timer;

typedef void (*mcq_timer_fn)(struct mcq_shard *sh, struct mcq_timer *t);

struct mcq_timer {
    mcq_timer_fn fn;
    void *arg;            /* free for the owner */
    uint64_t deadline_ns; /* monotonic; valid while armed */
    uint64_t period_ns;   /* 0: one-shot */
    uint32_t _heap_index; /* 0: not armed; else position + 1 */
};

/* Zero-initialising a timer and setting fn is equivalent. */
static inline void mcq_timer_init(struct mcq_timer *t, mcq_timer_fn fn, void *arg)
{
    t->fn = fn;
    t->arg = arg;
    t->deadline_ns = 0;
    t->period_ns = 0;
    t->_heap_index = 0;
}

static inline bool mcq_timer_armed(const struct mcq_timer *t)
{
    return t->_heap_index != 0;
}

/* Arms (or re-arms) t to fire after_ns from the shard's current time, then every period_ns
 * if non-zero. Fires are never early; they run in deadline order. 0 or -ENOMEM. */
int mcq_timer_start(struct mcq_shard *sh, struct mcq_timer *t, uint64_t after_ns,
                    uint64_t period_ns);

/* Disarms t if armed. Safe from inside t's own callback (stops a periodic timer). */
void mcq_timer_stop(struct mcq_shard *sh, struct mcq_timer *t);

#endif
