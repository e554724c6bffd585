/* The mesh: one SPSC ring per ordered pair of shards, entries published in batches at the end
 * of a loop turn, a per-shard doorbell bitmap so a consumer drains only rings that have work,
 * and a local parking queue per destination so a full ring never drops an entry. */
#include "runtime/shard_int.h"

#include <errno.h>
#include <stdlib.h>

#include "runtime/log.h"

#define DRAIN_BATCH 64 /* entries copied out of a ring at once */
#define QUEUE_MIN_CAP 16

void mcq_shard_ring_doorbell(struct mcq_shard *from, struct mcq_shard *to);

static inline void mask_set(uint64_t *mask, unsigned i)
{
    mask[i / 64] |= 1ull << (i % 64);
}

int mcq_mesh_queue_push(struct mcq_mesh_queue *q, mcq_task_fn fn, void *arg)
{
    if (q->len == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : QUEUE_MIN_CAP;
        struct mcq_spsc_entry *buf = malloc((size_t)cap * sizeof(*buf));
        if (!buf)
            return -ENOMEM;
        for (uint32_t i = 0; i < q->len; i++)
            buf[i] = q->buf[(q->head + i) % q->cap];
        free(q->buf);
        q->buf = buf;
        q->head = 0;
        q->cap = cap;
    }
    q->buf[(q->head + q->len) % q->cap] = (struct mcq_spsc_entry){.a = (void *)fn, .b = arg};
    q->len++;
    return 0;
}

