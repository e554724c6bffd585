/* MCQ_TSAN_TEST: uses only Test, cr_assert* and cr_skip_test, so it also runs under TSan. */
#include <criterion/criterion.h>

#include "alloc/arena.h"
#include "alloc/page.h"
#include "alloc/slab.h"

#include <errno.h>
#include <jemalloc/jemalloc.h>
#include <pthread.h>
#include <stdint.h>

/* Create/destroy cycles in the arena-recycling test; enough that a leaked jemalloc arena
 * index per cycle would show. */
#define RECYCLE_ROUNDS 64

static struct mcq_arena *arena_new(unsigned id)
{
    struct mcq_arena *a = NULL;
    cr_assert_eq(mcq_arena_create(id, &a), 0);
    cr_assert_not_null(a);
    return a;
}

static unsigned je_arena_of(const void *p)
{
    unsigned index = UINT32_MAX;
    size_t len = sizeof(index);
    cr_assert_eq(mallctl("arenas.lookup", &index, &len, &p, sizeof(p)), 0);
    return index;
}

Test(arena, fresh_arena_holds_only_itself)
{
    struct mcq_arena *a = arena_new(3);
    cr_assert_eq(mcq_arena_id(a), 3);
    struct mcq_arena_stats st;
    mcq_arena_stats(a, &st);
    cr_assert_eq(st.pages_in_use, 0);
    cr_assert_eq(st.bytes_in_use, 0);
    cr_assert_eq(st.objects_in_use, 0);
    cr_assert_eq(st.proxies_in_use, 0);
    cr_assert_eq(st.remote_frees_pending, 0);
    cr_assert_eq(st.backend_allocs, 1, "only the arena's own block");
    cr_assert_gt(st.backend_bytes, 0);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

Test(arena, each_arena_allocates_from_its_own_jemalloc_arena)
{
    struct mcq_arena *a = arena_new(0), *b = arena_new(1);
    void *pa = mcq_arena_alloc(a, 100, 0), *pb = mcq_arena_alloc(b, 100, 0);
    void *pd = mallocx(100, 0);
    cr_assert(pa && pb && pd);
    cr_assert_neq(je_arena_of(pa), je_arena_of(pb));
    cr_assert_neq(je_arena_of(pa), je_arena_of(pd), "not the default arena");
    cr_assert_neq(je_arena_of(pb), je_arena_of(pd));
    dallocx(pd, 0);
    mcq_arena_free(a, pa);
    mcq_arena_free(b, pb);
    cr_assert_eq(mcq_arena_destroy(a), 0);
    cr_assert_eq(mcq_arena_destroy(b), 0);
}

Test(arena, destroy_gives_the_jemalloc_arena_back)
{
    unsigned before, after;
    size_t len = sizeof(before);
    cr_assert_eq(mallctl("arenas.narenas", &before, &len, NULL, 0), 0);
    for (int i = 0; i < RECYCLE_ROUNDS; i++) {
        struct mcq_arena *a = arena_new(i);
        struct mcq_view v;
        cr_assert_eq(mcq_page_alloc(a, MCQ_PAGE_SIZE, &v), 0);
        mcq_view_unref(&v);
        cr_assert_eq(mcq_arena_destroy(a), 0);
    }
    cr_assert_eq(mallctl("arenas.narenas", &after, &len, NULL, 0), 0);
    cr_assert_leq(after, before + 1, "destroyed arena indexes are reused");
}

Test(arena, alloc_counts_backend_calls_and_checks_arguments)
{
    struct mcq_arena *a = arena_new(0);
    struct mcq_arena_stats s0, s1, s2;
    mcq_arena_stats(a, &s0);
    void *p = mcq_arena_alloc(a, 1000, 0);
    void *q = mcq_arena_alloc(a, 100, 4096);
    cr_assert(p && q);
    /* (The TSan stand-in pastes conditions into a format string, so no '%' in them.) */
    uintptr_t misalign = (uintptr_t)q & 4095;
    cr_assert_eq(misalign, 0);
    mcq_arena_stats(a, &s1);
    cr_assert_eq(s1.backend_allocs, s0.backend_allocs + 2);
    cr_assert_geq(s1.backend_bytes, s0.backend_bytes + 1100);
    cr_assert_null(mcq_arena_alloc(a, 0, 0));
    cr_assert_null(mcq_arena_alloc(a, 16, 24), "alignment must be a power of two");
    mcq_arena_free(a, p);
    mcq_arena_free(a, q);
    mcq_arena_free(a, NULL);
    mcq_arena_stats(a, &s2);
    cr_assert_eq(s2.backend_frees, s0.backend_frees + 2);
    cr_assert_eq(s2.backend_bytes, s0.backend_bytes);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

static void *read_current(void *arg)
{
    struct mcq_arena **seen = arg;
    seen[0] = mcq_arena_current();
    mcq_arena_set_current(seen[1]);
    seen[2] = mcq_arena_current();
    return NULL;
}

Test(arena, current_arena_is_per_thread)
{
    struct mcq_arena *a = arena_new(0), *b = arena_new(1);
    mcq_arena_set_current(a);
    struct mcq_arena *seen[3] = {a, b, NULL};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, read_current, seen), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_null(seen[0], "a new thread has no arena");
    cr_assert_eq(seen[2], b);
    cr_assert_eq(mcq_arena_current(), a, "the other thread's choice does not leak here");
    cr_assert_eq(mcq_arena_destroy(b), 0);
    cr_assert_eq(mcq_arena_destroy(a), 0);
    cr_assert_null(mcq_arena_current(), "destroying the current arena clears it");
}

Test(arena, destroy_is_refused_while_a_page_is_out)
{
    struct mcq_arena *a = arena_new(0);
    struct mcq_view v;
    cr_assert_eq(mcq_page_alloc(a, 10, &v), 0);
    cr_assert_eq(mcq_arena_destroy(a), -EBUSY);
    mcq_view_unref(&v);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

Test(arena, destroy_is_refused_while_a_user_slab_lives)
{
    struct mcq_arena *a = arena_new(0);
    struct mcq_slab s;
    cr_assert_eq(mcq_slab_init(&s, a, 32), 0);
    void *obj = mcq_slab_alloc(&s);
    cr_assert_not_null(obj);
    mcq_slab_free(&s, obj);
    cr_assert_eq(mcq_arena_destroy(a), -EBUSY);
    cr_assert_eq(mcq_slab_fini(&s), 0);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

struct parked {
    struct mcq_arena *owner;
    struct mcq_page *page;
    int calls;
};

static void park_page(void *ctx, struct mcq_arena *owner, struct mcq_page *page)
{
    struct parked *p = ctx;
    p->owner = owner;
    p->page = page;
    p->calls++;
}

Test(arena, destroy_is_refused_while_a_remote_free_is_pending)
{
    struct mcq_arena *a = arena_new(5);
    struct parked parked = {0};
    cr_assert_eq(mcq_arena_set_remote_free(a, NULL, NULL), -EINVAL);
    cr_assert_eq(mcq_arena_set_remote_free(a, park_page, &parked), 0);
    struct mcq_view v;
    struct mcq_export x;
    cr_assert_eq(mcq_page_alloc(a, 100, &v), 0);
    cr_assert_eq(mcq_view_export(&v, &x), 0);
    mcq_view_unref(&v);
    /* This thread does not run `a`, so the last release goes through the hook. */
    mcq_arena_set_current(NULL);
    mcq_export_drop(&x);
    cr_assert_eq(parked.calls, 1);
    cr_assert_eq(parked.owner, a);
    struct mcq_arena_stats st;
    mcq_arena_stats(a, &st);
    cr_assert_eq(st.remote_frees_pending, 1);
    cr_assert_eq(st.remote_frees_total, 1);
    cr_assert_eq(st.pages_in_use, 1, "a page is in use until its owner has it back");
    cr_assert_eq(mcq_arena_destroy(a), -EBUSY);
    cr_assert_eq(mcq_page_reclaim(a, parked.page), 0);
    mcq_arena_stats(a, &st);
    cr_assert_eq(st.remote_frees_pending, 0);
    cr_assert_eq(st.pages_in_use, 0);
    cr_assert_eq(st.pages_cached, 1);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}
