/* alloc/ hot paths on one thread: slab objects, pages from the free list, view references,
 * and the cross-shard export/import path (two arenas on one thread, remote frees reclaimed
 * in place), next to the process malloc for scale. Reports ns per operation. */
#include "bench.h"

#include "alloc/arena.h"
#include "alloc/page.h"
#include "alloc/slab.h"

#include <errno.h>
#include <stdlib.h>

#define ALLOC_OPS (10u * 1000 * 1000)
#define ALLOC_OPS_QUICK (1000u * 1000)
/* Local subscribers per imported message in the fanout case. */
#define ALLOC_FANOUT 1000
/* Object size for the slab and small-malloc cases, bytes. */
#define ALLOC_OBJ_SIZE 64

static void *volatile sink;

static void report(const char *op, const char *impl, uint64_t ops, uint64_t ns)
{
    struct bench_rec *r = bench_rec_begin("alloc", impl);
    bench_rec_str(r, "op", op);
    bench_rec_int(r, "ops", (int64_t)ops);
    bench_rec_num(r, "ns_per_op", (double)ns / (double)ops);
    bench_rec_end(r);
}

struct parked {
    struct mcq_page *page;
};

static void park_page(void *ctx, struct mcq_arena *owner, struct mcq_page *page)
{
    (void)owner;
    ((struct parked *)ctx)->page = page;
}

static int bench_slab(struct mcq_arena *a, uint64_t ops)
{
    struct mcq_slab s;
    int rc = mcq_slab_init(&s, a, ALLOC_OBJ_SIZE);
    if (rc < 0)
        return rc;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < ops; i++) {
        void *p = mcq_slab_alloc(&s);
        if (!p)
            return -ENOMEM;
        sink = p;
        mcq_slab_free(&s, p);
    }
    report("slab_alloc_free", "mcq", ops, bench_now_ns() - t0);

    t0 = bench_now_ns();
    for (uint64_t i = 0; i < ops; i++) {
        void *p = malloc(ALLOC_OBJ_SIZE);
        if (!p)
            return -ENOMEM;
        sink = p;
        free(p);
    }
    report("malloc_free_64B", "malloc", ops, bench_now_ns() - t0);
    return mcq_slab_fini(&s);
}

static int bench_pages(struct mcq_arena *a, uint64_t ops)
{
    struct mcq_view v;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < ops; i++) {
        if (mcq_page_alloc(a, MCQ_PAGE_SIZE, &v) < 0)
            return -ENOMEM;
        sink = v.ref;
        mcq_view_unref(&v);
    }
    report("page_alloc_unref_64K", "mcq", ops, bench_now_ns() - t0);

    t0 = bench_now_ns();
    for (uint64_t i = 0; i < ops; i++) {
        void *p = malloc(MCQ_PAGE_SIZE);
        if (!p)
            return -ENOMEM;
        sink = p;
        free(p);
    }
    report("malloc_free_64K", "malloc", ops, bench_now_ns() - t0);
    return 0;
}

static int bench_views(struct mcq_arena *a, uint64_t ops)
{
    static struct mcq_view subs[ALLOC_FANOUT];
    struct mcq_view v;
    if (mcq_page_alloc(a, MCQ_PAGE_SIZE, &v) < 0)
        return -ENOMEM;
    uint64_t rounds = ops / ALLOC_FANOUT;
    uint64_t t0 = bench_now_ns();
    for (uint64_t r = 0; r < rounds; r++) {
        for (unsigned i = 0; i < ALLOC_FANOUT; i++)
            if (mcq_view_slice(&v, i, 100, &subs[i]) < 0)
                return -EINVAL;
        for (unsigned i = 0; i < ALLOC_FANOUT; i++)
            mcq_view_unref(&subs[i]);
    }
    report("view_slice_unref", "mcq", rounds * ALLOC_FANOUT, bench_now_ns() - t0);
    mcq_view_unref(&v);
    return 0;
}

/* One message body to another shard: export (one atomic), import (a proxy), release (one
 * atomic, the hook), reclaim on the owner. Then the same with a local fanout behind the
 * import, reported per subscriber. */
static int bench_cross(struct mcq_arena *a, struct mcq_arena *b, uint64_t ops)
{
    static struct mcq_view subs[ALLOC_FANOUT];
    struct parked parked = {0};
    int rc = mcq_arena_set_remote_free(a, park_page, &parked);
    if (rc < 0)
        return rc;
    for (int fanout = 0; fanout <= 1; fanout++) {
        unsigned n = fanout ? ALLOC_FANOUT : 0;
        uint64_t msgs = fanout ? ops / ALLOC_FANOUT : ops;
        uint64_t t0 = bench_now_ns();
        for (uint64_t i = 0; i < msgs; i++) {
            struct mcq_view v, in;
            struct mcq_export x;
            mcq_arena_set_current(a);
            if (mcq_page_alloc(a, MCQ_PAGE_SIZE, &v) < 0 || mcq_view_export(&v, &x) < 0)
                return -ENOMEM;
            mcq_view_unref(&v);
            mcq_arena_set_current(b);
            if (mcq_view_import(b, &x, &in) < 0)
                return -ENOMEM;
            for (unsigned k = 0; k < n; k++)
                subs[k] = mcq_view_ref(&in);
            mcq_view_unref(&in);
            for (unsigned k = 0; k < n; k++)
                mcq_view_unref(&subs[k]);
            mcq_arena_set_current(a);
            if (!parked.page || mcq_page_reclaim(a, parked.page) < 0)
                return -EPROTO;
            parked.page = NULL;
        }
        uint64_t ns = bench_now_ns() - t0;
        if (fanout)
            report("export_import_fanout_per_sub", "mcq", msgs * n, ns);
        else
            report("alloc_export_import_release_reclaim", "mcq", msgs, ns);
    }
    mcq_arena_set_current(NULL);
    return 0;
}

static int bench_alloc(struct bench_ctx *ctx)
{
    uint64_t ops = ctx->quick ? ALLOC_OPS_QUICK : ALLOC_OPS;
    struct mcq_arena *a, *b;
    int rc = mcq_arena_create(0, &a);
    if (rc < 0)
        return rc;
    rc = mcq_arena_create(1, &b);
    if (rc < 0) {
        mcq_arena_destroy(a);
        return rc;
    }
    mcq_arena_set_current(a);
    rc = bench_slab(a, ops);
    if (rc == 0)
        rc = bench_pages(a, ops);
    if (rc == 0)
        rc = bench_views(a, ops);
    if (rc == 0)
        rc = bench_cross(a, b, ops);
    int rb = mcq_arena_destroy(b), ra = mcq_arena_destroy(a);
    return rc ? rc : rb ? rb : ra;
}

MCQ_BENCH("runtime", "alloc", bench_alloc)
