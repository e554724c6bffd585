/* Fixed-size object slab on an arena, for a shard's hot objects (connections, timers, queue
 * entries): alloc and free are O(1) from a free list threaded through the free objects. The
 * slab grows by chunks taken from the arena and gives them back only at mcq_slab_fini, so a
 * shard in steady state never calls into jemalloc for these objects.
 *
 * Owner thread of the arena only. The struct is visible so it can be embedded; fields that
 * start with '_' are private. Under ASan, free objects are poisoned. */
#ifndef MCQ_ALLOC_SLAB_H
#define MCQ_ALLOC_SLAB_H

#include <sanitizer/asan_interface.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct mcq_arena;

/* Alignment of every object, in bytes (max_align_t on x86-64). */
#define MCQ_SLAB_ALIGN 16u
/* Largest object size a slab takes, in bytes; bigger blocks come from mcq_arena_alloc. */
#define MCQ_SLAB_OBJ_MAX (64u * 1024u)

struct mcq_slab {
    struct mcq_arena *_arena;
    _Atomic uint64_t *_counter; /* arena counter the objects in use add to */
    void *_free;                /* first free object; each starts with the next pointer */
    void *_chunks;              /* chunks taken from the arena, linked by their header */
    size_t _size;               /* object size the caller asked for */
    size_t _stride;             /* bytes between objects */
    size_t _per_chunk;          /* objects per chunk */
    size_t _in_use;
};

/* Prepares an empty slab of `obj_size`-byte objects on arena `a` (no memory is taken until
 * the first alloc). 0, or -EINVAL if obj_size is 0 or above MCQ_SLAB_OBJ_MAX. */
int mcq_slab_init(struct mcq_slab *s, struct mcq_arena *a, size_t obj_size);

/* Gives every chunk back to the arena and zeroes the slab (a zeroed slab is finished
 * already). -EBUSY, changing nothing, while objects are still allocated. */
int mcq_slab_fini(struct mcq_slab *s);

/* mcq_slab_alloc's refill from the arena when the free list is empty; not for direct use.
 * 0 or -ENOMEM. */
int mcq_slab_grow(struct mcq_slab *s);

/* Adds delta to the arena counter of objects in use; for the inline alloc and free below,
 * which run for every message (its slab object). Written like arena_impl.h's mcq_stat_add:
 * only the owner thread writes the counter, others may read it. */
static inline void mcq_slab_count(const struct mcq_slab *s, int64_t delta)
{
    atomic_store_explicit(s->_counter,
                          atomic_load_explicit(s->_counter, memory_order_relaxed) + (uint64_t)delta,
                          memory_order_relaxed);
}

/* Returns an uninitialised object aligned to MCQ_SLAB_ALIGN, or NULL when the arena is out
 * of memory. */
static inline void *mcq_slab_alloc(struct mcq_slab *s)
{
    if (!s->_free && mcq_slab_grow(s) < 0)
        return NULL;
    void *obj = s->_free;
    ASAN_UNPOISON_MEMORY_REGION(obj, s->_stride);
    s->_free = *(void **)obj;
    /* Only the caller's bytes are addressable: overruns into the stride padding trap. */
    ASAN_POISON_MEMORY_REGION((unsigned char *)obj + s->_size, s->_stride - s->_size);
    s->_in_use++;
    mcq_slab_count(s, 1);
    return obj;
}

/* Returns `obj` (from mcq_slab_alloc on the same slab) to the free list. NULL is ignored. */
static inline void mcq_slab_free(struct mcq_slab *s, void *obj)
{
    if (!obj)
        return;
    ASAN_UNPOISON_MEMORY_REGION(obj, s->_stride);
    *(void **)obj = s->_free;
    s->_free = obj;
    ASAN_POISON_MEMORY_REGION(obj, s->_stride);
    s->_in_use--;
    mcq_slab_count(s, -1);
}

/* Objects currently allocated from the slab. */
static inline size_t mcq_slab_in_use(const struct mcq_slab *s)
{
    return s->_in_use;
}

#endif
