#include "alloc/slab.h"
#include "alloc/arena.h"
#include "alloc/arena_impl.h"

#include <errno.h>
#include <sanitizer/asan_interface.h>
#include <string.h>

/* Target bytes per chunk: one growth step fills about this much. */
#define SLAB_CHUNK_BYTES (64u * 1024u)
/* Fewest objects per chunk, so slabs of big objects do not grow one object at a time. */
#define SLAB_MIN_PER_CHUNK 4u
/* Chunk header: the link to the next chunk, padded so objects stay MCQ_SLAB_ALIGN-aligned. */
#define SLAB_CHUNK_HEADER MCQ_SLAB_ALIGN

_Static_assert(sizeof(void *) <= SLAB_CHUNK_HEADER, "chunk header holds a pointer");

static size_t chunk_bytes(const struct mcq_slab *s)
{
    return SLAB_CHUNK_HEADER + s->_per_chunk * s->_stride;
}

int mcq_slab_init_internal(struct mcq_slab *s, struct mcq_arena *a, size_t obj_size,
                           _Atomic uint64_t *counter)
{
    if (obj_size == 0 || obj_size > MCQ_SLAB_OBJ_MAX)
        return -EINVAL;
    /* A free object holds the free-list link, so it is at least a pointer wide. */
    size_t stride = obj_size < sizeof(void *) ? sizeof(void *) : obj_size;
    stride = (stride + MCQ_SLAB_ALIGN - 1) & ~(size_t)(MCQ_SLAB_ALIGN - 1);
    size_t per_chunk = (SLAB_CHUNK_BYTES - SLAB_CHUNK_HEADER) / stride;
    *s = (struct mcq_slab){
        ._arena = a,
        ._counter = counter,
        ._size = obj_size,
        ._stride = stride,
        ._per_chunk = per_chunk < SLAB_MIN_PER_CHUNK ? SLAB_MIN_PER_CHUNK : per_chunk,
    };
    return 0;
}

int mcq_slab_fini_internal(struct mcq_slab *s)
{
    if (s->_in_use)
        return -EBUSY;
    size_t bytes = chunk_bytes(s);
    for (void *c = s->_chunks; c;) {
        /* jemalloc reuses this memory for callers that expect it addressable. */
        ASAN_UNPOISON_MEMORY_REGION(c, bytes);
        void *next = *(void **)c;
        mcq_arena_free(s->_arena, c);
        c = next;
    }
    memset(s, 0, sizeof(*s));
    return 0;
}

int mcq_slab_init(struct mcq_slab *s, struct mcq_arena *a, size_t obj_size)
{
    int rc = mcq_slab_init_internal(s, a, obj_size, &a->objects_in_use);
    if (rc == 0)
        a->user_slabs++;
    return rc;
}

int mcq_slab_fini(struct mcq_slab *s)
{
    struct mcq_arena *a = s->_arena;
    if (!a)
        return 0;
    int rc = mcq_slab_fini_internal(s);
    if (rc == 0)
        a->user_slabs--;
    return rc;
}

/* Takes one chunk from the arena and threads its objects onto the free list in address
 * order, so consecutive allocations are adjacent in memory. */
int mcq_slab_grow(struct mcq_slab *s)
{
    unsigned char *chunk = mcq_arena_alloc(s->_arena, chunk_bytes(s), MCQ_SLAB_ALIGN);
    if (!chunk)
        return -ENOMEM;
    *(void **)chunk = s->_chunks;
    s->_chunks = chunk;
    unsigned char *first = chunk + SLAB_CHUNK_HEADER;
    for (size_t i = s->_per_chunk; i-- > 0;) {
        void *obj = first + i * s->_stride;
        *(void **)obj = s->_free;
        s->_free = obj;
    }
    ASAN_POISON_MEMORY_REGION(first, s->_per_chunk * s->_stride);
    return 0;
}
