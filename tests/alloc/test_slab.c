#include <criterion/criterion.h>

#include "alloc/arena.h"
#include "alloc/slab.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "asan_util.h"

#define MANY_OBJECTS 100000
#define STEADY_ROUNDS 1000000
/* Objects the steady-state loop keeps live at its peak. */
#define STEADY_WINDOW 256

static struct mcq_arena *arena;

static void setup(void)
{
    cr_assert_eq(mcq_arena_create(0, &arena), 0);
}

static void teardown(void)
{
    cr_assert_eq(mcq_arena_destroy(arena), 0);
}

static struct mcq_arena_stats stats(void)
{
    struct mcq_arena_stats st;
    mcq_arena_stats(arena, &st);
    return st;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return (x > y) - (x < y);
}

Test(slab, init_rejects_bad_sizes, .init = setup, .fini = teardown)
{
    struct mcq_slab s;
    cr_assert_eq(mcq_slab_init(&s, arena, 0), -EINVAL);
    cr_assert_eq(mcq_slab_init(&s, arena, MCQ_SLAB_OBJ_MAX + 1), -EINVAL);
    cr_assert_eq(mcq_slab_init(&s, arena, MCQ_SLAB_OBJ_MAX), 0);
    uint8_t *big = mcq_slab_alloc(&s);
    cr_assert_not_null(big);
    memset(big, 0xab, MCQ_SLAB_OBJ_MAX);
    mcq_slab_free(&s, big);
    cr_assert_eq(mcq_slab_fini(&s), 0);
}

Test(slab, objects_are_aligned_disjoint_and_keep_their_bytes, .init = setup, .fini = teardown)
{
    enum { N = 1000, SIZE = 24 };
    struct mcq_slab s;
    cr_assert_eq(mcq_slab_init(&s, arena, SIZE), 0);
    uint8_t *objs[N];
    for (int i = 0; i < N; i++) {
        objs[i] = mcq_slab_alloc(&s);
        cr_assert_not_null(objs[i]);
        cr_assert_eq((uintptr_t)objs[i] % MCQ_SLAB_ALIGN, 0);
        memset(objs[i], i & 0xff, SIZE);
    }
    for (int i = 0; i < N; i++)
        for (int b = 0; b < SIZE; b++)
            cr_assert_eq(objs[i][b], i & 0xff, "object %d byte %d overwritten", i, b);
    uintptr_t sorted[N];
    memcpy(sorted, objs, sizeof(sorted));
    qsort(sorted, N, sizeof(sorted[0]), cmp_ptr);
    for (int i = 1; i < N; i++)
        cr_assert_geq(sorted[i] - sorted[i - 1], SIZE, "objects overlap");
    for (int i = 0; i < N; i++)
        mcq_slab_free(&s, objs[i]);
    cr_assert_eq(mcq_slab_fini(&s), 0);
}

Test(slab, a_freed_object_is_the_next_one_handed_out, .init = setup, .fini = teardown)
{
    struct mcq_slab s;
    cr_assert_eq(mcq_slab_init(&s, arena, 48), 0);
    void *a = mcq_slab_alloc(&s), *b = mcq_slab_alloc(&s);
    cr_assert(a && b && a != b);
    mcq_slab_free(&s, a);
    cr_assert_eq(mcq_slab_alloc(&s), a);
    mcq_slab_free(&s, b);
    mcq_slab_free(&s, a);
    mcq_slab_free(&s, NULL);
    cr_assert_eq(mcq_slab_alloc(&s), a);
    cr_assert_eq(mcq_slab_alloc(&s), b);
    mcq_slab_free(&s, a);
    mcq_slab_free(&s, b);
    cr_assert_eq(mcq_slab_fini(&s), 0);
}

