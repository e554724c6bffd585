/* Internals shared by the alloc/ sources only: the arena's layout and the hooks between
 * arena.c, slab.c and page.c. Nothing outside alloc/ includes this. */
#ifndef MCQ_ALLOC_ARENA_IMPL_H
#define MCQ_ALLOC_ARENA_IMPL_H

#include "alloc/arena.h"
#include "alloc/slab.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>

/* Size classes of recycled pages (the table lives in page.c; the last is MCQ_PAGE_SIZE). */
#define MCQ_PAGE_CLASSES 5
/* Free pages of one class kept for reuse; past this they go back to jemalloc, so a burst
 * does not hold its peak memory for the life of the shard. */
#define MCQ_PAGE_CACHE_MAX_BYTES (32u << 20)
/* Keeps the counters that other threads write off the owner's lines. */
#define MCQ_CACHE_LINE 64

struct mcq_arena {
    unsigned id;
    unsigned je_index; /* jemalloc arena index */
    int je_flags;      /* mallocx flags selecting that arena, without the thread cache */

    /* Set once before pages are exported; read by other threads when they release. */
    mcq_remote_free_fn remote_free;
    void *remote_free_ctx;

    unsigned user_slabs;                           /* mcq_slab_init minus mcq_slab_fini */
    struct mcq_slab page_headers;                  /* struct mcq_page */
    struct mcq_slab proxies;                       /* struct mcq_proxy (page.c) */
    struct mcq_page *page_cache[MCQ_PAGE_CLASSES]; /* free pages, by class */

    /* Written by the owner only (see mcq_stat_add); other threads may read them. Per
     * recycled class: pages held from jemalloc (in use or cached), and of those the cached
     * ones. The in-use figures are their difference, so a page taken from or given back to
     * the cache, once per message on the hot paths, updates one counter. */
    _Atomic uint64_t class_pages[MCQ_PAGE_CLASSES], cached_pages[MCQ_PAGE_CLASSES];
    _Atomic uint64_t large_pages, large_bytes; /* exact-size pages in use (never cached) */
    _Atomic uint64_t objects_in_use, proxies_in_use;
    _Atomic uint64_t headers_in_use, remote_reclaimed;
    _Atomic uint64_t backend_allocs, backend_frees, backend_bytes;

    /* Written by the threads that fire the remote-free hook. */
    alignas(MCQ_CACHE_LINE) _Atomic uint64_t remote_frees_total;
};

/* Single-writer counter update: a relaxed load and store, not an atomic read-modify-write,
 * so the owner pays what a plain increment costs while other threads can still read the
 * counter without a data race. */
static inline void mcq_stat_add(_Atomic uint64_t *c, uint64_t delta)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + delta,
                          memory_order_relaxed);
}

static inline void mcq_stat_sub(_Atomic uint64_t *c, uint64_t delta)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) - delta,
                          memory_order_relaxed);
}

/* A slab whose objects count into `counter` instead of the arena's user objects, and that
 * does not count as a user slab for mcq_arena_destroy. Same contract as mcq_slab_init. */
int mcq_slab_init_internal(struct mcq_slab *s, struct mcq_arena *a, size_t obj_size,
                           _Atomic uint64_t *counter);
/* Frees the chunks of a slab made by mcq_slab_init_internal; -EBUSY if objects are out. */
int mcq_slab_fini_internal(struct mcq_slab *s);

/* Sets up the page header and proxy slabs of a new arena (page.c). 0 or -ENOMEM. */
int mcq_page_arena_init(struct mcq_arena *a);
/* Frees every cached page and the page slabs (page.c). Only when no page is in use. */
void mcq_page_arena_fini(struct mcq_arena *a);
/* Fills the page counters of *out (bytes_in_use, pages_in_use, pages_cached) (page.c).
 * Any thread; another thread's snapshot may be a few pages off, never negative. */
void mcq_page_arena_stats(const struct mcq_arena *a, struct mcq_arena_stats *out);

#endif
