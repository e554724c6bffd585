/* Per-shard memory arena: one jemalloc arena per shard, plus the counters and caches that
 * the slabs (alloc/slab.h) and message pages (alloc/page.h) built on it share.
 *
 * An arena has one owner thread: every call below is for the owner unless it says
 * otherwise. Memory goes back to jemalloc only through its owner, so jemalloc's arena lock
 * is never contended and pages stay on the owner's NUMA node. Other threads hand pages
 * back through the remote-free hook (see alloc/page.h for the reference scheme). */
#ifndef MCQ_ALLOC_ARENA_H
#define MCQ_ALLOC_ARENA_H

#include <stddef.h>
#include <stdint.h>

struct mcq_arena;
struct mcq_page;

/* Counters of one arena. Exact on the owner thread; another thread reads a recent,
 * possibly inconsistent snapshot (each field is read on its own). */
struct mcq_arena_stats {
    uint64_t bytes_in_use;         /* data capacity of the pages in pages_in_use */
    uint64_t pages_in_use;         /* pages not yet back with the owner (remote frees incl.) */
    uint64_t objects_in_use;       /* objects handed out by user slabs (mcq_slab_init) */
    uint64_t proxies_in_use;       /* local handles held on other arenas' pages */
    uint64_t pages_cached;         /* free pages kept for reuse */
    uint64_t remote_frees_pending; /* pages whose hook fired, not yet reclaimed */
    uint64_t remote_frees_total;   /* remote-free hook calls over the lifetime */
    uint64_t backend_allocs;       /* calls into jemalloc over the lifetime: flat in steady
                                      state, which proves the hot paths allocate nothing */
    uint64_t backend_frees;        /* blocks given back to jemalloc over the lifetime */
    uint64_t backend_bytes;        /* bytes currently held from jemalloc */
};

/* Called on the thread that dropped the last reference to `page` of arena `owner` when
 * that thread does not run `owner` (mcq_arena_current() != owner). It must get the page
 * to the owner thread, which then calls mcq_page_reclaim(owner, page). Must not block. */
typedef void (*mcq_remote_free_fn)(void *ctx, struct mcq_arena *owner, struct mcq_page *page);

/* Creates arena `id` (the shard index, reported back to hooks via mcq_arena_id) on a new
 * jemalloc arena, and returns it in *out. Call it on the thread that will own it, after that
 * thread is pinned: jemalloc maps memory lazily, so first touch, and with it NUMA placement,
 * happens on the owner. 0, -ENOMEM, or -EAGAIN when jemalloc has no arena index left. */
int mcq_arena_create(unsigned id, struct mcq_arena **out);

/* Owner thread. Frees every cached page and slab chunk, destroys the jemalloc arena and
 * `a`; clears the thread's current arena if it was `a`. Returns -EBUSY, freeing nothing,
 * while a page, proxy, user slab or remote free is still out (drain, then retry or log). */
int mcq_arena_destroy(struct mcq_arena *a);

/* The id given at creation. Any thread. */
unsigned mcq_arena_id(const struct mcq_arena *a);

/* Sets the arena the calling thread runs (the runtime calls it on each shard thread, NULL
 * elsewhere). Page releases use it to decide between freeing locally and the hook. */
void mcq_arena_set_current(struct mcq_arena *a);

/* The calling thread's arena, or NULL. Any thread. */
struct mcq_arena *mcq_arena_current(void);

/* Installs the hook for pages of `a` released on other threads. Call before any page of `a`
 * is exported (mcq_view_export fails with -ENOTSUP until then). 0 or -EINVAL (fn NULL). */
int mcq_arena_set_remote_free(struct mcq_arena *a, mcq_remote_free_fn fn, void *ctx);

/* Copies the counters into *out. Owner for exact values; any thread for a snapshot. */
void mcq_arena_stats(const struct mcq_arena *a, struct mcq_arena_stats *out);

/* Allocates `size` bytes from the arena's jemalloc arena (counted in backend_*), aligned to
 * `align` (a power of two, or 0 for 16). For per-shard tables that are not slab objects.
 * Returns NULL when out of memory or when size is 0 or align is invalid. */
void *mcq_arena_alloc(struct mcq_arena *a, size_t size, size_t align);

/* Gives back a block from mcq_arena_alloc of the same arena. NULL is ignored. */
void mcq_arena_free(struct mcq_arena *a, void *p);

#endif
