/* Fixed-size object slab on an arena, for a shard's hot objects (connections, timers, queue
 * entries): alloc and free are O(1) from a free list threaded through the free objects. The
 * slab grows by chunks taken from the arena and gives them back only at mcq_slab_fini, so a
 * shard in steady state never calls into jemalloc for these objects.
 *
 * Owner thread of the arena only. The struct is visible so it can be embedded; fields that
 * start with '_' are private. Under ASan, free objects are poisoned. */
#ifndef MCQ_ALLOC_SLAB_H
#define MCQ_ALLOC_SLAB_H

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

/* Returns an uninitialised object aligned to MCQ_SLAB_ALIGN, or NULL when the arena is out
 * of memory. */
void *mcq_slab_alloc(struct mcq_slab *s);

/* Returns `obj` (from mcq_slab_alloc on the same slab) to the free list. NULL is ignored. */
void mcq_slab_free(struct mcq_slab *s, void *obj);

/* Objects currently allocated from the slab. */
static inline size_t mcq_slab_in_use(const struct mcq_slab *s)
{
    return s->_in_use;
}

#endif