static inline struct mcq_spsc_entry queue_pop(struct mcq_mesh_queue *q)
{
    struct mcq_spsc_entry e = q->buf[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return e;
}

static inline void run_entry(struct mcq_shard *sh, struct mcq_spsc_entry e)
{
    ((mcq_task_fn)e.a)(sh, e.b);
}

static int mesh_submit(struct mcq_shard *from, unsigned to, mcq_task_fn fn, void *arg, bool ctl)
{
    struct mcq_runtime *rt = from->rt;
    if (to >= rt->n || !fn)
        return -EINVAL;
    struct mcq_mesh_queue *q = &from->parked[to];
    if (to != from->id && q->len == 0) {
        struct mcq_spsc *r = mcq_mesh_ring(rt, from->id, to);
        struct mcq_spsc_entry e = {.a = (void *)fn, .b = arg};
        if (mcq_spsc_push(r, e)) {
            mask_set(from->unpublished, to);
            MCQ_STAT_ADD(from, mesh_out, 1);
            return 0;
        }
        /* Full, possibly of our own staged entries: let the consumer start on them. */
        mcq_spsc_publish(r);
        mcq_shard_ring_doorbell(from, rt->shards[to]);
    }
    if (!ctl && q->len >= rt->cfg.mesh_overflow_max) {
        MCQ_STAT_ADD(from, mesh_rejected, 1);
        return -EAGAIN;
    }
    int rc = mcq_mesh_queue_push(q, fn, arg);
    if (rc < 0)
        return rc;
    if (to != from->id) {
        mask_set(from->parked_mask, to);
        MCQ_STAT_ADD(from, mesh_overflow, 1);
    }
    return 0;
}

int mcq_shard_submit(struct mcq_shard *from, unsigned to, mcq_task_fn fn, void *arg)
{
    return mesh_submit(from, to, fn, arg, false);
}

int mcq_shard_submit_ctl(struct mcq_shard *from, unsigned to, mcq_task_fn fn, void *arg)
{
    return mesh_submit(from, to, fn, arg, true);
}

int mcq_shard_broadcast(struct mcq_shard *from, mcq_task_fn fn, void *arg, bool include_self)
{
    for (unsigned to = 0; to < from->rt->n; to++) {
        if (to == from->id && !include_self)
            continue;
        int rc = mesh_submit(from, to, fn, arg, true);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static unsigned drain_ring(struct mcq_shard *sh, struct mcq_spsc *r, unsigned budget)
{
    struct mcq_spsc_entry batch[DRAIN_BATCH];
    unsigned total = 0;
    while (total < budget) {
        unsigned want = budget - total < DRAIN_BATCH ? budget - total : DRAIN_BATCH;
        unsigned got = mcq_spsc_pop(r, batch, want);
        for (unsigned i = 0; i < got; i++)
            run_entry(sh, batch[i]);
        total += got;
        if (got < want)
            break;
    }
    return total;
}

int mcq_mesh_drain(struct mcq_shard *sh, unsigned budget)
{
    struct mcq_runtime *rt = sh->rt;
    unsigned total = 0;
    /* Local tasks queued before this turn; ones they queue wait for the next turn. */
    struct mcq_mesh_queue *local = &sh->parked[sh->id];
    for (uint32_t n = local->len; n > 0; n--, total++)
        run_entry(sh, queue_pop(local));

    unsigned in = 0;
    for (unsigned w = 0; w < MCQ_DOORBELL_WORDS; w++) {
        if (!atomic_load_explicit(&sh->doorbell[w], memory_order_relaxed))
            continue;
        uint64_t bits = atomic_exchange_explicit(&sh->doorbell[w], 0, memory_order_acquire);
        while (bits) {
            unsigned src = w * 64 + (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
            unsigned got = drain_ring(sh, mcq_mesh_ring(rt, src, sh->id), budget);
            in += got;
            if (got == budget) /* maybe more: come back next turn, after other sources */
                atomic_fetch_or_explicit(&sh->doorbell[w], 1ull << (src % 64),
                                         memory_order_relaxed);
        }
    }
    MCQ_STAT_ADD(sh, mesh_in, in);
    return (int)(total + in);
}

void mcq_mesh_flush(struct mcq_shard *sh)
{
    struct mcq_runtime *rt = sh->rt;
    for (unsigned w = 0; w < MCQ_DOORBELL_WORDS; w++) {
        uint64_t bits = sh->parked_mask[w];
        while (bits) {
            unsigned to = w * 64 + (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
            struct mcq_mesh_queue *q = &sh->parked[to];
            struct mcq_spsc *r = mcq_mesh_ring(rt, sh->id, to);
            unsigned moved = 0;
            while (q->len && mcq_spsc_push(r, q->buf[q->head])) {
                queue_pop(q);
                moved++;
            }
            if (moved) {
                MCQ_STAT_ADD(sh, mesh_out, moved);
                mask_set(sh->unpublished, to);
            }
            if (!q->len)
                sh->parked_mask[w] &= ~(1ull << (to % 64));
        }
    }
    for (unsigned w = 0; w < MCQ_DOORBELL_WORDS; w++) {
        uint64_t bits = sh->unpublished[w];
        sh->unpublished[w] = 0;
        while (bits) {
            unsigned to = w * 64 + (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
            mcq_spsc_publish(mcq_mesh_ring(rt, sh->id, to));
            mcq_shard_ring_doorbell(sh, rt->shards[to]);
        }
    }
}

bool mcq_mesh_pending(struct mcq_shard *sh)
{
    if (sh->parked[sh->id].len)
        return true;
    for (unsigned w = 0; w < MCQ_DOORBELL_WORDS; w++)
        if (sh->parked_mask[w])
            return true;
    return false;
}

void mcq_mesh_final_drain(struct mcq_runtime *rt)
{
    struct mcq_spsc_entry batch[DRAIN_BATCH];
    for (bool progress = true; progress;) {
        progress = false;
        for (unsigned dst = 0; dst < rt->n; dst++) {
            struct mcq_shard *sh = rt->shards[dst];
            mcq_shard_set_current(sh);
            for (unsigned src = 0; src < rt->n; src++) {
                struct mcq_shard *from = rt->shards[src];
                if (src != dst) {
                    struct mcq_spsc *r = mcq_mesh_ring(rt, src, dst);
                    mcq_spsc_publish(r);
                    unsigned got;
                    while ((got = mcq_spsc_pop(r, batch, DRAIN_BATCH)) > 0) {
                        for (unsigned i = 0; i < got; i++)
                            run_entry(sh, batch[i]);
                        progress = true;
                    }
                }
                /* Parked entries come after everything that reached the ring. */
                struct mcq_mesh_queue *q = &from->parked[dst];
                while (q->len) {
                    run_entry(sh, queue_pop(q));
                    progress = true;
                }
            }
        }
        mcq_shard_set_current(NULL);
    }
}
