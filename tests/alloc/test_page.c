/* MCQ_TSAN_TEST: uses only Test, cr_assert* and cr_skip_test, so it also runs under TSan,
 * which is what the cross-shard storm at the end is for. */
#include <criterion/criterion.h>

#include "alloc/arena.h"
#include "alloc/arena_impl.h"
#include "alloc/page.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "asan_util.h"

#define STEADY_ROUNDS 1000000
#define FANOUT 1000

static struct mcq_arena *arena_new(unsigned id)
{
    struct mcq_arena *a = NULL;
    cr_assert_eq(mcq_arena_create(id, &a), 0);
    return a;
}

static struct mcq_arena_stats stats(const struct mcq_arena *a)
{
    struct mcq_arena_stats st;
    mcq_arena_stats(a, &st);
    return st;
}

/* Remote-free hook for single-thread tests: parks pages until the test reclaims them. */
struct parked {
    struct mcq_page *pages[16];
    int n;
};

static void park_page(void *ctx, struct mcq_arena *owner, struct mcq_page *page)
{
    (void)owner;
    struct parked *p = ctx;
    cr_assert_lt(p->n, 16);
    p->pages[p->n++] = page;
}

static void reclaim_parked(struct mcq_arena *owner, struct parked *p)
{
    for (int i = 0; i < p->n; i++)
        cr_assert_eq(mcq_page_reclaim(owner, p->pages[i]), 0);
    p->n = 0;
}

