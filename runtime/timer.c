/* Per-shard timer heap. The loop passes the earliest deadline as the timeout of its one
 * blocking io_uring_enter, so timers cost no SQE and no syscall of their own. */
#include "runtime/shard_int.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#define TIMERS_PER_TURN 1024 /* bound so a storm of expiries cannot starve I/O */
#define HEAP_MIN_CAP 64

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void heap_set(struct mcq_shard *sh, uint32_t i, struct mcq_timer *t)
{
    sh->heap[i] = t;
    t->_heap_index = i + 1;
}

static void sift_up(struct mcq_shard *sh, uint32_t i)
{
    struct mcq_timer *t = sh->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (sh->heap[parent]->deadline_ns <= t->deadline_ns)
            break;
        heap_set(sh, i, sh->heap[parent]);
        i = parent;
    }
    heap_set(sh, i, t);
}

static void sift_down(struct mcq_shard *sh, uint32_t i)
{
    struct mcq_timer *t = sh->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= sh->heap_len)
            break;
        if (c + 1 < sh->heap_len && sh->heap[c + 1]->deadline_ns < sh->heap[c]->deadline_ns)
            c++;
        if (t->deadline_ns <= sh->heap[c]->deadline_ns)
            break;
        heap_set(sh, i, sh->heap[c]);
        i = c;
    }
    heap_set(sh, i, t);
}

static void heap_remove(struct mcq_shard *sh, struct mcq_timer *t)
{
    uint32_t i = t->_heap_index - 1;
    t->_heap_index = 0;
    struct mcq_timer *last = sh->heap[--sh->heap_len];
    if (i == sh->heap_len)
        return;
    heap_set(sh, i, last);
    sift_down(sh, i);
    sift_up(sh, last->_heap_index - 1);
}

static int heap_insert(struct mcq_shard *sh, struct mcq_timer *t)
{
    if (sh->heap_len == sh->heap_cap) {
        uint32_t cap = sh->heap_cap ? sh->heap_cap * 2 : HEAP_MIN_CAP;
        struct mcq_timer **heap = realloc(sh->heap, (size_t)cap * sizeof(*heap));
        if (!heap)
            return -ENOMEM;
        sh->heap = heap;
        sh->heap_cap = cap;
    }
    heap_set(sh, sh->heap_len++, t);
    sift_up(sh, sh->heap_len - 1);
    return 0;
}

int mcq_timer_start(struct mcq_shard *sh, struct mcq_timer *t, uint64_t after_ns,
                    uint64_t period_ns)
{
    if (mcq_timer_armed(t))
        heap_remove(sh, t);
    t->deadline_ns = now_ns() + after_ns;
    t->period_ns = period_ns;
    return heap_insert(sh, t);
}

void mcq_timer_stop(struct mcq_shard *sh, struct mcq_timer *t)
{
    if (mcq_timer_armed(t))
        heap_remove(sh, t);
}

unsigned mcq_timers_run(struct mcq_shard *sh)
{
    unsigned fired = 0;
    uint64_t now = sh->now_ns;
    while (sh->heap_len && sh->heap[0]->deadline_ns <= now && fired < TIMERS_PER_TURN) {
        struct mcq_timer *t = sh->heap[0];
        heap_remove(sh, t);
        if (t->period_ns) {
            /* Periodic timers skip missed periods rather than firing in a burst. */
            t->deadline_ns += t->period_ns;
            if (t->deadline_ns <= now)
                t->deadline_ns = now + t->period_ns;
            heap_insert(sh, t); /* cannot fail: the slot it left is free */
        }
        t->fn(sh, t);
        fired++;
    }
    MCQ_STAT_ADD(sh, timers_fired, fired);
    return fired;
}

uint64_t mcq_timers_next(const struct mcq_shard *sh)
{
    return sh->heap_len ? sh->heap[0]->deadline_ns : UINT64_MAX;
}
