#include "alloc/arena.h"
#include "alloc/arena_impl.h"

#include <errno.h>
#include <jemalloc/jemalloc.h>
#include <stdio.h>
#include <string.h>

/* Room for "arena.<u32>.destroy". */
#define MCQ_MALLCTL_NAME_MAX 48

static __thread struct mcq_arena *current_arena;

static int je_arena_destroy(unsigned index)
{
    char name[MCQ_MALLCTL_NAME_MAX];
    snprintf(name, sizeof(name), "arena.%u.destroy", index);
    int rc = mallctl(name, NULL, NULL, NULL, 0);
    return rc == 0 ? 0 : -rc;
}

int mcq_arena_create(unsigned id, struct mcq_arena **out)
{
    unsigned index;
    size_t len = sizeof(index);
    int rc = mallctl("arenas.create", &index, &len, NULL, 0);
    if (rc != 0)
        return -rc;

    /* The thread cache would keep freed blocks in a per-thread list that serves any
     * arena-less allocation of this thread: every block must go straight back to our arena. */
    int flags = MALLOCX_ARENA(index) | MALLOCX_TCACHE_NONE;
    struct mcq_arena *a = mallocx(sizeof(*a), flags | MALLOCX_ALIGN(alignof(struct mcq_arena)));
    if (!a) {
        je_arena_destroy(index);
        return -ENOMEM;
    }
    memset(a, 0, sizeof(*a));
    a->id = id;
    a->je_index = index;
    a->je_flags = flags;
    /* The arena's own block is held from jemalloc like any other. */
    mcq_stat_add(&a->backend_allocs, 1);
    mcq_stat_add(&a->backend_bytes, sallocx(a, 0));
    rc = mcq_page_arena_init(a);
    if (rc < 0) {
        dallocx(a, MALLOCX_TCACHE_NONE);
        je_arena_destroy(index);
        return rc;
    }
    *out = a;
    return 0;
}

int mcq_arena_destroy(struct mcq_arena *a)
{
    struct mcq_arena_stats st;
    mcq_arena_stats(a, &st);
    if (st.pages_in_use || st.proxies_in_use || st.remote_frees_pending || a->user_slabs)
        return -EBUSY;
    mcq_page_arena_fini(a);
    if (current_arena == a)
        current_arena = NULL;

    unsigned index = a->je_index;
    dallocx(a, MALLOCX_TCACHE_NONE);
    return je_arena_destroy(index);
}

unsigned mcq_arena_id(const struct mcq_arena *a)
{
    return a->id;
}

void mcq_arena_set_current(struct mcq_arena *a)
{
    current_arena = a;
}

struct mcq_arena *mcq_arena_current(void)
{
    return current_arena;
}

int mcq_arena_set_remote_free(struct mcq_arena *a, mcq_remote_free_fn fn, void *ctx)
{
    if (!fn)
        return -EINVAL;
    a->remote_free = fn;
    a->remote_free_ctx = ctx;
    return 0;
}

static uint64_t stat_read(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

void mcq_arena_stats(const struct mcq_arena *a, struct mcq_arena_stats *out)
{
    /* Reclaims trail hook calls, so read them first: a concurrent reader then sees at most
     * a few too many pending, never an underflow. */
    uint64_t reclaimed = stat_read(&a->remote_reclaimed);
    uint64_t total = stat_read(&a->remote_frees_total);
    *out = (struct mcq_arena_stats){
        .objects_in_use = stat_read(&a->objects_in_use),
        .proxies_in_use = stat_read(&a->proxies_in_use),
        .remote_frees_pending = total > reclaimed ? total - reclaimed : 0,
        .remote_frees_total = total,
        .backend_allocs = stat_read(&a->backend_allocs),
        .backend_frees = stat_read(&a->backend_frees),
        .backend_bytes = stat_read(&a->backend_bytes),
    };
    mcq_page_arena_stats(a, out);
}

void *mcq_arena_alloc(struct mcq_arena *a, size_t size, size_t align)
{
    /* mallocx(0) is undefined in jemalloc, and MALLOCX_ALIGN needs a power of two. */
    if (size == 0 || (align & (align - 1)) != 0)
        return NULL;
    int flags = a->je_flags | (align ? MALLOCX_ALIGN(align) : 0);
    void *p = mallocx(size, flags);
    if (!p)
        return NULL;
    mcq_stat_add(&a->backend_allocs, 1);
    mcq_stat_add(&a->backend_bytes, sallocx(p, 0));
    return p;
}

void mcq_arena_free(struct mcq_arena *a, void *p)
{
    if (!p)
        return;
    mcq_stat_add(&a->backend_frees, 1);
    mcq_stat_sub(&a->backend_bytes, sallocx(p, 0));
    dallocx(p, MALLOCX_TCACHE_NONE);
}