Test(slab, many_objects_grow_by_chunks_and_are_counted, .init = setup, .fini = teardown)
{
    struct mcq_slab s;
    cr_assert_eq(mcq_slab_init(&s, arena, 64), 0);
    void **objs = calloc(MANY_OBJECTS, sizeof(*objs));
    cr_assert_not_null(objs);
    struct mcq_arena_stats s0 = stats();
    for (int i = 0; i < MANY_OBJECTS; i++) {
        objs[i] = mcq_slab_alloc(&s);
        cr_assert_not_null(objs[i]);
        *(int *)objs[i] = i;
    }
    struct mcq_arena_stats s1 = stats();
    cr_assert_eq(s1.objects_in_use, MANY_OBJECTS);
    cr_assert_eq(mcq_slab_in_use(&s), MANY_OBJECTS);
    uint64_t chunks = s1.backend_allocs - s0.backend_allocs;
    cr_assert_gt(chunks, 0);
    cr_assert_lt(chunks, MANY_OBJECTS / 100, "grows by chunks, not per object");
    cr_assert_geq(s1.backend_bytes - s0.backend_bytes, (uint64_t)MANY_OBJECTS * 64);

    for (int i = 1; i < MANY_OBJECTS; i += 2)
        mcq_slab_free(&s, objs[i]);
    cr_assert_eq(stats().objects_in_use, MANY_OBJECTS / 2);
    for (int i = 1; i < MANY_OBJECTS; i += 2)
        objs[i] = mcq_slab_alloc(&s);
    cr_assert_eq(stats().backend_allocs, s1.backend_allocs, "freed objects are reused");
    for (int i = 0; i < MANY_OBJECTS; i += 2)
        cr_assert_eq(*(int *)objs[i], i, "a live object was handed out twice");

    cr_assert_eq(mcq_slab_fini(&s), -EBUSY);
    for (int i = 0; i < MANY_OBJECTS; i++)
        mcq_slab_free(&s, objs[i]);
    cr_assert_eq(stats().objects_in_use, 0);
    cr_assert_eq(mcq_slab_fini(&s), 0);
    cr_assert_eq(mcq_slab_fini(&s), 0, "a finished slab may be finished again");
    struct mcq_arena_stats s2 = stats();
    cr_assert_eq(s2.backend_bytes, s0.backend_bytes, "fini gives every chunk back");
    cr_assert_eq(s2.backend_frees - s0.backend_frees, chunks);
    free(objs);
}

Test(slab, steady_state_allocates_nothing, .init = setup, .fini = teardown)
{
    struct mcq_slab s;
    cr_assert_eq(mcq_slab_init(&s, arena, 100), 0);
    void *live[STEADY_WINDOW];
    for (int i = 0; i < STEADY_WINDOW; i++)
        live[i] = mcq_slab_alloc(&s);
    uint64_t allocs = stats().backend_allocs;
    unsigned rng = 1;
    for (int i = 0; i < STEADY_ROUNDS; i++) {
        unsigned k = (unsigned)rand_r(&rng) % STEADY_WINDOW;
        mcq_slab_free(&s, live[k]);
        live[k] = mcq_slab_alloc(&s);
        cr_assert_not_null(live[k]);
    }
    cr_assert_eq(stats().backend_allocs, allocs);
    cr_assert_eq(stats().objects_in_use, STEADY_WINDOW);
    for (int i = 0; i < STEADY_WINDOW; i++)
        mcq_slab_free(&s, live[i]);
    cr_assert_eq(mcq_slab_fini(&s), 0);
}

Test(slab, free_objects_and_padding_are_poisoned_under_asan, .init = setup, .fini = teardown)
{
#ifdef HAVE_ASAN
    struct mcq_slab s;
    cr_assert_eq(mcq_slab_init(&s, arena, 20), 0);
    uint8_t *obj = mcq_slab_alloc(&s), *next = mcq_slab_alloc(&s);
    cr_assert_eq(__asan_region_is_poisoned(obj, 20), NULL);
    cr_assert(__asan_address_is_poisoned(obj + 20), "padding past the object traps");
    cr_assert(__asan_address_is_poisoned(next + 20));
    mcq_slab_free(&s, obj);
    cr_assert(__asan_address_is_poisoned(obj), "a freed object traps");
    mcq_slab_free(&s, next);
    cr_assert_eq(mcq_slab_fini(&s), 0);
#else
    cr_skip_test("not an ASan build");
#endif
}
