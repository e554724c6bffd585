/* Bounded single-producer/single-consumer ring of 16-byte entries, the building block of
 * the cross-shard mesh. Exactly one thread pushes and publishes, exactly one (other)
 * thread pops; the two may differ from the creating thread.
 *
 * Pushes are staged and become visible to the consumer all at once in mcq_spsc_publish()
 * (one release store per batch); the consumer takes a batch into its own array and frees
 * the slots with one release store. Each side keeps a private copy of the other side's
 * index and reads the shared one only when the copy says "full" or "empty", so a batch
 * costs about one cache-line transfer each way. */
#ifndef MCQ_RUNTIME_SPSC_H
#define MCQ_RUNTIME_SPSC_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* Two cache lines: the adjacent-line prefetcher moves lines in pairs, so fields written by
 * different threads must be 128 bytes apart or they still false-share. */
#define MCQ_SPSC_ALIGN 128
/* Largest capacity accepted by mcq_spsc_create, in entries (256 MiB of slots). */
#define MCQ_SPSC_MAX_CAPACITY (1u << 24)

/* One ring entry; the mesh stores {fn, arg}. Plain data, copied in and out. */
struct mcq_spsc_entry {
    void *a;
    void *b;
};

/* Visible only so the hot functions can be inline; touch no field directly. Indices are
 * free-running 64-bit counters (slot = index & mask) and never wrap in practice. */
struct mcq_spsc {
    /* Producer-private: written on every push, never read by the consumer. */
    alignas(MCQ_SPSC_ALIGN) size_t _p_write; /* next slot to fill (staged end) */
    size_t _p_published;                     /* last value stored to _tail */
    size_t _p_head_cache;                    /* consumer's _head as last seen */
    size_t _p_mask;                          /* capacity - 1 */
    struct mcq_spsc_entry *_p_slots;
    /* Shared: published end, stored by the producer once per batch. */
    alignas(MCQ_SPSC_ALIGN) _Atomic size_t _tail;
    /* Shared: consumed end, stored by the consumer once per batch. */
    alignas(MCQ_SPSC_ALIGN) _Atomic size_t _head;
    /* Consumer-private. */
    alignas(MCQ_SPSC_ALIGN) size_t _c_read; /* next slot to take */
    size_t _c_tail_cache;                   /* producer's _tail as last seen */
    size_t _c_mask;
    struct mcq_spsc_entry *_c_slots;
};

/* Creates an empty ring of `capacity` entries (a power of two, 1..MCQ_SPSC_MAX_CAPACITY)
 * into *out. The memory is first touched here, so call it on the consumer's thread to put
 * the ring on the consumer's NUMA node. Returns 0, -EINVAL or -ENOMEM. */
int mcq_spsc_create(unsigned capacity, struct mcq_spsc **out);

/* Frees the ring; entries still inside are dropped (they are plain data). NULL is a no-op.
 * Call only when neither side can touch the ring any more. */
void mcq_spsc_destroy(struct mcq_spsc *r);

/* Published entries not yet consumed, as seen at some recent moment. Any thread; for stats
 * only (the two indices are read separately, so the value may be momentarily stale). */
static inline unsigned mcq_spsc_size_approx(const struct mcq_spsc *r)
{
    size_t tail = atomic_load_explicit(&((struct mcq_spsc *)r)->_tail, memory_order_relaxed);
    size_t head = atomic_load_explicit(&((struct mcq_spsc *)r)->_head, memory_order_relaxed);
    return tail > head ? (unsigned)(tail - head) : 0;
}

/* Number of entries the ring holds. Any thread. */
static inline unsigned mcq_spsc_capacity(const struct mcq_spsc *r)
{
    return (unsigned)(r->_p_mask + 1);
}

/* Producer: stages one entry; false when the ring is full (staged entries count). The
 * entry stays invisible to the consumer until mcq_spsc_publish(). */
static inline bool mcq_spsc_push(struct mcq_spsc *r, struct mcq_spsc_entry e)
{
    size_t w = r->_p_write;
    if (w - r->_p_head_cache > r->_p_mask) {
        r->_p_head_cache = atomic_load_explicit(&r->_head, memory_order_acquire);
        if (w - r->_p_head_cache > r->_p_mask)
            return false;
    }
    r->_p_slots[w & r->_p_mask] = e;
    r->_p_write = w + 1;
    return true;
}

/* Producer: makes every staged entry visible to the consumer with one release store. Cheap
 * when nothing is staged (no shared write), so it can run once per loop turn. */
static inline void mcq_spsc_publish(struct mcq_spsc *r)
{
    if (r->_p_write == r->_p_published)
        return;
    r->_p_published = r->_p_write;
    atomic_store_explicit(&r->_tail, r->_p_write, memory_order_release);
}

/* Producer: entries staged since the last publish. */
static inline unsigned mcq_spsc_staged(const struct mcq_spsc *r)
{
    return (unsigned)(r->_p_write - r->_p_published);
}

/* Consumer: copies up to `max` published entries, oldest first, into out[] and frees their
 * slots with one release store. Returns how many were taken (0 when empty). */
static inline unsigned mcq_spsc_pop(struct mcq_spsc *r, struct mcq_spsc_entry *out, unsigned max)
{
    size_t rd = r->_c_read;
    size_t avail = r->_c_tail_cache - rd;
    if (avail < max) {
        r->_c_tail_cache = atomic_load_explicit(&r->_tail, memory_order_acquire);
        avail = r->_c_tail_cache - rd;
    }
    unsigned n = avail < max ? (unsigned)avail : max;
    if (n == 0)
        return 0;
    for (unsigned i = 0; i < n; i++)
        out[i] = r->_c_slots[(rd + i) & r->_c_mask];
    r->_c_read = rd + n;
    atomic_store_explicit(&r->_head, rd + n, memory_order_release);
    return n;
}

/* Consumer: true when no published entry is waiting. */
static inline bool mcq_spsc_empty(struct mcq_spsc *r)
{
    if (r->_c_tail_cache != r->_c_read)
        return false;
    r->_c_tail_cache = atomic_load_explicit(&r->_tail, memory_order_acquire);
    return r->_c_tail_cache == r->_c_read;
}

#endif