Test(page, alloc_picks_the_smallest_class_or_an_exact_large_page)
{
    struct mcq_arena *a = arena_new(0);
    static const struct {
        size_t size;
        uint64_t cap;
    } cases[] = {
        {0, 256},
        {100, 256},
        {257, 1024},
        {5000, 16384},
        {MCQ_PAGE_SIZE, MCQ_PAGE_SIZE},
        {MCQ_PAGE_SIZE + 1, MCQ_PAGE_SIZE + 1},
        {3u << 20, 3u << 20},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mcq_view v;
        cr_assert_eq(mcq_page_alloc(a, cases[i].size, &v), 0);
        cr_assert_eq(mcq_view_len(&v), cases[i].size);
        struct mcq_arena_stats st = stats(a);
        cr_assert_eq(st.pages_in_use, 1);
        cr_assert_eq(st.bytes_in_use, cases[i].cap, "size %zu", cases[i].size);
        memset(mcq_view_mut(&v), 0x5a, cases[i].cap);
        mcq_view_unref(&v);
        cr_assert_null(v.ref, "unref empties the view");
    }
    struct mcq_view v;
    cr_assert_eq(mcq_page_alloc(a, MCQ_PAGE_MAX + 1, &v), -EINVAL);
    cr_assert_eq(stats(a).pages_in_use, 0);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

Test(page, slices_share_the_page_and_keep_it_alive)
{
    struct mcq_arena *a = arena_new(0);
    struct mcq_view v, s, ss;
    cr_assert_eq(mcq_page_alloc(a, 1000, &v), 0);
    for (int i = 0; i < 1000; i++)
        mcq_view_mut(&v)[i] = (uint8_t)i;
    cr_assert_eq(mcq_view_slice(&v, 10, 20, &s), 0);
    cr_assert_eq(mcq_view_data(&s), mcq_view_data(&v) + 10);
    cr_assert_eq(mcq_view_len(&s), 20);
    cr_assert_eq(mcq_view_slice(&s, 5, 15, &ss), 0);
    cr_assert_eq(mcq_view_data(&ss)[0], 15, "slices of slices compose offsets");
    cr_assert_eq(mcq_view_len(&ss), 15);

    mcq_view_unref(&v);
    mcq_view_unref(&s);
    cr_assert_eq(stats(a).pages_in_use, 1, "the last slice keeps the page");
    cr_assert_eq(mcq_view_data(&ss)[14], 29);
    mcq_view_unref(&ss);
    cr_assert_eq(stats(a).pages_in_use, 0);
    cr_assert_eq(stats(a).pages_cached, 1);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

Test(page, out_of_range_slices_are_refused)
{
    struct mcq_arena *a = arena_new(0);
    struct mcq_view v, s = {0};
    cr_assert_eq(mcq_page_alloc(a, 1000, &v), 0);
    cr_assert_eq(mcq_view_slice(&v, 1000, 0, &s), 0, "an empty tail slice is fine");
    mcq_view_unref(&s);
    cr_assert_eq(mcq_view_slice(&v, 1001, 0, &s), -EINVAL);
    cr_assert_eq(mcq_view_slice(&v, 0, 1001, &s), -EINVAL);
    cr_assert_eq(mcq_view_slice(&v, 500, 501, &s), -EINVAL);
    cr_assert_eq(mcq_view_slice(&v, SIZE_MAX, 2, &s), -EINVAL, "no wrap-around");
    cr_assert_eq(mcq_view_slice(&v, 2, SIZE_MAX, &s), -EINVAL);
    cr_assert_null(s.ref, "a refused slice leaves out untouched");
    cr_assert_eq(mcq_view_narrow(&v, 100, 901), -EINVAL);
    cr_assert_eq(mcq_view_len(&v), 1000);
    const uint8_t *base = mcq_view_data(&v);
    cr_assert_eq(mcq_view_narrow(&v, 100, 900), 0);
    cr_assert_eq(mcq_view_data(&v), base + 100);
    cr_assert_eq(mcq_view_narrow(&v, 0, 901), -EINVAL);
    mcq_view_unref(&v);
    cr_assert_eq(stats(a).pages_in_use, 0, "narrowing kept exactly one reference");
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

Test(page, a_page_lives_until_its_last_reference)
{
    struct mcq_arena *a = arena_new(0);
    struct mcq_view v, refs[FANOUT];
    cr_assert_eq(mcq_page_alloc(a, 64, &v), 0);
    for (int i = 0; i < FANOUT; i++)
        refs[i] = mcq_view_ref(&v);
    mcq_view_unref(&v);
    for (int i = 0; i < FANOUT; i++) {
        cr_assert_eq(stats(a).pages_in_use, 1);
        mcq_view_unref(&refs[i]);
    }
    cr_assert_eq(stats(a).pages_in_use, 0);
    struct mcq_view empty = {0};
    mcq_view_unref(&empty);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

Test(page, freed_pages_are_reused_without_jemalloc)
{
    struct mcq_arena *a = arena_new(0);
    struct mcq_view v;
    cr_assert_eq(mcq_page_alloc(a, MCQ_PAGE_SIZE, &v), 0);
    const uint8_t *data = mcq_view_data(&v);
    mcq_view_unref(&v);
    uint64_t allocs = stats(a).backend_allocs;
    cr_assert_eq(mcq_page_alloc(a, 40000, &v), 0);
    cr_assert_eq(mcq_view_data(&v), data, "same class, same page");
    cr_assert_eq(stats(a).backend_allocs, allocs);
    cr_assert_eq(stats(a).pages_cached, 0);
    mcq_view_unref(&v);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

Test(page, a_released_page_traps_under_asan_until_reused)
{
#ifdef HAVE_ASAN
    struct mcq_arena *a = arena_new(0);
    struct mcq_view v;
    cr_assert_eq(mcq_page_alloc(a, 1000, &v), 0);
    const uint8_t *data = mcq_view_data(&v);
    cr_assert_null(__asan_region_is_poisoned((void *)data, 1024));
    mcq_view_unref(&v);
    cr_assert(__asan_address_is_poisoned(data), "a view used after its last unref traps");
    cr_assert_eq(mcq_page_alloc(a, 1000, &v), 0);
    cr_assert_eq(mcq_view_data(&v), data);
    cr_assert_null(__asan_region_is_poisoned((void *)data, 1024));
    mcq_view_unref(&v);
    cr_assert_eq(mcq_arena_destroy(a), 0);
#else
    cr_skip_test("not an ASan build");
#endif
}

Test(page, large_pages_go_back_to_jemalloc)
{
    struct mcq_arena *a = arena_new(0);
    struct mcq_view v;
    /* A first small page takes the header slab's chunk, so what follows is the large page's
     * own cost. */
    cr_assert_eq(mcq_page_alloc(a, 1, &v), 0);
    mcq_view_unref(&v);
    struct mcq_arena_stats s0 = stats(a);
    cr_assert_eq(mcq_page_alloc(a, 1u << 20, &v), 0);
    mcq_view_mut(&v)[(1u << 20) - 1] = 1;
    struct mcq_arena_stats s1 = stats(a);
    cr_assert_eq(s1.backend_allocs, s0.backend_allocs + 1);
    cr_assert_geq(s1.backend_bytes, s0.backend_bytes + (1u << 20));
    mcq_view_unref(&v);
    struct mcq_arena_stats s2 = stats(a);
    cr_assert_eq(s2.backend_frees, s0.backend_frees + 1);
    cr_assert_eq(s2.backend_bytes, s0.backend_bytes);
    cr_assert_eq(s2.pages_cached, s0.pages_cached, "large pages are not cached");
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

Test(page, the_free_list_is_bounded)
{
    enum { BURST = MCQ_PAGE_CACHE_MAX_BYTES / MCQ_PAGE_SIZE + 100 };
    struct mcq_arena *a = arena_new(0);
    static struct mcq_view burst[BURST];
    for (int i = 0; i < BURST; i++)
        cr_assert_eq(mcq_page_alloc(a, MCQ_PAGE_SIZE, &burst[i]), 0);
    struct mcq_arena_stats s0 = stats(a);
    for (int i = 0; i < BURST; i++)
        mcq_view_unref(&burst[i]);
    struct mcq_arena_stats s1 = stats(a);
    cr_assert_eq(s1.pages_cached, MCQ_PAGE_CACHE_MAX_BYTES / MCQ_PAGE_SIZE);
    cr_assert_eq(s1.backend_frees - s0.backend_frees, 100, "the rest went back to jemalloc");
    cr_assert_eq(s0.backend_bytes - s1.backend_bytes, 100ull * MCQ_PAGE_SIZE);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

/* The "zero allocation in steady state" proof: a million page allocations, slices and
 * releases over every recycled class make no call into jemalloc once warm. */
Test(page, steady_state_allocates_nothing, .timeout = 60)
{
    static const size_t sizes[] = {64, 1000, 3000, 10000, MCQ_PAGE_SIZE};
    enum { NSIZES = sizeof(sizes) / sizeof(sizes[0]) };
    struct mcq_arena *a = arena_new(0);
    struct mcq_view warm[NSIZES];
    for (int i = 0; i < NSIZES; i++)
        cr_assert_eq(mcq_page_alloc(a, sizes[i], &warm[i]), 0);
    for (int i = 0; i < NSIZES; i++)
        mcq_view_unref(&warm[i]);
    struct mcq_arena_stats s0 = stats(a);
    for (int i = 0; i < STEADY_ROUNDS; i++) {
        struct mcq_view v, s;
        size_t size = sizes[i % NSIZES];
        cr_assert_eq(mcq_page_alloc(a, size, &v), 0);
        mcq_view_mut(&v)[size - 1] = (uint8_t)i;
        cr_assert_eq(mcq_view_slice(&v, size / 2, size - size / 2, &s), 0);
        mcq_view_unref(&v);
        mcq_view_unref(&s);
    }
    struct mcq_arena_stats s1 = stats(a);
    cr_assert_eq(s1.backend_allocs, s0.backend_allocs);
    cr_assert_eq(s1.backend_frees, s0.backend_frees);
    cr_assert_eq(s1.pages_in_use, 0);
    cr_assert_eq(s1.pages_cached, NSIZES);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

Test(page, copy_out_frees_the_big_page)
{
    struct mcq_arena *a = arena_new(0);
    struct mcq_view v, c;
    cr_assert_eq(mcq_page_alloc(a, MCQ_PAGE_SIZE, &v), 0);
    memset(mcq_view_mut(&v), 'x', MCQ_PAGE_SIZE);
    memcpy(mcq_view_mut(&v) + 1000, "hello", 5);
    cr_assert_eq(mcq_view_pins_page(&v), false);
    cr_assert_eq(mcq_view_narrow(&v, 1000, 100), 0);
    cr_assert_eq(mcq_view_pins_page(&v), true);
    cr_assert_eq(mcq_view_copy_out(a, &v, &c), 0);
    cr_assert_eq(mcq_view_pins_page(&c), false, "the copy sits in a right-sized page");
    cr_assert_neq(mcq_view_data(&c), mcq_view_data(&v));
    mcq_view_unref(&v);
    cr_assert_eq(stats(a).bytes_in_use, 256, "only the small page is left");
    cr_assert_eq(mcq_view_len(&c), 100);
    cr_assert_eq(memcmp(mcq_view_data(&c), "helloxxxx", 9), 0);
    cr_assert_eq(mcq_view_data(&c)[99], 'x');
    mcq_view_unref(&c);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

Test(page, export_needs_the_owners_remote_free_hook)
{
    struct mcq_arena *a = arena_new(0);
    struct mcq_view v;
    struct mcq_export x;
    cr_assert_eq(mcq_page_alloc(a, 10, &v), 0);
    cr_assert_eq(mcq_view_export(&v, &x), -ENOTSUP);
    mcq_view_unref(&v);
    cr_assert_eq(stats(a).pages_in_use, 0, "a refused export takes no reference");
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

Test(page, importing_on_the_owner_needs_no_proxy)
{
    struct mcq_arena *a = arena_new(0);
    struct parked parked = {0};
    cr_assert_eq(mcq_arena_set_remote_free(a, park_page, &parked), 0);
    mcq_arena_set_current(a);
    struct mcq_view v, w;
    struct mcq_export x;

    /* While owner views remain, the import joins them. */
    cr_assert_eq(mcq_page_alloc(a, 100, &v), 0);
    cr_assert_eq(mcq_view_export(&v, &x), 0);
    cr_assert_eq(mcq_view_import(a, &x, &w), 0);
    cr_assert_eq(w.ref, v.ref);
    cr_assert_eq(stats(a).proxies_in_use, 0);
    mcq_view_unref(&v);
    mcq_view_unref(&w);
    cr_assert_eq(stats(a).pages_in_use, 0);

    /* After the owner let go, the import revives the owner's share. */
    cr_assert_eq(mcq_page_alloc(a, 100, &v), 0);
    cr_assert_eq(mcq_view_export(&v, &x), 0);
    mcq_view_unref(&v);
    cr_assert_eq(stats(a).pages_in_use, 1, "the export holds the page");
    cr_assert_eq(mcq_view_import(a, &x, &w), 0);
    mcq_view_unref(&w);
    cr_assert_eq(stats(a).pages_in_use, 0);

    /* An export dropped on the owner thread frees locally too. */
    cr_assert_eq(mcq_page_alloc(a, 100, &v), 0);
    cr_assert_eq(mcq_view_export(&v, &x), 0);
    mcq_view_unref(&v);
    mcq_export_drop(&x);
    cr_assert_eq(stats(a).pages_in_use, 0);
    cr_assert_eq(parked.n, 0, "nothing went through the hook");
    cr_assert_eq(stats(a).remote_frees_total, 0);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

/* Two shards simulated on one thread: `b` is current, so releases of a's pages are remote. */
Test(page, a_fanout_through_one_proxy_returns_the_page_once)
{
    struct mcq_arena *a = arena_new(0), *b = arena_new(1);
    struct parked parked = {0};
    cr_assert_eq(mcq_arena_set_remote_free(a, park_page, &parked), 0);
    mcq_arena_set_current(b);
    struct mcq_view v, in, subs[FANOUT];
    struct mcq_export x;
    cr_assert_eq(mcq_page_alloc(a, 300, &v), 0);
    memset(mcq_view_mut(&v), 7, 300);
    cr_assert_eq(mcq_view_export(&v, &x), 0);
    mcq_view_unref(&v);

    cr_assert_eq(mcq_view_import(b, &x, &in), 0);
    cr_assert_eq(stats(b).proxies_in_use, 1);
    cr_assert_eq(mcq_view_data(&in)[299], 7);
    for (int i = 0; i < FANOUT; i++) {
        int rc = mcq_view_slice(&in, (size_t)i * 7 / 25, 0, &subs[i]);
        cr_assert_eq(rc, 0);
    }
    cr_assert_eq(mcq_view_pins_page(&subs[0]), true, "works the same through a proxy");
    mcq_view_unref(&in);
    for (int i = 0; i < FANOUT; i++) {
        cr_assert_eq(parked.n, 0);
        mcq_view_unref(&subs[i]);
    }
    cr_assert_eq(parked.n, 1, "one remote free for the whole fanout");
    cr_assert_eq(stats(b).proxies_in_use, 0);
    cr_assert_eq(stats(a).remote_frees_pending, 1);
    cr_assert_eq(stats(a).pages_in_use, 1);
    cr_assert_eq(mcq_page_reclaim(b, parked.pages[0]), -EINVAL, "b does not own the page");

    mcq_arena_set_current(a);
    reclaim_parked(a, &parked);
    cr_assert_eq(stats(a).remote_frees_pending, 0);
    cr_assert_eq(stats(a).pages_in_use, 0);
    cr_assert_eq(mcq_arena_destroy(b), 0);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

Test(page, a_foreign_page_can_be_passed_on_and_come_home)
{
    struct mcq_arena *a = arena_new(0), *b = arena_new(1), *c = arena_new(2);
    struct parked parked = {0};
    cr_assert_eq(mcq_arena_set_remote_free(a, park_page, &parked), 0);
    struct mcq_view v, vb, vc, home;
    struct mcq_export xb, xc, xa;
    cr_assert_eq(mcq_page_alloc(a, 50, &v), 0);
    cr_assert_eq(mcq_view_export(&v, &xb), 0);
    mcq_view_unref(&v);

    mcq_arena_set_current(b);
    cr_assert_eq(mcq_view_import(b, &xb, &vb), 0);
    cr_assert_eq(mcq_view_narrow(&vb, 10, 30), 0);
    cr_assert_eq(mcq_view_export(&vb, &xc), 0, "re-export of a proxy's page");
    cr_assert_eq(mcq_view_export(&vb, &xa), 0);
    mcq_view_unref(&vb);
    cr_assert_eq(parked.n, 0, "the re-exports hold the page");

    mcq_arena_set_current(c);
    cr_assert_eq(mcq_view_import(c, &xc, &vc), 0);
    cr_assert_eq(mcq_view_len(&vc), 30);
    mcq_view_unref(&vc);
    cr_assert_eq(parked.n, 0);

    mcq_arena_set_current(a);
    cr_assert_eq(mcq_view_import(a, &xa, &home), 0);
    cr_assert_eq(stats(a).proxies_in_use, 0, "back home without a proxy");
    cr_assert_eq(mcq_view_len(&home), 30);
    mcq_view_unref(&home);
    cr_assert_eq(parked.n, 0, "the last release was on the owner");
    cr_assert_eq(stats(a).pages_in_use, 0);
    cr_assert_eq(mcq_arena_destroy(c), 0);
    cr_assert_eq(mcq_arena_destroy(b), 0);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

Test(page, cross_arena_steady_state_allocates_nothing, .timeout = 60)
{
    struct mcq_arena *a = arena_new(0), *b = arena_new(1);
    struct parked parked = {0};
    cr_assert_eq(mcq_arena_set_remote_free(a, park_page, &parked), 0);
    uint64_t a_allocs = 0, b_allocs = 0;
    for (int i = 0; i < STEADY_ROUNDS / 10; i++) {
        if (i == 1) {
            a_allocs = stats(a).backend_allocs;
            b_allocs = stats(b).backend_allocs;
        }
        struct mcq_view v, in, extra;
        struct mcq_export x;
        mcq_arena_set_current(a);
        cr_assert_eq(mcq_page_alloc(a, MCQ_PAGE_SIZE, &v), 0);
        cr_assert_eq(mcq_view_export(&v, &x), 0);
        mcq_view_unref(&v);
        mcq_arena_set_current(b);
        cr_assert_eq(mcq_view_import(b, &x, &in), 0);
        extra = mcq_view_ref(&in);
        mcq_view_unref(&in);
        mcq_view_unref(&extra);
        mcq_arena_set_current(a);
        reclaim_parked(a, &parked);
    }
    cr_assert_eq(stats(a).backend_allocs, a_allocs);
    cr_assert_eq(stats(b).backend_allocs, b_allocs);
    cr_assert_eq(stats(a).remote_frees_total, STEADY_ROUNDS / 10);
    cr_assert_eq(mcq_arena_destroy(b), 0);
    cr_assert_eq(mcq_arena_destroy(a), 0);
}

/* ---- Cross-shard storm ------------------------------------------------------------------
 * STORM_SHARDS threads, each with its own arena, export pages and slices to each other
 * through a test-local mutex+condvar mailbox (the real mesh is the runtime's). Receivers fan
 * out locally, sometimes pass the page on to a third shard (or back to its owner), release in
 * random order, and the remote-free hook posts pages home, where the owner reclaims them. */

#define STORM_SHARDS 4
#define STORM_ROUNDS 10000
#define STORM_FANOUT_MAX 64
#define STORM_MAX_HOPS 2
#define STORM_DEADLINE_S 60
/* Views each producer keeps for a while, so homecomings and remote releases also meet
 * pages whose owner still holds them. */
#define STORM_HELD 8

enum storm_kind { STORM_DATA, STORM_RECLAIM };

struct storm_msg {
    struct storm_msg *next;
    enum storm_kind kind;
    struct mcq_export x;   /* STORM_DATA */
    struct mcq_page *page; /* STORM_RECLAIM */
    uint8_t fill;          /* the byte every data byte of the page holds */
    unsigned owner, hops;
};

struct storm_shard {
    struct storm *st;
    unsigned id;
    unsigned rng;
    struct mcq_arena *arena;
    struct mcq_view held[STORM_HELD];
    /* Results, read by the main thread after join. */
    unsigned errors;
    bool timed_out;
    uint64_t imports, drops, passes, homecomings, homecomings_held, reclaims;
    struct mcq_arena_stats final;
    int destroy_rc;
};

struct storm {
    pthread_mutex_t lock;
    pthread_cond_t wake[STORM_SHARDS];
    struct storm_msg *inbox[STORM_SHARDS];
    unsigned queued, busy, producing;
    bool stop;
    struct timespec deadline;
    struct storm_shard shards[STORM_SHARDS];
};

/* Under st->lock: once nobody produces, nothing is queued and nobody is handling a
 * message, no message can appear any more, so every shard may finish. */
static void storm_check_done(struct storm *st)
{
    if (st->producing || st->queued || st->busy)
        return;
    st->stop = true;
    for (unsigned i = 0; i < STORM_SHARDS; i++)
        pthread_cond_signal(&st->wake[i]);
}

static void storm_post(struct storm *st, unsigned to, struct storm_msg m)
{
    struct storm_msg *n = malloc(sizeof(*n));
    if (!n)
        abort();
    *n = m;
    pthread_mutex_lock(&st->lock);
    n->next = st->inbox[to];
    st->inbox[to] = n;
    st->queued++;
    pthread_cond_signal(&st->wake[to]);
    pthread_mutex_unlock(&st->lock);
}

static void storm_remote_free(void *ctx, struct mcq_arena *owner, struct mcq_page *page)
{
    storm_post(ctx, mcq_arena_id(owner), (struct storm_msg){.kind = STORM_RECLAIM, .page = page});
}

static unsigned storm_rand(struct storm_shard *sh, unsigned n)
{
    return (unsigned)rand_r(&sh->rng) % n;
}

static unsigned storm_other(struct storm_shard *sh)
{
    return (sh->id + 1 + storm_rand(sh, STORM_SHARDS - 1)) % STORM_SHARDS;
}

static void storm_release_shuffled(struct storm_shard *sh, struct mcq_view *views, unsigned n)
{
    for (unsigned i = n; i > 1; i--) {
        unsigned j = storm_rand(sh, i);
        struct mcq_view t = views[i - 1];
        views[i - 1] = views[j];
        views[j] = t;
    }
    for (unsigned i = 0; i < n; i++)
        mcq_view_unref(&views[i]);
}

static void storm_export(struct storm_shard *sh, const struct mcq_view *v, unsigned to,
                         uint8_t fill, unsigned owner, unsigned hops)
{
    struct storm_msg m = {.kind = STORM_DATA, .fill = fill, .owner = owner, .hops = hops};
    if (mcq_view_export(v, &m.x) != 0) {
        sh->errors++;
        return;
    }
    storm_post(sh->st, to, m);
}

static bool storm_bytes_ok(const struct mcq_view *v, uint8_t fill)
{
    uint32_t len = mcq_view_len(v);
    const uint8_t *d = mcq_view_data(v);
    return len == 0 || (d[0] == fill && d[len / 2] == fill && d[len - 1] == fill);
}

static void storm_handle_data(struct storm_shard *sh, struct storm_msg *m)
{
    if (storm_rand(sh, 8) == 0) {
        /* The target is gone: the export is dropped unread. */
        mcq_export_drop(&m->x);
        sh->drops++;
        return;
    }
    struct mcq_view in, views[STORM_FANOUT_MAX];
    if (mcq_view_import(sh->arena, &m->x, &in) != 0) {
        sh->errors++;
        mcq_export_drop(&m->x);
        return;
    }
    sh->imports++;
    if (m->owner == sh->id) {
        sh->homecomings++;
        for (unsigned i = 0; i < STORM_HELD; i++)
            if (sh->held[i].ref == in.ref) {
                sh->homecomings_held++;
                break;
            }
    }
    if (!storm_bytes_ok(&in, m->fill))
        sh->errors++;
    unsigned n = 1 + storm_rand(sh, STORM_FANOUT_MAX);
    for (unsigned i = 0; i < n; i++) {
        uint32_t len = mcq_view_len(&in);
        if (i % 4 == 3 && len > 0) {
            size_t off = storm_rand(sh, len);
            if (mcq_view_slice(&in, off, storm_rand(sh, (unsigned)(len - off)), &views[i]) != 0)
                sh->errors++;
        } else if (i == 2 && mcq_view_pins_page(&in)) {
            if (mcq_view_copy_out(sh->arena, &in, &views[i]) != 0)
                sh->errors++;
        } else {
            views[i] = mcq_view_ref(&in);
        }
        if (!storm_bytes_ok(&views[i], m->fill))
            sh->errors++;
    }
    if (m->hops < STORM_MAX_HOPS && storm_rand(sh, 4) == 0) {
        storm_export(sh, &in, storm_other(sh), m->fill, m->owner, m->hops + 1);
        sh->passes++;
    }
    mcq_view_unref(&in);
    storm_release_shuffled(sh, views, n);
}

static void storm_handle(struct storm_shard *sh, struct storm_msg *m)
{
    if (m->kind == STORM_RECLAIM) {
        if (mcq_page_reclaim(sh->arena, m->page) != 0)
            sh->errors++;
        sh->reclaims++;
    } else {
        storm_handle_data(sh, m);
    }
    free(m);
}

/* Handles inbox messages; with `block`, waits for more until the storm is over. */
static void storm_serve(struct storm_shard *sh, bool block)
{
    struct storm *st = sh->st;
    pthread_mutex_lock(&st->lock);
    for (;;) {
        struct storm_msg *m = st->inbox[sh->id];
        if (m) {
            st->inbox[sh->id] = m->next;
            st->queued--;
            st->busy++;
            pthread_mutex_unlock(&st->lock);
            storm_handle(sh, m);
            pthread_mutex_lock(&st->lock);
            st->busy--;
            storm_check_done(st);
            continue;
        }
        if (!block || st->stop)
            break;
        if (pthread_cond_timedwait(&st->wake[sh->id], &st->lock, &st->deadline) == ETIMEDOUT) {
            sh->timed_out = true;
            st->stop = true;
            for (unsigned i = 0; i < STORM_SHARDS; i++)
                pthread_cond_signal(&st->wake[i]);
        }
    }
    pthread_mutex_unlock(&st->lock);
}

static void storm_produce(struct storm_shard *sh, unsigned round)
{
    /* Mostly small frames, some read-page sized, a few large pages. */
    static const size_t sizes[] = {40, 200, 900, 3000, 12000, MCQ_PAGE_SIZE, 100000};
    unsigned pick = storm_rand(sh, 64);
    size_t size = pick == 0 ? sizes[6] : pick < 8 ? sizes[5] : sizes[pick % 5];
    uint8_t fill = (uint8_t)(sh->id * 61 + round);
    struct mcq_view v, views[2];
    if (mcq_page_alloc(sh->arena, size, &v) != 0) {
        sh->errors++;
        return;
    }
    memset(mcq_view_mut(&v), fill, size);
    views[0] = mcq_view_ref(&v);
    size_t off = storm_rand(sh, (unsigned)size);
    if (mcq_view_slice(&v, off, size - off, &views[1]) != 0)
        sh->errors++;
    /* Each view goes to one other shard for sure and to each of the rest by a coin toss. */
    for (unsigned k = 0; k < 2; k++) {
        unsigned first = storm_other(sh);
        for (unsigned to = 0; to < STORM_SHARDS; to++)
            if (to == first || (to != sh->id && storm_rand(sh, 2)))
                storm_export(sh, &views[k], to, fill, sh->id, 0);
    }
    struct mcq_view *slot = &sh->held[storm_rand(sh, STORM_HELD)];
    mcq_view_unref(slot);
    *slot = v;
    storm_release_shuffled(sh, views, 2);
}

static void *storm_thread(void *arg)
{
    struct storm_shard *sh = arg;
    struct storm *st = sh->st;
    /* Created on its own thread, as the runtime does for first-touch placement. */
    if (mcq_arena_create(sh->id, &sh->arena) != 0)
        abort(); /* the other shards would import into a missing arena */
    mcq_arena_set_current(sh->arena);
    mcq_arena_set_remote_free(sh->arena, storm_remote_free, st);
    for (unsigned r = 0; r < STORM_ROUNDS; r++) {
        storm_produce(sh, r);
        storm_serve(sh, false);
    }
    for (unsigned i = 0; i < STORM_HELD; i++)
        mcq_view_unref(&sh->held[i]);
    pthread_mutex_lock(&st->lock);
    st->producing--;
    storm_check_done(st);
    pthread_mutex_unlock(&st->lock);
    storm_serve(sh, true);
    mcq_arena_stats(sh->arena, &sh->final);
    sh->destroy_rc = mcq_arena_destroy(sh->arena);
    return NULL;
}

Test(page, cross_shard_storm_returns_every_page_to_its_owner, .timeout = 120)
{
    static struct storm st;
    memset(&st, 0, sizeof(st));
    pthread_mutex_init(&st.lock, NULL);
    clock_gettime(CLOCK_REALTIME, &st.deadline);
    st.deadline.tv_sec += STORM_DEADLINE_S;
    st.producing = STORM_SHARDS;
    pthread_t threads[STORM_SHARDS];
    for (unsigned i = 0; i < STORM_SHARDS; i++) {
        pthread_cond_init(&st.wake[i], NULL);
        st.shards[i] = (struct storm_shard){.st = &st, .id = i, .rng = 1234 + i};
    }
    for (unsigned i = 0; i < STORM_SHARDS; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, storm_thread, &st.shards[i]), 0);
    for (unsigned i = 0; i < STORM_SHARDS; i++)
        cr_assert_eq(pthread_join(threads[i], NULL), 0);

    uint64_t imports = 0, drops = 0, passes = 0, homecomings = 0, held = 0, remote = 0;
    uint64_t reclaims = 0;
    for (unsigned i = 0; i < STORM_SHARDS; i++) {
        struct storm_shard *sh = &st.shards[i];
        cr_assert_eq(sh->errors, 0, "shard %u", i);
        cr_assert_not(sh->timed_out, "shard %u hit the deadline", i);
        cr_assert_eq(sh->final.pages_in_use, 0, "shard %u", i);
        cr_assert_eq(sh->final.bytes_in_use, 0, "shard %u", i);
        cr_assert_eq(sh->final.proxies_in_use, 0, "shard %u", i);
        cr_assert_eq(sh->final.remote_frees_pending, 0, "shard %u", i);
        cr_assert_gt(sh->final.remote_frees_total, 0, "shard %u", i);
        cr_assert_eq(sh->destroy_rc, 0, "shard %u", i);
        imports += sh->imports;
        drops += sh->drops;
        passes += sh->passes;
        homecomings += sh->homecomings;
        held += sh->homecomings_held;
        remote += sh->final.remote_frees_total;
        reclaims += sh->reclaims;
    }
    cr_log_info("storm: imports %llu drops %llu passes %llu homecomings %llu (to a held page "
                "%llu) remote frees %llu",
                (unsigned long long)imports, (unsigned long long)drops, (unsigned long long)passes,
                (unsigned long long)homecomings, (unsigned long long)held,
                (unsigned long long)remote);
    cr_assert_eq(reclaims, remote, "every hook call was reclaimed by the owner");
    cr_assert_gt(imports, STORM_SHARDS * STORM_ROUNDS);
    cr_assert_gt(drops, 0);
    cr_assert_gt(passes, 0);
    cr_assert_gt(homecomings, 0);
    cr_assert_gt(held, 0);
    for (unsigned i = 0; i < STORM_SHARDS; i++)
        pthread_cond_destroy(&st.wake[i]);
    pthread_mutex_destroy(&st.lock);
}
